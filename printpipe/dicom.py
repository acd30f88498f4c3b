"""DICOM ingest: find the CT series in a folder or zip and read it into a :class:`~printpipe.volume.Volume`.

Two public steps:

* :func:`discover` reads headers only (no pixel data), skips what is not a usable image (and counts
  why), groups images by SeriesInstanceUID and splits each series into *stacks* of one orientation
  and one image size (scouts and localizers become their own stacks).
* :func:`read_series` picks a stack (:func:`choose`), decodes its slices in parallel, and builds an
  int16 HU volume on a regular, orthogonal grid in the DICOM patient frame (LPS mm):

  - slices are ordered by their position along the slice normal (the cross product of the two
    ImageOrientationPatient vectors), never by file name or InstanceNumber;
  - duplicate positions: exact copies are dropped with a warning, conflicting slices are refused;
  - uneven spacing or missing slices: resampled linearly along the normal onto a uniform grid with a
    warning naming the gap, or refused when a gap exceeds ``DicomConfig.max_gap_slices`` nominal
    spacings (``--allow-gaps`` overrides);
  - gantry tilt (slice origins that drift in the slice plane, i.e. a stacking direction that is not
    the slice normal): each slice is shifted in its own plane so the grid is orthogonal (shear
    correction); the grid axes are then the row, column and normal directions of the slices;
  - stored values are rescaled to HU (RescaleSlope/Intercept) and PixelPaddingValue (and its
    range) becomes -1024 HU (air).

Only non-identifying metadata reaches ``Volume.meta`` (hashed UIDs, modality, scanner model,
corrections, warnings). Warnings name slice indices and positions, not file names, because file names
exported by some PACS contain patient names; file names appear only in log records.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import struct
import threading
import time
import zipfile
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array
from pydicom.uid import UID

from printpipe import plausibility
from printpipe.errors import InputError
from printpipe.volume import Volume

log = logging.getLogger(__name__)

__all__ = [
    "DicomConfig",
    "SeriesInfo",
    "Discovery",
    "discover",
    "choose",
    "read_series",
    "uid_hash",
    "MIN_SLICES",
]

#: A stack needs at least this many slices: two define a spacing, the third lets the spacing be
#: checked for gaps, and a printable object needs some thickness. Fewer is refused with a clear error.
MIN_SLICES = 3

#: HU written where the scanner marked padding (PixelPaddingValue) and outside the data after a
#: tilt shift: air.
AIR_HU = -1024

_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
_ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
_LEGACY_ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.2"
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_PIXEL_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
_RAW_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}  # implicit / explicit VR little endian
_UNCOMPRESSED = _RAW_SYNTAXES | {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}

# pip packages that give pydicom a decoder for a transfer syntax (for the "not installed" message).
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pyjpegls",
    "1.2.840.10008.1.2.4.81": "pyjpegls",
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",
}

_HEADER_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "Modality", "SeriesInstanceUID", "StudyInstanceUID",
    "SeriesNumber", "SeriesDescription", "ImageType", "Rows", "Columns", "PixelSpacing",
    "SliceThickness", "ImagePositionPatient", "ImageOrientationPatient", "GantryDetectorTilt",
    "RescaleSlope", "RescaleIntercept", "PixelPaddingValue", "PixelPaddingRangeLimit",
    "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel", "NumberOfFrames",
    "Manufacturer", "ManufacturerModelName", "ConvolutionKernel", "PatientPosition",
    "InstanceNumber", "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
    "PatientName", "PatientID", "PatientBirthDate", "StudyDate",
]


def uid_hash(uid: str) -> str:
    """The only form in which printpipe shows a UID: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(str(uid).strip().encode("ascii", "replace")).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------
# configuration and result types
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DicomConfig:
    """Options of the DICOM reader.

    Parameters
    ----------
    series : str or None
        Which stack to read instead of the automatic choice: a stack id as shown by
        ``printpipe inspect`` (16 hex digits, ``-N`` appended when a series holds several stacks), a
        prefix of at least 6 hex digits, ``#N`` for the N-th row of the inspect table, or a
        SeriesNumber (plain digits; when no SeriesNumber matches, the row number).
    max_gap_slices : float
        Refuse a series whose largest step along the slice normal exceeds this many nominal
        (median) spacings; smaller irregularities are resampled with a warning. Default 2.0: one
        missing slice (a step of exactly 2 spacings) is interpolated, two missing slices are refused.
    allow_gaps : bool
        Interpolate across gaps of any size instead of refusing (``--allow-gaps``).
    workers : int or None
        Decoding workers; None uses ``min(8, os.cpu_count())``. Threads, except for stacks of
        ``_MIN_FILES_FOR_PROCESSES`` or more files in a codec that holds the GIL (JPEG, JPEG-LS,
        JPEG 2000), which are decoded in worker processes.
    force : bool
        Continue past the physical plausibility checks of :mod:`printpipe.plausibility` (pixel and
        slice spacing, field of view, pixel data length, HU scale) and keep slices that do not
        belong to the stack, each with a warning in ``Volume.meta["warnings"]`` (``--force``).
    """

    series: str | None = None
    max_gap_slices: float = 2.0
    allow_gaps: bool = False
    workers: int | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if self.series is not None:
            value = str(self.series).strip()
            if not value:
                raise InputError("DicomConfig.series is empty; pass a stack id, #row or SeriesNumber "
                                 "from `printpipe inspect`, or leave it unset for the automatic choice")
            object.__setattr__(self, "series", value)
        try:
            gap = float(self.max_gap_slices)
        except (TypeError, ValueError):
            raise InputError(f"DicomConfig.max_gap_slices must be a number of slice spacings; got "
                             f"{self.max_gap_slices!r}") from None
        if not math.isfinite(gap) or gap < 1.0:
            raise InputError(f"DicomConfig.max_gap_slices must be a finite number >= 1.0 (nominal slice "
                             f"spacings); got {self.max_gap_slices!r}. Use --allow-gaps to accept any gap")
        object.__setattr__(self, "max_gap_slices", gap)
        object.__setattr__(self, "allow_gaps", bool(self.allow_gaps))
        object.__setattr__(self, "force", bool(self.force))
        if self.workers is not None:
            if isinstance(self.workers, bool) or not isinstance(self.workers, (int, np.integer)) \
                    or int(self.workers) < 1:
                raise InputError(f"DicomConfig.workers must be a positive integer or None; got "
                                 f"{self.workers!r}")
            object.__setattr__(self, "workers", int(self.workers))


@dataclass(frozen=True)
class _File:
    """One DICOM file: how to get its pixels back (private)."""

    name: str
    ts: str
    n_frames: int
    rows: int
    cols: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    pixel_offset: int | None  # offset of the (7FE0,0010) element when the raw fast path applies
    pad: int | None
    pad_limit: int | None
    samples: int = 1  # SamplesPerPixel
    pixel_bytes: int | None = None  # length of a native (uncompressed) pixel data element


@dataclass(frozen=True)
class _Frame:
    """One 2-D image: a single-frame file or one frame of a multi-frame file (private)."""

    file: _File
    frame: int
    position: tuple[float, float, float]
    sop_uid: str
    slope: float
    intercept: float


@dataclass
class SeriesInfo:
    """One stack of images: one series, one orientation, one image size.

    Attributes
    ----------
    key : str
        Stack id: the hashed SeriesInstanceUID (``sha256(uid)[:16]``), with ``-N`` appended when
        the series holds several stacks.
    index : int
        Row number (1-based) in :attr:`Discovery.series` and the inspect table.
    uid_hash, study_uid_hash : str
        Hashed Series and Study Instance UIDs.
    modality, description : str
    number : int or None
        SeriesNumber.
    slices : int
        Number of images (frames) in the stack.
    rows, cols : int
    pixel_spacing : (float, float)
        (row spacing dy, column spacing dx) in mm.
    thickness : float or None
        SliceThickness in mm (informative only; never used as spacing).
    spacing : float or None
        Median step between slice positions along the slice normal, mm.
    extent_mm : float
        Distance from the first to the last slice along the normal, mm.
    tilt_deg : float
        Angle between the stacking direction and the slice normal (gantry tilt), degrees.
    gaps : int
        Steps longer than the nominal spacing (missing slices).
    uneven : bool
        Whether the steps differ from the median by more than 1 % (gaps, overlaps, mixed thickness).
    max_gap_ratio : float
        Largest step divided by the nominal spacing.
    duplicates : int
        Images that share a position with another image of the stack.
    transfer_syntax : str
        Name of the (most common) transfer syntax.
    compressed, decodable, multi_frame, localizer : bool
    decoder_hint : str
        pip package(s) that would decode the stack when ``decodable`` is False.
    orientation : str
        ``axial``, ``coronal``, ``sagittal`` or ``oblique`` (from the slice normal).
    iop : tuple of 6 float
        ImageOrientationPatient shared by the stack.
    gantry_tilt_tag : float or None
        GantryDetectorTilt as written (informative; the geometry comes from the positions).
    manufacturer, model, kernel, patient_position : str
        Scanner and reconstruction facts (not identifying).
    size_conflict : str or None
        Set when images of the same series and orientation but another size lie between this
        stack's slices; :func:`read_series` refuses such a stack.
    files : tuple of str
        Files holding the stack (relative to the folder, or zip member names). File names can carry
        patient names on some exports: printpipe prints them only with ``--show-phi``.
    """

    key: str
    index: int
    uid_hash: str
    study_uid_hash: str
    modality: str
    description: str
    number: int | None
    slices: int
    rows: int
    cols: int
    pixel_spacing: tuple[float, float]
    thickness: float | None
    spacing: float | None
    extent_mm: float
    tilt_deg: float
    gantry_tilt_tag: float | None
    gaps: int
    uneven: bool
    max_gap_ratio: float
    duplicates: int
    transfer_syntax: str
    transfer_syntax_uid: str
    compressed: bool
    decodable: bool
    decoder_hint: str
    multi_frame: bool
    localizer: bool
    orientation: str
    iop: tuple[float, ...]
    manufacturer: str
    model: str
    kernel: str
    patient_position: str
    size_conflict: str | None
    files: tuple[str, ...] = field(repr=False)
    _frames: list[_Frame] = field(default_factory=list, repr=False, compare=False)
    _phi: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self, show_phi: bool = False) -> dict[str, Any]:
        """JSON-ready summary; file names and patient fields only with ``show_phi``."""
        out = {k: getattr(self, k) for k in (
            "key", "index", "uid_hash", "study_uid_hash", "modality", "description", "number",
            "slices", "rows", "cols", "pixel_spacing", "thickness", "spacing", "extent_mm", "tilt_deg",
            "gantry_tilt_tag", "gaps", "uneven", "max_gap_ratio", "duplicates", "transfer_syntax",
            "transfer_syntax_uid", "compressed", "decodable", "decoder_hint", "multi_frame",
            "localizer", "orientation", "iop", "manufacturer", "model", "kernel", "patient_position",
            "size_conflict")}
        out["pixel_spacing"] = list(self.pixel_spacing)
        out["iop"] = list(self.iop)
        out["file_count"] = len(self.files)
        if show_phi:
            out["phi"] = dict(self._phi)
            out["files"] = list(self.files)
        return out


@dataclass
class Discovery:
    """What :func:`discover` found.

    Attributes
    ----------
    source : Path
        The folder, zip or file searched.
    series : list of SeriesInfo
        Image stacks, in table order (``SeriesInfo.index``).
    skipped : dict
        Files (or objects) not used, counted per reason.
    files_scanned : int
        Files looked at.
    """

    source: Path
    series: list[SeriesInfo]
    skipped: dict[str, int]
    files_scanned: int

    def to_dict(self, show_phi: bool = False) -> dict[str, Any]:
        """JSON-ready summary (no patient identifiers unless ``show_phi``)."""
        return {
            "files_scanned": self.files_scanned,
            "skipped": dict(self.skipped),
            "series": [s.to_dict(show_phi) for s in self.series],
        }


# ------------------------------------------------------------------------------------------------
# sources: folder, zip, single file
# ------------------------------------------------------------------------------------------------
class _Source:
    """Uniform access to the files of a folder, a zip archive or a single file."""

    def __init__(self, path: Path, scan: bool = True) -> None:
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        self.sizes: dict[str, int] = {}
        if not scan:  # a decoding worker: the file names are known already
            if zipfile.is_zipfile(path):
                self.zip = zipfile.ZipFile(path)
            self.root = path if path.is_dir() else path.parent
            self.names = []
            return
        if not path.exists():
            raise InputError(f"input path {str(path)!r} does not exist; pass a folder of DICOM files, a "
                             f".zip of them, or a single DICOM file")
        if path.is_dir():
            self.root = path
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for fn in sorted(filenames):
                    full = os.path.join(dirpath, fn)
                    try:
                        size = os.path.getsize(full)
                    except OSError:
                        continue
                    self.sizes[os.path.relpath(full, path).replace(os.sep, "/")] = size
            if not self.sizes:
                raise InputError(f"input folder {str(path)!r} is empty (no files in it or its "
                                 f"subfolders); point printpipe at the folder that holds the DICOM files")
        elif zipfile.is_zipfile(path):
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise InputError(f"cannot open zip archive {str(path)!r} ({exc}); re-create the archive "
                                 f"or unpack it and pass the folder") from None
            self._lock = threading.Lock()
            self.encrypted = 0
            for info in self.zip.infolist():
                if info.is_dir():
                    continue
                if info.flag_bits & 0x1:
                    self.encrypted += 1
                    continue
                self.sizes[info.filename] = info.file_size
            if not self.sizes and not self.encrypted:
                raise InputError(f"zip archive {str(path)!r} is empty; put the DICOM files in it or pass "
                                 f"the folder")
        else:
            if path.suffix.lower() == ".zip":
                raise InputError(f"{str(path)!r} is named .zip but is not a readable zip archive; "
                                 f"re-create it or unpack it and pass the folder")
            self.root = path.parent
            self.sizes[path.name] = path.stat().st_size
        self.names = list(self.sizes)

    def open(self, name: str) -> BinaryIO:
        if self.zip is not None:
            # ZipFile serialises member reads itself; reading whole members keeps seeks cheap.
            with self.zip.open(name) as fh:
                return io.BytesIO(fh.read())
        return open(self.root / name, "rb")

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def __enter__(self) -> "_Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------
# discovery
# ------------------------------------------------------------------------------------------------
def discover(source: str | os.PathLike) -> Discovery:
    """Find the image stacks in a folder (searched recursively), a ``.zip`` or a single file.

    Only headers are read. Files that are not DICOM, DICOMDIR, non-image objects (RTSTRUCT, SR,
    presentation states, ...), images without position/orientation, colour images, unreadable and
    truncated files are skipped and counted per reason in ``Discovery.skipped``.

    Parameters
    ----------
    source : str or path-like
        Folder, zip archive or DICOM file.

    Returns
    -------
    Discovery
        Stacks in a stable order (study, SeriesNumber, stack id).

    Raises
    ------
    InputError
        The path does not exist, the folder or zip is empty.
    """
    path = Path(source).expanduser()
    with _Source(path) as src:
        skipped: Counter[str] = Counter()
        if src.zip is not None and src.encrypted:
            skipped["encrypted zip member"] += src.encrypted
        records: list[tuple[Any, _File, list[_Frame], dict]] = []
        series_cache: dict[str, dict] = {}
        for name in src.names:
            try:
                rec = _scan_file(src, name, series_cache)
            except _Skip as why:
                skipped[str(why)] += 1
                continue
            records.append(rec)
        series = _group(records)
        return Discovery(source=path, series=series, skipped=dict(sorted(skipped.items())),
                         files_scanned=len(src.names))


class _Skip(Exception):
    """A file that is not used; the message is the reason counted in ``Discovery.skipped``."""


def _scan_file(src: _Source, name: str, series_cache: dict[str, dict]
               ) -> tuple[Any, _File, list[_Frame], dict]:
    if os.path.basename(name).upper() == "DICOMDIR":
        raise _Skip("DICOMDIR")
    try:
        fh = src.open(name)
    except OSError:
        raise _Skip("unreadable file") from None
    with fh:
        ds, offset = _read_header(fh)
        end = fh.seek(0, io.SEEK_END)
        fh.seek(offset)
        head = fh.read(12)
        tag = head[:4]
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")) if meta else "1.2.840.10008.1.2"
    if ts == "1.2.840.10008.1.2.1.99":
        # deflated: pydicom inflated the data set in memory, so the file offset says nothing
        has_pixels = "Rows" in ds
    else:
        has_pixels = tag in (_PIXEL_TAG, b"\x7f\xe0\x00\x10")  # little / big endian
    sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    if sop_class == _DICOMDIR_CLASS:
        raise _Skip("DICOMDIR")
    modality = str(ds.get("Modality", "") or "?").strip().upper()
    if not has_pixels or "Rows" not in ds or "Columns" not in ds:
        raise _Skip(f"non-image object ({modality or sop_class})")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    rows, cols = int(ds.Rows), int(ds.Columns)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits_alloc = int(ds.get("BitsAllocated", 16) or 16)
    bits_stored = int(ds.get("BitsStored", bits_alloc) or bits_alloc)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    raw_ok = ts in _RAW_SYNTAXES and bits_alloc in (8, 16, 32)
    declared = None
    if ts in _RAW_SYNTAXES and len(head) >= 12:
        # the element's own length: a header that does not describe the pixels (BitsAllocated,
        # Rows, Columns, SamplesPerPixel) is named by printpipe.plausibility, not taken for a
        # truncated file or decoded into noise
        declared = struct.unpack("<I", head[4:8] if ts == "1.2.840.10008.1.2" else head[8:12])[0]
        declared = None if declared == 0xFFFFFFFF else declared
    if samples != 1 and not (modality == "CT" and declared == rows * cols * n_frames * bits_alloc // 8):
        raise _Skip(f"colour image ({modality})")
    if ts in _RAW_SYNTAXES:
        header_len = 8 if ts == "1.2.840.10008.1.2" else 12
        expected = rows * cols * n_frames * bits_alloc * samples // 8
        need = expected if declared is None else min(expected, declared)
        if end < offset + header_len + need:
            log.warning("skipping %s: pixel data truncated (%d of %d bytes)", name,
                        max(0, end - offset - header_len), need)
            raise _Skip("truncated pixel data")
    pad = _int_or_none(ds.get("PixelPaddingValue"))
    pad_limit = _int_or_none(ds.get("PixelPaddingRangeLimit"))
    if signed and bits_alloc == 16:
        pad = pad - 65536 if pad is not None and pad > 32767 else pad
        pad_limit = pad_limit - 65536 if pad_limit is not None and pad_limit > 32767 else pad_limit
    f = _File(name=name, ts=ts, n_frames=n_frames, rows=rows, cols=cols, bits_allocated=bits_alloc,
              bits_stored=bits_stored, signed=signed, pixel_offset=offset if raw_ok else None,
              pad=pad, pad_limit=pad_limit, samples=samples, pixel_bytes=declared)
    sop_uid = str(ds.get("SOPInstanceUID", name))
    frames: list[_Frame] = []
    shared = _first(ds.get("SharedFunctionalGroupsSequence"))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) > 0:
        # Enhanced (multi-frame) CT: geometry and rescale live in functional groups.
        iop0 = _fg(shared, None, "PlaneOrientationSequence", "ImageOrientationPatient")
        ps0 = _fg(shared, None, "PixelMeasuresSequence", "PixelSpacing")
        th0 = _fg(shared, None, "PixelMeasuresSequence", "SliceThickness")
        iops, pss, ths = set(), set(), set()
        if len(per_frame) != n_frames:
            raise _Skip("multi-frame image with inconsistent per-frame groups")
        for i, item in enumerate(per_frame):
            pos = _fg(item, None, "PlanePositionSequence", "ImagePositionPatient")
            iop = _fg(item, None, "PlaneOrientationSequence", "ImageOrientationPatient") or iop0
            ps = _fg(item, None, "PixelMeasuresSequence", "PixelSpacing") or ps0
            th = _fg(item, None, "PixelMeasuresSequence", "SliceThickness") or th0
            slope = _fg(item, shared, "PixelValueTransformationSequence", "RescaleSlope")
            icpt = _fg(item, shared, "PixelValueTransformationSequence", "RescaleIntercept")
            if pos is None or iop is None or ps is None:
                raise _Skip("image without ImagePositionPatient/ImageOrientationPatient")
            iops.add(tuple(round(float(v), 4) for v in iop))
            iop_exact = tuple(float(v) for v in iop)
            pss.add(tuple(round(float(v), 4) for v in ps))
            ths.add(None if th is None else round(float(th), 4))
            frames.append(_Frame(f, i, tuple(float(v) for v in pos), f"{sop_uid}#{i}",
                                 float(slope if slope is not None else 1.0),
                                 float(icpt if icpt is not None else 0.0)))
        if len(iops) > 1 or len(pss) > 1:
            raise _Skip("multi-frame image with several orientations or pixel spacings")
        iop = next(iter(iops))
        pixel_spacing = next(iter(pss))
        thickness = next(iter(ths))
    else:
        if n_frames > 1:
            raise _Skip("multi-frame image without per-frame positions")
        iop, pos, ps = ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient"), ds.get("PixelSpacing")
        if iop is None or pos is None or len(iop) != 6 or len(pos) != 3:
            raise _Skip("image without ImagePositionPatient/ImageOrientationPatient")
        if ps is None or len(ps) != 2:
            raise _Skip("image without PixelSpacing")
        iop_exact = tuple(float(v) for v in iop)
        iop = tuple(round(float(v), 4) for v in iop)
        pixel_spacing = tuple(float(v) for v in ps)
        thickness = _float_or_none(ds.get("SliceThickness"))
        slope = _float_or_none(ds.get("RescaleSlope"))
        icpt = _float_or_none(ds.get("RescaleIntercept"))
        frames.append(_Frame(f, 0, tuple(float(v) for v in pos), sop_uid,
                             1.0 if slope is None else slope, 0.0 if icpt is None else icpt))
    row, col = np.array(iop[:3]), np.array(iop[3:])
    if not (abs(np.linalg.norm(row) - 1) < 0.01 and abs(np.linalg.norm(col) - 1) < 0.01
            and abs(row @ col) < 0.01):
        raise _Skip("invalid ImageOrientationPatient (not two orthogonal unit vectors)")
    if min(float(v) for v in pixel_spacing) <= 0:
        raise _Skip("invalid PixelSpacing")
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    series_uid = str(ds.get("SeriesInstanceUID", "")) or f"no-series-uid:{name}"
    # Series-level fields are converted once per series: element conversion is the larger part of
    # header reading time, and these are the same in every file of a series.
    common = series_cache.get(series_uid)
    if common is None:
        common = series_cache[series_uid] = {
            "study_uid": str(ds.get("StudyInstanceUID", "")),
            "description": str(ds.get("SeriesDescription", "") or "").strip(),
            "number": _int_or_none(ds.get("SeriesNumber")),
            "tilt_tag": _float_or_none(ds.get("GantryDetectorTilt")),
            "manufacturer": str(ds.get("Manufacturer", "") or "").strip(),
            "model": str(ds.get("ManufacturerModelName", "") or "").strip(),
            "kernel": _join(ds.get("ConvolutionKernel")),
            "patient_position": str(ds.get("PatientPosition", "") or "").strip(),
            "phi": {"PatientName": str(ds.get("PatientName", "") or ""),
                    "PatientID": str(ds.get("PatientID", "") or ""),
                    "PatientBirthDate": str(ds.get("PatientBirthDate", "") or ""),
                    "StudyDate": str(ds.get("StudyDate", "") or "")},
        }
    header = dict(common)
    header.update({
        "series_uid": series_uid,
        "modality": modality,
        "iop": iop,
        "iop_exact": iop_exact,
        "pixel_spacing": (float(pixel_spacing[0]), float(pixel_spacing[1])),
        "thickness": thickness,
        "localizer": "LOCALIZER" in image_type,
        "multi_frame": per_frame is not None and len(per_frame) > 0,
    })
    return None, f, frames, header  # the data set itself is not kept: thousands of files add up


def _read_header(fh: BinaryIO) -> tuple[Any, int]:
    """Parse the header up to the pixel data; return the dataset and the offset where it stopped."""
    try:
        ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except InvalidDicomError:
        # Old files without the 128-byte preamble: accept only when the first element is a group
        # 0008 tag (where every image starts), so that text or binary junk is never forced open.
        fh.seek(0)
        head = fh.read(2)
        if head != b"\x08\x00":
            raise _Skip("not DICOM") from None
        fh.seek(0)
        try:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=_HEADER_TAGS, force=True)
        except Exception:
            raise _Skip("not DICOM") from None
        if "SOPClassUID" not in ds:
            raise _Skip("not DICOM")
    except _Skip:
        raise
    except Exception as exc:  # pydicom raises many kinds on corrupt headers
        log.debug("unreadable DICOM header: %s", exc)
        raise _Skip("unreadable or corrupt header") from None
    return ds, fh.tell()


def _first(seq: Any) -> Any:
    return seq[0] if seq is not None and len(seq) > 0 else None


def _fg(item: Any, fallback: Any, seq_name: str, attr: str) -> Any:
    """Attribute ``attr`` of the first item of ``seq_name`` in a functional-group item (or the fallback)."""
    for it in (item, fallback):
        if it is None:
            continue
        sub = _first(it.get(seq_name))
        if sub is not None and attr in sub:
            return sub.get(attr)
    return None


def _int_or_none(v: Any) -> int | None:
    try:
        return None if v is None or v == "" else int(float(v))
    except (TypeError, ValueError):
        return None


def _float_or_none(v: Any) -> float | None:
    try:
        return None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None


def _join(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x).strip() for x in v)
    return str(v).strip()


def _normal(iop: tuple[float, ...]) -> np.ndarray:
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:6], float)
    row /= np.linalg.norm(row)
    col = col - (col @ row) * row
    col /= np.linalg.norm(col)
    return np.cross(row, col)


def _orientation_name(n: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(n)))
    if abs(n[axis]) < math.cos(math.radians(45)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


@lru_cache(maxsize=None)
def _decoder_available(ts: str) -> bool:
    """Whether pydicom has a working decoder for transfer syntax ``ts`` (plug-in installed)."""
    if ts in _UNCOMPRESSED or ts == "1.2.840.10008.1.2.1.99":
        return True
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(UID(ts)).is_available)
    except (NotImplementedError, ValueError, ImportError):
        return False


def _decoder_hint(ts: str) -> str:
    pkg = _DECODER_PACKAGES.get(ts)
    if pkg:
        return pkg
    return "python-gdcm"


def _ts_name(ts: str) -> str:
    name = UID(ts).name
    return name if name and name != ts else f"unknown ({ts})"


def _group(records: list[tuple[Any, _File, list[_Frame], dict]]) -> list[SeriesInfo]:
    """Group frames by series uid, then into stacks by orientation, image size and localizer flag."""
    stacks: dict[tuple, list[tuple[_File, _Frame, dict]]] = defaultdict(list)
    for _ds, f, frames, hdr in records:
        key = (hdr["series_uid"], hdr["iop"], f.rows, f.cols,
               tuple(round(v, 4) for v in hdr["pixel_spacing"]), hdr["localizer"])
        for fr in frames:
            stacks[key].append((f, fr, hdr))
    by_series: dict[str, list[tuple]] = defaultdict(list)
    for key in stacks:
        by_series[key[0]].append(key)
    infos: list[SeriesInfo] = []
    for series_uid, keys in by_series.items():
        keys.sort(key=lambda k: -len(stacks[k]))  # the largest stack keeps the plain hash
        h = uid_hash(series_uid)
        made = {}
        for n, key in enumerate(keys, start=1):
            stack_id = h if len(keys) == 1 else f"{h}-{n}"
            made[key] = _summarise(stack_id, h, stacks[key])
            infos.append(made[key])
        # Same orientation, different image size, interleaved positions: not a scout but an
        # inconsistent series. Record it so that reading the stack refuses with a clear message.
        for key in keys:
            n = _normal(key[1])
            s = [float(np.dot(fr.position, n)) for _, fr, _ in stacks[key]]
            lo, hi = min(s), max(s)
            for other in keys:
                if other == key or other[1] != key[1] or other[2:4] == key[2:4]:
                    continue
                inside = [fr for _, fr, _ in stacks[other] if lo < float(np.dot(fr.position, n)) < hi]
                if inside:
                    made[key].size_conflict = (
                        f"{len(inside)} image(s) of this series at the same orientation are "
                        f"{other[2]}x{other[3]} while this stack is {key[2]}x{key[3]}, and they lie "
                        f"between its slices")
    infos.sort(key=lambda i: (i.study_uid_hash, i.number if i.number is not None else 1 << 30,
                              i.description, i.key))
    for idx, info in enumerate(infos, start=1):
        info.index = idx
    return infos


def _summarise(stack_id: str, h: str, members: list[tuple[_File, _Frame, dict]]) -> SeriesInfo:
    files: dict[str, _File] = {}
    for f, _fr, _hdr in members:
        files.setdefault(f.name, f)
    hdr = members[0][2]
    frames = [fr for _f, fr, _h in members]
    n = _normal(hdr["iop_exact"])
    geo = _geometry(frames, n)
    ts_counts = Counter(f.ts for f in files.values())
    ts = ts_counts.most_common(1)[0][0]
    decodable = all(_decoder_available(t) for t in ts_counts)
    bad = [t for t in ts_counts if not _decoder_available(t)]
    tilt_tags = {h_["tilt_tag"] for _f, _fr, h_ in members}
    info = SeriesInfo(
        key=stack_id, index=0, uid_hash=h, study_uid_hash=uid_hash(hdr["study_uid"]) if hdr["study_uid"] else "",
        modality=hdr["modality"], description=hdr["description"], number=hdr["number"],
        slices=len(frames), rows=members[0][0].rows, cols=members[0][0].cols,
        pixel_spacing=hdr["pixel_spacing"], thickness=hdr["thickness"],
        spacing=geo["nominal"], extent_mm=geo["extent"], tilt_deg=geo["tilt_deg"],
        gantry_tilt_tag=next(iter(tilt_tags)) if len(tilt_tags) == 1 else None,
        gaps=geo["gaps"], uneven=geo["uneven"], max_gap_ratio=geo["max_ratio"],
        duplicates=geo["duplicates"], transfer_syntax=_ts_name(ts), transfer_syntax_uid=ts,
        compressed=ts not in _UNCOMPRESSED, decodable=decodable,
        decoder_hint=", ".join(_decoder_hint(t) for t in bad),
        multi_frame=hdr["multi_frame"], localizer=hdr["localizer"], orientation=_orientation_name(n),
        iop=tuple(float(v) for v in hdr["iop_exact"]), manufacturer=hdr["manufacturer"], model=hdr["model"],
        kernel=hdr["kernel"], patient_position=hdr["patient_position"], size_conflict=None,
        files=tuple(sorted(files)), _frames=frames, _phi=dict(hdr["phi"]),
    )
    return info


def _dup_tol(nominal: float | None) -> float:
    """Two positions closer than this along the normal are the same slice position (mm)."""
    return max(1e-3, 0.01 * nominal) if nominal else 1e-3


def _geometry(frames: list[_Frame], n: np.ndarray) -> dict[str, Any]:
    """Spacing, gaps and tilt of a stack from slice positions only."""
    pos = np.array([fr.position for fr in frames], float).reshape(-1, 3)
    s = pos @ n
    order = np.argsort(s, kind="stable")
    s, pos = s[order], pos[order]
    steps = np.diff(s)
    out: dict[str, Any] = {"nominal": None, "extent": float(s[-1] - s[0]) if len(s) else 0.0,
                           "tilt_deg": 0.0, "gaps": 0, "uneven": False, "max_ratio": 1.0,
                           "duplicates": 0}
    if len(s) < 2:
        return out
    pos_steps = steps[steps > 1e-3]
    if len(pos_steps) == 0:
        out["duplicates"] = len(s) - 1
        return out
    nominal = float(np.median(pos_steps))
    tol = _dup_tol(nominal)
    dup = steps <= tol
    real = steps[~dup]
    out["nominal"] = nominal
    out["duplicates"] = int(dup.sum())
    uneven_tol = max(0.01, 0.01 * nominal)
    out["uneven"] = bool(np.any(np.abs(real - nominal) > uneven_tol))
    ratios = real / nominal
    out["gaps"] = int(np.sum(real - nominal > uneven_tol))
    out["max_ratio"] = float(ratios.max()) if len(ratios) else 1.0
    # tilt: in-plane drift of the slice origins per mm along the normal
    if out["extent"] > 0:
        drift = (pos[-1] - pos[0]) - (s[-1] - s[0]) * n
        out["tilt_deg"] = float(math.degrees(math.atan2(np.linalg.norm(drift), s[-1] - s[0])))
    return out


# ------------------------------------------------------------------------------------------------
# choosing a stack
# ------------------------------------------------------------------------------------------------
def choose(discovery: Discovery, series: str | None = None) -> tuple[SeriesInfo, str]:
    """Pick the stack to read and say why.

    Without ``series`` the choice is the CT axial stack (not a localizer, at least
    :data:`MIN_SLICES` slices) with the most slices; ties go to the thinnest spacing, and stacks
    that can be decoded with the installed plug-ins come first. With ``series`` the stack is looked
    up as described in :class:`DicomConfig`.

    Parameters
    ----------
    discovery : Discovery
    series : str, optional
        Stack selector (see :attr:`DicomConfig.series`).

    Returns
    -------
    (SeriesInfo, str)
        The stack and a one-sentence reason.

    Raises
    ------
    InputError
        No DICOM image found, no CT image stack, too few slices, or ``series`` matches nothing.
    """
    found = discovery.series
    skipped = ", ".join(f"{n} {why}" for why, n in discovery.skipped.items()) or "none"
    if not found:
        if discovery.skipped.get("not DICOM", 0) != discovery.files_scanned:
            raise InputError(f"no DICOM image series found in {str(discovery.source)!r}: "
                             f"{discovery.files_scanned} file(s) looked at, skipped: {skipped}; "
                             f"point printpipe at the folder of the CT slices (not its DICOMDIR or "
                             f"structure set)")
        raise InputError(f"no DICOM files found in {str(discovery.source)!r} ({discovery.files_scanned} "
                         f"file(s) looked at, none is DICOM); point printpipe at the folder that holds "
                         f"the CT slices")
    if series is not None:
        info = _select(found, str(series).strip())
        if info.modality != "CT":
            raise InputError(f"stack {info.key} (--series {series}) is {info.modality}, not CT; printpipe "
                             f"needs CT Hounsfield units; run `printpipe inspect` and choose a CT stack")
        if info.slices < MIN_SLICES:
            raise InputError(f"stack {info.key} (--series {series}) has {info.slices} slice(s); at least "
                             f"{MIN_SLICES} are needed; choose a stack with more slices")
        return info, f"selected with --series {series}"
    ct = [s for s in found if s.modality == "CT"]
    if not ct:
        mods = ", ".join(sorted(Counter(s.modality for s in found)))
        raise InputError(f"found {len(found)} image stack(s) but no CT image series (modalities: "
                         f"{mods}); printpipe needs a CT series in Hounsfield units")
    volumetric = [s for s in ct if not s.localizer and s.slices >= MIN_SLICES]
    if not volumetric:
        best = max(ct, key=lambda s: s.slices)
        raise InputError(f"too few slices: the largest CT stack ({best.key}) has {best.slices} slice(s) "
                         f"and at least {MIN_SLICES} are needed for a volume; export the full axial "
                         f"series, not only the scout or key images")
    axial = [s for s in volumetric if s.orientation == "axial"]
    pool = axial or volumetric
    rank = sorted(pool, key=lambda s: (not s.decodable, -s.slices, s.spacing or float("inf"), s.index))
    best = rank[0]
    kind = "axial" if axial else best.orientation
    others = [s for s in found if s is not best]
    reason = (f"CT {kind} stack with the most slices ({best.slices})"
              + (f" at {best.spacing:.3g} mm spacing" if best.spacing else ""))
    ties = [s for s in pool if s is not best and s.slices == best.slices]
    if ties:
        reason += " (thinnest spacing among stacks of equal size)"
    if others:
        reason += f"; {len(others)} other stack(s) not chosen: " + "; ".join(
            f"#{s.index} {s.modality} {'localizer' if s.localizer else s.orientation} "
            f"{s.slices} slice(s)" for s in others[:5])
        if len(others) > 5:
            reason += "; ..."
    return best, reason


def _select(found: list[SeriesInfo], want: str) -> SeriesInfo:
    w = want.lower()
    table = ", ".join(f"#{s.index} {s.key} (SeriesNumber {s.number})" for s in found[:10])
    if w.startswith("#") and w[1:].isdigit():
        idx = int(w[1:])
        for s in found:
            if s.index == idx:
                return s
    else:
        exact = [s for s in found if s.key == w]
        if exact:
            return exact[0]
        if len(w) >= 6 and all(c in "0123456789abcdef-" for c in w):
            hits = [s for s in found if s.key.startswith(w)]
            if len(hits) == 1:
                return hits[0]
            if hits:
                # a series hash shared by several stacks: the largest non-localizer one
                return sorted(hits, key=lambda s: (s.localizer, -s.slices))[0]
        if w.isdigit():
            hits = [s for s in found if s.number == int(w)]
            if hits:
                return sorted(hits, key=lambda s: (s.localizer, -s.slices))[0]
            for s in found:
                if s.index == int(w):
                    return s
    raise InputError(f"--series {want!r} matches none of the {len(found)} stack(s) found ({table}); "
                     f"pass a stack id, #row or SeriesNumber as shown by `printpipe inspect`")


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def read_series(source: str | os.PathLike | Discovery, config: DicomConfig = DicomConfig(),
                progress: Callable[[str, float], None] | None = None) -> Volume:
    """Read the chosen CT stack into an int16 HU :class:`Volume` on a regular orthogonal grid.

    Parameters
    ----------
    source : str, path-like or Discovery
        Folder (searched recursively), ``.zip`` or single DICOM file; or the result of
        :func:`discover` to avoid scanning twice.
    config : DicomConfig
        Series choice, gap limit, decoding threads.
    progress : callable, optional
        ``progress("read", fraction)`` while decoding.

    Returns
    -------
    Volume
        ``hu`` int16 ``(z, y, x)``; ``spacing`` ``(dz, dy, dx)`` mm; ``origin`` and ``direction`` in
        LPS with direction columns (row, column, normal) of the slices. ``meta`` holds only
        non-identifying fields (see the module docstring).

    Raises
    ------
    InputError
        Missing path, no CT series, too few slices, inconsistent sizes, conflicting duplicates,
        a gap beyond ``max_gap_slices``, a decoder that is not installed, or unreadable slices.

    Notes
    -----
    Slices are sorted by ``s = p . n`` where ``p`` is ImagePositionPatient and ``n = r x c`` the
    normal of ImageOrientationPatient. When the steps of ``s`` are not uniform (within 1 % or
    0.01 mm) the stack is resampled with linear interpolation along ``n`` onto
    ``round(extent / median_step) + 1`` slices that span exactly the original extent. When slice
    origins drift within the slice plane (gantry tilt) every slice is shifted in its own plane
    (bilinear) onto a common in-plane grid enlarged so no data is cut; this turns the sheared stack
    into an orthogonal one without mixing slices.
    """
    config = config if config is not None else DicomConfig()
    if isinstance(source, Discovery):
        disc = source
    else:
        disc = discover(source)
    info, reason = choose(disc, config.series)
    log.info("reading stack %s: %s", info.key, reason)
    if info.size_conflict:
        raise InputError(f"inconsistent image sizes in series {info.key}: {info.size_conflict}; remove "
                         f"the odd-sized files or export the series again")
    if not info.decodable:
        raise InputError(f"stack {info.key} uses transfer syntax {info.transfer_syntax} and no decoder for "
                         f"it is installed; install it with `pip install {info.decoder_hint}` (or "
                         f"decompress the files, e.g. `gdcmconv --raw`)")
    warnings_: list[str] = []
    corrections: list[str] = []
    n = _normal(info.iop)
    row = np.asarray(info.iop[:3], float)
    row /= np.linalg.norm(row)
    col = np.cross(n, row)
    frames = sorted(info._frames, key=lambda fr: float(np.dot(fr.position, n)))
    # Pre-check the gap limit and physical plausibility from headers so a refused series costs no
    # decoding.
    t_check, c_check = time.perf_counter(), time.thread_time()
    warnings_ += plausibility.check_header(info, frames, n, force=config.force)
    check_s, check_cpu = time.perf_counter() - t_check, time.thread_time() - c_check
    _check_gaps(np.array([np.dot(fr.position, n) for fr in frames]), config, info, None)

    workers = config.workers or min(8, os.cpu_count() or 1)
    with _Source(disc.source, scan=False) as src:
        frames, dup_warn = _drop_duplicates(src, frames, n, info, workers)
        warnings_ += dup_warn
        slices, failed = _decode_all(src, frames, workers, progress)
    if failed:
        for k, (fr, err) in failed.items():
            log.warning("could not decode %s frame %d: %s", fr.file.name, fr.frame, err)
        bad = sorted(failed)
        s_bad = ", ".join(f"{np.dot(frames[k].position, n):.1f}" for k in bad[:5])
        warnings_.append(f"{len(bad)} slice(s) could not be decoded (corrupt or truncated) and were "
                         f"skipped: sorted slice(s) {', '.join(str(k) for k in bad[:5])} at {s_bad} mm "
                         f"along the normal")
        keep = [k for k in range(len(frames)) if k not in failed]
        if len(keep) < MIN_SLICES:
            first = next(iter(failed.values()))[1]
            raise InputError(f"only {len(keep)} of {len(frames)} slices of stack {info.key} could be "
                             f"decoded (first error: {first}); the files are corrupt or truncated, "
                             f"export the series again")
        frames = [frames[k] for k in keep]
        slices = slices[keep]
    t_check, c_check = time.perf_counter(), time.thread_time()
    frames, slices, foreign_notes = _drop_foreign(frames, slices, n, info, config)
    check_s += time.perf_counter() - t_check
    check_cpu += time.thread_time() - c_check
    warnings_ += foreign_notes
    shape0 = slices.shape
    s = np.array([np.dot(fr.position, n) for fr in frames])
    hu, spacing_z, origin, geo_notes = _regularise(slices, frames, s, n, row, col, info, config)
    warnings_ += geo_notes["warnings"]
    corrections += geo_notes["corrections"]
    for w in warnings_:
        log.warning("%s", w)
    meta = {
        "series_uid_hash": info.uid_hash,
        "series_key": info.key,
        "series_number": info.number,
        "study_uid_hash": info.study_uid_hash,
        "modality": info.modality,
        "manufacturer": info.manufacturer,
        "model": info.model,
        "kernel": info.kernel,
        "transfer_syntax": info.transfer_syntax,
        "compressed": info.compressed,
        "slice_count": int(shape0[0]),
        "source_shape": [int(v) for v in shape0],
        "tilt_deg": round(float(geo_notes["tilt_deg"]), 3),
        "corrections": corrections,
        "warnings": warnings_,
        "skipped": dict(disc.skipped),
        "choice_reason": reason,
        "patient_position": info.patient_position,
        "rescale": [frames[0].slope, frames[0].intercept],
        "check_s": round(check_s, 4),  # plausibility checks of headers and slices (wall, CPU)
        "check_cpu_s": round(check_cpu, 4),
    }
    dy, dx = info.pixel_spacing
    return Volume(hu=hu, spacing=(spacing_z, dy, dx), origin=tuple(float(v) for v in origin),
                  direction=np.stack([row, col, n], axis=1), meta=meta)


def _drop_foreign(frames: list[_Frame], slices: np.ndarray, n: np.ndarray, info: SeriesInfo,
                  config: DicomConfig) -> tuple[list[_Frame], np.ndarray, list[str]]:
    """Leave out slices that do not belong (:func:`printpipe.plausibility.foreign_slices`), like
    missing slices, or refuse when the hole left exceeds the gap limit; keep them with ``force``."""
    found = plausibility.foreign_slices(slices)
    if not found:
        return frames, slices, []
    s = np.array([np.dot(fr.position, n) for fr in frames])
    what = "; ".join(f"sorted slice {f.index} of {len(frames)} at {s[f.index]:.1f} mm along the normal: "
                     f"{f.reason}" for f in found[:3]) + ("; ..." if len(found) > 3 else "")
    for f in found:
        log.warning("slice %d (%s) does not belong to stack %s: %s", f.index, frames[f.index].file.name,
                    info.key, f.reason)
    foreign_warnings: list[str] = []
    if config.force:
        foreign_warnings.append(f"{len(found)} slice(s) do not belong to the stack and were kept because "
                                f"of --force ({what})")
        return frames, slices, foreign_warnings
    bad = {f.index for f in found}
    keep = [k for k in range(len(frames)) if k not in bad]
    s_keep = s[keep]
    steps = np.diff(s_keep)
    real = np.diff(s)[np.diff(s) > _dup_tol(None)]
    nominal = float(np.median(real)) if len(real) else 0.0
    if len(keep) < MIN_SLICES or (nominal > 0 and len(steps) and not config.allow_gaps
                                  and float(steps.max()) / nominal > config.max_gap_slices):
        hole = f"a step of {float(steps.max()):.3g} mm" if len(steps) else f"{len(keep)} slice(s)"
        raise InputError(
            f"{len(found)} slice(s) of stack {info.key} do not belong to it ({what}); leaving them out "
            f"leaves {hole} against {nominal:.3g} mm, more than --max-gap {config.max_gap_slices:g}; "
            f"export the series again, pass --allow-gaps to interpolate across them, or --force to keep them")
    foreign_warnings.append(f"{len(found)} slice(s) do not belong to the stack and were left out like "
                            f"missing slices ({what})")
    return [frames[k] for k in keep], slices[keep], foreign_warnings


def _check_gaps(s: np.ndarray, config: DicomConfig, info: SeriesInfo, what: str | None) -> None:
    steps = np.diff(s)
    real = steps[steps > _dup_tol(None)]
    if len(real) == 0:
        return
    nominal = float(np.median(real))
    ratios = steps / nominal
    k = int(np.argmax(ratios))
    if ratios[k] > config.max_gap_slices and not config.allow_gaps:
        raise InputError(
            f"slice spacing jumps from {nominal:.3g} to {steps[k]:.3g} mm ({ratios[k]:.1f} nominal "
            f"spacings) between sorted slices {k} and {k + 1} of series {info.key}"
            f"{' ' + what if what else ''}, more than the limit of {config.max_gap_slices:g} "
            f"(--max-gap); pass --allow-gaps to interpolate across it, or choose another series with "
            f"--series")


def _drop_duplicates(src: _Source, frames: list[_Frame], n: np.ndarray, info: SeriesInfo,
                     workers: int) -> tuple[list[_Frame], list[str]]:
    """Drop exact duplicates (same SOPInstanceUID or identical pixels); refuse conflicting ones."""
    s = np.array([np.dot(fr.position, n) for fr in frames])
    tol = _dup_tol(info.spacing)
    keep: list[_Frame] = []
    dropped = 0
    i = 0
    while i < len(frames):
        j = i + 1
        while j < len(frames) and s[j] - s[i] <= tol:
            j += 1
        group = frames[i:j]
        if len(group) > 1:
            uniq: list[_Frame] = []
            for fr in group:
                if any(fr.sop_uid == u.sop_uid for u in uniq):
                    dropped += 1
                    continue
                uniq.append(fr)
            if len(uniq) > 1:
                arrays, failed = _decode_all(src, uniq, workers, None)
                if failed:
                    raise InputError(f"{len(uniq)} slices share position {s[i]:.2f} mm along the normal "
                                     f"in series {info.key} and one cannot be decoded; remove the "
                                     f"duplicate files")
                for a in arrays[1:]:
                    if not np.array_equal(a, arrays[0]):
                        raise InputError(
                            f"{len(uniq)} different slices share position {s[i]:.2f} mm along the "
                            f"normal in series {info.key} (several acquisitions or reconstructions "
                            f"mixed in one series); remove the extra files or export one "
                            f"reconstruction only")
                dropped += len(uniq) - 1
            keep.append(group[0])
        else:
            keep.append(frames[i])
        i = j
    notes = []
    if dropped:
        notes.append(f"dropped {dropped} duplicate slice(s) (same position and identical content)")
    return keep, notes


def _decode_all(src: _Source, frames: list[_Frame], workers: int,
                progress: Callable[[str, float], None] | None) -> tuple[np.ndarray, dict[int, tuple]]:
    """Decode ``frames`` into an int16 HU array (len, rows, cols), in parallel by file."""
    rows, cols = frames[0].file.rows, frames[0].file.cols
    out = np.empty((len(frames), rows, cols), dtype=np.int16)
    by_file: dict[str, list[int]] = defaultdict(list)
    for k, fr in enumerate(frames):
        by_file[fr.file.name].append(k)
    failed: dict[int, tuple[_Frame, str]] = {}
    tasks = list(by_file.items())
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress("read", done / len(tasks))

    def store(ks: list[int], raw: np.ndarray | str) -> None:
        if isinstance(raw, np.ndarray) and raw.shape[1:] != (rows, cols):
            raw = f"ValueError: decoded size {raw.shape[1:]} differs from Rows x Columns {rows}x{cols}"
        if isinstance(raw, str):
            for k in ks:
                failed[k] = (frames[k], raw)
            return
        f = frames[ks[0]].file
        for a, k in zip(raw, ks):
            _to_hu(a, frames[k].slope, frames[k].intercept, f.pad, f.pad_limit, out[k])

    def work(item: tuple[str, list[int]]) -> None:
        _name, ks = item
        store(ks, _decode_or_error(src, frames[ks[0]].file, [frames[k].frame for k in ks]))

    pool_kind = _pool_kind(frames[0].file.ts, workers, len(tasks))
    if pool_kind == "process":
        try:
            _decode_in_processes(src, frames, tasks, workers, store, tick)
            return out, failed
        except (OSError, AssertionError, RuntimeError, ImportError) as exc:
            # e.g. inside a daemonic (Dask or multiprocessing) worker, which may not have children
            log.debug("process pool unavailable (%s); decoding with threads", exc)
            failed.clear()
            done = 0
            pool_kind = "thread"
    if pool_kind == "serial":
        for t in tasks:
            work(t)
            tick()
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for fut in as_completed([pool.submit(work, t) for t in tasks]):
                fut.result()
                tick()
    return out, failed


# Decoders whose extension modules never release the GIL (checked: their .so files do not import
# PyEval_SaveThread): threads cannot run them in parallel, processes can. The raw path, pydicom's
# numpy-based handling and pylibjpeg-rle (Rust, releases the GIL) run well in threads.
_GIL_BOUND = {
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
}
#: Below this many files a process pool costs more to start than it saves.
_MIN_FILES_FOR_PROCESSES = 24


def _pool_kind(ts: str, workers: int, n_tasks: int) -> str:
    if workers <= 1 or n_tasks < 4:
        return "serial"
    if ts in _GIL_BOUND and n_tasks >= _MIN_FILES_FOR_PROCESSES:
        import multiprocessing

        if not multiprocessing.current_process().daemon:
            return "process"
    return "thread"


def _decode_or_error(src: _Source, f: _File, want: list[int]) -> np.ndarray | str:
    try:
        return _decode_file(src, f, want)
    except Exception as exc:  # corrupt data raises anything from struct errors to plugin errors
        return " ".join(f"{type(exc).__name__}: {exc}".split())  # one line (pydicom lists plug-ins)
    except BaseException as exc:
        # a decoder written in Rust (pylibjpeg-rle) panics on a header that does not describe its
        # data (Rows, Columns); pyo3 raises PanicException, a BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        return f"{type(exc).__name__}: {exc} (do Rows, Columns and BitsAllocated describe the pixel data?)"


def _decode_chunk(path: str, jobs: list[tuple[_File, list[int]]]) -> list[np.ndarray | str]:
    """Process-pool entry point: decode the files of one chunk (stored values, not HU)."""
    with _Source(Path(path), scan=False) as src:
        return [_decode_or_error(src, f, want) for f, want in jobs]


def _decode_in_processes(src: _Source, frames: list[_Frame], tasks: list[tuple[str, list[int]]],
                         workers: int, store: Callable, tick: Callable) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork is cheap (no re-import) but unsafe when other threads hold locks; then use forkserver
    method = "fork" if threading.active_count() == 1 else "forkserver"
    ctx = multiprocessing.get_context(method)
    n_chunks = min(len(tasks), workers * 4)  # a few chunks per worker balance uneven files
    chunks = [tasks[i::n_chunks] for i in range(n_chunks)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futs = {pool.submit(_decode_chunk, str(src.path),
                            [(frames[ks[0]].file, [frames[k].frame for k in ks]) for _n, ks in chunk]): chunk
                for chunk in chunks}
        for fut in as_completed(futs):
            for (_n, ks), raw in zip(futs[fut], fut.result()):
                store(ks, raw)
                tick()


def _decode_file(src: _Source, f: _File, want: list[int]) -> np.ndarray:
    """Stored pixel values of frames ``want`` of one file, shape (len(want), rows, cols)."""
    if f.pixel_offset is not None:
        with src.open(f.name) as fh:
            fh.seek(f.pixel_offset)
            if f.ts == "1.2.840.10008.1.2":
                head = fh.read(8)
                tag, length = head[:4], struct.unpack("<I", head[4:8])[0]
            else:
                head = fh.read(12)
                tag, length = head[:4], struct.unpack("<I", head[8:12])[0]
            if tag != _PIXEL_TAG:
                raise ValueError("pixel data element not found where the header ended")
            frame_bytes = f.rows * f.cols * f.bits_allocated // 8
            if length != 0xFFFFFFFF and length < frame_bytes * f.n_frames:
                raise ValueError(f"pixel data holds {length} bytes, expected {frame_bytes * f.n_frames}")
            data = fh.read(frame_bytes * f.n_frames)
        if len(data) < frame_bytes * f.n_frames:
            raise ValueError(f"pixel data truncated ({len(data)} of {frame_bytes * f.n_frames} bytes)")
        dtype = {8: "u1", 16: "u2", 32: "u4"}[f.bits_allocated]
        arr = np.frombuffer(data, dtype="<" + dtype).reshape(f.n_frames, f.rows, f.cols)
        arr = arr[want] if len(want) != f.n_frames or want != list(range(f.n_frames)) else arr
        return _fix_bits(arr, f)
    with src.open(f.name) as fh:
        if f.ts == "1.2.840.10008.1.2.1.99":  # deflated: only dcmread inflates the data set
            arr = pydicom.dcmread(fh).pixel_array
        else:
            arr = pixel_array(fh, raw=True, decoding_plugin=_preferred_plugin(f.ts))
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    return arr[want]


@lru_cache(maxsize=None)
def _preferred_plugin(ts: str) -> str:
    """Fastest installed pydicom decoding plug-in for ``ts`` ('' lets pydicom choose).

    Measured here on 512x512 CT slices: JPEG-LS takes about 5 ms with pyjpegls (CharLS) against
    16 ms with pylibjpeg-libjpeg, which pydicom would try first.
    """
    if ts in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"):
        try:
            from pydicom.pixels import get_decoder

            if "pyjpegls" in get_decoder(UID(ts))._available:
                return "pyjpegls"
        except Exception:  # pragma: no cover - a pydicom without the plug-in table
            return ""
    return ""


def _fix_bits(arr: np.ndarray, f: _File) -> np.ndarray:
    """Apply BitsStored and PixelRepresentation to raw little-endian words (as pydicom does)."""
    bits = f.bits_allocated
    if f.bits_stored < bits:
        mask = (1 << f.bits_stored) - 1
        arr = arr & np.asarray(mask, arr.dtype)
        if f.signed:
            sign = np.asarray(1 << (f.bits_stored - 1), arr.dtype)
            signed_dtype = {8: np.int8, 16: np.int16, 32: np.int32}[bits]
            arr = ((arr ^ sign).astype(np.int64) - int(sign)).astype(signed_dtype)
            return arr
        return arr
    if f.signed:
        return arr.view({8: np.int8, 16: np.int16, 32: np.int32}[bits])
    return arr


def _to_hu(raw: np.ndarray, slope: float, intercept: float, pad: int | None, pad_limit: int | None,
           out: np.ndarray) -> None:
    """Write ``raw * slope + intercept`` as int16 HU into ``out``; padding becomes air."""
    mask = None
    if pad is not None:
        if pad_limit is None:
            mask = raw == pad
        else:
            lo, hi = sorted((pad, pad_limit))
            mask = (raw >= lo) & (raw <= hi)
        if not mask.any():
            mask = None
    if slope == 1.0 and float(intercept).is_integer():
        hu = raw.astype(np.int32)
        hu += int(intercept)
    else:
        # float32 holds every integer below 2**24 exactly, far beyond the HU range
        hu = raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        np.rint(hu, out=hu)
    np.clip(hu, -32768, 32767, out=hu)
    out[...] = hu
    if mask is not None:
        out[mask] = AIR_HU


def _regularise(slices: np.ndarray, frames: list[_Frame], s: np.ndarray, n: np.ndarray, row: np.ndarray,
                col: np.ndarray, info: SeriesInfo, config: DicomConfig
                ) -> tuple[np.ndarray, float, np.ndarray, dict[str, Any]]:
    """Resample sorted slices onto a uniform, orthogonal grid when spacing or tilt require it."""
    notes: dict[str, Any] = {"warnings": [], "corrections": [], "tilt_deg": 0.0}
    pos = np.array([fr.position for fr in frames], float)
    nz, ny, nx = slices.shape
    dy, dx = info.pixel_spacing
    if nz < MIN_SLICES:
        raise InputError(f"too few slices: stack {info.key} has {nz} usable slice(s) and at least "
                         f"{MIN_SLICES} are needed; export the full series")
    steps = np.diff(s)
    nominal = float(np.median(steps))
    _check_gaps(s, config, info, "after skipping unreadable slices" if nz != len(info._frames) else None)
    extent = float(s[-1] - s[0])
    uneven_tol = max(0.01, 0.01 * nominal)
    uneven = bool(np.any(np.abs(steps - nominal) > uneven_tol))
    # in-plane drift of each slice origin relative to the first: (n, 2) in (rows, cols) pixels
    rel = pos - pos[0]
    drift = rel - np.outer(rel @ n, n)
    v_mm, u_mm = drift @ col, drift @ row
    max_drift_px = float(max(np.abs(v_mm / dy).max(), np.abs(u_mm / dx).max()))
    tilted = max_drift_px > 0.05  # below 1/20 pixel the shear is not measurable in the image
    if tilted:
        tilt = math.degrees(math.atan2(float(np.hypot(v_mm[-1], u_mm[-1])), extent)) if extent > 0 else 0.0
        notes["tilt_deg"] = tilt
    origin = pos[0].copy()
    if not uneven and not tilted:
        return slices, extent / (nz - 1), origin, notes

    # target grid along the normal
    if uneven:
        n_out = max(MIN_SLICES, int(round(extent / nominal)) + 1)
        dz = extent / (n_out - 1)
        big = np.flatnonzero(steps - nominal > uneven_tol)
        small = np.flatnonzero(nominal - steps > uneven_tol)
        parts = []
        if len(big):
            k = int(big[np.argmax(steps[big])])
            parts.append(f"{len(big)} gap(s) up to {steps[k]:.2f} mm ({steps[k] / nominal:.1f} spacings, "
                         f"largest after sorted slice {k})")
        if len(small):
            k = int(small[np.argmin(steps[small])])
            parts.append(f"{len(small)} short step(s) down to {steps[k]:.2f} mm (after sorted slice {k})")
        text = (f"uneven slice spacing against a nominal {nominal:.3g} mm: " + "; ".join(parts)
                + f"; resampled linearly to {n_out} slices at {dz:.4g} mm")
        notes["warnings"].append(text)
        notes["corrections"].append(
            f"resampled {'; '.join(parts)} to a uniform {dz:.4g} mm grid ({nz} -> {n_out} slices)")
    else:
        n_out, dz = nz, extent / (nz - 1)
    t = s[0] + dz * np.arange(n_out)
    t[-1] = s[-1]  # guard against round-off past the last slice

    # target in-plane grid: shifted so every slice fits (slice i's pixel (r, c) lands at output
    # (r - a_i, c - b_i) with a_i = (O - p_i).col / dy, b_i = (O - p_i).row / dx)
    if tilted:
        v_pix, u_pix = v_mm / dy, u_mm / dx
        r0, c0 = min(0.0, float(v_pix.min())), min(0.0, float(u_pix.min()))
        ny_out = int(math.ceil(float(v_pix.max()) - r0 - 1e-6)) + ny
        nx_out = int(math.ceil(float(u_pix.max()) - c0 - 1e-6)) + nx
        origin = pos[0] + r0 * dy * col + c0 * dx * row
        a_off = r0 - v_pix  # output (r, c) reads slice i at (r + a_off_i, c + b_off_i)
        b_off = c0 - u_pix
        notes["corrections"].append(
            f"gantry tilt {notes['tilt_deg']:.1f} deg corrected: slices shifted in their plane by up to "
            f"{float(np.hypot(v_mm, u_mm).max()):.1f} mm onto an orthogonal grid "
            f"({ny}x{nx} -> {ny_out}x{nx_out} pixels)")
        if info.gantry_tilt_tag not in (None, 0.0) and abs(abs(info.gantry_tilt_tag) - notes["tilt_deg"]) > 1.0:
            notes["warnings"].append(f"GantryDetectorTilt says {info.gantry_tilt_tag:g} deg but the slice "
                                     f"positions show {notes['tilt_deg']:.1f} deg; the positions were used")
    else:
        ny_out, nx_out = ny, nx
        a_off = b_off = np.zeros(nz)

    from scipy import ndimage

    cache: dict[int, np.ndarray] = {}

    def shifted(i: int) -> np.ndarray:
        if i not in cache:
            if len(cache) > 2:
                cache.pop(min(cache))
            a = slices[i].astype(np.float32)
            if tilted:
                a = ndimage.affine_transform(a, np.eye(2), offset=(a_off[i], b_off[i]),
                                             output_shape=(ny_out, nx_out), order=1, mode="constant",
                                             cval=float(AIR_HU), prefilter=False)
            cache[i] = a
        return cache[i]

    out = np.empty((n_out, ny_out, nx_out), dtype=np.int16)
    idx = np.clip(np.searchsorted(s, t, side="right") - 1, 0, nz - 2)
    for k in range(n_out):
        i = int(idx[k])
        w = (t[k] - s[i]) / (s[i + 1] - s[i])
        w = min(max(w, 0.0), 1.0)
        if w < 1e-6:
            val = shifted(i)
        elif w > 1 - 1e-6:
            val = shifted(i + 1)
        else:
            val = (1.0 - w) * shifted(i) + w * shifted(i + 1)
        out[k] = np.clip(np.rint(val), -32768, 32767).astype(np.int16)
    return out, dz, origin, notes
