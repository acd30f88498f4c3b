"""G-code safety check: every move on the bed and under the gantry, sane temperatures, heaters off.

:func:`validate_gcode` is run on every file printpipe writes, before it is renamed into place, and
by the tests. It reads the G-code the way Marlin does -- G90/G91 and M82/M83 modes, G92 offsets,
G2/G3 arcs, homing -- and raises :class:`~printpipe.errors.PrinterError` naming the line, the
command and the limit at the first unsafe instruction. The same parser (:func:`parse_gcode`) feeds
the print-time estimate in :mod:`printpipe.slicing.estimate`.

Checks
------
- every move (including arc bulges) within the printer's travel area -- the bed, plus the
  profile's ``min_x_mm``/``min_y_mm`` allowance for purge lines -- and ``0 <= z <= max_z_mm``;
- no move before homing (``G28``) and no relative move from an unknown position;
- nozzle and bed temperatures within the printer's limits (and the material's range when given);
- no extrusion while the nozzle is set below the printer's cold-extrusion limit;
- the extrusion mode declared (``M82``/``M83``) before the first extrusion;
- heaters switched off (``M104 S0``, ``M140 S0``) at the end of the file;
- what the printer shows: ``M73`` progress within 0..100 %, never falling, with remaining
  minutes never rising; ``M117`` messages in printable ASCII; every thumbnail block closed, its
  base64 length equal to its header's, decoding to a PNG/JPEG of the declared size;
- object labels (``M486``): every ``M486 S<n>`` closed by ``M486 S-1`` before another starts
  and before the end, indices below ``M486 T``, each block ending at the height and retraction
  state it started in (a cancelled part is skipped by the firmware, so anything it changes
  would be lost), the ``; printing object`` / ``; stop printing object`` comments paired;
- Prusa firmware checks (``M862.3 P "<model>"``, ``M862.1 P<nozzle>``) naming the profile's
  printer model and nozzle.

Coordinates are compared with a tolerance of 1e-3 mm, the resolution of the G-code numbers.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from printpipe.errors import PrinterError

log = logging.getLogger(__name__)

__all__ = ["validate_gcode", "parse_gcode", "ParsedGcode"]

_EPS_MM = 1e-3  # G-code numbers carry 3 decimals
_MARLIN_LIKE = ("marlin", "marlin2", "prusa")
_EV_LETTERS = "SPRTXYZEJIF"  # parameters kept for events (temperatures, limits, arcs, dwell)


@dataclass
class ParsedGcode:
    """Moves and machine events of one G-code file.

    Move arrays have one entry per motion command (``G0``-``G3``) that changes any axis; positions
    are physical (G92 offsets removed), in mm; ``start_xyz`` is the position before the first move
    (NaN where unknown).
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    de: np.ndarray            # filament advanced by the move (mm, negative = retraction)
    feed: np.ndarray          # commanded feedrate (mm/s)
    line: np.ndarray          # 1-based line number of the move
    type_id: np.ndarray       # index into ``types`` (last ;TYPE: comment), -1 before any
    arc_len: np.ndarray       # path length of arcs (mm), 0 for straight moves
    start_xyz: tuple
    types: list
    events: list              # (move_index, command, params dict, line_number)
    arcs: list                # (move_index, xmin, xmax, ymin, ymax) in physical coordinates
    layer_marks: int = 0
    text: str = field(default="", repr=False)
    e_mode_line: int = 0      # line of the first M82/M83 (0 if none)
    first_home_move: int = -1  # index of the first move after G28 (-1: never homed)
    unknown_move_line: int = 0  # line of a move from an unknown position (0 if none)
    e_mode: str | None = None  # the first declared extrusion mode
    layer_moves: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # index of the first move after each ``;LAYER:`` mark (one entry per mark)

    def line_text(self, number: int) -> str:
        """Text of 1-based line ``number``."""
        lines = self.text.split("\n")
        return lines[number - 1].strip() if 0 < number <= len(lines) else "?"


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------

def validate_gcode(text: str, printer, material=None) -> dict:
    """Check that G-code is safe to run on ``printer``; return statistics.

    Parameters
    ----------
    text : str
        The whole G-code file.
    printer : Printer or str
        The target printer (a :class:`~printpipe.slicing.printers.Printer` or a name for
        :func:`~printpipe.slicing.printers.load_printer`).
    material : Material, optional
        When given, temperatures must also stay within the material's printable range.

    Returns
    -------
    dict
        ``moves``, ``extrusion_moves``, ``bbox_mm`` (``[[xmin, ymin, zmin], [xmax, ymax, zmax]]``
        of all moves), ``extrusion_bbox_mm``, ``max_hotend_c``, ``max_bed_c``, ``layers``
        (``;LAYER:`` markers, else distinct extrusion heights), ``e_mode`` (``"M82"``/``"M83"``),
        ``lines``, ``m73`` (progress lines), ``thumbnails`` (``"WxH/FMT"`` each), ``objects``
        (labelled parts), ``object_blocks``.

    Raises
    ------
    PrinterError
        At the first unsafe instruction, naming the line number, the command and the limit.
    """
    from printpipe.slicing.printers import load_printer

    printer = load_printer(printer)
    pg = parse_gcode(text, flavor=printer.flavor)
    stats = _check(pg, printer, material)
    stats.update(_check_display(pg, printer))
    return stats


def parse_gcode(text: str, *, flavor: str = "marlin") -> ParsedGcode:
    """Parse G-code into move arrays and events (see :class:`ParsedGcode`).

    Parameters
    ----------
    text : str
        The G-code.
    flavor : str
        Firmware dialect. On Marlin-like firmware ``G90``/``G91`` also switch the extruder to
        absolute/relative (``M82``/``M83`` must come after them); on Klipper and RepRapFirmware they
        do not.

    Returns
    -------
    ParsedGcode

    Notes
    -----
    The scanning runs in a compiled kernel over the UTF-8 bytes (a 30 MB file takes well under a
    second); only events (temperatures, fan, limits, arcs, ``;TYPE:`` names) come back to Python.
    Recognised: ``G0``-``G3``, ``G4``, ``G28``, ``G90``/``G91``, ``G92``, ``M82``/``M83`` and every
    ``M`` command as an event; ``;TYPE:`` and ``;LAYER:`` comments; words with or without spaces
    (``G1X10``); ``(...)`` comments.
    """
    buf = np.frombuffer(text.encode("utf-8", "replace"), dtype=np.uint8)
    (mx, my, mz, mde, mf, mline, mtype, ev_mi, ev_line, ev_code, ev_par, ty_mi, ty_start, ty_end,
     info, start, lay_mi) = _scan_kernel(buf, flavor in _MARLIN_LIKE)
    raw = buf.tobytes() if ty_start.size else b""
    types: list = []
    type_index: dict = {}
    occ_to_id = np.empty(ty_start.size, np.int32)
    for k in range(ty_start.size):
        name = raw[ty_start[k]:ty_end[k]].decode("utf-8", "replace").strip()
        if name not in type_index:
            type_index[name] = len(types)
            types.append(name)
        occ_to_id[k] = type_index[name]
    type_id = np.where(mtype >= 0, occ_to_id[np.maximum(mtype, 0)] if occ_to_id.size else -1, -1)
    events = []
    arcs = []
    arc_len = np.zeros(mx.size)
    sx, sy = float(start[0]), float(start[1])
    for k in range(ev_mi.size):
        code = int(ev_code[k])
        letter = chr(code >> 16)
        num = (code & 0xFFFF) / 10.0
        name = f"{letter}{int(num)}" if num.is_integer() else f"{letter}{num:g}"
        vals = ev_par[k]
        params = {_EV_LETTERS[j]: float(vals[j]) for j in range(len(_EV_LETTERS)) if not math.isnan(vals[j])}
        mi = int(ev_mi[k])
        if name in ("G2", "G3"):
            if mi >= mx.size:
                continue
            px, py = (sx, sy) if mi == 0 else (float(mx[mi - 1]), float(my[mi - 1]))
            arc = _arc_extent(px, py, float(mx[mi]), float(my[mi]), params, name == "G2")
            if arc is not None:
                bx0, bx1, by0, by1, length = arc
                pz = float(start[2]) if mi == 0 else float(mz[mi - 1])
                dz = 0.0 if math.isnan(pz) else float(mz[mi]) - pz
                arc_len[mi] = math.hypot(length, dz)
                arcs.append((mi, bx0, bx1, by0, by1))
            continue
        events.append((mi, name, params, int(ev_line[k])))
    return ParsedGcode(
        x=mx, y=my, z=mz, de=mde, feed=mf, line=mline, type_id=type_id.astype(np.int32),
        arc_len=arc_len, start_xyz=(float(start[0]), float(start[1]), float(start[2])),
        types=types, events=events, arcs=arcs, layer_marks=int(info[0]), text=text,
        e_mode_line=int(info[1]), first_home_move=int(info[2]), unknown_move_line=int(info[3]),
        e_mode={0: None, 82: "M82", 83: "M83"}.get(int(info[4])),
        layer_moves=lay_mi,
    )


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def _arc_extent(sx, sy, ex, ey, params, clockwise):
    """Bounding box and length of a G2/G3 arc (XY plane) from (sx, sy) to (ex, ey)."""
    if math.isnan(sx) or math.isnan(sy):
        return None
    if "R" in params and "I" not in params and "J" not in params:
        r = params["R"]
        dx, dy = ex - sx, ey - sy
        d = math.hypot(dx, dy)
        if d == 0 or abs(r) < d / 2:
            return None
        h = math.sqrt(max(r * r - d * d / 4, 0.0))
        mx, my = (sx + ex) / 2, (sy + ey) / 2
        # Marlin: positive R takes the shorter arc; the centre is on the side that gives it
        sign = -1.0 if (clockwise == (r > 0)) else 1.0
        cx, cy = mx + sign * h * (-dy) / d, my + sign * h * dx / d
        r = abs(r)
    else:
        cx, cy = sx + params.get("I", 0.0), sy + params.get("J", 0.0)
        r = math.hypot(sx - cx, sy - cy)
    a0 = math.atan2(sy - cy, sx - cx)
    a1 = math.atan2(ey - cy, ex - cx)
    if clockwise:
        sweep = (a0 - a1) % (2 * math.pi)
    else:
        sweep = (a1 - a0) % (2 * math.pi)
    if sweep < 1e-12:
        sweep = 2 * math.pi  # same start and end: a full circle
    xs = [sx, ex]
    ys = [sy, ey]
    for k in range(4):
        ang = k * math.pi / 2
        rel = (a0 - ang) % (2 * math.pi) if clockwise else (ang - a0) % (2 * math.pi)
        if rel <= sweep:
            xs.append(cx + r * math.cos(ang))
            ys.append(cy + r * math.sin(ang))
    return min(xs), max(xs), min(ys), max(ys), r * sweep


def _fail(pg: ParsedGcode, line: int, what: str) -> PrinterError:
    text = pg.line_text(line)
    return PrinterError(f"unsafe G-code at line {line} (`{text}`): {what}; do not print this "
                        "file - slice the model again for this printer (--printer) and report the "
                        "problem if it persists")


def _check_display(pg: ParsedGcode, printer) -> dict:
    """Checks of what the printer shows and of the object labels (see the module docstring)."""
    from printpipe.slicing.thumbnail import read_thumbnails

    ev = pg.events
    lines_cache: list = []

    def line_of(number: int) -> str:
        if not lines_cache:
            lines_cache.append(pg.text.split("\n"))
        lines = lines_cache[0]
        return lines[number - 1] if 0 < number <= len(lines) else ""

    # M73 progress
    m73 = [(line, p) for _mi, cmd, p, line in ev if cmd == "M73"]
    last_p, last_r = -1.0, math.inf
    for line, p in m73:
        pct, rem = p.get("P"), p.get("R")
        if pct is not None:
            if not 0 <= pct <= 100:
                raise _fail(pg, line, f"progress M73 P{pct:g} is outside 0..100 %")
            if pct < last_p:
                raise _fail(pg, line, f"progress falls from {last_p:g} % to {pct:g} % (M73 must never go back)")
            last_p = pct
        if rem is not None:
            if rem < 0:
                raise _fail(pg, line, f"negative remaining time M73 R{rem:g}")
            if rem > last_r:
                raise _fail(pg, line, f"remaining time rises from {last_r:g} to {rem:g} minutes")
            last_r = rem
    # M117 messages and Prusa firmware checks
    for _mi, cmd, _p, line in ev:
        if cmd == "M117":
            msg = line_of(line).split("M117", 1)[-1].strip()
            if not all(32 <= ord(c) < 127 for c in msg):
                raise _fail(pg, line, "M117 message is not plain ASCII (printer screens show only ASCII)")
        elif cmd == "M862.3" and printer.printer_model:
            m = re.search(r'M862\.3\s+P\s*"?([^";\s]+)', line_of(line))
            if m and m.group(1) != printer.printer_model:
                raise _fail(pg, line, f"printer model check names {m.group(1)!r} but the profile is "
                            f"for the {printer.printer_model!r}")
        elif cmd == "M862.1" and "P" in _p:
            if abs(_p["P"] - printer.nozzle_mm) > 1e-3:
                raise _fail(pg, line, f"nozzle check M862.1 P{_p['P']:g} differs from the profile's "
                            f"{printer.nozzle_mm:g} mm nozzle")
    # object labels
    total = None
    current = None   # (index, line, move index)
    blocks = 0
    seen: set = set()
    n = len(pg.x)
    for mi, cmd, p, line in ev:
        if cmd != "M486":
            continue
        if "T" in p:
            total = int(p["T"])
            continue
        if "S" not in p:
            continue  # M486 C / P / U: cancel commands, not labels
        idx = int(p["S"])
        if idx >= 0:
            if current is not None and current[0] != idx:
                raise _fail(pg, line, f"object {idx} starts while object {current[0]} (line "
                            f"{current[1]}) was not closed with M486 S-1")
            if total is not None and idx >= total:
                raise _fail(pg, line, f"object index {idx} is not below the count M486 T{total}")
            if current is None:
                current = (idx, line, mi)
                seen.add(idx)
        else:
            if current is None:
                raise _fail(pg, line, "M486 S-1 closes an object that was never started")
            _check_block(pg, current, mi, line, n)
            blocks += 1
            current = None
    if current is not None:
        raise _fail(pg, current[1], f"object {current[0]} is never closed with M486 S-1")
    if "; printing object" in pg.text or "; stop printing object" in pg.text:
        open_name = None
        for m in re.finditer(r"^; (printing|stop printing) object (.*?)\s*$", pg.text, re.M):
            number = pg.text.count("\n", 0, m.start()) + 1 if open_name is None and m.group(1) == "stop printing" else 0
            if m.group(1) == "printing":
                if open_name is not None:
                    raise _fail(pg, pg.text.count("\n", 0, m.start()) + 1,
                                f"'; printing object {m.group(2)}' while {open_name!r} is still open")
                open_name = m.group(2)
            else:
                if open_name != m.group(2):
                    raise _fail(pg, number or pg.text.count("\n", 0, m.start()) + 1,
                                f"'; stop printing object {m.group(2)}' does not close "
                                f"{'nothing' if open_name is None else repr(open_name)}")
                open_name = None
        if open_name is not None:
            raise PrinterError(f"unsafe G-code: '; printing object {open_name}' is never closed; "
                               "slice the model again")
    thumbs = read_thumbnails(pg.text)
    return {"m73": len(m73), "thumbnails": [f"{t['width']}x{t['height']}/{t['format']}" for t in thumbs],
            "objects": len(seen) if total is None else total, "object_blocks": blocks}


def _check_block(pg: ParsedGcode, current, end_mi: int, end_line: int, n: int) -> None:
    """An object block must end at its starting height and retraction state."""
    idx, line, start_mi = current
    if end_mi <= start_mi:
        return
    z_before = pg.start_xyz[2] if start_mi == 0 else float(pg.z[start_mi - 1])
    z_after = float(pg.z[end_mi - 1])
    if not (math.isnan(z_before) or abs(z_after - z_before) <= _EPS_MM):
        raise _fail(pg, end_line, f"object {idx} (from line {line}) ends at Z {z_after:.3f} but started "
                    f"at Z {z_before:.3f}; if it were cancelled the other parts would print at the wrong height")
    sl = slice(start_mi, end_mi)
    prev_x = np.r_[pg.start_xyz[0] if start_mi == 0 else pg.x[start_mi - 1], pg.x[sl][:-1]]
    prev_y = np.r_[pg.start_xyz[1] if start_mi == 0 else pg.y[start_mi - 1], pg.y[sl][:-1]]
    still = (np.abs(pg.x[sl] - prev_x) <= 1e-9) & (np.abs(pg.y[sl] - prev_y) <= 1e-9)
    net = float(pg.de[sl][still].sum())
    if abs(net) > 1e-3:
        raise _fail(pg, end_line, f"object {idx} (from line {line}) changes the retraction by "
                    f"{net:+.3f} mm; if it were cancelled the next part would start "
                    f"{abs(net):.3f} mm {'over' if net < 0 else 'under'}-extruded")


def _check(pg: ParsedGcode, printer, material) -> dict:
    x0, x1, y0, y1 = printer.travel_bounds_mm
    zmax = printer.max_z_mm
    eps = _EPS_MM
    n = len(pg.x)
    if pg.unknown_move_line:
        raise _fail(pg, pg.unknown_move_line, "relative move from an unknown position (no G28 "
                    "homing before it)")
    if n:
        if pg.first_home_move != 0:  # never homed (-1), or moves before the first G28 (> 0)
            raise _fail(pg, int(pg.line[0]), "move before the axes were homed with G28")
        checks = (
            (pg.x < x0 - eps, lambda i: f"X {pg.x[i]:.3f} mm is beyond the {printer.name}'s bed "
                                         f"(X {x0:g}..{x1:g} mm)"),
            (pg.x > x1 + eps, lambda i: f"X {pg.x[i]:.3f} mm is beyond the {printer.name}'s bed "
                                         f"(X {x0:g}..{x1:g} mm)"),
            (pg.y < y0 - eps, lambda i: f"Y {pg.y[i]:.3f} mm is beyond the {printer.name}'s bed "
                                         f"(Y {y0:g}..{y1:g} mm)"),
            (pg.y > y1 + eps, lambda i: f"Y {pg.y[i]:.3f} mm is beyond the {printer.name}'s bed "
                                         f"(Y {y0:g}..{y1:g} mm)"),
            (pg.z < -eps, lambda i: f"Z {pg.z[i]:.3f} mm is below the bed (Z must be >= 0)"),
            (pg.z > zmax + eps, lambda i: f"Z {pg.z[i]:.3f} mm is above the {printer.name}'s "
                                          f"maximum height of {zmax:g} mm"),
        )
        first = None
        for mask, msg in checks:
            idx = np.flatnonzero(mask)
            if idx.size and (first is None or idx[0] < first[0]):
                first = (int(idx[0]), msg)
        for mi, ax0, ax1, ay0, ay1 in pg.arcs:
            if ax0 < x0 - eps or ax1 > x1 + eps or ay0 < y0 - eps or ay1 > y1 + eps:
                if first is None or mi < first[0]:
                    first = (mi, lambda i, b=(ax0, ax1, ay0, ay1): (
                        f"the arc spans X {b[0]:.3f}..{b[1]:.3f}, Y {b[2]:.3f}..{b[3]:.3f} mm, beyond "
                        f"the {printer.name}'s bed (X {x0:g}..{x1:g}, Y {y0:g}..{y1:g} mm)"))
        if first is not None:
            raise _fail(pg, int(pg.line[first[0]]), first[1](first[0]))

    # temperatures and modes, in file order against the moves
    extr = pg.de > 1e-9
    moving = np.zeros(n, bool)
    if n:
        prev = np.r_[[pg.start_xyz[0]], pg.x[:-1]], np.r_[[pg.start_xyz[1]], pg.y[:-1]]
        moving = (np.abs(pg.x - prev[0]) > 1e-9) | (np.abs(pg.y - prev[1]) > 1e-9)
    extr_idx = np.flatnonzero(extr)
    first_extr = int(extr_idx[0]) if extr_idx.size else -1
    if first_extr >= 0 and (pg.e_mode_line == 0 or pg.e_mode_line > pg.line[first_extr]):
        raise _fail(pg, int(pg.line[first_extr]), "extrusion before the extrusion mode was declared "
                    "(add M82 or M83 before the first extruding move)")
    hot_max, bed_max = printer.max_hotend_c, printer.max_bed_c
    mat_hot = material.hotend_range_c[1] if material is not None else math.inf
    mat_bed = material.bed_range_c[1] if material is not None else math.inf
    hot = bed = 0.0
    hot_line = bed_line = 0
    max_hot = max_bed = 0.0
    # cold extrusion: for every span of moves between events, the hotend target must allow it
    seg_start = 0
    for (mi, cmd, params, line) in pg.events + [(n, "END", {}, 0)]:
        if mi > seg_start and hot < printer.min_hotend_c:
            span = extr_idx[(extr_idx >= seg_start) & (extr_idx < mi)]
            if span.size:
                raise _fail(pg, int(pg.line[span[0]]), f"extrusion with the nozzle set to {hot:g} C, "
                            f"below the cold-extrusion limit of {printer.min_hotend_c:g} C "
                            "(heat with M109 first)")
        seg_start = max(seg_start, mi)
        if cmd in ("M104", "M109"):
            t = params.get("S", params.get("R"))
            if t is None:
                continue
            if t > hot_max:
                raise _fail(pg, line, f"nozzle temperature {t:g} C is above the {printer.name}'s "
                            f"limit of {hot_max:g} C")
            if t > mat_hot:
                raise _fail(pg, line, f"nozzle temperature {t:g} C is above {material.name}'s "
                            f"range (up to {mat_hot:g} C)")
            if t < 0:
                raise _fail(pg, line, f"negative nozzle temperature {t:g} C")
            hot, hot_line = t, line
            max_hot = max(max_hot, t)
        elif cmd in ("M140", "M190"):
            t = params.get("S", params.get("R"))
            if t is None:
                continue
            if t > bed_max:
                raise _fail(pg, line, f"bed temperature {t:g} C is above the {printer.name}'s "
                            f"limit of {bed_max:g} C")
            if t > mat_bed:
                raise _fail(pg, line, f"bed temperature {t:g} C is above {material.name}'s "
                            f"range (up to {mat_bed:g} C)")
            if t < 0:
                raise _fail(pg, line, f"negative bed temperature {t:g} C")
            bed, bed_line = t, line
            max_bed = max(max_bed, t)
    if hot > 0:
        raise _fail(pg, hot_line, f"the nozzle heater is left on at {hot:g} C at the end of the file "
                    "(end with M104 S0)")
    if bed > 0:
        raise _fail(pg, bed_line, f"the bed heater is left on at {bed:g} C at the end of the file "
                    "(end with M140 S0)")

    # statistics
    if n:
        bbox = [[float(pg.x.min()), float(pg.y.min()), float(pg.z.min())],
                [float(pg.x.max()), float(pg.y.max()), float(pg.z.max())]]
    else:
        bbox = None
    ex_mask = extr & moving
    if ex_mask.any():
        ebbox = [[float(pg.x[ex_mask].min()), float(pg.y[ex_mask].min()), float(pg.z[ex_mask].min())],
                 [float(pg.x[ex_mask].max()), float(pg.y[ex_mask].max()), float(pg.z[ex_mask].max())]]
        layers_z = np.unique(np.round(pg.z[ex_mask], 4)).size
    else:
        ebbox, layers_z = None, 0
    e_mode = pg.e_mode
    return {
        "moves": int(n),
        "extrusion_moves": int(ex_mask.sum()),
        "bbox_mm": bbox,
        "extrusion_bbox_mm": ebbox,
        "max_hotend_c": float(max_hot),
        "max_bed_c": float(max_bed),
        "layers": int(pg.layer_marks or layers_z),
        "e_mode": e_mode,
        "lines": pg.text.count("\n") + (0 if pg.text.endswith("\n") else 1),
    }


# ------------------------------------------------------------------------------------------------
# compiled scanner
# ------------------------------------------------------------------------------------------------

@njit(cache=True)
def _parse_number(buf, p, end):  # pragma: no cover - compiled
    """Parse a decimal number at ``p``; return (value, found, next position)."""
    sign = 1.0
    if p < end and buf[p] == 45:
        sign = -1.0
        p += 1
    elif p < end and buf[p] == 43:
        p += 1
    ipart = 0.0
    digits = 0
    while p < end and 48 <= buf[p] <= 57:
        ipart = ipart * 10.0 + (buf[p] - 48)
        p += 1
        digits += 1
    frac = 0.0
    scale = 1.0
    if p < end and buf[p] == 46:
        p += 1
        while p < end and 48 <= buf[p] <= 57:
            frac = frac * 10.0 + (buf[p] - 48)
            scale *= 10.0
            p += 1
            digits += 1
    if digits == 0:
        return 0.0, False, p
    return sign * (ipart + frac / scale), True, p


@njit(cache=True)
def _grow_events(ev_mi, ev_line, ev_code, ev_par):  # pragma: no cover - compiled
    # (plain loops: slice assignment and np.full compile into much more code)
    cap = ev_mi.shape[0] * 2
    w = ev_par.shape[1]
    a = np.empty(cap, np.int64)
    b = np.empty(cap, np.int64)
    c = np.empty(cap, np.int64)
    d = np.empty((cap, w), np.float64)
    m = ev_mi.shape[0]
    for i in range(cap):
        if i < m:
            a[i] = ev_mi[i]
            b[i] = ev_line[i]
            c[i] = ev_code[i]
            for j in range(w):
                d[i, j] = ev_par[i, j]
        else:
            for j in range(w):
                d[i, j] = np.nan
    return a, b, c, d


@njit(cache=True)
def _scan_kernel(buf, marlin):  # pragma: no cover - compiled
    n = buf.shape[0]
    nl = 1
    for i in range(n):
        if buf[i] == 10:
            nl += 1
    mx = np.empty(nl)
    my = np.empty(nl)
    mz = np.empty(nl)
    mde = np.empty(nl)
    mf = np.empty(nl)
    mline = np.empty(nl, np.int64)
    mtype = np.empty(nl, np.int32)
    cap = 256
    ev_mi = np.empty(cap, np.int64)
    ev_line = np.empty(cap, np.int64)
    ev_code = np.empty(cap, np.int64)
    ev_par = np.full((cap, 11), np.nan)
    nev = 0
    ty_mi = np.empty(nl, np.int64)
    ty_start = np.empty(nl, np.int64)
    ty_end = np.empty(nl, np.int64)
    nty = 0
    lay_mi = np.empty(nl, np.int64)  # move index at each ;LAYER: mark
    # letter -> event slot for "SPRTXYZEJIF"
    slot = np.full(26, -1, np.int64)
    slot[18] = 0
    slot[15] = 1
    slot[17] = 2
    slot[19] = 3
    slot[23] = 4
    slot[24] = 5
    slot[25] = 6
    slot[4] = 7
    slot[9] = 8
    slot[8] = 9
    slot[5] = 10
    vals = np.zeros(26)
    pres = np.zeros(26, np.bool_)
    nan = np.nan
    lx = nan
    ly = nan
    lz = nan
    ox = 0.0
    oy = 0.0
    oz = 0.0
    e_pos = 0.0
    rel_xyz = False
    rel_e = False
    feed = 25.0
    nm = 0
    cur_type = -1
    layer_marks = 0
    e_mode_line = 0
    e_mode = 0
    first_home = -1
    unknown_line = 0
    sx = nan
    sy = nan
    sz = nan
    started = False
    i = 0
    line = 0
    while i < n:
        line += 1
        j = i
        while j < n and buf[j] != 10:
            j += 1
        end = j
        while end > i and (buf[end - 1] == 13 or buf[end - 1] == 32 or buf[end - 1] == 9):
            end -= 1
        k = i
        while k < end and (buf[k] == 32 or buf[k] == 9):
            k += 1
        if k < end:
            c = buf[k]
            if c == 59:  # ';' comment
                if end - k > 6 and buf[k + 1] == 84 and buf[k + 2] == 89 and buf[k + 3] == 80 \
                        and buf[k + 4] == 69 and buf[k + 5] == 58:  # ;TYPE:
                    ty_mi[nty] = nm
                    ty_start[nty] = k + 6
                    ty_end[nty] = end
                    cur_type = nty
                    nty += 1
                elif end - k > 7 and buf[k + 1] == 76 and buf[k + 2] == 65 and buf[k + 3] == 89 \
                        and buf[k + 4] == 69 and buf[k + 5] == 82 and buf[k + 6] == 58:  # ;LAYER:
                    lay_mi[layer_marks] = nm
                    layer_marks += 1
            else:
                if 97 <= c <= 122:
                    c -= 32
                if c == 71 or c == 77:  # G or M
                    num, ok, p = _parse_number(buf, k + 1, end)
                    if ok:
                        for q in range(26):
                            pres[q] = False
                        while p < end:
                            ch = buf[p]
                            if ch == 59:
                                break
                            if ch == 40:  # ( comment )
                                while p < end and buf[p] != 41:
                                    p += 1
                                p += 1
                                continue
                            if 97 <= ch <= 122:
                                ch -= 32
                            if 65 <= ch <= 90:
                                v, found, p2 = _parse_number(buf, p + 1, end)
                                vals[ch - 65] = v if found else 0.0
                                pres[ch - 65] = True
                                p = p2 if p2 > p + 1 else p + 1
                            else:
                                p += 1
                        inum = int(num * 10.0 + 0.5)
                        is_move = c == 71 and (inum == 0 or inum == 10 or inum == 20 or inum == 30)
                        if is_move:
                            if pres[5]:
                                feed = vals[5] / 60.0
                            has_xyz = pres[23] or pres[24] or pres[25]
                            is_arc = inum == 20 or inum == 30
                            if has_xyz or pres[4] or (is_arc and (pres[8] or pres[9] or pres[17])):
                                tx = lx
                                ty = ly
                                tz = lz
                                if rel_xyz:
                                    if pres[23]:
                                        tx = lx + vals[23]
                                    if pres[24]:
                                        ty = ly + vals[24]
                                    if pres[25]:
                                        tz = lz + vals[25]
                                else:
                                    if pres[23]:
                                        tx = vals[23]
                                    if pres[24]:
                                        ty = vals[24]
                                    if pres[25]:
                                        tz = vals[25]
                                de = 0.0
                                if pres[4]:
                                    if rel_e:
                                        de = vals[4]
                                        e_pos += vals[4]
                                    else:
                                        de = vals[4] - e_pos
                                        e_pos = vals[4]
                                if unknown_line == 0 and ((pres[23] and np.isnan(tx)) or (pres[24] and np.isnan(ty))
                                                          or (pres[25] and np.isnan(tz))):
                                    unknown_line = line
                                if not started:
                                    sx = lx + ox
                                    sy = ly + oy
                                    sz = lz + oz
                                    started = True
                                mx[nm] = tx + ox
                                my[nm] = ty + oy
                                mz[nm] = tz + oz
                                mde[nm] = de
                                mf[nm] = feed
                                mline[nm] = line
                                mtype[nm] = cur_type
                                if is_arc:
                                    if nev == ev_mi.shape[0]:
                                        ev_mi, ev_line, ev_code, ev_par = _grow_events(ev_mi, ev_line, ev_code, ev_par)
                                    ev_mi[nev] = nm
                                    ev_line[nev] = line
                                    ev_code[nev] = (c << 16) + inum
                                    for q in range(26):
                                        if pres[q] and slot[q] >= 0:
                                            ev_par[nev, slot[q]] = vals[q]
                                    nev += 1
                                nm += 1
                                lx = tx
                                ly = ty
                                lz = tz
                        elif c == 71 and inum == 280:  # G28
                            anyaxis = pres[23] or pres[24] or pres[25]
                            if pres[23] or not anyaxis:
                                lx = 0.0
                                ox = 0.0
                            if pres[24] or not anyaxis:
                                ly = 0.0
                                oy = 0.0
                            if pres[25] or not anyaxis:
                                lz = 0.0
                                oz = 0.0
                            if first_home < 0:
                                first_home = nm
                        elif c == 71 and inum == 900:
                            rel_xyz = False
                            if marlin:
                                rel_e = False
                        elif c == 71 and inum == 910:
                            rel_xyz = True
                            if marlin:
                                rel_e = True
                        elif c == 71 and inum == 920:  # G92
                            anyp = pres[23] or pres[24] or pres[25] or pres[4]
                            if pres[23] or not anyp:
                                v = vals[23] if pres[23] else 0.0
                                if not np.isnan(lx):
                                    ox = lx + ox - v
                                    lx = v
                            if pres[24] or not anyp:
                                v = vals[24] if pres[24] else 0.0
                                if not np.isnan(ly):
                                    oy = ly + oy - v
                                    ly = v
                            if pres[25] or not anyp:
                                v = vals[25] if pres[25] else 0.0
                                if not np.isnan(lz):
                                    oz = lz + oz - v
                                    lz = v
                            if pres[4] or not anyp:
                                e_pos = vals[4] if pres[4] else 0.0
                        elif c == 77 and (inum == 820 or inum == 830):
                            rel_e = inum == 830
                            if e_mode_line == 0:
                                e_mode_line = line
                                e_mode = inum // 10
                        if c == 77 or (c == 71 and (inum == 40 or inum == 280)):
                            if nev == ev_mi.shape[0]:
                                ev_mi, ev_line, ev_code, ev_par = _grow_events(ev_mi, ev_line, ev_code, ev_par)
                            ev_mi[nev] = nm
                            ev_line[nev] = line
                            ev_code[nev] = (c << 16) + inum
                            for q in range(11):
                                ev_par[nev, q] = np.nan
                            for q in range(26):
                                if pres[q] and slot[q] >= 0:
                                    ev_par[nev, slot[q]] = vals[q]
                            nev += 1
        i = j + 1
    info = np.array([layer_marks, e_mode_line, first_home, unknown_line, e_mode], np.int64)
    if not started:
        sx = lx + ox
        sy = ly + oy
        sz = lz + oz
    start = np.array([sx, sy, sz])
    return (mx[:nm].copy(), my[:nm].copy(), mz[:nm].copy(), mde[:nm].copy(), mf[:nm].copy(),
            mline[:nm].copy(), mtype[:nm].copy(), ev_mi[:nev].copy(), ev_line[:nev].copy(),
            ev_code[:nev].copy(), ev_par[:nev].copy(), ty_mi[:nty].copy(), ty_start[:nty].copy(),
            ty_end[:nty].copy(), info, start, lay_mi[:layer_marks].copy())
