"""printpipe.evaluate against analytic answers: mesh voxelisation, Dice, surface distances, MetaImage."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from printpipe.errors import InputError
from printpipe.evaluate import (
    compare,
    compare_sides,
    dice,
    expert_masks,
    mesh_to_mask,
    read_metaimage,
    surface_distances,
)
from printpipe.volume import Volume


def _grid(shape=(40, 50, 60), spacing=(1.5, 1.0, 1.0), origin=(-30.0, -25.0, -30.0), direction=None):
    return Volume(hu=np.zeros(shape, np.int16), spacing=spacing, origin=origin,
                  direction=np.eye(3) if direction is None else direction)


def _centres_lps(vol):
    k, j, i = np.indices(vol.shape)
    return vol.index_to_patient(np.stack([k.ravel(), j.ravel(), i.ravel()], axis=1)).reshape(*vol.shape, 3)


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0])], ids=["HFS", "rot180"])
def test_mesh_to_mask_sphere_matches_centres_inside(direction):
    import trimesh

    vol = _grid(direction=direction)
    centre, r = np.array([1.3, -2.1, 0.7]), 17.0
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=r)
    mask = mesh_to_mask(sphere.vertices + centre, sphere.faces, vol)
    dist = np.linalg.norm(_centres_lps(vol) - centre, axis=-1)
    # the icosphere's faces lie inside the true sphere by at most r(1 - cos(edge/2r)) ~ 0.03 mm at
    # 5 subdivisions: voxel centres more than 0.1 mm from the surface are classified exactly
    sure = np.abs(dist - r) > 0.1
    assert np.array_equal(mask[sure], (dist < r)[sure])
    assert dice(mask, dist < r) > 0.999


def test_mesh_to_mask_box_on_grid_lines():
    # a box whose faces and vertices lie on voxel-centre planes and columns: the nudged rays still
    # give an exact, closed answer (no streaks from rays through edges)
    import trimesh

    vol = _grid(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    box = trimesh.creation.box(bounds=[[10.0, 5.0, 3.0], [20.0, 15.0, 30.0]])
    mask = mesh_to_mask(box.vertices, box.faces, vol)
    # box x 10..20, y 5..15, z 3..30 mm: columns are nudged by +1e-5 voxel in x and y and crossings
    # by -1e-6 in z, so centres on the low faces are in and those on the high faces out
    expected = np.zeros(vol.shape, bool)
    expected[3:30, 5:15, 10:20] = True
    assert np.array_equal(mask, expected)


def test_surface_distance_concentric_spheres():
    vol = _grid(shape=(60, 80, 80), spacing=(1.0, 0.5, 0.5), origin=(-20.0, -20.0, -30.0))
    dist = np.linalg.norm(_centres_lps(vol), axis=-1)
    a, b = dist < 12.0, dist < 14.0
    mean, p95 = surface_distances(a, b, vol.spacing)
    # two concentric spheres 2 mm apart: every surface point is ~2 mm from the other surface; the
    # voxelised surfaces (0.5-1 mm voxels) move each sphere by up to half a voxel
    assert mean == pytest.approx(2.0, abs=0.5)
    assert p95 == pytest.approx(2.0, abs=1.0)
    assert dice(a, b) == pytest.approx(2 * 12 ** 3 / (12 ** 3 + 14 ** 3), abs=0.02)
    assert surface_distances(a, a, vol.spacing) == (0.0, 0.0)
    assert all(math.isnan(v) for v in surface_distances(a, np.zeros_like(a), vol.spacing))


def test_compare_on_slices_ignores_the_cut_ends():
    # a long cylinder cut to the slices of a shorter one: on those slices they are identical, and the
    # cut ends are no surface, so the distances are zero
    vol = _grid(shape=(40, 30, 30), spacing=(3.0, 1.0, 1.0), origin=(-15.0, -15.0, 0.0))
    c = _centres_lps(vol)
    disc = np.hypot(c[..., 0], c[..., 1]) < 8.0
    long, short = disc.copy(), disc.copy()
    short[:10], short[25:] = False, False
    s = compare(long, short, vol.spacing, structure="femur_left", slices=np.arange(10, 25))
    assert s.dice == 1.0 and s.mean_mm == 0.0 and s.p95_mm == 0.0
    s = compare(None, short, vol.spacing, structure="femur_left")
    assert s.dice == 0.0 and math.isnan(s.mean_mm)


def test_compare_sides_flags_a_swap():
    a = np.zeros((4, 10, 10), bool)
    b = a.copy()
    a[:, :, :4] = True
    b[:, :, 6:] = True
    refs = {"femur_left": b, "femur_right": a}
    rows = compare_sides({"femur_left": a, "femur_right": b}, refs, "femur", (1.0, 1.0, 1.0))
    assert [r.swapped for r in rows] == [True, True]
    rows = compare_sides({"femur_left": b, "femur_right": a}, refs, "femur", (1.0, 1.0, 1.0))
    assert [r.swapped for r in rows] == [False, False] and all(r.dice == 1.0 for r in rows)


def _write_mhd(folder, data, spacing_xyz=(1.0, 1.0, 3.0), origin=(-20.0, -10.0, 5.0)):
    nz, ny, nx = data.shape
    (folder / "label.zraw").write_bytes(zlib.compress(data.astype("<i2").tobytes()))
    (folder / "label.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "CompressedData = True\nTransformMatrix = 1 0 0 0 1 0 0 0 1\n"
        f"Offset = {origin[0]} {origin[1]} {origin[2]}\nElementSpacing = {' '.join(map(str, spacing_xyz))}\n"
        f"DimSize = {nx} {ny} {nz}\nElementType = MET_SHORT\nElementDataFile = label.zraw\n")
    return folder / "label.mhd"


def test_read_metaimage_and_split_at_the_symphysis(tmp_path):
    nz, ny, nx = 6, 12, 201
    data = np.zeros((nz, ny, nx), np.int16)
    # x = -100 + column (mm). Two "hip bones" x -90..-4 and 4..90, joined by a one-row "symphysis"
    # at x -3..3; "femurs" beyond them
    data[:, 2:10, 10:97] = 1
    data[:, 2:10, 104:191] = 1
    data[:, 5:6, 97:104] = 1
    data[:, 3:6, 0:5] = 2
    data[:, 3:6, 196:201] = 2
    data[0, 0, 0] = 7                                  # a muscle label: ignored
    mhd = _write_mhd(tmp_path, data, origin=(-100.0, -10.0, 5.0))
    arr, grid = read_metaimage(mhd)
    assert np.array_equal(arr, data) and grid.shape == data.shape
    assert grid.spacing == (3.0, 1.0, 1.0) and grid.origin == (-100.0, -10.0, 5.0)
    vol = Volume(hu=np.zeros(data.shape, np.int16), spacing=(3.0, 1.0, 1.0), origin=(-100.0, -10.0, 5.0))
    masks, info = expert_masks(mhd, vol)
    # the least cross-section is the one-row bridge: the plane lies inside it
    assert -3.0 <= info["midline_x_mm"] <= 3.0
    assert masks["hip_left"][:, 2:10, 104:191].all() and not masks["hip_left"][:, :, :97].any()  # +x is left
    assert masks["femur_right"].sum() == nz * 3 * 5 and masks["femur_left"].sum() == nz * 3 * 5
    assert "sacrum" not in masks
    other = Volume(hu=np.zeros(data.shape, np.int16), spacing=(3.0, 1.0, 1.0), origin=(-99.0, -10.0, 5.0))
    with pytest.raises(InputError, match="not on the CT's grid"):
        expert_masks(mhd, other)
