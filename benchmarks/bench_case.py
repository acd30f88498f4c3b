"""The whole case: ``printpipe run`` against a Slicer-style SimpleITK + VTK script, as processes.

Both sides start as a fresh process on the same DICOM folder and end with their files on disk:

* **printpipe**: ``printpipe run SERIES -o OUT --quiet`` with the default settings (segmentation into
  separated, named parts, repair and checks, STL + 3MF, manifest, QA report with pictures). The numba
  cache is warmed by one untimed run first, as on any machine after its first case.
* **Slicer-style script** (what a 3D Slicer "threshold + show 3D + export STL" session does, without
  the GUI): SimpleITK ``ImageSeriesReader`` (GDCM), threshold 226..3071 HU
  (``sitk.BinaryThreshold``), ``vtkDiscreteFlyingEdges3D`` with 2 threads
  (``vtkSMPTools.SetBackend("STDThread")``), ``vtkWindowedSincPolyDataFilter`` 20 iterations,
  pass band 0.01 (Slicer's smoothing factor 0.5), non-manifold smoothing and normalised coordinates
  as Slicer sets them, then one binary STL. It makes one unnamed, unchecked surface of everything
  above the threshold (couch included): less than printpipe delivers, which is the point of the
  comparison.

Each side runs once untimed (file cache, numba cache), then the two alternate ``--repeat`` times
(interleaved, so a noisy machine loads both alike) and medians are printed: wall time of the
process, its CPU time (user + system, with the children it waited for: the report worker and the
rendering probe), the ratio printpipe / script, printpipe's per-stage times (``timings_s`` of its
manifest; "start+exit" is the wall time outside ``pipeline.run``), and the peak memory, sampled every
20 ms with psutil as the summed PSS of the process and its children (the report worker included;
pages they share copy-on-write count once), next to the largest single process's ``ru_maxrss``
from ``wait4``.

Cases:

* ``pelvis``: ../shared/realdata/pelvic-ref003-ct (145 x 512 x 512, 1 x 1 x 3 mm, uncompressed);
* ``j2k650``: the synthetic 650 x 512 x 512 JPEG 2000 lossless phantom series written by
  ``benchmarks/make_case_series.py`` (generated on first use into ``$PRINTPIPE_BENCH_DATA`` or
  ``/tmp/printpipe-bench``; not kept in git).

``--baseline TREE`` adds a third contestant in every round: ``printpipe run`` from another source
tree (an older commit, e.g. ``git archive <commit> | tar -x -C TREE``, plus any files to carry
over), started with that tree first on ``sys.path`` (``TREE/cli`` and ``TREE/kernels`` as
``printpipe.cli`` and ``printpipe.kernels``). Its row and the ratio printpipe / baseline are printed;
the two printpipe runs of a round are next to each other, so the ratio is measured side by side.

Usage::

    .venv/bin/python benchmarks/bench_case.py [--case all|pelvis|j2k650] [--repeat 3] [--baseline TREE]

Needs the ``bench`` extra (``pip install -e '.[bench]'``: vtk, SimpleITK, psutil).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
HERE = Path(__file__).resolve().parent


# -- the Slicer-style script (run in its own process: ``bench_case.py --slicer-script IN OUT``) ----

def slicer_script(folder: str, stl: str) -> None:
    """SimpleITK read -> threshold 226..3071 -> discrete flying edges (2 threads) -> sinc -> STL."""
    import SimpleITK as sitk
    import vtk
    from vtk.util import numpy_support

    vtk.vtkSMPTools.SetBackend("STDThread")
    vtk.vtkSMPTools.Initialize(2)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    image = reader.Execute()
    mask = sitk.BinaryThreshold(image, 226, 3071, 1, 0)
    arr = sitk.GetArrayViewFromImage(mask)  # (z, y, x) uint8, no copy
    data = vtk.vtkImageData()
    data.SetDimensions(*image.GetSize())
    data.SetSpacing(*image.GetSpacing())
    data.SetOrigin(*image.GetOrigin())
    scalars = numpy_support.numpy_to_vtk(arr.reshape(-1), deep=False, array_type=vtk.VTK_UNSIGNED_CHAR)
    data.GetPointData().SetScalars(scalars)
    fe = vtk.vtkDiscreteFlyingEdges3D()
    fe.SetInputData(data)
    fe.SetValue(0, 1)
    fe.ComputeNormalsOff()
    fe.ComputeGradientsOff()
    fe.ComputeScalarsOff()
    smooth = vtk.vtkWindowedSincPolyDataFilter()
    smooth.SetInputConnection(fe.GetOutputPort())
    smooth.SetNumberOfIterations(20)
    smooth.SetPassBand(0.01)
    smooth.BoundarySmoothingOff()
    smooth.FeatureEdgeSmoothingOff()
    smooth.NonManifoldSmoothingOn()
    smooth.NormalizeCoordinatesOn()
    writer = vtk.vtkSTLWriter()
    writer.SetInputConnection(smooth.GetOutputPort())
    writer.SetFileTypeToBinary()
    writer.SetFileName(stl)
    writer.Write()


# -- measuring a process --------------------------------------------------------------------------

def run_measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``; wall seconds, peak summed PSS of the process tree (MB) and ru_maxrss (MB)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        # PSS: pages shared copy-on-write with the report worker count once
                        total += p.memory_full_info().pss
                    except (psutil.Error, AttributeError):
                        try:
                            total += p.memory_info().rss
                        except psutil.Error:
                            pass
            except psutil.Error:
                break
            peak = max(peak, total)
            stop.wait(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}): "
                           f"{err.decode(errors='replace')[-800:]}")
    # CPU seconds of the process and every descendant it waited for (report worker, probe): on a
    # machine shared with other jobs this says more about the cost than the wall time
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peak_mb": peak / 2**20,
            "maxrss_mb": usage.ru_maxrss / 1024}


#: ``python -c`` launcher of ``printpipe`` from the source tree in argv[1] (see ``--baseline``)
_TREE_LAUNCHER = (
    "import sys; tree = sys.argv.pop(1); sys.path.insert(0, tree); import printpipe; "
    "printpipe.__path__.append(tree); assert printpipe.__file__.startswith(tree), printpipe.__file__; "
    "from printpipe.cli.main import main; sys.argv[0] = 'printpipe'; sys.exit(main())")


def run_printpipe(folder: Path, out: Path, tree: Path | None = None) -> dict:
    if tree is None:
        cmd = [str(Path(sys.executable).with_name("printpipe"))]
    else:
        cmd = [sys.executable, "-c", _TREE_LAUNCHER, str(tree)]
    cmd += ["run", str(folder), "-o", str(out), "--quiet"]
    shutil.rmtree(out, ignore_errors=True)
    res = run_measured(cmd)
    manifest = json.loads((out / "manifest.json").read_text())
    res["timings"] = manifest["timings_s"]
    res["parts"] = [(p["name"], p["triangles"], round(p["volume_mm3"] / 1000, 1)) for p in manifest["parts"]]
    return res


def run_script(folder: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return run_measured([sys.executable, str(Path(__file__).resolve()), "--slicer-script", str(folder),
                         str(out / "model.stl")])


def bench_case(name: str, folder: Path, repeat: int, work: Path, baseline: Path | None = None) -> dict:
    ours, peer, base = [], [], []
    print(f"{name}: warm-up runs ...", file=sys.stderr, flush=True)
    run_printpipe(folder, work / "pp")
    if baseline is not None:
        run_printpipe(folder, work / "base", baseline)
    run_script(folder, work / "slicer")
    for i in range(repeat):
        # the two printpipe runs swap places every round, so neither always follows the script
        first, second = ("ours", "base") if i % 2 == 0 else ("base", "ours")
        for who in (first, second):
            if who == "ours":
                ours.append(run_printpipe(folder, work / "pp"))
            elif baseline is not None:
                base.append(run_printpipe(folder, work / "base", baseline))
        peer.append(run_script(folder, work / "slicer"))
        extra = f", baseline {base[-1]['wall']:.1f} s" if base else ""
        print(f"{name}: round {i + 1}/{repeat}: printpipe {ours[-1]['wall']:.1f} s{extra}, "
              f"script {peer[-1]['wall']:.1f} s", file=sys.stderr, flush=True)
    return {"ours": ours, "peer": peer, "base": base}


def _series_shape(folder: Path) -> str:
    files = [p for p in folder.iterdir() if p.suffix == ".dcm" or p.name.startswith("CT")]
    try:
        import pydicom

        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        return f"{len(files)} x {ds.Rows} x {ds.Columns}, {ds.file_meta.TransferSyntaxUID.name}"
    except Exception:  # the shape is a label only
        return f"{len(files)} files"


def print_table(name: str, folder: Path, res: dict, repeat: int) -> None:
    med = statistics.median
    ours, peer = res["ours"], res["peer"]
    wo, wp = med(r["wall"] for r in ours), med(r["wall"] for r in peer)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"\n{name}: {_series_shape(folder)}; median of {repeat}, interleaved "
          f"(CPUs {cpus}, load {os.getloadavg()[0]:.1f})")
    base = res.get("base") or []
    rows = [("printpipe run", ours), ("Slicer-style script", peer)] + ([("baseline printpipe", base)] if base else [])
    print(f"{'':<22}{'wall s':>8}{'CPU s':>8}{'peak MB (sum)':>15}{'maxrss MB':>11}")
    for label, runs in rows:
        print(f"{label:<22}{med(r['wall'] for r in runs):>8.2f}{med(r['cpu'] for r in runs):>8.2f}"
              f"{med(r['peak_mb'] for r in runs):>15.0f}{med(r['maxrss_mb'] for r in runs):>11.0f}")
    print(f"{'ratio printpipe/script':<22}{wo / wp:>8.2f}")
    if base:
        # per round (the two printpipe runs were next to each other), then the median
        ratios = [o["wall"] / b["wall"] for o, b in zip(ours, base)]
        print(f"{'ratio printpipe/base':<22}{med(ratios):>8.2f}  (per round: "
              + ", ".join(f"{x:.2f}" for x in ratios) + ")")
        cpu_ratios = [o["cpu"] / b["cpu"] for o, b in zip(ours, base)]
        print(f"{'CPU printpipe/base':<22}{med(cpu_ratios):>8.2f}  (per round: "
              + ", ".join(f"{x:.2f}" for x in cpu_ratios) + ")")
    for label, runs in [("printpipe", ours)] + ([("baseline", base)] if base else []):
        names = list(dict.fromkeys(k for r in runs for k in r["timings"] if k != "total"))
        stages = {s: med(r["timings"].get(s, 0.0) for r in runs) for s in names}
        total = med(r["timings"].get("total", 0.0) for r in runs)
        stages["start+exit"] = med(r["wall"] - r["timings"].get("total", 0.0) for r in runs)
        print(f"{label} stages (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
              + f"; in-process total {total:.2f}")
    print("printpipe parts (name, triangles, cm3): " + "; ".join(f"{n} {t:,} {v}" for n, t, v in ours[-1]["parts"]))
    if base and base[-1]["parts"] != ours[-1]["parts"]:
        print("baseline parts DIFFER (name, triangles, cm3): "
              + "; ".join(f"{n} {t:,} {v}" for n, t, v in base[-1]["parts"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=["pelvis", "j2k650", "all"], default="all")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per side (median reported)")
    ap.add_argument("--baseline", type=Path, metavar="TREE",
                    help="also run printpipe from this source tree (an older commit) in every round")
    ap.add_argument("--slicer-script", nargs=2, metavar=("SERIES", "STL"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
        if not (args.baseline / "printpipe" / "__init__.py").is_file() or not (args.baseline / "cli").is_dir():
            print(f"--baseline {args.baseline}: not a printpipe source tree (printpipe/, cli/, kernels/)",
                  file=sys.stderr)
            return 2
    if args.slicer_script:
        slicer_script(*args.slicer_script)
        return 0
    try:
        import psutil  # noqa: F401
        import SimpleITK  # noqa: F401
        import vtk  # noqa: F401
    except ImportError as exc:
        print(f"{exc.name} is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    cases = []
    if args.case in ("pelvis", "all"):
        folder = REALDATA / "pelvic-ref003-ct"
        if not folder.is_dir():
            print(f"real data not found at {folder}; skipping the pelvis case", file=sys.stderr)
        else:
            cases.append(("pelvic-ref003-ct", folder))
    if args.case in ("j2k650", "all"):
        sys.path.insert(0, str(HERE))
        from make_case_series import make_series

        cases.append(("synthetic j2k 650", make_series()))
    work = Path(tempfile.mkdtemp(prefix="printpipe-bench-case-"))
    try:
        for name, folder in cases:
            res = bench_case(name, folder, args.repeat, work / name.replace(" ", "_"), args.baseline)
            print_table(name, folder, res, args.repeat)
            sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
