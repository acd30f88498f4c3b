"""Segmentation accuracy against ground truth: Dice and surface distances of exported parts.

What is measured is the whole pipeline: the part meshes ``run`` wrote (STL, patient LPS mm) are cut
back into the CT's voxel grid (:func:`mesh_to_mask`) and compared with

* expert label maps (MetaImage ``label.mhd`` + zlib ``.zraw``, read by :func:`read_metaimage`; values
  1 pelvis, 2 femur, 3 sacrum, 4 lumbar spine as in ``pelvic-ref002-labels``), split into left and right
  at the label's own mid-sagittal plane (:func:`expert_masks`);
* manual RTSTRUCT contours (rasterised by :func:`printpipe.labels.rtstruct_masks`), compared only on the
  slices the manual contour was drawn on (:func:`compare`, ``slices=``).

Figures per structure (:class:`Score`): Dice, mean symmetric surface distance (ASSD) and the 95th
percentile Hausdorff distance (HD95), in mm, a left/right swap flag and, against expert labels, the
volume of a part lying more than :data:`OUTSIDE_MM` from every labelled bone (bowel, ribs, arms or
couch given a pelvic name).

Definitions
-----------
Dice
    ``2 |A & B| / (|A| + |B|)`` over voxels.
Surface
    The voxels of a mask with a 6-neighbour outside it. On a slab of contour slices (``slices=``) the
    slab's first and last slices do not count as surface by themselves (the mask is continued by
    replicating them), so cutting a long femur at the end of a manual contour adds no false surface.
Mean surface distance (ASSD)
    Every surface voxel of A gets the distance (mm, voxel centres, anisotropic spacing) to the nearest
    surface voxel of B and vice versa; the mean over both sets together.
HD95
    The larger of the two directed 95th percentiles.

These are the usual definitions of the medical segmentation challenges (Heimann et al. 2009,
doi:10.1109/TMI.2009.2013851; Taha & Hanbury 2015, doi:10.1186/s12880-015-0068-x).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from printpipe.errors import InputError
from printpipe.volume import Volume

log = logging.getLogger(__name__)

__all__ = [
    "CASES",
    "EXPERT_LABELS",
    "OUTSIDE_MM",
    "PEER_ROIS",
    "SCORED_PARTS",
    "Score",
    "compare",
    "compare_sides",
    "contour_slices",
    "dice",
    "expert_masks",
    "format_table",
    "mesh_to_mask",
    "part_masks",
    "read_metaimage",
    "run_case",
    "score_parts",
    "segmentation_masks",
    "surface_distances",
]

#: label value -> structure in the expert label maps of pelvic-ref002-labels (5-28 are muscles).
EXPERT_LABELS: dict[int, str] = {1: "pelvis", 2: "femur", 3: "sacrum", 4: "spine"}

#: a part's voxels farther than this from every expert bone label count as foreign (``outside_ml``):
#: more than the 1-3 mm a correct surface may stray, less than the soft tissue between bowel and bone.
OUTSIDE_MM = 5.0

_MET_TYPES = {"MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2",
              "MET_UINT": "u4", "MET_INT": "i4", "MET_FLOAT": "f4", "MET_DOUBLE": "f8"}


@dataclass(frozen=True)
class Score:
    """Agreement of one structure with its reference.

    Attributes
    ----------
    structure : str
        Name (``hip_left``, ``femur_right``, ...).
    method : str
        What was compared with the reference (``printpipe``, ``deep-learning``, ``model-based``).
    reference : str
        What the reference is (``expert labels``, ``manual contour FemoreSinistro`` ...).
    dice : float
        0..1; 0 when the structure is missing.
    mean_mm, p95_mm : float
        Mean symmetric surface distance and HD95 in mm; ``nan`` when either mask is empty.
    ref_ml, test_ml : float
        Volumes (cm^3) of the reference and of the compared mask, on the compared slices.
    swapped : bool
        True when the compared mask of the other side overlaps this side's reference more than this
        side's own does (a left/right swap).
    outside_ml : float
        Volume (cm^3) of the compared mask farther than :data:`OUTSIDE_MM` from every labelled bone
        (expert labels only; ``nan`` otherwise): bowel, ribs, arms or couch taken into a named part.
    """

    structure: str
    method: str
    reference: str
    dice: float
    mean_mm: float
    p95_mm: float
    ref_ml: float
    test_ml: float
    swapped: bool = False
    outside_ml: float = math.nan

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("dice", "mean_mm", "p95_mm", "ref_ml", "test_ml", "outside_ml"):
            v = d[k]
            d[k] = None if not math.isfinite(v) else round(float(v), 4)
        return d


# -- ground truth -------------------------------------------------------------------------------
def read_metaimage(path: str | os.PathLike) -> tuple[np.ndarray, Volume]:
    """Read a MetaImage (``.mhd`` header + raw or zlib-compressed data file) by hand.

    Returns
    -------
    data : (nz, ny, nx) ndarray
        The voxel values, array axes (z, y, x).
    grid : Volume
        The grid (an all-zero int16 ``hu``) with the header's spacing, origin (``Offset``) and
        direction (``TransformMatrix``, rows are the axis vectors in ITK's MetaIO), so its geometry
        can be compared with the CT's.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"label header {path} does not exist; give the .mhd file of the label map")
    header: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if "=" in line:
            key, val = line.split("=", 1)
            header[key.strip()] = val.strip()
    try:
        dims = [int(v) for v in header["DimSize"].split()]
        dtype = np.dtype(_MET_TYPES[header["ElementType"]])
        data_file = path.parent / header["ElementDataFile"]
    except KeyError as exc:
        raise InputError(f"{path.name} lacks or has an unsupported MetaImage field {exc}; "
                         f"give a 3-D MetaImage with a separate data file") from None
    if len(dims) != 3:
        raise InputError(f"{path.name} is {len(dims)}-D; a 3-D label map is needed")
    if header.get("BinaryDataByteOrderMSB", "False").lower() == "true":
        dtype = dtype.newbyteorder(">")
    else:
        dtype = dtype.newbyteorder("<")
    raw = data_file.read_bytes()
    if header.get("CompressedData", "False").lower() == "true":
        raw = zlib.decompress(raw)
    nx, ny, nz = dims
    if len(raw) != nx * ny * nz * dtype.itemsize:
        raise InputError(f"{data_file.name} holds {len(raw)} bytes, the header asks for "
                         f"{nx * ny * nz * dtype.itemsize}; the label map is damaged")
    data = np.frombuffer(raw, dtype=dtype).reshape(nz, ny, nx)
    sx, sy, sz = (float(v) for v in header.get("ElementSpacing", "1 1 1").split())
    origin = tuple(float(v) for v in header.get("Offset", header.get("Origin", "0 0 0")).split())
    tm = np.array([float(v) for v in header.get("TransformMatrix", "1 0 0 0 1 0 0 0 1").split()])
    direction = tm.reshape(3, 3).T       # MetaIO writes the axis vectors as rows
    grid = Volume(hu=np.zeros((1, 1, 1), np.int16), spacing=(sz, sy, sx), origin=origin, direction=direction)
    return data, _with_shape(grid, (nz, ny, nx))


def _with_shape(grid: Volume, shape: tuple[int, int, int]) -> Volume:
    # a geometry-only Volume: a broadcast zero array of the right shape costs no memory
    hu = np.broadcast_to(np.zeros((), np.int16), shape)
    return Volume(hu=hu, spacing=grid.spacing, origin=grid.origin, direction=grid.direction)


def _same_grid(a: Volume, b: Volume, tol_mm: float = 0.1) -> bool:
    if a.shape != b.shape:
        return False
    corners = np.array([[0, 0, 0], [n - 1 for n in a.shape]], dtype=float)
    return bool(np.abs(a.index_to_patient(corners) - b.index_to_patient(corners)).max() <= tol_mm)


def expert_masks(label_mhd: str | os.PathLike, volume: Volume) -> tuple[dict[str, np.ndarray], dict]:
    """Bone masks of an expert label map on the CT grid, left and right split.

    Parameters
    ----------
    label_mhd : path
        ``label.mhd`` with values :data:`EXPERT_LABELS` (1 pelvis, 2 femur, 3 sacrum, 4 lumbar spine).
    volume : Volume
        The CT; the label map must lie on its grid (within 0.1 mm).

    Returns
    -------
    masks : dict[str, (nz, ny, nx) bool]
        ``pelvis``, ``hip_left``, ``hip_right``, ``femur_left``, ``femur_right``, ``sacrum`` and
        ``spine`` (when present).
    info : dict
        ``midline_x_mm``: the split plane, and how it was found.

    Notes
    -----
    The split plane is the label's own mid-sagittal plane ``x = c`` (LPS, patient left is +x): the two
    hip bones of the pelvis label meet only at the pubic symphysis, so ``c`` is the sagittal plane of
    least pelvis-label cross-section (the symphyseal cleft) within 40 mm of the label's centroid.
    Femurs are split by the same plane (they are 150 mm or more apart, so any plane near the middle
    gives the same answer).
    """
    data, grid = read_metaimage(label_mhd)
    if not _same_grid(grid, volume):
        raise InputError(f"label map {Path(label_mhd).name} is not on the CT's grid (shape {grid.shape} vs "
                         f"{volume.shape}, or origin/spacing differ); resample it onto the CT first")
    masks: dict[str, np.ndarray] = {}
    for value, name in EXPERT_LABELS.items():
        m = data == value
        if m.any():
            masks[name] = m
    if "pelvis" not in masks:
        raise InputError(f"label map {Path(label_mhd).name} has no pelvis label (1); it is not a pelvic bone map")
    x_of_col = _column_x(volume)
    c, how = _symphysis_plane(masks["pelvis"], x_of_col)
    left = x_of_col > c                       # (ny, nx): patient left is +x in LPS
    for name in ("pelvis", "femur"):
        if name in masks:
            base = "hip" if name == "pelvis" else "femur"
            masks[f"{base}_left"] = masks[name] & left
            masks[f"{base}_right"] = masks[name] & ~left
    masks.pop("femur", None)
    return masks, {"midline_x_mm": round(float(c), 2), "midline": how}


def _column_x(volume: Volume) -> np.ndarray:
    """LPS x (mm) of each (row, column) of an axial slice; rejects grids whose x changes with slice."""
    d = volume.direction
    if abs(d[0, 2]) > 1e-3:
        raise InputError("the CT's slice axis is not perpendicular to patient x; left/right splitting "
                         "by column needs an axial (or tilted about x) series")
    _, dy, dx = volume.spacing
    j = np.arange(volume.shape[1])[:, None]
    i = np.arange(volume.shape[2])[None, :]
    return volume.origin[0] + d[0, 0] * dx * i + d[0, 1] * dy * j


def _symphysis_plane(pelvis: np.ndarray, x_of_col: np.ndarray) -> tuple[float, str]:
    counts = pelvis.sum(axis=0)                       # (ny, nx) voxels per column
    xs = x_of_col[counts > 0]
    w = counts[counts > 0].astype(float)
    centroid = float((xs * w).sum() / w.sum())
    bins = np.arange(centroid - 40.0, centroid + 40.0 + 1e-6, 1.0)
    prof, _ = np.histogram(xs, bins=bins, weights=w)
    prof = np.convolve(prof, np.ones(3) / 3.0, mode="same")[1:-1]
    centres = 0.5 * (bins[1:-2] + bins[2:-1])
    # the run of least cross-section nearest the centroid (a cleft with no bone is a run of zeros)
    low = np.flatnonzero(prof <= prof.min() + 1e-9)
    runs = np.split(low, np.flatnonzero(np.diff(low) > 1) + 1)
    best = min(runs, key=lambda r: abs(centres[r].mean() - centroid))
    c = float(centres[best].mean())
    return c, f"least pelvis-label cross-section within 40 mm of its centroid x {centroid:.1f} mm"


# -- meshes into the grid -----------------------------------------------------------------------
def mesh_to_mask(vertices: np.ndarray, faces: np.ndarray, volume: Volume) -> np.ndarray:
    """Voxel centres of ``volume`` inside a closed triangle mesh (LPS mm), by ray parity per column.

    Parameters
    ----------
    vertices : (n, 3) float
        Patient-frame (LPS) positions in mm.
    faces : (m, 3) int
        Triangles; the mesh should be closed (watertight). Winding does not matter.
    volume : Volume
        The grid; any orientation (the rays run along the slice axis in index space).

    Returns
    -------
    (nz, ny, nx) bool ndarray

    Notes
    -----
    Vertices are mapped to fractional indices ``(k, j, i)``. For every column ``(j, i)`` the crossings
    of the ray ``k -> +inf`` with the triangles are found by 2-D barycentric tests (the column is
    nudged by 1e-5 voxel so that rays never hit an edge or vertex of a mesh made on the same grid);
    each crossing toggles the parity of every voxel centre above it (a toggle at ``floor(k) + 1`` and
    a cumulative sum along ``k``; ``k`` is nudged down by 1e-6 so that a face lying on a plane of voxel
    centres, as flat faces of meshes made on the same grid may, is decided alike in every column). A column with an odd number of crossings (an open mesh) is left
    empty and logged.
    """
    v = _to_index(np.asarray(vertices, dtype=float), volume)
    f = np.asarray(faces, dtype=np.int64)
    nz, ny, nx = volume.shape
    out = np.zeros((nz, ny, nx), dtype=bool)
    if len(f) == 0:
        return out
    jlo = max(int(np.floor(v[:, 1].min())), 0)
    jhi = min(int(np.ceil(v[:, 1].max())) + 1, ny)
    ilo = max(int(np.floor(v[:, 2].min())), 0)
    ihi = min(int(np.ceil(v[:, 2].max())) + 1, nx)
    if jhi <= jlo or ihi <= ilo:
        return out
    bj, bi = jhi - jlo, ihi - ilo
    toggles = np.zeros((bj * bi) * (nz + 1), dtype=np.int32)
    tri = v[f]                                            # (m, 3 vertices, 3 coords)
    kk, jj, ii = tri[..., 0], tri[..., 1] - jlo - 1e-5 * math.pi, tri[..., 2] - ilo - 1e-5 * math.e
    for s in range(0, len(f), 200_000):                   # bounded temporaries for big meshes
        _toggle(kk[s:s + 200_000], jj[s:s + 200_000], ii[s:s + 200_000], toggles, bj, bi, nz)
    toggles = toggles.reshape(bj, bi, nz + 1)
    odd = (toggles.sum(axis=2) & 1).astype(bool)
    if odd.any():
        log.warning("mesh_to_mask: %d columns cross the mesh an odd number of times (open mesh); "
                    "left empty", int(odd.sum()))
        toggles[odd] = 0
    inside = (np.cumsum(toggles[:, :, :nz], axis=2) & 1).astype(bool)   # (bj, bi, nz)
    out[:, jlo:jhi, ilo:ihi] = inside.transpose(2, 0, 1)
    return out


def _to_index(xyz: np.ndarray, volume: Volume) -> np.ndarray:
    """``volume.patient_to_index`` as three axpy passes: a (n, 3) @ (3, 3) product goes through
    BLAS, whose threads crawl on a machine whose cores are all busy (0.3 s for 10^5 points)."""
    inv = np.linalg.inv(volume.affine)
    d = xyz.reshape(-1, 3)
    out = np.empty_like(d)
    for r in range(3):
        out[:, r] = d[:, 0] * inv[r, 0] + d[:, 1] * inv[r, 1] + d[:, 2] * inv[r, 2] + inv[r, 3]
    return out


def _toggle(kk, jj, ii, toggles, bj, bi, nz):
    """Add the ray crossings of the triangles (columns of the box ``bj x bi``) to ``toggles``."""
    j0 = np.clip(np.ceil(jj.min(axis=1)), 0, bj).astype(np.int64)
    j1 = np.clip(np.floor(jj.max(axis=1)) + 1, 0, bj).astype(np.int64)
    i0 = np.clip(np.ceil(ii.min(axis=1)), 0, bi).astype(np.int64)
    i1 = np.clip(np.floor(ii.max(axis=1)) + 1, 0, bi).astype(np.int64)
    nj, ni = np.maximum(j1 - j0, 0), np.maximum(i1 - i0, 0)
    count = nj * ni
    if not count.any():
        return
    t = np.repeat(np.arange(len(kk)), count)
    local = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    pj = j0[t] + local // np.maximum(ni[t], 1)
    pi = i0[t] + local % np.maximum(ni[t], 1)
    ax, ay = jj[t, 0], ii[t, 0]
    bx, by = jj[t, 1], ii[t, 1]
    cx, cy = jj[t, 2], ii[t, 2]
    den = (bx - ax) * (cy - ay) - (cx - ax) * (by - ay)
    ok = den != 0
    den = np.where(ok, den, 1.0)
    w1 = ((pj - ax) * (cy - ay) - (cx - ax) * (pi - ay)) / den
    w2 = ((bx - ax) * (pi - ay) - (pj - ax) * (by - ay)) / den
    w0 = 1.0 - w1 - w2
    hit = ok & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    if not hit.any():
        return
    t, pj, pi = t[hit], pj[hit], pi[hit]
    k = w0[hit] * kk[t, 0] + w1[hit] * kk[t, 1] + w2[hit] * kk[t, 2]
    # first voxel centre above the crossing (nudged down, so a face on a centre plane is decided alike
    # for every column)
    first = np.clip(np.floor(k - 1e-6 * math.sqrt(2.0)) + 1, 0, nz).astype(np.int64)
    lin = (pj * bi + pi) * (nz + 1) + first
    toggles += np.bincount(lin, minlength=toggles.size).astype(np.int32)


def segmentation_masks(seg, volume: Volume) -> dict[str, np.ndarray]:
    """Each named part of a :class:`~printpipe.segment.Segmentation` as a mask on ``volume``'s grid.

    ``seg.volume`` may be a crop of ``volume`` (same spacing and direction, whole-voxel offset).
    """
    sub = seg.volume
    lo = np.rint(volume.patient_to_index(np.asarray(sub.origin))[0]).astype(int)
    if (not np.allclose(sub.spacing, volume.spacing) or not np.allclose(sub.direction, volume.direction)
            or np.any(lo < 0) or np.any(lo + np.array(sub.shape) > np.array(volume.shape))):
        raise InputError("the segmentation is not a crop of this volume's grid; segment this volume")
    box = tuple(slice(int(a), int(a) + n) for a, n in zip(lo, sub.shape))
    out = {}
    for label, name in seg.names.items():
        m = np.zeros(volume.shape, dtype=bool)
        m[box] = seg.labels == label
        out[name] = m
    return out


def part_masks(outdir: str | os.PathLike, volume: Volume, names: Iterable[str] | None = None
               ) -> dict[str, np.ndarray]:
    """Voxelise the part meshes a pipeline run wrote into ``outdir`` onto the CT grid.

    Reads ``manifest.json`` for the part names and the frame (it must be the patient frame, the
    default) and each ``parts/<name>.stl``.
    """
    import trimesh

    outdir = Path(outdir)
    manifest_path = outdir / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{outdir} holds no manifest.json; give the output folder of a finished run")
    manifest = json.loads(manifest_path.read_text())
    frame = (manifest.get("frame") or {}).get("name", "patient")
    if frame != "patient":
        raise InputError(f"the parts in {outdir} are in the {frame!r} frame; run with --frame patient "
                         f"so they line up with the CT")
    wanted = None if names is None else set(names)
    out = {}
    for part in manifest["parts"]:
        name = part["name"]
        if wanted is not None and name not in wanted:
            continue
        stl = outdir / "parts" / f"{name}.stl"
        if not stl.is_file():
            continue
        mesh = trimesh.load_mesh(stl, process=False)
        out[name] = mesh_to_mask(mesh.vertices, mesh.faces, volume)
    return out


# -- metrics ------------------------------------------------------------------------------------
def _bbox(*masks: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Smallest box holding every True voxel of the masks (None when all are empty).

    Projections instead of ``np.nonzero``: no index arrays for 10^7-voxel masks, and the y and x
    projections only over the occupied slices.
    """
    lo, hi = None, None
    for m in masks:
        z = np.flatnonzero(m.any(axis=(1, 2)))
        if z.size == 0:
            continue
        slab = m[z[0]:z[-1] + 1]
        y = np.flatnonzero(slab.any(axis=(0, 2)))
        x = np.flatnonzero(slab.any(axis=(0, 1)))
        mlo, mhi = (z[0], y[0], x[0]), (z[-1] + 1, y[-1] + 1, x[-1] + 1)
        lo = mlo if lo is None else tuple(min(a, b) for a, b in zip(lo, mlo))
        hi = mhi if hi is None else tuple(max(a, b) for a, b in zip(hi, mhi))
    if lo is None:
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    box = _bbox(a, b)
    if box is None:
        return 1.0
    a, b = a[box], b[box]
    na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    return 2.0 * int(np.count_nonzero(a & b)) / (na + nb)


def _surface(m: np.ndarray, open_z: bool) -> np.ndarray:
    """Voxels of ``m`` with a 6-neighbour outside it (outside the array counts as outside, except
    beyond the first and last slices when ``open_z``)."""
    inner = m.copy()
    for ax in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        inner[tuple(hi)] &= m[tuple(lo)]
        inner[tuple(lo)] &= m[tuple(hi)]
        if ax > 0 or not open_z:
            edge = [slice(None)] * 3
            edge[ax] = [0, -1]
            inner[tuple(edge)] = False
    return m & ~inner


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: tuple[float, float, float], *,
                      open_z: bool = False) -> tuple[float, float]:
    """Mean symmetric surface distance and HD95 (mm) of two boolean masks on one grid.

    ``open_z`` makes the first and last slices no surface of their own (see the module notes).
    Returns ``(nan, nan)`` when either mask is empty.
    """
    import edt

    if _bbox(a) is None or _bbox(b) is None:
        return math.nan, math.nan
    box = _bbox(a, b)
    if open_z:
        box = (slice(0, a.shape[0]),) + box[1:]
    sa, sb = _surface(a[box], open_z), _surface(b[box], open_z)
    aniso = tuple(float(s) for s in spacing)
    da = edt.edt(np.ascontiguousarray(~sb), anisotropy=aniso, black_border=False)[sa]
    db = edt.edt(np.ascontiguousarray(~sa), anisotropy=aniso, black_border=False)[sb]
    mean = float((da.sum() + db.sum()) / (da.size + db.size))
    p95 = float(max(np.percentile(da, 95), np.percentile(db, 95)))
    return mean, p95


def compare(test: np.ndarray | None, ref: np.ndarray, spacing: tuple[float, float, float], *,
            structure: str, method: str = "printpipe", reference: str = "expert labels",
            slices: np.ndarray | None = None, swapped: bool = False) -> Score:
    """Score one mask against its reference; with ``slices`` (indices along z) only on those slices.

    A missing ``test`` (``None``) scores Dice 0 and no distances.
    """
    vox_ml = float(np.prod(spacing)) / 1000.0
    if slices is not None:
        slices = np.asarray(slices)
        ref = ref[slices]
        test = None if test is None else test[slices]
    if test is None:
        return Score(structure, method, reference, 0.0, math.nan, math.nan,
                     np.count_nonzero(ref) * vox_ml, 0.0, swapped)
    box = _bbox(test, ref)
    if box is not None:       # everything below on the box holding both (z whole on a slab)
        if slices is not None:
            box = (slice(None),) + box[1:]
        test, ref = test[box], ref[box]
    mean, p95 = surface_distances(test, ref, spacing, open_z=slices is not None)
    return Score(structure, method, reference, dice(test, ref), mean, p95,
                 np.count_nonzero(ref) * vox_ml, np.count_nonzero(test) * vox_ml, swapped)


def compare_sides(tests: Mapping[str, np.ndarray], refs: Mapping[str, np.ndarray], base: str,
                  spacing: tuple[float, float, float], *, method: str = "printpipe",
                  reference: str = "expert labels", slices: Mapping[str, np.ndarray] | None = None
                  ) -> list[Score]:
    """Score ``<base>_left`` and ``<base>_right`` and flag a swap.

    A side is flagged swapped when the test mask of the *other* side has a higher Dice with this
    side's reference than its own test mask (on the same slices).
    """
    out = []
    for side, other in (("left", "right"), ("right", "left")):
        name = f"{base}_{side}"
        if name not in refs:
            continue
        sl = None if slices is None else slices.get(name)
        ref = refs[name] if sl is None else refs[name][sl]
        own, cross = tests.get(name), tests.get(f"{base}_{other}")
        own_d = 0.0 if own is None else dice(own if sl is None else own[sl], ref)
        cross_d = 0.0 if cross is None else dice(cross if sl is None else cross[sl], ref)
        out.append(compare(own, refs[name], spacing, structure=name, method=method, reference=reference,
                           slices=sl, swapped=cross_d > own_d))
    return out


def contour_slices(mask: np.ndarray) -> np.ndarray:
    """Indices of the slices a (rasterised) contour mask occupies."""
    return np.flatnonzero(mask.any(axis=(1, 2)))


# -- output -------------------------------------------------------------------------------------
def format_table(title: str, scores: Iterable[Score]) -> str:
    """A fixed-width text table of scores under a title line."""
    header = (f"  {'structure':<13} {'method':<15} {'Dice':>6} {'mean mm':>8} {'p95 mm':>7} "
              f"{'ref ml':>7} {'ours ml':>7} {'out ml':>7}  {'L/R':<4} reference")
    rows = [title, header]

    def fmt(v, w, p):
        return f"{v:>{w}.{p}f}" if math.isfinite(v) else f"{'-':>{w}}"

    for s in scores:
        rows.append(f"  {s.structure:<13} {s.method:<15} {fmt(s.dice, 6, 3)} {fmt(s.mean_mm, 8, 2)} "
                    f"{fmt(s.p95_mm, 7, 2)} {fmt(s.ref_ml, 7, 1)} {fmt(s.test_ml, 7, 1)} "
                    f"{fmt(s.outside_ml, 7, 1)}  "
                    f"{'SWAP' if s.swapped else 'ok':<4} {s.reference}")
    return "\n".join(rows)


# -- one case -----------------------------------------------------------------------------------
#: Peer segmentations in the pelvic RTSTRUCTs, compared with the manual femur contours beside ours.
PEER_ROIS: dict[str, dict[str, str]] = {
    "deep-learning": {"femur_left": "Femur_Head_L_DL", "femur_right": "Femur_Head_R_DL"},
    "model-based": {"femur_left": "FemoralHead (Left)_MBS", "femur_right": "FemoralHead (Right)_MBS"},
}


def score_parts(parts: Mapping[str, np.ndarray], volume: Volume, *, labels_mhd: str | os.PathLike | None = None,
                rtstruct: str | os.PathLike | None = None, manual: Mapping[str, str] | None = None,
                peers: bool = True) -> dict[str, list[Score]]:
    """Score part masks (on ``volume``'s grid) against expert labels and/or manual RTSTRUCT femurs.

    Parameters
    ----------
    parts : dict[str, bool ndarray]
        Part name -> mask (from :func:`part_masks`); ``pelvis`` or ``hip_left``/``hip_right``,
        ``sacrum``, ``femur_left``/``femur_right``, ``spine``.
    labels_mhd : path, optional
        Expert label map (see :func:`expert_masks`).
    rtstruct, manual : optional
        The structure set and the ROI names of its manual femurs ``{"femur_left": ..., "femur_right": ...}``.
    peers : bool
        Also score the deep-learning and model-based femur ROIs (:data:`PEER_ROIS`) found in the file.

    Returns
    -------
    dict[str, list[Score]]
        ``"labels"`` and/or ``"contours"``: the scores of each table.
    """
    tables: dict[str, list[Score]] = {}
    parts = dict(parts)
    if "pelvis" not in parts and ("hip_left" in parts or "hip_right" in parts):
        parts["pelvis"] = parts.get("hip_left", False) | parts.get("hip_right", False)
    spacing = volume.spacing
    if labels_mhd is not None:
        ref, info = expert_masks(labels_mhd, volume)
        log.info("expert labels split at x = %.2f mm (%s)", info["midline_x_mm"], info["midline"])
        rows = [compare(parts.get("pelvis"), ref["pelvis"], spacing, structure="pelvis")]
        rows += compare_sides(parts, ref, "hip", spacing)
        rows.append(compare(parts.get("sacrum"), ref["sacrum"], spacing, structure="sacrum"))
        rows += compare_sides(parts, ref, "femur", spacing)
        if "spine" in ref:
            rows.append(compare(parts.get("spine"), ref["spine"], spacing, structure="spine"))
        bones = ref["pelvis"] | ref["sacrum"] | ref["femur_left"] | ref["femur_right"]
        if "spine" in ref:
            bones |= ref["spine"]
        rows = [dataclasses.replace(s, outside_ml=_outside_ml(parts.get(s.structure), bones, spacing))
                for s in rows]
        tables["labels"] = rows
    if rtstruct is not None and manual:
        from printpipe.labels import rtstruct_masks

        ref = {k: m for k, m in zip(manual, rtstruct_masks(rtstruct, volume, names=list(manual.values())).values())}
        slices = {k: contour_slices(m) for k, m in ref.items()}
        rows = compare_sides(parts, ref, "femur", spacing, reference="manual " + "/".join(manual.values()),
                             slices=slices)
        if peers:
            rows += _peer_scores(rtstruct, volume, ref, slices, manual)
        tables["contours"] = rows
    return tables


def _outside_ml(mask: np.ndarray | None, bones: np.ndarray, spacing) -> float:
    """cm^3 of ``mask`` farther than :data:`OUTSIDE_MM` from ``bones`` (on a box around the mask)."""
    import edt

    tight = None if mask is None else _bbox(mask)
    if tight is None:
        return 0.0
    pad = [math.ceil(OUTSIDE_MM / s) + 1 for s in spacing]
    box = tuple(slice(max(b.start - p, 0), b.stop + p) for b, p in zip(tight, pad))
    # the box reaches OUTSIDE_MM beyond the mask, so a bone outside it is farther than that
    if not bones[box].any():
        return float(np.count_nonzero(mask)) * float(np.prod(spacing)) / 1000.0
    dist = edt.edt(np.ascontiguousarray(~bones[box]), anisotropy=tuple(map(float, spacing)), black_border=False)
    return float(np.count_nonzero(mask[box] & (dist > OUTSIDE_MM))) * float(np.prod(spacing)) / 1000.0


def _peer_scores(rtstruct, volume, ref, slices, manual) -> list[Score]:
    import pydicom

    from printpipe.labels import rtstruct_masks

    ds = pydicom.dcmread(rtstruct, stop_before_pixels=True)
    have = {str(r.ROIName).casefold(): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    rows = []
    for method, rois in PEER_ROIS.items():
        names = {k: have[v.casefold()] for k, v in rois.items() if v.casefold() in have and k in ref}
        if not names:
            continue
        masks = rtstruct_masks(rtstruct, volume, names=list(names.values()))
        peer = {k: masks[v] for k, v in names.items()}
        rows += compare_sides(peer, ref, "femur", volume.spacing, method=method,
                              reference="manual " + "/".join(manual[k] for k in names), slices=slices)
    return rows


#: The development cases with ground truth in ``../shared/realdata`` (folder names inside it).
CASES: dict[str, dict] = {
    "ref002": {"ct": "pelvic-ref002-ct", "labels": "pelvic-ref002-labels/label.mhd",
               "rtstruct": "pelvic-ref002-labels/RS.dcm",
               "manual": {"femur_left": "FemoreSinistro", "femur_right": "FemoreDestro"}},
    "ref003": {"ct": "pelvic-ref003-ct", "labels": None, "rtstruct": "pelvic-ref003-rtstruct/RS.dcm",
               "manual": {"femur_left": "femoreSin", "femur_right": "femoreDes"}},
}

#: the parts scored (others, such as ``fragment_N``, are ignored)
SCORED_PARTS = ("pelvis", "hip_left", "hip_right", "sacrum", "femur_left", "femur_right", "spine")


def run_case(case: str, realdata: str | os.PathLike, outdir: str | os.PathLike, config=None, *,
             peers: bool = True) -> tuple[dict[str, list[Score]], dict]:
    """Run the whole pipeline on one development case and score its exported parts.

    Parameters
    ----------
    case : str
        A key of :data:`CASES`.
    realdata : path
        The folder holding the cases (``../shared/realdata``).
    outdir : path
        Where the pipeline writes (a temporary folder).
    config : PipelineConfig, optional
        Default: ``--split-hemipelvis``, STL only, no report (the meshes are what is measured).

    Returns
    -------
    tables : dict[str, list[Score]]
        See :func:`score_parts`.
    info : dict
        ``parts`` (every part the run exported), ``pipeline_s``, ``score_s``, ``timings_s``.
    """
    import time

    from printpipe.dicom import read_series
    from printpipe.export import ExportConfig
    from printpipe.pipeline import PipelineConfig, run
    from printpipe.segment import SegmentConfig

    if case not in CASES:
        raise InputError(f"unknown case {case!r}; choose one of {', '.join(CASES)}")
    spec = CASES[case]
    realdata = Path(realdata)
    if config is None:
        config = PipelineConfig(segment=SegmentConfig(split_hemipelvis=True),
                                export=ExportConfig(formats=("stl",)), report=False)
    t0 = time.perf_counter()
    result = run(realdata / spec["ct"], outdir, config)
    t1 = time.perf_counter()
    volume = read_series(realdata / spec["ct"], config.dicom)
    parts = part_masks(outdir, volume, names=SCORED_PARTS)
    tables = score_parts(parts, volume,
                         labels_mhd=None if spec["labels"] is None else realdata / spec["labels"],
                         rtstruct=realdata / spec["rtstruct"], manual=spec["manual"], peers=peers)
    t2 = time.perf_counter()
    info = {"parts": [p["name"] for p in result.manifest["parts"]], "pipeline_s": round(t1 - t0, 2),
            "score_s": round(t2 - t1, 2), "timings_s": dict(result.manifest.get("timings_s", {}))}
    return tables, info
