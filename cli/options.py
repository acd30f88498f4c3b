"""Options shared by ``printpipe run`` and ``printpipe batch``.

Each stage owns its option group in ``cli/options_<stage>.py`` (``add_arguments(parser)`` and
``config_from_args(args)``); this module composes them into a :class:`~printpipe.pipeline.PipelineConfig`.
"""

from __future__ import annotations

import argparse

from printpipe.cli import (
    options_dicom,
    options_export,
    options_labels,
    options_segment,
    options_slicing,
    options_surface,
)
from printpipe.errors import InputError

__all__ = ["add_pipeline_options", "pipeline_config_from_args"]


def add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    """Add every pipeline option (the same for ``run`` and ``batch``)."""
    options_dicom.add_arguments(parser)
    options_segment.add_arguments(parser)
    options_labels.add_arguments(parser)
    options_surface.add_arguments(parser)
    options_export.add_arguments(parser)
    options_slicing.add_arguments(parser)
    group = parser.add_argument_group("report")
    group.add_argument("--no-report", dest="report", action="store_false", default=True,
                       help="skip the HTML QA report and its pictures (faster)")
    group.add_argument("--show-phi", action="store_true", default=False,
                       help="allow patient identifiers in the manifest input summary (off by default)")


def pipeline_config_from_args(args: argparse.Namespace):
    """Build a :class:`PipelineConfig` from parsed arguments (raises InputError on bad values)."""
    from printpipe.pipeline import PipelineConfig

    repair_cfg, export_cfg = options_export.config_from_args(args)
    labels_cfg = options_labels.config_from_args(args)
    if labels_cfg is not None:
        # --parts then names labels of the file, which the automatic segmentation need not know
        args = argparse.Namespace(**{**vars(args), "parts": None})
    printer, material, slice_cfg = options_slicing.config_from_args(args)
    try:
        return PipelineConfig(
            dicom=options_dicom.config_from_args(args),
            segment=options_segment.config_from_args(args),
            labels=labels_cfg,
            surface=options_surface.config_from_args(args),
            repair=repair_cfg,
            export=export_cfg,
            printer=printer,
            material=material,
            slicing=slice_cfg,
            report=bool(getattr(args, "report", True)),
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(str(exc)) from exc
