"""Physical plausibility of the input and read-back of the outputs (issue 14).

Every damaged input is a copy of a real series (../shared/realdata/pelvic-ref003-ct) or of slices of
``sample_dicom``, made in ``tmp_path`` and damaged with pydicom here; nothing damaged is stored.
Each refusal is one line checked with ``match=``: the value seen, the range expected, and --force.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import trimesh

from printpipe import pipeline
from printpipe.dicom import DicomConfig, read_series
from printpipe.errors import InputError, MeshError
from printpipe.export import write_3mf, write_stl
from printpipe.plausibility import check_header, check_hu, foreign_slices
from printpipe.verify import stl_figures, verify_outputs

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
SAMPLE = REPO / "sample_dicom"


def real(name: str) -> Path:
    path = REALDATA / name
    if not path.is_dir():
        pytest.skip(f"real CT data not found at {path} (needs ../shared/realdata beside the repo)")
    return path


@pytest.fixture(scope="module")
def pelvis_sorted() -> list[Path]:
    """Files of pelvic-ref003-ct sorted by ImagePositionPatient z (an axial stack)."""
    files = sorted(real("pelvic-ref003-ct").glob("*.dcm"))
    zs = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    return [f for _, f in sorted(zip(zs, files))]


def damaged_copy(files: list[Path], dest: Path, damage=None, which=None) -> Path:
    """Copy ``files`` to ``dest``; apply ``damage(ds, k)`` to the data set of copy k (all, or
    those in ``which``) and save it again."""
    dest.mkdir(parents=True, exist_ok=True)
    for k, f in enumerate(files):
        target = dest / f"{k:03d}.dcm"
        if damage is None or (which is not None and k not in which):
            shutil.copyfile(f, target)
            continue
        ds = pydicom.dcmread(f)
        damage(ds, k)
        ds.save_as(target)
    return dest


def set_attr(name, value):
    def damage(ds, _k):
        setattr(ds, name, value)
    return damage


# ------------------------------------------------------------------------------------------------
# 1. header plausibility, before any pixel is decoded
# ------------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_kilometre_pixel_spacing_is_refused_and_forced(tmp_path, pelvis_sorted):
    folder = damaged_copy(pelvis_sorted[60:68], tmp_path / "km", set_attr("PixelSpacing", [1e6, 1e6]))
    with pytest.raises(InputError, match=r"^pixel spacing 1e\+06 x 1e\+06 mm of stack [0-9a-f]{16} is "
                                         r"outside the 0\.02-10 mm that CT scanners produce; correct "
                                         r"PixelSpacing \(0028,0030\).*or pass --force to continue"):
        read_series(folder)
    v = read_series(folder, DicomConfig(force=True))
    assert v.spacing[1:] == (1e6, 1e6)
    assert [w for w in v.meta["warnings"] if "--force" in w and "pixel spacing 1e+06" in w]


def _shift_z(factor=1.0, offset=0.0):
    def damage(ds, _k):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z * factor + offset]
    return damage


def _bits(n):
    def damage(ds, _k):
        ds.BitsAllocated = n
    return damage


@pytest.mark.realdata
@pytest.mark.parametrize("damage, message", [
    (set_attr("SliceThickness", 500.0),
     r"^slice thickness 500 mm of stack \w+ is outside the 0\.2-20 mm that CT scanners produce;.*--force"),
    (_shift_z(factor=100.0),
     r"^slice spacing 300 mm of stack \w+ \(median step between ImagePositionPatient along the slice "
     r"normal\) is outside the 0\.1-20 mm .*--force"),
    (set_attr("PixelSpacing", [2.5, 2.5]),
     r"^field of view 1280 x 1280 mm of stack \w+ \(Columns x Rows x PixelSpacing\) is wider than the "
     r"1000 mm a CT bore holds;.*--force"),
    (_shift_z(offset=1e5),
     r"^slices of stack \w+ lie 1\d{5}(\.\d+)? mm from the scanner origin \(ImagePositionPatient\), "
     r"expected within 10000 mm;.*--force"),
    (_bits(32),
     r"^pixel data of 6 of 6 file\(s\) of stack \w+ holds 524288 bytes, but Rows x Columns x "
     r"BitsAllocated x SamplesPerPixel x frames = 512 x 512 x 32 bits x 1 x 1 = 1048576 bytes: the "
     r"header does not describe the pixels;.*--force"),
    (_bits(8),
     r"^pixel data of 6 of 6 file\(s\) .* = 512 x 512 x 8 bits x 1 x 1 = 262144 bytes"),
    (set_attr("SamplesPerPixel", 3),
     r"^pixel data of 6 of 6 file\(s\) .* = 512 x 512 x 16 bits x 3 x 1 = 1572864 bytes"),
    (set_attr("Rows", 600),
     r"^pixel data of 6 of 6 file\(s\) .* = 600 x 512 x 16 bits x 1 x 1 = 614400 bytes"),
], ids=["thickness", "spacing", "fov", "origin", "bits32", "bits8", "samples3", "rows"])
def test_implausible_header_is_one_line_naming_value_range_and_force(tmp_path, pelvis_sorted, damage, message):
    folder = damaged_copy(pelvis_sorted[60:66], tmp_path / "bad", damage)
    with pytest.raises(InputError, match=message) as err:
        read_series(folder)
    assert "\n" not in str(err.value)


@pytest.mark.realdata
def test_header_mismatch_is_named_not_taken_for_truncation(tmp_path, pelvis_sorted):
    # BitsAllocated 32 once read as "truncated pixel data" (every file skipped, "no DICOM image")
    folder = damaged_copy(pelvis_sorted[60:66], tmp_path / "bits", _bits(32))
    with pytest.raises(InputError, match=r"BitsAllocated"):
        read_series(folder)
    # a file cut short is still a truncated file, skipped, and the hole interpolated
    folder = damaged_copy(pelvis_sorted[60:66], tmp_path / "cut")
    victim = folder / "003.dcm"
    victim.write_bytes(victim.read_bytes()[:-5000])
    v = read_series(folder)
    assert v.meta["skipped"] == {"truncated pixel data": 1} and v.shape[0] == 6


@pytest.mark.parametrize("damage", [set_attr("Rows", 96), _bits(32)], ids=["rows", "bits32"])
def test_compressed_header_mismatch_is_one_line(tmp_path, damage):
    # sample_dicom is RLE: the length cannot be checked from the header, the decoder says it (a Rust
    # decoder panics on a short Rows, which once escaped as a traceback)
    folder = damaged_copy(sorted(SAMPLE.glob("slice_*.dcm"))[40:46], tmp_path / "rle", damage)
    with pytest.raises(InputError, match=r"^only 0 of 6 slices of stack \w+ could be decoded \(first error: "
                                         r".+\); the files are corrupt or truncated") as err:
        read_series(folder)
    assert "\n" not in str(err.value)


def test_extent_longer_than_a_body_is_refused():
    # 261 slices 10 mm apart (2600 mm): a unit test, as a real copy would need 126+ files
    f = SimpleNamespace(name="f", rows=512, cols=512, bits_allocated=16, samples=1, n_frames=1,
                        pixel_bytes=512 * 512 * 2)
    frames = [SimpleNamespace(position=(0.0, 0.0, 10.0 * k), file=f) for k in range(261)]
    info = SimpleNamespace(key="0123456789abcdef", rows=512, cols=512, pixel_spacing=(1.0, 1.0),
                           thickness=10.0)
    with pytest.raises(InputError, match=r"^the slices of stack 0123456789abcdef span 2600 mm along "
                                         r"the slice normal, more than the 2500 mm of a human body;.*--force"):
        check_header(info, frames, np.array([0.0, 0.0, 1.0]))
    warnings = check_header(info, frames, np.array([0.0, 0.0, 1.0]), force=True)
    assert len(warnings) == 1 and warnings[0].startswith("implausible input accepted with --force")


# ------------------------------------------------------------------------------------------------
# HU scale of a CT
# ------------------------------------------------------------------------------------------------
def _bone_times(factor):
    def damage(ds, _k):
        raw = ds.pixel_array.astype(np.int32)
        hu = raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        raw = np.where(hu > 300, np.rint((hu * factor - float(ds.RescaleIntercept)) / float(ds.RescaleSlope)), raw)
        ds.PixelData = np.clip(raw, -32768, 32767).astype(np.int16).tobytes()
    return damage


@pytest.mark.realdata
@pytest.mark.parametrize("damage, message", [
    (set_attr("RescaleIntercept", 0),
     r"^air lies at -?\d+ HU in this series \(RescaleSlope 1, RescaleIntercept 0\), expected about -1000 HU "
     r"\(-1200\.\.-800\); check RescaleSlope \(0028,1053\) and RescaleIntercept \(0028,1052\).*--force"),
    (set_attr("RescaleIntercept", -2048),
     r"^air lies at -2\d{3} HU in this series \(RescaleSlope 1, RescaleIntercept -2048\)"),
    (set_attr("RescaleSlope", 2),
     r"^soft tissue lies at 1\d{3} HU in this series \(RescaleSlope 2, RescaleIntercept -1024\), expected "
     r"-250\.\.250 HU \(water is 0\);.*--force"),
    (_bone_times(8.0),
     r"^bone reaches \d{4,5} HU in this series .*\(99\.5th percentile of the body\), beyond the 4000 HU "
     r"that bone has in CT;.*--force"),
], ids=["intercept0", "intercept-2048", "slope2", "bone8x"])
def test_hu_scale_of_a_ct(tmp_path, pelvis_sorted, damage, message):
    folder = damaged_copy(pelvis_sorted[60:70], tmp_path / "hu", damage)
    v = read_series(folder)
    with pytest.raises(InputError, match=message):
        check_hu(v.hu, rescale=v.meta["rescale"])
    warnings, _levels = check_hu(v.hu, rescale=v.meta["rescale"], force=True)
    assert warnings and all("--force" in w for w in warnings)


@pytest.mark.realdata
def test_pipeline_refuses_a_wrong_rescale_before_segmenting_and_publishes_nothing(tmp_path, pelvis_sorted):
    folder = damaged_copy(pelvis_sorted[60:70], tmp_path / "hu", set_attr("RescaleIntercept", 0))
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"^air lies at .*RescaleIntercept 0.*--force"):
        pipeline.run(folder, out, pipeline.PipelineConfig(report=False))
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# 2. a slice that does not belong
# ------------------------------------------------------------------------------------------------
def _garbage(seed):
    def damage(ds, _k):
        rng = np.random.default_rng(seed)
        ds.PixelData = rng.integers(-32768, 32767, size=(ds.Rows, ds.Columns), dtype=np.int16).tobytes()
    return damage


def _sharper_kernel(ds, _k):
    from scipy import ndimage

    raw = ds.pixel_array.astype(np.float32)
    # a high-frequency boost (x + 2 (x - G_1 x)) roughly doubles the pixel noise, as a bone kernel
    # does against a soft-tissue one
    sharp = raw + 2.0 * (raw - ndimage.gaussian_filter(raw, 1.0))
    ds.PixelData = np.clip(np.rint(sharp), -32768, 32767).astype(np.int16).tobytes()


def _contrast(ds, _k):
    raw = ds.pixel_array.astype(np.int32)
    hu = raw + int(ds.RescaleIntercept)
    raw = np.where((hu > -50) & (hu < 200), raw + 120, raw)  # enhancing soft tissue +120 HU
    ds.PixelData = raw.astype(np.int16).tobytes()


@pytest.fixture(scope="module")
def clean_stack(pelvis_sorted, tmp_path_factory):
    folder = damaged_copy(pelvis_sorted[60:72], tmp_path_factory.mktemp("clean"))
    return read_series(folder)


@pytest.mark.realdata
@pytest.mark.parametrize("damage, reason", [
    (_garbage(1), r"9\d % of pixels outside -1100\.\.4000 HU against 0 % in the neighbouring slices "
                  r"\(corrupted pixels\)"),
    (_sharper_kernel, r"pixel noise \d+ HU against \d+ HU in the neighbouring slices \(another "
                      r"reconstruction kernel\?\)"),
    (_contrast, r"soft tissue at -?\d+ HU against -?\d+ HU in the neighbouring slices \(another contrast "
                r"phase\?\)"),
], ids=["garbage", "kernel", "contrast"])
def test_slice_that_does_not_belong_is_left_out_and_interpolated(tmp_path, pelvis_sorted, clean_stack,
                                                                  damage, reason):
    folder = damaged_copy(pelvis_sorted[60:72], tmp_path / "odd", damage, which={6})
    v = read_series(folder)
    z6 = float(np.dot(pydicom.dcmread(folder / "006.dcm").ImagePositionPatient, v.direction[:, 2]))
    notes = [w for w in v.meta["warnings"] if "do not belong" in w]
    assert len(notes) == 1
    assert pytest.approx(z6, abs=0.05) == float(notes[0].split(" at ")[1].split(" mm")[0])
    assert notes[0].startswith("1 slice(s) do not belong to the stack and were left out like missing "
                               "slices (sorted slice 6 of 12 at ")
    import re
    assert re.search(reason, notes[0]), notes[0]
    # treated like a missing slice: the grid keeps 12 slices at 3 mm and slice 6 is the linear
    # interpolation of its neighbours (rounded to whole HU)
    assert v.shape == clean_stack.shape
    ref = clean_stack.hu.astype(np.float64)
    expect = np.rint((ref[5] + ref[7]) / 2)
    assert np.abs(v.hu[6] - expect).max() <= 1
    np.testing.assert_array_equal(v.hu[[0, 5, 7, 11]], clean_stack.hu[[0, 5, 7, 11]])


@pytest.mark.realdata
def test_two_adjacent_foreign_slices_are_refused_unless_allowed_or_forced(tmp_path, pelvis_sorted):
    folder = damaged_copy(pelvis_sorted[60:72], tmp_path / "two", _garbage(2), which={5, 6})
    with pytest.raises(InputError, match=r"^2 slice\(s\) of stack \w+ do not belong to it \(sorted slice 5 "
                                         r"of 12 at .*; sorted slice 6 of 12 at .*\); leaving them out leaves "
                                         r"a step of 9 mm against 3 mm, more than --max-gap 2; export the "
                                         r"series again, pass --allow-gaps to interpolate across them, or "
                                         r"--force to keep them"):
        read_series(folder)
    v = read_series(folder, DicomConfig(allow_gaps=True))
    assert v.shape[0] == 12 and np.abs(v.hu).max() < 4000
    v = read_series(folder, DicomConfig(force=True))
    assert any("were kept because of --force" in w for w in v.meta["warnings"])
    assert np.abs(v.hu[5:7]).max() > 30000  # kept as they are: the user asked for it


# ------------------------------------------------------------------------------------------------
# no false positives on every real series and the sample
# ------------------------------------------------------------------------------------------------
@pytest.mark.realdata
@pytest.mark.parametrize("name", ["pelvic-ref003-ct", "pelvic-ref002-ct", "ge-head-gantry-tilt",
                                  "invesalius-0051-head"])
def test_real_series_pass_every_check(name):
    v = read_series(real(name))
    assert not [w for w in v.meta["warnings"] if "do not belong" in w or "--force" in w]
    warnings, levels = check_hu(v.hu, rescale=v.meta["rescale"])
    assert warnings == []
    assert -1050 < levels["air"] < -950 and -150 < levels["tissue"] < 100 and 800 < levels["bone"] < 2000


def test_sample_series_passes_every_check():
    v = read_series(SAMPLE)
    assert not [w for w in v.meta["warnings"] if "do not belong" in w or "--force" in w]
    assert check_hu(v.hu)[0] == []


def test_foreign_slices_needs_five_slices_and_ignores_a_smooth_ramp():
    ramp = np.stack([np.full((16, 16), 100 * k, np.int16) for k in range(8)])
    assert foreign_slices(ramp[:4]) == [] and foreign_slices(ramp) == []


# ------------------------------------------------------------------------------------------------
# 3. outputs read back before "ok"
# ------------------------------------------------------------------------------------------------
def _entry(name, mesh, shift=(0.0, 0.0, 0.0)):
    b = np.asarray(mesh.bounds) - np.asarray(shift)
    return {"name": name, "triangles": len(mesh.faces), "vertices": len(mesh.vertices),
            "volume_mm3": float(mesh.volume), "bbox_mm": {"min": b[0].tolist(), "max": b[1].tolist()}}


@pytest.fixture
def written(tmp_path):
    """A sphere and a box (analytic: closed, manifold) written as the pipeline writes them."""
    parts = {"ball": trimesh.creation.icosphere(subdivisions=3, radius=20.0),
             "block": trimesh.creation.box((30.0, 20.0, 10.0))}
    parts["block"].apply_translation((60.0, 0.0, 0.0))
    for name, m in parts.items():
        write_stl(tmp_path / "parts" / f"{name}.stl", {name: m})
    write_stl(tmp_path / "model.stl", parts)
    write_3mf(tmp_path / "model.3mf", parts)
    return tmp_path, parts, [_entry(n, m) for n, m in parts.items()]


def test_written_models_read_back_agree_with_the_manifest(written):
    folder, _parts, entries = written
    out = verify_outputs(folder, entries)
    assert set(out["files"]) == {"parts/ball.stl", "parts/block.stl", "model.stl", "model.3mf"}
    assert out["watertight"] == {"ball": True, "block": True}
    fig = stl_figures(trimesh.creation.icosphere(subdivisions=3, radius=20.0).triangles.astype(np.float32))
    # an icosphere: V - E + F = 2, closed, and the volume of the inscribed polyhedron
    assert fig["vertices"] - 3 * fig["triangles"] // 2 + fig["triangles"] == 2 and fig["watertight"]


def test_plate_frame_offsets_per_part(tmp_path):
    # the pipeline's plate frame: parts are written moved while their manifest boxes stay in the
    # patient frame; a mirrored template is moved before its entry is made (offset 0)
    ball = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
    twin = ball.copy()
    twin.apply_translation((40.0, 0.0, 0.0))
    move = np.array([5.0, -3.0, 12.0])
    moved = ball.copy()
    moved.apply_translation(move)
    write_stl(tmp_path / "parts" / "ball.stl", {"ball": moved})
    write_stl(tmp_path / "parts" / "ball_mirrored.stl", {"ball_mirrored": twin})
    write_stl(tmp_path / "model.stl", {"ball": moved})
    write_3mf(tmp_path / "model.3mf", {"ball": moved, "ball_mirrored": twin})
    entries = [_entry("ball", ball), _entry("ball_mirrored", twin)]
    out = verify_outputs(tmp_path, entries, model_parts=["ball"],
                         shifts={"ball": move, "ball_mirrored": np.zeros(3)})
    assert out["watertight"] == {"ball": True, "ball_mirrored": True}
    with pytest.raises(MeshError, match=r"^parts/ball\.stl as written does not match the manifest: part ball spans"):
        verify_outputs(tmp_path, entries, model_parts=["ball"])


def _rewrite_stl(path: Path, corners: np.ndarray) -> None:
    rec = np.zeros(len(corners), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    rec["v"] = corners
    path.write_bytes(path.read_bytes()[:80] + np.uint32(len(corners)).tobytes() + rec.tobytes())


def _stl_corners(path: Path) -> np.ndarray:
    data = path.read_bytes()
    n = int(np.frombuffer(data, "<u4", 1, 80)[0])
    rec = np.frombuffer(data, dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")], count=n, offset=84)
    return rec["v"].copy()


def test_stl_missing_a_triangle_fails(written):
    folder, _parts, entries = written
    path = folder / "parts" / "ball.stl"
    _rewrite_stl(path, _stl_corners(path)[:-1])
    with pytest.raises(MeshError, match=r"^parts/ball\.stl as written does not match the manifest: part ball "
                                        r"holds 1279 triangles, the manifest says 1280; nothing was published"):
        verify_outputs(folder, entries)


def test_stl_with_a_flipped_triangle_is_not_closed(written):
    folder, _parts, entries = written
    path = folder / "parts" / "block.stl"
    corners = _stl_corners(path)
    corners[0] = corners[0][[0, 2, 1]]
    _rewrite_stl(path, corners)
    with pytest.raises(MeshError, match=r"^parts/block\.stl as written is not a closed manifold surface: part "
                                        r"block has 0 open edge\(s\), 6 over-shared or mis-wound edge\(s\)"):
        verify_outputs(folder, entries)


def test_truncated_stl_fails(written):
    folder, _parts, entries = written
    path = folder / "model.stl"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(MeshError, match=r"^model\.stl as written holds \d+ bytes but its header announces "
                                        r"1292 triangles"):
        verify_outputs(folder, entries)


def test_float32_collapse_far_from_the_origin_is_caught(tmp_path):
    # the issue's case: coordinates near 10^8 mm, where float32 steps are 8 mm, collapse a 20 mm
    # sphere that is closed in memory (float64)
    ball = trimesh.creation.icosphere(subdivisions=3, radius=20.0)
    ball.apply_translation((1e8, 0.0, 0.0))
    assert ball.is_watertight
    write_stl(tmp_path / "parts" / "ball.stl", {"ball": ball})
    with pytest.raises(MeshError, match=r"^parts/ball\.stl as written is not a closed manifold surface: part "
                                        r"ball has \d+ open edge\(s\), \d+ over-shared or mis-wound edge\(s\) and "
                                        r"[1-9]\d* collapsed triangle\(s\) when read back \(coordinates up to "
                                        r"1e\+08 mm\)"):
        verify_outputs(tmp_path, [_entry("ball", ball)])


def _edit_3mf_model(path, edit) -> None:
    """Rewrite the 3MF at ``path`` with its model XML passed through ``edit`` (str -> str); the
    other members are kept."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["3D/3dmodel.model"] = edit(members["3D/3dmodel.model"].decode()).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)


def test_3mf_missing_a_triangle_or_shifted_fails(written):
    folder, _parts, entries = written

    def drop_first_triangle(xml: str) -> str:
        cut = xml.index("<triangle ")
        return xml[:cut] + xml[xml.index("\n", cut) + 1:]

    _edit_3mf_model(folder / "model.3mf", drop_first_triangle)
    with pytest.raises(MeshError, match=r"^model\.3mf as written does not match the manifest: part ball holds "
                                        r"1279 triangles, the manifest says 1280"):
        verify_outputs(folder, entries)
    # a frame that moved the files but not the manifest
    moved = [dict(e, bbox_mm={"min": [v + 1.0 for v in e["bbox_mm"]["min"]],
                              "max": [v + 1.0 for v in e["bbox_mm"]["max"]]}) for e in entries]
    with pytest.raises(MeshError, match=r"^parts/ball\.stl as written does not match the manifest: part ball "
                                        r"spans \[.*\] mm, the manifest says \[.*\] mm"):
        verify_outputs(folder, moved)


def test_3mf_with_a_split_vertex_is_open_though_the_stl_is_closed(written):
    # the 3MF is indexed: a corner moved to a duplicate of its vertex opens the mesh there while the
    # coordinates (and so the welded STL) stay the same; the shared edge check must not hide it
    folder, _parts, entries = written

    def split_a_vertex(xml: str) -> str:
        head, tail = xml.split("</vertices>", 1)
        vertex_lines = [ln for ln in head.split("\n") if "<vertex " in ln]
        tri = next(ln for ln in tail.split("\n") if "<triangle " in ln)
        v1 = int(tri.split('v1="')[1].split('"')[0])
        head = head + vertex_lines[v1].strip() + "\n    "
        new_tri = tri.replace(f'v1="{v1}"', f'v1="{len(vertex_lines)}"', 1)
        return head + "</vertices>" + tail.replace(tri, new_tri, 1)

    _edit_3mf_model(folder / "model.3mf", split_a_vertex)
    entries = [dict(e, vertices=e["vertices"] + 1) if e["name"] == "ball" else e for e in entries]
    with pytest.raises(MeshError, match=r"^model\.3mf as written is not a closed manifold surface: part ball "
                                        r"has 4 open edge\(s\), 0 over-shared or mis-wound edge\(s\)"):
        verify_outputs(folder, entries)


def test_corrupted_3mf_cannot_be_read_back(written):
    folder, _parts, entries = written
    path = folder / "model.3mf"
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("3D/3dmodel.model")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF  # a bit flip in the deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(MeshError, match=r"^model\.3mf as written cannot be read back \(.+\); nothing was "
                                        r"published; check the disk and run the case again$"):
        verify_outputs(folder, entries)


# ------------------------------------------------------------------------------------------------
# the pipeline: --force recorded in manifest and report; a bad file publishes nothing
# ------------------------------------------------------------------------------------------------
def _sample_subset(dest: Path, damage=None) -> Path:
    files = sorted(SAMPLE.glob("slice_*.dcm"))[:16]  # the femoral shafts: one small part, fast
    return damaged_copy(files, dest, damage)


def test_force_continues_with_the_warning_in_manifest_and_report(tmp_path):
    folder = _sample_subset(tmp_path / "thick", set_attr("SliceThickness", 50.0))
    with pytest.raises(InputError, match=r"^slice thickness 50 mm .*or pass --force to continue with a warning"):
        pipeline.run(folder, tmp_path / "refused")
    assert list((tmp_path / "refused").iterdir()) == []
    cfg = pipeline.PipelineConfig(dicom=DicomConfig(force=True))
    result = pipeline.run(folder, tmp_path / "out", cfg)
    assert result.status == "ok"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    forced = [w for w in manifest["warnings"] if w.startswith("implausible input accepted with --force: "
                                                             "slice thickness 50 mm")]
    assert len(forced) == 1
    assert "slice thickness 50 mm" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    # watertight in the manifest is what the files hold, as read back
    ver = manifest["verification"]
    assert {"model.stl", "model.3mf"} <= set(ver["files"])
    assert all(p["watertight"] is ver["watertight"][p["name"]] is True for p in manifest["parts"])
    assert manifest["timings_s"]["check"] >= 0 and manifest["timings_s"]["verify"] >= 0


def test_a_file_that_disagrees_with_the_manifest_fails_the_case_and_publishes_nothing(tmp_path, monkeypatch):
    folder = _sample_subset(tmp_path / "ok")
    real_write = pipeline.write_stl_files

    def lossy_write_stl_files(targets, parts, **kw):  # a writer that loses the last triangle of each file
        out = real_write(targets, parts, **kw)
        for path in out:
            _rewrite_stl(Path(path), _stl_corners(Path(path))[:-1])
        return out

    monkeypatch.setattr(pipeline, "write_stl_files", lossy_write_stl_files)
    out = tmp_path / "out"
    with pytest.raises(MeshError, match=r"^parts/\w+\.stl as written does not match the manifest: part \w+ "
                                        r"holds \d+ triangles, the manifest says \d+; nothing was published"):
        pipeline.run(folder, out, pipeline.PipelineConfig(report=False))
    assert list(out.iterdir()) == []
