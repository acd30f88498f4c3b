"""Tests of printpipe.repair: closing, orienting and checking meshes; decimation; fidelity."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from printpipe.errors import InputError, MeshError
from printpipe.repair import (
    RepairConfig,
    count_self_intersections,
    decimate,
    fidelity,
    repair,
    surface_distance,
    wall_thickness,
)

FAST = RepairConfig(wall_samples=500)


def _mesh(v, f):
    return trimesh.Trimesh(vertices=np.asarray(v, float), faces=np.asarray(f), process=False)


def _icosphere_volume(mesh):
    """Exact volume of a closed polyhedron (divergence theorem), the reference for icospheres.

    An icosphere is inscribed in its sphere, so its volume is below 4/3 pi r^3: by 0.31 % at
    subdivision 4 (r = 1), which the tests that compare with the analytic sphere allow for.
    """
    tri = np.asarray(mesh.vertices)[np.asarray(mesh.faces)]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6)


@pytest.fixture
def sphere():
    return trimesh.creation.icosphere(subdivisions=4, radius=10.0)


def test_box_passes_unchanged():
    out, rep = repair(trimesh.creation.box((10, 20, 30)), FAST, name="box")
    # a box is exact: volume 10*20*30, area 2*(200+300+600), Euler number 2 (genus 0)
    assert rep.watertight and rep.manifold and rep.oriented
    assert rep.volume_mm3 == pytest.approx(6000.0, rel=1e-12)
    assert rep.area_mm2 == pytest.approx(2200.0, rel=1e-12)
    assert rep.euler == 2 and rep.shells == 1
    assert rep.bbox_mm["size"] == pytest.approx([10, 20, 30])
    assert rep.faces_flipped == rep.holes_filled == rep.shells_dropped == 0
    assert rep.self_intersections == 0
    d = rep.to_dict()
    assert d["self_intersections"] == 0 and isinstance(d["volume_mm3"], float)
    # thinnest wall of a 10 x 20 x 30 box is its 10 mm side (sampled point cloud: ~1 % slack)
    assert d["thinnest_wall_mm"] == pytest.approx(10.0, rel=0.01)


def test_cube_with_missing_face_is_filled():
    box = trimesh.creation.box((10, 10, 10))
    keep = box.face_normals[:, 2] < 0.5  # drop the two triangles of the top face
    out, rep = repair(_mesh(box.vertices, box.faces[keep]), FAST, name="cube")
    assert rep.holes_filled == 1 and rep.watertight
    # the hole is planar, so the centroid fan restores the exact cube
    assert out.volume == pytest.approx(1000.0, rel=1e-12)
    assert out.is_watertight and out.is_winding_consistent
    assert rep.euler == 2


def test_flipped_faces_are_fixed(sphere):
    faces = np.asarray(sphere.faces).copy()
    faces[::3] = faces[::3, ::-1]
    out, rep = repair(_mesh(sphere.vertices, faces), FAST)
    assert rep.faces_flipped == len(faces[::3])
    assert out.is_winding_consistent
    # same polyhedron as the icosphere; the analytic sphere is 0.31 % larger (inscribed facets)
    assert out.volume == pytest.approx(_icosphere_volume(sphere), rel=1e-12)
    assert out.volume == pytest.approx(4 / 3 * np.pi * 1000, rel=0.004)


def test_inside_out_mesh_is_turned(sphere):
    out, rep = repair(_mesh(sphere.vertices, np.asarray(sphere.faces)[:, ::-1]), FAST)
    assert rep.faces_flipped == len(sphere.faces)
    assert out.volume > 0 and out.volume == pytest.approx(_icosphere_volume(sphere), rel=1e-12)


def test_cavity_keeps_inward_normals():
    outer = trimesh.creation.icosphere(3, radius=10.0)
    inner = trimesh.creation.icosphere(3, radius=8.0)
    v = np.vstack([outer.vertices, inner.vertices])
    want = _icosphere_volume(outer) - _icosphere_volume(inner)
    for inner_faces in (inner.faces[:, ::-1], inner.faces):  # right, and wrongly oriented cavity
        f = np.vstack([outer.faces, np.asarray(inner_faces) + len(outer.vertices)])
        out, rep = repair(_mesh(v, f), FAST)
        assert rep.shells == 2
        assert out.volume == pytest.approx(want, rel=1e-9)
    # the wall is 2 mm thick everywhere (minus the facet sag of the outer icosphere, < 0.1 mm)
    assert rep.thinnest_wall_mm == pytest.approx(2.0, abs=0.1)


def test_duplicates_degenerates_and_unmerged_vertices(sphere):
    v = np.asarray(sphere.vertices)
    f = np.asarray(sphere.faces)
    # split vertices: every face gets its own three vertex copies (a "triangle soup" as from STL)
    soup_v = v[f].reshape(-1, 3)
    soup_f = np.arange(len(soup_v)).reshape(-1, 3)
    extra = np.array([[0, 0, 1], soup_f[5]])  # one degenerate face, one duplicate face
    out, rep = repair(_mesh(soup_v, np.vstack([soup_f, extra])), FAST)
    assert rep.vertices_merged == len(soup_v) - len(v)
    assert rep.degenerate_removed == 1 and rep.duplicate_faces_removed == 1
    assert rep.watertight and rep.faces == len(f) and rep.vertices == len(v)


def test_tiny_shell_dropped(sphere):
    speck = trimesh.creation.box((1, 1, 1))
    speck.apply_translation((30, 0, 0))
    v = np.vstack([sphere.vertices, speck.vertices])
    f = np.vstack([sphere.faces, np.asarray(speck.faces) + len(sphere.vertices)])
    out, rep = repair(_mesh(v, f), FAST)
    assert rep.shells == 1 and rep.shells_dropped == 1
    assert rep.shells_dropped_volume_mm3 == pytest.approx(1.0)
    assert len(out.faces) == len(sphere.faces)


def test_open_sheet_raises_and_names_the_problem():
    n = 30
    x, y = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float))
    v = np.column_stack([x.ravel(), y.ravel(), np.zeros(n * n)])
    idx = np.arange(n * n).reshape(n, n)
    q = np.column_stack([idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()])
    f = np.vstack([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
    with pytest.raises(MeshError, match=r"part 'sheet' cannot be closed: .*116 open \(boundary\) edges"):
        repair(_mesh(v, f), FAST, name="sheet")


def test_non_manifold_edge_is_split():
    # two cubes touching along one edge: after merging, that edge is shared by four faces
    a = trimesh.creation.box(bounds=((0, 0, 0), (10, 10, 10)))
    b = trimesh.creation.box(bounds=((10, 10, 0), (20, 20, 10)))
    v = np.vstack([a.vertices, b.vertices])
    f = np.vstack([a.faces, np.asarray(b.faces) + 8])
    out, rep = repair(_mesh(v, f), FAST, name="touching")
    assert rep.nonmanifold_edges_split == 1 and rep.vertices_merged == 2
    assert rep.watertight and rep.shells == 2
    assert out.volume == pytest.approx(2000.0)
    assert out.is_watertight and out.is_winding_consistent


def test_loose_fin_on_an_edge_is_removed():
    a = trimesh.creation.box((10, 10, 10))
    # a fin: one extra triangle on an existing edge, which is then shared by three faces; split
    # off, it is a zero-volume debris shell and dropped
    e = a.edges_unique[0]
    v = np.vstack([a.vertices, [[20.0, 20.0, 20.0]]])
    f = np.vstack([a.faces, [[e[0], e[1], 8]]])
    out, rep = repair(_mesh(v, f), FAST, name="fin")
    assert rep.nonmanifold_edges_split == 1 and rep.shells_dropped == 1
    assert len(out.faces) == 12 and out.volume == pytest.approx(1000.0)


def test_empty_mesh_raises():
    with pytest.raises(MeshError, match="empty"):
        repair(_mesh(np.zeros((0, 3)), np.zeros((0, 3), int)), FAST, name="nothing")


def test_self_intersections_counted():
    a = trimesh.creation.box((10, 10, 10))
    b = trimesh.creation.box((10, 10, 10))
    b.apply_translation((3.0, 4.0, 2.5))  # generic offset: no edge passes exactly through a diagonal
    v = np.vstack([a.vertices, b.vertices])
    f = np.vstack([a.faces, np.asarray(b.faces) + 8])
    n, frac = count_self_intersections(v, f)
    assert n > 0 and frac == 1.0
    out, rep = repair(_mesh(v, f), FAST)
    assert rep.self_intersections == n and rep.shells == 2
    assert rep.volume_mm3 == pytest.approx(2000.0)  # overlapping shells are two solids, not a cavity
    off = RepairConfig(check_self_intersections=False, wall_samples=0)
    assert repair(_mesh(v, f), off)[1].to_dict()["self_intersections"] is None


def test_self_intersections_sampled(sphere):
    n, frac = count_self_intersections(sphere.vertices, sphere.faces, max_faces=1000)
    assert n == 0 and frac == pytest.approx(1000 / len(sphere.faces))


def _brute_force_intersections(v, f):
    """Reference: all pairs (i < j) of faces sharing no vertex where an edge of one passes through
    the interior of the other (Moeller-Trumbore segment test); returns the (i, j) of those pairs."""
    tri = v[f]
    i, j = np.triu_indices(len(f), k=1)
    share = (f[i][:, :, None] == f[j][:, None, :]).any(axis=(1, 2))
    i, j = i[~share], j[~share]

    def edges_through(ta, tb, eps=1e-9):
        hit = np.zeros(len(ta), dtype=bool)
        e1, e2 = tb[:, 1] - tb[:, 0], tb[:, 2] - tb[:, 0]
        for a in range(3):
            p, d = ta[:, a], ta[:, (a + 1) % 3] - ta[:, a]
            h = np.cross(d, e2)
            det = np.einsum("ij,ij->i", e1, h)
            ok = np.abs(det) > 1e-14
            det = np.where(ok, det, 1.0)
            s = p - tb[:, 0]
            q = np.cross(s, e1)
            u = np.einsum("ij,ij->i", s, h) / det
            w = np.einsum("ij,ij->i", d, q) / det
            t = np.einsum("ij,ij->i", e2, q) / det
            hit |= ok & (u > eps) & (w > eps) & (u + w < 1 - eps) & (t > eps) & (t < 1 - eps)
        return hit

    hit = edges_through(tri[i], tri[j]) | edges_through(tri[j], tri[i])
    return i[hit], j[hit]


def test_self_intersections_grid_matches_brute_force():
    # a soup of random triangles of mixed sizes (a few large ones span many grid cells): the grid
    # broad phase must find exactly the pairs an all-pairs search finds, sampled or not
    rng = np.random.default_rng(3)
    n = 400
    centres = rng.uniform(0, 30, (n, 1, 3))
    scale = np.where(rng.random(n) < 0.05, 12.0, 2.0)[:, None, None]
    v = (centres + rng.normal(size=(n, 3, 3)) * scale).reshape(-1, 3)
    f = np.arange(3 * n).reshape(n, 3)
    i, j = _brute_force_intersections(v, f)
    assert len(i) > 50  # the soup is dense enough to test something
    n_found, frac = count_self_intersections(v, f)
    assert n_found == len(i) and frac == 1.0
    # sampled: the pairs with at least one face in the sample (the same draw as the function's)
    n_sampled, frac = count_self_intersections(v, f, max_faces=n // 3, rng=np.random.default_rng(5))
    sample = np.zeros(n, dtype=bool)
    sample[np.random.default_rng(5).choice(n, size=n // 3, replace=False)] = True
    assert frac == pytest.approx(1 / 3, abs=1e-2)
    assert n_sampled == int((sample[i] | sample[j]).sum())
    assert 0 < n_sampled < len(i)


def test_wall_thickness_plate_and_ball(rng):
    plate = trimesh.creation.box((40, 40, 2))
    t = wall_thickness(plate, 1000, rng=rng)
    # a 2 mm plate is 2 mm thick everywhere, also next to its edges (not so for inscribed balls)
    assert np.percentile(t, 1) == pytest.approx(2.0, rel=0.01)
    ball = trimesh.creation.icosphere(4, radius=5.0)
    t = wall_thickness(ball, 500, rng=rng)
    # the inscribed icosphere's faces lie at most 0.3 % inside the sphere of radius 5
    assert np.median(t) == pytest.approx(10.0, rel=0.01)


def test_config_validation_names_the_field():
    with pytest.raises(InputError, match="max_error_mm"):
        RepairConfig(max_error_mm=-1)
    with pytest.raises(InputError, match="target_faces"):
        RepairConfig(target_faces=2)


def test_decimate_to_target(sphere):
    out, info = decimate(sphere, target_faces=1000)
    assert out.is_watertight and out.is_winding_consistent and out.volume > 0
    assert info["faces_after"] <= 1000 * 1.02 and info["faces_before"] == len(sphere.faces)
    # 1000 faces on a 10 mm sphere: facet sag ~ r * (1 - cos(edge / 2r)) with edge ~ 1.6 mm: < 0.05 mm
    assert 0 < info["distance"]["max_mm"] < 0.1


def test_decimate_within_error_bound(sphere):
    # quadric collapse moves single points of this smooth 5120-face sphere by ~0.05 mm even at
    # small reductions, so 0.1 mm is a bound that allows a real reduction
    out, info = decimate(sphere, max_error_mm=0.1)
    assert info["distance"]["max_mm"] <= 0.1
    assert info["faces_after"] < len(sphere.faces)
    assert out.is_watertight
    with pytest.raises(InputError, match="target_faces"):
        decimate(sphere)


def test_fidelity_of_concentric_spheres():
    small = trimesh.creation.icosphere(4, radius=10.0)
    big = trimesh.creation.icosphere(4, radius=10.5)
    fi = fidelity(small, big, samples=20_000)
    # points on the r = 10 polyhedron lie 0.5 mm inside the r = 10.5 one, plus up to the facet sag
    # of the small sphere (0.31 % of 10 mm ~ 0.03 mm) minus that of the big one: 0.5 +- 0.04 mm
    assert fi["mean_mm"] == pytest.approx(0.5, abs=0.04)
    assert fi["max_mm"] == pytest.approx(0.5, abs=0.04)
    # scaled copies: the volume ratio is exactly (10 / 10.5)^3
    assert fi["volume_change_pct"] == pytest.approx(100 * ((10 / 10.5) ** 3 - 1), abs=1e-3)
    same = fidelity(small, small, samples=5000)
    assert same["max_mm"] < 1e-6 and same["volume_change_pct"] == 0


def test_surface_distance_to_a_box_is_exact():
    # distance from a point outside an axis-aligned box of half-sizes h: |max(|p| - h, 0)|, which
    # covers all seven closest-feature cases (face, edge, vertex); inside: min(h - |p|)
    box = trimesh.creation.box((4.0, 6.0, 8.0))  # 12 large triangles: proxies matter, not vertices
    h = np.array([2.0, 3.0, 4.0])
    rng = np.random.default_rng(7)
    p = rng.uniform(-9, 9, (3000, 3))
    out = np.abs(p) > h
    expected = np.where(out.any(axis=1), np.linalg.norm(np.maximum(np.abs(p) - h, 0), axis=1),
                        np.min(h - np.abs(p), axis=1))
    d = surface_distance(p, box, min_proxies=20_000)
    # float64 arithmetic on coordinates below 10 mm: agreement to 1e-9 mm
    np.testing.assert_allclose(d, expected, atol=1e-9)


def test_warmup_compiles_the_kernels():
    from printpipe import repair as repair_module

    repair_module.warmup()  # must run on a tiny mesh without error (batch parents call it)
    assert repair_module._si_grid_count.signatures and repair_module._nearest_candidate_distance.signatures
