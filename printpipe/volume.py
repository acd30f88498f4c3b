"""`Volume`: a CT image on a regular grid in the DICOM patient frame (LPS, millimetres).

Conventions (used by every stage):

* ``hu`` is int16 Hounsfield units indexed ``(z, y, x)`` = (slice, row, column).
* ``spacing`` is ``(dz, dy, dx)`` in mm, in the same order as the array axes.
* ``origin`` is the patient-frame position (x, y, z in LPS mm) of the centre of voxel ``hu[0, 0, 0]``.
* ``direction`` is a 3x3 matrix whose *columns* are the patient-frame unit vectors of the array axes
  in the order (column index, row index, slice index), that is array axes (2, 1, 0) -- the ITK
  convention. Column 0 is DICOM's row direction (IOP[0:3]), column 1 the column direction (IOP[3:6]),
  column 2 the slice normal pointing towards increasing slice index.

A point at fractional array index ``(k, j, i)`` (z, y, x order) lies at
``origin + direction @ [i*dx, j*dy, k*dz]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from printpipe.errors import InputError

__all__ = ["Volume"]


@dataclass(frozen=True, eq=False)
class Volume:
    """A CT volume in Hounsfield units on a regular, orthogonal grid.

    Parameters
    ----------
    hu : (nz, ny, nx) int16 ndarray
        Hounsfield units.
    spacing : (3,) float
        ``(dz, dy, dx)`` in millimetres.
    origin : (3,) float
        Patient-frame (LPS) position in mm of the centre of voxel ``[0, 0, 0]``.
    direction : (3, 3) float
        Columns are the patient-frame unit vectors of array axes (x, y, z) = (2, 1, 0).
    meta : mapping
        Non-identifying metadata only (modality, manufacturer, kernel, hashed UIDs, corrections made).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        hu = np.asarray(self.hu)
        if hu.ndim != 3:
            raise InputError(f"Volume.hu must be 3-D (z, y, x); got shape {hu.shape}")
        if hu.dtype != np.int16:
            raise InputError(f"Volume.hu must be int16 HU; got {hu.dtype}. Convert with np.clip(..).astype(np.int16)")
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise InputError(f"Volume.spacing must be three positive mm values (dz, dy, dx); got {self.spacing}")
        origin = tuple(float(o) for o in self.origin)
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise InputError("Volume.direction must be orthonormal (columns are unit axis vectors)")
        object.__setattr__(self, "hu", hu)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "meta", dict(self.meta))

    # -- geometry ---------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous array indices ``(k, j, i, 1)`` (z, y, x) to LPS mm."""
        dz, dy, dx = self.spacing
        a = np.eye(4)
        # column for index k (z) is direction[:, 2] * dz, for j is direction[:, 1]*dy, for i direction[:, 0]*dx
        a[:3, 0] = self.direction[:, 2] * dz
        a[:3, 1] = self.direction[:, 1] * dy
        a[:3, 2] = self.direction[:, 0] * dx
        a[:3, 3] = self.origin
        return a

    def index_to_patient(self, kji: np.ndarray) -> np.ndarray:
        """Map ``(n, 3)`` fractional indices in (z, y, x) order to ``(n, 3)`` LPS mm (x, y, z)."""
        kji = np.asarray(kji, dtype=float).reshape(-1, 3)
        a = self.affine
        return kji @ a[:3, :3].T + a[:3, 3]

    def mm_to_patient(self, zyx_mm: np.ndarray) -> np.ndarray:
        """Map ``(n, 3)`` grid millimetres in (z, y, x) order (index * spacing) to LPS mm (x, y, z)."""
        zyx_mm = np.asarray(zyx_mm, dtype=float).reshape(-1, 3)
        rot = np.stack([self.direction[:, 2], self.direction[:, 1], self.direction[:, 0]], axis=1)
        return zyx_mm @ rot.T + np.asarray(self.origin)

    def patient_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`index_to_patient`: LPS mm (n, 3) to fractional (z, y, x) indices."""
        xyz = np.asarray(xyz, dtype=float).reshape(-1, 3)
        a = np.linalg.inv(self.affine)
        return xyz @ a[:3, :3].T + a[:3, 3]

    @property
    def handedness(self) -> float:
        """+1 when the (z, y, x)-mm -> patient map preserves orientation, -1 when it mirrors.

        Meshes built in (z, y, x) grid millimetres must have their face winding flipped when this is -1.
        """
        rot = np.stack([self.direction[:, 2], self.direction[:, 1], self.direction[:, 0]], axis=1)
        return float(np.sign(np.linalg.det(rot)))

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size (z, y, x) in mm, centre of first to centre of last voxel."""
        return tuple((n - 1) * s for n, s in zip(self.shape, self.spacing))  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        return int(self.hu.nbytes)

    def crop(self, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> "Volume":
        """Sub-volume ``hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]`` with the origin moved to match."""
        lo = tuple(max(0, int(v)) for v in lo)
        hi = tuple(min(n, int(v)) for v, n in zip(hi, self.shape))
        if any(h <= l for l, h in zip(lo, hi)):
            raise InputError(f"crop box {lo}..{hi} is empty for a volume of shape {self.shape}")
        new_origin = self.index_to_patient(np.array(lo, dtype=float))[0]
        meta = dict(self.meta)
        meta["crop_index_lo"] = list(lo)
        return Volume(
            hu=np.ascontiguousarray(self.hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]),
            spacing=self.spacing,
            origin=tuple(new_origin),
            direction=self.direction,
            meta=meta,
        )

    def __repr__(self) -> str:
        return (f"Volume(shape={self.shape}, spacing={tuple(round(s, 4) for s in self.spacing)} mm, "
                f"origin={tuple(round(o, 2) for o in self.origin)})")
