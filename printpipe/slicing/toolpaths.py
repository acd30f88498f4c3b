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

from printpipe.slicing.config import Resolved, SliceConfig
from printpipe.slicing.layers import LayerStack, slice_outlines

log = logging.getLogger(__name__)

__all__ = ["Island", "Layer", "SlicedModel", "slice_mesh", "hatch"]

_EMPTY = shapely.Polygon()
# Geometric cleaning tolerance for the helper regions (skin window, supports), mm.
_SIMPLIFY_MM = 0.02


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
    support_regions : (L,) object ndarray or None
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
    support_regions: np.ndarray | None
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
    list of list of (k, 2) ndarray
        For each region its clipped polylines.
    """
    n = len(regions)
    out: list = [[] for _ in range(n)]
    if n == 0 or spacing <= 0:
        return out
    regions = np.asarray(regions, dtype=object)
    angles_rad = np.broadcast_to(np.asarray(angles_rad, dtype=np.float64), (n,))
    nonempty = ~shapely.is_empty(regions)
    idx = np.flatnonzero(nonempty)
    if idx.size == 0:
        return out
    b = shapely.bounds(regions[idx])  # (k, 4) xmin ymin xmax ymax
    th = angles_rad[idx]
    dx, dy = np.cos(th), np.sin(th)
    nx, ny = -dy, dx
    cx = np.stack([b[:, 0], b[:, 2], b[:, 2], b[:, 0]], axis=1)
    cy = np.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3]], axis=1)
    c = cx * nx[:, None] + cy * ny[:, None]
    t = cx * dx[:, None] + cy * dy[:, None]
    k0 = np.ceil(c.min(axis=1) / spacing).astype(np.int64)
    k1 = np.floor(c.max(axis=1) / spacing).astype(np.int64)
    cnt = np.maximum(k1 - k0 + 1, 0)
    has = cnt > 0
    idx, k0, cnt = idx[has], k0[has], cnt[has]
    dx, dy, nx, ny = dx[has], dy[has], nx[has], ny[has]
    t0 = t.min(axis=1)[has] - 1.0
    t1 = t.max(axis=1)[has] + 1.0
    if idx.size == 0:
        return out
    total = int(cnt.sum())
    g = np.repeat(np.arange(idx.size), cnt)
    start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    kk = k0[g] + (np.arange(total) - start[g])
    cc = kk * spacing
    p0 = np.stack([nx[g] * cc + dx[g] * t0[g], ny[g] * cc + dy[g] * t0[g]], axis=1)
    p1 = np.stack([nx[g] * cc + dx[g] * t1[g], ny[g] * cc + dy[g] * t1[g]], axis=1)
    coords = np.empty((2 * total, 2))
    coords[0::2] = p0
    coords[1::2] = p1
    lines = shapely.linestrings(coords, indices=np.repeat(np.arange(total), 2))
    mls = shapely.multilinestrings(lines, indices=g)
    clipped = shapely.intersection(mls, regions[idx])
    for j, paths in enumerate(_lines_by_geom(clipped)):
        out[idx[j]] = paths
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


def _supports(stack: LayerStack, r: Resolved) -> np.ndarray:
    """Support region of every layer (see the module docstring)."""
    cfg = r.config
    regions = stack.regions
    n = len(regions)
    sup = np.empty(n, dtype=object)
    sup[:] = [_EMPTY] * n
    if n < 2:
        return sup
    w = r.line_width
    step = r.layer_height * math.tan(math.radians(cfg.support_angle_deg))
    simple = shapely.simplify(regions, _SIMPLIFY_MM)
    overhang = np.empty(n, dtype=object)
    overhang[0] = _EMPTY
    overhang[1:] = shapely.difference(simple[1:], shapely.buffer(simple[:-1], step, join_style="mitre"))
    # bands thinner than a few microns are numerical noise of the outlines
    overhang = shapely.simplify(overhang, _SIMPLIFY_MM)
    if not np.any(shapely.area(overhang) > 0.25 * w * w):
        return sup
    blocked = shapely.buffer(simple, cfg.support_xy_gap_mm + 0.5 * w, join_style="mitre")
    gap = cfg.support_z_gap_layers
    col = _EMPTY
    down = [_EMPTY] * n
    for k in range(n - 1, -1, -1):
        m = k + 1 + gap
        if m < n and not overhang[m].is_empty:
            col = shapely.union(col, overhang[m])
        if not col.is_empty:
            col = shapely.simplify(shapely.difference(col, blocked[k]), _SIMPLIFY_MM)
        down[k] = col
    # keep only the columns that reach the bed
    up = down[0]
    for k in range(n):
        if k:
            up = shapely.intersection(down[k], up) if not up.is_empty else up
        sup[k] = up
    # drop slivers narrower than a line width (opening)
    sup = shapely.buffer(shapely.buffer(sup, -0.5 * w, join_style="mitre"), 0.5 * w, join_style="mitre")
    return sup


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

    sup_reg = None
    sup_paths: list = [[] for _ in range(n_layers)]
    if cfg.support and cfg.support_density > 0:
        sup_reg = _supports(stack, r)
        sup_paths = hatch(sup_reg, np.zeros(n_layers), s / cfg.support_density)
        n_sup = sum(1 for p in sup_paths if p)
        if n_sup:
            log.info("%s: supports on %d of %d layers", name, n_sup, n_layers)

    brim: list = []
    if cfg.brim_width_mm > 0 and n_layers:
        loops = max(1, int(round(cfg.brim_width_mm / s)))
        first = regions[0]
        if sup_reg is not None and not sup_reg[0].is_empty:
            first = shapely.union(first, sup_reg[0])
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
             "support_area_mm2": float(np.sum(shapely.area(sup_reg))) if sup_reg is not None else 0.0}
    return SlicedModel(name=name, layers=layers, line_width_mm=w, spacing_mm=s, brim=brim,
                       regions=regions, support_regions=sup_reg, warnings=warnings, stats=stats)
