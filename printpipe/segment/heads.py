"""Femoral heads as spheres: found by a gradient Hough vote, fitted to the head's surface, and
accepted only when a sphere of human size sits in a bony cup (the acetabulum) with a partner of
about the same size on the other side of the body.

Everything here is in patient millimetres (LPS: +x the patient's left, +z superior): the image
axes and the patient position (head- or feet-first, prone or supine) enter only through the
volume's affine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from printpipe.segment.geometry import fit_sphere
from printpipe.volume import Volume

log = logging.getLogger(__name__)

#: adult femoral head diameters (mm): 38-58 (Mahaisavariya 2002; Noble 1988 give 40-55 in most
#: adults); the search allows a little more for children's and very large heads
HEAD_DIAMETER_MM = (34.0, 62.0)
#: grid (mm) of the smoothed copy the search runs on, and the smoothing (mm)
_GRID_MM = 2.0
_SMOOTH_MM = 1.2
#: an edge: smoothed HU gradient of at least this (HU/mm) on a voxel between 100 and 1000 HU
_EDGE_HU_MM = 25.0
#: the centres of both femoral heads lie 120-240 mm apart (adult inter-head distance ~150-220 mm;
#: the greater trochanters, the next pair of round bones, lie ~260-330 mm apart),
#: at about the same height and depth (the pelvis tilts, but by a few degrees side to side)
_PAIR_DX_MM = (120.0, 240.0)
_PAIR_DZ_MM = 30.0
_PAIR_DY_MM = 40.0
#: a sphere fit is a femoral head when its surface residual (rms, mm) is below this ...
_FIT_RMS_MM = 2.0
#: ... at least this fraction of the directions found the free surface (the cup, the neck and the
#: fovea hide most of it) ...
_FIT_INLIERS = 0.08
#: ... and an acetabular roof covers at least this fraction of the directions within 60 deg of
#: superior: the ray ends at a joint space with the cup's cortex beyond it (a shaft, a vertebral
#: body or a trochanter has none; a head under the roof has 0.3-0.8 at 1-3 mm slices)
_CUP_COVER = 0.25
_CUP_HU = 300.0
_CUP_REACH_MM = 14.0
#: median HU inside a head (trabecular bone); below it the sphere is a shaft's canal
_CORE_HU = 120.0
_N_DIRS = 160
#: soft tissue (muscle 40-60 HU, fat) reads below this on the smoothed grid next to bone
_SOFT_HU = 90.0
#: a joint space is at least this much darker (HU) than the head's inside and the cup beyond it
_VALLEY_HU = 80.0
_N_CANDIDATES = 16
#: the joint line (between the two cartilage layers) lies at most this far (mm) outside the head's
#: bone surface: the head's cartilage is 1.2-2 mm thick in adults. Measured on pelvic-ref002, whose
#: left head fits ~2 mm high: hip L / femur L Dice 0.892 / 0.930 at 3 mm (the bound used before),
#: 0.896 / 0.934 at 2 mm, 0.900 / 0.937 at 1.5 mm; the pelvic-ref003 femurs do not change
_CARTILAGE_MM = 2.0


@dataclass(frozen=True)
class HeadSphere:
    """A femoral head: ``center`` (LPS mm), surface radius, the joint-space radius (where the
    cartilage between head and cup is darkest), fit residual and support, cup cover, core HU.
    (The neck's axis is measured from the segmented bone, in :func:`printpipe.segment.anatomy.markers`.)"""

    center: np.ndarray
    radius_mm: float
    joint_mm: float
    rms_mm: float
    inliers: float
    cup_cover: float
    core_hu: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"center_lps": [round(float(v), 1) for v in self.center], "diameter_mm": round(2 * self.radius_mm, 1),
                "joint_radius_mm": round(self.joint_mm, 1), "rms_mm": round(self.rms_mm, 2),
                "inliers": round(self.inliers, 2), "cup_cover": round(self.cup_cover, 2),
                "core_hu": round(self.core_hu)}


class _Smoothed:
    """A smoothed copy of the HU volume on a ~2 mm grid, sampled in LPS millimetres."""

    def __init__(self, vol: Volume):
        f = tuple(max(1, int(round(_GRID_MM / s))) for s in vol.spacing)
        nz, ny, nx = (n // k * k for n, k in zip(vol.shape, f))
        a = vol.hu[:nz, :ny, :nx].reshape(nz // f[0], f[0], ny // f[1], f[1], nx // f[2], f[2])
        a = a.mean(axis=(1, 3, 5), dtype=np.float32)
        self.sp = np.array([s * k for s, k in zip(vol.spacing, f)])
        self.a = ndi.gaussian_filter(a, sigma=[_SMOOTH_MM / s for s in self.sp])
        self.f = np.array(f, dtype=float)
        self.vol = vol

    def index(self, xyz: np.ndarray) -> np.ndarray:
        """LPS mm -> fractional index of the coarse grid."""
        return (self.vol.patient_to_index(xyz) - (self.f - 1) / 2) / self.f

    def lps(self, kji: np.ndarray) -> np.ndarray:
        return self.vol.index_to_patient(kji * self.f + (self.f - 1) / 2)

    def sample(self, xyz: np.ndarray) -> np.ndarray:
        k = self.index(xyz.reshape(-1, 3))
        return ndi.map_coordinates(self.a, k.T, order=1, mode="nearest").reshape(xyz.shape[:-1])


def find_femoral_heads(vol: Volume, body: np.ndarray | None = None) -> tuple[dict[str, HeadSphere], dict[str, Any]]:
    """Both femoral heads, ``{"left": HeadSphere, "right": HeadSphere}``, or ``{}`` when no pair of
    spheres passes the checks; with a record of the candidates tried."""
    sm = _Smoothed(vol)
    cands = _candidates(sm, body)
    dirs = _fibonacci(_N_DIRS)
    fits = []
    for c, votes in cands:
        h = _fit(sm, c, dirs)
        if h is not None:
            fits.append((h, votes))
    info: dict[str, Any] = {"candidates": len(cands), "spheres": [dict(h.as_dict(), votes=round(float(v), 2))
                                                                  for h, v in fits]}
    pair = _best_pair([h for h, _ in fits])
    if pair is None:
        info["found"] = False
        return {}, info
    left, right = sorted(pair, key=lambda h: -h.center[0])  # +x is the patient's left (LPS)
    info["found"] = True
    return {"left": left, "right": right}, info


def _fibonacci(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    th = np.pi * (1 + 5 ** 0.5) * i
    return np.c_[np.cos(th) * np.sin(phi), np.sin(th) * np.sin(phi), np.cos(phi)]


def _candidates(sm: _Smoothed, body: np.ndarray | None) -> list[tuple[np.ndarray, float]]:
    """Centres voted for by bone edges from above, from below and from the side (a sphere is seen
    from all sides; a shaft, a cylinder, only from the side)."""
    a, sp = sm.a, sm.sp
    g = np.stack(np.gradient(a, *sp))
    mag = np.sqrt((g ** 2).sum(0))
    sel = (mag > _EDGE_HU_MM) & (a > 100) & (a < 1000)
    if body is not None:
        f = sm.f.astype(int)
        b = body[::f[0], ::f[1], ::f[2]][: a.shape[0], : a.shape[1], : a.shape[2]]
        sel[: b.shape[0], : b.shape[1], : b.shape[2]] &= b
    idx = np.argwhere(sel)
    up = (g[:, sel] / mag[sel]).T  # uphill: towards the brighter inside of a bone
    w = np.minimum(mag[sel] / 150.0, 1.0).astype(np.float32)
    # which way is superior in the patient: the third row of the direction matrix per index axis
    sup = sm.vol.direction[2] * np.sign(np.ones(3))
    vert = up @ sup
    grp = np.where(vert > 0.35, 0, np.where(vert < -0.35, 1, 2))
    accs = [np.zeros(a.shape, np.float32) for _ in range(3)]
    r0, r1 = HEAD_DIAMETER_MM[0] / 2, HEAD_DIAMETER_MM[1] / 2
    for r in np.arange(r0, r1 + 0.5, 1.0):
        p = np.rint(idx + up * r / sp).astype(np.int64)
        ok = np.all((p >= 0) & (p < a.shape), axis=1)
        for gi in range(3):
            o = ok & (grp == gi)
            np.add.at(accs[gi], tuple(p[o].T), w[o])
    accs = [ndi.gaussian_filter(x, sigma=[2.0 / s for s in sp]) for x in accs]
    acc = np.cbrt(accs[0] * accs[1] * accs[2])
    mx = ndi.maximum_filter(acc, size=tuple(int(round(20 / s)) | 1 for s in sp))
    pk = np.argwhere((acc == mx) & (acc > 0))
    vals = acc[tuple(pk.T)]
    order = np.argsort(-vals)[:_N_CANDIDATES]
    return [(sm.lps(pk[o][None].astype(float))[0], float(vals[o])) for o in order]


def _free_surface(prof: np.ndarray, rr: np.ndarray) -> np.ndarray:
    """Per ray (rows of ``prof``, HU at radii ``rr``): where the head's free surface lies, or nan.

    A ray that leaves the head into soft tissue (below _SOFT_HU) within the head-radius range
    crosses the head's cortex last; its surface is the steepest fall of HU in the few millimetres
    before the soft tissue. Rays into the acetabulum, the neck or the pelvis meet bone again and
    find none. (The inside of a head is no guide: fatty marrow around a dense core of compression
    trabeculae makes a dark ring inside the cortex that looks like a joint space.)
    """
    n = prof.shape[0]
    step = rr[1] - rr[0]
    band = (rr >= HEAD_DIAMETER_MM[0] / 2) & (rr <= HEAD_DIAMETER_MM[1] / 2 + 4)
    soft = band[None] & (prof < _SOFT_HU)
    has = soft.any(axis=1)
    ks = np.argmax(soft, axis=1)
    d = np.gradient(prof, step, axis=1)
    back = int(round(6.0 / step))
    out = np.full(n, np.nan)
    for i in np.flatnonzero(has):
        k0 = max(ks[i] - back, 0)
        seg = d[i, k0:ks[i] + 1]
        k = k0 + int(np.argmin(seg))
        if -seg.min() >= 0.8 * _EDGE_HU_MM and prof[i, k0] > 200.0:
            out[i] = rr[k]
    return out


def _fit(sm: _Smoothed, c0: np.ndarray, dirs: np.ndarray) -> HeadSphere | None:
    """Fit the head around ``c0`` to its free surface (:func:`_free_surface`): a trimmed
    least-squares sphere, re-centred until it settles; then the joint space under the cup."""
    rr = np.arange(0.0, HEAD_DIAMETER_MM[1] / 2 + _CUP_REACH_MM + 6, 0.5)
    c = np.asarray(c0, float)
    for _ in range(6):
        prof = sm.sample(c[None, None] + dirs[:, None] * rr[None, :, None])
        r_dir = _free_surface(prof, rr)
        ok = np.isfinite(r_dir)
        if ok.sum() < 0.2 * len(dirs):
            return None
        pts = c + dirs[ok] * r_dir[ok, None]
        # robust start: the rays that agree with the median radius (rays that crossed a thin cup
        # before reaching soft tissue end further out and would pull a plain fit outwards)
        near = np.abs(r_dir[ok] - np.median(r_dir[ok])) < 4.0
        if near.sum() < 0.15 * len(dirs):
            return None
        cc, r = fit_sphere(pts[near])
        for it in range(5):
            res = np.abs(np.linalg.norm(pts - cc, axis=1) - r)
            keep = res < max(2.0, 1.5 * np.median(res))
            if keep.sum() < 0.15 * len(dirs):
                return None
            cc, r = fit_sphere(pts[keep])
        moved = float(np.linalg.norm(cc - c))
        if np.linalg.norm(cc - c0) > 20.0 or not np.isfinite(r):
            return None
        c = cc
        if moved < 0.5:
            break
    res = np.linalg.norm(pts - c, axis=1) - r
    inl = np.abs(res) < 2.0
    rms = float(np.sqrt(np.mean(res[inl] ** 2))) if inl.any() else np.inf
    inliers = float(inl.sum()) / len(dirs)
    if not (HEAD_DIAMETER_MM[0] / 2 <= r <= HEAD_DIAMETER_MM[1] / 2):
        return None
    # a head is full of trabecular bone; a shaft's canal holds fatty marrow
    core = sm.sample(c[None, None] + dirs[:, None] * np.array([0.0, 0.3 * r, 0.6 * r])[None, :, None])
    core_hu = float(np.median(core))
    if core_hu < _CORE_HU:
        return None
    # the acetabular roof: rays within 60 deg of superior meet a dark joint space just outside the
    # surface and the cup's cortex beyond it
    up = dirs[dirs[:, 2] > 0.5]
    rj = np.arange(r - 1.0, r + 5.01, 0.5)
    rc = np.arange(r, r + 12.01, 0.5)
    pj = sm.sample(c[None, None] + up[:, None] * rj[None, :, None])
    pc = sm.sample(c[None, None] + up[:, None] * rc[None, :, None])
    jmin = pj.min(axis=1)
    cov = (pc.max(axis=1) - jmin >= _VALLEY_HU) & (pc.max(axis=1) > _CUP_HU)
    cover = float(np.mean(cov))
    joint = float(np.median(rj[np.argmin(pj, axis=1)][cov])) if cov.any() else r + 1.0
    # the joint space between the two cartilage layers lies one layer outside the head; a valley
    # found further out is the ilium's marrow beyond a thin roof
    joint = float(np.clip(joint, r + 0.5, r + _CARTILAGE_MM))
    return HeadSphere(center=c, radius_mm=float(r), joint_mm=joint, rms_mm=rms, inliers=inliers,
                      cup_cover=cover, core_hu=core_hu)


def _good(h: HeadSphere) -> bool:
    return h.rms_mm <= _FIT_RMS_MM and h.inliers >= _FIT_INLIERS and h.cup_cover >= _CUP_COVER


def _best_pair(fits: list[HeadSphere]) -> tuple[HeadSphere, HeadSphere] | None:
    """The pair of good spheres side by side (120-260 mm apart in x, same height and depth, radii
    within 15 %) with the best combined fit."""
    good = [h for h in fits if _good(h)]
    best, score = None, -np.inf
    for i, a in enumerate(good):
        for b in good[i + 1:]:
            d = np.abs(a.center - b.center)
            if not (_PAIR_DX_MM[0] <= d[0] <= _PAIR_DX_MM[1] and d[2] <= _PAIR_DZ_MM and d[1] <= _PAIR_DY_MM):
                continue
            if abs(a.radius_mm - b.radius_mm) > 0.15 * max(a.radius_mm, b.radius_mm):
                continue
            # a head is full of dense trabecular bone (its compression trabeculae): a trochanter's
            # or a shaft's inside is darker
            core = min(a.core_hu, b.core_hu) / 300.0
            s = (a.inliers + b.inliers + a.cup_cover + b.cup_cover + min(core, 1.5) - 0.2 * (a.rms_mm + b.rms_mm)
                 - d[2] / _PAIR_DZ_MM)
            if s > score:
                best, score = (a, b), s
    return best
