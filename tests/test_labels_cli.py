"""``printpipe run --labels``: the label maps a run writes come back as the same parts; bad label maps
give one line, exit 1 and no output. On the committed sample series (and the real RTSTRUCTs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from printpipe.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works with any pytest import mode
from test_labels_support import write_rtstruct  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicom"
FAST = ["--quiet", "--no-report", "--format", "stl"]


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    if not any(SAMPLE.rglob("*.dcm")):
        pytest.skip("sample_dicom/ has no series yet (make sample)")
    out = tmp_path_factory.mktemp("auto")
    assert main(["run", str(SAMPLE), "-o", str(out), "--split-hemipelvis", *FAST]) == 0
    return out, json.loads((out / "manifest.json").read_text())


def _label_masks(path: Path) -> dict[str, np.ndarray]:
    import nibabel as nib

    data = np.asanyarray(nib.load(path).dataobj)
    names = json.loads((path.parent / "labels.json").read_text())
    return {n: data == int(v) for v, n in names.items()}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _stl_header(path: Path) -> str:
    return path.read_bytes()[:80].decode("ascii")


def test_run_writes_label_maps(auto_run):
    """Every run writes seg.nrrd (slicerio reads the part names), NIfTI and labels.json, listed in the
    manifest with their hashes; the STL headers carry SPACE=LPS for 3D Slicer."""
    import slicerio

    from printpipe._atomic import sha256_file

    out, manifest = auto_run
    seg = slicerio.read_segmentation(str(out / "segmentation.seg.nrrd"))
    parts = {p["name"] for p in manifest["parts"]}
    assert {s["name"] for s in seg["segments"]} == parts
    listed = {o["path"]: o for o in manifest["outputs"]}
    for name in ("segmentation.seg.nrrd", "segmentation.nii.gz", "labels.json"):
        assert listed[name]["sha256"] == sha256_file(out / name)
    assert "SPACE=LPS" in _stl_header(out / "model.stl")
    assert "SPACE=LPS" in _stl_header(out / "parts" / f"{sorted(parts)[0]}.stl")


def test_round_trip_seg_nrrd(auto_run, tmp_path):
    """Labels written by run and read back with --labels give the same parts: Dice 1.0 expected
    (same grid, the gaps are already cut), >= 0.99 required; mesh volumes within 0.5 %."""
    out, manifest = auto_run
    again = tmp_path / "again"
    assert main(["run", str(SAMPLE), "-o", str(again), "--labels", str(out / "segmentation.seg.nrrd"),
                 *FAST]) == 0
    first, second = _label_masks(out / "segmentation.nii.gz"), _label_masks(again / "segmentation.nii.gz")
    assert set(first) == set(second)
    for name in first:
        assert _dice(first[name], second[name]) >= 0.99, name
    m2 = json.loads((again / "manifest.json").read_text())
    vol1 = {p["name"]: p["volume_mm3"] for p in manifest["parts"]}
    for p in m2["parts"]:
        assert p["watertight"] and p["volume_mm3"] == pytest.approx(vol1[p["name"]], rel=0.005), p["name"]
    assert m2["segmentation"]["source"] == "labels" and m2["parameters"]["labels"]["file_sha256"]
    assert str(out) not in json.dumps(m2)                       # the label file's path is not recorded


def test_round_trip_totalsegmentator_folder_plate_frame(auto_run, tmp_path):
    """The run's labels laid out as TotalSegmentator writes them (one mask per class, its class
    names) give the same chosen parts; --frame plate STLs carry no SPACE= tag."""
    import nibabel as nib

    out, manifest = auto_run
    chosen = sorted(p["name"] for p in manifest["parts"])[:2]   # hip_left, femur_left when named
    img = nib.load(out / "segmentation.nii.gz")
    folder = tmp_path / "segmentations"
    folder.mkdir()
    masks = _label_masks(out / "segmentation.nii.gz")
    for name, mask in masks.items():
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), img.affine), folder / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), folder / "urinary_bladder.nii.gz")
    again = tmp_path / "again"
    assert main(["run", str(SAMPLE), "-o", str(again), "--labels", str(folder),
                 "--parts", ",".join(chosen), "--frame", "plate", *FAST]) == 0
    second = _label_masks(again / "segmentation.nii.gz")
    assert set(second) == set(chosen)
    for name in second:
        assert _dice(masks[name], second[name]) >= 0.99, name
    assert "SPACE=" not in _stl_header(again / "model.stl")


@pytest.mark.parametrize("case, message", [
    ("frame", "frame of reference mismatch: rs.dcm was drawn on another scan"),
    ("unknown", "has no label named or mapping to 'sacrum'"),
    ("missing", "does not exist; check the path given to --labels"),
    ("empty", "is empty (no voxel on the CT grid)"),
])
def test_bad_labels_one_line_exit_1_nothing_written(tmp_path, capsys, case, message):
    if not any(SAMPLE.rglob("*.dcm")):
        pytest.skip("sample_dicom/ has no series yet (make sample)")
    import nibabel as nib

    from printpipe.dicom import read_series

    z = 50.0
    ring = np.array([[0, 0, z], [20, 0, z], [20, 20, z], [0, 20, z]], float)
    if case == "frame":
        labels = write_rtstruct(tmp_path / "rs.dcm", {"femoreSin": [ring]}, frame_uid="1.2.826.0.1.9",
                                series_uid="1.2.826.0.1.8")
        extra = []
    elif case == "unknown":
        import pydicom

        ct = pydicom.dcmread(next(SAMPLE.glob("*.dcm")), stop_before_pixels=True)
        labels = write_rtstruct(tmp_path / "rs.dcm", {"femoreSin": [ring]}, series_uid=ct.SeriesInstanceUID,
                                frame_uid=ct.get("FrameOfReferenceUID", "1.2.3"))
        extra = ["--parts", "sacrum"]
    elif case == "missing":
        labels, extra = tmp_path / "nope.seg.nrrd", []
    else:
        vol = read_series(SAMPLE)
        affine = np.diag([-1, -1, 1, 1]) @ vol.affine[:, [2, 1, 0, 3]]
        labels = tmp_path / "e.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros(vol.shape[::-1], np.uint8), affine), labels)
        (tmp_path / "labels.json").write_text('{"1": "femur_left"}')
        extra = ["--parts", "femur_left"]
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["run", str(SAMPLE), "-o", str(out), "--labels", str(labels), *extra, *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0], err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.realdata
def test_real_rtstruct_parts_match_contours(realdata, tmp_path):
    """pelvic-ref003: --labels RS.dcm --parts femur_left,femur_right --printer ender3 gives watertight
    femurs and G-code, and the printed parts' cross-sections at every manual contour's slice match the
    contours: Dice >= 0.97 per part over all contour slices (area-weighted, shapely polygons)."""
    import pydicom
    import shapely
    import trimesh

    ct = realdata("pelvic-ref003-ct")
    rs = realdata("pelvic-ref003-rtstruct") / "RS.dcm"
    out = tmp_path / "out"
    assert main(["run", str(ct), "-o", str(out), "--labels", str(rs), "--parts", "femur_left,femur_right",
                 "--printer", "ender3", "--quiet", "--no-report"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(p["watertight"] for p in manifest["parts"]) and (out / "model.gcode").stat().st_size > 0
    assert manifest["timings_s"]["labels"] < 5.0
    for part, roi in (("femur_left", "femoreSin"), ("femur_right", "femoreDes")):
        dice = _section_dice(trimesh.load(out / "parts" / f"{part}.stl"), pydicom.dcmread(rs), roi, shapely)
        assert dice >= 0.97, (part, dice)


def _section_dice(mesh, ds, roi: str, shapely) -> float:
    """Area-weighted Dice of mesh sections against the ROI's contours (even-odd per slice)."""
    number = next(int(r.ROINumber) for r in ds.StructureSetROISequence if r.ROIName == roi)
    rc = next(r for r in ds.ROIContourSequence if int(r.ReferencedROINumber) == number)
    by_z: dict[float, object] = {}
    for c in rc.ContourSequence:
        pts = np.asarray(c.ContourData, float).reshape(-1, 3)
        z = round(float(pts[0, 2]), 2)
        poly = shapely.Polygon(pts[:, :2]).buffer(0)
        by_z[z] = shapely.symmetric_difference(by_z[z], poly) if z in by_z else poly
    inter = total = 0.0
    for z, ref in by_z.items():
        section = mesh.section(plane_origin=[0, 0, z], plane_normal=[0, 0, 1])
        got = shapely.Polygon()
        if section is not None:
            planar, to_3d = section.to_2D()
            # to_2D may rotate/shift the plane: map the polygons back to patient x, y
            for p in planar.polygons_full:
                xy = np.asarray(p.exterior.coords)
                world = (to_3d @ np.c_[xy, np.zeros(len(xy)), np.ones(len(xy))].T).T[:, :2]
                holes = [(to_3d @ np.c_[np.asarray(h.coords), np.zeros(len(h.coords)),
                                        np.ones(len(h.coords))].T).T[:, :2] for h in p.interiors]
                got = got.union(shapely.Polygon(world, holes).buffer(0))
        inter += got.intersection(ref).area
        total += got.area + ref.area
    return 2 * inter / total
