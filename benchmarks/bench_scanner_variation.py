"""How the segmentation holds up when the same patient is seen through another scanner.

Run: ``.venv/bin/python benchmarks/bench_scanner_variation.py [--case ref002|ref003|all]
[--variants n0,o-30,o-20,o-10,o20,b0.7,b1.2,s0.5,s1.0,z0.85,z1.15] [--realdata ../shared/realdata]``.

Each development CT is changed as another scanner or protocol would change it, then segmented
(``segment`` with ``split_hemipelvis``, in-process, voxel labels; not the exported meshes that
``bench_segment_accuracy.py`` scores), and each part is scored (voxel Dice) against the case's
ground truth: the expert labels of pelvic-ref002 (hip bones, sacrum, femurs), the manual femur
contours of pelvic-ref003 (on the contoured slices only). Variants:

* ``oN``: a calibration offset of N HU (scanners, kVp and beam-hardening corrections differ by
  10-30 HU in bone);
* ``bS``: a soft reconstruction kernel, an in-plane Gaussian blur of S mm;
* ``sA``: a sharp (bone) kernel, an unsharp mask of amount A at 1 mm;
* ``zS``: a smaller or larger patient, every length scaled by S (the voxel spacing and origin times
  S: femoral heads, the pelvis's width and height all scale; voxel Dice is unchanged by it);
* ``n0``: the scan as it is.

It prints one line per variant: the Dice of each part, the part names exported (``bone_N`` is a part
that failed its anatomical checks) and the segment time (one run, a noisy figure: see
``bench_segment.py`` for timings).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from printpipe import evaluate as ev  # noqa: E402
from printpipe.dicom import read_series  # noqa: E402
from printpipe.labels import rtstruct_masks  # noqa: E402
from printpipe.segment import SegmentConfig, segment  # noqa: E402

PARTS = ("hip_left", "hip_right", "sacrum", "femur_left", "femur_right")


def variant(vol, code: str):
    kind, val = code[0], float(code[1:])
    h = vol.hu.astype(np.float32)
    sp = vol.spacing
    if kind == "b":
        h = ndi.gaussian_filter(h, [0, val / sp[1], val / sp[2]])
    elif kind == "s":
        h = h + val * (h - ndi.gaussian_filter(h, [0, 1.0 / sp[1], 1.0 / sp[2]]))
    elif kind == "o":
        h = h + val
    elif kind == "z":
        return dataclasses.replace(vol, spacing=tuple(s * val for s in sp), origin=tuple(o * val for o in vol.origin))
    elif kind != "n":
        raise SystemExit(f"unknown variant {code!r}: use oN (HU offset), bS (blur mm), sA (sharpen), zS (scale) or n0")
    return dataclasses.replace(vol, hu=np.clip(h, -1024, 3071).astype(vol.hu.dtype))


def references(case: str, vol, realdata: Path) -> tuple[dict[str, np.ndarray], bool]:
    if case == "ref003":
        ms = rtstruct_masks(realdata / "pelvic-ref003-rtstruct" / "RS.dcm", vol)
        return {"femur_left": ms["femoreSin"], "femur_right": ms["femoreDes"]}, True
    refs, _ = ev.expert_masks(realdata / "pelvic-ref002-labels" / "label.mhd", vol)
    return {k: v for k, v in refs.items() if k in PARTS}, False


def score(seg, shape, refs, contour_slices: bool) -> dict[str, float]:
    lo = seg.info["crop"]["final_index_lo"]
    full = np.zeros(shape, seg.labels.dtype)
    full[tuple(slice(a, a + n) for a, n in zip(lo, seg.labels.shape))] = seg.labels
    inv = {n: k for k, n in seg.names.items()}
    out = {}
    for name, ref in refs.items():
        o = full == inv.get(name, -1)
        if contour_slices:
            keep = ref.any(axis=(1, 2))
            o &= keep[:, None, None]
        out[name] = 2.0 * float((ref & o).sum()) / max(float(ref.sum() + o.sum()), 1.0)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="all", choices=("ref002", "ref003", "all"))
    ap.add_argument("--variants", default="n0,o-30,o-20,o-10,o20,b0.7,b1.2,s0.5,s1.0,z0.85,z1.15")
    ap.add_argument("--realdata", type=Path, default=REPO.parent / "shared" / "realdata")
    a = ap.parse_args(argv)
    for case in (("ref002", "ref003") if a.case == "all" else (a.case,)):
        vol = read_series(a.realdata / f"pelvic-{case}-ct")
        refs, contour_slices = references(case, vol, a.realdata)
        print(f"{case}: voxel Dice per part against {'the manual contours' if contour_slices else 'the expert labels'}")
        print("  variant " + "".join(f"{p:>12}" for p in refs) + "   segment  parts")
        for code in a.variants.split(","):
            v = variant(vol, code)
            t = time.perf_counter()
            seg = segment(v, SegmentConfig(split_hemipelvis=True))
            dt = time.perf_counter() - t
            d = score(seg, v.shape, refs, contour_slices)
            names = sorted(n for n in seg.names.values() if not n.startswith("other"))
            print(f"  {code:<7} " + "".join(f"{d[p]:12.3f}" for p in refs) + f"   {dt:5.1f} s  {', '.join(names)}",
                  flush=True)


if __name__ == "__main__":
    main()
