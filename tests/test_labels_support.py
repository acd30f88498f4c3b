"""Helpers for the label-map tests (no tests here): synthetic RTSTRUCT files written with pydicom."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np


def write_rtstruct(path: Path, rois: Mapping[str, list[np.ndarray]], *, frame_uid: str = "1.2.3.4.5",
                   series_uid: str = "1.2.3.4.6") -> Path:
    """A minimal RTSTRUCT: ``rois`` maps ROI name -> list of (n, 3) LPS mm closed planar contours."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID = "1.2.3.4.7"
    ds.SeriesInstanceUID = generate_uid()
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = series_uid
    study = Dataset()
    study.RTReferencedSeriesSequence = Sequence([ref_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    ssroi, roic = [], []
    for number, (name, contours) in enumerate(rois.items(), start=1):
        r = Dataset()
        r.ROINumber = number
        r.ROIName = name
        r.ReferencedFrameOfReferenceUID = frame_uid
        ssroi.append(r)
        rc = Dataset()
        rc.ReferencedROINumber = number
        seq = []
        for pts in contours:
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [f"{v:.4f}" for v in np.asarray(pts, float).ravel()]
            seq.append(c)
        rc.ContourSequence = Sequence(seq)
        roic.append(rc)
    ds.StructureSetROISequence = Sequence(ssroi)
    ds.ROIContourSequence = Sequence(roic)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_ct_series(folder: Path, hu: np.ndarray, spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), *,
                    frame_uid: str | None = None) -> list:
    """A CT series (one file per slice, axial, identity orientation) with the attributes highdicom
    needs of a SEG's source images; returns the datasets. ``hu`` is (z, y, x) int16."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), frame_uid or generate_uid()
    out = []
    for k in range(hu.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", series, study
        ds.FrameOfReferenceUID = frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "PHANTOM^LABELS", "P0", "", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "", ""
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, k + 1
        ds.Manufacturer = "printpipe tests"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in (origin[0], origin[1], origin[2] + k * spacing[0])]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(hu[k], dtype="<i2").tobytes()
        ds.save_as(folder / f"ct{k:03d}.dcm", enforce_file_format=True)
        out.append(ds)
    return out


def write_dicom_seg(path: Path, sources: list, masks: Mapping[str, np.ndarray]) -> Path:
    """A binary DICOM SEG (highdicom) of (z, y, x) bool ``masks`` on the grid of ``sources``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i, segment_label=name,
            segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Bone,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for i, name in enumerate(masks, start=1)]
    pixels = np.stack([np.asarray(m, dtype=bool) for m in masks.values()], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="printpipe tests", manufacturer_model_name="tests", software_versions="0",
        device_serial_number="0")
    seg.save_as(path)
    return path
