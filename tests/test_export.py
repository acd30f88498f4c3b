"""Tests of printpipe.export: STL/3MF/OBJ/PLY writers, the plate frame, labels, export options."""

from __future__ import annotations

import argparse
import struct
import zipfile
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import trimesh

from printpipe.errors import InputError, MeshError
from printpipe.export import (
    PART_COLORS,
    ExportConfig,
    emboss_label,
    part_color,
    to_plate_frame,
    write_3mf,
    write_obj,
    write_ply,
    write_stl,
)

NS = {"m": "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"}


@pytest.fixture
def parts():
    box = trimesh.creation.box((10, 20, 30))
    box.apply_translation((-40.0, 10.0, 100.0))
    ball = trimesh.creation.icosphere(3, radius=5.0)
    ball.apply_translation((30.0, 0.0, 120.0))
    return {"hip_left": box, "fragment_3": ball}


def test_stl_binary_header_and_content(tmp_path, parts):
    path = write_stl(tmp_path / "model.stl", parts, frame_note="LPS patient frame, mm")
    raw = path.read_bytes()
    header = raw[:80].decode("ascii")
    assert header.startswith("printpipe ") and "LPS patient frame, mm" in header
    assert not raw.startswith(b"solid")  # never mistaken for ASCII STL
    n = struct.unpack("<I", raw[80:84])[0]
    assert n == sum(len(m.faces) for m in parts.values())
    assert len(raw) == 84 + 50 * n
    loaded = trimesh.load(path)
    # float32 coordinates: volumes agree to ~1e-6 relative
    assert loaded.volume == pytest.approx(sum(m.volume for m in parts.values()), rel=1e-5)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_3mf_named_coloured_objects_and_metadata(tmp_path, parts):
    meta = {"units": "millimeter", "frame": "LPS patient frame, mm", "software": "printpipe test",
            "parameters": '{"hu": 250}', "series_uid_hash": "0123456789abcdef"}
    path = write_3mf(tmp_path / "model.3mf", parts, meta)
    with zipfile.ZipFile(path) as zf:
        assert {"[Content_Types].xml", "_rels/.rels", "3D/3dmodel.model"} <= set(zf.namelist())
        root = ET.fromstring(zf.read("3D/3dmodel.model"))
    assert root.get("unit") == "millimeter"
    md = {e.get("name"): e.text for e in root.findall("m:metadata", NS)}
    assert md["printpipe:series_uid_hash"] == "0123456789abcdef"
    assert md["printpipe:frame"] == "LPS patient frame, mm" and md["Application"].startswith("printpipe")
    bases = root.findall("m:resources/m:basematerials/m:base", NS)
    colors = [b.get("displaycolor") for b in bases]
    assert len(set(colors)) == len(parts)
    objects = root.findall("m:resources/m:object", NS)
    assert [o.get("name") for o in objects] == list(parts)
    for o, (name, mesh) in zip(objects, parts.items()):
        r, g, b = part_color(name)
        assert colors[int(o.get("pindex"))] == f"#{r:02X}{g:02X}{b:02X}FF"
        assert len(o.findall("m:mesh/m:triangles/m:triangle", NS)) == len(mesh.faces)
    assert len(root.findall("m:build/m:item", NS)) == len(parts)


def test_3mf_reads_back_with_trimesh(tmp_path, parts):
    pytest.importorskip("lxml", reason="trimesh's 3MF reader needs lxml")
    path = write_3mf(tmp_path / "model.3mf", parts, {})
    scene = trimesh.load(path)
    assert set(scene.geometry) == set(parts)
    for name, mesh in parts.items():
        # coordinates written with 5 decimals (10 nm): volumes agree to 1e-6 relative
        assert scene.geometry[name].volume == pytest.approx(mesh.volume, rel=1e-6)


def test_obj_and_ply_round_trip(tmp_path, parts):
    total = sum(m.volume for m in parts.values())
    obj = write_obj(tmp_path / "model.obj", parts)
    text = obj.read_text()
    assert "o hip_left" in text and "o fragment_3" in text and (tmp_path / "model.mtl").is_file()
    loaded = trimesh.load(obj, force="mesh")
    assert loaded.volume == pytest.approx(total, rel=1e-6)
    ply = write_ply(tmp_path / "model.ply", parts)
    loaded = trimesh.load(ply)
    assert loaded.volume == pytest.approx(total, rel=1e-5)  # float32 vertices
    colors = np.asarray(loaded.visual.vertex_colors)[:, :3]
    assert tuple(colors[0]) == part_color("hip_left")
    assert tuple(colors[-1]) == part_color("fragment_3")


def test_plate_frame_one_transform_for_all(parts):
    moved, t = to_plate_frame(parts)
    lo = np.min([m.bounds[0] for m in moved.values()], axis=0)
    hi = np.max([m.bounds[1] for m in moved.values()], axis=0)
    assert lo[2] == pytest.approx(0.0, abs=1e-9)
    assert (lo[:2] + hi[:2]) == pytest.approx([0.0, 0.0], abs=1e-9)
    for name in parts:
        assert moved[name].vertices == pytest.approx(parts[name].vertices + t[:3, 3])
        assert moved[name].volume == pytest.approx(parts[name].volume)
    single, t1 = to_plate_frame(parts["hip_left"])
    assert single.bounds[0][2] == pytest.approx(0.0)


def test_failed_write_leaves_nothing(tmp_path):
    empty = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), int), process=False)
    with pytest.raises(MeshError, match="no faces"):
        write_stl(tmp_path / "model.stl", {"bone": empty})
    with pytest.raises(MeshError, match="no faces"):
        write_3mf(tmp_path / "model.3mf", {"bone": empty}, {})
    assert list(tmp_path.iterdir()) == []


def test_part_colours():
    assert PART_COLORS["hip_left"] != PART_COLORS["hip_right"]
    assert PART_COLORS.get("hip_left_mirrored") == PART_COLORS["hip_left"]
    frags = {part_color(f"fragment_{i}") for i in range(1, 6)}
    assert len(frags) == 5 and not frags & {part_color(n) for n in ("hip_left", "hip_right", "sacrum")}


def test_export_config_validation():
    assert ExportConfig(formats=("STL", "3mf", "stl")).formats == ("stl", "3mf")
    with pytest.raises(InputError, match="formats"):
        ExportConfig(formats=("step",))
    with pytest.raises(InputError, match="frame"):
        ExportConfig(frame="scanner")
    with pytest.raises(InputError, match="label"):
        ExportConfig(label="Jane Doe <1970-01-01>")


def test_cli_options_round_trip():
    from printpipe.cli import options_export

    parser = argparse.ArgumentParser()
    options_export.add_arguments(parser)
    args = parser.parse_args(["--format", "stl,3mf,ply", "--frame", "plate", "--label", "CASE-7",
                              "--target-faces", "50000", "--max-error-mm", "0.1"])
    rep, exp = options_export.config_from_args(args)
    assert exp == ExportConfig(formats=("stl", "3mf", "ply"), frame="plate", label="CASE-7")
    assert rep.target_faces == 50000 and rep.max_error_mm == 0.1
    defaults = options_export.config_from_args(parser.parse_args([]))
    assert defaults[1] == ExportConfig() and defaults[0].target_faces is None
    with pytest.raises(InputError, match="--format"):
        options_export.config_from_args(parser.parse_args(["--format", "stl,dwg"]))


def test_emboss_label_raises_letters():
    pytest.importorskip("manifold3d")
    plate = trimesh.creation.box((60, 40, 10))
    out = emboss_label(plate, "CASE 7", "L", height_mm=6.0, depth_mm=0.8)
    assert out.is_watertight and out.is_winding_consistent
    # letters add volume, at most their bounding slab (width x 6 mm x 0.8 mm per character, 8 chars)
    added = out.volume - plate.volume
    assert 5.0 < added < 8 * 6 * 6 * 0.8
    # placed on one of the two largest faces (60 x 40, normal +-z): the model grows by the depth
    assert np.ptp(out.bounds[:, 2]) == pytest.approx(10.8, abs=1e-3)


def test_row_formatting_matches_printf_byte_for_byte():
    from printpipe.export import _format_rows_bytes

    rng = np.random.default_rng(11)
    # values at rounding ties of the 5th decimal (binary floats just above/below .5 units), signed
    # zeros, tiny negatives that print as -0.00000, and magnitudes from 1e-6 to 1e5 mm
    special = np.array([[0.0, -0.0, 1e-9], [-1e-9, -0.000005, 0.000005], [0.000015, 2.5e-5, 12345.678905],
                        [-99999.999995, 0.123455, 7.0], [1.000005, 2.675e-5, -3.3e-6]])
    wide = rng.normal(size=(20_000, 3)) * 10 ** rng.uniform(-6, 5, (20_000, 3))
    ties = (rng.integers(-10**7, 10**7, (20_000, 3)) + 0.5) / 1e5
    for fmt, rows in (('<vertex x="%.5f" y="%.5f" z="%.5f"/>', np.vstack([special, wide, ties])),
                      ("v %.2f %.0f %.3f", wide),
                      ('<triangle v1="%d" v2="%d" v3="%d"/>', rng.integers(-5, 10**9, (5000, 3)))):
        expected = "".join(fmt % tuple(r) + "\n" for r in rows.tolist()).encode("ascii")
        assert _format_rows_bytes(fmt, rows) == expected


def test_warmup_compiles_the_row_writer():
    from printpipe import export as export_module

    export_module.warmup()
    assert export_module._write_rows.signatures


def test_3mf_model_streamed_into_the_zip_is_writestr_byte_for_byte(tmp_path, monkeypatch):
    """The model entry written piece by piece (rows formatted in batches) is what ``writestr`` of
    the joined text writes."""
    import time
    import zipfile

    from printpipe import export

    fixed = time.localtime(1_700_000_000)
    monkeypatch.setattr(time, "localtime", lambda *a: fixed)
    monkeypatch.setattr(export._ByteWriter, "ROWS", 7)  # several batches even on a small mesh
    out = export._ByteWriter()
    out.write("<model>\n")
    mesh = trimesh.creation.icosphere(2)
    out.write_rows('<vertex x="%.5f" y="%.5f" z="%.5f"/>', np.asarray(mesh.vertices))
    out.write_rows('<triangle v1="%d" v2="%d" v3="%d"/>', np.asarray(mesh.faces))
    out.write("</model>\n")
    for name, write in (("a", lambda zf: zf.writestr("3D/3dmodel.model", out.getvalue())),
                        ("b", lambda zf: out.write_to_zip(zf, "3D/3dmodel.model"))):
        with zipfile.ZipFile(tmp_path / f"{name}.3mf", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=2) as zf:
            write(zf)
    assert (tmp_path / "a.3mf").read_bytes() == (tmp_path / "b.3mf").read_bytes()
    whole = (b"<model>\n" + export._format_rows_bytes('<vertex x="%.5f" y="%.5f" z="%.5f"/>', np.asarray(mesh.vertices))
             + export._format_rows_bytes('<triangle v1="%d" v2="%d" v3="%d"/>', np.asarray(mesh.faces)) + b"</model>\n")
    assert out.getvalue() == whole
