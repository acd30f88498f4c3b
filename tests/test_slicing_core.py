"""Slicing core: layers, loops, walls, skin, infill, supports -- against analytic answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
import trimesh

from printpipe.errors import InputError
from printpipe.kernels import slice as kslice
from printpipe.slicing.config import SliceConfig
from printpipe.slicing.layers import layer_planes, slice_outlines
from printpipe.slicing.toolpaths import hatch, slice_mesh


class _Nozzle:
    """Minimal printer for the geometry (slice_mesh only reads the nozzle and speeds)."""

    nozzle_mm = 0.4


P = _Nozzle()
W = 0.45  # default line width = 1.125 x nozzle
H = 0.2
S = W - H * (1 - math.pi / 4)  # spacing of touching rounded-rectangle lines


def _placed(mesh: trimesh.Trimesh, x=110.0, y=110.0) -> trimesh.Trimesh:
    mesh = mesh.copy()
    mesh.apply_translation([x - mesh.bounds[:, 0].mean(), y - mesh.bounds[:, 1].mean(), -mesh.bounds[0, 2]])
    return mesh


@pytest.fixture(scope="module")
def cube():
    return _placed(trimesh.creation.box((20.0, 20.0, 20.0)))


@pytest.fixture(scope="module")
def cube_sliced(cube):
    return slice_mesh(cube, P, config=SliceConfig(support=False))


def test_layer_planes_cover_height():
    top, h = layer_planes(20.0, 0.3, 0.2)
    assert h[0] == 0.3 and np.all(h[1:] == 0.2)
    assert top[-1] >= 20.0 - 1e-9 and top[-2] < 20.0
    np.testing.assert_allclose(np.diff(top), 0.2)


def test_kernel_vertex_on_plane_is_symbolically_above():
    # octahedron whose four equator vertices lie exactly on the plane z = 1: with "z >= plane is
    # above" only the four lower faces cross, and the loop runs through the equator vertices --
    # a square of area 2 (diagonals 2 and 2), closed, counter-clockwise (material on the left)
    v = np.array([[0, 0, 0], [1, 0, 1], [0, 1, 1], [-1, 0, 1], [0, -1, 1], [0, 0, 2]], dtype=np.float64)
    f = np.array([[0, 2, 1], [0, 3, 2], [0, 4, 3], [0, 1, 4], [5, 1, 2], [5, 2, 3], [5, 3, 4], [5, 4, 1]],
                 dtype=np.int64)
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight and mesh.volume > 0
    from printpipe.slicing.layers import _loops

    pts, offsets, lay, n_open = _loops(v, f, np.array([1.0]))
    assert n_open == 0 and offsets.tolist() == [0, 4]
    x, y = pts[:, 0], pts[:, 1]
    area = 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)
    assert area == pytest.approx(2.0, abs=1e-12)


def test_cube_layer_count_and_outline(cube_sliced):
    assert cube_sliced.layer_count == 100  # 20 mm / 0.2 mm
    np.testing.assert_allclose([lay.z_mm for lay in cube_sliced.layers], 0.2 * np.arange(1, 101), atol=1e-9)
    for lay in cube_sliced.layers:
        assert len(lay.islands) == 1
        assert shapely.Polygon(lay.islands[0].outline[0]).area == pytest.approx(400.0, rel=1e-9)


def test_cube_outer_wall_on_offset_outline(cube_sliced):
    # the outer wall centreline is the outline offset inwards by w/2 (a 19.55 mm square); the
    # issue allows 0.05 mm, an exact offset of a square is exact up to float rounding
    target = shapely.box(100 + W / 2, 100 + W / 2, 120 - W / 2, 120 - W / 2).exterior
    for lay in cube_sliced.layers:
        rings = lay.islands[0].walls[0]
        assert len(rings) == 1
        d = shapely.distance(shapely.points(rings[0]), target)
        assert d.max() < 0.05
        assert shapely.LineString(rings[0]).length == pytest.approx(4 * (20 - W), abs=1e-6)


def test_cube_skin_and_infill_layers(cube_sliced):
    cfg = SliceConfig()
    inner_side = 20 - 2 * (W / 2 + (cfg.walls - 1) * S + S / 2)
    for lay in cube_sliced.layers:
        isl = lay.islands[0]
        solid = lay.index < cfg.bottom_layers or lay.index >= 100 - cfg.top_layers
        skin_len = sum(shapely.LineString(p).length for p in isl.skin)
        if solid:
            # solid layers: parallel lines at the spacing s fill the inner square; the line count
            # is quantised, so allow one line (~inner_side * sqrt(2)) of difference
            assert skin_len == pytest.approx(inner_side**2 / S, abs=inner_side * 1.5)
            assert not isl.infill
        else:
            assert not isl.skin and isl.infill


def test_infill_joins_follow_the_boundary():
    # an 18 mm square, grid at 15 %: joined lines are the same straight lines plus boundary paths
    sq = shapely.box(0, 0, 18, 18)
    reg = np.array([sq], dtype=object)
    fams = [np.array([math.pi / 4]), np.array([3 * math.pi / 4])]
    sp = 2 * S / 0.15
    straight = hatch(reg, fams, sp)[0]
    joined = hatch(reg, fams, sp, connect_mm=50.0)[0]
    assert len(joined) < len(straight) / 2
    pts = np.concatenate(joined)
    # every vertex (line end or boundary corner) lies on the square's boundary (1e-9: float round-off)
    assert np.all(shapely.distance(sq.boundary, shapely.points(pts)) < 1e-9)
    # the pieces that cross the interior are exactly the straight lines
    inner = []
    for pl in joined:
        for a, b in zip(pl[:-1], pl[1:]):
            mid = shapely.Point((a + b) / 2)
            if sq.boundary.distance(mid) > 1e-9:
                inner.append(np.round(np.sort(np.r_[a, b].reshape(2, 2), axis=0), 6).tobytes())
    ref = [np.round(np.sort(s, axis=0), 6).tobytes() for s in straight]
    assert sorted(inner) == sorted(ref)
    # joins run along the boundary, each at most once: at most the perimeter is added
    extra = sum(shapely.LineString(p).length for p in joined) - sum(shapely.LineString(p).length for p in straight)
    assert 0 < extra <= 4 * 18 + 1e-9
    # anchors: each free chain end continues along the boundary by at most anchor_mm
    anchored = hatch(reg, fams, sp, connect_mm=50.0, anchor_mm=1.0)[0]
    added = sum(shapely.LineString(p).length for p in anchored) - sum(shapely.LineString(p).length for p in joined)
    assert len(anchored) == len(joined)
    assert 0 < added <= 2 * len(joined) * 1.0 + 1e-9


def test_skin_on_sloped_surface():
    # a cone (45 degree flank) : a layer's skin must cover at least the band of its fill region not
    # covered by the top_layers layers above: on a 45 degree slope the outline steps in by h per
    # layer, so the band is top_layers * h wide, ringing the fill region
    cone = _placed(trimesh.creation.cone(radius=20.0, height=20.0, sections=128))
    cfg = SliceConfig(support=False)
    sm = slice_mesh(cone, P, config=cfg)
    lay = sm.layers[40]  # mid-height, radius ~ 12 mm
    isl = lay.islands[0]
    region = shapely.Polygon(isl.outline[0])
    fill_region = region.buffer(-(W / 2 + (cfg.walls - 1) * S + S / 2))
    above = shapely.Polygon(sm.layers[40 + cfg.top_layers].islands[0].outline[0])
    band = fill_region.difference(above)
    skin = shapely.union_all([shapely.LineString(p).buffer(S / 2, cap_style="flat") for p in isl.skin])
    # 90 %: the line grid quantises the covered area at the band's edges
    assert skin.intersection(band).area >= 0.9 * band.area
    # and the sparse infill stays out of the band (beyond half a spacing of rounding)
    fill = shapely.union_all([shapely.LineString(p) for p in isl.infill])
    assert fill.intersection(band.buffer(-S)).length == pytest.approx(0.0, abs=1e-6)


def test_sphere_islands_and_area():
    sphere = _placed(trimesh.creation.icosphere(subdivisions=5, radius=10.0))
    sm = slice_mesh(sphere, P, config=SliceConfig(support=False))
    assert sm.layer_count == 100
    # every layer is one disc; its area is pi * (r^2 - (z_mid - r)^2) up to the icosphere's
    # faceting (inscribed polygon, < 0.3 % at subdivision 5 for the full sphere)
    for lay in sm.layers:
        assert len(lay.islands) == 1
    zm = np.array([lay.z_mm - lay.height_mm / 2 for lay in sm.layers])
    expected = math.pi * (100.0 - (zm - 10.0) ** 2)
    area = shapely.area(sm.regions)
    assert np.all(area <= expected * 1.0001 + 1e-9)
    mid = np.abs(zm - 10) < 8
    np.testing.assert_allclose(area[mid], expected[mid], rtol=0.01)
    assert sm.stats["volume_mm3"] == pytest.approx(4 / 3 * math.pi * 1000, rel=0.01)


def test_torus_hole():
    torus = _placed(trimesh.creation.torus(major_radius=15.0, minor_radius=5.0, major_sections=64,
                                           minor_sections=32))
    sm = slice_mesh(torus, P, config=SliceConfig(support=False))
    lay = sm.layers[len(sm.layers) // 2]
    assert len(lay.islands) == 1
    isl = lay.islands[0]
    assert len(isl.outline) == 2  # outer ring and the hole
    # walls follow both the outer ring and the hole
    assert len(isl.walls[0]) == 2


def _table(with_base=False):
    col = trimesh.creation.box((6, 6, 10))
    col.apply_translation([0, 0, 5])
    slab = trimesh.creation.box((30, 30, 4))
    slab.apply_translation([0, 0, 12])
    parts = [col, slab]
    if with_base:
        base = trimesh.creation.box((34, 34, 2))
        base.apply_translation([0, 0, 1])
        col.apply_translation([0, 0, 2])
        slab.apply_translation([0, 0, 2])
        parts = [base, col, slab]
    return _placed(trimesh.util.concatenate(parts))


def test_supports_under_overhang_with_gaps():
    cfg = SliceConfig(support=True, support_z_gap_layers=1, support_xy_gap_mm=0.6)
    sm = slice_mesh(_table(), P, config=cfg)
    first_slab = next(lay.index for lay in sm.layers if shapely.area(sm.regions[lay.index]) > 100)
    assert first_slab == 50  # slab bottom at z = 10 mm
    # supports up to the layer below the z gap, none in the gap, none beside/in the slab
    assert sm.layers[first_slab - 2].support
    assert not sm.layers[first_slab - 1].support
    assert all(not lay.support for lay in sm.layers[first_slab:])
    assert sm.layers[0].support
    # support line ends keep the xy gap from the column (its material edge w/2 further)
    column = shapely.box(107, 107, 113, 113)
    for lay in sm.layers[:first_slab - 1]:
        pts = np.concatenate(lay.support).reshape(-1, 2)
        assert shapely.distance(shapely.points(pts), column).min() >= 0.6 + W / 2 - 1e-6
    # the supported bed area (PrusaSlicer's grid support): the contact area is the slab (95..125 mm
    # on x and y) grown by the 1.5 mm support margin, stretched over the square cells of the
    # support line grid (lines at multiples of sp, cells centred on them), minus the gapped
    # column; to within the 0.25 mm pixels along the perimeters (half a pixel each)
    sp = S / cfg.support_density
    lo = (math.floor((95 - 1.5) / sp + 0.5) - 0.5) * sp
    hi = (math.floor((125 + 1.5) / sp + 0.5) + 0.5) * sp
    expected = (hi - lo) ** 2 - (6 + 2 * (0.6 + W / 2)) ** 2
    assert sm.stats["support_area_mm2"] == pytest.approx(expected, abs=0.25 * (4 * 30 + 4 * 8))
    # support line length on a layer ~ area / line spacing (the lines run along x; the zig-zag
    # connectors between them run along y and are not counted)
    length = sum(float(np.abs(np.diff(p[:, 0])).sum()) for p in sm.layers[10].support)
    assert length == pytest.approx(expected / sp, rel=0.1)
    # the lines of the square are joined into zig-zags: few polylines, travels inside the support
    assert len(sm.layers[10].support) <= 4
    assert len(sm.layers[10].support_inside) == len(sm.layers[10].support)


def test_supports_only_from_the_bed():
    # the slab overhangs a wide base: its support would stand on the part, so there is none
    sm = slice_mesh(_table(with_base=True), P, config=SliceConfig(support=True))
    assert all(not lay.support for lay in sm.layers)


def test_support_off():
    sm = slice_mesh(_table(), P, config=SliceConfig(support=False))
    assert all(not lay.support for lay in sm.layers)


def test_brim_rings():
    cube = _placed(trimesh.creation.box((10.0, 10.0, 2.0)))
    sm = slice_mesh(cube, P, config=SliceConfig(brim_width_mm=3.0, support=False))
    assert len(sm.brim) == round(3.0 / S)
    # innermost brim ring touches the part: centreline w/2 outside the outline
    d = shapely.distance(shapely.points(sm.brim[0]), shapely.box(105, 105, 115, 115))
    assert d.min() == pytest.approx(W / 2, abs=1e-6)


def test_open_mesh_warns():
    box = trimesh.creation.box((10.0, 10.0, 10.0))
    box = trimesh.Trimesh(box.vertices, box.faces[:-1], process=False)  # one face missing
    sm = slice_mesh(_placed(box), P, config=SliceConfig(support=False))
    assert any("did not close" in w for w in sm.warnings)


def test_mesh_must_rest_on_bed(cube):
    lifted = cube.copy()
    lifted.apply_translation([0, 0, 5])
    with pytest.raises(InputError, match="rest on the bed"):
        slice_outlines(lifted, 0.2, 0.2)


@pytest.mark.parametrize("field, value, match", [
    ("layer_height_mm", 0.0, "layer_height_mm"),
    ("walls", 0, "walls"),
    ("infill_density", 1.5, "infill_density"),
    ("infill_pattern", "gyroid", "infill_pattern"),
    ("support_angle_deg", 95, "support_angle_deg"),
    ("orient", "upside", "orient"),
    ("travel_speed_mm_s", -1, "travel_speed_mm_s"),
])
def test_config_validation(field, value, match):
    with pytest.raises(InputError, match=match):
        SliceConfig(**{field: value})


def test_config_resolves_printer_defaults():
    r = SliceConfig().resolved(P)
    assert r.line_width == pytest.approx(0.45)
    assert r.spacing == pytest.approx(S)
    with pytest.raises(InputError, match="layer height"):
        SliceConfig(layer_height_mm=0.36).resolved(P)


def test_kernel_warmup_and_helpers():
    kslice.warmup()
    seg = np.array([[0.0, 0.0, 1.0, 0.0], [5.0, 0.0, 1.1, 0.0], [0.0, 5.0, 0.0, 1.0]])
    order, flip = kslice.order_segments(seg, 0.0, 0.0)
    # after 0 (ends at x=1) the nearest end is 1.1 of segment 1 (reversed, ends at x=5); from
    # there (0, 1) of segment 2 is nearer than (0, 5), so it is reversed too
    assert order.tolist() == [0, 1, 2] and flip.tolist() == [False, True, True]
    square = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    cross = kslice.segments_cross_polygon(np.array([[5.0, 5.0, 15.0, 5.0], [2.0, 2.0, 8.0, 8.0]]),
                                          square, np.array([0, 4], np.int64))
    assert cross.tolist() == [True, False]
