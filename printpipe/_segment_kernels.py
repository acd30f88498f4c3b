"""numba kernels of the segmentation stage: arithmetic on arrays only (no I/O, no validation)."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["valley_points", "neighbour_dirs"]


def neighbour_dirs() -> np.ndarray:
    """The 13 directions of a 26-neighbourhood, one per opposite pair, as (13, 3) int64 (dz, dy, dx)."""
    out = []
    for dk in (-1, 0, 1):
        for dj in (-1, 0, 1):
            for di in (-1, 0, 1):
                if (dk, dj, di) > (0, 0, 0):
                    out.append((dk, dj, di))
    return np.array(out, dtype=np.int64)


@njit(cache=True)
def valley_points(hu, points, dirs, steps, bright, delta):
    """For each (z, y, x) point flag whether it sits in a thin dark gap between bright bone.

    A point is in a gap when, along at least one of the directions, both the forward and the
    backward ray reach a voxel of at least ``max(hu[p] + delta, bright)`` HU within ``steps[d]``
    voxels: that is the profile across a joint space (subchondral plate, cartilage, plate).
    """
    nz, ny, nx = hu.shape
    n = points.shape[0]
    out = np.zeros(n, dtype=np.bool_)
    for p in range(n):
        k = points[p, 0]
        j = points[p, 1]
        i = points[p, 2]
        h = hu[k, j, i]
        need = h + delta
        if need < bright:
            need = bright
        for d in range(dirs.shape[0]):
            dk = dirs[d, 0]
            dj = dirs[d, 1]
            di = dirs[d, 2]
            fwd = False
            for s in range(1, steps[d] + 1):
                kk = k + dk * s
                jj = j + dj * s
                ii = i + di * s
                if kk < 0 or kk >= nz or jj < 0 or jj >= ny or ii < 0 or ii >= nx:
                    break
                if hu[kk, jj, ii] >= need:
                    fwd = True
                    break
            if not fwd:
                continue
            bwd = False
            for s in range(1, steps[d] + 1):
                kk = k - dk * s
                jj = j - dj * s
                ii = i - di * s
                if kk < 0 or kk >= nz or jj < 0 or jj >= ny or ii < 0 or ii >= nx:
                    break
                if hu[kk, jj, ii] >= need:
                    bwd = True
                    break
            if bwd:
                out[p] = True
                break
    return out
