"""G-code for one plate of sliced parts, an independent inside/outline check, and a picture.

Conventions of the files written by :func:`to_gcode`:

* header: ``;FLAVOR:``, ``;TIME:<s>``, ``;Filament used: <m>m``, ``;LAYER_COUNT:<n>`` (time and
  filament from :func:`printpipe.slicing.estimate.estimate`, computed on the finished body);
* ``;LAYER:<n>`` at every layer, ``;TYPE:`` before every feature (``SKIRT``, ``SUPPORT``,
  ``WALL-INNER``, ``WALL-OUTER``, ``SKIN``, ``FILL``);
* absolute XYZ (``G90``) and relative extrusion (``M83``), declared before the first move;
* ``E`` = extruded volume / filament cross-section, the volume being ``length x A`` with the
  rounded-rectangle line cross-section ``A = (w - h) * h + pi * (h / 2) ** 2`` (PrusaSlicer's
  model; equal to ``h * spacing``);
* temperatures and waits (``M190``/``M109``) come from the printer's start G-code before any
  extrusion; the part fan is off on the first layer; first-layer temperatures switch to the
  normal ones at layer 1;
* travel retracts when it is at least ``retract_min_travel_mm`` long and leaves the current
  island (crosses its outline, goes to another island or part, or changes layer).

For the printer's screen (each can be switched off in :class:`SliceConfig`):

* ``M73 P<percent> R<minutes>`` before the start G-code, after every ``;LAYER:`` line and
  before the end G-code, from the estimator's clock at each layer (motion and dwells, as
  ``;TIME:``; heat-up waits are not counted), so the percentage only rises and the minutes only
  fall;
* ``M117`` messages (ASCII, at most 60 characters): the plate and its parts when printing
  starts, "Print done" at the end;
* preview pictures (``; thumbnail begin WxH LEN`` base64 PNG, ``; thumbnail_JPG begin`` for
  JPEG) in the sizes of the printer profile, after the header comments;
* object labels: ``M486 T<parts>`` once, then per part and layer ``; printing object <name>``,
  ``M486 S<n>`` ... ``M486 S-1``, ``; stop printing object <name>``. A block starts and ends
  with the filament retracted and holds no layer change or heater command, so when the
  firmware skips a cancelled part (Marlin drops its XYZ and E motion) the other parts print on
  with the right extrusion.
"""

from __future__ import annotations

import logging
import math
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import shapely

from printpipe.errors import InputError
from printpipe.i18n import N_
from printpipe.kernels import slice as kslice
from printpipe.slicing.config import SliceConfig
from printpipe.slicing.toolpaths import SlicedModel

log = logging.getLogger(__name__)

__all__ = [
    "to_gcode",
    "check_inside_outline",
    "check_paths_inside",
    "render_toolpaths",
    "MODEL_TYPES",
    "OUTER_WALL_TYPES",
]

#: ``;TYPE:`` names of model extrusions (ours and PrusaSlicer's / Cura's), for the checks.
OUTER_WALL_TYPES = ("WALL-OUTER", "External perimeter", "Overhang perimeter")
MODEL_TYPES = OUTER_WALL_TYPES + ("WALL-INNER", "SKIN", "FILL", "Perimeter", "Internal infill",
                                  "Solid infill", "Top solid infill", "Bridge infill", "Gap fill",
                                  "Ironing")
_FLAVOR_HEADER = {"marlin": "Marlin", "marlin2": "Marlin", "prusa": "Marlin", "klipper": "Marlin",
                  "reprap": "RepRap"}


# ------------------------------------------------------------------------------------------------
# G-code writer
# ------------------------------------------------------------------------------------------------

class _Writer:
    """Accumulates G-code lines and the machine state (position, retraction, feature type)."""

    def __init__(self, printer, material, r, fil_area):
        self.out: list[str] = []
        self.x = math.nan
        self.y = math.nan
        self.retracted = False
        self.type = None
        self.r = r
        self.fil_area = fil_area
        self.retract_mm = float(getattr(material, "retract_mm", getattr(printer, "retract_mm", 1.0)))
        rs = float(getattr(material, "retract_speed_mm_s", getattr(printer, "retract_speed_mm_s", 35.0)))
        self.retract_f = min(rs, _axis_limit(printer, "e", rs)) * 60.0
        self.travel_f = min(r.speeds["travel"], _xy_limit(printer, r.speeds["travel"])) * 60.0
        self.retractions = 0

    def set_type(self, name: str) -> None:
        if name != self.type:
            self.out.append(f";TYPE:{name}")
            self.type = name

    def travel(self, x: float, y: float, leaves: bool) -> None:
        if not math.isnan(self.x):
            d = math.hypot(x - self.x, y - self.y)
            if d < 1e-3:
                return
            if leaves and d >= self.r.config.retract_min_travel_mm and not self.retracted and self.retract_mm > 0:
                self.out.append(f"G1 E{-self.retract_mm:.5f} F{self.retract_f:.0f}")
                self.retracted = True
                self.retractions += 1
        self.out.append(f"G0 F{self.travel_f:.0f} X{x:.3f} Y{y:.3f}")
        self.x, self.y = x, y

    def retract(self) -> None:
        """Retract now unless already retracted (object labels start and end retracted)."""
        if not self.retracted and self.retract_mm > 0:
            self.out.append(f"G1 E{-self.retract_mm:.5f} F{self.retract_f:.0f}")
            self.retracted = True
            self.retractions += 1

    def unretract(self) -> None:
        if self.retracted:
            self.out.append(f"G1 E{self.retract_mm:.5f} F{self.retract_f:.0f}")
            self.retracted = False

    def extrude(self, pts: np.ndarray, e_per_mm: float, feed_mm_s: float) -> None:
        """Extrude along ``pts`` (k, 2), already travelled to ``pts[0]``."""
        d = np.diff(pts, axis=0)
        seg = np.hypot(d[:, 0], d[:, 1])
        keep = seg > 1e-4
        if not keep.any():
            return
        self.unretract()
        p = pts[1:][keep]
        e = seg[keep] * e_per_mm
        xs = p[:, 0].tolist()
        ys = p[:, 1].tolist()
        es = e.tolist()
        first = f"G1 F{feed_mm_s * 60.0:.0f} X{xs[0]:.3f} Y{ys[0]:.3f} E{es[0]:.5f}"
        self.out.append(first)
        if len(xs) > 1:
            self.out.append("\n".join(map("G1 X{:.3f} Y{:.3f} E{:.5f}".format, xs[1:], ys[1:], es[1:])))
        self.x, self.y = xs[-1], ys[-1]


def _xy_limit(printer, v: float) -> float:
    feed = getattr(printer, "max_feedrate_mm_s", None)
    if isinstance(feed, dict) and "x" in feed and "y" in feed:
        return min(v, float(feed["x"]), float(feed["y"]))
    return v


def _axis_limit(printer, axis: str, v: float) -> float:
    feed = getattr(printer, "max_feedrate_mm_s", None)
    if isinstance(feed, dict) and axis in feed:
        return min(v, float(feed[axis]))
    return v


def _rotate_to_nearest(ring: np.ndarray, x: float, y: float) -> np.ndarray:
    """Closed ring (first point repeated) restarted at its vertex nearest to ``(x, y)``."""
    if math.isnan(x):
        return ring
    body = ring[:-1]
    i = int(np.argmin((body[:, 0] - x) ** 2 + (body[:, 1] - y) ** 2))
    if i == 0:
        return ring
    return np.concatenate([body[i:], body[:i + 1]])


def _island_paths(island, x: float, y: float) -> list[tuple[str, np.ndarray]]:
    """Print order inside one island: inner walls (innermost first), outer wall, skin, infill.
    Open lines are ordered greedily by nearest neighbour and may be reversed."""
    paths: list[tuple[str, np.ndarray]] = []
    for k in range(len(island.walls) - 1, -1, -1):
        kind = "WALL-OUTER" if k == 0 else "WALL-INNER"
        rings = list(island.walls[k])
        while rings:
            if math.isnan(x):
                j = 0
            else:
                dist = [float(np.min((r[:, 0] - x) ** 2 + (r[:, 1] - y) ** 2)) for r in rings]
                j = int(np.argmin(dist))
            ring = _rotate_to_nearest(rings.pop(j), x, y)
            paths.append((kind, ring))
            x, y = float(ring[-1, 0]), float(ring[-1, 1])
    for kind, lines in (("SKIN", island.skin), ("FILL", island.infill)):
        if not lines:
            continue
        ordered = _order_lines(lines, x, y)
        paths.extend((kind, p) for p in ordered)
        x, y = float(ordered[-1][-1, 0]), float(ordered[-1][-1, 1])
    return paths


def _order_lines(lines: list, x: float, y: float) -> list:
    ends = np.array([[p[0, 0], p[0, 1], p[-1, 0], p[-1, 1]] for p in lines], dtype=np.float64)
    order, flip = kslice.order_segments(ends, 0.0 if math.isnan(x) else x, 0.0 if math.isnan(y) else y)
    return [lines[i][::-1] if f else lines[i] for i, f in zip(order.tolist(), flip.tolist())]


def _ring_arrays(rings: list) -> tuple[np.ndarray, np.ndarray]:
    if not rings:
        return np.zeros((0, 2)), np.zeros(1, np.int64)
    pts = np.concatenate([r[:-1] for r in rings])
    offs = np.concatenate([[0], np.cumsum([r.shape[0] - 1 for r in rings])]).astype(np.int64)
    return np.ascontiguousarray(pts, dtype=np.float64), offs


def _emit_group(wr: _Writer, paths: list[tuple[str, np.ndarray]], outline: list | None,
                epm: float, speeds: dict) -> None:
    """Travel + extrude a sequence of paths of one island (or the supports / skirt)."""
    if not paths:
        return
    # which travels between consecutive paths leave the island? (one kernel call per island)
    leaves = np.ones(len(paths), dtype=bool)
    if outline and len(paths) > 1:
        pts, offs = _ring_arrays(outline)
        seg = np.array([[paths[i - 1][1][-1, 0], paths[i - 1][1][-1, 1], paths[i][1][0, 0], paths[i][1][0, 1]]
                        for i in range(1, len(paths))], dtype=np.float64)
        leaves[1:] = kslice.segments_cross_polygon(seg, pts, offs)
    for (kind, p), lv in zip(paths, leaves):
        wr.travel(float(p[0, 0]), float(p[0, 1]), bool(lv))
        wr.set_type(kind)
        wr.extrude(p, epm, speeds[kind])


def _emit_support(wr: _Writer, lay, epm: float, speeds: dict) -> None:
    """The support polylines of a layer: in the slicer's order when it gave one (travels that stay
    inside the support do not retract, as in PrusaSlicer), walked from whichever end of the
    sequence is nearer; else ordered here by nearest neighbour."""
    lines = list(lay.support)
    inside = list(getattr(lay, "support_inside", []) or [])
    if len(inside) != len(lines):
        lines = _order_lines(lines, wr.x, wr.y)
        _emit_group(wr, [("SUPPORT", p) for p in lines], None, epm, speeds)
        return
    if not math.isnan(wr.x):
        d_first = (lines[0][0, 0] - wr.x) ** 2 + (lines[0][0, 1] - wr.y) ** 2
        d_last = (lines[-1][-1, 0] - wr.x) ** 2 + (lines[-1][-1, 1] - wr.y) ** 2
        if d_last < d_first:  # backwards: the travel into line i is the one that left it before
            lines = [p[::-1] for p in lines[::-1]]
            inside = [False] + inside[:0:-1]
    for i, (p, ins) in enumerate(zip(lines, inside)):
        wr.travel(float(p[0, 0]), float(p[0, 1]), not (i > 0 and ins))
        wr.set_type("SUPPORT")
        wr.extrude(p, epm, speeds["SUPPORT"])


def _skirt_rings(models: list[SlicedModel], r, printer) -> list:
    cfg = r.config
    if cfg.skirt_loops <= 0:
        return []
    firsts = []
    for m in models:
        if not len(m.regions):
            continue
        firsts.append(m.regions[0])
        if m.support_footprint is not None and not m.support_footprint.is_empty:
            firsts.append(m.support_footprint)
        if m.brim:
            firsts.append(shapely.Polygon(max(m.brim, key=lambda a: shapely.area(shapely.Polygon(a)))))
    if not firsts:
        return []
    base = shapely.union_all(firsts)
    w, s = r.line_width, r.spacing
    dist = cfg.skirt_distance_mm + 0.5 * w + s * np.arange(cfg.skirt_loops)
    geoms = shapely.buffer(np.array([base] * cfg.skirt_loops, dtype=object), dist)
    rings = []
    for g in geoms:
        for part in shapely.get_parts(g):
            if part.geom_type == "Polygon":
                rings.append(np.asarray(part.exterior.coords))
    bounds = getattr(printer, "bed_bounds_mm", None)
    if bounds and rings:
        allp = np.concatenate(rings)
        x0, x1, y0, y1 = bounds
        if allp[:, 0].min() < x0 or allp[:, 0].max() > x1 or allp[:, 1].min() < y0 or allp[:, 1].max() > y1:
            log.warning("skirt %.1f mm around the parts would leave the bed; no skirt printed",
                        cfg.skirt_distance_mm)
            return []
    # outermost first, so the innermost loop ends next to the part
    return rings[::-1]


def to_gcode(sliced: "SlicedModel | list[SlicedModel]", printer, material, config: SliceConfig | None = None,
             header_info: dict | None = None, *, estimate_fn=None, on_layer=None) -> str:
    """G-code for one plate of sliced parts.

    Parameters
    ----------
    sliced : SlicedModel or list of SlicedModel
        The parts on this plate, already in printer coordinates and sliced with ``config``.
    printer : printpipe.slicing.printers.Printer
    material : printpipe.slicing.printers.Material
    config : SliceConfig, optional
        The config the parts were sliced with (speeds, skirt, retraction).
    header_info : dict, optional
        Extra ``;key: value`` header comments. Must not hold patient identifiers.
    estimate_fn : callable, optional
        ``estimate_fn(text, printer) -> dict(time_s, filament_mm, ...)``; default
        :func:`printpipe.slicing.estimate.estimate` (acceleration-aware). Its ``layer_start_s``
        (clock at each ``;LAYER:`` mark) makes the ``M73`` figures; without it the default
        estimate is run for them.
    on_layer : callable, optional
        ``on_layer(fraction)`` while the layers are written (about every 2 %), for progress bars.

    Returns
    -------
    str
        The whole file (header, start G-code, layers, end G-code).

    Notes
    -----
    Per layer: skirt and brims (first layer only), then each part in turn: supports, then its
    islands in nearest-neighbour order, each island walls inside-out (outer wall last), skin,
    infill. Extrusion speeds are capped by the material's maximum volumetric flow
    (``speed <= max_volumetric / (h * spacing)``) and by the printer's X/Y feedrate limits.
    The extrusion per mm of path is ``h * spacing_h / (pi * d^2 / 4)`` where
    ``h * spacing_h = (w - h) * h + pi * (h / 2) ** 2`` (rounded-rectangle cross-section).
    """
    config = config or SliceConfig()
    models = [sliced] if isinstance(sliced, SlicedModel) else list(sliced)
    if not models:
        raise InputError("to_gcode needs at least one sliced part; got an empty list")
    r = config.resolved(printer, material)
    d = float(getattr(printer, "filament_diameter_mm", 1.75))
    fil_area = math.pi * d * d / 4.0
    w = r.line_width
    wr = _Writer(printer, material, r, fil_area)
    n_layers = max(m.layer_count for m in models)
    max_vol = float(getattr(material, "max_volumetric_mm3_s", 0.0) or 0.0)
    fan = float(getattr(material, "fan_percent", 100.0))
    fan0 = float(getattr(material, "first_layer_fan_percent", 0.0))
    hot = getattr(material, "hotend_c", None)
    hot0 = getattr(material, "first_layer_hotend_c", hot)
    bed = getattr(material, "bed_c", None)
    bed0 = getattr(material, "first_layer_bed_c", bed)
    z_f = _axis_limit(printer, "z", float(getattr(printer, "z_speed_mm_s", 5.0))) * 60.0

    out = wr.out
    out.append("G90 ; absolute XYZ")
    out.append("M83 ; relative extrusion")
    out.append("G92 E0")
    names = _object_names(models)
    if config.progress_gcode:
        out.append(_m117(_plate_message(header_info, names)))
    if config.label_objects:
        out.append(f"M486 T{len(models)} ; parts that can be cancelled one by one")
    skirt = _skirt_rings(models, r, printer)
    top_z = 0.0
    layer_pos: list[int] = []  # index in `out` right after each ;LAYER: line (for M73)
    step = max(1, n_layers // 50)
    for k in range(n_layers):
        if on_layer is not None and k % step == 0:
            on_layer(k / n_layers)
        lay_models = [m for m in models if k < m.layer_count]
        layer0 = lay_models[0].layers[k]
        h = layer0.height_mm
        z = layer0.z_mm
        top_z = z
        area = (w - h) * h + math.pi * (h / 2.0) ** 2
        epm = area / fil_area
        speeds = _feature_speeds(r, printer, k == 0, area, max_vol)
        out.append(f";LAYER:{k}")
        layer_pos.append(len(out))
        if k == 0:
            out.append(f"M106 S{round(255 * fan0 / 100)}" if fan0 > 0 else "M107")
        elif k == 1:
            if fan > 0:
                out.append(f"M106 S{round(255 * fan / 100)}")
            if hot is not None and hot0 is not None and hot != hot0:
                out.append(f"M104 S{hot:g}")
            if bed is not None and bed0 is not None and bed != bed0:
                out.append(f"M140 S{bed:g}")
        # retract before the layer change when the next start is far away
        out.append(f"G0 F{z_f:.0f} Z{z:.3f}")
        wr.type = None
        if k == 0:
            rings = list(skirt)
            for m in models:
                rings.extend(m.brim)
            sk = []
            px, py = wr.x, wr.y
            for ring in rings:
                ring = _rotate_to_nearest(ring, px, py)
                sk.append(("SKIRT", ring))
                px, py = float(ring[-1, 0]), float(ring[-1, 1])
            _emit_group(wr, sk, None, epm, speeds)
        for m in lay_models:
            lay = m.layers[k]
            label = config.label_objects and bool(lay.islands or lay.support)
            if label:
                oid = models.index(m)
                wr.retract()
                out.append(f"; printing object {names[oid]}")
                out.append(f"M486 S{oid}")
            if lay.support:
                _emit_support(wr, lay, epm, speeds)
            remaining = list(lay.islands)
            while remaining:
                if math.isnan(wr.x):
                    j = 0
                else:
                    dist = [float(np.min((isl.outline[0][:, 0] - wr.x) ** 2 + (isl.outline[0][:, 1] - wr.y) ** 2))
                            if isl.outline else math.inf for isl in remaining]
                    j = int(np.argmin(dist))
                isl = remaining.pop(j)
                paths = _island_paths(isl, wr.x, wr.y)
                if paths:
                    # arriving from elsewhere always counts as leaving
                    wr.travel(float(paths[0][1][0, 0]), float(paths[0][1][0, 1]), True)
                _emit_group(wr, paths, isl.outline, epm, speeds)
            if label:
                wr.retract()
                out.append("M486 S-1")
                out.append(f"; stop printing object {names[oid]}")
    if config.progress_gcode:
        out.append(_m117("Print done"))
    slice_values = {"layer_height_mm": r.layer_height, "first_layer_height_mm": r.first_layer_height,
                    "layer_count": n_layers}
    body_end = (printer.render_end(material, max_layer_z_mm=round(top_z, 3), **slice_values)
                if hasattr(printer, "render_end") else "")
    start = printer.render_start(material, relative_e=True, **slice_values) if hasattr(printer, "render_start") else ""
    start = _ensure_heating(start, material)
    body = "\n".join(out) + "\n"
    text_wo_header = start + body + body_end
    default_estimate = estimate_fn is None
    if estimate_fn is None:
        from printpipe.slicing.estimate import estimate as estimate_fn
    est = estimate_fn(text_wo_header, printer)
    time_s = float(est["time_s"])
    if config.progress_gcode:
        starts = est.get("layer_start_s")
        if starts is None and not default_estimate:
            from printpipe.slicing.estimate import estimate as _estimate

            starts = _estimate(text_wo_header, printer)["layer_start_s"]
        marks_before = start.count("\n;LAYER:") + start.startswith(";LAYER:")
        starts = list(starts or [])[marks_before:marks_before + n_layers]
        if len(starts) == n_layers:
            body = _with_m73(out, layer_pos, starts, time_s)
            text_wo_header = _m73(0.0, time_s) + "\n" + start + body + body_end
        else:
            log.warning("no M73 progress lines: the estimate found %d layer marks, expected %d",
                        len(starts), n_layers)
    if on_layer is not None:
        on_layer(1.0)
    fil_mm = float(est.get("filament_mm", 0.0))
    header = [
        f";FLAVOR:{_FLAVOR_HEADER.get(str(getattr(printer, 'flavor', 'marlin')).lower(), 'Marlin')}",
        f";TIME:{int(round(time_s))}",
        f";Filament used: {fil_mm / 1000.0:.5f}m",
        f";LAYER_COUNT:{n_layers}",
        ";Generated with printpipe",
        f";printer: {getattr(printer, 'name', '?')}",
        f";material: {getattr(material, 'name', '?')}",
        f";layer_height_mm: {r.layer_height:g}",
        f";first_layer_height_mm: {r.first_layer_height:g}",
        f";line_width_mm: {r.line_width:g}",
        f";walls: {config.walls}",
        f";infill: {config.infill_density * 100:g}% {config.infill_pattern}",
        f";support: {'on' if config.support else 'off'}",
        f";e_mode: relative (M83); E = length * ((w - h) * h + pi * (h / 2)^2) / filament area",
        f";parts: {', '.join(m.name for m in models)}",
        f";retractions: {wr.retractions}",
    ]
    if "filament_g" in est:
        header.insert(3, f";Filament weight: {float(est['filament_g']):.2f}g")
    for key, val in (header_info or {}).items():
        header.append(f";{key}: {val}")
    thumbs = ""
    if config.thumbnails and getattr(printer, "thumbnails", ()):
        from printpipe.slicing.thumbnail import thumbnail_blocks

        thumbs = thumbnail_blocks(models, printer.thumbnails)
    return "\n".join(header) + "\n" + thumbs + text_wo_header


def _m73(elapsed_s: float, total_s: float) -> str:
    """``M73 P<percent> R<minutes>``: percent rounded down (100 only at the end), minutes up."""
    if total_s <= 0:
        return "M73 P100 R0"
    elapsed_s = min(max(elapsed_s, 0.0), total_s)
    pct = int(math.floor(100.0 * elapsed_s / total_s + 1e-9))
    if elapsed_s < total_s:
        pct = min(pct, 99)
    return f"M73 P{pct} R{int(math.ceil((total_s - elapsed_s) / 60.0 - 1e-9))}"


def _with_m73(out: list, layer_pos: list, starts: list, total_s: float) -> str:
    """The body with an M73 line after every ;LAYER: line and ``M73 P100 R0`` at its end."""
    pieces = []
    prev = 0
    for pos, t in zip(layer_pos, starts):
        pieces.extend(out[prev:pos])
        pieces.append(_m73(float(t), total_s))
        prev = pos
    pieces.extend(out[prev:])
    pieces.append("M73 P100 R0")
    return "\n".join(pieces) + "\n"


def _ascii(text: str, limit: int = 60) -> str:
    """Printable ASCII for a printer screen: accents dropped, ``;`` ``(`` ``)`` and control
    characters replaced (they would start a comment on the printer), cut to ``limit``."""
    flat = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    flat = re.sub(r"[^A-Za-z0-9 _.,:/+#=-]", "_", flat)
    flat = re.sub(r"\s+", " ", flat).strip()
    return flat[:limit].rstrip()


def _object_names(models: list) -> list[str]:
    """ASCII object names, unique (``part``, ``part_2``) and never empty."""
    names: list[str] = []
    for i, m in enumerate(models):
        base = _ascii(getattr(m, "name", ""), 40).replace(" ", "_") or f"part_{i + 1}"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _plate_message(header_info: dict | None, names: list[str]) -> str:
    plate = str((header_info or {}).get("plate", ""))
    m = re.fullmatch(r"\s*(\d+)\s+of\s+(\d+)\s*", plate)
    head = f"Plate {m.group(1)}/{m.group(2)}" if m else "Printing"
    return f"{head}: {', '.join(names)}"


def _m117(message: str) -> str:
    return f"M117 {_ascii(message)}"


def _feature_speeds(r, printer, first_layer: bool, area: float, max_vol: float) -> dict:
    sp = r.speeds
    speeds = {
        "WALL-OUTER": sp["outer_wall"],
        "WALL-INNER": sp["perimeter"],
        "SKIN": sp["skin"],
        "FILL": sp["infill"],
        "SUPPORT": sp["support"],
        "SKIRT": sp["first_layer"],
    }
    if first_layer:
        speeds = {k: min(v, sp["first_layer"]) for k, v in speeds.items()}
    cap = _xy_limit(printer, math.inf)
    if max_vol > 0:
        cap = min(cap, max_vol / area)
    return {k: min(v, cap) for k, v in speeds.items()}


def _ensure_heating(start: str, material) -> str:
    """Make sure the nozzle and bed heat *with waits* before the first extrusion."""
    up = start.upper()
    pre = []
    hot0 = getattr(material, "first_layer_hotend_c", getattr(material, "hotend_c", None))
    bed0 = getattr(material, "first_layer_bed_c", getattr(material, "bed_c", None))
    if bed0 is not None and bed0 > 0 and "M190" not in up:
        pre.append(f"M190 S{bed0:g} ; wait for the bed")
    if hot0 is not None and "M109" not in up:
        pre.append(f"M109 S{hot0:g} ; wait for the nozzle")
    if not pre:
        return start
    # after homing if the start code homes, else first
    lines = start.splitlines()
    idx = next((i + 1 for i, ln in enumerate(lines) if ln.strip().upper().startswith("G28")), 0)
    return "\n".join(lines[:idx] + pre + lines[idx:]) + "\n"


# ------------------------------------------------------------------------------------------------
# independent check: extrusions inside the mesh's cross-sections
# ------------------------------------------------------------------------------------------------

def _extrusion_moves(gcode_text: str):
    """Extruding moves of a G-code file: ``(x0, y0, x1, y1, z, type_name_per_move)``."""
    from printpipe.slicing.validate import parse_gcode

    pg = parse_gcode(gcode_text)
    n = pg.x.shape[0]
    if n == 0:
        return np.zeros((0, 4)), np.zeros(0), np.array([], dtype=object)
    sx = np.empty(n)
    sy = np.empty(n)
    sx[0], sy[0] = pg.start_xyz[0], pg.start_xyz[1]
    sx[1:], sy[1:] = pg.x[:-1], pg.y[:-1]
    moved = np.hypot(pg.x - sx, pg.y - sy) > 1e-6
    ext = (pg.de > 0) & moved & np.isfinite(sx) & np.isfinite(sy)
    names = np.array(list(pg.types) + ["(none)"], dtype=object)
    tid = np.where(pg.type_id >= 0, pg.type_id, len(pg.types))
    seg = np.stack([sx, sy, pg.x, pg.y], axis=1)[ext]
    return seg, pg.z[ext], names[tid[ext]]


def _sections(mesh, z_mid: np.ndarray) -> list:
    """Cross-sections of ``mesh`` at ``z_mid`` as shapely geometries, computed with trimesh's own
    plane intersection and loop assembly (independent of printpipe's slicer)."""
    z0 = float(mesh.bounds[0, 2])
    paths = mesh.section_multiplane(plane_origin=[0.0, 0.0, z0], plane_normal=[0.0, 0.0, 1.0],
                                    heights=np.asarray(z_mid, dtype=np.float64) - z0)
    out = []
    for path in paths:
        if path is None:
            out.append(shapely.Polygon())
            continue
        T = np.asarray(path.metadata["to_3D"], dtype=np.float64)
        polys = []
        for poly in path.polygons_full:
            if poly is None or poly.is_empty:
                continue
            polys.append(shapely.transform(poly, lambda xy, T=T: (np.c_[xy, np.zeros(len(xy)), np.ones(len(xy))] @ T.T)[:, :2]))
        out.append(shapely.union_all(polys) if polys else shapely.Polygon())
    return out


def check_inside_outline(gcode_text: str, mesh, line_width: float, *, tol_mm: float = 0.05,
                         model_types: Iterable[str] = MODEL_TYPES,
                         outer_types: Iterable[str] = OUTER_WALL_TYPES,
                         max_layers: int | None = 60) -> dict:
    """Check that every model extrusion lies inside the mesh's cross-section, and that the outer
    wall traces the outline.

    Works on any slicer's G-code that labels features with ``;TYPE:`` (printpipe, PrusaSlicer,
    Cura); the mesh must be in the G-code's coordinates. Cross-sections are cut with trimesh (not
    printpipe's slicer) at each layer's mid-height, the layer height being the step between
    consecutive extrusion heights.

    Parameters
    ----------
    gcode_text : str
    mesh : trimesh.Trimesh
        The printed part(s), in printer coordinates (mm).
    line_width : float
        Extrusion width in mm; an extrusion is inside when it stays within ``line_width / 2 +
        tol_mm`` of the cross-section (its centreline may reach the outline minus half a width).
    tol_mm : float
        Allowance for the slicers' outline simplification and G-code rounding (0.05 mm).
    model_types, outer_types : iterable of str
        ``;TYPE:`` names counted as model extrusions and as outer walls.
    max_layers : int or None
        Check this many layers, evenly spread from the first to the last (60; cutting the
        cross-sections is most of the cost: about 0.1 s a layer for a 360 k facet pelvis);
        ``None`` checks every layer.

    Returns
    -------
    dict
        ``moves`` (model extrusions checked), ``outside`` (count), ``outside_fraction``,
        ``max_outside_mm`` (largest distance of an offending move beyond the allowance),
        ``layers`` (checked), ``layers_total``, ``outer_wall_moves`` (in the checked layers), ``outer_wall_offset_median_mm`` and
        ``outer_wall_offset_p95_mm`` (distance of outer-wall vertices from the outline, expected
        ``line_width / 2``), ``outline_traced_fraction`` (share of the outline length within
        ``line_width / 2 + tol_mm`` of an outer wall), ``types`` (moves per type).
    """
    seg, z, names = _extrusion_moves(gcode_text)
    model_types = set(model_types)
    outer_types = set(outer_types)
    is_model = np.array([n in model_types for n in names], dtype=bool)
    is_outer = np.array([n in outer_types for n in names], dtype=bool)
    types, counts = np.unique(names.astype(str), return_counts=True) if names.size else ([], [])
    res: dict[str, Any] = {"moves": int(is_model.sum()), "outside": 0, "outside_fraction": 0.0,
                           "max_outside_mm": 0.0, "layers": 0, "outer_wall_moves": int(is_outer.sum()),
                           "outer_wall_offset_median_mm": math.nan, "outer_wall_offset_p95_mm": math.nan,
                           "outline_traced_fraction": math.nan,
                           "types": {str(t): int(c) for t, c in zip(types, counts)}}
    if not is_model.any():
        return res
    seg, z, is_outer = seg[is_model], z[is_model], is_outer[is_model]
    zr = np.round(z, 3)
    levels = np.unique(zr)
    heights = np.diff(np.concatenate([[0.0], levels]))
    mids = levels - 0.5 * heights
    res["layers_total"] = int(levels.size)
    if max_layers is not None and levels.size > max(1, int(max_layers)):
        pick = np.unique(np.linspace(0, levels.size - 1, max(1, int(max_layers))).round().astype(np.int64))
        levels, mids = levels[pick], mids[pick]
        keep = np.isin(zr, levels)
        seg, zr, is_outer = seg[keep], zr[keep], is_outer[keep]
        res["moves"] = int(keep.sum())
        res["outer_wall_moves"] = int(is_outer.sum())
    sections = _sections(mesh, mids)
    allow = 0.5 * line_width + tol_mm
    n_out = 0
    worst = 0.0
    offsets = []
    traced_len = 0.0
    total_len = 0.0
    for lv, sec in zip(levels, sections):
        sel = zr == lv
        lines = shapely.linestrings(seg[sel].reshape(-1, 2, 2))
        zone = shapely.buffer(sec, allow) if not sec.is_empty else shapely.Polygon()
        shapely.prepare(zone)
        inside = shapely.covered_by(lines, zone)
        bad = ~inside
        if bad.any():
            n_out += int(bad.sum())
            worst = max(worst, float(np.max(shapely.distance(lines[bad], zone))) if not zone.is_empty else math.inf)
        osel = is_outer[sel]
        if osel.any() and not sec.is_empty:
            boundary = sec.boundary
            pts = shapely.points(seg[sel][osel][:, 2:4])
            offsets.append(shapely.distance(pts, boundary))
            walls = shapely.multilinestrings(lines[osel])
            samples = shapely.line_interpolate_point(boundary, np.arange(0.0, boundary.length, 0.5))
            # a wall traces the outline where its centreline is within a line width of it (at a
            # sharp corner the centreline is w/2 * sqrt(2) away)
            near = shapely.distance(samples, walls) <= line_width
            traced_len += float(near.sum())
            total_len += float(near.size)
    res["outside"] = n_out
    res["outside_fraction"] = n_out / max(1, res["moves"])
    res["max_outside_mm"] = worst
    res["layers"] = int(levels.size)
    if offsets:
        off = np.concatenate(offsets)
        res["outer_wall_offset_median_mm"] = float(np.median(off))
        res["outer_wall_offset_p95_mm"] = float(np.percentile(off, 95))
    if total_len:
        res["outline_traced_fraction"] = traced_len / total_len
    return res


def check_paths_inside(gcode_text: str, mesh, line_width: float = 0.45, **kwargs) -> dict:
    """Alias of :func:`check_inside_outline` (the name used in the issue)."""
    return check_inside_outline(gcode_text, mesh, line_width, **kwargs)


# ------------------------------------------------------------------------------------------------
# picture
# ------------------------------------------------------------------------------------------------

_COLORS = {"WALL-OUTER": "#d62728", "WALL-INNER": "#ff7f0e", "SKIN": "#1f77b4", "FILL": "#2ca02c",
           "SUPPORT": "#9467bd", "SKIRT": "#7f7f7f"}
# legend names of the features in the toolpath picture (translated where drawn; the G-code keeps ;TYPE:)
_FEATURE_NAMES = {"WALL-OUTER": N_("outer wall"), "WALL-INNER": N_("inner wall"), "SKIN": N_("top/bottom skin"),
                  "FILL": N_("infill"), "SUPPORT": N_("support"), "SKIRT": N_("skirt")}


def _moves_from_sliced(models: list[SlicedModel]):
    segs, zs, names = [], [], []
    for m in models:
        for lay in m.layers:
            groups = [("SUPPORT", lay.support)]
            for isl in lay.islands:
                groups += [("WALL-OUTER", isl.walls[0] if isl.walls else []),
                           ("WALL-INNER", [r for wk in isl.walls[1:] for r in wk]),
                           ("SKIN", isl.skin), ("FILL", isl.infill)]
            if lay.index == 0:
                groups.append(("SKIRT", m.brim))
            for kind, paths in groups:
                for p in paths:
                    s = np.concatenate([p[:-1], p[1:]], axis=1)
                    segs.append(s)
                    zs.append(np.full(len(s), lay.z_mm))
                    names.append(np.full(len(s), kind, dtype=object))
    if not segs:
        return np.zeros((0, 4)), np.zeros(0), np.array([], dtype=object)
    return np.concatenate(segs), np.concatenate(zs), np.concatenate(names)


def render_toolpaths(gcode_or_sliced, png_path, *, layers: int = 3, max_3d_segments: int = 150_000,
                     lang: str | None = None) -> Path:
    """Draw a few layers and a 3D view of the toolpaths into a PNG (matplotlib, Agg).

    Parameters
    ----------
    gcode_or_sliced : str, path-like, SlicedModel or list of SlicedModel
        G-code text or a G-code file (features from ``;TYPE:``), or sliced parts.
    png_path : path
        Output file, written atomically.
    layers : int
        Number of layer plots (first layer, then evenly through the part).
    max_3d_segments : int
        The 3D view draws every n-th layer so that at most this many segments are drawn.
    lang : {"zh", "en"}, optional
        Language of the titles and legend (default :func:`printpipe.i18n.current_lang`); Chinese
        needs a CJK font (``fonts-noto-cjk``), else the picture stays in English.

    Returns
    -------
    Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    from printpipe._atomic import atomic_path
    from printpipe._fonts import mpl_families
    from printpipe.i18n import current_lang, get_translator

    lang = lang or current_lang()
    families = mpl_families(lang)
    _t = get_translator(lang if families or lang == "en" else "en")  # no CJK font: English, not tofu

    if isinstance(gcode_or_sliced, os.PathLike):  # a G-code file
        gcode_or_sliced = Path(gcode_or_sliced).read_text(encoding="utf-8", errors="replace")
    if isinstance(gcode_or_sliced, str):
        seg, z, names = _extrusion_moves(gcode_or_sliced)
        known = np.isin(names.astype(str), list(_COLORS))  # drop purge lines of the start G-code
        seg, z, names = seg[known], z[known], names[known]
    else:
        models = [gcode_or_sliced] if isinstance(gcode_or_sliced, SlicedModel) else list(gcode_or_sliced)
        seg, z, names = _moves_from_sliced(models)
    if seg.shape[0] == 0:
        raise InputError("nothing to draw: the G-code / sliced model has no extrusion moves")
    zr = np.round(z, 3)
    levels = np.unique(zr)
    pick = np.unique(np.linspace(0, levels.size - 1, layers + 2).round().astype(int)[:-1])[:layers]
    if levels.size > 2 and pick.size < layers:
        pick = np.unique(np.r_[pick, levels.size // 2])
    fig = Figure(figsize=(4.2 * (len(pick) + 1), 4.6), dpi=110)
    FigureCanvasAgg(fig)
    colors = np.array([_COLORS.get(str(n), "#444444") for n in names], dtype=object)
    for i, li in enumerate(pick):
        ax = fig.add_subplot(1, len(pick) + 1, i + 1)
        sel = zr == levels[li]
        ax.add_collection(LineCollection(seg[sel].reshape(-1, 2, 2), colors=list(colors[sel]), linewidths=0.6))
        ax.autoscale()
        ax.set_aspect("equal")
        ax.set_title(_t("layer {index} (z = {z} mm)").format(index=li, z=f"{levels[li]:.2f}"), fontsize=9,
                     fontfamily=families)
        ax.tick_params(labelsize=7)
    ax3 = fig.add_subplot(1, len(pick) + 1, len(pick) + 1, projection="3d")
    step = max(1, int(math.ceil(seg.shape[0] / max_3d_segments)))
    keep_levels = levels[::step]
    sel = np.isin(zr, keep_levels) & (names != "SKIRT")
    s3 = np.stack([np.c_[seg[sel, 0:2], z[sel]], np.c_[seg[sel, 2:4], z[sel]]], axis=1)
    ax3.add_collection3d(Line3DCollection(s3, colors=list(colors[sel]), linewidths=0.3))
    lo = s3.reshape(-1, 3).min(axis=0)
    hi = s3.reshape(-1, 3).max(axis=0)
    span = float((hi - lo).max()) / 2 or 1.0
    mid = (lo + hi) / 2
    ax3.set_xlim(mid[0] - span, mid[0] + span)
    ax3.set_ylim(mid[1] - span, mid[1] + span)
    ax3.set_zlim(max(0.0, mid[2] - span), mid[2] + span)
    ax3.set_title(_t("3D toolpaths (every {step}. layer)").format(step=step) if step > 1 else _t("3D toolpaths"),
                  fontsize=9, fontfamily=families)
    ax3.tick_params(labelsize=6)
    handles = [matplotlib.lines.Line2D([], [], color=c, label=_t(_FEATURE_NAMES.get(k, k)) if families else k)
               for k, c in _COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
               prop={"size": 8, **({"family": families} if families else {})})
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    png_path = Path(png_path)
    with atomic_path(png_path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return png_path
