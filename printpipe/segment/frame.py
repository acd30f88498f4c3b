"""The patient frame: every step works on a volume whose array axes point superior (k), posterior
(j) and to the patient's left (i), whatever the scanner wrote.

A feet-first, prone or decubitus series, or one stored with reversed rows or slices, is turned
(a transpose and flips of the array, no resampling) so that "above", "behind" and "left" are the
same index directions for every scan; the labels are turned back at the end. Oblique grids
(gantry tilt already resampled by the reader, or a rotated acquisition) are turned to the nearest
such axes; the steps use the affine for millimetres anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from printpipe.volume import Volume


@dataclass(frozen=True)
class Reorient:
    """How the original array maps to the canonical one: ``perm`` (new axis -> old axis) and
    ``flip`` (per new axis)."""

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    shape: tuple[int, int, int]  # original shape

    @property
    def identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flip)

    def forward(self, a: np.ndarray) -> np.ndarray:
        if self.identity:
            return a
        b = np.transpose(a, self.perm)
        b = b[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]
        return np.ascontiguousarray(b)

    def backward(self, b: np.ndarray) -> np.ndarray:
        if self.identity:
            return b
        b = b[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]
        inv = np.argsort(self.perm)
        return np.ascontiguousarray(np.transpose(b, inv))

    def box_back(self, lo: list[int], hi: list[int]) -> tuple[list[int], list[int]]:
        """A canonical index box [lo, hi) as a box of the original array."""
        olo, ohi = [0, 0, 0], [0, 0, 0]
        for n in range(3):
            o = self.perm[n]
            size = self.shape[o]
            if self.flip[n]:
                olo[o], ohi[o] = size - hi[n], size - lo[n]
            else:
                olo[o], ohi[o] = lo[n], hi[n]
        return olo, ohi


def canonical(vol: Volume) -> tuple[Volume, Reorient]:
    """``vol`` with array axes (k, j, i) along patient (+z superior, +y posterior, +x left)."""
    a = vol.affine[:3, :3]
    dom = [int(np.argmax(np.abs(a[:, ax]))) for ax in range(3)]  # patient axis of each array axis
    if sorted(dom) != [0, 1, 2]:
        return vol, Reorient((0, 1, 2), (False, False, False), vol.shape)
    # new axis 0 <- the array axis along patient z, 1 <- along y, 2 <- along x
    perm = tuple(dom.index(p) for p in (2, 1, 0))
    flip = tuple(bool(a[p, perm[n]] < 0) for n, p in enumerate((2, 1, 0)))
    ro = Reorient(perm, flip, vol.shape)
    if ro.identity:
        return vol, ro
    hu = ro.forward(vol.hu)
    # the original index of the canonical voxel (0, 0, 0)
    first = [0, 0, 0]
    for n in range(3):
        if flip[n]:
            first[perm[n]] = vol.shape[perm[n]] - 1
    origin = vol.index_to_patient(np.array(first, dtype=float))[0]
    cols = []  # patient vectors of the new axes k, j, i (unit)
    for n in range(3):
        v = a[:, perm[n]] / np.linalg.norm(a[:, perm[n]])
        cols.append(-v if flip[n] else v)
    spacing = tuple(float(vol.spacing[perm[n]]) for n in range(3))
    direction = np.stack([cols[2], cols[1], cols[0]], axis=1)  # columns: i (x), j (y), k (z)
    meta = dict(vol.meta)
    meta["reoriented"] = {"perm": list(perm), "flip": list(flip)}
    return Volume(hu=hu, spacing=spacing, origin=tuple(origin), direction=direction, meta=meta), ro
