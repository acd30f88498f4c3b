"""G-code safety check: each violation fails with the line number and the limit."""

from __future__ import annotations

import pytest

from printpipe.errors import PrinterError
from printpipe.slicing.printers import load_material, load_printer
from printpipe.slicing.validate import parse_gcode, validate_gcode


@pytest.fixture(scope="module")
def ender():
    return load_printer("ender3")


@pytest.fixture(scope="module")
def pla(ender):
    return load_material("PLA", ender)


BODY = """;LAYER:0
;TYPE:WALL-OUTER
G1 X50 Y50 Z0.2 F9000
G1 X150 Y50 E5 F1800
G1 X150 Y150 E5
G1 X50 Y150 E5
G1 X50 Y50 E5
"""


def make(ender, pla, body=BODY, end=True):
    text = ender.render_start(pla) + body
    if end:
        text += ender.render_end(pla, max_layer_z_mm=0.2)
    return text


def line_of(text, needle):
    return text.splitlines().index(needle) + 1


def test_valid_file_passes(ender, pla):
    stats = validate_gcode(make(ender, pla), ender, pla)
    assert stats["extrusion_bbox_mm"] == [[2.0, 20.0, 0.2], [150.0, 200.0, 0.28]]
    assert stats["layers"] == 1 and stats["e_mode"] == "M83"
    assert stats["max_hotend_c"] == 210 and stats["max_bed_c"] == 60


def test_x_beyond_bed(ender, pla):
    text = make(ender, pla, BODY + "G1 X230 Y100 F9000\n")
    with pytest.raises(PrinterError) as exc:
        validate_gcode(text, ender)
    msg = str(exc.value)
    assert f"line {line_of(text, 'G1 X230 Y100 F9000')}" in msg
    assert "X 230.000" in msg and "X 0..220 mm" in msg


def test_z_below_zero(ender, pla):
    text = make(ender, pla, BODY + "G1 Z-0.1\n")
    with pytest.raises(PrinterError, match=rf"line {line_of(text, 'G1 Z-0.1')} .*below the bed"):
        validate_gcode(text, ender)


def test_z_beyond_height(ender, pla):
    text = make(ender, pla, BODY + "G1 Z251 F600\n")
    with pytest.raises(PrinterError, match=r"Z 251.000 mm is above .* maximum height of 250 mm"):
        validate_gcode(text, ender)


def test_hotend_300(ender, pla):
    text = make(ender, pla, "M104 S300\n" + BODY)
    with pytest.raises(PrinterError, match=rf"line {line_of(text, 'M104 S300')} .*300 C is above .*limit of 255 C"):
        validate_gcode(text, ender)


def test_material_range(ender, pla):
    text = make(ender, pla, "M104 S240\n" + BODY)
    validate_gcode(text, ender)  # the printer allows it
    with pytest.raises(PrinterError, match="above PLA's range"):
        validate_gcode(text, ender, pla)


def test_heaters_left_on(ender, pla):
    text = make(ender, pla, end=False)
    with pytest.raises(PrinterError, match="heater is left on"):
        validate_gcode(text, ender)
    text = make(ender, pla, end=False) + "M104 S0\n"
    with pytest.raises(PrinterError, match="bed heater is left on at 60 C"):
        validate_gcode(text, ender)


def test_relative_moves_that_end_outside(ender, pla):
    # 9 relative steps of 20 mm from x=50 end at 230 > 220: the 9th step is the culprit
    steps = "G91\n" + "G1 X20 F3000\n" * 9 + "G90\n"
    text = make(ender, pla, BODY + steps)
    lines = text.splitlines()
    culprit = [i for i, ln in enumerate(lines, 1) if ln == "G1 X20 F3000"][8]
    with pytest.raises(PrinterError, match=rf"line {culprit} .*X 230.000"):
        validate_gcode(text, ender)
    ok = make(ender, pla, BODY + "G91\n" + "G1 X20 F3000\n" * 8 + "G90\n")
    validate_gcode(ok, ender)


def test_g92_offsets_are_physical(ender, pla):
    # G92 X0 at physical x=50: a later G1 X-40 is physical x=10, inside the bed
    text = make(ender, pla, BODY + "G92 X0\nG1 X-40 F3000\nG28 X\n")
    validate_gcode(text, ender)
    bad = make(ender, pla, BODY + "G92 X0\nG1 X-60 F3000\nG28 X\n")
    with pytest.raises(PrinterError, match="X -10.000"):
        validate_gcode(bad, ender)


def test_arc_bulge_checked(ender, pla):
    # counter-clockwise half circle from (150, 150) to (150, 50) around (150, 100): its bulge
    # reaches x = 200 (inside); with radius 80 around (150, 100) it reaches x = 230 (outside)
    ok = make(ender, pla, BODY + "G1 X150 Y150\nG2 X150 Y50 I0 J-50 E2\n")
    validate_gcode(ok, ender)
    bad = make(ender, pla, BODY + "G1 X150 Y180\nG2 X150 Y20 I0 J-80 E2\n")
    with pytest.raises(PrinterError, match="arc spans X .*230.000"):
        validate_gcode(bad, ender)


def test_e_mode_must_be_declared(ender, pla):
    text = make(ender, pla).replace("M83 ;", "; M83 removed")
    with pytest.raises(PrinterError, match="extrusion mode was declared"):
        validate_gcode(text, ender)


def test_cold_extrusion_and_homing(ender, pla):
    text = make(ender, pla, "M104 S0\n" + BODY)
    with pytest.raises(PrinterError, match="cold-extrusion"):
        validate_gcode(text, ender)
    with pytest.raises(PrinterError, match="before the axes were homed"):
        validate_gcode("M83\nG1 X10 Y10 F3000\nG28\nM104 S0\nM140 S0\n", ender)


def test_prusa_purge_line_allowed_only_on_prusa():
    mk3 = load_printer("mk3s")
    pla = load_material("PLA", mk3)
    text = mk3.render_start(pla) + BODY + mk3.render_end(pla, max_layer_z_mm=0.2)
    stats = validate_gcode(text, mk3, pla)
    assert stats["bbox_mm"][0][1] == -3.0
    ender = load_printer("ender3")
    with pytest.raises(PrinterError, match="Y -3.000"):
        validate_gcode(text.replace("M190 S60", "M190 S60"), ender)


def test_parser_modes_and_words(ender):
    pg = parse_gcode("G28\nM82\nG1X10Y10E1F600\nG1 x20 y10 e3 ; comment\nG92 E0\nG1 X30 E1\n"
                     "M83\nG1 X40 E1\nG91\nG1 X5 E1\nG90\nM83\nG1 X50 (inline) E2\n")
    assert list(pg.x) == [10, 20, 30, 40, 45, 50]
    assert list(pg.de) == [1, 2, 1, 1, 1, 2]
    assert pg.feed[0] == pytest.approx(10.0)
