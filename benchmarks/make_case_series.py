"""Write the synthetic 650 x 512 x 512 JPEG 2000 lossless CT series used by ``bench_case.py``.

The series is the printpipe pelvis phantom (``printpipe.phantom.pelvis_phantom``: hemipelves,
sacrum, femurs, couch, noise) sampled at 0.8 mm slices and 0.78 x 0.78 mm pixels (a 400 mm field
of view, 520 mm along z; about 170 M voxels, the size of a thin-slice pelvis/abdomen CT) and
written with ``write_dicom_series`` in JPEG 2000 Lossless (1.2.840.10008.1.2.4.90, the pylibjpeg
OpenJPEG encoder). It is deterministic (fixed seed, UIDs from the seed) and is not kept in git:
the default folder is ``$PRINTPIPE_BENCH_DATA`` or ``/tmp/printpipe-bench``, and an existing,
complete series is reused.

Usage::

    .venv/bin/python benchmarks/make_case_series.py [--out DIR] [--slices 650] [--size 512]

Prints the folder on stdout. About a minute (phantom 10-40 s, encoding ~0.05 s a slice).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

DEFAULT_ROOT = Path(os.environ.get("PRINTPIPE_BENCH_DATA", "/tmp/printpipe-bench"))


def series_dir(root: Path, slices: int, size: int) -> Path:
    return root / f"phantom-{slices}x{size}x{size}-j2k"


def make_series(root: Path = DEFAULT_ROOT, slices: int = 650, size: int = 512) -> Path:
    """Write (or reuse) the series and return its folder."""
    folder = series_dir(root, slices, size)
    done = folder / ".complete"
    if done.is_file():
        return folder
    import numpy as np
    from pydicom.uid import JPEG2000Lossless

    from printpipe.phantom import pelvis_phantom, write_dicom_series

    t0 = time.perf_counter()
    pixel = 400.0 / size
    # 0.8 mm slices centred on the pelvis; pixel 0.78 mm at 512 (a 400 mm field of view)
    ph = pelvis_phantom(shape=(slices, size, size), spacing=(0.8, pixel, pixel), seed=13,
                        z_center_mm=-40.0)
    t1 = time.perf_counter()
    print(f"phantom {ph.volume.shape} in {t1 - t0:.0f} s; bone voxels "
          f"{int(np.count_nonzero(ph.labels[ph.labels < 6])):,}", file=sys.stderr, flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_dicom_series(ph.volume, folder, transfer_syntax=JPEG2000Lossless,
                       series_description="printpipe benchmark phantom j2k", seed=13,
                       # one thread: the OpenJPEG encoder crashed (SIGSEGV) when two threads encoded
                       # at once here (pylibjpeg-openjpeg 2.6); serial takes ~0.05 s a slice
                       workers=1)
    print(f"wrote {slices} JPEG 2000 slices in {time.perf_counter() - t1:.0f} s -> {folder}",
          file=sys.stderr, flush=True)
    done.write_text("ok\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_ROOT, help="root folder (default %(default)s)")
    ap.add_argument("--slices", type=int, default=650)
    ap.add_argument("--size", type=int, default=512, help="rows = columns")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(make_series(args.out, args.slices, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
