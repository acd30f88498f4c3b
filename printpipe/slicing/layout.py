"""Place oriented parts on the bed without overlap, on several plates if needed; never scale.

Each part is turned about z to its smallest bounding rectangle (or, for a long part that only fits
across the diagonal, to the first angle that fits), and the rectangles, grown by the spacing, are
packed with the MaxRects best-short-side-fit heuristic, turning a rectangle by 90 degrees when that
fits better. A part that does not fit an empty plate is tried in the other orientation candidates
of :func:`printpipe.slicing.orient.orientation_candidates`; if none fits, the layout fails with a
:class:`~printpipe.errors.PrinterError` that gives the part's size, the printer's volume and the
ways out. Each plate's group is centred on the bed.

Transforms are rigid (rotation + translation, determinant +1): models are printed 1:1 or not at
all.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from printpipe.errors import InputError, PrinterError

log = logging.getLogger(__name__)

__all__ = ["layout", "footprint_fit"]

_EPS = 1e-6


def layout(meshes: dict, printer, spacing_mm: float = 5.0, *, edge_mm: float = 3.0,
           support_angle_deg: float = 55.0) -> list[list[tuple[str, np.ndarray]]]:
    """Arrange parts on one or more plates.

    Parameters
    ----------
    meshes : dict of str -> trimesh.Trimesh
        Parts, already oriented (they are moved onto z = 0 here if they are not).
    printer : Printer or str
        Target printer.
    spacing_mm : float
        Gap between parts (5 mm).
    edge_mm : float
        Margin kept free along the bed edges, for the skirt (3 mm).
    support_angle_deg : float
        Overhang threshold used when a part must be re-oriented to fit.

    Returns
    -------
    list of list of (name, (4, 4) ndarray)
        One list per plate; each transform maps the given mesh to its place on that plate.

    Raises
    ------
    PrinterError
        A part fits the printer in no orientation.
    """
    from printpipe.slicing.printers import load_printer

    printer = load_printer(printer)
    if not meshes:
        raise InputError("layout got no parts; pass a dict of name -> mesh")
    if spacing_mm < 0 or edge_mm < 0:
        raise InputError(f"spacing_mm ({spacing_mm}) and edge_mm ({edge_mm}) must be >= 0")
    x0, x1, y0, y1 = printer.bed_bounds_mm
    W, H = (x1 - x0) - 2 * edge_mm, (y1 - y0) - 2 * edge_mm
    if W <= 0 or H <= 0:
        raise PrinterError(f"the {printer.name}'s bed is too small for an edge margin of {edge_mm} mm")

    items = []  # (name, base 4x4 (rotation about z + re-orientation, z on bed), w, h)
    for name, mesh in meshes.items():
        items.append(_prepare(name, mesh, printer, W, H, support_angle_deg))

    # MaxRects packing, largest first, over as many plates as needed
    order = sorted(range(len(items)), key=lambda i: -(items[i][2] * items[i][3]))
    plates: list[_MaxRects] = []
    placed: list[list[tuple[int, float, float, bool]]] = []
    for i in order:
        _, _, w, h = items[i]
        for k, bin_ in enumerate(plates):
            pos = bin_.insert(w + spacing_mm, h + spacing_mm)
            if pos is not None:
                placed[k].append((i, *pos))
                break
        else:
            bin_ = _MaxRects(W + spacing_mm, H + spacing_mm)
            pos = bin_.insert(w + spacing_mm, h + spacing_mm)
            if pos is None:  # cannot happen: _prepare checked the part fits an empty plate
                raise PrinterError(f"{items[i][0]} does not fit an empty plate of the {printer.name}")
            plates.append(bin_)
            placed.append([(i, *pos)])

    out: list[list[tuple[str, np.ndarray]]] = []
    for plate in placed:
        rects = []
        for i, px, py, turned in plate:
            _, _, w, h = items[i]
            rw, rh = (h, w) if turned else (w, h)
            rects.append((px, py, rw, rh))
        # centre the group on the usable area
        gx0 = min(r[0] for r in rects)
        gy0 = min(r[1] for r in rects)
        gx1 = max(r[0] + r[2] for r in rects)
        gy1 = max(r[1] + r[3] for r in rects)
        shift_x = x0 + edge_mm + (W - (gx1 - gx0)) / 2 - gx0
        shift_y = y0 + edge_mm + (H - (gy1 - gy0)) / 2 - gy0
        entries = []
        for (i, px, py, turned), (rx, ry, rw, rh) in zip(plate, rects):
            name, base, w, h = items[i]
            T = base.copy()
            if turned:  # quarter turn about z, keeping the footprint's corner at the origin
                Q = np.eye(4)
                Q[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
                Q[0, 3] = h
                T = Q @ T
            move = np.eye(4)
            move[0, 3] = rx + shift_x
            move[1, 3] = ry + shift_y
            entries.append((name, move @ T))
        out.append(entries)
    if len(out) > 1:
        log.info("layout: %d parts need %d plates on the %s", len(items), len(out), printer.name)
    return out


def footprint_fit(xy: np.ndarray, printer, *, edge_mm: float = 3.0, W=None, H=None):
    """Rotation angle (rad) about z at which the 2-D points ``xy`` fit the usable bed, or None.

    Prefers the minimum-area rectangle's angle (or that plus 90 degrees); otherwise scans angles
    in 1-degree steps (a long part may only fit across the diagonal).

    Returns
    -------
    (angle_rad, width, height) or None
    """
    if W is None or H is None:
        x0, x1, y0, y1 = printer.bed_bounds_mm
        W, H = (x1 - x0) - 2 * edge_mm, (y1 - y0) - 2 * edge_mm
    pts = _hull_2d(np.asarray(xy, dtype=np.float64))
    best = None
    angles = [_min_area_angle(pts)]
    angles.append(angles[0] + math.pi / 2)
    angles += [math.radians(a) for a in np.arange(0.0, 180.0, 1.0)]
    for ang in angles:
        c, s = math.cos(ang), math.sin(ang)
        rx = pts[:, 0] * c - pts[:, 1] * s
        ry = pts[:, 0] * s + pts[:, 1] * c
        w, h = float(rx.max() - rx.min()), float(ry.max() - ry.min())
        if w <= W + _EPS and h <= H + _EPS:
            best = (ang, w, h)
            break
    return best


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def _prepare(name, mesh, printer, W, H, support_angle_deg):
    """Base transform (orientation, z rotation, corner at origin, on the bed) and footprint."""
    from printpipe.slicing.orient import orientation_candidates, support_score

    verts = np.asarray(mesh.vertices, dtype=np.float64)
    if len(verts) == 0:
        raise InputError(f"part {name!r} has no vertices; remove it or check the export")
    try:
        hull = np.asarray(mesh.convex_hull.vertices, dtype=np.float64)
    except Exception:
        hull = verts
    tried = [np.eye(3)]
    result = _try_fit(hull, np.eye(3), printer, W, H)
    if result is None:
        cands = orientation_candidates(mesh)[1:]
        cands.sort(key=lambda R: support_score(mesh, R, support_angle_deg=support_angle_deg)
                   ["support_volume_mm3"])
        for R in cands:
            result = _try_fit(hull, R, printer, W, H)
            tried.append(R)
            if result is not None:
                log.warning("%s does not fit the %s as oriented; turned to another orientation "
                            "that fits", name, printer.name)
                break
    if result is None:
        ext = verts.max(axis=0) - verts.min(axis=0)
        raise PrinterError(_no_fit_message(name, ext, printer))
    return (name, *result)


def _try_fit(hull: np.ndarray, R: np.ndarray, printer, W, H):
    p = hull @ R.T
    if p[:, 2].max() - p[:, 2].min() > printer.max_z_mm + _EPS:
        return None
    fit = footprint_fit(p[:, :2], printer, W=W, H=H)
    if fit is None:
        return None
    ang, w, h = fit
    c, s = math.cos(ang), math.sin(ang)
    Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    M = Rz @ R
    q = hull @ M.T
    lo = q.min(axis=0)
    T = np.eye(4)
    T[:3, :3] = M
    T[:3, 3] = -lo  # footprint corner at (0, 0), resting on z = 0
    return T, w, h


def _no_fit_message(name, ext, printer) -> str:
    from printpipe.slicing.printers import list_printers

    dims = sorted(ext, reverse=True)
    bigger = []
    for p in list_printers():
        if p.id == printer.id:
            continue
        vol = sorted([p.bed_x_mm - 6, p.bed_y_mm - 6, p.max_z_mm], reverse=True)
        if all(d <= v for d, v in zip(dims, vol)):
            bigger.append(p.id)
    example = f"e.g. {', '.join(bigger)}" if bigger else "no built-in profile is large enough"
    return (f"{name} is {ext[0]:.1f} x {ext[1]:.1f} x {ext[2]:.1f} mm and fits the {printer.name} "
            f"({printer.volume_text}) in no orientation; printpipe prints models 1:1 and never "
            f"scales them: choose a larger printer with --printer ({example}), export fewer parts "
            "with --parts, or split the model")


def _hull_2d(pts: np.ndarray) -> np.ndarray:
    """Convex hull of 2-D points (monotone chain); returns the hull vertices."""
    pts = np.unique(np.round(pts, 9), axis=0)
    if len(pts) < 3:
        return pts
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]

    def half(points):
        out: list = []
        for p in points:
            while len(out) >= 2:
                o, a = out[-2], out[-1]
                if (a[0] - o[0]) * (p[1] - o[1]) - (a[1] - o[1]) * (p[0] - o[0]) <= 0:
                    out.pop()
                else:
                    break
            out.append(p)
        return out

    lower = half(pts)
    upper = half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _min_area_angle(hull: np.ndarray) -> float:
    """Rotation angle that aligns the minimum-area bounding rectangle with the axes."""
    if len(hull) < 3:
        return 0.0
    edges = np.roll(hull, -1, axis=0) - hull
    angs = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), math.pi / 2))
    best, best_a = math.inf, 0.0
    for a in angs:
        c, s = math.cos(-a), math.sin(-a)
        rx = hull[:, 0] * c - hull[:, 1] * s
        ry = hull[:, 0] * s + hull[:, 1] * c
        area = (rx.max() - rx.min()) * (ry.max() - ry.min())
        if area < best - 1e-9:
            best, best_a = area, -a
    return best_a


class _MaxRects:
    """MaxRects bin (best short side fit), rectangles may turn by 90 degrees."""

    def __init__(self, width: float, height: float):
        self.free = [(0.0, 0.0, width, height)]

    def insert(self, w: float, h: float):
        best = None
        for fx, fy, fw, fh in self.free:
            for turned, (rw, rh) in ((False, (w, h)), (True, (h, w))):
                if rw <= fw + _EPS and rh <= fh + _EPS:
                    short = min(fw - rw, fh - rh)
                    long_ = max(fw - rw, fh - rh)
                    key = (short, long_, fy, fx)
                    if best is None or key < best[0]:
                        best = (key, fx, fy, rw, rh, turned)
        if best is None:
            return None
        _, x, y, rw, rh, turned = best
        self._split((x, y, rw, rh))
        return x, y, turned

    def _split(self, used):
        ux, uy, uw, uh = used
        new = []
        for fx, fy, fw, fh in self.free:
            if ux >= fx + fw - _EPS or ux + uw <= fx + _EPS or uy >= fy + fh - _EPS or uy + uh <= fy + _EPS:
                new.append((fx, fy, fw, fh))
                continue
            if ux > fx + _EPS:
                new.append((fx, fy, ux - fx, fh))
            if ux + uw < fx + fw - _EPS:
                new.append((ux + uw, fy, fx + fw - (ux + uw), fh))
            if uy > fy + _EPS:
                new.append((fx, fy, fw, uy - fy))
            if uy + uh < fy + fh - _EPS:
                new.append((fx, uy + uh, fw, fy + fh - (uy + uh)))
        # drop rectangles contained in others
        pruned = []
        for i, a in enumerate(new):
            contained = False
            for j, b in enumerate(new):
                if i != j and a[0] >= b[0] - _EPS and a[1] >= b[1] - _EPS and \
                        a[0] + a[2] <= b[0] + b[2] + _EPS and a[1] + a[3] <= b[1] + b[3] + _EPS:
                    if a != b or i > j:
                        contained = True
                        break
            if not contained:
                pruned.append(a)
        self.free = pruned
