"""numba kernels of the segmentation stage: arithmetic on arrays only (no I/O, no validation)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["neighbour_dirs", "valley_map", "grow_labels", "boundary_pairs", "region_peaks", "facing_counts",
           "refine_surface", "cut_gaps", "slice_holes", "clear_near_other", "bright_sheets", "ball_closing",
           "label_counts", "lut_mask", "hu_window", "distance_levels", "erode_cross", "label_boxes",
           "fill_holes_slices"]


def neighbour_dirs() -> np.ndarray:
    """The 13 directions of a 26-neighbourhood, one per opposite pair, as (13, 3) int64 (dz, dy, dx)."""
    out = []
    for dk in (-1, 0, 1):
        for dj in (-1, 0, 1):
            for di in (-1, 0, 1):
                if (dk, dj, di) > (0, 0, 0):
                    out.append((dk, dj, di))
    return np.array(out, dtype=np.int64)


@njit(cache=True, inline="always")
def _ray_max(hu, k, j, i, dk, dj, di, n):
    nz, ny, nx = hu.shape
    best = -32768.0
    for s in range(1, n + 1):
        kk = k + dk * s
        jj = j + dj * s
        ii = i + di * s
        if kk < 0 or kk >= nz or jj < 0 or jj >= ny or ii < 0 or ii >= nx:
            break
        v = hu[kk, jj, ii]
        if v > best:
            best = v
    return best


@njit(cache=True, parallel=True)
def valley_map(hu, mask, dirs, steps, cap, bright, delta):
    """Flag mask voxels that lie in a thin dark sheet between two bright plates (a joint space).

    A voxel of HU ``h < cap`` is flagged when, along at least one of the 13 directions, the
    brightest voxel within ``steps[d]`` voxels forward and the brightest within ``steps[d]``
    backward both reach ``max(h + delta, bright)``. Returns a uint8 map (1 = valley).
    """
    nz, ny, nx = hu.shape
    out = np.zeros((nz, ny, nx), np.uint8)
    nd = dirs.shape[0]
    for k in prange(nz):
        for j in range(ny):
            for i in range(nx):
                if not mask[k, j, i]:
                    continue
                h = float(hu[k, j, i])
                if h >= cap:
                    continue
                need = h + delta
                if need < bright:
                    need = bright
                for d in range(nd):
                    f = _ray_max(hu, k, j, i, dirs[d, 0], dirs[d, 1], dirs[d, 2], steps[d])
                    if f < need:
                        continue
                    b = _ray_max(hu, k, j, i, -dirs[d, 0], -dirs[d, 1], -dirs[d, 2], steps[d])
                    if b >= need:
                        out[k, j, i] = 1
                        break
    return out


@njit(cache=True)
def grow_labels(labels, mask):
    """Give every unlabelled voxel of ``mask`` the label of the nearest labelled voxel, nearest in
    6-connected steps inside the mask (a breadth-first flood from all labels at once). Voxels of the
    mask not connected to any label keep 0. Works in place on ``labels`` and returns it."""
    nz, ny, nx = labels.shape
    n = labels.size
    flat = labels.ravel()
    mflat = mask.ravel()
    # the queue holds the seeds (each touches one of the m0 free mask voxels: at most 6 * m0) and
    # the m0 voxels it labels, so it needs 7 * m0 entries, not one per voxel of the grid
    m0 = 0
    for p in range(n):
        if flat[p] == 0 and mflat[p]:
            m0 += 1
    queue = np.empty(min(n, 7 * m0 + 1), np.int64)
    head = 0
    tail = 0
    sz = ny * nx
    # seed the queue with labelled voxels that touch an unlabelled mask voxel
    for p in range(n):
        if flat[p] == 0:
            continue
        k = p // sz
        r = p - k * sz
        j = r // nx
        i = r - j * nx
        touch = False
        if k > 0 and flat[p - sz] == 0 and mflat[p - sz]:
            touch = True
        elif k < nz - 1 and flat[p + sz] == 0 and mflat[p + sz]:
            touch = True
        elif j > 0 and flat[p - nx] == 0 and mflat[p - nx]:
            touch = True
        elif j < ny - 1 and flat[p + nx] == 0 and mflat[p + nx]:
            touch = True
        elif i > 0 and flat[p - 1] == 0 and mflat[p - 1]:
            touch = True
        elif i < nx - 1 and flat[p + 1] == 0 and mflat[p + 1]:
            touch = True
        if touch:
            queue[tail] = p
            tail += 1
    while head < tail:
        p = queue[head]
        head += 1
        lab = flat[p]
        k = p // sz
        r = p - k * sz
        j = r // nx
        i = r - j * nx
        for q in (p - sz if k > 0 else -1, p + sz if k < nz - 1 else -1, p - nx if j > 0 else -1,
                  p + nx if j < ny - 1 else -1, p - 1 if i > 0 else -1, p + 1 if i < nx - 1 else -1):
            if q >= 0 and flat[q] == 0 and mflat[q]:
                flat[q] = lab
                queue[tail] = q
                tail += 1
    return labels


@njit(cache=True)
def boundary_pairs(regions, value, nlab):
    """For each pair of 6-adjacent regions (a < b), the largest ``min(value[p], value[q])`` over
    their touching voxel pairs (the saddle) and the number of touching pairs. Returns a dense
    ``(nlab + 1, nlab + 1)`` float32 saddle matrix and int64 count matrix (upper triangle)."""
    nz, ny, nx = regions.shape
    sad = np.full((nlab + 1, nlab + 1), -1.0, np.float32)
    cnt = np.zeros((nlab + 1, nlab + 1), np.int64)
    for k in range(nz):
        for j in range(ny):
            for i in range(nx):
                a = regions[k, j, i]
                if a == 0:
                    continue
                va = value[k, j, i]
                for t in range(3):
                    kk, jj, ii = k, j, i
                    if t == 0:
                        kk += 1
                    elif t == 1:
                        jj += 1
                    else:
                        ii += 1
                    if kk >= nz or jj >= ny or ii >= nx:
                        continue
                    b = regions[kk, jj, ii]
                    if b == 0 or b == a:
                        continue
                    v = min(va, value[kk, jj, ii])
                    lo = min(a, b)
                    hi = max(a, b)
                    cnt[lo, hi] += 1
                    if v > sad[lo, hi]:
                        sad[lo, hi] = v
    return sad, cnt


@njit(cache=True)
def region_peaks(regions, value, nlab):
    """Largest ``value`` in each region (index = label)."""
    out = np.zeros(nlab + 1, np.float32)
    flat = regions.ravel()
    vflat = value.ravel()
    for p in range(flat.size):
        a = flat[p]
        if a and vflat[p] > out[a]:
            out[a] = vflat[p]
    return out


@njit(cache=True)
def facing_counts(regions, valley, hu, reach, ray, dip, area, nlab):
    """Contacts between regions along the three axes, in both directions.

    From every labelled, non-valley voxel ``p`` the kernel walks along +-z, +-y, +-x over at most
    ``reach[axis]`` voxels, skipping background and valley voxels, to the first labelled non-valley
    voxel ``q``. When ``q`` belongs to another region the pair counts as *joint* contact if a gap
    (joint space, dark or below the threshold) lies between them, or if ``p`` and ``q`` are direct
    neighbours but the darker of the two is a dip: the brightest voxel within ``ray[axis]`` voxels
    beyond ``p`` (away from ``q``) and the brightest within ``ray[axis]`` beyond ``q`` are both at
    least ``dip`` HU brighter (a thin dark layer between two plates). Otherwise it is *bone*
    contact (the bone runs on). Each contact adds ``area[axis]`` (the voxel face it crosses, mm^2).
    Returns ``(bone, joint)`` as dense ``(nlab + 1, nlab + 1)`` float64 matrices (each contact
    counted from both sides).
    """
    nz, ny, nx = regions.shape
    bone = np.zeros((nlab + 1, nlab + 1), np.float64)
    joint = np.zeros((nlab + 1, nlab + 1), np.float64)
    for k in range(nz):
        for j in range(ny):
            for i in range(nx):
                a = regions[k, j, i]
                if a == 0 or valley[k, j, i]:
                    continue
                for t in range(6):
                    ax = t // 2
                    sg = 1 if t % 2 == 0 else -1
                    dk = sg if ax == 0 else 0
                    dj = sg if ax == 1 else 0
                    di = sg if ax == 2 else 0
                    for s in range(1, reach[ax] + 1):
                        kk = k + dk * s
                        jj = j + dj * s
                        ii = i + di * s
                        if kk < 0 or kk >= nz or jj < 0 or jj >= ny or ii < 0 or ii >= nx:
                            break
                        b = regions[kk, jj, ii]
                        if b == 0 or valley[kk, jj, ii]:
                            continue
                        if b != a:
                            if s == 1:
                                low = min(hu[k, j, i], hu[kk, jj, ii]) + dip
                                back = _ray_max(hu, k, j, i, -dk, -dj, -di, ray[ax])
                                fwd = _ray_max(hu, kk, jj, ii, dk, dj, di, ray[ax])
                                if back >= low and fwd >= low:
                                    joint[a, b] += area[ax]
                                else:
                                    bone[a, b] += area[ax]
                            else:
                                joint[a, b] += area[ax]
                        break
    return bone, joint


@njit(cache=True)
def refine_surface(hu, labels, open_, rk, rj, ri, background, floor, passes):
    """Peel the outer surface of labelled parts back to a local half-maximum edge.

    A labelled voxel with a 6-neighbour outside every part that is open (``open_``: background or
    joint space, not bone cut by a border between parts) is kept only if its HU reaches half-way
    between ``background`` and the brightest voxel within ``(rk, rj, ri)`` voxels (and at least
    ``floor``): the 50 % point of the partial-volume ramp, which is where the surface of the object
    lies. ``passes`` layers are tested, one after the other. Works in place; returns the number
    of voxels removed.
    """
    nz, ny, nx = labels.shape
    removed = 0
    for _ in range(passes):
        cand = []
        for k in range(nz):
            for j in range(ny):
                for i in range(nx):
                    if labels[k, j, i] == 0:
                        continue
                    edge = (k == 0 or k == nz - 1 or j == 0 or j == ny - 1 or i == 0 or i == nx - 1
                            or (labels[k - 1, j, i] == 0 and open_[k - 1, j, i])
                            or (labels[k + 1, j, i] == 0 and open_[k + 1, j, i])
                            or (labels[k, j - 1, i] == 0 and open_[k, j - 1, i])
                            or (labels[k, j + 1, i] == 0 and open_[k, j + 1, i])
                            or (labels[k, j, i - 1] == 0 and open_[k, j, i - 1])
                            or (labels[k, j, i + 1] == 0 and open_[k, j, i + 1]))
                    if not edge:
                        continue
                    h = hu[k, j, i]
                    best = -32768.0
                    for kk in range(max(k - rk, 0), min(k + rk + 1, nz)):
                        for jj in range(max(j - rj, 0), min(j + rj + 1, ny)):
                            for ii in range(max(i - ri, 0), min(i + ri + 1, nx)):
                                v = hu[kk, jj, ii]
                                if v > best:
                                    best = v
                    thr = background + 0.5 * (best - background)
                    if thr < floor:
                        thr = floor
                    if h < thr:
                        cand.append((k, j, i))
        if len(cand) == 0:
            break
        for c in cand:
            labels[c[0], c[1], c[2]] = 0
        removed += len(cand)
    return removed


@njit(cache=True)
def cut_gaps(hu, labels):
    """Separate touching parts by clearing, of every pair of 26-adjacent voxels with different
    non-zero labels, the darker one (ties: the lower label). The gap then lies in the joint space,
    the cortex on both sides stays. In place; returns the number of voxels cleared."""
    nz, ny, nx = labels.shape
    # per run of _RUN voxels of a row the smallest and the largest non-zero label (an empty run:
    # big and 0), branch-free so the scan vectorises; a run whose neighbourhood (the runs beside
    # it in the 3 x 3 rows around) holds one label or none has nothing to cut
    run = 32
    nc = (nx + run - 1) // run
    big = np.int64(1) << 62
    rlo = np.empty((nz, ny, nc), np.int64)
    rhi = np.empty((nz, ny, nc), np.int64)
    for k in range(nz):
        for j in range(ny):
            for c in range(nc):
                lo = big
                hi = np.int64(0)
                for i in range(c * run, min(c * run + run, nx)):
                    v = np.int64(labels[k, j, i])
                    hi = max(hi, v)
                    lo = min(lo, v if v != 0 else big)
                rlo[k, j, c] = lo
                rhi[k, j, c] = hi
    marks = []
    for k in range(nz):
        for j in range(ny):
            for c in range(nc):
                if rhi[k, j, c] == 0:
                    continue
                lo = big
                hi = np.int64(0)
                for kk in range(max(k - 1, 0), min(k + 2, nz)):
                    for jj in range(max(j - 1, 0), min(j + 2, ny)):
                        for cc in range(max(c - 1, 0), min(c + 2, nc)):
                            lo = min(lo, rlo[kk, jj, cc])
                            hi = max(hi, rhi[kk, jj, cc])
                if lo == hi:
                    continue
                for i in range(c * run, min(c * run + run, nx)):
                    a = labels[k, j, i]
                    if a == 0:
                        continue
                    h = hu[k, j, i]
                    done = False
                    for dk in range(-1, 2):
                        kk = k + dk
                        if kk < 0 or kk >= nz or done:
                            continue
                        for dj in range(-1, 2):
                            jj = j + dj
                            if jj < 0 or jj >= ny or done:
                                continue
                            for di in range(-1, 2):
                                ii = i + di
                                if ii < 0 or ii >= nx:
                                    continue
                                b = labels[kk, jj, ii]
                                if b == 0 or b == a:
                                    continue
                                g = hu[kk, jj, ii]
                                if h < g or (h == g and a < b):
                                    marks.append((k, j, i))
                                    done = True
                                    break
    # cleared after the scan: every decision reads the labels as they were
    for m in marks:
        labels[m[0], m[1], m[2]] = 0
    return len(marks)


@njit(cache=True)
def flood(markers, level, mask):
    """Marker watershed by priority flood on integer levels: voxels of higher ``level`` are flooded
    first (pass a distance map quantised to ``level`` and the borders settle at its saddles, the
    narrow necks). ``markers`` (int32, 0 = unlabelled) is filled in place within ``mask``,
    6-connected; returns it."""
    nz, ny, nx = markers.shape
    n = markers.size
    flat = markers.ravel()
    lev = level.ravel()
    m = mask.ravel()
    top = 0
    for p in range(n):
        if m[p] and lev[p] > top:
            top = lev[p]
    nxt = np.full(n, -1, np.int32)
    head = np.full(top + 1, -1, np.int64)
    tail = np.full(top + 1, -1, np.int64)
    for p in range(n):
        if flat[p] > 0 and m[p]:
            lv = lev[p]
            if tail[lv] < 0:
                head[lv] = p
            else:
                nxt[tail[lv]] = p
            tail[lv] = p
    sz = ny * nx
    cur = top
    while cur >= 0:
        while head[cur] >= 0:
            p = head[cur]
            head[cur] = nxt[p]
            if head[cur] < 0:
                tail[cur] = -1
            lab = flat[p]
            k = p // sz
            r = p - k * sz
            j = r // nx
            i = r - j * nx
            for q in (p - sz if k > 0 else -1, p + sz if k < nz - 1 else -1, p - nx if j > 0 else -1,
                      p + nx if j < ny - 1 else -1, p - 1 if i > 0 else -1, p + 1 if i < nx - 1 else -1):
                if q < 0 or flat[q] != 0 or not m[q]:
                    continue
                flat[q] = lab
                lv = lev[q]
                if lv > cur:
                    lv = cur
                nxt[q] = -1
                if tail[lv] < 0:
                    head[lv] = q
                else:
                    nxt[tail[lv]] = q
                tail[lv] = q
        cur -= 1
    return markers


@njit(cache=True)
def parent_of(child, parent, nchild):
    """For each label of ``child`` the label of ``parent`` at one of its voxels (0 if absent)."""
    out = np.zeros(nchild + 1, np.int64)
    c = child.ravel()
    p = parent.ravel()
    for i in range(c.size):
        if c[i] > 0 and out[c[i]] == 0:
            out[c[i]] = p[i]
    return out


@njit(cache=True)
def relabel_split(seeds, comp, split, newlab):
    """Seeds listed in ``split`` (bool per seed label) take the label ``newlab[comp]`` (0 outside
    their big children); other seeds stay. In place."""
    s = seeds.ravel()
    c = comp.ravel()
    for i in range(s.size):
        a = s[i]
        if a > 0 and split[a]:
            s[i] = newlab[c[i]]
    return seeds


@njit(cache=True, inline="always")
def _slice_box(mask, k):
    """Rows and columns (first and last) of the true voxels of slice ``k``; (n1, -1, n2, -1) when
    there are none."""
    n1, n2 = mask.shape[1], mask.shape[2]
    jl, jh, il, ih = n1, -1, n2, -1
    for j in range(n1):
        for i in range(n2):
            if mask[k, j, i]:
                if j < jl:
                    jl = j
                jh = j
                if i < il:
                    il = i
                if i > ih:
                    ih = i
    return jl, jh, il, ih


@njit(cache=True, inline="always")
def _flood_outside(mask, k, seen, queue, jl, jh, il, ih):
    """Set ``seen`` on the background of slice ``k`` (``~mask``) that is 4-connected to the edge of
    the box ``jl..jh`` x ``il..ih`` (``seen`` cleared in the box first; ``queue`` a scratch array of
    at least the box's size): what stays unseen in the box are the slice's holes."""
    n2 = mask.shape[2]
    seen[jl:jh + 1, il:ih + 1] = False
    tail = 0
    for j in range(jl, jh + 1):
        step = 1 if j == jl or j == jh else ih - il   # the first and last rows whole, else both ends
        for i in range(il, ih + 1, step):
            if not mask[k, j, i] and not seen[j, i]:
                seen[j, i] = True
                queue[tail] = j * n2 + i
                tail += 1
    head = 0
    while head < tail:
        q = queue[head]
        head += 1
        j = q // n2
        i = q - j * n2
        for d in range(4):
            jj = j + (d == 0) - (d == 1)
            ii = i + (d == 2) - (d == 3)
            if jj < jl or jj > jh or ii < il or ii > ih:
                continue
            if not mask[k, jj, ii] and not seen[jj, ii]:
                seen[jj, ii] = True
                queue[tail] = jj * n2 + ii
                tail += 1


@njit(cache=True)
def slice_holes(closed, hu, other, px, pore, max_area, marrow_hu, all_marrow, add, every):
    """Fill marrow holes slice by slice (slices along axis 0; pass ``np.moveaxis`` views for the
    other planes). In each slice the background (``~closed``) is labelled with 4-connectivity;
    a component that touches no slice edge and holds no voxel of ``other`` is set in ``add`` when
    its area (``count * px``) is below ``pore``, or its mean HU is at least ``marrow_hu`` (or
    ``all_marrow``) and its area at most ``max_area``. The mean HU is taken away from the hole's
    rim (voxels 4-adjacent to ``closed``, partial volume of the bone around it) when any such
    voxel exists. Every component that touches no slice edge (a hole, whatever it holds) is set
    in ``every``. Returns the number of holes filled."""
    n0, n1, n2 = closed.shape
    seen = np.zeros((n1, n2), np.bool_)
    queue = np.empty(n1 * n2, np.int64)
    filled = 0
    for k in range(n0):
        # only the bounding box of the slice's closed voxels: background outside it reaches the
        # slice edge, so a component touching the box edge is a border component
        jl, jh, il, ih = _slice_box(closed, k)
        if jh - jl < 2 or ih - il < 2:
            continue
        # the background that reaches the box's edge (the outside) first, with no statistics: what
        # stays unseen then are the holes
        _flood_outside(closed, k, seen, queue, jl, jh, il, ih)
        for j0 in range(jl, jh + 1):
            for i0 in range(il, ih + 1):
                if closed[k, j0, i0] or seen[j0, i0]:
                    continue
                seen[j0, i0] = True
                queue[0] = j0 * n2 + i0
                head = 0
                tail = 1
                border = False
                bad = False
                cnt_in = 0
                hs = 0.0
                hs_in = 0.0
                while head < tail:
                    q = queue[head]
                    head += 1
                    j = q // n2
                    i = q - j * n2
                    v = float(hu[k, j, i])
                    hs += v
                    if other[k, j, i]:
                        bad = True
                    if j == jl or i == il or j == jh or i == ih:
                        border = True
                    rim = False
                    for d in range(4):
                        jj = j + (d == 0) - (d == 1)
                        ii = i + (d == 2) - (d == 3)
                        if jj < jl or jj > jh or ii < il or ii > ih:
                            continue
                        if closed[k, jj, ii]:
                            rim = True
                        elif not seen[jj, ii]:
                            seen[jj, ii] = True
                            queue[tail] = jj * n2 + ii
                            tail += 1
                    if not rim:
                        cnt_in += 1
                        hs_in += v
                if border:
                    continue
                for t in range(tail):
                    q = queue[t]
                    j = q // n2
                    every[k, j, q - j * n2] = True
                if bad:
                    continue
                area = tail * px
                mean = hs_in / cnt_in if cnt_in > 0 else hs / tail
                if area < pore or ((all_marrow or mean >= marrow_hu) and area <= max_area):
                    filled += 1
                    for t in range(tail):
                        q = queue[t]
                        j = q // n2
                        add[k, j, q - j * n2] = True
    return filled


@njit(cache=True)
def clear_near_other(labels, new, lab):
    """Clear ``new`` wherever a 26-neighbour (or the voxel itself) carries a label other than 0
    and ``lab``: voxels added to part ``lab`` never touch another part. In place; returns the
    number of voxels kept."""
    nz, ny, nx = labels.shape
    kept = 0
    for k in range(nz):
        for j in range(ny):
            for i in range(nx):
                if not new[k, j, i]:
                    continue
                hit = False
                for dk in range(-1, 2):
                    kk = k + dk
                    if kk < 0 or kk >= nz or hit:
                        continue
                    for dj in range(-1, 2):
                        jj = j + dj
                        if jj < 0 or jj >= ny or hit:
                            continue
                        for di in range(-1, 2):
                            ii = i + di
                            if ii < 0 or ii >= nx:
                                continue
                            b = labels[kk, jj, ii]
                            if b != 0 and b != lab:
                                hit = True
                                break
                if hit:
                    new[k, j, i] = False
                else:
                    kept += 1
    return kept


@njit(cache=True, inline="always")
def _sym3_min_eig(a, b, c, d, e, f):
    """Eigenvalues of the symmetric matrix [[a, d, e], [d, b, f], [e, f, c]], ascending, and the
    unit eigenvector of the smallest (closed form: trigonometric roots, then the largest cross
    product of two rows of ``H - l1 I``)."""
    p1 = d * d + e * e + f * f
    q = (a + b + c) / 3.0
    p2 = (a - q) ** 2 + (b - q) ** 2 + (c - q) ** 2 + 2.0 * p1
    p = np.sqrt(p2 / 6.0)
    if p < 1e-12:
        return q, q, q, 0.0, 0.0, 1.0
    ba = (a - q) / p
    bb = (b - q) / p
    bc = (c - q) / p
    bd = d / p
    be = e / p
    bf = f / p
    r = (ba * (bb * bc - bf * bf) - bd * (bd * bc - bf * be) + be * (bd * bf - bb * be)) / 2.0
    if r <= -1.0:
        phi = np.pi / 3.0
    elif r >= 1.0:
        phi = 0.0
    else:
        phi = np.arccos(r) / 3.0
    l3 = q + 2.0 * p * np.cos(phi)
    l1 = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    l2 = 3.0 * q - l1 - l3
    # eigenvector of l1: the rows of H - l1 I are orthogonal to it
    r0x, r0y, r0z = a - l1, d, e
    r1x, r1y, r1z = d, b - l1, f
    r2x, r2y, r2z = e, f, c - l1
    best = -1.0
    vx = 0.0
    vy = 0.0
    vz = 1.0
    for t in range(3):
        if t == 0:
            cx, cy, cz = r0y * r1z - r0z * r1y, r0z * r1x - r0x * r1z, r0x * r1y - r0y * r1x
        elif t == 1:
            cx, cy, cz = r0y * r2z - r0z * r2y, r0z * r2x - r0x * r2z, r0x * r2y - r0y * r2x
        else:
            cx, cy, cz = r1y * r2z - r1z * r2y, r1z * r2x - r1x * r2z, r1x * r2y - r1y * r2x
        n2 = cx * cx + cy * cy + cz * cz
        if n2 > best:
            best = n2
            vx, vy, vz = cx, cy, cz
    nrm = np.sqrt(best)
    if nrm > 0:
        vx /= nrm
        vy /= nrm
        vz /= nrm
    return l1, l2, l3, vx, vy, vz


@njit(cache=True, parallel=True)
def bright_sheets(sm, cand, sz, sy, sx, half_depth_mm, min_depth, max_ratio):
    """Flag the candidate voxels that lie on the crest of a thin bright plate of ``sm`` (a smoothed
    HU volume with voxel spacing ``sz, sy, sx`` mm).

    At each voxel the Hessian (central differences) gives the plate normal: the eigenvector of the
    most negative eigenvalue ``l1``. A voxel is on a plate's crest when (a) the plate stands out:
    its depth over ``half_depth_mm`` either side, ``-l1 * half_depth_mm**2 / 2``, reaches
    ``min_depth`` HU; (b) it is a plate, not a rod or a blob: ``|l2| <= max_ratio * |l1|``; (c) the
    crest lies within half a voxel along the normal (Newton step ``-g.n / l1``). Returns uint8.
    """
    nz, ny, nx = sm.shape
    out = np.zeros((nz, ny, nx), np.uint8)
    for k in prange(1, nz - 1):
        for j in range(1, ny - 1):
            for i in range(1, nx - 1):
                if not cand[k, j, i]:
                    continue
                c0 = sm[k, j, i]
                a = (sm[k + 1, j, i] - 2.0 * c0 + sm[k - 1, j, i]) / (sz * sz)
                b = (sm[k, j + 1, i] - 2.0 * c0 + sm[k, j - 1, i]) / (sy * sy)
                c = (sm[k, j, i + 1] - 2.0 * c0 + sm[k, j, i - 1]) / (sx * sx)
                d = (sm[k + 1, j + 1, i] - sm[k + 1, j - 1, i] - sm[k - 1, j + 1, i] + sm[k - 1, j - 1, i]) / (4.0 * sz * sy)
                e = (sm[k + 1, j, i + 1] - sm[k + 1, j, i - 1] - sm[k - 1, j, i + 1] + sm[k - 1, j, i - 1]) / (4.0 * sz * sx)
                f = (sm[k, j + 1, i + 1] - sm[k, j + 1, i - 1] - sm[k, j - 1, i + 1] + sm[k, j - 1, i - 1]) / (4.0 * sy * sx)
                l1, l2, l3, vz, vy, vx = _sym3_min_eig(a, b, c, d, e, f)
                if l1 >= 0.0:
                    continue
                if -l1 * half_depth_mm * half_depth_mm * 0.5 < min_depth:
                    continue
                if abs(l2) > max_ratio * (-l1) or abs(l3) > max_ratio * (-l1):
                    continue
                gz = (sm[k + 1, j, i] - sm[k - 1, j, i]) / (2.0 * sz)
                gy = (sm[k, j + 1, i] - sm[k, j - 1, i]) / (2.0 * sy)
                gx = (sm[k, j, i + 1] - sm[k, j, i - 1]) / (2.0 * sx)
                step = -(gz * vz + gy * vy + gx * vx) / l1
                reach = 0.5 * (abs(vz) * sz + abs(vy) * sy + abs(vx) * sx)
                if abs(step) <= reach:
                    out[k, j, i] = 1
    return out


@njit(cache=True)
def ball_closing(mask, wz, wy, wx, r2, out):
    """Binary closing of ``mask`` with the ball ``d2 <= r2`` (``d2`` the squared distance in mm^2),
    into ``out`` (bool, same shape): a dilation (voxels beyond the border are not ``mask``) and an
    erosion (voxels beyond the border are outside), then ``mask`` added.

    ``wz``, ``wy``, ``wx`` (float32) are the squared lengths ``(t * spacing)**2`` of the offsets
    ``t = 0, 1, ...`` along each axis, as far as any ``<= r2``. Each squared distance is the
    minimum of ``(wx + wy) + wz`` over the offsets within those windows (float32), one separable
    min-plus pass per axis; offsets beyond the windows exceed ``r2`` and change no decision.
    """
    nz, ny, nx = mask.shape
    rz, ry, rx = len(wz) - 1, len(wy) - 1, len(wx) - 1
    inf = np.float32(np.inf)
    g = np.empty((nz, ny, nx), np.float32)
    left = np.empty(nx, np.int64)
    for stage in range(2):
        border = stage == 1
        # x: the nearest seed along each row (two sweeps), as its squared length
        for k in range(nz):
            for j in range(ny):
                last = -1 if border else -(1 << 40)
                for i in range(nx):
                    s = mask[k, j, i] if stage == 0 else not out[k, j, i]
                    if s:
                        last = i
                    left[i] = i - last
                nxt = nx if border else (1 << 40)
                for i in range(nx - 1, -1, -1):
                    s = mask[k, j, i] if stage == 0 else not out[k, j, i]
                    if s:
                        nxt = i
                    d = left[i]
                    if nxt - i < d:
                        d = nxt - i
                    g[k, j, i] = wx[d] if d <= rx else inf
        # y: min-plus over the window, slice by slice
        if ry > 0:
            for k in range(nz):
                buf = g[k].copy()
                for j in range(ny):
                    row = g[k, j]
                    for t in range(-ry, ry + 1):
                        if t == 0:
                            continue
                        w = wy[abs(t)]
                        jj = j + t
                        if 0 <= jj < ny:
                            src = buf[jj]
                            for i in range(nx):
                                v = src[i] + w
                                if v < row[i]:
                                    row[i] = v
                        elif border:
                            for i in range(nx):
                                if w < row[i]:
                                    row[i] = w
        # z: min-plus over the window, row plane by row plane; then the threshold
        for j in range(ny):
            buf = g[:, j, :].copy()
            row = np.empty(nx, np.float32)
            for k in range(nz):
                for i in range(nx):
                    row[i] = buf[k, i]
                for t in range(-rz, rz + 1):
                    if t == 0:
                        continue
                    w = wz[abs(t)]
                    kk = k + t
                    if 0 <= kk < nz:
                        for i in range(nx):
                            v = buf[kk, i] + w
                            if v < row[i]:
                                row[i] = v
                    elif border:
                        for i in range(nx):
                            if w < row[i]:
                                row[i] = w
                if stage == 0:
                    for i in range(nx):
                        out[k, j, i] = row[i] <= r2
                else:
                    for i in range(nx):
                        out[k, j, i] = row[i] > r2 or mask[k, j, i]
    return out


@njit(cache=True)
def label_counts(a, n):
    """``np.bincount(a.ravel(), minlength=n)`` without widening ``a`` to int64 first (any unsigned
    integer array; values must be below ``n``)."""
    out = np.zeros(n, np.int64)
    f = a.ravel()
    # zeros (most voxels) are not counted one by one: a run of equal values makes every increment
    # wait for the previous one
    for p in range(f.size):
        v = f[p]
        if v != 0:
            out[v] += 1
    tot = 0
    for v in range(1, n):
        tot += out[v]
    if n > 0:
        out[0] = f.size - tot
    return out


@njit(cache=True)
def lut_mask(a, lut):
    """``lut[a]`` (``lut`` a bool table indexed by the labels of ``a``) without an int64 copy of ``a``."""
    nz, ny, nx = a.shape
    out = np.empty((nz, ny, nx), np.bool_)
    for k in range(nz):
        for j in range(ny):
            for i in range(nx):
                out[k, j, i] = lut[a[k, j, i]]
    return out


@njit(cache=True)
def hu_window(hu, low, high, body, out):
    """``out = (hu >= low) & (hu <= high) & body`` in one pass; returns the number of voxels in the
    window outside ``body``. ``high`` may be above the int16 range (no upper bound)."""
    nz, ny, nx = hu.shape
    outside = 0
    for k in range(nz):
        c = 0
        for j in range(ny):
            for i in range(nx):
                v = hu[k, j, i]
                w = v >= low and v <= high
                b = body[k, j, i]
                if w and not b:
                    c += 1
                out[k, j, i] = w and b
        outside += c
    return outside


@njit(cache=True)
def distance_levels(dist, scale, cap):
    """``min(dist * scale, cap)`` truncated to uint16, in float32 as numpy computes it."""
    nz, ny, nx = dist.shape
    out = np.empty((nz, ny, nx), np.uint16)
    s = np.float32(scale)
    c = np.float32(cap)
    for k in range(nz):
        for j in range(ny):
            for i in range(nx):
                v = dist[k, j, i] * s
                if v > c:
                    v = c
                out[k, j, i] = np.uint16(v)
    return out


@njit(cache=True)
def erode_cross(mask, iterations, border, inplane=False):
    """``mask`` eroded ``iterations`` times by the 6-neighbour cross (what
    ``scipy.ndimage.binary_erosion(mask, generate_binary_structure(3, 1), iterations)`` gives;
    ``inplane``: the 4-neighbour cross of each slice, that structure with its first and last
    planes cleared); voxels beyond the border count as ``border``. With ``border=True`` on ``~m``,
    its complement is ``binary_dilation(m, cross, iterations)``."""
    nz, ny, nx = mask.shape
    cur = mask.copy()
    nxt = np.empty((nz, ny, nx), np.bool_)
    for it in range(iterations):
        for k in range(nz):
            for j in range(ny):
                for i in range(nx):
                    v = cur[k, j, i]
                    if v and not inplane:
                        if k > 0:
                            v = cur[k - 1, j, i]
                        else:
                            v = border
                        if v:
                            v = cur[k + 1, j, i] if k < nz - 1 else border
                    if v:
                        v = cur[k, j - 1, i] if j > 0 else border
                    if v:
                        v = cur[k, j + 1, i] if j < ny - 1 else border
                    if v:
                        v = cur[k, j, i - 1] if i > 0 else border
                    if v:
                        v = cur[k, j, i + 1] if i < nx - 1 else border
                    nxt[k, j, i] = v
        cur, nxt = nxt, cur
    return cur


@njit(cache=True)
def label_boxes(labels, n):
    """Per label 1..n the index box of its voxels as rows (k0, j0, i0, k1, j1, i1), ``[k0, k1)``
    etc.; a label without voxels has k0 = -1."""
    nz, ny, nx = labels.shape
    box = np.empty((n + 1, 6), np.int64)
    box[:, 0:3] = 1 << 40
    box[:, 3:6] = -1
    for k in range(nz):
        for j in range(ny):
            for i in range(nx):
                v = labels[k, j, i]
                if v == 0 or v > n:
                    continue
                b = box[v]
                if k < b[0]:
                    b[0] = k
                if j < b[1]:
                    b[1] = j
                if i < b[2]:
                    b[2] = i
                if k >= b[3]:
                    b[3] = k + 1
                if j >= b[4]:
                    b[4] = j + 1
                if i >= b[5]:
                    b[5] = i + 1
    for v in range(n + 1):
        if box[v, 3] < 0:
            box[v, 0] = -1
    return box[1:]


@njit(cache=True)
def fill_holes_slices(mask):
    """Each axial slice of ``mask`` with its holes filled: the background not 4-connected to the
    slice's edge is set (``scipy.ndimage.binary_fill_holes`` of every ``mask[k]``)."""
    n0, n1, n2 = mask.shape
    out = mask.copy()
    reach = np.zeros((n1, n2), np.bool_)
    queue = np.empty(n1 * n2, np.int64)
    for k in range(n0):
        # the box of the slice's mask: the background outside it reaches the edge
        jl, jh, il, ih = _slice_box(mask, k)
        if jh - jl < 2 or ih - il < 2:
            continue
        _flood_outside(mask, k, reach, queue, jl, jh, il, ih)
        for j in range(jl + 1, jh):
            for i in range(il + 1, ih):
                if not reach[j, i]:
                    out[k, j, i] = True
    return out
