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
import resource
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


def _cpu_seconds() -> float:
    """User + system CPU of this process and of its reaped children (pool workers, Dask workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def one_run(cases, config, batch, workdir: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (all processes, workers included) and summed case seconds."""
    from printpipe.batch import run_many

    out = workdir / f"out-{time.monotonic_ns()}"
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    result = run_many(cases, out, config, batch)  # returns after the workers were joined
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    shutil.rmtree(out, ignore_errors=True)
    if result.n_failed:
        bad = next(r for r in result.records if r.status == "failed")
        raise SystemExit(f"benchmark case {bad.case_id} failed: {bad.error}")
    return seconds, cpu, sum(r.seconds for r in result.records)


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
        runs: dict[int, list[tuple[float, float, float]]] = {i: [] for i in range(len(setups))}
        for rep in range(args.repeats):  # interleaved, so a burst of load hits every setup alike
            for i, (name, workers, batch) in enumerate(setups):
                runs[i].append(one_run(cases, config, batch, work))
                wall, cpu, busy = runs[i][-1]
                print(f"#   run {rep + 1}: {name} x{workers}: {wall:.1f} s wall, {cpu:.1f} s CPU, "
                      f"{busy / wall:.2f} cases in flight, load {os.getloadavg()[0]:.1f}", flush=True)
        med = {i: statistics.median(r[0] for r in rs) for i, rs in runs.items()}
        cpu = {i: statistics.median(r[1] for r in rs) for i, rs in runs.items()}
        flight = {i: statistics.median(r[2] / r[0] for r in rs) for i, rs in runs.items()}
        print()
        print(f"{'executor':<19}{'workers':>8}{'median s':>10}{'runs (s)':>20}{'CPU s':>8}"
              f"{'in flight':>11}{'vs 1 worker':>13}{'vs pool x2':>12}")
        for i, (name, workers, _) in enumerate(setups):
            walls = " ".join(f"{r[0]:.1f}" for r in runs[i])
            print(f"{name:<19}{workers:>8}{med[i]:>10.1f}{walls:>20}{cpu[i]:>8.1f}{flight[i]:>11.2f}"
                  f"{med[0] / med[i]:>12.2f}x{med[i] / med[1]:>12.2f}")
        print()
        print(f"speed-up, 2 workers over 1 (target >= 1.7): {med[0] / med[1]:.2f}x")
        print(f"Dask LocalCluster / process pool, 2 workers (target <= 1.10): {med[2] / med[1]:.2f}")
        print("# 'in flight' = summed case seconds / wall seconds: how many cases the executor kept "
              "running on average")
        print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
