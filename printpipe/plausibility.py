"""Physical plausibility of a CT series: refuse what no CT scanner and no human body produce.

A header that reads 1,000,000 mm per pixel, a rescale that puts air at 0 HU, a BitsAllocated that
does not describe the pixel data, or one slice of garbage in a good stack all decode without error
and run on to a model that is absurd (a kilometre-wide pelvis) or wrong (no bone, a spike of noise
meshed into the part). The checks here run before any work on the volume, each cheap:

* :func:`check_header` -- from the headers of the chosen stack, before any pixel is decoded: pixel
  spacing, slice spacing and thickness, field of view, patient extent along the table, distance of
  the slices from the scanner origin, and the pixel data length against
  Rows x Columns x BitsAllocated x SamplesPerPixel x frames.
* :func:`foreign_slices` -- from the decoded slices, before they are stacked: a slice whose HU
  statistics differ grossly from its neighbours (corrupted pixels, another reconstruction kernel or
  contrast phase slipped into the stack). :func:`printpipe.dicom.read_series` drops such a slice and
  interpolates across it like a missing slice (within the gap limit) or refuses the series.
* :func:`check_hu` -- from the HU volume: where air, soft tissue and bone lie on the HU scale.

Every problem is one line naming the value seen, the range expected and what to do. ``force=True``
(``--force``) turns the refusals into warnings, which go into the manifest and the report.

Ranges and where they come from
-------------------------------
The limits are deliberately wider (by a factor of about two) than what clinical scanners make, so
that no real series is refused; they exist to stop values that are wrong by orders of magnitude.

* **Pixel spacing 0.02-10 mm** (DICOM PixelSpacing, PS3.3 C.7.6.2.1.1): the in-plane pixel is the
  reconstruction field of view divided by the matrix. The smallest clinical fields of view are
  about 50 mm (inner ear, extremity reconstructions) on 512-1024 matrices (0.05-0.1 mm; ultra-high-
  resolution scanners with 1024/2048 matrices reach about 0.1 mm at larger fields); the largest,
  extended fields of wide-bore scanners (bores of 70-90 cm) are about 800 mm on 256-512 matrices
  (1.5-3 mm). The real series in ``../shared/realdata`` have 0.48-1.0 mm, ``sample_dicom`` 2.0 mm.
  The upper limit keeps downsampled research exports and coarse test series (6.25 mm); the check
  is there for values wrong by orders of magnitude.
* **Slice thickness 0.2-20 mm** (SliceThickness, PS3.3 C.7.6.2): nominal reconstructed thickness
  from the thinnest detector rows (0.25-0.625 mm) to the 10 mm slices of older sequential scanners
  and thick slabs. A missing or zero thickness (type 2 attribute) is not checked.
* **Slice spacing 0.1-20 mm** (median step between ImagePositionPatient along the slice normal):
  reconstruction increments from 0.1 mm (overlapping reconstructions) to 20 mm (sequential scans
  with gaps between slices).
* **Field of view at most 1000 mm** (Rows x PixelSpacing, Columns x PixelSpacing): no CT bore is
  wider than about 90 cm, and no reconstruction field larger than the bore.
* **Extent along the slice normal at most 2500 mm**: a scan cannot be longer than the patient (the
  tallest recorded human was 272 cm; CT tables travel about 2 m).
* **Slice positions within 10 m of the scanner origin** (ImagePositionPatient): patient
  coordinates are measured from a point in the gantry or on the table; beyond this the float32
  coordinates of an STL lose sub-millimetre precision (their spacing is 1 mm at 16.8 m).
* **Air at -1000 HU (accepted -1200..-800), soft tissue at -250..250 HU, bone at most 4000 HU**
  (the Hounsfield scale: air -1000, water 0 by definition; fat about -100, muscle and brain
  20-60, cortical bone up to about 2000-3000 HU). The levels are found on a histogram of a
  subsample: air is the lowest prominent peak below -500 HU, soft tissue the largest prominent
  peak above it, bone the 99.5th percentile of the voxels above air. A rescale error (a missing
  or doubled RescaleIntercept, a wrong RescaleSlope) moves them by hundreds or thousands of HU.
  Metal (which reaches the top of the extended CT scale) is too small a fraction of the body to
  move the 99.5th percentile.
* **Pixel data length**: Rows x Columns x BitsAllocated/8 x SamplesPerPixel x NumberOfFrames bytes
  exactly (plus one pad byte when odd), DICOM PS3.5 8.1.1, for native (uncompressed) transfer
  syntaxes; encapsulated (compressed) data is checked by its decoder.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from printpipe.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "PIXEL_SPACING_MM",
    "SLICE_THICKNESS_MM",
    "SLICE_SPACING_MM",
    "MAX_FOV_MM",
    "MAX_EXTENT_MM",
    "MAX_POSITION_MM",
    "AIR_HU",
    "TISSUE_HU",
    "MAX_BONE_HU",
    "ForeignSlice",
    "check_header",
    "check_hu",
    "foreign_slices",
    "hu_levels",
    "settle",
]

#: Accepted ranges (see the module docstring for their sources).
PIXEL_SPACING_MM = (0.02, 10.0)
SLICE_THICKNESS_MM = (0.2, 20.0)
SLICE_SPACING_MM = (0.1, 20.0)
MAX_FOV_MM = 1000.0
MAX_EXTENT_MM = 2500.0
MAX_POSITION_MM = 10_000.0
AIR_HU = (-1200.0, -800.0)
TISSUE_HU = (-250.0, 250.0)
MAX_BONE_HU = 4000.0

def settle(problems: Sequence[str], force: bool) -> list[str]:
    """Raise the first problem as :class:`InputError`, or with ``force`` return them as warnings."""
    if not problems:
        return []
    if not force:
        raise InputError(problems[0])
    warned = []
    for p in problems:
        log.warning("continuing because of --force: %s", p)
        warned.append(f"implausible input accepted with --force: {p}")
    return warned


# ------------------------------------------------------------------------------------------------
# headers
# ------------------------------------------------------------------------------------------------
def check_header(info: Any, frames: Sequence[Any], normal: np.ndarray, *, force: bool = False) -> list[str]:
    """Check the geometry and pixel data length of a stack from its headers only.

    Parameters
    ----------
    info : printpipe.dicom.SeriesInfo
        The chosen stack (``key``, ``rows``, ``cols``, ``pixel_spacing``, ``thickness``, ``spacing``).
    frames : sequence of printpipe.dicom._Frame
        Its frames; ``position`` (LPS mm) and ``file`` (``rows``, ``cols``, ``bits_allocated``,
        ``samples``, ``n_frames``, ``pixel_bytes``).
    normal : (3,) float
        Slice normal.
    force : bool
        Return the problems as warnings instead of raising.

    Returns
    -------
    list of str
        Warnings (only with ``force``).

    Raises
    ------
    InputError
        The first implausible value, in one line: value seen, range expected, what to do.
    """
    key = info.key
    to_warn: list[str] = []  # refused, or with --force warned about
    dy, dx = (float(v) for v in info.pixel_spacing)
    lo, hi = PIXEL_SPACING_MM
    if not (lo <= dy <= hi and lo <= dx <= hi):
        to_warn.append(
            f"pixel spacing {dy:g} x {dx:g} mm of stack {key} is outside the {lo:g}-{hi:g} mm that CT "
            f"scanners produce; correct PixelSpacing (0028,0030) or export the series again, "
            f"or pass --force to continue with a warning")
    thick = info.thickness
    lo, hi = SLICE_THICKNESS_MM
    if thick is not None and thick > 0 and not lo <= thick <= hi:
        to_warn.append(
            f"slice thickness {thick:g} mm of stack {key} is outside the {lo:g}-{hi:g} mm that CT "
            f"scanners produce; correct SliceThickness (0018,0050) or export the series again, "
            f"or pass --force to continue with a warning")
    pos = np.array([fr.position for fr in frames], dtype=float).reshape(-1, 3)
    s = np.sort(pos @ np.asarray(normal, float))
    steps = np.diff(s)
    steps = steps[steps > 1e-3]
    lo, hi = SLICE_SPACING_MM
    if len(steps):
        step = float(np.median(steps))
        if not lo <= step <= hi:
            to_warn.append(
                f"slice spacing {step:g} mm of stack {key} (median step between ImagePositionPatient "
                f"along the slice normal) is outside the {lo:g}-{hi:g} mm that CT scanners produce; "
                f"correct ImagePositionPatient (0020,0032) or export the series again, "
                f"or pass --force to continue with a warning")
    fov = max(info.rows * dy, info.cols * dx)
    if not to_warn and fov > MAX_FOV_MM:  # an absurd pixel spacing already says it
        to_warn.append(
            f"field of view {info.cols * dx:g} x {info.rows * dy:g} mm of stack {key} (Columns x Rows "
            f"x PixelSpacing) is wider than the {MAX_FOV_MM:g} mm a CT bore holds; correct "
            f"PixelSpacing (0028,0030) or Rows/Columns, or export the series again, "
            f"or pass --force to continue with a warning")
    extent = float(s[-1] - s[0]) if len(s) else 0.0
    if extent > MAX_EXTENT_MM and not any("slice spacing" in p for p in to_warn):
        to_warn.append(
            f"the slices of stack {key} span {extent:g} mm along the slice normal, more than the "
            f"{MAX_EXTENT_MM:g} mm of a human body; correct ImagePositionPatient (0020,0032) or remove "
            f"files of other scans, or pass --force to continue with a warning")
    far = float(np.abs(pos).max()) if len(pos) else 0.0
    if far > MAX_POSITION_MM:
        to_warn.append(
            f"slices of stack {key} lie {far:g} mm from the scanner origin (ImagePositionPatient), "
            f"expected within {MAX_POSITION_MM:g} mm; correct ImagePositionPatient (0020,0032) or "
            f"export the series again, or pass --force to continue with a warning")
    to_warn += _pixel_length_problems(key, frames)
    return settle(to_warn, force)


def _pixel_length_problems(key: str, frames: Sequence[Any]) -> list[str]:
    files: dict[str, Any] = {}
    for fr in frames:
        files.setdefault(fr.file.name, fr.file)
    bad = []
    for f in files.values():
        declared = getattr(f, "pixel_bytes", None)
        if declared is None:
            continue
        expected = f.rows * f.cols * f.bits_allocated * getattr(f, "samples", 1) * f.n_frames // 8
        if declared not in (expected, expected + 1):
            bad.append((f, declared, expected))
    if not bad:
        return []
    f, declared, expected = bad[0]
    to_warn: list[str] = []
    to_warn.append(
        f"pixel data of {len(bad)} of {len(files)} file(s) of stack {key} holds {declared} bytes, but "
        f"Rows x Columns x BitsAllocated x SamplesPerPixel x frames = {f.rows} x {f.cols} x "
        f"{f.bits_allocated} bits x {getattr(f, 'samples', 1)} x {f.n_frames} = {expected} bytes: the "
        f"header does not describe the pixels; correct BitsAllocated (0028,0100), Rows/Columns or "
        f"SamplesPerPixel, or export the series again, or pass --force to continue with a warning")
    return to_warn


# ------------------------------------------------------------------------------------------------
# HU scale
# ------------------------------------------------------------------------------------------------
def hu_levels(hu: np.ndarray) -> dict[str, float | None]:
    """Air, soft-tissue and bone levels (HU) of a volume, from a histogram of a subsample.

    Returns ``{"air": ..., "tissue": ..., "bone": ..., "sampled": n}``; a level is None where the
    volume has no such class (no air in a field of view inside the body).

    Notes
    -----
    About 1-2 million voxels are sampled (every 4th row and column of every k-th slice). A value
    that alone holds more than 0.5 % of them at the low end (padding outside the reconstruction
    circle, or air clipped by the scanner at -1024) is left out. The histogram has 10 HU bins,
    smoothed over 50 HU; a *prominent peak* is a maximum over +-100 HU that holds at least 3 % of
    the voxels within +-50 HU. Air is the lowest prominent peak when it lies below -500 HU or when a
    second prominent peak lies 600-1400 HU above it (air and tissue of a shifted rescale).
    """
    hu = np.asarray(hu)
    step_z = max(1, int(math.ceil(hu.shape[0] * (hu.shape[1] // 4 + 1) * (hu.shape[2] // 4 + 1) / 1.5e6)))
    sample = hu[::step_z, ::4, ::4].ravel()
    counts = np.bincount(sample.astype(np.int32) + 32768, minlength=65536)
    total = int(sample.size)
    # padding / clipping spikes at the low end: the minimum value and -1024
    lowest = int(np.flatnonzero(counts)[0]) if total else 0
    for v in {lowest, -1024 + 32768}:
        if counts[v] > 0.005 * total:
            counts[v] = 0
    kept = int(counts.sum())
    out: dict[str, float | None] = {"air": None, "tissue": None, "bone": None, "sampled": total}
    if kept < 100:
        return out
    # 10 HU bins from -32768
    bins = np.append(counts, np.zeros(4, counts.dtype)).reshape(-1, 10).sum(axis=1).astype(float)
    smooth = np.convolve(bins, np.ones(5) / 5, mode="same")
    window_max = np.lib.stride_tricks.sliding_window_view(np.pad(smooth, 10), 21).max(axis=1)
    local_max = (smooth == window_max) & (smooth > 0)
    mass = np.convolve(bins, np.ones(11), mode="same")  # +-50 HU
    peaks = np.flatnonzero(local_max & (mass >= 0.03 * kept))
    centre = lambda b: float(-32768 + 10 * b + 4.5)  # noqa: E731 - bin centre in HU
    levels = [centre(b) for b in peaks]
    air_bin = None
    if len(peaks):
        first = levels[0]
        above = [lv for lv in levels[1:] if 600 <= lv - first <= 1400]
        if first < -500 or above:
            air_bin = int(peaks[0])
            out["air"] = first
    body_peaks = [b for b in peaks if air_bin is None or centre(b) - centre(air_bin) >= 500]
    if body_peaks:
        out["tissue"] = centre(max(body_peaks, key=lambda b: mass[b]))
    # bone: 99.5th percentile of what lies above air (the body)
    floor = (out["air"] + 500) if out["air"] is not None else -32768
    cum_from = int(min(max(floor + 32768, 0), 65535))
    body = counts[cum_from:]
    if body.sum() > 0:
        cdf = np.cumsum(body)
        out["bone"] = float(np.searchsorted(cdf, 0.995 * cdf[-1]) + cum_from - 32768)
    return out


def check_hu(hu: np.ndarray, *, rescale: Sequence[float] | None = None, force: bool = False
             ) -> tuple[list[str], dict[str, Any]]:
    """Check that air, soft tissue and bone lie where the Hounsfield scale puts them.

    Parameters
    ----------
    hu : (nz, ny, nx) int16 ndarray
    rescale : (slope, intercept), optional
        RescaleSlope and RescaleIntercept of the series, named in the messages.
    force : bool
        Return the problems as warnings instead of raising.

    Returns
    -------
    warnings : list of str
        Only with ``force``.
    levels : dict
        ``air``, ``tissue``, ``bone`` (HU or None) and ``sampled`` (voxels looked at).

    Raises
    ------
    InputError
        Air outside -1200..-800 HU, soft tissue outside -250..250 HU or bone above 4000 HU.
    """
    levels = hu_levels(hu)
    where = ""
    if rescale is not None:
        where = f" (RescaleSlope {float(rescale[0]):g}, RescaleIntercept {float(rescale[1]):g})"
    to_warn: list[str] = []  # refused, or with --force warned about
    air, tissue, bone = levels["air"], levels["tissue"], levels["bone"]
    if air is not None and not AIR_HU[0] <= air <= AIR_HU[1]:
        to_warn.append(f"air lies at {air:.0f} HU in this series{where}, expected about -1000 HU "
                        f"({AIR_HU[0]:g}..{AIR_HU[1]:g}); check RescaleSlope (0028,1053) and RescaleIntercept "
                        f"(0028,1052) or export the series again in Hounsfield units, "
                        f"or pass --force to continue with a warning")
    if tissue is not None and not TISSUE_HU[0] <= tissue <= TISSUE_HU[1]:
        to_warn.append(f"soft tissue lies at {tissue:.0f} HU in this series{where}, expected "
                        f"{TISSUE_HU[0]:g}..{TISSUE_HU[1]:g} HU (water is 0); check RescaleSlope (0028,1053) and "
                        f"RescaleIntercept (0028,1052) or export the series again in Hounsfield units, "
                        f"or pass --force to continue with a warning")
    if bone is not None and bone > MAX_BONE_HU:
        to_warn.append(f"bone reaches {bone:.0f} HU in this series{where} (99.5th percentile of the "
                        f"body), beyond the {MAX_BONE_HU:g} HU that bone has in CT; check RescaleSlope (0028,1053) "
                        f"and RescaleIntercept (0028,1052) or export the series again in Hounsfield units, "
                        f"or pass --force to continue with a warning")
    return settle(to_warn, force), levels


# ------------------------------------------------------------------------------------------------
# slices that do not belong
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForeignSlice:
    """A slice whose HU statistics differ grossly from its neighbours.

    Attributes
    ----------
    index : int
        Index in the sorted stack handed to :func:`foreign_slices`.
    reason : str
        What differs, with the slice's value and its neighbours' (for the message).
    """

    index: int
    reason: str


# Per-slice statistics and how far a slice must stand from its neighbours to be foreign: the
# larger of an absolute floor ("gross") and 8 times the series' own slice-to-slice variation.
# Largest natural deviations seen on the real series (../shared/realdata, sample_dicom), as
# fractions of the limit: air 0.39 (0.08, at the vertex of the 7 mm head slices), out-of-range 0,
# soft-tissue mean 0.45 (19 HU, same place), log noise 0.30 (sample_dicom): about half the limit.
# Damage found on copies (tests/test_plausibility.py and the issue note): random pixels, a zeroed
# slice inside the body, a high-frequency boost that raises the noise 1.6x or more, soft tissue
# raised by about 60-100 HU; at the top slice of a head, where the body is small, less.
_FLOORS = {"air": 0.2, "invalid": 0.02, "tissue": 40.0, "noise": math.log(1.6)}
_K_SCALES = 8.0
_NEIGHBOURS = 2  # on each side


def foreign_slices(slices: np.ndarray) -> list[ForeignSlice]:
    """Find slices whose HU statistics differ grossly from their neighbours.

    Parameters
    ----------
    slices : (n, rows, cols) int16 ndarray
        HU slices sorted along the slice normal (before resampling).

    Returns
    -------
    list of ForeignSlice
        Sorted by index; empty for a consistent stack or fewer than 5 slices.

    Notes
    -----
    Four statistics per slice, on every 16th row: the fraction of air
    (< -500 HU); the fraction of values no CT holds (< -1100 or > 4000 HU; padding becomes -1024
    before this); the mean of soft tissue (-200..300 HU), which a contrast phase raises; and the log
    of the mean absolute difference between horizontally adjacent soft-tissue pixels, the noise
    texture that a sharper reconstruction kernel raises. The last two are used only on slices with
    at least 5 % soft tissue. A slice is foreign when a statistic differs from the median of the
    two slices on *each* side by more than the threshold, in the same direction (a step between two
    parts of a series, such as 4 mm and 7 mm slices, is not an outlier); at either end of the stack
    the one side present decides. Slices found are left out of the neighbourhoods and the search
    repeated (two adjacent foreign slices), at most three times.
    """
    n = slices.shape[0]
    if n < 5:
        return []
    feats = _slice_features(slices)
    found: dict[int, str] = {}
    for _round in range(3):
        new = False
        for name, f in feats.items():
            valid = np.isfinite(f)
            valid[list(found)] = False
            idx = np.flatnonzero(valid)
            if len(idx) < 5:
                continue
            g = f[idx]
            diffs = np.abs(np.diff(g))
            scale = 1.4826 * float(np.median(diffs)) if len(diffs) else 0.0
            limit = max(_FLOORS[name], _K_SCALES * scale)
            left, right = _side_medians(g)
            dl, dr = g - left, g - right  # NaN where a side is missing (the stack's ends)
            both = np.isfinite(dl) & np.isfinite(dr)
            dev = np.where(both, np.minimum(np.abs(dl), np.abs(dr)),
                           np.where(np.isfinite(dl), np.abs(dl), np.abs(dr)))
            dev[both & (np.sign(dl) != np.sign(dr))] = 0.0  # a step between two parts, not an outlier
            for j in np.flatnonzero(dev > limit):
                i = int(idx[j])
                if i in found:
                    continue
                ref = left[j] if np.isfinite(left[j]) else right[j]
                found[i] = _describe(name, float(g[j]), float(ref))
                new = True
        if not new:
            break
    return [ForeignSlice(i, found[i]) for i in sorted(found)]


def _side_medians(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median of the ``_NEIGHBOURS`` (2) values before and after each value (NaN where none)."""
    n = len(g)
    pad = np.concatenate([np.full(2, np.nan), g, np.full(2, np.nan)])
    before = np.stack([pad[0:n], pad[1:n + 1]])   # g[j-2], g[j-1]
    after = np.stack([pad[3:n + 3], pad[4:n + 4]])  # g[j+1], g[j+2]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns at the ends
        return np.nanmedian(before, axis=0), np.nanmedian(after, axis=0)


def _slice_features(slices: np.ndarray, row_step: int = 16) -> dict[str, np.ndarray]:
    # numpy, not numba: reading a series (``printpipe inspect`` too) should not pay numba's start-up
    # of about half a second; every 16th row is 32 rows of a 512 x 512 slice (16,000 pixels), about
    # 0.13 ms a slice; the real series keep their largest natural deviation under half the limit
    x = slices[:, ::row_step, :]
    seen = float(max(x.shape[1] * x.shape[2], 1))
    air = np.count_nonzero(x < -500, axis=(1, 2)) / seen
    invalid = np.count_nonzero((x < -1100) | (x > 4000), axis=(1, 2)) / seen
    soft = (x >= -200) & (x <= 300)
    n_soft = np.count_nonzero(soft, axis=(1, 2)).astype(float)
    s_soft = np.where(soft, x, 0).sum(axis=(1, 2), dtype=np.int64).astype(float)
    m = x.shape[2] // 2
    pair = soft[:, :, 0:2 * m:2] & soft[:, :, 1:2 * m:2]
    diff = np.abs(x[:, :, 0:2 * m:2].astype(np.int32) - x[:, :, 1:2 * m:2])
    n_pair = np.count_nonzero(pair, axis=(1, 2)).astype(float)
    s_pair = np.where(pair, diff, 0).sum(axis=(1, 2), dtype=np.int64).astype(float)
    ok = n_soft >= 0.05 * seen
    with np.errstate(invalid="ignore", divide="ignore"):
        tissue = np.where(ok, s_soft / np.maximum(n_soft, 1.0), np.nan)
        noise = np.where(ok & (n_pair > 0), np.log(np.maximum(s_pair, 1.0) / np.maximum(n_pair, 1.0)), np.nan)
    # the order is that of the reasons given: values no CT holds say the most
    return {"invalid": invalid, "air": air, "tissue": tissue, "noise": noise}


def _describe(name: str, value: float, ref: float) -> str:
    if name == "air":
        return f"{100 * value:.0f} % air against {100 * ref:.0f} % in the neighbouring slices"
    if name == "invalid":
        return (f"{100 * value:.0f} % of pixels outside -1100..4000 HU against {100 * ref:.0f} % in the "
                f"neighbouring slices (corrupted pixels)")
    if name == "tissue":
        return (f"soft tissue at {value:.0f} HU against {ref:.0f} HU in the neighbouring slices "
                f"(another contrast phase?)")
    return (f"pixel noise {math.exp(value):.0f} HU against {math.exp(ref):.0f} HU in the neighbouring "
            f"slices (another reconstruction kernel?)")
