"""Left and right hemipelvis: the pelvis cut at its fitted mid-sagittal plane."""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

from printpipe.errors import SegmentationError
from printpipe.volume import Volume
from printpipe.segment.geometry import Plane

log = logging.getLogger(__name__)


def _split_pelvis(labels: np.ndarray, names: dict[int, str], vol: Volume, plane: Plane | None,
                  warnings: list[str]) -> tuple[np.ndarray, dict[int, str]]:
    """Cut the pelvis label at the plane into hip_left (+x side) and hip_right."""
    inv = {v: k for k, v in names.items()}
    if "pelvis" not in inv:
        if "hip_left" in inv or "hip_right" in inv:
            return labels, names
        warnings.append("--split-hemipelvis: no pelvis part found to split")
        return labels, names
    if plane is None:
        warnings.append("--split-hemipelvis: no mid-sagittal plane; pelvis left whole")
        return labels, names
    lab = inv["pelvis"]
    new_left = max(names) + 1
    new_right = new_left + 1
    if new_right > 255:
        raise SegmentationError("too many parts to split the pelvis; raise --min-island")
    # signed distance is affine in the index: g . (k, j, i) + g0, evaluated on the pelvis box
    a = vol.affine
    n = np.asarray(plane.normal, dtype=float)
    g = a[:3, :3].T @ n
    g0 = float((a[:3, 3] - np.asarray(plane.point)) @ n)
    sl = ndi.find_objects((labels == lab).astype(np.uint8))[0]
    kk = np.arange(sl[0].start, sl[0].stop)[:, None, None] * g[0]
    jj = np.arange(sl[1].start, sl[1].stop)[None, :, None] * g[1]
    ii = np.arange(sl[2].start, sl[2].stop)[None, None, :] * g[2]
    side = (kk + jj + ii + g0) >= 0
    box = labels[sl]
    m = box == lab
    box[m & side] = new_left
    box[m & ~side] = new_right
    names = {k: v for k, v in names.items() if k != lab}
    names[new_left] = "hip_left"
    names[new_right] = "hip_right"
    return labels, names



def join_hips(labels: np.ndarray, names: dict[int, str]) -> tuple[np.ndarray, dict[int, str]]:
    """``hip_left`` and ``hip_right`` as one part, ``pelvis`` (in place)."""
    inv = {v: k for k, v in names.items()}
    if "hip_left" not in inv or "hip_right" not in inv:
        return labels, names
    a, b = inv["hip_left"], inv["hip_right"]
    labels[labels == b] = a
    names = {k: v for k, v in names.items() if k != b}
    names[a] = "pelvis"
    return labels, names
