"""Choose how a part lies on the bed: least support first, then least height.

A candidate orientation is a "down" direction of the mesh that becomes -z. Candidates are the 26
axis-aligned directions, the normals of the largest flat facets of the convex hull (the part can
rest on them) and the principal axes of the vertices. Each is scored by an estimate of the support
volume: every downward-facing triangle that leans more than ``support_angle_deg`` from vertical
(the slicer's overhang rule) contributes its projected area times its height above the bed;
triangles within half a millimetre of the bed rest on it and need none. The score over-estimates
support under parts that shadow each other, but ranks orientations well and costs a few
milliseconds per candidate even for 400 k triangles.

``mode="none"`` keeps the patient frame (superior up) and only moves the part onto the bed.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from printpipe.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["orient", "orientation_candidates", "support_score"]

_BED_CONTACT_MM = 0.5     # triangles this close to the bed rest on it
_TIE_REL = 0.05           # support volumes within 5 % (+ _TIE_ABS) count as equal; height decides
_TIE_ABS_MM3 = 50.0


def orient(mesh, printer=None, mode: str = "auto", *, support_angle_deg: float = 55.0):
    """Rotation that puts ``mesh`` on the bed with little support, then little height.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        Closed part in mm (any frame).
    printer : Printer, optional
        When given, orientations that fit its build volume (in some rotation about z) are
        preferred over those that do not.
    mode : {"auto", "none"}
        ``"auto"`` searches the candidates; ``"none"`` keeps the frame and only translates.
    support_angle_deg : float
        Overhang threshold from the vertical, as ``SliceConfig.support_angle_deg`` (55).

    Returns
    -------
    transform : (4, 4) ndarray
        Rigid transform (rotation + translation, never a scale): the part rests on z = 0 with its
        bounding box centred on x = y = 0.
    info : dict
        ``mode``, ``down_vector`` (the mesh direction now pointing down), ``rotation_deg``,
        ``support_volume_mm3``, ``support_area_mm2``, ``height_mm``, ``original_support_volume_mm3``
        (in the given frame), ``candidates``, ``fits``.
    """
    if mode not in ("auto", "none"):
        raise InputError(f"orientation mode {mode!r} is unknown; use 'auto' or 'none'")
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    if len(verts) == 0 or len(mesh.faces) == 0:
        raise InputError("cannot orient an empty mesh; check that the part has triangles")
    geo = _Geometry(mesh, support_angle_deg)
    base = geo.score(np.eye(3))
    if mode == "none":
        R = np.eye(3)
        chosen = base
        n_cand = 1
        fits = _fits(geo, R, printer) if printer is not None else None
    else:
        cands = orientation_candidates(mesh)
        n_cand = len(cands)
        scored = [(geo.score(R), R) for R in cands]
        best_v = min(sc["support_volume_mm3"] for sc, _ in scored)
        tol = best_v * (1 + _TIE_REL) + _TIE_ABS_MM3
        # lexicographic: support volume (with a tolerance), then height
        scored.sort(key=lambda it: (it[0]["support_volume_mm3"] > tol,
                                    it[0]["height_mm"] if it[0]["support_volume_mm3"] <= tol
                                    else it[0]["support_volume_mm3"]))
        chosen, R = scored[0]
        fits = None
        if printer is not None:
            fits = False
            for sc, Rc in scored:  # the best one that fits the printer, if any does
                if _fits(geo, Rc, printer):
                    chosen, R, fits = sc, Rc, True
                    break
    T = _place(verts, R)
    down = R.T @ np.array([0.0, 0.0, -1.0])
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(R) - 1) / 2))))
    info = {
        "mode": mode,
        "down_vector": [round(float(v), 6) for v in down],
        "rotation_deg": round(angle, 3),
        "support_volume_mm3": round(float(chosen["support_volume_mm3"]), 1),
        "support_area_mm2": round(float(chosen["support_area_mm2"]), 1),
        "height_mm": round(float(chosen["height_mm"]), 3),
        "original_support_volume_mm3": round(float(base["support_volume_mm3"]), 1),
        "candidates": n_cand,
        "fits": fits,
    }
    log.debug("orient: %s", info)
    return T, info


def orientation_candidates(mesh, *, hull_facets: int = 20) -> list[np.ndarray]:
    """Rotation matrices (3x3) of the candidate orientations, without near-duplicates.

    The 26 axis-aligned down directions, the ``hull_facets`` largest convex-hull facets and the
    six principal directions; the identity comes first.
    """
    dirs = [np.array([0.0, 0.0, -1.0])]
    for i in (-1, 0, 1):
        for j in (-1, 0, 1):
            for k in (-1, 0, 1):
                if i or j or k:
                    dirs.append(np.array([i, j, k], dtype=np.float64))
    try:
        hull = mesh.convex_hull
        areas = np.asarray(hull.facets_area)
        normals = np.asarray(hull.facets_normal)
        if len(areas):
            for idx in np.argsort(areas)[::-1][:hull_facets]:
                dirs.append(normals[idx])
    except Exception as exc:  # qhull fails on degenerate (flat) input; the axis set remains
        log.debug("convex hull candidates skipped: %s", exc)
    v = np.asarray(mesh.vertices, dtype=np.float64)
    if len(v) >= 3:
        _, vecs = np.linalg.eigh(np.cov((v - v.mean(0)).T))
        for c in range(3):
            dirs.append(vecs[:, c])
            dirs.append(-vecs[:, c])
    out: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    for d in dirs:
        d = d / np.linalg.norm(d)
        if any(float(d @ k) > math.cos(math.radians(2.0)) for k in kept):
            continue
        kept.append(d)
        out.append(_rotation_down(d))
    return out


def support_score(mesh, R=None, *, support_angle_deg: float = 55.0) -> dict:
    """Support estimate of ``mesh`` rotated by ``R`` (3x3, default identity).

    Returns
    -------
    dict
        ``support_volume_mm3``, ``support_area_mm2`` (projected overhang area), ``height_mm``.
    """
    return _Geometry(mesh, support_angle_deg).score(np.eye(3) if R is None else np.asarray(R, float))


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

class _Geometry:
    """Per-face data reused by every candidate."""

    def __init__(self, mesh, support_angle_deg: float):
        tri = np.asarray(mesh.triangles, dtype=np.float64)
        cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        dbl = np.linalg.norm(cross, axis=1)
        ok = dbl > 0
        self.normals = cross[ok] / dbl[ok, None]
        self.areas = 0.5 * dbl[ok]
        self.centroids = tri[ok].mean(axis=1)
        self.vertices = np.asarray(mesh.vertices, dtype=np.float64)
        try:
            self.hull_vertices = np.asarray(mesh.convex_hull.vertices, dtype=np.float64)
        except Exception:
            self.hull_vertices = self.vertices
        self.sin_limit = math.sin(math.radians(support_angle_deg))

    def score(self, R: np.ndarray) -> dict:
        up = R[2]  # z row: z' = up . p
        nz = self.normals @ up
        cz = self.centroids @ up
        hz = self.hull_vertices @ up
        zmin, zmax = float(hz.min()), float(hz.max())
        over = (-nz > self.sin_limit) & (cz - zmin > _BED_CONTACT_MM)
        proj = self.areas[over] * (-nz[over])
        return {
            "support_volume_mm3": float(np.sum(proj * (cz[over] - zmin))),
            "support_area_mm2": float(proj.sum()),
            "height_mm": zmax - zmin,
        }


def _rotation_down(d: np.ndarray) -> np.ndarray:
    """Rotation taking unit vector ``d`` to -z (the smallest such rotation)."""
    target = np.array([0.0, 0.0, -1.0])
    c = float(d @ target)
    if c > 1 - 1e-12:
        return np.eye(3)
    if c < -1 + 1e-12:  # d = +z: turn over about x
        return np.diag([1.0, -1.0, -1.0])
    axis = np.cross(d, target)
    s = np.linalg.norm(axis)
    axis /= s
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + s * K + (1 - c) * (K @ K)


def _place(verts: np.ndarray, R: np.ndarray) -> np.ndarray:
    """4x4: rotate by R, then rest on z = 0 with the xy bounding box centred on the origin."""
    p = verts @ R.T
    lo, hi = p.min(axis=0), p.max(axis=0)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = [-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]]
    return T


def _fits(geo: _Geometry, R: np.ndarray, printer) -> bool:
    from printpipe.slicing.layout import footprint_fit

    p = geo.hull_vertices @ R.T
    if p[:, 2].max() - p[:, 2].min() > printer.max_z_mm + 1e-9:
        return False
    return footprint_fit(p[:, :2], printer) is not None
