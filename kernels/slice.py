"""numba kernels of the slicer: triangle-plane intersection, loop tracing, polyline helpers.

Pure functions on numpy arrays: no trimesh, no config objects, no I/O, no logging, never raise.
``printpipe.slicing.layers`` validates inputs, calls these and turns the result into polygons.

Topology, not tolerance
-----------------------
A plane cuts a closed, manifold, consistently oriented triangle mesh in closed loops. Each crossing
triangle contributes one segment whose two endpoints lie on two of its edges. The endpoint is
identified by the *mesh edge* (its index in the list of unique undirected edges) it lies on, never by
its coordinates, so chaining segments into loops is exact: the segment that ends on edge ``e`` is
followed by the segment (of the other triangle sharing ``e``) that starts on ``e``.

Vertices exactly on a plane are handled by symbolic perturbation: a vertex with ``z >= plane`` counts
as *above*. Every edge then either crosses the plane (one end below, one above) or does not, the same
way for both triangles sharing it, so no degenerate case exists. A vertex on the plane gives a
zero-length segment that later polygon cleaning removes.

Orientation: for an outward-oriented mesh, segments are directed so that the material is on the left
when seen from +z (outer loops counter-clockwise, holes clockwise). For a triangle ``(a, b, c)`` whose
lone vertex ``a`` is above the plane the segment runs from edge ``(a, b)`` to edge ``(c, a)``; with
``a`` alone below, the direction reverses.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "slice_triangles",
    "trace_loops",
    "simplify_closed",
    "order_segments",
    "segments_cross_polygon",
    "scanline_spans",
    "scanline_spans_edges",
    "connect_lines",
    "support_columns",
    "support_paths",
    "warmup",
]


@njit(cache=True)
def _edge_point(verts, u, v, p, out_xy):
    # Canonical direction (lower vertex index first) so that both triangles sharing the edge compute
    # bit-identical coordinates.
    if u > v:
        u, v = v, u
    zu = verts[u, 2]
    zv = verts[v, 2]
    t = (p - zu) / (zv - zu)
    out_xy[0] = verts[u, 0] + t * (verts[v, 0] - verts[u, 0])
    out_xy[1] = verts[u, 1] + t * (verts[v, 1] - verts[u, 1])


@njit(cache=True)
def slice_triangles(verts, faces, face_edges, planes):
    """Intersect every triangle with every plane it crosses.

    verts (n, 3) float64, faces (m, 3) int64, face_edges (m, 3) int64 (id of the undirected edge
    ``faces[f, k] -> faces[f, (k + 1) % 3]``), planes (L,) float64 sorted ascending.

    Returns ``layer (s,) int64, e_start (s,) int64, e_end (s,) int64, xy_start (s, 2) float64``:
    each segment starts on mesh edge ``e_start`` at ``xy_start`` and ends on ``e_end``.
    A triangle crosses plane ``p`` iff ``zmin < p <= zmax`` (``z >= p`` counts as above).
    """
    m = faces.shape[0]
    lo = np.empty(m, np.int64)
    hi = np.empty(m, np.int64)
    total = 0
    for f in range(m):
        z0 = verts[faces[f, 0], 2]
        z1 = verts[faces[f, 1], 2]
        z2 = verts[faces[f, 2], 2]
        zmin = min(z0, min(z1, z2))
        zmax = max(z0, max(z1, z2))
        a = np.searchsorted(planes, zmin, side="right")  # first plane > zmin
        b = np.searchsorted(planes, zmax, side="right")  # planes <= zmax end here
        lo[f] = a
        hi[f] = b
        if b > a:
            total += b - a
    layer = np.empty(total, np.int64)
    e_start = np.empty(total, np.int64)
    e_end = np.empty(total, np.int64)
    xy = np.empty((total, 2), np.float64)
    pt = np.empty(2, np.float64)
    s = 0
    for f in range(m):
        if hi[f] <= lo[f]:
            continue
        v0 = faces[f, 0]
        v1 = faces[f, 1]
        v2 = faces[f, 2]
        for k in range(lo[f], hi[f]):
            p = planes[k]
            a0 = verts[v0, 2] >= p
            a1 = verts[v1, 2] >= p
            a2 = verts[v2, 2] >= p
            if a0 == a1:
                i = 2
            elif a0 == a2:
                i = 1
            else:
                i = 0
            j = (i + 1) % 3
            kk = (i + 2) % 3
            vi = faces[f, i]
            above = verts[vi, 2] >= p
            # edge (i, j) has id face_edges[f, i]; edge (k, i) has id face_edges[f, kk]
            if above:
                es = face_edges[f, i]
                ee = face_edges[f, kk]
                _edge_point(verts, vi, faces[f, j], p, pt)
            else:
                es = face_edges[f, kk]
                ee = face_edges[f, i]
                _edge_point(verts, faces[f, kk], vi, p, pt)
            layer[s] = k
            e_start[s] = es
            e_end[s] = ee
            xy[s, 0] = pt[0]
            xy[s, 1] = pt[1]
            s += 1
    return layer, e_start, e_end, xy


@njit(cache=True)
def trace_loops(nxt):
    """Follow ``nxt`` pointers (segment -> following segment, -1 when none) into chains.

    Returns ``order (s,) int64`` (segments in chain order), ``offsets (c + 1,) int64`` (chain ``i`` is
    ``order[offsets[i]:offsets[i + 1]]``) and ``closed (c,) bool``. Segments are visited in index
    order, so chains come out in the order of their first segment.
    """
    n = nxt.shape[0]
    visited = np.zeros(n, np.bool_)
    order = np.empty(n, np.int64)
    offsets = np.empty(n + 1, np.int64)
    closed = np.empty(n, np.bool_)
    pos = 0
    c = 0
    for s in range(n):
        if visited[s]:
            continue
        offsets[c] = pos
        cur = s
        ok = False
        while True:
            visited[cur] = True
            order[pos] = cur
            pos += 1
            nx = nxt[cur]
            if nx < 0:
                break
            if nx == s:
                ok = True
                break
            if visited[nx]:
                break
            cur = nx
        closed[c] = ok
        c += 1
    offsets[c] = pos
    return order, offsets[: c + 1], closed[:c]


@njit(cache=True)
def simplify_closed(xy, offsets, tol):
    """Drop vertices of closed loops that deviate less than ``tol`` from the simplified outline.

    Greedy: from the last kept vertex ``a``, extend the candidate chord ``a -> j`` while every vertex
    between lies within ``tol`` of it (at most 64 vertices per chord to bound the cost). Returns a
    boolean keep mask for the rows of ``xy``; loops keep at least 3 vertices.
    """
    keep = np.zeros(xy.shape[0], np.bool_)
    tol2 = tol * tol
    for c in range(offsets.shape[0] - 1):
        s = offsets[c]
        e = offsets[c + 1]
        n = e - s
        if n <= 3:
            for i in range(s, e):
                keep[i] = True
            continue
        keep[s] = True
        a = s
        while a < e - 1:
            best = a + 1
            j = a + 2
            while j <= e and j - a <= 64:
                jj = j if j < e else s  # closing chord back to the first vertex
                ax = xy[a, 0]
                ay = xy[a, 1]
                dx = xy[jj, 0] - ax
                dy = xy[jj, 1] - ay
                L2 = dx * dx + dy * dy
                good = True
                for q in range(a + 1, j):
                    px = xy[q, 0] - ax
                    py = xy[q, 1] - ay
                    if L2 > 0.0:
                        cr = px * dy - py * dx
                        d2 = cr * cr / L2
                        # also reject points that project outside the chord (spikes)
                        dot = px * dx + py * dy
                        if dot < 0.0 or dot > L2:
                            d2 = tol2 * 4.0
                    else:
                        d2 = px * px + py * py
                    if d2 > tol2:
                        good = False
                        break
                if not good:
                    break
                best = j
                j += 1
            if best >= e:
                break
            keep[best] = True
            a = best
        cnt = 0
        for i in range(s, e):
            if keep[i]:
                cnt += 1
        if cnt < 3:
            for i in range(s, e):
                keep[i] = True
    return keep


@njit(cache=True)
def order_segments(seg, x0, y0):
    """Greedy nearest-neighbour order of open segments, starting near ``(x0, y0)``.

    seg (k, 4) float64 rows ``(xa, ya, xb, yb)``. Each segment may be printed in either direction.
    Returns ``order (k,) int64`` and ``flip (k,) bool`` (print ``b -> a`` when True).
    """
    k = seg.shape[0]
    used = np.zeros(k, np.bool_)
    order = np.empty(k, np.int64)
    flip = np.zeros(k, np.bool_)
    cx = x0
    cy = y0
    for n in range(k):
        best = -1
        bd = 1e300
        bf = False
        for i in range(k):
            if used[i]:
                continue
            da = (seg[i, 0] - cx) ** 2 + (seg[i, 1] - cy) ** 2
            db = (seg[i, 2] - cx) ** 2 + (seg[i, 3] - cy) ** 2
            if da < bd:
                bd = da
                best = i
                bf = False
            if db < bd:
                bd = db
                best = i
                bf = True
        used[best] = True
        order[n] = best
        flip[n] = bf
        if bf:
            cx = seg[best, 0]
            cy = seg[best, 1]
        else:
            cx = seg[best, 2]
            cy = seg[best, 3]
    return order, flip


@njit(cache=True)
def segments_cross_polygon(seg, pts, offsets):
    """For each segment ``(xa, ya, xb, yb)`` in ``seg (k, 4)``, does it properly cross any edge of the
    closed rings ``pts[offsets[i]:offsets[i + 1]]``? Returns ``(k,) bool``.

    Used to decide whether a travel move leaves the part (then it retracts).
    """
    k = seg.shape[0]
    out = np.zeros(k, np.bool_)
    nr = offsets.shape[0] - 1
    for s in range(k):
        ax = seg[s, 0]
        ay = seg[s, 1]
        bx = seg[s, 2]
        by = seg[s, 3]
        minx = min(ax, bx)
        maxx = max(ax, bx)
        miny = min(ay, by)
        maxy = max(ay, by)
        hit = False
        for r in range(nr):
            st = offsets[r]
            en = offsets[r + 1]
            for i in range(st, en):
                j = i + 1 if i + 1 < en else st
                cx = pts[i, 0]
                cy = pts[i, 1]
                dx = pts[j, 0]
                dy = pts[j, 1]
                if max(cx, dx) < minx or min(cx, dx) > maxx or max(cy, dy) < miny or min(cy, dy) > maxy:
                    continue
                d1 = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
                d2 = (bx - ax) * (dy - ay) - (by - ay) * (dx - ax)
                d3 = (dx - cx) * (ay - cy) - (dy - cy) * (ax - cx)
                d4 = (dx - cx) * (by - cy) - (dy - cy) * (bx - cx)
                if ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)):
                    hit = True
                    break
            if hit:
                break
        out[s] = hit
    return out


def warmup() -> None:
    """Compile (or load from the cache) every kernel on a tiny tetrahedron, and the numba G-code
    scanner and planner of :mod:`printpipe.slicing.validate` / :mod:`~printpipe.slicing.estimate`
    on a three-line program."""
    verts = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=np.int64)
    face_edges = np.array([[1, 3, 0], [0, 4, 2], [2, 5, 1], [3, 5, 4]], dtype=np.int64)
    layer, es, ee, xy = slice_triangles(verts, faces, face_edges, np.array([0.5]))
    nxt = np.full(layer.shape[0], -1, np.int64)
    trace_loops(nxt)
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    simplify_closed(pts, np.array([0, 4], np.int64), 0.01)
    order_segments(np.array([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]]), 0.0, 0.0)
    segments_cross_polygon(np.array([[0.5, 0.5, 2.0, 0.5]]), pts, np.array([0, 4], np.int64))
    g, row, x0, x1 = scanline_spans(pts, np.array([0, 4], np.int64), np.array([0, 1], np.int64), 1,
                                    np.array([0.25]), 0.5, np.array([2], np.int64))
    fm, fb, cont = support_columns(np.zeros(g.shape[0], np.int64), np.zeros(g.shape[0], np.int64), row,
                                   x0, x1, 1, 0.0, 0.5, 2, 2)
    support_paths(np.zeros((2, 2), np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1),
                  np.ones(1), 1, 0.0, 0.5, np.array([0, 1], np.int64), 1, 2)
    g, row, x0, x1, e0, t0, e1, t1 = scanline_spans_edges(pts, np.array([0, 4], np.int64),
                                                          np.array([0, 1], np.int64), 1,
                                                          np.array([0.25]), 0.5, np.array([2], np.int64))
    seg = np.zeros((g.shape[0], 2, 2))
    seg[:, 0, 0] = x0
    seg[:, 1, 0] = x1
    end_ring = np.zeros((g.shape[0], 2), np.int64)
    end_arc = np.zeros((g.shape[0], 2))
    cum = np.array([0.0, 1.0, 2.0, 3.0])
    connect_lines(g, seg, end_ring, end_arc, pts, np.array([0, 4], np.int64), cum, 1.0, 0.5)
    # the G-code scanner and the time planner of printpipe.slicing (validate.py, estimate.py) are
    # numba functions too: compile them here, so that batch workers never compile
    try:
        from printpipe.slicing.estimate import estimate
    except ImportError:  # pragma: no cover - kernels used without the slicing package
        return
    estimate(";FLAVOR:Marlin\nG28\nM83\nG1 X1 Y1 Z0.2 F1200\nG1 X2 Y1 E0.1\n", "ender3")


@njit(cache=True)
def _scan_crossings(pts, ring_off, geom_ring, n_geoms, y0, dy, n_rows):
    """Crossings of ring edges with the scanlines (see :func:`scanline_spans_edges`)."""
    total = 0
    for g in range(n_geoms):
        for r in range(geom_ring[g], geom_ring[g + 1]):
            a = ring_off[r]
            b = ring_off[r + 1]
            for i in range(a, b):
                j = i + 1 if i + 1 < b else a
                ya = pts[i, 1]
                yb = pts[j, 1]
                lo = min(ya, yb)
                hi = max(ya, yb)
                k0 = int(np.ceil((lo - y0[g]) / dy))
                k1 = int(np.ceil((hi - y0[g]) / dy)) - 1
                if k0 < 0:
                    k0 = 0
                if k1 > n_rows[g] - 1:
                    k1 = n_rows[g] - 1
                if k1 >= k0:
                    total += k1 - k0 + 1
    key_g = np.empty(total, np.int64)
    key_r = np.empty(total, np.int64)
    xs = np.empty(total, np.float64)
    edge = np.empty(total, np.int64)
    tt = np.empty(total, np.float64)
    c = 0
    for g in range(n_geoms):
        for r in range(geom_ring[g], geom_ring[g + 1]):
            a = ring_off[r]
            b = ring_off[r + 1]
            for i in range(a, b):
                j = i + 1 if i + 1 < b else a
                xa = pts[i, 0]
                ya = pts[i, 1]
                xb = pts[j, 0]
                yb = pts[j, 1]
                lo = min(ya, yb)
                hi = max(ya, yb)
                k0 = int(np.ceil((lo - y0[g]) / dy))
                k1 = int(np.ceil((hi - y0[g]) / dy)) - 1
                if k0 < 0:
                    k0 = 0
                if k1 > n_rows[g] - 1:
                    k1 = n_rows[g] - 1
                for k in range(k0, k1 + 1):
                    y = y0[g] + k * dy
                    t = (y - ya) / (yb - ya)
                    key_g[c] = g
                    key_r[c] = k
                    xs[c] = xa + t * (xb - xa)
                    edge[c] = i
                    tt[c] = t
                    c += 1
    return key_g, key_r, xs, edge, tt


@njit(cache=True)
def _pair_spans(kg, kr, xs, ke, kt):
    """Even-odd pairs of the crossings sorted by (geometry, row, x): the inside intervals."""
    total = kg.shape[0]
    n_sp = total // 2
    og = np.empty(n_sp, np.int64)
    orow = np.empty(n_sp, np.int64)
    ox0 = np.empty(n_sp, np.float64)
    ox1 = np.empty(n_sp, np.float64)
    oe0 = np.empty(n_sp, np.int64)
    oe1 = np.empty(n_sp, np.int64)
    ot0 = np.empty(n_sp, np.float64)
    ot1 = np.empty(n_sp, np.float64)
    s = 0
    i = 0
    while i < total:
        # a run of crossings with the same (geometry, row)
        g = kg[i]
        k = kr[i]
        j = i
        while j < total and kg[j] == g and kr[j] == k:
            j += 1
        q = i
        while q + 1 < j:
            if xs[q + 1] > xs[q]:
                og[s] = g
                orow[s] = k
                ox0[s] = xs[q]
                ox1[s] = xs[q + 1]
                oe0[s] = ke[q]
                ot0[s] = kt[q]
                oe1[s] = ke[q + 1]
                ot1[s] = kt[q + 1]
                s += 1
            q += 2
        i = j
    return og[:s], orow[:s], ox0[:s], ox1[:s], oe0[:s], ot0[:s], oe1[:s], ot1[:s]


def scanline_spans_edges(pts, ring_off, geom_ring, n_geoms, y0, dy, n_rows):
    """Even-odd spans of closed rings along horizontal scanlines ``y = y0[g] + j * dy``.

    pts (n, 2) float64 ring vertices (rings not closed, ring ``r`` is
    ``pts[ring_off[r]:ring_off[r + 1]]``), geom_ring (n_geoms + 1,) int64: geometry ``g`` owns rings
    ``geom_ring[g]:geom_ring[g + 1]``; y0 (n_geoms,) first scanline of each geometry, n_rows
    (n_geoms,) number of scanlines. An edge counts for a scanline when ``ya <= y < yb`` (half-open,
    so a vertex on a scanline is counted once). Returns ``geom, row, x0, x1, e0, t0, e1, t1`` (each
    (s,)): the inside intervals sorted by geometry, row and x, and for each end the ring edge it
    lies on (index ``i`` of its first vertex in ``pts``; the edge runs to the ring's next vertex)
    and the fraction ``t`` along that edge.
    """
    # (the crossings are sorted by numpy between the two compiled passes: a sort inside a kernel
    # costs seconds of compilation)
    pts = np.ascontiguousarray(pts, dtype=np.float64)
    kg, kr, xs, ke, kt = _scan_crossings(pts, np.asarray(ring_off, np.int64), np.asarray(geom_ring, np.int64),
                                         int(n_geoms), np.asarray(y0, np.float64), float(dy),
                                         np.asarray(n_rows, np.int64))
    order = np.lexsort((xs, kr, kg))
    return _pair_spans(kg[order], kr[order], xs[order], ke[order], kt[order])


def scanline_spans(pts, ring_off, geom_ring, n_geoms, y0, dy, n_rows):
    """Like :func:`scanline_spans_edges` without the edge information: ``geom, row, x0, x1``."""
    g, row, x0, x1, e0, t0, e1, t1 = scanline_spans_edges(pts, ring_off, geom_ring, n_geoms, y0, dy, n_rows)
    return g, row, x0, x1


@njit(cache=True)
def _find(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(cache=True)
def _emit(xy, npt, x, y):
    """Append a point unless it repeats the previous one; returns the new count."""
    if npt > 0 and xy[npt - 1, 0] == x and xy[npt - 1, 1] == y:
        return npt
    xy[npt, 0] = x
    xy[npt, 1] = y
    return npt + 1


@njit(cache=True)
def _anchor(xy, npt, pts, a, b, cum, ring_len, la, x0, y0, length, forward):
    """Append the ring path that leaves arc position ``la`` (the point ``x0, y0``) forwards or
    backwards along ring ``pts[a:b]`` for ``length`` mm (its last point interpolated)."""
    nv = b - a
    if forward:
        v = a
        while v < b and cum[v] <= la:
            v += 1
        if v == b:
            v = a
    else:
        v = b - 1
        while v >= a and cum[v] >= la:
            v -= 1
        if v < a:
            v = b - 1
    px = x0
    py = y0
    d_prev = 0.0
    for step in range(nv):
        if forward:
            idx = a + (v - a + step) % nv
            d = cum[idx] - la
        else:
            idx = a + (v - a - step) % nv
            d = la - cum[idx]
        if d <= 0.0:
            d += ring_len
        vx = pts[idx, 0]
        vy = pts[idx, 1]
        if d >= length:
            f = (length - d_prev) / (d - d_prev) if d > d_prev else 0.0
            return _emit(xy, npt, px + f * (vx - px), py + f * (vy - py))
        npt = _emit(xy, npt, vx, vy)
        px = vx
        py = vy
        d_prev = d
    return npt


def connect_lines(seg_geom, seg_xy, end_ring, end_arc, pts, ring_off, cum, max_arc, anchor):
    """Join infill lines into zig-zag polylines along the region boundary they end on.

    seg_geom (m,) int64 geometry of each line, sorted; seg_xy (m, 2, 2) line ends; end_ring (m, 2)
    ring of each end (-1: never joined); end_arc (m, 2) arc length of each end from its ring's
    first vertex; pts (n, 2) ring vertices, ring ``r`` = ``pts[ring_off[r]:ring_off[r+1]]`` (not
    closed); cum (n,) arc length of each vertex from its ring's first vertex.

    Two ends that follow each other along a ring (no other line ends between them) and belong to
    lines of the same geometry are joined by the boundary path between them when it is at most
    ``max_arc`` long; the shortest joins are taken first, each end is joined at most once and no
    join closes a cycle. A line end left free gets an anchor: the boundary path from it for
    ``anchor`` mm (at most half the way to the next line end) on the side with more room.
    Returns ``(xy (k, 2), off (p + 1,), geom (p,))``: the polylines.
    """
    # (the sorts run in numpy between the compiled passes: a sort inside a kernel costs seconds of
    # compilation)
    seg_geom = np.asarray(seg_geom, np.int64)
    m = seg_geom.shape[0]
    ring_flat = np.ascontiguousarray(np.asarray(end_ring, np.int64).reshape(2 * m))
    arc_flat = np.ascontiguousarray(np.asarray(end_arc, np.float64).reshape(2 * m))
    order = np.lexsort((arc_flat, ring_flat))
    ring_off = np.asarray(ring_off, np.int64)
    pts = np.ascontiguousarray(pts, np.float64)
    cum = np.ascontiguousarray(cum, np.float64)
    ring_len, cand_a, cand_b, cand_len, gap_next, gap_prev = _connect_candidates(
        seg_geom, ring_flat, arc_flat, order, pts, ring_off, cum, float(max_arc))
    corder = np.argsort(cand_len, kind="stable")
    return _connect_walk(seg_geom, np.ascontiguousarray(seg_xy, np.float64), ring_flat, arc_flat, pts, ring_off,
                         cum, ring_len, cand_a, cand_b, corder, gap_next, gap_prev, float(anchor))


@njit(cache=True)
def _connect_candidates(seg_geom, ring_flat, arc_flat, order, pts, ring_off, cum, max_arc):
    """Ring lengths and the candidate joins of :func:`connect_lines` (ends in ``order`` =
    sorted by ring and arc): consecutive ends on a ring, and each end's gap to its neighbours."""
    m = seg_geom.shape[0]
    n_ends = 2 * m
    n_rings = ring_off.shape[0] - 1
    ring_len = np.empty(n_rings, np.float64)
    for r in range(n_rings):
        a = ring_off[r]
        b = ring_off[r + 1]
        dx = pts[a, 0] - pts[b - 1, 0]
        dy = pts[a, 1] - pts[b - 1, 1]
        ring_len[r] = cum[b - 1] + np.sqrt(dx * dx + dy * dy)
    # candidate joins: consecutive ends on a ring (forward from end a to end b)
    cand_a = np.empty(n_ends, np.int64)
    cand_b = np.empty(n_ends, np.int64)
    cand_len = np.empty(n_ends, np.float64)
    gap_next = np.zeros(n_ends, np.float64)  # arc to the next / previous end on the ring
    gap_prev = np.zeros(n_ends, np.float64)
    nc = 0
    i = 0
    while i < n_ends:
        r = ring_flat[order[i]]
        j = i
        while j < n_ends and ring_flat[order[j]] == r:
            j += 1
        if r >= 0:
            for q in range(i, j):
                ea = order[q]
                eb = order[q + 1] if q + 1 < j else order[i]
                d = arc_flat[eb] - arc_flat[ea]
                if q + 1 >= j:
                    d += ring_len[r]
                gap_next[ea] = d
                gap_prev[eb] = d
                if j - i < 2:
                    continue
                if d <= max_arc and ea // 2 != eb // 2 and seg_geom[ea // 2] == seg_geom[eb // 2]:
                    cand_a[nc] = ea
                    cand_b[nc] = eb
                    cand_len[nc] = d
                    nc += 1
        i = j
    return ring_len, cand_a[:nc], cand_b[:nc], cand_len[:nc], gap_next, gap_prev


@njit(cache=True)
def _connect_walk(seg_geom, seg_xy, ring_flat, arc_flat, pts, ring_off, cum, ring_len, cand_a, cand_b, corder,
                  gap_next, gap_prev, anchor):
    """Take the joins of :func:`connect_lines` shortest first (``corder``) and walk the chains."""
    m = seg_geom.shape[0]
    n_ends = 2 * m
    nc = cand_a.shape[0]
    link = np.full(n_ends, -1, np.int64)
    fwd = np.zeros(n_ends, np.bool_)  # the join leaves this end forward along the ring
    parent = np.arange(m)
    n_extra = 0
    for q in range(nc):
        c = corder[q]
        ea = cand_a[c]
        eb = cand_b[c]
        if link[ea] >= 0 or link[eb] >= 0:
            continue
        ra = _find(parent, ea // 2)
        rb = _find(parent, eb // 2)
        if ra == rb:
            continue
        parent[ra] = rb
        link[ea] = eb
        link[eb] = ea
        fwd[ea] = True
        r = ring_flat[ea]
        n_extra += ring_off[r + 1] - ring_off[r]
    for e in range(n_ends):
        if link[e] < 0 and ring_flat[e] >= 0:
            r = ring_flat[e]
            n_extra += ring_off[r + 1] - ring_off[r] + 1
    # walk the chains: from every line with a free end
    xy = np.empty((2 * m + n_extra, 2), np.float64)
    off = np.empty(m + 1, np.int64)
    geom = np.empty(m, np.int64)
    done = np.zeros(m, np.bool_)
    npt = 0
    npl = 0
    off[0] = 0
    for start in range(m):
        if done[start]:
            continue
        if link[2 * start] >= 0 and link[2 * start + 1] >= 0:
            continue  # interior of a chain
        e_in = 2 * start if link[2 * start] < 0 else 2 * start + 1
        geom[npl] = seg_geom[start]
        first = True
        while True:
            s = e_in // 2
            done[s] = True
            k_in = e_in - 2 * s
            e_out = 2 * s + 1 - k_in
            if first and anchor > 0.0 and ring_flat[e_in] >= 0:
                # anchor before the chain's first line, walked outwards then reversed
                r = ring_flat[e_in]
                fw = gap_next[e_in] >= gap_prev[e_in]
                room = 0.5 * (gap_next[e_in] if fw else gap_prev[e_in])
                p0 = npt
                npt = _anchor(xy, npt, pts, ring_off[r], ring_off[r + 1], cum, ring_len[r], arc_flat[e_in],
                              seg_xy[s, k_in, 0], seg_xy[s, k_in, 1], min(anchor, room), fw)
                for t in range((npt - p0) // 2):  # reversed in place
                    for j in range(2):
                        tmp = xy[p0 + t, j]
                        xy[p0 + t, j] = xy[npt - 1 - t, j]
                        xy[npt - 1 - t, j] = tmp
            first = False
            npt = _emit(xy, npt, seg_xy[s, k_in, 0], seg_xy[s, k_in, 1])
            xy[npt, 0] = seg_xy[s, 1 - k_in, 0]
            xy[npt, 1] = seg_xy[s, 1 - k_in, 1]
            npt += 1
            nxt = link[e_out]
            if nxt < 0:
                if anchor > 0.0 and ring_flat[e_out] >= 0:
                    r = ring_flat[e_out]
                    fw = gap_next[e_out] >= gap_prev[e_out]
                    room = 0.5 * (gap_next[e_out] if fw else gap_prev[e_out])
                    npt = _anchor(xy, npt, pts, ring_off[r], ring_off[r + 1], cum, ring_len[r], arc_flat[e_out],
                                  seg_xy[s, 1 - k_in, 0], seg_xy[s, 1 - k_in, 1], min(anchor, room), fw)
                break
            # boundary vertices strictly between the two ends
            r = ring_flat[e_out]
            a = ring_off[r]
            b = ring_off[r + 1]
            nv = b - a
            la = arc_flat[e_out]
            lb = arc_flat[nxt]
            if fwd[e_out]:
                if lb >= la:
                    for v in range(a, b):
                        if la < cum[v] < lb:
                            npt = _emit(xy, npt, pts[v, 0], pts[v, 1])
                else:  # through the ring's first vertex
                    for v in range(a, b):
                        if cum[v] > la:
                            npt = _emit(xy, npt, pts[v, 0], pts[v, 1])
                    for v in range(a, b):
                        if cum[v] < lb:
                            npt = _emit(xy, npt, pts[v, 0], pts[v, 1])
            else:
                if lb <= la:
                    for v in range(b - 1, a - 1, -1):
                        if lb < cum[v] < la:
                            npt = _emit(xy, npt, pts[v, 0], pts[v, 1])
                else:
                    for v in range(b - 1, a - 1, -1):
                        if cum[v] < la:
                            npt = _emit(xy, npt, pts[v, 0], pts[v, 1])
                    for v in range(b - 1, a - 1, -1):
                        if cum[v] > lb:
                            npt = _emit(xy, npt, pts[v, 0], pts[v, 1])
            e_in = nxt
        npl += 1
        off[npl] = npt
    return xy[:npt], off[:npl + 1], geom[:npl]


@njit(cache=True)
def support_columns(spans_layer, spans_kind, spans_row, spans_x0, spans_x1, n_layers, x0, px, ny, nx):
    """Per bed pixel: first layer of the model, first layer of the blocked zone, and the highest
    layer whose support contact area covers the pixel with no model below it.

    Spans come from :func:`scanline_spans` on the pixel-row centres, sorted by layer and then kind;
    ``kind`` is 0 = model, 1 = blocked (model grown by the xy gap), 2 = contact area. A pixel is
    covered when its centre ``x0 + (i + 0.5) * px`` lies in a span. A contact of layer ``m``
    counts only where the model has no layer below ``m`` (support from the bed only). Returns
    ``first_model, first_blocked`` (ny, nx) int64 (``n_layers`` where never) and ``contact``
    (ny, nx) int64 (-1 where none).
    """
    first_model = np.full((ny, nx), n_layers, np.int64)
    first_blocked = np.full((ny, nx), n_layers, np.int64)
    contact = np.full((ny, nx), -1, np.int64)
    n = spans_layer.shape[0]
    for s in range(n):
        k = spans_layer[s]
        kind = spans_kind[s]
        r = spans_row[s]
        if r < 0 or r >= ny:
            continue
        i0 = int(np.ceil((spans_x0[s] - x0) / px - 0.5))
        i1 = int(np.floor((spans_x1[s] - x0) / px - 0.5))
        if i0 < 0:
            i0 = 0
        if i1 > nx - 1:
            i1 = nx - 1
        for i in range(i0, i1 + 1):
            if kind == 0:
                if first_model[r, i] > k:
                    first_model[r, i] = k
            elif kind == 1:
                if first_blocked[r, i] > k:
                    first_blocked[r, i] = k
            elif first_model[r, i] >= k and contact[r, i] < k:
                contact[r, i] = k
    return first_model, first_blocked, contact


@njit(cache=True)
def _clear_segment(mask, r0, c0, ra, ia, rb, ib):
    """Is the straight pixel path from (ra, ia) to (rb, ib) inside ``mask`` (window origin r0, c0)?"""
    n = max(abs(rb - ra), abs(ib - ia))
    if n == 0:
        return mask[ra - r0, ia - c0]
    for t in range(n + 1):
        r = ra + int(np.floor((rb - ra) * t / n + 0.5))
        i = ia + int(np.floor((ib - ia) * t / n + 0.5))
        if not mask[r - r0, i - c0]:
            return False
    return True


def support_paths(top, blk_layer, blk_row, blk_x0, blk_x1, n_layers, x0, px, line_rows, min_run, link_px):
    """Support polylines of every layer from the per-pixel support top, joined into zig-zags and
    ordered to keep the travels short and inside the support.

    top (ny, nx) int64: highest layer with support in that pixel column (-1 = none); blocked spans
    (``blk_*``, from :func:`scanline_spans` on the pixel-row centres, sorted by layer) remove pixels
    from a layer; line_rows (q,) int64 ascending: the pixel rows that carry a support line.

    On layer ``k`` a pixel is support when ``top >= k`` and it is not blocked. Each run of at least
    ``min_run`` such pixels along a line row is a line (from the first to the last pixel centre).
    A line is joined to the line of the next row whose end on the same side is nearest (within
    ``link_px`` pixels) when a connector stays in the support: through the corner at the shorter
    end half way between the rows, else a step along a quarter row (a rectilinear fill's zig-zag
    along the boundary of its region).
    The polylines of a layer are then ordered greedily by nearest end (and may be reversed).

    Returns ``xy (p, 2)`` pixel coordinates (column, row) of the points, ``off (c + 1,)``,
    ``layer (c,)`` and ``inside (c,) bool``: whether the travel from the previous polyline of the
    same layer to this one stays in the support (it needs no retraction).
    """
    # (a Python loop over the layers calling small kernels: one big kernel took 10+ s to compile)
    top = np.asarray(top, np.int64)
    line_rows = np.asarray(line_rows, np.int64)
    blk_layer = np.asarray(blk_layer, np.int64)
    blk_row = np.asarray(blk_row, np.int64)
    blk_x0 = np.asarray(blk_x0, np.float64)
    blk_x1 = np.asarray(blk_x1, np.float64)
    xy_parts, off_parts, lay_parts, ins_parts = [], [], [], []
    rr, cc = np.nonzero(top >= 0)
    if rr.size == 0:
        return np.zeros((0, 2)), np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.bool_)
    r0, r1, c0, c1 = int(rr.min()), int(rr.max()), int(cc.min()), int(cc.max())
    win = top[r0:r1 + 1, c0:c1 + 1]
    kmax = min(int(win.max()), int(n_layers) - 1)
    wc = c1 - c0 + 1
    nq = line_rows.shape[0]
    max_runs = nq * (wc // 2 + 1)
    ra_ = np.empty(max_runs, np.int64)
    ia_ = np.empty(max_runs, np.int64)
    ib_ = np.empty(max_runs, np.int64)
    row_start = np.empty(nq + 1, np.int64)
    ch_run = np.empty(max_runs, np.int64)
    ch_dir = np.empty(max_runs, np.int64)
    ch_step = np.empty(max_runs, np.int64)
    ch_off = np.empty(max_runs + 1, np.int64)
    bounds = np.searchsorted(blk_layer, np.arange(kmax + 2))
    n_pts = 0
    for k in range(kmax + 1):
        mask = win >= k
        b0, b1 = bounds[k], bounds[k + 1]
        _clear_spans(mask, blk_row[b0:b1], blk_x0[b0:b1], blk_x1[b0:b1], r0, c0, x0, px)
        nr = _line_runs(mask, line_rows, r0, min_run, ra_, ia_, ib_, row_start)
        if nr == 0:
            continue
        nc = _zigzag(mask, line_rows, r0, nr, ra_, ia_, ib_, row_start, link_px, ch_run, ch_dir, ch_step, ch_off)
        xy, off, ins = _order_chains(mask, line_rows, r0, nc, ra_, ia_, ib_, ch_run, ch_dir, ch_step, ch_off)
        xy[:, 0] += c0
        xy_parts.append(xy)
        off_parts.append(off[1:] + n_pts)
        n_pts += xy.shape[0]
        lay_parts.append(np.full(nc, k, np.int64))
        ins_parts.append(ins)
    if not xy_parts:
        return np.zeros((0, 2)), np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.bool_)
    return (np.concatenate(xy_parts), np.concatenate([np.zeros(1, np.int64)] + off_parts),
            np.concatenate(lay_parts), np.concatenate(ins_parts))


@njit(cache=True)
def _clear_spans(mask, rows, sx0, sx1, r0, c0, x0, px):
    """Clear the pixels of ``mask`` (window origin r0, c0) whose centres lie in the spans."""
    wr = mask.shape[0]
    wc = mask.shape[1]
    for s in range(rows.shape[0]):
        r = rows[s] - r0
        if r < 0 or r >= wr:
            continue
        i0 = int(np.ceil((sx0[s] - x0) / px - 0.5)) - c0
        i1 = int(np.floor((sx1[s] - x0) / px - 0.5)) - c0
        if i0 < 0:
            i0 = 0
        if i1 > wc - 1:
            i1 = wc - 1
        for i in range(i0, i1 + 1):
            mask[r, i] = False


@njit(cache=True)
def _line_runs(mask, line_rows, r0, min_run, ra_, ia_, ib_, row_start):
    """Runs of at least ``min_run`` pixels of ``mask`` along the line rows; returns their count."""
    wr = mask.shape[0]
    wc = mask.shape[1]
    nq = line_rows.shape[0]
    nr = 0
    for q in range(nq):
        row_start[q] = nr
        r = line_rows[q] - r0
        if r < 0 or r >= wr:
            continue
        i = 0
        while i < wc:
            if mask[r, i]:
                j = i
                while j + 1 < wc and mask[r, j + 1]:
                    j += 1
                if j - i + 1 >= min_run:
                    ra_[nr] = q
                    ia_[nr] = i
                    ib_[nr] = j
                    nr += 1
                i = j + 1
            else:
                i += 1
    row_start[nq] = nr
    return nr


@njit(cache=True)
def _zigzag(mask, line_rows, r0, nr, ra_, ia_, ib_, row_start, link_px, ch_run, ch_dir, ch_step, ch_off):
    """Join the runs into zig-zag chains (see :func:`support_paths`); returns the chain count."""
    nq = line_rows.shape[0]
    used = np.zeros(nr, np.bool_)
    nc = 0
    pos = 0
    for s in range(nr):
        if used[s]:
            continue
        ch_off[nc] = pos
        ch_step[pos] = -1
        cur = s
        d = 1
        while True:
            used[cur] = True
            ch_run[pos] = cur
            ch_dir[pos] = d
            pos += 1
            q = ra_[cur]
            if q + 1 >= nq:
                break
            end_i = ib_[cur] if d > 0 else ia_[cur]
            ya = line_rows[q] - r0
            yb = line_rows[q + 1] - r0
            ym = (ya + yb) // 2
            best = -1
            bd = link_px + 1
            bstep = -1
            for c in range(row_start[q + 1], row_start[q + 2]):
                if used[c]:
                    continue
                e = ib_[c] if d > 0 else ia_[c]
                dd = abs(e - end_i)
                if dd >= bd:
                    continue
                # connector through the corner at the shorter end half way between the rows
                # (where the cells of the two rows meet), else a step along a quarter row,
                # as a fill follows the boundary of its region
                corner = min(e, end_i) if d > 0 else max(e, end_i)
                if (_clear_segment(mask, 0, 0, ya, end_i, ym, corner)
                        and _clear_segment(mask, 0, 0, ym, corner, yb, e)):
                    bd = dd
                    best = c
                    bstep = -1
                    continue
                for yq in (ya + (yb - ya) // 4, yb - (yb - ya) // 4):
                    if (_clear_segment(mask, 0, 0, ya, end_i, yq, end_i)
                            and _clear_segment(mask, 0, 0, yq, end_i, yq, e)
                            and _clear_segment(mask, 0, 0, yq, e, yb, e)):
                        bd = dd
                        best = c
                        bstep = yq + r0
                        break
            if best < 0:
                break
            cur = best
            d = -d
            ch_step[pos] = bstep
        nc += 1
    ch_off[nc] = pos
    return nc


@njit(cache=True)
def _order_chains(mask, line_rows, r0, nc, ra_, ia_, ib_, ch_run, ch_dir, ch_step, ch_off):
    """Order the chains by nearest end, emit their points (window columns, bed rows); returns
    ``xy, off, inside`` (see :func:`support_paths`)."""
    done = np.zeros(nc, np.bool_)
    xy = np.empty((4 * ch_off[nc], 2), np.float64)
    off = np.zeros(nc + 1, np.int64)
    ins = np.zeros(nc, np.bool_)
    npt = 0
    cx = -1.0
    cy = -1.0
    for n in range(nc):
        best = -1
        bflip = False
        bd2 = 1e300
        for c in range(nc):
            if done[c]:
                continue
            if n == 0:
                best = c
                break
            a = ch_run[ch_off[c]]
            z = ch_run[ch_off[c + 1] - 1]
            xa = float(ia_[a] if ch_dir[ch_off[c]] > 0 else ib_[a])
            ya = float(line_rows[ra_[a]])
            xz = float(ib_[z] if ch_dir[ch_off[c + 1] - 1] > 0 else ia_[z])
            yz = float(line_rows[ra_[z]])
            da = (xa - cx) ** 2 + (ya - cy) ** 2
            dz = (xz - cx) ** 2 + (yz - cy) ** 2
            if da < bd2:
                bd2 = da
                best = c
                bflip = False
            if dz < bd2:
                bd2 = dz
                best = c
                bflip = True
        done[best] = True
        p0 = npt
        for t in range(ch_off[best], ch_off[best + 1]):
            u = ch_run[t]
            yy = float(line_rows[ra_[u]])
            xs = ib_[u] if ch_dir[t] < 0 else ia_[u]
            if ch_step[t] >= 0:  # a step along the pixel row ch_step[t]
                xy[npt, 0] = xy[npt - 1, 0]
                xy[npt, 1] = ch_step[t]
                xy[npt + 1, 0] = xs
                xy[npt + 1, 1] = ch_step[t]
                npt += 2
            elif t > ch_off[best]:  # through the corner at the shorter end
                if ch_dir[t] < 0:
                    xy[npt, 0] = min(xs, xy[npt - 1, 0])
                else:
                    xy[npt, 0] = max(xs, xy[npt - 1, 0])
                xy[npt, 1] = float((line_rows[ra_[u] - 1] - r0 + line_rows[ra_[u]] - r0) // 2 + r0)
                npt += 1
            xy[npt, 0] = xs
            xy[npt, 1] = yy
            xy[npt + 1, 0] = ia_[u] if ch_dir[t] < 0 else ib_[u]
            xy[npt + 1, 1] = yy
            npt += 2
        if bflip:
            for t in range((npt - p0) // 2):
                for j in range(2):
                    tmp = xy[p0 + t, j]
                    xy[p0 + t, j] = xy[npt - 1 - t, j]
                    xy[npt - 1 - t, j] = tmp
        if n > 0:  # (columns of the window, rows of the bed)
            ins[n] = _clear_segment(mask, r0, 0, int(cy), int(cx), int(xy[p0, 1]), int(xy[p0, 0]))
        cx = xy[npt - 1, 0]
        cy = xy[npt - 1, 1]
        off[n + 1] = npt
    return xy[:npt], off, ins
