"""``printpipe slice MODEL.stl|MODEL.3mf --printer ender3 -o model.gcode``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from printpipe.cli import options_slicing
from printpipe.i18n import _, translate_message

DEFAULT_PRINTER = "ender3"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "slice",
        help="STL/3MF -> G-code for a printer, with print time and filament",
        description="Slice an STL (one part) or 3MF (one part per object) for a printer profile. "
                    "Parts are oriented, laid out on the bed and printed 1:1, never scaled: a part "
                    "that fits the printer in no orientation is an error. Parts that do not fit one "
                    "bed go to OUT-plate-N.gcode. Every file passes the safety check (bed, height, "
                    "temperatures, heaters off) before it is renamed into place.",
    )
    p.add_argument("model", help="model file (.stl or .3mf; .obj and .ply also work)")
    p.add_argument("-o", "--output", default=None, metavar="OUT.gcode",
                   help="G-code file (default: the model's name with .gcode)")
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    p.add_argument("--log-json", action="store_true", dest="log_json",
                   help="progress as JSON lines on stderr (event, stage, fraction, seconds, time)")
    options_slicing.add_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from printpipe.slicing import slice_file

    printer, material, config = options_slicing.config_from_args(args)
    printer = printer or DEFAULT_PRINTER
    out = Path(args.output) if args.output else Path(args.model).with_suffix(".gcode")
    from printpipe.progress import stage_printer

    progress = stage_printer(sys.stderr, quiet=getattr(args, "quiet", False),
                             json_lines=getattr(args, "log_json", False))
    result = slice_file(args.model, printer, material, config, out, progress=progress)
    minutes = int(round(result.time_s / 60.0))  # as format_duration rounds
    print(_("print time: {hours}:{minutes} (h:mm)").format(hours=minutes // 60, minutes=f"{minutes % 60:02d}"))
    print(_("filament: {metres} m, {grams} g ({material})").format(
        metres=f"{result.filament_mm / 1000:.2f}", grams=f"{result.filament_g:.1f}", material=material))
    print(_("layers: {layers}, plates: {plates}").format(layers=result.layer_count, plates=result.plates))
    for w in getattr(result, "warnings", []) or []:
        print(_("warning: {warning}").format(warning=translate_message(w)))
    for f in result.files:
        print(_("wrote {path}").format(path=f))
    return 0


def format_duration(seconds: float) -> str:
    """``3725`` -> ``"1:02 (h:mm)"``."""
    minutes = int(round(seconds / 60.0))
    return f"{minutes // 60}:{minutes % 60:02d} (h:mm)"
