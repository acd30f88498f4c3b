"""Orientation (least support, then height) and bed layout (no overlap, plates, never scaled)."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from printpipe.errors import PrinterError
from printpipe.slicing.layout import layout
from printpipe.slicing.orient import orient, support_score
from printpipe.slicing.printers import load_printer


@pytest.fixture(scope="module")
def ender():
    return load_printer("ender3")


def box(x, y, z, at=(0, 0, 0)):
    m = trimesh.creation.box(extents=(x, y, z))
    m.apply_translation(np.array(at) + [x / 2, y / 2, z / 2])
    return m


def mushroom():
    """A 60 x 60 x 5 mm cap on a 10 x 10 x 40 mm stem: stem-down needs support under the cap."""
    import manifold3d  # noqa: F401  (trimesh's boolean engine)

    stem = box(10, 10, 40, at=(25, 25, 0))
    cap = box(60, 60, 5, at=(0, 0, 40))
    return trimesh.boolean.union([stem, cap], engine="manifold")


def rigid(T):
    R = T[:3, :3]
    return np.allclose(R @ R.T, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(R), 1.0)


def test_orient_auto_turns_the_cap_down(ender):
    m = mushroom()
    before = support_score(m)["support_volume_mm3"]
    # stem down: the cap's underside (60^2 - 10^2 mm^2) is 40 mm above the bed
    assert before == pytest.approx((3600 - 100) * 40, rel=1e-6)
    T, info = orient(m, ender, "auto")
    assert rigid(T)
    out = m.copy()
    out.apply_transform(T)
    assert out.bounds[0][2] == pytest.approx(0.0, abs=1e-9)
    assert info["support_volume_mm3"] == pytest.approx(0.0, abs=1e-6)
    assert info["down_vector"] == pytest.approx([0, 0, 1], abs=1e-9)  # top of the cap now rests on the bed
    assert info["original_support_volume_mm3"] == pytest.approx(before, rel=1e-6)
    assert info["fits"] is True


def test_orient_none_keeps_frame(ender):
    m = mushroom()
    m.apply_translation([5, -7, 12])
    T, info = orient(m, ender, "none")
    assert np.allclose(T[:3, :3], np.eye(3))
    out = m.copy()
    out.apply_transform(T)
    assert out.bounds[0][2] == pytest.approx(0.0, abs=1e-9)


def test_orient_prefers_lower_height_when_support_ties(ender):
    # a plate standing on its edge needs no support either way; lying flat is lower
    m = box(80, 4, 50)
    T, info = orient(m, ender, "auto")
    assert info["height_mm"] == pytest.approx(4.0)


def test_parts_fit_one_plate(ender):
    parts = {f"p{i}": box(40, 40, 20, at=(100 * i, -50, 30)) for i in range(4)}
    plates = layout(parts, ender)
    assert len(plates) == 1 and len(plates[0]) == 4
    placed = []
    for name, T in plates[0]:
        assert rigid(T)
        m = parts[name].copy()
        m.apply_transform(T)
        lo, hi = m.bounds
        assert lo[0] >= 3 - 1e-9 and lo[1] >= 3 - 1e-9 and hi[0] <= 217 + 1e-9 and hi[1] <= 217 + 1e-9
        assert lo[2] == pytest.approx(0.0, abs=1e-9)
        # 1:1: the extents are those of the input (up to a quarter turn about z)
        assert sorted(hi - lo) == pytest.approx(sorted(parts[name].extents), abs=1e-6)
        placed.append((lo, hi))
    for i in range(len(placed)):
        for j in range(i + 1, len(placed)):
            a, b = placed[i], placed[j]
            gap_x = max(b[0][0] - a[1][0], a[0][0] - b[1][0])
            gap_y = max(b[0][1] - a[1][1], a[0][1] - b[1][1])
            assert max(gap_x, gap_y) >= 5.0 - 1e-6  # spacing kept


def test_parts_need_two_plates(ender):
    parts = {"a": box(150, 150, 10), "b": box(150, 150, 10), "c": box(30, 30, 10)}
    plates = layout(parts, ender)
    assert len(plates) == 2
    assert sorted(n for plate in plates for n, _ in plate) == ["a", "b", "c"]
    for plate in plates:
        for name, T in plate:
            m = parts[name].copy()
            m.apply_transform(T)
            assert sorted(m.extents) == pytest.approx(sorted(parts[name].extents), abs=1e-6)
            assert m.volume == pytest.approx(parts[name].volume, rel=1e-9)


def test_long_part_goes_diagonal_or_stands(ender):
    # 240 mm does not fit 214 mm along x or y, but fits across the bed's diagonal
    parts = {"rod": box(240, 10, 10)}
    (plate,) = layout(parts, ender)
    m = parts["rod"].copy()
    m.apply_transform(plate[0][1])
    lo, hi = m.bounds
    assert lo[0] >= 3 - 1e-6 and hi[0] <= 217 + 1e-6 and lo[1] >= 3 - 1e-6 and hi[1] <= 217 + 1e-6
    assert m.volume == pytest.approx(parts["rod"].volume, rel=1e-9)


def test_part_too_large_fails_with_ways_out(ender):
    # 300 x 60 x 60 mm fits neither flat (214 mm usable), standing (250 mm) nor tilted across the
    # build volume's diagonal (a 300 x 40 x 40 mm bar would, and is then laid out tilted)
    parts = {"femur_left": box(300, 60, 60)}
    with pytest.raises(PrinterError) as exc:
        layout(parts, ender)
    msg = str(exc.value)
    assert "femur_left is 300.0 x 60.0 x 60.0 mm" in msg
    assert "Creality Ender-3 (220 x 220 x 250 mm)" in msg
    assert "--printer (e.g. cr10" in msg and "--parts" in msg and "split the model" in msg
    assert "never scales" in msg
    # the same part fits the CR-10
    plates = layout(parts, load_printer("cr10"))
    assert len(plates) == 1
