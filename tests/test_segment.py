"""Tests of printpipe.segment: config validation, small analytic shapes, the pelvis phantom, and the
real pelvic CT (pelvic-ref003-ct)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from printpipe.errors import InputError, SegmentationError
from printpipe.segment import (
    PRESETS,
    Plane,
    SegmentConfig,
    fit_sphere,
    mirror_mesh,
    segment,
    surface_deviation,
)
from printpipe.volume import Volume


# -- config -----------------------------------------------------------------------------------------

def test_presets_documented_ranges():
    assert PRESETS["bone"][:2] == (226.0, 3071.0)
    assert PRESETS["compact-bone"][:2] == (662.0, 1988.0)
    assert PRESETS["spongy-bone"][:2] == (148.0, 661.0)
    assert SegmentConfig(preset="compact bone").hu_range == (662.0, 1988.0)
    assert SegmentConfig(hu_low=300).hu_range == (300.0, 3071.0)


def test_hollow_wall_thinner_than_two_extrusions_refused():
    with pytest.raises(InputError, match=r"hollow wall 0.5 mm is thinner than two extrusion widths.*--hollow 0.9"):
        SegmentConfig(hollow_wall_mm=0.5)
    assert SegmentConfig(hollow_wall_mm=0.9).hollow_wall_mm == 0.9


def test_implant_parts_can_be_asked_for():
    # a hip prosthesis is exported as implant_left / implant_right (printpipe.segment.heads)
    assert SegmentConfig(parts=("implant_right", "femur_right")).parts == ("implant_right", "femur_right")


@pytest.mark.parametrize("kwargs, match", [
    (dict(preset="nope"), "preset 'nope' is unknown"),
    (dict(hu_low=500, hu_high=400), "hu_low 500 must be below hu_high 400"),
    (dict(mirror="up"), "mirror must be 'left' or 'right'"),
    (dict(parts=("kidney",)), "part 'kidney' is unknown"),
    (dict(roi_mm=(0, -1, 0, 1, 0, 1)), "xmin 0 must be below xmax -1"),
    (dict(region="head"), "region 'head' is unknown"),
    (dict(min_island_mm3=-1), "min_island_mm3"),
])
def test_config_errors_name_the_field(kwargs, match):
    with pytest.raises(InputError, match=match):
        SegmentConfig(**kwargs)


def test_mirror_implies_split():
    assert SegmentConfig(mirror="left").split_hemipelvis


def test_cli_options_roundtrip():
    from printpipe.cli import options_segment

    p = argparse.ArgumentParser()
    options_segment.add_arguments(p)
    a = p.parse_args(["--preset", "compact-bone", "--hu", "300:2000", "--hollow", "1.2", "--mirror", "left",
                      "--parts", "pelvis,femur_left", "--roi=-100,100,-50,150,0,200", "--keep-table",
                      "--min-island", "500", "--no-fill", "--region", "pelvis", "--threshold-surface"])
    cfg = options_segment.config_from_args(a)
    assert cfg.hu_range == (300.0, 2000.0) and cfg.hollow_wall_mm == 1.2 and cfg.split_hemipelvis
    assert cfg.parts == ("pelvis", "femur_left") and cfg.roi_mm[1] == 100.0 and not cfg.remove_table
    assert cfg.min_island_mm3 == 500 and not cfg.fill_cavities and cfg.region == "pelvis"
    assert not cfg.refine_surface and options_segment.config_from_args(p.parse_args([])).refine_surface
    for bad in (["--hu", "300"], ["--hu", "a:b"], ["--roi", "1,2,3"], ["--parts", "liver"], ["--hollow", "-1"]):
        with pytest.raises(SystemExit) as exc:
            p.parse_args(bad)
        assert exc.value.code == 2


def test_presets_cli(capsys):
    from printpipe.cli.main import main

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "bone" in out and "226" in out and "3071" in out


# -- small analytic shapes --------------------------------------------------------------------------

def _ball_volume(radius_mm=20.0, spacing=(1.0, 1.0, 1.0), n=64, cavity_mm=0.0, hu=1200, extra=None):
    """Water-filled body (0 HU) in air with a bone ball at its centre; optional inner marrow cavity."""
    z, y, x = np.mgrid[:n, :n, :n].astype(float)
    c = (n - 1) / 2
    r = np.sqrt(((z - c) * spacing[0]) ** 2 + ((y - c) * spacing[1]) ** 2 + ((x - c) * spacing[2]) ** 2)
    vol = np.full((n, n, n), -1000, np.int16)
    vol[r < n / 2 * spacing[1] - 1] = 0
    vol[r <= radius_mm] = hu
    if cavity_mm:
        vol[r <= cavity_mm] = -50
    if extra is not None:
        extra(vol)
    return Volume(vol, spacing)


def test_ball_is_found_with_filled_cavity():
    v = _ball_volume(radius_mm=15.0, cavity_mm=8.0)
    seg = segment(v, SegmentConfig(separate=False, remove_table=False))
    m = seg.mask("bone")
    # filled: the voxel count is that of the whole ball (4/3 pi r^3 within a shell of voxels, 4 %)
    expect = 4 / 3 * np.pi * 15.0 ** 3
    assert abs(m.sum() - expect) / expect < 0.04
    assert seg.info["cavities_filled"]["voxels"] > 0.9 * 4 / 3 * np.pi * 7.0 ** 3


def test_hollow_shell_has_the_wall():
    v = _ball_volume(radius_mm=15.0)
    seg = segment(v, SegmentConfig(separate=False, remove_table=False, hollow_wall_mm=3.0))
    m = seg.mask("bone")
    # shell volume 4/3 pi (15^3 - 12^3); voxelisation of two surfaces: 10 %
    expect = 4 / 3 * np.pi * (15.0 ** 3 - 12.0 ** 3)
    assert abs(m.sum() - expect) / expect < 0.10
    assert not m[31:33, 31:33, 31:33].any()


def test_islands_dropped_and_counted():
    def speck(vol):
        vol[5:8, 30:33, 30:33] = 1200  # 27 mm^3 speck inside the body
    v = _ball_volume(radius_mm=12.0, extra=speck)
    seg = segment(v, SegmentConfig(separate=False, remove_table=False, min_island_mm3=100))
    assert seg.info["islands_dropped"]["count"] == 1
    assert seg.info["islands_dropped"]["volume_mm3"] == pytest.approx(27.0)


def test_nothing_found_raises():
    v = Volume(np.zeros((8, 8, 8), np.int16), (1, 1, 1))
    with pytest.raises(SegmentationError, match="no bone found between 226 and 3071 HU"):
        segment(v)


def test_bone_outside_body_is_removed():
    def table(vol):
        vol[:, 62:64, 5:60] = 900  # a dense plate in the air below the body
    v = _ball_volume(radius_mm=12.0, extra=table)
    seg = segment(v, SegmentConfig(separate=False, min_island_mm3=10))
    assert seg.info["table_removed"]["voxels"] > 0
    assert len(seg.names) == 1


def test_sphere_fit_exact():
    rng = np.random.default_rng(3)
    p = rng.normal(size=(200, 3))
    p = p / np.linalg.norm(p, axis=1)[:, None] * 23.5 + [1, 2, 3]
    c, r = fit_sphere(p)
    assert r == pytest.approx(23.5, abs=1e-9) and np.allclose(c, [1, 2, 3])


def test_mirror_mesh_and_deviation():
    import trimesh

    box = trimesh.creation.box(extents=(10, 20, 30))
    box.apply_translation((25, 0, 0))
    plane = {"point": [5.0, 0, 0], "normal": [1.0, 0, 0]}
    m = mirror_mesh(box, plane)
    # reflected across x = 5: centre at 2*5 - 25 = -15, still outward (positive volume)
    assert np.allclose(m.bounds.mean(axis=0), [-15, 0, 0])
    assert m.volume == pytest.approx(6000.0)
    back = mirror_mesh(m, Plane((5.0, 0, 0), (1.0, 0, 0)))
    d = surface_deviation(back, box)
    # identical surfaces: only the sampling spacing remains (well below 1 mm on a 10-30 mm box)
    assert d["mean_mm"] < 0.3 and d["max_mm"] < 1.5
    shifted = box.copy()
    shifted.apply_translation((2.0, 0, 0))
    d2 = surface_deviation(shifted, box)
    assert 0.5 < d2["mean_mm"] < 2.0 and d2["max_mm"] == pytest.approx(2.0, abs=0.3)


def _fused_column(disc: bool):
    """A sacrum column (label 2, 400 HU) fused through a dark disc (80 HU, slices 40-41) to a
    vertebra above it, beside a pelvis block (label 1) 4 mm away up to slice 25 (the SI joint)."""
    labels = np.zeros((60, 60, 60), np.uint8)
    hu = np.zeros((60, 60, 60), np.int16)
    labels[:, 10:41, 20:41] = 2
    hu[:, 10:41, 20:41] = 400
    if disc:
        hu[40:42, 10:41, 20:41] = 80
    labels[:26, 10:41, 0:17] = 1
    hu[:26, 10:41, 0:17] = 400
    return labels, hu


def test_split_spine_cuts_at_the_disc():
    from scipy import ndimage as ndi

    from printpipe.segment import _split_spine

    labels, hu = _fused_column(True)
    names, info = _split_spine(labels, {1: "pelvis", 2: "sacrum"}, hu, (2.0, 1.0, 1.0))
    assert "spine" in names.values(), info
    lab_sp = {v: k for k, v in names.items()}["spine"]
    zs_sac = np.flatnonzero((labels == 2).any(axis=(1, 2)))
    zs_sp = np.flatnonzero((labels == lab_sp).any(axis=(1, 2)))
    # the cut lies in the disc (slices 40-41): sacrum ends and spine starts there
    assert zs_sac.max() in (39, 40, 41) and zs_sp.min() in (40, 41, 42), (zs_sac.max(), zs_sp.min())
    assert zs_sac.max() < zs_sp.min()
    # a gap of a voxel: no voxel of the spine has a 26-neighbour in the sacrum
    grown = ndi.binary_dilation(labels == lab_sp, structure=np.ones((3, 3, 3), bool))
    assert not np.any(grown & (labels == 2))
    # the pelvis block ends at slice 25; slice 26 of the column lies sqrt(4^2 + 2^2) = 4.5 mm from
    # it, within the 5 mm of the joint
    assert info["si_top_slice"] == 26


def test_split_spine_leaves_a_sacrum_without_disc():
    from printpipe.segment import _split_spine

    labels, hu = _fused_column(False)
    before = labels.copy()
    names, info = _split_spine(labels, {1: "pelvis", 2: "sacrum"}, hu, (2.0, 1.0, 1.0))
    assert "spine" not in names.values() and info["cut_slice"] is None
    assert np.array_equal(labels, before)


def test_disc_search_reaches_its_full_length_below_the_sacroiliac_contact():
    """Discs are looked for from _SI_BELOW_MM under the top of the sacroiliac contact, every slice
    within that reach included: a disc 24 mm below the top at 3 mm slices (8 slices) is found with
    a 25 mm reach (rounding with the top's own slice counted stopped at 7 slices, 21 mm), and the
    reach follows the patient's size."""
    from printpipe.segment import spine

    prof = np.full(60, 250.0)
    prof[[22, 32, 43]] = 90.0          # dark slices between bright vertebral bodies
    sp = np.array([3.0, 1.0, 1.0])
    k_si = 40                          # the disc at 32 lies 8 slices (24 mm) below
    assert spine._find_discs(prof, k_si, sp)[0] == 32
    # 20 % smaller: a 20 mm reach stops at 6 slices
    assert spine._find_discs(prof, k_si, sp, scale=0.8)[0] == 43
    # the disc at 22 (54 mm below) is out of any patient's reach
    assert 22 not in spine._find_discs(prof, k_si, sp, scale=spine.SCALE_RANGE[1])


def test_patient_scale_is_the_heads_against_the_adult_mean():
    from types import SimpleNamespace

    from printpipe.segment import spine

    heads = {"left": SimpleNamespace(radius_mm=28.5), "right": SimpleNamespace(radius_mm=28.5)}
    assert spine.patient_scale(heads) == pytest.approx(57.0 / spine.HEAD_MEAN_MM)
    assert spine.patient_scale({}) == 1.0
    # a prosthesis's ball is no measure of the patient
    imp = {"left": SimpleNamespace(radius_mm=14.0, implant=True)}
    assert spine.patient_scale(imp) == 1.0
    tiny = {"left": SimpleNamespace(radius_mm=10.0)}
    assert spine.patient_scale(tiny) == spine.SCALE_RANGE[0]
