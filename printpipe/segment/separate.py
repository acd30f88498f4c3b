"""Separation of touching bones along their joint spaces."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from printpipe.segment._util import _label_dtype, _threads

log = logging.getLogger(__name__)


#: joint-space voxels are darker than this (a 2-3 mm joint sampled at 2 mm still reads ~450 HU)
_VALLEY_CAP = 650.0


#: ... and lie between two plates at least this bright (subchondral cortex) ...
_VALLEY_BRIGHT = 450.0


#: ... and at least this much brighter than the voxel itself
_VALLEY_DELTA = 150.0


#: how far (mm) each way the plates are looked for: half a joint space plus the partial-volume blur
_JOINT_RAY_MM = 4.0


#: distance (mm) from the carved surface that makes a bone core (a bony bridge is thinner)
_CORE_MM = 8.0


#: HU levels tried for cortical seeds
_SEED_LEVELS = (300, 400, 500, 600, 700, 850, 1000)


#: smallest seed (mm^3; and at least 1 % of the bone) and smallest part a seed splits into
_MIN_SEED_MM3 = 5000.0


_MIN_CHILD_MM3 = 2000.0


#: pieces of the intersection smaller than this (mm^3) are grown over by their neighbours
_MIN_PIECE_MM3 = 200.0


#: seeds closer than core radius + this (mm) to a core are released to the watershed
_RELEASE_MM = 4.0


#: widest gap (mm) across which two regions count as facing each other at a joint
_JOINT_GAP_MM = 5.0


#: two regions are one bone when direct bone contact is at least this multiple of their joint contact
_MERGE_RATIO = 0.5


#: ... and at least this multiple when both regions are bone-sized (_BONE_MM3)
_MERGE_RATIO_BONES = 1.5


_BONE_MM3 = 80000.0


#: regions smaller than this (mm^3) do not take part in the merge but are grown over afterwards
_LARGE_MM3 = 10000.0


#: joint contact (mm^2) every pair is assumed to have before counting
_MERGE_PRIOR_MM2 = 50.0


#: a direct contact whose darker voxel is this much below bright plates on both sides is a joint
_DIP_HU = 100.0


#: two cores stay apart when the distance map between them dips below this fraction of the shallower
_NECK_RATIO = 0.5


#: step (mm) of the distance levels of the priority flood
_FLOOD_STEP_MM = 0.1


#: seeds are found on a grid of about this spacing (mm) when the scan is finer
_SEED_GRID_MM = 1.4


#: HU of the soft tissue around bone (muscle, 30-60 HU): the low end of the partial-volume ramp
_SOFT_TISSUE_HU = 40.0


#: how far (mm) the brightest voxel of the cortex is looked for around a surface voxel
_EDGE_REACH_MM = 2.5


#: surface layers tested
_EDGE_PASSES = 2


class _Clock:
    """Seconds per step since the previous mark, for ``info["timings_s"]``."""

    def __init__(self) -> None:
        self.tm: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def __call__(self, name: str) -> None:
        self.tm[name] = round(time.perf_counter() - self.t0, 3)
        self.t0 = time.perf_counter()


def _separate(hu: np.ndarray, bone: np.ndarray, spacing: tuple[float, float, float]
              ) -> tuple[np.ndarray, dict[str, Any], np.ndarray]:
    """Split the (filled) bone mask into one region per bone; returns the region labels (uint16, or
    int32 when there are many), a record and the bool map of joint-space voxels.

    1. *Joint space* (:func:`_carve_joint_space`): the thin layers of lower HU between two cortical
       plates are carved out of the mask.
    2. *Two over-segmentations of the carved mask*, each grown by a watershed on the negated
       distance map (borders settle at narrow necks): *cortical seeds* (:func:`_cortical_seeds`)
       and *cores* (:func:`_core_regions`). Their intersection, split into connected pieces, is
       grown back into the carved joint-space voxels (:func:`_intersection_pieces`).
    3. *Merge* (:func:`_merge_by_contact`): two regions are one bone when they mostly touch directly
       rather than face each other across a joint.
    """
    from printpipe.kernels.segment import flood

    vox = float(np.prod(np.asarray(spacing, dtype=float)))
    mark = _Clock()
    valley, carved, cores, n_core, level, core_mm = _carve_joint_space(hu, bone, spacing, mark)
    seeds, n_seed, seed_level, refined = _cortical_seeds(hu, bone, carved, cores, n_core, spacing, core_mm, mark)
    regions = flood(seeds.astype(_label_dtype(n_seed + n_core), copy=False), level, carved)
    del seeds
    mark("watershed_seeds")
    by_core = _core_regions(cores, n_core, level, carved, mark) if n_core else None
    del cores, level
    regions, n_all = _intersection_pieces(regions, by_core, n_core, carved, bone, vox, mark)
    del by_core, carved
    regions, merges, apart = _merge_by_contact(regions, valley, hu, bone, spacing, n_all, mark)
    info = {"method": "joint-space carving + cortical seeds and cores + contact merge",
            "joint_space_voxels": int(np.count_nonzero(valley)), "seed_hu": seed_level, "seeds": int(n_seed),
            "refined": refined, "cores": int(n_core), "core_radius_mm": round(core_mm, 2),
            "regions_before_merge": int(n_all), "merges": merges[:100], "kept_apart": apart[:50],
            "timings_s": mark.tm}
    return regions, info, valley.astype(bool)


def _carve_joint_space(hu: np.ndarray, bone: np.ndarray, spacing: tuple[float, float, float], mark: _Clock
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray, float]:
    """The joint space carved out of the mask, and the distance levels of what is left.

    A joint is a thin layer of lower HU between two cortical plates. A voxel of the mask below
    ``_VALLEY_CAP`` HU whose rays (``_JOINT_RAY_MM`` long, both ways along one of the 13 directions
    of a 26-neighbourhood) both reach cortex (at least ``_VALLEY_BRIGHT`` HU and ``_VALLEY_DELTA``
    above the voxel) is a joint-space ("valley") voxel and is carved out.

    Returns the valley map, the carved mask, the cores (6-connected components of the points deeper
    than the core radius ``max(_CORE_MM, 2 voxels)``) and their count, the distance map of the
    carved mask in uint16 steps of ``_FLOOD_STEP_MM`` (all the floods and the neck test need) and
    the core radius (mm).
    """
    import cc3d
    import edt

    from printpipe.kernels.segment import neighbour_dirs, valley_map

    sp = np.asarray(spacing, dtype=float)
    dirs = neighbour_dirs()
    steps = np.array([max(1, int(round(_JOINT_RAY_MM / float(np.linalg.norm(d * sp))))) for d in dirs],
                     dtype=np.int64)
    valley = valley_map(hu, bone, dirs, steps, _VALLEY_CAP, _VALLEY_BRIGHT, _VALLEY_DELTA)
    carved = bone & (valley == 0)
    mark("valley")
    dist = np.asarray(edt.edt(carved, anisotropy=tuple(map(float, spacing)), parallel=_threads()),
                      dtype=np.float32)
    core_mm = max(_CORE_MM, 2.0 * float(sp.max()))
    cores, n_core = cc3d.connected_components(dist > core_mm, connectivity=6, return_N=True)
    cores = cores.astype(_label_dtype(n_core), copy=False)
    dist *= 1.0 / _FLOOD_STEP_MM
    np.minimum(dist, 65000, out=dist)
    level = dist.astype(np.uint16)
    del dist
    mark("distance")
    return valley, carved, cores, n_core, level, core_mm


def _cortical_seeds(hu: np.ndarray, bone: np.ndarray, carved: np.ndarray, cores: np.ndarray, n_core: int,
                    spacing: tuple[float, float, float], core_mm: float, mark: _Clock
                    ) -> tuple[np.ndarray, int, int, list[dict[str, int]]]:
    """Seeds of the first over-segmentation: the carved mask thresholded again (:func:`_level_seeds`),
    with the thick cores taking back their thick region.

    Seeds are markers only: on grids finer than ``_SEED_GRID_MM`` they are found on a grid of about
    that spacing. Around a core (within its radius + ``_RELEASE_MM``) the seeds let go and the
    watershed decides; the core grown into the ball of its radius (less a voxel) is a seed of its own
    (labels above the cortical seeds'), so a femoral head welded to its cup at the dome is a region
    of its own unless its neck is narrower. Returns the seeds, their count (cortical seeds only),
    the HU level and the refinement record of :func:`_level_seeds`.
    """
    import edt

    from printpipe.kernels.segment import grow_labels

    sp = np.asarray(spacing, dtype=float)
    total = int(np.count_nonzero(bone))
    vox = float(np.prod(sp))
    f = tuple(max(1, int(round(_SEED_GRID_MM / s))) for s in spacing)
    if f == (1, 1, 1):
        seeds, n_seed, seed_level, refined = _level_seeds(hu, carved, total, vox)
    else:
        sl = tuple(slice(None, None, k) for k in f)
        seeds, n_seed, seed_level, refined = _level_seeds(hu[sl], carved[sl], total // int(np.prod(f)),
                                                          vox * float(np.prod(f)))
        for ax, k in enumerate(f):
            if k > 1:
                seeds = np.repeat(seeds, k, axis=ax)
        seeds = seeds[: bone.shape[0], : bone.shape[1], : bone.shape[2]]
        seeds[~carved] = 0
        seeds = np.ascontiguousarray(seeds)
    mark("seeds")
    if n_core:
        # distance to the nearest core (on the seed grid: the ball and the release zone are
        # heuristics that a voxel or two do not change)
        sl = tuple(slice(None, None, k) for k in f)
        aniso = tuple(map(float, spacing))
        near = edt.edt(cores[sl] == 0, anisotropy=tuple(a * k for a, k in zip(aniso, f)), parallel=_threads())
        ball = near < core_mm - float(sp.max())
        release = near < core_mm + _RELEASE_MM
        del near
        for ax, k in enumerate(f):
            if k > 1:
                ball = np.repeat(ball, k, axis=ax)
                release = np.repeat(release, k, axis=ax)
        ball = ball[: bone.shape[0], : bone.shape[1], : bone.shape[2]] & carved
        # around a core the seeds let go (the watershed decides there): a femoral head's cortex,
        # part of a seed welded to the cup, goes with the head's core unless a neck is narrower
        seeds[release[: bone.shape[0], : bone.shape[1], : bone.shape[2]]] = 0
        del release
        grown = grow_labels(cores.copy(), ball)
        sel = grown > 0
        seeds[sel] = grown[sel].astype(seeds.dtype) + n_seed
        del grown, ball, sel
        mark("core_balls")
    return seeds, n_seed, seed_level, refined


def _core_regions(cores: np.ndarray, n_core: int, level: np.ndarray, carved: np.ndarray, mark: _Clock
                  ) -> np.ndarray:
    """The second over-segmentation: the cores grown through the carved mask by the watershed.

    The cores are the components of the distance map above ``_CORE_MM``; a bony bridge across a
    joint is narrower than that, so sacrum and ilium get different cores even where bridges join
    them into one seed. Two core regions stay apart only across a narrow neck (a bony bridge): they
    are joined when the saddle of the distance map between them is at least ``_NECK_RATIO`` of the
    shallower core's depth (pairs taken from the highest saddle down).
    """
    from printpipe.kernels.segment import boundary_pairs, flood, region_peaks

    by_core = flood(cores, level, carved)
    mark("watershed_cores")
    sad, _ = boundary_pairs(by_core, level, n_core)
    peak = region_peaks(by_core, level, n_core)
    root = np.arange(n_core + 1)
    for a, b in sorted(zip(*np.nonzero(sad >= 0)), key=lambda ab: -sad[ab[0], ab[1]]):
        ra, rb = int(a), int(b)
        while root[ra] != ra:
            ra = root[ra]
        while root[rb] != rb:
            rb = root[rb]
        if ra != rb and sad[a, b] >= _NECK_RATIO * min(peak[ra], peak[rb]):
            root[rb] = ra
            peak[ra] = max(peak[ra], peak[rb])
    for a in range(n_core + 1):
        r = a
        while root[r] != r:
            r = root[r]
        root[a] = r
    return root.astype(by_core.dtype)[by_core]


def _intersection_pieces(regions: np.ndarray, by_core: np.ndarray | None, n_core: int, carved: np.ndarray,
                         bone: np.ndarray, vox: float, mark: _Clock) -> tuple[np.ndarray, int]:
    """Every (seed region, core region) pair is a piece (without cores, the seed regions are); the
    pieces are split into connected components, those under ``_MIN_PIECE_MM3`` dropped, and the
    rest grown back into the carved joint-space voxels (nearest region in 6-connected steps).
    Components of the mask that hold no piece (thin bones) keep labels of their own. Returns the
    regions and their number."""
    import cc3d

    if by_core is not None:
        n_reg = int(regions.max())
        pair = regions.astype(_label_dtype((n_reg + 1) * (n_core + 1)))
        del regions
        pair *= n_core + 1
        pair += by_core
        used = np.bincount(pair.ravel()) > 0
        used[0] = False
        lut = np.cumsum(used)
        lut[~used] = 0
        regions = lut.astype(_label_dtype(int(lut.max())))[pair]
        del pair
        regions[~carved] = 0
    comp, n = cc3d.connected_components(regions, connectivity=6, return_N=True)
    del regions
    counts = np.bincount(comp.ravel(), minlength=n + 1)
    small = counts < max(1, int(_MIN_PIECE_MM3 / vox))
    small[0] = True
    lut = np.cumsum(~small)
    lut[small] = 0
    n = int(lut.max())
    # room for the thin components added below
    regions = lut.astype(_label_dtype(n + 60000))[comp]
    del comp
    mark("intersect")
    regions, n_all = _grow_into(regions, bone, n)
    mark("grow")
    return regions, n_all


def _grow_into(regions: np.ndarray, bone: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """``regions`` (labels up to ``n``) grown through ``bone``; the components of the mask that they
    do not reach get labels from ``n + 1`` on. Returns the regions and the highest label."""
    import cc3d

    from printpipe.kernels.segment import grow_labels

    regions = grow_labels(regions, bone)
    rest = bone & (regions == 0)
    n_extra = 0
    if rest.any():
        extra, n_extra = cc3d.connected_components(rest, connectivity=26, return_N=True)
        if n + n_extra >= np.iinfo(regions.dtype).max:
            regions = regions.astype(np.int32)
        regions[rest] = extra[rest].astype(regions.dtype) + n
        del extra
    del rest
    return regions, n + int(n_extra)


def _merge_by_contact(regions: np.ndarray, valley: np.ndarray, hu: np.ndarray, bone: np.ndarray,
                      spacing: tuple[float, float, float], n_all: int, mark: _Clock
                      ) -> tuple[np.ndarray, list[dict[str, Any]], list[dict[str, Any]]]:
    """Merge regions that are one bone; returns the regions and records of the merges and of the
    pairs kept apart.

    Two regions are one bone when they mostly touch directly (bone runs on across the border)
    rather than face each other across a gap of up to ``_JOINT_GAP_MM`` (a joint space, carved,
    below the threshold, or a direct contact that is a dip of ``_DIP_HU`` between two brighter
    plates). Contacts are measured as areas (mm^2, so thick slices do not count three times).
    Only regions of at least ``_LARGE_MM3`` take part (see :func:`_merge_pairs`); smaller pieces are
    grown over by their neighbours afterwards.
    """
    from printpipe.kernels.segment import facing_counts

    sp = np.asarray(spacing, dtype=float)
    vox = float(np.prod(sp))
    reach = np.array([max(1, int(math.ceil(_JOINT_GAP_MM / s))) for s in spacing], dtype=np.int64)
    ray = np.array([max(1, int(round(_JOINT_RAY_MM / s))) for s in spacing], dtype=np.int64)
    area = np.array([sp[1] * sp[2], sp[0] * sp[2], sp[0] * sp[1]], dtype=np.float64)
    bone_c, joint_c = facing_counts(regions, valley, hu, reach, ray, _DIP_HU, area, n_all)
    mark("contacts")
    bone_c = (bone_c + bone_c.T).astype(np.float64)
    joint_c = (joint_c + joint_c.T).astype(np.float64)
    # only regions that could be a bone of their own take part; smaller pieces are grown over by
    # their neighbours afterwards (they would otherwise tip the balance at a weld)
    size = np.bincount(regions.ravel(), minlength=n_all + 1).astype(np.float64)
    large = size >= _LARGE_MM3 / vox
    large[0] = False
    parent, merges = _merge_pairs(bone_c, joint_c, size, large, vox, n_all)
    ia, ib = np.nonzero(np.triu((bone_c + joint_c) >= 20))
    apart = [{"regions": [int(a), int(b)], "bone_mm2": int(bone_c[a, b] // 2), "joint_mm2": int(joint_c[a, b] // 2)}
             for a, b in zip(ia, ib) if large[a] and large[b]]
    lut = parent.astype(regions.dtype)
    lut[~large] = 0
    regions, _ = _grow_into(lut[regions], bone, n_all)
    mark("merge")
    return regions, merges, apart


def _merge_pairs(bone_c: np.ndarray, joint_c: np.ndarray, size: np.ndarray, large: np.ndarray, vox: float,
                 n_all: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Greedy merge on the symmetric contact matrices (mm^2, both sides counted; updated in place,
    as is ``size``): the pair of large regions with the largest ``bone / joint`` relative to its bar
    is merged while it clears its bar. Every pair starts with ``_MERGE_PRIOR_MM2`` of joint contact
    (a few contacts prove nothing); the bar is ``_MERGE_RATIO`` for a piece joining a bone and
    ``_MERGE_RATIO_BONES`` when both regions are bone-sized (``_BONE_MM3``): a femur welded to its
    cup at the dome, or a sacrum joined to an ilium by bridges, is not one bone. Returns the root
    region of every region and the merge records."""
    prior = 2.0 * _MERGE_PRIOR_MM2
    parent = np.arange(n_all + 1)
    merges = []
    bone_vox = _BONE_MM3 / vox
    while True:
        both_big = np.minimum(size[:, None], size[None, :]) >= bone_vox
        need = np.where(both_big, _MERGE_RATIO_BONES, _MERGE_RATIO)
        ratio = np.where((bone_c > 0) & large[:, None] & large[None, :], bone_c / (joint_c + prior) / need, 0.0)
        k = int(np.argmax(ratio))
        a, b = divmod(k, n_all + 1)
        if ratio[a, b] < 1.0:
            break
        a, b = min(a, b), max(a, b)
        merges.append({"regions": [int(a), int(b)], "cm3": [round(float(size[a] * vox / 1000), 1),
                                                           round(float(size[b] * vox / 1000), 1)],
                       "bone_mm2": int(bone_c[a, b] // 2), "joint_mm2": int(joint_c[a, b] // 2)})
        size[a] += size[b]
        parent[b] = a
        for m in (bone_c, joint_c):
            m[a] += m[b]
            m[:, a] += m[:, b]
            m[a, a] = 0
            m[b] = 0
            m[:, b] = 0
    for a in range(1, n_all + 1):
        r = a
        while parent[r] != r:
            r = parent[r]
        parent[a] = r
    return parent, merges


def _level_seeds(hu: np.ndarray, carved: np.ndarray, total: int, vox: float
                 ) -> tuple[np.ndarray, int, int, list[dict[str, int]]]:
    """Seeds from re-thresholding the carved mask: the lowest level of ``_SEED_LEVELS`` that gives
    the most components of at least ``max(_MIN_SEED_MM3, 1 %)`` of the bone, then each seed split
    into its parts at higher levels when it falls into two or more of at least ``_MIN_CHILD_MM3``."""
    import cc3d

    from printpipe.kernels.segment import parent_of, relabel_split

    min_seed = max(int(_MIN_SEED_MM3 / vox), int(0.01 * total), 1)
    best = None
    for level in _SEED_LEVELS:
        comp, nc = cc3d.connected_components(carved & (hu >= level), connectivity=6, return_N=True)
        cnt = np.bincount(comp.ravel(), minlength=nc + 1)
        cnt[0] = 0
        keep = cnt >= min_seed
        if best is None or int(keep.sum()) > best[0]:
            lut = np.zeros(nc + 1, np.int32)
            lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
            lut = lut.astype(_label_dtype(int(keep.sum()) + 10000))
            best = (int(keep.sum()), level, lut[comp])
        del comp
    n, level, seeds = best
    min_child = max(int(_MIN_CHILD_MM3 / vox), int(0.005 * total), 1)
    refined = []
    for higher in _SEED_LEVELS:
        if higher <= level or n == 0:
            continue
        comp, nc = cc3d.connected_components((seeds > 0) & (hu >= higher), connectivity=6, return_N=True)
        cnt = np.bincount(comp.ravel(), minlength=nc + 1)
        cnt[0] = 0
        big = np.flatnonzero(cnt >= min_child)
        if len(big) < 2:
            continue
        par = parent_of(comp, seeds, nc)
        kids: dict[int, list[int]] = {}
        for c in big:
            kids.setdefault(int(par[c]), []).append(int(c))
        split = np.zeros(n + 1, bool)
        newlab = np.zeros(nc + 1, np.int32)
        for seed, ch in kids.items():
            if len(ch) < 2:
                continue
            split[seed] = True
            for i, c in enumerate(ch):
                if i:
                    n += 1
                newlab[c] = seed if i == 0 else n
            refined.append({"hu": int(higher), "seed": int(seed), "children": len(ch)})
        if split.any():
            split = np.concatenate([split, np.zeros(n + 1 - len(split), bool)])
            relabel_split(seeds, comp, split, newlab)
        del comp
    return seeds, int(n), int(level), refined


def _cut_gaps(labels: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """Clear, of every pair of 26-adjacent voxels of different parts, the darker one: different
    parts then never touch (a gap of at least one voxel, no shared surface) and the gap lies in the
    joint space rather than in the cortex of whichever part has the higher label."""
    from printpipe.kernels.segment import cut_gaps

    cut_gaps(hu, labels)
    return labels

