"""The built-in slicer: from closed part meshes to validated G-code for a printer profile.

Modules: :mod:`~printpipe.slicing.config` (``SliceConfig``), :mod:`~printpipe.slicing.layers`
(mesh -> layer outlines, numba kernel), :mod:`~printpipe.slicing.toolpaths` (walls, skin, infill,
supports), :mod:`~printpipe.slicing.gcode` (G-code, checks, picture), and the profile, safety,
estimate, orientation and layout modules (``printers``, ``validate``, ``estimate``, ``orient``,
``layout``).

:func:`slice_parts` is the orchestrator used by the pipeline; :func:`slice_file` serves
``printpipe slice MODEL.stl``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from printpipe._atomic import atomic_path
from printpipe.errors import InputError
from printpipe.slicing.config import SliceConfig
from printpipe.slicing.gcode import check_inside_outline, render_toolpaths, to_gcode
from printpipe.slicing.toolpaths import SlicedModel, slice_mesh

log = logging.getLogger(__name__)

__all__ = [
    "SliceConfig",
    "SliceResult",
    "SlicedModel",
    "slice_mesh",
    "to_gcode",
    "slice_parts",
    "slice_file",
    "render_toolpaths",
    "check_inside_outline",
    "load_printer",
    "load_material",
    "validate_gcode",
]


def __getattr__(name: str):
    # profile / safety helpers live in sibling modules; import them lazily so that this package
    # imports even while one of them is being worked on
    if name in ("load_printer", "load_material"):
        from printpipe.slicing import printers

        return getattr(printers, name)
    if name == "validate_gcode":
        from printpipe.slicing.validate import validate_gcode

        return validate_gcode
    raise AttributeError(f"module 'printpipe.slicing' has no attribute {name!r}")


@dataclass
class SliceResult:
    """What :func:`slice_parts` wrote.

    Attributes
    ----------
    files : list of Path
        ``model.gcode``, or ``plate-1.gcode``... when the parts need several plates.
    time_s : float
        Estimated print time of all plates (acceleration-aware), seconds.
    filament_mm, filament_g : float
        Filament used by all plates.
    layer_count : int
        Layers of the tallest plate.
    plates : int
    warnings : list of str
    per_plate : list of dict
        ``file``, ``parts``, ``time_s``, ``filament_mm``, ``filament_g``, ``layer_count``,
        ``slice_s`` per plate.
    """

    files: list
    time_s: float
    filament_mm: float
    filament_g: float
    layer_count: int
    plates: int
    warnings: list = field(default_factory=list)
    per_plate: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-serialisable summary (for manifests)."""
        return {"files": [str(f) for f in self.files], "time_s": self.time_s,
                "filament_mm": self.filament_mm, "filament_g": self.filament_g,
                "layer_count": self.layer_count, "plates": self.plates,
                "warnings": list(self.warnings), "per_plate": self.per_plate}


def _plate_name(stem: str, i: int, n: int) -> str:
    if n == 1:
        return f"{stem}.gcode"
    return f"plate-{i}.gcode" if stem == "model" else f"{stem}-plate-{i}.gcode"


def slice_parts(parts: dict, printer, material, config: SliceConfig | None = None, outdir: "str | Path" = ".",
                stem: str = "model", *, progress: Callable[[str, float], None] | None = None) -> SliceResult:
    """Orient, lay out, slice and write G-code for named parts, 1:1 (never scaled).

    Parameters
    ----------
    parts : dict of str -> trimesh.Trimesh
        Closed, outward-oriented meshes in any frame (mm), e.g. the pipeline's LPS parts.
    printer : Printer or str
        Profile or built-in name / profile path (:func:`~printpipe.slicing.printers.load_printer`).
    material : Material or str
        Preset or name (:func:`~printpipe.slicing.printers.load_material`).
    config : SliceConfig, optional
    outdir : path
        Folder for ``model.gcode`` (or ``plate-N.gcode``).
    stem : str
        File name stem for a single plate.
    progress : callable, optional
        ``progress("slice", fraction)``, fraction rising from 0 to 1: orientation (to 5 %),
        layout (to 8 %), then per plate the parts' toolpaths (55 % of the plate's share), the
        G-code layers (30 %) and the safety check and write (15 %).

    Returns
    -------
    SliceResult

    Raises
    ------
    PrinterError
        A part fits the printer in no orientation (from the layout step), or the G-code fails the
        safety check (nothing is written then).
    InputError
        No parts.

    Notes
    -----
    Orientation (``config.orient == "auto"``) and bed layout are
    :func:`printpipe.slicing.orient.orient` and :func:`printpipe.slicing.layout.layout`; every file
    is checked by :func:`printpipe.slicing.validate.validate_gcode` at its temporary name before it
    is renamed into place (:mod:`printpipe._atomic`).
    """
    from printpipe.slicing.layout import layout
    from printpipe.slicing.printers import load_material, load_printer
    from printpipe.slicing.validate import validate_gcode

    config = config or SliceConfig()
    if not parts:
        raise InputError("slice_parts got no parts to slice; pass a dict of name -> mesh")
    printer = load_printer(printer)
    if not hasattr(material, "hotend_c"):
        material = load_material(material, printer)
    outdir = Path(outdir)
    report = progress or (lambda stage, frac: None)
    warnings: list[str] = []

    last = [-1.0]

    def at(frac: float) -> None:  # rising, and at most about 100 calls
        frac = min(max(frac, 0.0), 1.0)
        if frac >= 1.0 or frac - last[0] >= 0.01:
            last[0] = frac
            report("slice", frac)

    at(0.0)
    oriented = {}
    for pi, (name, mesh) in enumerate(parts.items()):
        m = mesh.copy()
        if config.orient == "auto":
            from printpipe.slicing.orient import orient

            rot, info = orient(m, printer, config.orient)
            m.apply_transform(np.asarray(rot, dtype=np.float64))
            log.info("%s: orientation %s", name, info)
        oriented[name] = m
        at(0.05 * (pi + 1) / len(parts))
    plates = layout(oriented, printer)
    at(0.08)

    files: list[Path] = []
    per_plate: list[dict] = []
    n = len(plates)
    for i, plate in enumerate(plates, 1):
        import time

        t0 = time.perf_counter()
        lo, share = 0.08 + 0.92 * (i - 1) / n, 0.92 / n
        sliced = []
        for j, (name, transform) in enumerate(plate):
            m = oriented[name].copy()
            m.apply_transform(np.asarray(transform, dtype=np.float64))
            sm = slice_mesh(m, printer, material, config, name=name)
            warnings.extend(sm.warnings)
            sliced.append(sm)
            at(lo + share * 0.55 * (j + 1) / len(plate))
        header = {"plate": f"{i} of {n}"}
        def on_layer(f: float, lo: float = lo, share: float = share) -> None:
            at(lo + share * (0.55 + 0.30 * f))

        text, est, layers = _gcode_and_estimate(sliced, printer, material, config, header,
                                                on_layer=on_layer)
        slice_s = time.perf_counter() - t0
        path = outdir / _plate_name(stem, i, n)
        with atomic_path(path, suffix=".gcode") as tmp:
            tmp.write_text(text, encoding="utf-8")
            validate_gcode(tmp.read_text(encoding="utf-8"), printer, material)
        at(lo + share)
        files.append(path)
        per_plate.append({"file": path.name, "parts": [name for name, _ in plate],
                          "time_s": float(est["time_s"]), "filament_mm": float(est["filament_mm"]),
                          "filament_g": float(est["filament_g"]), "layer_count": layers,
                          "slice_s": round(slice_s, 3)})
        log.info("%s: %d layers, %.0f s, %.2f m filament", path.name, layers, est["time_s"],
                 est["filament_mm"] / 1000.0)
    at(1.0)
    return SliceResult(files=files, time_s=sum(p["time_s"] for p in per_plate),
                       filament_mm=sum(p["filament_mm"] for p in per_plate),
                       filament_g=sum(p["filament_g"] for p in per_plate),
                       layer_count=max(p["layer_count"] for p in per_plate), plates=n,
                       warnings=warnings, per_plate=per_plate)


def _gcode_and_estimate(sliced, printer, material, config, header, on_layer=None):
    """G-code text plus the estimate dict (computed once, inside to_gcode)."""
    from printpipe.slicing.estimate import estimate

    box: dict = {}

    def est_fn(text, prn):
        box["est"] = estimate(text, prn, density_g_cm3=float(getattr(material, "density_g_cm3", 1.24)))
        return box["est"]

    text = to_gcode(sliced, printer, material, config, header, estimate_fn=est_fn, on_layer=on_layer)
    est = dict(box["est"])
    if "filament_g" not in est:
        d = float(printer.filament_diameter_mm)
        est["filament_g"] = est["filament_mm"] * np.pi * d * d / 4 * material.density_g_cm3 / 1000.0
    return text, est, max(s.layer_count for s in sliced)


def load_parts(path: "str | Path") -> dict:
    """Read the parts of an STL (one part) or 3MF/OBJ/PLY file (one part per object), in mm.

    Returns
    -------
    dict of str -> trimesh.Trimesh
    """
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist; give the path of an .stl or .3mf file")
    if path.suffix.lower() not in (".stl", ".3mf", ".obj", ".ply"):
        raise InputError(f"cannot slice {path.name!r}: use an .stl or .3mf file (also .obj, .ply)")
    try:
        loaded = trimesh.load(path, force=None)
    except Exception as exc:  # trimesh raises many types for broken files
        raise InputError(f"cannot read {str(path)!r} as a mesh ({exc}); check the file") from exc
    parts: dict = {}
    if isinstance(loaded, trimesh.Trimesh):
        parts[path.stem] = loaded
    else:
        for node in loaded.graph.nodes_geometry:
            T, geom = loaded.graph[node]
            mesh = loaded.geometry[geom]
            if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
                continue
            mesh = mesh.copy()
            mesh.apply_transform(T)
            name = str(geom)
            k = 2
            while name in parts:
                name = f"{geom}_{k}"
                k += 1
            parts[name] = mesh
    if not parts:
        raise InputError(f"{path.name!r} holds no triangle mesh to slice")
    return parts


def slice_file(path: "str | Path", printer, material="PLA", config: SliceConfig | None = None,
               out_path: "str | Path | None" = None, *, progress=None) -> SliceResult:
    """Slice an STL or 3MF file (``printpipe slice``).

    Parameters
    ----------
    path : path
        ``.stl`` (one part) or ``.3mf`` (one part per object).
    printer, material, config
        As for :func:`slice_parts`.
    out_path : path, optional
        The G-code file; default ``path`` with the suffix ``.gcode``. When the parts need several
        plates, files ``<stem>-plate-N.gcode`` are written beside it instead.

    Returns
    -------
    SliceResult
    """
    path = Path(path)
    out_path = Path(out_path) if out_path is not None else path.with_suffix(".gcode")
    if out_path.suffix.lower() != ".gcode":
        raise InputError(f"output {str(out_path)!r} should end in .gcode")
    parts = load_parts(path)
    return slice_parts(parts, printer, material, config, out_path.parent, stem=out_path.stem,
                       progress=progress)
