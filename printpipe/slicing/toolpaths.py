"""Toolpaths of one part: walls, top/bottom skin, sparse infill, supports and brim.

Everything is computed with shapely 2 (GEOS), vectorised over all islands of all layers at once, so
Python only loops to gather the resulting coordinates. Geometry rules:

* **Line spacing.** An extruded line of width ``w`` and height ``h`` has the rounded-rectangle
  cross-section ``(w - h) * h + pi * (h / 2) ** 2`` (the model PrusaSlicer uses). Touching lines
  are laid at the spacing ``s = w - h * (1 - pi / 4)``, so that ``h * s`` is exactly that area and
  a solid region of area ``A`` receives ``A * h`` of plastic.
* **Walls.** Wall ``k`` (0 = outer) follows the outline offset inwards by ``w / 2 + k * s``; the
  region left for skin and infill is the outline offset by ``w / 2 + (walls - 1) * s + s / 2``.
* **Skin.** A point of that region is solid when any of the ``bottom_layers`` layers below or the
  ``top_layers`` layers above does not contain it (the layers beyond the part count as empty),
  i.e. skin = region minus the intersection of the outlines of the window of layers around it.
* **Infill.** Straight lines on a global grid (so layers stack), clipped to the region: ``grid``
  lays both directions on every layer at ``2 * s / density``; ``lines`` one direction at
  ``s / density``, turning by 90 degrees every layer. Skin uses ``s`` and alternates 45/135.
* **Supports.** Overhang of layer ``m``: its outline minus the layer below grown by
  ``h * tan(threshold)`` (a surface leaning more than the threshold from the vertical steps out
  further than that per layer). Going down from the top, the support column under each overhang
  starts ``support_z_gap_layers`` below it and stops where it meets the model (grown by the xy
  gap); only columns that reach the bed are kept (support from the bed only, never on bone).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import shapely

from printpipe.kernels import slice as kslice
from printpipe.slicing.config import Resolved, SliceConfig
from printpipe.slicing.layers import LayerStack, slice_outlines

log = logging.getLogger(__name__)

__all__ = ["Island", "Layer", "SlicedModel", "slice_mesh", "hatch"]

_EMPTY = shapely.Polygon()
# Geometric cleaning tolerance for the helper regions (skin window, supports), mm.
_SIMPLIFY_MM = 0.02
# Bed pixel of the support column computation, mm.
_SUPPORT_PX = 0.25


@dataclass(eq=False)
class Island:
    """One connected piece of a layer and its toolpaths (all coordinates in mm, float64).

    Attributes
    ----------
    outline : list of (n, 2) ndarray
        Closed rings of the cross-section (first point repeated), the outer ring first.
    walls : list of list of (n, 2) ndarray
        ``walls[k]`` are the closed rings of wall ``k`` (0 = outer wall).
    skin, infill : list of (n, 2) ndarray
        Open polylines of solid skin and of sparse infill.
    """

    outline: list
    walls: list
    skin: list
    infill: list


@dataclass(eq=False)
class Layer:
    """One layer: ``z_mm`` is its top (the nozzle height), ``height_mm`` its thickness."""

    index: int
    z_mm: float
    height_mm: float
    islands: list
    support: list = field(default_factory=list)


@dataclass(eq=False)
class SlicedModel:
    """A sliced part.

    Attributes
    ----------
    name : str
    layers : list of Layer
    line_width_mm, spacing_mm : float
        Extrusion width and the centre distance of touching lines.
    brim : list of (n, 2) ndarray
        Closed brim rings for the first layer.
    regions : (L,) object ndarray
        shapely cross-section of every layer (for the skirt, checks and pictures).
    support_footprint : shapely geometry
        Area covered by the first layer's support lines (for the skirt).
    warnings : list of str
    stats : dict
        ``volume_mm3`` (sum of layer area x height), ``islands``, ``open_chains``...
    """

    name: str
    layers: list
    line_width_mm: float
    spacing_mm: float
    brim: list
    regions: np.ndarray
    support_footprint: object
    warnings: list
    stats: dict

    @property
    def layer_count(self) -> int:
        return len(self.layers)


# ------------------------------------------------------------------------------------------------
# public
# ------------------------------------------------------------------------------------------------

def slice_mesh(mesh, printer, material=None, config: SliceConfig | None = None, *, name: str = "model") -> SlicedModel:
    """Slice one placed part into layers of toolpaths.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        Closed, outward-oriented mesh already placed on the bed in printer coordinates (mm,
        lowest z = 0).
    printer : printpipe.slicing.printers.Printer
        For the nozzle (default line width) and the default speeds.
    material : printpipe.slicing.printers.Material, optional
        Not needed for the geometry; accepted for symmetry with :func:`to_gcode`.
    config : SliceConfig, optional
    name : str
        Part name carried into the result.

    Returns
    -------
    SlicedModel

    Notes
    -----
    Layers are cut at mid-height by the numba kernel :func:`printpipe.kernels.slice.slice_triangles`
    and chained through shared mesh edges (see :mod:`printpipe.slicing.layers`); the toolpath rules
    are in this module's docstring.

    Examples
    --------
    >>> import trimesh
    >>> from types import SimpleNamespace
    >>> cube = trimesh.creation.box((20, 20, 20)); cube.apply_translation((50, 50, 10))
    >>> sm = slice_mesh(cube, SimpleNamespace(nozzle_mm=0.4), config=SliceConfig(support=False))
    >>> sm.layer_count
    100
    """
    config = config or SliceConfig()
    r = config.resolved(printer, material)
    stack = slice_outlines(mesh, r.first_layer_height, r.layer_height)
    warnings = []
    if stack.open_chains:
        warnings.append(f"{name}: {stack.open_chains} slice loops did not close (mesh not manifold "
                        "everywhere); those pieces were left out; repair the mesh first")
    return _toolpaths(stack, r, name, warnings)


def hatch(regions: np.ndarray, angles_rad: np.ndarray, spacing: float) -> list:
    """Parallel lines on a global grid, clipped to each region.

    Parameters
    ----------
    regions : (n,) object ndarray of shapely polygons
    angles_rad : (n,) float
        Line direction of each region, radians from +x.
    spacing : float
        Distance between lines in mm; lines lie at ``k * spacing`` along the normal, so regions
        on different layers share the grid.

    Returns
    -------
    list of list of (2, 2) ndarray
        For each region its line segments.

    Notes
    -----
    The region's rings are rotated so that the lines run along +x and cut with the even-odd
    scanline kernel :func:`printpipe.kernels.slice.scanline_spans` (exact interval ends, no
    polygon boolean per line).
    """
    n = len(regions)
    out: list = [[] for _ in range(n)]
    if n == 0 or spacing <= 0:
        return out
    regions = np.asarray(regions, dtype=object)
    angles_rad = np.broadcast_to(np.asarray(angles_rad, dtype=np.float64), (n,))
    parts, pidx = shapely.get_parts(regions, return_index=True)
    poly = shapely.get_type_id(parts) == 3
    parts, pidx = parts[poly], pidx[poly]
    if parts.size == 0:
        return out
    rings, ridx = shapely.get_rings(parts, return_index=True)
    coords, cidx = shapely.get_coordinates(rings, return_index=True)
    ring_geom = pidx[ridx]  # region of each ring (rings come grouped by region)
    pt_geom = ring_geom[cidx]
    th = angles_rad[pt_geom]
    c, sn = np.cos(th), np.sin(th)
    u = coords[:, 0] * c + coords[:, 1] * sn      # along the lines
    v = -coords[:, 0] * sn + coords[:, 1] * c     # across: lines at v = k * spacing
    ring_off = np.searchsorted(cidx, np.arange(rings.size + 1)).astype(np.int64)
    geom_ring = np.searchsorted(ring_geom, np.arange(n + 1)).astype(np.int64)
    vmin = np.full(n, np.inf)
    vmax = np.full(n, -np.inf)
    np.minimum.at(vmin, pt_geom, v)
    np.maximum.at(vmax, pt_geom, v)
    ok = np.isfinite(vmin)
    k0 = np.where(ok, np.ceil(np.where(ok, vmin, 0) / spacing), 0)
    k1 = np.where(ok, np.floor(np.where(ok, vmax, 0) / spacing), -1)
    n_rows = np.maximum(k1 - k0 + 1, 0).astype(np.int64)
    g, row, x0, x1 = kslice.scanline_spans(np.ascontiguousarray(np.stack([u, v], axis=1)), ring_off,
                                           geom_ring, n, k0 * spacing, float(spacing), n_rows)
    keep = (x1 - x0) > 1e-3
    g, row, x0, x1 = g[keep], row[keep], x0[keep], x1[keep]
    vv = (k0[g] + row) * spacing
    cg, sg = np.cos(angles_rad[g]), np.sin(angles_rad[g])
    seg = np.empty((g.size, 2, 2))
    seg[:, 0, 0] = x0 * cg - vv * sg
    seg[:, 0, 1] = x0 * sg + vv * cg
    seg[:, 1, 0] = x1 * cg - vv * sg
    seg[:, 1, 1] = x1 * sg + vv * cg
    bounds = np.searchsorted(g, np.arange(n + 1))
    for i in np.flatnonzero(np.diff(bounds)):
        out[i] = list(seg[bounds[i]:bounds[i + 1]])
    return out


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def _rings_by_geom(geoms: np.ndarray, exterior_only: bool = False, min_len: float = 0.0) -> list:
    """Closed rings (first point repeated) of each polygonal geometry, exterior first."""
    out: list = [[] for _ in range(len(geoms))]
    if len(geoms) == 0:
        return out
    parts, pidx = shapely.get_parts(geoms, return_index=True)
    poly = shapely.get_type_id(parts) == 3
    parts, pidx = parts[poly], pidx[poly]
    if parts.size == 0:
        return out
    if exterior_only:
        rings = shapely.get_exterior_ring(parts)
        ridx = np.arange(parts.size)
    else:
        rings, ridx = shapely.get_rings(parts, return_index=True)
    coords, cidx = shapely.get_coordinates(rings, return_index=True)
    starts = np.searchsorted(cidx, np.arange(rings.size + 1))
    if min_len > 0:
        lengths = shapely.length(rings)
    for ring in range(rings.size):
        a, b = starts[ring], starts[ring + 1]
        if b - a < 4 or (min_len > 0 and lengths[ring] < min_len):
            continue
        out[pidx[ridx[ring]]].append(coords[a:b])
    return out


def _lines_by_geom(geoms: np.ndarray, min_len: float = 1e-3) -> list:
    """Polylines of each (multi)linestring geometry (points and empties skipped)."""
    out: list = [[] for _ in range(len(geoms))]
    if len(geoms) == 0:
        return out
    parts, pidx = shapely.get_parts(geoms, return_index=True)
    line = shapely.get_type_id(parts) == 1
    parts, pidx = parts[line], pidx[line]
    if parts.size == 0:
        return out
    coords, cidx = shapely.get_coordinates(parts, return_index=True)
    starts = np.searchsorted(cidx, np.arange(parts.size + 1))
    lengths = shapely.length(parts)
    for i in range(parts.size):
        a, b = starts[i], starts[i + 1]
        if b - a >= 2 and lengths[i] >= min_len:
            out[pidx[i]].append(coords[a:b])
    return out


def _skin_cover(regions: np.ndarray, below: int, above: int) -> np.ndarray:
    """Per layer, the intersection of the outlines from ``i - below`` to ``i + above`` (empty when
    the window leaves the part): points outside it belong to a top or bottom surface."""
    n = len(regions)
    cover = np.empty(n, dtype=object)
    cover[:] = [_EMPTY] * n
    idx = np.arange(below, n - above)
    if idx.size == 0:
        return cover
    simple = shapely.simplify(regions, _SIMPLIFY_MM)
    acc = simple[idx - below]
    for off in range(-below + 1, above + 1):
        acc = shapely.intersection(acc, simple[idx + off])
    cover[idx] = acc
    return cover


def _ring_arrays_of(geoms: np.ndarray):
    """Flat ring coordinates of polygonal geometries for the scanline kernel:
    ``(pts, ring_off, geom_ring)`` with geometry ``g`` owning rings ``geom_ring[g]:geom_ring[g+1]``."""
    n = len(geoms)
    parts, pidx = shapely.get_parts(geoms, return_index=True)
    poly = shapely.get_type_id(parts) == 3
    parts, pidx = parts[poly], pidx[poly]
    if parts.size == 0:
        return np.zeros((0, 2)), np.zeros(1, np.int64), np.zeros(n + 1, np.int64)
    rings, ridx = shapely.get_rings(parts, return_index=True)
    coords, cidx = shapely.get_coordinates(rings, return_index=True)
    ring_off = np.searchsorted(cidx, np.arange(rings.size + 1)).astype(np.int64)
    geom_ring = np.searchsorted(pidx[ridx], np.arange(n + 1)).astype(np.int64)
    return np.ascontiguousarray(coords, dtype=np.float64), ring_off, geom_ring


def _supports(stack: LayerStack, r: Resolved) -> tuple[list, object, float]:
    """Support lines of every layer, the first layer's support footprint and the supported area.

    Works per bed pixel (``_SUPPORT_PX`` mm): a column gets support when the first layer of the
    model above it is an overhang; the support then fills the column from the bed up to
    ``support_z_gap_layers`` below the first layer at which the model grown by the xy gap reaches
    the column. Columns under the model's own lower parts therefore get none (support from the bed
    only). Lines run along x at ``spacing / density`` through the pixel rows.
    """
    cfg = r.config
    regions = stack.regions
    n = len(regions)
    empty: list = [[] for _ in range(n)]
    if n < 2:
        return empty, _EMPTY, 0.0
    w = r.line_width
    step = r.layer_height * math.tan(math.radians(cfg.support_angle_deg))
    simple = shapely.simplify(regions, _SIMPLIFY_MM)
    far = np.empty(n, dtype=object)
    far[0] = _EMPTY
    far[1:] = shapely.difference(simple[1:], shapely.buffer(simple[:-1], step, join_style="mitre"))
    far = shapely.simplify(far, _SIMPLIFY_MM)
    if not np.any(shapely.area(far) > 0.25 * w * w):
        return empty, _EMPTY, 0.0
    # the whole newly covered area next to a too-far step is overhang (a steep slope steps out in
    # bands; only their outer part is farther than `step` from the layer below)
    overhang = np.empty(n, dtype=object)
    overhang[:] = [_EMPTY] * n
    has = np.flatnonzero(shapely.area(far) > 0)
    overhang[has] = shapely.intersection(shapely.buffer(far[has], 1.01 * step, join_style="mitre"), simple[has])
    px = _SUPPORT_PX
    blocked = shapely.buffer(simple, cfg.support_xy_gap_mm + 0.5 * w + 0.71 * px, join_style="mitre")
    xmin, ymin, xmax, ymax = shapely.total_bounds(blocked)
    x0 = math.floor(xmin / px) * px
    y0 = math.floor(ymin / px) * px
    nx = int(math.ceil((xmax - x0) / px)) + 1
    ny = int(math.ceil((ymax - y0) / px)) + 1
    lay, kind, row, sx0, sx1 = [], [], [], [], []
    for code, geoms in ((0, simple), (1, blocked), (2, overhang)):
        pts, ring_off, geom_ring = _ring_arrays_of(geoms)
        g, rr, a0, a1 = kslice.scanline_spans(pts, ring_off, geom_ring, n, np.full(n, y0 + 0.5 * px), px,
                                              np.full(n, ny, np.int64))
        lay.append(g)
        kind.append(np.full(g.size, code, np.int64))
        row.append(rr)
        sx0.append(a0)
        sx1.append(a1)
    lay_a = np.concatenate(lay)
    kind_a = np.concatenate(kind)
    order = np.lexsort((kind_a, lay_a))
    fm, fb, over = kslice.support_columns(lay_a[order], kind_a[order], np.concatenate(row)[order],
                                          np.concatenate(sx0)[order], np.concatenate(sx1)[order], n, x0, px, ny, nx)
    top = np.where(over, np.minimum(fb, fm) - 1 - cfg.support_z_gap_layers, -1).astype(np.int64)
    if not np.any(top >= 0):
        return empty, _EMPTY, 0.0
    sp = r.spacing / cfg.support_density
    jj = np.arange(math.ceil(y0 / sp), math.floor((y0 + ny * px) / sp) + 1)
    line_y = jj * sp
    rows = np.clip(np.floor((line_y - y0) / px).astype(np.int64), 0, ny - 1)
    # runs shorter than a line width and a half are slivers
    runs = kslice.support_runs(top, n, rows, max(2, int(math.ceil(1.5 * w / px))))
    paths: list = [[] for _ in range(n)]
    if runs.shape[0]:
        xa = x0 + (runs[:, 2] + 0.5) * px
        xb = x0 + (runs[:, 3] + 0.5) * px
        yy = line_y[runs[:, 1]]
        seg = np.stack([np.stack([xa, yy], 1), np.stack([xb, yy], 1)], axis=1)
        bounds = np.searchsorted(runs[:, 0], np.arange(n + 1))
        for k in np.flatnonzero(np.diff(bounds)):
            paths[k] = list(seg[bounds[k]:bounds[k + 1]])
    first = [p for p in paths[0]]
    footprint = shapely.union_all(shapely.buffer(shapely.linestrings(np.array(first)), 0.5 * w)) if first else _EMPTY
    area = float(np.count_nonzero(top >= 0)) * px * px
    return paths, footprint, area


def _toolpaths(stack: LayerStack, r: Resolved, name: str, warnings: list) -> SlicedModel:
    cfg = r.config
    w, s = r.line_width, r.spacing
    n_layers = len(stack)
    regions = stack.regions
    # islands: every polygon of every layer
    parts, lay = shapely.get_parts(regions, return_index=True)
    is_poly = shapely.get_type_id(parts) == 3
    parts, lay = parts[is_poly], lay[is_poly]
    shapely.prepare(parts)
    walls = [shapely.buffer(parts, -(0.5 * w + k * s), join_style="mitre") for k in range(cfg.walls)]
    inner = shapely.buffer(parts, -(0.5 * w + (cfg.walls - 1) * s + 0.5 * s), join_style="mitre")
    cover = _skin_cover(regions, cfg.bottom_layers, cfg.top_layers)
    skin_reg = shapely.difference(inner, cover[lay])
    fill_reg = shapely.intersection(inner, cover[lay])
    # drop skin slivers thinner than a line, they would print nothing but travel
    skin_reg = shapely.buffer(shapely.buffer(skin_reg, -0.25 * s, join_style="mitre"), 0.25 * s, join_style="mitre")
    skin_reg = shapely.intersection(skin_reg, inner)
    fill_reg = shapely.difference(inner, skin_reg)

    base = math.radians(cfg.infill_angle_deg)
    odd = (lay % 2).astype(np.float64)
    skin_paths = hatch(skin_reg, base + odd * (math.pi / 2), s)
    if cfg.infill_density > 0:
        if cfg.infill_pattern == "grid":
            sp = 2.0 * s / cfg.infill_density
            fa = hatch(fill_reg, np.full(len(parts), base), sp)
            fb = hatch(fill_reg, np.full(len(parts), base + math.pi / 2), sp)
            fill_paths = [a + b for a, b in zip(fa, fb)]
        else:
            fill_paths = hatch(fill_reg, base + odd * (math.pi / 2), s / cfg.infill_density)
    else:
        fill_paths = [[] for _ in range(len(parts))]
    outline_rings = _rings_by_geom(parts)
    wall_rings = [_rings_by_geom(wk, min_len=w) for wk in walls]

    sup_first = _EMPTY
    sup_area = 0.0
    sup_paths: list = [[] for _ in range(n_layers)]
    if cfg.support and cfg.support_density > 0:
        sup_paths, sup_first, sup_area = _supports(stack, r)
        n_sup = sum(1 for p in sup_paths if p)
        if n_sup:
            log.info("%s: supports on %d of %d layers, %.0f mm2 of bed", name, n_sup, n_layers, sup_area)

    brim: list = []
    if cfg.brim_width_mm > 0 and n_layers:
        loops = max(1, int(round(cfg.brim_width_mm / s)))
        first = regions[0]
        if not sup_first.is_empty:
            first = shapely.union(first, sup_first)
        rings = _rings_by_geom(shapely.buffer(np.array([first] * loops, dtype=object),
                                              0.5 * w + s * np.arange(loops)), exterior_only=True)
        brim = [ring for rr in rings for ring in rr]

    layers = [Layer(index=k, z_mm=float(stack.top_z[k]), height_mm=float(stack.height[k]),
                    islands=[], support=sup_paths[k]) for k in range(n_layers)]
    for i in range(len(parts)):
        layers[lay[i]].islands.append(Island(outline=outline_rings[i],
                                             walls=[wr[i] for wr in wall_rings],
                                             skin=skin_paths[i], infill=fill_paths[i]))
    volume = float(np.sum(shapely.area(regions) * stack.height))
    stats = {"volume_mm3": volume, "islands": int(len(parts)), "layers": n_layers,
             "open_chains": stack.open_chains,
             "support_area_mm2": sup_area}
    return SlicedModel(name=name, layers=layers, line_width_mm=w, spacing_mm=s, brim=brim,
                       regions=regions, support_footprint=sup_first, warnings=warnings, stats=stats)
