"""Solid parts: marrow that reaches the outside through thin cortex is filled."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from printpipe.segment import _fast
from printpipe.segment._util import _bbox, _threads

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


#: the flat and irregular bones are made solid again until a pass adds less than _PASS_SETTLED of
#: the part (at most _FLAT_PASSES times): marrow filled in one pass lets the next closing bridge a
#: wall gap wider than its ball, slice by slice. Measured on pelvic-ref002 (hip bones): one pass
#: 0.867 / 0.892, two 0.880 / 0.903, three 0.891 / 0.905, five 0.891 / 0.911; a femur loses 0.002
#: with a second pass, so it gets one
_FLAT_PASSES = 5
_PASS_SETTLED = 0.005


#: a hole in a slice (axial, coronal or sagittal) is marrow when its mean HU is at least this
#: (trabecular bone below the threshold reads ~100-220 HU; the spinal canal, foramina, pelvic
#: inlet and obturator foramen hold CSF, fat, muscle or bowel, below ~80 HU) ...
_MARROW_HU = 100.0


#: ... and it is smaller than this (mm^2; a femoral head's cross-section is ~1800 mm^2)
_MARROW_MAX_MM2 = 2500.0


#: holes in a slice smaller than this (mm^2) are filled whatever their HU (pores, noise)
_PORE_MM2 = 12.0


#: radius (mm) of the in-plane closing of a femur's axial sections (see _axial_closed_sections):
#: it bridges cortex gaps up to 20 mm; the trochanteric fossa and the notch between the neck and
#: the greater trochanter open wider and keep their concave outline. Convex hulls, used before,
#: filled them: measured against the manual contours, the closing gives Dice 0.908 / 0.896 on the
#: pelvic-ref003 femurs where hulls gave 0.897 / 0.882 (0.905 / 0.893 at 8 mm, 0.909 / 0.895 at 12)
_SECTION_CLOSE_MM = 10.0


def _closing(mask: np.ndarray, radius_mm: float, anisotropy: tuple[float, float, float]) -> np.ndarray:
    """``mask`` closed with a ball of ``radius_mm`` (a huge first ``anisotropy`` entry keeps slices
    apart: an in-plane disc); voxels beyond the array's border count as outside. The same voxels
    as a dilation and an erosion by exact distance transforms, from one numba kernel in 0.25-0.3x
    their time (:func:`printpipe.segment._fast.closing`)."""
    from printpipe.segment._fast import closing

    return closing(mask, radius_mm, anisotropy)


def _padded_box(sl: tuple[slice, ...], pad: list[int], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The box ``sl`` grown by ``pad`` voxels per axis, clipped to ``shape``."""
    return tuple(slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(sl, pad, shape))


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
    # the box reaches past the part by the largest closing radius: a closing cut by the box's
    # border (eroded as outside) would leave the part's outermost walls open
    pad = [int(math.ceil(max(_CLOSE_MM, _CLOSE_FLAT_MM, _CLOSE_HIP_MM) / s)) + 2 for s in sp]
    objs = _fast.find_objects(labels)
    femurs = tuple(lab for lab, name in names.items() if name.startswith("femur_"))
    out: dict[str, Any] = {}
    for lab, name in sorted(names.items()):
        sl = objs[lab - 1] if lab - 1 < len(objs) else None
        if sl is None:
            continue
        box = _padded_box(sl, pad, labels.shape)
        passes = _FLAT_PASSES if name.split("_")[0] in ("hip", "pelvis", "sacrum", "spine") else 1
        n_new = 0
        size = np.count_nonzero(labels[box] == lab)
        sub_box = box
        for i in range(passes):
            last = i + 1 == passes
            before = None if last else labels[sub_box] == lab
            # scan ends close the box
            lids = (z_ends[0] and sub_box[0].start == 0, z_ends[1] and sub_box[0].stop == labels.shape[0])
            n = _solidify_part(labels[sub_box], hu[sub_box], lab, name, sp, lids, femurs)
            n_new += n
            size += n
            if last or n < _PASS_SETTLED * size:
                break
            # the next pass can only change what lies within reach of this pass's additions
            clo, chi = _bbox((labels[sub_box] == lab) & ~before, pad=0)
            sub_box = tuple(slice(max(b.start + a - p, b0.start), min(b.start + c + p, b0.stop))
                            for b, a, c, p, b0 in zip(sub_box, clo, chi, pad, box))
            del before
        out[name] = {"voxels_added": n_new,
                     "volume_cm3_added": round(n_new * float(np.prod(sp)) / 1000.0, 2)}
    return out


def _solidify_part(sub: np.ndarray, h: np.ndarray, lab: int, name: str, sp: np.ndarray,
                   lids: tuple[bool, bool], femurs: tuple[int, ...] = ()) -> int:
    """Make part ``lab`` (named ``name``) solid in place on ``sub``, the labels in its padded bounding
    box (``h``: the HU there); returns the number of voxels added.

    1. a closing with a ball of ``_CLOSE_MM`` (``_CLOSE_FLAT_MM`` for the flat and irregular bones;
       exact, anisotropic: distance transforms) seals the pores of the cortex;
    2. holes of the closed mask in axial, coronal and sagittal slices are filled when they hold
       marrow (mean HU >= ``_MARROW_HU``, smaller than ``_MARROW_MAX_MM2``) or are pores (below
       ``_PORE_MM2``): the spinal canal, sacral foramina, obturator foramen and pelvic inlet hold
       soft tissue and stay open; axial holes of a femur or hip bone (fatty marrow) are always filled,
       and so are a hip bone's axial holes that another part walls in part (:func:`_shared_holes`;
       ``femurs``: the labels of the femurs, whose joint with the hip bone is no marrow);
    3. what the closed part encloses in axial, coronal and sagittal slices alike is marrow,
       fatty (below 0 HU) or not: the spinal and sacral canals, the sacral foramina and the
       obturator foramen are open in at least one of the three planes;
    4. a femur's axial sections are closed in-plane (:func:`_axial_closed_sections`), which closes
       a neck whose thin anterior cortex fell below the threshold;
    5. enclosed background (3-D) is filled; a z face of the box where ``lids`` is set (the end of
       the scan) closes (a femoral shaft cut by the scan keeps its marrow).

    Only background voxels are added, none 26-adjacent to another part, so the one-voxel gaps
    between parts survive.
    """
    import cc3d

    from printpipe.kernels.segment import clear_near_other, slice_holes

    m = sub == lab
    free = sub == 0
    # 1. closing
    kind = name.split("_")[0]
    rc = _CLOSE_HIP_MM if kind in ("hip", "pelvis") else _CLOSE_FLAT_MM if kind in ("sacrum", "spine") else _CLOSE_MM
    closed = _closing(m, rc, tuple(sp))
    # 2. marrow holes in slices of the three orthogonal planes, and 3. what is enclosed in all
    # three (one numba pass per plane gives both)
    add = np.zeros_like(m)
    planes = np.zeros(m.shape, np.uint8)
    other = ~free & ~m
    for ax in range(3):
        px = float(np.prod([sp[a2] for a2 in range(3) if a2 != ax]))
        # every hole in an axial section of a femur or a hip bone is marrow, fatty (below 0 HU) or
        # not: the hip bone's openings (obturator foramen, sciatic notches, acetabular fossa) are
        # holes through or notches in plates, which an axial plane cuts open, and the pelvic inlet
        # is closed only by the sacrum, another part; the canals of the sacrum and spine are not
        all_marrow = ax == 0 and kind in ("femur", "hip", "pelvis")
        c_ax = np.ascontiguousarray(np.moveaxis(closed, ax, 0))
        a_ax = np.zeros_like(c_ax)
        e_ax = np.zeros_like(c_ax)
        slice_holes(c_ax, np.ascontiguousarray(np.moveaxis(h, ax, 0)),
                    np.ascontiguousarray(np.moveaxis(other, ax, 0)), px,
                    _PORE_MM2, _MARROW_MAX_MM2, _MARROW_HU, all_marrow, a_ax, e_ax)
        add |= np.moveaxis(a_ax, 0, ax)
        planes += np.moveaxis(e_ax, 0, ax)
        del c_ax, a_ax, e_ax
    if kind in ("hip", "pelvis") and other.any():
        add |= _shared_holes(closed, h, sub, other, sp, femurs)
    solid = closed | add | (planes >= _ENCLOSED_PLANES)
    del planes
    # 4. femur sections closed in-plane
    if name.startswith("femur_"):
        solid |= _axial_closed_sections(solid, sp)

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


#: an axial hole of a hip bone that another part walls in part is the hip bone's marrow when the
#: hip bone walls at least this share of its rim: the sacrum's basin can take the faint medial wall
#: of the posterior ilium at the sacroiliac joint (thin, noisy slices), which leaves the ilium's
#: fatty marrow (15 cm^3 on pelvic-ref002) open towards the sacrum; the pelvic cavity, walled by
#: both hip bones and the sacrum, is far larger than a marrow hole (_MARROW_MAX_MM2)
_OWN_RIM = 2.0 / 3.0


def _shared_holes(closed: np.ndarray, h: np.ndarray, sub: np.ndarray, other: np.ndarray, sp: np.ndarray,
                  femurs: tuple[int, ...]) -> np.ndarray:
    """Axial holes of a part (``closed``: its closed mask on the labels ``sub``; ``other``: the
    other parts there) walled by it and by other parts, that the part walls for at least
    ``_OWN_RIM`` of their rim and no femur touches (the joint space and the acetabular fossa lie
    between hip bone and femur), of a marrow hole's size."""
    import cc3d

    from printpipe.kernels.segment import slice_holes

    # the other parts grown by the one-voxel gap kept between parts (in-plane, 8-neighbour)
    other = ndi.binary_dilation(other, np.ones((1, 3, 3), bool)) & ~closed
    walls = closed | other
    cand = np.zeros_like(closed)
    every = np.zeros_like(closed)
    slice_holes(walls, h, np.zeros_like(closed), float(sp[1] * sp[2]), _PORE_MM2, _MARROW_MAX_MM2,
                _MARROW_HU, True, cand, every)
    del every
    if not cand.any():
        return cand
    comp, n = cc3d.connected_components(cand, connectivity=6, return_N=True)
    # each hole's rim: the wall voxels 4-adjacent to it in its slice, with the hole's number
    rim = np.zeros_like(comp)
    for ax, d in ((1, 1), (1, -1), (2, 1), (2, -1)):
        rim = np.maximum(rim, np.roll(comp, d, axis=ax))
    rim[~walls] = 0
    own = np.bincount(rim[closed], minlength=n + 1)
    shared = np.bincount(rim[other], minlength=n + 1)
    if femurs:
        near_femur = ndi.binary_dilation(np.isin(sub, femurs), np.ones((1, 3, 3), bool)) & other
        femoral = np.bincount(rim[near_femur], minlength=n + 1)
    else:
        femoral = np.zeros(n + 1, np.int64)
    keep = (shared > 0) & (femoral == 0) & (own >= _OWN_RIM * (own + shared))
    keep[0] = False
    return keep[comp]


def _axial_closed_sections(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Per axial slice, ``mask`` closed in-plane with a disc of ``_SECTION_CLOSE_MM`` (exact,
    distance transforms) and its holes filled: a cortex broken by the threshold (a femoral neck's
    thin anterior wall) is bridged, while the concavities of the proximal femur (trochanteric
    fossa, the notch between neck and greater trochanter), wider than the disc, keep their shape."""
    from printpipe.segment._fast import fill_holes_slices

    closed = _closing(mask, _SECTION_CLOSE_MM, (1e6, float(spacing[1]), float(spacing[2])))
    return fill_holes_slices(closed)


#: marrow is enclosed by cortex in the axial, coronal and sagittal planes alike; a canal or foramen
#: (the spinal and sacral canals, the sacral and intervertebral foramina) is a channel, closed only
#: in its cross-section, and a hole through a plate (the obturator foramen) only in the plate's
#: plane. Two planes of three was measured: +0.006 Dice on the ref002 hip bones, but on the phantom
#: the sacrum loses 0.010 (canal-side pockets closed in two planes are filled), so all three it is.
_ENCLOSED_PLANES = 3


#: thin cortex: a plate of cortical bone under ~1.5 mm, blurred by thick slices and the scanner's
#: point spread, reads below the bone threshold though it still stands out as a crest against the
#: fatty marrow inside and the fat or muscle outside (posterior ilium, sacral alae, vertebral
#: bodies of osteoporotic patients). Its crests are found on the HU smoothed with this sigma (mm) ...
_SHELL_SIGMA_MM = 1.0
#: ... as voxels at or above marrow's _MARROW_HU (muscle reads 40-60 HU) whose crest stands at
#: least this many HU above the HU this far (mm) to either side ...
_SHELL_DEPTH_HU = 50.0
_SHELL_HALF_MM = 2.0
#: ... on a plate: both in-plate curvatures at most this fraction of the across-plate one (vessels
#: are rods, contrast-filled bowel is a blob)
_SHELL_PLATE_RATIO = 0.5
#: slabs of this many axial slices are smoothed at a time (memory: no full-volume float copy)
_SHELL_SLAB = 32


def recover_shells(labels: np.ndarray, names: dict[int, str], hu: np.ndarray,
                   spacing: tuple[float, float, float], low: float) -> dict[str, Any]:
    """Give each part the thin cortex that reads below the threshold, in place.

    Crest voxels of thin bright plates (:func:`_plate_crests`) between ``_MARROW_HU`` and the
    threshold ``low`` are grown from the parts (6-connected steps through the crests, each voxel to
    the nearest part; crests no part reaches are left), so a shell whose wall fell below the
    threshold is closed and :func:`_solidify` fills the marrow it encloses. The caller cuts the
    one-voxel gaps where two parts' crests meet. Returns the crest voxels found and those added
    per part.
    """
    from printpipe.kernels.segment import grow_labels

    if not names:
        return {}
    cand = (labels == 0) & (hu >= _MARROW_HU) & (hu < low)
    crest = _plate_crests(hu, cand, spacing)
    del cand
    n_crest = int(np.count_nonzero(crest))
    if not n_crest:
        return {"crest_voxels": 0, "voxels_added": {}}
    free = labels == 0
    grow_labels(labels, crest)
    counts = np.bincount(labels[free & (labels != 0)], minlength=max(names) + 1)
    added = {name: int(counts[lab]) for lab, name in names.items() if counts[lab]}
    return {"crest_voxels": n_crest, "voxels_added": added}


def _plate_crests(hu: np.ndarray, cand: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """The voxels of ``cand`` on the crest of a thin bright plate of the smoothed HU
    (:func:`printpipe.kernels.segment.bright_sheets`), computed in slabs of ``_SHELL_SLAB`` axial
    slices with a halo, so no float copy of the whole volume is made."""
    from printpipe.kernels.segment import bright_sheets

    sp = [float(s) for s in spacing]
    sigma = [_SHELL_SIGMA_MM / s for s in sp]
    halo = int(math.ceil(3.0 * sigma[0])) + 1
    nz = hu.shape[0]
    out = np.zeros(hu.shape, bool)
    ks = np.flatnonzero(cand.any(axis=(1, 2)))
    if not len(ks):
        return out
    for k0 in range(int(ks[0]), int(ks[-1]) + 1, _SHELL_SLAB):
        k1 = min(k0 + _SHELL_SLAB, nz)
        a, b = max(k0 - halo, 0), min(k1 + halo, nz)
        c = cand[a:b].copy()
        c[:k0 - a] = False
        c[k1 - a:] = False
        if not c.any():
            continue
        sm = ndi.gaussian_filter(hu[a:b].astype(np.float32), sigma=sigma, truncate=3.0)
        r = bright_sheets(sm, c, sp[0], sp[1], sp[2], _SHELL_HALF_MM, _SHELL_DEPTH_HU, _SHELL_PLATE_RATIO)
        out[k0:k1] = r[k0 - a:k1 - a].view(bool)
    return out


#: the sacral canal lies on the mid-sagittal plane and is up to ~30 mm wide (at S1): within this
#: distance (mm) of the plane close_sacrum adds only what is not fluid or fat (the canal's CSF and
#: epidural fat), so the body behind the closing is filled and the canal is left open
_CANAL_HALF_MM = 15.0


#: ... fluid or fat: the in-plane smoothed HU (sigma _FLUID_SIGMA_MM, the noise of one voxel is
#: 20-40 HU) below this; CSF and water read 0-20 HU and fat -120 to -60, where trabecular bone,
#: even fatty marrow between trabeculae, reads above. Regions of it smaller than _PORE_MM2 are
#: noise and filled. Where bone encloses the canal in the section (the hindmost hole near the
#: midline, :func:`_canal_hole`), it stays open whatever it holds (nerve roots read 30-40 HU; the
#: phantoms' canal holds soft tissue). Measured on pelvic-ref002, whose expert labels fill the
#: canal below S1 and leave it open at S1: sacrum Dice 0.613 with the band left as the HU rules
#: left it, 0.647 with these rules, 0.671 with the band filled whole (canal included, which hides
#: the S1 canal from a screw plan); the pelvic-ref003 S1-S2 canal stays open, and the phantoms'
#: sacrum stays at 0.92-0.99
_FLUID_HU = 20.0
_FLUID_SIGMA_MM = 1.0


#: radius (mm) of the in-plane closing that gives the sacrum its alae (see close_sacrum). The
#: alae's walls towards the sacroiliac joints and the pelvis are thin plates that thick slices
#: and fatty marrow leave below the threshold over 20-30 mm, so the hip bone's auricular surface,
#: within _ALA_REACH_MM of what is left of the sacrum (an ala is 30-50 mm wide), walls them in at
#: the levels where a hip bone touches the sacrum (within _SI_TOUCH_MM) on both sides; nothing is
#: added within _SI_JOINT_MM of a hip bone (the joint space is 1-4 mm).
#: Measured on the pelvic-ref002 sacrum (Dice 0.40 without this step): 0.60 (1,620 voxels outside
#: the expert label); with walls only at the slices of contact 0.57, without the hip walls 0.43;
#: without the mirror rule the pelvic-ref003 sacrum came out lopsided (centroid 6.3 mm off the
#: mid-sagittal plane). Convex hulls (0.66, 10,000 voxels outside the label) filled the canal on
#: pelvic-ref003, so they are not used; the band by the midline follows _FLUID_HU and the enclosed
#: canal instead. On the phantoms the step adds 1-4 cm^3 by their 3 mm sacroiliac joints.
_SACRUM_CLOSE_MM = 15.0
_ALA_REACH_MM = 25.0
_SI_TOUCH_MM = 5.0
_SI_JOINT_MM = 4.0


def close_sacrum(labels: np.ndarray, names: dict[int, str], hu: np.ndarray,
                 spacing: tuple[float, float, float],
                 plane: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> dict[str, Any]:
    """Give the sacrum its alae, in place.

    Each axial section of the sacrum, walled in at the sacroiliac levels by the hip bones within
    ``_ALA_REACH_MM`` of it, is closed with a disc of ``_SACRUM_CLOSE_MM`` and its holes filled.
    Only voxels are added that lie (a) beside the canal, further than ``_CANAL_HALF_MM`` from the
    mid-sagittal plane (``plane``: each row and column's signed distance to it, mm, + to the
    patient's left, and the row and column of its mirror image; see ``steps._midline_offset``), or
    within that band but not fluid or fat (``_FLUID_HU``: the canal's CSF and fat stay
    open, the body's marrow is filled), (b) where the mirror image across the plane is sacrum or
    added too, (c) outside the joint space, further than ``_SI_JOINT_MM`` from a hip bone, and (d)
    not 26-adjacent to another part. A canal filled by mistake would hide the nerve roots from a
    screw plan, so where HU cannot tell (marrow as fatty as the canal) the body stays hollow. Run
    after the lumbar spine is cut off, so vertebrae keep their own shape. Returns the voxels added.
    """
    import edt

    from printpipe.kernels.segment import clear_near_other
    from printpipe.segment._fast import fill_holes_slices

    lab = next((k for k, n in names.items() if n == "sacrum"), None)
    if lab is None or plane is None:
        return {}
    sl = _fast.find_objects(labels, lab)[lab - 1]
    if sl is None:
        return {}
    sp = [float(s) for s in spacing]
    box = _padded_box(sl, [0] + [int(math.ceil(_SACRUM_CLOSE_MM / s)) + 1 for s in sp[1:]], labels.shape)
    sub = labels[box]
    m = sub == lab
    an = (1e6, sp[1], sp[2])   # in-plane only
    off = np.asarray(plane[0], dtype=float)[box[1], box[2]]
    # the hip bones wall the alae in at the sacroiliac levels: from the lowest to the highest slice
    # where a hip bone lies within _SI_TOUCH_MM of the sacrum on both sides of the plane
    d_sac = edt.edt(~m, anisotropy=an, black_border=False, parallel=_threads())
    hips = np.isin(sub, [k for k, n in names.items() if n.split("_")[0] in ("hip", "pelvis")])
    touch = hips & (d_sac <= _SI_TOUCH_MM)
    left = off > 0
    si = touch[:, left].any(axis=1) & touch[:, ~left].any(axis=1)
    if si.any():   # the joints span one run of levels (a slice where a lost wall breaks the contact too)
        ks = np.flatnonzero(si)
        si[ks[0]:ks[-1] + 1] = True
    walls = m | (hips & (d_sac <= _ALA_REACH_MM) & si[:, None, None])
    del d_sac, touch
    joint = edt.edt(~hips, anisotropy=an, black_border=False, parallel=_threads()) <= _SI_JOINT_MM
    closed = _closing(walls, _SACRUM_CLOSE_MM, an)
    near_mid = np.abs(off) <= _CANAL_HALF_MM
    # each voxel's mirror image across the plane, in the box
    mj = plane[1][box[1], box[2]] - box[1].start
    mi = plane[2][box[1], box[2]] - box[2].start
    inside = (mj >= 0) & (mj < m.shape[1]) & (mi >= 0) & (mi < m.shape[2])
    h = hu[box]
    new = np.zeros_like(m)
    filled = fill_holes_slices(closed)
    del closed
    for k in np.flatnonzero(m.any(axis=(1, 2))):
        add = filled[k] & (sub[k] == 0)
        add &= ~(near_mid & (_fluid(h[k], add & near_mid, sp) | _canal_hole(m[k], near_mid)))
        # the alae are mirror images: a voxel is added only where its mirror image is sacrum or
        # added too, so a wall lost on one side only does not make the part lopsided
        both = add | m[k]
        seen = np.zeros_like(add)
        seen[inside] = both[mj[inside], mi[inside]]
        new[k] = add & seen & ~joint[k]
    n_new = clear_near_other(sub, new, lab)
    sub[new] = lab
    return {"voxels_added": int(n_new), "volume_cm3_added": round(n_new * float(np.prod(sp)) / 1000.0, 2)}


def _fluid(h: np.ndarray, where: np.ndarray, sp: list[float]) -> np.ndarray:
    """The voxels of ``where`` (one axial slice) that hold fluid or fat: smoothed HU below
    ``_FLUID_HU``, in regions of at least ``_PORE_MM2``."""
    if not where.any():
        return where
    hs = ndi.gaussian_filter(h.astype(np.float32), [_FLUID_SIGMA_MM / sp[1], _FLUID_SIGMA_MM / sp[2]])
    cc, n = ndi.label(where & (hs < _FLUID_HU))
    if not n:
        return cc > 0
    big = np.bincount(cc.ravel())[1:] * sp[1] * sp[2] >= _PORE_MM2
    return big[cc - 1] & (cc > 0)


def _canal_hole(m: np.ndarray, near_mid: np.ndarray) -> np.ndarray:
    """The sacral canal where bone encloses it in the axial section ``m`` of the sacrum: the
    hindmost (largest row: posterior in the canonical frame) of the section's holes centred in
    ``near_mid`` (the voxels near the mid-sagittal plane). The canal lies behind the sacral bodies,
    walled by the pedicles and laminae; holes in front of it are the bodies' marrow."""
    holes = ndi.binary_fill_holes(m) & ~m
    cc, n = ndi.label(holes)
    if not n:
        return holes
    idx = np.arange(1, n + 1)
    rows = ndi.mean(np.broadcast_to(np.arange(m.shape[0])[:, None], m.shape), cc, idx)
    mid = ndi.mean(np.broadcast_to(near_mid, m.shape), cc, idx)
    central = np.flatnonzero(mid > 0.5)
    if not len(central):
        return np.zeros_like(m)
    return cc == central[np.argmax(rows[central])] + 1
