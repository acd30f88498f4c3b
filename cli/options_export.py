"""Mesh repair, decimation and export options shared by ``printpipe run`` and ``printpipe batch``."""

from __future__ import annotations

import argparse

from printpipe.errors import InputError
from printpipe.export import FORMATS, ExportConfig
from printpipe.repair import RepairConfig

__all__ = ["add_arguments", "config_from_args"]

_REPAIR = RepairConfig()
_EXPORT = ExportConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``model export`` group: --format, --frame, --label, --target-faces, --max-error-mm,
    --max-hole-edges, --min-shell-mm3, --no-self-intersection-check."""
    group = parser.add_argument_group("model export")
    group.add_argument(
        "--format", dest="formats", metavar="LIST", default=",".join(_EXPORT.formats),
        help=f"model files to write, a comma list of {','.join(FORMATS)} (default {','.join(_EXPORT.formats)}; "
             "model.stl is always written)")
    group.add_argument(
        "--frame", dest="frame", choices=("patient", "plate"), default=_EXPORT.frame,
        help="coordinates of the model files: patient = DICOM LPS mm, lines up with the CT (default); "
             "plate = resting on z = 0, centred on x = y = 0")
    group.add_argument(
        "--label", dest="label", metavar="TEXT", default=None,
        help="emboss a short text (<= 16 characters: letters, digits, space, -_.#) and an L/R marker "
             "on each part; never patient data")
    group.add_argument(
        "--target-faces", dest="target_faces", metavar="N", type=int, default=None,
        help="decimate each part to about N triangles (quadric edge collapse); the distance to the "
             "undecimated mesh is measured and reported")
    group.add_argument(
        "--max-error-mm", dest="max_error_mm", metavar="E", type=float, default=None,
        help="decimate each part as far as the measured distance to the undecimated mesh stays <= E mm")
    group.add_argument(
        "--max-hole-edges", dest="max_hole_edges", metavar="N", type=int, default=_REPAIR.max_hole_edges,
        help=f"fill holes of up to N edges (default {_REPAIR.max_hole_edges}); larger holes fail the part")
    group.add_argument(
        "--min-shell-mm3", dest="min_shell_mm3", metavar="V", type=float, default=_REPAIR.min_shell_mm3,
        help=f"drop closed shells smaller than V mm^3 (default {_REPAIR.min_shell_mm3:g})")
    group.add_argument(
        "--no-self-intersection-check", dest="check_self_intersections", action="store_false",
        default=_REPAIR.check_self_intersections,
        help="skip the (sampled) search for intersecting faces")


def config_from_args(args: argparse.Namespace) -> tuple[RepairConfig, ExportConfig]:
    """Build ``(RepairConfig, ExportConfig)`` from parsed arguments (``InputError`` names a bad value)."""
    formats = getattr(args, "formats", None) or ",".join(_EXPORT.formats)
    if isinstance(formats, str):
        formats = tuple(f for f in (s.strip() for s in formats.split(",")) if f)
    try:
        repair_cfg = RepairConfig(
            min_shell_mm3=getattr(args, "min_shell_mm3", _REPAIR.min_shell_mm3),
            max_hole_edges=getattr(args, "max_hole_edges", _REPAIR.max_hole_edges),
            target_faces=getattr(args, "target_faces", None),
            max_error_mm=getattr(args, "max_error_mm", None),
            check_self_intersections=bool(getattr(args, "check_self_intersections",
                                                  _REPAIR.check_self_intersections)),
        )
        export_cfg = ExportConfig(
            formats=tuple(formats),
            frame=getattr(args, "frame", _EXPORT.frame),
            label=getattr(args, "label", None),
        )
    except InputError:
        raise
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    return repair_cfg, export_cfg
