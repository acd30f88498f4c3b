"""Threshold and clean-up: metal report, small islands, internal cavities."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from printpipe.volume import Volume
from printpipe.segment._util import _bbox

log = logging.getLogger(__name__)


def _metal_report(vol: Volume, metal_hu: float, lo_idx: list[int]) -> list[dict[str, Any]]:
    """Connected blobs above ``metal_hu`` of at least ~10 mm^3 (a few stray voxels are noise)."""
    if metal_hu >= 32767:
        return []
    if not vol.hu.max(initial=-32768) > metal_hu:   # most scans: no mask of the whole volume
        return []
    hot = vol.hu > metal_hu
    import cc3d

    lo, hi = _bbox(hot, pad=0)
    sub = hot[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    comp, n = cc3d.connected_components(sub, connectivity=26, return_N=True)
    vox = float(np.prod(vol.spacing))
    counts = np.bincount(comp.ravel())
    out = []
    min_vox = max(3, int(math.ceil(10.0 / vox)))
    objs = ndi.find_objects(comp)
    for lab in np.argsort(counts[1:])[::-1] + 1:
        if counts[lab] < min_vox:
            break
        sl = objs[lab - 1]
        idx = np.argwhere(comp[sl] == lab).mean(axis=0) + [s.start for s in sl] + lo
        c = vol.index_to_patient(idx)[0]
        out.append({"volume_mm3": round(float(counts[lab] * vox), 1),
                    "center_lps": [round(float(v), 1) for v in c],
                    "slice": int(round(idx[0])) + int(lo_idx[0]),
                    # the blob's box is on the sub-box of the hot voxels: shift it by lo on the volume
                    "max_hu": int(vol.hu[tuple(slice(a.start + o, a.stop + o) for a, o in zip(sl, lo))][
                        comp[sl] == lab].max())})
    return out


def _cavities(bone: np.ndarray, z_open: tuple[bool, bool]) -> np.ndarray:
    """Background voxels enclosed by bone. Background touching the in-plane faces of the box is
    outside; so is background touching a z face that is a crop face (``z_open``). A z face at the
    scan's end is not 'outside': a femoral shaft cut by the scan keeps its marrow filled."""
    import cc3d

    bg = cc3d.connected_components(~bone, connectivity=6)
    faces = [bg[:, 0, :], bg[:, -1, :], bg[:, :, 0], bg[:, :, -1]]
    if z_open[0]:
        faces.append(bg[0])
    if z_open[1]:
        faces.append(bg[-1])
    outside = np.unique(np.concatenate([f.ravel() for f in faces]))
    inner = np.ones(int(bg.max()) + 1, bool)
    inner[outside] = False
    inner[0] = False
    from printpipe.kernels.segment import lut_mask

    return lut_mask(bg, inner)



def bone_mask(vol: Volume, low: float, high: float, body: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Voxels in [low, high] HU, inside ``body`` when given; returns the mask and the number of
    bone-dense voxels outside the body (couch, cables, markers)."""
    if body is not None and body.shape == vol.shape:
        from printpipe.kernels.segment import hu_window

        bone = np.empty(vol.shape, bool)
        outside = hu_window(vol.hu, float(low), float(high), np.ascontiguousarray(body), bone)
        return bone, int(outside)
    bone = vol.hu >= low
    if high < 32767:
        bone &= vol.hu <= high
    outside = 0
    if body is not None:
        outside = int(np.count_nonzero(bone & ~body))
        bone &= body
    return bone, outside


def drop_islands(bone: np.ndarray, min_vox: int) -> tuple[np.ndarray, int, int]:
    """Keep the 26-connected components of at least ``min_vox`` voxels; returns the mask, the
    number of components dropped and their voxels."""
    import cc3d

    from printpipe.kernels.segment import label_counts, lut_mask

    comp, n_comp = cc3d.connected_components(bone, connectivity=26, return_N=True)
    counts = label_counts(comp, n_comp + 1)
    counts[0] = 0
    small = counts < max(min_vox, 1)
    small[0] = False
    keep = ~small
    keep[0] = False
    return lut_mask(comp, keep), int(small[1:].sum()), int(counts[small].sum())
