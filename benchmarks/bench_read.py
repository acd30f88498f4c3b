"""Reading speed: printpipe.dicom.read_series against SimpleITK's ImageSeriesReader (GDCM).

Both sides start from the folder path and end with the HU array in memory: printpipe runs
``discover`` + ``read_series``; SimpleITK runs ``GetGDCMSeriesFileNames`` + ``Execute`` +
``GetArrayViewFromImage`` (no copy). Each case is read once to warm the file cache, then the two
readers alternate ``--repeat`` times and the medians are compared in the same run (other processes
on a shared machine load both alike).

Series (written into a temporary folder, removed afterwards unless ``--keep DIR``):

* ``pelvis-145``: ../shared/realdata/pelvic-ref003-ct as it is (145 x 512 x 512, uncompressed);
* ``synthetic-400``: 400 slices of 512 x 512 made from the pelvis slices (cycled) with new positions
  1 mm apart and new UIDs, uncompressed;
* the same two compressed losslessly to RLE and to JPEG 2000 with pydicom's encoders.

Usage::

    .venv/bin/python benchmarks/bench_read.py [--repeat 5] [--only pelvis] [--keep /tmp/bench]

Prints one table: series, syntax, slices, ours (s), SimpleITK (s), ratio ours/SimpleITK, and
whether both gave the same HU.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


def make_series(src: Path, dest: Path, n: int | None, syntax) -> Path:
    """Copy (and optionally cycle to ``n`` slices and compress) the series in ``src`` into ``dest``."""
    import pydicom
    from pydicom.uid import generate_uid

    if dest.is_dir() and any(dest.iterdir()):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted(src.glob("*.dcm"))
    heads = [pydicom.dcmread(f) for f in files]
    heads.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    count = n or len(heads)
    series_uid = generate_uid() if n else None
    for k in range(count):
        ds = copy.deepcopy(heads[k % len(heads)])
        if n:
            pos = [float(v) for v in ds.ImagePositionPatient]
            ds.ImagePositionPatient = [pos[0], pos[1], float(k)]
            ds.SliceLocation = float(k)
            ds.InstanceNumber = k + 1
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.SeriesInstanceUID = series_uid
        if syntax is not None:
            ds.compress(syntax)
        ds.save_as(dest / f"slice{k:04d}.dcm", enforce_file_format=True)
    return dest


def read_ours(folder: Path, workers: int | None) -> np.ndarray:
    from printpipe import dicom

    return dicom.read_series(folder, dicom.DicomConfig(workers=workers)).hu


def read_sitk(folder: Path) -> tuple[np.ndarray, object]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    # the view shares the image's buffer: return the image too so it outlives the view
    return sitk.GetArrayViewFromImage(image), image


def timed(fn, *args) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per reader (median reported)")
    ap.add_argument("--only", choices=["pelvis", "synthetic"], default=None)
    ap.add_argument("--syntax", choices=["raw", "rle", "j2k"], action="append", default=None)
    ap.add_argument("--workers", type=int, default=None, help="printpipe decode workers (default auto)")
    ap.add_argument("--keep", type=Path, default=None, help="keep (and reuse) the generated series here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    try:
        import SimpleITK as sitk
    except ImportError:
        print("SimpleITK is not installed: pip install 'printpipe[bench]'", file=sys.stderr)
        return 2
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    from pydicom.uid import JPEG2000Lossless, RLELossless

    pelvis = REALDATA / "pelvic-ref003-ct"
    if not pelvis.is_dir():
        print(f"real data not found at {pelvis}", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="printpipe-bench-"))
    syntaxes = {"raw": None, "rle": RLELossless, "j2k": JPEG2000Lossless}
    wanted = args.syntax or list(syntaxes)
    cases = []
    for name, n in (("pelvis-145", None), ("synthetic-400", 400)):
        if args.only and not name.startswith(args.only):
            continue
        for tag in wanted:
            if tag == "raw" and n is None:
                folder = pelvis
            else:
                print(f"preparing {name} {tag} ...", file=sys.stderr, flush=True)
                folder = make_series(pelvis, work / f"{name}-{tag}", n, syntaxes[tag])
            cases.append((name, tag, folder))
    rows = []
    try:
        for name, tag, folder in cases:
            _, a = timed(read_ours, folder, args.workers)  # warm the file cache and imports
            _, (b, _image) = timed(read_sitk, folder)
            same = a.shape == b.shape and bool(np.array_equal(a, b))
            ours, peer = [], []
            for _ in range(args.repeat):
                ours.append(timed(read_ours, folder, args.workers)[0])
                peer.append(timed(read_sitk, folder)[0])
            mo, mp = statistics.median(ours), statistics.median(peer)
            rows.append((name, tag, a.shape[0], mo, mp, mo / mp, same))
            print(f"done {name} {tag}", file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"read_series vs SimpleITK ImageSeriesReader, median of {args.repeat} (CPUs {cpus}, "
          f"load {load:.1f})")
    print(f"{'series':<15} {'syntax':<6} {'slices':>6} {'ours s':>8} {'SimpleITK s':>12} {'ratio':>6}  same HU")
    for name, tag, n, mo, mp, r, same in rows:
        print(f"{name:<15} {tag:<6} {n:>6} {mo:>8.3f} {mp:>12.3f} {r:>6.2f}  {'yes' if same else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
