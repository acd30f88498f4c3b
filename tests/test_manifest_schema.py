"""The manifest JSON schema: a realistic manifest validates, broken ones are refused with the path."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("jsonschema", reason="jsonschema (a dev dependency) validates the schema itself")

from printpipe.errors import PrintpipeError  # noqa: E402
from printpipe.report import load_schema, validate_manifest  # noqa: E402


def _part(name, color):
    bbox = {"min": [-80.0, -40.0, 900.0], "max": [-10.0, 50.0, 1080.0], "size": [70.0, 90.0, 180.0]}
    return {
        "name": name, "triangles": 412_330, "vertices": 206_161, "watertight": True,
        "volume_mm3": 187_422.5, "area_mm2": 61_830.2, "bbox_mm": bbox, "color": color,
        "report": {
            "name": name, "faces": 412_330, "vertices": 206_161, "watertight": True, "manifold": True,
            "oriented": True, "shells": 1, "shells_dropped": 3, "shells_dropped_volume_mm3": 4.2,
            "holes_filled": 0, "hole_faces_added": 0, "vertices_merged": 0, "degenerate_removed": 12,
            "duplicate_faces_removed": 0, "faces_flipped": 0, "self_intersections": 0,
            "self_intersections_checked": 0.485, "volume_mm3": 187_422.5, "area_mm2": 61_830.2,
            "bbox_mm": bbox, "euler": -6, "thinnest_wall_mm": 1.42, "wall_p5_mm": 2.1, "seconds": 3.2,
            "warnings": ["3 tiny shell(s) dropped"],
        },
        "fidelity": {"mean_mm": 0.08, "p95_mm": 0.21, "max_mm": 0.52, "volume_change_pct": -0.8,
                     "samples": 100_000, "approx_mm": 0.2},
        "decimation": {"method": "fast-simplification", "faces_before": 1_210_000, "faces_after": 412_330,
                       "reduction": 0.659, "target_faces": None, "max_error_mm": 0.1,
                       "distance": {"mean_mm": 0.01, "p95_mm": 0.03, "max_mm": 0.098}, "seconds": 12.1},
    }


@pytest.fixture
def manifest():
    return {
        "printpipe_version": "0.1.0",
        "created": "2026-11-22T17:40:12+00:00",
        "status": "ok",
        "parameters": {"segment": {"preset": "bone", "threshold_hu": 250}, "export": {"formats": ["stl", "3mf"]}},
        "params_hash": "9f2c1e", "input_hash": "ab12",
        "input": {
            "series_uid_hash": "0123456789abcdef", "study_uid_hash": "fedcba9876543210", "modality": "CT",
            "manufacturer": "SIEMENS", "slice_count": 312, "shape": [312, 512, 512],
            "spacing_mm": [1.0, 0.782, 0.782], "transfer_syntax": "1.2.840.10008.1.2.4.90", "tilt_deg": 0.0,
            "corrections": ["interpolated 1 missing slice at index 141"],
            "skipped": {"3": "scout (2 images)", "5": "bone kernel duplicate"},
            "choice_reason": "thinnest soft-tissue reconstruction covering the pelvis", "warnings": [],
        },
        "segmentation": {
            "preset": "bone", "hu_range": [250, None], "islands_dropped": {"count": 41, "volume_mm3": 812.0},
            "table_removed": True, "metal": [],
            "midsagittal_plane": {"normal": [1.0, 0.0, 0.0], "offset_mm": 2.1},
            "mirror": {"side": "left", "deviation": {"mean_mm": 1.1, "p95_mm": 3.2, "max_mm": 7.9}},
        },
        "parts": [_part("hip_left", [86, 180, 233]), _part("fragment_1", None)],
        "outputs": [
            {"path": "model.stl", "kind": "stl", "sha256": "a" * 64, "bytes": 41_233_084},
            {"path": "pictures/axial.png", "kind": "png", "sha256": "b" * 64, "bytes": 88_120},
            {"path": "report.html", "kind": "report", "sha256": "c" * 64, "bytes": 1_200_000},
        ],
        "print": {"printer": "prusa-mk4", "material": "PLA", "time_s": 15_320.0, "filament_mm": 21_400.0,
                  "filament_g": 63.8, "layer_count": 901, "plates": 1, "files": ["model.gcode"]},
        "frame": {"name": "patient", "transform": None},
        "warnings": ["3 tiny shell(s) dropped"],
        "timings_s": {"read": 4.1, "segment": 9.8, "surface": 3.3, "repair": 6.0, "total": 31.0},
    }


def test_schema_is_valid_draft_2020_12():
    import jsonschema

    schema = load_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    jsonschema.Draft202012Validator.check_schema(schema)


def test_realistic_manifest_validates(manifest):
    validate_manifest(manifest)
    no_print = copy.deepcopy(manifest)
    no_print["print"] = None
    no_print["parts"][0]["decimation"] = None
    validate_manifest(no_print)


@pytest.mark.parametrize("mutate, where", [
    (lambda m: m.pop("parts"), "parts"),
    (lambda m: m.update(status="failed"), "status"),
    (lambda m: m["parts"][0].update(watertight=False), "parts/0/watertight"),
    (lambda m: m["parts"][0]["fidelity"].pop("p95_mm"), "parts/0/fidelity"),
    (lambda m: m["input"].update(series_uid_hash="1.2.840.113619.2.55"), "input/series_uid_hash"),
    (lambda m: m["outputs"].append({"path": "/etc/passwd", "kind": "stl"}), "outputs/3/path"),
    (lambda m: m.update(created="22/11/2026"), "created"),
])
def test_broken_manifest_is_refused_with_its_path(manifest, mutate, where):
    mutate(manifest)
    with pytest.raises(PrintpipeError, match="manifest does not match its schema") as info:
        validate_manifest(manifest)
    assert where.split("/")[0] in str(info.value)
