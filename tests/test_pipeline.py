"""End to end on the committed sample series and on the real pelvic CT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from printpipe.cli.main import main

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicom"


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    if not any(SAMPLE.rglob("*.dcm")):
        pytest.skip("sample_dicom/ has no series yet (make sample)")
    out = tmp_path_factory.mktemp("demo")
    rc = main(["run", str(SAMPLE), "-o", str(out), "--quiet", "--split-hemipelvis", "--mirror", "left"])
    assert rc == 0
    return out, json.loads((out / "manifest.json").read_text())


def test_sample_outputs_watertight_and_listed(sample_run):
    out, manifest = sample_run
    model = trimesh.load(out / "model.stl", force="mesh")
    assert model.is_watertight and model.volume > 0
    names = {p["name"] for p in manifest["parts"]}
    assert {"hip_left", "hip_right", "sacrum", "femur_left", "femur_right"} <= names
    assert "hip_right_mirrored" in names
    for p in manifest["parts"]:
        assert p["watertight"], p["name"]
        assert (out / "parts" / f"{p['name']}.stl").is_file()
    # every listed output exists with the recorded size; no staging folder left behind
    for o in manifest["outputs"]:
        assert (out / o["path"]).stat().st_size == o["bytes"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    dev = manifest["segmentation"]["mirror"]["deviation"]
    assert 0 <= dev["mean_mm"] <= dev["p95_mm"] <= dev["max_mm"]


def test_sample_model_matches_ct_extent(sample_run):
    """1:1: the bone model's bounding box lies inside the CT field and spans the bone (within 2 voxels)."""
    from printpipe.dicom import read_series

    out, manifest = sample_run
    vol = read_series(SAMPLE)
    model = trimesh.load(out / "model.stl", force="mesh")
    idx = np.argwhere(vol.hu > 300)
    corners = vol.index_to_patient(np.array([idx.min(0), idx.max(0)], dtype=float))
    lo, hi = corners.min(0), corners.max(0)
    tol = 2.5 * max(vol.spacing)
    assert np.all(model.bounds[0] >= lo - tol) and np.all(model.bounds[1] <= hi + tol)


def test_manifest_has_no_patient_identifiers(sample_run):
    out, manifest = sample_run
    text = (out / "manifest.json").read_text()
    assert "PHANTOM" not in text.upper() or "PHANTOM^" not in text
    for key in ("PatientName", "PatientID", "PatientBirthDate"):
        assert key not in text


@pytest.mark.realdata
def test_real_pelvis_end_to_end(realdata, tmp_path):
    src = realdata("pelvic-ref003-ct")
    rc = main(["run", str(src), "-o", str(tmp_path), "--quiet", "--no-report"])
    assert rc == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    model = trimesh.load(tmp_path / "model.stl", force="mesh")
    assert model.is_watertight
    names = {p["name"] for p in manifest["parts"]}
    assert {"sacrum", "femur_left", "femur_right"} <= names
    # no table: the couch lies posterior to the patient (+y in LPS). In this scan the flat couch top
    # is at y = +255 mm across the whole z range (its curved shell below it, down to y = +300 mm) and
    # the skin of the back reaches y = +240 mm at the lumbar spine (read off axial slices). Any part
    # reaching y > 248 mm would include couch.
    assert model.bounds[1][1] < 248.0
    # the bone spans the pelvis: wider than 250 mm (iliac crests) and taller than 200 mm
    assert model.extents[0] > 250 and model.extents[2] > 200


def test_sample_to_gcode_for_ender3(tmp_path):
    """One command from the DICOM folder to validated G-code, with time and filament in the manifest."""
    if not any(SAMPLE.rglob("*.dcm")):
        pytest.skip("sample_dicom/ has no series yet (make sample)")
    from printpipe.slicing.printers import load_printer
    from printpipe.slicing.validate import validate_gcode

    rc = main(["run", str(SAMPLE), "-o", str(tmp_path), "--quiet", "--no-report",
               "--parts", "femur_left", "--printer", "ender3", "--no-supports"])
    assert rc == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    pr = manifest["print"]
    assert pr["printer"] and pr["time_s"] > 60 and pr["filament_mm"] > 100 and pr["filament_g"] > 0
    gcode_files = sorted(tmp_path.glob("*.gcode"))
    assert [p.name for p in gcode_files] == pr["files"]
    stats = validate_gcode(gcode_files[0].read_text(), load_printer("ender3"))
    assert stats  # raises PrinterError on any unsafe move or temperature
    assert {o["kind"] for o in manifest["outputs"]} >= {"stl", "3mf", "gcode"}
    assert [p["name"] for p in manifest["parts"]] == ["femur_left"]


def test_input_hash_is_the_cts_and_full_grid_let_go_of_after_segmentation(sample_run, monkeypatch):
    """The hash taken beside segmentation is that of the CT read again; after segmentation only
    the grid's geometry is kept (a zero-memory view), and the label maps still lie on the CT grid."""
    import weakref

    from printpipe import pipeline
    from printpipe.dicom import read_series

    out, manifest = sample_run
    vol = read_series(SAMPLE)
    assert manifest["input_hash"] == pipeline.input_hash(vol)
    assert manifest["input"]["shape"] == list(vol.shape)

    light = pipeline._geometry_only(vol)
    assert light.shape == vol.shape and light.hu.nbytes and light.hu.strides == (0, 0, 0)
    assert np.allclose(light.affine, vol.affine) and light.meta == vol.meta

    # the full HU array is unreferenced once segmentation has ended (before the report worker
    # is forked and the parts are meshed)
    seen = {}
    real_read, real_meshes = pipeline.read_series, pipeline._meshes

    def read(*a, **k):
        v = real_read(*a, **k)
        seen["ref"] = weakref.ref(v.hu)
        return v

    def meshes(*a, **k):
        import gc

        gc.collect()
        seen["alive"] = seen["ref"]() is not None
        return real_meshes(*a, **k)

    monkeypatch.setattr(pipeline, "read_series", read)
    monkeypatch.setattr(pipeline, "_meshes", meshes)
    result = pipeline.run(SAMPLE, out.parent / "light", pipeline.PipelineConfig(report=False))
    assert seen["alive"] is False
    assert result.manifest["input_hash"] == manifest["input_hash"]


def test_final_meshes_are_handed_over_before_their_fidelity_is_measured(monkeypatch):
    """``_meshes`` hands the exported meshes to ``on_final`` (the report worker's 3-D views) as soon
    as the repairs are done: the fidelity checks, still running, must not hold the views up, and
    what was handed over is exactly what is returned."""
    import contextlib
    import threading
    from types import SimpleNamespace

    from printpipe import pipeline
    from printpipe.volume import Volume

    z, y, x = np.mgrid[:24, :24, :40]
    labels = np.zeros((24, 24, 40), dtype=np.uint8)
    labels[(z - 11.5) ** 2 + (y - 11.5) ** 2 + (x - 10.5) ** 2 < 49] = 1
    labels[(z - 11.5) ** 2 + (y - 11.5) ** 2 + (x - 28.5) ** 2 < 36] = 2
    seg = SimpleNamespace(volume=Volume(np.zeros(labels.shape, np.int16), spacing=(1.0, 1.0, 1.0)),
                          labels=labels, names={1: "femur_left", 2: "femur_right"})
    handed, seen = threading.Event(), {}
    real_fidelity = pipeline.fidelity

    def fidelity(mesh, raw):
        seen.setdefault("views_first", []).append(handed.wait(20))
        return real_fidelity(mesh, raw)

    def on_final(parts):
        seen["handed"] = {n: (np.array(m.vertices), np.array(m.faces)) for n, m in parts.items()}
        handed.set()

    monkeypatch.setattr(pipeline, "fidelity", fidelity)
    parts, _, _, extras = pipeline._meshes(seg, pipeline.PipelineConfig(), lambda name: contextlib.nullcontext(),
                                           lambda stage, fraction: None, on_final=on_final)
    assert seen["views_first"] == [True, True]
    assert list(seen["handed"]) == list(parts) == ["femur_left", "femur_right"]
    for name, mesh in parts.items():
        assert np.array_equal(seen["handed"][name][0], mesh.vertices)
        assert np.array_equal(seen["handed"][name][1], mesh.faces)
        assert extras[name]["fidelity"]["samples"] > 0


def test_report_worker_is_started_before_the_ct_is_read(monkeypatch, tmp_path):
    """The worker that draws the report's pictures starts with the case, so that it gets ready
    (imports, rendering probe) while the CT is read and segmented."""
    from printpipe import pipeline
    from printpipe.errors import InputError

    order = []
    monkeypatch.setattr(pipeline, "_start_pictures", lambda staging: order.append("worker"))

    def read(*args, **kwargs):
        order.append("read")
        raise InputError("stop after the read")

    monkeypatch.setattr(pipeline, "read_series", read)
    with pytest.raises(InputError):
        pipeline.run(tmp_path / "in", tmp_path / "out")
    assert order == ["worker", "read"]


@pytest.mark.parametrize("limit, expected", [(1000, ["prepare", "close"]), (999, ["close"])])
def test_report_worker_gets_ready_during_segmentation_only_on_moderate_cts(monkeypatch, tmp_path, limit, expected):
    """The worker's imports and rendering probe (about 250 MB) run beside segmentation only when the
    CT has at most ``_EARLY_PICTURES_VOXELS`` voxels; on a larger one they would add to the run's
    peak memory, and the worker gets ready when the slices arrive instead."""
    from printpipe import pipeline
    from printpipe.errors import InputError
    from printpipe.volume import Volume

    calls = []

    class Worker:
        def prepare(self):
            calls.append("prepare")

        def close(self):
            calls.append("close")

    def check(*args, **kwargs):
        raise InputError("stop after the read")

    monkeypatch.setattr(pipeline, "_EARLY_PICTURES_VOXELS", limit)
    monkeypatch.setattr(pipeline, "_start_pictures", lambda staging: Worker())
    monkeypatch.setattr(pipeline, "read_series", lambda *a, **k: Volume(np.zeros((10, 10, 10), np.int16), spacing=(1.0, 1.0, 1.0)))
    monkeypatch.setattr(pipeline, "check_hu", check)
    with pytest.raises(InputError):
        pipeline.run(tmp_path / "in", tmp_path / "out")
    assert calls == expected
