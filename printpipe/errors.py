"""The printpipe exception tree.

::

    PrintpipeError                      base of every error printpipe raises on purpose
     +-- InputError (ValueError)        DICOM input, series choice, geometry, bad options
     +-- SegmentationError              nothing (or nonsense) found in the volume
     +-- MeshError                      a mesh that cannot be made closed and manifold
     +-- PrinterError                   printer profile problems, model does not fit, unsafe G-code

Every message says what is wrong, the value seen, and what to do about it. The CLI prints
``TypeName: message`` on one line and exits 1; the traceback only appears with ``--debug``.
"""

from __future__ import annotations

__all__ = [
    "PrintpipeError",
    "InputError",
    "SegmentationError",
    "MeshError",
    "PrinterError",
]


class PrintpipeError(Exception):
    """Base class of all errors printpipe raises deliberately."""


class InputError(PrintpipeError, ValueError):
    """The input (DICOM folder, series, option value) cannot be used as given."""


class SegmentationError(PrintpipeError):
    """Segmentation found nothing usable (for example no bone at the threshold)."""


class MeshError(PrintpipeError):
    """A mesh cannot be made closed, manifold and outward-oriented."""


class PrinterError(PrintpipeError):
    """Printer profile problem, model does not fit the printer, or unsafe G-code."""
