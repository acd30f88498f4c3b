"""Benchmark of the surface kernels against VTK, scikit-image and trimesh (not a test).

Generates the 512 x 512 x 400 pelvis phantom (``printpipe.phantom.pelvis_phantom``; a built-in
CT-like generator if that module is missing), extracts the bone surface at 226 HU and prints one
table, all figures from this run (medians of several runs unless marked once):

* marching cubes: printpipe vs ``vtkFlyingEdges3D`` with 1 and 2 threads (VTK's STDThread SMP
  backend), and vs ``skimage.measure.marching_cubes`` (once, it is slow);
* smoothing of the same mesh: windowed sinc (20 iterations, pass band 0.1) vs
  ``vtkWindowedSincPolyDataFilter`` with 2 threads, and Taubin (5 lambda/mu pairs = 10 Laplacian
  steps) vs ``trimesh.smoothing.filter_taubin(iterations=10)``;
* peak extra memory of one marching-cubes call (fresh process; peak RSS reset before the call
  through ``/proc/self/clear_refs``) vs the output size;
* cold compile of every kernel (``kernels.warmup()`` with an empty ``NUMBA_CACHE_DIR``), the
  cache-loaded warmup, and the first full-size call of a fresh process.

Run: ``.venv/bin/python benchmarks/bench_surface.py`` (add ``--quick`` for a 200 x 256 x 256 volume).
VTK (the ``vtk`` wheel) is a benchmark-only dependency.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LEVEL_HU = 226.0
REPEATS = 5


def make_volume(shape):
    """(hu int16, spacing) of the pelvis phantom, or of a simple CT-like fallback."""
    try:
        from printpipe.phantom import pelvis_phantom
    except ImportError:
        return _fallback_phantom(shape)
    ph = pelvis_phantom(shape)
    return ph.volume.hu, tuple(ph.volume.spacing)


def _fallback_phantom(shape, seed=0):
    """Air, an elliptic soft-tissue body and ellipsoidal bones with cortex and noisy trabeculae."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    spacing = (1.0, 400.0 / ny, 400.0 / nx)
    z = (np.arange(nz) - nz / 2) * spacing[0]
    y, x = np.meshgrid((np.arange(ny) - ny / 2) * spacing[1], (np.arange(nx) - nx / 2) * spacing[2], indexing="ij")
    tex = ndimage.gaussian_filter(rng.standard_normal((nz, ny // 2 + 2, nx // 2 + 2)).astype(np.float32), 0.45)
    tex /= tex.std()
    bones = [((0, 10, -90), (156, 39, 36)), ((0, 10, 90), (156, 39, 36)), ((-120, 20, -95), (78, 31, 31)),
             ((-120, 20, 95), (78, 31, 31)), ((60, 60, 0), (130, 29, 39)), ((-60, -50, 0), (26, 23, 91))]
    hu = np.empty(shape, np.int16)
    for k in range(nz):
        sl = np.where((x / 190.0) ** 2 + (y / 140.0) ** 2 <= 1.0, 40.0, -1000.0).astype(np.float32)
        t = ndimage.map_coordinates(tex[k], [y / spacing[1] / 2 + ny / 4 + 0.5, x / spacing[2] / 2 + nx / 4 + 0.5],
                                    order=1, mode="nearest")
        for (cz, cy, cx), (rz, ry, rx) in bones:
            r = np.sqrt(((z[k] - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
            sl += 1100.0 * np.clip(1.0 - np.abs(r - 0.93) / 0.07, 0, 1) + (r < 0.9) * (270.0 + 120.0 * t)
        hu[k] = np.clip(sl + rng.normal(0, 25, sl.shape), -1024, 3000).astype(np.int16)
    return hu, spacing


def median_time(fn, repeats=REPEATS):
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def vtk_image(hu, spacing):
    import vtk
    from vtk.util import numpy_support

    img = vtk.vtkImageData()
    img.SetDimensions(hu.shape[2], hu.shape[1], hu.shape[0])
    img.SetSpacing(spacing[2], spacing[1], spacing[0])
    img.GetPointData().SetScalars(numpy_support.numpy_to_vtk(hu.ravel(), deep=False, array_type=vtk.VTK_SHORT))
    return img


def vtk_polydata(verts_xyz, faces):
    import vtk
    from vtk.util import numpy_support

    pts = vtk.vtkPoints()
    pts.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(verts_xyz, dtype=np.float32), deep=True))
    offsets = np.arange(0, 3 * len(faces) + 1, 3, dtype=np.int64)
    cells = vtk.vtkCellArray()
    cells.SetData(numpy_support.numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_support.numpy_to_vtkIdTypeArray(np.ascontiguousarray(faces, dtype=np.int64).ravel(), deep=True))
    poly = vtk.vtkPolyData()
    poly.SetPoints(pts)
    poly.SetPolys(cells)
    return poly


def set_vtk_threads(n):
    import vtk

    vtk.vtkSMPTools.SetBackend("STDThread")
    vtk.vtkSMPTools.Initialize(n)


def in_subprocess(code, env=None):
    """Run ``code`` in a fresh interpreter; return the JSON it prints last."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


_MEM_CODE = """
import json, resource, sys, numpy as np
def rss():
    with open('/proc/self/statm') as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()
def reset_peak():  # Linux >= 4.0: writing 5 resets VmHWM to the current RSS
    with open('/proc/self/clear_refs', 'w') as fh:
        fh.write('5')
def peak():
    with open('/proc/self/status') as fh:
        for line in fh:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
hu = np.load({path!r})
spacing = {spacing!r}
which = {which!r}
if which == 'ours':
    from printpipe.kernels import marching_cubes
    marching_cubes(hu[:4].copy(), {level}, spacing)
    before = rss(); reset_peak()
    v, f = marching_cubes(hu, {level}, spacing)
    out = v.nbytes + f.nbytes
else:
    import vtk
    from vtk.util import numpy_support
    img = vtk.vtkImageData(); img.SetDimensions(hu.shape[2], hu.shape[1], hu.shape[0])
    img.SetSpacing(spacing[2], spacing[1], spacing[0])
    img.GetPointData().SetScalars(numpy_support.numpy_to_vtk(hu.ravel(), deep=False, array_type=vtk.VTK_SHORT))
    fe = vtk.vtkFlyingEdges3D(); fe.SetInputData(img); fe.SetValue(0, {level})
    fe.ComputeNormalsOff(); fe.ComputeGradientsOff(); fe.ComputeScalarsOff()
    before = rss(); reset_peak()
    fe.Update()
    p = fe.GetOutput(); out = p.GetPoints().GetData().GetNumberOfValues() * 4 + p.GetPolys().GetNumberOfConnectivityIds() * 8
print(json.dumps([max(0, peak() - before), out]))
"""

_COMPILE_CODE = """
import json, time
t0 = time.perf_counter()
from printpipe import kernels
t1 = time.perf_counter()
per = kernels.warmup()
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "warmup": t2 - t1, "per_module": per}))
"""

_FIRST_CALL_CODE = """
import json, time, numpy as np
hu = np.load({path!r})
from printpipe.kernels import marching_cubes
t0 = time.perf_counter(); marching_cubes(hu, {level}, {spacing!r}); t1 = time.perf_counter()
marching_cubes(hu, {level}, {spacing!r}); t2 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1]))
"""


def main(argv):
    quick = "--quick" in argv
    shape = (200, 256, 256) if quick else (400, 512, 512)
    rows = []

    def row(name, ours, peer, note=""):
        ratio = ours / peer if (ours is not None and peer) else float("nan")
        rows.append((name, ours, peer, ratio, note))
        print(f"  .. {name}: ours {ours if ours is None else round(ours, 4)} peer "
              f"{peer if peer is None else round(peer, 4)} {note}", file=sys.stderr, flush=True)

    import numba
    import trimesh
    import vtk
    from skimage.measure import marching_cubes as sk_marching_cubes

    from printpipe import kernels

    t0 = time.perf_counter()
    hu, spacing = make_volume(shape)
    print(f"phantom {hu.shape} int16, spacing {tuple(round(s, 4) for s in spacing)} mm, "
          f"made in {time.perf_counter() - t0:.1f} s; level {LEVEL_HU} HU", file=sys.stderr, flush=True)
    kernels.warmup()

    # -- marching cubes ---------------------------------------------------------------------------
    img = vtk_image(hu, spacing)
    verts = faces = None
    nfaces_vtk = 0
    for threads in (1, 2):
        numba.set_num_threads(threads)
        t_ours, (verts, faces) = median_time(lambda: kernels.marching_cubes(hu, LEVEL_HU, spacing))
        set_vtk_threads(threads)
        fe = vtk.vtkFlyingEdges3D()
        fe.SetInputData(img)
        fe.SetValue(0, LEVEL_HU)
        fe.ComputeNormalsOff()
        fe.ComputeGradientsOff()
        fe.ComputeScalarsOff()

        def run_fe(fe=fe):
            fe.Modified()
            fe.Update()
            return fe.GetOutput().GetNumberOfPolys()

        t_vtk, nfaces_vtk = median_time(run_fe)
        row(f"marching cubes, {threads} thread{'s' if threads > 1 else ''} vs vtkFlyingEdges3D", t_ours, t_vtk,
            f"{len(faces) / 1e6:.2f} M faces (VTK {nfaces_vtk / 1e6:.2f} M)")
    numba.set_num_threads(2)
    t_sk, _ = median_time(lambda: sk_marching_cubes(hu, LEVEL_HU, spacing=spacing), repeats=1)
    t_ours, _ = median_time(lambda: kernels.marching_cubes(hu, LEVEL_HU, spacing))
    row("marching cubes, 2 threads vs skimage (once)", t_ours, t_sk)

    # -- smoothing ---------------------------------------------------------------------------------
    xyz = np.ascontiguousarray(verts[:, ::-1])  # VTK and trimesh get x, y, z
    numba.set_num_threads(2)
    t_ours, _ = median_time(lambda: kernels.windowed_sinc_smooth(verts, faces, iterations=20, passband=0.1),
                            repeats=3)
    set_vtk_threads(2)
    poly = vtk_polydata(xyz, faces)
    ws = vtk.vtkWindowedSincPolyDataFilter()
    ws.SetInputData(poly)
    ws.SetNumberOfIterations(20)
    ws.SetPassBand(0.1)
    ws.NormalizeCoordinatesOn()
    ws.BoundarySmoothingOff()
    ws.FeatureEdgeSmoothingOff()
    ws.NonManifoldSmoothingOn()

    def run_ws():
        ws.Modified()
        ws.Update()

    t_vtk, _ = median_time(run_ws, repeats=3)
    row("windowed sinc 20 it, 2 threads vs vtkWindowedSinc", t_ours, t_vtk, f"{len(faces) / 1e6:.2f} M faces")
    t_ours, _ = median_time(lambda: kernels.taubin_smooth(verts, faces, iterations=5), repeats=3)
    mesh = trimesh.Trimesh(xyz.astype(np.float64), faces.astype(np.int64), process=False)

    def run_trimesh():
        m = mesh.copy()
        trimesh.smoothing.filter_taubin(m, iterations=10)

    t_tm, _ = median_time(run_trimesh, repeats=2)
    row("Taubin 10 steps, 2 threads vs trimesh filter_taubin", t_ours, t_tm)

    # -- memory, compile and first call (fresh processes) -----------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "hu.npy")
        np.save(path, hu)
        mem = {}
        for which in ("ours", "vtk"):
            mem[which] = in_subprocess(_MEM_CODE.format(path=path, spacing=tuple(spacing), which=which,
                                                        level=LEVEL_HU))
        row("peak extra memory of MC, MB vs VTK", mem["ours"][0] / 1e6, mem["vtk"][0] / 1e6,
            f"output {mem['ours'][1] / 1e6:.0f} MB (VTK {mem['vtk'][1] / 1e6:.0f} MB), volume {hu.nbytes / 1e6:.0f} MB")
        env = dict(os.environ, NUMBA_CACHE_DIR=str(Path(tmp) / "numba-cache"))
        cold = in_subprocess(_COMPILE_CODE, env)
        cached = in_subprocess(_COMPILE_CODE, env)
        per = ", ".join(f"{k} {v:.1f}" for k, v in cold["per_module"].items())
        row("cold compile of all kernels (warmup), s", cold["warmup"], None, f"per module: {per}")
        row("cache-loaded warmup, s", cached["warmup"], None, f"import {cached['import']:.2f} s")
        first, warm = in_subprocess(_FIRST_CALL_CODE.format(path=path, spacing=tuple(spacing), level=LEVEL_HU), env)
        row("first MC call in a fresh process (cache) vs warm call", first, warm)

    print(f"\nprintpipe surface benchmark: {hu.shape} int16 phantom, level {LEVEL_HU} HU, "
          f"{numba.config.NUMBA_NUM_THREADS} numba threads available, {os.cpu_count()} CPUs")
    print(f"{'what':58s} {'ours':>10s} {'peer':>10s} {'ratio':>7s}  note")
    for name, ours, peer, ratio, note in rows:
        o = f"{ours:10.3f}" if ours is not None else f"{'-':>10s}"
        p = f"{peer:10.3f}" if peer is not None else f"{'-':>10s}"
        r = f"{ratio:7.2f}" if np.isfinite(ratio) else f"{'-':>7s}"
        print(f"{name:58s} {o} {p} {r}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
