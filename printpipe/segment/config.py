"""Segmentation options, HU presets and the result object."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from printpipe.errors import InputError
from printpipe.volume import Volume
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)


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


#: names a part can carry, plus ``bone_N`` (a part that failed its anatomical checks) and
#: ``other_N`` (bone outside the pelvic skeleton: ribs, arms)
PART_NAMES = ("pelvis", "hip_left", "hip_right", "sacrum", "femur_left", "femur_right", "spine", "implant_left",
              "implant_right", "bone")


_REGIONS = ("pelvis",)


def is_part_name(name: str) -> bool:
    """Whether ``name`` is a part name segmentation can give (``bone_N``, ``other_N`` included)."""
    base, _, num = str(name).rpartition("_")
    return name in PART_NAMES or (base in ("bone", "other") and num.isdigit())


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
                if not is_part_name(p):
                    raise InputError(f"part {p!r} is unknown; choose from {', '.join(PART_NAMES)}, bone_N or other_N")
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

