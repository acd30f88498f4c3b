"""Marching-cubes lookup tables, generated (not typed in) from one face rule.

Conventions (shared with :mod:`printpipe.kernels.mc`):

* Corner ``c`` of a cube has offsets ``(dz, dy, dx)`` with ``c = dx*4 + dz*2 + dy``; the case index of
  a cube is ``sum(above[c] << c)`` where *above* means ``value >= level``.
* Edge ``e``: x-edges ``e = dz*2 + dy`` (0..3), y-edges ``e = 4 + dz*2 + dx`` (4..7), z-edges
  ``e = 8 + dy*2 + dx`` (8..11).

Topology (the ambiguity convention): the region *above* the level is 26-connected and the region
below is 6-connected. On a face whose diagonal corners are both above and both below, the two
above corners are joined (the below corners are cut off separately). In the four cases where the
only above corners are two opposite ends of a body diagonal, they are joined by a tube (the
(26, 6) pair of digital topology). Every face decision depends on the four corner signs of that
face alone, so the two cubes sharing a face draw the same segments on it, which makes the mesh
closed and edge-manifold by construction.

How a case is triangulated: on each face the iso-segments are oriented (walking the face
counter-clockwise seen from outside the cube, from the edge where the value goes below -> above to
the edge where it goes above -> below). Chaining the segments gives closed loops on the cube
surface; each loop is spanned by a disc (a minimum-length triangulation that never uses a diagonal
whose two ends lie on one cube face, so no triangle lies in a cube face and no edge is shared with
a neighbouring cube's diagonal), except the body-diagonal cases, whose two loops are joined by an
annulus. Triangles inherit the loop orientation, so their normals point out of the above region.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["CORNER_OFFSETS", "EDGE_CORNERS", "TRI_COUNT", "TRI_EDGES", "MAX_TRIS", "build_tables"]


def _corner_pos(c: int) -> np.ndarray:
    """(z, y, x) offsets of corner ``c``."""
    return np.array([(c >> 1) & 1, c & 1, (c >> 2) & 1], dtype=float)


def _edges() -> list[tuple[int, int]]:
    edges = []
    for dz in (0, 1):  # x-edges, e = dz*2 + dy
        for dy in (0, 1):
            edges.append((dz * 2 + dy, 4 + dz * 2 + dy))
    for dz in (0, 1):  # y-edges, e = 4 + dz*2 + dx
        for dx in (0, 1):
            edges.append((dx * 4 + dz * 2, dx * 4 + dz * 2 + 1))
    for dy in (0, 1):  # z-edges, e = 8 + dy*2 + dx
        for dx in (0, 1):
            edges.append((dx * 4 + dy, dx * 4 + 2 + dy))
    return edges


def _faces() -> list[tuple[list[int], np.ndarray]]:
    """The six faces: corners counter-clockwise seen from outside, and the outward normal."""
    faces = []
    for axis in range(3):
        for side in (0, 1):
            normal = np.zeros(3)
            normal[axis] = 1.0 if side else -1.0
            corners = [c for c in range(8) if _corner_pos(c)[axis] == side]
            centre = np.mean([_corner_pos(c) for c in corners], axis=0)
            # sort by angle around the outward normal (right-hand rule)
            ref = _corner_pos(corners[0]) - centre
            ortho = np.cross(normal, ref)

            def angle(c, centre=centre, ref=ref, ortho=ortho):
                v = _corner_pos(c) - centre
                return np.arctan2(v @ ortho, v @ ref)

            corners.sort(key=lambda c: angle(c) % (2 * np.pi))
            faces.append((corners, normal))
    return faces


EDGES = _edges()
FACES = _faces()
_EDGE_INDEX = {frozenset(e): i for i, e in enumerate(EDGES)}
_EDGE_MID = np.array([(_corner_pos(a) + _corner_pos(b)) / 2 for a, b in EDGES])
# cube faces that contain each edge
_EDGE_FACES = [
    {f for f, (corners, _) in enumerate(FACES) if a in corners and b in corners} for a, b in EDGES
]


def _loops(case: int) -> list[list[int]]:
    """Oriented loops of crossed edges for one case (26-connected above, 6-connected below)."""
    above = [(case >> c) & 1 for c in range(8)]
    nxt: dict[int, int] = {}
    for corners, _ in FACES:
        n = len(corners)
        for i in range(n):
            a, b = corners[i], corners[(i + 1) % n]
            if not (above[a] == 0 and above[b] == 1):
                continue  # not an in-crossing (below -> above) at edge (c_i, c_i+1)
            # walk backwards over the run of below corners to the out-crossing that closes it
            j = (i - 1) % n
            while not (above[corners[j]] == 1 and above[corners[(j + 1) % n]] == 0):
                j = (j - 1) % n
            e_in = _EDGE_INDEX[frozenset((a, b))]
            e_out = _EDGE_INDEX[frozenset((corners[j], corners[(j + 1) % n]))]
            assert e_in not in nxt
            nxt[e_in] = e_out
    loops = []
    seen: set[int] = set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        e = nxt[start]
        while e != start:
            loop.append(e)
            seen.add(e)
            e = nxt[e]
        loops.append(loop)
    return loops


def _share_face(e1: int, e2: int) -> bool:
    return bool(_EDGE_FACES[e1] & _EDGE_FACES[e2])


def _triangulate_disc(loop: list[int]) -> list[tuple[int, int, int]]:
    """Minimum total diagonal length triangulation of a loop, avoiding same-face diagonals."""
    n = len(loop)
    if n == 3:
        return [tuple(loop)]  # type: ignore[list-item]

    def ok(i: int, j: int) -> bool:
        if (j - i) % n in (1, n - 1):
            return True  # a boundary segment
        return not _share_face(loop[i], loop[j])

    def length(i: int, j: int) -> float:
        if (j - i) % n in (1, n - 1):
            return 0.0
        return float(np.linalg.norm(_EDGE_MID[loop[i]] - _EDGE_MID[loop[j]]))

    inf = float("inf")
    cost = [[0.0] * n for _ in range(n)]
    split = [[-1] * n for _ in range(n)]
    for gap in range(2, n):
        for i in range(0, n - gap):
            j = i + gap
            best, arg = inf, -1
            if ok(i, j):
                for k in range(i + 1, j):
                    if ok(i, k) and ok(k, j):
                        c = cost[i][k] + cost[k][j] + length(i, k) + length(k, j)
                        if c < best - 1e-12:
                            best, arg = c, k
            cost[i][j], split[i][j] = best, arg
    if split[0][n - 1] < 0:
        raise RuntimeError(f"no valid triangulation for loop {loop}")
    tris: list[tuple[int, int, int]] = []

    def emit(i: int, j: int) -> None:
        if j - i < 2:
            return
        k = split[i][j]
        tris.append((loop[i], loop[k], loop[j]))
        emit(i, k)
        emit(k, j)

    emit(0, n - 1)
    return tris


def _triangulate_tube(a: list[int], b: list[int]) -> list[tuple[int, int, int]]:
    """Annulus joining two oriented triangle loops, with consistent orientation."""
    best, best_tris = float("inf"), None
    for sa in itertools.product(range(3), repeat=3):
        for sb in itertools.product(range(3), repeat=3):
            tris = [(a[i], a[(i + 1) % 3], b[sa[i]]) for i in range(3)]
            tris += [(b[i], b[(i + 1) % 3], a[sb[i]]) for i in range(3)]
            directed: dict[tuple[int, int], int] = {}
            for t in tris:
                for u, v in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
                    directed[(u, v)] = directed.get((u, v), 0) + 1
            if any(n != 1 for n in directed.values()):
                continue
            interior = [(u, v) for (u, v) in directed if (u in a) != (v in a)]
            if any((v, u) not in directed for (u, v) in interior) or len(interior) != 12:
                continue
            cost = sum(float(np.linalg.norm(_EDGE_MID[u] - _EDGE_MID[v])) for u, v in interior)
            if cost < best - 1e-12:
                best, best_tris = cost, tris
    if best_tris is None:
        raise RuntimeError(f"no tube between loops {a} and {b}")
    return best_tris


def build_tables() -> tuple[np.ndarray, np.ndarray]:
    """Generate ``(tri_count (256,) int8, tri_edges (256, 3*MAX) int8)`` for all 256 cases."""
    per_case: list[list[tuple[int, int, int]]] = []
    for case in range(256):
        loops = _loops(case)
        above = [(case >> c) & 1 for c in range(8)]
        above_corners = [c for c in range(8) if above[c]]
        tube = len(above_corners) == 2 and (above_corners[0] ^ above_corners[1]) == 7
        if tube:
            assert len(loops) == 2 and all(len(lp) == 3 for lp in loops)
            tris = _triangulate_tube(loops[0], loops[1])
        else:
            tris = [t for lp in loops for t in _triangulate_disc(lp)]
        per_case.append(tris)
    max_tris = max(len(t) for t in per_case)
    count = np.zeros(256, dtype=np.int8)
    table = np.full((256, 3 * max_tris), -1, dtype=np.int8)
    for case, tris in enumerate(per_case):
        count[case] = len(tris)
        for t, tri in enumerate(tris):
            table[case, 3 * t:3 * t + 3] = tri
    return count, table


TRI_COUNT, TRI_EDGES = build_tables()
MAX_TRIS = TRI_EDGES.shape[1] // 3
CORNER_OFFSETS = np.array([_corner_pos(c) for c in range(8)], dtype=np.int64)  # (8, 3) z, y, x
EDGE_CORNERS = np.array(EDGES, dtype=np.int64)  # (12, 2)
