"""Anatomical landmarks: femoral heads as spheres, the mid-sagittal plane, sacrum and spine."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from printpipe.errors import SegmentationError
from printpipe.volume import Volume
from printpipe.segment._util import _bbox
from printpipe.segment.geometry import fit_sphere

log = logging.getLogger(__name__)


#: hip voxels this many voxels (largest spacing) inside the fitted femoral-head sphere go to the femur
_HEAD_MARGIN_VOXELS = 0.5


def _restore_heads(labels: np.ndarray, names: dict[int, str], bone: np.ndarray, vol: Volume
                   ) -> tuple[np.ndarray, dict[str, Any]]:
    """Give each femur back the top of its head where the joint separation left it to the cup.

    With thick slices the dome of the femoral head and the acetabular roof meet tangentially and
    blur into each other; no joint space is visible there, so the separation may leave a cap of the
    head with the hip. The head is a sphere: it is fitted to the femur's free surface (faces towards
    soft tissue, not towards another part), without the neck, and every hip voxel deeper than
    ``_HEAD_MARGIN_VOXELS`` voxels inside that sphere is given to the femur.
    """
    out: dict[str, Any] = {}
    inv = {v: k for k, v in names.items()}
    hips = [inv[n] for n in ("pelvis", "hip_left", "hip_right") if n in inv]
    sp = np.asarray(vol.spacing, dtype=float)
    for side in ("left", "right"):
        name = f"femur_{side}"
        if name not in inv or not hips:
            continue
        lab = inv[name]
        fem = labels == lab
        try:
            c, r, rms, n_pts = _fit_head_sphere(fem, labels, bone, vol)
        except SegmentationError as exc:
            out[side] = {"fitted": False, "why": str(exc)}
            continue
        ok = 15.0 <= r <= 35.0 and rms < 2.5
        rec = {"fitted": bool(ok), "diameter_mm": round(2 * r, 2), "center_lps": [round(float(v), 1) for v in c],
               "rms_mm": round(rms, 2), "points": n_pts, "voxels_moved": 0}
        if ok:
            ck = vol.patient_to_index(c[None])[0]
            rad = (r / sp) + 1
            lo = np.maximum(np.floor(ck - rad).astype(int), 0)
            hi = np.minimum(np.ceil(ck + rad).astype(int) + 1, labels.shape)
            sub = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            pts_d = np.sqrt(((zz - ck[0]) * sp[0]) ** 2 + ((yy - ck[1]) * sp[1]) ** 2 + ((xx - ck[2]) * sp[2]) ** 2)
            inside = pts_d < r - _HEAD_MARGIN_VOXELS * float(sp.max())
            move = inside & np.isin(sub, hips)
            sub[move] = lab
            rec["voxels_moved"] = int(move.sum())
        out[side] = rec
    return labels, out


def _fit_head_sphere(fem: np.ndarray, labels: np.ndarray, bone: np.ndarray, vol: Volume
                     ) -> tuple[np.ndarray, float, float, int]:
    """Sphere of the femoral head from the free surface of a femur mask (see _restore_heads)."""
    import edt

    if not fem.any():
        raise SegmentationError("empty femur")
    lo, hi = _bbox(fem, pad=2)
    f = fem[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    zs = vol.index_to_patient(np.c_[np.arange(lo[0], hi[0]), np.zeros(hi[0] - lo[0]),
                                    np.zeros(hi[0] - lo[0])].astype(float))[:, 2]
    has = f.any(axis=(1, 2))
    z_top = float(zs[has].max())
    keep_z = zs >= z_top - 80.0
    filled = f.copy()
    for k in np.flatnonzero(keep_z):
        filled[k] = ndi.binary_fill_holes(filled[k])
    d = edt.edt(filled, anisotropy=vol.spacing, parallel=1)
    d[zs < z_top - 35.0] = 0  # the head's centre lies within ~a head radius of the top (not the trochanter)
    k = np.array(np.unravel_index(np.argmax(d), d.shape))
    r0 = float(d[tuple(k)]) + 2.0
    c0 = vol.index_to_patient((k + lo).astype(float))[0]
    # free surface: femur voxels with a 6-neighbour that is not bone (soft tissue, joint space
    # below the threshold), not those facing the hip across the separation
    sub_l = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    sub_b = bone[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    outside = ~sub_b & (sub_l == 0)
    free = np.zeros_like(f)
    for ax in range(3):
        for sh in (1, -1):
            free |= f & np.roll(outside, sh, axis=ax)
    idx = np.argwhere(free)
    pts = vol.index_to_patient((idx + lo).astype(float))
    dist_c = np.linalg.norm(pts - c0, axis=1)
    # neck axis: towards the femur's bone in a shell just outside the head
    allp = np.argwhere(f)
    allp = vol.index_to_patient((allp[:: max(1, len(allp) // 200_000)] + lo).astype(float))
    dc_all = np.linalg.norm(allp - c0, axis=1)
    ring = allp[(dc_all > 1.3 * r0 + 3.0) & (dc_all < 2.0 * r0 + 8.0)]
    sel = dist_c < 1.5 * r0 + 4.0
    if len(ring) > 20:
        v = ring.mean(axis=0) - c0
        v /= max(np.linalg.norm(v), 1e-9)
        cosang = ((pts - c0) @ v) / np.maximum(dist_c, 1e-9)
        sel &= cosang < np.cos(np.deg2rad(55.0))
    p = pts[sel]
    if len(p) < 30:
        raise SegmentationError(f"only {len(p)} free surface points around the femoral head")
    c, r = fit_sphere(p)
    for _ in range(8):
        dc = np.linalg.norm(p - c, axis=1)
        keep = np.abs(dc - r) < max(0.1 * r, 1.5 * float(max(vol.spacing)))
        if keep.sum() < 30:
            break
        c, r = fit_sphere(p[keep])
    dc = np.linalg.norm(p - c, axis=1)
    keep = np.abs(dc - r) < max(0.1 * r, 1.5 * float(max(vol.spacing)))
    rms = float(np.sqrt(np.mean((dc[keep] - r) ** 2))) if keep.any() else float("inf")
    # voxel centres of the outer layer lie about half a voxel inside the surface
    return c, float(r), rms, int(keep.sum())

