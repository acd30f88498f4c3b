"""`SliceConfig`: the settings of the built-in slicer (layers, walls, infill, supports, speeds).

Values that depend on the printer or the material (line width, speeds, retraction) default to
``None`` and are resolved against the profile by :meth:`SliceConfig.resolved`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from printpipe.errors import InputError

__all__ = ["SliceConfig", "Resolved", "INFILL_PATTERNS", "ORIENT_MODES"]

INFILL_PATTERNS = ("grid", "lines")
ORIENT_MODES = ("auto", "none")

# Fallback speeds (mm/s) when neither the config nor the printer profile gives one; these are the
# usual "normal quality" values of PrusaSlicer/Cura profiles for Bowden i3-class printers.
_FALLBACK_SPEEDS = {
    "perimeter": 45.0,
    "outer_wall": 30.0,
    "infill": 60.0,
    "skin": 40.0,
    "support": 50.0,
    "travel": 150.0,
    "first_layer": 20.0,
}


@dataclass(frozen=True)
class SliceConfig:
    """Settings of the slicer. All lengths in millimetres, speeds in mm/s, angles in degrees.

    Parameters
    ----------
    layer_height_mm : float
        Layer thickness (default 0.2 mm). Layers are sliced at mid-height.
    first_layer_height_mm : float or None
        Thickness of the first layer; ``None`` = ``layer_height_mm``.
    line_width_mm : float or None
        Extrusion width; ``None`` = 1.125 x the printer's nozzle diameter (0.45 mm for 0.4 mm).
    walls : int
        Number of perimeters (default 2). The outer wall's centreline lies half a line width
        inside the outline.
    top_layers, bottom_layers : int
        Solid skin layers under every top and over every bottom surface (4 and 3).
    skin_expand_mm : float
        Top and bottom skin that is exposed inside the walls is extended this far into the infill
        region (and carried through the solid layers), so that it is anchored on the infill and
        sloped surfaces get a closed shell (3 mm, PrusaSlicer's external infill margin; 0 = off).
    solid_infill_below_area_mm2 : float
        Pieces of sparse infill region smaller than this are printed solid (70 mm2, PrusaSlicer's
        ``solid_infill_below_area``; 0 = off).
    infill_density : float
        Sparse infill fraction 0..1 (0.15).
    infill_pattern : {"grid", "lines"}
        ``grid``: lines in two crossing directions on every layer; ``lines``: one direction that
        alternates by 90 degrees from layer to layer.
    infill_angle_deg : float
        Angle of the first infill (and skin) direction to +x (45).
    infill_connect_mm : float
        Sparse infill lines are joined along the infill boundary into zig-zags where the boundary
        path between two line ends is at most this long (50 mm, PrusaSlicer's
        ``infill_anchor_max``; 0 = separate lines). Fewer travels and retractions, better bonding.
    infill_anchor_mm : float or None
        With joins on, an infill line end left unjoined continues along the boundary this far
        (at most half the way to the next line end); ``None`` = 6 line widths (PrusaSlicer's
        ``infill_anchor`` 600 %).
    support : bool
        Generate supports from the bed under overhangs (True).
    support_angle_deg : float
        Overhang threshold measured **from the vertical**: a downward-facing surface that leans
        more than this from vertical gets support (0 = everything, 90 = nothing; default 55, so a
        surface less than 35 degrees from horizontal is supported).
    support_density : float
        Fraction of the support area covered by support lines (0.2).
    support_z_gap_layers : int
        Empty layers between the top of a support and the model above it, so it comes off the
        bone (1).
    support_xy_gap_mm : float
        Horizontal clearance between support and model (0.6).
    skirt_loops : int
        Skirt loops around the first layer of the plate (1; 0 = none).
    skirt_distance_mm : float
        Gap between the skirt and the first layer (6).
    brim_width_mm : float
        Brim around the first layer of every part (0 = none).
    perimeter_speed_mm_s, outer_wall_speed_mm_s, infill_speed_mm_s, skin_speed_mm_s,
    support_speed_mm_s, travel_speed_mm_s, first_layer_speed_mm_s : float or None
        Feature speeds; ``None`` = the printer profile's default, else a common fallback.
        All extrusion speeds are capped by the material's maximum volumetric flow.
    retract_min_travel_mm : float
        Travels shorter than this never retract; longer ones retract when they leave the part or
        change layer (2.0, as PrusaSlicer's ``retract_before_travel``).
    orient : {"auto", "none"}
        ``auto`` lets the orientation step reduce supports; ``none`` keeps the given frame.
    thumbnails : bool
        Embed the preview pictures the printer profile asks for (True).
    label_objects : bool
        Mark every part with ``M486 S<n>`` / ``; printing object <name>`` so that one failed part
        can be cancelled on the printer without stopping the plate (True).
    progress_gcode : bool
        ``M73 P<percent> R<minutes>`` at every layer from the print-time estimate, and ``M117``
        messages naming the plate and its parts (True).
    """

    layer_height_mm: float = 0.2
    first_layer_height_mm: float | None = None
    line_width_mm: float | None = None
    walls: int = 2
    top_layers: int = 4
    bottom_layers: int = 3
    skin_expand_mm: float = 3.0
    solid_infill_below_area_mm2: float = 70.0
    infill_density: float = 0.15
    infill_pattern: str = "grid"
    infill_angle_deg: float = 45.0
    infill_connect_mm: float = 50.0
    infill_anchor_mm: float | None = None
    support: bool = True
    support_angle_deg: float = 55.0
    support_density: float = 0.2
    support_z_gap_layers: int = 1
    support_xy_gap_mm: float = 0.6
    skirt_loops: int = 1
    skirt_distance_mm: float = 6.0
    brim_width_mm: float = 0.0
    perimeter_speed_mm_s: float | None = None
    outer_wall_speed_mm_s: float | None = None
    infill_speed_mm_s: float | None = None
    skin_speed_mm_s: float | None = None
    support_speed_mm_s: float | None = None
    travel_speed_mm_s: float | None = None
    first_layer_speed_mm_s: float | None = None
    retract_min_travel_mm: float = 2.0
    orient: str = "auto"
    thumbnails: bool = True
    label_objects: bool = True
    progress_gcode: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, why: str) -> InputError:
            return InputError(f"SliceConfig.{name} = {value!r} is invalid: {why}")

        def positive(name: str, hi: float) -> None:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= hi:
                raise bad(name, v, f"give a number in (0, {hi}]")

        positive("layer_height_mm", 1.0)
        if self.infill_anchor_mm is not None:
            v = self.infill_anchor_mm
            if not isinstance(v, (int, float)) or not 0 <= v <= 1000:
                raise bad("infill_anchor_mm", v, "give a length from 0 to 1000 mm, or None for 6 line widths")
        for name in ("first_layer_height_mm", "line_width_mm"):
            if getattr(self, name) is not None:
                positive(name, 2.0)
        for name, lo, hi in (("walls", 1, 20), ("top_layers", 0, 100), ("bottom_layers", 0, 100),
                             ("support_z_gap_layers", 0, 10), ("skirt_loops", 0, 50)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise bad(name, v, f"give a whole number from {lo} to {hi}")
        for name in ("infill_density", "support_density"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise bad(name, v, "give a fraction from 0 to 1 (0.15 = 15 %)")
        if self.infill_pattern not in INFILL_PATTERNS:
            raise bad("infill_pattern", self.infill_pattern, f"choose one of {', '.join(INFILL_PATTERNS)}")
        if self.orient not in ORIENT_MODES:
            raise bad("orient", self.orient, f"choose one of {', '.join(ORIENT_MODES)}")
        for name in ("support", "thumbnails", "label_objects", "progress_gcode"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, getattr(self, name), "give True or False")
        if not isinstance(self.support_angle_deg, (int, float)) or not 0 <= self.support_angle_deg < 90:
            raise bad("support_angle_deg", self.support_angle_deg,
                      "give the overhang threshold from the vertical in [0, 90) degrees (55 is usual)")
        if not isinstance(self.infill_angle_deg, (int, float)) or not math.isfinite(self.infill_angle_deg):
            raise bad("infill_angle_deg", self.infill_angle_deg, "give a finite angle in degrees")
        for name, hi in (("skin_expand_mm", 50.0), ("infill_connect_mm", 1000.0), ("solid_infill_below_area_mm2", 1e4),
                         ("support_xy_gap_mm", 10.0), ("skirt_distance_mm", 100.0),
                         ("brim_width_mm", 50.0), ("retract_min_travel_mm", 100.0)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v <= hi:
                raise bad(name, v, f"give a length from 0 to {hi} mm")
        for f in fields(self):
            if f.name.endswith("_speed_mm_s"):
                v = getattr(self, f.name)
                if v is not None and (not isinstance(v, (int, float)) or not 0 < v <= 1000):
                    raise bad(f.name, v, "give a speed in (0, 1000] mm/s or None for the printer default")
        if self.line_width_mm is not None and self.line_width_mm < self.layer_height_mm:
            raise bad("line_width_mm", self.line_width_mm,
                      f"must be at least the layer height {self.layer_height_mm} mm")

    def replace(self, **changes: Any) -> "SliceConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def resolved(self, printer: Any, material: Any = None) -> "Resolved":
        """Settings with every printer- or material-dependent default filled in."""
        nozzle = float(getattr(printer, "nozzle_mm", 0.4))
        w = self.line_width_mm if self.line_width_mm is not None else round(1.125 * nozzle, 4)
        h = self.layer_height_mm
        h0 = self.first_layer_height_mm if self.first_layer_height_mm is not None else h
        if w < h or w < h0:
            raise InputError(
                f"line width {w} mm is thinner than the layer height {max(h, h0)} mm; lower "
                "--layer-height or set a wider line width"
            )
        if h > 0.8 * nozzle:
            raise InputError(
                f"layer height {h} mm is more than 80 % of the {nozzle} mm nozzle; use at most "
                f"{0.8 * nozzle:.2f} mm"
            )
        # printer profile attribute giving each default speed (printpipe.slicing.printers.Printer)
        printer_attr = {
            "perimeter": "print_speed_mm_s",
            "outer_wall": "outer_wall_speed_mm_s",
            "infill": "infill_speed_mm_s",
            "skin": "print_speed_mm_s",
            "support": "support_speed_mm_s",
            "travel": "travel_speed_mm_s",
            "first_layer": "first_layer_speed_mm_s",
        }
        speeds = {}
        for key, fallback in _FALLBACK_SPEEDS.items():
            mine = getattr(self, f"{key}_speed_mm_s")
            if mine is None:
                mine = getattr(printer, printer_attr[key], None)
            speeds[key] = float(mine) if mine is not None else fallback
        return Resolved(config=self, line_width=w, layer_height=h, first_layer_height=h0,
                        speeds=speeds)


@dataclass(frozen=True)
class Resolved:
    """A `SliceConfig` with the printer-dependent values filled in (internal)."""

    config: SliceConfig
    line_width: float
    layer_height: float
    first_layer_height: float
    speeds: dict

    @property
    def spacing(self) -> float:
        """Centre distance of touching lines: the rounded-rectangle cross-section
        ``(w - h) * h + pi * (h / 2) ** 2`` equals ``h * spacing``."""
        h = self.layer_height
        return self.line_width - h * (1.0 - math.pi / 4.0)
