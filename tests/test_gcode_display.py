"""What the printer shows: M73 progress from the estimator, M117, thumbnails, M486 object labels,
Prusa firmware checks -- and the validator's checks of each."""

from __future__ import annotations

import base64
import io
import json
import math
import re

import numpy as np
import pytest
import trimesh

from printpipe.errors import PrinterError
from printpipe.slicing.config import SliceConfig
from printpipe.slicing.estimate import estimate
from printpipe.slicing.gcode import to_gcode
from printpipe.slicing.printers import load_material, load_printer
from printpipe.slicing.thumbnail import read_thumbnails
from printpipe.slicing.toolpaths import slice_mesh
from printpipe.slicing.validate import parse_gcode, validate_gcode

CFG = SliceConfig(support=False, orient="none")


def _box(size, at):
    m = trimesh.creation.box(size)
    m.apply_translation([at[0], at[1], size[2] / 2])
    return m


@pytest.fixture(scope="module")
def ender():
    return load_printer("ender3")


@pytest.fixture(scope="module")
def pla(ender):
    return load_material("PLA", ender)


@pytest.fixture(scope="module")
def plate(ender, pla):
    """Two parts of different heights (the short one ends at layer 30 of 50)."""
    a = slice_mesh(_box((20, 20, 10), (80, 110)), ender, pla, CFG, name="femur_left")
    b = slice_mesh(_box((15, 25, 6), (130, 110)), ender, pla, CFG, name="hip_left")
    return [a, b]


@pytest.fixture(scope="module")
def text(plate, ender, pla):
    return to_gcode(plate, ender, pla, CFG, {"plate": "2 of 3"})


def test_per_layer_times_are_the_planner_clock(tmp_path):
    # junction deviation: every move starts and ends at rest, so a move of L at v with
    # acceleration a takes L/v + v/a; a G4 dwell adds its seconds to the layer it is in
    prof = tmp_path / "jd.toml"
    prof.write_text('inherits = "ender3"\njunction_deviation_mm = 0.05\n'
                    'max_accel_mm_s2 = { print = 500, travel = 500, retract = 500 }\n')
    p = load_printer(prof)
    one = 100 / 50 + 50 / 500
    r = estimate("G28\nG90\nM83\n;LAYER:0\nG1 X100 F3000\n;LAYER:1\nG4 S2\nG1 X0\nG1 X100\n", p)
    assert r["layer_start_s"] == pytest.approx([0.0, one], rel=1e-9)
    assert r["per_layer_time_s"] == pytest.approx([one, 2 + 2 * one], rel=1e-9)
    assert sum(r["per_layer_time_s"]) == pytest.approx(r["time_s"], rel=1e-12)


def test_m73_follows_the_estimate(text, ender):
    lines = text.splitlines()
    body = "\n".join(ln for ln in lines if not ln.startswith("M73"))  # what the estimator timed
    est = estimate(body, ender)
    total = est["time_s"]
    assert int(re.search(r";TIME:(\d+)", text).group(1)) == round(total)
    m73 = [(i, int(m.group(1)), int(m.group(2))) for i, ln in enumerate(lines)
           if (m := re.fullmatch(r"M73 P(\d+) R(\d+)", ln))]
    layer_at = [i for i, ln in enumerate(lines) if ln.startswith(";LAYER:")]
    assert len(m73) == len(layer_at) + 2 == 52
    # first: before the start G-code, whole time left; last: 100 % before the end G-code
    assert m73[0][1:] == (0, math.ceil(total / 60)) and m73[0][0] < lines.index("G28 ; home all axes")
    assert m73[-1][1:] == (100, 0) and m73[-1][0] > layer_at[-1]
    for (i, pct, rem), li, t in zip(m73[1:-1], layer_at, est["layer_start_s"]):
        assert i == li + 1  # right after the ;LAYER: line
        assert pct == min(99, math.floor(100 * t / total + 1e-9))
        assert rem == math.ceil((total - t) / 60 - 1e-9)
    pcts = [p for _, p, _ in m73]
    rems = [r for _, _, r in m73]
    assert pcts == sorted(pcts) and rems == sorted(rems, reverse=True)


def test_m117_thumbnails_and_labels_pass_the_validator(text, ender, pla):
    stats = validate_gcode(text, ender, pla)
    assert stats["thumbnails"] == ["32x32/PNG", "300x300/PNG"]
    assert stats["objects"] == 2 and stats["object_blocks"] == 50 + 30
    assert stats["m73"] == 52
    assert "M117 Plate 2/3: femur_left, hip_left" in text and "M117 Print done" in text
    head = text.split("\n;LAYER:0", 1)[0]
    assert "M486 T2" in head and head.index("; thumbnail begin") < head.index("G28 ; home")
    for t in read_thumbnails(text):  # the picture shows something: opaque pixels, not all alike
        from PIL import Image

        blk = text.split(f"; thumbnail begin {t['width']}x{t['height']}", 1)[1].split("; thumbnail end")[0]
        data = base64.b64decode("".join(ln[2:] for ln in blk.splitlines()[1:]))
        img = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
        alpha = img[..., 3] > 0
        assert 0.02 < alpha.mean() < 0.9 and img[alpha][:, :3].std() > 3


def test_cancelling_one_part_keeps_the_other_right(text, ender, pla):
    """Emulate Marlin's M486 skipping (XYZ and E of every move in the cancelled block dropped):
    the remaining file is safe, the other part gets all its plastic, and the filament is never
    retracted twice or pushed out unretracted."""
    kept, skip = [], False
    for ln in text.splitlines():
        if ln == "M486 S0":
            skip = True
        elif ln == "M486 S-1":
            skip = False
        elif skip and ln.startswith(("G0", "G1")):
            continue
        kept.append(ln)
    cancelled = "\n".join(kept) + "\n"
    validate_gcode(cancelled, ender, pla)
    full, cut = parse_gcode(text), parse_gcode(cancelled)
    r = ender.retract_mm

    def part_plastic(pg):
        names = np.array(pg.types + [""])[pg.type_id]
        return float(pg.de[(pg.de > 0) & (names != "SKIRT")].sum())

    a_only = part_plastic(full) - part_plastic(cut)  # what the cancelled part would have laid
    assert a_only > 50
    # retraction state (sum of E-only moves from the first layer to the end of the last) stays
    # within [-r, 0]
    lines = cancelled.splitlines()
    body = (cut.line > lines.index(";LAYER:0")) & (cut.line < lines.index("M117 Print done"))
    still = np.r_[True, (np.diff(cut.x) == 0) & (np.diff(cut.y) == 0)]
    state = np.cumsum(np.where(body & still & (np.abs(cut.de) == r), cut.de, 0.0))
    assert state.min() >= -r - 1e-6 and state.max() <= 1e-6


def test_prusa_checks_and_jpeg_thumbnails(plate):
    mk3s = load_printer("mk3s")
    t = to_gcode(plate, mk3s, load_material("PLA", mk3s), CFG)
    assert 'M862.3 P "MK3S"' in t and "M862.1 P0.4" in t
    assert validate_gcode(t, mk3s)["thumbnails"] == ["16x16/PNG", "220x124/PNG"]
    with pytest.raises(PrinterError, match=r"model check names 'MK4' but the profile is for the 'MK3S'"):
        validate_gcode(t.replace('M862.3 P "MK3S"', 'M862.3 P "MK4"'), mk3s)
    with pytest.raises(PrinterError, match=r"M862.1 P0.6 differs from the profile's 0.4 mm nozzle"):
        validate_gcode(t.replace("M862.1 P0.4", "M862.1 P0.6"), mk3s)
    v2 = load_printer("ender3v2")
    t2 = to_gcode(plate, v2, load_material("PLA", v2), CFG)
    assert "; thumbnail_JPG begin 96x96 " in t2
    assert validate_gcode(t2, v2)["thumbnails"] == ["96x96/JPG", "200x200/JPG"]


def test_switched_off(plate, ender, pla):
    t = to_gcode(plate, ender, pla, CFG.replace(thumbnails=False, label_objects=False, progress_gcode=False))
    assert not re.search(r"^(M73|M117|M486)|thumbnail", t, re.M)


def _nth_m73(text, n, new):
    lines = text.split("\n")
    idx = [i for i, ln in enumerate(lines) if ln.startswith("M73 ")][n]
    lines[idx] = new
    return "\n".join(lines)


@pytest.mark.parametrize("edit, message", [
    (lambda t: _nth_m73(t, 30, "M73 P0 R1"), r"progress falls from \d+ % to 0 %"),
    (lambda t: _nth_m73(t, 30, "M73 P99 R99"), r"remaining time rises from \d+ to 99 minutes"),
    (lambda t: t.replace("M117 Print done", "M117 打印完成"), r"not plain ASCII"),
    (lambda t: t.replace("M486 S-1\n", "", 1), r"object 1 starts while object 0 .* not closed"),
    (lambda t: t.replace("M486 S1\n", "M486 S7\n", 1), r"object index 7 is not below the count M486 T2"),
    (lambda t: t.replace("M486 S-1\n", "G1 E-0.5\nM486 S-1\n", 1), r"changes the retraction by -0.500 mm"),
    (lambda t: t.replace("M486 S-1\n", "G0 Z5\nM486 S-1\n", 1), r"ends at Z 5.000 but started at Z 0.200"),
    (lambda t: t.replace("; stop printing object femur_left", "; stop printing object hip_left", 1),
     r"does not close 'femur_left'"),
])
def test_validator_catches(text, ender, edit, message):
    bad = edit(text)
    assert bad != text
    with pytest.raises(PrinterError, match=message):
        validate_gcode(bad, ender)


def test_validator_catches_broken_thumbnails(text, ender):
    m = re.search(r"; thumbnail begin 32x32 (\d+)", text)
    n = int(m.group(1))
    with pytest.raises(PrinterError, match=rf"declares {n + 4} base64 characters but holds {n}"):
        validate_gcode(text.replace(m.group(0), f"; thumbnail begin 32x32 {n + 4}"), ender)
    with pytest.raises(PrinterError, match=r"declares 33x32 but the picture is 32x32"):
        validate_gcode(text.replace(m.group(0), f"; thumbnail begin 33x32 {n}"), ender)
    with pytest.raises(PrinterError, match=r"has no '; thumbnail end'"):
        validate_gcode(text.replace("; thumbnail end", "; thumbnail done"), ender)


def test_slice_progress_rises_to_one(tmp_path, capsys):
    from printpipe.cli.main import main

    stl = tmp_path / "box.stl"
    _box((20, 20, 4), (0, 0)).export(stl)
    assert main(["slice", str(stl), "-o", str(tmp_path / "box.gcode"), "--log-json"]) == 0
    events = [json.loads(ln) for ln in capsys.readouterr().err.splitlines()]
    fr = [e["fraction"] for e in events]
    assert {e["stage"] for e in events} == {"slice"} and {e["event"] for e in events} == {"stage"}
    assert fr[0] == 0.0 and fr[-1] == 1.0 and fr == sorted(fr) and 10 <= len(fr) <= 110
