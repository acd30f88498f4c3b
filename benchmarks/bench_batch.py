"""Batch throughput: 8 phantom cases on a process pool of 1 and 2 workers, and on a Dask LocalCluster.

Prints one table: the median wall time of each executor over ``--repeats`` runs (every run starts its
own pool or cluster, so worker start-up is included, as a user would see it), the speed-up of 2
workers over 1, and the Dask/process-pool ratio at the same worker count.

Targets (issue 7): speed-up >= 1.7x with 2 workers on a 2-core machine; Dask overhead within 10 %
of the process pool. The machine's CPUs may be shared with other work: compare ratios measured in
the same run only.

Usage::

    .venv/bin/python benchmarks/bench_batch.py [--cases 8] [--shape 96 128 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def make_studies(root: Path, n: int, shape: tuple[int, int, int]) -> Path:
    from printpipe.phantom import pelvis_phantom, write_dicom_series

    for i in range(n):
        ph = pelvis_phantom(shape=shape, seed=100 + i)
        write_dicom_series(ph.volume, root / f"study_{i:02d}", study_uid=f"1.2.826.0.1.3680043.99.{i + 1}",
                           series_uid=f"1.2.826.0.1.3680043.99.{i + 1}.1", seed=100 + i)
    return root


def one_run(cases, config, batch, workdir: Path) -> float:
    from printpipe.batch import run_many

    out = workdir / f"out-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    result = run_many(cases, out, config, batch)
    seconds = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    if result.n_failed:
        bad = next(r for r in result.records if r.status == "failed")
        raise SystemExit(f"benchmark case {bad.case_id} failed: {bad.error}")
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--shape", type=int, nargs=3, default=(96, 128, 128), metavar=("Z", "Y", "X"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--report", action="store_true", help="also write the HTML report per case")
    args = ap.parse_args(argv)

    from printpipe.batch import BatchConfig, _warmup_kernels, find_cases
    from printpipe.pipeline import PipelineConfig

    config = PipelineConfig(report=args.report)
    work = Path(tempfile.mkdtemp(prefix="printpipe-bench-batch-"))
    try:
        t0 = time.perf_counter()
        cases = find_cases(make_studies(work / "studies", args.cases, tuple(args.shape)))
        print(f"# {len(cases)} phantom cases of {args.shape[0]}x{args.shape[1]}x{args.shape[2]} "
              f"voxels (made in {time.perf_counter() - t0:.1f} s); report={'on' if args.report else 'off'}; "
              f"{os.cpu_count()} CPUs visible; load average before: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        _warmup_kernels()  # compile once, outside the timings
        setups = [
            ("process pool", 1, BatchConfig(jobs=1, warmup=False)),
            ("process pool", 2, BatchConfig(jobs=2, warmup=False)),
            ("dask LocalCluster", 2, BatchConfig(dask_local=2, warmup=False)),
        ]
        times: dict[int, list[float]] = {i: [] for i in range(len(setups))}
        for rep in range(args.repeats):  # interleaved, so a burst of load hits every setup alike
            for i, (_, _, batch) in enumerate(setups):
                times[i].append(one_run(cases, config, batch, work))
                print(f"#   run {rep + 1}: {setups[i][0]} x{setups[i][1]}: {times[i][-1]:.1f} s", flush=True)
        med = {i: statistics.median(t) for i, t in times.items()}
        print()
        print(f"{'executor':<20}{'workers':>8}{'median s':>10}{'runs (s)':>26}{'vs 1 worker':>13}"
              f"{'vs pool x2':>12}")
        for i, (name, workers, _) in enumerate(setups):
            runs = " ".join(f"{t:.1f}" for t in times[i])
            print(f"{name:<20}{workers:>8}{med[i]:>10.1f}{runs:>26}{med[0] / med[i]:>12.2f}x"
                  f"{med[i] / med[1]:>12.2f}")
        print()
        print(f"speed-up, 2 workers over 1 (target >= 1.7): {med[0] / med[1]:.2f}x")
        print(f"Dask LocalCluster / process pool, 2 workers (target <= 1.10): {med[2] / med[1]:.2f}")
        print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
