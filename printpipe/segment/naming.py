"""Part names, given only when the anatomy agrees, and part statistics."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from printpipe.errors import SegmentationError
from printpipe.segment import _fast
from printpipe.volume import Volume

log = logging.getLogger(__name__)


def _clean_parts(labels: np.ndarray, names: dict[int, str], min_vox: int
                 ) -> tuple[np.ndarray, dict[int, str], dict[str, Any]]:
    """Drop pieces of a part that the gap cut left smaller than the island limit."""
    import cc3d

    # after the gap cut no two parts touch (26-neighbourhood), so the components of the bone
    # are those of each part: a binary labelling (about 3x faster than a multi-label one) suffices
    comp, n = cc3d.connected_components(labels != 0, connectivity=26, return_N=True)
    counts = _fast.bincount(comp, n + 1)
    small = counts < max(min_vox, 1)
    small[0] = False
    dropped = int(small.sum())
    vox = int(counts[small].sum())
    if dropped:
        labels[small[comp]] = 0
    del comp
    present = set(np.flatnonzero(_fast.bincount(labels)).tolist())
    names = {k: v for k, v in names.items() if k in present}
    return labels, names, {"pieces_dropped": dropped, "voxels_dropped": vox}


def _part_stats(labels: np.ndarray, names: dict[int, str], vol: Volume) -> dict[str, Any]:
    counts = _fast.bincount(labels, max(names, default=0) + 1)
    objs = _fast.find_objects(labels)
    out = {}
    for lab, name in names.items():
        sl = objs[lab - 1] if lab - 1 < len(objs) else None
        if sl is None:
            continue
        lo = vol.index_to_patient(np.array([[s.start for s in sl]], dtype=float))[0]
        hi = vol.index_to_patient(np.array([[s.stop - 1 for s in sl]], dtype=float))[0]
        out[name] = {"label": int(lab), "voxels": int(counts[lab]),
                     "volume_cm3": round(float(counts[lab] * np.prod(vol.spacing) / 1000.0), 2),
                     "bbox_lps": [round(float(v), 1) for v in np.minimum(lo, hi).tolist() + np.maximum(lo, hi).tolist()]}
    return out



def _relabel(regions: np.ndarray, name_of: dict[int, str]) -> tuple[np.ndarray, dict[int, str]]:
    """uint8 labels from region ids and their names (regions without a name become 0)."""
    order = ["pelvis", "hip_left", "hip_right", "sacrum", "femur_left", "femur_right", "spine", "implant_left",
             "implant_right"]

    def key(n: str) -> tuple[int, int]:
        if n in order:
            return order.index(n), 0
        base, _, num = n.rpartition("_")
        return len(order) + (0 if base == "bone" else 1), int(num) if num.isdigit() else 0

    uniq = sorted(set(name_of.values()), key=key)
    if len(uniq) > 250:
        raise SegmentationError(f"{len(uniq)} parts found, more than a uint8 label image holds; raise --min-island")
    label_of = {n: i + 1 for i, n in enumerate(uniq)}
    lut = np.zeros(int(regions.max()) + 1, np.uint8)
    for rid, n in name_of.items():
        lut[rid] = label_of[n]
    return lut[regions], {v: k for k, v in label_of.items()}


def _region_sizes(regions: np.ndarray) -> dict[int, int]:
    counts = _fast.bincount(regions)
    return {int(i): int(c) for i, c in enumerate(counts) if i and c}


def name_seeded(regions: np.ndarray, vol: Volume, min_vox: int) -> tuple[np.ndarray, dict[int, str], dict[str, Any]]:
    """Regions grown from anatomical markers carry their marker's name; the rest, bone not
    connected to the pelvic skeleton (ribs, arms, bowel contrast that reached bone HU), are
    ``other_N`` by size."""
    from printpipe.segment.anatomy import CONTRAST, NAMES

    sizes = _region_sizes(regions)
    contrast = sizes.pop(CONTRAST, 0)
    name_of = {rid: NAMES[rid] for rid in sizes if rid in NAMES and sizes[rid] >= min_vox}
    rest = sorted((rid for rid in sizes if rid not in NAMES and sizes[rid] >= min_vox), key=lambda r: -sizes[r])
    for i, rid in enumerate(rest, 1):
        name_of[rid] = f"other_{i}"
    labels, names = _relabel(regions, name_of)
    vox = float(np.prod(vol.spacing)) / 1000.0
    info = {"method": "anatomical markers", "parts": {n: round(sizes[r] * vox, 1) for r, n in name_of.items()},
            "contrast_touching_bone_cm3": round(contrast * vox, 1)}
    return labels, names, info


def name_unseparated(regions: np.ndarray, vol: Volume, min_vox: int, *, single: bool = False
                     ) -> tuple[np.ndarray, dict[int, str], dict[str, Any]]:
    """Without landmarks no anatomical name is safe: the parts are ``bone_N`` by size, or one
    part ``bone`` when separation was not asked for (``single``)."""
    sizes = _region_sizes(regions)
    keep = sorted((r for r in sizes if sizes[r] >= min_vox), key=lambda r: -sizes[r])
    name_of = {rid: ("bone" if single else f"bone_{i}") for i, rid in enumerate(keep, 1)}
    if not name_of:
        raise SegmentationError("no bone region large enough after separation; lower --min-island or --hu")
    labels, names = _relabel(regions, name_of)
    return labels, names, {"method": "by size (no anatomical landmarks)", "parts": len(names)}


#: Anatomical ranges a named part must fall in (adults; generous, so a normal pelvis always passes
#: and a fused or mislabelled one does not). Volumes are of solid parts (cortex and marrow):
#: hemipelvis ~150-450 cm^3, sacrum ~100-350 cm^3 with the coccyx, proximal femur as far as the scan
#: reaches (the head and neck alone ~100 cm^3) (Dice-validated CT segmentations, e.g. TotalSegmentator
#: and the Pelvic Reference Data labels, and anatomy texts). The sacrum with its coccyx is at most
#: ~170 mm long (sacral length 85-135 mm, coccyx 20-40 mm), and its height along the patient's axis
#: no more, since it lies tilted: a taller "sacrum" carries lumbar vertebrae (pelvic-ref002 with a
#: sharp kernel: 267 mm, L3 to the coccyx); a field of view may cut it short, so there is no lower bound.
CHECKS = {
    "hip": {"volume_cm3": (60.0, 900.0), "height_mm": (90.0, 320.0), "width_mm": (60.0, 240.0)},
    "sacrum": {"volume_cm3": (30.0, 600.0), "width_mm": (50.0, 180.0), "midline_mm": 30.0, "height_mm": (0.0, 170.0)},
    "femur": {"volume_cm3": (40.0, 1500.0), "head_share": 0.7},
    "pelvis": {"volume_cm3": (120.0, 1800.0), "width_mm": (160.0, 420.0)},
}
#: left and right of a pair (hip bones; femurs cut by the same slices) differ by at most this ratio
LR_RATIO = 1.5


def _stats(labels: np.ndarray, lab: int, vol: Volume, sl: tuple[slice, ...]) -> dict[str, Any]:
    idx = np.argwhere(labels[sl] == lab)
    sub = idx[:: max(1, len(idx) // 50_000)] + [s.start for s in sl]
    p = vol.index_to_patient(sub.astype(float))
    return {"n": len(idx), "cm3": len(idx) * float(np.prod(vol.spacing)) / 1000.0, "c": p.mean(axis=0),
            "lo": p.min(axis=0), "hi": p.max(axis=0)}


def _in(v: float, rng: tuple[float, float]) -> bool:
    return rng[0] <= v <= rng[1]


def _check_one(name: str, s: dict[str, Any], labels: np.ndarray, lab: int, vol: Volume, heads: dict,
               mid_x: float | None, implants: dict[str, tuple[int, float]] | None = None) -> list[str]:
    """The checks ``name`` fails (empty when it passes). ``implants``: side -> (label, cm^3) of the
    hip prostheses."""
    fails = []
    kind = name.split("_")[0]
    rule = CHECKS.get(kind, {})
    side = name.rsplit("_", 1)[-1]
    implant = (implants or {}).get(side) if kind == "femur" and side in heads and heads[side].implant else None
    # a prosthesis stands in for the femoral head, neck and canal it replaced
    cm3 = s["cm3"] + (implant[1] if implant else 0.0)
    if "volume_cm3" in rule and not _in(cm3, rule["volume_cm3"]):
        fails.append(f"volume {cm3:.0f} cm^3{' with its implant' if implant else ''} outside "
                     f"{rule['volume_cm3'][0]:g}-{rule['volume_cm3'][1]:g}")
    ext = s["hi"] - s["lo"]
    if "height_mm" in rule and not _in(ext[2], rule["height_mm"]):
        fails.append(f"height {ext[2]:.0f} mm outside {rule['height_mm'][0]:g}-{rule['height_mm'][1]:g}")
    if "width_mm" in rule and not _in(ext[0], rule["width_mm"]):
        fails.append(f"width {ext[0]:.0f} mm outside {rule['width_mm'][0]:g}-{rule['width_mm'][1]:g}")
    if mid_x is not None and side in ("left", "right"):
        # LPS: +x is the patient's left
        if (s["c"][0] - mid_x) * (1 if side == "left" else -1) < 10.0:
            fails.append(f"centre {s['c'][0] - mid_x:+.0f} mm from the midline is not on the {side}")
    if kind == "sacrum" and mid_x is not None and abs(s["c"][0] - mid_x) > rule["midline_mm"]:
        fails.append(f"centre {s['c'][0] - mid_x:+.0f} mm off the midline")
    if kind == "femur" and side in heads and heads[side].implant:
        fails += _implant_femur_fails(labels, lab, heads[side], vol, implant[0] if implant else None)
    elif kind == "femur" and side in heads:
        h = heads[side]
        k = np.rint(vol.patient_to_index(h.center[None])[0]).astype(int)
        r = [max(1, int(0.5 * h.radius_mm / sp)) for sp in vol.spacing]
        box = tuple(slice(max(a - b, 0), a + b + 1) for a, b in zip(k, r))
        sub = labels[box]
        bone = np.count_nonzero(sub)
        share = float(np.count_nonzero(sub == lab)) / bone if bone else 0.0
        if share < rule["head_share"]:
            fails.append(f"holds {share:.0%} of the bone in its femoral head's core (needs {rule['head_share']:.0%})")
    return fails


#: the femur of a side with a hip prosthesis holds at least this share of the bone within
#: _STEM_SHELL_MM of the stem (the shaft tracked around the metal, as ``head_share`` asks of a
#: natural head's core)
STEM_SHARE = 0.7
_STEM_SHELL_MM = 4.0


def _implant_femur_fails(labels: np.ndarray, lab: int, h, vol: Volume, imp: int | None) -> list[str]:
    """The checks the femur (label ``lab``) of a side whose head is the implant head ``h`` (its
    implant: label ``imp``) fails: the head concentric with its cup, and the bone around the stem
    (the implant's metal below the cup) this femur's."""
    from printpipe.segment.heads import CONCENTRIC_MM

    fails = []
    if not h.concentric:
        fails.append(f"implant head {h.cup_offset_mm:.1f} mm off its cup's centre (more than {CONCENTRIC_MM:g} mm: "
                     f"worn liner, subluxed or dislocated hip)")
    stem = None
    if imp and imp != lab:
        sl = ndi.find_objects((labels == imp).view(np.uint8))[0]
        from printpipe.segment.anatomy import _coords

        p = _coords(vol, sl) - h.center.astype(np.float32)
        # the stem: the implant's metal below the cup, beyond its outer radius
        stem = (labels[sl] == imp) & (p[..., 2] < 0) & ((p ** 2).sum(-1) > np.float32((h.joint_mm + 5.0) ** 2))
    if stem is None or not stem.any():
        fails.append("no femoral stem found below the implant head")
        return fails
    import edt

    pad = [int(np.ceil(_STEM_SHELL_MM / s)) + 1 for s in vol.spacing]
    box = tuple(slice(max(a.start - q, 0), min(a.stop + q, n)) for a, q, n in zip(sl, pad, labels.shape))
    st = np.zeros([b.stop - b.start for b in box], bool)
    st[tuple(slice(a.start - b.start, a.stop - b.start) for a, b in zip(sl, box))] = stem
    ring = (edt.edt(~st, anisotropy=tuple(float(s) for s in vol.spacing)) <= _STEM_SHELL_MM)
    sub = labels[box]
    ring &= (sub != 0) & (sub != imp)
    n = int(ring.sum())
    share = float(np.count_nonzero(sub[ring] == lab)) / n if n else 0.0
    if share < STEM_SHARE:
        fails.append(f"holds {share:.0%} of the bone around its implant's stem (needs {STEM_SHARE:.0%})")
    return fails


def check_parts(labels: np.ndarray, names: dict[int, str], vol: Volume, heads: dict, warnings: list[str]
                ) -> tuple[dict[int, str], dict[str, Any]]:
    """Keep a name only when the part passes its anatomical checks; a part that fails becomes
    ``bone_N`` and the failed checks go to the warnings. Returns the names and the record."""
    present = set(np.flatnonzero(_fast.bincount(labels, max(names, default=0) + 1)).tolist())
    names = {k: v for k, v in names.items() if k in present}
    mid_x = float((heads["left"].center[0] + heads["right"].center[0]) / 2) if heads else None
    boxes = _fast.find_objects(labels, max(names, default=0))
    stats = {lab: _stats(labels, lab, vol, boxes[lab - 1]) for lab, n in names.items()
             if n.split("_")[0] in CHECKS and boxes[lab - 1] is not None}
    record: dict[str, Any] = {}
    failed: dict[int, list[str]] = {}
    inv = {v: k for k, v in names.items()}
    implants: dict[str, tuple[int, float]] = {}
    for side, h in heads.items():
        if h.implant:
            diam, off = 2 * h.radius_mm, h.cup_offset_mm
            warnings.append(
                f"hip prosthesis: a metal head {diam:.0f} mm across, {off:.1f} mm from its cup's centre; "
                f"the metal is exported as implant_{side}, in no bone part; bone within a few mm of the metal is "
                f"blurred by its artefacts: check it before printing")
            lab = inv.get(f"implant_{side}")
            if lab is not None:
                implants[side] = (lab, float(np.count_nonzero(labels == lab)) * float(np.prod(vol.spacing)) / 1000.0)
    implant_cm3 = {side: v for side, (_, v) in implants.items()}
    for lab, s in stats.items():
        fails = _check_one(names[lab], s, labels, lab, vol, heads, mid_x, implants)
        if fails:
            failed[lab] = fails
    for kind in ("hip", "femur"):
        a, b = inv.get(f"{kind}_left"), inv.get(f"{kind}_right")
        if a in stats and b in stats and a not in failed and b not in failed:
            va, vb = stats[a]["cm3"], stats[b]["cm3"]
            if kind == "femur" and implant_cm3:
                # the prosthesis stands in for the head, neck and canal it replaced
                va, vb = va + implant_cm3.get("left", 0.0), vb + implant_cm3.get("right", 0.0)
                record["femur_left_right_with_implant"] = True
            ratio = max(va, vb) / max(min(va, vb), 1e-9)
            record[f"{kind}_left_right_ratio"] = round(ratio, 2)
            if ratio > LR_RATIO:
                for lab in (a, b):
                    failed[lab] = [f"left/right volumes differ {ratio:.2f}x (more than {LR_RATIO:g}x)"]
    n_bone = sum(1 for v in names.values() if v.startswith("bone_"))
    for lab, fails in sorted(failed.items()):
        n_bone += 1
        old = names[lab]
        names[lab] = f"bone_{n_bone}"
        warnings.append(f"part that looked like {old} failed its anatomical checks ({'; '.join(fails)}): "
                        f"exported as bone_{n_bone}; check it before printing")
        record[old] = {"passed": False, "renamed": f"bone_{n_bone}", "failed": fails}
    for lab, s in stats.items():
        if lab not in failed:
            record[names[lab]] = {"passed": True, "volume_cm3": round(s["cm3"], 1)}
    return names, record


#: Bowel contrast (iodinated or barium in the lumen) reaches bone HU but has no cortex: its
#: inside is brighter than its rim (the rim is blurred with the bowel wall), and it stays below
#: cortical HU. Bone, even a thin rib at 3 mm slices, has a rim at least as bright as its inside
#: or voxels of cortical density (95th percentile >= _CORTEX_HU).
_CONTRAST_RIM_DROP_HU = 20.0
_CORTEX_HU = 500.0


def looks_like_contrast(m: np.ndarray, h: np.ndarray) -> tuple[bool, dict[str, float]]:
    """Whether the piece ``m`` (bool, with its HU ``h``) is contrast in a lumen rather than bone."""
    inner = ndi.binary_erosion(m)
    if not inner.any():
        return False, {}
    rim = m & ~inner
    p95 = float(np.percentile(h[m], 95))
    drop = float(np.median(h[inner]) - np.median(h[rim]))
    return bool(drop >= _CONTRAST_RIM_DROP_HU and p95 < _CORTEX_HU), {"p95_hu": p95, "inside_minus_rim_hu": drop}


def drop_contrast(labels: np.ndarray, names: dict[int, str], hu: np.ndarray, vol: Volume
                  ) -> tuple[dict[int, str], dict[str, Any]]:
    """Remove, in place, ``other_N`` parts that are contrast-filled bowel, not bone; renumber the
    rest. Returns the names and a record."""
    objs = _fast.find_objects(labels)
    gone = []
    vox = float(np.prod(vol.spacing)) / 1000.0
    for lab, name in sorted(names.items()):
        if not name.startswith("other_") or lab - 1 >= len(objs) or objs[lab - 1] is None:
            continue
        sl = objs[lab - 1]
        m = labels[sl] == lab
        is_c, stats = looks_like_contrast(m, hu[sl])
        if is_c:
            labels[sl][m] = 0
            gone.append({"volume_cm3": round(float(m.sum()) * vox, 1), "p95_hu": round(stats["p95_hu"]),
                         "inside_minus_rim_hu": round(stats["inside_minus_rim_hu"])})
    present = set(np.flatnonzero(_fast.bincount(labels, max(names, default=0) + 1)).tolist())
    names = {k: v for k, v in names.items() if k in present}
    n = 0
    for k in sorted(names):
        if names[k].startswith("other_"):
            n += 1
            names[k] = f"other_{n}"
    return names, {"contrast_pieces_removed": len(gone), "volume_cm3": round(sum(g["volume_cm3"] for g in gone), 1),
                   "pieces": gone[:20]}
