"""Volume geometry: index <-> patient mapping, cropping, handedness, validation."""

from __future__ import annotations

import numpy as np
import pytest

from printpipe.errors import InputError
from printpipe.volume import Volume


def _vol(direction=np.eye(3)):
    hu = np.zeros((4, 5, 6), np.int16)
    return Volume(hu, spacing=(3.0, 0.5, 0.7), origin=(-10.0, 20.0, 100.0), direction=direction)


def test_index_to_patient_axes_and_spacing():
    v = _vol()
    p = v.index_to_patient(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float))
    np.testing.assert_allclose(p[0], (-10, 20, 100))
    np.testing.assert_allclose(p[1] - p[0], (0, 0, 3.0))   # slice index -> +z by dz
    np.testing.assert_allclose(p[2] - p[0], (0, 0.5, 0))   # row index -> +y by dy
    np.testing.assert_allclose(p[3] - p[0], (0.7, 0, 0))   # column index -> +x by dx
    np.testing.assert_allclose(v.patient_to_index(p), [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], atol=1e-12)


def test_mm_to_patient_matches_index_to_patient():
    c, s = np.cos(0.3), np.sin(0.3)
    v = _vol(direction=np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]))
    kji = np.array([[1.5, 2.0, 3.25]])
    np.testing.assert_allclose(v.mm_to_patient(kji * v.spacing), v.index_to_patient(kji))


def test_handedness():
    assert _vol().handedness == -1.0  # (z, y, x) -> (x, y, z) swaps two axes: a mirror
    flipped = np.diag([1.0, 1.0, -1.0])  # feet-first stacking
    assert _vol(direction=flipped).handedness == 1.0


def test_crop_moves_origin():
    v = _vol()
    c = v.crop((1, 2, 3), (3, 5, 6))
    assert c.shape == (2, 3, 3)
    np.testing.assert_allclose(c.origin, v.index_to_patient(np.array([1, 2, 3], float))[0])
    with pytest.raises(InputError, match="empty"):
        v.crop((2, 2, 2), (2, 3, 3))


def test_validation_names_problem():
    with pytest.raises(InputError, match="int16"):
        Volume(np.zeros((2, 2, 2), np.float32), spacing=(1, 1, 1))
    with pytest.raises(InputError, match="spacing"):
        Volume(np.zeros((2, 2, 2), np.int16), spacing=(1, 0, 1))
    with pytest.raises(InputError, match="3-D"):
        Volume(np.zeros((2, 2), np.int16), spacing=(1, 1, 1))
