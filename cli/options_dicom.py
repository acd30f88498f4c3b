"""DICOM reading options shared by ``printpipe run`` and ``printpipe batch``."""

from __future__ import annotations

import argparse

from printpipe.dicom import DicomConfig

__all__ = ["add_arguments", "config_from_args"]

_DEFAULT = DicomConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``DICOM input`` option group: --series, --allow-gaps, --max-gap, --force, --read-workers."""
    group = parser.add_argument_group("DICOM input")
    group.add_argument(
        "--series", dest="series", metavar="ID", default=None,
        help="read this stack instead of the automatic choice: a stack id from `printpipe inspect` "
             "(or a prefix of >= 6 hex digits), #ROW for a row of its table, or a SeriesNumber")
    group.add_argument(
        "--allow-gaps", dest="allow_gaps", action="store_true", default=_DEFAULT.allow_gaps,
        help="interpolate across missing slices of any size instead of refusing the series")
    group.add_argument(
        "--max-gap", dest="max_gap_slices", metavar="N", type=float, default=_DEFAULT.max_gap_slices,
        help="refuse a series when a step between slices exceeds N nominal spacings "
             f"(default {_DEFAULT.max_gap_slices:g}: one missing slice is interpolated)")
    group.add_argument(
        "--force", dest="force", action="store_true", default=_DEFAULT.force,
        help="continue past the physical plausibility checks (pixel and slice spacing, field of "
             "view, pixel data length, HU scale) and keep slices that do not belong to the stack; "
             "each is a warning in the manifest and report")
    group.add_argument(
        "--read-workers", dest="read_workers", metavar="N", type=int, default=None,
        help="decoding workers: threads, or processes for JPEG, JPEG-LS and JPEG 2000 stacks of "
             "24 files or more (default: min(8, CPU count))")


def config_from_args(args: argparse.Namespace) -> DicomConfig:
    """Build a :class:`DicomConfig` from parsed arguments (``InputError`` names a bad value)."""
    return DicomConfig(
        series=getattr(args, "series", None),
        max_gap_slices=getattr(args, "max_gap_slices", _DEFAULT.max_gap_slices),
        allow_gaps=bool(getattr(args, "allow_gaps", _DEFAULT.allow_gaps)),
        workers=getattr(args, "read_workers", None),
        force=bool(getattr(args, "force", _DEFAULT.force)),
    )
