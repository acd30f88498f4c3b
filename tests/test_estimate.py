"""Print-time estimate against closed-form trapezoid answers, and filament sums."""

from __future__ import annotations

import math

import pytest

from printpipe.slicing.estimate import estimate
from printpipe.slicing.printers import load_printer

A = 500.0  # mm/s^2, print and travel acceleration of the test printers
J = 10.0   # mm/s, classic XY jerk of the Ender-3


@pytest.fixture(scope="module")
def jd_printer(tmp_path_factory):
    """Ender-3 with junction deviation: the head starts and stops at rest (no jerk)."""
    path = tmp_path_factory.mktemp("prof") / "ender3_jd.toml"
    path.write_text('inherits = "ender3"\njunction_deviation_mm = 0.05\n'
                    'max_accel_mm_s2 = { print = 500, travel = 500, retract = 500 }\n')
    return load_printer(path)


@pytest.fixture(scope="module")
def ender():
    return load_printer("ender3")


def prog(body: str) -> str:
    return "G28\nG90\nM83\n" + body


def test_long_move_reaches_feedrate(jd_printer):
    # rest -> v -> rest over L: t = L/v + v/a (accelerating and braking each take v/a and cover
    # v^2/2a); exact up to float rounding
    L, v = 200.0, 50.0
    r = estimate(prog(f"G1 X{L} F{v * 60}\n"), jd_printer)
    assert r["time_s"] == pytest.approx(L / v + v / A, rel=1e-9)


def test_short_move_is_a_triangle(jd_printer):
    # v^2/a = 5 mm > L = 2 mm: the head never reaches v; t = 2 sqrt(L/a)
    L, v = 2.0, 50.0
    r = estimate(prog(f"G1 X{L} F{v * 60}\n"), jd_printer)
    assert r["time_s"] == pytest.approx(2 * math.sqrt(L / A), rel=1e-9)


def test_classic_jerk_start_and_corner(ender):
    # Marlin classic jerk: a move starts and ends at the jerk speed j, so
    # t = L/v + (v - j)^2 / (a v); a 90-degree corner also drops to j (x stops, y starts)
    L, v = 100.0, 50.0
    one = L / v + (v - J) ** 2 / (A * v)
    r = estimate(prog(f"G1 X{L} F{v * 60}\n"), ender)
    assert r["time_s"] == pytest.approx(one, rel=1e-9)
    r = estimate(prog(f"G1 X{L} F{v * 60}\nG1 Y{L}\n"), ender)
    assert r["time_s"] == pytest.approx(2 * one, rel=1e-9)


def test_collinear_moves_do_not_slow_down(jd_printer):
    # two collinear halves take as long as one move of the whole length
    L, v = 200.0, 50.0
    r = estimate(prog(f"G1 X{L / 2} F{v * 60}\nG1 X{L}\n"), jd_printer)
    assert r["time_s"] == pytest.approx(L / v + v / A, rel=1e-9)


def test_axis_feedrate_limit_and_m204(ender, jd_printer):
    # the Ender-3's Z is limited to 5 mm/s (M203): a 10 mm Z move at F6000 runs at 5 mm/s;
    # Z acceleration 100 mm/s^2, Z jerk 0.3 mm/s: t = L/v + (v - j)^2 / (a v)
    r = estimate(prog("G1 Z10 F6000\n"), ender)
    assert r["time_s"] == pytest.approx(10 / 5 + (5 - 0.3) ** 2 / (100 * 5), rel=1e-9)
    # M204 in the file overrides the profile's acceleration
    r = estimate(prog("M204 P1000 T1000\nG1 X200 F3000\n"), jd_printer)
    # the profile's axis limit (M201 X500) still caps it at 500
    assert r["time_s"] == pytest.approx(200 / 50 + 50 / 500, rel=1e-9)
    r = estimate(prog("M201 X2000 Y2000\nM204 P1000 T1000\nG1 X200 F3000\n"), jd_printer)
    assert r["time_s"] == pytest.approx(200 / 50 + 50 / 1000, rel=1e-9)


def test_filament_sum_absolute_and_relative(ender):
    # 4 extrusions of 2.5 mm with a 5 mm retract/unretract pair between them
    rel = prog("G1 X10 E2.5 F1200\nG1 X20 E2.5\nG1 E-5 F2700\nG1 X100 F9000\nG1 E5 F2700\n"
               "G1 X110 E2.5 F1200\nG1 X120 E2.5\n")
    ab = ("G28\nG90\nM82\nG92 E0\nG1 X10 E2.5 F1200\nG1 X20 E5\nG1 E0 F2700\nG1 X100 F9000\n"
          "G1 E5 F2700\nG1 X110 E7.5 F1200\nG92 E0\nG1 X120 E2.5\n")
    r1 = estimate(rel, ender, density_g_cm3=1.24)
    r2 = estimate(ab, ender, density_g_cm3=1.24)
    assert r1["filament_mm"] == pytest.approx(10.0) and r2["filament_mm"] == pytest.approx(10.0)
    # grams = length * pi (d/2)^2 * density
    assert r1["filament_g"] == pytest.approx(10.0 * math.pi * 0.875 ** 2 * 1.24 / 1000)
    assert r1["time_s"] == pytest.approx(r2["time_s"], rel=1e-12)


def test_per_type_layers_dwell_and_heating(ender):
    text = prog(";LAYER:0\n;TYPE:WALL-OUTER\nG1 X10 Y10 E1 F1200\n;TYPE:FILL\nG1 X20 E1\n"
                "G1 X50 F9000\n;LAYER:1\nG4 P1500\nG1 Z0.4\n")
    r = estimate(text, ender)
    assert set(r["per_type_time_s"]) == {"WALL-OUTER", "FILL", "TRAVEL"}
    assert sum(r["per_type_time_s"].values()) == pytest.approx(r["motion_s"])
    assert r["layer_count"] == 2 and r["dwell_s"] == pytest.approx(1.5)
    # heating: bed 25 -> 60 C at 0.5 C/s = 70 s, then nozzle 25 -> 205 C at 2 C/s = 90 s
    heat = "G28\nM83\nM190 S60\nM109 S205\nG1 X10 F3000\nM104 S0\nM140 S0\n"
    r = estimate(heat, ender, include_heating=True)
    assert r["heating_s"] == pytest.approx(160.0)
    assert r["time_s"] == pytest.approx(r["motion_s"] + 160.0)
    assert estimate(heat, ender)["time_s"] == pytest.approx(r["motion_s"])
