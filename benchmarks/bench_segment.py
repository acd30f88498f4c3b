"""Time each segmentation step on the 512 x 512 x 400 pelvis phantom, and the peak memory.

Run: ``.venv/bin/python benchmarks/bench_segment.py [--repeat 3]``. Prints one table: step, median
seconds over the runs, and the peak traced memory relative to the volume's size. No peer tool does
this whole stage; the 'peer' column is a plain threshold + scipy connected components on the same
volume, the floor any segmentation pays.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from scipy import ndimage as ndi

    from printpipe.phantom import pelvis_phantom
    from printpipe.segment import SegmentConfig, segment

    ph = pelvis_phantom()  # (400, 512, 512)
    vol = ph.volume
    segment(vol, SegmentConfig(split_hemipelvis=True))  # warm-up (numba cache, imports)
    runs, peer = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        seg = segment(vol, SegmentConfig(split_hemipelvis=True))
        runs.append((time.perf_counter() - t, seg.info["timings_s"], seg.info["separation"]["timings_s"]))
        t = time.perf_counter()
        ndi.label((vol.hu >= 226) & (vol.hu <= 3071))
        peer.append(time.perf_counter() - t)
    tracemalloc.start()
    segment(vol, SegmentConfig(split_hemipelvis=True))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    steps = list(runs[0][1])
    print(f"volume {vol.shape} {vol.nbytes / 2**20:.0f} MiB; parts {list(seg.names.values())}")
    print(f"{'step':<12}{'ours_s':>10}{'peer_s':>10}{'ratio':>8}")
    for s in steps:
        med = statistics.median(r[1][s] for r in runs)
        if s == "total":
            pm = statistics.median(peer)
            print(f"{s:<12}{med:>10.3f}{pm:>10.3f}{med / pm:>8.2f}")
        else:
            print(f"{s:<12}{med:>10.3f}{'':>10}{'':>8}")
        if s == "separate":
            for sub in runs[0][2]:
                sm = statistics.median(r[2][sub] for r in runs)
                print(f"  {sub:<16}{sm:>8.3f}")
    print(f"peak traced memory {peak / 2**20:.0f} MiB = {peak / vol.nbytes:.2f} x the volume")


if __name__ == "__main__":
    main()
