"""Mesh writers (binary STL, 3MF with named coloured parts, OBJ, PLY) and coordinate frames.

All lengths are millimetres. Every file is written through :mod:`printpipe._atomic`, so a failure
never leaves a half-written model behind. Nothing patient-identifying is written: the STL header
and the 3MF metadata hold the frame, the software version, the parameters and a hashed series UID.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import trimesh
from numba import njit

from printpipe._atomic import atomic_path
from printpipe._version import __version__
from printpipe.errors import InputError, MeshError

__all__ = [
    "ExportConfig",
    "PART_COLORS",
    "part_color",
    "write_stl",
    "write_stl_files",
    "write_3mf",
    "write_obj",
    "write_ply",
    "to_plate_frame",
    "emboss_label",
    "FORMATS",
    "warmup",
]

log = logging.getLogger(__name__)

FORMATS = ("stl", "3mf", "obj", "ply")
FRAMES = ("patient", "plate")


class _PartColors(dict):
    """Part name -> (r, g, b) 0..255; ``get``/``[]`` also colour ``bone_N``, ``other_N`` and unknown names."""

    # distinct from the named parts' colours below
    _PALETTE = ((240, 228, 66), (200, 70, 70), (150, 100, 200), (110, 200, 110), (255, 150, 190),
                (80, 200, 200), (200, 150, 80), (140, 140, 140))

    def __missing__(self, name: str) -> tuple[int, int, int]:
        base = str(name).replace("_mirrored", "")
        if base != name and base in self:
            return dict.__getitem__(self, base)
        m = re.fullmatch(r"(?:fragment|bone|other)_(\d+)", base)
        idx = int(m.group(1)) if m else sum(base.encode())
        return self._PALETTE[idx % len(self._PALETTE)]

    def get(self, name, default=None):  # noqa: D401 - dict API
        return self[name]


#: Colour of each named part (RGB 0..255), colour-blind-friendly where parts sit side by side.
PART_COLORS: dict[str, tuple[int, int, int]] = _PartColors({
    "bone": (227, 218, 201),
    "pelvis": (227, 218, 201),
    "hip_left": (86, 180, 233),
    "hip_right": (230, 159, 0),
    "sacrum": (0, 158, 115),
    "femur_left": (0, 114, 178),
    "femur_right": (213, 94, 0),
    "spine": (204, 121, 167),
    "skull": (227, 218, 201),
})


def part_color(name: str) -> tuple[int, int, int]:
    """RGB (0..255) of a part name (``bone_N``, ``other_N`` and unknown names get a palette colour)."""
    return tuple(int(c) for c in PART_COLORS[name])  # type: ignore[return-value]


@dataclass(frozen=True)
class ExportConfig:
    """What to write and in which frame.

    Parameters
    ----------
    formats : tuple of str
        Any of ``"stl"``, ``"3mf"``, ``"obj"``, ``"ply"`` (``--format``). Default STL and 3MF.
    frame : str
        ``"patient"`` (DICOM LPS, mm; lines up with the CT and planning software) or ``"plate"``
        (translated so that the parts rest on z = 0 centred on x = y = 0) (``--frame``).
    label : str or None
        Short user text (at most 16 characters, letters, digits, space and ``-_.#``) embossed on
        each part with an L/R marker (``--label``). Never patient data.
    """

    formats: tuple = ("stl", "3mf")
    frame: str = "patient"
    label: str | None = None

    def __post_init__(self) -> None:
        formats = tuple(str(f).lower().strip().lstrip(".") for f in self.formats)
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            raise InputError(f"ExportConfig.formats (--format) must be a comma list of {','.join(FORMATS)}; "
                             f"got {','.join(self.formats) or 'nothing'}")
        object.__setattr__(self, "formats", tuple(dict.fromkeys(formats)))
        if self.frame not in FRAMES:
            raise InputError(f"ExportConfig.frame (--frame) must be 'patient' or 'plate'; got {self.frame!r}")
        if self.label is not None:
            if not re.fullmatch(r"[A-Za-z0-9 _.#-]{1,16}", self.label):
                raise InputError(f"ExportConfig.label (--label) must be 1-16 characters of letters, digits, "
                                 f"space or -_.#; got {self.label!r}. Never put patient names or IDs on a model")


# -- frames ----------------------------------------------------------------------------------------

def to_plate_frame(parts: Mapping[str, trimesh.Trimesh] | trimesh.Trimesh):
    """Move parts onto a build plate: lowest point at z = 0, bounding box centred on x = y = 0.

    One translation is applied to all parts, so they keep their relative positions.

    Parameters
    ----------
    parts : dict of name -> Trimesh, or a Trimesh

    Returns
    -------
    parts : same kind as given
        Translated copies.
    transform : (4, 4) float ndarray
        The homogeneous transform applied (patient LPS mm -> plate mm).
    """
    single = isinstance(parts, trimesh.Trimesh)
    items = {"part": parts} if single else dict(parts)
    if not items:
        raise InputError("to_plate_frame needs at least one part")
    lo = np.min([np.asarray(m.vertices).min(axis=0) for m in items.values()], axis=0)
    hi = np.max([np.asarray(m.vertices).max(axis=0) for m in items.values()], axis=0)
    t = np.eye(4)
    t[:3, 3] = [-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]]
    moved = {k: trimesh.Trimesh(vertices=np.asarray(m.vertices) + t[:3, 3], faces=m.faces, process=False)
             for k, m in items.items()}
    return (moved["part"] if single else moved), t


# -- writers ---------------------------------------------------------------------------------------

def write_stl(path, parts, frame_note: str = "LPS patient frame, mm", space: str | None = "LPS") -> Path:
    """Write one binary STL holding all parts (millimetres).

    Parameters
    ----------
    path : path-like
    parts : dict of name -> Trimesh, or a Trimesh
    frame_note : str
        Frame description for the 80-byte header (ASCII, truncated); no patient data.
    space : str or None
        ``"LPS"`` writes ``SPACE=LPS`` into the header, 3D Slicer's tag for the coordinate system of
        the points (Slicer reads it and places the model on the CT). ``None`` (``--frame plate``)
        writes no ``SPACE=`` tag, so Slicer does not claim the build-plate frame is the patient's.

    Returns
    -------
    Path written.

    Notes
    -----
    The header reads ``printpipe <version> | SPACE=LPS | <frame_note> | <part names>``; it never starts with
    ``solid`` (some readers would take the file for ASCII STL). Facet normals are recomputed from
    the winding.
    """
    items = _parts(parts)
    return write_stl_files({path: list(items)}, items, frame_note=frame_note, space=space)[0]


def write_stl_files(targets: Mapping[object, list[str]], parts, frame_note: str = "LPS patient frame, mm",
                    space: str | None = "LPS") -> list[Path]:
    """Write several binary STLs, each holding some of ``parts``, as :func:`write_stl` would.

    Parameters
    ----------
    targets : mapping of path-like -> list of part names
        The files to write and the parts each holds, in that order (a part may go into several
        files, e.g. ``parts/pelvis.stl`` and ``model.stl``).
    parts : dict of name -> Trimesh
    frame_note, space
        As for :func:`write_stl`.

    Returns
    -------
    list of Path
        The files written, in the order of ``targets``.

    Notes
    -----
    Each part's 50-byte triangle records (float32 normal and corners) are computed once and reused
    by every file that holds the part: the bytes are those of one :func:`write_stl` call per file.
    """
    items = _parts(parts)
    records: dict[str, np.ndarray] = {}
    written = []
    space_tag = f"SPACE={space} | " if space else ""     # early in the header: it is cut at 80 bytes
    for path, names in targets.items():
        names = list(names)
        if not names:
            raise InputError(f"nothing to write into {Path(path).name}: no parts given")
        for name in names:
            if name not in records:
                records[name] = _stl_records(items[name])
        header_text = f"printpipe {__version__} | {space_tag}{frame_note} | {','.join(names)}"
        header = header_text.encode("ascii", "replace")[:80].ljust(80, b" ")
        count = sum(len(records[name]) for name in names)
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(header)
                fh.write(np.uint32(count).tobytes())
                for name in names:
                    fh.write(memoryview(records[name]).cast("B"))
        log.info("wrote %s (%d triangles)", path.name, count)
        written.append(path)
    return written


_STL_RECORD = np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])


def _stl_records(mesh: trimesh.Trimesh) -> np.ndarray:
    """Binary STL records of a mesh's triangles: the facet normal (unit, from the winding; zero for a
    degenerate face) and the three corners, float32, attribute 0."""
    tris = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces)]
    normals = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    length = np.linalg.norm(normals, axis=1)
    normals = np.divide(normals, length[:, None], out=np.zeros_like(normals), where=length[:, None] > 0)
    rec = np.zeros(len(tris), dtype=_STL_RECORD)
    rec["n"] = normals
    rec["v"] = tris
    return rec


def write_3mf(path, parts, metadata: Mapping[str, object] | None = None) -> Path:
    """Write a 3MF package: every part a named object with its own colour, plus metadata.

    Parameters
    ----------
    path : path-like
    parts : dict of name -> Trimesh, or a Trimesh
    metadata : mapping
        Written as ``<metadata>`` entries: the 3MF standard names (Title, Designer, Description,
        Copyright, LicenseTerms, Rating, CreationDate, ModificationDate, Application) as they are,
        anything else under the ``printpipe:`` namespace (units, frame, software, parameters,
        series_uid_hash ...). Values are converted with ``str``.

    Returns
    -------
    Path written.

    Notes
    -----
    3MF core specification 1.3: units ``millimeter``; one ``<basematerials>`` group with a
    ``<base>`` per part (``displaycolor`` #RRGGBB); each ``<object>`` has ``name``, ``pid`` and
    ``pindex`` pointing at its colour; a ``<build>`` item per object (identity transform: the
    coordinates are those of the chosen frame).
    """
    items = _parts(parts)
    meta = dict(metadata or {})
    standard = {"Title", "Designer", "Description", "Copyright", "LicenseTerms", "Rating",
                "CreationDate", "ModificationDate", "Application"}
    meta.setdefault("Application", f"printpipe {__version__}")
    meta.setdefault("units", "millimeter")
    out = _ByteWriter()
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write('<model unit="millimeter" xml:lang="en-US" '
              'xmlns="http://schemas.microsoft.com/3dmanufacturing/core/2015/02" '
              'xmlns:printpipe="https://github.com/printpipe/printpipe/3mf">\n')
    for key, value in meta.items():
        name = key if key in standard else f"printpipe:{re.sub(r'[^A-Za-z0-9_]', '_', str(key))}"
        out.write(f' <metadata name={quoteattr(name)}>{escape(str(value))}</metadata>\n')
    out.write(' <resources>\n  <basematerials id="1">\n')
    for name in items:
        r, g, b = part_color(name)
        out.write(f'   <base name={quoteattr(name)} displaycolor="#{r:02X}{g:02X}{b:02X}FF"/>\n')
    out.write('  </basematerials>\n')
    for i, (name, mesh) in enumerate(items.items()):
        oid = i + 2
        out.write(f'  <object id="{oid}" name={quoteattr(name)} type="model" pid="1" pindex="{i}">\n'
                  '   <mesh>\n    <vertices>\n')
        v = np.asarray(mesh.vertices, dtype=np.float64)
        out.write_rows('     <vertex x="%.5f" y="%.5f" z="%.5f"/>', v)
        out.write('    </vertices>\n    <triangles>\n')
        out.write_rows('     <triangle v1="%d" v2="%d" v3="%d"/>', np.asarray(mesh.faces, dtype=np.int64))
        out.write('    </triangles>\n   </mesh>\n  </object>\n')
    out.write(' </resources>\n <build>\n')
    for i in range(len(items)):
        out.write(f'  <item objectid="{i + 2}"/>\n')
    out.write(' </build>\n</model>\n')
    content_types = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">\n'
        ' <Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>\n'
        ' <Default Extension="model" ContentType="application/vnd.ms-package.3dmanufacturing-3dmodel+xml"/>\n'
        '</Types>\n')
    rels = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">\n'
        ' <Relationship Target="/3D/3dmodel.model" Id="rel0" '
        'Type="http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"/>\n'
        '</Relationships>\n')
    path = Path(path)
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=2) as zf:
            zf.writestr("[Content_Types].xml", content_types)
            zf.writestr("_rels/.rels", rels)
            out.write_to_zip(zf, "3D/3dmodel.model")
    log.info("wrote %s (%d objects)", path.name, len(items))
    return path


def write_obj(path, parts) -> Path:
    """Write a Wavefront OBJ with one ``o``/``g`` group per part and a companion ``.mtl`` of colours.

    Returns the OBJ path. The material library sits beside it with the same stem.
    """
    items = _parts(parts)
    path = Path(path)
    mtl_path = path.with_suffix(".mtl")
    out = _ByteWriter()
    out.write(f"# printpipe {__version__}; millimetres\nmtllib {mtl_path.name}\n")
    mtl = io.StringIO()
    mtl.write(f"# printpipe {__version__}\n")
    offset = 1
    for name, mesh in items.items():
        r, g, b = part_color(name)
        mtl.write(f"newmtl {name}\nKd {r / 255:.4f} {g / 255:.4f} {b / 255:.4f}\n\n")
        out.write(f"o {name}\ng {name}\nusemtl {name}\n")
        out.write(_format_rows_bytes("v %.5f %.5f %.5f", np.asarray(mesh.vertices, dtype=np.float64)))
        out.write(_format_rows_bytes("f %d %d %d", np.asarray(mesh.faces, dtype=np.int64) + offset))
        offset += len(mesh.vertices)
    with atomic_path(mtl_path) as tmp:
        tmp.write_text(mtl.getvalue(), encoding="ascii")
    with atomic_path(path) as tmp:
        tmp.write_bytes(out.getvalue())
    return path


def write_ply(path, parts) -> Path:
    """Write one binary little-endian PLY of all parts, with per-vertex part colours (uchar RGB)."""
    items = _parts(parts)
    verts, faces, colors = [], [], []
    offset = 0
    for name, mesh in items.items():
        v = np.asarray(mesh.vertices, dtype=np.float32)
        verts.append(v)
        faces.append(np.asarray(mesh.faces, dtype=np.int32) + offset)
        colors.append(np.tile(np.asarray(part_color(name), dtype=np.uint8), (len(v), 1)))
        offset += len(v)
    v, f, c = np.concatenate(verts), np.concatenate(faces), np.concatenate(colors)
    vrec = np.zeros(len(v), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                   ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vrec["x"], vrec["y"], vrec["z"] = v[:, 0], v[:, 1], v[:, 2]
    vrec["red"], vrec["green"], vrec["blue"] = c[:, 0], c[:, 1], c[:, 2]
    frec = np.zeros(len(f), dtype=[("n", "u1"), ("idx", "<i4", 3)])
    frec["n"] = 3
    frec["idx"] = f
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"comment printpipe {__version__}; millimetres; parts {','.join(items)}\n"
        f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n")
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(vrec.tobytes())
            fh.write(frec.tobytes())
    return path


# -- label -----------------------------------------------------------------------------------------

def emboss_label(mesh: trimesh.Trimesh, text: str, side_marker: str | None = None, *,
                 height_mm: float = 6.0, depth_mm: float = 0.8) -> trimesh.Trimesh:
    """Emboss a short text (and an L/R marker) on the flattest large area of a mesh.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        Closed mesh (mm).
    text : str
        Short user text (never patient data); validated like :class:`ExportConfig.label`.
    side_marker : {"L", "R", None}
        Appended as `` L``/`` R`` (the patient's side).
    height_mm, depth_mm : float
        Letter height, and how far the letters stand out of the surface.

    Returns
    -------
    trimesh.Trimesh
        The union of the mesh and the raised letters (manifold3d boolean), closed.

    Notes
    -----
    The site is the surface point whose surroundings (a disc the size of the label) hold the most
    area facing within ~25 degrees of its normal; the letters are extruded from matplotlib's
    ``TextPath`` polygons along the mean normal there, from 0.5 mm below the lowest point of the
    surface under their footprint to ``depth_mm`` above its highest point (so they fuse with a
    curved surface), and united with the mesh by manifold3d.
    """
    import manifold3d as m3d
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    ExportConfig(label=text)  # same validation as --label
    if side_marker not in (None, "L", "R"):
        raise InputError(f"side_marker must be 'L', 'R' or None; got {side_marker!r}")
    full = text + (f" {side_marker}" if side_marker else "")
    tp = TextPath((0, 0), full, size=height_mm, prop=FontProperties(family="DejaVu Sans", weight="bold"))
    polys = [np.asarray(p) for p in tp.to_polygons(closed_only=True) if len(p) >= 3]
    if not polys:
        raise MeshError(f"label {text!r} produced no outline to emboss")
    allp = np.concatenate(polys)
    shift = (allp.min(axis=0) + allp.max(axis=0)) / 2
    half = (allp.max(axis=0) - allp.min(axis=0)) / 2  # half width, half height of the text (mm)
    reach = float(np.hypot(*half)) + 1.0

    normals = np.asarray(mesh.face_normals)
    areas = np.asarray(mesh.area_faces)
    centers = np.asarray(mesh.triangles_center)
    # 1. site: the face whose surroundings (within the label's reach) hold the most area facing
    #    the same way (normals within ~25 degrees), among up to 3000 candidate faces
    rng = np.random.default_rng(0)
    cand = rng.choice(len(centers), size=min(3000, len(centers)), replace=False, p=areas / areas.sum())
    from scipy.spatial import cKDTree

    tree = cKDTree(centers)
    best, best_score = int(cand[0]), -1.0
    for fi in cand:
        near = np.asarray(tree.query_ball_point(centers[fi], reach), dtype=np.int64)
        aligned = near[normals[near] @ normals[fi] > 0.9]
        score = float(areas[aligned].sum())
        if score > best_score:
            best, best_score = int(fi), score
    near = np.asarray(tree.query_ball_point(centers[best], reach), dtype=np.int64)
    near = near[normals[near] @ normals[best] > 0.9]
    n = (normals[near] * areas[near, None]).sum(axis=0)
    n /= np.linalg.norm(n)
    origin = centers[best]
    ref = np.array([0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(ref, n)
    u /= np.linalg.norm(u)
    w = np.cross(n, u)
    # 2. heights of the outward-facing surface under the label's footprint: the letters start
    #    0.5 mm below its lowest point and stand depth_mm above its highest, so they are fused
    #    with the surface everywhere
    rel = centers - origin
    pu, pw, ph = rel @ u, rel @ w, rel @ n
    under = ((np.abs(pu) <= half[0] + 0.5) & (np.abs(pw) <= half[1] + 0.5) & (normals @ n > 0.3)
             & (np.abs(ph) < 5.0))  # the surface near the site, not the far side of the bone
    h = ph[under] if under.any() else np.zeros(1)
    h_lo, h_hi = float(h.min()), float(h.max())
    if h_hi - h_lo > 3.0:
        log.warning("label site is not flat: the surface under %r varies by %.1f mm", full, h_hi - h_lo)
    sink = 0.5
    cs = m3d.CrossSection([(p[:-1] if np.allclose(p[0], p[-1]) else p) - shift for p in polys],
                          m3d.FillRule.EvenOdd)
    letters = m3d.Manifold.extrude(cs, (h_hi - h_lo) + depth_mm + sink)
    lm = letters.to_mesh()
    lv = np.asarray(lm.vert_properties)[:, :3]
    rot = np.column_stack([u, w, n])
    lv = (lv + np.array([0.0, 0.0, h_lo - sink])) @ rot.T + origin
    body = _to_manifold(mesh)
    letters_m = _to_manifold(trimesh.Trimesh(lv, np.asarray(lm.tri_verts), process=False))
    union = (body + letters_m).to_mesh()
    out = trimesh.Trimesh(np.asarray(union.vert_properties)[:, :3].astype(np.float64),
                          np.asarray(union.tri_verts, dtype=np.int64), process=False)
    if not out.is_watertight:
        raise MeshError(f"embossing {full!r} gave an open mesh; try a shorter --label or none")
    return out


def _to_manifold(mesh: trimesh.Trimesh):
    import manifold3d as m3d

    m = m3d.Manifold(m3d.Mesh(vert_properties=np.asarray(mesh.vertices, dtype=np.float32),
                              tri_verts=np.asarray(mesh.faces, dtype=np.uint32)))
    if m.status() != m3d.Error.NoError:
        raise MeshError(f"manifold3d rejected the mesh ({m.status()}); run repair() first")
    return m


# -- helpers ---------------------------------------------------------------------------------------

def _parts(parts) -> dict[str, trimesh.Trimesh]:
    if isinstance(parts, trimesh.Trimesh):
        parts = {"part": parts}
    items = dict(parts)
    if not items:
        raise InputError("nothing to write: no parts given")
    for name, m in items.items():
        if len(m.faces) == 0:
            raise MeshError(f"part {name!r} has no faces; nothing to write")
    return items


def _format_rows(fmt: str, rows: np.ndarray) -> str:
    """Format each row with ``fmt`` (one line per row), numpy's savetxt without a file."""
    if len(rows) == 0:
        return ""
    buf = io.StringIO()
    np.savetxt(buf, rows, fmt=fmt, delimiter="", newline="\n",
               header="", comments="")
    return buf.getvalue()


class _ByteWriter:
    """Collects text (UTF-8 encoded) and bytes pieces; ``getvalue`` joins them once, and
    ``write_to_zip`` streams them into a zip entry without joining them."""

    #: rows formatted at a time by ``write_rows`` (the formatter's scratch buffer is ~100 bytes a row)
    ROWS = 100_000

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, s: str | bytes) -> None:
        self._parts.append(s.encode("utf-8") if isinstance(s, str) else bytes(s))

    def write_rows(self, fmt: str, rows: np.ndarray) -> None:
        """``write(_format_rows_bytes(fmt, rows))``, the same bytes, formatted ``ROWS`` rows at a time."""
        for start in range(0, len(rows), self.ROWS):
            self._parts.append(_format_rows_bytes(fmt, rows[start:start + self.ROWS]))

    def getvalue(self) -> bytes:
        return b"".join(self._parts)

    def write_to_zip(self, zf: zipfile.ZipFile, name: str) -> None:
        """``zf.writestr(name, self.getvalue())``, byte for byte, without the joined copy.

        The entry is set up as ``writestr`` sets it up (time, compression, permissions, size, so
        also the ZIP64 choice); deflate's output does not depend on how its input is cut.
        """
        import time as _time

        zinfo = zipfile.ZipInfo(filename=name, date_time=_time.localtime(_time.time())[:6])
        zinfo.compress_type = zf.compression
        zinfo._compresslevel = zf.compresslevel
        zinfo.external_attr = 0o600 << 16
        zinfo.file_size = sum(len(p) for p in self._parts)
        with zf.open(zinfo, mode="w") as dest:
            for piece in self._parts:
                dest.write(piece)


_FMT_SPEC = re.compile(r"%(?:\.(\d+)f|d)")


def _format_rows_bytes(fmt: str, rows: np.ndarray) -> bytes:
    """ASCII bytes of each row formatted with ``fmt`` plus a newline: ``fmt % tuple(row)`` for
    every row, byte for byte, for formats made of ``%d`` and ``%.Nf`` fields only.

    Floats are rounded to integers of 10^-N units in numpy and the digits written by a compiled
    loop (numpy's ``savetxt`` formats every value in Python: seconds per million rows). Values
    whose scaled product lies within a few ulps of a rounding tie are formatted by Python itself,
    so that the result always equals C's correctly rounded ``printf``.
    """
    rows = np.asarray(rows)
    if rows.ndim == 1:
        rows = rows[:, None]
    specs = _FMT_SPEC.findall(fmt)
    pieces = _FMT_SPEC.split(fmt)[::2]
    if len(rows) == 0:
        return b""
    if len(specs) != rows.shape[1] or "%" in "".join(pieces) or not np.isfinite(rows).all():
        return _format_rows(fmt, rows).encode("ascii")  # general case: numpy's savetxt
    ncol = rows.shape[1]
    decimals = np.array([int(s) if s != "" else -1 for s in specs], dtype=np.int64)
    digits = np.empty(rows.shape, dtype=np.int64)
    neg = np.zeros(rows.shape, dtype=np.bool_)
    for c in range(ncol):
        col = rows[:, c]
        if decimals[c] < 0:  # %d: truncation toward zero, like printf of int(x)
            ic = col.astype(np.int64) if col.dtype.kind in "iub" else np.trunc(col).astype(np.int64)
            neg[:, c] = ic < 0
            digits[:, c] = np.abs(ic)
            continue
        x = col.astype(np.float64)
        scaled = np.abs(x) * 10.0 ** int(decimals[c])
        if scaled.max(initial=0.0) >= 2.0 ** 53:  # too large to round exactly in float64
            return _format_rows(fmt, rows).encode("ascii")
        r = np.rint(scaled)
        digits[:, c] = r.astype(np.int64)
        near_tie = np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) <= 8 * np.spacing(np.maximum(scaled, 1.0))
        for i in np.flatnonzero(near_tie):  # let C's printf decide (exact decimal rounding)
            s = f"%.{int(decimals[c])}f" % abs(float(x[i]))
            digits[i, c] = int(s.replace(".", ""))
        neg[:, c] = np.signbit(x)
    lit = [p.encode("ascii") for p in pieces[:-1]] + [(pieces[-1] + "\n").encode("ascii")]
    lit_bytes = np.frombuffer(b"".join(lit), dtype=np.uint8)
    lit_start = np.cumsum([0] + [len(p) for p in lit]).astype(np.int64)
    per_row = int(lit_start[-1]) + ncol * 22  # sign, 19 digits, point, spare
    buf = np.empty(len(rows) * per_row, dtype=np.uint8)
    n = _write_rows(buf, digits, neg, decimals, lit_bytes, lit_start)
    return buf[:n].tobytes()


@njit(cache=True)
def _write_rows(buf, digits, neg, decimals, lit, lit_start):  # pragma: no cover - numba
    """Write rows of (sign, integer of 10^-decimals units) between the literal pieces; returns length."""
    pos = 0
    tmp = np.empty(24, dtype=np.uint8)
    for i in range(digits.shape[0]):
        for c in range(digits.shape[1] + 1):
            for k in range(lit_start[c], lit_start[c + 1]):
                buf[pos] = lit[k]
                pos += 1
            if c == digits.shape[1]:
                break
            v = digits[i, c]
            dec = decimals[c]
            if neg[i, c]:
                buf[pos] = 45  # '-'
                pos += 1
            nd = 0
            while v > 0 or nd <= max(dec, 0):  # at least one digit before the point
                tmp[nd] = 48 + v % 10
                v //= 10
                nd += 1
            for k in range(nd - 1, -1, -1):
                if dec > 0 and k == dec - 1:
                    buf[pos] = 46  # '.'
                    pos += 1
                buf[pos] = tmp[k]
                pos += 1
    return pos


def warmup() -> None:
    """Compile (or load from numba's cache) the row writer of the 3MF/OBJ exporters.

    Call it once before starting parallel workers, so that they do not all compile it at once.
    """
    _format_rows_bytes("%.5f %d", np.array([[1.5, 2.0]]))
