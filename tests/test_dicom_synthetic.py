"""DICOM ingest on series written by the tests: analytic tilt phantom, mixed folders, multi-frame
Enhanced CT, compressed copies of a real series, and the errors that need a crafted input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from printpipe import dicom
from printpipe.dicom import DicomConfig, discover, read_series
from printpipe.errors import InputError

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def write_slice(path: Path, hu: np.ndarray, position, *, iop=(1, 0, 0, 0, 1, 0), spacing=(1.0, 1.0),
                series_uid: str, study_uid: str = "1.2.3.4", modality: str = "CT", number: int = 1,
                image_type=("ORIGINAL", "PRIMARY", "AXIAL"), intercept: float = -1024.0) -> None:
    """A minimal but valid CT Image Storage file (16-bit signed, explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = modality, series_uid, study_uid
    ds.SeriesNumber, ds.ImageType = number, list(image_type)
    ds.PatientName, ds.PatientID = "Synthetic^Phantom", "SYN-001"
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.PixelSpacing = [float(v) for v in spacing]
    ds.SliceThickness = 1.0
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, intercept
    ds.PixelData = np.asarray(np.rint(hu - intercept), dtype=np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def simple_series(folder: Path, n: int = 6, shape=(16, 16), dz: float = 2.0, series_uid=None,
                  **kw) -> str:
    series_uid = series_uid or generate_uid()
    for k in range(n):
        hu = np.full(shape, 100 * k, dtype=np.int16)
        write_slice(folder / f"s{k}", hu, (0, 0, k * dz), series_uid=series_uid, **kw)
    return series_uid


# ------------------------------------------------------------------------------------------------
# gantry tilt: a sphere sampled on oblique slices must come back round and in place
# ------------------------------------------------------------------------------------------------
def test_tilted_sphere_phantom_is_round_and_in_place(tmp_path):
    theta = math.radians(20.0)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, math.cos(theta), -math.sin(theta)])  # as a tilted gantry writes IOP
    n = np.cross(row, col)
    centre, radius = np.array([30.0, 32.0, 40.0]), 14.0
    uid = generate_uid()
    dz_table = 1.5  # the table moves along patient z only, so the stack is sheared
    ny, nx = 72, 64
    rr, cc = np.mgrid[0:ny, 0:nx]
    for k in range(40):
        p0 = np.array([0.0, 8.0, 10.0 + k * dz_table])
        pts = p0 + cc[..., None] * row + rr[..., None] * col
        inside = np.linalg.norm(pts - centre, axis=-1) <= radius
        write_slice(tmp_path / f"{k:03d}", np.where(inside, 1000, 0).astype(np.int16), p0,
                    iop=(*row, *col), series_uid=uid)
    v = read_series(tmp_path)
    assert v.meta["tilt_deg"] == pytest.approx(20.0, abs=0.01)
    np.testing.assert_allclose(v.direction[:, 2], n, atol=1e-9)
    # steps along the normal: 1.5 mm of table travel * cos(20 deg)
    assert v.spacing[0] == pytest.approx(dz_table * math.cos(theta), abs=1e-9)
    kji = np.argwhere(v.hu > 500).astype(float)
    pts = v.index_to_patient(kji)
    # centroid of the thresholded sphere: within a quarter of the smallest voxel of the truth
    np.testing.assert_allclose(pts.mean(axis=0), centre, atol=0.25)
    # round: principal radii of gyration equal within 3 % (a sheared stack would give an ellipsoid
    # with axes differing by about tan(20 deg)/2 = 18 %); volume within 5 % of 4/3 pi r^3 (voxels
    # are 1 x 1 x 1.41 mm, so the staircase error on a 14 mm sphere is a few percent)
    eig = np.linalg.eigvalsh(np.cov((pts - pts.mean(axis=0)).T))
    assert eig.max() / eig.min() < 1.03 ** 2
    vox = float(np.prod(v.spacing))
    assert len(kji) * vox == pytest.approx(4 / 3 * math.pi * radius ** 3, rel=0.05)


# ------------------------------------------------------------------------------------------------
# mixed folder: two series, a scout in one of them, a non-image object, a text file
# ------------------------------------------------------------------------------------------------
def test_mixed_folder_groups_splits_and_chooses(tmp_path):
    a = simple_series(tmp_path / "a", n=8, number=2)
    b = simple_series(tmp_path / "b" / "deep", n=5, dz=1.0, number=3)
    # a coronal localizer inside series a (different orientation and size)
    write_slice(tmp_path / "a" / "scout", np.zeros((20, 24), np.int16), (0, 0, 0), iop=(1, 0, 0, 0, 0, -1),
                series_uid=a, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), number=2)
    # a structure set (no pixel data) and a text file
    rs = Dataset()
    rs.file_meta = FileMetaDataset()
    rs.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    rs.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    rs.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    rs.SOPClassUID, rs.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.481.3", rs.file_meta.MediaStorageSOPInstanceUID
    rs.Modality, rs.SeriesInstanceUID = "RTSTRUCT", generate_uid()
    rs.save_as(tmp_path / "RS.dcm", enforce_file_format=True)
    (tmp_path / "notes.txt").write_text("scan notes")
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 10)

    disc = discover(tmp_path)
    assert disc.files_scanned == 17
    assert disc.skipped == {"DICOMDIR": 1, "non-image object (RTSTRUCT)": 1, "not DICOM": 1}
    by_key = {s.key: s for s in disc.series}
    assert len(disc.series) == 3
    ha, hb = dicom.uid_hash(a), dicom.uid_hash(b)
    assert by_key[f"{ha}-1"].slices == 8 and by_key[f"{ha}-2"].localizer
    assert by_key[f"{ha}-2"].orientation == "coronal" and by_key[hb].slices == 5
    info, reason = dicom.choose(disc)
    assert info.key == f"{ha}-1" and "most slices (8)" in reason and "localizer" in reason
    # --series by stack id, by SeriesNumber, by table row
    assert dicom.choose(disc, hb)[0].key == hb
    assert dicom.choose(disc, "3")[0].key == hb
    assert dicom.choose(disc, f"#{by_key[hb].index}")[0].key == hb
    assert dicom.choose(disc, ha)[0].key == f"{ha}-1"  # series hash -> its largest stack
    v = read_series(tmp_path, DicomConfig(series=hb))
    assert v.shape == (5, 16, 16) and v.spacing[0] == pytest.approx(1.0)
    v = read_series(tmp_path)
    assert v.shape == (8, 16, 16)
    np.testing.assert_array_equal(v.hu[:, 0, 0], 100 * np.arange(8))
    assert v.meta["skipped"] == disc.skipped


def test_no_ct_series(tmp_path):
    simple_series(tmp_path, n=4, modality="MR")
    with pytest.raises(InputError, match=r"no CT image series \(modalities: MR\)"):
        read_series(tmp_path)


def test_only_non_image_objects(tmp_path):
    rs = Dataset()
    rs.file_meta = FileMetaDataset()
    rs.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    rs.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    rs.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    rs.SOPClassUID, rs.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.22", generate_uid()
    rs.Modality = "SR"
    rs.save_as(tmp_path / "report", enforce_file_format=True)
    with pytest.raises(InputError, match=r"no DICOM image series found.*non-image object \(SR\)"):
        read_series(tmp_path)


def test_inconsistent_image_sizes_in_the_chosen_stack(tmp_path):
    uid = simple_series(tmp_path, n=8, number=4)
    write_slice(tmp_path / "odd1", np.zeros((8, 8), np.int16), (0, 0, 3.0), series_uid=uid, number=4)
    write_slice(tmp_path / "odd2", np.zeros((8, 8), np.int16), (0, 0, 7.0), series_uid=uid, number=4)
    with pytest.raises(InputError, match=r"inconsistent image sizes.*2 image\(s\).*8x8.*16x16"):
        read_series(tmp_path)


def test_padding_value_becomes_air_and_slope_is_applied(tmp_path):
    uid = generate_uid()
    for k in range(4):
        write_slice(tmp_path / f"{k}", np.full((8, 8), 50, np.int16), (0, 0, k), series_uid=uid)
        ds = pydicom.dcmread(tmp_path / f"{k}")
        arr = ds.pixel_array.copy()
        arr[0, :] = -2000  # stored padding value
        ds.PixelData = arr.tobytes()
        ds.add_new(0x00280120, "SS", -2000)  # PixelPaddingValue, signed like the pixels
        ds.RescaleSlope, ds.RescaleIntercept = 0.5, -100.0
        ds.save_as(tmp_path / f"{k}", enforce_file_format=True)
    v = read_series(tmp_path)
    assert (v.hu[:, 0, :] == -1024).all()
    # stored value 50 + 1024 = 1074 -> 0.5 * 1074 - 100 = 437 HU
    assert (v.hu[:, 1:, :] == 437).all()


# ------------------------------------------------------------------------------------------------
# multi-frame Enhanced CT
# ------------------------------------------------------------------------------------------------
def test_enhanced_ct_multiframe_matches_single_frame_series(tmp_path):
    uid = generate_uid()
    frames = [np.arange(12 * 10, dtype=np.int16).reshape(12, 10) * (k + 1) for k in range(5)]
    for k, hu in enumerate(frames):
        write_slice(tmp_path / "single" / f"{k}", hu, (-5.0, 3.0, 2.5 * k), spacing=(0.7, 0.6),
                    series_uid=uid)
    single = read_series(tmp_path / "single")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.SeriesNumber = "CT", generate_uid(), "1.2", 9
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows, ds.Columns, ds.NumberOfFrames = 12, 10, 5
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    pm, po, pvt = Dataset(), Dataset(), Dataset()
    pm.PixelSpacing, pm.SliceThickness = [0.7, 0.6], 2.5
    po.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, -1024, "HU"
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    order = [3, 0, 4, 1, 2]  # frames stored out of spatial order
    per_frame = []
    for k in order:
        item, pp = Dataset(), Dataset()
        pp.ImagePositionPatient = [-5.0, 3.0, 2.5 * k]
        item.PlanePositionSequence = Sequence([pp])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = b"".join((frames[k] + 1024).astype(np.int16).tobytes() for k in order)
    (tmp_path / "enh").mkdir()
    ds.save_as(tmp_path / "enh" / "volume.dcm", enforce_file_format=True)

    info = discover(tmp_path / "enh").series[0]
    assert info.multi_frame and info.slices == 5
    multi = read_series(tmp_path / "enh" / "volume.dcm")  # a single file is accepted too
    np.testing.assert_array_equal(multi.hu, single.hu)
    assert multi.spacing == single.spacing and multi.origin == single.origin

    # the same file compressed (RLE, every frame its own fragment)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "enh" / "volume.dcm", enforce_file_format=True)
    multi = read_series(tmp_path / "enh")
    np.testing.assert_array_equal(multi.hu, single.hu)


# ------------------------------------------------------------------------------------------------
# compressed copies of a real series decode to identical HU
# ------------------------------------------------------------------------------------------------
def _encoder_available(ts) -> bool:
    from pydicom.pixels import get_encoder

    try:
        return bool(get_encoder(ts).is_available)
    except (NotImplementedError, ValueError):
        return False


@pytest.mark.realdata
@pytest.mark.parametrize("ts", [RLELossless, JPEGLSLossless, JPEG2000Lossless,
                                DeflatedExplicitVRLittleEndian],
                         ids=["rle", "jpeg-ls", "jpeg2000", "deflate"])
def test_lossless_compressed_copies_decode_to_identical_hu(tmp_path, ts):
    src = REALDATA / "pelvic-ref003-ct"
    if not src.is_dir():
        pytest.skip(f"real CT data not found at {src}")
    if ts != DeflatedExplicitVRLittleEndian and not _encoder_available(ts):
        pytest.skip(f"no pydicom encoder installed for {ts.name}")
    files = sorted(src.glob("*.dcm"),
                   key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    files = files[60:70]  # ten neighbouring slices through the pelvis
    plain = tmp_path / "plain"
    packed = tmp_path / "packed"
    plain.mkdir(), packed.mkdir()
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.save_as(plain / f"{i}.dcm")
        if ts == DeflatedExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = ts  # pydicom deflates the data set when writing
            ds.save_as(packed / f"{i}.dcm", implicit_vr=False, enforce_file_format=True)
        else:
            ds.compress(ts)
            ds.save_as(packed / f"{i}.dcm", enforce_file_format=True)
    ref = read_series(plain)
    v = read_series(packed)
    np.testing.assert_array_equal(v.hu, ref.hu)
    assert v.meta["compressed"] is (ts != DeflatedExplicitVRLittleEndian)
    assert v.meta["transfer_syntax"] == ts.name
    assert v.spacing == ref.spacing and v.origin == ref.origin


@pytest.mark.realdata
def test_process_pool_decoding_gives_the_same_volume(tmp_path, monkeypatch):
    """JPEG 2000 decoders hold the GIL, so large J2K stacks are decoded in worker processes."""
    src = REALDATA / "pelvic-ref003-ct"
    if not src.is_dir():
        pytest.skip(f"real CT data not found at {src}")
    if not _encoder_available(JPEG2000Lossless):
        pytest.skip("no pydicom JPEG 2000 encoder installed")
    files = sorted(src.glob("*.dcm"),
                   key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    (tmp_path / "plain").mkdir()
    (tmp_path / "j2k").mkdir()
    for i, f in enumerate(files[70:76]):
        ds = pydicom.dcmread(f)
        ds.save_as(tmp_path / "plain" / f"{i}.dcm")
        ds.compress(JPEG2000Lossless)
        ds.save_as(tmp_path / "j2k" / f"{i}.dcm", enforce_file_format=True)
    monkeypatch.setattr(dicom, "_MIN_FILES_FOR_PROCESSES", 2)
    assert dicom._pool_kind(JPEG2000Lossless, 2, 6) == "process"
    seen = []
    v = read_series(tmp_path / "j2k", DicomConfig(workers=2), progress=lambda s, f: seen.append(f))
    np.testing.assert_array_equal(v.hu, read_series(tmp_path / "plain").hu)
    assert seen[-1] == pytest.approx(1.0) and len(seen) == 6
