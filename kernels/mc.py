"""Marching cubes in numba: edge-based, two streaming passes over the volume, parallel over slabs.

Layout of the computation (Flying-Edges-like, see Schroeder et al. 2015):

* The volume is treated as if it were padded by one voxel of "below level" on every side, without
  copying it: a *padded* plane ``K`` is the real slice ``K - 1`` (planes ``0`` and ``nz + 1`` are the
  virtual outside). For every plane the kernels compute a ``(ny + 2, nx + 2)`` uint8 classification
  (``value >= threshold``) and, per row, the trim range ``lo..hi`` of the above voxels; everything
  outside a trim range is below, so cubes and edges outside it are skipped.
* Vertices are owned by planes: plane ``K`` owns its crossed x-edges (row-major), then its crossed
  y-edges, then the crossed z-edges to plane ``K + 1``. Triangles are owned by the cube layer between
  planes ``K`` and ``K + 1``, in row-major cube order. Pass 1 counts both per plane, the wrapper takes
  prefix sums, pass 2 fills. The output order depends only on the data, so it is identical for any
  thread count.
* Both passes run over chunks of 4 planes, in parallel: the chunk kernels are serial
  ``@njit(nogil=True)`` functions handed to ``numba.get_num_threads()`` Python threads
  (:func:`run_chunks`, a persistent pool). A ``prange`` driver did the same but more than doubled
  the cold compile time. Each thread keeps scratch for 5 planes (classification, the float32
  values interpolation reads, vertex ids: about ``46 * ny * nx`` bytes, 12 MB at 512 x 512, reused
  between calls), so the extra memory is the output plus a few slices per thread.
* Only :func:`_prepare_planes` / :func:`_plane_bits` read the volume (classification, and a float32
  copy of just the row segments next to above voxels), so only they compile once per dtype.
* Every scan walks the classification rows 8 columns at a time through ``uint64`` views and skips
  words where nothing can change, so empty space between bones costs little.

Vertices on an edge that leaves the volume are put half-way (``t = 0.5``), which closes surfaces
that touch the border with a cap half a voxel outside, as if the outside were below the level.
Values equal to the level count as above; the interpolation parameter is clamped to
``[T_EPS, 1 - T_EPS]`` so that no vertex sits on a grid point and no triangle degenerates (three
points inside three distinct edges of a cube are never collinear).

All ``_``-prefixed functions here are ``@njit(cache=True, nogil=True)`` kernels on arrays and never
raise; the public Python wrapper :func:`marching_cubes` validates its inputs.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

from printpipe.kernels import _luts

__all__ = ["marching_cubes", "warmup", "T_EPS"]

T_EPS = 1e-3  # smallest interpolation parameter: vertices stay 0.001 voxel away from grid points
_CHUNK = 4  # planes per parallel work item

_ONES = np.uint64(0x0101010101010101)  # eight classification bytes equal to 1


def _bits_width(nx: int) -> int:
    """Row length of the classification buffers: nx + 2 padded columns, >= 7 spare zero columns
    (word scans read column 8w + 8), rounded up to whole 8-byte words."""
    return ((nx + 9 + 7) // 8) * 8


@njit(cache=True, nogil=True)
def _plane_bits(vol, thr, plane, bits, lo, hi):
    """Classify padded plane ``plane`` into ``bits`` (ny+2, W) uint8 and row trims ``lo``/``hi``.

    Columns ``0`` and ``nx + 1`` and the spare columns up to ``W`` are zero; an empty row has
    ``lo = nx + 2 > hi = -1``.
    """
    nz, ny, nx = vol.shape
    wpad = bits.shape[1]
    empty = nx + 2
    if plane == 0 or plane == nz + 1:
        for jj in range(ny + 2):
            lo[jj] = empty
            hi[jj] = -1
            for ii in range(wpad):
                bits[jj, ii] = 0
        return
    k = plane - 1
    for ii in range(wpad):
        bits[0, ii] = 0
        bits[ny + 1, ii] = 0
    lo[0] = empty
    hi[0] = -1
    lo[ny + 1] = empty
    hi[ny + 1] = -1
    for jj in range(1, ny + 1):
        row = vol[k, jj - 1]
        brow = bits[jj]
        acc = np.uint8(0)
        for i in range(nx):
            b = np.uint8(row[i] >= thr)
            brow[i + 1] = b
            acc |= b
        brow[0] = 0
        for ii in range(nx + 1, wpad):
            brow[ii] = 0
        if acc == 0:
            lo[jj] = empty
            hi[jj] = -1
        else:
            first = 1
            while brow[first] == 0:
                first += 1
            last = nx
            while brow[last] == 0:
                last -= 1
            lo[jj] = first
            hi[jj] = last


@njit(cache=True, nogil=True)
def _prepare_planes(vol, thr, k0, bits, lo, hi, vals, with_values):
    """Classify padded planes ``k0 .. k0 + n - 1`` into slots ``0..n-1``; optionally copy the values
    that interpolation will read into ``vals`` (n, ny+2, nx+2) float32.

    This and :func:`_plane_bits` are the only kernels that read the volume, so they are the only
    ones compiled once per input dtype. Rows are copied only next to rows that hold above voxels
    (in the same plane or the planes beside it), so empty space is not converted.
    """
    n = bits.shape[0]
    nz, ny, nx = vol.shape
    for s in range(n):
        _plane_bits(vol, thr, k0 + s, bits[s], lo[s], hi[s])
    if not with_values:
        return
    for s in range(n):
        plane = k0 + s
        if plane == 0 or plane == nz + 1:
            continue  # the virtual outside: edges to it use t = 0.5 and read no value
        for jj in range(1, ny + 1):
            # union of the trims of the rows whose edges read this row: same plane jj-1..jj+1,
            # neighbouring planes jj
            a = min(min(lo[s, jj - 1], lo[s, jj]), lo[s, jj + 1])
            b = max(max(hi[s, jj - 1], hi[s, jj]), hi[s, jj + 1])
            if s > 0:
                a = min(a, lo[s - 1, jj])
                b = max(b, hi[s - 1, jj])
            if s + 1 < n:
                a = min(a, lo[s + 1, jj])
                b = max(b, hi[s + 1, jj])
            if a > b:
                continue
            row = vol[plane - 1, jj - 1]
            vrow = vals[s, jj]
            for c in range(max(a - 1, 1), min(b + 1, nx) + 1):
                vrow[c] = row[c - 1]


# The scans below walk 8 columns at a time through uint64 views of the classification rows and
# skip words where nothing can cross (all 0 or all 1 and the same in the next column, or two rows
# equal). Edges and cubes inside a word but outside the trim range are all-below, so visiting them
# changes nothing; the order of visits is the same in both passes.


@njit(cache=True, nogil=True)
def _count_plane(bits, words, lo, hi, bits1, words1, lo1, hi1, tri_count):
    """Counts for padded plane K (bits) and the layer K..K+1 (bits1): (xy vertices, z vertices, tris)."""
    ny = bits.shape[0] - 2
    nxy = 0
    # x-edges of plane K: edge ii joins columns ii and ii + 1
    for jj in range(1, ny + 1):
        a = lo[jj]
        b = hi[jj]
        if a > b:
            continue
        brow = bits[jj]
        wrow = words[jj]
        for w in range((a - 1) >> 3, (b >> 3) + 1):
            x = wrow[w]
            nxt = brow[8 * w + 8]
            if (x == 0 and nxt == 0) or (x == _ONES and nxt == 1):
                continue
            for ii in range(8 * w, 8 * w + 8):
                nxy += brow[ii] != brow[ii + 1]
    # y-edges of plane K (between rows jj and jj + 1)
    for jj in range(0, ny + 1):
        a = min(lo[jj], lo[jj + 1])
        b = max(hi[jj], hi[jj + 1])
        r0 = bits[jj]
        r1 = bits[jj + 1]
        w0 = words[jj]
        w1 = words[jj + 1]
        for w in range(a >> 3, (b >> 3) + 1):
            if w0[w] == w1[w]:
                continue
            for ii in range(8 * w, 8 * w + 8):
                nxy += r0[ii] != r1[ii]
    # z-edges from plane K to K + 1
    nzc = 0
    for jj in range(1, ny + 1):
        a = min(lo[jj], lo1[jj])
        b = max(hi[jj], hi1[jj])
        r0 = bits[jj]
        r1 = bits1[jj]
        w0 = words[jj]
        w1 = words1[jj]
        for w in range(a >> 3, (b >> 3) + 1):
            if w0[w] == w1[w]:
                continue
            for ii in range(8 * w, 8 * w + 8):
                nzc += r0[ii] != r1[ii]
    # triangles of the cube layer K..K+1: cube ii spans columns ii and ii + 1
    ntri = 0
    for jj in range(0, ny + 1):
        a = min(min(lo[jj], lo[jj + 1]), min(lo1[jj], lo1[jj + 1]))
        b = max(max(hi[jj], hi[jj + 1]), max(hi1[jj], hi1[jj + 1]))
        if a > b:
            continue
        r00 = bits[jj]
        r01 = bits[jj + 1]
        r10 = bits1[jj]
        r11 = bits1[jj + 1]
        w00 = words[jj]
        w01 = words[jj + 1]
        w10 = words1[jj]
        w11 = words1[jj + 1]
        for w in range((a - 1) >> 3, (b >> 3) + 1):
            c8 = 8 * w + 8
            f8 = r00[c8] | (r01[c8] << 1) | (r10[c8] << 2) | (r11[c8] << 3)
            if f8 == 0 and (w00[w] | w01[w] | w10[w] | w11[w]) == 0:
                continue
            if f8 == 15 and (w00[w] & w01[w] & w10[w] & w11[w]) == _ONES:
                continue
            ii = 8 * w
            fprev = r00[ii] | (r01[ii] << 1) | (r10[ii] << 2) | (r11[ii] << 3)
            for ii in range(8 * w, 8 * w + 8):
                fn = r00[ii + 1] | (r01[ii + 1] << 1) | (r10[ii + 1] << 2) | (r11[ii + 1] << 3)
                ntri += tri_count[fprev | (fn << 4)]
                fprev = fn
    return nxy, nzc, ntri


@njit(cache=True, nogil=True)
def _count_chunk(k0, k1, bits, words, lo, hi, tri_count, cxy, czc, ctri):
    """Pass 1 for padded planes ``k0..k1-1`` from prepared planes ``k0..k1`` (slots ``0..k1-k0``)."""
    for plane in range(k0, k1):
        s0 = plane - k0
        s1 = s0 + 1
        a, b, t = _count_plane(bits[s0], words[s0], lo[s0], hi[s0], bits[s1], words[s1], lo[s1], hi[s1],
                               tri_count)
        cxy[plane] = a
        czc[plane] = b
        ctri[plane] = t


@njit(cache=True, nogil=True)
def _lerp_t(va, vb, level):
    """Interpolation parameter of ``level`` between ``va`` and ``vb``, clamped inside the edge."""
    t = (level - va) / (vb - va)
    if not t > T_EPS:  # also catches NaN
        t = T_EPS
    elif t > 1.0 - T_EPS:
        t = 1.0 - T_EPS
    return t


@njit(cache=True, nogil=True)
def _fill_xy(vals, level, spacing, plane, bits, words, lo, hi, ids, xbase, ybase, v0, verts, write):
    """Assign ids (from ``v0``) to the crossed x- then y-edges of padded plane; write coordinates
    when ``write`` (the plane is owned by this chunk). ``vals`` are the plane's values (padded)."""
    ny = bits.shape[0] - 2
    nx = vals.shape[1] - 2
    width = nx + 2
    k = plane - 1
    dz, dy, dx = spacing[0], spacing[1], spacing[2]
    zc = np.float32(k * dz)
    n = v0
    for jj in range(1, ny + 1):
        a = lo[jj]
        b = hi[jj]
        if a > b:
            continue
        brow = bits[jj]
        wrow = words[jj]
        yc = np.float32((jj - 1) * dy)
        row = vals[jj]
        for w in range((a - 1) >> 3, (b >> 3) + 1):
            x = wrow[w]
            nxt = brow[8 * w + 8]
            if (x == 0 and nxt == 0) or (x == _ONES and nxt == 1):
                continue
            for ii in range(8 * w, 8 * w + 8):
                if brow[ii] != brow[ii + 1]:
                    ids[xbase + jj * width + ii] = n
                    if write:
                        if ii == 0 or ii == nx:
                            t = 0.5
                        else:
                            t = _lerp_t(float(row[ii]), float(row[ii + 1]), level)
                        verts[n, 0] = zc
                        verts[n, 1] = yc
                        verts[n, 2] = np.float32((ii - 1 + t) * dx)
                    n += 1
    for jj in range(0, ny + 1):
        a = min(lo[jj], lo[jj + 1])
        b = max(hi[jj], hi[jj + 1])
        r0 = bits[jj]
        r1 = bits[jj + 1]
        w0 = words[jj]
        w1 = words[jj + 1]
        for w in range(a >> 3, (b >> 3) + 1):
            if w0[w] == w1[w]:
                continue
            for ii in range(8 * w, 8 * w + 8):
                if r0[ii] != r1[ii]:
                    ids[ybase + jj * width + ii] = n
                    if write:
                        if jj == 0 or jj == ny:
                            t = 0.5
                        else:
                            t = _lerp_t(float(vals[jj, ii]), float(vals[jj + 1, ii]), level)
                        verts[n, 0] = zc
                        verts[n, 1] = np.float32((jj - 1 + t) * dy)
                        verts[n, 2] = np.float32((ii - 1) * dx)
                    n += 1
    return n


@njit(cache=True, nogil=True)
def _fill_z(nz, vals, vals1, level, spacing, plane, bits, words, lo, hi, bits1, words1, lo1, hi1, ids, zbase, v0,
            verts):
    """Assign ids (from ``v0``) to the crossed z-edges between padded planes ``plane`` and ``plane+1``."""
    ny = bits.shape[0] - 2
    nx = vals.shape[1] - 2
    width = nx + 2
    dz, dy, dx = spacing[0], spacing[1], spacing[2]
    n = v0
    border = plane == 0 or plane == nz
    for jj in range(1, ny + 1):
        a = min(lo[jj], lo1[jj])
        b = max(hi[jj], hi1[jj])
        r0 = bits[jj]
        r1 = bits1[jj]
        w0 = words[jj]
        w1 = words1[jj]
        yc = np.float32((jj - 1) * dy)
        for w in range(a >> 3, (b >> 3) + 1):
            if w0[w] == w1[w]:
                continue
            for ii in range(8 * w, 8 * w + 8):
                if r0[ii] != r1[ii]:
                    ids[zbase + jj * width + ii] = n
                    if border:
                        t = 0.5
                    else:
                        t = _lerp_t(float(vals[jj, ii]), float(vals1[jj, ii]), level)
                    verts[n, 0] = np.float32((plane - 1 + t) * dz)
                    verts[n, 1] = yc
                    verts[n, 2] = np.float32((ii - 1) * dx)
                    n += 1
    return n


@njit(cache=True, nogil=True)
def _fill_tris(bits, words, lo, hi, bits1, words1, lo1, hi1, ids, eoff, tri_count, tri_edges, f0, faces):
    """Write the triangles of the cube layer between two planes, from face index ``f0``."""
    ny = bits.shape[0] - 2
    width = ids.shape[0] // (5 * (ny + 2))
    f = f0
    for jj in range(0, ny + 1):
        a = min(min(lo[jj], lo[jj + 1]), min(lo1[jj], lo1[jj + 1]))
        b = max(max(hi[jj], hi[jj + 1]), max(hi1[jj], hi1[jj + 1]))
        if a > b:
            continue
        r00 = bits[jj]
        r01 = bits[jj + 1]
        r10 = bits1[jj]
        r11 = bits1[jj + 1]
        w00 = words[jj]
        w01 = words[jj + 1]
        w10 = words1[jj]
        w11 = words1[jj + 1]
        for w in range((a - 1) >> 3, (b >> 3) + 1):
            c8 = 8 * w + 8
            f8 = r00[c8] | (r01[c8] << 1) | (r10[c8] << 2) | (r11[c8] << 3)
            if f8 == 0 and (w00[w] | w01[w] | w10[w] | w11[w]) == 0:
                continue
            if f8 == 15 and (w00[w] & w01[w] & w10[w] & w11[w]) == _ONES:
                continue
            ii = 8 * w
            fprev = r00[ii] | (r01[ii] << 1) | (r10[ii] << 2) | (r11[ii] << 3)
            for ii in range(8 * w, 8 * w + 8):
                fn = r00[ii + 1] | (r01[ii + 1] << 1) | (r10[ii + 1] << 2) | (r11[ii + 1] << 3)
                case = fprev | (fn << 4)
                fprev = fn
                nt = tri_count[case]
                if nt == 0:
                    continue
                base = jj * width + ii
                for t in range(nt):
                    faces[f, 0] = ids[eoff[tri_edges[case, 3 * t]] + base]
                    faces[f, 1] = ids[eoff[tri_edges[case, 3 * t + 1]] + base]
                    faces[f, 2] = ids[eoff[tri_edges[case, 3 * t + 2]] + base]
                    f += 1
    return f


@njit(cache=True, nogil=True)
def _edge_offsets(eoff, s0, psize, width):
    """Offsets into the flat id buffer of the 12 cube edges, for a layer whose lower plane uses slot s0."""
    for dz in range(2):
        slot = s0 if dz == 0 else 1 - s0
        for dy in range(2):
            eoff[dz * 2 + dy] = slot * psize + dy * width  # x-edges
        for dx in range(2):
            eoff[4 + dz * 2 + dx] = (2 + slot) * psize + dx  # y-edges
    for dy in range(2):
        for dx in range(2):
            eoff[8 + dy * 2 + dx] = 4 * psize + dy * width + dx  # z-edges


@njit(cache=True, nogil=True)
def _fill_chunk(nz, level, spacing, tables, k0, k1, offsets, verts, faces, prepared, ids, eoff):
    """Pass 2 for padded planes ``k0..k1-1`` from prepared planes ``k0..k1`` (one work item).

    ``tables = (tri_count, tri_edges)``, ``offsets = (voff, cxy, toff)``,
    ``prepared = (bits, words, lo, hi, vals)`` from :func:`_prepare_planes`; ``ids`` and ``eoff`` are
    scratch. Nothing here depends on the volume's dtype, so it compiles once.
    """
    tri_count, tri_edges = tables
    voff, cxy, toff = offsets
    bits, words, lo, hi, vals = prepared
    ny = bits.shape[1] - 2
    nx = vals.shape[2] - 2
    width = nx + 2
    psize = (ny + 2) * width
    own = k0 < k1  # always true; a runtime bool so _fill_xy compiles once
    zero = 0 * psize  # not a literal, so _fill_xy compiles once
    _fill_xy(vals[0], level, spacing, k0, bits[0], words[0], lo[0], hi[0], ids, zero, 2 * psize, voff[k0], verts,
             own)
    for plane in range(k0, k1):
        s0 = plane - k0
        s1 = s0 + 1
        b0 = s0 & 1  # id-buffer slot of the plane
        b1 = 1 - b0
        if plane + 1 <= nz:
            own = plane + 1 < k1
            _fill_xy(vals[s1], level, spacing, plane + 1, bits[s1], words[s1], lo[s1], hi[s1], ids, b1 * psize,
                     (2 + b1) * psize, voff[plane + 1], verts, own)
        _fill_z(nz, vals[s0], vals[s1], level, spacing, plane, bits[s0], words[s0], lo[s0], hi[s0], bits[s1],
                words[s1], lo[s1], hi[s1], ids, 4 * psize, voff[plane] + cxy[plane], verts)
        _edge_offsets(eoff, b0, psize, width)
        _fill_tris(bits[s0], words[s0], lo[s0], hi[s0], bits[s1], words[s1], lo[s1], hi[s1], ids, eoff,
                   tri_count, tri_edges, toff[plane], faces)


_POOL: dict = {}  # {"key": (pid, threads), "pool": ThreadPoolExecutor}
_POOL_LOCK = threading.Lock()
_SCRATCH = threading.local()  # per pool thread: {(kind, shape...): arrays}, reused between calls


def _pool(threads: int) -> ThreadPoolExecutor:
    """A persistent pool of ``threads`` workers (recreated after a fork or a thread-count change)."""
    key = (os.getpid(), threads)
    with _POOL_LOCK:
        if _POOL.get("key") != key:
            old = _POOL.get("pool")
            if old is not None and _POOL["key"][0] == key[0]:
                old.shutdown(wait=False)
            _POOL["pool"] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="printpipe-kernels")
            _POOL["key"] = key
        return _POOL["pool"]


def shutdown_pool() -> None:
    """Stop the pool's idle workers (and drop their scratch arrays); the next call makes a new pool.

    The CLI calls it before its quick exit (``printpipe.cli.main.console``), which ends the process
    only when no other thread is left that would still be waited for.
    """
    with _POOL_LOCK:
        pool = _POOL.pop("pool", None)
        _POOL.pop("key", None)
    if pool is not None:
        pool.shutdown(wait=True)


def thread_scratch(key, make):
    """This thread's scratch arrays for ``key``, made by ``make()`` on first use and then reused.

    The kernels need a few slices of scratch per thread; allocating them for every chunk (or every
    call) costs more in page faults than the work itself. Only the latest key per thread is kept.
    """
    cached = getattr(_SCRATCH, "item", None)
    if cached is None or cached[0] != key:
        cached = (key, make())
        _SCRATCH.item = cached
    return cached[1]


def run_chunks(fn, chunks) -> None:
    """Call ``fn(start, stop)`` for every chunk on ``numba.get_num_threads()`` threads.

    The kernels are ``nogil`` serial functions, so Python threads run them in parallel; chunks are
    handed out dynamically (load balance) and each writes a disjoint part of the output, so the
    result does not depend on the thread count. (A ``prange`` driver did the same but doubled the
    cold compile time: numba compiles parallel functions and their callees much more slowly.)
    """
    threads = min(numba.get_num_threads(), len(chunks))
    if threads <= 1:
        for k0, k1 in chunks:
            fn(k0, k1)
        return
    pool = _pool(numba.get_num_threads())
    for future in [pool.submit(fn, k0, k1) for k0, k1 in chunks]:
        future.result()


def _threshold(volume: np.ndarray, level: float):
    """Threshold in the volume's dtype with ``v >= thr`` exactly equivalent to ``v >= level``."""
    dt = volume.dtype
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        t = math.ceil(level)
        if t > info.max:
            return None  # nothing is above
        return dt.type(max(t, info.min))
    t = dt.type(level)
    if float(t) < level:
        t = np.nextafter(t, dt.type(np.inf))
    return t


def marching_cubes(volume: np.ndarray, level: float, spacing=(1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Closed, edge-manifold, outward-oriented iso-surface of a 3-D array.

    Parameters
    ----------
    volume : (nz, ny, nx) ndarray
        int16 (HU), uint8 / bool (masks), float32 or any other integer / float dtype. Read as is,
        never converted as a whole. At least 1 voxel along every axis.
    level : float
        Iso value. Voxels with ``value >= level`` are inside; NaN counts as outside.
    spacing : (3,) float
        Voxel size ``(dz, dy, dx)`` in mm.

    Returns
    -------
    vertices : (n, 3) float32
        Grid millimetres in ``(z, y, x)`` order (index * spacing); ``n == 0`` when nothing is above.
    faces : (m, 3) int32
        Triangles; normals (right-hand rule in ``(z, y, x)`` coordinates) point out of the region
        ``>= level``.

    Notes
    -----
    Surfaces touching the border are closed half a voxel outside, as if the volume were padded with
    values below the level (no copy is made). Ambiguous configurations follow the (26, 6)
    convention (see :mod:`printpipe.kernels._luts`): the above region is 26-connected, the below
    region 6-connected, so the mesh has one connected shell per 26-connected component of the
    above region plus one per enclosed 6-connected cavity, and its Euler characteristic is twice
    that of the union of closed voxel cubes ``>= level``. The output does not depend on the number
    of numba threads.

    References
    ----------
    Lorensen & Cline (1987), Marching cubes, doi:10.1145/37402.37422.
    Schroeder, Maynard & Geveci (2015), Flying edges, doi:10.1109/LDAV.2015.7348069.

    Examples
    --------
    >>> import numpy as np
    >>> from printpipe.kernels import marching_cubes
    >>> verts, faces = marching_cubes(np.ones((1, 1, 1), np.uint8), 0.5)
    >>> verts.shape, faces.shape
    ((6, 3), (8, 3))
    """
    from printpipe.errors import InputError

    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise InputError(f"marching_cubes needs a 3-D (z, y, x) array; got shape {vol.shape}")
    if vol.dtype == np.bool_:
        vol = vol.view(np.uint8)
    if not (np.issubdtype(vol.dtype, np.integer) or np.issubdtype(vol.dtype, np.floating)):
        raise InputError(f"marching_cubes needs an integer or float array; got dtype {vol.dtype}")
    if min(vol.shape) < 1:
        raise InputError(f"marching_cubes needs at least one voxel per axis; got shape {vol.shape}")
    level = float(level)
    if not np.isfinite(level):
        raise InputError(f"marching_cubes level must be finite; got {level}")
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"spacing must be three positive mm values (dz, dy, dx); got {spacing}")
    if not vol.flags.c_contiguous:
        vol = np.ascontiguousarray(vol)
    thr = _threshold(vol, level)
    if thr is None:
        return np.empty((0, 3), np.float32), np.empty((0, 3), np.int32)
    count, table = _luts.TRI_COUNT, _luts.TRI_EDGES
    nplanes = vol.shape[0] + 1
    chunks = [(k0, min(k0 + _CHUNK, nplanes)) for k0 in range(0, nplanes, _CHUNK)]
    cxy = np.zeros(nplanes, dtype=np.int64)
    czc = np.zeros(nplanes, dtype=np.int64)
    ctri = np.zeros(nplanes, dtype=np.int64)
    nz, ny, nx = vol.shape
    wpad = _bits_width(nx)
    no_values = np.empty((1, 1, 1), np.float32)
    # scratch buffers are reused by each thread for all its chunks (see thread_scratch)

    def scratch(with_values):
        """This thread's (bits, lo, hi, vals, ids) for up to _CHUNK + 1 planes."""
        m = _CHUNK + 1

        def make():
            return (np.empty((m, ny + 2, wpad), dtype=np.uint8),
                    np.empty((m, ny + 2), np.int64),
                    np.empty((m, ny + 2), np.int64),
                    np.empty((m, ny + 2, nx + 2), np.float32),
                    np.empty(5 * (ny + 2) * (nx + 2), np.int32))

        return thread_scratch(("mc", ny, nx), make)

    def prepare(k0, k1, with_values):
        n = k1 - k0 + 1
        bits_all, lo_all, hi_all, vals_all, ids = scratch(with_values)
        bits, lo, hi = bits_all[:n], lo_all[:n], hi_all[:n]
        vals = vals_all[:n] if with_values else no_values
        _prepare_planes(vol, thr, k0, bits, lo, hi, vals, with_values)
        return (bits, bits.view(np.uint64), lo, hi, vals), ids

    def count_chunk(k0, k1):
        (bits, words, lo, hi, _), _ = prepare(k0, k1, False)
        _count_chunk(k0, k1, bits, words, lo, hi, count, cxy, czc, ctri)

    run_chunks(count_chunk, chunks)
    voff = np.zeros(len(cxy) + 1, dtype=np.int64)
    np.cumsum(cxy + czc, out=voff[1:])
    toff = np.zeros(len(ctri) + 1, dtype=np.int64)
    np.cumsum(ctri, out=toff[1:])
    nverts, nfaces = int(voff[-1]), int(toff[-1])
    if nverts >= 2**31 - 1:
        raise InputError(f"the surface has {nverts} vertices, more than int32 faces can index; crop the volume")
    verts = np.empty((nverts, 3), dtype=np.float32)
    faces = np.empty((nfaces, 3), dtype=np.int32)
    if nfaces:
        tables, offsets = (count, table), (voff, cxy, toff)

        def fill_chunk(k0, k1):
            prepared, ids = prepare(k0, k1, True)
            _fill_chunk(nz, level, sp, tables, k0, k1, offsets, verts, faces, prepared, ids, np.empty(12, np.int64))

        run_chunks(fill_chunk, chunks)
    return verts, faces


# HU volumes, masks, and the float32 distance fields of masks on anisotropic grids; other dtypes
# compile on first use (about 2 s: only the two volume-reading kernels are per dtype)
WARMUP_DTYPES = (np.int16, np.uint8, np.float32)


def warmup() -> None:
    """Compile (or load from the cache) the marching-cubes kernels for int16, uint8 and float32."""
    base = np.random.default_rng(0).random((4, 4, 4))
    for dt in WARMUP_DTYPES:
        vol = (base > 0.5).astype(dt) if dt == np.uint8 else (base * 1000).astype(dt)
        marching_cubes(vol, 0.5 if dt == np.uint8 else 500.0)
