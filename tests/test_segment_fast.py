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


def test_small_kernels_match_numpy_and_scipy():
    from printpipe.kernels.segment import (
        distance_levels,
        erode_cross,
        hu_window,
        label_counts,
        lut_mask,
    )

    rng = np.random.default_rng(0)
    cross = ndi.generate_binary_structure(3, 1)
    for shape in [(1, 1, 1), (7, 9, 11), (30, 40, 50)]:
        m = ndi.gaussian_filter(rng.standard_normal(shape), 1.0) > -0.1
        flat = cross.copy()
        flat[0] = flat[2] = False
        for it in (1, 2, 3):
            assert np.array_equal(erode_cross(m, it, False), ndi.binary_erosion(m, cross, iterations=it))
            assert np.array_equal(~erode_cross(~m, it, True), ndi.binary_dilation(m, cross, iterations=it))
            assert np.array_equal(erode_cross(m, it, False, True), ndi.binary_erosion(m, flat, iterations=it))
            assert np.array_equal(~erode_cross(~m, it, True, True), ndi.binary_dilation(m, flat, iterations=it))
        for dt in (np.uint8, np.uint16, np.uint32):
            a = rng.integers(0, 200, shape).astype(dt)
            assert np.array_equal(label_counts(a, 256), np.bincount(a.ravel(), minlength=256))
            lut = rng.random(200) > 0.5
            assert np.array_equal(lut_mask(a, lut), lut[a])
        hu = rng.integers(-1024, 3000, shape).astype(np.int16)
        body = rng.random(shape) > 0.3
        for lo, hi in ((200.0, 1e9), (200.5, 1500.0), (-1024.0, 32767.0)):
            out = np.empty(shape, bool)
            n = hu_window(hu, lo, hi, body, out)
            ref = (hu >= lo) & (hu <= hi)
            assert n == np.count_nonzero(ref & ~body) and np.array_equal(out, ref & body)
        d = (rng.random(shape) * 8000).astype(np.float32)
        d.flat[0] = np.inf
        for step in (0.1, 0.3, 0.7):
            ref = d.copy()
            ref *= 1.0 / step
            np.minimum(ref, 65000, out=ref)
            assert np.array_equal(distance_levels(d, 1.0 / step, 65000.0), ref.astype(np.uint16))


def test_body_mask_and_block_any_match_the_per_axis_forms():
    from printpipe.segment.body import _body_mask
    from printpipe.segment.geometry import _block_any

    rng = np.random.default_rng(3)
    m = rng.random((13, 22, 31)) > 0.97
    for f in ((1, 1, 1), (2, 3, 3), (3, 1, 2), (4, 5, 1)):
        nz, ny, nx = m.shape
        p = np.pad(m, ((0, (-nz) % f[0]), (0, (-ny) % f[1]), (0, (-nx) % f[2])))
        a, b, c = p.shape
        ref = p.reshape(a // f[0], f[0], b // f[1], f[1], c // f[2], f[2]).any(axis=(1, 3, 5))
        assert np.array_equal(_block_any(m, f), ref)
    # the body: an ellipse of soft tissue on a couch; the upsampled mask is the coarse one repeated
    hu = np.full((11, 61, 67), -1000, np.int16)
    yy, xx = np.mgrid[:61, :67]
    hu[:, ((yy - 28) / 22.0) ** 2 + ((xx - 33) / 28.0) ** 2 <= 1] = 40
    hu[:, 55:58, 5:62] = 200
    body, _ = _body_mask(hu, (2.5, 0.7, 0.7))
    f = (1, 3, 3)
    coarse = body[::f[0], ::f[1], ::f[2]]
    ref = coarse
    for ax, k in enumerate(f):
        ref = np.repeat(ref, k, axis=ax)
    assert np.array_equal(body, ref[:11, :61, :67]) and body[5, 28, 33] and not body[5, 56, 33]


def test_bincount_and_isin_match_numpy():
    from printpipe.segment import _fast

    rng = np.random.default_rng(5)
    for dt in (np.uint8, np.uint16, np.uint32):
        for hi in (1, 7, 200):
            a = rng.integers(0, hi, (6, 7, 8)).astype(dt)
            for ml in (0, 3, 10, 300):
                assert np.array_equal(_fast.bincount(a, ml), np.bincount(a.ravel(), minlength=ml))
            if dt != np.uint32:
                for vals in ([], [0], [1, 3, 250], [5, 6, 7, 1000]):
                    assert np.array_equal(_fast.isin(a, vals), np.isin(a, vals))
    signed = np.array([[[0, 3, 2]]], np.int32)
    assert np.array_equal(_fast.bincount(signed, 2), np.bincount(signed.ravel(), minlength=2))
    with pytest.raises(ValueError):
        _fast.bincount(np.array([[[1, -1]]], np.int32))
    empty = np.zeros((0, 3, 3), np.uint8)
    assert np.array_equal(_fast.bincount(empty, 4), np.bincount(empty.ravel(), minlength=4))
    assert np.array_equal(_fast.bincount(empty), np.bincount(empty.ravel()))


def test_find_objects_matches_scipy():
    from printpipe.segment import _fast

    rng = np.random.default_rng(6)
    for dt in (np.uint8, np.uint16, np.int32):
        a = np.zeros((9, 10, 11), dt)
        for lab in (1, 2, 4, 7):   # 3, 5 and 6 absent
            k, j, i = rng.integers(0, 8, 3)
            a[k:k + rng.integers(1, 3), j:j + 2, i:i + rng.integers(1, 4)] = lab
        for ml in (0, 3, 7, 9):
            assert _fast.find_objects(a, ml) == ndi.find_objects(a, max_label=ml)
    assert _fast.find_objects(np.zeros((2, 2, 2), np.uint8)) == ndi.find_objects(np.zeros((2, 2, 2), np.uint8))


def test_fill_holes_slices_matches_scipy_per_slice():
    from printpipe.segment._fast import fill_holes_slices

    rng = np.random.default_rng(8)
    for shape, frac in (((4, 1, 1), 0.5), ((5, 3, 3), 0.7), ((6, 40, 37), 0.55), ((6, 40, 37), 0.75)):
        m = ndi.gaussian_filter(rng.standard_normal(shape), (0, 1.2, 1.2)) > np.quantile(rng.standard_normal(100), 1 - frac)
        ref = np.stack([ndi.binary_fill_holes(s) for s in m])
        assert np.array_equal(fill_holes_slices(m), ref)
    ring = np.zeros((2, 9, 9), bool)
    ring[1, 2:7, 2:7] = True
    ring[1, 3:6, 3:6] = False
    ring[1, 4, 4] = True   # an island in the hole stays, the hole around it is filled
    assert fill_holes_slices(ring)[1, 2:7, 2:7].all() and not fill_holes_slices(ring)[0].any()


def test_slice_holes_are_the_holes_scipy_fills():
    from printpipe.kernels.segment import slice_holes

    rng = np.random.default_rng(9)
    for frac in (0.55, 0.7):
        closed = ndi.gaussian_filter(rng.standard_normal((5, 41, 38)), (0, 1.3, 1.3)) > -0.2 * (frac - 0.5)
        hu = rng.integers(-100, 300, closed.shape).astype(np.int16)
        other = np.zeros_like(closed)
        add = np.zeros_like(closed)
        every = np.zeros_like(closed)
        n = slice_holes(closed, hu, other, 1.0, 0.0, np.inf, 1e9, True, add, every)
        ref = np.stack([ndi.binary_fill_holes(c) & ~c for c in closed])
        assert np.array_equal(every, ref) and np.array_equal(add, ref)
        assert n == sum(ndi.label(r)[1] for r in ref)


def _cut_gaps_reference(hu, labels):
    """Of every pair of 26-adjacent voxels with different non-zero labels the darker one (ties:
    the lower label) cleared, by array shifts."""
    lab = np.pad(labels.astype(np.int64), 1)
    h = np.pad(hu.astype(np.int64), 1)
    core = (slice(1, -1),) * 3
    a, ha = lab[core], h[core]
    mark = np.zeros(labels.shape, bool)
    for dk in (-1, 0, 1):
        for dj in (-1, 0, 1):
            for di in (-1, 0, 1):
                sl = tuple(slice(1 + d, lab.shape[n] - 1 + d) for n, d in enumerate((dk, dj, di)))
                b, hb = lab[sl], h[sl]
                mark |= (a != 0) & (b != 0) & (b != a) & ((ha < hb) | ((ha == hb) & (a < b)))
    out = labels.copy()
    out[mark] = 0
    return out, int(mark.sum())


def test_cut_gaps_matches_the_pairwise_rule():
    from printpipe.kernels.segment import cut_gaps

    rng = np.random.default_rng(10)
    for shape in ((3, 4, 5), (9, 11, 70), (6, 40, 100)):
        # blocks of labels with runs longer than the kernel's 32-voxel runs, and scattered voxels
        labels = np.repeat(rng.integers(0, 4, (shape[0], shape[1], shape[2] // 5 + 1)), 5, axis=2)[:, :, :shape[2]]
        labels[rng.random(shape) > 0.97] = 5
        labels = labels.astype(np.uint8)
        hu = rng.integers(100, 104, shape).astype(np.int16)   # many ties
        ref, n_ref = _cut_gaps_reference(hu, labels)
        got = labels.copy()
        assert cut_gaps(hu, got) == n_ref and np.array_equal(got, ref)
        view = labels.copy()
        sub = view[1:, 1:, 2:]   # a non-contiguous box
        ref, n_ref = _cut_gaps_reference(hu[1:, 1:, 2:], sub.copy())
        assert cut_gaps(hu[1:, 1:, 2:], sub) == n_ref and np.array_equal(sub, ref)
