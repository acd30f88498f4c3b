"""Command-line options of the surface stage (``--smoothing``, ``--smooth-iterations``, ``--smooth-passband``)."""

from __future__ import annotations

import argparse

from printpipe.surface import SurfaceConfig

__all__ = ["add_arguments", "config_from_args"]

_DEFAULT = SurfaceConfig()


def add_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the surface options as an argument group of ``parser``; return the group.

    Destinations: ``smoothing`` (str), ``smooth_iterations`` (int), ``smooth_passband`` (float),
    each defaulting to :class:`~printpipe.surface.SurfaceConfig`'s value.
    """
    group = parser.add_argument_group("surface", "marching cubes and mesh smoothing")
    group.add_argument("--smoothing", choices=("sinc", "taubin", "none"), default=_DEFAULT.smoothing,
                       dest="smoothing",
                       help="smoothing filter: windowed sinc as in 3D Slicer (default), Taubin lambda/mu, or none")
    group.add_argument("--smooth-iterations", type=int, default=_DEFAULT.smooth_iterations, metavar="N",
                       dest="smooth_iterations",
                       help=f"smoothing iterations (default {_DEFAULT.smooth_iterations}; 0 = no smoothing)")
    group.add_argument("--smooth-passband", type=float, default=_DEFAULT.smooth_passband, metavar="F",
                       dest="smooth_passband",
                       help=f"windowed-sinc pass band in (0, 2), lower is smoother (default {_DEFAULT.smooth_passband})")
    return group


def config_from_args(args: argparse.Namespace) -> SurfaceConfig:
    """Build a :class:`~printpipe.surface.SurfaceConfig` from parsed arguments (missing ones keep defaults).

    Raises
    ------
    printpipe.errors.InputError
        An option value is out of range (the message names the field).
    """
    return SurfaceConfig(
        smoothing=getattr(args, "smoothing", _DEFAULT.smoothing),
        smooth_iterations=getattr(args, "smooth_iterations", _DEFAULT.smooth_iterations),
        smooth_passband=getattr(args, "smooth_passband", _DEFAULT.smooth_passband),
    )
