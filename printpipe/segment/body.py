"""The patient's body and the crop: what lies outside the body (couch, cables, markers) is not bone."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from printpipe.errors import InputError
from printpipe.volume import Volume

log = logging.getLogger(__name__)


def _roi_to_index(volume: Volume, roi: tuple[float, ...]) -> tuple[list[int], list[int]]:
    """LPS box (xmin, xmax, ymin, ymax, zmin, zmax) -> index box covering it."""
    xs, ys, zs = roi[0:2], roi[2:4], roi[4:6]
    corners = np.array([[x, y, z] for x in xs for y in ys for z in zs])
    kji = volume.patient_to_index(corners)
    lo = np.floor(kji.min(axis=0)).astype(int)
    hi = np.ceil(kji.max(axis=0)).astype(int) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, volume.shape)
    if np.any(hi <= lo):
        raise InputError(f"roi_mm {list(roi)} does not overlap the volume (LPS extent "
                         f"{_extent_str(volume)}); check --roi")
    return lo.tolist(), hi.tolist()


def _extent_str(volume: Volume) -> str:
    c = np.array([[k, j, i] for k in (0, volume.shape[0] - 1) for j in (0, volume.shape[1] - 1)
                  for i in (0, volume.shape[2] - 1)], dtype=float)
    p = volume.index_to_patient(c)
    return ", ".join(f"{a} {p[:, n].min():.0f}..{p[:, n].max():.0f}" for n, a in enumerate("xyz"))


def _body_mask(hu: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, dict[str, Any]]:
    """The patient's body: the largest object above -500 HU, opened to cut thin contacts with the
    couch, holes (lungs, bowel gas) filled. Computed on a grid of about 2 mm in-plane, then upsampled
    and dilated by one coarse voxel so no bone at the skin is lost."""
    import cc3d

    from printpipe.kernels.segment import erode_cross, label_counts, lut_mask

    f = tuple(max(1, int(round(2.0 / s))) for s in spacing)
    nz, ny, nx = hu.shape
    coarse = hu[::f[0], ::f[1], ::f[2]] > -500
    # opening with a ~4 mm in-plane radius: a couch or cushion touching the skin along a thin
    # contact comes loose, the body itself (tens of centimetres across) survives
    # in-plane only (slices may be thick): the 4-neighbour cross of each slice, as
    # binary_erosion/binary_dilation with generate_binary_structure(3, 1) less its first and
    # last planes would give (a dilation is the complement of the erosion of the complement)
    it = max(1, int(round(4.0 / (f[1] * spacing[1]))))
    er = erode_cross(coarse, it, False, True)
    comp, n = cc3d.connected_components(er, connectivity=6, return_N=True)
    if n == 0:
        body_c = coarse
    else:
        counts = label_counts(comp, n + 1)
        counts[0] = 0
        body_c = comp == int(np.argmax(counts))
        body_c = ~erode_cross(~body_c, it + 1, True, True) & coarse
        # dilate once more so the skin line itself is inside
        body_c = ~erode_cross(~body_c, 1, True, True)
    # fill holes: background components that do not touch the in-plane border of the grid
    bg, n_bg = cc3d.connected_components(~body_c, connectivity=6, return_N=True)
    border = np.unique(np.concatenate([bg[:, 0, :].ravel(), bg[:, -1, :].ravel(), bg[:, :, 0].ravel(),
                                       bg[:, :, -1].ravel()]))
    inner = np.ones(int(n_bg) + 1, bool)
    inner[border] = False
    inner[0] = False
    body_c |= lut_mask(bg, inner)
    # upsampled: the coarse rows along x, then every row of the grid gathered from its coarse row
    # (whole rows copied; one pass over the full grid)
    rows = np.repeat(body_c, f[2], axis=2)[:, :, :nx] if f[2] > 1 else body_c
    body = rows[(np.arange(nz) // f[0])[:, None], (np.arange(ny) // f[1])[None, :]]
    n_body = int(np.count_nonzero(body))
    stats = {"voxels": n_body,
             "volume_cm3": round(float(n_body * np.prod(spacing) / 1000.0), 1),
             "grid_step": list(f), "opening_mm": round(it * f[1] * spacing[1], 1)}
    return body, stats


def _pelvis_box(vol: Volume, low: float, high: float, body: np.ndarray | None = None
                ) -> tuple[list[int], list[int]] | None:
    """Index box around the pelvis: the lowest run of slices (>= 40 mm) that hold bone (inside
    ``body`` when given) both at the midline and more than 60 mm to either side, plus 40 mm above
    and 80 mm below (proximal femurs)."""
    hu = vol.hu
    fy = max(1, int(round(4.0 / vol.spacing[1])))
    fx = max(1, int(round(4.0 / vol.spacing[2])))
    b = (hu[:, ::fy, ::fx] >= low) & (hu[:, ::fy, ::fx] <= high)
    if body is not None:
        b &= body[:, ::fy, ::fx]
    if not b.any():
        return None
    xs = np.flatnonzero(b.any(axis=(0, 1)))
    # patient x of every coarse column (direction may flip; use the affine)
    cols = np.arange(b.shape[2]) * fx
    xmm = vol.index_to_patient(np.c_[np.zeros(len(cols)), np.zeros(len(cols)), cols])[:, 0]
    w = b.sum(axis=(0, 1)).astype(float)
    mid = float(np.sum(xmm * w) / max(w.sum(), 1))
    col_mid = np.abs(xmm - mid) < 25
    col_l = xmm > mid + 60
    col_r = xmm < mid - 60
    per = b.any(axis=1)  # (z, x)
    good = per[:, col_mid].any(1) & per[:, col_l].any(1) & per[:, col_r].any(1)
    dz = vol.spacing[0]
    runs = []
    k = 0
    n = len(good)
    while k < n:
        if good[k]:
            s = k
            while k < n and good[k]:
                k += 1
            runs.append((s, k))
        else:
            k += 1
    runs = [r for r in runs if (r[1] - r[0]) * dz >= 40.0]
    if not runs:
        return None
    # slice direction may point up or down: find the most inferior run in patient z
    zdir = np.sign(vol.direction[2, 2]) or 1.0
    s, e = min(runs, key=lambda r: zdir * r[0]) if zdir > 0 else max(runs, key=lambda r: r[1])
    above, below = int(math.ceil(40.0 / dz)), int(math.ceil(80.0 / dz))
    if zdir > 0:
        lo_z, hi_z = s - below, e + above
    else:
        lo_z, hi_z = s - above, e + below
    del xs
    return [max(lo_z, 0), 0, 0], [min(hi_z, hu.shape[0]), hu.shape[1], hu.shape[2]]

