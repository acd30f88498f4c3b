"""Part names, given only when the anatomy agrees, and part statistics."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from printpipe.errors import SegmentationError
from printpipe.volume import Volume

log = logging.getLogger(__name__)


def _name_parts(regions: np.ndarray, vol: Volume, min_vox: int, separated: bool
                ) -> tuple[np.ndarray, dict[int, str], dict[str, Any]]:
    """Give each region an anatomical name from its position in LPS; returns uint8 labels."""
    # the labels present are those with a bounding box (no sort of the whole volume)
    objs = ndi.find_objects(regions)
    ids = [i + 1 for i, o in enumerate(objs) if o is not None]
    rec = []
    for lab in ids:
        sl = objs[lab - 1]
        if sl is None:
            continue
        idx = np.argwhere(regions[sl] == lab)
        if len(idx) < max(min_vox, 1):
            continue
        # a regular subsample is plenty for a centroid and the x distribution
        sub = idx[:: max(1, len(idx) // 100_000)] + [s.start for s in sl]
        p = vol.index_to_patient(sub.astype(float))
        corners = vol.index_to_patient(np.array([[a, b, c] for a in (sl[0].start, sl[0].stop - 1)
                                                 for b in (sl[1].start, sl[1].stop - 1)
                                                 for c in (sl[2].start, sl[2].stop - 1)], dtype=float))
        rec.append({"id": int(lab), "n": int(len(idx)), "c": p.mean(axis=0), "lo": corners.min(axis=0),
                    "hi": corners.max(axis=0), "x": p[:: max(1, len(p) // 20000), 0]})
    if not rec:
        raise SegmentationError("no bone region large enough after separation; lower --min-island or --hu")
    total = sum(r["n"] for r in rec)
    xm = float(sum(r["c"][0] * r["n"] for r in rec) / total)
    big = [r for r in rec if r["n"] >= 0.02 * max(q["n"] for q in rec)]
    name_of: dict[int, str] = {}
    if not separated:
        for r in rec:
            name_of[r["id"]] = "bone"
    else:
        mid = [r for r in big if abs(r["c"][0] - xm) < 35.0]
        left = [r for r in big if r["c"][0] - xm >= 35.0]
        right = [r for r in big if xm - r["c"][0] >= 35.0]
        # a pelvis that was not separated from its other half has much bone far out on both sides;
        # a sacrum (up to ~130 mm wide) or a vertebra has none
        pelvis_whole = [r for r in mid if np.mean(r["x"] - xm > 70.0) > 0.1 and np.mean(xm - r["x"] > 70.0) > 0.1]
        for r in pelvis_whole:
            name_of[r["id"]] = "pelvis"
        mid = [r for r in mid if r["id"] not in name_of]
        hips = []
        for side, group in (("left", left), ("right", right)):
            group = sorted(group, key=lambda r: r["c"][2])  # inferior first
            if len(group) >= 2:
                name_of[group[-1]["id"]] = f"hip_{side}"
                name_of[group[0]["id"]] = f"femur_{side}"
                hips.append(group[-1])
                # further lateral regions: the one touching the femur below the hip is femur too
                for r in group[1:-1]:
                    name_of[r["id"]] = f"femur_{side}" if r["c"][2] < 0.5 * (group[0]["c"][2] + group[-1]["c"][2]) \
                        else f"hip_{side}"
            elif len(group) == 1:
                r = group[0]
                top_mid = max((q["hi"][2] for q in mid), default=-np.inf)
                lo_mid = min((q["lo"][2] for q in mid), default=np.inf)
                # a hip reaches the level of the sacrum; a lone femur lies below it
                if mid and r["hi"][2] > lo_mid + 0.25 * (top_mid - lo_mid):
                    name_of[r["id"]] = f"hip_{side}"
                    hips.append(r)
                else:
                    name_of[r["id"]] = f"femur_{side}"
        if mid:
            hip_top = max((h["hi"][2] for h in hips), default=None)
            hip_lo = min((h["lo"][2] for h in hips), default=None)
            if pelvis_whole:
                hip_top = max(r["hi"][2] for r in pelvis_whole)
                hip_lo = min(r["lo"][2] for r in pelvis_whole)
            cand = [r for r in mid if hip_top is None or (r["lo"][2] < hip_top and r["hi"][2] > hip_lo)]
            if cand and hips or pelvis_whole and cand:
                # the sacrum lies posterior (larger y) between the hips
                sac = max(cand, key=lambda r: r["n"])
                name_of[sac["id"]] = "sacrum"
                for r in mid:
                    if r["id"] in name_of:
                        continue
                    if r["c"][2] > sac["c"][2]:
                        name_of[r["id"]] = "spine"
            elif not hips and not pelvis_whole:
                for r in mid:
                    name_of[r["id"]] = "spine" if r is max(mid, key=lambda q: q["n"]) else name_of.get(r["id"], "")
        # when both hips are present they form the pelvis (split again later at the fitted plane)
        if "hip_left" in name_of.values() or "hip_right" in name_of.values():
            for k, v in list(name_of.items()):
                if v.startswith("hip_"):
                    name_of[k] = "pelvis"
    # fragments: everything else, numbered by size
    rest = sorted([r for r in rec if not name_of.get(r["id"])], key=lambda r: -r["n"])
    for i, r in enumerate(rest, 1):
        name_of[r["id"]] = f"fragment_{i}"
    order = ["pelvis", "hip_left", "hip_right", "sacrum", "femur_left", "femur_right", "spine", "bone"]
    uniq = sorted(set(name_of.values()),
                  key=lambda n: (order.index(n) if n in order else len(order), int(n[9:]) if n.startswith("fragment_") else 0))
    if len(uniq) > 250:
        raise SegmentationError(f"{len(uniq)} parts found, more than a uint8 label image holds; "
                                f"raise --min-island")
    label_of = {n: i + 1 for i, n in enumerate(uniq)}
    lut = np.zeros(int(regions.max()) + 1, np.uint8)
    for rid, n in name_of.items():
        lut[rid] = label_of[n]
    labels = lut[regions]
    names = {v: k for k, v in label_of.items()}
    ninfo = {"midline_x_mm": round(xm, 1),
             "regions": [{"region": r["id"], "name": name_of.get(r["id"]), "volume_cm3": round(r["n"] * float(np.prod(vol.spacing)) / 1000, 2),
                          "centroid_lps": [round(float(v), 1) for v in r["c"]]} for r in rec]}
    return labels, names, ninfo


def _clean_parts(labels: np.ndarray, names: dict[int, str], min_vox: int
                 ) -> tuple[np.ndarray, dict[int, str], dict[str, Any]]:
    """Drop pieces of a part that the gap cut left smaller than the island limit."""
    import cc3d

    # after the gap cut no two parts touch (26-neighbourhood), so the components of the bone
    # are those of each part: a binary labelling (about 3x faster than a multi-label one) suffices
    comp, n = cc3d.connected_components(labels != 0, connectivity=26, return_N=True)
    counts = np.bincount(comp.ravel(), minlength=n + 1)
    small = counts < max(min_vox, 1)
    small[0] = False
    dropped = int(small.sum())
    vox = int(counts[small].sum())
    if dropped:
        labels[small[comp]] = 0
    del comp
    present = set(np.flatnonzero(np.bincount(labels.ravel())).tolist())
    names = {k: v for k, v in names.items() if k in present}
    return labels, names, {"pieces_dropped": dropped, "voxels_dropped": vox}


def _part_stats(labels: np.ndarray, names: dict[int, str], vol: Volume) -> dict[str, Any]:
    counts = np.bincount(labels.ravel(), minlength=max(names, default=0) + 1)
    objs = ndi.find_objects(labels)
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

