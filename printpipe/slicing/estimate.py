"""Print-time and filament estimate from G-code, the way the firmware's planner moves the head.

The model follows Marlin's planner:

- every motion command is a *block* with a length (XYZ distance; the E distance for
  retract/unretract-only moves), a nominal speed (the commanded feedrate, capped so that no axis
  exceeds its ``M203`` limit) and an acceleration (``M204`` print/travel/retract acceleration,
  capped so that no axis exceeds its ``M201`` limit);
- the speed at the junction of two blocks is limited by classic jerk (``M205 X Y Z E``: the
  largest instantaneous change of each axis' velocity) or, on firmware that uses it, by junction
  deviation (``M205 J``); the head starts and stops at the jerk-limited "safe" speed (0 with
  junction deviation);
- a backward then a forward pass over all blocks make every entry speed reachable by accelerating
  or braking within the block (full look-ahead, where the firmware has a 16-block buffer: the
  difference only matters for runs of very short segments);
- each block then follows a trapezoidal (or triangular) velocity profile.

``M201``/``M203``/``M204``/``M205`` in the file override the profile's limits from where they
appear. ``G4`` dwells are added. Heat-up waits (``M109``/``M190``) are estimated with constant
heating rates (nozzle 2 C/s, bed 0.5 C/s, from 25 C; a heater heats while the print goes on after
an ``M104``/``M140``); they are reported as ``heating_s`` and only included in ``time_s`` with
``include_heating=True``, because slicers' ``;TIME:`` headers leave them out.
Arcs (G2/G3) are timed as one block of the arc's length.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from numba import njit

from printpipe.slicing.validate import parse_gcode

log = logging.getLogger(__name__)

__all__ = ["estimate", "plan_times"]

# columns of the limits table (one row per distinct machine state)
_C_FX, _C_FY, _C_FZ, _C_FE = 0, 1, 2, 3          # max feedrate mm/s
_C_AX, _C_AY, _C_AZ, _C_AE = 4, 5, 6, 7          # max axis acceleration mm/s^2
_C_AP, _C_AR, _C_AT = 8, 9, 10                   # print / retract / travel acceleration
_C_JX, _C_JY, _C_JZ, _C_JE = 11, 12, 13, 14      # classic jerk mm/s
_C_JD = 15                                       # junction deviation mm (0 = classic jerk)
_NCOL = 16

HOTEND_RATE_C_S = 2.0
BED_RATE_C_S = 0.5
AMBIENT_C = 25.0


def estimate(text: str, printer, density_g_cm3: float = 1.24, *, include_heating: bool = False,
             parsed=None) -> dict:
    """Estimate print time and filament of a G-code file.

    Parameters
    ----------
    text : str
        The G-code.
    printer : Printer or str
        Supplies the default motion limits, the filament diameter and the firmware flavour.
    density_g_cm3 : float
        Filament density for the weight (PLA 1.24, PETG 1.27; ``Material.density_g_cm3``).
    include_heating : bool
        Add the estimated heat-up waits to ``time_s`` (they are always in ``heating_s``).
    parsed : ParsedGcode, optional
        A result of :func:`~printpipe.slicing.validate.parse_gcode` for ``text``, to parse once.

    Returns
    -------
    dict
        ``time_s`` (motion + dwells [+ heating]), ``motion_s``, ``dwell_s``, ``heating_s``,
        ``filament_mm`` (filament pushed by extruding moves; retract/unretract pairs are not
        counted), ``filament_net_mm`` (sum of all E changes), ``filament_g``,
        ``per_type_time_s`` (by ``;TYPE:`` label; non-extruding moves under ``"TRAVEL"``),
        ``layer_count`` (``;LAYER:`` markers, else distinct extrusion heights), ``moves``,
        ``layer_start_s`` (clock, motion + dwells, when each ``;LAYER:`` mark is reached) and
        ``per_layer_time_s`` (from one mark to the next; the last layer runs to the end of the
        file), both lists with one entry per mark. Heat-up waits are not in them.
    """
    from printpipe.slicing.printers import load_printer

    printer = load_printer(printer)
    pg = parsed if parsed is not None else parse_gcode(text, flavor=printer.flavor)
    n = len(pg.x)
    state_rows, state_id, dwell_s = _limit_states(pg, printer)
    # block geometry
    sx, sy, sz = (0.0 if math.isnan(v) else v for v in pg.start_xyz)
    x = np.nan_to_num(pg.x, nan=sx)
    y = np.nan_to_num(pg.y, nan=sy)
    z = np.nan_to_num(pg.z, nan=sz)
    dx = np.diff(np.r_[sx, x])
    dy = np.diff(np.r_[sy, y])
    dz = np.diff(np.r_[sz, z])
    de = pg.de.copy()
    times = plan_times(dx, dy, dz, de, pg.arc_len, pg.feed, state_rows, state_id)
    motion_s = float(times.sum())
    heating_s = _heating_time(pg, times, dwell_s)
    xyz_len = np.sqrt(dx * dx + dy * dy + dz * dz)
    extruding = (de > 0) & ((xyz_len > 1e-9) | (pg.arc_len > 0))
    filament_mm = float(de[extruding].sum())
    area = math.pi * (printer.filament_diameter_mm / 2) ** 2
    filament_g = filament_mm * area * float(density_g_cm3) / 1000.0
    per_type: dict[str, float] = {}
    if n:
        tid = np.where(extruding, pg.type_id, -2)
        uniq, inv = np.unique(tid, return_inverse=True)
        sums = np.bincount(inv, weights=times)
        for u, s in zip(uniq, sums):
            key = "TRAVEL" if u == -2 else ("OTHER" if u < 0 else pg.types[u])
            per_type[key] = per_type.get(key, 0.0) + float(s)
    layer_count = pg.layer_marks
    if not layer_count and extruding.any():
        layer_count = int(np.unique(np.round(z[extruding], 4)).size)
    dwell_total = float(sum(d for _, d in dwell_s))
    total = motion_s + dwell_total + (heating_s if include_heating else 0.0)
    layer_start, per_layer = _layer_times(times, dwell_s, pg.layer_moves)
    return {
        "time_s": total,
        "motion_s": motion_s,
        "dwell_s": dwell_total,
        "heating_s": heating_s,
        "filament_mm": filament_mm,
        "filament_net_mm": float(de.sum()),
        "filament_g": filament_g,
        "per_type_time_s": per_type,
        "layer_count": int(layer_count),
        "moves": int(n),
        "layer_start_s": layer_start,
        "per_layer_time_s": per_layer,
    }


def plan_times(dx, dy, dz, de, arc_len, feed, state_rows, state_id) -> np.ndarray:
    """Time of each block (s) from its axis distances, feedrate (mm/s) and machine limits.

    ``state_rows`` is a ``(k, 16)`` table of limits (see the ``_C_*`` columns) and ``state_id``
    the row in force for each block. Thin wrapper around the compiled planner.
    """
    f = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    return _plan_kernel(f(dx), f(dy), f(dz), f(de), f(arc_len), f(feed), f(state_rows),
                        np.ascontiguousarray(state_id, dtype=np.int64))


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def _base_row(printer) -> np.ndarray:
    row = np.zeros(_NCOL)
    f, a = printer.max_feedrate_mm_s, printer.max_accel_mm_s2
    row[[_C_FX, _C_FY, _C_FZ, _C_FE]] = [f["x"], f["y"], f["z"], f["e"]]
    row[[_C_AX, _C_AY, _C_AZ, _C_AE]] = [a["x"], a["y"], a["z"], a["e"]]
    row[[_C_AP, _C_AR, _C_AT]] = [a["print"], a["retract"], a["travel"]]
    if printer.junction_deviation_mm:
        row[_C_JD] = printer.junction_deviation_mm
    j = printer.jerk_mm_s or {"x": 10.0, "y": 10.0, "z": 0.3, "e": 5.0}
    row[[_C_JX, _C_JY, _C_JZ, _C_JE]] = [j["x"], j["y"], j["z"], j["e"]]
    return row


def _layer_times(times: np.ndarray, dwell, layer_moves: np.ndarray) -> tuple[list, list]:
    """Clock at each ``;LAYER:`` mark and the time of each layer (motion + dwells)."""
    n = times.shape[0]
    clock = np.r_[0.0, np.cumsum(times)]  # (n + 1,) time before move i
    if dwell:
        add = np.zeros(n + 1)
        np.add.at(add, np.minimum(np.array([d[0] for d in dwell], np.int64), n),
                  np.array([d[1] for d in dwell], np.float64))
        # a dwell just before move i counts to the layer that move i starts (the clock at a
        # layer mark excludes it), every other dwell to the layer it is in
        clock = clock + np.r_[0.0, np.cumsum(add)[:-1]]
        clock[n] += add[n]
    if layer_moves.size == 0:
        return [], []
    start = clock[np.minimum(layer_moves, n)]
    per = np.diff(np.r_[start, clock[n]])
    return start.tolist(), per.tolist()


def _limit_states(pg, printer):
    """Rows of machine limits in force over the file, and the row of each move."""
    n = len(pg.x)
    row = _base_row(printer)
    rows = [row.copy()]
    change_at: list = []  # (move index, row index) where the limits change
    dwell = []
    m203_per_min = printer.flavor == "reprap"
    for mi, cmd, p, _line in pg.events:
        if cmd == "G4":
            secs = p.get("S", 0.0) + p.get("P", 0.0) / 1000.0
            dwell.append((mi, secs))
            continue
        if cmd not in ("M201", "M203", "M204", "M205"):
            continue
        new = row.copy()
        if cmd == "M201":
            for k, c in (("X", _C_AX), ("Y", _C_AY), ("Z", _C_AZ), ("E", _C_AE)):
                if k in p and p[k] > 0:
                    new[c] = p[k]
        elif cmd == "M203":
            scale = 1 / 60.0 if m203_per_min else 1.0
            for k, c in (("X", _C_FX), ("Y", _C_FY), ("Z", _C_FZ), ("E", _C_FE)):
                if k in p and p[k] > 0:
                    new[c] = p[k] * scale
        elif cmd == "M204":
            if "S" in p and p["S"] > 0:  # Marlin 1.x: print and travel
                new[_C_AP] = new[_C_AT] = p["S"]
            if "P" in p and p["P"] > 0:
                new[_C_AP] = p["P"]
            if "T" in p and p["T"] > 0:
                new[_C_AT] = p["T"]
            if "R" in p and p["R"] > 0:
                new[_C_AR] = p["R"]
        elif cmd == "M205":
            for k, c in (("X", _C_JX), ("Y", _C_JY), ("Z", _C_JZ), ("E", _C_JE)):
                if k in p and p[k] >= 0:
                    new[c] = p[k]
            if "X" in p and "Y" not in p:
                new[_C_JY] = p["X"]  # Marlin 1.x: M205 X sets the XY jerk
            if "J" in p and p["J"] > 0:
                new[_C_JD] = p["J"]
        if np.array_equal(new, row):
            continue
        change_at.append((mi, len(rows)))  # in force from move `mi` on
        rows.append(new)
        row = new
    state_id = np.zeros(n, np.int64)
    if change_at:
        starts = np.array([c[0] for c in change_at], np.int64)
        ids = np.array([c[1] for c in change_at], np.int64)
        k = np.searchsorted(starts, np.arange(n), side="right") - 1
        state_id = np.where(k >= 0, ids[np.maximum(k, 0)], 0)
    return np.vstack(rows), state_id, dwell


def _heating_time(pg, times: np.ndarray, dwell) -> float:
    """Seconds spent in M109/M190 waits, with constant heating rates (see module docstring)."""
    if not any(cmd in ("M109", "M190") for _, cmd, _, _ in pg.events):
        return 0.0
    clock_at = np.r_[0.0, np.cumsum(times)]
    dwell_at = {}
    for mi, s in dwell:
        dwell_at[mi] = dwell_at.get(mi, 0.0) + s
    extra = 0.0  # time added by waits and dwells so far
    heaters = {"hot": [AMBIENT_C, AMBIENT_C, 0.0], "bed": [AMBIENT_C, AMBIENT_C, 0.0]}  # temp, target, t
    rates = {"hot": HOTEND_RATE_C_S, "bed": BED_RATE_C_S}
    waited = 0.0
    seen_dwell = set()
    for mi, cmd, p, _line in pg.events:
        if mi in dwell_at and mi not in seen_dwell:
            extra += dwell_at[mi]
            seen_dwell.add(mi)
        now = clock_at[min(mi, len(clock_at) - 1)] + extra
        key = "hot" if cmd in ("M104", "M109") else "bed" if cmd in ("M140", "M190") else None
        if key is None:
            continue
        t = p.get("S", p.get("R"))
        if t is None:
            continue
        h = heaters[key]
        # advance the heater to `now`
        if h[1] > h[0]:
            h[0] = min(h[1], h[0] + rates[key] * (now - h[2]))
        elif h[1] < h[0]:
            h[0] = h[1]  # cooling is not modelled as time; assume it drops as needed
        h[2] = now
        h[1] = max(float(t), AMBIENT_C) if t > 0 else AMBIENT_C
        if cmd in ("M109", "M190") and h[1] > h[0]:
            wait = (h[1] - h[0]) / rates[key]
            waited += wait
            extra += wait
            h[0] = h[1]
            h[2] = now + wait
            # the other heater keeps heating during the wait (advanced lazily at its next event)
    return float(waited)


@njit(cache=True)
def _plan_kernel(dx, dy, dz, de, arc_len, feed, rows, state_id):  # pragma: no cover - compiled
    n = dx.shape[0]
    length = np.zeros(n)
    vnom = np.zeros(n)
    acc = np.zeros(n)
    safe = np.zeros(n)
    vjunc = np.zeros(n)       # max entry speed of block i
    ux = np.zeros(n)
    uy = np.zeros(n)
    uz = np.zeros(n)
    ue = np.zeros(n)
    for i in range(n):
        r = rows[state_id[i]]
        lxyz = math.sqrt(dx[i] * dx[i] + dy[i] * dy[i] + dz[i] * dz[i])
        if arc_len[i] > 0.0:
            lxyz = max(lxyz, arc_len[i])
        if lxyz > 1e-9:
            L = lxyz
        else:
            L = abs(de[i])
        if L <= 1e-9:
            continue
        length[i] = L
        ux[i] = dx[i] / L
        uy[i] = dy[i] / L
        uz[i] = dz[i] / L
        ue[i] = de[i] / L
        if arc_len[i] > 0.0:  # arc: chord direction scaled to the arc length
            ch = math.sqrt(dx[i] * dx[i] + dy[i] * dy[i])
            if ch > 1e-9:
                ux[i] = dx[i] / ch * math.sqrt(max(0.0, 1.0 - uz[i] * uz[i]))
                uy[i] = dy[i] / ch * math.sqrt(max(0.0, 1.0 - uz[i] * uz[i]))
        v = feed[i]
        if v <= 0.0:
            v = 1.0
        # axis feedrate limits
        comps = (abs(ux[i]), abs(uy[i]), abs(uz[i]), abs(ue[i]))
        fmax = (r[0], r[1], r[2], r[3])
        for k in range(4):
            if comps[k] > 1e-12 and v * comps[k] > fmax[k]:
                v = fmax[k] / comps[k]
        # acceleration by move kind, then axis limits
        if lxyz <= 1e-9:
            a = r[9]
        elif de[i] > 0.0:
            a = r[8]
        else:
            a = r[10]
        amax = (r[4], r[5], r[6], r[7])
        for k in range(4):
            if comps[k] > 1e-12 and a * comps[k] > amax[k]:
                a = amax[k] / comps[k]
        vnom[i] = v
        acc[i] = a
        # safe speed: what every axis can reach instantly from standstill (classic jerk)
        s = v
        jmax = (r[11], r[12], r[13], r[14])
        for k in range(4):
            if comps[k] > 1e-12 and s * comps[k] > jmax[k]:
                s = jmax[k] / comps[k]
        if r[15] > 0.0:
            s = 0.0
        safe[i] = s

    # junction limits
    prev = -1
    for i in range(n):
        if length[i] == 0.0:
            continue
        if prev < 0:
            vjunc[i] = safe[i]
            prev = i
            continue
        r = rows[state_id[i]]
        if r[15] > 0.0:
            # junction deviation on the 4-D unit vectors
            nu = math.sqrt(ux[i] ** 2 + uy[i] ** 2 + uz[i] ** 2 + ue[i] ** 2)
            npv = math.sqrt(ux[prev] ** 2 + uy[prev] ** 2 + uz[prev] ** 2 + ue[prev] ** 2)
            cos_t = -(ux[i] * ux[prev] + uy[i] * uy[prev] + uz[i] * uz[prev] + ue[i] * ue[prev]) / (nu * npv)
            if cos_t > 0.999999:
                vj = 0.0
            else:
                if cos_t < -0.999999:
                    cos_t = -0.999999
                sin_d2 = math.sqrt(0.5 * (1.0 - cos_t))
                vj = math.sqrt(acc[i] * r[15] * sin_d2 / (1.0 - sin_d2))
            vj = min(vj, vnom[i], vnom[prev])
        else:
            vj = min(vnom[i], vnom[prev])
            jmax = (r[11], r[12], r[13], r[14])
            up = (ux[prev], uy[prev], uz[prev], ue[prev])
            uc = (ux[i], uy[i], uz[i], ue[i])
            factor = 1.0
            for k in range(4):
                v_exit = up[k] * vj
                v_entry = uc[k] * vj
                if (v_exit >= 0.0 and v_entry >= 0.0) or (v_exit <= 0.0 and v_entry <= 0.0):
                    jerk = abs(v_exit - v_entry)
                else:  # reversal: Marlin takes the larger of the two speeds
                    jerk = max(abs(v_exit), abs(v_entry))
                if jerk > jmax[k] and jerk > 0.0:
                    factor = min(factor, jmax[k] / jerk)
            vj = vj * factor
            if safe[prev] > 0.99 * vj and safe[i] > 0.99 * vj:
                vj = max(vj, min(safe[i], safe[prev]))
        vjunc[i] = vj
        prev = i

    # backward pass: every entry speed must allow braking to the next one
    entry = np.zeros(n + 1)
    last = -1
    for i in range(n - 1, -1, -1):
        if length[i] > 0.0:
            last = i
            break
    if last < 0:
        return np.zeros(n)
    nxt = safe[last]
    for i in range(n - 1, -1, -1):
        if length[i] == 0.0:
            continue
        v = min(vjunc[i], math.sqrt(nxt * nxt + 2.0 * acc[i] * length[i]))
        entry[i] = v
        nxt = v
    # forward pass: and accelerating from the previous one
    times = np.zeros(n)
    prev = -1
    for i in range(n):
        if length[i] == 0.0:
            continue
        if prev >= 0:
            reach = math.sqrt(entry[prev] * entry[prev] + 2.0 * acc[prev] * length[prev])
            if entry[i] > reach:
                entry[i] = reach
        prev = i
    # trapezoids
    prev = -1
    for i in range(n):
        if length[i] == 0.0:
            continue
        # exit speed = entry speed of the next block with length
        j = i + 1
        while j < n and length[j] == 0.0:
            j += 1
        v0 = entry[i]
        v1 = entry[j] if j < n else safe[i]
        vn = vnom[i]
        a = acc[i]
        L = length[i]
        v0 = min(v0, vn)
        v1 = min(v1, vn)
        d_acc = (vn * vn - v0 * v0) / (2.0 * a)
        d_dec = (vn * vn - v1 * v1) / (2.0 * a)
        if d_acc + d_dec <= L:
            times[i] = (vn - v0) / a + (vn - v1) / a + (L - d_acc - d_dec) / vn
        else:
            vp2 = (2.0 * a * L + v0 * v0 + v1 * v1) / 2.0
            vp = math.sqrt(max(vp2, max(v0 * v0, v1 * v1)))
            times[i] = (vp - v0) / a + (vp - v1) / a
    return times
