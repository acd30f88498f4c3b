"""Femoral heads as spheres: found by a gradient Hough vote, fitted to the head's surface, and
accepted only when a sphere of human size sits in a bony cup (the acetabulum) with a partner of
about the same size on the other side of the body.

A hip prosthesis replaces the head by a metal ball (22-40 mm bearings; the metal reads above
``metal_hu``, usually clipped at 3071 HU). A metal ball of implant size, seated in a cup (metal
shell or bone beyond a dark liner), stands in for that side's head (:class:`ImplantHead`): its
partner is a natural head, or another implant head, at the mirror position (the same 120-240 mm
apart, height and depth rules); the two need not be of the same size, since a bearing's size is the
manufacturer's, not the patient's. Whether the ball is concentric with its cup is measured and
recorded; :func:`printpipe.segment.naming.check_parts` names that side's femur only when it is.

Everything here is in patient millimetres (LPS: +x the patient's left, +z superior): the image
axes and the patient position (head- or feet-first, prone or supine) enter only through the
volume's affine.
"""

from __future__ import annotations

import logging
import math
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
#: the centres of both femoral heads lie 120-240 mm apart in the axial plane (adult inter-head
#: distance ~150-220 mm; the greater trochanters, the next pair of round bones, lie ~260-330 mm
#: apart), at about the same height (the pelvis tilts side to side by a few degrees) ...
_PAIR_DX_MM = (120.0, 240.0)
_PAIR_DZ_MM = 30.0
#: ... and the line between them runs left-right within this angle (deg) in the axial plane: a
#: patient lying turned on the couch (a trauma patient on a board, a painful hip) turns the pair;
#: a fixed limit of 40 mm in depth lost both heads of pelvic-ref003 turned by 15 deg
_PAIR_YAW_DEG = 30.0
#: ... and their trabecular cores alike: the two hips of one person differ in bone density by a
#: few per cent (side-to-side DXA), a head and a trochanter (fatty, 150-200 HU against a head's
#: 300-400) by half. With 10 HU of noise added to pelvic-ref002 its deep left head's own fit failed
#: and the left trochanter (core 171 HU) was paired with the right head (374 HU)
_PAIR_CORE_RATIO = 0.6
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
#: times a fit may restart from the sphere through all its surface points when too few rays agree
#: with the median radius (an off-centre start)
_RECENTRE = 1
#: a metal ball of this diameter (mm) is an implant head: total-hip bearings are 22-40 mm (22.2, 26,
#: 28, 32, 36, 40); larger metal heads (hemiarthroplasty, large metal-on-metal bearings, up to ~58 mm)
#: are allowed too, smaller metal (screws, a stem 10-16 mm thick) is not a head
IMPLANT_HEAD_MM = (20.0, 60.0)
#: the cup around an implant head: its inner surface (the liner's outside, or the metal shell's
#: inside) lies this far (mm) outside the ball: polyethylene liners are 4-10 mm thick, a ceramic or
#: metal bearing a gap under a millimetre
_LINER_MM = (0.0, 16.0)
#: how far (mm) beyond the ball the cup is looked for: a liner's thickness and a subluxation
_IMPLANT_REACH_MM = 30.0
#: an empty cup (its head dislocated): a thin piece of metal (at most _SHELL_MM thick, at least
#: _CUP_SHELL_CM3) on a sphere of cup size (acetabular shells are 40-72 mm across: mid-shell radius
#: 18-36 mm) over about a hemisphere, whose head, a metal ball of implant size, lies within
#: _DISLOCATED_MM of its centre
_SHELL_MM = 8.0
_CUP_SHELL_CM3 = 3.0
_CUP_RADIUS_MM = (17.0, 37.0)
_DISLOCATED_MM = 120.0
#: an implant head is concentric with its cup when the cup's centre lies within this distance (mm)
#: of the ball's: liners wear by ~0.1 mm a year (2 mm after 20 years); more is a worn-through
#: liner or a subluxed hip, where the femur no longer sits where the anatomy puts it
CONCENTRIC_MM = 3.0
#: the joint line (between the two cartilage layers) lies at most this far (mm) outside the head's
#: bone surface: the head's cartilage is 1.2-2 mm thick in adults. Measured on pelvic-ref002, whose
#: left head fits ~2 mm high: hip L / femur L Dice 0.892 / 0.930 at 3 mm (the bound used before),
#: 0.896 / 0.934 at 2 mm, 0.900 / 0.937 at 1.5 mm; the pelvic-ref003 femurs do not change
_CARTILAGE_MM = 2.0
#: a head's surface on the full-resolution HU (:func:`_refine`): within this distance (mm) outside
#: the head's subchondral bone lies a layer below _DARK_HU (cartilage ~100 HU, joint fluid 0-20,
#: muscle 40-60, fat) that is at least _EDGE_DROP_HU darker than the bone within as far inside.
#: Cancellous bone inside a head varies by less (its trabeculae blur to 200-400 HU at 1-3 mm voxels)
_EDGE_MM = 2.0
_DARK_HU = 150.0
_EDGE_DROP_HU = 150.0
#: the refined centre lies within this distance (mm) of the fit's (the two solutions of
#: pelvic-ref003's left head lie 12.5 mm apart)
_REFINE_MM = 16.0
#: directions sampled for the edge share (about 1 per 25 mm^2 of a 50 mm head's surface)
_N_EDGE_DIRS = 400
#: a head with less than this fraction of its partner's edge share is checked against the
#: partner's mirror image (:func:`_mirror_check`): the two hips of one person differ little, a head
#: and another round bone a lot (0.77 on pelvic-ref002 sharpened; 0.82-1.0 for true pairs under
#: every kernel and calibration tried on both real CTs)
_EDGE_SHARE_RATIO = 0.85
#: the radii (mm) an edge is looked for at, and the profiles' radii around them (0.5 mm apart)
_EDGE_W = int(round(_EDGE_MM / 0.5))
_EDGE_RR = np.arange(HEAD_DIAMETER_MM[0] / 2 - _EDGE_MM, HEAD_DIAMETER_MM[1] / 2 + _EDGE_MM + 0.01, 0.5)
_EDGE_RADII = _EDGE_RR[_EDGE_W:-_EDGE_W]


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
    #: the share of directions in which the sphere's surface is an edge of bone on the
    #: full-resolution HU (:func:`_refine`); 0 when not measured
    edge_share: float = 0.0
    #: a metal implant head (:class:`ImplantHead`) rather than bone
    implant = False

    def as_dict(self) -> dict[str, Any]:
        return {"center_lps": [round(float(v), 1) for v in self.center], "diameter_mm": round(2 * self.radius_mm, 1),
                "joint_radius_mm": round(self.joint_mm, 1), "rms_mm": round(self.rms_mm, 2),
                "inliers": round(self.inliers, 2), "cup_cover": round(self.cup_cover, 2),
                "core_hu": round(self.core_hu), "edge_share": round(self.edge_share, 2)}


@dataclass(frozen=True)
class ImplantHead(HeadSphere):
    """The metal head of a hip prosthesis, standing in for a femoral head. ``center`` is its cup's
    centre (the centre of rotation the other hip mirrors), ``ball_center`` the ball's; ``radius_mm``
    is the metal ball's; ``joint_mm`` the outer radius of its cup (metal shell or reamed bone), so that the
    acetabular marker lies in the bone beyond the cup; ``cup_offset_mm`` how far the cup's centre
    lies from the ball's (0 for a concentric bearing), ``cup_mm`` the cup's inner radius (liner
    included; its outer radius when the bearing is fused) and ``metal_hu`` the threshold the metal
    was found with."""

    cup_offset_mm: float = 0.0
    cup_mm: float = 0.0
    metal_hu: float = 2500.0
    #: head and cup one piece in the image (no liner between them to see): ``cup_mm`` is then the
    #: cup's outer radius
    fused: bool = False
    #: the metal ball's centre (``center`` is the cup's: the acetabulum's centre of rotation)
    ball_center: np.ndarray | None = None
    implant = True

    @property
    def concentric(self) -> bool:
        return self.cup_offset_mm <= CONCENTRIC_MM

    def as_dict(self) -> dict[str, Any]:
        ball = self.center if self.ball_center is None else self.ball_center
        return dict(super().as_dict(), implant=True, ball_center_lps=[round(float(v), 1) for v in ball],
                    cup_offset_mm=round(self.cup_offset_mm, 1),
                    cup_inner_diameter_mm=None if self.fused else round(2 * self.cup_mm, 1),
                    cup_outer_diameter_mm=round(2 * self.joint_mm, 1), bearing_fused=self.fused,
                    concentric=self.concentric)


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


def find_femoral_heads(vol: Volume, body: np.ndarray | None = None, metal_hu: float | None = None
                       ) -> tuple[dict[str, HeadSphere], dict[str, Any]]:
    """Both femoral heads, ``{"left": HeadSphere, "right": HeadSphere}``, or ``{}`` when no pair of
    spheres passes the checks; with a record of the candidates tried. With ``metal_hu``, a metal
    implant head in its cup (:class:`ImplantHead`) can stand in for a femoral head, and a fitted
    sphere with metal inside is no femoral head."""
    sm = _Smoothed(vol)
    cands = _candidates(sm, body)
    dirs = _fibonacci(_N_DIRS)
    edge_dirs = _fibonacci(_N_EDGE_DIRS)
    implants = _implant_heads(vol, metal_hu, body, dirs) if metal_hu is not None else []
    fits = []
    for c, votes in cands:
        h = _fit(sm, c, dirs)
        if h is not None and not (metal_hu is not None and _holds_metal(vol, h, metal_hu, dirs)):
            fits.append((h, votes))
    pair = _implant_pair(implants, [h for h, _ in fits]) if implants else None
    if pair is None:
        pair = _best_pair([h for h, _ in fits])
        if pair is None and body is not None and not implants:
            extra = _mirror_fits(sm, vol, body, fits, dirs, metal_hu, edge_dirs)
            if extra:
                fits += extra
                pair = _best_pair([h for h, _ in fits])
    info: dict[str, Any] = {"candidates": len(cands), "spheres": [dict(h.as_dict(), votes=round(float(v), 2))
                                                                  for h, v in fits]}
    if implants:
        info["implant_heads"] = [h.as_dict() for h in implants]
    if pair is None:
        info["found"] = False
        return {}, info
    pair = _mirror_check(sm, body, tuple(_refine(sm, h, [f for f, _ in fits], edge_dirs) for h in pair), edge_dirs)
    left, right = sorted(pair, key=lambda h: -h.center[0])  # +x is the patient's left (LPS)
    info["found"] = True
    info["left"], info["right"] = left.as_dict(), right.as_dict()
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


def _trimmed(pts: np.ndarray, start: np.ndarray, min_keep: float) -> tuple[np.ndarray, float] | None:
    """A sphere fitted to the points ``pts[start]``, then refitted five times to the points of
    ``pts`` that lie within max(2 mm, 1.5 x the median residual) of it; None when fewer than
    ``min_keep`` are left or the fit fails."""
    cc, r = fit_sphere(pts[start])
    for _ in range(5):
        if not np.isfinite(r):
            return None
        res = np.abs(np.linalg.norm(pts - cc, axis=1) - r)
        keep = res < max(2.0, 1.5 * np.median(res))
        if keep.sum() < min_keep:
            return None
        cc, r = fit_sphere(pts[keep])
    return (cc, r) if np.isfinite(r) else None


def _fit(sm: _Smoothed, c0: np.ndarray, dirs: np.ndarray) -> HeadSphere | None:
    """Fit the head around ``c0`` to its free surface (:func:`_free_surface`): a trimmed
    least-squares sphere, re-centred until it settles; then the joint space under the cup."""
    rr = np.arange(0.0, HEAD_DIAMETER_MM[1] / 2 + _CUP_REACH_MM + 6, 0.5)
    c = np.asarray(c0, float)
    recentred = 0
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
            # a vote's centre a few mm off the head's (noise moves the votes' peak) spreads the
            # radii by as much: start again once from the trimmed sphere through all the surface
            # points (before, 20 HU of noise added to pelvic-ref003 lost both heads this way)
            if recentred >= _RECENTRE or len(pts) < 4:
                return None
            recentred += 1
            fit = _trimmed(pts, np.ones(len(pts), bool), 0.15 * len(dirs))
            if fit is None or np.linalg.norm(fit[0] - c0) > 20.0:
                return None
            c = fit[0]
            continue
        fit = _trimmed(pts, near, 0.15 * len(dirs))
        if fit is None:
            return None
        cc, r = fit
        moved = float(np.linalg.norm(cc - c))
        if np.linalg.norm(cc - c0) > 20.0 or not np.isfinite(r):
            return None
        c = cc
        if moved < 0.5:
            break
    return _describe(sm, c, float(r), pts, dirs)


def _describe(sm: _Smoothed, c: np.ndarray, r: float, pts: np.ndarray, dirs: np.ndarray, edge_share: float = 0.0
              ) -> HeadSphere | None:
    """The head sphere (centre ``c``, radius ``r``) with its support: the residual and share of the
    free-surface points ``pts`` on it, its dense core, its cup cover and joint space; None when it
    is of no head's size or its inside is a canal's fatty marrow."""
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
    return HeadSphere(center=np.asarray(c, float), radius_mm=float(r), joint_mm=joint, rms_mm=rms, inliers=inliers,
                      cup_cover=cover, core_hu=core_hu, edge_share=edge_share)


def _edge_rays(vol: Volume, c: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Along the directions ``dirs`` from ``c``, at the radii :data:`_EDGE_RADII` (mm): whether the
    full-resolution HU profile crosses a head's surface there (:func:`_refine`); and the profiles,
    sampled at :data:`_EDGE_RR` (the radii widened by :data:`_EDGE_MM` on both sides)."""
    prof = _sample(vol, c[None, None] + dirs[:, None] * _EDGE_RR[None, :, None])
    w = _EDGE_W
    hi = np.lib.stride_tricks.sliding_window_view(prof, w + 1, axis=1).max(-1)   # over [i, i + w]
    lo = np.lib.stride_tricks.sliding_window_view(prof, w + 1, axis=1).min(-1)
    inner, outer = hi[:, :-w], lo[:, w:]          # inside over [r - w, r], outside over [r, r + w]
    return (outer < _DARK_HU) & (inner - outer >= _EDGE_DROP_HU), prof


def _edge_points(vol: Volume, c: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """The head-surface edges (:func:`_edge_rays`) along the directions ``dirs`` from ``c``, as
    points (LPS mm): one per run of edge radii along a ray, at its steepest fall of HU."""
    edge, prof = _edge_rays(vol, c, dirs)
    fall = np.diff(prof, axis=1)                       # between _EDGE_RR[j] and _EDGE_RR[j + 1]
    e = np.pad(edge, ((0, 0), (1, 1)))
    starts = np.argwhere(~e[:, :-2] & e[:, 1:-1])      # (ray, first edge radius of a run)
    ends = np.argwhere(e[:, 1:-1] & ~e[:, 2:])
    pts = []
    for (i, k0), (_, k1) in zip(starts, ends):
        # the run's edge radii _EDGE_RADII[k0 .. k1] are _EDGE_RR[k0 + w .. k1 + w]; the fall lies
        # within _EDGE_MM of them
        j0, j1 = k0, min(k1 + 2 * _EDGE_W, fall.shape[1] - 1)
        j = j0 + int(np.argmin(fall[i, j0:j1 + 1]))
        pts.append(c + dirs[i] * (_EDGE_RR[j] + 0.25))
    return np.array(pts).reshape(-1, 3)


def _hough_centre(pts: np.ndarray, c0: np.ndarray) -> np.ndarray | None:
    """The centre, on a 2 mm grid within :data:`_REFINE_MM` of ``c0``, of the sphere of head size
    through the most edge points ``pts`` (within 1 mm of its surface): an exhaustive vote, so that
    no local optimum near the fit can hold the search."""
    if len(pts) < 8:
        return None
    g = np.arange(-_REFINE_MM, _REFINE_MM + 0.01, 2.0)
    off = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    off = off[np.linalg.norm(off, axis=1) <= _REFINE_MM]
    r0 = HEAD_DIAMETER_MM[0] / 2
    nb = int(HEAD_DIAMETER_MM[1] / 2 - r0) + 2
    best, best_c = -1, None
    for chunk in np.array_split(np.arange(len(off)), max(1, len(off) // 512)):
        cc = c0 + off[chunk]
        d = np.linalg.norm(pts[None] - cc[:, None], axis=2)          # (centres, points)
        b = np.floor(d - r0).astype(np.int64)
        ok = (b >= 0) & (b < nb)
        flat = (np.arange(len(chunk))[:, None] * (nb + 1) + b)[ok]
        hist = np.bincount(flat, minlength=len(chunk) * (nb + 1)).reshape(len(chunk), nb + 1)
        two = hist[:, :-1] + hist[:, 1:]                               # 2 mm shells
        k = int(np.argmax(two.max(axis=1)))
        if two[k].max() > best:
            best, best_c = int(two[k].max()), cc[k]
    return best_c


def _edge_sphere(vol: Volume, c: np.ndarray, c0: np.ndarray, dirs: np.ndarray
                 ) -> tuple[np.ndarray, float, float] | None:
    """The sphere through the head's edge seen from ``c``: fitted (trimmed least squares) to the
    steepest falls of HU along the rays that cross an edge at the best radius, refitted from its
    own centre until it settles. Returns its centre, radius and edge share (the directions that
    cross an edge at its radius), or None when too few rays do or it leaves :data:`_REFINE_MM`."""
    r = None
    w = _EDGE_W
    for _ in range(4):
        edge, prof = _edge_rays(vol, c, dirs)
        share = edge.mean(axis=0)
        k = int(np.argmax(share)) if r is None else \
            int(np.clip(np.searchsorted(_EDGE_RADII, r), 0, len(_EDGE_RADII) - 1))
        on = edge[:, k]
        if on.sum() < 0.1 * len(dirs):
            return None
        fall = np.diff(prof[on][:, k:k + 2 * w + 1], axis=1)      # radii _EDGE_RR[k .. k + 2w]: r -/+ w
        re = _EDGE_RR[k] + (np.argmin(fall, axis=1) + 0.5) * (_EDGE_RR[1] - _EDGE_RR[0])
        fit = _trimmed(c + dirs[on] * re[:, None], np.ones(int(on.sum()), bool), 0.1 * len(dirs))
        if fit is None or np.linalg.norm(fit[0] - c0) > _REFINE_MM:
            return None
        moved = float(np.linalg.norm(fit[0] - c))
        c, r = fit[0], float(fit[1])
        if moved < 0.25:
            break
    k = int(np.clip(np.searchsorted(_EDGE_RADII, r), 0, len(_EDGE_RADII) - 1))
    return c, r, float(_edge_rays(vol, c, dirs)[0][:, k].mean())


def _refine(sm: _Smoothed, h: HeadSphere, others: list[HeadSphere], dirs: np.ndarray) -> HeadSphere:
    """The head ``h`` moved to where its surface lies on the full-resolution HU.

    The free-surface fit (:func:`_fit`) sees the head only where it leaves into soft tissue, around
    the neck below, and two spheres can fit that equally well: on pelvic-ref003 the 56 mm head and
    a 49 mm sphere 11 mm higher that cuts through the head's own bone and the acetabular roof (a
    10 HU calibration offset, or the 2 mm grid's phase, chose between them). A head's whole
    surface, under the cup too, is an edge: its subchondral bone inside, and outside within
    :data:`_EDGE_MM` cartilage, joint fluid or soft tissue (below :data:`_DARK_HU` and at least
    :data:`_EDGE_DROP_HU` darker). The edges seen along rays from the fit vote, exhaustively on a
    2 mm grid within :data:`_REFINE_MM` (:func:`_hough_centre`; a local search stuck on a wrong
    local optimum 10 mm off), for the centre of the head-sized sphere through most of them; from
    there, from the fit and from the other fits near it a sphere is fitted to the edge
    (:func:`_edge_sphere`), and the sphere on which most directions cross an edge is the head
    (:func:`_edge_head`). The full-resolution grid keeps the thin joint space the smoothed copy
    blurs away, and has no phase that depends on the crop."""
    if h.implant:
        return h
    ref = _edge_head(sm, np.asarray(h.center, float), [np.asarray(o.center, float) for o in others if not o.implant],
                     dirs)
    if ref is None:
        return h
    log.debug("head refined %s r %.1f -> %s r %.1f, edge share %.2f", h.center.round(1), h.radius_mm,
              ref.center.round(1), ref.radius_mm, ref.edge_share)
    return ref


def _edge_head(sm: _Smoothed, c0: np.ndarray, others: list[np.ndarray], dirs: np.ndarray) -> HeadSphere | None:
    """The head whose whole edge lies within :data:`_REFINE_MM` of ``c0`` (:func:`_refine`), from
    ``c0``, from the Hough votes of the edges around it and from the centres ``others`` near it;
    None when no sphere of head size there is crossed by an edge in enough directions."""
    vol = sm.vol
    starts = [c0] + [o for o in others if 3.0 < np.linalg.norm(o - c0) <= _REFINE_MM]
    c = c0
    for _ in range(3):    # the edges seen from a centre nearer the head's vote for it more sharply
        hc = _hough_centre(_edge_points(vol, c, dirs), c0)
        if hc is None:
            break
        starts.append(hc)
        if np.linalg.norm(hc - c) < 2.5:
            break
        c = hc
    best = None
    for st in starts:
        found = _edge_sphere(vol, st, c0, dirs)
        if found is not None and (best is None or found[2] > best[2]):
            best = found
    if best is None:
        return None
    c, r, share = best
    return _describe(sm, c, r, _surface_points(sm, c, dirs), dirs, share)


def _surface_points(sm: _Smoothed, c: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """The free-surface points (:func:`_free_surface`) seen from ``c``."""
    rr = np.arange(0.0, HEAD_DIAMETER_MM[1] / 2 + _CUP_REACH_MM + 6, 0.5)
    r_dir = _free_surface(sm.sample(c[None, None] + dirs[:, None] * rr[None, :, None]), rr)
    ok = np.isfinite(r_dir)
    return c + dirs[ok] * r_dir[ok, None]


def _body_mid_x(vol: Volume, body: np.ndarray) -> float | None:
    """x (LPS mm) of the body's centre of mass, index axis by index axis, then in the patient frame
    (any direction); None for an empty body."""
    cen = []
    for ax in ((1, 2), (0, 2), (0, 1)):
        w = body.sum(axis=ax, dtype=np.int64).astype(float)
        if w.sum() == 0:
            return None
        cen.append(float(np.sum(np.arange(len(w)) * w) / w.sum()))
    return float(vol.index_to_patient(np.array([cen]))[0][0])


#: the mirror plane from the bone's own symmetry: bone (HU at least this, inside the body) in the
#: slab this far (mm) above and below the head, the plane looked for this far (mm) from the
#: body's centre of mass
_MIRROR_BONE_HU = 200.0
_MIRROR_SLAB_MM = 40.0
_MIRROR_SEARCH_MM = 60.0


def _mid_x(vol: Volume, body: np.ndarray, z_mm: float, com: float | None = None) -> float | None:
    """x (LPS mm) of the mid-sagittal plane at the height ``z_mm``: the column about which the
    bone of the slab ``z_mm`` +- :data:`_MIRROR_SLAB_MM`, projected along the patient axis, best
    overlaps its own mirror image (the sum of the smaller of each pair of mirrored projections).
    The hip bones, the femurs and the sacrum are symmetric about it; one-sided bone (an arm beside
    the pelvis, a cut field of view) only lowers every offset's overlap alike. The body's centre of
    mass (:func:`_body_mid_x`) is where the search starts and what is used without bone: on
    pelvic-ref002 it lies 7 mm right of the heads' mid-plane, so the mirror image of the right head
    missed the left one by 16 mm when the field of view began 20 mm below the heads. ``com``: that
    centre when already known. None for an empty body."""
    com = _body_mid_x(vol, body) if com is None else com
    if com is None:
        return None
    k = vol.patient_to_index(np.array([[0.0, 0.0, z_mm - _MIRROR_SLAB_MM], [0.0, 0.0, z_mm + _MIRROR_SLAB_MM]]))[:, 0]
    k0, k1 = int(max(np.floor(k.min()), 0)), int(min(np.ceil(k.max()) + 1, vol.shape[0]))
    if k1 <= k0:
        return com
    proj = ((vol.hu[k0:k1] >= _MIRROR_BONE_HU) & body[k0:k1]).sum(axis=0, dtype=np.int32).astype(np.float32)
    if proj.sum() == 0:
        return com
    nx = proj.shape[1]
    sx = float(vol.spacing[2])
    jc = 0.5 * (proj.shape[0] - 1)
    c_com = vol.patient_to_index(np.array([[com, vol.index_to_patient(np.array([[k0, jc, 0.0]]))[0][1],
                                            z_mm]]))[0][2]
    reach = _MIRROR_SEARCH_MM / sx
    flip = proj[:, ::-1]
    best, best_m = -1.0, None
    # the plane at column m / 2 maps column i to m - i: proj[:, i] against flip[:, nx - 1 - m + i]
    m_lo = max(int(np.floor(2 * (c_com - reach))), 0)
    m_hi = min(int(np.ceil(2 * (c_com + reach))), 2 * nx - 2)
    for m in range(m_lo, m_hi + 1):
        lo, hi = max(0, m - nx + 1), min(nx, m + 1)
        if hi <= lo:
            continue
        a = proj[:, lo:hi]
        b = flip[:, nx - 1 - m + lo:nx - 1 - m + hi]
        score = float(np.minimum(a, b).sum())
        if score > best:
            best, best_m = score, m
    if best_m is None:
        return com
    return float(vol.index_to_patient(np.array([[0.5 * (k0 + k1 - 1), jc, 0.5 * best_m]]))[0][0])


def _mirror_image(vol: Volume, body: np.ndarray, c: np.ndarray, com: float | None = None) -> np.ndarray | None:
    """The mirror image of the point ``c`` (LPS mm) across the mid-sagittal plane at its height
    (:func:`_mid_x`); None for an empty body."""
    mid = _mid_x(vol, body, float(c[2]), com)
    if mid is None:
        return None
    m = np.array(c, float)
    m[0] = 2.0 * mid - m[0]
    return m


def _mirror_check(sm: _Smoothed, body: np.ndarray | None, pair: tuple[HeadSphere, HeadSphere],
                  dirs: np.ndarray) -> tuple[HeadSphere, HeadSphere]:
    """The pair, with a head that shows clearly less edge than its partner (:func:`_refine`; less
    than :data:`_EDGE_SHARE_RATIO` of it) replaced by the head found at the partner's mirror image
    across the mid-sagittal plane (:func:`_mirror_image`), when that one shows more edge and pairs with the partner.
    The two heads of one person are mirror images of each other, seen through the same scanner;
    a fit paired with the wrong round bone (pelvic-ref002 with a sharp kernel: a sphere in the
    ilium 23 mm above the left head, edge share 0.34 against the right head's 0.44) shows less."""
    a, b = pair
    if body is None or a.implant or b.implant or not (a.edge_share > 0 and b.edge_share > 0):
        return pair
    weak, strong = (a, b) if a.edge_share < b.edge_share else (b, a)
    if weak.edge_share >= _EDGE_SHARE_RATIO * strong.edge_share:
        return pair
    m = _mirror_image(sm.vol, body, strong.center)
    if m is None:
        return pair
    alt = _edge_head(sm, m, [], dirs)
    if alt is None or alt.edge_share <= weak.edge_share or not _good(alt) \
            or not _side_by_side(np.abs(alt.center - strong.center)) \
            or abs(alt.radius_mm - strong.radius_mm) > 0.15 * max(alt.radius_mm, strong.radius_mm):
        return pair
    log.debug("head %s (edge share %.2f) replaced by %s (%.2f) at its partner's mirror image",
              weak.center.round(1), weak.edge_share, alt.center.round(1), alt.edge_share)
    return alt, strong


def _mirror_fits(sm: _Smoothed, vol: Volume, body: np.ndarray, fits: list[tuple[HeadSphere, float]],
                 dirs: np.ndarray, metal_hu: float | None, edge_dirs: np.ndarray
                 ) -> list[tuple[HeadSphere, float]]:
    """More fits, started around the mirror image of the best good fit (:func:`_quality`; a fit half
    a pair's distance from the body's centre of mass) across the mid-sagittal plane
    (:func:`_mirror_image`), when the votes' fits hold no pair. The two heads are mirror images:
    where one head shows little free surface (deep in its cup, noise), the votes for it can miss,
    but a start at the other head's mirror image converges on it. Only then and only the best: a dense round piece of ilium above a cup also fits a
    sphere, and its mirror image made a pair that outscored the heads on pelvic-ref003 resampled
    to 1 mm slices; a wrong fit's mirror made a wrong pair on pelvic-ref002 resampled so. The
    pair is chosen among all fits by :func:`_best_pair`."""
    # the body's centre of mass: where a head can lie, and where the mirror plane is looked for from
    mid = _body_mid_x(vol, body)
    if mid is None:
        return []
    # a head lies half the pair's distance (_PAIR_DX_MM) from the plane
    side = [h for h, _ in fits if _good(h) and _PAIR_DX_MM[0] / 2 <= abs(h.center[0] - mid) <= _PAIR_DX_MM[1] / 2]
    if not side:
        return []
    h = max(side, key=_quality)
    m = _mirror_image(vol, body, h.center, mid)
    out: list[tuple[HeadSphere, float]] = []
    # the pelvis lies turned and tilted by a few degrees: the other head sits up to ~10 mm higher or
    # deeper than the mirror image (pelvic-ref002: 10 mm in both), further than a fit converges from
    found = [_fit(sm, m + np.array([0.0, dy, dz]), dirs) for dy, dz in _MIRROR_STEPS]
    # ... and the head whose whole edge lies nearest the mirror image (:func:`_edge_head`): a head
    # deep in its cup shows too little free surface for any of those fits (pelvic-ref002 with HU
    # 20 lower: the left head's fits lay 15-20 mm off it, in the ilium above the cup)
    found.append(_edge_head(sm, m, [], edge_dirs))
    for hm in found:
        if hm is None or any(np.linalg.norm(f.center - hm.center) < 3.0 for f, _ in fits + out):
            continue
        if not (metal_hu is not None and _holds_metal(vol, hm, metal_hu, dirs)):
            out.append((hm, 0.0))
    return out


#: offsets (mm, depth and height) of the starts around a head's mirror image
_MIRROR_STEPS = tuple((dy, dz) for dz in (0.0, -8.0, 8.0) for dy in (0.0, -8.0, 8.0))


def _support(h: HeadSphere) -> float:
    """How well one fit is borne out: free-surface support and cup cover, less its residual."""
    return h.inliers + h.cup_cover - 0.2 * h.rms_mm


def _quality(h: HeadSphere) -> float:
    """One head scored as :func:`_best_pair` scores a pair: support and a dense core."""
    return _support(h) + min(h.core_hu / 300.0, 1.5)


def _side_by_side(d: np.ndarray) -> bool:
    """Whether two centres ``d`` apart (absolute LPS differences, mm) can be the two hips: 120-240 mm
    apart in the axial plane, along a line within ``_PAIR_YAW_DEG`` of left-right, at about the
    same height."""
    axial = float(np.hypot(d[0], d[1]))
    return (_PAIR_DX_MM[0] <= axial <= _PAIR_DX_MM[1] and d[2] <= _PAIR_DZ_MM
            and d[1] <= axial * math.sin(math.radians(_PAIR_YAW_DEG)))


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
            if not _side_by_side(d):
                continue
            if abs(a.radius_mm - b.radius_mm) > 0.15 * max(a.radius_mm, b.radius_mm):
                continue
            if min(a.core_hu, b.core_hu) < _PAIR_CORE_RATIO * max(a.core_hu, b.core_hu):
                continue
            # a head is full of dense trabecular bone (its compression trabeculae): a trochanter's
            # or a shaft's inside is darker
            core = min(a.core_hu, b.core_hu) / 300.0
            s = _support(a) + _support(b) + min(core, 1.5) - d[2] / _PAIR_DZ_MM
            if s > score:
                best, score = (a, b), s
    return best


# -- implant heads ---------------------------------------------------------------------------------

def _sample(vol: Volume, xyz: np.ndarray) -> np.ndarray:
    """HU of ``vol`` at LPS points (trilinear; nearest value beyond the grid)."""
    k = vol.patient_to_index(xyz.reshape(-1, 3))
    return ndi.map_coordinates(vol.hu, k.T, order=1, mode="nearest").reshape(xyz.shape[:-1])


def _holds_metal(vol: Volume, h: HeadSphere, metal_hu: float, dirs: np.ndarray) -> bool:
    """Whether metal lies inside the sphere ``h``: a femoral head is bone through and through."""
    rr = np.array([0.0, 0.3, 0.6, 0.9]) * h.radius_mm
    return bool((_sample(vol, h.center[None, None] + dirs[:, None] * rr[None, :, None]) > metal_hu).any())


def _implant_heads(vol: Volume, metal_hu: float, body: np.ndarray | None, dirs: np.ndarray) -> list[ImplantHead]:
    """Metal balls of implant-head size (:data:`IMPLANT_HEAD_MM`) seated in a cup.

    The ball is the thickest place of a piece of metal (the maximum of its distance transform: the
    trunnion, the stem and the cup are thinner), refined by a sphere fit to the metal's surface
    around it. The cup: rays from the ball's centre in the directions within 60 deg of superior
    leave the ball, cross a dark layer (liner or joint space) and meet metal or bone again within
    :data:`_LINER_MM`; the cup covers at least :data:`_CUP_COVER` of them. The cup's centre is fitted
    to where those rays meet it over its dome (a sphere fitted to its inner surface), which gives
    the concentricity. A bearing with no dark layer to see
    (ceramic or metal liner, or a liner thinner than the blur) is one piece of metal: the rays
    stay in it past the ball and leave it at the shell's outside, which is fitted instead.
    """
    import cc3d
    import edt

    from printpipe.segment._util import _bbox

    metal = vol.hu > metal_hu
    if body is not None:
        metal &= body
    if not metal.any():
        return []
    lo, hi = _bbox(metal, pad=2)
    sub = metal[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    sp = tuple(float(s) for s in vol.spacing)
    comp, n = cc3d.connected_components(sub, connectivity=26, return_N=True)
    r_min, r_max = IMPLANT_HEAD_MM[0] / 2, IMPLANT_HEAD_MM[1] / 2
    ball_vox = 4.0 / 3.0 * np.pi * r_min ** 3 / float(np.prod(sp))
    counts = np.bincount(comp.ravel(), minlength=n + 1)
    objs = ndi.find_objects(comp)
    out, balls, shells = [], [], []
    for lab in range(1, n + 1):
        if counts[lab] < 0.5 * ball_vox or objs[lab - 1] is None:
            continue
        sl = objs[lab - 1]
        m = np.pad(comp[sl] == lab, 1)
        d = edt.edt(m, anisotropy=sp, black_border=True)
        k = np.unravel_index(int(np.argmax(d)), d.shape)
        off = np.array([s.start for s in sl]) + np.array(lo) - 1
        # the threshold at metal_hu lies inside the blurred edge by up to half a voxel
        if not (r_min - 1.0 <= float(d[k]) + 0.5 * max(sp) <= r_max + 1.0):
            if float(d[k]) <= _SHELL_MM / 2:
                shells.append(np.argwhere(m) + off)
            continue
        c0 = vol.index_to_patient((np.array(k) + off)[None].astype(float))[0]
        surf = m & ~ndi.binary_erosion(m)
        pts = vol.index_to_patient((np.argwhere(surf) + off).astype(float))
        h = _fit_implant(vol, pts, c0, float(d[k]) + 0.5 * max(sp), dirs, metal_hu)
        if h is not None:
            out.append(h)
        else:
            balls.append((c0, float(d[k]) + 0.5 * max(sp)))
    # a cup left empty: its head (a ball of implant size) lies out of it, dislocated
    for idx in shells:
        cup = _shell(vol, idx)
        if cup is None or any(np.linalg.norm(h.center - cup[0]) < _IMPLANT_REACH_MM for h in out) or not balls:
            continue
        c, r_in, r_out, rms = cup
        bc, br = min(balls, key=lambda b: float(np.linalg.norm(b[0] - c)))
        if np.linalg.norm(bc - c) > _DISLOCATED_MM:
            continue
        out.append(ImplantHead(center=c, radius_mm=br, joint_mm=r_out, rms_mm=rms, inliers=0.0, cup_cover=1.0,
                               core_hu=float(_sample(vol, bc[None])[0]), cup_offset_mm=float(np.linalg.norm(bc - c)),
                               cup_mm=r_in, metal_hu=float(metal_hu), ball_center=bc))
    return out


def _shell(vol: Volume, idx: np.ndarray) -> tuple[np.ndarray, float, float, float] | None:
    """An acetabular cup: the voxels ``idx`` (index space) of a thin piece of metal lying on a
    sphere of cup size over about a hemisphere. Returns its centre, inner and outer radii and the
    fit's rms, or None."""
    from printpipe.segment.geometry import fit_sphere

    p = vol.index_to_patient(idx[:: max(1, len(idx) // 20000)].astype(float))
    if len(p) * float(np.prod(vol.spacing)) < _CUP_SHELL_CM3 * 1000.0 / max(1, len(idx) // 20000):
        return None
    keep = np.ones(len(p), bool)
    for _ in range(3):
        c, r = fit_sphere(p[keep])
        res = np.abs(np.linalg.norm(p - c, axis=1) - r)
        keep = res < max(2.0, 2.5 * float(np.median(res)))
    dist = np.linalg.norm(p[keep] - c, axis=1)
    rms = float(np.sqrt(np.mean((dist - r) ** 2)))
    u = (p[keep] - c) / np.maximum(dist[:, None], 1e-9)
    spread = float(np.linalg.norm(u.mean(axis=0)))   # 0.5 for a hemisphere, 1 for a point, 0 for a sphere
    if not (_CUP_RADIUS_MM[0] <= r <= _CUP_RADIUS_MM[1]) or rms > _SHELL_MM / 2 or not (0.25 <= spread <= 0.8):
        return None
    h = 0.5 * max(vol.spacing)
    return c, float(np.percentile(dist, 5)) - h, float(np.percentile(dist, 95)) + h, rms


def _fit_ball(vol: Volume, pts: np.ndarray, c0: np.ndarray, r0: float, dirs: np.ndarray
              ) -> tuple[np.ndarray, float, float, float] | None:
    """The metal ball around ``c0`` (inscribed radius ``r0``) fitted to the surface points ``pts``
    of its piece of metal: centre, radius at the half-maximum edge, rms and inlier fraction of the
    fit; None when it is no ball of implant size."""
    from printpipe.segment.geometry import fit_sphere

    near = pts[np.linalg.norm(pts - c0, axis=1) < r0 + 4.0]
    if len(near) < 20:
        return None
    c, r = c0, r0
    for _ in range(4):   # trimmed fit: the trunnion's surface near the ball is not the ball's
        res = np.abs(np.linalg.norm(near - c, axis=1) - r)
        keep = res < max(1.0, 2.0 * float(np.median(res)))
        if keep.sum() < 20:
            return None
        c, r = fit_sphere(near[keep])
    res = np.linalg.norm(near - c, axis=1) - r
    inl = np.abs(res) < 1.5
    rms = float(np.sqrt(np.mean(res[inl] ** 2))) if inl.any() else np.inf
    # (the size is checked on the half-maximum surface below: these points lie up to a voxel inside)
    if rms > _FIT_RMS_MM or np.linalg.norm(c - c0) > 0.5 * r:
        return None
    # the ball's surface at the half-maximum edge, between the metal and what lies outside it (the
    # boundary voxels of the thresholded metal lie up to a voxel inside it); rays along the
    # trunnion, which never leave the metal, do not count
    re = np.arange(0.5 * r, r + 5.0, 0.25)
    pe = _sample(vol, c[None, None] + dirs[:, None] * re[None, :, None])
    half = 0.5 * (pe[:, 0] + pe.min(axis=1))
    below = pe < half[:, None]
    edge = below.any(axis=1) & (pe[:, 0] - pe.min(axis=1) > _VALLEY_HU)
    if edge.sum() >= 0.2 * len(dirs):
        r = float(np.median(re[np.argmax(below[edge], axis=1)]))
    if not (IMPLANT_HEAD_MM[0] / 2 <= r <= IMPLANT_HEAD_MM[1] / 2):
        return None
    return c, r, rms, float(inl.mean())


def _cup_rays(prof: np.ndarray, rr: np.ndarray, r: float, metal_hu: float, step: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per ray (rows of ``prof``, HU at radii ``rr`` from the ball's centre; ball radius ``r``):
    where the cup's inner and outer surfaces lie and whether the ray meets the cup; and, for a
    fused bearing, where the shell's outside lies. Returns ``r_in, r_out, hit, r_fused, fused``."""
    n = prof.shape[0]
    r_in, r_out, hit = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool)
    r_fused, fused = np.full(n, np.nan), np.zeros(n, bool)
    beyond = rr > r + 3.0
    for i, p in enumerate(prof):
        dark = p < _CUP_HU
        k0 = int(np.argmax(dark)) if dark.any() else len(rr)
        if k0 == len(rr) or rr[k0] > r + 3.0:
            # no dark layer next to the ball: a fused bearing (ceramic or metal liner, or a liner
            # thinner than the blur) when the metal goes on into a shell and ends within reach
            low = np.flatnonzero(beyond & (p < 0.5 * float(p.max())))
            if np.all(p[(rr >= r) & (rr <= r + 3.0)] > metal_hu) and len(low) and \
                    rr[low[0]] - r <= _LINER_MM[1] + 6.0:
                fused[i], r_fused[i] = True, rr[low[0]]
            continue
        again = np.flatnonzero(~dark[k0:])
        if not len(again):
            continue
        k1 = k0 + int(again[0])
        if not (_LINER_MM[0] <= rr[k1] - r <= _IMPLANT_REACH_MM) or \
                float(p[k0:k1].min()) > p[k1:].max() - _VALLEY_HU:
            continue
        hit[i] = True
        r_in[i] = rr[k1]
        # the cup's outside: where the shell's brightest HU (within 8 mm) has fallen by half
        w = p[k1:k1 + int(round(8.0 / step))]
        k2 = int(np.argmax(w))
        past = np.flatnonzero(w[k2:] < 0.5 * w[k2])
        r_out[i] = rr[k1 + k2 + (int(past[0]) if len(past) else len(w) - 1 - k2)]
    return r_in, r_out, hit, r_fused, fused


def _fit_implant(vol: Volume, pts: np.ndarray, c0: np.ndarray, r0: float, dirs: np.ndarray,
                 metal_hu: float) -> ImplantHead | None:
    """The metal ball around ``c0`` (inscribed radius ``r0``) fitted to the surface points ``pts``
    of its piece of metal (:func:`_fit_ball`), and its cup; None when it is no ball of implant size
    in a cup."""
    from printpipe.segment.geometry import fit_sphere

    ball = _fit_ball(vol, pts, c0, r0, dirs)
    if ball is None:
        return None
    c, r, rms, inliers = ball
    # the cup: along each ray the ball's metal ends, a dark layer follows (liner or joint space) and
    # metal or bone (above _CUP_HU) begins again: the cup's inner surface, within _IMPLANT_REACH_MM
    # (a subluxed head lies further from one side of its cup); or, for a fused bearing, the metal
    # goes on past the ball and ends at the shell's outside
    step = 0.25
    rr = np.arange(r - 2.0, r + _IMPLANT_REACH_MM + 12.0, step)
    prof = _sample(vol, c[None, None] + dirs[:, None] * rr[None, :, None])
    r_in, r_out, hit, r_fused, fused = _cup_rays(prof, rr, r, metal_hu, step)
    # in a cup: it covers at least _CUP_COVER of the directions within 60 deg of superior
    up = dirs[:, 2] > 0.5
    cover = float(hit[up].mean()) if up.any() else 0.0
    is_fused = False
    if cover < _CUP_COVER or hit[up].sum() < 8:
        cover = float((fused | hit)[up].mean()) if up.any() else 0.0   # beyond the shell's rim, the bony rim
        if cover < _CUP_COVER or fused[up].sum() < 8:
            return None
        is_fused, hit, r_in, r_out = True, fused, r_fused, r_fused
    # the cup's surface (inner, or outer for a fused bearing) as a sphere, fitted to where the rays
    # meet it over the dome: the directions within 80 deg of the mean covered superior direction
    axis = dirs[up & hit].mean(axis=0)
    axis /= max(float(np.linalg.norm(axis)), 1e-9)
    cap = hit & (dirs @ axis > np.cos(np.deg2rad(80.0)))
    pts_in = c + dirs[cap] * r_in[cap, None]
    pts_out = c + dirs[cap] * r_out[cap, None]
    keep = np.ones(len(pts_in), bool)
    for _ in range(4):
        if keep.sum() < 12:
            return None
        cc, rc = fit_sphere(pts_in[keep])
        res = np.abs(np.linalg.norm(pts_in - cc, axis=1) - rc)
        keep = res < max(1.5, 2.5 * float(np.median(res)))
    if not np.isfinite(rc) or keep.sum() < 12:
        return None
    core = _sample(vol, c[None, None] + dirs[:, None] * np.array([0.0, 0.3 * r, 0.6 * r])[None, :, None])
    return ImplantHead(center=cc, radius_mm=float(r), joint_mm=float(np.median(np.linalg.norm(pts_out[keep] - cc, axis=1))),
                       rms_mm=rms, inliers=inliers, cup_cover=cover, core_hu=float(np.median(core)),
                       cup_offset_mm=float(np.linalg.norm(c - cc)), cup_mm=float(rc), metal_hu=float(metal_hu),
                       fused=is_fused, ball_center=c)


def _implant_pair(implants: list[ImplantHead], fits: list[HeadSphere]) -> tuple[HeadSphere, HeadSphere] | None:
    """An implant head and its partner, a good natural head or another implant head, side by side
    (the rules of :func:`_best_pair` but for the size: a bearing's size is the manufacturer's);
    the best natural partner by its fit."""
    good = [h for h in fits if _good(h)]
    best, score = None, -np.inf
    for i, a in enumerate(implants):
        for b in [*implants[i + 1:], *good]:
            d = np.abs(a.center - b.center)
            if not _side_by_side(d):
                continue
            # a natural partner scored as one head of a pair (:func:`_quality`); an implant partner
            # by its cover alone (a metal ball's residual and core say nothing of its fit)
            s = (b.inliers + b.cup_cover if b.implant else _quality(b)) - d[2] / _PAIR_DZ_MM
            if s > score:
                best, score = (a, b), s
    return best
