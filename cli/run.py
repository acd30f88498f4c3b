"""``printpipe run INPUT -o OUTDIR``: one case from a DICOM folder or zip to STL/3MF/report/G-code."""

from __future__ import annotations

import argparse
import sys

from printpipe.cli.options import add_pipeline_options, pipeline_config_from_args


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
    return stage_printer(sys.stderr, quiet=args.quiet, json_lines=args.log_json)


def _print_summary(result) -> None:
    m = result.manifest
    print(f"case: {result.status} in {result.seconds:.1f} s -> {result.outdir}")
    inp = m.get("input", {})
    print(f"series: {inp.get('series_uid_hash', '?')}  {inp.get('slice_count', '?')} slices  "
          f"spacing {inp.get('spacing_mm')} mm")
    print(f"{'part':<22}{'triangles':>11}{'volume cm3':>12}{'size mm (x y z)':>26}  watertight")
    for part in m.get("parts", []):
        size = part["bbox_mm"]["size"]
        print(f"{part['name']:<22}{part['triangles']:>11,}{part['volume_mm3'] / 1000:>12.1f}"
              f"{'%.1f x %.1f x %.1f' % tuple(size):>26}  {'yes' if part['watertight'] else 'NO'}")
    pr = m.get("print")
    if pr:
        hours, rem = divmod(int(round(pr["time_s"])), 3600)
        print(f"print: {pr['printer']} / {pr['material']}: {hours} h {rem // 60:02d} min, "
              f"{pr['filament_mm'] / 1000:.2f} m, {pr['filament_g']:.0f} g filament, "
              f"{pr.get('plates', 1)} plate(s)")
    for out in m.get("outputs", []):
        print(f"wrote {out['path']}")
    for w in m.get("warnings", []):
        print(f"warning: {w}")
