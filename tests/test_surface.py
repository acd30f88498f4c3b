"""Tests of printpipe.surface (mask / HU -> Trimesh in patient millimetres) and its CLI options."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from printpipe.errors import InputError, SegmentationError
from printpipe.surface import SurfaceConfig, hu_to_mesh, mask_to_mesh
from printpipe.volume import Volume

R = 20.0


def sphere_case(spacing, offset=0.123, radius=R):
    """Binary sphere mask on a grid; the centre is off the grid by ``offset`` voxel on each axis."""
    shape = tuple(int(np.ceil((2 * radius + 6) / s)) for s in spacing)
    centre = np.array([(n - 1) * s / 2 + offset * s for n, s in zip(shape, spacing)])
    z, y, x = np.meshgrid(*[np.arange(n) * s - c for n, s, c in zip(shape, spacing, centre)], indexing="ij")
    mask = z**2 + y**2 + x**2 <= radius**2
    return Volume(np.zeros(shape, np.int16), spacing=spacing), mask, centre


def distances_to_sphere(volume, mesh, centre_zyx):
    centre = volume.mm_to_patient(centre_zyx[None, :])[0]
    return np.abs(np.linalg.norm(mesh.vertices - centre, axis=1) - R)


def check_mesh(mesh):
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0


@pytest.mark.parametrize("spacing,max_mean", [((0.8, 0.8, 0.8), 0.15), ((0.7, 0.7, 3.0), 0.15)])
def test_binary_sphere_with_default_smoothing(spacing, max_mean):
    volume, mask, centre = sphere_case(spacing)
    res = mask_to_mesh(volume, mask)
    check_mesh(res.mesh)
    check_mesh(res.raw)
    # issue 3: volume within 0.5 % of 4/3 pi r^3. The smoothed mesh keeps the voxel volume, whose
    # digitisation error for r = 20 mm is below 0.5 % at these spacings (0.04 % and -0.18 % here).
    assert res.mesh.volume == pytest.approx(4 / 3 * np.pi * R**3, rel=0.005)
    d = distances_to_sphere(volume, res.mesh, centre)
    # issue 3: mean <= 0.15 mm. Isotropic 0.8 mm: measured 0.03 mm. 0.7 x 0.7 x 3 mm: the mask knows
    # the surface only every 3 mm along x; distance-based vertex placement ("auto" picks it on this
    # grid) turns the terraces into ramps: measured 0.09-0.13 mm depending on where the sphere
    # sits in the grid (0.12-0.16 mm with midpoints, 0.39 mm for the raw staircase).
    assert d.mean() <= max_mean
    raw = distances_to_sphere(volume, res.raw, centre)
    assert d.mean() < 0.7 * raw.mean()  # smoothing removes most of the staircase left in the raw mesh
    assert set(res.timings_s) >= {"marching_cubes", "smoothing", "total"}


def test_distance_placement_keeps_the_topology_of_the_mask():
    volume, mask, _ = sphere_case((0.7, 0.7, 3.0))
    mask[20:25, 20:25, :] = False  # a tunnel and a thin rim: Euler characteristic changes
    mid = mask_to_mesh(volume, mask, SurfaceConfig(mask_vertices="midpoint", smoothing="none"))
    dist = mask_to_mesh(volume, mask, SurfaceConfig(mask_vertices="distance", smoothing="none"))
    assert np.array_equal(mid.raw.faces, dist.raw.faces)  # same cases on the same edges
    assert mid.raw.euler_number == dist.raw.euler_number
    check_mesh(dist.raw)
    moved = np.linalg.norm(mid.raw.vertices - dist.raw.vertices, axis=1)
    assert moved.max() <= 0.5 * 3.0 + 1e-6  # a vertex stays on its edge, at most half an edge away


def test_patient_frame_and_winding_with_a_mirrored_direction():
    spacing = (1.0, 0.9, 0.8)
    volume, mask, centre = sphere_case(spacing, radius=R)
    direction = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # columns: x, y, z axes
    volume = Volume(volume.hu, spacing=spacing, origin=(10.0, -20.0, 30.0), direction=direction)
    res = mask_to_mesh(volume, mask, SurfaceConfig(smoothing="none"))
    check_mesh(res.mesh)  # positive volume: faces were flipped where the frame mirrors
    centre_lps = volume.mm_to_patient(centre[None, :])[0]
    assert np.allclose(res.mesh.vertices.mean(axis=0), centre_lps, atol=0.1)
    assert np.allclose(res.mesh.bounds[1] - res.mesh.bounds[0], 2 * R, atol=1.0)


def test_hu_iso_surface_is_subvoxel_and_respects_the_region():
    spacing = (1.0, 1.0, 1.0)
    shape = (40, 40, 80)
    z, y, x = np.meshgrid(*[np.arange(n) * 1.0 for n in shape], indexing="ij")
    # two blurred balls in HU: 1000 inside, -1000 outside, linear ramp of 4 mm across r = 10
    hu = np.full(shape, -1000.0)
    for cx in (20.3, 60.3):
        r = np.sqrt((z - 19.6) ** 2 + (y - 19.6) ** 2 + (x - cx) ** 2)
        hu = np.maximum(hu, np.clip(1000.0 - 500.0 * (r - 8.0), -1000.0, 1000.0))
    volume = Volume(np.round(hu).astype(np.int16), spacing=spacing)
    res = hu_to_mesh(volume, 0.0, SurfaceConfig(smoothing="none"))
    check_mesh(res.raw)
    assert res.raw.body_count == 2
    # the 0 HU level of the ramp is the sphere r = 10 mm; linear interpolation of a radial ramp
    # is exact up to the curvature term (~ voxel^2 / (8 r)) and int16 rounding of HU
    centres = np.array([[19.6, 19.6, 20.3], [19.6, 19.6, 60.3]])
    zyx = res.raw.vertices[:, ::-1]  # identity direction: LPS (x, y, z) = grid (x, y, z) mm
    d = np.min([np.abs(np.linalg.norm(zyx - c, axis=1) - 10.0) for c in centres], axis=0)
    assert d.max() < 0.05
    region = np.zeros(shape, bool)
    region[:, :, :40] = True
    one = hu_to_mesh(volume, 0.0, SurfaceConfig(smoothing="none"), region=region)
    check_mesh(one.raw)
    assert one.raw.body_count == 1
    assert one.raw.vertices[:, 0].max() < 40


def test_smoothing_options_and_none():
    volume, mask, _ = sphere_case((1.0, 1.0, 1.0), radius=R)
    raw = mask_to_mesh(volume, mask, SurfaceConfig(smoothing="none"))
    assert raw.mesh is raw.raw
    taubin = mask_to_mesh(volume, mask, SurfaceConfig(smoothing="taubin", smooth_iterations=10))
    check_mesh(taubin.mesh)
    assert taubin.mesh.volume == pytest.approx(mask.sum(), rel=1e-4)  # volume restored to voxels


def test_empty_inputs_raise_segmentation_errors():
    volume = Volume(np.zeros((5, 5, 5), np.int16), spacing=(1, 1, 1))
    with pytest.raises(SegmentationError, match="No surface found.*mask is empty"):
        mask_to_mesh(volume, np.zeros((5, 5, 5), bool))
    with pytest.raises(SegmentationError, match="No surface found at 300 HU.*maximum in the volume is 0 HU"):
        hu_to_mesh(volume, 300)
    with pytest.raises(InputError, match="mask shape"):
        mask_to_mesh(volume, np.ones((4, 5, 5), bool))


@pytest.mark.parametrize("kwargs,field", [
    ({"smoothing": "gauss"}, "smoothing"),
    ({"smooth_iterations": -1}, "smooth_iterations"),
    ({"smooth_passband": 2.5}, "smooth_passband"),
    ({"taubin_mu": -0.4}, "taubin_mu"),
    ({"mask_vertices": "nearest"}, "mask_vertices"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(InputError, match=f"SurfaceConfig.{field}"):
        SurfaceConfig(**kwargs)


def test_cli_options_build_the_config():
    from printpipe.cli import options_surface

    parser = argparse.ArgumentParser()
    options_surface.add_arguments(parser)
    assert options_surface.config_from_args(parser.parse_args([])) == SurfaceConfig()
    args = parser.parse_args(["--smoothing", "taubin", "--smooth-iterations", "7", "--smooth-passband", "0.05"])
    assert options_surface.config_from_args(args) == SurfaceConfig(smoothing="taubin", smooth_iterations=7,
                                                                   smooth_passband=0.05)
    with pytest.raises(SystemExit):
        parser.parse_args(["--smoothing", "gauss"])
