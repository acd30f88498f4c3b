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

* any folder given with ``--series DIR`` (e.g. the 650-slice JPEG 2000 phantom of
  ``benchmarks/make_case_series.py``; ``--series j2k650`` makes or reuses it).

``--decoders`` adds a table of the JPEG 2000 decoders pydicom can use, on frames of a JPEG 2000
series: CPU milliseconds per 512 x 512 frame (``time.process_time``, so other load on the machine
does not count), whether the decoder releases the GIL (a pure-Python counter thread keeps at
least half its idle rate while another thread decodes), the wall time of 2 threads against 1,
and the installed size of the package. Decoders: pylibjpeg-openjpeg (printpipe's dependency),
imagecodecs and python-gdcm when installed (``pip install imagecodecs python-gdcm``; not
dependencies).

Usage::

    .venv/bin/python benchmarks/bench_read.py [--repeat 5] [--only pelvis] [--keep /tmp/bench]
    .venv/bin/python benchmarks/bench_read.py --only none --series j2k650 --repeat 3 --decoders

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
    ap.add_argument("--only", choices=["pelvis", "synthetic", "none"], default=None,
                    help="only these generated series (none: only --series folders)")
    ap.add_argument("--series", action="append", default=[], metavar="DIR",
                    help="also read this folder (repeatable); 'j2k650' = the make_case_series.py phantom")
    ap.add_argument("--decoders", action="store_true", help="compare the JPEG 2000 decoders (see above)")
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
    for spec in args.series:
        if spec == "j2k650":
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from make_case_series import make_series as make_case_series

            folder = make_case_series()
        else:
            folder = Path(spec)
        cases.append((folder.name[:15], _syntax_tag(folder), folder))
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
    if args.decoders:
        j2k = [folder for _n, tag, folder in cases if tag == "j2k"]
        if not j2k:
            print("--decoders needs a JPEG 2000 series among the cases (add --syntax j2k or --series j2k650)")
            return 2
        compare_decoders(j2k[-1])
    return 0


def _syntax_tag(folder: Path) -> str:
    import pydicom

    first = next(p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith("."))
    ts = pydicom.dcmread(first, stop_before_pixels=True).file_meta.TransferSyntaxUID
    return {"1.2.840.10008.1.2.4.90": "j2k", "1.2.840.10008.1.2.4.91": "j2k",
            "1.2.840.10008.1.2.5": "rle"}.get(str(ts), "raw" if not ts.is_compressed else "other")


# -- JPEG 2000 decoders ----------------------------------------------------------------------------

def _decoders() -> dict:
    """name -> (decode(codestream bytes, file path) -> ndarray, distribution name) for those installed."""
    out = {}
    try:
        import openjpeg

        out["pylibjpeg-openjpeg"] = (lambda b, f: openjpeg.decode(b), "pylibjpeg-openjpeg")
    except ImportError:
        pass
    try:
        import imagecodecs

        out["imagecodecs"] = (lambda b, f: imagecodecs.jpeg2k_decode(b, numthreads=1), "imagecodecs")
    except ImportError:
        pass
    try:
        import gdcm

        def gdcm_decode(b, f):  # GDCM decodes from the file (it has no codestream entry point)
            reader = gdcm.ImageReader()
            reader.SetFileName(str(f))
            if not reader.Read():
                raise RuntimeError(f"gdcm could not read {f}")
            raw = reader.GetImage().GetBuffer().encode("utf-8", errors="surrogateescape")
            return np.frombuffer(raw, dtype=np.int16)

        out["python-gdcm"] = (gdcm_decode, "python-gdcm")
    except ImportError:
        pass
    return out


def _installed_mb(dist: str) -> float:
    from importlib import metadata

    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError:
        return float("nan")
    total = 0
    for f in files:
        try:
            total += f.locate().stat().st_size
        except OSError:
            pass
    return total / 2**20


def _gil_share(fn, items) -> float:
    """Rate of a pure-Python counter while another thread decodes, over its rate alone (~1: the
    decoder releases the GIL; near 0: it holds it)."""
    import threading

    def count_for(seconds: float) -> float:
        n, t_end = 0, time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            n += 1
        return n / seconds

    idle = count_for(0.3)
    done = threading.Event()

    def decode_all():
        for b, f in items:
            fn(b, f)
        done.set()

    th = threading.Thread(target=decode_all)
    n, t0 = 0, time.perf_counter()
    th.start()
    while not done.is_set():
        n += 1
        if n % 1000 == 0:
            time.perf_counter()
    busy = n / (time.perf_counter() - t0)
    th.join()
    return busy / idle


def compare_decoders(folder: Path, n_frames: int = 24) -> None:
    import pydicom
    from concurrent.futures import ThreadPoolExecutor
    from pydicom.encaps import generate_frames

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    files = files[len(files) // 3: len(files) // 3 + n_frames]  # slices through the body
    items = [(next(generate_frames(pydicom.dcmread(f).PixelData, number_of_frames=1)), f) for f in files]
    decoders = _decoders()
    ref = decoders["pylibjpeg-openjpeg"][0](*items[0]) if "pylibjpeg-openjpeg" in decoders else None
    print(f"\nJPEG 2000 decoders on {len(items)} frames of {folder.name} "
          f"({np.mean([len(b) for b, _ in items]) / 1024:.0f} KiB a frame)")
    print(f"{'decoder':<20} {'CPU ms/frame':>12} {'GIL share':>10} {'2 threads/1':>12} {'installed MB':>13}  same")
    for name, (fn, dist) in decoders.items():
        fn(*items[0])  # load and warm
        c0 = time.process_time()  # all threads: GDCM's OpenJPEG decodes with threads of its own
        t0 = time.perf_counter()
        for b, f in items:
            fn(b, f)
        cpu = (time.process_time() - c0) / len(items) * 1000
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda it: fn(*it), items))
        two = time.perf_counter() - t0
        share = _gil_share(fn, items[:8])
        same = ref is None or np.array_equal(np.asarray(fn(*items[0])).reshape(-1), np.asarray(ref).reshape(-1))
        print(f"{name:<20} {cpu:>12.1f} {share:>10.2f} {two / one:>12.2f} {_installed_mb(dist):>13.1f}  "
              f"{'yes' if same else 'NO'}")
    missing = {"pylibjpeg-openjpeg", "imagecodecs", "python-gdcm"} - set(decoders)
    if missing:
        print(f"not installed (not compared): {', '.join(sorted(missing))}")


if __name__ == "__main__":
    sys.exit(main())
