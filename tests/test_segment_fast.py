"""The fast segmentation helpers give the same voxels as the helpers they replace."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from printpipe.segment._fast import closing
from printpipe.segment.solid import _closing


def _blobs(shape, seed, frac):
    """A random mask of smoothed noise: plates, rods and holes of many sizes, touching the border."""
    rng = np.random.default_rng(seed)
    f = ndi.gaussian_filter(rng.standard_normal(shape), 1.5)
    return f > np.quantile(f, 1.0 - frac)


@pytest.mark.parametrize("spacing", [(3.0, 1.0, 1.0), (0.8, 0.78125, 0.78125), (2.5, 0.7, 0.66), (1.25, 0.9765625, 0.9765625),
                                     (1e6, 0.78125, 0.78125), (1e6, 0.83, 0.83)])
@pytest.mark.parametrize("radius", [3.0, 5.0, 7.0, 10.0, 15.0])
def test_closing_matches_the_distance_transform_closing(spacing, radius):
    for seed, frac in ((1, 0.08), (2, 0.3)):
        m = _blobs((23, 41, 37), seed, frac)
        assert np.array_equal(closing(m, radius, spacing), _closing(m, radius, spacing))


def test_closing_edge_cases():
    sp = (0.8, 0.78125, 0.78125)
    empty = np.zeros((5, 6, 7), bool)
    assert not closing(empty, 5.0, sp).any() and not _closing(empty, 5.0, sp).any()
    full = np.ones((5, 6, 7), bool)
    assert np.array_equal(closing(full, 5.0, sp), _closing(full, 5.0, sp))
    one = empty.copy()
    one[2, 3, 3] = True
    assert np.array_equal(closing(one, 5.0, sp), _closing(one, 5.0, sp))
    # a ring in a slice: the in-plane disc closes its 4-voxel hole, the border erodes nothing inside
    ring = np.zeros((3, 30, 30), bool)
    yy, xx = np.mgrid[:30, :30]
    ring[1] = ((yy - 15) ** 2 + (xx - 15) ** 2 <= 64) & ((yy - 15) ** 2 + (xx - 15) ** 2 > 4)
    got = closing(ring, 3.0, (1e6, 1.0, 1.0))
    assert got[1, 15, 15] and np.array_equal(got, _closing(ring, 3.0, (1e6, 1.0, 1.0)))
