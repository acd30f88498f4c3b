"""One case, end to end: DICOM series -> Volume -> Segmentation -> meshes -> files.

:func:`run` is plain composition of the stage functions (no stage classes, no registry). Every output
is first written into a private staging folder inside ``outdir`` and only renamed into place once the
whole case has succeeded, ``manifest.json`` last; a failure removes the staging folder, so a failed
case never leaves half-written or stale-looking output behind.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from scipy import ndimage

from printpipe._atomic import atomic_write_text, sha256_file
from printpipe._memory import release_free_memory
from printpipe._version import __version__
from printpipe.dicom import DicomConfig, read_series
from printpipe.errors import InputError, MeshError, SegmentationError
from printpipe.export import ExportConfig, to_plate_frame, write_3mf, write_obj, write_ply, write_stl_files
from printpipe.labels import LabelsConfig
from printpipe.plausibility import check_hu
from printpipe.repair import RepairConfig, decimate, fidelity, repair
from printpipe.segment import SegmentConfig, mirror_mesh, segment, surface_deviation
from printpipe.surface import SurfaceConfig, mask_to_mesh
from printpipe.verify import verify_outputs
from printpipe.volume import Volume

log = logging.getLogger(__name__)

__all__ = ["PipelineConfig", "CaseResult", "run", "input_hash"]

Progress = Callable[[str, float], None]

# The report worker gets ready (imports, rendering probe: about 1.5 s of CPU, 250 MB) beside
# segmentation on CTs up to this many voxels (ref003: 38 M); on larger ones (650 x 512 x 512: 170 M)
# its 250 MB would add to segmentation's peak memory (the run's peak, 1.5 GB target), so it gets
# ready after segmentation, when the parent holds less.
_EARLY_PICTURES_VOXELS = 64 * 2**20

# Keys of Volume.meta that may go into the manifest's input summary (never identifiers).
_INPUT_KEYS = (
    "series_uid_hash", "study_uid_hash", "modality", "manufacturer", "model", "kernel",
    "transfer_syntax", "compressed", "slice_count", "source_shape", "tilt_deg", "corrections",
    "skipped", "choice_reason", "patient_position",
)


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of one case. Stage configs are owned by their modules.

    Attributes
    ----------
    dicom, segment, surface, repair, export
        Stage configurations (see each module).
    labels : LabelsConfig or None
        A label map to print instead of the automatic segmentation (``--labels``; see
        :mod:`printpipe.labels`).
    printer : str or None
        Printer profile id or TOML path; ``None`` writes no G-code.
    material : str
        Material preset for G-code (``"PLA"``).
    slicing : SliceConfig or None
        Slicer settings; defaults are used when ``printer`` is set and this is ``None``.
    report : bool
        Write ``report.html`` and its pictures.
    """

    dicom: DicomConfig = field(default_factory=DicomConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    surface: SurfaceConfig = field(default_factory=SurfaceConfig)
    repair: RepairConfig = field(default_factory=RepairConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    labels: LabelsConfig | None = None
    printer: str | None = None
    material: str = "PLA"
    slicing: Any = None
    report: bool = True

    def to_dict(self) -> dict:
        """JSON-serialisable parameters (recorded in the manifest and hashed for ``--resume``)."""
        d = _jsonable(dataclasses.asdict(self))
        if self.labels is not None:  # the file's hash, never its path (a name may identify a patient)
            d["labels"] = self.labels.to_dict()
        return d

    def params_hash(self) -> str:
        """Hash of the parameters that change the outputs."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CaseResult:
    """Outcome of one case; ``manifest`` is what was written to ``outdir/manifest.json``."""

    status: str
    outdir: Path
    manifest: Mapping[str, Any]
    seconds: float
    parts: int = 0
    triangles: int = 0
    volume_mm3: float = 0.0
    warnings: tuple[str, ...] = ()
    error: str | None = None


def run(source: str | os.PathLike, outdir: str | os.PathLike, config: PipelineConfig | None = None,
        progress: Progress | None = None) -> CaseResult:
    """Run one case from a DICOM folder or zip to a watertight model in ``outdir``.

    Parameters
    ----------
    source : path
        DICOM folder (searched recursively) or ``.zip``.
    outdir : path
        Output folder; created if missing. Existing files of the same name are replaced only when
        the whole case succeeds.
    config : PipelineConfig, optional
    progress : callable(stage: str, fraction: float), optional

    Returns
    -------
    CaseResult

    Raises
    ------
    PrintpipeError
        Any user-facing failure (bad input, no bone, unprintable mesh, model does not fit ...).

    Examples
    --------
    >>> from printpipe import run                                    # doctest: +SKIP
    >>> result = run("sample_dicom", "out/demo")                     # doctest: +SKIP
    >>> [p["name"] for p in result.manifest["parts"]]                # doctest: +SKIP
    ['hip_left', 'hip_right', 'sacrum', 'femur_left', 'femur_right']
    """
    config = config or PipelineConfig()
    source = Path(source)
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"output path {outdir} exists and is not a folder; choose another -o")
    outdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    warnings: list[str] = []
    report_progress = progress or (lambda stage, fraction: None)

    @contextlib.contextmanager
    def stage(name: str):
        report_progress(name, 0.0)
        t0 = time.perf_counter()
        yield
        timings[name] = round(time.perf_counter() - t0, 3)
        report_progress(name, 1.0)

    staging = Path(tempfile.mkdtemp(prefix=".printpipe-staging-", dir=outdir))
    # the report's pictures are drawn in a worker process, started now: it gets ready (imports,
    # rendering probe) while this one reads and segments, then draws beside the later stages
    pictures = _start_pictures(staging) if config.report else None
    try:
        printer = material = None
        seg_cfg = config.segment
        if config.printer:
            from printpipe.slicing.printers import load_material, load_printer

            printer = load_printer(config.printer)
            material = load_material(config.material, printer)
            # a hollow wall must hold at least two extrusion widths of this printer's nozzle
            seg_cfg = dataclasses.replace(seg_cfg, min_wall_mm=round(2 * 1.125 * printer.nozzle_mm, 3))

        with stage("read"):
            volume = read_series(source, config.dicom, progress=progress)
        if pictures is not None and volume.hu.size <= _EARLY_PICTURES_VOXELS:
            pictures.prepare()
        warnings += list(volume.meta.get("warnings", []))
        with stage("check"):  # HU scale of a CT (headers and slices were checked while reading)
            c_check = time.thread_time()
            hu_warnings, hu_levels = check_hu(volume.hu, rescale=volume.meta.get("rescale"),
                                              force=config.dicom.force)
            check_cpu = time.thread_time() - c_check + float(volume.meta.get("check_cpu_s", 0.0))
        warnings += hu_warnings
        # every input check, including the reader's (headers, slices that do not belong)
        timings["check"] = round(timings["check"] + float(volume.meta.get("check_s", 0.0)), 3)
        # the input hash (hashlib runs without the GIL) is taken beside segmentation, so that the
        # full-grid HU array can be let go of before the later stages (see _geometry_only)
        hashing = _start_hash(volume)

        if config.labels is not None:
            with stage("labels"):
                from printpipe.labels import read as read_labels

                lab = config.labels
                seg = read_labels(lab.path, volume, parts=lab.parts, names_table=lab.names_table,
                                  ct_source=source, gap=lab.gap)
        else:
            with stage("segment"):
                seg = segment(volume, seg_cfg, progress=progress)
        warnings += list(seg.warnings)
        volume_hash = _finish_hash(hashing)
        # no later stage reads the full grid's HU values (the parts are meshed from seg.volume, a
        # crop): only its geometry is kept (650 x 512 x 512 slices: 340 MB less at the run's peak)
        volume = _geometry_only(volume)
        # and segmentation's freed scratch memory given back
        release_free_memory()
        if pictures is not None:  # the CT slices are drawn beside the stages below
            pictures.send_slices(seg.volume, seg.labels, seg.names)

        # the 3-D views start from the final meshes while their fidelity is still being measured
        parts, raws, reports, extras = _meshes(seg, config, stage, report_progress,
                                               on_final=pictures.send_parts if pictures is not None else None)
        release_free_memory()  # the checks' scratch arrays (650 slices: about 200 MB)
        seg_info = dict(seg.info)

        mirrored: dict[str, Any] = {}
        mirrored_patient: dict[str, Any] = {}
        if seg_cfg.mirror:
            with stage("mirror"):
                mirrored, mirror_info = _mirror(parts, seg, seg_cfg.mirror)
                for name in list(mirrored):  # check the template like any other part
                    mirrored[name], reports[name] = repair(mirrored[name], config.repair, name=name)
                    extras[name] = {"decimation": None, "fidelity": None,
                                    "mirrored_from": mirror_info["source"]}
            seg_info["mirror"] = mirror_info
            warnings += mirror_info.get("warnings", [])

        with stage("export"):
            # the label maps (mostly zlib, which runs without the GIL) are written in a thread beside
            # the models; the written models are read back in another
            labelling = _start_labels(staging, seg, volume)
            try:
                export_parts = dict(parts)
                frame_transform = None
                if config.export.frame == "plate":
                    export_parts, frame_transform = to_plate_frame(export_parts)
                    if mirrored:
                        mirrored_patient = dict(mirrored)
                        mirrored = {k: m.copy().apply_transform(frame_transform) for k, m in mirrored.items()}
                _write_models(staging, export_parts, mirrored, config, volume)
                verifying = _start_verify(staging, parts, mirrored, reports, extras, raws, frame_transform)
            except BaseException:
                concurrent.futures.wait([labelling])  # nothing may still write when staging is removed
                raise
            labelling.result()  # segmentation.seg.nrrd, .nii.gz, labels.json written

        print_info = None
        extra_images: dict[str, Path] = {}
        if printer is not None:
            with stage("slice"):
                # the mirrored template is printed too (the surgeon pre-bends the plate on it)
                print_info, gcode_pictures = _slice(staging, {**parts, **(mirrored_patient or mirrored)}, printer,
                                                    material, config, progress=report_progress)
            extra_images.update(gcode_pictures)
            warnings += print_info.pop("warnings", [])

        manifest = {
            "printpipe_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "status": "ok",
            "parameters": config.to_dict(),
            "params_hash": config.params_hash(),
            "input_hash": volume_hash,
            "input": _input_summary(volume),
            "segmentation": _jsonable(seg_info),
            "parts": [
                _part_entry(name, mesh, reports[name], extras[name], raws.get(name))
                for name, mesh in {**parts, **mirrored}.items()
            ],
            "outputs": [],
            "print": print_info,
            "frame": {"name": config.export.frame,
                      "transform": None if frame_transform is None else np.round(frame_transform, 6).tolist()},
            "warnings": list(dict.fromkeys(warnings)),
            "timings_s": timings,
        }
        manifest["input"]["hu_levels"] = _jsonable(hu_levels)
        manifest["input"]["warnings"] = list(dict.fromkeys(manifest["input"]["warnings"] + hu_warnings))

        with stage("verify"):  # every STL/3MF read back: "ok" only when the files hold what we say
            verified = _finish_verify(verifying, manifest["parts"])
        for entry in manifest["parts"]:
            entry["watertight"] = bool(verified["watertight"].get(entry["name"], entry["watertight"]))
        manifest["verification"] = _jsonable(verified)
        # CPU time of the checks (issue 14: under 2 % of a run); wall times are in timings_s
        manifest["checks_cpu_s"] = {"input": round(check_cpu, 4), "outputs": verified.get("cpu_s")}

        if config.report:
            with stage("report"):
                _prefer_headless_rendering()
                from printpipe.report import write_report

                write_report(staging, manifest=manifest, volume=seg.volume, labels=seg.labels,
                             names=seg.names, parts=parts, extra_images=extra_images or None,
                             pictures=pictures.result() if pictures is not None else None)
        timings["total"] = round(time.perf_counter() - t_start, 3)
        manifest["outputs"] = _outputs(staging)
        _validate_manifest(manifest)
        atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        _publish(staging, outdir)
    finally:
        if pictures is not None:
            pictures.close()
        shutil.rmtree(staging, ignore_errors=True)

    seconds = time.perf_counter() - t_start
    all_parts = manifest["parts"]
    return CaseResult(
        status="ok",
        outdir=outdir,
        manifest=manifest,
        seconds=seconds,
        parts=len(parts),
        triangles=int(sum(p["triangles"] for p in all_parts if p["name"] in parts)),
        volume_mm3=float(sum(p["volume_mm3"] for p in all_parts if p["name"] in parts)),
        warnings=tuple(manifest["warnings"]),
    )


# -- stages -------------------------------------------------------------------------------------

def _meshes(seg, config: PipelineConfig, stage, report_progress, on_final=None):
    """Surface, repair and (optionally) decimate every selected part.

    ``on_final(parts)``, when given, is called once with the meshes as they will be exported (in
    the patient frame): after the repairs, before their fidelity checks have finished (the report
    worker draws the 3-D views from them meanwhile), or after the embossed labels when there are.
    """
    parts, raws, reports, extras = {}, {}, {}, {}
    names = [(label, name) for label, name in sorted(seg.names.items())]
    if not names:
        raise SegmentationError("segmentation produced no parts to export; check --parts and --hu")
    with stage("surface"):
        # every part's box in one pass over the labels (no full-volume mask per part)
        boxes = ndimage.find_objects(seg.labels, max_label=max(label for label, _ in names))
        for i, (label, name) in enumerate(names):
            sub, mask = _crop_to_label(seg.volume, seg.labels, label, boxes[label - 1])
            result = mask_to_mesh(sub, mask, config.surface)
            parts[name], raws[name] = result.mesh, result.raw
            report_progress("surface", (i + 1) / len(names))
    def fix(name: str, pool: ThreadPoolExecutor):
        mesh, rep = repair(parts[name], config.repair, name=name)
        extra: dict[str, Any] = {"decimation": None}
        if config.repair.target_faces or config.repair.max_error_mm:
            mesh, extra["decimation"] = decimate(mesh, target_faces=config.repair.target_faces,
                                                 max_error_mm=config.repair.max_error_mm)
            mesh, rep = repair(mesh, config.repair, name=name)
        # the fidelity check (its own seeded samples) is queued as a task of its own: the largest
        # part's check then runs beside the other parts' repairs instead of after them
        return mesh, rep, extra, pool.submit(fidelity, mesh, raws[name])

    with stage("repair"):
        # parts in parallel threads (the checks' kernels, KD-trees and sorts release the GIL),
        # largest first; every part has its own seeded samples, so the figures do not depend on it
        order = sorted(parts, key=lambda n: -len(parts[n].faces))
        with ThreadPoolExecutor(max(1, min(_threads(), len(order)))) as pool:
            fixing = [pool.submit(fix, name, pool) for name in order]
            fixed = [fut.result() for fut in fixing]
            for name, (mesh, rep, extra, _) in zip(order, fixed):
                parts[name], reports[name], extras[name] = mesh, rep, extra
            if on_final is not None and not config.export.label:
                on_final(dict(parts))  # in the parts' own order, as the views list them
                on_final = None
            for i, (name, (_, _, extra, checking)) in enumerate(zip(order, fixed)):
                extra["fidelity"] = checking.result()
                report_progress("repair", (i + 1) / len(parts))
    if config.export.label:
        with stage("label"):
            from printpipe.export import emboss_label

            for name in list(parts):
                side = "L" if name.endswith("_left") else "R" if name.endswith("_right") else None
                labelled = emboss_label(parts[name], config.export.label, side)
                parts[name], reports[name] = repair(labelled, config.repair, name=name)
                extras[name]["label"] = {"text": config.export.label, "side_marker": side}
    if on_final is not None:
        on_final(parts)
    return parts, raws, reports, extras


def _threads() -> int:
    """Threads for per-part work: numba's thread count (NUMBA_NUM_THREADS, set per batch worker)."""
    try:
        import numba

        return int(numba.get_num_threads())
    except Exception:  # pragma: no cover - numba is a dependency
        return os.cpu_count() or 1


def _start_labels(staging: Path, seg, volume: Volume) -> concurrent.futures.Future:
    """Write the label maps (:func:`printpipe.labels.write`) in a daemon thread; the future's result
    is None, or the exception raised."""
    from printpipe.labels import write as write_labels

    def work() -> None:
        write_labels(staging, seg, volume)  # segmentation.seg.nrrd, .nii.gz, labels.json

    return _in_daemon_thread("printpipe-labels", work)


def _start_hash(volume: Volume) -> tuple[Any, dict]:
    """Hash the input (:func:`input_hash`) in a daemon thread; :func:`_finish_hash` joins it.

    The thread holds no reference to ``volume`` once it has finished, and is gone when
    ``_finish_hash`` returns, so that the full HU grid can be let go of after segmentation.
    """
    import threading

    box: dict[str, Any] = {"volume": volume}

    def work() -> None:
        try:
            box["hash"] = input_hash(box.pop("volume"))
        except BaseException as exc:  # re-raised by _finish_hash
            box["error"] = exc

    thread = threading.Thread(target=work, name="printpipe-hash", daemon=True)
    thread.start()
    return thread, box


def _finish_hash(hashing: tuple[Any, dict]) -> str:
    thread, box = hashing
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["hash"]


def _geometry_only(volume: Volume) -> Volume:
    """``volume`` with its HU array replaced by a read-only zero view of the same shape and dtype
    (no memory): grid, geometry and meta stay, the HU values are gone."""
    return Volume(hu=np.broadcast_to(np.zeros((), dtype=volume.hu.dtype), volume.shape),
                  spacing=volume.spacing, origin=volume.origin, direction=volume.direction, meta=volume.meta)


def _in_daemon_thread(name: str, fn) -> concurrent.futures.Future:
    """Run ``fn()`` in a daemon thread (it never holds up the interpreter's exit after an error);
    the future's result is its return value, or the exception it raised, re-raised by ``result()``."""
    import threading

    future: concurrent.futures.Future = concurrent.futures.Future()

    def work() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the main thread by result()
            future.set_exception(exc)

    threading.Thread(target=work, name=name, daemon=True).start()
    return future


def _start_verify(staging: Path, parts: dict, mirrored: dict, reports: dict, extras: dict, raws: dict,
                  frame_transform) -> tuple[Any, list[dict]]:
    """Start :func:`printpipe.verify.verify_outputs` on the written models in a daemon thread.

    The figures checked are the manifest's part entries, built here as the manifest builds them.
    Non-mirrored parts are written moved by the plate transform while their entries stay in the
    patient frame; mirrored templates are moved before their entries are made.
    """
    entries = [_part_entry(name, mesh, reports[name], extras[name], raws.get(name))
               for name, mesh in {**parts, **mirrored}.items()]
    shift = np.zeros(3) if frame_transform is None else np.asarray(frame_transform)[:3, 3]
    shifts = {name: shift for name in parts}
    shifts.update({name: np.zeros(3) for name in mirrored})
    future = _in_daemon_thread(
        "printpipe-verify", lambda: verify_outputs(staging, entries, model_parts=list(parts), shifts=shifts))
    return future, entries   # the result is taken by _finish_verify


def _finish_verify(verifying: tuple[Any, list[dict]], manifest_parts: list[dict]) -> dict:
    """Wait for the read-back; the manifest's part figures must be the ones the files were checked
    against."""
    future, entries = verifying
    verified = future.result()
    keys = ("name", "triangles", "vertices", "volume_mm3", "bbox_mm")
    if [{k: e[k] for k in keys} for e in entries] != [{k: e[k] for k in keys} for e in manifest_parts]:
        raise MeshError("the manifest's part figures differ from those the written files were checked "
                        "against; nothing was published; report a bug")
    return verified


def _crop_to_label(volume: Volume, labels: np.ndarray, label: int,
                   box: tuple[slice, ...] | None) -> tuple[Volume, np.ndarray]:
    """The part's bounding box (plus one voxel) as a sub-volume, so meshing touches only that box.

    ``box`` is the label's entry of ``scipy.ndimage.find_objects(labels)`` (None: the label is empty).
    """
    if box is None:
        raise SegmentationError(f"part label {label} is empty")
    lo = tuple(max(s.start - 1, 0) for s in box)
    hi = tuple(min(s.stop + 1, n) for s, n in zip(box, labels.shape))
    sub = volume.crop(lo, hi)
    return sub, np.ascontiguousarray(labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] == label)


def _mirror(parts: dict, seg, side: str):
    """Mirror hemipelvis ``side`` across the fitted mid-sagittal plane into a template of the other."""
    other = "right" if side == "left" else "left"
    src, dst = f"hip_{side}", f"hip_{other}"
    plane = seg.info.get("midsagittal_plane")
    if src not in parts or plane is None:
        raise SegmentationError(
            f"--mirror {side} needs the {src} part and a fitted mid-sagittal plane; "
            f"add --split-hemipelvis (parts found: {', '.join(parts) or 'none'})")
    template = mirror_mesh(parts[src], plane)
    name = f"{dst}_mirrored"
    info: dict[str, Any] = {"side": side, "source": src, "template": name, "compared_with": None,
                            "deviation": None, "warnings": []}
    if dst in parts:
        info["compared_with"] = dst
        info["deviation"] = surface_deviation(template, parts[dst])
    else:
        info["warnings"].append(f"no {dst} part to compare the mirrored template with")
    return {name: template}, info


def _write_models(staging: Path, parts: dict, mirrored: dict, config: PipelineConfig, volume: Volume):
    frame_note = "LPS patient frame, mm" if config.export.frame == "patient" else "build plate frame, mm"
    space = "LPS" if config.export.frame == "patient" else None   # 3D Slicer's SPACE= header tag
    formats = set(config.export.formats)
    # every part's triangle records are computed once for its own file and model.stl
    targets = {staging / "parts" / f"{name}.stl": [name] for name in {**parts, **mirrored}}
    targets[staging / "model.stl"] = list(parts)
    write_stl_files(targets, {**parts, **mirrored}, frame_note=frame_note, space=space)
    meta = {
        "units": "millimeter",
        "frame": frame_note,
        "software": f"printpipe {__version__}",
        "parameters": json.dumps(config.to_dict(), sort_keys=True),
        "series_uid_hash": str(volume.meta.get("series_uid_hash", "")),
    }
    if "3mf" in formats:
        write_3mf(staging / "model.3mf", {**parts, **mirrored}, meta)
    if "obj" in formats:
        write_obj(staging / "model.obj", parts)
    if "ply" in formats:
        write_ply(staging / "model.ply", parts)


def _slice(staging: Path, parts: dict, printer, material, config: PipelineConfig, progress=None):
    from printpipe.slicing import slice_parts
    from printpipe.slicing.config import SliceConfig

    slice_cfg = config.slicing or SliceConfig()
    result = slice_parts(parts, printer, material, slice_cfg, staging, stem="model", progress=progress)
    pictures: dict[str, Path] = {}
    try:
        from printpipe.slicing import render_toolpaths

        png = staging / "pictures" / "toolpaths.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        render_toolpaths(result.files[0], png)
        pictures["G-code toolpaths"] = png
    except Exception as exc:  # a picture must never fail the case
        log.warning("toolpath picture skipped: %s", exc)
    info = {
        "printer": printer.name,
        "material": material.name,
        "time_s": float(result.time_s),
        "filament_mm": float(result.filament_mm),
        "filament_g": float(result.filament_g),
        "layer_count": int(result.layer_count),
        "plates": int(result.plates),
        "files": [Path(f).name for f in result.files],
        "warnings": list(getattr(result, "warnings", [])),
    }
    return info, pictures


def _start_pictures(staging: Path):
    """Start the worker process that draws the report's pictures; None: they are drawn in this one.

    Not inside a daemonic process (batch and dask workers, which may not have children) nor on a
    single core, where the worker would only compete with this process; ``PRINTPIPE_REPORT_WORKER=0``
    turns it off (to measure what it saves).
    """
    import multiprocessing

    if multiprocessing.current_process().daemon or (os.cpu_count() or 1) < 2 \
            or os.environ.get("PRINTPIPE_REPORT_WORKER", "").strip() == "0":
        return None
    _prefer_headless_rendering()
    try:
        from printpipe._report_worker import ReportWorker
        from printpipe.i18n import current_lang

        return ReportWorker(staging, current_lang())
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        log.debug("report worker not started (%s); pictures drawn in this process", exc)
        return None


def _prefer_headless_rendering() -> None:
    """With no X display, let VTK render through EGL directly instead of failing on X first.

    VTK's default window class tries X and logs "bad X server connection" before falling back; with
    libEGL present (Debian libegl1 + Mesa) the EGL window renders off-screen quietly.
    """
    import ctypes.util

    if not os.environ.get("DISPLAY") and ctypes.util.find_library("EGL"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


# -- manifest helpers ----------------------------------------------------------------------------

def _part_entry(name, mesh, report, extra, raw) -> dict:
    bounds = np.asarray(mesh.bounds, dtype=float)
    rep = report.to_dict() if hasattr(report, "to_dict") else dict(report or {})
    try:
        from printpipe.export import PART_COLORS

        color = PART_COLORS.get(name.replace("_mirrored", ""), None)
    except ImportError:  # pragma: no cover
        color = None
    return _jsonable({
        "name": name,
        "triangles": int(len(mesh.faces)),
        "vertices": int(len(mesh.vertices)),
        # the repair report was measured on this very mesh: reuse it rather than recompute
        "watertight": bool(rep["watertight"]) if "watertight" in rep else bool(mesh.is_watertight),
        "volume_mm3": float(rep["volume_mm3"]) if "volume_mm3" in rep else float(mesh.volume),
        "area_mm2": float(rep["area_mm2"]) if "area_mm2" in rep else float(mesh.area),
        "bbox_mm": {"min": bounds[0].tolist(), "max": bounds[1].tolist(),
                    "size": (bounds[1] - bounds[0]).tolist()},
        "color": color,
        "report": rep,
        "fidelity": (extra or {}).get("fidelity"),
        "decimation": (extra or {}).get("decimation"),
    })


def _input_summary(volume: Volume) -> dict:
    meta = volume.meta
    out = {k: meta[k] for k in _INPUT_KEYS if k in meta}
    out["shape"] = list(volume.shape)
    out["spacing_mm"] = [round(s, 5) for s in volume.spacing]
    out["warnings"] = list(meta.get("warnings", []))
    out.setdefault("slice_count", volume.shape[0])
    return _jsonable(out)


def input_hash(volume: Volume) -> str:
    """Content hash of the HU grid and its geometry: a resumed batch redoes a case whose data changed."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(volume.hu).view(np.uint8))
    h.update(np.asarray(volume.spacing + volume.origin, dtype=float).tobytes())
    h.update(np.asarray(volume.direction, dtype=float).tobytes())
    return h.hexdigest()


def _outputs(staging: Path) -> list[dict]:
    kinds = {".stl": "stl", ".3mf": "3mf", ".obj": "obj", ".ply": "ply", ".gcode": "gcode",
             ".html": "report", ".png": "png", ".json": "json"}
    paths = sorted(p for p in staging.rglob("*") if p.is_file() and not p.name.startswith("."))
    # hashlib hashes without the GIL: the models, label maps and pictures are hashed side by side
    with ThreadPoolExecutor(max(1, min(_threads(), len(paths)))) as pool:
        digests = list(pool.map(sha256_file, paths))
    return [{"path": path.relative_to(staging).as_posix(), "kind": kinds.get(path.suffix.lower(), "file"),
             "sha256": digest, "bytes": path.stat().st_size} for path, digest in zip(paths, digests)]


def _validate_manifest(manifest: dict) -> None:
    try:
        from printpipe.report import validate_manifest
    except ImportError:  # pragma: no cover
        return
    validate_manifest(manifest)


def _publish(staging: Path, outdir: Path) -> None:
    """Move every staged file into ``outdir`` (each an atomic rename), the manifest last."""
    files = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: p.name == "manifest.json")
    for path in files:
        target = outdir / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)


def _jsonable(obj):
    """Convert numpy scalars/arrays, tuples and Paths so ``json.dumps`` accepts the object."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    return obj
