"""The job worker of ``printpipe serve``: a separate process that runs one case at a time.

:class:`Supervisor` lives in the web process. It starts :func:`worker_main` in a fresh ``spawn``
process, restarts it if it dies, and makes cancelling reliable: the worker checks the job's cancel
flag at every progress report and stops there (the pipeline removes its staging folder on the way
out); a job still running :data:`CANCEL_GRACE_S` after the flag was set (a stage that reports
rarely) is stopped by ending the worker process, and a new worker takes the next job.

The choices on the web form map onto the pipeline's own options (:func:`pipeline_config`): nothing
here segments, meshes or slices.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from printpipe.i18n import N_
from printpipe.web.store import JobStore

log = logging.getLogger(__name__)

__all__ = ["WHAT", "QUALITY", "STAGES", "pipeline_config", "validate_options", "worker_main", "Supervisor"]

#: what to print: form value -> (label, SegmentConfig changes)
WHAT: dict[str, tuple[str, dict[str, Any]]] = {
    "pelvis": (N_("Whole pelvis (both hip bones and the sacrum)"), {"parts": ("pelvis", "sacrum")}),
    "hip_left": (N_("Left hemipelvis"), {"split_hemipelvis": True, "parts": ("hip_left",)}),
    "hip_right": (N_("Right hemipelvis"), {"split_hemipelvis": True, "parts": ("hip_right",)}),
    "femurs": (N_("Both femurs"), {"parts": ("femur_left", "femur_right")}),
    "femur_left": (N_("Left femur"), {"parts": ("femur_left",)}),
    "femur_right": (N_("Right femur"), {"parts": ("femur_right",)}),
    "mirror_left": (N_("Mirrored template of the right hemipelvis, made from the left one"),
                    {"mirror": "left", "parts": ("hip_left", "hip_right")}),
    "mirror_right": (N_("Mirrored template of the left hemipelvis, made from the right one"),
                     {"mirror": "right", "parts": ("hip_left", "hip_right")}),
    "all": (N_("Every bone found"), {}),
}

#: print quality: form value -> (label, SliceConfig changes)
QUALITY: dict[str, tuple[str, dict[str, Any]]] = {
    "standard": (N_("Standard (0.2 mm layers, 15% infill)"), {}),
    "draft": (N_("Draft (0.3 mm layers, 10% infill, faster)"), {"layer_height_mm": 0.3, "infill_density": 0.10}),
}

#: pipeline stages: name -> (label, share of the whole job's time on the sample case)
STAGES: dict[str, tuple[str, float]] = {
    "read": (N_("Reading the CT"), 2.0),
    "check": (N_("Checking the CT values"), 1.0),
    "labels": (N_("Reading the label map"), 2.0),
    "segment": (N_("Finding the bones"), 10.0),
    "surface": (N_("Building surfaces"), 8.0),
    "repair": (N_("Checking and repairing meshes"), 8.0),
    "label": (N_("Embossing labels"), 2.0),
    "mirror": (N_("Mirroring the template"), 4.0),
    "export": (N_("Writing STL and 3MF"), 2.0),
    "slice": (N_("Slicing for the printer (G-code)"), 55.0),
    "verify": (N_("Checking the written files"), 2.0),
    "report": (N_("Writing the report"), 9.0),
}

CANCEL_GRACE_S = 5.0
_POLL_S = 0.25


def validate_options(options: dict) -> dict:
    """The form's choices, checked and normalised; :class:`InputError` names a bad one."""
    from printpipe.slicing.printers import list_materials, list_printers
    from printpipe.web.uploads import upload_error

    printers = {p.id for p in list_printers()}
    materials = {m.name for m in list_materials()}
    out = {
        "printer": str(options.get("printer") or ""),
        "material": str(options.get("material") or "PLA"),
        "what": str(options.get("what") or "pelvis"),
        "quality": str(options.get("quality") or "standard"),
        "supports": bool(options.get("supports", True)),
    }
    if out["printer"] not in printers:
        raise upload_error(N_("unknown printer {value}; choose one from the list"), value=out["printer"][:40])
    if out["material"] not in materials:
        raise upload_error(N_("unknown material {value}; choose one from the list"), value=out["material"][:40])
    if out["what"] not in WHAT:
        raise upload_error(N_("unknown choice of what to print: {value}; choose one from the list"),
                           value=out["what"][:40])
    if out["quality"] not in QUALITY:
        raise upload_error(N_("unknown print quality {value}; choose one from the list"), value=out["quality"][:40])
    return out


def pipeline_config(options: dict):
    """The :class:`~printpipe.pipeline.PipelineConfig` for the form's (validated) choices."""
    from printpipe.pipeline import PipelineConfig
    from printpipe.segment import SegmentConfig
    from printpipe.slicing.config import SliceConfig

    seg = SegmentConfig(**WHAT[options["what"]][1])
    slicing = SliceConfig(**QUALITY[options["quality"]][1], support=bool(options.get("supports", True)))
    return PipelineConfig(segment=seg, printer=options["printer"], material=options["material"],
                          slicing=slicing, report=True)


class _Cancelled(Exception):
    pass


def worker_main(data_dir: str, stop_when_idle: bool = False, parent_pid: int | None = None) -> None:
    """Run queued jobs of ``data_dir`` one after another (the worker process's entry point).

    With ``parent_pid`` the worker ends as soon as that process (the web server) is gone, even in
    the middle of a job: a server killed without its clean-up must not leave a worker behind that
    races the next server's worker on the same job (which the next server queues again).
    """
    logging.basicConfig(level=logging.WARNING, format="worker %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYVISTA_OFF_SCREEN", "true")
    os.environ.setdefault("MPLBACKEND", "Agg")
    store = JobStore(data_dir)
    import printpipe.pipeline  # noqa: F401  (import once, before the first job, not during it)

    try:  # compile or load the numba kernels now, so the first job does not wait for them
        from printpipe import kernels

        kernels.warmup()
    except Exception as exc:  # a slow first job is better than no worker
        log.warning("kernel warmup skipped: %s", exc)

    while True:
        if parent_pid is not None and os.getppid() != parent_pid:
            return
        job = store.claim_next()
        if job is None:
            if stop_when_idle:
                return
            time.sleep(_POLL_S)
            continue
        run_job(store, job, parent_pid=parent_pid)


def run_job(store: JobStore, job, parent_pid: int | None = None) -> None:
    """Run one claimed job to its end state (done, failed or cancelled)."""
    from printpipe.errors import PrintpipeError
    from printpipe.pipeline import run

    jdir = store.job_dir(job.id)
    out = jdir / "out"
    source = jdir / ("input.zip" if job.input_kind == "zip" else "input")
    stages: dict[str, float] = {}
    last = {"t": 0.0}

    def progress(stage: str, fraction: float) -> None:
        if parent_pid is not None and os.getppid() != parent_pid:
            os._exit(3)  # the server is gone: leave the job 'running' for the next server to queue again
        if stage not in STAGES:
            return  # a sub-step's own name: the bar shows the pipeline's stages only
        fraction = min(max(float(fraction), 0.0), 1.0)
        changed = stages.get(stage) != fraction
        stages[stage] = fraction
        now = time.monotonic()
        if changed and (fraction in (0.0, 1.0) or now - last["t"] > 0.2):
            last["t"] = now
            if store.progress(job.id, stage, stages):
                raise _Cancelled()
        elif now - last["t"] > 0.5:
            last["t"] = now
            if store.cancel_requested(job.id):
                raise _Cancelled()

    scrubber = _LogScrubber(jdir)
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(scrubber)
    try:
        if store.cancel_requested(job.id):
            raise _Cancelled()
        from printpipe.i18n import set_lang

        set_lang(job.options.get("lang") or "en")  # the report in the language of the page that asked
        result = run(source, out, pipeline_config(job.options), progress=progress)
        store.finish(job.id, "done", result=summarize(result.manifest, out))
    except _Cancelled:
        shutil.rmtree(out, ignore_errors=True)
        store.finish(job.id, "cancelled")
    except PrintpipeError as exc:
        shutil.rmtree(out, ignore_errors=True)
        store.finish(job.id, "failed", error_type=type(exc).__name__, error=_scrub(str(exc), jdir))
    except Exception as exc:  # an internal error: one line on the page, where it happened in the log
        import traceback

        where = "".join(traceback.format_tb(exc.__traceback__)[-6:])  # code lines only, no values
        message = _scrub(f"{type(exc).__name__}: {exc}", jdir)
        log.error("job %s: internal error: %s\n%s", job.id, message, where)
        shutil.rmtree(out, ignore_errors=True)
        store.finish(job.id, "failed", error_type="internal", error=message)
    finally:
        for handler in handlers:
            handler.removeFilter(scrubber)
        remove_input(jdir)


def remove_input(jdir: Path) -> None:
    """Delete the uploaded CT of a finished job (the outputs carry no identifiers; the CT does)."""
    (jdir / "input.zip").unlink(missing_ok=True)
    shutil.rmtree(jdir / "input", ignore_errors=True)


def summarize(manifest: dict, out: Path) -> dict:
    """What the result page shows: figures of the manifest and the files to offer."""
    outputs = [o for o in manifest.get("outputs", []) if (out / o["path"]).is_file()]
    outputs.append({"path": "manifest.json", "kind": "json", "bytes": (out / "manifest.json").stat().st_size})
    return {
        "print": manifest.get("print"),
        "parts": [{"name": p["name"], "triangles": p["triangles"], "volume_mm3": p["volume_mm3"],
                   "size_mm": p["bbox_mm"]["size"], "watertight": p["watertight"]}
                  for p in manifest.get("parts", [])],
        "outputs": [{"path": o["path"], "kind": o["kind"], "bytes": o["bytes"]} for o in outputs],
        "warnings": list(manifest.get("warnings", [])),
        "seconds": (manifest.get("timings_s") or {}).get("total"),
    }


def _scrub(message: str, jdir: Path, names: "list[str] | None" = None) -> str:
    """One line, without server paths and without any file or folder name from the upload.

    Names inside a zip are often a patient's name (hospital exports name folders after the
    patient); an error from the DICOM reader may quote one, so every path component of the archive
    is replaced by ``<file>`` before the message is stored.
    """
    text = " ".join(str(message).split())
    for p in (str(jdir / "input.zip"), str(jdir / "input"), str(jdir / "out"), str(jdir)):
        text = text.replace(p, "the upload")
    for name in _upload_names(jdir) if names is None else names:
        text = text.replace(name, "<file>")
    return text[:600]


def _upload_names(jdir: Path) -> list[str]:
    """Every path component (3 characters or more) of the job's uploaded zip, longest first."""
    import zipfile

    names: set[str] = set()
    try:
        with zipfile.ZipFile(jdir / "input.zip") as zf:
            for name in zf.namelist():
                names.update(c for c in name.replace("\\", "/").split("/") if len(c) >= 3)
    except (OSError, zipfile.BadZipFile, ValueError):
        pass
    return sorted(names, key=len, reverse=True)


class _LogScrubber(logging.Filter):
    """Takes the upload's names out of every log record while a job runs (the DICOM reader logs
    the file it skips, and a hospital export may name files or folders after the patient)."""

    def __init__(self, jdir: Path):
        super().__init__()
        self.jdir = jdir
        self.names = _upload_names(jdir)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:
            import traceback

            text += " | " + "".join(traceback.format_exception_only(*record.exc_info[:2])).strip()
            record.exc_info = None
            record.exc_text = None
        record.msg = _scrub(text, self.jdir, self.names) if "\n" not in text else "\n".join(
            _scrub(line, self.jdir, self.names) for line in text.split("\n"))
        record.args = None
        return True


class Supervisor:
    """Keeps one worker process running for a data folder (lives in the web process)."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = str(data_dir)
        self.store = JobStore(data_dir)
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx = multiprocessing.get_context("spawn")

    def start(self) -> None:
        self.store.requeue_interrupted()
        self._spawn()
        self._thread = threading.Thread(target=self._watch, name="printpipe-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._kill()

    def _spawn(self) -> None:
        self._proc = self._ctx.Process(target=worker_main, args=(self.data_dir, False, os.getpid()),
                                       name="printpipe-worker", daemon=True)
        self._proc.start()

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)

    def _watch(self) -> None:
        asked: dict[str, float] = {}
        while not self._stop.wait(0.5):
            try:
                self._check(asked)
            except Exception:  # the watcher must outlive any single failure
                log.exception("supervisor check failed")

    def _check(self, asked: dict[str, float]) -> None:
        running = [j for j in self.store.list(limit=20) if j.status == "running"]
        now = time.monotonic()
        alive = self._proc is not None and self._proc.is_alive()
        for job in running:
            if not alive:
                # the worker died under this job (out of memory, killed): say so, take the next one
                shutil.rmtree(self.store.job_dir(job.id) / "out", ignore_errors=True)
                remove_input(self.store.job_dir(job.id))
                self.store.finish(job.id, "cancelled" if job.cancel else "failed", error_type="internal",
                                  error=None if job.cancel else "the worker process stopped unexpectedly "
                                  "(out of memory?); try again, or choose fewer parts")
            elif job.cancel:
                first = asked.setdefault(job.id, now)
                if now - first > CANCEL_GRACE_S:  # the stage does not report: stop the process
                    self._kill()
                    shutil.rmtree(self.store.job_dir(job.id) / "out", ignore_errors=True)
                    remove_input(self.store.job_dir(job.id))
                    self.store.finish(job.id, "cancelled")
                    alive = False
        if not alive and not self._stop.is_set():
            self._spawn()
