"""Segmentation options (``--preset``, ``--hu``, ``--hollow``, ``--split-hemipelvis``, ...) for
``printpipe run`` and ``printpipe batch``: ``add_arguments(parser)`` and ``config_from_args(args)``."""

from __future__ import annotations

import argparse
import math

from printpipe.errors import InputError
from printpipe.segment import PART_NAMES, PRESETS, SegmentConfig
from printpipe.segment.config import is_part_name

__all__ = ["add_arguments", "config_from_args"]


def _hu_range(text: str) -> tuple[float, float]:
    parts = text.split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"--hu takes LOW:HIGH in HU (e.g. 226:3071); got {text!r}")
    try:
        low = float(parts[0]) if parts[0].strip() else None
        high = float(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hu takes numbers LOW:HIGH (e.g. 226:3071); got {text!r}") from None
    if low is not None and high is not None and low >= high:
        raise argparse.ArgumentTypeError(f"--hu LOW must be below HIGH; got {text!r}")
    return low, high  # type: ignore[return-value]


def _positive_mm(name: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes a number in mm; got {text!r}") from None
        if not math.isfinite(v) or v <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be a positive number of mm; got {text!r}")
        return v
    return parse


def _non_negative(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--min-island takes a volume in mm^3; got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"--min-island must be >= 0 mm^3; got {text!r}")
    return v


def _parts(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise argparse.ArgumentTypeError("--parts needs at least one name, e.g. pelvis,femur_left")
    from printpipe.labels import TOTALSEGMENTATOR_CLASSES, part_name

    for n in names:
        # with --labels a label's own name (femoreSin, vertebrae_L5) also chooses a part
        if (not is_part_name(n) and part_name(n) is None and n not in TOTALSEGMENTATOR_CLASSES.values()):
            raise argparse.ArgumentTypeError(f"--parts: unknown part {n!r}; choose from {', '.join(PART_NAMES)}, "
                                             f"bone_N or other_N")
    return names


def _roi(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--roi takes six numbers xmin,xmax,ymin,ymax,zmin,zmax (LPS mm); "
                                         f"got {text!r}") from None
    if len(vals) != 6 or not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"--roi takes six numbers xmin,xmax,ymin,ymax,zmin,zmax (LPS mm); got {text!r}")
    for axis, (a, b) in zip("xyz", (vals[0:2], vals[2:4], vals[4:6])):
        if a >= b:
            raise argparse.ArgumentTypeError(f"--roi {axis}min {a:g} must be below {axis}max {b:g}")
    return vals


def _preset(text: str) -> str:
    key = text.strip().lower().replace("_", "-").replace(" ", "-")
    if key not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}; choose one of {', '.join(PRESETS)} "
                                         f"(printpipe presets lists them)")
    return key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the segmentation option group."""
    g = parser.add_argument_group("segmentation")
    g.add_argument("--preset", type=_preset, default="bone", metavar="NAME",
                   help=f"HU preset: {', '.join(PRESETS)} (default bone, 226-3071 HU)")
    g.add_argument("--hu", type=_hu_range, default=None, metavar="LOW:HIGH",
                   help="HU range, overrides the preset (either side may be empty: 300: keeps the preset's high)")
    g.add_argument("--min-island", dest="min_island_mm3", type=_non_negative, default=1000.0, metavar="MM3",
                   help="drop bone pieces smaller than this (mm^3, default 1000)")
    g.add_argument("--no-fill", dest="fill_cavities", action="store_false", default=True,
                   help="keep internal cavities (marrow) open instead of printing parts solid")
    g.add_argument("--hollow", dest="hollow_wall_mm", type=_positive_mm("--hollow"), default=None, metavar="WALL_MM",
                   help="hollow each part to a shell of this wall (mm); at least two nozzle extrusion widths")
    g.add_argument("--no-separate", dest="separate", action="store_false", default=True,
                   help="do not separate touching bones (one 'bone' part per connected piece)")
    g.add_argument("--split-hemipelvis", action="store_true", default=False,
                   help="cut the pelvis at its fitted mid-sagittal plane into hip_left and hip_right")
    g.add_argument("--mirror", choices=("left", "right"), default=None,
                   help="mirror this hemipelvis into a template of the other side (implies --split-hemipelvis)")
    g.add_argument("--parts", type=_parts, default=None, metavar="A,B",
                   help="export only these parts (pelvis, hip_left, hip_right, sacrum, femur_left, femur_right, "
                        "spine, bone_N, other_N); with --labels also the labels' own names")
    g.add_argument("--roi", dest="roi_mm", type=_roi, default=None, metavar="XMIN,XMAX,YMIN,YMAX,ZMIN,ZMAX",
                   help="crop box in patient LPS mm before segmenting (write --roi=-100,... when it starts with a minus)")
    g.add_argument("--region", choices=("pelvis",), default=None,
                   help="crop automatically around this region (with a margin) before the expensive steps")
    g.add_argument("--keep-table", dest="remove_table", action="store_false", default=True,
                   help="keep bone-dense voxels outside the body (couch, markers); off by default")
    g.add_argument("--threshold-surface", dest="refine_surface", action="store_false", default=True,
                   help="keep each part's surface at the preset's threshold instead of moving it to the local "
                        "half-maximum edge (the threshold surface lies about half a voxel outside the bone)")


def config_from_args(args: argparse.Namespace) -> SegmentConfig:
    """Build a :class:`SegmentConfig` from parsed arguments (raises InputError on a bad combination)."""
    hu = getattr(args, "hu", None) or (None, None)
    try:
        return SegmentConfig(
            preset=getattr(args, "preset", "bone"),
            hu_low=hu[0],
            hu_high=hu[1],
            min_island_mm3=getattr(args, "min_island_mm3", 1000.0),
            fill_cavities=getattr(args, "fill_cavities", True),
            hollow_wall_mm=getattr(args, "hollow_wall_mm", None),
            separate=getattr(args, "separate", True),
            split_hemipelvis=getattr(args, "split_hemipelvis", False) or getattr(args, "mirror", None) is not None,
            mirror=getattr(args, "mirror", None),
            parts=getattr(args, "parts", None),
            roi_mm=getattr(args, "roi_mm", None),
            region=getattr(args, "region", None),
            remove_table=getattr(args, "remove_table", True),
            refine_surface=getattr(args, "refine_surface", True),
        )
    except InputError:
        raise
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from exc
