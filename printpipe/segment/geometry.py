"""Geometry helpers of the segmentation stage: symmetry plane, mirroring, deviation, sphere fit.

Kept apart from :mod:`printpipe.segment` so the mask pipeline and the measurements can be read
separately. The public names are re-exported by :mod:`printpipe.segment`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy import ndimage as ndi

from printpipe.errors import InputError, SegmentationError
from printpipe.volume import Volume

log = logging.getLogger(__name__)

__all__ = ["Plane", "midsagittal_plane", "mirror_mesh", "surface_deviation", "femoral_head_diameter"]


@dataclass(frozen=True)
class Plane:
    """A plane in the patient frame (LPS mm): ``point`` on it and unit ``normal`` (towards +x, left)."""

    point: tuple[float, float, float]
    normal: tuple[float, float, float]

    def signed_distance(self, xyz: np.ndarray) -> np.ndarray:
        """Signed distance (mm) of ``(n, 3)`` LPS points; positive on the patient's left."""
        xyz = np.asarray(xyz, dtype=float).reshape(-1, 3)
        return (xyz - np.asarray(self.point)) @ np.asarray(self.normal)

    def reflect(self, xyz: np.ndarray) -> np.ndarray:
        """Mirror ``(n, 3)`` LPS points across the plane."""
        xyz = np.asarray(xyz, dtype=float).reshape(-1, 3)
        n = np.asarray(self.normal)
        return xyz - 2.0 * self.signed_distance(xyz)[:, None] * n[None, :]

    def as_dict(self) -> dict[str, list[float]]:
        return {"point": [round(float(v), 3) for v in self.point],
                "normal": [round(float(v), 6) for v in self.normal]}

    @classmethod
    def coerce(cls, plane: Any) -> "Plane":
        """Accept a :class:`Plane`, a ``{"point", "normal"}`` mapping or a ``(point, normal)`` pair."""
        if isinstance(plane, Plane):
            return plane
        if isinstance(plane, Mapping):
            point, normal = plane.get("point"), plane.get("normal")
        else:
            try:
                point, normal = plane
            except (TypeError, ValueError):
                raise InputError(f"plane must be a Plane, a {{'point', 'normal'}} dict or (point, normal); "
                                 f"got {type(plane).__name__}") from None
        point = np.asarray(point, dtype=float).reshape(-1)
        normal = np.asarray(normal, dtype=float).reshape(-1)
        if point.size != 3 or normal.size != 3 or not np.all(np.isfinite(point)) or np.linalg.norm(normal) < 1e-9:
            raise InputError(f"plane needs a 3-D point and a non-zero 3-D normal; got point={point.tolist()} "
                             f"normal={normal.tolist()}")
        normal = normal / np.linalg.norm(normal)
        return cls(tuple(point.tolist()), tuple(normal.tolist()))


def _rotation_normal(yaw: float, roll: float) -> np.ndarray:
    """Unit normal of a plane that starts as x = const and is turned by ``yaw`` (about z, axial
    rotation) and ``roll`` (about y, coronal tilt), both in radians."""
    n = np.array([np.cos(yaw) * np.cos(roll), np.sin(yaw) * np.cos(roll), np.sin(roll)])
    return n / np.linalg.norm(n)


def midsagittal_plane(mask: np.ndarray, volume: Volume, *, step_mm: float = 4.0,
                      max_angle_deg: float = 20.0) -> Plane:
    """Fit the mid-sagittal symmetry plane of a bone mask.

    Parameters
    ----------
    mask : (nz, ny, nx) bool ndarray
        Bone (ideally pelvis and sacrum) on the grid of ``volume``.
    volume : Volume
        Supplies spacing, origin and direction.
    step_mm : float
        Grid step of the downsampled mask the fit runs on.
    max_angle_deg : float
        Largest yaw / roll the optimiser may reach from the sagittal (x = const) plane.

    Returns
    -------
    Plane
        ``point`` (on the plane, at the bone centroid's height) and unit ``normal`` pointing to the
        patient's left (+x) in LPS millimetres.

    Notes
    -----
    The mask is block-reduced to about ``step_mm``; the surface voxels of the reduced mask are the
    samples. A plane (x-offset, yaw, roll) is scored by the mean distance from each mirrored sample
    to the nearest bone (a Euclidean distance map of the reduced mask, read with trilinear
    interpolation) and optimised with Powell's method, starting at the plane through the bone
    centroid with normal +x. The result is the plane about which the bone is most nearly its own
    mirror image; it does not depend on where the patient lies in the image.
    """
    from scipy.optimize import minimize

    dist, pts, f = _mirror_samples(mask, volume, step_mm)
    centroid = pts.mean(axis=0)
    a_inv = np.linalg.inv(volume.affine)
    scale = 1.0 / np.asarray(f, dtype=float)
    offset = (np.asarray(f) - 1) / 2.0
    lim = np.deg2rad(max_angle_deg)

    def cost(p: np.ndarray) -> float:
        x0, yaw, roll = p
        yaw = float(np.clip(yaw, -lim, lim))
        roll = float(np.clip(roll, -lim, lim))
        plane = Plane(tuple(centroid + np.array([x0, 0, 0])), tuple(_rotation_normal(yaw, roll)))
        m = plane.reflect(pts)
        kji = m @ a_inv[:3, :3].T + a_inv[:3, 3]
        c = (kji - offset) * scale
        # points mirrored outside the grid read the distance at the nearest grid voxel
        d = ndi.map_coordinates(dist, c.T, order=1, mode="nearest")
        return float(np.mean(d))

    # coarse scan of the offset first (the cost has local minima at ~ +-bone width), then Powell
    starts = np.arange(-30.0, 30.1, 5.0)
    x_start = float(starts[int(np.argmin([cost(np.array([x, 0.0, 0.0])) for x in starts]))])
    best = minimize(cost, np.array([x_start, 0.0, 0.0]), method="Powell",
                    options={"xtol": 1e-2, "ftol": 1e-4, "maxfev": 400})
    x0, yaw, roll = best.x
    yaw = float(np.clip(yaw, -lim, lim))
    roll = float(np.clip(roll, -lim, lim))
    normal = _rotation_normal(yaw, roll)
    plane = Plane(tuple((centroid + np.array([x0, 0.0, 0.0])).tolist()), tuple(normal.tolist()))
    log.debug("mid-sagittal plane %s, mean mirror distance %.2f mm", plane.as_dict(), best.fun)
    return plane


def _mirror_samples(mask: np.ndarray, volume: Volume, step_mm: float
                    ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """The inputs of the mid-sagittal fit: ``mask`` block-reduced by integer factors ``f`` to about
    ``step_mm``, the distance (mm) from every point of that coarse grid to the nearest bone, and the
    LPS positions of the coarse surface voxels (block centres; a fixed random 6000 when there are
    more). Returns ``(dist, points, f)``; raises on a mask of the wrong shape or too little bone."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != volume.shape:
        raise InputError(f"mask shape {mask.shape} differs from the volume's {volume.shape}")
    if not mask.any():
        raise SegmentationError("cannot fit a mid-sagittal plane to an empty mask")
    f = tuple(max(1, int(round(step_mm / s))) for s in volume.spacing)
    coarse = _block_any(mask, f)
    cs = tuple(s * k for s, k in zip(volume.spacing, f))
    # distance (mm) from any point of the coarse grid to the nearest bone voxel
    dist = ndi.distance_transform_edt(~coarse, sampling=cs).astype(np.float32)
    surf = coarse & ~ndi.binary_erosion(coarse)
    idx = np.argwhere(surf).astype(float)
    if len(idx) < 10:
        raise SegmentationError(f"too little bone ({len(idx)} surface samples) to fit a mid-sagittal plane")
    # coarse index -> fine fractional index of the block centre -> LPS
    if len(idx) > 6000:  # the cost is a mean: a fixed random subset of samples is plenty
        idx = idx[np.random.default_rng(0).choice(len(idx), 6000, replace=False)]
    fine = idx * np.asarray(f) + (np.asarray(f) - 1) / 2.0
    return dist, volume.index_to_patient(fine), f


def _block_any(mask: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    """Block-reduce a bool mask by integer factors ``f`` (z, y, x): a block is set if any voxel is."""
    nz, ny, nx = mask.shape
    pz, py, px = (-nz) % f[0], (-ny) % f[1], (-nx) % f[2]
    if pz or py or px:
        mask = np.pad(mask, ((0, pz), (0, py), (0, px)))
    a, b, c = mask.shape
    # one axis at a time, the fastest-varying first: each step shrinks what the next one reads
    m = mask.reshape(a, b, c // f[2], f[2]).any(axis=3) if f[2] > 1 else mask
    m = m.reshape(a, b // f[1], f[1], c // f[2]).any(axis=2) if f[1] > 1 else m
    return m.reshape(a // f[0], f[0], b // f[1], c // f[2]).any(axis=1) if f[0] > 1 else m


def mirror_mesh(mesh, plane):
    """Reflect a mesh across a plane, keeping outward normals.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        Closed mesh in LPS mm.
    plane : Plane or mapping or (point, normal)
        The mirror plane, for example ``Segmentation.info["midsagittal_plane"]``.

    Returns
    -------
    trimesh.Trimesh
        The mirror image (``process=False``). A reflection reverses orientation, so the face winding
        is reversed to keep the normals pointing out.
    """
    import trimesh

    plane = Plane.coerce(plane)
    verts = plane.reflect(np.asarray(mesh.vertices, dtype=float))
    faces = np.asarray(mesh.faces)[:, ::-1].copy()
    return trimesh.Trimesh(vertices=verts, faces=faces, process=False)


def surface_deviation(a, b, *, samples: int = 60000, seed: int = 0) -> dict[str, float]:
    """Symmetric surface-to-surface distance between two meshes.

    Parameters
    ----------
    a, b : trimesh.Trimesh
        Meshes in the same frame (mm).
    samples : int
        Points sampled on each surface (area-weighted).
    seed : int
        Seed of the sampling, so the figures are reproducible.

    Returns
    -------
    dict
        ``mean_mm``, ``p95_mm``, ``max_mm`` of the closest-point distances from samples on ``a`` to
        ``b`` and from ``b`` to ``a`` pooled, plus ``hausdorff_mm`` (= ``max_mm``) and ``samples``.

    Notes
    -----
    Distances are measured from each sample to the nearest of a denser sample set (4x) on the other
    surface plus its vertices (scipy cKDTree). That overestimates the true point-to-surface distance by
    at most about half the spacing of the dense samples, which is well below a voxel for bone-sized
    meshes; in exchange it runs in well under a second.
    """
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)

    def sample(mesh, n):
        tri = np.asarray(mesh.triangles, dtype=float)
        if len(tri) == 0:
            raise InputError("surface_deviation needs meshes with faces; got an empty mesh")
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        p = area / area.sum() if area.sum() > 0 else None
        pick = rng.choice(len(tri), size=n, p=p)
        u, v = rng.random(n), rng.random(n)
        flip = u + v > 1
        u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
        t = tri[pick]
        return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])

    sa, sb = sample(a, samples), sample(b, samples)
    da = np.vstack([sample(a, 4 * samples), np.asarray(a.vertices)])
    db = np.vstack([sample(b, 4 * samples), np.asarray(b.vertices)])
    d_ab = cKDTree(db).query(sa, workers=-1)[0]
    d_ba = cKDTree(da).query(sb, workers=-1)[0]
    d = np.concatenate([d_ab, d_ba])
    return {"mean_mm": round(float(d.mean()), 3), "p95_mm": round(float(np.percentile(d, 95)), 3),
            "max_mm": round(float(d.max()), 3), "hausdorff_mm": round(float(d.max()), 3),
            "samples": int(2 * samples)}


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through ``(n, 3)`` points (algebraic fit). Returns (centre, radius)."""
    p = np.asarray(points, dtype=float)
    a = np.c_[2 * p, np.ones(len(p))]
    b = (p ** 2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    c = sol[:3]
    r = float(np.sqrt(max(sol[3] + c @ c, 0.0)))
    return c, r


def femoral_head_diameter(mask_or_mesh, volume: Volume | None = None, *, iterations: int = 6) -> dict[str, Any]:
    """Diameter of the femoral head from a femur part (mask or mesh), by a sphere fit.

    Parameters
    ----------
    mask_or_mesh : (nz, ny, nx) bool ndarray or trimesh.Trimesh
        The femur part. A mask needs ``volume`` for its geometry.
    volume : Volume, optional
        Grid of the mask.
    iterations : int
        Rounds of fit-and-trim.

    Returns
    -------
    dict
        ``diameter_mm``, ``center_lps`` (x, y, z mm), ``rms_mm`` (residual of the kept points) and
        ``points`` (how many surface points the final fit used).

    Notes
    -----
    The head is the thickest round part at the top of the femur: its centre is first guessed as the
    point of largest inscribed-ball radius in the upper third of the femur (a distance transform of
    the mask). Surface points within 1.6 radii + 4 mm of that centre are fitted with a sphere
    (linear least squares); then, repeatedly, only points within 12 % of the fitted radius of the
    sphere surface and inside 1.2 radii of the centre are kept and the sphere refitted, which drops
    the neck and the fovea capitis.
    """
    import trimesh

    if isinstance(mask_or_mesh, trimesh.Trimesh):
        pts = np.asarray(mask_or_mesh.vertices, dtype=float)
        if len(pts) < 20:
            raise InputError("femoral_head_diameter needs a mesh with at least 20 vertices")
        z = pts[:, 2]
        top = pts[z > np.percentile(z, 70)]
        # centre guess: the top region's centroid moved down by nothing; refine by fitting
        from scipy.spatial import cKDTree

        tree = cKDTree(pts)
        # inscribed-radius proxy: for candidate points (a grid inside the top bbox) take the distance
        # to the surface vertices and keep those inside the mesh
        lo, hi = top.min(axis=0), top.max(axis=0)
        g = np.stack(np.meshgrid(*[np.linspace(l, h, 16) for l, h in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
        inside = mask_or_mesh.contains(g) if mask_or_mesh.is_watertight else np.ones(len(g), bool)
        g = g[inside]
        if len(g) == 0:
            raise SegmentationError("could not locate the femoral head inside the femur mesh")
        dist = tree.query(g)[0]
        c0, r0 = g[np.argmax(dist)], float(dist.max())
        surface = pts
    else:
        if volume is None:
            raise InputError("femoral_head_diameter needs the volume when given a mask")
        return _head_from_mask(np.asarray(mask_or_mesh, dtype=bool), volume, iterations)
    return _fit_head(surface, c0, r0, None, iterations)


def _fit_head(surface: np.ndarray, c0: np.ndarray, r0: float, neck_dir: np.ndarray | None,
              iterations: int) -> dict[str, Any]:
    """Sphere fit to the surface points around a head centre guess, dropping the neck."""
    d0 = surface - c0
    near = np.linalg.norm(d0, axis=1) < 1.6 * max(r0, 1.0) + 4.0
    if neck_dir is not None:
        # the articular surface: points more than 55 degrees away from the neck axis
        cosang = (d0 @ neck_dir) / np.maximum(np.linalg.norm(d0, axis=1), 1e-9)
        near &= cosang < np.cos(np.deg2rad(55.0))
    surface = surface[near]
    if len(surface) < 10:
        raise SegmentationError("too few surface points near the femoral head to fit a sphere")
    c, r = fit_sphere(surface)
    for _ in range(iterations):
        dc = np.linalg.norm(surface - c, axis=1)
        keep = (np.abs(dc - r) < 0.12 * r) & (dc < 1.2 * r)
        if keep.sum() < 10:
            break
        c, r = fit_sphere(surface[keep])
    dc = np.linalg.norm(surface - c, axis=1)
    kept = surface[(np.abs(dc - r) < 0.12 * r)]
    rms = float(np.sqrt(np.mean((np.linalg.norm(kept - c, axis=1) - r) ** 2))) if len(kept) else float("nan")
    return {"diameter_mm": round(2 * r, 2), "center_lps": [round(float(v), 2) for v in c],
            "rms_mm": round(rms, 3), "points": int(len(kept))}


def _head_from_mask(mask: np.ndarray, volume: Volume, iterations: int) -> dict[str, Any]:
    """Femoral head from a femur mask: outer surface (sub-voxel, marching cubes of the filled mask)
    around the deepest point of the upper third, without the neck."""
    import edt as _edt
    from skimage.measure import marching_cubes

    if not mask.any():
        raise SegmentationError("femoral_head_diameter got an empty femur mask")
    zz = np.flatnonzero(mask.any(axis=(1, 2)))
    zsup = np.asarray(volume.index_to_patient(np.c_[zz, np.zeros(len(zz)), np.zeros(len(zz))]))[:, 2]
    order = np.argsort(zsup)
    top = zz[order[int(len(order) * 2 / 3):]]
    lo = [int(top.min()), 0, 0]
    hi = [int(top.max()) + 1, mask.shape[1], mask.shape[2]]
    # the upper third of the femur, filled: cancellous bone below the threshold and a marrow that
    # reaches the surface through a gap in a thin cortex would pull the fit inwards
    sub = mask[lo[0]:hi[0]]
    idx = np.argwhere(sub)
    b0, b1 = idx.min(axis=0), idx.max(axis=0) + 1
    sub = np.pad(sub[:, b0[1]:b1[1], b0[2]:b1[2]], 2)
    lo = [lo[0] - 2, b0[1] - 2, b0[2] - 2]
    sub = ndi.binary_fill_holes(sub)
    for k in range(sub.shape[0]):
        sub[k] = ndi.binary_fill_holes(sub[k])
    d = _edt.edt(sub, anisotropy=volume.spacing, parallel=1)
    # the head is the thick part at the top: its centre lies within about a head radius (~25 mm)
    # of the femur's highest point, the greater trochanter's thickest part well below that
    zs = volume.index_to_patient(np.c_[np.arange(sub.shape[0]) + lo[0], np.zeros(sub.shape[0]),
                                       np.zeros(sub.shape[0])].astype(float))[:, 2]
    has = sub.any(axis=(1, 2))
    z_top = float(zs[has].max())
    band = zs < z_top - 35.0
    d_band = d.copy()
    d_band[band] = 0
    k = np.array(np.unravel_index(np.argmax(d_band), d.shape))
    del d_band
    r0 = float(d[tuple(k)])
    c0 = volume.index_to_patient((k + lo).astype(float))[0]
    # neck axis: from the centre to the bone in a shell just outside the head
    shell = (d > 0)
    pts_idx = np.argwhere(shell)
    pts = volume.index_to_patient((pts_idx + lo).astype(float))
    dist_c = np.linalg.norm(pts - c0, axis=1)
    ring = pts[(dist_c > 1.3 * r0 + 3.0) & (dist_c < 2.0 * r0 + 8.0)]
    neck_dir = None
    if len(ring) > 20:
        v = ring.mean(axis=0) - c0
        if np.linalg.norm(v) > 1e-6:
            neck_dir = v / np.linalg.norm(v)
    verts, _, _, _ = marching_cubes(sub.astype(np.float32), 0.5)
    surface = volume.index_to_patient(verts + np.asarray(lo, dtype=float))
    # the largest inscribed ball is smaller than the head (the fovea, thin slices): start wide
    return _fit_head(surface, c0, r0 + 2.0, neck_dir, iterations)
