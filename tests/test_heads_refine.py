"""The femoral head refined on its whole edge (printpipe.segment.heads._refine), on a synthetic hip
joint with a known answer: a head (a ball of cancellous bone under a cortex) in a cup of cortical
bone across a 2.5 mm joint space, soft tissue around."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from printpipe.segment import heads as H
from printpipe.volume import Volume

CENTRE = np.array([60.3, 58.6, 61.7])      # LPS mm: off the voxel grid on purpose
RADIUS = 24.6


def _hip(noise_hu: float = 0.0, seed: int = 0) -> Volume:
    sp = (2.0, 1.0, 1.0)
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip((64, 128, 128), sp)), indexing="ij")
    p = np.stack([x, y, z], -1) - CENTRE
    d = np.linalg.norm(p, axis=-1)
    hu = np.full(d.shape, 40.0)                                   # muscle
    hu[d < RADIUS] = 330.0                                        # cancellous head
    hu[(d >= RADIUS - 1.5) & (d < RADIUS)] = 800.0                # subchondral cortex
    cup = (d >= RADIUS + 2.5) & (d < RADIUS + 7.0) & (p[..., 2] > 0.2 * d)
    hu[cup] = 700.0                                               # acetabular roof
    neck = (np.hypot(p[..., 0] - 0.0, p[..., 1]) < 14.0) & (p[..., 2] < 0) & (p[..., 2] > -50)
    hu[neck & (d >= RADIUS)] = 350.0                              # the neck leaves below
    # the scanner's blur (about 1 mm), then noise
    hu = ndi.gaussian_filter(hu, [1.0 / s for s in sp])
    if noise_hu:
        hu += np.random.default_rng(seed).normal(0.0, noise_hu, hu.shape)
    return Volume(np.clip(hu, -1024, 3071).astype(np.int16), sp)


def _head(c: np.ndarray, r: float) -> H.HeadSphere:
    return H.HeadSphere(center=np.asarray(c, float), radius_mm=r, joint_mm=r + 1.0, rms_mm=1.0, inliers=0.2,
                        cup_cover=0.5, core_hu=330.0)


@pytest.mark.parametrize("start, r0", [((0, 0, 0), RADIUS), ((1.5, 4.8, 11.5), 21.0), ((-3, 2, -8), 27.0)])
@pytest.mark.parametrize("noise", [0.0, 30.0])
def test_refine_finds_the_head_from_a_start_off_by_up_to_12_mm(start, r0, noise):
    """From the true head, from a smaller sphere 12.5 mm higher (the wrong solution pelvic-ref003's
    free-surface fit had) and from a larger one lower, the refined sphere lies within 1 mm of the
    head's centre and 1 mm of its radius; also with 30 HU of noise (thin slices, low dose)."""
    vol = _hip(noise)
    h = H._refine(H._Smoothed(vol), _head(CENTRE + np.array(start, float), r0), [], H._fibonacci(H._N_EDGE_DIRS))
    assert np.linalg.norm(h.center - CENTRE) <= 1.0, h.center
    assert abs(h.radius_mm - RADIUS) <= 1.0, h.radius_mm
    assert h.joint_mm > h.radius_mm


def test_refine_leaves_an_implant_head_alone():
    vol = _hip()
    imp = H.ImplantHead(center=CENTRE + 5.0, radius_mm=14.0, joint_mm=20.0, rms_mm=0.5, inliers=0.5,
                        cup_cover=0.8, core_hu=3000.0)
    assert H._refine(H._Smoothed(vol), imp, [], H._fibonacci(H._N_EDGE_DIRS)) is imp


def test_refine_keeps_the_fit_where_no_edge_is_seen():
    """A sphere of head size in plain soft tissue has no edge to move to: the fit is kept."""
    vol = Volume(np.full((64, 128, 128), 40, np.int16), (2.0, 1.0, 1.0))
    h0 = _head(CENTRE, RADIUS)
    assert H._refine(H._Smoothed(vol), h0, [], H._fibonacci(H._N_EDGE_DIRS)) is h0
