"""From a placed mesh to the outline polygons of every layer.

1. Layer planes: layer ``k`` spans ``[bottom_k, top_k]``; it is sliced at mid-height.
2. :func:`printpipe.kernels.slice.slice_triangles` intersects the *indexed* mesh with the planes;
   segment endpoints are named by mesh edge, and the segments are chained through the mesh's
   shared edges into closed loops (exact topology, no coordinate hashing).
3. Loops are simplified (0.01 mm), then turned into polygons with holes by their winding: a point
   is inside the part where the winding number of the loops around it is positive (pyclipper's
   ``PFT_POSITIVE`` union). This handles holes, nested islands and overlapping shells the same way.
4. The polygons become shapely geometries for the vectorised offsets and booleans downstream.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pyclipper
import shapely

from printpipe.errors import InputError
from printpipe.kernels import slice as kslice

log = logging.getLogger(__name__)

__all__ = ["LayerStack", "layer_planes", "slice_outlines", "SCALE"]

#: pyclipper integer units per millimetre (0.1 micrometre resolution).
SCALE = 1e4
#: Loop simplification tolerance in mm (PrusaSlicer's slicing resolution is 0.0125 mm).
SIMPLIFY_MM = 0.01


@dataclass(frozen=True, eq=False)
class LayerStack:
    """The outlines of a mesh, layer by layer.

    Attributes
    ----------
    top_z : (L,) float64
        Top of each layer in mm (the nozzle height when printing it).
    height : (L,) float64
        Thickness of each layer in mm.
    regions : (L,) object ndarray of shapely (Multi)Polygon
        The part's cross-section at each layer's mid-height (empty geometry where none).
    open_chains : int
        Segment chains that did not close (a sign of a non-manifold mesh); they are dropped.
    """

    top_z: np.ndarray
    height: np.ndarray
    regions: np.ndarray
    open_chains: int

    @property
    def mid_z(self) -> np.ndarray:
        return self.top_z - 0.5 * self.height

    def __len__(self) -> int:
        return int(self.top_z.shape[0])


def layer_planes(z_max: float, first_layer_height: float, layer_height: float) -> tuple[np.ndarray, np.ndarray]:
    """Layer tops and thicknesses covering ``[0, z_max]``.

    Returns ``(top_z, height)``: the first layer is ``first_layer_height`` thick, the others
    ``layer_height``; the last layer is the first whose top reaches ``z_max`` (within 1 nm).
    """
    if z_max <= 0:
        return np.zeros(0), np.zeros(0)
    n_rest = max(0, math.ceil((z_max - first_layer_height) / layer_height - 1e-6))
    top = first_layer_height + layer_height * np.arange(n_rest + 1, dtype=np.float64)
    height = np.full(n_rest + 1, layer_height)
    height[0] = first_layer_height
    return top, height


def _edge_ids(faces: np.ndarray, n_verts: int) -> np.ndarray:
    """(m, 3) id of the undirected edge ``faces[:, k] -> faces[:, (k + 1) % 3]``."""
    a = faces
    b = np.roll(faces, -1, axis=1)
    key = np.minimum(a, b) * np.int64(n_verts) + np.maximum(a, b)
    _, inv = np.unique(key.ravel(), return_inverse=True)
    return inv.reshape(faces.shape).astype(np.int64)


def _loops(verts, faces, planes):
    """Closed loops per plane: ``(xy (n, 2), offsets (c + 1,), layer (c,), open_chains)``."""
    face_edges = _edge_ids(faces, verts.shape[0])
    layer, e_start, e_end, xy = kslice.slice_triangles(verts, faces, face_edges, planes)
    if layer.shape[0] == 0:
        return np.zeros((0, 2)), np.zeros(1, np.int64), np.zeros(0, np.int64), 0
    n_edges = int(face_edges.max()) + 1
    key_start = layer * n_edges + e_start
    key_end = layer * n_edges + e_end
    order = np.argsort(key_start, kind="stable")
    ks = key_start[order]
    ke = key_end[order]
    pos = np.searchsorted(ks, ke)
    pos_c = np.minimum(pos, ks.shape[0] - 1)
    nxt = np.where(ks[pos_c] == ke, pos_c, -1).astype(np.int64)
    chain, offsets, closed = kslice.trace_loops(nxt)
    seg = order[chain]
    pts = xy[seg]
    lay = layer[seg[offsets[:-1]]]
    n_open = int((~closed).sum())
    if n_open:
        # keep only the closed chains
        lengths = np.diff(offsets)
        keep_rows = np.repeat(closed, lengths)
        pts = pts[keep_rows]
        lay = lay[closed]
        offsets = np.concatenate([[0], np.cumsum(lengths[closed])]).astype(np.int64)
    return pts, offsets, lay, n_open


def _layer_polygon(paths: list[np.ndarray]):
    """Polygons (with holes) where the winding number of ``paths`` (int, clipper units) is > 0."""
    pc = pyclipper.Pyclipper()
    added = 0
    for p in paths:
        if p.shape[0] >= 3:
            try:
                pc.AddPath(p, pyclipper.PT_SUBJECT, True)
                added += 1
            except pyclipper.ClipperException:  # degenerate (zero-area) loop
                pass
    if not added:
        return shapely.Polygon()
    tree = pc.Execute2(pyclipper.CT_UNION, pyclipper.PFT_POSITIVE, pyclipper.PFT_POSITIVE)
    polys = []
    stack = list(tree.Childs)
    inv = 1.0 / SCALE
    while stack:
        node = stack.pop()
        if node.IsHole:
            continue
        shell = np.asarray(node.Contour, dtype=np.float64) * inv
        holes = [np.asarray(h.Contour, dtype=np.float64) * inv for h in node.Childs]
        polys.append(shapely.Polygon(shell, holes))
        for h in node.Childs:
            stack.extend(h.Childs)
    if not polys:
        return shapely.Polygon()
    if len(polys) == 1:
        return polys[0]
    return shapely.MultiPolygon(polys)


def slice_outlines(mesh, first_layer_height: float, layer_height: float) -> LayerStack:
    """Cross-sections of ``mesh`` at the mid-height of every layer.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        Closed, outward-oriented mesh in printer coordinates (mm), resting on the bed (min z = 0).
    first_layer_height, layer_height : float
        Layer thicknesses in mm.

    Returns
    -------
    LayerStack
    """
    verts = np.ascontiguousarray(mesh.vertices, dtype=np.float64)
    faces = np.ascontiguousarray(mesh.faces, dtype=np.int64)
    if faces.shape[0] == 0:
        raise InputError("the mesh has no faces; nothing to slice")
    z_min = float(verts[:, 2].min())
    z_max = float(verts[:, 2].max())
    if z_min < -1e-6 or z_min > 1e-3:
        raise InputError(
            f"the mesh must rest on the bed (lowest z = 0 mm) but its lowest z is {z_min:.4f} mm; "
            "place it with printpipe.slicing.layout first"
        )
    top, height = layer_planes(z_max, first_layer_height, layer_height)
    mid = top - 0.5 * height
    pts, offsets, lay, n_open = _loops(verts, faces, mid)
    if n_open:
        log.warning("%d open slice chains dropped: the mesh is not closed/manifold everywhere", n_open)
    if pts.shape[0]:
        keep = kslice.simplify_closed(pts, offsets, SIMPLIFY_MM)
        cnt = np.concatenate([[0], np.cumsum(keep)])
        pts = pts[keep]
        offsets = cnt[offsets].astype(np.int64)
    ipts = np.round(pts * SCALE).astype(np.int64)
    n_layers = top.shape[0]
    regions = np.empty(n_layers, dtype=object)
    regions[:] = [shapely.Polygon()] * n_layers
    # loops come out grouped by layer (segments were sorted by layer first)
    bounds = np.searchsorted(lay, np.arange(n_layers + 1))
    for k in range(n_layers):
        a, b = bounds[k], bounds[k + 1]
        if a == b:
            continue
        paths = [ipts[offsets[i]:offsets[i + 1]] for i in range(a, b)]
        regions[k] = _layer_polygon(paths)
    # trim empty layers at the top (a plane just above the highest vertex)
    nonempty = np.flatnonzero(~shapely.is_empty(regions))
    last = int(nonempty[-1]) + 1 if nonempty.size else 0
    return LayerStack(top_z=top[:last], height=height[:last], regions=regions[:last], open_chains=n_open)
