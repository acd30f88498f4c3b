"""``printpipe run INPUT -o OUTDIR``: one case from a DICOM folder or zip to STL/3MF/report/G-code."""

from __future__ import annotations

import argparse
import sys

from printpipe.cli.options import add_pipeline_options, pipeline_config_from_args
from printpipe.i18n import N_, _, current_lang, part_label, translate_message

# stage names as the progress lines show them (JSON lines keep the names the pipeline gives)
_STAGES = {"read": N_("read"), "segment": N_("segment"), "surface": N_("surface"), "repair": N_("repair"),
           "mirror": N_("mirror"), "export": N_("export"), "slice": N_("slice"), "report": N_("report"),
           "label": N_("label")}
_STATUS = {"ok": N_("ok"), "failed": N_("failed")}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run",
        help="DICOM folder/zip -> watertight bone model, manifest, report (and G-code with --printer)",
        description="Run the whole pipeline on one CT series. Outputs go to OUTDIR: model.stl, "
                    "model.3mf, parts/<name>.stl, manifest.json, report.html (and model.gcode with "
                    "--printer). Every file is written to a temporary name and renamed, so a failed "
                    "run leaves nothing half-written.",
    )
    p.add_argument("input", help="DICOM folder (searched recursively) or .zip")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--log-json", action="store_true", help="progress as JSON lines on stderr")
    add_pipeline_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from printpipe.pipeline import run as run_pipeline

    config = pipeline_config_from_args(args)
    progress = _progress(args)
    result = run_pipeline(args.input, args.output, config, progress=progress)
    _print_summary(result)
    return 0 if result.status == "ok" else 1


def _progress(args):
    try:
        from printpipe.progress import stage_printer
    except ImportError:
        return None
    printer = stage_printer(sys.stderr, quiet=args.quiet, json_lines=args.log_json)
    if args.log_json or current_lang() == "en":
        return printer
    return lambda stage, fraction: printer(_(_STAGES[stage]) if stage in _STAGES else stage, fraction)


def _pad(text: str, width: int, right: bool = False) -> str:
    """Pad to ``width`` terminal columns (a Chinese character takes two)."""
    import unicodedata

    cols = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    fill = " " * max(0, width - cols)
    return fill + text if right else text + fill


def _print_summary(result) -> None:
    m = result.manifest
    print(_("case: {status} in {seconds} s -> {outdir}").format(
        status=_(_STATUS.get(result.status, result.status)), seconds=f"{result.seconds:.1f}", outdir=result.outdir))
    inp = m.get("input", {})
    print(_("series: {series}  {slices} slices  spacing {spacing} mm").format(
        series=inp.get("series_uid_hash", "?"), slices=inp.get("slice_count", "?"),
        spacing=inp.get("spacing_mm")))
    print(_pad(_("part"), 22) + _pad(_("triangles"), 11, True) + _pad(_("volume cm3"), 12, True)
          + _pad(_("size mm (x y z)"), 26, True) + "  " + _("watertight"))
    for part in m.get("parts", []):
        size = part["bbox_mm"]["size"]
        print(_pad(part_label(part["name"]), 22) + f"{part['triangles']:>11,}{part['volume_mm3'] / 1000:>12.1f}"
              f"{'%.1f x %.1f x %.1f' % tuple(size):>26}  " + (_("yes") if part["watertight"] else _("NO")))
    pr = m.get("print")
    if pr:
        hours, rem = divmod(int(round(pr["time_s"])), 3600)
        print(_("print: {printer} / {material}: {hours} h {minutes} min, {metres} m, {grams} g filament, "
                "{plates} plate(s)").format(
            printer=pr["printer"], material=pr["material"], hours=hours, minutes=f"{rem // 60:02d}",
            metres=f"{pr['filament_mm'] / 1000:.2f}", grams=f"{pr['filament_g']:.0f}",
            plates=pr.get("plates", 1)))
    for out in m.get("outputs", []):
        print(_("wrote {path}").format(path=out["path"]))
    for w in m.get("warnings", []):
        print(_("warning: {warning}").format(warning=translate_message(w)))
