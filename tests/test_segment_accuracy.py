"""The whole pipeline's parts against the ground truth of the two development cases.

Each case runs ``printpipe.pipeline.run`` once per session (``--split-hemipelvis``, STL only, only the
scored parts exported, no report); the part meshes are cut back into the CT grid and scored with
``printpipe.evaluate``. ``benchmarks/bench_segment_accuracy.py --parts`` prints the same figures, with
the deep-learning and model-based contours beside them (without ``--parts`` it exports every part, as
a user's run does).

The floors below are regression floors, not the goal (issue 10 asks Dice >= 0.93 and mean surface
distance <= 1.0 mm for every structure). Each is the figure measured on the commit named in the comment,
minus a tolerance: Dice - 0.02, mean surface distance + 0.5 mm (about half a voxel of the 1 x 1 x 3 mm
grids: a one-voxel shift of a part's surface moves Dice by about 0.02 on these bones). ``None``: the
structure was not found at all when measured, so nothing is asserted yet.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"

# (case, table, structure) -> (Dice floor, mean surface distance ceiling in mm).
# Measured 2026-12-04 on 056146a (the b35d0cc segmentation plus: the sacral band filled but for
# fluid, fat and the enclosed canal; the half-maximum surface searched within its reach only; the
# L5/S1 markers grown first) with ``benchmarks/bench_segment_accuracy.py --parts``: measured Dice
# - 0.02, measured mean + 0.5 mm. For comparison, the segmentation before the rewrite (c9af237) gave
# ref002 hip bones 0.000 (fragments), sacrum 0.165, femurs 0.601 / 0.865; ref003 femurs 0.780 /
# 0.749; the first anatomical version (822cc96) hip bones 0.823 / 0.865, sacrum 0.318, spine 0.643,
# ref003 femurs 0.897 / 0.879; b35d0cc hip bones 0.897 / 0.909, sacrum 0.613, spine 0.735.
# Rows marked 8949bf8 were measured again after the femoral heads were refitted on their whole edge
# (printpipe.segment.heads._refine): hip L 0.908 -> 0.940, femur L 0.936 -> 0.952.
FLOORS: dict[tuple[str, str, str], tuple[float, float | None]] = {
    # ref002 vs expert labels (pelvic-ref002-labels)
    ("ref002", "labels", "pelvis"): (0.908, 1.4),           # measured 0.928, 0.87 mm (8949bf8)
    ("ref002", "labels", "hip_left"): (0.920, 1.3),         # measured 0.940, 0.71 mm (8949bf8)
    ("ref002", "labels", "hip_right"): (0.895, 1.6),        # measured 0.915, 1.03 mm
    # the sacrum of this patient is osteoporotic: its marrow reads like soft tissue (median 73 HU),
    # only the cortex thresholds as bone; closed and filled, the part holds 152 ml of 252 ml
    ("ref002", "labels", "sacrum"): (0.672, 4.45),          # measured 0.692, 3.91 mm (8949bf8)
    ("ref002", "labels", "femur_left"): (0.932, 1.3),       # measured 0.952, 0.78 mm (8949bf8)
    ("ref002", "labels", "femur_right"): (0.931, 1.3),      # measured 0.951, 0.80 mm
    ("ref002", "labels", "spine"): (0.723, 3.0),            # measured 0.743, 2.46 mm
    # ref002 femurs vs manual contours of its RS.dcm (manual slices only); deep-learning 0.829 / 0.729
    ("ref002", "contours", "femur_left"): (0.809, 3.55),    # measured 0.829, 3.04 mm (8949bf8; 0.841 before the head refit)
    ("ref002", "contours", "femur_right"): (0.710, 4.2),    # measured 0.730, 3.68 mm
    # ref003 femurs vs manual contours of pelvic-ref003-rtstruct (manual slices only);
    # the deep-learning contours reach 0.901 / 0.900 (2.00 / 1.83 mm)
    ("ref003", "contours", "femur_left"): (0.894, 2.1),     # measured 0.914, 1.61 mm (8949bf8)
    ("ref003", "contours", "femur_right"): (0.882, 2.3),    # measured 0.902, 1.79 mm
}


SCORED = ("pelvis", "hip_left", "hip_right", "sacrum", "femur_left", "femur_right", "spine")


def _run(case: str, tmp_root):
    from printpipe.evaluate import CASES, run_case
    from printpipe.export import ExportConfig
    from printpipe.pipeline import PipelineConfig
    from printpipe.segment import SegmentConfig

    for key in ("ct", "rtstruct", "labels"):
        if CASES[case][key] and not (REALDATA / CASES[case][key]).exists():
            pytest.skip(f"real data not found at {REALDATA / CASES[case][key]} (needs ../shared/realdata)")
    from printpipe.errors import PrintpipeError

    config = PipelineConfig(segment=SegmentConfig(split_hemipelvis=True, parts=SCORED),
                            export=ExportConfig(formats=("stl",)), report=False)
    try:
        tables, info = run_case(case, REALDATA, tmp_root / case, config, peers=False)
    except PrintpipeError as exc:   # e.g. no part named: every structure of the case fails with this
        return {}, {"parts": [], "error": f"{type(exc).__name__}: {exc}"}
    return {(case, table, s.structure): s for table, rows in tables.items() for s in rows}, info


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    root = tmp_path_factory.mktemp("accuracy")
    out, infos = {}, {}
    for case in ("ref002", "ref003"):
        got, info = _run(case, root)
        out.update(got)
        infos[case] = info
    return out, infos


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("key", list(FLOORS), ids=["-".join(k) for k in FLOORS])
def test_dice_and_surface_distance_floor(scores, key):
    got, infos = scores
    dice_floor, mean_ceiling = FLOORS[key]
    s = got.get(key)
    info = infos[key[0]]
    assert s is not None, f"{key} not scored: {info.get('error') or 'parts exported: ' + str(info['parts'])}"
    assert s.dice >= dice_floor, f"{key}: Dice {s.dice:.3f} < floor {dice_floor:.3f} (parts {infos[key[0]]['parts']})"
    if mean_ceiling is not None:
        assert math.isfinite(s.mean_mm) and s.mean_mm <= mean_ceiling, (
            f"{key}: mean surface distance {s.mean_mm:.2f} mm > ceiling {mean_ceiling:.2f} mm")


@pytest.mark.realdata
@pytest.mark.slow
def test_no_left_right_swap(scores):
    got, infos = scores
    failed = {case: info["error"] for case, info in infos.items() if info.get("error")}
    assert not failed, f"pipeline failed: {failed}"
    swapped = [k for k, s in got.items() if s.swapped]
    assert not swapped, f"left/right swapped: {swapped}"
