"""The QA report (``OUTDIR/report.html`` plus ``OUTDIR/pictures/*.png``) and the manifest schema check.

The report is one self-contained HTML file (pictures embedded as base64 PNGs) that a surgeon or
engineer can open anywhere: CT slices in a bone window with every part's contour in its colour,
3-D views of each part, and tables of the figures in the manifest (input triage, mesh checks,
fidelity, print summary, warnings). It reads only the manifest, the volume's HU grid and geometry,
the label grid and the meshes: no patient identifiers can reach it.

3-D views are rendered off-screen with PyVista/VTK. VTK 9.4+ wheels pick EGL when there is no X
display; on Debian that needs ``libegl1`` and ``libgl1-mesa-dri`` (plus ``libegl-mesa0``, pulled in
by them), or OSMesa (``libosmesa6``) for pure software rendering. Whether rendering works is probed
once per process in a child process (a crash there cannot take the pipeline down), or in the report
worker itself, which is such a child (:func:`probe_rendering_here`); when it does not,
the views are drawn with matplotlib from a decimated mesh and the report says so.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from printpipe._atomic import atomic_path, atomic_write_text
from printpipe._memory import release_free_memory
from printpipe._version import __version__
from printpipe.errors import PrintpipeError
from printpipe.i18n import N_, current_lang, get_translator, normalize_lang, part_label, translate_message

__all__ = ["write_report", "draw_pictures", "merge_pictures", "slice_planes", "validate_manifest", "load_schema",
           "render_backend", "BONE_WINDOW"]

log = logging.getLogger(__name__)

#: (level, width) HU of the bone window used for the slice pictures.
BONE_WINDOW = (400.0, 1800.0)

_SCHEMA_PATH = Path(__file__).with_name("schema") / "manifest.schema.json"
_RENDER_BACKEND: str | None = None
# zlib level of the PNGs: 3 writes them 3x faster than the default 6, about 8 % larger
_PNG_LEVEL = 3

# camera views in the LPS patient frame: (title, direction from the object to the camera, view-up);
# the titles are translated where they are drawn
_VIEWS = (
    ("anterior", (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    ("left lateral", (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    ("posterior", (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    ("superior", (0.0, 0.0, 1.0), (0.0, -1.0, 0.0)),
)
_VIEW_TITLES = {"anterior": N_("anterior"), "left lateral": N_("left lateral"),
                "posterior": N_("posterior"), "superior": N_("superior")}
_PLANE_TITLES = {"axial": N_("axial"), "coronal": N_("coronal"), "sagittal": N_("sagittal")}
# titles of pictures other stages hand over (``extra_images``), translated when shown
_EXTRA_TITLES = (N_("G-code toolpaths"),)


# -- manifest schema -------------------------------------------------------------------------------

def load_schema() -> dict:
    """The manifest JSON schema (draft 2020-12) shipped in ``printpipe/schema``."""
    return json.loads(_SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """Check a manifest against ``printpipe/schema/manifest.schema.json``.

    Parameters
    ----------
    manifest : dict
        What the pipeline is about to write to ``manifest.json``.

    Raises
    ------
    PrintpipeError
        Listing every violation (JSON path and message). With ``jsonschema`` not installed only
        the required top-level keys are checked (and a debug message says so).
    """
    schema = load_schema()
    # JSON round trip: tuples become lists and numpy scalars fail loudly, as they would on writing
    doc = json.loads(json.dumps(manifest))
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema is a dev dependency
        log.debug("jsonschema not installed: checking the required manifest keys only")
        missing = [k for k in schema["required"] if k not in doc]
        if missing:
            raise PrintpipeError(f"manifest is missing required keys {missing}; this is a printpipe bug")
        return
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}" for e in errors[:20]]
        raise PrintpipeError(f"manifest does not match its schema ({len(errors)} problem(s)); this is a "
                             "printpipe bug, please report it: " + "; ".join(lines))


# -- report ----------------------------------------------------------------------------------------

def write_report(outdir, *, manifest: Mapping[str, Any], volume, labels: np.ndarray, names: Mapping[int, str],
                 parts: Mapping[str, Any], extra_images: Mapping[str, Path] | None = None,
                 lang: str | None = None, pictures: Mapping[str, Any] | None = None) -> list[dict]:
    """Write ``report.html`` and ``pictures/*.png`` into ``outdir``.

    Parameters
    ----------
    outdir : path-like
        Case output (or staging) folder.
    manifest : dict
        The case manifest (see ``printpipe/schema/manifest.schema.json``); ``outputs`` may be empty.
    volume : Volume
        The CT volume the labels refer to.
    labels : (nz, ny, nx) int ndarray
        Part labels on ``volume``'s grid (0 = background).
    names : dict[int, str]
        Label -> part name.
    parts : dict[str, Trimesh]
        Final meshes in the LPS patient frame (mm).
    extra_images : dict[str, Path], optional
        Further pictures (title -> PNG), such as the slicer's toolpath picture; embedded as given.
    lang : {"zh", "en"}, optional
        Language of the report and of the text in its pictures; default
        :func:`printpipe.i18n.current_lang` (``--lang`` on the command line, else the locale).
        Chinese text in pictures needs a CJK font (``fonts-noto-cjk``); without one the pictures
        keep English text (and a warning says so) while the HTML is still in Chinese.
    pictures : dict, optional
        What :func:`draw_pictures` returned for these data in ``outdir`` (drawn earlier, e.g. in a
        worker process while the meshes were exported); None draws them here.

    Returns
    -------
    list of dict
        ``{"path": relative path, "kind": "report" | "png"}`` for each file written.

    Notes
    -----
    Slices are cut through the centre of the parts' bounding box, in the array axes closest to the
    patient axes, shown in radiological convention (patient's right on the left of the axial and
    coronal pictures, anterior at the top of the axial and on the left of the sagittal picture),
    with the pixel aspect ratio of the voxel spacing.
    """
    outdir = Path(outdir)
    lang = normalize_lang(lang) or current_lang()
    labels = np.asarray(labels)
    if labels.shape != tuple(volume.shape):
        raise PrintpipeError(f"report: labels shape {labels.shape} differs from the volume's {tuple(volume.shape)}")
    if pictures is None:
        pictures = draw_pictures(outdir, volume=volume, labels=labels, names=names, parts=parts, lang=lang)
    slice_pngs, view_pngs = dict(pictures["slices"]), dict(pictures["views"])
    notes, backend = list(pictures["notes"]), pictures["backend"]
    written = [{"path": png.relative_to(outdir).as_posix(), "kind": "png"}
               for png in (*slice_pngs.values(), *view_pngs.values())]

    doc = _html(manifest, slice_pngs, view_pngs, dict(extra_images or {}), notes, backend, lang)
    atomic_write_text(outdir / "report.html", doc)
    written.append({"path": "report.html", "kind": "report"})
    log.info("wrote report.html and %d pictures", len(written) - 1)
    return written


def draw_pictures(outdir, *, volume=None, labels: np.ndarray | None = None,
                  names: Mapping[int, str] | None = None, parts: Mapping[str, Any] | None = None,
                  lang: str | None = None, planes: Mapping[str, tuple] | None = None) -> dict[str, Any]:
    """Draw the report's pictures into ``outdir/pictures``: CT slices and/or 3-D views.

    The CT slices are drawn when ``volume`` (with ``labels`` and ``names``) is given, or the
    planes :func:`slice_planes` cut from them (``planes``, with ``names``), the 3-D views when
    ``parts`` is; the pipeline draws the slices as soon as segmentation ends and the views once
    the meshes are final, in a worker process (:mod:`printpipe._report_worker`). Other parameters
    are those of :func:`write_report`.

    Returns
    -------
    dict
        ``slices`` and ``views`` ({title: PNG path}), ``notes`` (list of str, for the report) and
        ``backend`` (``"pyvista"``, ``"matplotlib"``, or None when no 3-D view was drawn). Two
        results for the same ``outdir`` combine with :func:`merge_pictures`.
    """
    outdir = Path(outdir)
    lang = normalize_lang(lang) or current_lang()
    _t = get_translator(lang)
    pic_lang = lang
    if lang == "zh":
        from printpipe._fonts import cjk_font

        if cjk_font() is None:
            pic_lang = "en"  # tofu boxes would be worse than English
    pics = outdir / "pictures"
    pics.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    slice_pngs: dict[str, Path] = {}
    if volume is not None:
        labels = np.asarray(labels)
        if labels.shape != tuple(volume.shape):
            raise PrintpipeError(f"report: labels shape {labels.shape} differs from the volume's "
                                 f"{tuple(volume.shape)}")
        planes = slice_planes(volume, labels)
    if planes is not None:
        _start_render_probe()  # runs beside the slice pictures
        slice_pngs.update(_slice_pictures(planes, names or {}, pics, pic_lang))
        release_free_memory()
    if pic_lang != lang:
        notes.append(_t("The pictures keep English labels: no Chinese font was found (install "
                        "fonts-noto-cjk)."))
    view_pngs: dict[str, Path] = {}
    backend = None
    if parts is not None:
        backend = render_backend()
        if backend != "pyvista":
            notes.append(_t("3-D views drawn with matplotlib (PyVista/VTK off-screen rendering unavailable "
                            "here: install libegl1 and libgl1-mesa-dri, or libosmesa6)"))
        items = list(parts.items())
        groups = ([("all parts", dict(items))] if len(items) > 1 else []) + [(n, {n: m}) for n, m in items]
        view_cache: dict = {}  # drawing copies of the meshes, shared by the groups
        try:
            for title, group in groups:
                stem = "3d_all" if title == "all parts" else f"3d_{title}"
                png = pics / f"{stem}.png"
                try:
                    _render_views(group, png, backend, view_cache, pic_lang)
                except Exception as exc:  # a picture must never fail the case
                    if backend == "pyvista":
                        log.warning("PyVista rendering of %s failed (%s); using matplotlib", title, exc)
                        _render_views(group, png, "matplotlib", None, pic_lang)
                        notes.append(_t("3-D view of {part} drawn with matplotlib after a PyVista error").format(
                            part=part_label(title, lang)))
                    else:
                        raise
                view_pngs[title] = png
        finally:
            _close_views(view_cache)
    return {"slices": slice_pngs, "views": view_pngs, "notes": notes, "backend": backend}


def merge_pictures(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """One :func:`draw_pictures` result from two (slices from one call, views from another)."""
    notes = list(dict.fromkeys([*first["notes"], *second["notes"]]))
    return {"slices": {**first["slices"], **second["slices"]}, "views": {**first["views"], **second["views"]},
            "notes": notes, "backend": second["backend"] or first["backend"]}


# -- slices ----------------------------------------------------------------------------------------

def _canonical(volume, labels: np.ndarray):
    """Views of ``hu`` and ``labels`` with array axes ordered (z, y, x) = patient (S, P, L) increasing.

    Returns (hu, labels, spacing (dz, dy, dx)). Axes are matched by the largest direction
    component, so an oblique (tilted) grid is shown as its nearest axis-aligned cut.
    """
    direction = np.asarray(volume.direction, dtype=float)
    patient_axis, sign = {}, {}
    for a in range(3):  # array axis a has direction column 2 - a
        col = direction[:, 2 - a]
        p = int(np.argmax(np.abs(col)))
        patient_axis[a], sign[a] = p, float(np.sign(col[p]) or 1.0)
    if sorted(patient_axis.values()) != [0, 1, 2]:
        order, flips = (0, 1, 2), ()
    else:
        order = tuple(next(a for a in range(3) if patient_axis[a] == p) for p in (2, 1, 0))
        flips = tuple(i for i, a in enumerate(order) if sign[a] < 0)
    hu = np.transpose(volume.hu, order)
    lab = np.transpose(labels, order)
    for i in flips:
        hu = np.flip(hu, axis=i)
        lab = np.flip(lab, axis=i)
    spacing = tuple(volume.spacing[a] for a in order)
    return hu, lab, spacing


def slice_planes(volume, labels: np.ndarray) -> dict[str, tuple]:
    """The three CT planes the slice pictures show, cut through the centre of the parts' box.

    Returns ``{title: (hu plane, label plane, extent (l, r, bottom, top) mm, origin,
    (left, right, top, bottom) letters, (axis letter, index, count), pixel mm)}`` for ``axial``,
    ``coronal`` and ``sagittal``: copies of a few MB, which is all :func:`draw_pictures` needs of
    the volume (the report worker is sent these, never the volume).
    """
    hu, lab, (dz, dy, dx) = _canonical(volume, labels)
    nz, ny, nx = hu.shape
    from scipy import ndimage

    # centre of the box around every part: one pass over the labels, no full-volume mask
    boxes = [b for b in ndimage.find_objects(np.asarray(lab)) if b is not None]
    idx = []
    for ax in range(3):
        if boxes:
            first, last = min(b[ax].start for b in boxes), max(b[ax].stop for b in boxes) - 1
            idx.append(int((first + last) // 2))
        else:
            idx.append(hu.shape[ax] // 2)
    kc, jc, ic = idx
    cut = {"axial": (hu[kc], lab[kc]), "coronal": (hu[:, jc, :], lab[:, jc, :]),
           "sagittal": (hu[:, :, ic], lab[:, :, ic])}
    cut = {title: (np.array(h), np.array(lp)) for title, (h, lp) in cut.items()}
    return {
        "axial": (*cut["axial"], (0, nx * dx, ny * dy, 0), "upper", ("R", "L", "A", "P"), ("z", kc, nz), dx),
        "coronal": (*cut["coronal"], (0, nx * dx, 0, nz * dz), "lower", ("R", "L", "S", "I"), ("y", jc, ny), dx),
        "sagittal": (*cut["sagittal"], (0, ny * dy, 0, nz * dz), "lower", ("A", "P", "S", "I"), ("x", ic, nx), dy),
    }


def _slice_pictures(planes: Mapping[str, tuple], names, pics: Path, lang: str = "en") -> dict[str, Path]:
    import matplotlib

    from printpipe._fonts import mpl_rc

    with matplotlib.rc_context(mpl_rc(lang)):
        return _draw_slice_pictures(planes, names, pics, lang)


def _draw_slice_pictures(planes: Mapping[str, tuple], names, pics: Path, lang: str) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import patheffects
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from printpipe.export import part_color

    _t = get_translator(lang)
    level, width = BONE_WINDOW
    vmin, vmax = level - width / 2, level + width / 2
    where_text = {"z": _t("z index {index} of {count}"), "y": _t("y index {index} of {count}"),
                  "x": _t("x index {index} of {count}")}
    out = {}
    for title, (img, lplane, extent, origin, letters, (axis, index, count), pixel) in planes.items():
        where = where_text[axis].format(index=index, count=count)
        w_mm, h_mm = abs(extent[1] - extent[0]), abs(extent[3] - extent[2])
        fig_w = 6.0
        fig_h = max(2.5, min(9.0, fig_w * h_mm / max(w_mm, 1e-6))) + 0.6
        fig = Figure(figsize=(fig_w, fig_h), dpi=110)
        ax = fig.add_axes((0.04, 0.04, 0.92, 0.86))
        ax.imshow(np.asarray(img, dtype=np.float32), cmap="gray", vmin=vmin, vmax=vmax, extent=extent,
                  origin=origin, interpolation="bilinear", aspect="equal")
        handles = []
        for label, name in sorted(names.items()):
            m = np.asarray(lplane == label, dtype=np.float32)
            if m.any() and (m.min() == 0):
                rgb = np.asarray(part_color(name)) / 255.0
                cs = ax.contour(m, levels=[0.5], colors=[rgb], linewidths=1.3, extent=extent, origin=origin)
                # a dark rim keeps light part colours (bone beige) visible on bright bone
                cs.set(path_effects=[patheffects.withStroke(linewidth=2.6, foreground="black")])
                handles.append(Line2D([0], [0], color=rgb, lw=2, label=part_label(name, lang)))
        if handles:
            ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.6)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3]) if origin == "lower" else ax.set_ylim(extent[2], extent[3])
        ax.set_xticks([])
        ax.set_yticks([])
        left, right, top, bottom = letters
        for x, y, s in ((0.01, 0.5, left), (0.99, 0.5, right), (0.5, 0.99, top), (0.5, 0.01, bottom)):
            ax.text(x, y, s, transform=ax.transAxes, color="yellow", fontsize=11, fontweight="bold",
                    ha="left" if x < 0.1 else ("right" if x > 0.9 else "center"),
                    va="top" if y > 0.9 else ("bottom" if y < 0.1 else "center"))
        fig.suptitle(_t("{plane} ({where}; bone window L {level} W {width} HU; pixel {pixel} mm)").format(
            plane=_t(_PLANE_TITLES[title]), where=where, level=f"{level:g}", width=f"{width:g}",
            pixel=f"{pixel:.2f}"), fontsize=8)
        png = pics / f"{title}.png"
        _save_fig(fig, png)
        out[title] = png
    return out


def _save_fig(fig, png: Path) -> None:
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", pil_kwargs={"compress_level": _PNG_LEVEL})


# -- 3-D views -------------------------------------------------------------------------------------

# The probe draws a sphere off-screen with VTK itself (what pyvista renders through), without
# importing pyvista: 0.4 s instead of 1.1 s, and it runs beside the slice pictures.
_PROBE_CODE = """
import importlib.util, sys
if importlib.util.find_spec("pyvista") is None:
    sys.exit(4)
from vtkmodules.vtkFiltersSources import vtkSphereSource
from vtkmodules.vtkRenderingCore import (vtkActor, vtkPolyDataMapper, vtkRenderer, vtkRenderWindow,
                                         vtkWindowToImageFilter)
import vtkmodules.vtkRenderingOpenGL2  # the OpenGL implementations of the classes above
from vtkmodules.util.numpy_support import vtk_to_numpy
sphere = vtkSphereSource()
mapper = vtkPolyDataMapper()
mapper.SetInputConnection(sphere.GetOutputPort())
actor = vtkActor()
actor.SetMapper(mapper)
renderer = vtkRenderer()
renderer.AddActor(actor)
renderer.SetBackground(1, 1, 1)
window = vtkRenderWindow()
window.SetOffScreenRendering(1)
window.AddRenderer(renderer)
window.SetSize(64, 64)
window.Render()
grab = vtkWindowToImageFilter()
grab.SetInput(window)
grab.Update()
img = vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars())
window.Finalize()
sys.exit(0 if img is not None and img.std() > 0 else 3)
"""
_PROBE: subprocess.Popen | None = None


def _start_render_probe() -> None:
    """Start the off-screen rendering probe in a child process (once), without waiting for it.

    :func:`write_report` starts it before drawing the CT slices, so that the probe (a fresh
    interpreter importing VTK) runs beside them; :func:`render_backend` collects it.
    """
    global _PROBE
    forced = os.environ.get("PRINTPIPE_RENDERER", "").strip().lower()
    if forced in ("matplotlib", "pyvista") or _RENDER_BACKEND is not None or _PROBE is not None:
        return
    try:
        _PROBE = subprocess.Popen([sys.executable, "-c", _PROBE_CODE], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env={**os.environ, "PYVISTA_OFF_SCREEN": "true"})
    except OSError as exc:
        log.warning("PyVista rendering probe failed to start (%s); using matplotlib", exc)


def render_backend() -> str:
    """``"pyvista"`` when off-screen VTK rendering works in this environment, else ``"matplotlib"``.

    Probed once per process in a child process; ``PRINTPIPE_RENDERER=matplotlib|pyvista`` overrides.
    """
    global _RENDER_BACKEND, _PROBE
    forced = os.environ.get("PRINTPIPE_RENDERER", "").strip().lower()
    if forced in ("matplotlib", "pyvista"):
        return forced
    if _RENDER_BACKEND is None:
        _start_render_probe()
        proc, _PROBE = _PROBE, None
        if proc is None:
            _RENDER_BACKEND = "matplotlib"
            return _RENDER_BACKEND
        try:
            _, err = proc.communicate(timeout=120)
            _RENDER_BACKEND = "pyvista" if proc.returncode == 0 else "matplotlib"
            if proc.returncode:
                log.warning("PyVista off-screen rendering is unavailable (exit %d: %s); 3-D views will be "
                            "drawn with matplotlib. On Debian install libegl1 and libgl1-mesa-dri "
                            "(or libosmesa6)", proc.returncode, err.decode(errors="replace")[-300:].strip())
        except (OSError, subprocess.TimeoutExpired) as exc:
            proc.kill()
            proc.communicate()
            log.warning("PyVista rendering probe failed (%s); using matplotlib", exc)
            _RENDER_BACKEND = "matplotlib"
    return _RENDER_BACKEND


def probe_rendering_here() -> str:
    """:func:`render_backend`, probed in this process instead of a child: the probe's own VTK
    import and interpreter start (about 0.5 s of CPU) are saved where VTK is imported anyway.

    Only for a process whose crash costs nothing, the report worker: when VTK takes it down, the
    parent draws the pictures itself and probes in a child as usual. A hang is that worker's to
    bound (it sets an alarm).
    """
    global _RENDER_BACKEND
    forced = os.environ.get("PRINTPIPE_RENDERER", "").strip().lower()
    if forced in ("matplotlib", "pyvista"):
        return forced
    if _RENDER_BACKEND is None:
        try:
            exec(compile(_PROBE_CODE, "<rendering probe>", "exec"), {"__name__": "__rendering_probe__"})
            code: Any = 0
        except SystemExit as exc:  # the probe ends with sys.exit(status), as in a child
            code = exc.code or 0
        except Exception as exc:  # noqa: BLE001 - any failure means: no VTK rendering here
            code = f"{type(exc).__name__}: {exc}"
        _RENDER_BACKEND = "pyvista" if code == 0 else "matplotlib"
        if code != 0:
            log.warning("PyVista off-screen rendering is unavailable (%s); 3-D views will be drawn with "
                        "matplotlib. On Debian install libegl1 and libgl1-mesa-dri (or libosmesa6)", code)
    return _RENDER_BACKEND


def _render_views(group: Mapping[str, Any], png: Path, backend: str, cache: dict | None = None,
                  lang: str = "en") -> None:
    if backend == "pyvista":
        _render_pyvista(group, png, cache, lang)
    else:
        import matplotlib

        from printpipe._fonts import mpl_rc

        with matplotlib.rc_context(mpl_rc(lang)):
            _render_matplotlib(group, png, lang)


def _decimated(mesh, max_faces: int):
    """(vertices, faces) of ``mesh`` with at most about ``max_faces`` faces, for drawing only."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    if len(f) > max_faces:
        import fast_simplification

        v, f = fast_simplification.simplify(v, f, target_reduction=1.0 - max_faces / len(f))
    return np.asarray(v), np.asarray(f)


# Most faces drawn per part (3-D views only; the exported models are untouched). A view is 360 px
# wide, so a part covers at most ~10^5 pixels: 60 000 faces render indistinguishably from the full
# surface (checked on the pelvis: under 1 % of pixels differ visibly) at a fraction of the cost.
_PART_VIEW_FACES = 60_000


def _view_polydata(mesh, cache: dict | None, max_faces: int | None = None):
    """A ``pyvista.PolyData`` of ``mesh`` (at most about ``max_faces`` faces) with point normals.

    Cached per mesh, so the group picture and the part's own picture share one copy: VTK then
    uploads its buffers once per render window. The normals are those pyvista's smooth shading
    computes (unsplit point normals of the consistently wound surface), made once here instead of
    once per view.
    """
    import pyvista as pv

    cache = {} if cache is None else cache
    max_faces = _PART_VIEW_FACES if max_faces is None else max_faces
    key = ("polydata", id(mesh), max_faces)
    if key not in cache:
        v, f = _decimated(mesh, max_faces)
        pm = pv.PolyData(v, np.column_stack([np.full(len(f), 3), f]).ravel())
        pm = pm.compute_normals(cell_normals=False, point_normals=True, split_vertices=False,
                                consistent_normals=False, auto_orient_normals=False)
        cache[key] = (mesh, pm)  # the mesh is held so that its id is not reused while cached
    return cache[key][1]


def _render_pyvista(group, png: Path, cache: dict | None = None, lang: str = "en") -> None:
    """Four views of ``group`` side by side into ``png``.

    With a ``cache`` (one per report) the off-screen plotter is kept there and reused for every
    picture (a new render window compiles its shaders again), and so is each part's actor: one
    actor per part is shown in all four views and in every picture that holds the part (the
    others are hidden), so its normals and buffers are made once. :func:`_close_views` closes
    the plotter. The view titles are drawn onto the screenshot with Pillow, not by VTK, whose
    built-in fonts have no Chinese glyphs.
    """
    import pyvista as pv

    from printpipe.export import part_color

    pv.OFF_SCREEN = True
    size = 360
    own_cache = cache is None
    cache = {} if own_cache else cache
    pl = cache.get("plotter")
    if pl is None:
        pl = pv.Plotter(off_screen=True, shape=(1, len(_VIEWS)), window_size=(size * len(_VIEWS), size + 30),
                        border=False)
        # FXAA instead of the default 4x MSAA: in software rendering (llvmpipe) multisampling is
        # most of the drawing time (3-4x), and FXAA's smoothed silhouettes look the same at this
        # size. Set on VTK directly: pyvista's enable_anti_aliasing("fxaa") falls back to SSAA
        # (slower still) on EGL builds, although VTK's FXAA pass works there (checked by eye).
        pl.render_window.SetMultiSamples(0)
        for renderer in pl.renderers:
            renderer.SetUseFXAA(True)
        cache["plotter"] = pl
        cache["actors"] = {}
        pl.suppress_rendering = True  # a plotter that has rendered once re-renders on every change
        for col in range(len(_VIEWS)):
            pl.subplot(0, col)
            pl.set_background("white")
    try:
        pl.suppress_rendering = True
        actors = cache["actors"]
        shown, added = [], False
        for name, mesh in group.items():
            key = (id(mesh), name)
            if key not in actors:
                pm = _view_polydata(mesh, cache)
                pl.subplot(0, 0)
                actor = pl.add_mesh(pm, color=np.asarray(part_color(name)) / 255.0, smooth_shading=True,
                                    specular=0.2, ambient=0.15, reset_camera=False)
                for col in range(1, len(_VIEWS)):
                    pl.subplot(0, col)
                    pl.add_actor(actor, reset_camera=False)
                actors[key] = (mesh, actor, pm)
                added = True
            shown.append(key)
        if added:  # the decimation's scratch memory, before rendering adds its own
            release_free_memory()
        for key, (_, actor, _) in actors.items():
            actor.SetVisibility(key in shown)
        lo = np.min([actors[k][2].bounds[::2] for k in shown], axis=0)
        hi = np.max([actors[k][2].bounds[1::2] for k in shown], axis=0)
        centre, radius = (lo + hi) / 2, float(np.linalg.norm(hi - lo)) / 2
        for col, (title, direction, up) in enumerate(_VIEWS):
            pl.subplot(0, col)
            pl.camera.position = tuple(centre + np.asarray(direction) * radius * 3.2)
            pl.camera.focal_point = tuple(centre)
            pl.camera.up = up
            pl.reset_camera_clipping_range()
            pl.camera.zoom(1.0)
        pl.suppress_rendering = False
        pl.render()  # a no-op before the first screenshot, which renders by itself
        img = pl.screenshot(return_img=True)
    except BaseException:
        _close_views(cache)  # a plotter that failed is not reused
        raise
    finally:
        if own_cache:
            _close_views(cache)
    _t = get_translator(lang)
    _save_rgb(img, png, titles=[(col * size + 6, 4, _t(_VIEW_TITLES[title]))
                                for col, (title, _, _) in enumerate(_VIEWS)], lang=lang)


def _close_views(cache: dict) -> None:
    """Close the plotter kept in a view cache and drop the cached drawing copies."""
    pl = cache.pop("plotter", None)
    if pl is not None:
        pl.close()
    cache.clear()


def _save_rgb(img: np.ndarray, png: Path, titles=(), lang: str = "en") -> None:
    """Save an RGB(A) screenshot, with ``titles`` ((x, y, text) in pixels) drawn in black."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(np.ascontiguousarray(img[..., :3]))
    if titles:
        from printpipe._fonts import pil_font

        draw = ImageDraw.Draw(im)
        font = pil_font(15, lang)
        for x, y, text in titles:
            draw.text((x, y), text, fill=(0, 0, 0), font=font)
    with atomic_path(png, suffix=".png") as tmp:
        im.save(tmp, format="PNG", compress_level=_PNG_LEVEL)


def _render_matplotlib(group, png: Path, lang: str = "en") -> None:
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    from printpipe.export import part_color

    # (azimuth, elevation) in matplotlib's convention for the views in _VIEWS (LPS frame)
    angles = {"anterior": (-90, 0), "left lateral": (0, 0), "posterior": (90, 0), "superior": (-90, 90)}
    fig = Figure(figsize=(3.4 * len(_VIEWS), 3.6), dpi=100)
    data = []
    for name, mesh in group.items():
        v, f = _decimated(mesh, 20_000 // max(1, len(group)))
        tri = v[f]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        data.append((name, tri, n))
    allv = np.concatenate([t.reshape(-1, 3) for _, t, _ in data])
    lo, hi = allv.min(axis=0), allv.max(axis=0)
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2
    for col, (title, direction, _) in enumerate(_VIEWS):
        ax = fig.add_subplot(1, len(_VIEWS), col + 1, projection="3d")
        for name, tri, n in data:
            light = np.clip(0.3 + 0.7 * np.abs(n @ np.asarray(direction)), 0, 1)
            rgb = np.asarray(part_color(name)) / 255.0
            pc = Poly3DCollection(tri, facecolors=light[:, None] * rgb[None, :], edgecolors="none")
            ax.add_collection3d(pc)
        for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre):
            setter(c - half, c + half)
        ax.set_box_aspect((1, 1, 1))
        az, el = angles[title]
        ax.view_init(elev=el, azim=az)
        ax.set_axis_off()
        ax.set_title(get_translator(lang)(_VIEW_TITLES[title]), fontsize=9)
    _save_fig(fig, png)


# -- HTML ------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;max-width:1500px;
color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600}.bad{color:#b42318;font-weight:600}.warn{background:#fff4e5}
.swatch{display:inline-block;width:1em;height:1em;border:1px solid #555;vertical-align:middle;margin-right:.3em}
figure{display:inline-block;margin:.4em;vertical-align:top}figcaption{font-size:.85em;color:#555}
img{max-width:100%;height:auto;border:1px solid #ddd}.note{color:#555;font-size:.9em}
pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.8em}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _identity(text: str) -> str:
    return text


# words the helpers below translate with the translator they are handed
_NONE_RECORDED, _YES, _NO = N_("none recorded"), N_("yes"), N_("no")
# keys of the small tables (dicts) shown in one cell, as the report's reader calls them
_KEY_NAMES = {"count": N_("count"), "volume_mm3": N_("volume (mm³)"), "min_island_mm3": N_("smallest kept (mm³)"),
              "voxels": N_("voxels"), "point": N_("point"), "normal": N_("normal"), "side": N_("side"),
              "source": N_("source"), "template": N_("template"), "compared_with": N_("compared with"),
              "mean_mm": N_("mean (mm)"), "p95_mm": N_("95th pct (mm)"), "max_mm": N_("max (mm)")}


def _fmt(x: Any, nd: int = 2, t=_identity) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return t(_YES) if x else t(_NO)
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    if isinstance(x, (list, tuple)):
        return ", ".join(_fmt(v, nd, t) for v in x)
    if isinstance(x, Mapping):
        return ", ".join(f"{t(_KEY_NAMES[k]) if k in _KEY_NAMES and t is not _identity else k}: "
                         f"{_fmt(v, nd, t)}" for k, v in x.items())
    return str(x)


def _dims(x: Any, nd: int = 2) -> str | None:
    """``a × b × c`` for a size or shape list."""
    return None if x is None else " × ".join(_fmt(v, nd) for v in x)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _kv_table(rows: list[tuple[str, Any]], t=_identity) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v, t=t))}</td></tr>" for k, v in rows if v is not None)
    return f"<table>{body}</table>" if body else '<p class="note">' + _e(t(_NONE_RECORDED)) + "</p>"


def _h2(text: str) -> str:
    return "<h2>" + _e(text) + "</h2>"


def _yesno(flag: Any, t=_identity) -> str:
    if flag is None:
        return "–"
    return f'<span class="ok">{_e(t(_YES))}</span>' if flag else f'<span class="bad">{_e(t(_NO))}</span>'


# manifest keys shown as rows under their own (translated) names; other segmentation figures are
# listed under their key
_SEG_KEYS = {"preset", "hu_range", "islands_dropped", "table_removed", "metal", "midsagittal_plane", "mirror"}
_STATUS_NAMES = {"ok": N_("ok"), "failed": N_("failed")}
_FRAME_NAMES = {"patient": N_("patient (LPS)"), "plate": N_("build plate")}
_TIMING_NAMES = {"read": N_("read"), "segment": N_("segment"), "surface": N_("surface"),
                 "repair": N_("repair"), "mirror": N_("mirror"), "export": N_("export"),
                 "slice": N_("slice"), "report": N_("report"), "total": N_("total")}


def _html(manifest, slice_pngs, view_pngs, extra, notes, backend, lang: str = "en") -> str:
    _t = get_translator(lang)

    def pname(name: Any) -> str:
        """A part's name in the report's language, with the file name beside it in Chinese."""
        label = part_label(str(name), lang)
        return _e(label) if label == name else f"{_e(label)} <span class='note'>{_e(name)}</span>"

    m = manifest
    inp = m.get("input") or {}
    seg = m.get("segmentation") or {}
    parts = m.get("parts") or []
    none = _t("none")
    frame = (m.get("frame") or {}).get("name", "patient")
    title = _t("printpipe QA report")
    html_lang = "zh-CN" if lang == "zh" else "en"
    out = [f"<!DOCTYPE html><html lang='{html_lang}'><head><meta charset='utf-8'>"
           f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"]
    out.append(f"<h1>{_e(title)}</h1>")
    out.append("<p class='note'>" + _e(_t(
        "printpipe {version} · created {created} (UTC) · status {status} · frame {frame} · all lengths "
        "in mm. Check every picture before printing: the model is only as good as the segmentation."
    )).format(version=_e(m.get("printpipe_version", __version__)), created=_e(m.get("created")),
              status=f"<b>{_e(_t(_STATUS_NAMES.get(m.get('status'), str(m.get('status')))))}</b>",
              frame=_e(frame if lang == "en" else _t(_FRAME_NAMES.get(frame, frame))))
               + "</p>")

    warnings = list(m.get("warnings") or [])
    out.append(_h2(_t("Warnings")))
    if warnings:
        out.append("<ul>" + "".join(f"<li class='warn'>{_e(translate_message(w, lang))}</li>" for w in warnings)
                   + "</ul>")
    else:
        out.append(f"<p class='ok'>{_e(none)}</p>")

    out.append(_h2(_t("Input: which series and why")))
    skipped = inp.get("skipped")
    out.append(_kv_table([
        (_t("series (sha256 of UID, 16 hex)"), inp.get("series_uid_hash")),
        (_t("study (sha256 of UID, 16 hex)"), inp.get("study_uid_hash")),
        (_t("why this series"), inp.get("choice_reason")),
        (_t("modality"), inp.get("modality")), (_t("manufacturer"), inp.get("manufacturer")),
        (_t("model"), inp.get("model")), (_t("kernel"), inp.get("kernel")),
        (_t("slices"), inp.get("slice_count")), (_t("grid (z, y, x)"), _dims(inp.get("shape"))),
        (_t("spacing (dz, dy, dx) mm"), _dims(inp.get("spacing_mm"), 3)),
        (_t("gantry tilt (deg)"), inp.get("tilt_deg")),
        (_t("transfer syntax"), inp.get("transfer_syntax")),
        (_t("compressed pixel data"), inp.get("compressed")),
        (_t("patient position"), inp.get("patient_position")),
        (_t("corrections (gaps, tilt, ...)"), "; ".join(_fmt(c, t=_t) for c in inp.get("corrections") or [])
         or none),
        (_t("stacks skipped"), _fmt(skipped, t=_t) if skipped else none),
        (_t("input warnings"), "; ".join(translate_message(w, lang) for w in inp.get("warnings") or []) or none),
    ], _t))

    out.append(_h2(_t("Segmentation")))
    hu = seg.get("hu_range")
    hu_txt = None if not hu else _t(" to ").join(_t("open") if v is None else f"{v:g}" for v in hu) + " HU"
    seg_rows = [(_t("preset"), seg.get("preset")), (_t("HU range"), hu_txt),
                (_t("islands dropped"), seg.get("islands_dropped")), (_t("table removed"), seg.get("table_removed")),
                (_t("metal"), seg.get("metal") if seg.get("metal") else _t("none found")),
                (_t("mid-sagittal plane"), seg.get("midsagittal_plane"))]
    mirror = seg.get("mirror")
    if mirror:
        seg_rows.append((_t("mirror"), {k: mirror.get(k) for k in ("side", "source", "template", "compared_with")}))
        seg_rows.append((_t("mirror deviation"), mirror.get("deviation")))
    for k, v in seg.items():
        if k not in _SEG_KEYS and isinstance(v, (str, int, float, bool)):
            seg_rows.append((k.replace("_", " "), v))
    out.append(_kv_table(seg_rows, _t))

    out.append(_h2(_t("Parts: mesh checks")))
    head = (_t("part"), _t("triangles"), _t("volume (cm³)"), _t("area (cm²)"), _t("size x × y × z (mm)"),
            _t("watertight"), _t("manifold"), _t("oriented"), _t("shells"), _t("shells dropped"),
            _t("holes filled"), _t("degenerate / duplicate removed"), _t("self-intersections"),
            _t("thinnest wall (mm)"), _t("Euler"))
    rows = []
    for p in parts:
        r = p.get("report") or {}
        color = p.get("color") or [200, 200, 200]
        si = r.get("self_intersections")
        frac = r.get("self_intersections_checked")
        si_txt = _t("not checked") if si is None else (
            f"{si}" + (" " + _t("({share} of faces sampled)").format(share=f"{frac:.0%}")
                       if frac is not None and frac < 1 else ""))
        rows.append(
            "<tr>"
            f"<td><span class='swatch' style='background:rgb({int(color[0])},{int(color[1])},{int(color[2])})'>"
            f"</span>{pname(p.get('name'))}</td>"
            f"<td class='num'>{_e(_fmt(p.get('triangles')))}</td>"
            f"<td class='num'>{_e(_fmt((p.get('volume_mm3') or 0) / 1000.0, 2))}</td>"
            f"<td class='num'>{_e(_fmt((p.get('area_mm2') or 0) / 100.0, 1))}</td>"
            f"<td class='num'>{_e(_dims((p.get('bbox_mm') or {}).get('size'), 1))}</td>"
            f"<td>{_yesno(p.get('watertight'), _t)}</td><td>{_yesno(r.get('manifold'), _t)}</td>"
            f"<td>{_yesno(r.get('oriented'), _t)}</td>"
            f"<td class='num'>{_e(r.get('shells'))}</td><td class='num'>{_e(r.get('shells_dropped'))}</td>"
            f"<td class='num'>{_e(r.get('holes_filled'))}</td>"
            f"<td class='num'>{_e(r.get('degenerate_removed'))} / {_e(r.get('duplicate_faces_removed'))}</td>"
            f"<td class='num'>{_e(si_txt)}</td>"
            f"<td class='num'>{_e(_fmt(r.get('thinnest_wall_mm'), 2))}</td>"
            f"<td class='num'>{_e(r.get('euler'))}</td></tr>")
    out.append("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")
    out.append("<p class='note'>" + _e(_t(
        "Thinnest wall: 1st percentile of the local thickness across to the opposite wall at sampled "
        "surface points. Self-intersections are counted, not removed (slicers print their union).")) + "</p>")

    out.append(_h2(_t("Fidelity: distance to the unsmoothed marching-cubes surface")))
    head = (_t("part"), _t("mean (mm)"), _t("95th pct (mm)"), _t("max (mm)"), _t("volume change (%)"),
            _t("decimation"), _t("decimation distance mean / p95 / max (mm)"))
    rows = []
    for p in parts:
        f = p.get("fidelity") or {}
        d = p.get("decimation")
        dec = none if not d else _t("{before} → {after} faces").format(before=d.get("faces_before"),
                                                                        after=d.get("faces_after"))
        dd = (d or {}).get("distance") or {}
        ddt = "–" if not d else " / ".join(_fmt(dd.get(k), 3) for k in ("mean_mm", "p95_mm", "max_mm"))
        rows.append(f"<tr><td>{pname(p.get('name'))}</td>" + "".join(
            f"<td class='num'>{_e(_fmt(f.get(k), 3))}</td>" for k in ("mean_mm", "p95_mm", "max_mm",
                                                                        "volume_change_pct"))
                    + f"<td>{_e(dec)}</td><td class='num'>{_e(ddt)}</td></tr>")
    out.append("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")

    pr = m.get("print")
    if pr:
        out.append(_h2(_t("Printing")))
        t = pr.get("time_s")
        out.append(_kv_table([
            (_t("printer"), pr.get("printer")), (_t("material"), pr.get("material")),
            (_t("estimated time"), None if t is None else _t("{hours} h {minutes} min").format(
                hours=int(t // 3600), minutes=int(t % 3600 // 60))),
            (_t("filament"), None if pr.get("filament_mm") is None else _t("{metres} m, {grams} g").format(
                metres=f"{pr['filament_mm'] / 1000:.2f}", grams=f"{pr.get('filament_g', 0):.1f}")),
            (_t("layers"), pr.get("layer_count")), (_t("plates"), pr.get("plates")),
            (_t("files"), ", ".join(pr.get("files") or []) or None),
        ], _t))

    out.append(_h2(_t("CT slices with part contours")))
    out.append("<p class='note'>" + _e(_t(
        "Through the centre of the parts; each part's segmentation outline in its colour. Patient's "
        "right is on the left of the axial and coronal pictures.")) + "</p>")
    for key, png in slice_pngs.items():
        plane = _t(_PLANE_TITLES.get(key, key))
        alt = _t("{plane} slice").format(plane=plane)
        out.append(f"<figure>{_img(png, alt)}<figcaption>{_e(plane)}</figcaption></figure>")

    out.append(_h2(_t("3-D views")))
    out.append("<p class='note'>" + _e(_t(
        "Rendered with {backend}; views in the patient frame (anterior, left lateral, posterior, "
        "superior).").format(backend=backend)) + "</p>")
    for n in notes:
        out.append(f"<p class='warn'>{_e(n)}</p>")
    for key, png in view_pngs.items():
        label = part_label(key, lang)
        alt = _t("3-D views of {part}").format(part=label)
        out.append(f"<figure>{_img(png, alt)}<figcaption>{_e(label)}</figcaption></figure>")

    if extra:
        out.append(_h2(_t("More pictures")))
        for key, png in extra.items():
            png = Path(png)
            if png.is_file():
                out.append(f"<figure>{_img(png, key)}<figcaption>{_e(_t(key))}</figcaption></figure>")
            else:
                missing = _t("picture {title} is missing").format(title=key)
                out.append(f"<p class='warn'>{_e(missing)}</p>")

    timings = m.get("timings_s") or {}
    if timings:
        out.append(_h2(_t("Timings (s)")))
        out.append(_kv_table([(_t(_TIMING_NAMES[k]) if k in _TIMING_NAMES else k, float(v))
                              for k, v in timings.items()], _t))
    out.append(_h2(_t("Parameters")) + "<details><summary>" + _e(_t("all parameters of this run"))
               + "</summary><pre>"
               + _e(json.dumps(m.get("parameters") or {}, indent=2, sort_keys=True, default=str))
               + "</pre></details>")
    out.append("</body></html>\n")
    return "".join(out)
