"""The steps of :func:`printpipe.segment.segment`, each a short function on one shared state.

The state carries the working volume (turned to the patient frame, then cropped), the bone mask
and labels, where the crop lies in the scan, and the record of every decision (``info``) and
warning. Each step reads and updates it; ``segment()`` is their composition.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from printpipe.errors import SegmentationError
from printpipe.segment import anatomy, naming
from printpipe.segment._util import _bbox
from printpipe.segment.body import _body_mask, _pelvis_box, _roi_to_index
from printpipe.segment.config import SegmentConfig, Segmentation
from printpipe.segment.frame import Reorient, canonical
from printpipe.segment import _fast
from printpipe.segment.threshold import _cavities, _metal_report, bone_mask, drop_islands
from printpipe.volume import Volume

log = logging.getLogger(__name__)


@dataclass
class State:
    config: SegmentConfig
    original: Volume
    reorient: Reorient
    vol: Volume
    scan_shape: tuple[int, int, int]
    lo_idx: list[int] = field(default_factory=lambda: [0, 0, 0])
    body: np.ndarray | None = None
    bone: np.ndarray | None = None
    labels: np.ndarray | None = None
    names: dict[int, str] = field(default_factory=dict)
    gap_ok: np.ndarray | None = None
    heads: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, volume: Volume, config: SegmentConfig) -> "State":
        vol, ro = canonical(volume)
        low, high = config.hu_range
        st = cls(config=config, original=volume, reorient=ro, vol=vol, scan_shape=vol.shape)
        st.info.update(preset=config.preset, hu_range=[low, high],
                       frame={"reoriented": not ro.identity, "perm": list(ro.perm), "flip": list(ro.flip)})
        return st

    @property
    def min_vox(self) -> int:
        return int(math.ceil(self.config.min_island_mm3 / float(np.prod(self.vol.spacing))))

    def crop(self, lo: list[int], hi: list[int]) -> None:
        """Crop the working volume and every mask to the index box [lo, hi)."""
        if list(lo) == [0, 0, 0] and list(hi) == list(self.vol.shape):
            return
        s = tuple(slice(a, b) for a, b in zip(lo, hi))
        self.vol = self.vol.crop(lo, hi)
        for name in ("body", "bone", "labels", "gap_ok"):
            a = getattr(self, name)
            if a is not None:
                setattr(self, name, np.ascontiguousarray(a[s]))
        self.lo_idx = [a + b for a, b in zip(self.lo_idx, lo)]


def crop_and_body(st: State) -> None:
    """Crop to ``roi_mm`` or the pelvic region, and find the patient's body."""
    cfg = st.config
    if cfg.roi_mm is not None:
        st.crop(*_roi_to_index(st.vol, cfg.roi_mm))
    if cfg.remove_table:
        st.body, st.info["body"] = _body_mask(st.vol.hu, st.vol.spacing)
    else:
        st.info["body"] = None
    if cfg.region == "pelvis":
        box = _pelvis_box(st.vol, *cfg.hu_range, st.body)
        if box is None:
            st.warnings.append("--region pelvis: could not find the pelvis (no slices with bone at the midline and "
                               "on both sides); kept the whole volume")
        else:
            st.crop(*box)
    st.info["crop"] = {"index_lo": list(map(int, st.lo_idx)),
                       "index_hi": [int(a + n) for a, n in zip(st.lo_idx, st.vol.shape)],
                       "roi_mm": list(cfg.roi_mm) if cfg.roi_mm else None, "region": cfg.region}


def threshold(st: State) -> None:
    """Bone in the HU range inside the body; metal reported; crop to the bone."""
    cfg = st.config
    low, high = cfg.hu_range
    st.bone, outside = bone_mask(st.vol, low, high, st.body)
    vox_mm3 = float(np.prod(st.vol.spacing))
    st.info["table_removed"] = {"voxels": outside, "volume_mm3": round(outside * vox_mm3, 1)}
    metal = _metal_report(st.vol, cfg.metal_hu, st.lo_idx)
    st.info["metal"] = metal
    for m in metal[:5]:
        x, y, z = m["center_lps"]
        st.warnings.append(
            f"metal above {cfg.metal_hu:g} HU ({m['volume_mm3']:.0f} mm^3) at LPS ({x:.0f}, {y:.0f}, {z:.0f}) mm, "
            f"slice {m['slice']}: streak artefacts may threshold into fake bone near it; check that region")
    if not st.bone.any():
        raise SegmentationError(
            f"no bone found between {low:g} and {high:g} HU inside the body"
            f"{' and the crop box' if (cfg.roi_mm or cfg.region) else ''}; check the series or lower --hu")
    st.crop(*_bbox(st.bone, pad=1))


def islands_and_cavities(st: State) -> None:
    """Drop bone islands below ``min_island_mm3``; fill marrow cavities enclosed by bone."""
    cfg = st.config
    low, high = cfg.hu_range
    vox_mm3 = float(np.prod(st.vol.spacing))
    st.bone, dropped, dropped_vox = drop_islands(st.bone, st.min_vox)
    st.info["islands_dropped"] = {"count": dropped, "volume_mm3": round(dropped_vox * vox_mm3, 1),
                                  "min_island_mm3": cfg.min_island_mm3}
    if not st.bone.any():
        raise SegmentationError(
            f"no bone component of at least {cfg.min_island_mm3:g} mm^3 between {low:g} and {high:g} HU; "
            f"check the series, lower --hu or --min-island")
    st.crop(*_bbox(st.bone, pad=1))
    filled = 0
    if cfg.fill_cavities:
        z_open = (st.lo_idx[0] > 0, st.lo_idx[0] + st.bone.shape[0] < st.scan_shape[0])
        cav = _cavities(st.bone, z_open)
        filled = int(np.count_nonzero(cav))
        st.bone |= cav
    st.info["cavities_filled"] = {"voxels": filled, "volume_mm3": round(filled * vox_mm3, 1)}


def separate_and_name(st: State, clock) -> None:
    """Separate the bones (seeded by the femoral heads when both are found) and name them."""
    import cc3d

    from printpipe.segment.heads import find_femoral_heads
    from printpipe.segment.separate import _separate

    cfg = st.config
    if not cfg.separate:
        regions = cc3d.connected_components(st.bone, connectivity=26).astype(np.int32)
        st.info["separation"] = {"method": "none (connected components)"}
        st.labels, st.names, st.info["naming"] = naming.name_unseparated(regions, st.vol, st.min_vox, single=True)
        clock("separate", 0.7)
        return
    st.heads, st.info["femoral_heads"] = find_femoral_heads(st.vol, st.body, cfg.metal_hu)
    clock("landmarks", 0.45)
    if st.heads:
        pieces = anatomy.core_pieces(st.bone)
        mk, cut, minfo = anatomy.markers(st.vol, st.bone, st.heads, st.vol.hu, pieces)
        mk, minfo["contrast"] = anatomy.contrast_markers(st.vol, st.bone, mk, pieces)
        del pieces
        regions, st.gap_ok, sep = anatomy.flood(st.vol.hu, st.bone, st.vol.spacing, mk, cut)
        sep["markers"] = minfo
        st.info["separation"] = sep
        clock("separate", 0.7)
        st.labels, st.names, st.info["naming"] = naming.name_seeded(regions, st.vol, st.min_vox)
        st.names, st.info["non_skeleton"] = naming.drop_contrast(st.labels, st.names, st.vol.hu, st.vol)
        nc = st.info["non_skeleton"]["contrast_pieces_removed"]
        if nc:
            st.warnings.append(f"{nc} piece(s) of contrast-filled bowel ({st.info['non_skeleton']['volume_cm3']:g} cm^3) "
                               f"reached bone HU and were removed: no cortex, brighter inside than at the rim")
    else:
        st.warnings.append("femoral heads not found (no pair of spheres 34-62 mm across in bony cups, 120-240 mm "
                           "apart): parts separated without anatomical landmarks are named bone_N; check the "
                           "field of view covers both hip joints")
        regions, sep, st.gap_ok = _separate(st.vol.hu, st.bone, st.vol.spacing)
        st.info["separation"] = sep
        clock("separate", 0.7)
        st.labels, st.names, st.info["naming"] = naming.name_unseparated(regions, st.vol, st.min_vox)
    clock("name", 0.75)


def finish_parts(st: State) -> None:
    """Pelvis or hemipelves, gaps between parts, surface at the half-maximum edge, small pieces
    dropped, solid parts, the spine cut off the sacrum, hollowing, anatomical checks, selection."""
    from printpipe.segment.hemipelvis import join_hips
    from printpipe.segment.naming import _clean_parts, _part_stats, check_parts
    from printpipe.segment.separate import _cut_gaps
    from printpipe.segment.solid import _solidify
    from printpipe.segment.spine import _split_spine

    cfg = st.config
    hu = st.vol.hu
    if not cfg.split_hemipelvis:
        st.labels, st.names = join_hips(st.labels, st.names)
    _cut_gaps(st.labels, hu)
    if cfg.refine_surface:
        _refine(st)
    if st.heads:
        st.info["heads_restored"] = _restore_heads(st)
        _cut_gaps(st.labels, hu)
    st.gap_ok = None
    st.labels, st.names, st.info["parts_cleanup"] = _clean_parts(st.labels, st.names, st.min_vox)
    if cfg.fill_cavities:
        from printpipe.segment.solid import recover_shells
        st.info["shells"] = recover_shells(st.labels, st.names, hu, st.vol.spacing, cfg.hu_range[0])
        _cut_gaps(st.labels, hu)
        z_ends = (st.lo_idx[0] == 0, st.lo_idx[0] + st.labels.shape[0] >= st.scan_shape[0])
        st.info["solidified"] = _solidify(st.labels, st.names, hu, st.vol.spacing, z_ends)
    if cfg.separate:
        from printpipe.segment.spine import patient_scale
        st.names, st.info["spine_split"] = _split_spine(st.labels, st.names, hu, st.vol.spacing,
                                                        patient_scale(st.heads))
    if cfg.fill_cavities:
        from printpipe.segment.solid import close_sacrum
        st.info["sacrum_closed"] = close_sacrum(st.labels, st.names, st.vol.hu, st.vol.spacing, _midline_offset(st))
    # the anatomical checks judge the solid bone (a hollowed femur has lost its head's core)
    st.names, st.info["checks"] = check_parts(st.labels, st.names, st.vol, st.heads, st.warnings)
    if cfg.hollow_wall_mm is not None:
        import edt

        d = edt.edt(st.labels, anisotropy=st.vol.spacing, black_border=True, parallel=1)
        st.labels[d > cfg.hollow_wall_mm] = 0
        st.info["hollow_wall_mm"] = cfg.hollow_wall_mm
        del d
    st.info["parts"] = _part_stats(st.labels, st.names, st.vol)
    others = [lab for lab, n in st.names.items() if n.startswith("other_")]
    if cfg.region == "pelvis" and others:
        st.info["not_exported"] = {st.names[lab]: st.info["parts"].get(st.names[lab]) for lab in others}
        vol_cm3 = sum((st.info["parts"].get(st.names[lab]) or {}).get("volume_cm3", 0.0) for lab in others)
        st.warnings.append(f"{len(others)} bone piece(s) outside the pelvic skeleton (ribs, arms; {vol_cm3:.0f} cm^3) "
                           f"not exported with --region pelvis: {', '.join(st.names[lab] for lab in others)}")
        st.labels[_fast.isin(st.labels, others)] = 0
        st.names = {k: v for k, v in st.names.items() if k not in others}
    if cfg.parts is not None:
        missing = [p for p in cfg.parts if p not in st.names.values()]
        if missing:
            st.warnings.append(f"requested part(s) {', '.join(missing)} not found; found {', '.join(st.names.values())}")
        keep = [lab for lab, n in st.names.items() if n in cfg.parts]
        st.names = {lab: n for lab, n in st.names.items() if n in cfg.parts}
        st.labels[~_fast.isin(st.labels, keep)] = 0
    st.info["names"] = {str(k): v for k, v in st.names.items()}


#: the outer shell (mm) of the fitted head sphere taken only where it is bone: the fit's residual
#: (0.8-1.2 mm rms on real heads) puts cartilage and joint space there
_HEAD_SHELL_MM = 2.0


def _midline_offset(st: State) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The mid-sagittal plane of the two femoral heads in the axial grid of the working volume:
    each (row, column)'s signed distance to it (mm, + to the patient's left) and the row and column
    of its mirror image across it, taken in the middle slice; None without both heads. The plane
    passes through the heads' midpoint, normal to the line between them in the axial plane, so a
    patient turned on the couch has it turned too."""
    if len(st.heads) != 2:
        return None
    cl, cr = st.heads["left"].center, st.heads["right"].center
    mid = (cl + cr) / 2.0
    n = np.array([cl[0] - cr[0], cl[1] - cr[1], 0.0])
    n /= max(float(np.linalg.norm(n)), 1e-9)
    nz, ny, nx = st.vol.shape
    jj, ii = np.meshgrid(np.arange(ny, dtype=float), np.arange(nx, dtype=float), indexing="ij")
    idx = np.stack([np.full(jj.size, nz / 2.0), jj.ravel(), ii.ravel()], axis=1)
    p = st.vol.index_to_patient(idx)
    off = (p - mid) @ n
    back = st.vol.patient_to_index(p - 2.0 * off[:, None] * n[None, :])
    mj = np.rint(back[:, 1]).astype(np.int64).reshape(ny, nx)
    mi = np.rint(back[:, 2]).astype(np.int64).reshape(ny, nx)
    return off.reshape(ny, nx), mj, mi


def _restore_heads(st: State) -> dict[str, int]:
    """The femoral head is a sphere: its bone inside the fitted head (its bone surface), and all of
    the sphere less a thin outer shell, belong to the femur unless another part holds them. Thick slices blur the dome into the acetabular roof, and the
    half-maximum refinement, seeing the cup's cortex beyond, would otherwise peel the dome a slice
    or two; under the fovea and facing the acetabular fossa no cortex closes the head, so its
    marrow (below the threshold) would stay out of the part."""
    from printpipe.segment.anatomy import _box, _coords

    inv = {v: k for k, v in st.names.items()}
    out = {}
    for side, h in st.heads.items():
        lab = inv.get(f"femur_{side}")
        if lab is None or h.implant:   # a metal head is the implant's, not the femur's
            continue
        sl = _box(st.vol, h.center, h.radius_mm + 1.0)
        d2 = ((_coords(st.vol, sl) - h.center.astype(np.float32)) ** 2).sum(-1)
        sub = st.labels[sl]
        # bone the refinement peeled (bright, inside the sphere), and the whole sphere less its
        # outer _HEAD_SHELL_MM: the marrow under the fovea and the acetabular fossa, where no
        # cortex closes the head; nothing another part holds
        bone = (d2 < np.float32(h.radius_mm ** 2)) & (st.vol.hu[sl] >= st.config.hu_range[0])
        core = d2 < np.float32(max(h.radius_mm - _HEAD_SHELL_MM, 0.0) ** 2)
        add = (core | bone) & (sub == 0)
        sub[add] = lab
        out[side] = int(add.sum())
    return out


def _refine(st: State) -> None:
    """Move the outer surface and the faces towards a joint space from the threshold to the
    local half-maximum edge; a face cut through bone stays where it is."""
    from printpipe.kernels.segment import refine_surface
    from printpipe.segment.separate import _EDGE_PASSES, _EDGE_REACH_MM, _SOFT_TISSUE_HU

    gap_ok = ~st.bone if st.gap_ok is None else (st.gap_ok | ~st.bone)
    # the peak is looked for within the reach, not beyond it: slices thicker than the reach are
    # searched in-plane only (rounding 2.5 mm up to one 3 mm slice took the peak of the cortex
    # above or below, 3 mm away, and peeled sloping surfaces a voxel too deep: on pelvic-ref002
    # the hip bones' Dice against the expert labels went 0.896 / 0.908 -> 0.908 / 0.915, the
    # pelvic-ref003 femurs' against the manual contours 0.910 / 0.902 -> 0.910 / 0.901)
    r = [int(_EDGE_REACH_MM // s) for s in st.vol.spacing]
    peeled = refine_surface(st.vol.hu, st.labels, gap_ok, r[0], r[1], r[2], _SOFT_TISSUE_HU,
                            float(st.config.hu_range[0]), _EDGE_PASSES)
    st.info["surface_refined"] = {"voxels_removed": int(peeled),
                                  "volume_mm3": round(peeled * float(np.prod(st.vol.spacing)), 1)}


def result(st: State) -> Segmentation:
    """The Segmentation on the scan's own grid (the patient-frame turn undone) and its plane."""
    from printpipe.segment.geometry import midsagittal_plane

    plane = None
    pelvic = [lab for lab, n in st.names.items() if n in ("pelvis", "hip_left", "hip_right", "sacrum")]
    try:
        if st.names:
            plane = midsagittal_plane(_fast.isin(st.labels, pelvic) if pelvic else st.labels > 0, st.vol)
    except SegmentationError as exc:
        st.warnings.append(f"mid-sagittal plane not fitted: {exc}")
    st.info["midsagittal_plane"] = plane.as_dict() if plane is not None else None
    hi = [a + n for a, n in zip(st.lo_idx, st.labels.shape)]
    lo, hi = st.reorient.box_back(st.lo_idx, hi)
    labels = st.reorient.backward(st.labels)
    vol = st.original.crop(lo, hi) if (lo != [0, 0, 0] or hi != list(st.original.shape)) else st.original
    st.info["crop"]["final_index_lo"] = list(map(int, lo))
    st.info["crop"]["final_shape"] = list(map(int, labels.shape))
    return Segmentation(volume=vol, labels=labels, names=st.names, info=st.info, warnings=st.warnings)
