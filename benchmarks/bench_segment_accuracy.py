"""Accuracy of the whole pipeline against the ground truth of the development cases.

Run: ``.venv/bin/python benchmarks/bench_segment_accuracy.py [--case ref002|ref003|all]
[--out-json FILE] [--realdata ../shared/realdata] [--keep DIR] [--parts] [--no-peers]``.

For each case it runs ``printpipe.pipeline.run`` with ``--split-hemipelvis`` (STL only, no report) into a
temporary folder, cuts each exported part mesh back into the CT grid (``printpipe.evaluate.part_masks``:
ray parity at voxel centres) and prints, per structure, Dice, mean symmetric surface distance and HD95
(mm) against

* ``ref002``: the expert labels (``pelvic-ref002-labels``: pelvis, femurs, sacrum, lumbar spine; left and
  right split at the label's own symphyseal midline) and the manual femur contours of its ``RS.dcm``;
* ``ref003``: the manual femur contours of ``pelvic-ref003-rtstruct``;

with the deep-learning and model-based femur contours of the same RTSTRUCT scored beside ours. Femurs are
scored against contours only on the slices the manual contour was drawn on (it ends near the lesser
trochanter). ``L/R`` says ``SWAP`` when the opposite part overlaps a side's reference more than its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from printpipe import evaluate as ev
    from printpipe.errors import PrintpipeError

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=[*ev.CASES, "all"], default="all")
    ap.add_argument("--out-json", type=Path, help="write every score and timing to this JSON file")
    ap.add_argument("--realdata", type=Path, default=REPO.parent / "shared" / "realdata")
    ap.add_argument("--keep", type=Path, help="write the pipeline outputs here instead of a temporary folder")
    ap.add_argument("--no-peers", action="store_true", help="skip the deep-learning / model-based contours")
    ap.add_argument("--parts", action="store_true",
                    help="export only the scored parts (SegmentConfig.parts), as tests/test_segment_accuracy.py "
                         "does to save the repair of other_N parts")
    args = ap.parse_args(argv)
    if not args.realdata.is_dir():
        print(f"error: no real data at {args.realdata}; pass --realdata", file=sys.stderr)
        return 2
    cases = list(ev.CASES) if args.case == "all" else [args.case]
    config = None
    if args.parts:
        from printpipe.export import ExportConfig
        from printpipe.pipeline import PipelineConfig
        from printpipe.segment import SegmentConfig

        config = PipelineConfig(segment=SegmentConfig(split_hemipelvis=True, parts=ev.SCORED_PARTS),
                                export=ExportConfig(formats=("stl",)), report=False)
    report: dict = {}
    status = 0
    for case in cases:
        with tempfile.TemporaryDirectory(prefix=f"printpipe-acc-{case}-") as tmp:
            outdir = (args.keep / case) if args.keep else Path(tmp)
            try:
                tables, info = ev.run_case(case, args.realdata, outdir, config, peers=not args.no_peers)
            except PrintpipeError as exc:
                print(f"{case}: pipeline failed: {type(exc).__name__}: {exc}")
                report[case] = {"error": f"{type(exc).__name__}: {exc}"}
                status = 1
                continue
        titles = {"labels": f"{case} vs expert labels", "contours": f"{case} femurs vs RTSTRUCT contours "
                  f"(manual contour slices only)"}
        for key, rows in tables.items():
            print(ev.format_table(titles[key], rows))
        print(f"  parts exported: {', '.join(info['parts'])}")
        print(f"  pipeline {info['pipeline_s']:.1f} s (segment {info['timings_s'].get('segment', 0):.1f} s), "
              f"scoring {info['score_s']:.1f} s\n")
        report[case] = {"tables": {k: [s.to_dict() for s in v] for k, v in tables.items()}, **info}
    if args.out_json:
        from printpipe._atomic import atomic_write_text

        atomic_write_text(args.out_json, json.dumps(report, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
