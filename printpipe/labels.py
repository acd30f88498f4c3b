"""Label maps in and out: the segmentation tools surgeons already use.

Out
    :func:`write` saves the final labels of the exported parts, on the CT's grid, as
    ``segmentation.seg.nrrd`` (3D Slicer's segmentation format, written with slicerio/pynrrd) and
    ``segmentation.nii.gz`` in RAS (nibabel; the names in a ``labels.json`` table and, as
    TotalSegmentator does, in the NIfTI header extension).

In
    :func:`read` turns a label map the user brings into a :class:`~printpipe.segment.Segmentation` on
    the CT's grid: a 3D Slicer ``.seg.nrrd``, a NIfTI label map with a names table, TotalSegmentator's
    output (a folder of one mask per structure, or its multilabel file), a DICOM SEG (highdicom), or an
    RTSTRUCT (:func:`rtstruct_masks` rasterises its closed planar contours, holes by even-odd).

Grids are compared with the CT in patient space (LPS mm): voxel axes parallel to the CT's within
:data:`DIRECTION_TOL`; the same lattice when every voxel centre lies within :data:`GRID_TOL_MM` of a CT
voxel centre. A label map on the same axes with other spacing or origin is resampled onto the CT with
nearest neighbour (recorded in ``info``). Every problem a user can fix (another frame of reference, a
rotated grid, an empty label, a label outside the CT, an unknown name) raises
:class:`~printpipe.errors.InputError` with one sentence that says what to do; the pipeline then writes
nothing.

Names are mapped to printpipe's part names (``hip_left``, ``hip_right``, ``sacrum``, ``femur_left``,
``femur_right``, ``pelvis``, ``spine``) by :func:`part_name`: TotalSegmentator's class names, and the
usual structure-set spellings (``femoreSin``, ``Femur_Head_L_DL``, ``FemoralHead (Left)_MBS`` ...).
TotalSegmentator's ``vertebrae_L1`` .. ``vertebrae_L5`` (and the other vertebrae) become one ``spine``
part, its ``vertebrae_S1`` joins ``sacrum``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from printpipe.errors import InputError
from printpipe.volume import Volume

log = logging.getLogger(__name__)

__all__ = [
    "LabelsConfig",
    "read",
    "write",
    "rtstruct_masks",
    "part_name",
    "label_format",
    "TOTALSEGMENTATOR_CLASSES",
    "GRID_TOL_MM",
    "DIRECTION_TOL",
    "OUTPUT_FILES",
]

#: largest distance (mm) between a label grid's voxel centres and the CT's that still counts as the
#: same grid: a tenth of a millimetre is far below any CT voxel and above the float32 rounding of
#: NIfTI/NRRD headers and the 6-decimal DS strings of DICOM.
GRID_TOL_MM = 0.1
#: largest difference of direction cosines that still counts as the same axis (0.06 deg)
DIRECTION_TOL = 1e-3
#: a planar contour may stray this far (in slices) from its own mean slice position
_PLANAR_TOL_SLICES = 0.1
#: the files :func:`write` makes
OUTPUT_FILES = ("segmentation.seg.nrrd", "segmentation.nii.gz", "labels.json")

#: TotalSegmentator v2 ``total`` task: label value -> class name of the bones a print can use (the
#: multilabel file of ``TotalSegmentator --ml``; organs and muscles are left out on purpose).
TOTALSEGMENTATOR_CLASSES: dict[int, str] = {
    25: "sacrum", 26: "vertebrae_S1", 27: "vertebrae_L5", 28: "vertebrae_L4", 29: "vertebrae_L3",
    30: "vertebrae_L2", 31: "vertebrae_L1", 32: "vertebrae_T12", 33: "vertebrae_T11", 34: "vertebrae_T10",
    35: "vertebrae_T9", 36: "vertebrae_T8", 37: "vertebrae_T7", 38: "vertebrae_T6", 39: "vertebrae_T5",
    40: "vertebrae_T4", 41: "vertebrae_T3", 42: "vertebrae_T2", 43: "vertebrae_T1", 44: "vertebrae_C7",
    45: "vertebrae_C6", 46: "vertebrae_C5", 47: "vertebrae_C4", 48: "vertebrae_C3", 49: "vertebrae_C2",
    50: "vertebrae_C1", 69: "humerus_left", 70: "humerus_right", 71: "scapula_left", 72: "scapula_right",
    73: "clavicula_left", 74: "clavicula_right", 75: "femur_left", 76: "femur_right", 77: "hip_left",
    78: "hip_right", 91: "skull", 116: "sternum",
}

# -- names ----------------------------------------------------------------------------------------
_LEFT = {"left", "l", "lt", "sin", "sinistro", "sinistra", "sx", "links", "izquierdo", "gauche"}
_RIGHT = {"right", "r", "rt", "des", "destro", "destra", "dx", "rechts", "derecho", "droit"}
_BONES = {
    "femur": {"femur", "femore", "femoral", "femorale", "femurhead", "femoralhead", "proximalfemur"},
    "hip": {"hip", "ilium", "iliac", "ileo", "coxa", "coxae", "coxal", "hemipelvis", "acetabulum",
            "innominate", "anca"},
    "sacrum": {"sacrum", "sacro", "sacral", "sacrale"},
    "pelvis": {"pelvis", "bacino", "pelvic"},
    "spine": {"spine", "lumbar", "lumbare", "vertebra", "vertebrae", "vertebre", "lumbarspine"},
}
_SIDED = {"femur", "hip"}
#: tokens that mark an automatic contour (deep learning, model-based ...): a manual one is preferred
_AUTO = {"dl", "mbs", "ai", "auto", "ts", "pred", "prediction", "model", "atlas", "totalseg"}
_OWN = re.compile(r"^(?:bone|fragment)(?:_\d+)?$", re.IGNORECASE)
_VERTEBRA = re.compile(r"^(?:vertebrae?_)?([ctls])(\d{1,2})$", re.IGNORECASE)



@dataclass(frozen=True)
class LabelsConfig:
    """A label map the user brings instead of the automatic segmentation (``--labels``).

    Parameters
    ----------
    path : str
        ``.seg.nrrd``, NIfTI, TotalSegmentator folder, DICOM SEG or RTSTRUCT. It must exist.
    parts : tuple of str or None
        Parts to print (``--parts``): printpipe part names or the labels' own names.
    names_table : str or None
        Names of a NIfTI label map's values (``--label-names``): a JSON/text file or
        ``"totalsegmentator"``.
    gap : bool
        Cut the one-voxel gap between touching parts.

    Notes
    -----
    ``file_sha256`` (the first 16 hex digits, set here) identifies the file in the manifest and the
    parameter hash; the path itself is not recorded, as a file name may carry a patient's name.
    """

    path: str
    parts: tuple[str, ...] | None = None
    names_table: str | None = None
    gap: bool = True
    file_sha256: str = field(default="", init=False)

    def __post_init__(self) -> None:
        path = Path(self.path)
        if not path.exists():
            raise InputError(f"label file {path} does not exist; check the path given to --labels")
        if self.parts is not None:
            parts = tuple(str(p).strip() for p in self.parts if str(p).strip())
            if not parts:
                raise InputError("parts is empty; name at least one label (e.g. --parts femur_left)")
            object.__setattr__(self, "parts", parts)
        if self.names_table is not None and str(self.names_table).lower() not in ("totalsegmentator", "total") \
                and not Path(self.names_table).is_file():
            raise InputError(f"names table {self.names_table} does not exist; check --label-names")
        object.__setattr__(self, "path", str(path))
        object.__setattr__(self, "file_sha256", _file_hash(path))

    def to_dict(self) -> dict[str, Any]:
        """The settings without the path (recorded in the manifest)."""
        return {"file_sha256": self.file_sha256, "parts": list(self.parts) if self.parts else None,
                "names_table": None if self.names_table is None else
                (self.names_table if str(self.names_table).lower() in ("totalsegmentator", "total")
                 else _file_hash(Path(self.names_table))),
                "gap": self.gap}


def part_name(name: str) -> str | None:
    """printpipe's part name for a label called ``name``, or ``None`` when it is not a known bone.

    Examples
    --------
    >>> [part_name(n) for n in ("hip_left", "femoreSin", "FemoralHead (Right)_MBS", "vertebrae_L5",
    ...                         "vertebrae_S1", "Femur_Head_L_DL", "Prostate_DL", "External")]
    ['hip_left', 'femur_left', 'femur_right', 'spine', 'sacrum', 'femur_left', None, None]
    """
    text = str(name).strip()
    if _OWN.match(text):
        return text.lower()          # printpipe's own names for unnamed pieces (a round trip keeps them)
    m = _VERTEBRA.match(text)
    if m:
        return "sacrum" if m.group(1).lower() == "s" else "spine"
    tokens = _tokens(text)
    joined = "".join(tokens)
    bone = None
    for key, words in _BONES.items():
        if any(t in words for t in tokens) or joined in words:
            bone = key
            break
    if bone is None:
        return None
    left = any(t in _LEFT for t in tokens)
    right = any(t in _RIGHT for t in tokens)
    if bone == "pelvis" and left != right:
        bone = "hip"                 # a sided pelvis (Pelvis_L) is a hemipelvis
    if bone not in _SIDED:
        return bone
    if left == right:
        return None      # a femur with no side (or both) is not a part printpipe can name
    return f"{bone}_{'left' if left else 'right'}"


def label_format(path: str | os.PathLike) -> str:
    """The kind of label map at ``path``: ``"seg.nrrd"``, ``"nifti"``, ``"totalsegmentator"`` (a folder
    of masks), ``"dicom-seg"`` or ``"rtstruct"``; raises :class:`InputError` for anything else."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"label file {path} does not exist; check the path given to --labels")
    if path.is_dir():
        if any(p.name.endswith((".nii.gz", ".nii")) for p in path.iterdir()):
            return "totalsegmentator"
        if _dicom_label_in(path) is not None:
            return label_format(_dicom_label_in(path))
        raise InputError(f"label folder {path} holds no .nii.gz masks; give a TotalSegmentator output "
                         f"folder, or a .seg.nrrd, NIfTI, DICOM SEG or RTSTRUCT file")
    name = path.name.lower()
    if name.endswith(".nrrd"):
        return "seg.nrrd"
    if name.endswith((".nii.gz", ".nii")):
        return "nifti"
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM" or name.endswith(".dcm"):
        ds = _read_dicom(path, header_only=True)
        modality = str(ds.get("Modality", "")).upper()
        if modality == "RTSTRUCT":
            return "rtstruct"
        if modality == "SEG":
            return "dicom-seg"
        raise InputError(f"{path.name} is a DICOM {modality or '?'} object, not a label map; give an "
                         f"RTSTRUCT or a DICOM SEG")
    raise InputError(f"{path.name} is not a label map printpipe reads; give a .seg.nrrd, .nii.gz (with a "
                     f"labels.json), a TotalSegmentator folder, a DICOM SEG or an RTSTRUCT")


def read(path: str | os.PathLike, volume: Volume, *, parts: Iterable[str] | None = None,
         names_table: str | os.PathLike | None = None, ct_source: str | os.PathLike | None = None,
         gap: bool = True):
    """Read a label map onto the CT's grid as a :class:`~printpipe.segment.Segmentation`.

    Parameters
    ----------
    path : path-like
        ``.seg.nrrd``, NIfTI (``.nii.gz``/``.nii``), TotalSegmentator output folder, DICOM SEG or
        RTSTRUCT file.
    volume : Volume
        The CT the labels belong to.
    parts : iterable of str, optional
        Parts to keep: printpipe part names (``femur_left``) or the labels' own names (``femoreSin``,
        ``vertebrae_L5``). By default every label that maps to a printpipe part name.
    names_table : path-like, optional
        Names of a NIfTI label map's values (``labels.json``: ``{"1": "femur_left", ...}``, the
        inverse, or a list; or text lines ``1 femur_left``). Default: the NIfTI header extension
        TotalSegmentator writes, then ``labels.json`` beside the file.
    ct_source : path-like, optional
        The CT's DICOM folder: used to check a DICOM label's frame of reference when it references
        another series of the same scan.
    gap : bool
        Clear, of every two 26-adjacent voxels of different parts, the darker one (HU), so touching
        parts print apart (the automatic segmentation does the same).

    Returns
    -------
    Segmentation
        ``labels`` on ``volume`` cropped to the parts' box (plus a 2-voxel margin); ``names`` printpipe
        part names; ``info`` the format, the file's hash, the label each part came from, its voxel
        count, whether the grid was resampled.

    Raises
    ------
    InputError
        Unknown format, unreadable file, another frame of reference, rotated grid, labels outside the
        CT, an unknown or ambiguous name, an empty part, no names table for a NIfTI label map.

    Notes
    -----
    Separation is not redone: the labels are the user's. Only the one-voxel gap is cut where two parts
    touch, at the darker voxel of each touching pair, which puts the gap in the joint space.
    """
    from printpipe.segment import Segmentation

    t0 = time.perf_counter()
    path = Path(path)
    fmt = label_format(path)
    if path.is_dir() and fmt != "totalsegmentator":
        path = _dicom_label_in(path)     # a folder exported from the planning system: its one RS/SEG
    wanted = None if parts is None else [str(p).strip() for p in parts if str(p).strip()]
    info: dict[str, Any] = {"source": "labels", "format": fmt, "file_sha256": _file_hash(path)}
    warnings: list[str] = []
    if fmt == "rtstruct":
        layers = _rtstruct_layers(path, volume, wanted, ct_source, warnings)
    elif fmt == "dicom-seg":
        layers = _dicom_seg_layers(path, volume, ct_source)
    elif fmt == "seg.nrrd":
        layers = _seg_nrrd_layers(path)
    elif fmt == "nifti":
        layers = _nifti_layers(path, names_table)
    else:
        layers = _totalsegmentator_layers(path)
    chosen = _choose(layers, wanted, path.name, warnings)
    labels, names, part_info, resampled = _assemble(chosen, layers, volume, path.name, warnings)
    cleared = _cut_gaps(labels, volume.hu) if gap and len(names) > 1 else 0
    for label, name in names.items():
        n = int(np.count_nonzero(labels == label))
        if n == 0:
            raise InputError(f"part {name} ({part_info[name]['from']}) is empty after the one-voxel gap to "
                             f"its neighbours; check the label map in 3D Slicer")
        part_info[name]["voxels"] = n
        part_info[name]["volume_mm3"] = round(n * float(np.prod(volume.spacing)), 1)
    sub, labels = _crop(volume, labels)
    info.update({"parts": part_info, "resampled": resampled, "gap_voxels_cleared": int(cleared),
                 "timings_s": {"labels": round(time.perf_counter() - t0, 3)}})
    for w in warnings:
        log.warning("%s", w)
    return Segmentation(volume=sub, labels=labels, names=names, info=info, warnings=warnings)


def write(outdir: str | os.PathLike, seg, volume: Volume | None = None) -> list[Path]:
    """Write the labels of ``seg`` as ``segmentation.seg.nrrd``, ``segmentation.nii.gz`` and ``labels.json``.

    Parameters
    ----------
    outdir : path-like
        Folder to write into (each file through a temporary name, renamed when complete).
    seg : Segmentation
        Its ``labels`` (on ``seg.volume``, possibly cropped) and ``names``.
    volume : Volume, optional
        The full CT; the files then lie on its grid (what 3D Slicer, ITK-SNAP and TotalSegmentator
        expect beside the CT). Default: ``seg.volume``.

    Returns
    -------
    list of Path
        The files written.

    Notes
    -----
    ``.seg.nrrd``: one layer, label value per segment, ``Segment{N}_Name/_Color/_LabelValue/_Layer/
    _Extent/_ID``, ``space: left-posterior-superior`` with the CT's origin and directions. NIfTI: the
    same labels indexed (i, j, k) = (column, row, slice) with the affine in RAS (x and y of LPS
    negated), ``sform``/``qform`` code 1 (scanner), as nibabel and TotalSegmentator write it.
    """
    from printpipe._atomic import atomic_path, atomic_write_text

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    grid = volume if volume is not None else seg.volume
    names = {int(k): str(v) for k, v in sorted(seg.names.items())}
    from scipy import ndimage as ndi

    # boxes and the filter on the segmentation's own (cropped) grid, then placed on the CT's grid
    sub = np.asarray(seg.labels)
    boxes = ndi.find_objects(sub)                                 # one pass: (z, y, x) box per value
    if any(box is not None and v + 1 not in names for v, box in enumerate(boxes)):
        sub = np.where(np.isin(sub, list(names)), sub, 0).astype(sub.dtype)  # exported parts only
    labels, lo = _on_grid(seg, grid, sub)
    boxes = [None if box is None else tuple(slice(s.start + o, s.stop + o) for s, o in zip(box, lo))
             for box in boxes]
    ijk_to_lps = _ijk_to_lps(grid)
    voxels_ijk = labels.transpose(2, 1, 0)      # (i, j, k) = (x, y, z) view, no copy
    written = []
    segmentation = {"voxels": labels, "ijkToLPS": ijk_to_lps, "segments": [],
                    "containedRepresentationNames": ["Binary labelmap"],
                    "masterRepresentation": "Binary labelmap", "referenceImageExtentOffset": [0, 0, 0]}
    for value, name in names.items():
        segmentation["segments"].append({
            "id": f"Segment_{value}", "name": name, "labelValue": value, "layer": 0,
            "color": [round(c / 255.0, 6) for c in _color(name)],
            "extent": _extent(boxes[value - 1] if value <= len(boxes) else None),
        })
    target = outdir / "segmentation.seg.nrrd"
    with atomic_path(target, suffix=".seg.nrrd") as tmp:
        _write_seg_nrrd(tmp, segmentation, compression_level=1)
    written.append(target)

    import nibabel as nib

    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_lps
    img = nib.Nifti1Image(np.asarray(voxels_ijk, dtype=np.uint8 if max(names, default=0) < 256 else np.uint16),
                          ras)
    img.set_sform(ras, code=1)
    img.set_qform(ras, code=1)
    img.header.extensions.append(nib.nifti1.Nifti1Extension(0, _caret_label_table(names).encode()))
    target = outdir / "segmentation.nii.gz"
    with atomic_path(target, suffix=".nii.gz") as tmp:
        nib.save(img, str(tmp))
    written.append(target)
    target = outdir / "labels.json"
    atomic_write_text(target, json.dumps({str(k): v for k, v in names.items()}, indent=2) + "\n")
    written.append(target)
    return written


# ------------------------------------------------------------------------------------------------
# RTSTRUCT
# ------------------------------------------------------------------------------------------------
def rtstruct_masks(path: str | os.PathLike, volume: Volume, *, names: Iterable[str] | None = None
                   ) -> dict[str, np.ndarray]:
    """Rasterise the closed planar contours of an RTSTRUCT onto a CT grid.

    Parameters
    ----------
    path : path-like
        The RTSTRUCT file (``RS*.dcm``).
    volume : Volume
        The CT the structure set was drawn on; the masks have its shape ``(nz, ny, nx)``.
    names : iterable of str, optional
        ROI names to rasterise (exact, then case-insensitive match). ``None`` rasterises every ROI
        that has closed planar contours; contours of those that lie outside the CT are then dropped
        with a log message instead of raising.

    Returns
    -------
    dict[str, (nz, ny, nx) bool ndarray]
        One mask per ROI, keyed by the ROI name as written in the file.

    Raises
    ------
    InputError
        Not an RTSTRUCT; a requested name the file does not hold (the message lists those it does);
        a requested ROI without closed planar contours, with a contour that is not in an axial plane
        of the CT, or with contours outside the CT.

    Notes
    -----
    Each contour's points (LPS mm) are mapped to fractional CT indices ``(k, j, i)`` with
    ``volume.patient_to_index``. The contour is put on the nearest slice, which must lie within half a
    slice spacing of its mean ``k`` (and the contour must be planar to that slice within 0.1 slice).
    All contours of one ROI on one slice are filled together by the even-odd rule evaluated at voxel
    centres: for every pixel row ``j`` each edge crossing the row (half-open in ``j``, so a vertex is
    counted once) toggles the parity from column ``ceil(x)`` on, and a cumulative sum modulo 2 along
    the row gives the inside. A hole (a contour inside another) is thereby empty, and two disjoint
    contours are both filled, whatever their winding, as DICOM PS3.3 C.8.8.6 asks.

    Examples
    --------
    On pelvic-ref003 (``read_series`` of its CT), the manual left proximal femur in cm^3:

    >>> masks = rtstruct_masks("RS.dcm", volume, names=["femoreSin"])          # doctest: +SKIP
    >>> round(masks["femoreSin"].sum() * np.prod(volume.spacing) / 1000, 1)    # doctest: +SKIP
    189.1
    """
    ds = _read_dicom(path)
    if str(ds.get("Modality", "")).upper() != "RTSTRUCT":
        raise InputError(f"{Path(path).name} is a DICOM {ds.get('Modality', '?')} object, not an RTSTRUCT; "
                         f"give the structure set file (RS*.dcm)")
    rois, contours = _rtstruct_contours(ds)
    strict = names is not None
    if names is None:
        wanted = [n for n in rois.values() if contours.get(n)]
    else:
        wanted = [_match_name(n, list(rois.values()), Path(path).name) for n in names]
        for n in wanted:
            if not contours.get(n):
                raise InputError(f"ROI {n!r} in {Path(path).name} has no closed planar contours; "
                                 f"choose another ROI or draw it in the planning system")
    return {name: _rasterise(contours[name], volume, name, strict) for name in wanted}


def _rtstruct_contours(ds) -> tuple[dict[int, str], dict[str, list[np.ndarray]]]:
    """ROI number -> name, and name -> its closed planar contours as ``(n, 3)`` LPS mm arrays."""
    rois = {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    contours: dict[str, list[np.ndarray]] = defaultdict(list)
    for rc in ds.get("ROIContourSequence", []):
        name = rois.get(int(rc.ReferencedROINumber))
        if name is None:
            continue
        for c in rc.get("ContourSequence", []) or []:
            if str(c.get("ContourGeometricType", "")).upper() != "CLOSED_PLANAR":
                continue
            pts = _contour_points(c)
            if len(pts) >= 3:
                contours[name].append(pts)
    return rois, contours


def _contour_points(contour) -> np.ndarray:
    """ContourData as ``(n, 3)`` float mm, parsed straight from the raw DS bytes: pydicom's per-value
    DSfloat conversion takes 2 s for a pelvic structure set, numpy 0.1 s."""
    raw = contour.get_item(0x30060050)
    if raw is None:
        return np.zeros((0, 3))
    value = raw.value
    if isinstance(value, (bytes, bytearray)):
        try:
            return np.array(bytes(value).strip(b" \x00").split(b"\\"), dtype=float).reshape(-1, 3)
        except ValueError:
            value = contour.ContourData
    return np.asarray(value, dtype=float).reshape(-1, 3)


def _rasterise(polys: list[np.ndarray], volume: Volume, name: str, strict: bool) -> np.ndarray:
    nz, ny, nx = volume.shape
    mask = np.zeros((nz, ny, nx), dtype=bool)
    by_slice: dict[int, list[np.ndarray]] = defaultdict(list)
    outside = 0
    for pts in polys:
        kji = volume.patient_to_index(pts)
        k_mean = float(kji[:, 0].mean())
        k = int(np.floor(k_mean + 0.5))
        if np.ptp(kji[:, 0]) > 2 * _PLANAR_TOL_SLICES:
            if strict:
                raise InputError(
                    f"a contour of ROI {name!r} is not in an axial plane of the CT (it spans "
                    f"{np.ptp(kji[:, 0]) * volume.spacing[0]:.2f} mm across slices); the structure set was "
                    f"drawn on another grid: export it on this CT series")
            outside += 1
            continue
        if not 0 <= k < nz:
            outside += 1
            continue
        margin = 0.5 + GRID_TOL_MM / np.asarray(volume.spacing[1:])
        if strict and (np.any(kji[:, 1:].min(axis=0) < -margin)
                       or np.any(kji[:, 1:].max(axis=0) > np.array([ny - 1, nx - 1]) + margin)):
            raise InputError(f"ROI {name!r} reaches outside the CT's field of view on slice {k}; it was drawn "
                             f"on a larger reconstruction: give the CT series the structure set belongs to")
        by_slice[k].append(kji[:, 1:])
    if outside:
        if strict:
            raise InputError(
                f"ROI {name!r} has {outside} of {len(polys)} contours outside the CT's slices "
                f"(z {volume.origin[2]:.1f}..{volume.index_to_patient([[nz - 1, 0, 0]])[0, 2]:.1f} mm); "
                f"it was drawn on another scan: give the CT series the structure set belongs to")
        log.info("ROI %s: %d of %d contours lie outside the CT and were dropped", name, outside, len(polys))
    for k, rings in by_slice.items():
        mask[k] = _even_odd_fill(rings, ny, nx)
    return mask


def _even_odd_fill(rings: list[np.ndarray], ny: int, nx: int) -> np.ndarray:
    """Even-odd fill of closed rings given as ``(n, 2)`` fractional (row, column) indices, sampled
    at the pixel centres of an ``(ny, nx)`` image (see :func:`rtstruct_masks`, Notes)."""
    ys, xs = [], []
    for ring in rings:
        y0, x0 = ring[:, 0], ring[:, 1]
        y1, x1 = np.roll(y0, -1), np.roll(x0, -1)   # closing edge included
        lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
        first = np.ceil(lo).astype(np.int64)          # rows j with lo <= j < hi
        last = np.ceil(hi).astype(np.int64)
        first = np.clip(first, 0, ny)
        last = np.clip(last, 0, ny)
        count = np.maximum(last - first, 0)
        if not count.any():
            continue
        edge = np.repeat(np.arange(len(y0)), count)
        offs = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        rows = first[edge] + offs
        t = (rows - y0[edge]) / (y1[edge] - y0[edge])   # count > 0 excludes horizontal edges
        ys.append(rows)
        xs.append(x0[edge] + t * (x1[edge] - x0[edge]))
    if not ys:
        return np.zeros((ny, nx), dtype=bool)
    rows = np.concatenate(ys)
    cols = np.clip(np.ceil(np.concatenate(xs)), 0, nx).astype(np.int64)
    toggles = np.bincount(rows * (nx + 1) + cols, minlength=ny * (nx + 1)).reshape(ny, nx + 1)
    return (np.cumsum(toggles[:, :nx], axis=1) & 1).astype(bool)


# ------------------------------------------------------------------------------------------------
# reading: every format becomes layers of label values with a grid
# ------------------------------------------------------------------------------------------------
@dataclass
class _Layer:
    """Label values on one grid. ``load()`` returns ``(array, ijk_to_lps)``: ``ijk_to_lps`` maps the
    array's axes to LPS mm, or is ``None`` when the array is already ``(z, y, x)`` on the CT grid.
    Loading is deferred so a TotalSegmentator folder reads only the masks that are used."""

    values: dict[int, str]
    load: Any
    _cache: Any = field(default=None, repr=False)

    def get(self):
        if self._cache is None:
            self._cache = self.load()
        return self._cache


def _rtstruct_layers(path: Path, volume: Volume, wanted, ct_source, warnings) -> list[_Layer]:
    ds = _read_dicom(path)
    _check_frame(ds, volume, ct_source, path.name, warnings)
    rois, contours = _rtstruct_contours(ds)
    layers = []
    for name in rois.values():
        polys = contours.get(name)
        if polys:
            layers.append(_Layer({1: name}, lambda polys=polys, name=name:
                                 (_rasterise(polys, volume, name, strict=True), None)))
    if not layers:
        raise InputError(f"{path.name} holds no closed planar contours; export the structure set again")
    return layers


def _dicom_seg_layers(path: Path, volume: Volume, ct_source) -> list[_Layer]:
    import highdicom as hd

    warnings: list[str] = []
    ds = _read_dicom(path)
    _check_frame(ds, volume, ct_source, path.name, warnings)
    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as exc:  # highdicom raises several types for malformed objects
        raise InputError(f"{path.name} is not a DICOM SEG highdicom can read ({exc}); export it again") from None
    names = {int(n): str(seg.get_segment_description(n).segment_label) for n in seg.segment_numbers}

    def load(number):
        try:
            vol = seg.get_volume(segment_numbers=[number], combine_segments=True, relabel=False)
        except Exception as exc:
            raise InputError(f"segment {names[number]!r} of {path.name} is not a regular stack of planes "
                             f"({exc}); export the segmentation on the CT's slices") from None
        return np.asarray(vol.array), np.asarray(vol.affine, dtype=float)

    return [_Layer({n: name}, lambda n=n: load(n)) for n, name in names.items()]


def _seg_nrrd_layers(path: Path) -> list[_Layer]:
    import slicerio

    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:  # pynrrd/slicerio raise several types for malformed headers
        raise InputError(f"{path.name} is not a 3D Slicer segmentation ({exc}); save it again from "
                         f"Slicer's Segment Editor as .seg.nrrd") from None
    voxels = np.asarray(seg["voxels"])
    ijk = np.asarray(seg["ijkToLPS"], dtype=float)
    segments = seg.get("segments", [])
    if not segments:
        raise InputError(f"{path.name} has no segments; add them in Slicer's Segment Editor and save again")
    stack = voxels if voxels.ndim == 4 else voxels[np.newaxis]
    by_layer: dict[int, dict[int, str]] = defaultdict(dict)
    for s in segments:
        by_layer[int(s.get("layer", 0))][int(s.get("labelValue", 1))] = str(s.get("name", s.get("id")))
    return [_Layer(values, lambda k=k: (stack[k], ijk)) for k, values in sorted(by_layer.items())]


def _nifti_layers(path: Path, names_table) -> list[_Layer]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise InputError(f"{path.name} is not a readable NIfTI file ({exc}); write it again") from None
    if len(img.shape) != 3 and not (len(img.shape) == 4 and img.shape[3] == 1):
        raise InputError(f"{path.name} has shape {img.shape}; a label map is 3-D (one value per voxel)")
    names = _names_for(path, img, names_table)

    def load():
        data = np.asanyarray(img.dataobj)
        if data.ndim == 4:
            data = data[..., 0]
        if not np.issubdtype(data.dtype, np.integer):
            data = np.rint(data).astype(np.int32)
        return data, _LPS_FROM_RAS @ np.asarray(img.affine, dtype=float)

    return [_Layer(names, load)]


def _totalsegmentator_layers(folder: Path) -> list[_Layer]:
    import nibabel as nib

    layers = []
    for f in sorted(folder.iterdir()):
        if not f.name.endswith((".nii.gz", ".nii")):
            continue
        name = f.name[:-7] if f.name.endswith(".nii.gz") else f.name[:-4]

        def load(f=f):
            img = nib.load(str(f))
            return np.asanyarray(img.dataobj) > 0.5, _LPS_FROM_RAS @ np.asarray(img.affine, dtype=float)

        layers.append(_Layer({1: name}, load))
    return layers


_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _names_for(path: Path, img, names_table) -> dict[int, str]:
    if names_table is not None:
        if str(names_table).lower() in ("totalsegmentator", "total"):
            return dict(TOTALSEGMENTATOR_CLASSES)
        return _read_names_table(Path(names_table))
    for ext in getattr(img.header, "extensions", []):
        try:
            table = _parse_caret_label_table(ext.get_content())
        except Exception:  # not a label table: other software's extension
            continue
        if table:
            return table
    stem = path.name[:-7] if path.name.endswith(".nii.gz") else path.stem
    for cand in (path.with_name(stem + ".json"), path.with_name("labels.json")):
        if cand.is_file():
            return _read_names_table(cand)
    raise InputError(f"{path.name} carries no label names and no labels.json lies beside it; give the names "
                     f"with --label-names FILE (JSON {{\"1\": \"femur_left\", ...}}), or --label-names "
                     f"totalsegmentator for a TotalSegmentator multilabel file")


def _read_names_table(path: Path) -> dict[int, str]:
    if not path.is_file():
        raise InputError(f"names table {path} does not exist; check --label-names")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    table: dict[int, str] = {}
    try:
        if isinstance(data, dict):
            data = data.get("labels", data)
        if isinstance(data, list):
            table = {i + 1: str(n) for i, n in enumerate(data)}
        elif isinstance(data, dict):
            for k, v in data.items():
                if str(k).strip().isdigit():
                    table[int(k)] = str(v)
                else:
                    table[int(v)] = str(k)
        else:
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    key, name = re.split(r"[\s:=,]+", line, maxsplit=1)
                    table[int(key)] = name.strip().strip('"')
    except (ValueError, TypeError):
        table = {}
    table = {k: v for k, v in table.items() if k > 0}
    if not table:
        raise InputError(f"names table {path.name} could not be read; write JSON like "
                         f"{{\"1\": \"femur_left\", \"2\": \"femur_right\"}}")
    return table


def _parse_caret_label_table(content: bytes | str) -> dict[int, str]:
    """The ``<LabelTable>`` of the NIfTI extension TotalSegmentator writes (``add_label_map_to_nifti``)."""
    if isinstance(content, bytes):
        content = content.decode("utf-8", errors="replace")
    root = ET.fromstring(content.strip())
    return {int(e.get("Key")): (e.text or "").strip() for e in root.iter("Label") if e.get("Key")}


def _caret_label_table(names: Mapping[int, str]) -> str:
    rows = "".join(f'<Label Key="{k}" Red="{r / 255:.4g}" Green="{g / 255:.4g}" Blue="{b / 255:.4g}" '
                   f'Alpha="1"><![CDATA[{v}]]></Label>\n'
                   for k, v in names.items() for r, g, b in [_color(v)])
    return ('<?xml version="1.0" encoding="UTF-8"?> <CaretExtension> <VolumeInformation Index="0"> '
            f'<LabelTable>\n{rows}</LabelTable> <VolumeType><![CDATA[Label]]></VolumeType> '
            '</VolumeInformation></CaretExtension>\n')


# ------------------------------------------------------------------------------------------------
# names -> parts
# ------------------------------------------------------------------------------------------------
def _choose(layers: list[_Layer], wanted, source: str, warnings: list[str]) -> dict[str, list[tuple]]:
    """Part name -> list of (layer index, value, label name) that make it."""
    entries = [(i, v, n) for i, layer in enumerate(layers) for v, n in layer.values.items()]
    available = [n for _, _, n in entries]
    groups: dict[str, list[tuple]] = defaultdict(list)
    if wanted is None:
        for e in entries:
            p = part_name(e[2])
            if p is not None:
                groups[p].append(e)
        if not groups:
            raise InputError(f"no label in {source} has a bone name printpipe knows ({_list(available)}); "
                             f"choose the labels to print with --parts NAME[,NAME]")
    else:
        for w in wanted:
            exact = [e for e in entries if e[2] == w] or [e for e in entries if e[2].casefold() == w.casefold()]
            if exact:
                e = exact[0]
                part = part_name(e[2]) or _safe_name(e[2])
                if groups.get(part) and not _mergeable(e[2], part):
                    part = _safe_name(e[2])     # two named labels of one bone: both print, by their names
                groups[part].append(e)
                continue
            matches = [e for e in entries if part_name(e[2]) == w]
            if not matches:
                raise InputError(f"{source} has no label named or mapping to {w!r}; its labels are "
                                 f"{_list(available)}: give those names (or hip_left, femur_right ...) to --parts")
            groups[w].extend(matches)
    chosen: dict[str, list[tuple]] = {}
    for part, group in groups.items():
        group = list(dict.fromkeys(group))
        if len(group) == 1 or all(_mergeable(e[2], part) for e in group):
            chosen[part] = group
            continue
        rank = [sum(t in _AUTO for t in _tokens(e[2])) for e in group]
        best = [e for e, r in zip(group, rank) if r == min(rank)]
        if len(best) > 1:
            raise InputError(f"{source} has several labels for {part} ({_list([e[2] for e in best])}); "
                             f"name the one to print in --parts (e.g. --parts {best[0][2]})")
        others = [e[2] for e in group if e is not best[0]]
        warnings.append(f"{part} made from label {best[0][2]!r} (manual), not from {_list(others)}; name "
                        f"another label in --parts to print that one")
        chosen[part] = best
    return chosen


def _mergeable(raw: str, part: str) -> bool:
    """TotalSegmentator's vertebrae (and its S1 with the sacrum) join one part; other labels do not."""
    return bool(_VERTEBRA.match(raw.strip())) or raw.strip().lower() == part


def _assemble(chosen, layers: list[_Layer], volume: Volume, source: str, warnings: list[str]):
    labels = np.zeros(volume.shape, dtype=np.uint8 if len(chosen) < 256 else np.uint16)
    names: dict[int, str] = {}
    part_info: dict[str, dict[str, Any]] = {}
    resampled = False
    on_grid: dict[int, np.ndarray] = {}
    for label, (part, group) in enumerate(chosen.items(), start=1):
        any_voxel = False
        for i, value, raw in group:
            if i not in on_grid:
                arr, ijk_to_lps = layers[i].get()
                if ijk_to_lps is None:
                    on_grid[i] = arr
                else:
                    used = [v for (j, v, _) in (e for g in chosen.values() for e in g) if j == i]
                    on_grid[i], moved = _to_ct(arr, ijk_to_lps, volume, layers[i].values, used, source)
                    resampled |= moved
            hit = on_grid[i] == value if on_grid[i].dtype != bool else on_grid[i]
            if hit.any():
                any_voxel = True
                taken = labels[hit]
                for other in np.unique(taken[(taken != 0) & (taken != label)]):
                    warnings.append(f"labels {raw!r} and {names.get(int(other), other)!r} overlap by "
                                    f"{int(np.count_nonzero(taken == other))} voxels; {raw!r} keeps them (edit "
                                    f"the label map so each voxel belongs to one part)")
                labels[hit] = label
        if not any_voxel:
            raise InputError(f"label {_list([g[2] for g in group])} in {source} is empty (no voxel on the CT "
                             f"grid); draw it again, or leave it out of --parts")
        names[label] = part
        part_info[part] = {"from": [g[2] for g in group]}
    return labels, names, part_info, resampled


# ------------------------------------------------------------------------------------------------
# grids
# ------------------------------------------------------------------------------------------------
def _ijk_to_lps(volume: Volume) -> np.ndarray:
    """4x4 map of (i, j, k) = (column, row, slice) indices to LPS mm (NRRD/NIfTI axis order)."""
    a = volume.affine
    return a[:, [2, 1, 0, 3]]


def _to_ct(arr: np.ndarray, ijk_to_lps: np.ndarray, volume: Volume, values: Mapping[int, str],
           used: list[int], source: str) -> tuple[np.ndarray, bool]:
    """Put a label array with voxel->LPS map ``ijk_to_lps`` on the CT grid, ``(z, y, x)``.

    Each CT voxel takes the label voxel nearest to its centre (per axis, as the axes are parallel), 0
    beyond the label grid. Returns the array and whether the sampling differed from the CT's.
    """
    arr = np.asarray(arr)
    ct = _ijk_to_lps(volume)
    lab = np.asarray(ijk_to_lps, dtype=float)
    if arr.ndim != 3:
        raise InputError(f"label map in {source} is {arr.ndim}-D; printpipe reads 3-D label maps")
    lspacing = np.linalg.norm(lab[:3, :3], axis=0)
    cspacing = np.linalg.norm(ct[:3, :3], axis=0)
    if not np.all(lspacing > 0):
        raise InputError(f"label map in {source} has a zero voxel size; save it again with its geometry")
    cos = (lab[:3, :3] / lspacing).T @ (ct[:3, :3] / cspacing)      # label axis . CT axis
    perm = np.argmax(np.abs(cos), axis=0)                           # label axis along CT axis a
    if len(set(perm.tolist())) != 3 or np.max(np.abs(np.abs(cos[perm, [0, 1, 2]]) - 1)) > DIRECTION_TOL:
        angle = float(np.degrees(np.arccos(np.clip(np.min(np.abs(cos[perm, [0, 1, 2]])), -1, 1))))
        raise InputError(f"label map in {source} is rotated {angle:.1f} deg against the CT; resample it onto "
                         f"the CT (3D Slicer: Segmentations > Export to files with the CT as reference) and "
                         f"give that file")
    m = np.linalg.inv(lab) @ ct                                     # CT index -> label index
    shape_ijk = volume.shape[::-1]
    index, valid = [], []
    exact = True
    for a in range(3):
        p = perm[a]
        n = np.arange(shape_ijk[a])
        x = m[p, a] * n + m[p, 3]
        idx = np.rint(x).astype(np.int64)
        exact &= bool(np.max(np.abs(x - idx), initial=0) * lspacing[p] <= GRID_TOL_MM)
        ok = (idx >= 0) & (idx < arr.shape[p])
        index.append(idx[ok])
        valid.append(ok)
    _check_inside(arr, m, shape_ijk, cspacing, values, used, source)
    out = np.zeros(shape_ijk, dtype=arr.dtype)
    moved = arr.transpose(perm)
    if all(v.all() for v in valid) and exact and all(
            np.array_equal(ix, np.arange(len(ix))) for ix in index) and moved.shape == out.shape:
        out = moved
    else:
        out[np.ix_(*valid)] = moved[np.ix_(*index)]
    if not exact:
        log.info("label map of %s resampled onto the CT grid (nearest neighbour)", source)
    return np.ascontiguousarray(out.transpose(2, 1, 0)), not exact


def _check_inside(arr, m, shape_ijk, cspacing, values, used, source):
    """Every voxel of a used label must lie within half a voxel (plus GRID_TOL_MM) of the CT box."""
    from scipy import ndimage as ndi

    inv = np.linalg.inv(m)                                          # label index -> CT index
    if arr.dtype == bool:
        boxes = {1: ndi.find_objects(arr.astype(np.uint8))[0] if arr.any() else None}
    else:
        top = int(max(used, default=0))
        found = ndi.find_objects(np.where((arr > 0) & (arr <= top), arr, 0).astype(np.int32), max_label=top)
        boxes = {v: found[v - 1] for v in used if 0 < v <= len(found)}
    for v, box in boxes.items():
        if box is None:
            continue
        corners = np.array([[s.start if bit == 0 else s.stop - 1 for s, bit in zip(box, bits)]
                            for bits in np.ndindex(2, 2, 2)], dtype=float)
        ct_idx = corners @ inv[:3, :3].T + inv[:3, 3]
        tol = 0.5 + GRID_TOL_MM / np.asarray(cspacing)               # half a voxel, in CT voxels
        lo = ct_idx.min(axis=0)
        hi = ct_idx.max(axis=0)
        n = np.asarray(shape_ijk, dtype=float)
        if np.any(lo < -tol) or np.any(hi > n - 1 + tol):
            raise InputError(f"label {values.get(v, v)!r} in {source} reaches outside the CT (voxel box "
                             f"{np.round(lo, 1).tolist()}..{np.round(hi, 1).tolist()} of a {list(shape_ijk)} "
                             f"grid); it belongs to another scan: give the CT it was drawn on")


def _cut_gaps(labels: np.ndarray, hu: np.ndarray) -> int:
    """Of every pair of 26-adjacent voxels with different non-zero labels clear the darker one (ties:
    the lower label), as the automatic segmentation does. In place; returns the voxels cleared."""
    nz = np.nonzero(labels.any(axis=(1, 2)))[0]
    if len(nz) == 0:
        return 0
    box = tuple(slice(max(int(i[0]) - 1, 0), int(i[-1]) + 2) for i in
                (nz, np.nonzero(labels.any(axis=(0, 2)))[0], np.nonzero(labels.any(axis=(0, 1)))[0]))
    lab = labels[box]
    h = hu[box]
    mark = np.zeros(lab.shape, dtype=bool)
    offsets = [o for o in np.ndindex(3, 3, 3) if o > (1, 1, 1)]      # 13 half-neighbourhood offsets
    for o in offsets:
        d = [c - 1 for c in o]
        sa = tuple(slice(max(-di, 0), lab.shape[ax] - max(di, 0)) for ax, di in enumerate(d))
        sb = tuple(slice(max(di, 0), lab.shape[ax] - max(-di, 0)) for ax, di in enumerate(d))
        a, b = lab[sa], lab[sb]
        touch = (a != 0) & (b != 0) & (a != b)
        if not touch.any():
            continue
        ha, hb = h[sa], h[sb]
        a_goes = (ha < hb) | ((ha == hb) & (a < b))
        mark[sa] |= touch & a_goes
        mark[sb] |= touch & ~a_goes
    lab[mark] = 0
    return int(mark.sum())


def _crop(volume: Volume, labels: np.ndarray, margin: int = 2) -> tuple[Volume, np.ndarray]:
    idx = [np.flatnonzero(labels.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    lo = tuple(max(int(i[0]) - margin, 0) for i in idx)
    hi = tuple(min(int(i[-1]) + 1 + margin, n) for i, n in zip(idx, labels.shape))
    sub = volume.crop(lo, hi)
    return sub, np.ascontiguousarray(labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])


def _write_seg_nrrd(path, segmentation: dict, compression_level: int) -> None:
    """``slicerio.write_segmentation(path, segmentation, compression_level, index_order="C")``,
    the same bytes, without the copy of the whole label volume that pynrrd makes to compress it.

    slicerio writes the header of a one-voxel stand-in (its fields do not depend on the voxels
    but for ``sizes``, set here); the voxels, (z, y, x) C-order being the (i, j, k) Fortran-order
    layout NRRD stores, are then gzip-compressed straight from the array's memory in 1 MiB pieces,
    as pynrrd does after its copy.
    """
    import io
    import zlib

    import slicerio

    voxels = np.ascontiguousarray(segmentation["voxels"])
    probe = io.BytesIO()
    slicerio.write_segmentation(probe, dict(segmentation, voxels=np.zeros((1, 1, 1), dtype=voxels.dtype)),
                                compression_level=compression_level, index_order="C")
    header, sep, _ = probe.getvalue().partition(b"\n\n")
    lines = header.split(b"\n")
    sizes = [i for i, line in enumerate(lines) if line.startswith(b"sizes: ")]
    if sep != b"\n\n" or len(sizes) != 1 or lines[sizes[0]] != b"sizes: 1 1 1" \
            or b"encoding: gzip" not in lines:
        raise RuntimeError("unexpected NRRD header from slicerio; cannot write the segmentation")
    lines[sizes[0]] = ("sizes: " + " ".join(str(n) for n in voxels.shape[::-1])).encode("ascii")
    data = memoryview(voxels.reshape(-1)).cast("B")
    compressor = zlib.compressobj(compression_level, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    chunk = 2 ** 20
    with open(path, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n\n")
        for start in range(0, len(data), chunk):
            fh.write(compressor.compress(data[start:start + chunk]))
        fh.write(compressor.flush())


def _on_grid(seg, grid: Volume, labels: np.ndarray | None = None) -> tuple[np.ndarray, tuple[int, int, int]]:
    """``labels`` (default ``seg.labels``, on ``seg.volume``) placed on ``grid`` (``seg.volume`` is
    ``grid`` or a crop of it), and the index of the crop's first voxel on ``grid``."""
    sub = seg.volume
    labels = np.asarray(seg.labels if labels is None else labels)
    if sub.shape == grid.shape and np.allclose(sub.origin, grid.origin, atol=GRID_TOL_MM):
        return labels, (0, 0, 0)
    offset = grid.patient_to_index(np.asarray(sub.origin))[0]
    lo = np.rint(offset).astype(int)
    if (np.abs(offset - lo).max() > 1e-3 or np.any(lo < 0) or np.any(lo + sub.shape > grid.shape)
            or not np.allclose(sub.spacing, grid.spacing)):
        raise InputError("the segmentation's grid is not a crop of the CT's; cannot write label maps")
    out = np.zeros(grid.shape, dtype=labels.dtype)
    out[lo[0]:lo[0] + sub.shape[0], lo[1]:lo[1] + sub.shape[1], lo[2]:lo[2] + sub.shape[2]] = labels
    return out, tuple(int(v) for v in lo)


def _extent(box_zyx) -> list[int]:
    """Slicer's ``Segment{N}_Extent``: first and last index along i, j, k of a (z, y, x) slice box."""
    if box_zyx is None:
        return [0, -1, 0, -1, 0, -1]
    return [v for s in box_zyx[::-1] for v in (int(s.start), int(s.stop) - 1)]


def _color(name: str) -> tuple[int, int, int]:
    try:
        from printpipe.export import part_color

        return tuple(int(c) for c in part_color(name))[:3]  # type: ignore[return-value]
    except Exception:  # pragma: no cover - colours are cosmetic
        return (227, 218, 201)


# ------------------------------------------------------------------------------------------------
# frame of reference
# ------------------------------------------------------------------------------------------------
def _check_frame(ds, volume: Volume, ct_source, source: str, warnings: list[str]) -> None:
    """A DICOM label drawn on another scan is refused before any voxel is read."""
    from printpipe.dicom import uid_hash

    series, frames = set(), set()
    for fr in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        frames.add(str(fr.get("FrameOfReferenceUID", "")))
        for st in fr.get("RTReferencedStudySequence", []) or []:
            for se in st.get("RTReferencedSeriesSequence", []) or []:
                series.add(str(se.get("SeriesInstanceUID", "")))
    for se in ds.get("ReferencedSeriesSequence", []) or []:
        series.add(str(se.get("SeriesInstanceUID", "")))
    if ds.get("FrameOfReferenceUID"):
        frames.add(str(ds.FrameOfReferenceUID))
    series.discard("")
    frames.discard("")
    ct_series = volume.meta.get("series_uid_hash")
    if ct_series and ct_series in {uid_hash(s) for s in series}:
        return
    ct_frame = volume.meta.get("frame_of_reference_uid_hash") or _ct_frame_hash(ct_source, ct_series)
    if ct_frame and frames:
        if ct_frame in {uid_hash(f) for f in frames}:
            return
        raise InputError(f"frame of reference mismatch: {source} was drawn on another scan (its frame of "
                         f"reference is not the CT's); give the CT series it belongs to, or register and "
                         f"export it on this CT first")
    warnings.append(f"{source} names neither this CT series nor a frame of reference printpipe could compare; "
                    f"its position was checked in patient millimetres only")


def _ct_frame_hash(ct_source, series_hash) -> str | None:
    """Hash of the CT's FrameOfReferenceUID, read from the first file of its series in ``ct_source``."""
    if ct_source is None or not series_hash:
        return None
    import pydicom

    from printpipe.dicom import uid_hash

    src = Path(ct_source)
    files = [src] if src.is_file() else (p for p in src.rglob("*") if p.is_file())
    for i, f in enumerate(files):
        if i > 5000:
            break
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True,
                                 specific_tags=["SeriesInstanceUID", "FrameOfReferenceUID"])
        except Exception:  # not DICOM (zip, readme ...): keep looking
            continue
        if uid_hash(str(ds.get("SeriesInstanceUID", ""))) == series_hash and ds.get("FrameOfReferenceUID"):
            return uid_hash(str(ds.FrameOfReferenceUID))
    return None


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _read_dicom(path: str | os.PathLike, header_only: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"label file {path} does not exist; check the path given to --labels")
    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path.name} is not a readable DICOM file ({exc}); export the structure set "
                         f"or segmentation again") from None


def _dicom_label_in(folder: Path) -> Path | None:
    """The one RTSTRUCT or DICOM SEG file in ``folder`` (searched recursively), or ``None``; several
    are an error, as printpipe cannot know which one is meant."""
    import pydicom

    found = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["Modality"])
        except Exception:  # not DICOM: CT slices of other formats, readme files ...
            continue
        if str(ds.get("Modality", "")).upper() in ("RTSTRUCT", "SEG"):
            found.append(f)
    if len(found) > 1:
        raise InputError(f"folder {folder.name} holds {len(found)} structure sets / segmentations; give the "
                         f"one to print as the file after --labels")
    return found[0] if found else None


def _match_name(name: str, available: list[str], source: str) -> str:
    if name in available:
        return name
    folded = [a for a in available if a.casefold() == str(name).casefold()]
    if len(folded) == 1:
        return folded[0]
    raise InputError(f"{source} has no structure named {name!r}; it holds "
                     f"{', '.join(repr(a) for a in available) or 'none'}: give one of those")


def _tokens(text: str) -> list[str]:
    """Lower-case words of a label name: split at non-letters/digits and at camelCase humps."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", str(text))
    return [t for t in re.split(r"[^A-Za-z0-9]+", text.lower()) if t]


def _safe_name(name: str) -> str:
    """A label name as a part (and file) name: ASCII letters, digits, ``_`` and ``-``."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", str(name).strip()).strip("_")
    return safe or "label"


def _list(names: Iterable[str], limit: int = 12) -> str:
    names = list(dict.fromkeys(names))
    text = ", ".join(repr(n) for n in names[:limit])
    return text + (f" and {len(names) - limit} more" if len(names) > limit else "") if names else "none"


def _file_hash(path: Path) -> str:
    """First 16 hex digits of the SHA-256 of the file (of every file, for a folder): no file name is
    recorded, as it may carry a patient's name."""
    import hashlib

    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
