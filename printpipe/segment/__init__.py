"""Bone segmentation for surgeons: clean, separated, named parts from a CT volume.

``segment(volume, config)`` turns a :class:`~printpipe.volume.Volume` into a
:class:`Segmentation`: a uint8 label image on the (possibly cropped) grid, one label per part
(``pelvis`` or ``hip_left``/``hip_right``, ``sacrum``, ``femur_left``, ``femur_right``, ``spine``;
``bone_N`` for a part that failed its anatomical checks, ``other_N`` for bone outside the pelvic
skeleton such as ribs and arms), and a JSON-ready ``info`` dict that documents every decision.

The steps, one module each (each timed in ``info["timings_s"]``):

1. :mod:`.frame`: the array turned so its axes point superior, posterior and left (feet-first,
   prone and flipped series are handled here, once);
2. :mod:`.body`: crop (``roi_mm`` or ``region="pelvis"``) and the patient's body (the couch,
   cables and external markers lie outside it);
3. :mod:`.threshold`: bone in the preset's HU range, metal reported, islands dropped, marrow
   cavities filled;
4. :mod:`.heads`: the anatomy first: both femoral heads as spheres in their acetabula;
5. :mod:`.anatomy` + :mod:`.separate`: one marker per bone from the heads, a watershed along the
   joint spaces (the hip joint cut on the fitted sphere); without both heads, the landmark-free
   separation of :mod:`.separate` and honest ``bone_N`` names;
6. :mod:`.naming`: names kept only when the part passes its anatomical checks;
7. :mod:`.solid`, :mod:`.spine`, :mod:`.hemipelvis`: solid parts, the lumbar spine cut at the
   L5/S1 disc, the pelvis as one part or two hemipelves.
"""

from __future__ import annotations

import logging
import time


from printpipe.errors import InputError
from printpipe.segment import steps as _steps
from printpipe.segment.config import PART_NAMES, PRESETS, Progress, SegmentConfig, Segmentation, resolve_preset
from printpipe.segment.geometry import (
    Plane,
    femoral_head_diameter,
    fit_sphere,
    midsagittal_plane,
    mirror_mesh,
    surface_deviation,
)
from printpipe.segment.spine import _split_spine  # noqa: F401  (tests use it)
from printpipe.volume import Volume

log = logging.getLogger(__name__)

__all__ = [
    "PRESETS",
    "PART_NAMES",
    "SegmentConfig",
    "Segmentation",
    "Plane",
    "segment",
    "resolve_preset",
    "midsagittal_plane",
    "mirror_mesh",
    "surface_deviation",
    "femoral_head_diameter",
    "fit_sphere",
    "warmup",
]


class _Clock:
    """Times the steps into ``timings`` and reports progress."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.t0 = self.start = time.perf_counter()

    def __call__(self, name: str, frac: float) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.t0, 3)
        self.t0 = now
        if self.progress is not None:
            self.progress("segment", frac)


def segment(volume: Volume, config: SegmentConfig = SegmentConfig(), progress: Progress = None) -> Segmentation:
    """Segment bone into separate, named parts.

    Parameters
    ----------
    volume : Volume
        CT volume in HU.
    config : SegmentConfig
        Options (preset, crop, separation, split, ...).
    progress : callable(stage, fraction), optional
        Called with ``("segment", 0..1)``.

    Returns
    -------
    Segmentation

    Raises
    ------
    SegmentationError
        When no bone lies in the HU range (inside the body and crop box).
    """
    if not isinstance(volume, Volume):
        raise InputError(f"segment needs a printpipe Volume; got {type(volume).__name__}")
    clock = _Clock(progress)
    st = _steps.State.start(volume, config)
    clock("frame", 0.03)
    _steps.crop_and_body(st)
    clock("crop", 0.08)
    _steps.threshold(st)
    clock("threshold", 0.2)
    _steps.islands_and_cavities(st)
    clock("islands", 0.3)
    _steps.separate_and_name(st, clock)
    _steps.finish_parts(st)
    clock("finish", 0.95)
    seg = _steps.result(st)
    clock("frame_back", 1.0)
    clock.timings["total"] = round(time.perf_counter() - clock.start, 3)
    seg.info["timings_s"] = clock.timings
    log.info("segmented %d parts (%s) in %.2f s", len(seg.names), ", ".join(seg.names.values()),
             clock.timings["total"])
    return seg


def warmup() -> None:
    """Compile (or load from numba's cache) the segmentation kernels by segmenting a tiny phantom.

    ``printpipe.kernels.warmup()`` calls this, so a batch parent compiles everything before its
    workers start and the workers only read the cache (numba issue #4807).
    """
    from printpipe.errors import PrintpipeError
    from printpipe.phantom import pelvis_phantom

    phantom = pelvis_phantom((48, 64, 64), spacing=(6.0, 6.0, 6.0))
    try:
        segment(phantom.volume, SegmentConfig(split_hemipelvis=True))
    except PrintpipeError as exc:  # the coarse phantom may lose a part; compiling is what counts
        log.debug("segmentation warmup: %s", exc)
