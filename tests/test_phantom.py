"""Tests of the synthetic pelvis phantom, the DICOM series writer and the committed sample series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless
from scipy import ndimage

from printpipe.errors import InputError
from printpipe.phantom import LABELS, SAMPLE_KWARGS, pelvis_phantom, sample_phantom, write_dicom_series
from printpipe.volume import Volume

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicom"
BONES = ["hip_left", "hip_right", "sacrum", "femur_left", "femur_right"]


@pytest.fixture(scope="module")
def sample():
    return sample_phantom()


@pytest.fixture(scope="module")
def hips_fine():
    # 0.8 mm pixels, 1 mm slices around the hip joints: the anatomical 2 mm joint space is wider
    # than every voxel step, and the grid is fine enough to see the gaps as distances.
    return pelvis_phantom(shape=(90, 300, 420), spacing=(1.0, 0.8, 0.8), seed=3, z_center_mm=10.0,
                          si_bridges=0)


def _min_distance_mm(ph, a: str, b: str) -> float:
    """Smallest centre-to-centre distance (mm) between a voxel of label a and one of label b."""
    A, B = ph.mask(a), ph.mask(b)
    lo = np.argwhere(A | B).min(axis=0)
    hi = np.argwhere(A | B).max(axis=0) + 1
    box = tuple(slice(l, h) for l, h in zip(lo, hi))  # crop: the EDT of the whole grid is slow
    dist = ndimage.distance_transform_edt(~B[box], sampling=ph.volume.spacing)
    return float(dist[A[box]].min())


def _touch_6(ph, a: str, b: str) -> int:
    """Number of 6-neighbour voxel faces shared by labels a and b."""
    A, B = ph.mask(a), ph.mask(b)
    n = 0
    for ax in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        n += int(np.count_nonzero(A[tuple(lo)] & B[tuple(hi)]) + np.count_nonzero(B[tuple(lo)] & A[tuple(hi)]))
    return n


# -- the phantom ----------------------------------------------------------------------------------
def test_labels_documented_and_present(sample):
    assert sample.names == LABELS
    assert set(LABELS.values()) == {*BONES, "table"}
    assert sample.labels.dtype == np.uint8 and sample.labels.shape == sample.volume.shape
    assert set(np.unique(sample.labels)) == {0, *LABELS}
    vols = sample.label_volumes_mm3()
    # a hemipelvis is a few hundred cm^3 of bone, a sacrum ~100-300, a proximal femur >= 100
    for name, (lo, hi) in {"hip_left": (2e5, 6e5), "hip_right": (2e5, 6e5), "sacrum": (1e5, 4e5),
                           "femur_left": (8e4, 4e5), "femur_right": (8e4, 4e5)}.items():
        assert lo < vols[name] < hi, (name, vols[name])
    assert sample.mask("pelvis").sum() == sample.mask("hip_left").sum() + sample.mask("hip_right").sum()
    with pytest.raises(InputError, match="unknown phantom label 'spleen'"):
        sample.mask("spleen")


def test_geometry_lps_and_scaling(sample):
    v = sample.volume
    assert v.hu.dtype == np.int16
    assert v.shape == tuple(SAMPLE_KWARGS["shape"]) and v.spacing == tuple(SAMPLE_KWARGS["spacing"])
    np.testing.assert_allclose(v.direction, np.eye(3))
    # +x is the patient's left: the left femur and hip lie at larger x than the midline
    lab = sample.labels
    xs = v.origin[0] + v.spacing[2] * np.arange(v.shape[2])
    for side, sign in (("left", 1), ("right", -1)):
        for part in ("femur", "hip"):
            cx = xs[np.nonzero(lab == {n: k for k, n in LABELS.items()}[f"{part}_{side}"])[2]].mean()
            assert sign * (cx - sample.midline_x_mm) > 40.0, (part, side, cx)
    # the sacrum is posterior (+y) of the femoral heads, the symphysis anterior; z superior
    idx = {n: np.argwhere(lab == k).mean(axis=0) for k, n in LABELS.items()}
    assert idx["sacrum"][1] > idx["femur_left"][1]
    assert idx["sacrum"][0] > idx["femur_left"][0]  # the femurs are inferior of the sacrum
    # the default spacing gives a 400 mm field of view whatever the shape
    ph = pelvis_phantom(shape=(40, 64, 80), noise_hu=0.0)
    assert ph.volume.spacing == (10.0, 6.25, 5.0)


def test_midline_offset_is_the_symmetry_plane():
    # With no asymmetry and the midline on a voxel centre, the right bones are the left ones
    # mirrored exactly across x = midline (same float arithmetic on both sides).
    ph = pelvis_phantom(shape=(30, 64, 129), spacing=(8.0, 6.0, 3.0), midline_x_mm=12.0,
                        asymmetry=0.0, noise_hu=0.0)
    v = ph.volume
    im = (12.0 - v.origin[0]) / v.spacing[2]
    assert im == int(im)
    im = int(im)
    n = min(im, v.shape[2] - 1 - im)
    lab = ph.labels[:, :, im - n: im + n + 1]
    mirrored = lab[:, :, ::-1]
    for left, right in ((1, 2), (4, 5)):
        a = lab == left
        b = mirrored == right
        assert a.sum() > 100
        assert np.count_nonzero(a ^ b) <= 0.002 * a.sum()
    assert ph.midline_x_mm == 12.0


def test_femoral_heads_separated_from_cups(hips_fine):
    ph = hips_fine
    for side in ("left", "right"):
        # every hip voxel centre is at least hip_joint_mm from the femur solid and every femur voxel
        # centre is inside it, so centre-to-centre distances are >= hip_joint_mm (2 mm) exactly
        d = _min_distance_mm(ph, f"hip_{side}", f"femur_{side}")
        assert d >= ph.params["hip_joint_mm"] - 1e-3, (side, d)
        assert d < ph.params["hip_joint_mm"] + 1.2  # ... and the head really sits in the cup
        assert _touch_6(ph, f"hip_{side}", f"femur_{side}") == 0
    # the joint space is soft tissue: between head and cup the HU is far below bone
    gap = ~ph.mask(*BONES) & (ndimage.binary_dilation(ph.mask("femur_left"), iterations=2)
                              & ndimage.binary_dilation(ph.mask("hip_left"), iterations=2))
    assert gap.sum() > 50
    assert np.median(ph.volume.hu[gap]) < 226


def test_sample_joints_separated_in_labels(sample):
    # at the sample's 2.5 mm slices the 3 mm joint spaces still keep the labels apart
    for side in ("left", "right"):
        assert _touch_6(sample, f"hip_{side}", f"femur_{side}") == 0
        assert _min_distance_mm(sample, f"hip_{side}", f"femur_{side}") >= SAMPLE_KWARGS["hip_joint_mm"] - 1e-3
    assert _touch_6(sample, "hip_left", "hip_right") == 0
    # the SI joints are open except at the small bridges: little contact compared with the sacrum
    contact = _touch_6(sample, "sacrum", "hip_left") + _touch_6(sample, "sacrum", "hip_right")
    assert 0 < contact < 0.01 * sample.mask("sacrum").sum()


def test_si_joint_and_symphysis_gaps(hips_fine):
    ph = hips_fine  # si_bridges=0: the sacroiliac joints are open everywhere
    for side in ("left", "right"):
        assert _min_distance_mm(ph, f"hip_{side}", "sacrum") >= ph.params["si_joint_mm"] - 1e-3
    assert _min_distance_mm(ph, "hip_left", "hip_right") >= ph.params["symphysis_mm"] - 1e-3


def test_table_below_and_apart_from_body(sample):
    v, lab = sample.volume, sample.labels
    table = lab == 6
    # the body: the connected region above -400 HU holding a point in the anterior abdominal wall,
    # 100 mm anterior of the body centre (the couch's own partial-volume rim is a separate region)
    comp, _ = ndimage.label((v.hu > -400) & ~table)
    seed = v.patient_to_index([[sample.midline_x_mm, -125.0, 0.0]]).round().astype(int)[0]
    assert comp[tuple(seed)] > 0
    body = comp == comp[tuple(seed)]
    assert not np.any(ndimage.binary_dilation(table) & body)
    dist = ndimage.distance_transform_edt(~table, sampling=v.spacing)
    # 5 mm of air at the midline; partial volume shifts the -400 HU edge by under a voxel inward
    assert dist[body].min() >= 4.0
    # posterior of the body (larger row index) and it thresholds as bone, so segmentation must drop it
    i0 = int(round(-v.origin[0] / v.spacing[2]))  # the column at x = 0, the couch centre
    assert np.argwhere(table[:, :, i0])[:, 1].min() > np.argwhere(body[:, :, i0])[:, 1].max()
    assert np.count_nonzero(v.hu[table] >= 226) > 1000


def test_hu_ranges(sample):
    v, lab = sample.volume, sample.labels
    hu = v.hu.astype(float)
    assert hu.min() >= -1024 and hu.max() <= 3071
    # air at the corners: -1000 with sigma-15 noise (clipped at -1024)
    corner = hu[:, :8, :8]
    assert abs(np.median(corner) + 1000) < 5
    bones = np.isin(lab, [1, 2, 3, 4, 5])
    bone_hu = hu[bones]
    # cortical shell reaches 1200-1600 HU; trabecular core partly below the 226 HU threshold
    assert 1200 <= np.percentile(bone_hu, 99) <= 1650
    assert 0.05 < np.mean(bone_hu < 226) < 0.6
    deep = ndimage.binary_erosion(bones, iterations=2)
    assert 100 < np.median(hu[deep]) < 400
    # soft tissue at the body centre (no bone within 2 cm) and fat under the skin
    k = v.shape[0] - 6
    c = (v.shape[1] // 2 - 22, v.shape[2] // 2)  # ~45 mm anterior of the centre, above the bladder level
    patch = hu[k - 2:k + 3, c[0] - 3:c[0] + 4, c[1] - 3:c[1] + 4]
    assert abs(np.median(patch) - 40) < 10
    # noise: standard deviation in the homogeneous patch matches noise_hu within 25 %
    assert 0.75 * SAMPLE_KWARGS["noise_hu"] < patch.std() < 1.25 * SAMPLE_KWARGS["noise_hu"]


def test_fat_layer():
    ph = pelvis_phantom(shape=(3, 200, 200), spacing=(2.0, 2.0, 2.0), noise_hu=0.0, z_center_mm=100.0)
    row = ph.volume.hu[1, 100 - 12, :].astype(float)  # a row just anterior of the body centre
    inside = np.flatnonzero(row > -500)
    skin = inside[0]
    # 18 mm of fat under the skin: a few mm inside it is fat (-100 HU), 30 mm inside soft tissue
    assert abs(row[skin + 3] + 100) < 15
    assert abs(row[skin + 15] - 40) < 15


def test_deterministic_and_seeded():
    kw = dict(shape=(24, 48, 48), spacing=(10.0, 8.0, 8.0))
    a, b = pelvis_phantom(seed=5, **kw), pelvis_phantom(seed=5, **kw)
    np.testing.assert_array_equal(a.volume.hu, b.volume.hu)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = pelvis_phantom(seed=6, **kw)
    assert not np.array_equal(a.volume.hu, c.volume.hu)
    np.testing.assert_array_equal(a.labels, c.labels)  # the seed changes texture and noise only
    quiet = pelvis_phantom(seed=5, noise_hu=0.0, table=False, **kw)
    assert not np.any(quiet.labels == 6)


def test_bad_arguments():
    with pytest.raises(InputError, match="shape must be three sizes"):
        pelvis_phantom(shape=(10, 10))
    with pytest.raises(InputError, match="spacing must be three positive"):
        pelvis_phantom(shape=(4, 4, 4), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="hip_joint_mm must be a positive"):
        pelvis_phantom(shape=(4, 4, 4), hip_joint_mm=0.0)


# -- the DICOM writer -----------------------------------------------------------------------------
def _read(paths):
    dss = [pydicom.dcmread(p) for p in paths]
    hu = np.stack([ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
                   for ds in dss])
    return dss, hu


@pytest.mark.parametrize("ts", [None, RLELossless])
def test_write_dicom_round_trip(tmp_path, ts):
    ph = pelvis_phantom(shape=(12, 40, 48), spacing=(20.0, 10.0, 8.0), seed=1, midline_x_mm=4.0)
    v = ph.volume
    paths = write_dicom_series(v, tmp_path, transfer_syntax=ts, seed=9)
    assert [p.name for p in paths] == [f"slice_{k:04d}.dcm" for k in range(12)]
    assert sorted(tmp_path.iterdir()) == paths  # no temporary files left
    dss, hu = _read(paths)
    np.testing.assert_array_equal(hu, v.hu)
    ts_uid = ts or ExplicitVRLittleEndian
    for k, ds in enumerate(dss):
        assert ds.file_meta.TransferSyntaxUID == ts_uid
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.InstanceNumber == k + 1
        np.testing.assert_allclose([float(x) for x in ds.ImagePositionPatient],
                                   np.array(v.origin) + [0, 0, k * 20.0], atol=1e-4)
        np.testing.assert_allclose([float(x) for x in ds.PixelSpacing], [10.0, 8.0])
        assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == 20.0
        assert [float(x) for x in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert ds.PatientPosition == "HFS"
    for tag in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({ds[tag].value for ds in dss}) == 1
    assert len({ds.SOPInstanceUID for ds in dss}) == 12
    # deterministic: the same seed gives the same UIDs, another seed other ones
    again = write_dicom_series(v, tmp_path / "again", transfer_syntax=ts, seed=9)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]
    other = pydicom.dcmread(write_dicom_series(v, tmp_path / "other", seed=10)[0])
    assert other.StudyInstanceUID != dss[0].StudyInstanceUID


def test_write_dicom_direction_unsigned_and_uids(tmp_path):
    hu = np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5) * 50 - 1500  # some HU below -1024
    # feet-first-like: rows and slices run the other way
    direction = np.diag([-1.0, 1.0, -1.0])
    v = Volume(hu=hu, spacing=(3.0, 2.0, 1.5), origin=(10.0, -20.0, 30.0), direction=direction)
    paths = write_dicom_series(v, tmp_path / "s", study_uid="1.2.3.4", series_uid="1.2.3.4.5",
                               filename_pattern="IM{:03d}")
    dss, back = _read(paths)
    np.testing.assert_array_equal(back, hu)
    assert dss[0].StudyInstanceUID == "1.2.3.4" and dss[0].SeriesInstanceUID == "1.2.3.4.5"
    assert [float(x) for x in dss[0].ImageOrientationPatient] == [-1, 0, 0, 0, 1, 0]
    np.testing.assert_allclose([float(x) for x in dss[2].ImagePositionPatient], [10.0, -20.0, 24.0])
    # unsigned storage cannot hold HU below -1024: those are clipped (and logged)
    dss_u, back_u = _read(write_dicom_series(v, tmp_path / "u", unsigned=True))
    assert dss_u[0].PixelRepresentation == 0
    np.testing.assert_array_equal(back_u, np.maximum(hu, -1024))


def test_write_dicom_errors(tmp_path):
    v = Volume(hu=np.zeros((2, 4, 4), np.int16), spacing=(1, 1, 1))
    with pytest.raises(InputError, match="not a DICOM transfer syntax"):
        write_dicom_series(v, tmp_path, transfer_syntax="1.2.3")
    with pytest.raises(InputError, match="cannot encode transfer syntax JPEG Baseline"):
        write_dicom_series(v, tmp_path, transfer_syntax=pydicom.uid.JPEGBaseline8Bit)
    with pytest.raises(InputError, match="needs a printpipe Volume"):
        write_dicom_series(np.zeros((2, 4, 4)), tmp_path)
    with pytest.raises(InputError, match="same name to several slices"):
        write_dicom_series(v, tmp_path, filename_pattern="slice.dcm")


# -- the committed sample series ------------------------------------------------------------------
def test_sample_dicom_matches_regeneration(sample):
    paths = sorted(SAMPLE.glob("*.dcm"))
    if not paths:
        pytest.skip(f"no sample series in {SAMPLE}; run scripts/make_sample_dicom.py")
    assert len(paths) == SAMPLE_KWARGS["shape"][0]
    assert sum(p.stat().st_size for p in paths) < 8e6  # the size limit for git
    dss, hu = _read(paths)
    order = np.argsort([float(ds.ImagePositionPatient[2]) for ds in dss])
    v = sample.volume
    np.testing.assert_array_equal(hu[order], v.hu)
    ds0 = dss[order[0]]
    assert ds0.file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_allclose([float(x) for x in ds0.ImagePositionPatient], v.origin, atol=1e-4)
    np.testing.assert_allclose([float(x) for x in ds0.PixelSpacing], v.spacing[1:])
    assert float(ds0.SpacingBetweenSlices) == v.spacing[0]
    assert (SAMPLE / "README.md").is_file()


def test_narrowed_hip_joint_welds_under_threshold_but_labels_stay_apart():
    # hip_joint_min_mm narrows the dome to 1.1 mm: wider than the 1 mm slice step, so the labels
    # never touch, but narrower than one voxel plus the partial-volume rims, so a 226 HU threshold
    # joins head and cup -- the case segmentation must separate.
    cc3d = pytest.importorskip("cc3d")
    ph = pelvis_phantom(shape=(50, 160, 160), spacing=(1.0, 0.8, 0.8), seed=4, z_center_mm=5.0,
                        midline_x_mm=-88.0, hip_joint_min_mm=1.1, si_bridges=0)
    assert _touch_6(ph, "hip_left", "femur_left") == 0
    d = _min_distance_mm(ph, "hip_left", "femur_left")
    assert 1.1 - 1e-3 <= d < 2.0
    comp = cc3d.connected_components((ph.volume.hu >= 226) & (ph.labels != 6), connectivity=6)
    head = comp[ph.mask("femur_left")]
    cup = comp[ph.mask("hip_left")]
    assert np.bincount(head).argmax() == np.bincount(cup).argmax() != 0
    with pytest.raises(InputError, match="hip_joint_min_mm must be in"):
        pelvis_phantom(shape=(4, 4, 4), hip_joint_min_mm=3.0)
