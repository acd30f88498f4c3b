"""``printpipe presets``: list the HU presets of the segmentation stage."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("presets", help="list the HU presets (--preset NAME)",
                              description="List the Hounsfield-unit presets that --preset accepts.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from printpipe.segment import PRESETS

    if getattr(args, "json", False):
        print(json.dumps({k: {"low_hu": lo, "high_hu": hi, "description": d} for k, (lo, hi, d) in PRESETS.items()},
                         indent=2))
        return 0
    width = max(len(k) for k in PRESETS)
    print(f"{'preset':<{width}}  {'low':>6}  {'high':>6}  description")
    for name, (lo, hi, desc) in PRESETS.items():
        print(f"{name:<{width}}  {lo:>6g}  {hi:>6g}  {desc}")
    return 0
