"""Bone segmentation for surgeons: clean, separated, named parts from a CT volume.

``segment(volume, config)`` turns a :class:`~printpipe.volume.Volume` into a
:class:`Segmentation`: a uint8 label image on the (possibly cropped) grid, one label per named part
(``pelvis`` or ``hip_left``/``hip_right``, ``sacrum``, ``femur_left``, ``femur_right``, ``spine``,
``fragment_N``), and a JSON-ready ``info`` dict that documents every decision.

Steps (each timed in ``info["timings_s"]``):

1. crop (``roi_mm`` or ``region="pelvis"``),
2. threshold at the preset's HU range and warn about metal,
3. body mask: bone must lie inside the patient (removes the couch, cables, external markers),
4. islands below ``min_island_mm3`` dropped,
5. internal cavities (marrow) filled,
6. touching bones separated (joint-space carving, cortical seeds and cores, contact merge),
7. parts named from their position in the patient frame, mid-sagittal plane fitted,
8. optional hemipelvis split, hollowing and part selection.
"""
from __future__ import annotations
import logging
import math
import time

from typing import Any
import numpy as np

from printpipe.segment.geometry import (
    Plane,
    femoral_head_diameter,
    fit_sphere,
    midsagittal_plane,
    mirror_mesh,
    surface_deviation,
)
from printpipe.errors import InputError, SegmentationError
from printpipe.segment._util import _bbox
from printpipe.segment.body import _body_mask, _pelvis_box, _roi_to_index
from printpipe.segment.config import PART_NAMES, PRESETS, Progress, SegmentConfig, Segmentation, resolve_preset
from printpipe.segment.hemipelvis import _split_pelvis
from printpipe.segment.landmarks import _restore_heads
from printpipe.segment.naming import _clean_parts, _name_parts, _part_stats
from printpipe.segment.separate import _EDGE_PASSES, _EDGE_REACH_MM, _SOFT_TISSUE_HU, _cut_gaps, _separate
from printpipe.segment.solid import _solidify
from printpipe.segment.spine import _split_spine
from printpipe.segment.threshold import _cavities, _metal_report
from printpipe.volume import Volume


log = logging.getLogger(__name__)


__all__ = [
    "PRESETS",
    "PART_NAMES",
    "SegmentConfig",
    "Segmentation",
    "Plane",
    "segment",
    "resolve_preset",
    "midsagittal_plane",
    "mirror_mesh",
    "surface_deviation",
    "femoral_head_diameter",
    "fit_sphere",
]


def segment(volume: Volume, config: SegmentConfig = SegmentConfig(), progress: Progress = None) -> Segmentation:
    """Segment bone into separate, named parts.

    Parameters
    ----------
    volume : Volume
        CT volume in HU.
    config : SegmentConfig
        Options (preset, crop, separation, split, ...).
    progress : callable(stage, fraction), optional
        Called with ``("segment", 0..1)``.

    Returns
    -------
    Segmentation

    Raises
    ------
    SegmentationError
        When no bone lies in the HU range (inside the body and crop box).

    Notes
    -----
    *Separation* (details in ``_separate``). At the bone threshold, joints fuse by partial volume:
    the joint space (cartilage, 1-4 mm) is thinner than a voxel or a slice. Joint-space voxels (a
    thin dark layer between two bright cortical plates) are carved out; the carved mask is cut into
    pieces twice over, by cortical seeds (re-thresholding at higher HU, where partial-volume welds
    break) and by thick cores (a bony bridge is thinner than a bone's core), each grown by a priority
    flood on the distance map. Pieces are merged while they mostly touch bone-to-bone rather than
    across a gap. The femoral head, a sphere, is fitted to the femur's free surface and takes back
    any of its voxels left with the cup (thick slices blur the dome into the acetabular roof).

    *Gaps and surface.* Of every two touching voxels of different parts the darker (the joint
    space) is cleared, a gap of at least one voxel and no shared surface. The outer surface and the
    faces towards a joint space then move from the threshold to the local half-maximum edge
    (``refine_surface``), where the bone surface is.

    *Naming.* Midline regions (centroid within 35 mm of the bone's median x) are the sacrum (the
    largest one reaching below the top of the hips), the spine (above it) or, with more than 10 %
    of its bone over 70 mm to each side, a pelvis that was not separated. Lateral regions on each side are the hip (the most
    superior) and the femur (the most inferior); +x is the patient's left (LPS).
    Lumbar vertebrae fused to the sacrum through a disc are cut off at the lowest disc above the
    sacroiliac joints and named ``spine`` (``_split_spine``, after the parts are made solid).
    """
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    warnings: list[str] = []
    info: dict[str, Any] = {}

    def step(name: str, t0: float, frac: float) -> float:
        timings[name] = round(time.perf_counter() - t0, 3)
        if progress is not None:
            progress("segment", frac)
        return time.perf_counter()

    if not isinstance(volume, Volume):
        raise InputError(f"segment needs a printpipe Volume; got {type(volume).__name__}")
    low, high = config.hu_range
    info["preset"] = config.preset
    info["hu_range"] = [low, high]
    vox_mm3 = float(np.prod(volume.spacing))
    scan_shape = volume.shape

    # -- 1. crop --------------------------------------------------------------------------------
    t = time.perf_counter()
    lo_idx = [0, 0, 0]
    hi_idx = list(volume.shape)
    if config.roi_mm is not None:
        lo_idx, hi_idx = _roi_to_index(volume, config.roi_mm)
    vol = volume if (lo_idx == [0, 0, 0] and hi_idx == list(volume.shape)) else volume.crop(lo_idx, hi_idx)
    body_pre = None
    if config.region == "pelvis":
        # the couch is as dense as bone and spans every slice: find the pelvis inside the body
        body_pre = _body_mask(vol.hu, vol.spacing) if config.remove_table else None
        box = _pelvis_box(vol, low, high, None if body_pre is None else body_pre[0])
        if box is None:
            warnings.append("--region pelvis: could not find the pelvis (no slices with bone at the midline and "
                            "on both sides); kept the whole volume")
        else:
            vol = vol.crop(*box)
            if body_pre is not None:
                body_pre = (body_pre[0][box[0][0]:box[1][0], box[0][1]:box[1][1], box[0][2]:box[1][2]],
                            body_pre[1])
            lo_idx = [a + b for a, b in zip(lo_idx, box[0])]
            hi_idx = [a + (h - l) for a, l, h in zip(lo_idx, box[0], box[1])]
    info["crop"] = {"index_lo": list(map(int, lo_idx)), "index_hi": list(map(int, hi_idx)),
                    "roi_mm": list(config.roi_mm) if config.roi_mm else None, "region": config.region}
    t = step("crop", t, 0.05)

    hu = vol.hu
    # -- 2. threshold + metal ------------------------------------------------------------------------
    bone = hu >= low
    if high < 32767:
        bone &= hu <= high
    metal = _metal_report(vol, config.metal_hu, lo_idx)
    info["metal"] = metal
    if metal:
        for m in metal[:5]:
            x, y, z = m["center_lps"]
            warnings.append(
                f"metal above {config.metal_hu:g} HU ({m['volume_mm3']:.0f} mm^3) at LPS ({x:.0f}, {y:.0f}, {z:.0f}) mm, "
                f"slice {m['slice']}: streak artefacts may threshold into fake bone near it; check that region")
    t = step("threshold", t, 0.15)

    # -- 3. body mask -----------------------------------------------------------------------------
    table_vox = 0
    if config.remove_table:
        body, body_stats = body_pre if body_pre is not None else _body_mask(hu, vol.spacing)
        del body_pre
        outside = bone & ~body
        table_vox = int(np.count_nonzero(outside))
        bone &= body
        del outside
        info["body"] = body_stats
        del body
    else:
        info["body"] = None
    info["table_removed"] = {"voxels": table_vox, "volume_mm3": round(table_vox * vox_mm3, 1)}
    t = step("body", t, 0.25)

    if not bone.any():
        raise SegmentationError(
            f"no bone found between {low:g} and {high:g} HU inside the body"
            f"{' and the crop box' if (config.roi_mm or config.region) else ''}; check the series or lower --hu")

    # crop to the bone's bounding box (+1 voxel) so every later step touches only bone
    blo, bhi = _bbox(bone, pad=1)
    bone = np.ascontiguousarray(bone[blo[0]:bhi[0], blo[1]:bhi[1], blo[2]:bhi[2]])
    vol = vol.crop(blo, bhi)
    lo_idx = [a + b for a, b in zip(lo_idx, blo)]
    hu = vol.hu
    # -- 4. islands ---------------------------------------------------------------------------------
    import cc3d

    min_vox = int(math.ceil(config.min_island_mm3 / vox_mm3))
    comp, n_comp = cc3d.connected_components(bone, connectivity=26, return_N=True)
    counts = np.bincount(comp.ravel(), minlength=n_comp + 1)
    counts[0] = 0
    small = counts < max(min_vox, 1)
    small[0] = False
    dropped = int(small[1:].sum())
    dropped_vox = int(counts[small].sum())
    keep = ~small
    keep[0] = False
    bone = keep[comp]
    del comp
    info["islands_dropped"] = {"count": dropped, "volume_mm3": round(dropped_vox * vox_mm3, 1),
                               "min_island_mm3": config.min_island_mm3}
    if not bone.any():
        raise SegmentationError(
            f"no bone component of at least {config.min_island_mm3:g} mm^3 between {low:g} and {high:g} HU; "
            f"check the series, lower --hu or --min-island")
    blo, bhi = _bbox(bone, pad=1)
    bone = np.ascontiguousarray(bone[blo[0]:bhi[0], blo[1]:bhi[1], blo[2]:bhi[2]])
    vol = vol.crop(blo, bhi)
    lo_idx = [a + b for a, b in zip(lo_idx, blo)]
    hu = vol.hu
    t = step("islands", t, 0.35)

    # -- 5. cavities --------------------------------------------------------------------------------
    filled = 0
    if config.fill_cavities:
        z_open = (lo_idx[0] > 0, lo_idx[0] + bone.shape[0] < scan_shape[0])
        cav = _cavities(bone, z_open)
        filled = int(np.count_nonzero(cav))
        bone |= cav
        del cav
    info["cavities_filled"] = {"voxels": filled, "volume_mm3": round(filled * vox_mm3, 1)}
    t = step("cavities", t, 0.45)

    # -- 6. separation ------------------------------------------------------------------------------
    if config.separate:
        regions, sep_info, gap_ok = _separate(hu, bone, vol.spacing)
    else:
        regions = cc3d.connected_components(bone, connectivity=26).astype(np.int32)
        sep_info = {"method": "none (connected components)"}
        gap_ok = None
    info["separation"] = sep_info
    t = step("separate", t, 0.7)

    # -- 7. naming + plane --------------------------------------------------------------------------
    labels, names, name_info = _name_parts(regions, vol, min_vox, config.separate)
    del regions
    info["naming"] = name_info
    if config.separate:
        labels, heads = _restore_heads(labels, names, bone, vol)
        info["femoral_heads"] = heads
    plane = None
    pelvic = [lab for lab, n in names.items() if n in ("pelvis", "hip_left", "hip_right", "sacrum")]
    try:
        fit_mask = np.isin(labels, pelvic) if pelvic else labels > 0
        plane = midsagittal_plane(fit_mask, vol)
        del fit_mask
    except SegmentationError as exc:
        warnings.append(f"mid-sagittal plane not fitted: {exc}")
    info["midsagittal_plane"] = plane.as_dict() if plane is not None else None
    t = step("plane", t, 0.8)

    # -- 8. split, gap, surface, hollow, select -----------------------------------------------------
    if config.split_hemipelvis:
        labels, names = _split_pelvis(labels, names, vol, plane, warnings)
    labels = _cut_gaps(labels, hu)
    if config.refine_surface:
        # the outer surface and the faces towards a joint space move to the half-maximum edge;
        # a face cut through bone (a bony bridge, the hemipelvis split) stays where it is
        from printpipe.kernels.segment import refine_surface

        if gap_ok is None:
            gap_ok = ~bone
        else:
            gap_ok |= ~bone
        r = [max(1, int(round(_EDGE_REACH_MM / s))) for s in vol.spacing]
        peeled = refine_surface(hu, labels, gap_ok, r[0], r[1], r[2], _SOFT_TISSUE_HU, float(low), _EDGE_PASSES)
        info["surface_refined"] = {"voxels_removed": int(peeled), "volume_mm3": round(peeled * vox_mm3, 1)}
    del gap_ok
    labels, names, frag_info = _clean_parts(labels, names, min_vox)
    info["parts_cleanup"] = frag_info
    if config.fill_cavities:
        z_ends = (lo_idx[0] == 0, lo_idx[0] + labels.shape[0] >= scan_shape[0])
        info["solidified"] = _solidify(labels, names, hu, vol.spacing, z_ends)
    if config.separate:
        names, info["spine_split"] = _split_spine(labels, names, hu, vol.spacing)
    if config.hollow_wall_mm is not None:
        import edt

        d = edt.edt(labels, anisotropy=vol.spacing, black_border=True, parallel=1)
        labels[d > config.hollow_wall_mm] = 0
        info["hollow_wall_mm"] = config.hollow_wall_mm
        del d
    stats = _part_stats(labels, names, vol)
    info["parts"] = stats
    if config.parts is not None:
        missing = [p for p in config.parts if p not in names.values()]
        if missing:
            warnings.append(f"requested part(s) {', '.join(missing)} not found; found {', '.join(names.values())}")
        keep_labels = [lab for lab, n in names.items() if n in config.parts]
        names = {lab: n for lab, n in names.items() if n in config.parts}
        labels[~np.isin(labels, keep_labels)] = 0
    info["names"] = {str(k): v for k, v in names.items()}
    t = step("finish", t, 1.0)
    timings["total"] = round(time.perf_counter() - t_all, 3)
    info["timings_s"] = timings
    info["crop"]["final_index_lo"] = list(map(int, lo_idx))
    info["crop"]["final_shape"] = list(map(int, labels.shape))
    log.info("segmented %d parts (%s) in %.2f s", len(names), ", ".join(names.values()), timings["total"])
    return Segmentation(volume=vol, labels=labels, names=names, info=info, warnings=warnings)



def warmup() -> None:
    """Compile (or load from numba's cache) the segmentation kernels by segmenting a tiny phantom.

    ``printpipe.kernels.warmup()`` calls this, so a batch parent compiles everything before its
    workers start and the workers only read the cache (numba issue #4807).
    """
    from printpipe.errors import PrintpipeError
    from printpipe.phantom import pelvis_phantom

    phantom = pelvis_phantom((48, 64, 64), spacing=(6.0, 6.0, 6.0))
    try:
        segment(phantom.volume, SegmentConfig(split_hemipelvis=True))
    except PrintpipeError as exc:  # the coarse phantom may lose a part; compiling is what counts
        log.debug("segmentation warmup: %s", exc)

