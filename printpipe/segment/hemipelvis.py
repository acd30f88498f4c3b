"""Left and right hemipelvis: the two hip bones as one ``pelvis`` part unless the split is asked for.

The hip bones are separate markers of the anatomical watershed (:mod:`.anatomy`), so the split needs
no plane: without it they are joined here."""

from __future__ import annotations

import logging

import numpy as np


log = logging.getLogger(__name__)


def join_hips(labels: np.ndarray, names: dict[int, str]) -> tuple[np.ndarray, dict[int, str]]:
    """``hip_left`` and ``hip_right`` as one part, ``pelvis`` (in place)."""
    inv = {v: k for k, v in names.items()}
    if "hip_left" not in inv or "hip_right" not in inv:
        return labels, names
    a, b = inv["hip_left"], inv["hip_right"]
    labels[labels == b] = a
    names = {k: v for k, v in names.items() if k != b}
    names[a] = "pelvis"
    return labels, names
