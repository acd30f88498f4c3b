"""Command-line options of the slicing stage (``--printer``, ``--material``, ``--layer-height``...).

Every option defaults to ``None`` so that :class:`~printpipe.slicing.config.SliceConfig`'s own
defaults apply when it is not given.
"""

from __future__ import annotations

import argparse

from printpipe.errors import InputError

__all__ = ["add_arguments", "config_from_args"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the slicing options as an argument group of ``parser``; return the group.

    Destinations (all default ``None`` = the SliceConfig/profile default): ``printer`` (str),
    ``material`` (str), ``layer_height`` (float, mm), ``walls`` (int), ``infill`` (float, percent),
    ``infill_pattern`` (str), ``support`` (bool), ``support_angle`` (float, deg), ``orient`` (str),
    ``brim`` (float, mm), ``skin_expand`` (float, mm), ``infill_connect`` (float, mm).
    """
    group = parser.add_argument_group("slicing", "G-code for a desktop printer (see `printpipe printers`)")
    group.add_argument("--printer", metavar="NAME|FILE.toml", default=None, dest="printer",
                       help="printer profile: a built-in id such as ender3, ender3v2, mk3s, i3mega, "
                            "cr10, ender3s1, or your own .toml profile")
    group.add_argument("--material", metavar="NAME|FILE.toml", default=None, dest="material",
                       help="material preset: PLA (default) or PETG, or your own .toml")
    group.add_argument("--layer-height", type=float, default=None, metavar="MM", dest="layer_height",
                       help="layer height in mm (default 0.2)")
    group.add_argument("--walls", type=int, default=None, metavar="N", dest="walls",
                       help="number of perimeters (default 2)")
    group.add_argument("--infill", type=float, default=None, metavar="PERCENT", dest="infill",
                       help="sparse infill density in percent (default 15)")
    group.add_argument("--infill-pattern", choices=("grid", "lines"), default=None, dest="infill_pattern",
                       help="sparse infill pattern (default grid)")
    group.add_argument("--skin-expand", type=float, default=None, metavar="MM", dest="skin_expand",
                       help="extend exposed top/bottom skin this far into the infill (default 3)")
    group.add_argument("--infill-connect", type=float, default=None, metavar="MM", dest="infill_connect",
                       help="join infill lines along the boundary where the path is at most this "
                            "long (default 50; 0 = separate lines)")
    group.add_argument("--supports", action=argparse.BooleanOptionalAction, default=None, dest="support",
                       help="supports under overhangs (default on)")
    group.add_argument("--support-angle", type=float, default=None, metavar="DEG", dest="support_angle",
                       help="overhang threshold from the vertical that gets support (default 55)")
    group.add_argument("--orient", choices=("auto", "none"), default=None, dest="orient",
                       help="auto: turn each part for least support, then least height (default); "
                            "none: keep the patient frame")
    group.add_argument("--brim", type=float, default=None, metavar="MM", dest="brim",
                       help="brim width in mm around each part's first layer (default 0)")
    group.add_argument("--thumbnails", action=argparse.BooleanOptionalAction, default=None,
                       dest="thumbnails",
                       help="embed the preview pictures the printer profile asks for (default on)")
    group.add_argument("--label-objects", action=argparse.BooleanOptionalAction, default=None,
                       dest="label_objects",
                       help="M486 object labels, so one failed part can be cancelled on the printer "
                            "(default on)")
    group.add_argument("--progress-gcode", action=argparse.BooleanOptionalAction, default=None,
                       dest="progress_gcode",
                       help="M73 progress and remaining time at every layer, M117 messages (default on)")
    return group


def config_from_args(args: argparse.Namespace):
    """Build ``(printer_name_or_None, material_name, SliceConfig)`` from parsed arguments.

    Raises
    ------
    printpipe.errors.InputError
        An option value is out of range (the message names the option).
    """
    from printpipe.slicing.config import SliceConfig

    changes = {}
    mapping = (("layer_height", "layer_height_mm"), ("walls", "walls"),
               ("infill_pattern", "infill_pattern"), ("support", "support"),
               ("support_angle", "support_angle_deg"), ("orient", "orient"),
               ("brim", "brim_width_mm"), ("skin_expand", "skin_expand_mm"),
               ("infill_connect", "infill_connect_mm"), ("thumbnails", "thumbnails"),
               ("label_objects", "label_objects"), ("progress_gcode", "progress_gcode"))
    for dest, field in mapping:
        value = getattr(args, dest, None)
        if value is not None:
            changes[field] = value
    infill = getattr(args, "infill", None)
    if infill is not None:
        if not 0 <= infill <= 100:
            raise InputError(f"--infill {infill:g} is out of range; give a percentage from 0 to 100 "
                             "(15 is usual)")
        changes["infill_density"] = infill / 100.0
    config = SliceConfig(**changes)
    printer = getattr(args, "printer", None)
    material = getattr(args, "material", None) or "PLA"
    return printer, material, config
