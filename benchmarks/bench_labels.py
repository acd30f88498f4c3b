"""Label maps in and out, measured on the real pelvic CTs (issue 11).

1. Round trip: ``printpipe run CT -o A`` (automatic), then ``printpipe run CT -o B --labels
   A/segmentation.seg.nrrd``; Dice per part between A's and B's ``segmentation.nii.gz`` and the ratio
   of the mesh volumes.
2. RTSTRUCT: ``printpipe run CT -o C --labels RS.dcm --parts femur_left,femur_right``; Dice of the
   rasterised masks against the contour polygons (voxel areas vs shapely areas on every contour
   slice), and Dice of the printed parts' cross-sections (``parts/*.stl`` cut at each contour's z)
   against the contours, area-weighted over the contour slices.
3. Time: wall time of the automatic run and of the ``--labels`` run (same options, report on), and
   the ``segment`` / ``labels`` stage from their manifests.

Usage::

    .venv/bin/python benchmarks/bench_labels.py [--out /tmp/bench_labels] [--cases ref003,ref002]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "realdata"
CASES = {
    "ref003": ("pelvic-ref003-ct", "pelvic-ref003-rtstruct/RS.dcm", {"femur_left": "femoreSin",
                                                                    "femur_right": "femoreDes"}),
    "ref002": ("pelvic-ref002-ct", "pelvic-ref002-labels/RS.dcm", {"femur_left": "FemoreSinistro",
                                                                  "femur_right": "FemoreDestro"}),
}


def _run(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "printpipe.cli.main", "run", *args, "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _masks(path: Path) -> dict[str, np.ndarray]:
    import nibabel as nib

    data = np.asanyarray(nib.load(path).dataobj)
    names = json.loads((path.parent / "labels.json").read_text())
    return {n: data == int(v) for v, n in names.items()}


def _dice(a, b) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def _contours(ds, roi: str, shapely) -> dict[float, object]:
    number = next(int(r.ROINumber) for r in ds.StructureSetROISequence if r.ROIName == roi)
    rc = next(r for r in ds.ROIContourSequence if int(r.ReferencedROINumber) == number)
    by_z: dict[float, object] = {}
    for c in rc.ContourSequence:
        pts = np.asarray(c.ContourData, float).reshape(-1, 3)
        z = round(float(pts[0, 2]), 2)
        poly = shapely.Polygon(pts[:, :2]).buffer(0)
        by_z[z] = shapely.symmetric_difference(by_z[z], poly) if z in by_z else poly
    return by_z


def _section(mesh, z: float, shapely):
    got = shapely.Polygon()
    section = mesh.section(plane_origin=[0, 0, z], plane_normal=[0, 0, 1])
    if section is None:
        return got
    planar, to_3d = section.to_2D()
    lift = lambda xy: (to_3d @ np.c_[xy, np.zeros(len(xy)), np.ones(len(xy))].T).T[:, :2]  # noqa: E731
    for p in planar.polygons_full:
        got = got.union(shapely.Polygon(lift(np.asarray(p.exterior.coords)),
                                        [lift(np.asarray(h.coords)) for h in p.interiors]).buffer(0))
    return got


def main() -> int:
    import pydicom
    import shapely
    import trimesh

    from printpipe.dicom import read_series
    from printpipe.labels import rtstruct_masks

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/bench_labels")
    ap.add_argument("--cases", default="ref003,ref002")
    args = ap.parse_args()
    out = Path(args.out)
    for case in args.cases.split(","):
        ct_name, rs_name, rois = CASES[case]
        ct, rs = REAL / ct_name, REAL / rs_name
        a, b, c = out / case / "auto", out / case / "roundtrip", out / case / "rtstruct"
        t_auto = _run([str(ct), "-o", str(a)])
        t_rt = _run([str(ct), "-o", str(b), "--labels", str(a / "segmentation.seg.nrrd")])
        t_lab = _run([str(ct), "-o", str(c), "--labels", str(rs), "--parts", ",".join(rois)])
        ma, mb = _masks(a / "segmentation.nii.gz"), _masks(b / "segmentation.nii.gz")
        man = {k: json.loads((d / "manifest.json").read_text()) for k, d in (("a", a), ("b", b), ("c", c))}
        va = {p["name"]: p["volume_mm3"] for p in man["a"]["parts"]}
        print(f"== {case}: round trip (automatic run -> --labels segmentation.seg.nrrd)")
        for p in man["b"]["parts"]:
            n = p["name"]
            print(f"  {n:<14} Dice {_dice(ma[n], mb[n]):.4f}  mesh volume ratio {p['volume_mm3'] / va[n]:.4f}")
        vol = read_series(ct)
        masks = rtstruct_masks(rs, vol, names=list(rois.values()))
        ds = pydicom.dcmread(rs)
        px = vol.spacing[1] * vol.spacing[2]
        print(f"== {case}: RTSTRUCT {rs_name} -> parts (contour slices only)")
        for part, roi in rois.items():
            polys = _contours(ds, roi, shapely)
            vox_num = vox_den = sec_num = sec_den = 0.0
            mesh = trimesh.load(c / "parts" / f"{part}.stl")
            for z, ref in polys.items():
                k = int(round(vol.patient_to_index([[0, 0, z]])[0, 0]))
                vox = masks[roi][k]
                # voxel mask vs polygon: the overlap area from pixel squares is approximated by
                # the pixel-centre count inside the polygon
                ij = np.argwhere(vox)
                pts = vol.index_to_patient(np.c_[np.full(len(ij), k), ij])[:, :2]
                inside = shapely.contains_xy(ref, pts[:, 0], pts[:, 1]).sum()
                vox_num += 2 * inside * px
                vox_den += vox.sum() * px + ref.area
                got = _section(mesh, z, shapely)
                sec_num += 2 * got.intersection(ref).area
                sec_den += got.area + ref.area
            print(f"  {part:<12} ({roi}): {len(polys)} slices  mask Dice {vox_num / vox_den:.4f}  "
                  f"printed-part section Dice {sec_num / sec_den:.4f}")
        seg_s = man["a"]["timings_s"].get("segment")
        lab_s = man["c"]["timings_s"].get("labels")
        print(f"== {case}: time  automatic run {t_auto:.1f} s (segment stage {seg_s} s)   "
              f"--labels RS.dcm run {t_lab:.1f} s (labels stage {lab_s} s)   "
              f"--labels seg.nrrd run {t_rt:.1f} s (labels stage {man['b']['timings_s'].get('labels')} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
