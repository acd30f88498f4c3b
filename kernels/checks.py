"""numba kernels of the output checks (:mod:`printpipe.verify`).

* :func:`weld` -- vertex ids of a triangle soup (STL) by exact float32 coordinates, with an
  open-addressing hash table (linear probing); O(n), no sort.
* :func:`edge_check` -- boundary, over-shared and mis-oriented edges and degenerate faces of an
  indexed triangle mesh: directed edges are bucketed by their first vertex (counting sort), then
  each directed edge (a, b) must occur exactly once and its reverse (b, a) exactly once. That is
  the definition of a closed, edge-manifold (every edge in exactly two faces), consistently wound
  mesh. O(sum of squared vertex degrees), about 36 comparisons per vertex on a triangle mesh.
* :func:`same_structure` -- whether a welded STL and a 3MF object are one mesh up to vertex
  numbering, so that one edge check stands for both.
* :func:`count_3mf`, :func:`parse_3mf` -- vertices and triangles of every ``<object>`` of a 3MF
  model XML, straight from the bytes (attribute values of ``<vertex x= y= z=>`` and ``<triangle v1= v2= v3=>``).
* :func:`soup_stats`, :func:`indexed_stats` -- bounds and enclosed volume (divergence theorem,
  float64 sums) of a triangle soup or an indexed mesh.

Kernels are plain loops (valid Python with ``NUMBA_DISABLE_JIT=1``) and never raise; the wrappers
in ``printpipe/`` validate and talk.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["weld", "edge_check", "same_structure", "count_3mf", "parse_3mf", "soup_stats", "indexed_stats", "warmup"]


@njit(cache=True, nogil=True)
def weld(bits, ids):  # pragma: no cover - numba
    """``bits`` (n, 3, 3) uint32, the float32 corners of n triangles as raw bits (any strides, as
    read from an STL): write a vertex id per corner into ``ids`` (n * 3; equal coordinates, equal
    ids, numbered in order of first appearance; -0.0 equals +0.0); return the count."""
    n = bits.shape[0]
    m = 3 * n
    size = 1
    while size < 2 * m:
        size *= 2
    mask = np.uint64(size - 1)
    table = np.full(size, -1, dtype=np.int64)
    keys = np.empty((m, 3), dtype=np.uint32)
    sign_only = np.uint32(0x80000000)
    count = 0
    for i in range(m):
        t, k = i // 3, i % 3
        x = bits[t, k, 0]
        y = bits[t, k, 1]
        z = bits[t, k, 2]
        x = np.uint32(0) if x == sign_only else x
        y = np.uint32(0) if y == sign_only else y
        z = np.uint32(0) if z == sign_only else z
        keys[i, 0] = x
        keys[i, 1] = y
        keys[i, 2] = z
        h = (np.uint64(x) * np.uint64(0x9E3779B185EBCA87)) ^ (np.uint64(y) * np.uint64(0xC2B2AE3D27D4EB4F)) \
            ^ (np.uint64(z) * np.uint64(0x165667B19E3779F9))
        h ^= h >> np.uint64(29)
        slot = h & mask
        while True:
            j = table[slot]
            if j < 0:
                table[slot] = i
                ids[i] = count
                count += 1
                break
            if keys[j, 0] == x and keys[j, 1] == y and keys[j, 2] == z:
                ids[i] = ids[j]
                break
            slot = (slot + np.uint64(1)) & mask
    return count


@njit(cache=True, nogil=True)
def edge_check(faces, n_vertices, out):  # pragma: no cover - numba
    """Count, into ``out``: [0] degenerate faces (a repeated corner), [1] directed edges that occur
    once and have no reverse (boundary), [2] directed edges occurring more than once or with more
    than one reverse (over-shared, or inconsistently wound: a flipped face makes each of its three
    edges occur twice in one direction), [3] faces referring to a vertex outside 0..n_vertices-1."""
    nf = faces.shape[0]
    for q in range(4):
        out[q] = 0
    deg = np.zeros(n_vertices + 1, dtype=np.int64)
    for f in range(nf):
        bad = False
        for q in range(3):
            v = faces[f, q]
            if v < 0 or v >= n_vertices:
                bad = True
        if bad:
            out[3] += 1
            continue
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        if a == b or b == c or c == a:
            out[0] += 1
        deg[a + 1] += 1
        deg[b + 1] += 1
        deg[c + 1] += 1
    for v in range(n_vertices):
        deg[v + 1] += deg[v]
    fill = deg[:-1].copy()
    target = np.empty(deg[n_vertices], dtype=np.int32)  # half the memory traffic of int64
    for f in range(nf):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        if a < 0 or b < 0 or c < 0 or a >= n_vertices or b >= n_vertices or c >= n_vertices:
            continue
        target[fill[a]] = b
        fill[a] += 1
        target[fill[b]] = c
        fill[b] += 1
        target[fill[c]] = a
        fill[c] += 1
    for a in range(n_vertices):
        for e in range(deg[a], deg[a + 1]):
            b = target[e]
            fwd = 0
            for e2 in range(deg[a], deg[a + 1]):
                if target[e2] == b:
                    fwd += 1
            rev = 0
            for e2 in range(deg[b], deg[b + 1]):
                if target[e2] == a:
                    rev += 1
            if fwd > 1 or rev > 1:
                out[2] += 1
            elif rev == 0:
                out[1] += 1


@njit(cache=True, nogil=True)
def same_structure(ids, faces, n_ids, n_faces_vertices):  # pragma: no cover - numba
    """Whether corner ids ``ids`` (3n,) over ``n_ids`` vertices and ``faces`` (n, 3) over
    ``n_faces_vertices`` vertices describe the same mesh up to renumbering: one bijection between
    the two vertex sets maps every corner onto its counterpart. Then edge checks of one hold for
    the other."""
    if ids.shape[0] != 3 * faces.shape[0] or n_ids != n_faces_vertices:
        return False
    a2b = np.full(n_ids, -1, dtype=np.int64)
    b2a = np.full(n_faces_vertices, -1, dtype=np.int64)
    for t in range(faces.shape[0]):
        for k in range(3):
            a = ids[3 * t + k]
            b = faces[t, k]
            if a < 0 or a >= n_ids or b < 0 or b >= n_faces_vertices:
                return False
            if a2b[a] < 0 and b2a[b] < 0:
                a2b[a] = b
                b2a[b] = a
            elif a2b[a] != b or b2a[b] != a:
                return False
    return True


_POW10 = np.array([10.0 ** k for k in range(-30, 31)])


@njit(cache=True, nogil=True)
def _parse_number(buf, i, n):  # pragma: no cover - numba
    """Parse a decimal number (sign, digits, point, exponent) at ``buf[i]``; return (value, end).
    NaN when there are no digits. The mantissa is summed as an integer of at most 18 digits (exact);
    further digits only scale it (integer part) or are dropped (below float64 precision)."""
    neg = False
    if i < n and (buf[i] == 45 or buf[i] == 43):  # - +
        neg = buf[i] == 45
        i += 1
    mant = 0
    digits = 0
    scale = 0
    frac = False
    while i < n:
        c = buf[i]
        if 48 <= c <= 57:
            if digits < 18:
                mant = mant * 10 + (c - 48)
                if frac:
                    scale -= 1
            elif not frac:
                scale += 1
            digits += 1
        elif c == 46 and not frac:  # .
            frac = True
        else:
            break
        i += 1
    if i < n and (buf[i] == 101 or buf[i] == 69):  # e E
        j = i + 1
        eneg = False
        if j < n and (buf[j] == 45 or buf[j] == 43):
            eneg = buf[j] == 45
            j += 1
        ex = 0
        if j < n and 48 <= buf[j] <= 57:
            while j < n and 48 <= buf[j] <= 57:
                if ex < 10000:
                    ex = ex * 10 + (buf[j] - 48)
                j += 1
            scale += -ex if eneg else ex
            i = j
    if digits == 0:
        return np.nan, i
    value = float(mant)
    if 0 <= scale <= 30:
        value *= _POW10[scale + 30]
    elif -30 <= scale < 0:
        value /= _POW10[30 - scale]
    else:
        value *= 10.0 ** scale
    return (-value if neg else value), i


@njit(cache=True, nogil=True)
def _match(buf, i, pat):  # pragma: no cover - numba
    if i + pat.shape[0] > buf.shape[0]:
        return False
    for k in range(pat.shape[0]):
        if buf[i + k] != pat[k]:
            return False
    return True


@njit(cache=True, nogil=True)
def count_3mf(buf, out):  # pragma: no cover - numba
    """Count ``<vertex ``, ``<triangle `` and ``<object `` elements of a 3MF model XML into ``out``."""
    p_vertex = np.array([60, 118, 101, 114, 116, 101, 120, 32], dtype=np.uint8)
    p_tri = np.array([60, 116, 114, 105, 97, 110, 103, 108, 101, 32], dtype=np.uint8)
    p_obj = np.array([60, 111, 98, 106, 101, 99, 116, 32], dtype=np.uint8)
    out[0] = 0
    out[1] = 0
    out[2] = 0
    for i in range(buf.shape[0]):
        if buf[i] != 60:
            continue
        if _match(buf, i, p_vertex):
            out[0] += 1
        elif _match(buf, i, p_tri):
            out[1] += 1
        elif _match(buf, i, p_obj):
            out[2] += 1


@njit(cache=True, nogil=True)
def parse_3mf(buf, verts, tris, obj_v, obj_t):  # pragma: no cover - numba
    """Read ``<vertex>`` (x, y, z) and ``<triangle>`` (v1, v2, v3) elements of a 3MF model XML.

    ``buf`` uint8 bytes; ``verts`` (>= nv, 3) float64 and ``tris`` (>= nt, 3) int64 are filled in
    document order; ``obj_v``/``obj_t`` (>= objects + 1) get the running vertex/triangle counts at
    each ``<object`` start and at the end. Returns (vertices, triangles, objects, errors), where
    errors counts elements with a missing or malformed attribute (their indices become -1); -1
    counts mean the arrays were too small.
    """
    n = buf.shape[0]
    p_vertex = np.array([60, 118, 101, 114, 116, 101, 120, 32], dtype=np.uint8)  # "<vertex "
    p_tri = np.array([60, 116, 114, 105, 97, 110, 103, 108, 101, 32], dtype=np.uint8)  # "<triangle "
    p_obj = np.array([60, 111, 98, 106, 101, 99, 116, 32], dtype=np.uint8)  # "<object "
    nv = 0
    nt = 0
    no = 0
    errors = 0
    i = 0
    while i < n:
        if buf[i] != 60:  # '<'
            i += 1
            continue
        kind = 0
        if _match(buf, i, p_vertex):
            kind = 1
            i += 8
        elif _match(buf, i, p_tri):
            kind = 2
            i += 10
        elif _match(buf, i, p_obj):
            if no + 1 >= obj_v.shape[0]:
                return -1, -1, -1, errors
            obj_v[no] = nv
            obj_t[no] = nt
            no += 1
            i += 8
            continue
        else:
            i += 1
            continue
        a = np.nan
        b = np.nan
        c = np.nan
        # attributes up to the closing '>': name="value"
        while i < n and buf[i] != 62:
            if buf[i] == 61 and i + 1 < n and (buf[i + 1] == 34 or buf[i + 1] == 39):  # =" or ='
                # attribute name: the characters just before '='
                j = i - 1
                while j >= 0 and buf[j] != 32 and buf[j] != 9 and buf[j] != 10 and buf[j] != 13:
                    j -= 1
                name_len = i - j - 1
                slot = -1
                if kind == 1 and name_len == 1:
                    ch = buf[j + 1]
                    slot = 0 if ch == 120 else 1 if ch == 121 else 2 if ch == 122 else -1
                elif kind == 2 and name_len == 2 and buf[j + 1] == 118:
                    ch = buf[j + 2]
                    slot = 0 if ch == 49 else 1 if ch == 50 else 2 if ch == 51 else -1
                value, end = _parse_number(buf, i + 2, n)
                if slot == 0:
                    a = value
                elif slot == 1:
                    b = value
                elif slot == 2:
                    c = value
                i = end
                continue
            i += 1
        ok = not (np.isnan(a) or np.isnan(b) or np.isnan(c))
        if kind == 1:
            if nv >= verts.shape[0]:
                return -1, -1, -1, errors
            if not ok:
                errors += 1
            verts[nv, 0] = a
            verts[nv, 1] = b
            verts[nv, 2] = c
            nv += 1
        else:
            if nt >= tris.shape[0]:
                return -1, -1, -1, errors
            if ok:
                tris[nt, 0] = np.int64(a)
                tris[nt, 1] = np.int64(b)
                tris[nt, 2] = np.int64(c)
            else:
                errors += 1
                tris[nt, 0] = -1
                tris[nt, 1] = -1
                tris[nt, 2] = -1
            nt += 1
    obj_v[no] = nv
    obj_t[no] = nt
    return nv, nt, no, errors


@njit(cache=True, nogil=True)
def soup_stats(corners, lo, hi):  # pragma: no cover - numba
    """Enclosed volume (sum of ``v0 . (v1 x v2) / 6``, float64) of a triangle soup ``corners``
    (n, 3, 3); its bounds go into ``lo``/``hi`` (NaN coordinates make them NaN)."""
    for q in range(3):
        lo[q] = np.inf
        hi[q] = -np.inf
    total = 0.0
    for i in range(corners.shape[0]):
        for k in range(3):
            for q in range(3):
                x = np.float64(corners[i, k, q])
                if not x >= lo[q]:
                    lo[q] = x if not np.isnan(lo[q]) else lo[q]
                if not x <= hi[q]:
                    hi[q] = x if not np.isnan(hi[q]) else hi[q]
        ax, ay, az = np.float64(corners[i, 0, 0]), np.float64(corners[i, 0, 1]), np.float64(corners[i, 0, 2])
        bx, by, bz = np.float64(corners[i, 1, 0]), np.float64(corners[i, 1, 1]), np.float64(corners[i, 1, 2])
        cx, cy, cz = np.float64(corners[i, 2, 0]), np.float64(corners[i, 2, 1]), np.float64(corners[i, 2, 2])
        total += ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)
    return total / 6.0


@njit(cache=True, nogil=True)
def indexed_stats(verts, faces, lo, hi):  # pragma: no cover - numba
    """:func:`soup_stats` of an indexed mesh, skipping faces with an index outside ``verts``."""
    for q in range(3):
        lo[q] = np.inf
        hi[q] = -np.inf
    nv = verts.shape[0]
    total = 0.0
    for i in range(faces.shape[0]):
        a, b, c = faces[i, 0], faces[i, 1], faces[i, 2]
        if a < 0 or b < 0 or c < 0 or a >= nv or b >= nv or c >= nv:
            continue
        for v in (a, b, c):
            for q in range(3):
                x = verts[v, q]
                if not x >= lo[q]:
                    lo[q] = x if not np.isnan(lo[q]) else lo[q]
                if not x <= hi[q]:
                    hi[q] = x if not np.isnan(hi[q]) else hi[q]
        ax, ay, az = verts[a, 0], verts[a, 1], verts[a, 2]
        bx, by, bz = verts[b, 0], verts[b, 1], verts[b, 2]
        cx, cy, cz = verts[c, 0], verts[c, 1], verts[c, 2]
        total += ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)
    return total / 6.0


def warmup() -> None:
    """Compile (or load from numba's cache) every kernel of this module on a tetrahedron."""
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=np.int64)
    tri = v[f]
    ids = np.empty(12, dtype=np.int64)
    rec = np.zeros(4, dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    rec["v"] = tri
    weld(rec["v"].view(np.uint32), ids)  # as verify calls it: a strided view of STL records
    weld(tri.view(np.uint32), ids)
    soup_stats(rec["v"], np.zeros(3), np.zeros(3))
    edge_check(f, 4, np.zeros(4, dtype=np.int64))
    same_structure(ids, f, 4, 4)
    lo, hi = np.zeros(3), np.zeros(3)
    soup_stats(tri, lo, hi)
    indexed_stats(v.astype(np.float64), f, lo, hi)
    xml = np.frombuffer(b'<object id="1"><vertex x="1.5" y="-2" z="3e1"/><triangle v1="0" v2="0" v3="0"/>',
                        dtype=np.uint8)
    count_3mf(xml, np.zeros(3, np.int64))
    parse_3mf(xml, np.empty((1, 3)), np.empty((1, 3), np.int64), np.zeros(2, np.int64), np.zeros(2, np.int64))
