"""Solid parts: marrow that reaches the outside through thin cortex is filled."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from printpipe.segment._util import _threads

log = logging.getLogger(__name__)


#: radius (mm) of the closing that seals thin, porous cortex (partial volume at thick slices)
_CLOSE_MM = 3.0
#: ... and for the flat and irregular bones (ilium, sacrum, vertebrae), whose fatty marrow between
#: two thin cortical plates (5-15 mm apart) opens to the soft tissue wherever a plate falls below
#: the threshold: a 5 mm ball bridges such a plate and still leaves the sciatic notches, the
#: obturator foramen and the acetabular fossa (all over 15 mm wide) open
_CLOSE_FLAT_MM = 5.0
#: ... and 7 mm for the hip bone, whose narrowest openings (acetabular notch, obturator foramen,
#: sciatic notches) are all wider than 15 mm; the sacrum keeps 5 mm for its foramina and canal
#: (8-12 mm)
_CLOSE_HIP_MM = 7.0


#: a hole in a slice (axial, coronal or sagittal) is marrow when its mean HU is at least this
#: (trabecular bone below the threshold reads ~100-220 HU; the spinal canal, foramina, pelvic
#: inlet and obturator foramen hold CSF, fat, muscle or bowel, below ~80 HU) ...
_MARROW_HU = 100.0


#: ... and it is smaller than this (mm^2; a femoral head's cross-section is ~1800 mm^2)
_MARROW_MAX_MM2 = 2500.0


#: holes in a slice smaller than this (mm^2) are filled whatever their HU (pores, noise)
_PORE_MM2 = 12.0


#: pieces of a femur's axial section closer than this (mm) are one section (see _axial_hulls)
_HULL_BRIDGE_MM = 8.0


def _solidify(labels: np.ndarray, names: dict[int, str], hu: np.ndarray, spacing: tuple[float, float, float],
              z_ends: tuple[bool, bool]) -> dict[str, Any]:
    """Make every part solid in place: marrow that reaches the outside through thin cortex is filled.

    Trabecular bone inside the femoral heads, acetabulum and ilium reads ~100-220 HU, below the
    bone threshold, and with thick slices the cortex around it is porous, so the marrow connects
    to the soft tissue and a 3-D cavity fill leaves a shell. Each part is filled on its bounding box
    (:func:`_solidify_part`), in label order. ``z_ends`` tells whether the grid's first and last
    axial slices are the ends of the scan. Returns, per part name, the voxels and cm^3 added.
    """
    sp = np.asarray(spacing, dtype=float)
    pad = [int(math.ceil(_CLOSE_MM / s)) + 2 for s in sp]
    objs = ndi.find_objects(labels)
    out: dict[str, Any] = {}
    for lab, name in sorted(names.items()):
        sl = objs[lab - 1] if lab - 1 < len(objs) else None
        if sl is None:
            continue
        lo = [max(s.start - p, 0) for s, p in zip(sl, pad)]
        hi = [min(s.stop + p, n) for s, p, n in zip(sl, pad, labels.shape)]
        # scan ends close the box
        lids = (z_ends[0] and lo[0] == 0, z_ends[1] and hi[0] == labels.shape[0])
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        n_new = _solidify_part(labels[box], hu[box], lab, name, sp, lids)
        out[name] = {"voxels_added": n_new,
                     "volume_cm3_added": round(n_new * float(np.prod(sp)) / 1000.0, 2)}
    return out


def _solidify_part(sub: np.ndarray, h: np.ndarray, lab: int, name: str, sp: np.ndarray,
                   lids: tuple[bool, bool]) -> int:
    """Make part ``lab`` (named ``name``) solid in place on ``sub``, the labels in its padded bounding
    box (``h``: the HU there); returns the number of voxels added.

    1. a closing with a ball of ``_CLOSE_MM`` (``_CLOSE_FLAT_MM`` for the flat and irregular bones;
       exact, anisotropic: distance transforms) seals the pores of the cortex;
    2. holes of the closed mask in axial, coronal and sagittal slices are filled when they hold
       marrow (mean HU >= ``_MARROW_HU``, smaller than ``_MARROW_MAX_MM2``) or are pores (below
       ``_PORE_MM2``): the spinal canal, sacral foramina, obturator foramen and pelvic inlet hold
       soft tissue and stay open; axial holes of a femur (fatty shaft marrow) are always filled;
    3. what the closed part encloses in axial, coronal and sagittal slices alike is marrow,
       fatty (below 0 HU) or not: the spinal and sacral canals, the sacral foramina and the
       obturator foramen are open in at least one of the three planes;
    4. a femur's axial sections are convex (head, neck, trochanters, shaft): each is filled to its
       convex hull, which closes a neck whose thin anterior cortex fell below the threshold;
    5. enclosed background (3-D) is filled; a z face of the box where ``lids`` is set (the end of
       the scan) closes (a femoral shaft cut by the scan keeps its marrow).

    Only background voxels are added, none 26-adjacent to another part, so the one-voxel gaps
    between parts survive.
    """
    import cc3d
    import edt

    from printpipe.kernels.segment import clear_near_other, slice_holes

    m = sub == lab
    free = sub == 0
    # 1. closing: dilate by r, erode by r (distance transforms with the voxel spacing)
    kind = name.split("_")[0]
    rc = _CLOSE_HIP_MM if kind in ("hip", "pelvis") else _CLOSE_FLAT_MM if kind in ("sacrum", "spine") else _CLOSE_MM
    d_out = edt.edt(~m, anisotropy=tuple(sp), black_border=False, parallel=_threads())
    dil = d_out <= rc
    del d_out
    closed = edt.edt(dil, anisotropy=tuple(sp), black_border=True, parallel=_threads()) > rc
    closed |= m
    del dil
    # 2. marrow holes in slices of the three orthogonal planes (one numba pass per plane)
    add = np.zeros_like(m)
    other = ~free & ~m
    for ax in range(3):
        px = float(np.prod([sp[a2] for a2 in range(3) if a2 != ax]))
        # every axial section of a femur is solid bone: fatty shaft marrow (below 0 HU) too
        all_marrow = ax == 0 and name.startswith("femur_")
        c_ax = np.ascontiguousarray(np.moveaxis(closed, ax, 0))
        a_ax = np.zeros_like(c_ax)
        slice_holes(c_ax, np.ascontiguousarray(np.moveaxis(h, ax, 0)),
                    np.ascontiguousarray(np.moveaxis(other, ax, 0)), px,
                    _PORE_MM2, _MARROW_MAX_MM2, _MARROW_HU, all_marrow, a_ax)
        add |= np.moveaxis(a_ax, 0, ax)
        del c_ax, a_ax
    # 3. enclosed in the three planes; 4. femur hulls
    solid = closed | add | _enclosed_in_three_planes(closed)
    if name.startswith("femur_"):
        solid |= _axial_hulls(solid, sp)
    # 5. enclosed background; scan ends close the box
    bg = cc3d.connected_components(~solid, connectivity=6)
    faces = [bg[:, 0, :], bg[:, -1, :], bg[:, :, 0], bg[:, :, -1]]
    if not lids[0]:
        faces.append(bg[0])
    if not lids[1]:
        faces.append(bg[-1])
    outside = np.zeros(int(bg.max()) + 1, bool)
    outside[np.unique(np.concatenate([f.ravel() for f in faces]))] = True
    outside[0] = True
    solid |= ~outside[bg]
    del bg
    new = solid & free
    # keep the gaps: nothing added next to another part
    n_new = clear_near_other(sub, new, lab) if other.any() else int(np.count_nonzero(new))
    sub[new] = lab
    return n_new


def _axial_hulls(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Per axial slice, the convex hull of each section of ``mask``; pieces less than
    ``_HULL_BRIDGE_MM`` apart (a cortex broken by the threshold) are one section, the head and the
    greater trochanter in one slice (15 mm and more apart) are two."""
    import edt
    from skimage.measure import label
    from skimage.morphology import convex_hull_image

    out = np.zeros_like(mask)
    # in-plane distance only: a slice spacing far beyond the box keeps slices apart
    near = edt.edt(~mask, anisotropy=(1e6, float(spacing[1]), float(spacing[2])), black_border=False,
                   parallel=_threads()) <= _HULL_BRIDGE_MM / 2
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        lab, n = label(near[k], connectivity=2, return_num=True)
        for i in range(1, n + 1):
            part = (lab == i) & mask[k]
            if np.count_nonzero(part) >= 3:
                out[k] |= convex_hull_image(part)
    return out


def _enclosed_in_three_planes(mask: np.ndarray) -> np.ndarray:
    """Voxels outside ``mask`` that lie in a hole of its axial, coronal and sagittal slices
    (4-connected background per slice, the numba ``slice_holes`` pass with every hole taken)."""
    from printpipe.kernels.segment import slice_holes

    out = None
    hu0 = np.zeros((1, 1, 1), np.int16)
    for ax in range(3):
        c_ax = np.ascontiguousarray(np.moveaxis(mask, ax, 0))
        a_ax = np.zeros_like(c_ax)
        none = np.zeros_like(c_ax)
        slice_holes(c_ax, np.broadcast_to(hu0, c_ax.shape), none, 1.0, 0.0, np.inf, 0.0, True, a_ax)
        holes = np.moveaxis(a_ax, 0, ax)
        out = holes if out is None else (out & holes)
        if not out.any():
            break
    return out
