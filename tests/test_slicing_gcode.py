"""G-code of the built-in slicer: conventions, extrusion amounts, safety, inside check, picture."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import trimesh

from printpipe.slicing.config import SliceConfig
from printpipe.slicing.gcode import MODEL_TYPES, check_inside_outline, render_toolpaths, to_gcode
from printpipe.slicing.toolpaths import slice_mesh

printers = pytest.importorskip("printpipe.slicing.printers")
validate = pytest.importorskip("printpipe.slicing.validate")
pytest.importorskip("printpipe.slicing.estimate")

W, H = 0.45, 0.2
S = W - H * (1 - math.pi / 4)
FIL_AREA = math.pi * 1.75**2 / 4


@pytest.fixture(scope="module")
def printer():
    return printers.load_printer("ender3")


@pytest.fixture(scope="module")
def material(printer):
    return printers.load_material("PLA", printer)


def _placed(mesh, x=110.0, y=110.0):
    mesh = mesh.copy()
    mesh.apply_translation([x - mesh.bounds[:, 0].mean(), y - mesh.bounds[:, 1].mean(), -mesh.bounds[0, 2]])
    return mesh


@pytest.fixture(scope="module")
def cube():
    return _placed(trimesh.creation.box((20.0, 20.0, 20.0)))


@pytest.fixture(scope="module")
def cube_gcode(cube, printer, material):
    cfg = SliceConfig(support=False)
    sm = slice_mesh(cube, printer, material, cfg)
    return to_gcode([sm], printer, material, cfg, {"case": "test"})


def _model_volume(text):
    """Plastic laid by model extrusions (moves with XY motion, so retract/unretract excluded)."""
    pg = validate.parse_gcode(text)
    sx = np.r_[pg.start_xyz[0], pg.x[:-1]]
    sy = np.r_[pg.start_xyz[1], pg.y[:-1]]
    moved = np.hypot(pg.x - sx, pg.y - sy) > 1e-6
    names = np.array(list(pg.types) + [""], dtype=object)[np.where(pg.type_id >= 0, pg.type_id, len(pg.types))]
    model = np.isin(names.astype(str), list(MODEL_TYPES)) & moved & (pg.de > 0)
    return float(pg.de[model].sum() * FIL_AREA), pg, model, np.hypot(pg.x - sx, pg.y - sy)


def test_header_conventions(cube_gcode):
    head = cube_gcode.split("\n", 20)[:20]
    assert head[0] == ";FLAVOR:Marlin"
    assert re.fullmatch(r";TIME:\d+", head[1]) and int(head[1][6:]) > 60
    assert any(re.fullmatch(r";Filament used: \d+\.\d+m", ln) for ln in head)
    assert ";LAYER_COUNT:100" in head


def test_layers_types_modes(cube_gcode):
    lines = cube_gcode.splitlines()
    layers = [int(ln[7:]) for ln in lines if ln.startswith(";LAYER:")]
    assert layers == list(range(100))
    types = {ln[6:] for ln in lines if ln.startswith(";TYPE:")}
    assert {"WALL-OUTER", "WALL-INNER", "SKIN", "FILL", "SKIRT"} <= types
    # every extrusion is preceded by a ;TYPE: in the layers part
    first_layer = lines.index(";LAYER:0")
    # absolute XYZ, relative E declared before the first extrusion and never switched back
    code = [ln.split(";")[0].strip() for ln in lines]
    first_e = next(i for i, c in enumerate(code) if c.startswith("G1") and " E" in c and "X" in c)
    assert any(c == "G90" for c in code[:first_e])
    assert any(c == "M83" for c in code[:first_e])
    assert not any(c == "M82" or c == "G91" for c in code)
    # heat with waits before the first extrusion
    assert any(c.startswith("M190") for c in code[:first_e])
    assert any(c.startswith("M109") for c in code[:first_e])
    # fan off on the first layer, on from the second
    l1 = lines.index(";LAYER:1")
    assert "M107" in code[first_layer:l1]
    assert any(c.startswith("M106") for c in code[l1:lines.index(";LAYER:2")])
    # Z rises by the layer height at each layer
    zs = [float(re.search(r"Z([\d.]+)", ln).group(1)) for ln in lines[first_layer:]
          if ln.startswith("G0") and "Z" in ln and "X" not in ln][:100]
    np.testing.assert_allclose(zs, 0.2 * np.arange(1, 101), atol=1e-6)


def test_extrusion_per_mm_is_rounded_rectangle(cube_gcode):
    # relative E of every model move = length * ((w - h) h + pi (h/2)^2) / filament area;
    # G-code rounding (3 decimals in XY, 5 in E) limits the agreement on short moves
    vol, pg, model, length = _model_volume(cube_gcode)
    sel = model & (length > 1.0)
    ratio = pg.de[sel] / length[sel]
    expected = ((W - H) * H + math.pi * (H / 2) ** 2) / FIL_AREA
    np.testing.assert_allclose(ratio, expected, rtol=2e-3)


def test_extruded_volume_cube(cube, printer, material):
    # infill joins off: the analytic volume below counts straight lines only (the joins along the
    # boundary add up to one boundary length per layer, checked in test_slicing_core)
    cfg = SliceConfig(support=False, infill_connect_mm=0.0)
    text = to_gcode([slice_mesh(cube, printer, material, cfg)], printer, material, cfg, {"case": "test"})
    # walls: loop k at w/2 + k*s inside the 20 mm square, each of cross-section h*s
    walls = sum(4 * (20 - 2 * (W / 2 + k * S)) for k in range(cfg.walls)) * H * S * 100
    inner = (20 - 2 * (W / 2 + (cfg.walls - 1) * S + S / 2)) ** 2
    solid_layers = cfg.bottom_layers + cfg.top_layers
    expected = walls + inner * H * (solid_layers + cfg.infill_density * (100 - solid_layers))
    vol, *_ = _model_volume(text)
    # 3 %: skin and infill line counts are quantised (the 5.4 mm grid over an 18 mm square lays
    # about 4 % more or less than density x area per layer; sparse infill is ~35 % of the total)
    assert vol == pytest.approx(expected, rel=0.03)


def test_gcode_is_safe_and_filament_matches(cube_gcode, printer, material):
    stats = validate.validate_gcode(cube_gcode, printer, material)
    assert stats["layers"] == 100 and stats["e_mode"] == "M83"
    vol, pg, *_ = _model_volume(cube_gcode)
    used = float(re.search(r";Filament used: ([\d.]+)m", cube_gcode).group(1)) * 1000
    # the header's filament includes the purge line and skirt: at least the model's
    assert used >= vol / FIL_AREA * 0.999


@pytest.mark.parametrize("shape", ["cube", "sphere", "torus"])
def test_paths_inside_cross_section(shape, printer, material):
    mesh = {"cube": lambda: trimesh.creation.box((20.0, 20.0, 20.0)),
            "sphere": lambda: trimesh.creation.icosphere(subdivisions=4, radius=10.0),
            "torus": lambda: trimesh.creation.torus(15.0, 5.0, major_sections=64, minor_sections=32)}[shape]()
    mesh = _placed(mesh)
    cfg = SliceConfig(support=False)
    sm = slice_mesh(mesh, printer, material, cfg)
    text = to_gcode([sm], printer, material, cfg)
    res = check_inside_outline(text, mesh, W, max_layers=None)  # every layer
    assert res["moves"] > 100 and res["layers"] == res["layers_total"]
    assert res["outside"] == 0, res
    # the outer wall centreline sits w/2 inside the outline (0.01 mm: loop simplification)
    assert res["outer_wall_offset_median_mm"] == pytest.approx(W / 2, abs=0.01)
    assert res["outline_traced_fraction"] > 0.99


def test_inside_check_catches_a_stray_extrusion(cube_gcode, cube):
    bad = cube_gcode.replace(";LAYER:50\n", ";LAYER:50\n;TYPE:FILL\nG0 X95 Y110\nG1 X90 Y110 E0.2\n", 1)
    res = check_inside_outline(bad, cube, W, max_layers=None)
    assert res["outside"] == 1
    assert res["max_outside_mm"] == pytest.approx(5.0 - W / 2 - 0.05, abs=1e-3)
    # sampled layers: 11 of 100 evenly spread, the first and the last always among them
    # (inserted after the move up to the last layer's height)
    bad = re.sub(r"(;LAYER:99\n(?:.*\n)*?G0[^\n]*Z[\d.]+\n)", r"\1;TYPE:FILL\nG0 X95 Y110\nG1 X90 Y110 E0.2\n",
                 cube_gcode, count=1)
    res = check_inside_outline(bad, cube, W, max_layers=11)
    assert res["layers"] == 11 and res["layers_total"] == 100 and res["outside"] == 1


def test_supports_in_gcode(printer, material):
    col = trimesh.creation.box((6, 6, 10))
    col.apply_translation([0, 0, 5])
    slab = trimesh.creation.box((30, 30, 4))
    slab.apply_translation([0, 0, 12])
    mesh = _placed(trimesh.util.concatenate([col, slab]))
    cfg = SliceConfig(support=True)
    sm = slice_mesh(mesh, printer, material, cfg)
    text = to_gcode([sm], printer, material, cfg)
    assert ";TYPE:SUPPORT" in text
    validate.validate_gcode(text, printer, material)
    assert check_inside_outline(text, mesh, W)["outside"] == 0
    # travels between support polylines that stay inside the support do not retract (as in
    # PrusaSlicer): fewer retractions in the support than support polylines
    n_lines = sum(len(lay.support) for lay in sm.layers)
    kind, sup_retracts = None, 0
    for line in text.splitlines():
        if line.startswith(";TYPE:"):
            kind = line[6:]
        elif line.startswith("G1 E-") and kind == "SUPPORT":
            sup_retracts += 1
    assert any(any(lay.support_inside) for lay in sm.layers)
    assert sup_retracts < n_lines


def test_render_toolpaths(cube_gcode, tmp_path, cube, printer):
    from PIL import Image

    png = render_toolpaths(cube_gcode, tmp_path / "paths.png")
    with Image.open(png) as im:
        assert im.size[0] > 800 and im.size[1] > 300
    sm = slice_mesh(cube, printer, None, SliceConfig(support=False))
    png2 = render_toolpaths(sm, tmp_path / "paths2.png")
    assert png2.stat().st_size > 10_000


def test_slice_parts_writes_validated_file(tmp_path, printer, material):
    pytest.importorskip("printpipe.slicing.layout")
    from printpipe.slicing import slice_parts

    box = trimesh.creation.box((15.0, 10.0, 5.0))
    res = slice_parts({"pelvis": box}, printer, material, SliceConfig(orient="none"), tmp_path)
    assert [p.name for p in res.files] == ["model.gcode"]
    assert res.plates == 1 and res.layer_count == 25
    assert res.time_s > 0 and res.filament_mm > 0 and res.filament_g > 0
    text = res.files[0].read_text()
    assert text.startswith(";FLAVOR:Marlin")
    assert not list(tmp_path.glob(".*"))  # no temporary files left
