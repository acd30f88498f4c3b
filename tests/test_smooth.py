"""Tests of the smoothing kernels (printpipe.kernels.smooth) against explicit sparse-matrix
references and analytic shapes."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.sparse as sp
import trimesh

from printpipe.kernels import (
    build_adjacency,
    marching_cubes,
    mesh_volume,
    restore_volume,
    taubin_smooth,
    windowed_sinc_smooth,
)
from printpipe.kernels.smooth import sinc_coefficients


@pytest.fixture
def noisy_sphere():
    """Icosphere of radius 10 (2562 vertices) with seeded radial noise of 0.2 mm."""
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=10.0)
    rng = np.random.default_rng(5)
    v = mesh.vertices * (1.0 + rng.normal(0.0, 0.02, (len(mesh.vertices), 1)))
    return v, mesh.faces.astype(np.int32)


def umbrella(faces, n):
    """Explicit row-normalised adjacency matrix W (the slow, obvious reference)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    a.data[:] = 1.0  # duplicates summed -> 1
    deg = np.asarray(a.sum(axis=1)).ravel()
    return sp.diags(1.0 / deg) @ a


def test_adjacency_matches_trimesh(noisy_sphere):
    v, f = noisy_sphere
    indptr, indices = build_adjacency(f, len(v))
    ref = trimesh.Trimesh(v, f, process=False).vertex_neighbors
    for i in range(0, len(v), 97):
        assert sorted(indices[indptr[i]:indptr[i + 1]].tolist()) == sorted(ref[i])


@pytest.mark.parametrize("iterations,passband", [(20, 0.1), (40, 0.01)])
def test_sinc_coefficients_give_a_low_pass_filter(iterations, passband):
    c = sinc_coefficients(iterations, passband)

    def response(k):
        return float(np.sum(c * np.cos(np.arange(iterations + 1) * np.arccos(1 - k / 2))))

    # f(k_pb) = 1 to VTK's Newton tolerance 1e-3; f(0) ~ 1 (no shrinkage of the mean shape);
    # highest frequency (k = 2, the Nyquist of the mesh) removed
    assert response(passband) == pytest.approx(1.0, abs=1e-3)
    assert response(0.0) == pytest.approx(1.0, abs=2e-3)
    assert abs(response(2.0)) < 1e-3


def test_windowed_sinc_equals_the_explicit_chebyshev_polynomial(noisy_sphere):
    v, f = noisy_sphere
    n, it, pb = len(v), 10, 0.1
    out = windowed_sinc_smooth(v, f, iterations=it, passband=pb)
    # reference: sum_i c_i T_i(I - K/2) x on normalised coordinates, with K = I - W
    lo, hi = v.min(0), v.max(0)
    centre, scale = (lo + hi) / 2, np.linalg.norm(hi - lo)
    x = (v - centre) / scale
    y = sp.identity(n) - 0.5 * (sp.identity(n) - umbrella(f, n))
    c = sinc_coefficients(it, pb)
    t_prev, t_cur = x, y @ x
    acc = c[0] * t_prev + c[1] * t_cur
    for i in range(2, it + 1):
        t_prev, t_cur = t_cur, 2 * (y @ t_cur) - t_prev
        acc += c[i] * t_cur
    assert np.allclose(out, acc * scale + centre, atol=1e-9)


def test_taubin_equals_explicit_lambda_mu_steps(noisy_sphere):
    v, f = noisy_sphere
    w = umbrella(f, len(v))
    ref = v.copy()
    for _ in range(3):
        ref = ref + 0.5 * (w @ ref - ref)
        ref = ref - 0.53 * (w @ ref - ref)
    assert np.allclose(taubin_smooth(v, f, iterations=3, lamb=0.5, mu=-0.53), ref, atol=1e-12)


@pytest.mark.parametrize("method", ["sinc", "taubin"])
def test_smoothing_removes_noise_and_keeps_volume(noisy_sphere, method):
    v, f = noisy_sphere
    before = np.abs(np.linalg.norm(v, axis=1) - 10).mean()
    if method == "sinc":
        out = windowed_sinc_smooth(v, f)  # defaults: 20 iterations, pass band 0.1
    else:
        out = taubin_smooth(v, f)  # defaults: 10 pairs, lambda 0.5, mu -0.53
    after = np.abs(np.linalg.norm(out, axis=1) - 10).mean()
    assert after < 0.5 * before
    # issue 3: volume change at most 0.5 % at default settings (low-pass filters with f(0) = 1)
    assert mesh_volume(out, f) == pytest.approx(mesh_volume(v, f), rel=0.005)


def test_smoothing_a_marching_cubes_mesh_keeps_it_closed_and_its_volume():
    z, y, x = np.mgrid[:30, :30, :30] - 14.5
    mask = (z / 12) ** 2 + (y / 9) ** 2 + (x / 6) ** 2 <= 1
    v, f = marching_cubes(mask, 0.5, spacing=(1.0, 1.0, 1.0))
    out = windowed_sinc_smooth(v, f, iterations=40, passband=0.01)
    mesh = trimesh.Trimesh(out, f, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh_volume(out, f) == pytest.approx(mesh_volume(v, f), rel=0.005)


def test_restore_volume_reaches_the_target(noisy_sphere):
    v, f = noisy_sphere
    target = 1.01 * mesh_volume(v, f)
    out = restore_volume(v, f, target)
    assert mesh_volume(out, f) == pytest.approx(target, rel=1e-5)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least 2 numba threads")
def test_smoothing_is_identical_for_any_thread_count():
    mesh = trimesh.creation.icosphere(subdivisions=6, radius=5.0)  # 40962 vertices: several chunks
    v, f = mesh.vertices, mesh.faces.astype(np.int32)
    previous = numba.get_num_threads()
    try:
        out = []
        for threads in (1, 2):
            numba.set_num_threads(threads)
            out.append((windowed_sinc_smooth(v, f), taubin_smooth(v, f)))
    finally:
        numba.set_num_threads(previous)
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])
