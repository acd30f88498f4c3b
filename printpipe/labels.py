"""Label maps in and out: the segmentation tools surgeons already use.

Out
    :func:`write` saves the final labels of the exported parts as ``segmentation.seg.nrrd`` (3D Slicer's
    segmentation format, written with pynrrd) and ``segmentation.nii.gz`` in RAS with a ``labels.json``
    names table (written with nibabel, laid out as TotalSegmentator writes its multilabel file).

In
    :func:`read` turns a label map the user brings into a :class:`~printpipe.segment.Segmentation` on
    the CT's grid: a 3D Slicer ``.seg.nrrd``, a NIfTI label map with a names table, TotalSegmentator's
    output (a folder of one mask per structure or its multilabel file), a DICOM SEG, or an RTSTRUCT
    (:func:`rtstruct_masks` rasterises its closed planar contours, holes by even-odd).

Grids are compared with the CT in patient space (LPS mm) within :data:`GRID_TOL_MM` and
:data:`DIRECTION_TOL`; a label map on the same patient box with other sampling is resampled with
nearest neighbour. Every problem a user can fix (another frame of reference, an empty label, a label
outside the CT, an unknown name) raises :class:`~printpipe.errors.InputError` with one sentence that
says what to do.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from printpipe.errors import InputError
from printpipe.volume import Volume

log = logging.getLogger(__name__)

__all__ = [
    "rtstruct_masks",
    "GRID_TOL_MM",
    "DIRECTION_TOL",
]

#: largest distance (mm) between a label grid's voxel centres and the CT's that still counts as the
#: same grid: a tenth of a millimetre is far below any CT voxel and above the float32 rounding of
#: NIfTI/NRRD headers and the 6-decimal DS strings of DICOM.
GRID_TOL_MM = 0.1
#: largest difference of direction cosines that still counts as the same orientation (0.06 deg)
DIRECTION_TOL = 1e-3
#: a planar contour may stray this far (in slices) from its own mean slice position
_PLANAR_TOL_SLICES = 0.1


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
    rois = {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    contours: dict[str, list[np.ndarray]] = defaultdict(list)
    for rc in ds.get("ROIContourSequence", []):
        name = rois.get(int(rc.ReferencedROINumber))
        if name is None:
            continue
        for c in rc.get("ContourSequence", []) or []:
            if str(c.get("ContourGeometricType", "")).upper() != "CLOSED_PLANAR":
                continue
            pts = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
            if len(pts) >= 3:
                contours[name].append(pts)
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
# helpers
# ------------------------------------------------------------------------------------------------
def _read_dicom(path: str | os.PathLike):
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"label file {path} does not exist; check the path given to --labels")
    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise InputError(f"{path.name} is not a readable DICOM file ({exc}); export the structure set "
                         f"or segmentation again") from None


def _match_name(name: str, available: list[str], source: str) -> str:
    if name in available:
        return name
    folded = [a for a in available if a.casefold() == str(name).casefold()]
    if len(folded) == 1:
        return folded[0]
    raise InputError(f"{source} has no structure named {name!r}; it holds "
                     f"{', '.join(repr(a) for a in available) or 'none'}: give one of those")
