"""Cost of the plausibility checks and the output read-back against a whole ``printpipe run``.

Runs ``printpipe run SERIES -o OUT --quiet`` (default settings: STL + 3MF, report) as a fresh
process ``--repeat`` times after one untimed run (file and numba caches), and prints for each run
the process wall time and, from the manifest's ``timings_s``:

* ``check`` -- every input check: headers (spacing, thickness, field of view, extent, pixel data
  length), slices that do not belong, HU scale;
* ``verify`` -- reading every STL and 3MF back (counts, bounds, volume, closed edge-manifold
  winding);

``checks_cpu_s`` (the CPU time of both, from the threads that ran them), then their share of the
run, in wall time (what the run waits for them) and in CPU time (against the user + system time
of the process and its picture worker), the issue's budget being 2 %. The CPU share is the figure
a busy shared machine does not distort. The same checks are then timed alone in this process on
the series and the written files (best of ``--repeat``).

Usage::

    .venv/bin/python benchmarks/bench_checks.py [--series ../shared/realdata/pelvic-ref003-ct] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "realdata" / "pelvic-ref003-ct"


def _run(series: Path, out: Path) -> tuple[float, float, dict]:
    """Wall and CPU seconds (user + system, the process and the children it waited for) of one run."""
    exe = Path(sys.executable).with_name("printpipe")
    shutil.rmtree(out, ignore_errors=True)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([str(exe), "run", str(series), "-o", str(out), "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, cpu, json.loads((out / "manifest.json").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if not args.series.is_dir():
        print(f"series not found: {args.series}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-checks-"))
    try:
        _run(args.series, work / "warm")
        rows = []
        for k in range(args.repeat):
            wall, cpu, m = _run(args.series, work / f"run{k}")
            t = m["timings_s"]
            waits = t.get("check", 0.0) + t.get("verify", 0.0)
            c = m.get("checks_cpu_s") or {}
            checks_cpu = float(c.get("input") or 0.0) + float(c.get("outputs") or 0.0)
            read_back = float(m.get("verification", {}).get("seconds", 0.0))
            rows.append((wall, waits, cpu, checks_cpu))
            print(f"run {k + 1}: wall {wall:6.2f} s, waits for checks {waits:.3f} s ({waits / wall:.2%}: "
                  f"check {t.get('check', 0):.3f} + verify {t.get('verify', 0):.3f}; the read-back "
                  f"thread ran {read_back:.3f} s beside the label-map writing); CPU {cpu:.1f} s, of which "
                  f"checks {checks_cpu:.3f} s ({checks_cpu / cpu:.2%})")
        med = statistics.median
        wall = med(r[0] for r in rows)
        print(f"median of {len(rows)}: wall {wall:.2f} s; the run waits {med(r[1] / r[0] for r in rows):.2%} "
              f"of it for the checks; they use {med(r[3] / r[2] for r in rows):.2%} of its CPU time "
              f"({med(r[3] for r in rows):.3f} of {med(r[2] for r in rows):.1f} s)")

        # the same checks alone, in this process (numba already started by a first call)
        from printpipe.dicom import read_series
        from printpipe.plausibility import check_hu
        from printpipe.verify import verify_outputs

        out = work / "run0"
        manifest = json.loads((out / "manifest.json").read_text())
        volume = read_series(args.series)
        verify_outputs(out, manifest["parts"])
        best_read = best_hu = best_verify = float("inf")
        for _ in range(args.repeat):
            volume = read_series(args.series)
            best_read = min(best_read, float(volume.meta["check_s"]))
            t0 = time.perf_counter()
            check_hu(volume.hu, rescale=volume.meta["rescale"])
            best_hu = min(best_hu, time.perf_counter() - t0)
            t0 = time.perf_counter()
            verify_outputs(out, manifest["parts"])
            best_verify = min(best_verify, time.perf_counter() - t0)
        alone = best_read + best_hu + best_verify
        print(f"alone (best of {args.repeat}): headers+slices {best_read:.3f} s, HU {best_hu:.3f} s, "
              f"read-back {best_verify:.3f} s = {alone:.3f} s, {alone / wall:.2%} of the median run")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
