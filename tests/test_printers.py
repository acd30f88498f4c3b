"""Printer profiles and material presets: loading, aliases, validation, limits."""

from __future__ import annotations

import pytest

from printpipe.errors import PrinterError
from printpipe.slicing.printers import (
    list_materials,
    list_printers,
    load_material,
    load_printer,
)
from printpipe.slicing.validate import validate_gcode

REQUIRED = {"ender3", "ender3v2", "mk3s", "i3mega", "cr10", "ender3s1"}


def test_builtin_profiles_load_and_have_published_volumes():
    printers = {p.id: p for p in list_printers()}
    assert REQUIRED <= set(printers)
    # manufacturers' published build volumes (x, y, z in mm)
    expected = {"ender3": (220, 220, 250), "ender3v2": (220, 220, 250), "mk3s": (250, 210, 210),
                "i3mega": (210, 210, 205), "cr10": (300, 300, 400), "ender3s1": (220, 220, 270)}
    for pid, vol in expected.items():
        p = printers[pid]
        assert (p.bed_x_mm, p.bed_y_mm, p.max_z_mm) == vol
        assert p.nozzle_mm == 0.4 and p.filament_diameter_mm == 1.75
        assert p.origin == "corner"
        assert set(p.max_feedrate_mm_s) == {"x", "y", "z", "e"}
        assert {"print", "travel", "retract"} <= set(p.max_accel_mm_s2)
        assert (p.jerk_mm_s is None) != (p.junction_deviation_mm is None)
        assert 0 < p.min_hotend_c < p.max_hotend_c and p.max_bed_c > 0


@pytest.mark.parametrize("name", ["ender3", "Ender-3", "ENDER 3", "creality ender-3"])
def test_aliases_case_insensitive(name):
    assert load_printer(name).id == "ender3"


def test_other_aliases():
    assert load_printer("prusa").id == "mk3s"
    assert load_printer("Ender-3 V2").id == "ender3v2"
    assert load_printer("CR-10").id == "cr10"


def test_unknown_printer_lists_known_names():
    with pytest.raises(PrinterError) as exc:
        load_printer("makerbot replicator")
    msg = str(exc.value)
    for pid in REQUIRED:
        assert pid in msg


def test_start_and_end_gcode_of_every_printer_are_safe():
    """Each profile's own start and end G-code passes the safety check with each material."""
    for p in list_printers():
        for m in list_materials():
            mat = load_material(m.name, p)
            text = p.render_start(mat) + p.render_end(mat, max_layer_z_mm=p.max_z_mm - 1)
            stats = validate_gcode(text, p, mat)
            assert stats["max_hotend_c"] == mat.first_layer_hotend_c
            end = p.render_end(mat, max_layer_z_mm=5).upper()
            assert "M104 S0" in end and "M140 S0" in end and "M107" in end and "M84" in end


def test_prusa_purge_line_uses_min_y():
    p = load_printer("mk3s")
    assert p.min_y_mm == -4
    assert p.travel_bounds_mm == (0.0, 250.0, -4.0, 210.0)
    assert p.bed_bounds_mm == (0.0, 250.0, 0.0, 210.0)
    assert "Y-3" in p.start_gcode


def test_user_profile_inherits_and_missing_field(tmp_path):
    own = tmp_path / "myprinter.toml"
    own.write_text('inherits = "ender3"\nname = "Hospital Ender"\nbed_x_mm = 235\n')
    p = load_printer(own)
    assert p.name == "Hospital Ender" and p.bed_x_mm == 235 and p.bed_y_mm == 220
    broken = tmp_path / "broken.toml"
    text = load_printer("ender3").path
    src = open(text).read().replace("max_z_mm = 250\n", "")
    broken.write_text(src)
    with pytest.raises(PrinterError, match="max_z_mm"):
        load_printer(broken)
    with pytest.raises(PrinterError, match="does not exist"):
        load_printer(tmp_path / "nope.toml")


def test_material_presets_and_printer_limits(tmp_path):
    ender = load_printer("ender3")
    pla = load_material("pla", ender)
    assert pla.name == "PLA" and pla.density_g_cm3 == pytest.approx(1.24)
    assert pla.retract_mm == ender.retract_mm  # bowden retraction from the printer
    petg = load_material("PETG", load_printer("mk3s"))
    assert petg.retract_mm == pytest.approx(0.8) and petg.bed_c >= 70
    hot = tmp_path / "pc.toml"
    hot.write_text('name = "PC"\ndensity_g_cm3 = 1.2\nhotend_c = 270\nhotend_range_c = [260, 300]\n'
                   'bed_c = 100\nbed_range_c = [90, 110]\nfan_percent = 0\nmax_volumetric_mm3_s = 8\n')
    with pytest.raises(PrinterError, match="at least 260 C .* limited to 255 C"):
        load_material(hot, ender)
    assert load_material(hot, load_printer("mk3s")).hotend_c == 270
    # a temperature above the printer's limit but within the material's range is lowered to it
    warm = tmp_path / "warm.toml"
    warm.write_text('inherits = "PETG"\nname = "PETG hot"\nhotend_c = 255\nfirst_layer_hotend_c = 255\n')
    assert load_material(warm, load_printer("cr10")).hotend_c == 250
    with pytest.raises(PrinterError, match="unknown material"):
        load_material("unobtainium", ender)


def test_cli_printers_lists_profiles(capsys):
    from printpipe.cli.main import main

    assert main(["printers"]) == 0
    out = capsys.readouterr().out
    for pid in REQUIRED:
        assert pid in out
    assert "220 x 220 x 250 mm" in out and "PETG" in out


def test_cli_slicing_options_build_config():
    import argparse

    from printpipe.cli import options_slicing

    parser = argparse.ArgumentParser()
    options_slicing.add_arguments(parser)
    args = parser.parse_args(["--printer", "mk3s", "--material", "PETG", "--layer-height", "0.15",
                              "--walls", "3", "--infill", "20", "--no-supports", "--orient", "none",
                              "--brim", "4"])
    printer, material, cfg = options_slicing.config_from_args(args)
    assert (printer, material) == ("mk3s", "PETG")
    assert cfg.layer_height_mm == 0.15 and cfg.walls == 3 and cfg.infill_density == pytest.approx(0.2)
    assert cfg.support is False and cfg.orient == "none" and cfg.brim_width_mm == 4
    printer, material, cfg = options_slicing.config_from_args(parser.parse_args([]))
    assert printer is None and material == "PLA" and cfg.layer_height_mm == 0.2


def test_cli_slice_cube(tmp_path, capsys):
    """`printpipe slice` writes G-code that passes the safety check and prints time and filament."""
    import trimesh

    from printpipe.cli.main import main

    stl = tmp_path / "cube.stl"
    trimesh.creation.box(extents=(20, 20, 20)).export(stl)
    out = tmp_path / "cube.gcode"
    assert main(["slice", str(stl), "--printer", "ender3", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "print time:" in text and "(h:mm)" in text and " m, " in text and " g " in text
    assert str(out) in text
    stats = validate_gcode(out.read_text(), load_printer("ender3"), load_material("PLA"))
    # 20 mm at 0.2 mm layers
    assert stats["layers"] == 100
    lo, hi = stats["extrusion_bbox_mm"]
    assert hi[2] == pytest.approx(20.0, abs=1e-6)
