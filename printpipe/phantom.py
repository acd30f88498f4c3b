"""A synthetic pelvis CT phantom with ground-truth labels, and a DICOM series writer.

The phantom is defined in millimetres, so any grid samples the same body: a pelvis-like set of
bones (two hemipelves, a sacrum, two proximal femurs) inside an elliptical body with a subcutaneous
fat layer, lying on a curved CT couch, with realistic Hounsfield units, partial-volume edges and
Gaussian noise. It exists so that every stage (DICOM ingest, segmentation, joint separation, naming,
mirroring) can be tested against a known answer without patient data.

Geometry (DICOM LPS, identity direction): array axes ``(z, y, x)``; +x is the patient's LEFT, +y
posterior, +z superior; slice index increases superiorly, row index posteriorly, column index to the
patient's left, as in a head-first-supine axial series. The mid-sagittal plane of the anatomy is
``x = Phantom.midline_x_mm`` (0 unless ``midline_x_mm`` is given); the CT couch stays centred on the
scanner axis ``x = 0``.

Ground-truth labels (``Phantom.labels``, uint8; ``Phantom.names`` maps value to name):

=====  ==============  ==========================================================================
value  name            what
=====  ==============  ==========================================================================
0      (background)    air, fat, soft tissue, gas
1      ``hip_left``    left hemipelvis: ilium, acetabulum, ischium, pubic rami (patient's left, +x)
2      ``hip_right``   right hemipelvis; ``hip_left`` + ``hip_right`` form the ``pelvis``
3      ``sacrum``      sacrum (midline, posterior), with a sacral canal
4      ``femur_left``  left proximal femur: head, neck, trochanters, shaft with marrow canal
5      ``femur_right`` right proximal femur
6      ``table``       the CT couch (carbon-fibre-like shell that thresholds as bone, foam core)
=====  ==============  ==========================================================================

Optional labels (:data:`EXTRA_LABELS`): 7 ``bowel``, 8 ``arm``, and 9 ``implant``: the metal of a
total hip prosthesis (``prosthesis="left"`` or ``"right"``): femoral head, trunnion and stem, and the
acetabular cup (``"both"``: one on each side). Metal is not bone: the ``implant`` voxels belong to no bone label, and the femur of
that side is the bone left after the neck osteotomy. The polyethylene liner between head and cup
(about -80 HU) is plastic and stays background (0).

A label holds the voxels whose centre lies inside the solid (cortex, trabecular core and marrow
canal included). The femoral heads sit in the acetabular cups with a joint space of
``hip_joint_mm`` (soft tissue) everywhere, so femur and hip labels are never 6-adjacent when
``hip_joint_mm`` is at least the largest voxel spacing. The sacrum is separated from each ilium by
``si_joint_mm`` except at ``si_bridges`` small bony bridges per side (as in degenerate joints), whose
voxels belong to the nearer bone. The two hemipelves meet at the pubic symphysis with a gap of
``symphysis_mm``.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from printpipe._atomic import atomic_path
from printpipe.errors import InputError
from printpipe.volume import Volume

log = logging.getLogger(__name__)

__all__ = [
    "EXTRA_LABELS",
    "LABELS",
    "SAMPLE_KWARGS",
    "VARIANTS",
    "Phantom",
    "pelvis_phantom",
    "sample_phantom",
    "variant_phantom",
    "write_dicom_series",
]

#: label value -> part name (see the module docstring).
LABELS: dict[int, str] = {
    1: "hip_left",
    2: "hip_right",
    3: "sacrum",
    4: "femur_left",
    5: "femur_right",
    6: "table",
}
_L = {name: value for value, name in LABELS.items()}

#: labels of the optional non-pelvic structures (present in ``Phantom.names`` only when made):
#: 7 ``bowel`` (contrast-filled bowel loops, ``bowel=True``), 8 ``arm`` (arm bones, ``arms=True``),
#: 9 ``implant`` (the metal of a hip prosthesis, ``prosthesis=...``).
EXTRA_LABELS: dict[int, str] = {7: "bowel", 8: "arm", 9: "implant"}
_L.update({name: value for value, name in EXTRA_LABELS.items()})

#: Phantom variants for segmentation tests (keyword arguments of :func:`pelvis_phantom`, on grids
#: coarse enough to segment in a few seconds): see :func:`variant_phantom`. The fine-slice variants
#: cover z -78..130 mm (the ischial tuberosities and lesser trochanters to the iliac crests).
VARIANTS: dict[str, dict[str, Any]] = {
    # feet-first supine: IOP (-1,0,0, 0,1,0), slices from head to feet; LPS anatomy unchanged
    "feet_first": dict(shape=(112, 192, 192), spacing=(2.5, 2.0, 2.0), patient_position="FFS",
                       hip_joint_mm=3.0, si_joint_mm=3.0),
    # 0.7 mm slices over the pelvis (2.5 mm pixels keep the grid small)
    "thin_slices": dict(shape=(298, 160, 160), spacing=(0.7, 2.4, 2.4), z_center_mm=26.0,
                        hip_joint_mm=2.5, si_joint_mm=2.5),
    # 1.5 mm hip and SI joints, 1.5 mm symphysis, 1.2 mm at the top of the hip dome, on 1.25 mm voxels
    # (a 360 mm field: the whole body and the couch)
    "narrow_joints": dict(shape=(168, 288, 288), spacing=(1.25, 1.25, 1.25), z_center_mm=26.0,
                          hip_joint_mm=1.5, hip_joint_min_mm=1.2, si_joint_mm=1.5, symphysis_mm=1.5),
    # contrast-filled bowel in front of the sacrum (3 mm from it) and a coated loop in the false pelvis
    "bowel": dict(shape=(112, 192, 192), spacing=(2.5, 2.0, 2.0), bowel=True, bowel_gap_mm=3.0,
                  hip_joint_mm=3.0, si_joint_mm=3.0),
    # the same with the sacral loop touching the sacrum
    "bowel_touching": dict(shape=(112, 192, 192), spacing=(2.5, 2.0, 2.0), bowel=True, bowel_gap_mm=0.0,
                           hip_joint_mm=3.0, si_joint_mm=3.0),
    # arms down beside the pelvis (humerus above, radius and ulna below the elbow); a 560 mm field
    "arms": dict(shape=(112, 160, 280), spacing=(2.5, 2.0, 2.0), arms=True, hip_joint_mm=3.0,
                 si_joint_mm=3.0),
    # a metal total hip prosthesis on the right (28 mm head, 50 mm cup, stem; clipped at 3071 HU)
    # with streak artefacts of +-250 HU radiating from the metal
    "metal_hip": dict(shape=(112, 192, 192), spacing=(2.5, 2.0, 2.0), prosthesis="right",
                      hip_joint_mm=3.0, si_joint_mm=3.0),
    # pelvis (and femurs) turned 10 degrees about x (pelvic tilt) and 12 degrees about z (rotation)
    "tilted": dict(shape=(112, 192, 192), spacing=(2.5, 2.0, 2.0), tilt_deg=(10.0, 12.0),
                   hip_joint_mm=3.0, si_joint_mm=3.0),
}

#: The parameters ``scripts/make_sample_dicom.py`` uses for ``sample_dicom/``: 2 mm pixels, 2.5 mm
#: slices (384 mm field of view, 280 mm long), joint spaces widened to 3 mm so that they stay wider
#: than one voxel, and the anatomy 6 mm to the patient's left of the scanner axis.
SAMPLE_KWARGS: dict[str, Any] = dict(
    shape=(112, 192, 192),
    spacing=(2.5, 2.0, 2.0),
    seed=20240601,
    noise_hu=15.0,
    table=True,
    midline_x_mm=6.0,
    hip_joint_mm=3.0,
    si_joint_mm=3.0,
)

# -- HU of the materials -----------------------------------------------------------------------
_AIR = -1000.0
_FAT = -100.0
_SOFT = 40.0
_GAS = -950.0
_CORTEX = 1400.0
_MARROW = 20.0          # fatty/red marrow of the femoral canal
_TABLE_SHELL = 650.0    # carbon-fibre shell: above a 226 HU bone threshold on purpose
_TABLE_CORE = -880.0    # foam core
_HU_MIN, _HU_MAX = -1024, 3071

_FAR = np.float32(1e4)  # "far outside" for fields not evaluated in a region
_PAD = 12.0             # mm: primitives are evaluated this far beyond their bounding box
_CHUNK = 16             # slices per processing chunk (fixed: the noise stream depends on it)

# Anatomy frame: X = x_lps - midline_x, Y = y_lps - _BODY_Y, Z = z_lps (mm).
_BODY_Y = -25.0         # body centre in LPS y: leaves room for the couch below (posterior)
_BODY_A, _BODY_B = 170.0, 115.0   # trunk half-width (x) and half-depth (y): 340 x 230 mm
_FAT_MM = 18.0
_TABLE_GAP = 5.0        # air between the skin and the couch at the midline, mm
_CONTRAST_GAS = -900.0  # gas in the lumen of a contrast-coated bowel loop
_BOWEL_R = 9.0          # outer radius of a bowel loop, mm (a 18 mm sigmoid)
_BOWEL_WALL = 3.0       # contrast coating of the hollow loop, mm
_ARM_R = 45.0           # soft-tissue radius of an arm, mm
_ARM_X = _BODY_A + 8.0 + _ARM_R   # arm axis: 8 mm of air beside the trunk


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic CT volume with ground-truth labels.

    Attributes
    ----------
    volume : Volume
        int16 HU, LPS geometry (identity direction).
    labels : (nz, ny, nx) uint8 ndarray
        Ground truth, values as in :data:`LABELS`; 0 is background.
    names : dict[int, str]
        Label value -> part name.
    midline_x_mm : float
        LPS x (mm) of the anatomy's mid-sagittal (symmetry) plane.
    params : dict
        The arguments the phantom was made with.
    """

    volume: Volume
    labels: np.ndarray
    names: dict[int, str]
    midline_x_mm: float
    params: dict[str, Any] = field(default_factory=dict)

    def mask(self, *names: str) -> np.ndarray:
        """Boolean mask of the union of the named labels (``"pelvis"`` means both hemipelves)."""
        wanted: set[int] = set()
        lut = {n: v for v, n in self.names.items()}
        for name in names:
            if name == "pelvis":
                wanted |= {_L["hip_left"], _L["hip_right"]}
            elif name in lut:
                wanted.add(lut[name])
            else:
                raise InputError(f"unknown phantom label {name!r}; use one of {sorted(lut)} or 'pelvis'")
        return np.isin(self.labels, sorted(wanted))

    def label_volumes_mm3(self) -> dict[str, float]:
        """Volume in mm^3 of each label (voxel count times voxel volume)."""
        counts = np.bincount(self.labels.ravel(), minlength=max(LABELS) + 1)
        vox = float(np.prod(self.volume.spacing))
        return {name: float(counts[value]) * vox for value, name in LABELS.items()}


# -- signed-distance primitives (local frame, mm; arguments broadcast) -------------------------
def _ellipsoid(c, r):
    # python floats throughout: a numpy float64 scalar would promote the float32 grids to float64
    cx, cy, cz = map(float, c)
    rx, ry, rz = map(float, r)

    def fn(Z, Y, X):
        # Inigo Quilez's bound: exact on the surface, a fair distance estimate near it.
        ux, uy, uz = (X - cx) / rx, (Y - cy) / ry, (Z - cz) / rz
        k0 = np.sqrt(ux * ux + uy * uy + uz * uz)
        k1 = np.sqrt((ux / rx) ** 2 + (uy / ry) ** 2 + (uz / rz) ** 2)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)

    lo = (cz - rz, cy - ry, cx - rx)
    hi = (cz + rz, cy + ry, cx + rx)
    return fn, lo, hi


def _capsule(a, b, r):
    ax, ay, az = map(float, a)
    bx, by, bz = map(float, b)
    r = float(r)
    dx, dy, dz = bx - ax, by - ay, bz - az
    dd = dx * dx + dy * dy + dz * dz

    def fn(Z, Y, X):
        px, py, pz = X - ax, Y - ay, Z - az
        if dd == 0.0:   # a sphere
            return np.sqrt(px * px + py * py + pz * pz) - r
        h = np.clip((px * dx + py * dy + pz * dz) / dd, 0.0, 1.0)
        return np.sqrt((px - h * dx) ** 2 + (py - h * dy) ** 2 + (pz - h * dz) ** 2) - r

    lo = (min(az, bz) - r, min(ay, by) - r, min(ax, bx) - r)
    hi = (max(az, bz) + r, max(ay, by) + r, max(ax, bx) + r)
    return fn, lo, hi


def _ellipse2(x, y, a, b):
    """Approximate signed distance to an axis-aligned ellipse (half-axes a, b may be arrays)."""
    ux, uy = x / a, y / b
    k0 = np.sqrt(ux * ux + uy * uy)
    k1 = np.sqrt((ux / a) ** 2 + (uy / b) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _smin(a, b, k):
    """Polynomial smooth minimum (blend radius k mm); plain minimum where |a-b| >= k."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * (k * 0.25)


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# Iliac wing: a curved plate around a vertical axis at (52, -22) (local, left side), concave medially.
_WING_C = (52.0, -22.0)
_WING_Z = (14.0, 124.0)


def _wing():
    cx, cy = _WING_C
    zb, zt = _WING_Z

    def fn(Z, Y, X):
        s = np.clip((Z - 15.0) / 105.0, 0.0, 1.0)
        R = 48.0 + 22.0 * s
        thmin = np.deg2rad(15.0) - np.deg2rad(32.0) * np.clip((Z - 15.0) / 55.0, 0.0, 1.0)
        thmax = np.float32(np.deg2rad(115.0))
        th = np.arctan2(Y - cy, X - cx)
        thc = np.clip(th, thmin, thmax)
        ex, ey = cx + R * np.cos(thc), cy + R * np.sin(thc)
        d = np.sqrt((X - ex) ** 2 + (Y - ey) ** 2)
        t = 5.0 + 20.0 * _smoothstep((thc - 1.2) / 0.8)
        d = d - 0.5 * t
        top = 96.0 + 26.0 * np.sin(np.pi * np.clip((thc + 0.3) / 2.3, 0.0, 1.0))
        return np.maximum(d, np.maximum(Z - top, zb - Z))

    return fn, (zb, cy - 25.0, 0.0), (zt, cy + 85.0, cx + 85.0)


# Sacrum: a tapered, curved wedge; cross-section an ellipse varying with height.
_SAC_Z = (-32.0, 96.0)


def _sac_u(Z):
    return np.clip((Z - _SAC_Z[0]) / (_SAC_Z[1] - _SAC_Z[0]), 0.0, 1.0)


def _sac_shape(u):
    hw = 13.0 + 41.0 * u ** 1.2
    hd = 9.0 + 16.0 * u
    yc = 48.0 + 16.0 * np.sin(np.pi * u) - 6.0 * u
    return hw, hd, yc


def _sacrum():
    zb, zt = _SAC_Z

    def fn(Z, Y, X):
        hw, hd, yc = _sac_shape(_sac_u(Z))
        d = _ellipse2(X, Y - yc, hw, hd)
        return np.maximum(d, np.maximum(Z - zt, zb - Z))

    return fn, (zb, 30.0, -56.0), (zt, 80.0, 56.0)


def _halfspace(c, n, lo, hi):
    """Signed distance to the plane through c with outward normal n (inside is n.(p-c) < 0)."""
    norm = math.sqrt(sum(float(v) ** 2 for v in n))
    nx, ny, nz = (float(v) / norm for v in n)
    cx, cy, cz = map(float, c)

    def fn(Z, Y, X):
        return (X - cx) * nx + (Y - cy) * ny + (Z - cz) * nz

    return fn, lo, hi


class _Side:
    """Maps a primitive from the local left-side frame into the anatomy frame (mirrored, scaled)."""

    def __init__(self, sign: int, scale: float):
        self.sign, self.scale = sign, scale

    def __call__(self, prim):
        fn, lo, hi = prim
        s, g = self.scale, self.sign
        if g > 0:
            xlo, xhi = lo[2] * s, hi[2] * s
        else:
            xlo, xhi = -hi[2] * s, -lo[2] * s
        glo = (lo[0] * s, lo[1] * s, xlo)
        ghi = (hi[0] * s, hi[1] * s, xhi)
        if g > 0 and s == 1.0:
            return fn, glo, ghi
        inv = 1.0 / s

        def gfn(Z, Y, X):
            return fn(Z * inv, Y * inv, X * (g * inv)) * s

        return gfn, glo, ghi


class _Field:
    """A signed-distance field over a box of the grid, built by (smooth) unions of primitives.

    With ``rot`` (a 3x3 rotation acting on (x, y, z) column vectors) the primitives are given in a
    local frame that the rotation carries into the grid's frame about the origin (the midpoint of the
    femoral heads): a grid point ``p`` is evaluated at ``rot.T @ p``. A rotation preserves distances,
    so the fields stay signed distances.
    """

    def __init__(self, zc: np.ndarray, yc: np.ndarray, xc: np.ndarray, rot: np.ndarray | None = None):
        self.zc, self.yc, self.xc = zc, yc, xc
        self.rot = None if rot is None else np.asarray(rot, dtype=np.float64)
        self.d = np.full((zc.size, yc.size, xc.size), _FAR, np.float32)
        self.box: list[list[int]] | None = None   # index box holding every finite value

    def _grow(self, sl) -> None:
        if self.box is None:
            self.box = [[s.start for s in sl], [s.stop for s in sl]]
        else:
            self.box = [[min(a, s.start) for a, s in zip(self.box[0], sl)],
                        [max(b, s.stop) for b, s in zip(self.box[1], sl)]]

    @property
    def finite(self):
        """Slices of the box holding every finite value (None when the field is empty)."""
        if self.box is None:
            return None
        return tuple(slice(a, b) for a, b in zip(*self.box))

    def _sub(self, lo, hi):
        if self.rot is not None:     # the grid-frame box around the rotated local box
            lo, hi = np.maximum(np.asarray(lo, float), -1e6), np.minimum(np.asarray(hi, float), 1e6)
            corners = np.array([[x, y, z] for z in (lo[0], hi[0]) for y in (lo[1], hi[1])
                                for x in (lo[2], hi[2])])
            world = corners @ self.rot.T
            lo = (world[:, 2].min(), world[:, 1].min(), world[:, 0].min())
            hi = (world[:, 2].max(), world[:, 1].max(), world[:, 0].max())
        sl = []
        for c, l, h in zip((self.zc, self.yc, self.xc), lo, hi):
            i0 = int(np.searchsorted(c, l - _PAD, "left"))
            i1 = int(np.searchsorted(c, h + _PAD, "right"))
            if i1 <= i0:
                return None
            sl.append(slice(i0, i1))
        return tuple(sl)

    def _coords(self, sl):
        Z, Y, X = (self.zc[sl[0]][:, None, None], self.yc[sl[1]][None, :, None],
                   self.xc[sl[2]][None, None, :])
        if self.rot is None:
            return Z, Y, X
        r = self.rot.astype(np.float32)
        # local = rot.T @ world: row i of rot.T is column i of rot
        Xl = r[0, 0] * X + r[1, 0] * Y + r[2, 0] * Z
        Yl = r[0, 1] * X + r[1, 1] * Y + r[2, 1] * Z
        Zl = r[0, 2] * X + r[1, 2] * Y + r[2, 2] * Z
        return Zl, Yl, Xl

    def union(self, prim, k: float = 0.0) -> None:
        fn, lo, hi = prim
        sl = self._sub(lo, hi)
        if sl is None:
            return
        view = self.d[sl]
        view[...] = _smin(view, fn(*self._coords(sl)).astype(np.float32, copy=False), k)
        self._grow(sl)

    def intersect(self, prim) -> None:
        """Keep only the inside of ``prim`` (evaluated where this field is finite)."""
        fn, _, _ = prim
        sl = self.finite
        if sl is None:
            return
        view = self.d[sl]
        np.maximum(view, fn(*self._coords(sl)).astype(np.float32, copy=False), out=view)

    def subtract(self, other: "_Field", offset: float = 0.0) -> None:
        """Remove ``other`` dilated by ``offset`` mm (a gap of ``offset`` mm between the two)."""
        sl = self.finite
        if sl is None or other.box is None:
            return
        # only where both fields are finite can the result change
        sl = tuple(slice(max(a.start, b), min(a.stop, c)) for a, b, c in zip(sl, *other.box))
        if any(s.stop <= s.start for s in sl):
            return
        view = self.d[sl]
        np.maximum(view, np.float32(offset) - other.d[sl], out=view)


# -- the anatomy ------------------------------------------------------------------------------
_HEAD_C = (88.0, -5.0, 0.0)     # left femoral head centre (local frame)
_HEAD_R = 23.0
_NECK_DIR = np.array([0.74, 0.2, -0.64]) / np.linalg.norm([0.74, 0.2, -0.64])


def _femur(f: _Field, side: _Side) -> None:
    hc = np.array(_HEAD_C)
    neck_end = hc + 48.0 * _NECK_DIR
    f.union(side(_capsule(hc, hc, _HEAD_R)))
    f.union(side(_capsule(hc + 8.0 * _NECK_DIR, neck_end, 14.0)), k=8.0)
    f.union(side(_ellipsoid((132.0, 8.0, -30.0), (13.0, 17.0, 22.0))), k=10.0)
    f.union(side(_capsule((125.0, 8.0, -36.0), (108.0, 10.0, -430.0), 14.0)), k=12.0)
    f.union(side(_ellipsoid((112.0, 19.0, -64.0), (9.0, 9.0, 11.0))), k=6.0)


def _femur_canal(f: _Field, side: _Side) -> None:
    f.union(side(_capsule((122.5, 8.5, -85.0), (108.0, 10.0, -430.0), 8.5)))


def _hip(f: _Field, side: _Side, symphysis_mm: float) -> None:
    hc = np.array(_HEAD_C)
    # acetabular body, opened laterally-anteriorly-inferiorly to form the cup
    body = _Field(f.zc, f.yc, f.xc, f.rot)
    body.union(side(_ellipsoid((84.0, 0.0, 4.0), (30.0, 34.0, 40.0))))
    n_open = (0.70, -0.25, -0.67)
    body.intersect(side(_halfspace(hc, n_open, (-1e9,) * 3, (1e9,) * 3)))
    if body.box is not None:
        sl = body.finite
        np.minimum(f.d[sl], body.d[sl], out=f.d[sl])
        f._grow(sl)
    f.union(side(_wing()), k=10.0)
    f.union(side(_ellipsoid((57.0, 62.0, 55.0), (16.0, 22.0, 38.0))), k=10.0)       # posterior ilium
    f.union(side(_ellipsoid((66.0, 14.0, 28.0), (20.0, 26.0, 26.0))), k=10.0)       # ilium body
    f.union(side(_capsule((80.0, 22.0, -8.0), (62.0, 24.0, -58.0), 13.0)), k=8.0)   # ischium
    f.union(side(_ellipsoid((60.0, 24.0, -62.0), (14.0, 16.0, 12.0))), k=8.0)      # tuberosity
    f.union(side(_capsule((58.0, 14.0, -66.0), (9.0, -66.0, -46.0), 7.0)), k=6.0)   # inferior ramus
    f.union(side(_capsule((72.0, -28.0, -6.0), (9.0, -76.0, -24.0), 9.0)), k=6.0)  # superior ramus
    f.union(side(_capsule((10.0, -74.0, -20.0), (10.0, -70.0, -48.0), 9.0)), k=6.0)  # symphyseal body
    # the symphysis: each side stops symphysis_mm / 2 from the mid-sagittal plane
    f.intersect(side(_halfspace((0.5 * symphysis_mm, 0.0, 0.0), (-1.0, 0.0, 0.0), (-1e9,) * 3, (1e9,) * 3)))


def _sacrum_field(f: _Field) -> None:
    f.union(_sacrum())
    # sacral canal: a soft-tissue tube in the posterior third, from the top to mid-sacrum
    u0, u1 = 1.0, 0.45
    hw0, hd0, yc0 = _sac_shape(u0)
    hw1, hd1, yc1 = _sac_shape(u1)
    z0 = _SAC_Z[0] + u0 * (_SAC_Z[1] - _SAC_Z[0]) + 10.0
    z1 = _SAC_Z[0] + u1 * (_SAC_Z[1] - _SAC_Z[0])
    canal = _Field(f.zc, f.yc, f.xc, f.rot)
    canal.union(_capsule((0.0, yc0 + 0.35 * hd0, z0), (0.0, yc1 + 0.3 * hd1, z1), 7.0))
    f.subtract(canal, 0.0)


def _si_bridge_centres(n: int) -> list[tuple[float, float, float]]:
    """Local (left) centres of the SI-joint bridges: on the sacrum's lateral surface."""
    out = []
    for z in np.linspace(30.0, 80.0, n) if n > 1 else ([55.0] if n == 1 else []):
        hw, hd, yc = _sac_shape(_sac_u(np.float64(z)))
        out.append((float(hw), float(yc), float(z)))
    return out


def _carve_hip_joint(hp: _Field, fe: _Field, side: _Side, gap: float, gap_min: float | None) -> None:
    """Keep the hip ``gap`` mm from the femur; narrower (down to ``gap_min``) over the dome."""
    if gap_min is None or gap_min >= gap:
        hp.subtract(fe, gap)
        return
    s = side.scale
    cx, cy, cz = side.sign * _HEAD_C[0] * s, _HEAD_C[1] * s, _HEAD_C[2] * s
    r = (_HEAD_R + gap) * s
    sl = hp._sub((cz - r, cy - r, cx - r), (cz + r, cy + r, cx + r))
    keep = hp.d[sl].copy() if sl is not None else None
    hp.subtract(fe, gap)
    if sl is None:
        return
    Z, Y, X = hp._coords(sl)
    dzc = Z - np.float32(cz)
    cos_up = dzc / np.maximum(np.sqrt((X - np.float32(cx)) ** 2 + (Y - np.float32(cy)) ** 2 + dzc ** 2), 1e-3)
    g = gap - (gap - gap_min) * _smoothstep((cos_up - 0.3) / 0.6)
    hp.d[sl] = np.maximum(keep, (g - fe.d[sl]).astype(np.float32))


def _trabecular(zc, yc, xc, rng_waves, base: float, amp: float) -> np.ndarray:
    """Smooth random trabecular HU: a sum of separable cosine waves (wavelengths 12-35 mm)."""
    acc = None
    for kx, ky, kz, px, py, pz in rng_waves:
        w = (np.cos(kz * zc + pz)[:, None, None] * np.cos(ky * yc + py)[None, :, None]
             * np.cos(kx * xc + px)[None, None, :])
        acc = w if acc is None else acc + w
    acc *= np.float32(2.0 / math.sqrt(len(rng_waves)))
    return np.float32(base) + np.float32(amp) * acc


def _axis(n: int, d: float, o: float) -> np.ndarray:
    return (o + d * np.arange(n)).astype(np.float32)


def pelvis_phantom(
    shape: tuple[int, int, int] = (400, 512, 512),
    spacing: tuple[float, float, float] | None = None,
    seed: int = 0,
    noise_hu: float = 15.0,
    table: bool = True,
    *,
    midline_x_mm: float = 0.0,
    z_center_mm: float = -10.0,
    hip_joint_mm: float = 2.0,
    hip_joint_min_mm: float | None = None,
    si_joint_mm: float = 2.5,
    symphysis_mm: float = 4.0,
    si_bridges: int = 2,
    asymmetry: float = 0.015,
    cortex_mm: float = 2.0,
    blur_mm: float | None = None,
    patient_position: str = "HFS",
    tilt_deg: tuple[float, float] = (0.0, 0.0),
    bowel: bool = False,
    bowel_gap_mm: float = 3.0,
    bowel_hu: float = 450.0,
    arms: bool = False,
    prosthesis: str | None = None,
    prosthesis_head_mm: float = 28.0,
    prosthesis_offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    prosthesis_liner: str = "polyethylene",
    streak_hu: float = 250.0,
) -> Phantom:
    """Make the synthetic pelvis CT and its ground-truth labels.

    Parameters
    ----------
    shape : (nz, ny, nx)
        Grid size. The default is the 512 x 512 x 400 benchmark volume.
    spacing : (dz, dy, dx) mm, optional
        Voxel size. Default: a 400 mm field of view in each axis (0.78 mm pixels and 1 mm slices
        for the default shape). The anatomy is in millimetres, so any grid samples the same body;
        the field of view should hold the body (about 340 x 300 mm with the couch).
    seed : int
        Seeds the noise and the trabecular texture; the same arguments give the same volume.
    noise_hu : float
        Standard deviation of the Gaussian noise in HU (0 for none).
    table : bool
        Include the CT couch below the body.
    midline_x_mm : float
        LPS x of the anatomy's mid-sagittal plane (the couch stays at x = 0).
    z_center_mm : float
        LPS z of the grid centre; the femoral-head centres are at z = 0, the iliac crests near +122
        and the sacral tip near -32.
    hip_joint_mm, si_joint_mm, symphysis_mm : float
        Joint spaces (soft tissue) between femoral head and acetabulum, sacrum and ilium, and the two
        pubic bones. Keep ``hip_joint_mm`` at least the largest spacing so the labels stay apart.
    hip_joint_min_mm : float, optional
        Narrow the hip joint space smoothly from ``hip_joint_mm`` at the cup's equator to this value at
        the top of the dome (the weight-bearing zone, where real joint spaces are narrowest). About
        1.1 mm at 0.8 mm pixels / 1 mm slices makes a 226 HU threshold weld head and cup through
        partial volume while the labels stay one voxel apart. Default: a uniform joint space.
    si_bridges : int
        Small bony bridges across each sacroiliac joint (0 for a fully open joint).
    asymmetry : float
        The right side is the left side mirrored and scaled by ``1 + asymmetry``.
    cortex_mm : float
        Cortical shell thickness.
    blur_mm : float, optional
        Width of the linear partial-volume ramp at every edge; default 1.1 times the mean spacing
        (a box filter of one voxel plus a mild blur of about half a voxel).
    patient_position : {"HFS", "FFS"}
        ``"FFS"`` (feet first supine) stores the same body as a feet-first scanner does: the arrays
        flipped along x and z, direction ``diag(-1, 1, -1)`` (ImageOrientationPatient ``-1, 0, 0, 0, 1, 0``,
        slices running from head to feet) and ``meta["patient_position"] = "FFS"``, so the anatomy stays
        where it is in LPS: the patient's left is +x whatever the image axes.
    tilt_deg : (about_x, about_z)
        Turn the bones (and the bowel) about the point ``(midline_x_mm, -25, 0)`` LPS mm (on the
        mid-sagittal plane at the height of the femoral-head centres, 5 mm behind them): first about
        the patient's x axis (pelvic tilt), then about z (axial rotation), in degrees (at most 30).
        The body outline, the arms and the couch stay put.
    bowel : bool
        Add two contrast-filled bowel loops (label ``bowel``): a U-shaped loop filled with contrast of
        ``bowel_hu`` in front of the sacrum, ``bowel_gap_mm`` from its anterior surface (0 touches
        it), and a hollow loop (a ``3`` mm contrast coating around gas) in the false pelvis. Both are
        18 mm tubes, bright as bone but tubular and not part of the skeleton.
    bowel_gap_mm : float
        Soft tissue between the sacral loop and the sacrum (0..20 mm).
    bowel_hu : float
        HU of the bowel contrast (300..1000).
    arms : bool
        Add both arms hanging beside the body (label ``arm``): soft-tissue cylinders of radius 45 mm
        8 mm beside the trunk, each with a humerus above the elbow (z > 60 mm) and a radius and an ulna
        below it. The field of view must be about 560 mm wide to hold them.
    prosthesis : {"left", "right", "both"} or None
        Replace that hip (or both) by a metal total hip prosthesis (label ``implant``): the femoral neck cut
        28 mm from the head's centre, a metal head of ``prosthesis_head_mm`` on a trunnion and a
        stem down the femoral canal to 180 mm below the head, and a hemispherical metal cup
        (a 3 mm shell, 50 mm outer diameter or 14 mm more than the head's, opening like the acetabulum) pressed into the reamed
        acetabulum, with a polyethylene liner (-80 HU) between cup and head. Metal is 3071 HU, the
        scanner's clip (the true CT number of cobalt-chrome or titanium lies far above it).
        Scaled with its side, like the bones.
    prosthesis_head_mm : float
        Diameter of the metal head (22-40 mm: the bearings in use).
    prosthesis_offset_mm : (x, y, z)
        The head (with its trunnion) moved by this much (mm, the side's local frame) from the cup's
        centre: a worn liner, a subluxed or (far enough out of the opening) a dislocated hip; 0 is
        concentric.
    prosthesis_liner : {"polyethylene", "ceramic"}
        The liner between head and cup: polyethylene (-80 HU, background) or ceramic (as bright as
        the metal, label ``implant``: head, liner and cup read as one piece).
    streak_hu : float
        Amplitude (HU) of the streak artefacts around the metal: in every axial slice holding metal,
        16 alternating bright and dark bands radiate from it, decaying over 40 mm (0 for none).

    Returns
    -------
    Phantom

    Examples
    --------
    >>> ph = pelvis_phantom(shape=(48, 64, 64), seed=1)
    >>> ph.volume.hu.dtype, ph.labels.shape, ph.names[1]
    (dtype('int16'), (48, 64, 64), 'hip_left')
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 2:
        raise InputError(f"phantom shape must be three sizes >= 2 (nz, ny, nx); got {shape}")
    if spacing is None:
        spacing = tuple(400.0 / n for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"phantom spacing must be three positive mm values (dz, dy, dx); got {spacing}")
    for name, val in (("hip_joint_mm", hip_joint_mm), ("si_joint_mm", si_joint_mm),
                      ("symphysis_mm", symphysis_mm), ("cortex_mm", cortex_mm)):
        if not (math.isfinite(val) and val > 0):
            raise InputError(f"{name} must be a positive number of mm; got {val}")
    if hip_joint_min_mm is not None and not (0 < hip_joint_min_mm <= hip_joint_mm):
        raise InputError(f"hip_joint_min_mm must be in (0, hip_joint_mm={hip_joint_mm}]; got {hip_joint_min_mm}")
    if noise_hu < 0 or not math.isfinite(noise_hu):
        raise InputError(f"noise_hu must be >= 0; got {noise_hu}")
    if not (0.0 <= asymmetry < 0.2):
        raise InputError(f"asymmetry must be in [0, 0.2); got {asymmetry}")
    patient_position = str(patient_position).upper()
    if patient_position not in ("HFS", "FFS"):
        raise InputError(f"patient_position must be 'HFS' or 'FFS'; got {patient_position!r}")
    tilt_deg = tuple(float(a) for a in tilt_deg)
    if len(tilt_deg) != 2 or not all(math.isfinite(a) and abs(a) <= 30.0 for a in tilt_deg):
        raise InputError(f"tilt_deg must be two angles (about x, about z) of at most 30 degrees; got {tilt_deg}")
    if not (0.0 <= bowel_gap_mm <= 20.0):
        raise InputError(f"bowel_gap_mm must be in [0, 20] mm; got {bowel_gap_mm}")
    if not (300.0 <= bowel_hu <= 1000.0):
        raise InputError(f"bowel_hu must be a contrast HU in [300, 1000]; got {bowel_hu}")
    if prosthesis is not None and prosthesis not in ("left", "right", "both"):
        raise InputError(f"prosthesis must be 'left', 'right', 'both' or None; got {prosthesis!r}")
    if not (22.0 <= prosthesis_head_mm <= 40.0):
        raise InputError(f"prosthesis_head_mm must be a bearing diameter in [22, 40] mm; got {prosthesis_head_mm}")
    prosthesis_offset_mm = tuple(float(v) for v in prosthesis_offset_mm)
    if len(prosthesis_offset_mm) != 3 or not all(math.isfinite(v) and abs(v) <= 60.0 for v in prosthesis_offset_mm):
        raise InputError(f"prosthesis_offset_mm must be three shifts of at most 60 mm; got {prosthesis_offset_mm}")
    if prosthesis_liner not in ("polyethylene", "ceramic"):
        raise InputError(f"prosthesis_liner must be 'polyethylene' or 'ceramic'; got {prosthesis_liner!r}")
    if not (math.isfinite(streak_hu) and 0.0 <= streak_hu <= 1000.0):
        raise InputError(f"streak_hu must be in [0, 1000] HU; got {streak_hu}")
    params = dict(shape=shape, spacing=spacing, seed=seed, noise_hu=noise_hu, table=table,
                  midline_x_mm=midline_x_mm, z_center_mm=z_center_mm, hip_joint_mm=hip_joint_mm,
                  hip_joint_min_mm=hip_joint_min_mm,
                  si_joint_mm=si_joint_mm, symphysis_mm=symphysis_mm, si_bridges=si_bridges,
                  asymmetry=asymmetry, cortex_mm=cortex_mm, blur_mm=blur_mm,
                  patient_position=patient_position, tilt_deg=tilt_deg, bowel=bool(bowel),
                  bowel_gap_mm=bowel_gap_mm, bowel_hu=bowel_hu, arms=bool(arms))
    if prosthesis is not None:   # recorded only when made: the other phantoms' params stay as they were
        params.update(prosthesis=prosthesis, prosthesis_head_mm=float(prosthesis_head_mm),
                      prosthesis_offset_mm=prosthesis_offset_mm, prosthesis_liner=prosthesis_liner,
                      streak_hu=float(streak_hu))

    nz, ny, nx = shape
    dz, dy, dx = spacing
    narrowest = hip_joint_min_mm if hip_joint_min_mm is not None else hip_joint_mm
    if max(dy, dx, dz) > narrowest:
        log.warning("hip joint space %.2f mm is narrower than the largest spacing %.2f mm: femur and "
                    "hip labels may touch", narrowest, max(spacing))
    origin = (-(nx - 1) * dx / 2.0, -(ny - 1) * dy / 2.0, z_center_mm - (nz - 1) * dz / 2.0)
    fov_x = (origin[0], origin[0] + (nx - 1) * dx)
    if fov_x[0] > midline_x_mm - 150 or fov_x[1] < midline_x_mm + 150:
        log.warning("phantom field of view x %.0f..%.0f mm cuts the pelvis (needs midline +-150 mm)", *fov_x)
    w = float(blur_mm) if blur_mm is not None else 1.1 * float(np.mean(spacing))
    inv_w = np.float32(1.0 / w)

    # axis coordinates: anatomy frame for the body and bones, LPS for the couch
    ax_x = _axis(nx, dx, origin[0] - midline_x_mm)
    ax_y = _axis(ny, dy, origin[1] - _BODY_Y)
    ax_z = _axis(nz, dz, origin[2])
    lps_x = _axis(nx, dx, origin[0])

    rng = np.random.default_rng(seed)
    waves = []
    for _ in range(6):
        lam = rng.uniform(12.0, 35.0, size=3)
        waves.append((*(2 * np.pi / lam).astype(np.float32), *rng.uniform(0, 2 * np.pi, size=3).astype(np.float32)))
    noise_rng = np.random.default_rng([seed, 1])

    left, right = _Side(+1, 1.0), _Side(-1, 1.0 + asymmetry)

    def ramp(d, off=0.0):
        # partial-volume fraction inside the surface d = off (linear over w mm)
        return np.clip(np.float32(0.5) - (d - np.float32(off)) * inv_w, 0.0, 1.0)

    # -- 2-D body and couch slices ----------------------------------------------------------------
    Yb, Xb = ax_y[:, None], ax_x[None, :]
    trunk = _ellipse2(Xb, Yb, _BODY_A, _BODY_B).astype(np.float32)
    thighs = np.minimum(_ellipse2(Xb - 95.0, Yb - 5.0, 78.0, 92.0),
                        _ellipse2(Xb + 95.0 * right.scale, Yb - 5.0, 78.0 * right.scale, 92.0 * right.scale)
                        ).astype(np.float32)
    if arms:   # two vertical soft-tissue cylinders beside the trunk, in every slice
        arm_sdf = np.minimum(np.hypot(Xb - _ARM_X, Yb) - _ARM_R,
                             np.hypot(Xb + _ARM_X, Yb) - _ARM_R).astype(np.float32)
        trunk = np.minimum(trunk, arm_sdf)
        thighs = np.minimum(thighs, arm_sdf)
    table_hu = table_a = None
    table_mask = None
    if table:
        ty = _BODY_B + _TABLE_GAP + _BODY_Y          # LPS y of the couch top at its centre
        X = lps_x[None, :]
        Y = (ax_y + _BODY_Y)[:, None]
        mid = ty + 20.0 - X * X / (2.0 * 800.0)      # mid-surface, curving up towards the patient
        tsdf = np.maximum(np.abs(Y - mid) - 20.0, np.abs(X) - 180.0).astype(np.float32)
        table_a = ramp(tsdf)
        table_hu = _TABLE_SHELL + ramp(tsdf, -3.0) * (_TABLE_CORE - _TABLE_SHELL)
        table_mask = tsdf < 0

    def body_slice(zval: float) -> np.ndarray:
        s = float(_smoothstep((-60.0 - zval) / 60.0))
        if s <= 0.0:
            return trunk
        if s >= 1.0:
            return thighs
        return (1.0 - s) * trunk + s * thighs

    cache: dict[float, np.ndarray] = {}

    def base_slice(zval: float) -> np.ndarray:
        bs = body_slice(zval)
        key = id(bs) if bs is trunk or bs is thighs else None
        if key is not None and key in cache:
            return cache[key]
        inner = _FAT + ramp(bs, -_FAT_MM) * (_SOFT - _FAT)
        hu = _AIR + ramp(bs) * (inner - _AIR)
        if table:
            hu = hu + table_a * (table_hu - hu)
        hu = hu.astype(np.float32)
        if key is not None:
            cache[key] = hu
        return hu

    hu_out = np.empty(shape, np.int16)
    lab_out = np.zeros(shape, np.uint8)

    gas = [_ellipsoid((0.0, 30.0, -5.0), (14.0, 11.0, 25.0)),      # rectum
           _ellipsoid((-45.0, -45.0, 105.0), (22.0, 14.0, 12.0)),  # bowel gas
           _ellipsoid((38.0, -60.0, 130.0), (16.0, 12.0, 10.0))]
    bridges = _si_bridge_centres(si_bridges)
    t = float(cortex_mm)
    rot = _rotation(*tilt_deg)

    for k0 in range(0, nz, _CHUNK):
        k1 = min(nz, k0 + _CHUNK)
        zc = ax_z[k0:k1]
        slab = np.empty((k1 - k0, ny, nx), np.float32)
        for i, zval in enumerate(zc):
            slab[i] = base_slice(float(zval))
        lab = lab_out[k0:k1]
        if table:
            lab[:, table_mask] = _L["table"]

        # gas pockets inside the body
        g = _Field(zc, ax_y, ax_x)
        for prim in gas:
            g.union(prim)
        sl = g.finite
        if sl is not None:
            sub = slab[sl]
            sub += ramp(g.d[sl]) * (_GAS - sub)

        if bowel:
            _add_bowel(slab, lab, zc, ax_y, ax_x, rot, bowel_gap_mm, bowel_hu, ramp)

        # bones: build the fields over the whole chunk (each primitive only on its own box)
        sac = _Field(zc, ax_y, ax_x, rot)
        _sacrum_field(sac)
        fems, hips, implants = [], [], []
        for side in (left, right):
            fe = _Field(zc, ax_y, ax_x, rot)
            _femur(fe, side)
            hp = _Field(zc, ax_y, ax_x, rot)
            _hip(hp, side, symphysis_mm)
            if prosthesis in ("both", "left" if side is left else "right"):
                # before the joint is carved: the cup, not the natural head, shapes the acetabulum
                implants.append((_prosthesis(zc, ax_y, ax_x, rot, side, fe, hp, prosthesis_head_mm,
                                             prosthesis_offset_mm), side.sign))
            _carve_hip_joint(hp, fe, side, hip_joint_mm, hip_joint_min_mm)
            hp.subtract(sac, si_joint_mm)
            # bridges across the SI joint: a sphere spanning the gap, given to the nearer bone
            r_b = 0.5 * si_joint_mm + 2.5
            br = _Field(zc, ax_y, ax_x, rot)
            for c in bridges:
                br.union(side(_capsule(c, c, r_b)))
            sl = br.finite
            if sl is not None:
                hv, sv, bv = hp.d[sl], sac.d[sl], br.d[sl]
                near_hip = hv < sv
                np.minimum(hv, np.where(near_hip, bv, _FAR), out=hv)
                np.minimum(sv, np.where(~near_hip, bv, _FAR), out=sv)
                hp._grow(sl)
                sac._grow(sl)
            fems.append((fe, side))
            hips.append(hp)

        parts = [(hips[0], "hip_left", 230.0, None), (hips[1], "hip_right", 230.0, None),
                 (sac, "sacrum", 215.0, None), (fems[0][0], "femur_left", 255.0, fems[0][1]),
                 (fems[1][0], "femur_right", 255.0, fems[1][1])]
        if arms:
            bones, canals = _Field(zc, ax_y, ax_x), _Field(zc, ax_y, ax_x)
            _arm_bones(bones, canals)
            parts.append((bones, "arm", 255.0, canals))
        for fld, name, base, side in parts:
            box = fld.finite   # the work is restricted to the box of the evaluated region
            if box is None:
                continue
            d = fld.d[box]
            core = _trabecular(zc[box[0]], ax_y[box[1]], ax_x[box[2]], waves, base, 95.0)
            if isinstance(side, _Field):             # arm bones: the canals were built with them
                core += ramp(side.d[box]) * (np.float32(_MARROW) - core)
            elif side is not None:                   # femoral marrow canal
                canal = _Field(zc[box[0]], ax_y[box[1]], ax_x[box[2]], rot)
                _femur_canal(canal, side)
                core += ramp(canal.d) * (np.float32(_MARROW) - core)
            bone = _CORTEX + ramp(d, -t) * (core - _CORTEX)
            a = ramp(d)
            sub = slab[box]
            sub += a * (bone - sub)
            lab[box][d < 0] = _L[name]
        for implant, sign in implants:
            _add_prosthesis(slab, lab, implant, ax_y, ax_x, streak_hu, ramp, side_sign=sign,
                            ceramic=prosthesis_liner == "ceramic")

        if noise_hu > 0:
            slab += noise_rng.standard_normal(slab.shape, dtype=np.float32) * np.float32(noise_hu)
        np.clip(np.rint(slab), _HU_MIN, _HU_MAX, out=slab)
        hu_out[k0:k1] = slab

    direction = np.eye(3)
    if patient_position == "FFS":
        # a feet-first scanner's image axes: rows towards the patient's right, slices head to feet;
        # the voxel at new index (k, j, i) is the old (nz-1-k, j, nx-1-i), at the same LPS point
        hu_out = np.ascontiguousarray(hu_out[::-1, :, ::-1])
        lab_out = np.ascontiguousarray(lab_out[::-1, :, ::-1])
        origin = (origin[0] + (nx - 1) * dx, origin[1], origin[2] + (nz - 1) * dz)
        direction = np.diag([-1.0, 1.0, -1.0])
    vol = Volume(hu=hu_out, spacing=spacing, origin=origin, direction=direction,
                 meta={"modality": "CT", "source": "printpipe.phantom.pelvis_phantom",
                       "phantom_seed": int(seed), "patient_position": patient_position})
    names = dict(LABELS)
    if bowel:
        names[_L["bowel"]] = "bowel"
    if arms:
        names[_L["arm"]] = "arm"
    if prosthesis is not None:
        names[_L["implant"]] = "implant"
    return Phantom(volume=vol, labels=lab_out, names=names, midline_x_mm=float(midline_x_mm),
                   params=params)


def variant_phantom(name: str, seed: int = 0, **overrides: Any) -> Phantom:
    """One of the test variants in :data:`VARIANTS` (``overrides`` replace its keyword arguments).

    Examples
    --------
    >>> ph = variant_phantom("feet_first", shape=(24, 48, 48), spacing=(10.0, 8.0, 8.0))
    >>> ph.volume.meta["patient_position"], float(ph.volume.direction[0, 0])
    ('FFS', -1.0)
    """
    if name not in VARIANTS:
        raise InputError(f"unknown phantom variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return pelvis_phantom(**{**VARIANTS[name], "seed": seed, **overrides})


def _rotation(about_x_deg: float, about_z_deg: float) -> np.ndarray | None:
    """Rotation (acting on (x, y, z)) about x, then about z; None for no rotation."""
    if about_x_deg == 0.0 and about_z_deg == 0.0:
        return None
    a, g = math.radians(about_x_deg), math.radians(about_z_deg)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)], [0.0, math.sin(a), math.cos(a)]])
    rz = np.array([[math.cos(g), -math.sin(g), 0.0], [math.sin(g), math.cos(g), 0.0], [0.0, 0.0, 1.0]])
    return rz @ rx


def _sacrum_front_y(x: float, z: float) -> float:
    """Local y of the sacrum's anterior surface at (x, z) (the cross-section is an ellipse)."""
    hw, hd, yc = (float(v) for v in _sac_shape(_sac_u(np.float64(z))))
    return yc - hd * math.sqrt(max(1.0 - (x / hw) ** 2, 0.0))


def _bowel_paths(gap: float) -> list[list[tuple[float, float, float]]]:
    """Centre lines (local x, y, z) of the two loops: a U in front of the sacrum whose rising limb
    keeps ``gap`` mm from the sacrum's anterior surface (offset along the surface normal of the
    midline profile, sampled every 5 mm), and a loop in the false pelvis."""
    r = _BOWEL_R
    up = []
    for z in np.arange(25.0, 81.0, 5.0):
        y0 = _sacrum_front_y(0.0, z)
        slope = (_sacrum_front_y(0.0, z + 0.5) - _sacrum_front_y(0.0, z - 0.5)) / 1.0   # dy/dz
        norm = math.hypot(1.0, slope)
        # anterior normal of the profile curve y(z): (-1, slope) / norm in (y, z)
        up.append((0.0, y0 - (r + gap) / norm, float(z) + (r + gap) * slope / norm))
    x_top, y_top, z_top = up[-1]
    y_down = y_top - 2 * r - 8.0
    bend = (0.0, 0.5 * (y_top + y_down), z_top + r)
    sacral = [*up, bend, *((0.0, y_down, z) for z in (z_top, 60.0, 35.0))]
    false_pelvis = [(-35.0, -45.0, 60.0), (-20.0, -50.0, 95.0), (15.0, -55.0, 100.0), (35.0, -45.0, 70.0)]
    return [sacral, false_pelvis]


def _add_bowel(slab, lab, zc, ax_y, ax_x, rot, gap, contrast_hu, ramp) -> None:
    """Composite the bowel loops into a chunk (HU and the ``bowel`` label); bones are added later."""
    sacral, hollow = _bowel_paths(gap)
    for path, filled in ((sacral, True), (hollow, False)):
        outer = _Field(zc, ax_y, ax_x, rot)
        inner = _Field(zc, ax_y, ax_x, rot)
        for a, b in itertools.pairwise(path):
            outer.union(_capsule(a, b, _BOWEL_R))
            if not filled:
                inner.union(_capsule(a, b, _BOWEL_R - _BOWEL_WALL))
        sl = outer.finite
        if sl is None:
            continue
        sub = slab[sl]
        sub += ramp(outer.d[sl]) * (np.float32(contrast_hu) - sub)
        if not filled:
            sub += ramp(inner.d[sl]) * (np.float32(_CONTRAST_GAS) - sub)
        lab[sl][outer.d[sl] < 0] = _L["bowel"]


#: the total hip prosthesis (local left frame, mm): neck osteotomy this far from the head's centre
#: along the neck axis; cup radii (a 50 mm shell 3 mm thick); stem path down the femoral canal
_NECK_CUT_MM = 28.0
_CUP_R = (22.0, 25.0)           # the smallest cup: 50 mm; a larger head gets a cup 14 mm wider
_CUP_MARGIN_MM = (3.0, 4.0)     # ... than the head: a 3 mm shell and a liner of at least 4 mm
_CUP_OPEN = (0.70, -0.25, -0.67)
_STEM = (((121.0, 8.5, -75.0), 8.0), ((117.0, 9.0, -180.0), 6.0))
_TRUNNION_MM = (35.0, 6.0)      # length along the neck axis from the head's centre, radius
_METAL = 3071.0                 # the scanner's clip: cobalt-chrome and titanium read far above it
_LINER = -80.0                  # ultra-high-molecular-weight polyethylene
_STREAK_BANDS = 8               # bright and dark band pairs around the metal
_STREAK_MM = 40.0               # decay length of the streaks


def _prosthesis(zc, ax_y, ax_x, rot, side: _Side, fe: _Field, hp: _Field, head_mm: float,
                offset: tuple[float, float, float]) -> tuple[_Field, _Field]:
    """Fit a total hip prosthesis in place of one hip: the femur ``fe`` cut at the neck, the
    acetabulum of ``hp`` reamed to the cup; returns the metal and the liner fields."""
    hc = np.array(_HEAD_C)
    cup_out = max(_CUP_R[1], head_mm / 2.0 + sum(_CUP_MARGIN_MM))
    cup_in = cup_out - _CUP_MARGIN_MM[0]
    # neck osteotomy: keep the femur beyond the cut plane (inside of the half-space n.(p - c) < 0)
    fe.intersect(side(_halfspace(hc + _NECK_CUT_MM * _NECK_DIR, -_NECK_DIR, (-1e9,) * 3, (1e9,) * 3)))
    ream = _Field(zc, ax_y, ax_x, rot)
    ream.union(side(_capsule(hc, hc, cup_out)))
    hp.subtract(ream, 0.0)
    metal = _Field(zc, ax_y, ax_x, rot)
    # the cup: a hemispherical shell opening like the acetabulum
    metal.union(side(_capsule(hc, hc, cup_out)))
    metal.intersect(side(_halfspace(hc, _CUP_OPEN, (-1e9,) * 3, (1e9,) * 3)))
    inner = _Field(zc, ax_y, ax_x, rot)
    inner.union(side(_capsule(hc, hc, cup_in)))
    metal.subtract(inner, 0.0)
    # the femoral component: head, trunnion, stem (a separate piece from the cup)
    fem = _Field(zc, ax_y, ax_x, rot)
    h = hc + np.asarray(offset)
    neck_end = h + _TRUNNION_MM[0] * _NECK_DIR
    fem.union(side(_capsule(h, h, head_mm / 2.0)))
    fem.union(side(_capsule(h, neck_end, _TRUNNION_MM[1])), k=2.0)
    (a, ra), (b, rb) = _STEM
    fem.union(side(_capsule(neck_end, a, ra)), k=6.0)
    fem.union(side(_capsule(a, b, rb)), k=6.0)
    sl = fem.finite
    if sl is not None:
        np.minimum(metal.d[sl], fem.d[sl], out=metal.d[sl])
        metal._grow(sl)
    # the polyethylene liner fills the cup up to its rim, around the head
    liner = _Field(zc, ax_y, ax_x, rot)
    liner.union(side(_capsule(hc, hc, cup_in)))
    liner.intersect(side(_halfspace(hc, _CUP_OPEN, (-1e9,) * 3, (1e9,) * 3)))
    liner.subtract(fem, 0.0)
    return metal, liner


def _add_prosthesis(slab, lab, implant: tuple[_Field, _Field], ax_y, ax_x, streak_hu: float, ramp,
                    side_sign: int, ceramic: bool = False) -> None:
    """Composite the liner and the metal into a chunk (after the bones: the metal replaces bone and
    takes the ``implant`` label), then the streak artefacts of each slice that holds metal."""
    metal, liner = implant
    sl = liner.finite
    if sl is not None and ceramic:   # as bright as the metal: one piece with head and cup
        np.minimum(metal.d[sl], liner.d[sl], out=metal.d[sl])
    elif sl is not None:
        sub = slab[sl]
        sub += ramp(liner.d[sl]) * (np.float32(_LINER) - sub)
        lab[sl][(liner.d[sl] < 0) & (lab[sl] != _L["table"])] = 0
    sl = metal.finite
    if sl is None:
        return
    a = ramp(metal.d[sl])
    slab[sl] += a * (np.float32(_METAL) - slab[sl])
    lab[sl][metal.d[sl] < 0] = _L["implant"]
    if streak_hu <= 0:
        return
    # streaks: in each axial slice, bands radiating from the metal's centroid, alternating bright and
    # dark (cos^3 of the angle: narrow bands), strongest next to the metal; a slice through a thin
    # piece of metal streaks less (amplitude by its area against a 28 mm head's)
    y = ax_y[sl[1]][:, None]
    x = ax_x[sl[2]][None, :]
    Y, X = np.broadcast_arrays(y, x)
    dy = float(ax_y[1] - ax_y[0]) if ax_y.size > 1 else 1.0
    dx = float(ax_x[1] - ax_x[0]) if ax_x.size > 1 else 1.0
    full_y, full_x = ax_y[:, None], ax_x[None, :]
    for k in range(a.shape[0]):
        w = a[k]
        area = float(w.sum()) * dy * dx
        if area < 1.0:
            continue
        cy, cx = float((w * Y).sum() / w.sum()), float((w * X).sum() / w.sum())
        r = np.hypot(full_y - cy, full_x - cx)
        th = np.arctan2(full_y - cy, side_sign * (full_x - cx))
        r_eq = math.sqrt(area / math.pi)
        amp = streak_hu * min(1.0, area / (math.pi * 14.0 ** 2))
        band = np.cos(_STREAK_BANDS * th + 0.4) ** 3
        d = (amp * band * np.exp(-np.maximum(r - r_eq, 0.0) / _STREAK_MM)).astype(np.float32)
        z = sl[0].start + k
        d[lab[z] == _L["implant"]] = 0.0
        slab[z] += d


def _arm_bones(bones: _Field, canals: _Field) -> None:
    """Humerus, elbow, radius and ulna of both arms (anatomy frame, not turned with the pelvis)."""
    for s in (1.0, -1.0):
        x = s * _ARM_X
        bones.union(_capsule((x, -5.0, 320.0), (x, -5.0, 75.0), 11.0))                       # humerus
        bones.union(_ellipsoid((x, -5.0, 62.0), (22.0, 13.0, 14.0)), k=6.0)                  # elbow
        bones.union(_capsule((x + s * 9.0, -8.0, 50.0), (x + s * 9.0, -14.0, -260.0), 7.0))  # radius
        bones.union(_capsule((x - s * 9.0, 2.0, 56.0), (x - s * 9.0, 0.0, -260.0), 6.0))     # ulna
        canals.union(_capsule((x, -5.0, 300.0), (x, -5.0, 90.0), 6.5))
        canals.union(_capsule((x + s * 9.0, -8.0, 30.0), (x + s * 9.0, -14.0, -240.0), 3.0))
        canals.union(_capsule((x - s * 9.0, 2.0, 36.0), (x - s * 9.0, 0.0, -240.0), 2.5))


def sample_phantom() -> Phantom:
    """The phantom ``sample_dicom/`` was written from (``pelvis_phantom(**SAMPLE_KWARGS)``)."""
    return pelvis_phantom(**SAMPLE_KWARGS)


# -- DICOM writer ------------------------------------------------------------------------------
_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _fmt(v: float) -> str:
    """A DICOM decimal string (at most 16 characters) for a float."""
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    if len(s) > 16:
        s = f"{v:.8g}"
    return s


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike,
    *,
    transfer_syntax: str | None = None,
    series_description: str = "printpipe pelvis phantom",
    study_uid: str | None = None,
    series_uid: str | None = None,
    seed: int = 0,
    patient_name: str = "PHANTOM^PELVIS",
    patient_id: str = "PHANTOM-0001",
    series_number: int = 1,
    filename_pattern: str = "slice_{:04d}.dcm",
    unsigned: bool = False,
    workers: int | None = None,
) -> list[Path]:
    """Write a volume as a CT Image Storage series, one slice per file.

    Slice ``k`` is written to ``folder / filename_pattern.format(k)`` through a temporary name, with
    ImagePositionPatient ``origin + k * dz * direction[:, 2]``, ImageOrientationPatient from the first
    two direction columns, PixelSpacing ``(dy, dx)``, SliceThickness and SpacingBetweenSlices ``dz``,
    InstanceNumber ``k + 1`` and RescaleSlope 1 / RescaleIntercept -1024.

    Parameters
    ----------
    volume : Volume
        The image; HU outside the storable range are clipped with a warning.
    folder : path
        Output folder (created).
    transfer_syntax : str, optional
        Transfer syntax UID. Default Explicit VR Little Endian; Implicit VR Little Endian, Deflated
        Explicit VR Little Endian and any compressed syntax pydicom can encode (RLE Lossless,
        JPEG-LS Lossless, JPEG 2000 Lossless with the pylibjpeg/pyjpegls plugins) also work.
    series_description : str
        SeriesDescription.
    study_uid, series_uid : str, optional
        UIDs to use; by default derived deterministically from ``seed`` (and the description), so
        rewriting gives identical files. The FrameOfReferenceUID follows the study UID and seed.
    seed : int
        Entropy for the generated UIDs.
    patient_name, patient_id : str
        Dummy identifiers written into the files (never real data).
    series_number : int
        SeriesNumber.
    filename_pattern : str
        ``str.format`` pattern taking the slice index (0-based).
    unsigned : bool
        Store unsigned pixels (PixelRepresentation 0, stored = HU + 1024, HU below -1024 clipped)
        instead of signed ones.
    workers : int, optional
        Threads used for encoding and writing (default: up to 4).

    Returns
    -------
    list of Path
        The files written, in slice order.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, UID,
                             generate_uid)

    if not isinstance(volume, Volume):
        raise InputError(f"write_dicom_series needs a printpipe Volume; got {type(volume).__name__}")
    ts = UID(transfer_syntax or ExplicitVRLittleEndian)
    if not ts.is_transfer_syntax:
        raise InputError(f"transfer_syntax {str(ts)!r} is not a DICOM transfer syntax UID; pass e.g. "
                         "pydicom.uid.RLELossless")
    if ts.is_compressed and not ts.is_deflated:
        from pydicom.pixels import get_encoder
        try:
            enc = get_encoder(ts)
        except Exception as exc:  # pydicom raises NotImplementedError for unknown syntaxes
            raise InputError(f"pydicom cannot encode transfer syntax {ts.name} ({ts}): {exc}") from exc
        if not enc.is_available:
            raise InputError(f"no encoder plugin installed for {ts.name}; missing: "
                             f"{enc.missing_dependencies}. Install pylibjpeg-rle / pyjpegls / pylibjpeg-openjpeg")
    try:
        filename_pattern.format(0)
    except (IndexError, KeyError, ValueError) as exc:
        raise InputError(f"filename_pattern {filename_pattern!r} must format one integer, e.g. "
                         "'slice_{:04d}.dcm'") from exc

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hu = volume.hu
    lo_hu = -1024 if unsigned else -32768 + 1024
    hi_hu = 32767 + 1024 if unsigned else 32767 - 1024
    clipped = int(np.count_nonzero((hu < lo_hu) | (hu > hi_hu)))
    if clipped:
        log.warning("write_dicom_series: %d voxels outside the storable HU range %d..%d were clipped",
                    clipped, lo_hu, hi_hu)
    dz, dy, dx = volume.spacing
    direc = volume.direction
    row_dir, col_dir, normal = direc[:, 0], direc[:, 1], direc[:, 2]
    origin = np.asarray(volume.origin, float)

    def uid(*parts: object) -> str:
        # deterministic: sha512 of the '|'-joined parts (pydicom's generate_uid with entropy)
        return generate_uid(entropy_srcs=["|".join(["printpipe-phantom", *map(str, parts)])])

    study_uid = study_uid or uid(seed, "study")
    series_uid = series_uid or uid(seed, study_uid, series_description, series_number, "series")
    for_uid = uid(seed, study_uid, "frame-of-reference")

    common = Dataset()
    common.SpecificCharacterSet = "ISO_IR 100"
    common.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    common.SOPClassUID = _CT_IMAGE_STORAGE
    common.StudyDate = common.SeriesDate = common.ContentDate = "20000101"
    common.StudyTime = common.SeriesTime = common.ContentTime = "120000"
    common.AccessionNumber = ""
    common.Modality = "CT"
    common.Manufacturer = "printpipe"
    common.ManufacturerModelName = "synthetic phantom"
    common.ReferringPhysicianName = ""
    common.StudyDescription = "PHANTOM PELVIS"
    common.SeriesDescription = series_description
    common.PatientName = patient_name
    common.PatientID = patient_id
    common.PatientBirthDate = ""
    common.PatientSex = "O"
    common.PatientIdentityRemoved = "YES"
    common.BodyPartExamined = "PELVIS"
    common.SliceThickness = _fmt(dz)
    common.SpacingBetweenSlices = _fmt(dz)
    common.KVP = "120"
    common.ConvolutionKernel = "STANDARD"
    common.PatientPosition = str(volume.meta.get("patient_position") or "HFS")
    common.StudyInstanceUID = study_uid
    common.SeriesInstanceUID = series_uid
    common.StudyID = "1"
    common.SeriesNumber = int(series_number)
    common.AcquisitionNumber = 1
    common.FrameOfReferenceUID = for_uid
    common.PositionReferenceIndicator = ""
    common.ImageOrientationPatient = [_fmt(v) for v in (*row_dir, *col_dir)]
    common.SamplesPerPixel = 1
    common.PhotometricInterpretation = "MONOCHROME2"
    common.Rows, common.Columns = int(hu.shape[1]), int(hu.shape[2])
    common.PixelSpacing = [_fmt(dy), _fmt(dx)]
    common.BitsAllocated = 16
    common.BitsStored = 16
    common.HighBit = 15
    common.PixelRepresentation = 0 if unsigned else 1
    common.WindowCenter = "40"
    common.WindowWidth = "400"
    common.RescaleIntercept = "-1024"
    common.RescaleSlope = "1"
    common.RescaleType = "HU"

    paths = [folder / filename_pattern.format(k) for k in range(hu.shape[0])]
    if len(set(paths)) != len(paths):
        raise InputError(f"filename_pattern {filename_pattern!r} gives the same name to several slices")

    def write_one(k: int) -> Path:
        ds = Dataset()
        ds.update(common)
        sop_uid = uid(series_uid, k, "sop")
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        pos = origin + normal * (k * dz)
        ds.ImagePositionPatient = [_fmt(v) for v in pos]
        ds.SliceLocation = _fmt(float(pos @ normal))
        arr = hu[k].astype(np.int32) + 1024
        arr = np.clip(arr, 0, 65535).astype(np.uint16) if unsigned else np.clip(arr, -32768, 32767).astype(np.int16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = _CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "PRINTPIPE"
        ds.file_meta = meta
        ds.PixelData = arr.tobytes()
        if ts.is_compressed and not ts.is_deflated:
            ds.compress(ts, arr, generate_instance_uid=False)
        else:
            meta.TransferSyntaxUID = ts
        with atomic_path(paths[k], suffix=".dcm.part") as tmp:
            ds.save_as(tmp, enforce_file_format=True,
                       implicit_vr=ts == pydicom.uid.ImplicitVRLittleEndian,
                       little_endian=True)
        return paths[k]

    n_workers = workers or min(4, os.cpu_count() or 1)
    if n_workers > 1 and len(paths) > 8:
        with ThreadPoolExecutor(n_workers) as ex:
            out = list(ex.map(write_one, range(len(paths))))
    else:
        out = [write_one(k) for k in range(len(paths))]
    log.info("wrote %d DICOM slices (%s) to %s", len(out), ts.name, folder)
    return out
