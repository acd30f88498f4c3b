"""Toolpaths of one part: walls, top/bottom skin, sparse infill, supports and brim.

Everything is computed with shapely 2 (GEOS), vectorised over all islands of all layers at once, so
Python only loops to gather the resulting coordinates. Geometry rules:

* **Line spacing.** An extruded line of width ``w`` and height ``h`` has the rounded-rectangle
  cross-section ``(w - h) * h + pi * (h / 2) ** 2`` (the model PrusaSlicer uses). Touching lines
  are laid at the spacing ``s = w - h * (1 - pi / 4)``, so that ``h * s`` is exactly that area and
  a solid region of area ``A`` receives ``A * h`` of plastic.
* **Walls.** Wall ``k`` (0 = outer) follows the outline offset inwards by ``w / 2 + k * s``; the
  region left for skin and infill is the outline offset by ``w / 2 + (walls - 1) * s + s / 2``.
* **Skin.** (PrusaSlicer 2.5's rules, with ``ensure_vertical_shell_thickness`` off.) A point of the
  fill region of layer ``k`` is solid when it leaves the part within ``top_layers`` layers above
  or ``bottom_layers`` below (region minus the intersection of the outlines of those layers; the
  layers beyond the part count as empty). The surface a layer exposes inside its own fill region
  is grown by ``skin_expand_mm`` (3 mm, PrusaSlicer's external infill margin) within that region
  and carried through the next ``top_layers - 1`` layers below (``bottom_layers - 1`` above), so
  skin is anchored on the infill. Skin bands narrower than ``2 * _NARROW_LINES`` line widths are
  widened by ``_NARROW_LINES`` widths into the fill region (too few lines otherwise; sloped bone
  surfaces make many such bands), slivers under half a spacing are dropped, and sparse pieces
  smaller than ``solid_infill_below_area_mm2`` become solid.
* **Infill.** Straight lines on a global grid (so layers stack), clipped to the region: ``grid``
  lays both directions on every layer at ``2 * s / density`` (the density split between them);
  ``lines`` one direction at ``s / density``, turning by 90 degrees every layer. Line ends that
  follow each other along the region's boundary are joined by the boundary path when it is at
  most ``infill_connect_mm`` long (shortest first, no cycles) and free ends get an anchor of
  ``infill_anchor_mm`` along it, as PrusaSlicer does. Skin uses ``s`` and alternates 45/135.
* **Supports.** (PrusaSlicer 2.5's grid support from the bed.) Overhang of layer ``m``: its
  outline minus the layer below grown by ``h * tan(threshold)`` (a surface leaning more than the
  threshold from the vertical steps out further than that per layer), widened back over the whole
  steep band; the contact area grows it by 1.5 mm around, outside the layer below. A bed pixel is
  supported up to ``support_z_gap_layers`` below the highest contact above it that has no model
  below it (support from the bed only, never on bone); the columns are snapped to the cells of the
  support line grid, kept below the model and out of it by the xy gap on every layer, and printed
  as zig-zag lines along x, ordered by nearest end (see :func:`_supports`).
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
# The support contact area extends this far around an overhang (mm; PrusaSlicer's
# SUPPORT_MATERIAL_MARGIN).
_SUPPORT_MARGIN_MM = 1.5
# Line density of the first support layer (PrusaSlicer's raft_first_layer_density, 90 %, which it
# also uses for the first layer of support without a raft): a dense flange that holds on the bed.
_SUPPORT_FIRST_DENSITY = 0.9
# Support lines on neighbouring rows are joined when their ends are at most this many line
# spacings apart (along the boundary of the support, as a rectilinear fill is joined).
_SUPPORT_LINK = 3.0
# Skin pieces thinner than 2 x _SLIVER x spacing are dropped (they print nothing but travel).
_SLIVER = 0.25
# A skin band narrower than 2 x _NARROW_LINES line widths is widened by that many widths
# (PrusaSlicer's discover_horizontal_shells uses 3 solid-infill widths).
_NARROW_LINES = 3.0


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
    """One layer: ``z_mm`` is its top (the nozzle height), ``height_mm`` its thickness.

    ``support`` holds the support polylines in print order; ``support_inside[i]`` tells whether
    the travel from polyline ``i - 1`` to ``i`` stays inside the support (no retraction needed).
    An empty ``support_inside`` means "unordered" (the writer orders the lines itself)."""

    index: int
    z_mm: float
    height_mm: float
    islands: list
    support: list = field(default_factory=list)
    support_inside: list = field(default_factory=list)


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


def _hatch_spans(regions: np.ndarray, angles_rad: np.ndarray, spacing: float):
    """Scanline spans of every region along its angle: ``(g, seg (k, 2, 2), e (k, 2), t (k, 2),
    coords, ring_off)`` with the ring edge (index into ``coords``) and fraction of each end."""
    n = len(regions)
    none = (np.zeros(0, np.int64), np.zeros((0, 2, 2)), np.zeros((0, 2), np.int64), np.zeros((0, 2)),
            np.zeros((0, 2)), np.zeros(1, np.int64))
    if n == 0 or spacing <= 0:
        return none
    angles_rad = np.broadcast_to(np.asarray(angles_rad, dtype=np.float64), (n,))
    parts, pidx = shapely.get_parts(regions, return_index=True)
    poly = shapely.get_type_id(parts) == 3
    parts, pidx = parts[poly], pidx[poly]
    if parts.size == 0:
        return none
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
    g, row, x0, x1, e0, t0, e1, t1 = kslice.scanline_spans_edges(
        np.ascontiguousarray(np.stack([u, v], axis=1)), ring_off, geom_ring, n, k0 * spacing,
        float(spacing), n_rows)
    keep = (x1 - x0) > 1e-3
    g, row, x0, x1 = g[keep], row[keep], x0[keep], x1[keep]
    vv = (k0[g] + row) * spacing
    cg, sg = np.cos(angles_rad[g]), np.sin(angles_rad[g])
    seg = np.empty((g.size, 2, 2))
    seg[:, 0, 0] = x0 * cg - vv * sg
    seg[:, 0, 1] = x0 * sg + vv * cg
    seg[:, 1, 0] = x1 * cg - vv * sg
    seg[:, 1, 1] = x1 * sg + vv * cg
    e = np.stack([e0[keep], e1[keep]], axis=1)
    t = np.stack([t0[keep], t1[keep]], axis=1)
    return g, seg, e, t, np.ascontiguousarray(coords, dtype=np.float64), ring_off


def hatch(regions: np.ndarray, angles_rad, spacing: float, connect_mm: float = 0.0,
          anchor_mm: float = 0.0) -> list:
    """Parallel lines on a global grid, clipped to each region, optionally joined into zig-zags.

    Parameters
    ----------
    regions : (n,) object ndarray of shapely polygons
    angles_rad : (n,) float, or a list of such arrays
        Line direction of each region, radians from +x. Several arrays give several families of
        lines in the same region (``grid``: two crossing directions), joined together.
    spacing : float
        Distance between lines in mm; lines lie at ``k * spacing`` along the normal, so regions
        on different layers share the grid.
    connect_mm : float
        When > 0, lines whose ends follow each other along the region's boundary are joined by
        that boundary path if it is at most this long (shortest joins first, no cycles), as
        PrusaSlicer connects its infill lines; the result is fewer, longer polylines.
    anchor_mm : float
        With ``connect_mm``: a line end left unjoined continues along the boundary for this
        length (at most half the way to the next line end), anchoring it on the walls.

    Returns
    -------
    list of list of (k, 2) ndarray
        For each region its polylines (two points each when not connected).

    Notes
    -----
    The region's rings are rotated so that the lines run along +x and cut with the even-odd
    scanline kernel :func:`printpipe.kernels.slice.scanline_spans_edges` (exact interval ends, no
    polygon boolean per line); the kernel also tells the boundary edge of every line end, which
    :func:`printpipe.kernels.slice.connect_lines` uses to follow the boundary.
    """
    n = len(regions)
    out: list = [[] for _ in range(n)]
    if n == 0 or spacing <= 0:
        return out
    regions = np.asarray(regions, dtype=object)
    families = angles_rad if isinstance(angles_rad, list) else [angles_rad]
    spans = [_hatch_spans(regions, a, spacing) for a in families]
    g = np.concatenate([sp[0] for sp in spans])
    if g.size == 0:
        return out
    seg = np.concatenate([sp[1] for sp in spans])
    if connect_mm <= 0:
        order = np.argsort(g, kind="stable")
        g, seg = g[order], seg[order]
        bounds = np.searchsorted(g, np.arange(n + 1))
        for i in np.flatnonzero(np.diff(bounds)):
            out[i] = list(seg[bounds[i]:bounds[i + 1]])
        return out
    # the rings are the same (same order) for every family: arc length along them
    coords, ring_off = spans[0][4], spans[0][5]
    e = np.concatenate([sp[2] for sp in spans])
    t = np.concatenate([sp[3] for sp in spans])
    n_pts = coords.shape[0]
    vring = np.repeat(np.arange(ring_off.size - 1), np.diff(ring_off))
    nxt = np.arange(1, n_pts + 1)
    last = ring_off[1:] - 1
    nxt[last] = ring_off[:-1]
    elen = np.hypot(*(coords[nxt] - coords).T)
    cum = np.cumsum(elen) - elen
    cum -= cum[ring_off[:-1]][vring]
    end_arc = cum[e] + t * elen[e]
    end_ring = vring[e]
    order = np.argsort(g, kind="stable")
    xy, off, pg = kslice.connect_lines(g[order], np.ascontiguousarray(seg[order]),
                                       np.ascontiguousarray(end_ring[order]),
                                       np.ascontiguousarray(end_arc[order]), coords, ring_off,
                                       np.ascontiguousarray(cum), float(connect_mm),
                                       float(anchor_mm))
    for k in range(pg.size):
        out[pg[k]].append(xy[off[k]:off[k + 1]])
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


def _per_layer(geoms: np.ndarray, lay: np.ndarray, n: int) -> np.ndarray:
    """Union of the island geometries of each layer (islands of a layer do not overlap)."""
    parts, pidx = shapely.get_parts(geoms, return_index=True)
    poly = shapely.get_type_id(parts) == 3
    parts, pidx = parts[poly], pidx[poly]
    out = np.empty(n, dtype=object)
    out[:] = [_EMPTY] * n
    if parts.size:
        layer_of = lay[pidx]
        order = np.argsort(layer_of, kind="stable")
        has = np.unique(layer_of)
        out[has] = shapely.multipolygons(parts[order], indices=np.searchsorted(has, layer_of[order]))
    return out


def _skin_and_fill(regions: np.ndarray, inner: np.ndarray, lay: np.ndarray, r: Resolved):
    """Solid skin and sparse infill regions of every island (see the module docstring, *Skin*).

    ``regions`` are the layer outlines, ``inner`` the islands' regions inside the walls and
    ``lay`` the layer of each island. Returns ``(skin, fill)``, one geometry per island.
    """
    cfg = r.config
    w, s = r.line_width, r.spacing
    n = len(regions)
    simple = shapely.simplify(regions, _SIMPLIFY_MM)
    inner_l = shapely.simplify(_per_layer(inner, lay, n), _SIMPLIFY_MM)
    solid = np.empty(n, dtype=object)
    solid[:] = [_EMPTY] * n
    for count, step in ((cfg.top_layers, 1), (cfg.bottom_layers, -1)):
        if count <= 0:
            continue
        # the layer beyond the part on this side (empty), then the neighbours in the window
        nb = np.empty(n, dtype=object)
        nb[:] = [_EMPTY] * n
        if step == 1:
            nb[:-1] = simple[1:]
        else:
            nb[1:] = simple[:-1]
        # exposed surface of each layer's fill region, grown by the skin margin into the fill
        # region (anchors the skin in the infill, as PrusaSlicer's 3 mm external infill margin)
        exposed = shapely.difference(inner_l, nb)
        exposed = shapely.buffer(shapely.buffer(exposed, -0.1 * w, join_style="mitre"),
                                 0.1 * w, join_style="mitre")  # PrusaSlicer: opening by w / 10
        grown = exposed
        big = np.flatnonzero(shapely.area(exposed) > 0)
        if cfg.skin_expand_mm > 0 and big.size:
            grown = exposed.copy()
            grown[big] = shapely.intersection(
                shapely.buffer(exposed[big], cfg.skin_expand_mm, join_style="mitre"), inner_l[big])
        # cover: intersection of the outlines of the `count` layers above (below); a point of the
        # region outside it is exposed within `count` layers
        cover = np.empty(n, dtype=object)
        cover[:] = [_EMPTY] * n
        idx = np.arange(n)
        ok = (idx + step * count >= 0) & (idx + step * count < n)
        idx = idx[ok]
        if idx.size:
            acc = simple[idx + step]
            for off in range(2, count + 1):
                acc = shapely.intersection(acc, simple[idx + step * off])
            cover[idx] = acc
        band = shapely.difference(inner_l, cover)
        # the grown exposed surfaces of this layer and the `count - 1` next ones propagate into it
        prop = grown.copy()
        for off in range(1, count):
            src = np.full(n, _EMPTY, dtype=object)
            if step == 1:
                src[:n - off] = grown[off:]
            else:
                src[off:] = grown[:n - off]
            has = np.flatnonzero(shapely.area(src) > 0)
            if has.size:
                prop[has] = shapely.union(prop[has], src[has])
        has = np.flatnonzero(shapely.area(prop) > 0)
        if has.size:
            band[has] = shapely.union(band[has], shapely.intersection(prop[has], inner_l[has]))
        solid = shapely.union(solid, band)
    # a skin band narrower than 2 x _NARROW_LINES lines (it collapses to a few short lines) is
    # widened by _NARROW_LINES lines into the infill region (PrusaSlicer's horizontal shells)
    has = np.flatnonzero(shapely.area(solid) > 0)
    if has.size:
        m = _NARROW_LINES * w
        sub = solid[has]
        opened = shapely.buffer(shapely.buffer(sub, -m, join_style="mitre"), m, join_style="mitre")
        narrow = shapely.difference(sub, shapely.buffer(opened, 1e-3, join_style="mitre"))
        wide = np.flatnonzero(shapely.area(narrow) > 0)
        if wide.size:
            sub[wide] = shapely.union(sub[wide], shapely.intersection(
                shapely.buffer(narrow[wide], m, join_style="mitre"), inner_l[has[wide]]))
        solid[has] = sub
    skin = shapely.intersection(inner, solid[lay])
    # drop skin slivers thinner than half a line, they would print nothing but travel
    skin = shapely.buffer(shapely.buffer(skin, -_SLIVER * s, join_style="mitre"), _SLIVER * s, join_style="mitre")
    skin = shapely.intersection(skin, inner)
    fill = shapely.difference(inner, skin)
    if cfg.solid_infill_below_area_mm2 > 0:
        # sparse pieces smaller than the threshold are printed solid (PrusaSlicer's rule)
        parts, pidx = shapely.get_parts(fill, return_index=True)
        small = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) < cfg.solid_infill_below_area_mm2)
        if np.any(small):
            tiny = np.empty(len(inner), dtype=object)
            tiny[:] = [_EMPTY] * len(inner)
            k = np.unique(pidx[small])
            sel = small.copy()
            order = np.argsort(pidx[sel], kind="stable")
            tiny[k] = shapely.multipolygons(parts[sel][order], indices=np.searchsorted(k, pidx[sel][order]))
            skin[k] = shapely.union(skin[k], tiny[k])
            fill[k] = shapely.difference(fill[k], tiny[k])
    return skin, fill


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


def _contacts(simple: np.ndarray, r: Resolved) -> np.ndarray:
    """Support contact area of every layer (PrusaSlicer 2.5's ``top_contact_layers``, automatic).

    Overhang of layer ``m``: its outline minus the layer below (opened by half a line width) grown
    by ``step = h * tan(threshold)``, cleaned by an opening of a tenth of a line width; it is then
    widened back by ``step`` within the layer (the whole steep band, not only its outer part). The
    contact area grows the overhang by ``_SUPPORT_MARGIN_MM`` in three steps, each time keeping out
    of the layer below grown by ``min(step, xy gap)``; it may extend beyond the layer's outline.
    """
    cfg = r.config
    n = len(simple)
    w = r.line_width
    step = r.layer_height * math.tan(math.radians(cfg.support_angle_deg))
    out = np.empty(n, dtype=object)
    out[:] = [_EMPTY] * n
    if n < 2:
        return out
    lower = simple[:-1]
    cur = simple[1:]
    opened = shapely.buffer(lower, -0.5 * w, join_style="mitre")
    d = shapely.difference(cur, shapely.buffer(opened, step + 0.5 * w, join_style="mitre"))
    d = shapely.buffer(shapely.buffer(d, -0.1 * w, join_style="mitre"), 0.1 * w, join_style="mitre")
    has = np.flatnonzero(shapely.area(d) > 0.25 * w * w)
    if has.size == 0:
        return out
    d = shapely.difference(shapely.intersection(shapely.buffer(d[has], step, join_style="mitre"), cur[has]),
                           lower[has])
    margin = shapely.buffer(opened[has], min(step, cfg.support_xy_gap_mm) + 0.5 * w, join_style="mitre")
    for _ in range(3):
        d = shapely.difference(shapely.buffer(d, _SUPPORT_MARGIN_MM / 3, quad_segs=2), margin)
    out[has + 1] = shapely.simplify(d, _SIMPLIFY_MM)
    return out


def _supports(stack: LayerStack, r: Resolved) -> tuple[list, list, object, float]:
    """Support polylines and travel flags of every layer, the first layer's support footprint and
    the supported bed area.

    Works per bed pixel (``_SUPPORT_PX`` mm), as PrusaSlicer 2.5's grid-style support with
    ``support_material_buildplate_only``:

    * a pixel column is supported up to ``support_z_gap_layers`` below the highest contact area
      (:func:`_contacts`) that covers it with no model below it;
    * the columns are snapped to square cells of the support line spacing, centred on the lines
      (PrusaSlicer stretches its support islands over the cells of its line grid): a cell is
      supported up to the highest column in it;
    * support stays below the model's first layer in every pixel (``support_z_gap_layers`` under
      it), and on each layer out of the model grown by the xy gap and half a line width.

    Lines run along x at ``spacing / density`` through the cell centres (on the first layer at
    ``spacing / _SUPPORT_FIRST_DENSITY``, a dense flange on the bed); runs along a line are
    joined with their neighbours on the next line into zig-zags where the connector stays in the
    support, and ordered by nearest end (:func:`printpipe.kernels.slice.support_paths`).
    """
    cfg = r.config
    regions = stack.regions
    n = len(regions)
    empty: list = [[] for _ in range(n)]
    none = (empty, [[] for _ in range(n)], _EMPTY, 0.0)
    if n < 2:
        return none
    w = r.line_width
    simple = shapely.simplify(regions, _SIMPLIFY_MM)
    contact = _contacts(simple, r)
    if not np.any(shapely.area(contact) > 0):
        return none
    px = _SUPPORT_PX
    blocked = shapely.buffer(simple, cfg.support_xy_gap_mm + 0.5 * w + 0.71 * px, join_style="mitre")
    sp = r.spacing / cfg.support_density
    xmin, ymin, xmax, ymax = shapely.total_bounds(np.concatenate([blocked, contact]))
    # (one line spacing of room: the cells of the line grid stick out of the contact areas)
    xmin, ymin, xmax, ymax = xmin - sp, ymin - sp, xmax + sp, ymax + sp
    x0 = math.floor(xmin / px) * px
    y0 = math.floor(ymin / px) * px
    nx = int(math.ceil((xmax - x0) / px)) + 1
    ny = int(math.ceil((ymax - y0) / px)) + 1
    lay, kind, row, sx0, sx1 = [], [], [], [], []
    for code, geoms in ((0, simple), (1, blocked), (2, contact)):
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
    row_a = np.concatenate(row)
    x0_a = np.concatenate(sx0)
    x1_a = np.concatenate(sx1)
    order = np.lexsort((kind_a, lay_a))
    lay_a, kind_a, row_a, x0_a, x1_a = lay_a[order], kind_a[order], row_a[order], x0_a[order], x1_a[order]
    fm, fb, cont = kslice.support_columns(lay_a, kind_a, row_a, x0_a, x1_a, n, x0, px, ny, nx)
    gap = cfg.support_z_gap_layers
    col = np.where(cont >= 0, cont - 1 - gap, -1)
    if not np.any(col >= 0):
        return none
    # cells of the line grid, centred on the lines: each supported up to its highest column
    ci = np.floor((x0 + (np.arange(nx) + 0.5) * px) / sp + 0.5).astype(np.int64)
    cj = np.floor((y0 + (np.arange(ny) + 0.5) * px) / sp + 0.5).astype(np.int64)
    ci -= ci[0]
    cj -= cj[0]
    cell = np.full((cj[-1] + 1, ci[-1] + 1), -1, np.int64)
    np.maximum.at(cell, (np.repeat(cj, nx), np.tile(ci, ny)), col.ravel())
    top = cell[cj[:, None], ci[None, :]]
    top = np.minimum(top, np.where(fm < n, fm - 1 - gap, n)).astype(np.int64)
    if not np.any(top >= 0):
        return none
    blk = kind_a == 1
    paths: list = [[] for _ in range(n)]
    flags: list = [[] for _ in range(n)]
    # the first layer at _SUPPORT_FIRST_DENSITY (a flange that holds on the bed), the others at
    # the support density
    for first_layer, pitch in ((True, r.spacing / _SUPPORT_FIRST_DENSITY), (False, sp)):
        line_y = (np.arange(math.ceil(y0 / pitch), math.floor((y0 + ny * px) / pitch) + 1)) * pitch
        rows = np.unique(np.clip(np.floor((line_y - y0) / px).astype(np.int64), 0, ny - 1))
        # runs shorter than a line width and a half are slivers
        xy, off, pl, inside = kslice.support_paths(
            np.ascontiguousarray(np.minimum(top, 0) if first_layer else top), lay_a[blk], row_a[blk],
            x0_a[blk], x1_a[blk], n, x0, px, rows, max(2, int(math.ceil(1.5 * w / px))),
            int(math.ceil(_SUPPORT_LINK * pitch / px)))
        if pl.size:
            pts = np.empty_like(xy)
            pts[:, 0] = x0 + (xy[:, 0] + 0.5) * px
            pts[:, 1] = y0 + (xy[:, 1] + 0.5) * px
            for k in np.flatnonzero((pl == 0) if first_layer else (pl > 0)):
                paths[pl[k]].append(pts[off[k]:off[k + 1]])
                flags[pl[k]].append(bool(inside[k]))
    first = paths[0]
    footprint = _EMPTY
    if first:
        lines = shapely.linestrings(np.concatenate(first), indices=np.repeat(np.arange(len(first)),
                                                                             [len(p) for p in first]))
        footprint = shapely.union_all(shapely.buffer(lines, 0.5 * w))
    area = float(np.count_nonzero((top >= 0) & (fb > 0))) * px * px
    return paths, flags, footprint, area


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
    skin_reg, fill_reg = _skin_and_fill(regions, inner, lay, r)

    base = math.radians(cfg.infill_angle_deg)
    odd = (lay % 2).astype(np.float64)
    skin_paths = hatch(skin_reg, base + odd * (math.pi / 2), s)
    if cfg.infill_density > 0:
        join = cfg.infill_connect_mm
        anchor = cfg.infill_anchor_mm if cfg.infill_anchor_mm is not None else 6.0 * w
        if cfg.infill_pattern == "grid":
            sp = 2.0 * s / cfg.infill_density
            fill_paths = hatch(fill_reg, [np.full(len(parts), base), np.full(len(parts), base + math.pi / 2)],
                               sp, join, anchor)
        else:
            fill_paths = hatch(fill_reg, base + odd * (math.pi / 2), s / cfg.infill_density, join, anchor)
    else:
        fill_paths = [[] for _ in range(len(parts))]
    outline_rings = _rings_by_geom(parts)
    wall_rings = [_rings_by_geom(wk, min_len=w) for wk in walls]

    sup_first = _EMPTY
    sup_area = 0.0
    sup_paths: list = [[] for _ in range(n_layers)]
    sup_inside: list = [[] for _ in range(n_layers)]
    if cfg.support and cfg.support_density > 0:
        sup_paths, sup_inside, sup_first, sup_area = _supports(stack, r)
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
                    islands=[], support=sup_paths[k], support_inside=sup_inside[k])
              for k in range(n_layers)]
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
