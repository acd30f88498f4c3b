"""A CT with a metal total hip prosthesis (printpipe.phantom variant ``metal_hip``).

The phantom's right hip is replaced by a prosthesis: the femoral neck cut 28 mm from the head's
centre, a 28 mm metal head on a trunnion and a stem down the canal, a 50 mm metal cup in the reamed
acetabulum with a polyethylene liner between, metal clipped at 3071 HU as scanners store it, and
streak artefacts of +-250 HU radiating from the metal. Its labels give the metal its own value
(``implant``), in no bone.

What a surgeon needs, checked here against those labels:

* hip bones, sacrum and the healthy femur named and as good as on a phantom without metal
  (Dice floors of tests/test_phantom_variety.py: 0.95, sacrum 0.92, for the reasons given there);
* the implant side's femur named, its metal head standing in for the femoral head (concentric with
  the cup, the bone around the stem the femur's), with a lower floor (see IMPLANT_SIDE_FLOORS);
* no left/right swap (a swapped pair scores near 0 against these floors), also feet-first and
  with prostheses on both sides;
* no metal voxel in any bone part: the metal is the part ``implant_<side>``;
* warnings that metal is present and where the prosthesis is;
* a bearing with no liner to see (ceramic): the same;
* a head off its cup's centre (worn liner, subluxed hip): that femur is ``bone_N`` with a warning
  naming the check, the other parts keep their names.
"""

from __future__ import annotations

import numpy as np
import pytest

from printpipe.evaluate import dice, segmentation_masks
from printpipe.phantom import variant_phantom
from printpipe.segment import SegmentConfig, segment

BONES = ("hip_left", "hip_right", "sacrum", "femur_left", "femur_right")
DICE_FLOOR = 0.95
SACRUM_FLOOR = 0.92
#: Around the metal two voxel layers of bone go by design: the one-voxel partial-volume rim of the
#: metal's edge belongs to the implant (its HU is the metal's blur, not bone's), and every two
#: parts keep a one-voxel gap. On these 2-2.5 mm voxels that is ~5 mm of acetabulum around a 50 mm
#: cup, and the stem's 2.5 mm marrow annulus and the metaphyseal bone against it: measured 0.922
#: (hip) and 0.833 (femur, 66 cm^3 left after the neck cut) on the right, 0.927 / 0.830 with a
#: 36 mm head on the left, feet-first.
IMPLANT_SIDE_FLOORS = {"hip": 0.90, "femur": 0.80}
#: the metal head: 28 mm scaled by the right side's 1.5 % asymmetry; its half-maximum surface is
#: measured to about a quarter voxel
HEAD_MM = 28.0 * 1.015


def _floor(name: str, implant_side: str) -> float:
    kind, side = name.split("_") if "_" in name else (name, "")
    if side and side in implant_side:   # "right", "left" or "left right"
        return IMPLANT_SIDE_FLOORS[kind]
    return SACRUM_FLOOR if name == "sacrum" else DICE_FLOOR


def _scores(ph, masks):
    return {name: round(dice(masks[name], ph.mask(name)), 3) if name in masks else 0.0 for name in BONES}


def _check(ph, seg, masks, implant_side):
    scores = _scores(ph, masks)
    low = {k: v for k, v in scores.items() if v < _floor(k, implant_side)}
    assert not low, f"Dice below the floor: {low}; all {scores}; parts {sorted(masks)}; warnings {seg.warnings}"
    metal = ph.mask("implant")
    in_bone = {p: int(np.count_nonzero(m & metal)) for p, m in masks.items() if not p.startswith("implant")}
    assert not any(in_bone.values()), f"metal voxels inside bone parts: {in_bone}"
    part = np.zeros_like(metal)
    for side in implant_side.split():
        part |= masks[f"implant_{side}"]
        assert any(w.startswith("hip prosthesis") and f"implant_{side}" in w for w in seg.warnings), seg.warnings
    # the implant parts hold the metal (a voxel or two of its thinnest edge may fall to the gap)
    assert np.count_nonzero(part & metal) >= 0.97 * np.count_nonzero(metal)
    assert any(w.startswith("metal above") for w in seg.warnings), seg.warnings


@pytest.fixture(scope="module")
def right_thr():
    ph = variant_phantom("metal_hip")
    seg = segment(ph.volume, SegmentConfig(split_hemipelvis=True))
    return ph, seg, segmentation_masks(seg, ph.volume)


def test_phantom_prosthesis_is_metal_and_no_bone():
    ph = variant_phantom("metal_hip", noise_hu=0.0, streak_hu=0.0)
    hu, metal = ph.volume.hu, ph.mask("implant")
    assert hu.max() == 3071                       # clipped as scanners store it
    assert np.all(hu[metal] > 1500)               # every metal voxel centre is past the half-maximum edge
    assert not (metal & ph.mask(*BONES)).any()
    # the head: a 28.4 mm ball on 2-2.5 mm voxels, its volume within 10 % of 4/3 pi r^3 (voxelisation)
    c = ph.volume.patient_to_index(np.array([[-88.0 * 1.015, -5.0 * 1.015 - 25.0, 0.0]]))[0]
    k, j, i = np.indices(hu.shape)
    p = ph.volume.index_to_patient(np.c_[k.ravel(), j.ravel(), i.ravel()].astype(float)).reshape(*hu.shape, 3)
    r = np.linalg.norm(p - ph.volume.index_to_patient(c[None])[0], axis=-1)
    ball = np.count_nonzero(metal & (r < HEAD_MM / 2 + 0.5)) * float(np.prod(ph.volume.spacing))
    assert abs(ball / (4 / 3 * np.pi * (HEAD_MM / 2) ** 3) - 1) < 0.10
    # streaks: bright and dark bands in the soft tissue next to the metal, hundreds of HU
    streaked = variant_phantom("metal_hip", noise_hu=0.0).volume.hu.astype(int) - hu
    near = ~metal & (r < 45.0) & (r > 20.0)
    assert streaked[near].max() > 150 and streaked[near].min() < -150


def test_metal_hip_parts_named_and_metal_apart(right_thr):
    ph, seg, masks = right_thr
    _check(ph, seg, masks, "right")
    heads = seg.info["femoral_heads"]
    assert heads["found"]
    imp = heads["implant_heads"]
    assert len(imp) == 1 and imp[0]["concentric"]
    assert abs(imp[0]["diameter_mm"] - HEAD_MM) < 1.5
    assert seg.info["checks"]["femur_right"]["passed"]


def test_metal_hip_left_feet_first():
    """The implant's side comes from the patient frame: a left prosthesis with a 36 mm head, stored
    feet-first (image x and z reversed)."""
    ph = variant_phantom("metal_hip", prosthesis="left", prosthesis_head_mm=36.0, patient_position="FFS")
    seg = segment(ph.volume, SegmentConfig(split_hemipelvis=True))
    _check(ph, seg, segmentation_masks(seg, ph.volume), "left")


def test_bilateral_prostheses():
    """Both hips replaced: the two implant heads pair with each other (no natural head left)."""
    ph = variant_phantom("metal_hip", prosthesis="both")
    seg = segment(ph.volume, SegmentConfig(split_hemipelvis=True))
    _check(ph, seg, segmentation_masks(seg, ph.volume), "left right")
    assert len(seg.info["femoral_heads"]["implant_heads"]) == 2


def test_fused_bearing():
    """A ceramic liner: head, liner and cup are one piece of metal-bright HU (no dark layer to see);
    the cup is measured on the shell's outside."""
    ph = variant_phantom("metal_hip", prosthesis_liner="ceramic")
    seg = segment(ph.volume, SegmentConfig(split_hemipelvis=True))
    _check(ph, seg, segmentation_masks(seg, ph.volume), "right")
    imp = seg.info["femoral_heads"]["implant_heads"]
    assert imp[0]["bearing_fused"] and imp[0]["concentric"]
    assert abs(imp[0]["cup_outer_diameter_mm"] - 50.0 * 1.015) < 3.0


@pytest.mark.parametrize("offset", [(0.0, 0.0, 6.0), (31.5, -11.25, -30.0)], ids=["worn-6mm", "dislocated-45mm"])
def test_eccentric_implant_head_is_not_named_femur(offset):
    """A head 6 mm off its cup's centre (worn through liner), or 45 mm out of the cup's opening
    (dislocated: the cup, empty, is the landmark): the femur of that side is bone_N with a warning
    naming the check; hips, sacrum and the healthy femur keep their names."""
    ph = variant_phantom("metal_hip", prosthesis_offset_mm=offset)
    seg = segment(ph.volume, SegmentConfig(split_hemipelvis=True))
    masks = segmentation_masks(seg, ph.volume)
    assert "femur_right" not in masks
    assert any("off its cup's centre" in w and "femur_right" in w for w in seg.warnings), seg.warnings
    bone = [p for p in masks if p.startswith("bone_")]
    assert len(bone) == 1 and dice(masks[bone[0]], ph.mask("femur_right")) > IMPLANT_SIDE_FLOORS["femur"]
    scores = _scores(ph, masks)
    for name in ("hip_left", "sacrum", "femur_left", "hip_right"):
        assert scores[name] >= _floor(name, "right"), scores
    assert not any(np.count_nonzero(m & ph.mask("implant")) for p, m in masks.items() if not p.startswith("implant"))
