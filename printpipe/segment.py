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
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy import ndimage as ndi

from printpipe._segment_geometry import (
    Plane,
    femoral_head_diameter,
    fit_sphere,
    midsagittal_plane,
    mirror_mesh,
    surface_deviation,
)
from printpipe.errors import InputError, SegmentationError
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

#: name -> (low HU, high HU, description). The first three are InVesalius's adult CT presets
#: ("Bone", "Compact Bone (Adult)", "Spongial Bone (Adult)").
PRESETS: dict[str, tuple[float, float, str]] = {
    "bone": (226.0, 3071.0, "all bone, cortical and trabecular (InVesalius 'Bone'); the default"),
    "compact-bone": (662.0, 1988.0, "compact (cortical) bone only (InVesalius 'Compact Bone (Adult)')"),
    "spongy-bone": (148.0, 661.0, "spongy (trabecular) bone (InVesalius 'Spongial Bone (Adult)')"),
    "bone-lowdose": (180.0, 3071.0, "noisy low-dose scans or thin osteoporotic cortex: a lower threshold "
                                    "keeps thin walls closed (more fused joints)"),
    "bone-dense": (400.0, 3071.0, "dense bone only: fewer fused joints and less noise, thin walls "
                                  "(acetabular floor, sacral alae) may open"),
    "bone-contrast": (300.0, 3071.0, "contrast-enhanced CT: above most iodinated vessels (150-300 HU)"),
}

#: names a part can carry (plus ``fragment_N``)
PART_NAMES = ("pelvis", "hip_left", "hip_right", "sacrum", "femur_left", "femur_right", "spine", "bone")

_REGIONS = ("pelvis",)

# -- separation constants (see _separate) --------------------------------------------------------
#: joint-space voxels are darker than this (a 2-3 mm joint sampled at 2 mm still reads ~450 HU)
_VALLEY_CAP = 650.0
#: ... and lie between two plates at least this bright (subchondral cortex) ...
_VALLEY_BRIGHT = 450.0
#: ... and at least this much brighter than the voxel itself
_VALLEY_DELTA = 150.0
#: how far (mm) each way the plates are looked for: half a joint space plus the partial-volume blur
_JOINT_RAY_MM = 4.0
#: distance (mm) from the carved surface that makes a bone core (a bony bridge is thinner)
_CORE_MM = 8.0
#: HU levels tried for cortical seeds
_SEED_LEVELS = (300, 400, 500, 600, 700, 850, 1000)
#: smallest seed (mm^3; and at least 1 % of the bone) and smallest part a seed splits into
_MIN_SEED_MM3 = 5000.0
_MIN_CHILD_MM3 = 2000.0
#: pieces of the intersection smaller than this (mm^3) are grown over by their neighbours
_MIN_PIECE_MM3 = 200.0
#: seeds closer than core radius + this (mm) to a core are released to the watershed
_RELEASE_MM = 4.0
#: widest gap (mm) across which two regions count as facing each other at a joint
_JOINT_GAP_MM = 5.0
#: two regions are one bone when direct bone contact is at least this multiple of their joint contact
_MERGE_RATIO = 0.5
#: ... and at least this multiple when both regions are bone-sized (_BONE_MM3)
_MERGE_RATIO_BONES = 1.5
_BONE_MM3 = 80000.0
#: regions smaller than this (mm^3) do not take part in the merge but are grown over afterwards
_LARGE_MM3 = 10000.0
#: joint contact (mm^2) every pair is assumed to have before counting
_MERGE_PRIOR_MM2 = 50.0
#: a direct contact whose darker voxel is this much below bright plates on both sides is a joint
_DIP_HU = 100.0
#: two cores stay apart when the distance map between them dips below this fraction of the shallower
_NECK_RATIO = 0.5
#: step (mm) of the distance levels of the priority flood
_FLOOD_STEP_MM = 0.1
#: seeds are found on a grid of about this spacing (mm) when the scan is finer
_SEED_GRID_MM = 1.4

# -- surface refinement (see segment, step 7b) ----------------------------------------------------
#: HU of the soft tissue around bone (muscle, 30-60 HU): the low end of the partial-volume ramp
_SOFT_TISSUE_HU = 40.0
#: how far (mm) the brightest voxel of the cortex is looked for around a surface voxel
_EDGE_REACH_MM = 2.5
#: surface layers tested
_EDGE_PASSES = 2
#: hip voxels this many voxels (largest spacing) inside the fitted femoral-head sphere go to the femur
_HEAD_MARGIN_VOXELS = 0.5

# -- solid parts (see _solidify) -------------------------------------------------------------------
#: radius (mm) of the closing that seals thin, porous cortex (partial volume at thick slices)
_CLOSE_MM = 3.0
#: a hole in a slice (axial, coronal or sagittal) is marrow when its mean HU is at least this
#: (trabecular bone below the threshold reads ~100-220 HU; the spinal canal, foramina, pelvic
#: inlet and obturator foramen hold CSF, fat, muscle or bowel, below ~80 HU) ...
_MARROW_HU = 100.0
#: ... and it is smaller than this (mm^2; a femoral head's cross-section is ~1800 mm^2)
_MARROW_MAX_MM2 = 2500.0
#: holes in a slice smaller than this (mm^2) are filled whatever their HU (pores, noise)
_PORE_MM2 = 12.0

# -- lumbar spine off the sacrum (see _split_spine) --------------------------------------------------
#: the sacroiliac joint: sacrum voxels within this distance (mm) of the pelvis
_SI_MM = 5.0
#: vertebral-body box per axial slice: this far (mm) to each side of the midline ...
_BODY_HALF_MM = 10.0
#: ... and from this depth to that (mm) behind the body's anterior surface
_BODY_DEPTH_MM = (3.0, 28.0)
#: a disc: a slice whose body-box mean HU is below this fraction of the brightest slice within
#: ``_DISC_REACH_MM`` on each side (bodies > ~250 HU in the box, discs ~50-100 HU, 3 mm slices blur)
_DISC_RATIO = 0.6
_DISC_REACH_MM = 12.0
#: tilts (deg, about x) of the body box: the lumbosacral disc leans forward ~30 deg
_DISC_TILTS_DEG = (-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0)
#: the bone within ``_SI_MM`` of the pelvis reaches L5's transverse processes by the iliac crest,
#: up to about a vertebral body above the S1 endplate: discs are looked for from this far (mm)
#: below the top of that contact
_SI_BELOW_MM = 25.0
#: the tilted disc reaches this far (mm) above its mid slice at the body box's ends
_DISC_TILT_REACH_MM = 8.0
#: a disc has a vertebral body (or S1) below it: the brightest slice below reads at least this (HU)
_BODY_HU = 200.0


def resolve_preset(name: str) -> tuple[float, float, str]:
    """Look up a preset by name (case, spaces and underscores do not matter)."""
    key = str(name).strip().lower().replace("_", "-").replace(" ", "-")
    if key not in PRESETS:
        raise InputError(f"preset {name!r} is unknown; choose one of {', '.join(PRESETS)} "
                         f"(printpipe presets lists them) or give --hu LOW:HIGH")
    return PRESETS[key]


@dataclass(frozen=True)
class SegmentConfig:
    """Options of :func:`segment`.

    Parameters
    ----------
    preset : str
        HU preset (see :data:`PRESETS`), default ``"bone"`` (226-3071 HU).
    hu_low, hu_high : float or None
        Override the preset's bounds.
    min_island_mm3 : float
        Bone components smaller than this are dropped. Default 1000 mm^3 (1 cm^3, a 12 mm ball):
        below the size a surgeon fixes with a screw or would print, and above phleboliths, vessel
        calcifications, noise specks and skin markers (tens of mm^3).
    fill_cavities : bool
        Fill internal cavities (marrow, unmineralised trabecular pockets) so parts print solid.
    hollow_wall_mm : float or None
        Hollow each part to a shell of this wall thickness (cheaper FDM prints).
    min_wall_mm : float
        Thinnest hollow wall allowed: two extrusion widths of the printer's nozzle (0.9 mm for a
        0.4 mm nozzle); the pipeline sets it from the chosen printer.
    separate : bool
        Separate touching bones at their joints (otherwise one ``bone`` part per component group).
    split_hemipelvis : bool
        Cut the pelvis at its fitted mid-sagittal plane into ``hip_left`` and ``hip_right``.
    mirror : {"left", "right"} or None
        Hemipelvis the pipeline mirrors into a template of the other side (implies the split).
    parts : tuple of str or None
        Export only these parts.
    roi_mm : (xmin, xmax, ymin, ymax, zmin, zmax) or None
        Crop box in patient (LPS) millimetres.
    region : {"pelvis"} or None
        Crop automatically around this region (with a margin) before the expensive steps.
    remove_table : bool
        Keep only bone inside the body (removes the couch, cables, external markers).
    metal_hu : float
        Voxels above this are reported as metal (implants, which streak into fake bone).
    refine_surface : bool
        Move each part's outer surface from the preset's threshold to the local half-maximum
        edge (half-way between soft tissue and the nearby cortex), where the bone surface is.
        A fixed 226 HU threshold lies on the outer foot of the partial-volume ramp of cortical
        bone and makes every part about half a voxel too fat.
    """

    preset: str = "bone"
    hu_low: float | None = None
    hu_high: float | None = None
    min_island_mm3: float = 1000.0
    fill_cavities: bool = True
    hollow_wall_mm: float | None = None
    min_wall_mm: float = 0.9
    separate: bool = True
    split_hemipelvis: bool = False
    mirror: str | None = None
    parts: tuple[str, ...] | None = None
    roi_mm: tuple[float, float, float, float, float, float] | None = None
    region: str | None = None
    remove_table: bool = True
    metal_hu: float = 2500.0
    refine_surface: bool = True

    def __post_init__(self) -> None:
        low, high, _ = resolve_preset(self.preset)
        lo = low if self.hu_low is None else self.hu_low
        hi = high if self.hu_high is None else self.hu_high
        for name, v in (("hu_low", lo), ("hu_high", hi)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and -1024 <= v <= 32767):
                raise InputError(f"{name} must be a finite HU value in -1024..32767; got {v!r}")
        if lo >= hi:
            raise InputError(f"hu_low {lo:g} must be below hu_high {hi:g}; give --hu LOW:HIGH with LOW < HIGH")
        if not (isinstance(self.min_island_mm3, (int, float)) and self.min_island_mm3 >= 0
                and math.isfinite(self.min_island_mm3)):
            raise InputError(f"min_island_mm3 must be >= 0 mm^3; got {self.min_island_mm3!r}")
        if not (math.isfinite(self.min_wall_mm) and self.min_wall_mm > 0):
            raise InputError(f"min_wall_mm must be > 0 mm; got {self.min_wall_mm!r}")
        if self.hollow_wall_mm is not None:
            w = self.hollow_wall_mm
            if not (isinstance(w, (int, float)) and math.isfinite(w) and w > 0):
                raise InputError(f"hollow_wall_mm must be a positive wall thickness in mm; got {w!r}")
            if w < self.min_wall_mm - 1e-9:
                nozzle = self.min_wall_mm / 2.25
                raise InputError(
                    f"hollow wall {w:g} mm is thinner than two extrusion widths of a {nozzle:.2g} mm nozzle "
                    f"({self.min_wall_mm:g} mm); choose --hollow {self.min_wall_mm:g} or more")
        if self.mirror is not None and self.mirror not in ("left", "right"):
            raise InputError(f"mirror must be 'left' or 'right'; got {self.mirror!r}")
        if self.mirror is not None and not self.split_hemipelvis:
            # mirroring a hemipelvis needs the split; turn it on rather than fail later
            object.__setattr__(self, "split_hemipelvis", True)
        if self.mirror is not None and not self.separate:
            raise InputError("mirror needs separated parts; drop --no-separate or --mirror")
        if self.parts is not None:
            parts = tuple(str(p).strip() for p in self.parts if str(p).strip())
            if not parts:
                raise InputError("parts is empty; name at least one part (e.g. --parts pelvis,femur_left)")
            for p in parts:
                if p not in PART_NAMES and not (p.startswith("fragment_") and p[9:].isdigit()):
                    raise InputError(f"part {p!r} is unknown; choose from {', '.join(PART_NAMES)} or fragment_N")
            object.__setattr__(self, "parts", parts)
        if self.roi_mm is not None:
            roi = tuple(float(v) for v in self.roi_mm)
            if len(roi) != 6 or not all(math.isfinite(v) for v in roi):
                raise InputError(f"roi_mm must be six numbers xmin,xmax,ymin,ymax,zmin,zmax; got {self.roi_mm!r}")
            for axis, (a, b) in zip("xyz", (roi[0:2], roi[2:4], roi[4:6])):
                if a >= b:
                    raise InputError(f"roi_mm {axis}min {a:g} must be below {axis}max {b:g}")
            object.__setattr__(self, "roi_mm", roi)
        if self.region is not None and self.region not in _REGIONS:
            raise InputError(f"region {self.region!r} is unknown; choose one of {', '.join(_REGIONS)}")
        if not math.isfinite(self.metal_hu):
            raise InputError(f"metal_hu must be finite; got {self.metal_hu!r}")

    @property
    def hu_range(self) -> tuple[float, float]:
        """The effective (low, high) HU range: preset overridden by ``hu_low``/``hu_high``."""
        low, high, _ = resolve_preset(self.preset)
        return (low if self.hu_low is None else float(self.hu_low),
                high if self.hu_high is None else float(self.hu_high))


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Result of :func:`segment`.

    Attributes
    ----------
    volume : Volume
        The (possibly cropped) volume the labels refer to.
    labels : (nz, ny, nx) uint8 ndarray
        0 = background, else a part label on ``volume``'s grid.
    names : dict[int, str]
        Label -> part name (only the exported parts).
    info : dict
        JSON-serialisable record of the decisions and measurements.
    warnings : list[str]
        Things the user should know (metal, parts not found, ...).
    """

    volume: Volume
    labels: np.ndarray
    names: dict[int, str]
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def mask(self, name: str) -> np.ndarray:
        """Bool mask of the part called ``name``."""
        for label, n in self.names.items():
            if n == name:
                return self.labels == label
        raise KeyError(f"no part named {name!r}; parts are {', '.join(self.names.values()) or 'none'}")

    def label_of(self, name: str) -> int:
        for label, n in self.names.items():
            if n == name:
                return label
        raise KeyError(name)


Progress = Callable[[str, float], None] | None


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
        from printpipe._segment_kernels import refine_surface

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


# ---------------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------------

def _bbox(mask: np.ndarray, pad: int = 0) -> tuple[list[int], list[int]]:
    lo, hi = [], []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        lo.append(max(int(idx[0]) - pad, 0))
        hi.append(min(int(idx[-1]) + 1 + pad, mask.shape[ax]))
    return lo, hi


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


def _metal_report(vol: Volume, metal_hu: float, lo_idx: list[int]) -> list[dict[str, Any]]:
    """Connected blobs above ``metal_hu`` of at least ~10 mm^3 (a few stray voxels are noise)."""
    if metal_hu >= 32767:
        return []
    hot = vol.hu > metal_hu
    if not hot.any():
        return []
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
                    "max_hu": int(vol.hu[sl][comp[sl] == lab].max())})
    return out


def _body_mask(hu: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, dict[str, Any]]:
    """The patient's body: the largest object above -500 HU, opened to cut thin contacts with the
    couch, holes (lungs, bowel gas) filled. Computed on a grid of about 2 mm in-plane, then upsampled
    and dilated by one coarse voxel so no bone at the skin is lost."""
    import cc3d

    f = tuple(max(1, int(round(2.0 / s))) for s in spacing)
    nz, ny, nx = hu.shape
    coarse = hu[::f[0], ::f[1], ::f[2]] > -500
    # opening with a ~4 mm in-plane radius: a couch or cushion touching the skin along a thin
    # contact comes loose, the body itself (tens of centimetres across) survives
    st = ndi.generate_binary_structure(3, 1)
    st[0] = st[2] = False  # in-plane only: slices may be thick
    it = max(1, int(round(4.0 / (f[1] * spacing[1]))))
    er = ndi.binary_erosion(coarse, structure=st, iterations=it)
    comp, n = cc3d.connected_components(er, connectivity=6, return_N=True)
    if n == 0:
        body_c = coarse
    else:
        counts = np.bincount(comp.ravel())
        counts[0] = 0
        body_c = comp == int(np.argmax(counts))
        body_c = ndi.binary_dilation(body_c, structure=st, iterations=it + 1) & coarse
        # dilate once more so the skin line itself is inside
        body_c = ndi.binary_dilation(body_c, structure=st, iterations=1)
    # fill holes: background components that do not touch the in-plane border of the grid
    bg = cc3d.connected_components(~body_c, connectivity=6)
    border = np.unique(np.concatenate([bg[:, 0, :].ravel(), bg[:, -1, :].ravel(), bg[:, :, 0].ravel(),
                                       bg[:, :, -1].ravel()]))
    inner = ~np.isin(bg, border) & (bg > 0)
    body_c |= inner
    body = body_c
    for ax, k in enumerate(f):
        if k > 1:
            body = np.repeat(body, k, axis=ax)
    body = body[:nz, :ny, :nx]
    stats = {"voxels": int(np.count_nonzero(body)),
             "volume_cm3": round(float(np.count_nonzero(body) * np.prod(spacing) / 1000.0), 1),
             "grid_step": list(f), "opening_mm": round(it * f[1] * spacing[1], 1)}
    return body, stats


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
    cav = inner[bg]
    return cav


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


def _separate(hu: np.ndarray, bone: np.ndarray, spacing: tuple[float, float, float]
              ) -> tuple[np.ndarray, dict[str, Any], np.ndarray]:
    """Split the (filled) bone mask into one region per bone; returns int32 region labels, a record
    and the bool map of joint-space voxels.

    1. *Joint space.* A joint is a thin layer of lower HU between two cortical plates. A voxel of
       the mask below ``_VALLEY_CAP`` HU whose rays (``_JOINT_RAY_MM`` long, both ways along one of
       the 13 directions of a 26-neighbourhood) both reach cortex (at least ``_VALLEY_BRIGHT`` HU and
       ``_VALLEY_DELTA`` above the voxel) is a joint-space ("valley") voxel and is carved out.
    2. *Two over-segmentations of the carved mask*, each grown by a watershed on the negated
       distance map (borders settle at narrow necks):

       - *cortical seeds*: the carved mask is thresholded again at the lowest of several HU levels
         that gives the most large components; a seed that still splits into sizeable parts at a
         higher level is split (partial-volume welds are darker than cortex). Thick cores (points
         deeper than ``_CORE_MM``, e.g. a femoral head) take back their thick region from the seeds,
         so a head welded to its cup at the dome is a region of its own;
       - *cores*: the components of the distance map above ``_CORE_MM``. A bony bridge across a
         joint is narrower than that, so sacrum and ilium get different cores even where bridges
         join them into one seed.

       Their intersection (split into connected pieces) is grown back into the carved joint-space
       voxels (nearest region in 6-connected steps).
    3. *Merge.* Two regions are one bone when they mostly touch directly (bone runs on across the
       border) rather than face each other across a gap of up to ``_JOINT_GAP_MM`` (a joint space,
       carved, below the threshold, or a direct contact that is a dip between two brighter plates).
       Contacts are measured as areas (mm^2, so thick slices do not count three times), and every
       pair starts with ``_MERGE_PRIOR_MM2`` of joint contact. The pair with the largest
       ``bone / joint`` (relative to its bar) is merged while it clears its bar:
       ``_MERGE_RATIO`` for a piece joining a bone, ``_MERGE_RATIO_BONES`` when both regions are
       bone-sized (``_BONE_MM3``): a femur welded to its cup at the dome, or a sacrum joined to an
       ilium by bridges, is not one bone. Only regions of at least ``_LARGE_MM3`` take part; smaller
       pieces are grown over by their neighbours afterwards.
    """
    import cc3d
    import edt

    from printpipe._segment_kernels import (boundary_pairs, facing_counts, flood, grow_labels, neighbour_dirs,
                                            region_peaks, valley_map)

    sp = np.asarray(spacing, dtype=float)
    aniso = tuple(map(float, spacing))
    vox = float(np.prod(sp))
    total = int(np.count_nonzero(bone))
    dirs = neighbour_dirs()
    steps = np.array([max(1, int(round(_JOINT_RAY_MM / float(np.linalg.norm(d * sp))))) for d in dirs],
                     dtype=np.int64)
    tm: dict[str, float] = {}
    t0 = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal t0
        tm[name] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()

    # 1. joint space
    valley = valley_map(hu, bone, dirs, steps, _VALLEY_CAP, _VALLEY_BRIGHT, _VALLEY_DELTA)
    n_valley = int(np.count_nonzero(valley))
    carved = bone & (valley == 0)
    mark("valley")
    dist = np.asarray(edt.edt(carved, anisotropy=aniso, parallel=_threads()), dtype=np.float32)
    core_mm = max(_CORE_MM, 2.0 * float(sp.max()))
    cores, n_core = cc3d.connected_components(dist > core_mm, connectivity=6, return_N=True)
    cores = cores.astype(_label_dtype(n_core), copy=False)
    # the distance map in steps of _FLOOD_STEP_MM is all the floods and the neck test need
    dist *= 1.0 / _FLOOD_STEP_MM
    np.minimum(dist, 65000, out=dist)
    level = dist.astype(np.uint16)
    del dist
    mark("distance")
    # 2a. cortical seeds
    # seeds are markers only: on fine grids they are found on a grid of about _SEED_GRID_MM
    f = tuple(max(1, int(round(_SEED_GRID_MM / s))) for s in spacing)
    if f == (1, 1, 1):
        seeds, n_seed, seed_level, refined = _level_seeds(hu, carved, total, vox)
    else:
        sl = tuple(slice(None, None, k) for k in f)
        seeds, n_seed, seed_level, refined = _level_seeds(hu[sl], carved[sl], total // int(np.prod(f)),
                                                          vox * float(np.prod(f)))
        for ax, k in enumerate(f):
            if k > 1:
                seeds = np.repeat(seeds, k, axis=ax)
        seeds = seeds[: bone.shape[0], : bone.shape[1], : bone.shape[2]]
        seeds[~carved] = 0
        seeds = np.ascontiguousarray(seeds)
    mark("seeds")
    if n_core:
        # distance to the nearest core (on the seed grid: the ball and the release zone are
        # heuristics that a voxel or two do not change)
        sl = tuple(slice(None, None, k) for k in f)
        near = edt.edt(cores[sl] == 0, anisotropy=tuple(a * k for a, k in zip(aniso, f)), parallel=_threads())
        ball = near < core_mm - float(sp.max())
        release = near < core_mm + _RELEASE_MM
        del near
        for ax, k in enumerate(f):
            if k > 1:
                ball = np.repeat(ball, k, axis=ax)
                release = np.repeat(release, k, axis=ax)
        ball = ball[: bone.shape[0], : bone.shape[1], : bone.shape[2]] & carved
        # around a core the seeds let go (the watershed decides there): a femoral head's cortex,
        # part of a seed welded to the cup, goes with the head's core unless a neck is narrower
        seeds[release[: bone.shape[0], : bone.shape[1], : bone.shape[2]]] = 0
        del release
        grown = grow_labels(cores.copy(), ball)
        sel = grown > 0
        seeds[sel] = grown[sel].astype(seeds.dtype) + n_seed
        del grown, ball, sel
        mark("core_balls")
    regions = flood(seeds.astype(_label_dtype(n_seed + n_core), copy=False), level, carved)
    del seeds
    mark("watershed_seeds")
    # 2b. cores, and the intersection of the two
    if n_core:
        by_core = flood(cores, level, carved)
        mark("watershed_cores")
        # core regions stay apart only across a narrow neck (a bony bridge): saddle of the distance
        # map below _NECK_RATIO of the smaller core's depth
        sad, _ = boundary_pairs(by_core, level, n_core)
        peak = region_peaks(by_core, level, n_core)
        root = np.arange(n_core + 1)
        for a, b in sorted(zip(*np.nonzero(sad >= 0)), key=lambda ab: -sad[ab[0], ab[1]]):
            ra, rb = int(a), int(b)
            while root[ra] != ra:
                ra = root[ra]
            while root[rb] != rb:
                rb = root[rb]
            if ra != rb and sad[a, b] >= _NECK_RATIO * min(peak[ra], peak[rb]):
                root[rb] = ra
                peak[ra] = max(peak[ra], peak[rb])
        for a in range(n_core + 1):
            r = a
            while root[r] != r:
                r = root[r]
            root[a] = r
        by_core = root.astype(by_core.dtype)[by_core]
        # every (seed region, core region) pair is a piece
        n_reg = int(regions.max())
        pair = regions.astype(_label_dtype((n_reg + 1) * (n_core + 1)))
        del regions
        pair *= n_core + 1
        pair += by_core
        del by_core
        used = np.bincount(pair.ravel()) > 0
        used[0] = False
        lut = np.cumsum(used)
        lut[~used] = 0
        regions = lut.astype(_label_dtype(int(lut.max())))[pair]
        del pair
        regions[~carved] = 0
    del cores, level
    comp, n = cc3d.connected_components(regions, connectivity=6, return_N=True)
    del regions
    counts = np.bincount(comp.ravel(), minlength=n + 1)
    small = counts < max(1, int(_MIN_PIECE_MM3 / vox))
    small[0] = True
    lut = np.cumsum(~small)
    lut[small] = 0
    n = int(lut.max())
    # room for the thin components added below
    regions = lut.astype(_label_dtype(n + 60000))[comp]
    del comp
    del carved
    mark("intersect")
    regions = grow_labels(regions, bone)
    # components of the mask that hold no region (thin bones) keep their own labels
    rest = bone & (regions == 0)
    n_extra = 0
    if rest.any():
        extra, n_extra = cc3d.connected_components(rest, connectivity=26, return_N=True)
        if n + n_extra >= np.iinfo(regions.dtype).max:
            regions = regions.astype(np.int32)
        regions[rest] = extra[rest].astype(regions.dtype) + n
        del extra
    del rest
    n_all = n + int(n_extra)
    mark("grow")
    # 3. merge
    reach = np.array([max(1, int(math.ceil(_JOINT_GAP_MM / s))) for s in spacing], dtype=np.int64)
    ray = np.array([max(1, int(round(_JOINT_RAY_MM / s))) for s in spacing], dtype=np.int64)
    area = np.array([sp[1] * sp[2], sp[0] * sp[2], sp[0] * sp[1]], dtype=np.float64)
    bone_c, joint_c = facing_counts(regions, valley, hu, reach, ray, _DIP_HU, area, n_all)
    mark("contacts")
    bone_c = (bone_c + bone_c.T).astype(np.float64)
    joint_c = (joint_c + joint_c.T).astype(np.float64)
    # a few contacts prove nothing: every pair starts as if it faced across a joint over about
    # _MERGE_PRIOR_MM2 (both sides counted)
    prior = 2.0 * _MERGE_PRIOR_MM2
    # only regions that could be a bone of their own take part; smaller pieces are grown over by
    # their neighbours afterwards (they would otherwise tip the balance at a weld)
    size = np.bincount(regions.ravel(), minlength=n_all + 1).astype(np.float64)
    large = size >= _LARGE_MM3 / vox
    large[0] = False
    parent = np.arange(n_all + 1)
    merges = []
    bone_vox = _BONE_MM3 / vox
    while True:
        # two regions the size of a bone need stronger evidence than a piece joining a bone
        both_big = np.minimum(size[:, None], size[None, :]) >= bone_vox
        need = np.where(both_big, _MERGE_RATIO_BONES, _MERGE_RATIO)
        ratio = np.where((bone_c > 0) & large[:, None] & large[None, :], bone_c / (joint_c + prior) / need, 0.0)
        k = int(np.argmax(ratio))
        a, b = divmod(k, n_all + 1)
        if ratio[a, b] < 1.0:
            break
        a, b = min(a, b), max(a, b)
        merges.append({"regions": [int(a), int(b)], "cm3": [round(float(size[a] * vox / 1000), 1),
                                                           round(float(size[b] * vox / 1000), 1)],
                       "bone_mm2": int(bone_c[a, b] // 2), "joint_mm2": int(joint_c[a, b] // 2)})
        size[a] += size[b]
        parent[b] = a
        for m in (bone_c, joint_c):
            m[a] += m[b]
            m[:, a] += m[:, b]
            m[a, a] = 0
            m[b] = 0
            m[:, b] = 0
    ia, ib = np.nonzero(np.triu((bone_c + joint_c) >= 20))
    apart = [{"regions": [int(a), int(b)], "bone_mm2": int(bone_c[a, b] // 2), "joint_mm2": int(joint_c[a, b] // 2)}
             for a, b in zip(ia, ib) if large[a] and large[b]]
    for a in range(1, n_all + 1):
        r = a
        while parent[r] != r:
            r = parent[r]
        parent[a] = r
    lut = parent.astype(regions.dtype)
    lut[~large] = 0
    regions = lut[regions]
    regions = grow_labels(regions, bone)
    rest = bone & (regions == 0)
    if rest.any():
        extra, n_more = cc3d.connected_components(rest, connectivity=26, return_N=True)
        if n_all + n_more >= np.iinfo(regions.dtype).max:
            regions = regions.astype(np.int32)
        regions[rest] = extra[rest].astype(regions.dtype) + n_all
        del extra
    del rest
    mark("merge")
    info = {"method": "joint-space carving + cortical seeds and cores + contact merge",
            "joint_space_voxels": n_valley, "seed_hu": seed_level, "seeds": int(n_seed), "refined": refined,
            "cores": int(n_core), "core_radius_mm": round(core_mm, 2), "regions_before_merge": int(n_all),
            "merges": merges[:100], "kept_apart": apart[:50], "timings_s": tm}
    return regions, info, valley.astype(bool)


def _level_seeds(hu: np.ndarray, carved: np.ndarray, total: int, vox: float
                 ) -> tuple[np.ndarray, int, int, list[dict[str, int]]]:
    """Seeds from re-thresholding the carved mask: the lowest level of ``_SEED_LEVELS`` that gives
    the most components of at least ``max(_MIN_SEED_MM3, 1 %)`` of the bone, then each seed split
    into its parts at higher levels when it falls into two or more of at least ``_MIN_CHILD_MM3``."""
    import cc3d

    from printpipe._segment_kernels import parent_of, relabel_split

    min_seed = max(int(_MIN_SEED_MM3 / vox), int(0.01 * total), 1)
    best = None
    for level in _SEED_LEVELS:
        comp, nc = cc3d.connected_components(carved & (hu >= level), connectivity=6, return_N=True)
        cnt = np.bincount(comp.ravel(), minlength=nc + 1)
        cnt[0] = 0
        keep = cnt >= min_seed
        if best is None or int(keep.sum()) > best[0]:
            lut = np.zeros(nc + 1, np.int32)
            lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
            lut = lut.astype(_label_dtype(int(keep.sum()) + 10000))
            best = (int(keep.sum()), level, lut[comp])
        del comp
    n, level, seeds = best
    min_child = max(int(_MIN_CHILD_MM3 / vox), int(0.005 * total), 1)
    refined = []
    for higher in _SEED_LEVELS:
        if higher <= level or n == 0:
            continue
        comp, nc = cc3d.connected_components((seeds > 0) & (hu >= higher), connectivity=6, return_N=True)
        cnt = np.bincount(comp.ravel(), minlength=nc + 1)
        cnt[0] = 0
        big = np.flatnonzero(cnt >= min_child)
        if len(big) < 2:
            continue
        par = parent_of(comp, seeds, nc)
        kids: dict[int, list[int]] = {}
        for c in big:
            kids.setdefault(int(par[c]), []).append(int(c))
        split = np.zeros(n + 1, bool)
        newlab = np.zeros(nc + 1, np.int32)
        for seed, ch in kids.items():
            if len(ch) < 2:
                continue
            split[seed] = True
            for i, c in enumerate(ch):
                if i:
                    n += 1
                newlab[c] = seed if i == 0 else n
            refined.append({"hu": int(higher), "seed": int(seed), "children": len(ch)})
        if split.any():
            split = np.concatenate([split, np.zeros(n + 1 - len(split), bool)])
            relabel_split(seeds, comp, split, newlab)
        del comp
    return seeds, int(n), int(level), refined


def _label_dtype(n: int) -> type:
    """Smallest label dtype for labels up to ``n`` (uint16 halves the memory of int32)."""
    return np.uint16 if n < 65535 else np.int32


def _threads() -> int:
    import os

    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)))


def _name_parts(regions: np.ndarray, vol: Volume, min_vox: int, separated: bool
                ) -> tuple[np.ndarray, dict[int, str], dict[str, Any]]:
    """Give each region an anatomical name from its position in LPS; returns uint8 labels."""
    # the labels present are those with a bounding box (no sort of the whole volume)
    objs = ndi.find_objects(regions)
    ids = [i + 1 for i, o in enumerate(objs) if o is not None]
    rec = []
    for lab in ids:
        sl = objs[lab - 1]
        if sl is None:
            continue
        idx = np.argwhere(regions[sl] == lab)
        if len(idx) < max(min_vox, 1):
            continue
        # a regular subsample is plenty for a centroid and the x distribution
        sub = idx[:: max(1, len(idx) // 100_000)] + [s.start for s in sl]
        p = vol.index_to_patient(sub.astype(float))
        corners = vol.index_to_patient(np.array([[a, b, c] for a in (sl[0].start, sl[0].stop - 1)
                                                 for b in (sl[1].start, sl[1].stop - 1)
                                                 for c in (sl[2].start, sl[2].stop - 1)], dtype=float))
        rec.append({"id": int(lab), "n": int(len(idx)), "c": p.mean(axis=0), "lo": corners.min(axis=0),
                    "hi": corners.max(axis=0), "x": p[:: max(1, len(p) // 20000), 0]})
    if not rec:
        raise SegmentationError("no bone region large enough after separation; lower --min-island or --hu")
    total = sum(r["n"] for r in rec)
    xm = float(sum(r["c"][0] * r["n"] for r in rec) / total)
    big = [r for r in rec if r["n"] >= 0.02 * max(q["n"] for q in rec)]
    name_of: dict[int, str] = {}
    if not separated:
        for r in rec:
            name_of[r["id"]] = "bone"
    else:
        mid = [r for r in big if abs(r["c"][0] - xm) < 35.0]
        left = [r for r in big if r["c"][0] - xm >= 35.0]
        right = [r for r in big if xm - r["c"][0] >= 35.0]
        # a pelvis that was not separated from its other half has much bone far out on both sides;
        # a sacrum (up to ~130 mm wide) or a vertebra has none
        pelvis_whole = [r for r in mid if np.mean(r["x"] - xm > 70.0) > 0.1 and np.mean(xm - r["x"] > 70.0) > 0.1]
        for r in pelvis_whole:
            name_of[r["id"]] = "pelvis"
        mid = [r for r in mid if r["id"] not in name_of]
        hips = []
        for side, group in (("left", left), ("right", right)):
            group = sorted(group, key=lambda r: r["c"][2])  # inferior first
            if len(group) >= 2:
                name_of[group[-1]["id"]] = f"hip_{side}"
                name_of[group[0]["id"]] = f"femur_{side}"
                hips.append(group[-1])
                # further lateral regions: the one touching the femur below the hip is femur too
                for r in group[1:-1]:
                    name_of[r["id"]] = f"femur_{side}" if r["c"][2] < 0.5 * (group[0]["c"][2] + group[-1]["c"][2]) \
                        else f"hip_{side}"
            elif len(group) == 1:
                r = group[0]
                top_mid = max((q["hi"][2] for q in mid), default=-np.inf)
                lo_mid = min((q["lo"][2] for q in mid), default=np.inf)
                # a hip reaches the level of the sacrum; a lone femur lies below it
                if mid and r["hi"][2] > lo_mid + 0.25 * (top_mid - lo_mid):
                    name_of[r["id"]] = f"hip_{side}"
                    hips.append(r)
                else:
                    name_of[r["id"]] = f"femur_{side}"
        if mid:
            hip_top = max((h["hi"][2] for h in hips), default=None)
            hip_lo = min((h["lo"][2] for h in hips), default=None)
            if pelvis_whole:
                hip_top = max(r["hi"][2] for r in pelvis_whole)
                hip_lo = min(r["lo"][2] for r in pelvis_whole)
            cand = [r for r in mid if hip_top is None or (r["lo"][2] < hip_top and r["hi"][2] > hip_lo)]
            if cand and hips or pelvis_whole and cand:
                # the sacrum lies posterior (larger y) between the hips
                sac = max(cand, key=lambda r: r["n"])
                name_of[sac["id"]] = "sacrum"
                for r in mid:
                    if r["id"] in name_of:
                        continue
                    if r["c"][2] > sac["c"][2]:
                        name_of[r["id"]] = "spine"
            elif not hips and not pelvis_whole:
                for r in mid:
                    name_of[r["id"]] = "spine" if r is max(mid, key=lambda q: q["n"]) else name_of.get(r["id"], "")
        # when both hips are present they form the pelvis (split again later at the fitted plane)
        if "hip_left" in name_of.values() or "hip_right" in name_of.values():
            for k, v in list(name_of.items()):
                if v.startswith("hip_"):
                    name_of[k] = "pelvis"
    # fragments: everything else, numbered by size
    rest = sorted([r for r in rec if not name_of.get(r["id"])], key=lambda r: -r["n"])
    for i, r in enumerate(rest, 1):
        name_of[r["id"]] = f"fragment_{i}"
    order = ["pelvis", "hip_left", "hip_right", "sacrum", "femur_left", "femur_right", "spine", "bone"]
    uniq = sorted(set(name_of.values()),
                  key=lambda n: (order.index(n) if n in order else len(order), int(n[9:]) if n.startswith("fragment_") else 0))
    if len(uniq) > 250:
        raise SegmentationError(f"{len(uniq)} parts found, more than a uint8 label image holds; "
                                f"raise --min-island")
    label_of = {n: i + 1 for i, n in enumerate(uniq)}
    lut = np.zeros(int(regions.max()) + 1, np.uint8)
    for rid, n in name_of.items():
        lut[rid] = label_of[n]
    labels = lut[regions]
    names = {v: k for k, v in label_of.items()}
    ninfo = {"midline_x_mm": round(xm, 1),
             "regions": [{"region": r["id"], "name": name_of.get(r["id"]), "volume_cm3": round(r["n"] * float(np.prod(vol.spacing)) / 1000, 2),
                          "centroid_lps": [round(float(v), 1) for v in r["c"]]} for r in rec]}
    return labels, names, ninfo


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


def _cut_gaps(labels: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """Clear, of every pair of 26-adjacent voxels of different parts, the darker one: different
    parts then never touch (a gap of at least one voxel, no shared surface) and the gap lies in the
    joint space rather than in the cortex of whichever part has the higher label."""
    from printpipe._segment_kernels import cut_gaps

    cut_gaps(hu, labels)
    return labels


def _clean_parts(labels: np.ndarray, names: dict[int, str], min_vox: int
                 ) -> tuple[np.ndarray, dict[int, str], dict[str, Any]]:
    """Drop pieces of a part that the gap cut left smaller than the island limit."""
    import cc3d

    # after the gap cut no two parts touch (26-neighbourhood), so the components of the bone
    # are those of each part: a binary labelling (about 3x faster than a multi-label one) suffices
    comp, n = cc3d.connected_components(labels != 0, connectivity=26, return_N=True)
    counts = np.bincount(comp.ravel(), minlength=n + 1)
    small = counts < max(min_vox, 1)
    small[0] = False
    dropped = int(small.sum())
    vox = int(counts[small].sum())
    if dropped:
        labels[small[comp]] = 0
    del comp
    present = set(np.flatnonzero(np.bincount(labels.ravel())).tolist())
    names = {k: v for k, v in names.items() if k in present}
    return labels, names, {"pieces_dropped": dropped, "voxels_dropped": vox}


def _solidify(labels: np.ndarray, names: dict[int, str], hu: np.ndarray, spacing: tuple[float, float, float],
              z_ends: tuple[bool, bool]) -> dict[str, Any]:
    """Make every part solid in place: marrow that reaches the outside through thin cortex is filled.

    Trabecular bone inside the femoral heads, acetabulum and ilium reads ~100-220 HU, below the
    bone threshold, and with thick slices the cortex around it is porous, so the marrow connects
    to the soft tissue and a 3-D cavity fill leaves a shell. Per part, on its bounding box:

    1. a closing with a ball of ``_CLOSE_MM`` (exact, anisotropic: distance transforms) seals the
       pores of the cortex;
    2. holes of the closed mask in axial, coronal and sagittal slices are filled when they hold
       marrow (mean HU >= ``_MARROW_HU``, smaller than ``_MARROW_MAX_MM2``) or are pores (below
       ``_PORE_MM2``): the spinal canal, sacral foramina, obturator foramen and pelvic inlet hold
       soft tissue and stay open; axial holes of a femur (fatty shaft marrow) are always filled;
    3. enclosed background (3-D) is filled; a z face at the end of the scan closes (a femoral
       shaft cut by the scan keeps its marrow).

    Only background voxels are added, none 26-adjacent to another part, so the one-voxel gaps
    between parts survive.
    """
    import cc3d
    import edt

    from printpipe._segment_kernels import clear_near_other, slice_holes

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
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        sub = labels[box]
        h = hu[box]
        m = sub == lab
        free = sub == 0
        # 1. closing: dilate by r, erode by r (distance transforms with the voxel spacing)
        d_out = edt.edt(~m, anisotropy=tuple(sp), black_border=False, parallel=_threads())
        dil = d_out <= _CLOSE_MM
        del d_out
        closed = edt.edt(dil, anisotropy=tuple(sp), black_border=True, parallel=_threads()) > _CLOSE_MM
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
        solid = closed | add
        # 3. enclosed background; scan ends close the box
        lids = (z_ends[0] and lo[0] == 0, z_ends[1] and hi[0] == labels.shape[0])
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
        out[name] = {"voxels_added": n_new,
                     "volume_cm3_added": round(n_new * float(np.prod(sp)) / 1000.0, 2)}
    return out


def _split_spine(labels: np.ndarray, names: dict[int, str], hu: np.ndarray, spacing: tuple[float, float, float]
                 ) -> tuple[dict[int, str], dict[str, Any]]:
    """Cut the lumbar spine off the sacrum at its lowest intervertebral disc, in place; the upper
    piece is named ``spine``. Returns the names and an info dict (slices of the joint top, the
    discs found, the cut, the body-box profile).

    The threshold fuses vertebrae through the disc (partial volume, bridging osteophytes), so the
    midline region named ``sacrum`` can carry the lumbar vertebrae above it. Per axial slice, the
    mean HU of a box in the vertebral body (``_BODY_HALF_MM`` to each side of the part's median x,
    ``_BODY_DEPTH_MM`` behind its anterior surface there), at the darkest of the tilts
    ``_DISC_TILTS_DEG`` (the lumbosacral disc leans ~30 deg), is a profile along z. A disc is a
    slice darker than its neighbours and than ``_DISC_RATIO`` times the brightest slice within
    ``_DISC_REACH_MM`` below (which reads at least ``_BODY_HU``: a body) and above. The lowest disc
    from ``_SI_BELOW_MM`` under the top of the sacroiliac contact (highest slice where the sacrum
    lies within ``_SI_MM`` of the pelvis; L5's transverse processes by the iliac crests reach that
    high) is the cut. Seeds: the part below the disc (sacrum); the vertebral body above the tilted
    disc and all of the part above the joint contact (spine). They grow through the part by a
    priority flood on HU (bright bone first, so the two meet in the disc's and the facet joints'
    darkest voxels, and the sacral ala beside the disc stays with the sacrum), and the darker of
    every touching pair is cleared (a one-voxel gap). Without pelvis, sacrum or such a disc
    nothing changes.
    """
    from printpipe._segment_kernels import cut_gaps, flood

    info: dict[str, Any] = {"disc_slices": [], "si_top_slice": None, "cut_slice": None, "profile_hu": []}
    lab_s = next((k for k, n in names.items() if n == "sacrum"), None)
    pel_labs = [k for k, n in names.items() if n in ("pelvis", "hip_left", "hip_right")]
    if lab_s is None or not pel_labs or "spine" in names.values():
        return names, info
    sp = np.asarray(spacing, dtype=float)
    objs = ndi.find_objects(labels)
    sl = objs[lab_s - 1]
    pad = [int(math.ceil(_SI_MM / s)) + 1 for s in sp]
    box = tuple(slice(max(a.start - p, 0), min(a.stop + p, n)) for a, p, n in zip(sl, pad, labels.shape))
    sub = labels[box]
    h = hu[box]
    sac = sub == lab_s
    pel = np.isin(sub, pel_labs)
    if not pel.any():
        return names, info
    import edt

    near = sac & (edt.edt(~pel, anisotropy=tuple(sp), black_border=False, parallel=_threads()) <= _SI_MM)
    ks = np.flatnonzero(near.any(axis=(1, 2)))
    if len(ks) == 0:
        return names, info
    k_si = int(ks.max())
    info["si_top_slice"] = k_si + box[0].start
    # body-box profile along z
    xm = int(np.median(np.nonzero(sac)[2]))
    rx = max(1, int(round(_BODY_HALF_MM / sp[2])))
    d0, d1 = (int(round(d / sp[1])) for d in _BODY_DEPTH_MM)
    prof = np.full(sac.shape[0], np.nan)
    xs = np.arange(max(xm - rx, 0), min(xm + rx + 1, sac.shape[2]))
    hf = h.astype(np.float32)
    for k in range(sac.shape[0]):
        slab = sac[k, :, xs[0]:xs[-1] + 1]
        rows = np.flatnonzero(slab.any(axis=1))
        if not len(rows):
            continue
        ys = np.arange(rows[0] + d0, min(rows[0] + d1, sac.shape[1]))
        if len(ys) == 0:
            continue
        # the box tilted about x (the lumbosacral disc leans ~30 deg): the darkest tilt
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        best = np.inf
        for tilt in _DISC_TILTS_DEG:
            zz = k + (yy - ys.mean()) * sp[1] * math.tan(math.radians(tilt)) / sp[0]
            val = ndi.map_coordinates(hf, [zz.ravel(), yy.ravel().astype(float), xx.ravel().astype(float)],
                                      order=1, mode="nearest")
            best = min(best, float(val.mean()))
        prof[k] = best
    reach = max(1, int(round(_DISC_REACH_MM / sp[0])))
    k_from = max(1, k_si + 1 - int(round(_SI_BELOW_MM / sp[0])))
    discs = []
    for k in range(k_from, sac.shape[0] - 1):
        if not np.isfinite(prof[k]):
            continue
        below = prof[max(k - reach, 0):k]
        above = prof[k + 1:k + 1 + reach]
        if not (np.isfinite(below).any() and np.isfinite(above).any()):
            continue
        if prof[k] > np.nanmin(prof[k - 1:k + 2]):
            continue  # not the darkest of its neighbours
        if np.nanmax(below) >= _BODY_HU and prof[k] < _DISC_RATIO * min(np.nanmax(below), np.nanmax(above)):
            discs.append(k)
    info["disc_slices"] = [k + box[0].start for k in discs]
    info["profile_hu"] = [None if not np.isfinite(v) else round(float(v)) for v in prof]
    if not discs:
        return names, info
    kg = discs[0]
    # spine seeds: the vertebral body above the disc (the box, clear of the tilted disc), and all of
    # the part above the sacroiliac contact; the sacral ala and articular processes beside the disc
    # are left to the flood (they join the sacrum through bone, the vertebra only across joints)
    k_up = kg + int(math.ceil(_DISC_TILT_REACH_MM / sp[0]))
    up = np.zeros(sac.shape, bool)
    up[max(k_up, k_si + 1):] = sac[max(k_up, k_si + 1):]
    for k in range(k_up, sac.shape[0]):
        rows = np.flatnonzero(sac[k, :, xs[0]:xs[-1] + 1].any(axis=1))
        if len(rows):
            up[k, rows[0] + d0:rows[0] + d1, xs[0]:xs[-1] + 1] |= sac[k, rows[0] + d0:rows[0] + d1, xs[0]:xs[-1] + 1]
    if not (sac[:kg - 1].any() and up.any()):
        return names, info
    info["cut_slice"] = kg + box[0].start
    markers = np.zeros(sac.shape, np.int32)
    markers[:kg - 1][sac[:kg - 1]] = 1
    markers[up] = 2
    level = np.clip(h, 0, 3000).astype(np.uint16)
    flood(markers, level, sac)
    lab_sp = max(names) + 1
    sub[sac & (markers == 2)] = lab_sp
    names = dict(names)
    names[lab_sp] = "spine"
    cut_gaps(h, sub)
    for lab in (lab_s, lab_sp):
        n = int(np.count_nonzero(sub == lab))
        info[names[lab] + "_voxels"] = n
    log.info("spine cut off the sacrum at slice %d (discs at %s)", info["cut_slice"], info["disc_slices"])
    return names, info


def _part_stats(labels: np.ndarray, names: dict[int, str], vol: Volume) -> dict[str, Any]:
    counts = np.bincount(labels.ravel(), minlength=max(names, default=0) + 1)
    objs = ndi.find_objects(labels)
    out = {}
    for lab, name in names.items():
        sl = objs[lab - 1] if lab - 1 < len(objs) else None
        if sl is None:
            continue
        lo = vol.index_to_patient(np.array([[s.start for s in sl]], dtype=float))[0]
        hi = vol.index_to_patient(np.array([[s.stop - 1 for s in sl]], dtype=float))[0]
        out[name] = {"label": int(lab), "voxels": int(counts[lab]),
                     "volume_cm3": round(float(counts[lab] * np.prod(vol.spacing) / 1000.0), 2),
                     "bbox_lps": [round(float(v), 1) for v in np.minimum(lo, hi).tolist() + np.maximum(lo, hi).tolist()]}
    return out


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
