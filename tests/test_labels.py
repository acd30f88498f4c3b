"""Label maps out and in (printpipe.labels): formats, grids, names, gaps and the errors a user can fix.

The phantom: a CT of 24 x 40 x 48 voxels (2 x 1 x 0.8 mm) with five labelled boxes in TotalSegmentator's
bone classes. Voxel-exact answers are expected wherever the grid is the CT's or a whole-voxel crop or
flip of it (nearest neighbour picks the very voxel), so those comparisons are exact equalities.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from printpipe.errors import InputError
from printpipe.labels import TOTALSEGMENTATOR_CLASSES, part_name, read, write
from printpipe.segment import Segmentation
from printpipe.volume import Volume

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works with any pytest import mode
from test_labels_support import write_ct_series, write_dicom_seg, write_rtstruct  # noqa: E402

SPACING = (2.0, 1.0, 0.8)
ORIGIN = (-20.0, -15.0, 100.0)
BOXES = {  # name -> (z0, z1, y0, y1, x0, x1), half-open voxel ranges
    "hip_left": (4, 14, 5, 20, 28, 40),
    "hip_right": (4, 14, 5, 20, 8, 20),
    "sacrum": (8, 16, 22, 30, 21, 27),
    "femur_left": (14, 22, 10, 18, 30, 38),     # touches hip_left face to face (z 14 after 13)
    "femur_right": (15, 22, 10, 18, 10, 18),    # one empty slice from hip_right: apart
}


@pytest.fixture
def phantom():
    hu = np.zeros((24, 40, 48), np.int16)
    labels = np.zeros(hu.shape, np.uint8)
    names = {}
    for value, (name, (z0, z1, y0, y1, x0, x1)) in enumerate(BOXES.items(), start=1):
        labels[z0:z1, y0:y1, x0:x1] = value
        hu[z0:z1, y0:y1, x0:x1] = 400 + 100 * value     # femur_left brighter than hip_left
        names[value] = name
    vol = Volume(hu=hu, spacing=SPACING, origin=ORIGIN,
                 meta={"series_uid_hash": "0" * 16, "frame_of_reference_uid_hash": "f" * 16})
    return vol, labels, names


def _masks(seg: Segmentation, vol: Volume) -> dict[str, np.ndarray]:
    """Part name -> bool mask on the full grid of ``vol`` (``seg.volume`` is a crop of it)."""
    lo = np.rint(vol.patient_to_index(np.asarray(seg.volume.origin))[0]).astype(int)
    out = {}
    for label, name in seg.names.items():
        full = np.zeros(vol.shape, bool)
        sub = seg.labels == label
        full[lo[0]:lo[0] + sub.shape[0], lo[1]:lo[1] + sub.shape[1], lo[2]:lo[2] + sub.shape[2]] = sub
        out[name] = full
    return out


def _expected(labels, names, gap=True):
    """The phantom's masks after the one-voxel gap: femur_left (brighter) keeps its face on hip_left."""
    exp = {n: labels == v for v, n in names.items()}
    if gap:
        exp["hip_left"][13, 10:18, 30:38] = False          # face-adjacent layer
        exp["hip_left"][13, 9, 30:38] = exp["hip_left"][13, 18, 30:38] = False   # edge diagonals
        exp["hip_left"][13, 10:18, 29] = exp["hip_left"][13, 10:18, 38] = False
        exp["hip_left"][13, 9, 29] = exp["hip_left"][13, 9, 38] = False          # corner diagonals
        exp["hip_left"][13, 18, 29] = exp["hip_left"][13, 18, 38] = False
    return exp


def test_part_names():
    table = {"hip_left": "hip_left", "femoreSin": "femur_left", "FemoreDestro": "femur_right",
             "FemoralHead (Right)_MBS": "femur_right", "Femur_Head_L_DL": "femur_left",
             "vertebrae_L5": "spine", "vertebrae_S1": "sacrum", "Sacrum": "sacrum", "Pelvis": "pelvis",
             "Left hip": "hip_left", "Pelvis_L": "hip_left", "bone_2": "bone_2", "fragment_1": "fragment_1", "femur": None, "Prostate_DL": None, "External": None, "liver": None}
    assert {k: part_name(k) for k in table} == table


def test_write_then_read_is_exact(phantom, tmp_path):
    """seg.nrrd and NIfTI written by write() read back voxel for voxel (the phantom's gap-free labels,
    no gap cut), with slicerio and nibabel agreeing with the CT geometry independently."""
    import nibabel as nib
    import slicerio

    vol, labels, names = phantom
    sub = vol.crop((2, 3, 4), (23, 35, 45))               # a cropped Segmentation, as segment() gives
    seg = Segmentation(volume=sub, labels=labels[2:23, 3:35, 4:45].copy(), names=dict(names))
    files = write(tmp_path, seg, vol)
    assert [f.name for f in files] == ["segmentation.seg.nrrd", "segmentation.nii.gz", "labels.json"]

    s = slicerio.read_segmentation(str(tmp_path / "segmentation.seg.nrrd"))
    assert s["voxels"].shape == vol.shape[::-1]                    # (i, j, k)
    assert [x["name"] for x in s["segments"]] == list(names.values())
    assert np.allclose(s["ijkToLPS"][:3, 3], ORIGIN) and np.allclose(np.diag(s["ijkToLPS"])[:3], SPACING[::-1])
    z0, z1, y0, y1, x0, x1 = BOXES["sacrum"]
    assert s["segments"][2]["extent"] == [x0, x1 - 1, y0, y1 - 1, z0, z1 - 1]

    img = nib.load(tmp_path / "segmentation.nii.gz")
    ras = img.affine @ [7, 9, 11, 1]                               # voxel (i, j, k) = (7, 9, 11)
    lps = vol.index_to_patient([[11, 9, 7]])[0]
    assert np.allclose(ras[:3], [-lps[0], -lps[1], lps[2]])
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")          # RAS+ affine of an LPS-stored grid
    assert json.loads((tmp_path / "labels.json").read_text()) == {str(k): v for k, v in names.items()}

    for f in ("segmentation.seg.nrrd", "segmentation.nii.gz"):
        back = read(tmp_path / f, vol, gap=False)
        assert sorted(back.names.values()) == sorted(names.values())
        got = _masks(back, vol)
        for v, n in names.items():
            assert np.array_equal(got[n], labels == v), (f, n)
        assert back.info["resampled"] is False


def test_gap_between_touching_labels(phantom, tmp_path):
    """Touching hip_left/femur_left: the darker voxel of every 26-adjacent pair is cleared (the hip's
    layer next to the femur), nothing else changes, and no two parts touch afterwards."""
    from scipy import ndimage as ndi

    vol, labels, names = phantom
    write(tmp_path, Segmentation(volume=vol, labels=labels, names=names), vol)
    seg = read(tmp_path / "segmentation.seg.nrrd", vol)
    got = _masks(seg, vol)
    for n, m in _expected(labels, names).items():
        assert np.array_equal(got[n], m), n
    assert seg.info["gap_voxels_cleared"] == 10 * 10        # the 8 x 8 face grown by its 26-neighbours
    for a in got:
        grown = ndi.binary_dilation(got[a], np.ones((3, 3, 3), bool))
        assert not any((grown & got[b]).any() for b in got if b != a), a


def test_resampled_flipped_and_finer_grid(phantom, tmp_path):
    """A NIfTI with the slices stored top-down and twice the in-plane sampling (as a tool that
    resamples would write) comes back on the CT grid by nearest neighbour: every CT voxel centre
    picks a fine voxel inside the same coarse voxel, so the result is exact."""
    import nibabel as nib

    vol, labels, names = phantom
    fine = np.repeat(np.repeat(labels, 2, axis=1), 2, axis=2)[::-1]  # (z reversed, y*2, x*2)
    dz, dy, dx = SPACING
    z_top = ORIGIN[2] + (labels.shape[0] - 1) * dz
    lps = np.array([[dx / 2, 0, 0, ORIGIN[0] - dx / 4],
                    [0, dy / 2, 0, ORIGIN[1] - dy / 4],
                    [0, 0, -dz, z_top],
                    [0, 0, 0, 1.0]])
    img = nib.Nifti1Image(np.ascontiguousarray(fine.transpose(2, 1, 0)), np.diag([-1, -1, 1, 1]) @ lps)
    nib.save(img, tmp_path / "fine.nii.gz")
    (tmp_path / "labels.json").write_text(json.dumps({str(k): v for k, v in names.items()}))
    seg = read(tmp_path / "fine.nii.gz", vol, gap=False)
    assert seg.info["resampled"] is True
    got = _masks(seg, vol)
    for v, n in names.items():
        assert np.array_equal(got[n], labels == v), n


def _nifti(path, labels, affine_lps, names=None):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)),
                             np.diag([-1, -1, 1, 1]) @ affine_lps), path)
    if names:
        path.with_name("labels.json").write_text(json.dumps({str(k): v for k, v in names.items()}))
    return path


def _ijk_affine(vol, shift_mm=(0, 0, 0)):
    a = vol.affine[:, [2, 1, 0, 3]].copy()
    a[:3, 3] += shift_mm
    return a


def test_errors_rotated_outside_empty_unknown(phantom, tmp_path):
    vol, labels, names = phantom
    rot = _ijk_affine(vol)
    c, s = np.cos(np.radians(5)), np.sin(np.radians(5))
    rot[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ rot[:3, :3]
    with pytest.raises(InputError, match=r"rotated 5\.0 deg against the CT; resample it onto the CT"):
        read(_nifti(tmp_path / "rot.nii.gz", labels, rot, names), vol)

    # the sacrum box shifted 30 mm up runs past the CT's top slice
    with pytest.raises(InputError, match=r"label 'sacrum' in up\.nii\.gz reaches outside the CT.*give the CT"):
        read(_nifti(tmp_path / "up.nii.gz", labels, _ijk_affine(vol, (0, 0, 30.0)), names), vol,
             parts=["sacrum"])

    # a names entry with no voxels
    with pytest.raises(InputError, match=r"label 'femur_left' in e\.nii\.gz is empty"):
        read(_nifti(tmp_path / "e.nii.gz", np.where(labels == 4, 0, labels).astype(np.uint8),
                    _ijk_affine(vol), {9: "femur_left", 1: "hip_left"}), vol, parts=["femur_left"])

    path = _nifti(tmp_path / "n.nii.gz", labels, _ijk_affine(vol), names)
    with pytest.raises(InputError, match=r"no label named or mapping to 'tibia'.*'hip_left'"):
        read(path, vol, parts=["tibia"])
    (tmp_path / "labels.json").unlink()
    with pytest.raises(InputError, match="carries no label names.*--label-names"):
        read(path, vol)


def test_totalsegmentator_folder_and_multilabel(phantom, tmp_path):
    """TotalSegmentator's layout: one mask per class in a folder (organs beside the bones, vertebrae
    split by level) and its multilabel file with the class table in the NIfTI extension. Bones map to
    printpipe's parts, L4 and L5 join one spine part, organs are left out."""
    import nibabel as nib

    vol, labels, names = phantom
    ts = {n: labels == v for v, n in names.items()}
    spine = np.zeros(vol.shape, bool)
    spine[18:22, 24:32, 20:28] = True
    ts["vertebrae_L5"] = spine & (np.arange(vol.shape[0]) < 20)[:, None, None]
    ts["vertebrae_L4"] = spine & ~ts["vertebrae_L5"]
    ts["urinary_bladder"] = np.zeros(vol.shape, bool)
    ts["urinary_bladder"][2:4, 30:36, 2:6] = True
    folder = tmp_path / "segmentations"
    folder.mkdir()
    affine = np.diag([-1, -1, 1, 1]) @ _ijk_affine(vol)
    for n, m in ts.items():
        nib.save(nib.Nifti1Image(m.transpose(2, 1, 0).astype(np.uint8), affine), folder / f"{n}.nii.gz")
    seg = read(folder, vol)
    assert sorted(seg.names.values()) == sorted([*names.values(), "spine"])
    assert seg.info["parts"]["spine"]["from"] == ["vertebrae_L4", "vertebrae_L5"]
    got = _masks(seg, vol)
    assert np.array_equal(got["spine"], spine)
    for n, m in _expected(labels, names).items():
        assert np.array_equal(got[n], m), n

    # multilabel with TotalSegmentator's own class numbers
    number = {v: k for k, v in TOTALSEGMENTATOR_CLASSES.items()} | {"urinary_bladder": 21}
    multi = np.zeros(vol.shape, np.uint8)
    for n, m in ts.items():
        multi[m] = number[n]
    img = nib.Nifti1Image(multi.transpose(2, 1, 0), affine)
    bare = tmp_path / "bare.nii.gz"
    nib.save(img, bare)
    from printpipe.labels import _caret_label_table

    img.header.extensions.append(nib.nifti1.Nifti1Extension(0, _caret_label_table(
        {number[n]: n for n in ts}).encode()))
    nib.save(img, tmp_path / "segmentation_ml.nii.gz")
    for path, table in ((tmp_path / "segmentation_ml.nii.gz", None), (bare, "totalsegmentator")):
        seg = read(path, vol, names_table=table, parts=["femur_left", "hip_left", "vertebrae_L5"])
        got = _masks(seg, vol)
        assert set(got) == {"femur_left", "hip_left", "spine"}
        assert np.array_equal(got["spine"], ts["vertebrae_L5"])
        assert np.array_equal(got["hip_left"], _expected(labels, names)["hip_left"])


def test_dicom_seg_and_rtstruct_frames(phantom, tmp_path):
    """A DICOM SEG (highdicom) on the CT's slices reads back exactly; an RTSTRUCT and a SEG drawn in
    another frame of reference are refused before any voxel is read."""
    from printpipe.dicom import read_series

    _, labels, names = phantom
    hu = np.where(labels > 0, 700, 0).astype(np.int16)
    sources = write_ct_series(tmp_path / "ct", hu, spacing=SPACING, origin=ORIGIN)
    vol = read_series(tmp_path / "ct")
    masks = {"femoreSin": labels == 4, "FemoreDestro": labels == 5}
    seg = read(write_dicom_seg(tmp_path / "seg.dcm", sources, masks), vol)
    got = _masks(seg, vol)
    assert np.array_equal(got["femur_left"], masks["femoreSin"])
    assert np.array_equal(got["femur_right"], masks["FemoreDestro"])
    folder = tmp_path / "export"                      # a folder from the planning system: its one SEG
    folder.mkdir()
    (folder / "SEG001.dcm").write_bytes((tmp_path / "seg.dcm").read_bytes())
    assert read(folder, vol, parts=["femoreSin"]).names == {1: "femur_left"}

    other = write_ct_series(tmp_path / "other", hu, spacing=SPACING, origin=ORIGIN)
    with pytest.raises(InputError, match="frame of reference mismatch: seg2.dcm was drawn on another scan"):
        read(write_dicom_seg(tmp_path / "seg2.dcm", other, masks), vol, ct_source=tmp_path / "ct")
    z = ORIGIN[2] + 2 * SPACING[0]
    ring = np.array([[0, 0, z], [5, 0, z], [5, 5, z], [0, 5, z]], float)
    rs = write_rtstruct(tmp_path / "rs.dcm", {"femoreSin": [ring]}, frame_uid="1.2.826.0.1.9",
                        series_uid="1.2.826.0.1.8")
    with pytest.raises(InputError, match="frame of reference mismatch: rs.dcm"):
        read(rs, vol, ct_source=tmp_path / "ct")


def test_slicer_layers_and_crop(phantom, tmp_path):
    """A segmentation as 3D Slicer saves it after editing: cropped to the segments' box (origin moved,
    reference extent offset) and overlapping segments in a second layer (4-D voxels). Each segment
    comes back where it was; the overlap is reported and given to one part."""
    import slicerio

    vol, labels, names = phantom
    lo = np.array([3, 4, 6])                                        # crop offset (z, y, x)
    sub = labels[3:23, 4:34, 6:42]
    ijk = vol.affine[:, [2, 1, 0, 3]].copy()
    ijk[:3, 3] = vol.index_to_patient([lo])[0]
    seg = slicerio.create_segmentation(sub.shape[::-1], ijk)
    for v, n in names.items():
        slicerio.add_segment(seg, (sub == v).transpose(2, 1, 0), {"name": n})
    extra = np.zeros(sub.shape, bool)
    extra[5:9, 10:14, 26:30] = True                                 # inside hip_left: a second layer
    slicerio.add_segment(seg, extra.transpose(2, 1, 0), {"name": "Sacrum"})   # renamed by hand in Slicer
    assert seg["voxels"].ndim == 4
    seg["referenceImageExtentOffset"] = [int(v) for v in lo[::-1]]
    slicerio.write_segmentation(str(tmp_path / "edited.seg.nrrd"), seg)
    back = read(tmp_path / "edited.seg.nrrd", vol, parts=["hip_left", "femur_right", "Sacrum"], gap=False)
    got = _masks(back, vol)
    full_extra = np.zeros(vol.shape, bool)
    full_extra[3:23, 4:34, 6:42] = extra
    assert set(got) == {"hip_left", "femur_right", "sacrum"}
    assert np.array_equal(got["femur_right"], labels == 5)
    assert np.array_equal(got["sacrum"], full_extra)
    assert np.array_equal(got["hip_left"], (labels == 1) & ~full_extra)
    assert any("overlap by 64 voxels" in w for w in back.warnings)


@pytest.mark.parametrize("dtype, top", [(np.uint8, 5), (np.uint16, 400)])
def test_seg_nrrd_streamed_is_slicerio_byte_for_byte(tmp_path, dtype, top):
    """The .seg.nrrd written without pynrrd's copy of the volume is slicerio's file, byte for byte
    (but for pynrrd's "# on <date>" comment)."""
    import re

    import slicerio

    from printpipe.labels import _write_seg_nrrd

    vox = np.zeros((9, 70, 60), dtype)
    vox[2:7, 10:50, 5:55] = np.random.default_rng(0).integers(0, top, (5, 40, 50))
    seg = {"voxels": vox, "ijkToLPS": np.diag([0.7, 0.8, 2.0, 1.0]), "segments": [
        {"id": "Segment_1", "name": "femur_left", "labelValue": 1, "layer": 0, "color": [0.1, 0.2, 0.3],
         "extent": [5, 54, 10, 49, 2, 6]}],
        "containedRepresentationNames": ["Binary labelmap"], "masterRepresentation": "Binary labelmap",
        "referenceImageExtentOffset": [0, 0, 0]}
    slicerio.write_segmentation(str(tmp_path / "a.seg.nrrd"), seg, compression_level=1, index_order="C")
    _write_seg_nrrd(tmp_path / "b.seg.nrrd", seg, 1)
    a, b = (re.sub(rb"# on [^\n]*\n", b"", (tmp_path / n).read_bytes(), count=1) for n in ("a.seg.nrrd", "b.seg.nrrd"))
    assert a == b
