"""Segmentation of CTs with a metal hip prosthesis: the ``metal_hip`` phantom under variations.

Run: ``.venv/bin/python benchmarks/bench_metal.py`` (about 30 s on 2 cores).

For each variation of :func:`printpipe.phantom.variant_phantom` ``("metal_hip", ...)`` (head size,
streak strength, noise, tilt, slice thickness, a worn, subluxed or dislocated head, a ceramic liner,
prostheses on both sides) it segments with ``split_hemipelvis=True`` and prints the time, the Dice of
each bone against the phantom's labels (``None``: not exported under that name), the metal voxels
found inside bone parts (must be 0), the implant heads measured (diameter, distance of the ball's
centre from its cup's, mm) and the parts exported as ``bone_N``.
"""

from __future__ import annotations

import time

CASES = {
    "default (28 mm head, right)": {},
    "22 mm head": dict(prosthesis_head_mm=22.0),
    "40 mm head (54 mm cup)": dict(prosthesis_head_mm=40.0),
    "streaks +-500 HU": dict(streak_hu=500.0),
    "noise 40 HU": dict(noise_hu=40.0),
    "tilted 10/12 deg": dict(tilt_deg=(10.0, 12.0)),
    "head 2 mm up (worn)": dict(prosthesis_offset_mm=(0.0, 0.0, 2.0)),
    "head 15 mm out (subluxed)": dict(prosthesis_offset_mm=(10.5, -3.75, -10.0)),
    "head 45 mm out (dislocated)": dict(prosthesis_offset_mm=(31.5, -11.25, -30.0)),
    "ceramic liner (fused)": dict(prosthesis_liner="ceramic"),
    "both hips": dict(prosthesis="both"),
    "0.7 mm slices": dict(shape=(298, 160, 160), spacing=(0.7, 2.4, 2.4), z_center_mm=26.0, hip_joint_mm=2.5,
                          si_joint_mm=2.5),
    "1.25 mm voxels": dict(shape=(168, 288, 288), spacing=(1.25, 1.25, 1.25), z_center_mm=26.0,
                           hip_joint_mm=1.5, si_joint_mm=1.5),
}
BONES = ("hip_left", "hip_right", "sacrum", "femur_left", "femur_right")


def main() -> int:
    from printpipe.evaluate import dice, segmentation_masks
    from printpipe.phantom import variant_phantom
    from printpipe.segment import SegmentConfig, segment

    print(f"{'case':30s} {'s':>5s}  " + " ".join(f"{b:>11s}" for b in BONES) + "  metal-in-bone  heads (d, off)  bone_N")
    for name, kw in CASES.items():
        ph = variant_phantom("metal_hip", **kw)
        t = time.perf_counter()
        seg = segment(ph.volume, SegmentConfig(split_hemipelvis=True))
        dt = time.perf_counter() - t
        masks = segmentation_masks(seg, ph.volume)
        scores = [f"{dice(masks[b], ph.mask(b)):.3f}" if b in masks else "None" for b in BONES]
        metal = ph.mask("implant")
        leak = sum(int((m & metal).sum()) for p, m in masks.items() if not p.startswith("implant"))
        heads = [(h["diameter_mm"], h["cup_offset_mm"]) for h in seg.info["femoral_heads"].get("implant_heads", [])]
        bone = [p for p in sorted(masks) if p.startswith("bone_")]
        print(f"{name:30s} {dt:5.1f}  " + " ".join(f"{s:>11s}" for s in scores) + f"  {leak:13d}  {heads}  {bone}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
