"""DICOM ingest on the real series in ../shared/realdata, and on copies of them made to break rules.

Geometry expectations come from each folder's SOURCE.md (read with pydicom 3.0.2 by whoever collected
the data), not from printpipe's own output.
"""

from __future__ import annotations

import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from printpipe import dicom
from printpipe.dicom import DicomConfig, discover, read_series
from printpipe.errors import InputError

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
PELVIS = "pelvic-ref003-ct"
TILT = "ge-head-gantry-tilt"
INVES = "invesalius-0051-head"

pytestmark = pytest.mark.realdata


def real(name: str) -> Path:
    path = REALDATA / name
    if not path.is_dir():
        pytest.skip(f"real CT data not found at {path} (needs ../shared/realdata beside the repo)")
    return path


def sorted_slices(name: str) -> list[Path]:
    """Files of a real series sorted by ImagePositionPatient z (all three are axial-ish stacks)."""
    files = sorted(real(name).glob("*.dcm"))
    zs = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    return [f for _, f in sorted(zip(zs, files))]


@pytest.fixture(scope="module")
def pelvis_files() -> list[Path]:
    return sorted_slices(PELVIS)


def copy_subset(files: list[Path], dest: Path, names: list[str] | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        target = dest / (names[i] if names else f.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    return dest


def reference_hu(files: list[Path]) -> np.ndarray:
    """Plain pydicom stack of the given (already sorted) files in HU: the slow obvious reference."""
    out = []
    for f in files:
        ds = pydicom.dcmread(f)
        out.append(ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept))
    return np.stack(out).astype(np.int16)


# ------------------------------------------------------------------------------------------------
# the three real series, geometry as SOURCE.md states it
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pelvis_volume():
    return read_series(real(PELVIS))


def test_pelvis_geometry_matches_source_md(pelvis_volume, pelvis_files):
    v = pelvis_volume
    # SOURCE.md: 145 slices 512x512, 1.0 x 1.0 mm pixels, uniform 3.0 mm steps, z -38.5 .. 393.5,
    # axial IOP 1\0\0\0\1\0, HU -1024 .. 2359.
    assert v.shape == (145, 512, 512)
    np.testing.assert_allclose(v.spacing, (3.0, 1.0, 1.0), atol=1e-6)
    np.testing.assert_allclose(v.direction, np.eye(3), atol=1e-6)
    assert v.origin[2] == pytest.approx(-38.5)
    assert v.extent_mm[0] == pytest.approx(432.0)
    assert int(v.hu.min()) == -1024 and int(v.hu.max()) == 2359
    assert v.meta["corrections"] == [] and v.meta["warnings"] == []
    assert v.meta["tilt_deg"] == 0.0
    # InstanceNumber runs head->feet here; sorting by position must put the most inferior first,
    # so slice 0 is the file with the lowest z. Compare two slices with plain pydicom.
    ref = reference_hu([pelvis_files[0], pelvis_files[-1]])
    np.testing.assert_array_equal(v.hu[0], ref[0])
    np.testing.assert_array_equal(v.hu[-1], ref[1])


def test_invesalius_last_short_step_resampled_to_true_extent():
    v = read_series(real(INVES))
    # SOURCE.md: 108 slices, 106 steps of 1.5 mm then one of 1.0 mm, z 116 .. 276 (160 mm),
    # 0.478516 mm pixels, axial, HU -1024 .. 3033.
    # printpipe keeps the extent and resamples to round(160 / 1.5) + 1 = 108 slices at 160/107 mm.
    assert v.shape == (108, 512, 512)
    assert v.spacing[0] == pytest.approx(160.0 / 107, abs=1e-6)
    np.testing.assert_allclose(v.spacing[1:], (0.478516, 0.478516), atol=1e-6)
    assert v.origin[2] == pytest.approx(116.0)
    assert v.extent_mm[0] == pytest.approx(160.0)
    np.testing.assert_allclose(v.direction, np.eye(3), atol=1e-6)
    assert int(v.hu.min()) == -1024
    # linear interpolation between slices can only lower the maximum, never raise it
    assert 2800 <= int(v.hu.max()) <= 3033
    assert any("1.00 mm" in w for w in v.meta["warnings"]), v.meta["warnings"]
    assert any("resampled" in c for c in v.meta["corrections"])


def test_invesalius_meta_holds_no_patient_identifiers():
    v = read_series(real(INVES))
    ds = pydicom.dcmread(next(real(INVES).glob("*.dcm")), stop_before_pixels=True)
    text = repr(v.meta)
    for value in (str(ds.PatientName), str(ds.PatientID), str(ds.PatientBirthDate), str(ds.StudyDate),
                  str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID), "InVesalius"):
        assert value and value not in text
    assert set(v.meta) >= {"series_uid_hash", "study_uid_hash", "modality", "manufacturer", "model",
                           "kernel", "transfer_syntax", "compressed", "slice_count", "source_shape",
                           "tilt_deg", "corrections", "warnings", "skipped", "choice_reason",
                           "patient_position"}
    assert v.meta["series_uid_hash"] == dicom.uid_hash(ds.SeriesInstanceUID)
    # discovery output for scripts carries no identifiers either, unless asked
    disc_text = repr(discover(real(INVES)).to_dict())
    assert str(ds.PatientID) not in disc_text and str(ds.PatientName) not in disc_text
    assert str(ds.PatientID) in repr(discover(real(INVES)).to_dict(show_phi=True))


def test_gantry_tilt_series_comes_out_orthogonal_with_true_geometry():
    folder = real(TILT)
    v = read_series(folder)
    # SOURCE.md: IOP 1\0\0\0\0.9483237\-0.3173047, GantryDetectorTilt 18.5, 28 slices whose
    # positions along the normal span 144.1 mm with steps of 4.002 / 1.081 / 6.998 mm.
    assert v.meta["tilt_deg"] == pytest.approx(18.5, abs=0.05)
    d = v.direction
    np.testing.assert_allclose(d.T @ d, np.eye(3), atol=1e-9)  # orthonormal grid
    np.testing.assert_allclose(d[:, 0], (1, 0, 0), atol=1e-6)
    np.testing.assert_allclose(d[:, 1], (0, 0.9483237, -0.3173047), atol=1e-4)
    assert v.extent_mm[0] == pytest.approx(144.1, abs=0.1)
    # 144.09 / 4.002 = 36.0 steps -> 37 uniform slices
    assert v.shape[0] == 37 and v.spacing[0] == pytest.approx(4.002, abs=0.002)
    assert v.hu.min() >= -1024  # PixelPaddingValue -1500 became air
    assert any("gantry tilt 18.5" in c for c in v.meta["corrections"])
    assert any("7.00 mm" in w for w in v.meta["warnings"])

    # Every original pixel must land where its header puts it in the patient frame: map the pixel
    # centres of the first and last original slices through the volume's affine and sample the
    # volume there. The first and last slices lie exactly on grid planes (k = 0 and k = 36); the
    # in-plane shift is fractional, so values are compared after one bilinear resampling each way
    # (mean absolute difference well below soft-tissue contrast).
    files = sorted(folder.glob("*.dcm"))
    heads = [pydicom.dcmread(f) for f in (files[0], files[-1])]
    s = [float(np.dot(h.ImagePositionPatient, d[:, 2])) for h in heads]
    first, last = (heads[0], heads[1]) if s[0] < s[1] else (heads[1], heads[0])
    from scipy import ndimage

    for k_expected, h in ((0, first), (v.shape[0] - 1, last)):
        rr, cc = np.mgrid[100:400:7, 100:400:7]
        row = np.array(h.ImageOrientationPatient[:3], float)
        col = np.array(h.ImageOrientationPatient[3:], float)
        dy, dx = (float(x) for x in h.PixelSpacing)
        pts = (np.asarray(h.ImagePositionPatient, float)[None, :]
               + (cc.ravel() * dx)[:, None] * row + (rr.ravel() * dy)[:, None] * col)
        kji = v.patient_to_index(pts)
        np.testing.assert_allclose(kji[:, 0], k_expected, atol=1e-6)
        assert kji[:, 1].min() >= 0 and kji[:, 1].max() <= v.shape[1] - 1
        np.testing.assert_allclose(kji[:, 2], cc.ravel(), atol=1e-6)  # row axis is unshifted
        sampled = ndimage.map_coordinates(v.hu[k_expected].astype(float), kji[:, 1:].T, order=1)
        orig = h.pixel_array.astype(float)[rr, cc].ravel()
        orig[orig == -1500] = -1024
        assert np.mean(np.abs(sampled - orig)) < 40.0


def test_every_real_series_is_chosen_and_decoded_with_plain_pydicom_values():
    # the raw fast path must agree with pydicom's pixel_array (BitsStored 12 unsigned, 16 signed)
    for name in (PELVIS, INVES, TILT):
        disc = discover(real(name))
        info, reason = dicom.choose(disc)
        assert info.modality == "CT" and "most slices" in reason
        f = info._frames[0].file
        raw = dicom._decode_file(dicom._Source(disc.source), f, [0])[0]
        ds = pydicom.dcmread(disc.source / f.name)
        np.testing.assert_array_equal(raw, ds.pixel_array)


# ------------------------------------------------------------------------------------------------
# copies of a real series: names, folders, zip, gaps, corruption, duplicates
# ------------------------------------------------------------------------------------------------
def test_shuffled_names_and_nested_folders_give_the_same_volume(tmp_path, pelvis_files):
    files = pelvis_files[60:70]
    rng = random.Random(3)
    names = [f"{'/'.join(rng.sample('abc', 2))}/IMG{rng.randrange(10**6):06d}" for _ in files]
    copy_subset(files, tmp_path / "nested", names)
    v = read_series(tmp_path / "nested")
    np.testing.assert_array_equal(v.hu, reference_hu(files))
    assert v.shape == (10, 512, 512) and v.spacing[0] == pytest.approx(3.0)


def test_zip_input_reads_like_the_folder(tmp_path, pelvis_files):
    files = pelvis_files[60:66]
    z = tmp_path / "series.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i, f in enumerate(reversed(files)):
            zf.write(f, f"study/{i}")
        zf.writestr("study/readme.txt", "not dicom")
    v = read_series(z)
    np.testing.assert_array_equal(v.hu, reference_hu(files))
    assert v.meta["skipped"] == {"not DICOM": 1}


def test_bad_zip_is_refused(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"this is no archive")
    with pytest.raises(InputError, match="not a readable zip archive"):
        read_series(bad)


def test_dropped_middle_slice_is_interpolated_with_a_warning(tmp_path, pelvis_files):
    files = pelvis_files[60:72]
    kept = files[:5] + files[6:]
    v = read_series(copy_subset(kept, tmp_path / "gap"))
    # 11 steps of 3 mm span 33 mm: a uniform 3 mm grid of 12 slices; slice 5 is the linear
    # interpolation half way between its neighbours (exactly their rounded mean).
    assert v.shape[0] == 12 and v.spacing[0] == pytest.approx(3.0)
    ref = reference_hu(kept).astype(np.float64)
    np.testing.assert_array_equal(v.hu[:5], ref[:5])
    np.testing.assert_array_equal(v.hu[6:], ref[5:])
    np.testing.assert_array_equal(v.hu[5], np.rint((ref[4] + ref[5]) / 2).astype(np.int16))
    assert any("gap(s) up to 6.00 mm" in w and "2.0 spacings" in w for w in v.meta["warnings"])


def test_two_missing_slices_are_refused_unless_allowed(tmp_path, pelvis_files):
    files = pelvis_files[60:72]
    folder = copy_subset(files[:5] + files[7:], tmp_path / "gap2")
    with pytest.raises(InputError, match=r"jumps from 3 to 9 mm \(3\.0 nominal spacings\).*--allow-gaps"):
        read_series(folder)
    v = read_series(folder, DicomConfig(allow_gaps=True))
    assert v.shape[0] == 12
    v = read_series(folder, DicomConfig(max_gap_slices=3.0))
    assert v.shape[0] == 12


def test_truncated_file_is_skipped_and_the_rest_still_read(tmp_path, pelvis_files):
    files = pelvis_files[60:70]
    folder = copy_subset(files, tmp_path / "trunc")
    victim = folder / files[4].name
    victim.write_bytes(victim.read_bytes()[:-5000])
    v = read_series(folder)
    assert v.meta["skipped"] == {"truncated pixel data": 1}
    assert v.shape[0] == 10  # the hole of one slice is interpolated
    assert any("gap" in w for w in v.meta["warnings"])


def test_corrupt_compressed_slice_is_skipped_with_a_warning(tmp_path, pelvis_files):
    files = pelvis_files[60:68]
    folder = tmp_path / "corrupt"
    folder.mkdir()
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.compress(pydicom.uid.RLELossless)
        if i == 3:
            ds.PixelData = ds.PixelData[:200] + b"\x00" * 64  # a broken RLE stream
        ds.save_as(folder / f"{i}.dcm", enforce_file_format=True)
    v = read_series(folder)
    assert v.shape[0] == 8
    assert any("could not be decoded" in w for w in v.meta["warnings"]), v.meta["warnings"]


def test_exact_duplicate_dropped_conflicting_duplicate_refused(tmp_path, pelvis_files):
    files = pelvis_files[60:66]
    folder = copy_subset(files, tmp_path / "dup")
    shutil.copyfile(files[2], folder / "copy_of_2")
    v = read_series(folder)
    assert v.shape[0] == 6
    assert any("duplicate" in w for w in v.meta["warnings"])
    ds = pydicom.dcmread(files[2])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    arr = ds.pixel_array.copy()
    arr[:10, :10] += 5
    ds.PixelData = arr.tobytes()
    ds.save_as(folder / "copy_of_2", enforce_file_format=True)
    with pytest.raises(InputError, match="different slices share position"):
        read_series(folder)


# ------------------------------------------------------------------------------------------------
# errors: one sentence saying what is wrong and what to do
# ------------------------------------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_series(tmp_path / "nope")


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match="is empty"):
        read_series(tmp_path)


def test_no_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(InputError, match="no DICOM files found.*2 file"):
        read_series(tmp_path)


def test_too_few_slices(tmp_path, pelvis_files):
    folder = copy_subset(pelvis_files[:2], tmp_path / "two")
    with pytest.raises(InputError, match="too few slices.*has 2 slice.*at least 3"):
        read_series(folder)


def test_decoder_not_installed_names_the_package(tmp_path, pelvis_files, monkeypatch):
    folder = tmp_path / "j2k"
    folder.mkdir()
    for i, f in enumerate(pelvis_files[:3]):
        ds = pydicom.dcmread(f)
        ds.compress(pydicom.uid.RLELossless)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless  # header claims J2K
        ds.save_as(folder / f"{i}.dcm", enforce_file_format=True)
    real_check = dicom._decoder_available
    monkeypatch.setattr(dicom, "_decoder_available",
                        lambda ts: False if ts == pydicom.uid.JPEG2000Lossless else real_check(ts))
    with pytest.raises(InputError, match=r"no decoder.*pip install pylibjpeg pylibjpeg-openjpeg"):
        read_series(folder)


def test_series_selector_that_matches_nothing(pelvis_volume):
    with pytest.raises(InputError, match="--series 'zzz' matches none"):
        read_series(real(PELVIS), DicomConfig(series="zzz"))


@pytest.mark.parametrize("kwargs, match", [
    ({"max_gap_slices": 0.5}, "max_gap_slices"),
    ({"max_gap_slices": float("nan")}, "max_gap_slices"),
    ({"workers": 0}, "workers"),
    ({"series": "  "}, "series"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        DicomConfig(**kwargs)
