#!/usr/bin/env python3
"""Write ``sample_dicom/``: the synthetic pelvis phantom as an RLE Lossless CT DICOM series.

Deterministic: the phantom is ``printpipe.phantom.sample_phantom()`` (fixed seed, the parameters in
``printpipe.phantom.SAMPLE_KWARGS``) and the UIDs are derived from the same seed, so rerunning this
script reproduces the files byte for byte. The ground-truth labels are not stored; regenerate them
with ``sample_phantom().labels``.

Usage::

    python scripts/make_sample_dicom.py [--out sample_dicom]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from pydicom.uid import RLELossless

from printpipe._atomic import atomic_write_text
from printpipe.phantom import LABELS, SAMPLE_KWARGS, sample_phantom, write_dicom_series

REPO = Path(__file__).resolve().parents[1]

README = """# sample_dicom: a synthetic pelvis CT series

A small CT series for the demo (`make demo`) and the tests. **It is generated, not scanned: there is
no patient data in it.** The patient name and ID are the dummies `PHANTOM^PELVIS` / `PHANTOM-0001`.

## What it is
- CT Image Storage, one slice per file (`slice_0000.dcm` ... `slice_{last:04d}.dcm`), one study, one
  series, one frame of reference; transfer syntax RLE Lossless; signed 16-bit pixels with
  RescaleSlope 1, RescaleIntercept -1024 (HU).
- {nz} slices of {ny} x {nx} pixels; pixel spacing {dy} x {dx} mm, slice thickness and spacing {dz} mm;
  axial, ImageOrientationPatient 1\\0\\0\\0\\1\\0, PatientPosition HFS; the first slice is the most
  inferior, at z = {z0:.2f} mm; ImagePositionPatient of the first slice ({x0:.2f}, {y0:.2f}, {z0:.2f}).
- Anatomy (millimetres, DICOM LPS, +x = patient's left): an elliptical body (340 x 230 mm) with
  18 mm of subcutaneous fat (-100 HU) around soft tissue (40 HU) and a few gas pockets; two
  hemipelves (iliac wings, acetabular cups, ischium, pubic rami meeting at a symphysis with a
  {symphysis_mm:g} mm gap), a sacrum with a sacral canal, separated from each ilium by a
  {si_joint_mm:g} mm sacroiliac joint space except at {si_bridges} small bony bridges per side; two
  proximal femurs whose heads (radius 23 mm) sit in the cups with a {hip_joint_mm:g} mm joint space;
  bone has a {cortex_mm:g} mm cortical shell (1400 HU) and a trabecular core (about 120-350 HU, partly
  below the 226 HU bone threshold) and the femoral shafts a marrow canal; a curved CT couch
  (650 HU shell that thresholds like bone, foam core) {gap:g} mm below the skin; partial-volume edges
  and Gaussian noise (sigma {noise_hu:g} HU). The mid-sagittal plane is at x = {mid:g} mm, not at the
  image centre (x = 0).
- The joint spaces are 3 mm (not the anatomical 2 mm) so that they stay wider than one voxel at this
  resolution; the threshold still bridges them in places through partial volume, as in real CT.

## Ground truth
`printpipe.phantom.sample_phantom()` regenerates the exact volume and its labels
(`Phantom.labels`, uint8, same grid): {labels}. Label volumes (mm^3): {volumes}.

## How it was made
`python scripts/make_sample_dicom.py` (printpipe.phantom.pelvis_phantom with
`SAMPLE_KWARGS = {kwargs}`, then `write_dicom_series(..., transfer_syntax=RLELossless)`). The UIDs are
derived from the seed, so the script reproduces the files exactly.

## Licence
Generated data, dedicated to the public domain under CC0 1.0
(https://creativecommons.org/publicdomain/zero/1.0/).
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "sample_dicom", help="output folder")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    t0 = time.perf_counter()
    ph = sample_phantom()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.dcm"):
        old.unlink()
    files = write_dicom_series(ph.volume, out, transfer_syntax=RLELossless,
                               series_description="printpipe synthetic pelvis phantom",
                               seed=int(SAMPLE_KWARGS["seed"]))
    v = ph.volume
    nz, ny, nx = v.shape
    dz, dy, dx = v.spacing
    vols = ph.label_volumes_mm3()
    text = README.format(
        last=nz - 1, nz=nz, ny=ny, nx=nx, dz=dz, dy=dy, dx=dx, x0=v.origin[0], y0=v.origin[1],
        z0=v.origin[2], gap=5, mid=ph.midline_x_mm, kwargs=SAMPLE_KWARGS,
        labels=", ".join(f"{k} = `{n}`" for k, n in LABELS.items()) + ", 0 = background",
        volumes=", ".join(f"`{n}` {vols[n]:.0f}" for n in LABELS.values()),
        **{k: ph.params[k] for k in ("symphysis_mm", "si_joint_mm", "si_bridges", "hip_joint_mm",
                                     "cortex_mm", "noise_hu")})
    atomic_write_text(out / "README.md", text)
    size = sum(p.stat().st_size for p in files)
    logging.getLogger("make_sample_dicom").info(
        "%d files, %.2f MB, in %.1f s", len(files), size / 1e6, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
