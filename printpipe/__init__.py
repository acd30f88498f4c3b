"""printpipe: from a CT DICOM series to a watertight, 1:1 bone model and G-code.

Public API::

    from printpipe import run, PipelineConfig, read_series, Volume

``run``/``PipelineConfig`` (pipeline), ``read_series`` (DICOM) and ``segment`` are resolved on first
use, so ``import printpipe`` (and every ``printpipe`` CLI command) does not pay for numba, trimesh
and VTK imports it may not need.
"""

from __future__ import annotations

import importlib
import logging

from printpipe._version import __version__
from printpipe.errors import InputError, MeshError, PrinterError, PrintpipeError, SegmentationError
from printpipe.volume import Volume

logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {
    "run": "printpipe.pipeline",
    "PipelineConfig": "printpipe.pipeline",
    "CaseResult": "printpipe.pipeline",
    "read_series": "printpipe.dicom",
    "discover": "printpipe.dicom",
    "segment": "printpipe.segment",
    "Segmentation": "printpipe.segment",
}

__all__ = [
    "__version__",
    "Volume",
    "PrintpipeError",
    "InputError",
    "SegmentationError",
    "MeshError",
    "PrinterError",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'printpipe' has no attribute {name!r}")
