"""Mesh smoothing in numba on an indexed triangle mesh with CSR vertex adjacency.

Two volume-preserving low-pass filters, both built on the uniform ("umbrella") Laplacian
``K x_i = x_i - mean(x_j for j in N(i))``:

* :func:`windowed_sinc_smooth`, the method of 3D Slicer / ``vtkWindowedSincPolyDataFilter``
  (Taubin, Zhang & Golub 1996): the transfer function is a windowed sinc low-pass filter in the
  frequency ``k`` of ``K``, approximated by a Chebyshev polynomial of degree ``iterations`` in
  ``1 - k/2`` and applied with the three-term recurrence, one Laplacian per degree. A Nuttall window
  damps the Gibbs ripples (VTK's default since 9.1; the older Hamming window changed the size of
  the object by up to about 1 %), and the cut-off is shifted by Newton iterations so that the
  response is exactly 1 at the pass band ``k_pb``. Coordinates are centred and scaled to the unit
  cube first (VTK's ``NormalizeCoordinatesOn``, which Slicer uses), so the small deviation of the
  response from 1 at ``k = 0`` does not scale the mesh about a far-away origin.
* :func:`taubin_smooth`, Taubin's lambda/mu filter (1995): alternating steps ``x += lambda K' x``
  and ``x += mu K' x`` with ``mu < -lambda < 0``, pass band ``1/lambda + 1/mu``.

Kernels are ``@njit(cache=True, nogil=True)`` and never raise. The per-vertex steps run over chunks
of vertices on ``numba.get_num_threads()`` Python threads (see :func:`printpipe.kernels.mc.run_chunks`);
each vertex's result depends only on the previous iterate, so results do not depend on the thread
count.

References
----------
Taubin (1995), A signal processing approach to fair surface design, doi:10.1145/218380.218473.
Taubin, Zhang & Golub (1996), Optimal surface smoothing as filter design, doi:10.1007/BFb0015544.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from printpipe.kernels.mc import run_chunks

__all__ = [
    "SMOOTH_METHODS",
    "build_adjacency",
    "sinc_coefficients",
    "windowed_sinc_smooth",
    "taubin_smooth",
    "smooth_mesh",
    "mesh_volume",
    "restore_volume",
    "warmup",
]

SMOOTH_METHODS = ("sinc", "taubin", "none")


@njit(cache=True, nogil=True)
def _adjacency_kernel(faces, ptr, tmp, count, indptr):
    """Fill ``tmp`` with both other corners of every face per vertex (rows ``ptr``), remove repeats,
    and write the unique row lengths' prefix sums to ``indptr``. Plain loops only: numpy slicing and
    cumsum in a kernel pull in seconds of compile time for error messages."""
    nverts = ptr.shape[0] - 1
    nf = faces.shape[0]
    for v in range(nverts + 1):
        ptr[v] = 0
    for f in range(nf):
        for c in range(3):
            ptr[faces[f, c] + 1] += 2
    for v in range(nverts):
        ptr[v + 1] += ptr[v]
    for v in range(nverts):
        count[v] = ptr[v]  # fill position
    for f in range(nf):
        a = faces[f, 0]
        b = faces[f, 1]
        c = faces[f, 2]
        tmp[count[a]] = b
        tmp[count[a] + 1] = c
        count[a] += 2
        tmp[count[b]] = c
        tmp[count[b] + 1] = a
        count[b] += 2
        tmp[count[c]] = a
        tmp[count[c] + 1] = b
        count[c] += 2
    _dedupe_rows(ptr, tmp, count)
    indptr[0] = 0
    for v in range(nverts):
        indptr[v + 1] = indptr[v] + count[v]


@njit(cache=True, nogil=True)
def _dedupe_rows(ptr, tmp, count):
    """Remove repeated neighbours within each CSR row in place; write the new row lengths."""
    n = ptr.shape[0] - 1
    for v in range(n):
        s = ptr[v]
        m = 0
        for q in range(s, ptr[v + 1]):
            x = tmp[q]
            dup = False
            for r in range(s, s + m):
                if tmp[r] == x:
                    dup = True
                    break
            if not dup:
                tmp[s + m] = x
                m += 1
        count[v] = m


@njit(cache=True, nogil=True)
def _compact_rows(ptr, tmp, indptr, indices):
    n = indptr.shape[0] - 1
    for v in range(n):
        s = ptr[v]
        d = indptr[v]
        for q in range(indptr[v + 1] - d):
            indices[d + q] = tmp[s + q]


@njit(cache=True, nogil=True)
def _linear_step(x, y, indptr, indices, coef, out, acc, v0, v1):
    """For vertices ``v0..v1-1``: ``out = a x + b mean(x[neighbours]) + c y`` and ``acc += d out``.

    ``coef = (a, b, c, d)``. Every smoothing filter here is a sequence of such steps: the sinc
    start ``x1 = x0/2 + mean(x0)/2``, the Chebyshev recurrence ``x2 = x1 + mean(x1) - x0`` with
    ``x3 += c_i x2``, and Taubin's ``x + f (mean(x) - x)``. A vertex without neighbours counts as its
    own mean. One kernel keeps the cold compile short.
    """
    a = coef[0]
    b = coef[1]
    c = coef[2]
    d = coef[3]
    for v in range(v0, v1):
        s = indptr[v]
        e = indptr[v + 1]
        x0 = x[v, 0]
        x1 = x[v, 1]
        x2 = x[v, 2]
        if e > s:
            m0 = 0.0
            m1 = 0.0
            m2 = 0.0
            for q in range(s, e):
                u = indices[q]
                m0 += x[u, 0]
                m1 += x[u, 1]
                m2 += x[u, 2]
            inv = 1.0 / (e - s)
            m0 *= inv
            m1 *= inv
            m2 *= inv
        else:
            m0 = x0
            m1 = x1
            m2 = x2
        r0 = a * x0 + b * m0
        r1 = a * x1 + b * m1
        r2 = a * x2 + b * m2
        if c != 0.0:
            r0 += c * y[v, 0]
            r1 += c * y[v, 1]
            r2 += c * y[v, 2]
        out[v, 0] = r0
        out[v, 1] = r1
        out[v, 2] = r2
        if d != 0.0:
            acc[v, 0] += d * r0
            acc[v, 1] += d * r1
            acc[v, 2] += d * r2


def _run_step(x, y, indptr, indices, coef, out, acc) -> None:
    n = x.shape[0]
    chunk = max(16384, -(-n // 64))
    chunks = [(v0, min(v0 + chunk, n)) for v0 in range(0, n, chunk)]
    c = np.asarray(coef, dtype=np.float64)
    run_chunks(lambda v0, v1: _linear_step(x, y, indptr, indices, c, out, acc, v0, v1), chunks)


@njit(cache=True)
def _volume_kernel(x, faces):
    """Signed volume (divergence theorem) of a closed oriented mesh, about its first vertex."""
    total = 0.0
    ox, oy, oz = x[0, 0], x[0, 1], x[0, 2]
    for f in range(faces.shape[0]):
        a = faces[f, 0]
        b = faces[f, 1]
        c = faces[f, 2]
        ax, ay, az = x[a, 0] - ox, x[a, 1] - oy, x[a, 2] - oz
        bx, by, bz = x[b, 0] - ox, x[b, 1] - oy, x[b, 2] - oz
        cx, cy, cz = x[c, 0] - ox, x[c, 1] - oy, x[c, 2] - oz
        total += ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)
    return total / 6.0


@njit(cache=True)
def _offset_normals(x, faces):
    """Area-weighted unit vertex normals and the total area of a triangle mesh."""
    n = x.shape[0]
    vn = np.zeros((n, 3))
    area2 = 0.0
    for f in range(faces.shape[0]):
        a = faces[f, 0]
        b = faces[f, 1]
        c = faces[f, 2]
        ux, uy, uz = x[b, 0] - x[a, 0], x[b, 1] - x[a, 1], x[b, 2] - x[a, 2]
        vx, vy, vz = x[c, 0] - x[a, 0], x[c, 1] - x[a, 1], x[c, 2] - x[a, 2]
        nx = uy * vz - uz * vy
        ny = uz * vx - ux * vz
        nz = ux * vy - uy * vx
        area2 += math.sqrt(nx * nx + ny * ny + nz * nz)
        for v in (a, b, c):
            vn[v, 0] += nx
            vn[v, 1] += ny
            vn[v, 2] += nz
    for v in range(n):
        norm = math.sqrt(vn[v, 0] ** 2 + vn[v, 1] ** 2 + vn[v, 2] ** 2)
        if norm > 0.0:
            vn[v, 0] /= norm
            vn[v, 1] /= norm
            vn[v, 2] /= norm
    return vn, 0.5 * area2


def mesh_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Signed enclosed volume of a closed, consistently oriented triangle mesh (positive when outward).

    Parameters
    ----------
    vertices : (n, 3) float
    faces : (m, 3) int

    Returns
    -------
    float
        Volume in the cube of the vertex units; 0.0 for an empty mesh.
    """
    if len(faces) == 0:
        return 0.0
    return float(_volume_kernel(np.ascontiguousarray(vertices, dtype=np.float64), np.ascontiguousarray(faces)))


def restore_volume(vertices: np.ndarray, faces: np.ndarray, target: float, steps: int = 4) -> np.ndarray:
    """Move every vertex along its normal by one common distance so the mesh encloses ``target``.

    The offset ``(target - V) / area`` is the first-order correction (exact for a plane); it is
    repeated (at most ``steps`` times) until the volume is within 1e-7 relative of ``target``,
    usually after two steps on smooth meshes. Used after
    smoothing to give back the shrinkage (or swelling) of the filter and, for masks, the volume the
    corner-cutting of marching cubes removes from the voxel volume.

    Parameters
    ----------
    vertices : (n, 3) float
    faces : (m, 3) int
    target : float
        Wanted enclosed volume (same units cubed).
    steps : int
        Maximum number of correction steps.

    Returns
    -------
    (n, 3) float64
    """
    x = np.array(vertices, dtype=np.float64)
    faces = np.ascontiguousarray(faces)
    for _ in range(int(steps)):
        if len(faces) == 0:
            break
        normals, area = _offset_normals(x, faces)
        if area <= 0.0:
            break
        error = float(target) - float(_volume_kernel(x, faces))
        if abs(error) <= 1e-7 * abs(float(target)):
            break
        x += (error / area) * normals
    return x


def build_adjacency(faces: np.ndarray, nverts: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertex adjacency of a triangle mesh in CSR form.

    Parameters
    ----------
    faces : (m, 3) int
        Triangles indexing ``0..nverts-1``.
    nverts : int
        Number of vertices (isolated vertices get empty rows).

    Returns
    -------
    indptr : (nverts + 1,) int64
    indices : (indptr[-1],) int32
        Neighbours of vertex ``v`` are ``indices[indptr[v]:indptr[v + 1]]``, each once.
    """
    faces = np.ascontiguousarray(faces)
    if faces.dtype not in (np.int32, np.int64):
        faces = faces.astype(np.int64)
    nverts = int(nverts)
    ptr = np.empty(nverts + 1, dtype=np.int64)
    tmp = np.empty(6 * len(faces), dtype=np.int32)
    count = np.empty(nverts, dtype=np.int64)
    indptr = np.empty(nverts + 1, dtype=np.int64)
    _adjacency_kernel(faces, ptr, tmp, count, indptr)
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    _compact_rows(ptr, tmp, indptr, indices)
    return indptr, indices


def sinc_coefficients(iterations: int, passband: float) -> np.ndarray:
    """Chebyshev coefficients ``c_0..c_N`` of the Nuttall-windowed sinc low-pass filter.

    The filter is ``f(k) = sum_i c_i T_i(1 - k/2)`` for the Laplacian frequency ``k`` in ``[0, 2]``.
    The cut-off angle ``theta_pb = arccos(1 - passband/2)`` is shifted by ``sigma`` (Newton's
    method, as in Taubin et al. 1996) so that ``f(passband) = 1``.

    Parameters
    ----------
    iterations : int
        Polynomial degree ``N >= 1`` (one Laplacian per degree).
    passband : float
        ``k_pb`` in ``(0, 2)``; smaller smooths more. VTK's and our default is 0.1.

    Returns
    -------
    (N + 1,) float64
    """
    n = int(iterations)
    i = np.arange(n + 1, dtype=float)
    # Nuttall window over the half-length N + 1: w(0) = 1, w(N + 1) = 0
    a = (0.355768, 0.487396, 0.144232, 0.012604)
    phase = i * np.pi / (n + 1)
    w = a[0] + a[1] * np.cos(phase) + a[2] * np.cos(2 * phase) + a[3] * np.cos(3 * phase)
    theta = math.acos(1.0 - 0.5 * passband)
    ti = np.cos(i * theta)  # T_i(1 - k_pb / 2)

    def coeffs(sig: float) -> np.ndarray:
        c = np.empty(n + 1)
        c[0] = w[0] * (theta + sig) / np.pi
        c[1:] = 2.0 * w[1:] * np.sin(i[1:] * (theta + sig)) / (i[1:] * np.pi)
        return c

    sigma = 0.0
    if n > 1:
        for _ in range(100):
            f = float(coeffs(sigma) @ ti)
            if abs(f - 1.0) < 1e-3:  # as VTK: on the flat pass band Newton would wander
                break
            # d f / d sigma, analytically
            dc = np.empty(n + 1)
            dc[0] = w[0] / np.pi
            dc[1:] = 2.0 * w[1:] * np.cos(i[1:] * (theta + sigma)) / np.pi
            df = float(dc @ ti)
            if df == 0.0:
                break
            sigma -= (f - 1.0) / df
    return coeffs(sigma)


def windowed_sinc_smooth(vertices: np.ndarray, faces: np.ndarray, iterations: int = 20,
                         passband: float = 0.1, adjacency=None) -> np.ndarray:
    """Windowed-sinc low-pass smoothing (3D Slicer's / VTK's method) of an indexed mesh.

    Parameters
    ----------
    vertices : (n, 3) float
        Vertex positions (any units; the result is in the same units).
    faces : (m, 3) int
        Triangles.
    iterations : int
        Degree of the Chebyshev approximation = number of Laplacian applications (VTK default 20).
    passband : float
        Pass band ``k_pb`` in ``(0, 2)`` (VTK default 0.1); lower values smooth more.
    adjacency : tuple, optional
        ``(indptr, indices)`` from :func:`build_adjacency`, to reuse.

    Returns
    -------
    (n, 3) float64
        Smoothed positions. Vertices without neighbours do not move.

    Notes
    -----
    Coordinates are centred on the bounding-box centre and divided by its diagonal before filtering
    and mapped back afterwards, as ``vtkWindowedSincPolyDataFilter`` does with normalisation on.
    """
    x = np.asarray(vertices, dtype=np.float64)
    if iterations < 1 or len(x) == 0:
        return x.copy()
    indptr, indices = adjacency if adjacency is not None else build_adjacency(faces, len(x))
    lo, hi = x.min(axis=0), x.max(axis=0)
    centre = 0.5 * (lo + hi)
    scale = float(np.linalg.norm(hi - lo)) or 1.0
    c = sinc_coefficients(iterations, passband)
    x0 = (x - centre) / scale
    x1 = np.empty_like(x0)
    x2 = np.empty_like(x0)
    x3 = c[0] * x0
    _run_step(x0, x0, indptr, indices, (0.5, 0.5, 0.0, c[1]), x1, x3)  # x1 = (I - K/2) x0
    for it in range(2, int(iterations) + 1):
        # Chebyshev: x2 = 2 (I - K/2) x1 - x0 = x1 + mean(x1) - x0
        _run_step(x1, x0, indptr, indices, (1.0, 1.0, -1.0, c[it]), x2, x3)
        x0, x1, x2 = x1, x2, x0
    x3 *= scale
    x3 += centre
    return x3


def taubin_smooth(vertices: np.ndarray, faces: np.ndarray, iterations: int = 10, lamb: float = 0.5,
                  mu: float = -0.53, adjacency=None) -> np.ndarray:
    """Taubin lambda/mu smoothing of an indexed mesh.

    Parameters
    ----------
    vertices : (n, 3) float
    faces : (m, 3) int
    iterations : int
        Number of (lambda, mu) step *pairs*. ``trimesh.smoothing.filter_taubin(iterations=2N)``
        does the same number of Laplacians as ``iterations=N`` here.
    lamb : float
        Positive step ``0 < lamb < 1``.
    mu : float
        Negative step with ``mu < -lamb``; pass band ``1/lamb + 1/mu`` (0.113 for the defaults).
    adjacency : tuple, optional
        ``(indptr, indices)`` from :func:`build_adjacency`.

    Returns
    -------
    (n, 3) float64
    """
    x = np.array(vertices, dtype=np.float64)
    if iterations < 1 or len(x) == 0:
        return x
    indptr, indices = adjacency if adjacency is not None else build_adjacency(faces, len(x))
    tmp = np.empty_like(x)
    for _ in range(int(iterations)):
        _run_step(x, x, indptr, indices, (1.0 - lamb, lamb, 0.0, 0.0), tmp, tmp)
        _run_step(tmp, tmp, indptr, indices, (1.0 - mu, mu, 0.0, 0.0), x, x)
    return x


def smooth_mesh(vertices: np.ndarray, faces: np.ndarray, method: str = "sinc", iterations: int = 20,
                passband: float = 0.1, lamb: float = 0.5, mu: float = -0.53) -> np.ndarray:
    """Dispatch to :func:`windowed_sinc_smooth`, :func:`taubin_smooth` or no smoothing.

    ``method`` is one of :data:`SMOOTH_METHODS`; an unknown name returns the input unchanged
    (kernels never raise; ``printpipe.surface.SurfaceConfig`` validates the name).
    """
    if method == "sinc":
        return windowed_sinc_smooth(vertices, faces, iterations, passband)
    if method == "taubin":
        return taubin_smooth(vertices, faces, iterations, lamb, mu)
    return np.array(vertices, dtype=np.float64)


def warmup() -> None:
    """Compile (or load from the cache) the smoothing kernels on a tiny closed mesh (int32 faces,
    as :func:`printpipe.kernels.marching_cubes` returns; int64 faces compile on first use)."""
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=np.int32)  # as marching_cubes
    x = windowed_sinc_smooth(verts, faces, iterations=3)
    taubin_smooth(verts, faces, iterations=1)
    restore_volume(x, faces, 1.0 / 6.0)
    mesh_volume(x, faces)
