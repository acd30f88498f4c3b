"""Small array helpers shared by the segmentation steps."""

from __future__ import annotations

import logging

import numpy as np


log = logging.getLogger(__name__)


def _bbox(mask: np.ndarray, pad: int = 0) -> tuple[list[int], list[int]]:
    lo, hi = [], []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        lo.append(max(int(idx[0]) - pad, 0))
        hi.append(min(int(idx[-1]) + 1 + pad, mask.shape[ax]))
    return lo, hi


def _label_dtype(n: int) -> type:
    """Smallest label dtype for labels up to ``n`` (uint16 halves the memory of int32)."""
    return np.uint16 if n < 65535 else np.int32


def _threads() -> int:
    import os

    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)))

