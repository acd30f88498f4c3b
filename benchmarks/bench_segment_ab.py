"""A/B of ``segment()`` step by step: this source tree against a baseline tree, same input.

Run: ``.venv/bin/python benchmarks/bench_segment_ab.py --baseline /tmp/base --case ref003 --repeat 5``
(make the baseline with ``git worktree add /tmp/base <commit>``). The series is read once
(``printpipe.dicom.read_series``) and pickled; every run is a fresh process that puts its tree first
on ``sys.path``, segments with ``SegmentConfig(split_hemipelvis=True)`` once (the numba cache is
warmed first by one untimed run per tree) and reports ``info["timings_s"]``. Runs alternate
between the trees (the machine is shared; a drift in load hits both). Prints the per-step medians,
their ratio, and whether the labels, names and ``info`` (less the timings) are identical.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "ref002": "../shared/realdata/pelvic-ref002-ct",
    "ref003": "../shared/realdata/pelvic-ref003-ct",
    "650": "/tmp/printpipe-bench/phantom-650x512x512-j2k",
}

_CHILD = r"""
import json, pickle, sys
tree, pkl, out = sys.argv[1:4]
sys.path.insert(0, tree)
import numpy as np
import printpipe
from printpipe.segment import SegmentConfig, segment
assert printpipe.__file__.startswith(tree), printpipe.__file__
with open(pkl, "rb") as f:
    vol = pickle.load(f)
seg = segment(vol, SegmentConfig(split_hemipelvis=True))
np.save(out + ".npy", seg.labels)
info = {k: v for k, v in seg.info.items() if k != "timings_s"}
with open(out + ".json", "w") as f:
    json.dump({"timings": seg.info["timings_s"], "names": {str(k): v for k, v in seg.names.items()},
               "info": json.dumps(info, sort_keys=True, default=str)}, f)
"""


def _run(tree: Path, pkl: Path, out: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", _CHILD, str(tree), str(pkl), str(out)], capture_output=True,
                       text=True, check=False)
    if r.returncode:
        sys.exit(f"segment failed in {tree}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return json.loads(out.with_suffix(".json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, type=Path, help="the other source tree (a git worktree)")
    ap.add_argument("--case", default="ref003", help="ref002, ref003, 650 or a series folder")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import pickle

    import numpy as np

    src = Path(CASES.get(args.case, args.case))
    src = src if src.is_absolute() else (ROOT / src).resolve()
    if not src.exists():
        sys.exit(f"series {src} not found; for the 650 case run benchmarks/make_case_series.py first")
    base = args.baseline.resolve()
    if not (base / "printpipe" / "segment" / "__init__.py").exists():
        sys.exit(f"--baseline {base} is not a printpipe source tree; make one with git worktree add")
    from printpipe.dicom import read_series

    with tempfile.TemporaryDirectory(prefix="segab-") as tmp:
        tmp = Path(tmp)
        pkl = tmp / "volume.pkl"
        with open(pkl, "wb") as f:
            pickle.dump(read_series(src), f, protocol=5)
        trees = {"this": ROOT, "baseline": base}
        for name, tree in trees.items():   # warm the numba cache of each tree, untimed
            _run(tree, pkl, tmp / f"warm_{name}")
        res: dict[str, list] = {"this": [], "baseline": []}
        for r in range(args.repeat):
            for name in (("baseline", "this") if r % 2 == 0 else ("this", "baseline")):
                res[name].append(_run(trees[name], pkl, tmp / name))
                print(f"round {r + 1} {name:<8} total {res[name][-1]['timings']['total']:.2f} s", flush=True)
        steps = list(res["this"][0]["timings"])
        print(f"\ncase {args.case}: medians of {args.repeat} (seconds)")
        print(f"{'step':<12}{'baseline':>10}{'this':>10}{'ratio':>8}")
        for s in steps:
            b = statistics.median(x["timings"][s] for x in res["baseline"])
            t = statistics.median(x["timings"][s] for x in res["this"])
            print(f"{s:<12}{b:>10.3f}{t:>10.3f}{t / b if b else float('nan'):>8.2f}")
        la, lb = np.load(tmp / "this.npy"), np.load(tmp / "baseline.npy")
        same = la.shape == lb.shape and bool(np.array_equal(la, lb))
        a, b = res["this"][-1], res["baseline"][-1]
        print(f"labels identical: {same}; names identical: {a['names'] == b['names']}; "
              f"info identical (less timings): {a['info'] == b['info']}")


if __name__ == "__main__":
    main()
