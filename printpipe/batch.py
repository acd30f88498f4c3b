"""Many cases at once: every study under a folder, on a local process pool or a Dask cluster.

:func:`find_cases` turns a tree of DICOM studies into :class:`Case` objects (one per study, its chosen
CT series; or one per eligible series). :func:`run_many` runs :func:`printpipe.pipeline.run` on each
and writes ``OUTDIR/<case_id>/`` (exactly what ``printpipe run`` writes, plus ``case.log`` and
``case.json``), then ``OUTDIR/batch.json`` and ``OUTDIR/batch.csv``.

Guarantees
----------
* **Containment.** A case that raises is recorded with its message (``PrintpipeError`` -> its message;
  anything else -> ``"internal error: <type>: <message>"`` with the traceback in the case's
  ``case.log``); a worker process that dies (segfault, out-of-memory kill) is retried once on its own
  and then recorded as failed. Nothing a case does stops the others.
* **No half-written case folders.** A case writes into ``OUTDIR/.<case_id>.partial-<pid>/`` and that
  folder is renamed to ``OUTDIR/<case_id>/`` only when complete. Leftovers of an interrupted run are
  removed by the next run (which holds ``OUTDIR/.batch.lock``, so no other batch is writing there).
* **Resume.** With ``resume=True`` a case is skipped when ``OUTDIR/<case_id>/manifest.json`` has the same
  ``params_hash`` and ``input_hash`` as this run would produce; everything else is redone. The
  parameter hash is compared in the parent. The input hash is a hash of the decoded volume, so it
  costs a read of the series: ``case.json`` records a fingerprint of the series' files (relative
  names, sizes, modification times) next to the input hash they produced, and when the fingerprint
  is unchanged the case is skipped without reading; otherwise a worker reads the series, compares
  the input hash and skips or reruns the case.
* **Memory.** The local pool admits a case only while the summed estimate of the running cases
  (``slices * rows * cols * 2 bytes * memory_factor``) stays within the memory budget (default 80 %
  of the memory available when the batch starts), so a big archive does not push the machine into
  swap; one case always runs, however big.
* **numba cache.** :func:`printpipe.kernels.warmup` runs in the parent before any worker starts, so
  workers only read the on-disk cache and never write it concurrently (numba issue #4807).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import csv
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from printpipe._atomic import atomic_write_text
from printpipe._version import __version__
from printpipe.errors import InputError, PrintpipeError

log = logging.getLogger(__name__)

__all__ = [
    "BatchConfig",
    "Case",
    "CaseRecord",
    "BatchResult",
    "find_cases",
    "load_case_ids",
    "case_id_for",
    "estimate_case_memory",
    "available_memory",
    "plan",
    "run_many",
]

CaseFn = Callable[..., Any]
_PARTIAL_RE = re.compile(r"^\.(?P<case>[A-Za-z0-9_.-]+)\.(?P<kind>partial|old)-(?P<pid>\d+)$")
_CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CSV_COLUMNS = ("case_id", "status", "seconds", "parts", "triangles", "volume_mm3", "warnings",
                "error", "error_type", "resumed", "study", "series", "input_hash", "params_hash")


# -- configuration and records --------------------------------------------------------------------

@dataclass(frozen=True)
class BatchConfig:
    """How a batch runs (not what each case computes: that is :class:`PipelineConfig`).

    Attributes
    ----------
    jobs : int or None
        Cases run at the same time on the local process pool; ``None`` uses every CPU this process
        may run on. Also the worker count of ``dask_local`` when that is ``None``.
    scheduler : str or None
        Address of a running Dask scheduler (``tcp://host:8786``); cases run on its workers, which
        must see the input and output folders under the same paths (a shared file system) and
        have printpipe installed.
    dask_local : int or None
        Start a local Dask cluster with this many single-threaded worker processes.
    all_series : bool
        One case per eligible series instead of one per study.
    resume : bool
        Skip cases whose finished output has the same input and parameter hashes.
    dry_run : bool
        Plan only: :func:`run_many` returns the plan and writes nothing.
    memory_budget_bytes : int or None
        Upper bound for the summed memory estimate of running local cases; ``None`` is 80 % of the
        memory available when the batch starts.
    memory_factor : float
        Peak bytes per byte of int16 HU volume of one case (segmentation masks, distance maps,
        float copies for smoothing, meshes). 16 is a conservative measured-order figure.
    case_ids : path or None
        CSV mapping to user case IDs (see :func:`load_case_ids`).
    mp_context : {"spawn", "forkserver"}
        Start method of the local worker processes (never ``fork``: numba and threads do not survive
        it reliably).
    warmup : bool
        Compile the numba kernels in the parent before workers start.
    """

    jobs: int | None = None
    scheduler: str | None = None
    dask_local: int | None = None
    all_series: bool = False
    resume: bool = False
    dry_run: bool = False
    memory_budget_bytes: int | None = None
    memory_factor: float = 16.0
    case_ids: str | os.PathLike | None = None
    mp_context: str = "spawn"
    warmup: bool = True

    def __post_init__(self) -> None:
        if self.jobs is not None and (not isinstance(self.jobs, int) or self.jobs < 1):
            raise InputError(f"BatchConfig.jobs must be a positive integer; got {self.jobs!r}. "
                             "Use --jobs 1 or more, or leave it out to use every CPU")
        if self.dask_local is not None and (not isinstance(self.dask_local, int) or self.dask_local < 1):
            raise InputError(f"BatchConfig.dask_local must be a positive number of workers; got "
                             f"{self.dask_local!r}")
        if self.scheduler and self.dask_local:
            raise InputError(f"BatchConfig: scheduler ({self.scheduler!r}) and dask_local "
                             f"({self.dask_local}) exclude each other; pass only one of --scheduler "
                             "and --dask-local")
        if self.memory_budget_bytes is not None and self.memory_budget_bytes <= 0:
            raise InputError(f"BatchConfig.memory_budget_bytes must be positive; got "
                             f"{self.memory_budget_bytes!r}")
        if not (self.memory_factor > 0):
            raise InputError(f"BatchConfig.memory_factor must be positive; got {self.memory_factor!r}")
        if self.mp_context not in ("spawn", "forkserver"):
            raise InputError(f"BatchConfig.mp_context must be 'spawn' or 'forkserver'; got "
                             f"{self.mp_context!r} (fork is unsafe with numba and threads)")

    @property
    def executor(self) -> str:
        """``"process"``, ``"dask-local"`` or ``"dask"``."""
        if self.scheduler:
            return "dask"
        if self.dask_local:
            return "dask-local"
        return "process"


@dataclass(frozen=True)
class Case:
    """One case of a batch: one series to run the pipeline on.

    Attributes
    ----------
    case_id : str
        Folder name under OUTDIR; carries no patient data.
    source : str
        Folder (or zip) handed to :func:`printpipe.pipeline.run`.
    study, series : str
        Hashed study and series UIDs (``sha256(uid)[:16]``).
    series_selector : str or None
        What to put into ``DicomConfig.series`` so ``run`` picks this series in ``source``.
    reason : str
        Why this series was chosen (shown by ``--dry-run``).
    shape : (slices, rows, cols) or None
        Size of the series, for the memory estimate.
    files : tuple of str
        The series' files (used for the quick resume fingerprint); may be empty.
    folder : str
        ``source`` relative to the batch root, for ``--dry-run`` and the folder CSV mapping. Never
        written to an output file (folder names may be patient names).
    error : str or None
        Set when the study has no usable series: the case fails with this message when run.
    """

    case_id: str
    source: str
    study: str = ""
    series: str = ""
    series_selector: str | None = None
    reason: str = ""
    shape: tuple[int, int, int] | None = None
    files: tuple[str, ...] = ()
    folder: str = ""
    modality: str = ""
    error: str | None = None


@dataclass(frozen=True)
class CaseRecord:
    """What happened to one case (one row of ``batch.csv``)."""

    case_id: str
    status: str  # "ok" | "failed" | "interrupted" | "planned"
    seconds: float = 0.0
    parts: int = 0
    triangles: int = 0
    volume_mm3: float = 0.0
    warnings: tuple[str, ...] = ()
    error: str | None = None
    error_type: str | None = None
    resumed: bool = False
    study: str = ""
    series: str = ""
    input_hash: str | None = None
    params_hash: str | None = None
    note: str = ""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["warnings"] = list(self.warnings)
        d["seconds"] = round(float(self.seconds), 3)
        d["volume_mm3"] = round(float(self.volume_mm3), 3)
        return d


@dataclass(frozen=True)
class BatchResult:
    """Outcome of :func:`run_many`.

    Attributes
    ----------
    records : tuple of CaseRecord
        One per case, in the order of the input cases.
    outdir : Path
    seconds : float
        Wall time of the whole batch.
    executor : str
        ``"process"``, ``"dask-local"`` or ``"dask"``.
    interrupted : bool
        The batch was stopped (Ctrl-C) before every case finished.
    """

    records: tuple[CaseRecord, ...]
    outdir: Path
    seconds: float = 0.0
    executor: str = "process"
    interrupted: bool = False
    summary_files: tuple[Path, ...] = ()

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def n_ok(self) -> int:
        return self.count("ok")

    @property
    def n_failed(self) -> int:
        return self.count("failed")

    @property
    def n_resumed(self) -> int:
        return sum(r.resumed for r in self.records)

    @property
    def exit_code(self) -> int:
        """0 when every case is ok, 130 when interrupted, 1 otherwise."""
        if self.interrupted:
            return 130
        return 0 if all(r.status in ("ok", "planned") for r in self.records) else 1


# -- cases ----------------------------------------------------------------------------------------

def case_id_for(study_uid: str, series_uid: str) -> str:
    """Deterministic case ID with no patient data: ``sha256(study_uid + series_uid)[:12]``.

    Parameters
    ----------
    study_uid, series_uid : str
        The UIDs, or their hashes when only those are known (the ID is then a hash of hashes; it is
        equally stable and equally free of patient data).

    Examples
    --------
    >>> case_id_for("1.2.3", "1.2.3.4")
    'ef294024e59b'
    """
    return hashlib.sha256((str(study_uid) + str(series_uid)).encode("utf-8")).hexdigest()[:12]


def _uid_hash(uid: str) -> str:
    """The project's UID hash, ``sha256(uid)[:16]`` (docs/architecture.md)."""
    return hashlib.sha256(str(uid).strip().encode("utf-8")).hexdigest()[:16]


def load_case_ids(path: str | os.PathLike) -> dict:
    """Read a user case-ID mapping.

    Two CSV layouts are accepted (header row optional, ``#`` comments allowed):

    * ``study_uid,series_uid,case_id`` -- raw DICOM UIDs; they are hashed on reading and never kept;
    * ``folder,case_id`` -- a folder relative to the batch root (a study or a series folder).

    Parameters
    ----------
    path : path
        The CSV file.

    Returns
    -------
    dict
        ``{"uids": {(study_hash, series_hash): case_id}, "folders": {folder: case_id}}``.

    Raises
    ------
    InputError
        Missing file, a row with the wrong number of fields, an unsafe case ID, or duplicates.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read the case-ID mapping {path}: {exc.strerror}; check --case-ids") from exc
    uids: dict[tuple[str, str], str] = {}
    folders: dict[str, str] = {}
    seen: dict[str, int] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        row = [c.strip() for c in row]
        if not row or not any(row) or row[0].startswith("#"):
            continue
        low = [c.lower() for c in row]
        if lineno == 1 and ("case_id" in low or "folder" in low or "study_uid" in low):
            continue  # header
        if len(row) == 3:
            study, series, cid = row
        elif len(row) == 2:
            folder, cid = row
        else:
            raise InputError(f"{path}:{lineno}: expected 'study_uid,series_uid,case_id' or "
                             f"'folder,case_id', got {len(row)} fields")
        if not _CASE_ID_RE.match(cid):
            raise InputError(f"{path}:{lineno}: case ID {cid!r} is not a safe folder name; use letters, "
                             "digits, '_', '-' and '.', at most 64 characters, not starting with '.'")
        if cid in seen:
            raise InputError(f"{path}:{lineno}: case ID {cid!r} is used twice (first on line "
                             f"{seen[cid]}); case IDs must be unique")
        seen[cid] = lineno
        if len(row) == 3:
            uids[(_uid_hash(study), _uid_hash(series))] = cid
        else:
            key = Path(folder).as_posix().strip("/") or "."
            folders[key] = cid
    return {"uids": uids, "folders": folders}


def _mapped_id(id_map: Mapping | None, study: str, series: str, folder: str) -> str | None:
    if not id_map:
        return None
    cid = id_map.get("uids", {}).get((study, series))
    if cid:
        return cid
    best = None
    parts = Path(folder).as_posix().strip("/")
    for key, value in id_map.get("folders", {}).items():
        if key == "." or parts == key or parts.startswith(key + "/"):
            if best is None or len(key) > len(best[0]):
                best = (key, value)
    return best[1] if best else None


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """First attribute (or mapping key) of ``obj`` among ``names`` that is set."""
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return default


def _common_folder(files: Sequence[str], root: Path) -> Path:
    if not files:
        return root
    parents = [str(Path(f).resolve().parent) for f in files]
    return Path(os.path.commonpath(parents))


def find_cases(root: str | os.PathLike, all_series: bool = False, id_map: Mapping | None = None,
               *, series: str | None = None) -> list[Case]:
    """Find the cases under ``root``: one per study (its chosen CT series), or one per eligible series.

    Parameters
    ----------
    root : path
        Folder searched recursively for DICOM files (any layout: one folder per study, per series,
        or everything mixed).
    all_series : bool
        One case per eligible series (a CT stack that is not a localizer and has enough slices)
        instead of one per study.
    id_map : dict, optional
        From :func:`load_case_ids`; unmapped cases keep their hash ID (a warning is logged).
    series : str, optional
        Series selector (``--series``) used to choose the series of every study.

    Returns
    -------
    list of Case
        Sorted by case ID, so the order (and the IDs) are the same on every run.

    Raises
    ------
    InputError
        ``root`` is not a folder, holds no DICOM file at all, or two cases map to the same case ID.

    Notes
    -----
    The default case ID is :func:`case_id_for` of the hashed study UID and the stack id (hashed
    series UID), so it carries no patient data and does not depend on folder names or on the
    order in which files are found. Studies are grouped by the hashed StudyInstanceUID, whatever
    the folder layout.

    Nothing found is dropped silently: a study without a usable series (no CT, a scout only)
    still gives a case, and so does a folder of DICOM-looking files that discovery could not read
    (truncated, corrupt). Such a case fails when run, with the reader's message, so the batch
    summary lists it.
    """
    from printpipe import dicom

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"batch input {root} is not a folder; pass the folder that holds the studies")
    root_abs = root.resolve()
    discovery = dicom.discover(root)
    base = Path(getattr(discovery, "source", root)).resolve()
    infos_all = list(getattr(discovery, "series", []) or [])
    studies: dict[str, list] = collections.defaultdict(list)
    for info in infos_all:
        studies[str(_get(info, "study_uid_hash", default=""))].append(info)

    cases: list[Case] = []
    covered: set[Path] = set()
    for study_hash, infos in sorted(studies.items()):
        for info in infos:
            covered.update((base / f).parent for f in (info.files or ()))
        sub = _sub_discovery(discovery, infos)
        chosen: list[tuple[Any, str]] = []
        if all_series:
            for info in infos:
                ok, why = _eligible(info)
                if ok:
                    chosen.append((info, why))
                else:
                    log.info("study %s: stack %s not eligible: %s", study_hash, _key(info), why)
        if not chosen:
            try:
                info, why = dicom.choose(sub, series)
                chosen.append((info, why))
            except PrintpipeError as exc:
                # keep the study as a case that fails with this message when run
                info = max(infos, key=lambda i: int(_get(i, "slices", default=0)))
                case = _make_case(root_abs, base, study_hash, info, f"no usable series: {exc}", id_map)
                cases.append(dataclasses.replace(case, error=str(exc)))
                continue
        for info, why in chosen:
            cases.append(_make_case(root_abs, base, study_hash, info, why, id_map))

    for folder in _unreadable_folders(root_abs, covered):
        rel = folder.relative_to(root_abs).as_posix() if folder != root_abs else "."
        cid = _mapped_id(id_map, "", "", rel) or hashlib.sha256(f"folder:{rel}".encode()).hexdigest()[:12]
        cases.append(Case(case_id=cid, source=str(folder), reason="no readable DICOM series found in "
                          "this folder by discovery", folder=rel))
        log.warning("folder %s holds DICOM-looking files but no readable series; it is a case that "
                    "will fail with the reader's message", cid)
    if not cases:
        raise InputError(f"no DICOM files found under {root}; check the path (files are searched "
                         "recursively, any extension)")

    ids = collections.Counter(c.case_id for c in cases)
    dup = [cid for cid, n in ids.items() if n > 1]
    if dup:
        raise InputError(f"case IDs {', '.join(sorted(dup))} are given to more than one case; "
                         "fix the --case-ids mapping (map series, not studies, with --all-series)")
    return sorted(cases, key=lambda c: c.case_id)


_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}


def _looks_dicom(path: Path) -> bool:
    if path.name.startswith(".") or path.name.upper() == "DICOMDIR":
        return False
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _unreadable_folders(root: Path, covered: set[Path]) -> list[Path]:
    """Folders holding DICOM-looking files none of which belongs to a discovered series."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        if folder in covered:
            continue
        if any(_looks_dicom(folder / name) for name in filenames):
            out.append(folder)
    return out


def _key(info: Any) -> str:
    return str(_get(info, "key", "uid_hash", default=""))


def _sub_discovery(discovery: Any, infos: list) -> Any:
    """``discovery`` restricted to ``infos`` (one study)."""
    if dataclasses.is_dataclass(discovery) and not isinstance(discovery, type):
        with contextlib.suppress(Exception):
            return dataclasses.replace(discovery, series=list(infos))
    return infos


def _eligible(info: Any) -> tuple[bool, str]:
    """The criteria of :func:`printpipe.dicom.choose` for one stack, with a reason."""
    from printpipe.dicom import MIN_SLICES

    modality = str(_get(info, "modality", default=""))
    slices = int(_get(info, "slices", default=0))
    if modality != "CT":
        return False, f"modality {modality or '?'}, not CT"
    if _get(info, "localizer", default=False):
        return False, "a localizer (scout) image"
    if slices < MIN_SLICES:
        return False, f"{slices} slice(s), fewer than {MIN_SLICES}"
    if _get(info, "decodable", default=True) is False:
        return False, f"not decodable with the installed plug-ins ({_get(info, 'decoder_hint', default='')})"
    return True, (f"eligible CT stack (--all-series): {slices} slices, "
                  f"{_get(info, 'orientation', default='?')}")


def _make_case(root: Path, base: Path, study_hash: str, info: Any, why: str,
               id_map: Mapping | None) -> Case:
    key = _key(info)
    files = tuple(str(base / f) for f in (info.files or ()))
    folder_path = _common_folder(files, root)
    try:
        folder = folder_path.relative_to(root).as_posix()
    except ValueError:
        folder = folder_path.as_posix()
    cid = _mapped_id(id_map, study_hash, key, folder)
    if cid is None and id_map and "-" in key:  # a multi-stack series: map by its UID hash too
        cid = _mapped_id(id_map, study_hash, key.split("-")[0], folder)
    if id_map and cid is None:
        log.warning("no --case-ids entry for stack %s; using its hash ID", key)
    shape = None
    with contextlib.suppress(TypeError, ValueError):
        shape = (int(info.slices), int(info.rows), int(info.cols))
    return Case(
        case_id=cid or case_id_for(study_hash, key),
        source=str(folder_path),
        study=study_hash,
        series=key,
        series_selector=key or None,
        reason=str(why),
        shape=shape,
        files=files,
        folder=folder or ".",
        modality=str(_get(info, "modality", default="")),
    )


# -- memory ---------------------------------------------------------------------------------------

def available_memory() -> int:
    """Bytes of memory available to new processes now (psutil, else ``/proc/meminfo``)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return 4 << 30  # nothing to ask: assume a small machine


def estimate_case_memory(case: Case, factor: float = 16.0, bytes_per_voxel: int = 2) -> int:
    """Peak memory estimate of one case: ``slices * rows * cols * bytes_per_voxel * factor``.

    Parameters
    ----------
    case : Case
    factor : float
        Peak bytes per byte of the int16 volume (see :attr:`BatchConfig.memory_factor`).
    bytes_per_voxel : int
        2 for int16 HU.

    Returns
    -------
    int
        Bytes. Unknown shapes count as 512 x 512 x (number of files, at least 300), the size of a
        typical abdominal CT, so they are not under-estimated.
    """
    if case.shape:
        n, rows, cols = case.shape
    else:
        n, rows, cols = max(len(case.files), 300), 512, 512
    return int(n * rows * cols * bytes_per_voxel * factor) + (256 << 20)  # + interpreter and libraries


def _cpu_count() -> int:
    with contextlib.suppress(AttributeError, OSError):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


# -- resume ---------------------------------------------------------------------------------------

def _fingerprint(case: Case) -> str | None:
    """Quick identity of the case's files (relative names, sizes, mtimes); ``None`` when unknown."""
    if not case.files:
        return None
    h = hashlib.sha256()
    base = Path(case.source)
    try:
        for f in sorted(case.files):
            st = os.stat(f)
            with contextlib.suppress(ValueError):
                f = str(Path(f).relative_to(base))
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    except OSError:
        return None
    return h.hexdigest()[:24]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _resume_check(case: Case, final: Path, params_hash: str) -> tuple[str, str]:
    """Decide in the parent: ("skip", why) | ("verify", why) | ("run", why)."""
    manifest = _read_json(final / "manifest.json")
    if manifest is None:
        return "run", "no finished output"
    if manifest.get("params_hash") != params_hash:
        return "run", "parameters changed"
    info = _read_json(final / "case.json") or {}
    fp = _fingerprint(case)
    if fp is not None and info.get("fingerprint") == fp and info.get("input_hash") == manifest.get("input_hash"):
        return "skip", "up to date (same files, same parameters)"
    return "verify", "same parameters; input hash to be checked"


def _record_from_finished(case: Case, final: Path, note: str) -> CaseRecord:
    manifest = _read_json(final / "manifest.json") or {}
    info = _read_json(final / "case.json") or {}
    rec = info.get("record", {})
    return CaseRecord(
        case_id=case.case_id, status="ok", seconds=float(rec.get("seconds", 0.0)),
        parts=int(rec.get("parts", 0)), triangles=int(rec.get("triangles", 0)),
        volume_mm3=float(rec.get("volume_mm3", 0.0)), warnings=tuple(manifest.get("warnings", ())),
        resumed=True, study=case.study, series=case.series, input_hash=manifest.get("input_hash"),
        params_hash=manifest.get("params_hash"), note=note,
    )


# -- the work of one case (runs in a worker process) ----------------------------------------------

def _default_case_fn(source: str, outdir: Path, config: Any, progress=None):
    from printpipe.pipeline import run

    return run(source, outdir, config, progress=progress)


def _config_for_case(config: Any, case: Case) -> Any:
    """``config`` with ``dicom.series`` set to the case's series, when that field exists."""
    dicom_cfg = getattr(config, "dicom", None)
    if case.series_selector and dicom_cfg is not None and dataclasses.is_dataclass(dicom_cfg):
        if "series" in {f.name for f in dataclasses.fields(dicom_cfg)}:
            return dataclasses.replace(config, dicom=dataclasses.replace(dicom_cfg, series=case.series_selector))
    return config


def _params_hash(config: Any) -> str:
    if hasattr(config, "params_hash"):
        return str(config.params_hash())
    return hashlib.sha256(repr(config).encode()).hexdigest()[:16]


def _input_hash_of(case: Case, config: Any) -> str | None:
    """The manifest's ``input_hash`` of this case, computed by reading the series only."""
    from printpipe import pipeline
    from printpipe.dicom import read_series

    fn = getattr(pipeline, "input_hash", None) or getattr(pipeline, "_input_hash", None)
    if fn is None:
        return None
    return fn(read_series(case.source, config.dicom))


def _worker_init(env: Mapping[str, str]) -> None:
    """Pool worker start: Ctrl-C is the parent's business; cap native thread pools."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for key, value in env.items():
        os.environ.setdefault(key, value)


def _publish_case(partial: Path, final: Path) -> None:
    """Rename the finished ``partial`` folder to ``final``, replacing an older ``final``."""
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(partial, final)


def execute_case(case: Case, outdir: str | os.PathLike, config: Any, case_fn: CaseFn | None = None,
                 verify_input: bool = False) -> CaseRecord:
    """Run one case into ``OUTDIR/.<case_id>.partial-<pid>/`` and rename it to ``OUTDIR/<case_id>/``.

    This is what a worker executes; it never raises for a failed case (only for interruption).

    Parameters
    ----------
    case : Case
    outdir : path
        The batch output folder.
    config : PipelineConfig
        Base configuration; the case's series is selected in ``config.dicom``.
    case_fn : callable, optional
        ``case_fn(source, outdir, config) -> CaseResult``; default :func:`printpipe.pipeline.run`.
    verify_input : bool
        ``--resume`` found a finished output with the same parameters: read the series, and skip the
        case when its input hash equals the manifest's.

    Returns
    -------
    CaseRecord
    """
    outdir = Path(outdir)
    case_fn = case_fn or _default_case_fn
    cfg = _config_for_case(config, case)
    params_hash = _params_hash(cfg)
    final = outdir / case.case_id
    partial = outdir / f".{case.case_id}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)

    pkg_logger = logging.getLogger("printpipe")
    handler = logging.FileHandler(partial / "case.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    old_level = pkg_logger.level
    pkg_logger.addHandler(handler)
    if pkg_logger.getEffectiveLevel() > logging.INFO:
        pkg_logger.setLevel(logging.INFO)
    t0 = time.perf_counter()
    error = error_type = None
    result = None
    input_hash = None
    try:
        log.info("case %s: series %s (%s)", case.case_id, case.series, case.reason)
        if verify_input:
            try:
                input_hash = _input_hash_of(case, cfg)
            except Exception as exc:  # reading failed: run the case and let it report properly
                log.info("case %s: input hash not computed (%s); running", case.case_id, exc)
            manifest = _read_json(final / "manifest.json") or {}
            if input_hash is not None and input_hash == manifest.get("input_hash"):
                log.info("case %s: input and parameters unchanged; kept", case.case_id)
                handler.close()
                shutil.rmtree(partial, ignore_errors=True)
                return _record_from_finished(case, final, "up to date (same input hash, same parameters)")
        if case.error:
            raise InputError(case.error)
        result = case_fn(case.source, partial, cfg)
        if getattr(result, "status", "ok") != "ok":
            error = str(getattr(result, "error", None) or "the case reported a failure without a message")
            error_type = "CaseFailed"
    except PrintpipeError as exc:
        error, error_type = str(exc), type(exc).__name__
        log.error("case %s failed: %s: %s", case.case_id, error_type, exc)
    except Exception as exc:
        error, error_type = f"internal error: {type(exc).__name__}: {exc}", type(exc).__name__
        log.error("case %s: internal error\n%s", case.case_id, traceback.format_exc())
    except BaseException:  # interrupted: leave nothing half-written
        pkg_logger.removeHandler(handler)
        handler.close()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        pkg_logger.removeHandler(handler)
        pkg_logger.setLevel(old_level)
        handler.close()
    seconds = time.perf_counter() - t0

    manifest = dict(getattr(result, "manifest", None) or {}) if error is None else {}
    if error is None:
        record = CaseRecord(
            case_id=case.case_id, status="ok", seconds=seconds,
            parts=int(getattr(result, "parts", 0) or 0),
            triangles=int(getattr(result, "triangles", 0) or 0),
            volume_mm3=float(getattr(result, "volume_mm3", 0.0) or 0.0),
            warnings=tuple(str(w) for w in (getattr(result, "warnings", ()) or ())),
            study=case.study, series=case.series,
            input_hash=manifest.get("input_hash"), params_hash=manifest.get("params_hash", params_hash),
        )
    else:
        # a failed case keeps only its log and error: no model files that look usable
        for child in partial.iterdir():
            if child.name != "case.log":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        record = CaseRecord(case_id=case.case_id, status="failed", seconds=seconds, error=error,
                            error_type=error_type, study=case.study, series=case.series,
                            params_hash=params_hash)
    case_info = {
        "printpipe_version": __version__,
        "case_id": case.case_id,
        "study_uid_hash": case.study,
        "series_uid_hash": case.series,
        "choice_reason": case.reason,
        "fingerprint": _fingerprint(case),
        "input_hash": record.input_hash,
        "params_hash": record.params_hash,
        "record": record.to_dict(),
    }
    atomic_write_text(partial / "case.json", json.dumps(case_info, indent=2) + "\n")
    _publish_case(partial, final)
    return record


# -- executors ------------------------------------------------------------------------------------

class _ProcessExecutor:
    """concurrent.futures process pool with a restart after a worker died."""

    memory_aware = True
    name = "process"

    def __init__(self, jobs: int, mp_context: str, env: Mapping[str, str]):
        self.jobs = jobs
        self.ctx = multiprocessing.get_context(mp_context)
        self.env = dict(env)
        self.pool = self._new()

    def _new(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=self.jobs, mp_context=self.ctx,
                                      initializer=_worker_init, initargs=(self.env,))

    def capacity(self) -> int:
        return self.jobs

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def wait(self, futures):
        done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
        return done

    @staticmethod
    def is_worker_death(exc: BaseException) -> bool:
        from concurrent.futures.process import BrokenProcessPool

        return isinstance(exc, BrokenProcessPool)

    def restart(self) -> None:
        self.shutdown(kill=True)
        self.pool = self._new()

    def shutdown(self, kill: bool = False) -> None:
        if kill:
            # Python >= 3.14 has terminate_workers(); before that the pool's processes are only
            # reachable through its private table. Killed workers leave partial folders, which the
            # next run removes.
            terminate = getattr(self.pool, "terminate_workers", None)
            if terminate is not None:
                with contextlib.suppress(Exception):
                    terminate()
            else:
                for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
                    with contextlib.suppress(Exception):
                        proc.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


class _DaskExecutor:
    """A dask.distributed Client: an existing scheduler, or a LocalCluster we own."""

    memory_aware = False  # remote workers: Dask manages their memory (worker memory limits)
    name = "dask"

    def __init__(self, scheduler: str | None, n_local: int | None, env: Mapping[str, str]):
        try:
            import distributed
        except ImportError as exc:
            raise InputError("Dask is not installed; install the extra with "
                             "pip install 'printpipe[dask]' (or run without --scheduler/--dask-local)") from exc
        self.distributed = distributed
        self.cluster = None
        if scheduler:
            self.name = "dask"
            try:
                self.client = distributed.Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise InputError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}; check the "
                                 "address (tcp://host:8786) and that the scheduler is running") from exc
        else:
            self.name = "dask-local"
            self.memory_aware = True  # the workers share this machine's memory
            self.cluster = distributed.LocalCluster(
                n_workers=int(n_local), threads_per_worker=1, processes=True, dashboard_address=None,
                env=dict(env), silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster)

    def capacity(self) -> int:
        with contextlib.suppress(Exception):
            return max(sum(self.client.nthreads().values()), 1)
        return 1

    def submit(self, fn, *args):
        case = args[0]
        return self.client.submit(fn, *args, pure=False, key=f"printpipe-case-{case.case_id}-{time.monotonic_ns()}")

    def wait(self, futures):
        done, _ = self.distributed.wait(list(futures), return_when="FIRST_COMPLETED")
        return set(done)

    def is_worker_death(self, exc: BaseException) -> bool:
        return isinstance(exc, getattr(self.distributed, "KilledWorker", ())) or \
            type(exc).__name__ in ("KilledWorker", "CommClosedError")

    def restart(self) -> None:  # Dask replaces dead workers itself
        return None

    def warmup_remote(self) -> None:
        """Compile the kernels on one worker per host, one host at a time (shared caches)."""
        hosts: dict[str, str] = {}
        with contextlib.suppress(Exception):
            for addr, info in self.client.scheduler_info().get("workers", {}).items():
                hosts.setdefault(str(info.get("host", addr)), addr)
        for addr in hosts.values():
            with contextlib.suppress(Exception):
                self.client.submit(_warmup_kernels, workers=[addr], pure=False).result(timeout=600)

    def shutdown(self, kill: bool = False) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


def _warmup_kernels() -> bool:
    """Compile (or load from cache) every numba kernel once; ``False`` when there is no warmup."""
    try:
        from printpipe import kernels
    except ImportError:
        return False
    warm = getattr(kernels, "warmup", None)
    if warm is None:
        return False
    t0 = time.perf_counter()
    warm()
    log.info("numba kernels ready in %.1f s", time.perf_counter() - t0)
    return True


# -- the batch ------------------------------------------------------------------------------------

def plan(cases: Sequence[Case], outdir: str | os.PathLike, config: Any,
         batch: BatchConfig = BatchConfig()) -> list[tuple[Case, str, str]]:
    """What :func:`run_many` would do with each case.

    Returns
    -------
    list of (case, action, why)
        ``action`` is ``"run"``, ``"skip"`` (resume: up to date) or ``"verify"`` (resume: read the
        series and skip it when its input hash is unchanged).
    """
    outdir = Path(outdir)
    out = []
    for case in cases:
        if batch.resume:
            action, why = _resume_check(case, outdir / case.case_id, _params_hash(_config_for_case(config, case)))
        else:
            action, why = "run", "new" if not (outdir / case.case_id).exists() else "redo (no --resume)"
        out.append((case, action, why))
    return out


def _clean_stale(outdir: Path) -> None:
    """Remove partial folders of an interrupted run; restore a replaced folder whose swap was cut."""
    for entry in outdir.iterdir():
        m = _PARTIAL_RE.match(entry.name)
        if not m or not entry.is_dir():
            continue
        final = outdir / m.group("case")
        if m.group("kind") == "old" and not final.exists():
            log.info("restoring %s from an interrupted replacement", final.name)
            os.rename(entry, final)
            continue
        log.info("removing stale %s", entry.name)
        shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def _outdir_lock(outdir: Path):
    import fcntl

    fh = open(outdir / ".batch.lock", "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise InputError(f"another printpipe batch is writing to {outdir}; wait for it or choose "
                             "another -o") from exc
        yield
    finally:
        fh.close()


def _thread_env(per_worker: int) -> dict[str, str]:
    n = str(max(per_worker, 1))
    return {"NUMBA_NUM_THREADS": n, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "MKL_NUM_THREADS": n}


def run_many(cases: Iterable[Case], outdir: str | os.PathLike, config: Any = None,
             batch: BatchConfig = BatchConfig(), progress: Any = None, *,
             case_fn: CaseFn | None = None) -> BatchResult:
    """Run every case, contained, in parallel; write ``OUTDIR/<case_id>/``, ``batch.json``, ``batch.csv``.

    Parameters
    ----------
    cases : iterable of Case
        From :func:`find_cases` (or built by hand).
    outdir : path
        Batch output folder (created).
    config : PipelineConfig, optional
        Settings of every case (default ``PipelineConfig()``).
    batch : BatchConfig
        Executor, concurrency, resume, dry run.
    progress : CaseBar-like, optional
        Object with ``start(total)``, ``case_started(case_id)``,
        ``case_finished(case_id, status, seconds, error)`` and ``close()``
        (:class:`printpipe.progress.CaseBar`).
    case_fn : callable, optional
        ``case_fn(source, outdir, config) -> CaseResult``; default :func:`printpipe.pipeline.run`.
        Must be importable by name (it is pickled to the workers).

    Returns
    -------
    BatchResult
        ``exit_code`` is 1 when any case failed.

    Raises
    ------
    KeyboardInterrupt
        After Ctrl-C: the workers are stopped, ``batch.json``/``batch.csv`` record the finished cases
        (the others as ``interrupted``), and no partial case folder is left.
    InputError
        Unusable batch options, an unreachable scheduler, or another batch holding ``outdir``.

    Notes
    -----
    The parent admits cases in order. On the local pool a case is admitted while fewer than
    ``jobs`` run and the summed memory estimate stays within the budget; on Dask, while fewer cases
    run than the cluster has worker threads. A worker that dies takes every case it shared the pool
    with down; those cases are retried one at a time, and a case that kills its worker when alone is
    recorded as failed.
    """
    if config is None:
        from printpipe.pipeline import PipelineConfig

        config = PipelineConfig()
    cases = list(cases)
    outdir = Path(outdir)
    ids = collections.Counter(c.case_id for c in cases)
    if any(n > 1 for n in ids.values()):
        raise InputError("duplicate case IDs: " + ", ".join(sorted(k for k, n in ids.items() if n > 1)))
    if batch.dry_run:
        records = tuple(CaseRecord(case_id=c.case_id, status="planned", study=c.study, series=c.series,
                                   note=f"{action}: {why}")
                        for c, action, why in plan(cases, outdir, config, batch))
        return BatchResult(records=records, outdir=outdir, executor=batch.executor)

    outdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    with _outdir_lock(outdir):
        _clean_stale(outdir)
        return _run_locked(cases, outdir, config, batch, progress, case_fn, t_start)


def _run_locked(cases, outdir, config, batch, progress, case_fn, t_start) -> BatchResult:
    records: dict[str, CaseRecord] = {}
    todo: collections.deque = collections.deque()
    for case, action, why in plan(cases, outdir, config, dataclasses.replace(batch, dry_run=False)):
        if action == "skip":
            records[case.case_id] = _record_from_finished(case, outdir / case.case_id, why)
        else:
            todo.append((case, action == "verify"))
    if progress is not None:
        progress.start(len(cases), executor=batch.executor)
        for rec in records.values():
            progress.case_finished(rec.case_id, "ok", rec.seconds, None)

    executor = None
    interrupted = False
    try:
        if todo:
            jobs = batch.jobs or _cpu_count()
            if batch.warmup:
                _warmup_kernels()  # in the parent, before any worker exists
            if batch.executor == "process":
                jobs = min(jobs, len(todo))
                executor = _ProcessExecutor(jobs, batch.mp_context, _thread_env(_cpu_count() // jobs))
            else:
                executor = _DaskExecutor(batch.scheduler, batch.dask_local, _thread_env(1))
                if batch.scheduler and batch.warmup:
                    executor.warmup_remote()
            budget = batch.memory_budget_bytes or int(0.8 * available_memory())
            log.info("batch: %d case(s) to run on %s (capacity %d, memory budget %.1f GB)",
                     len(todo), executor.name, executor.capacity(), budget / 1e9)
            _schedule(todo, executor, outdir, config, batch, budget, case_fn, records, progress)
    except KeyboardInterrupt:
        interrupted = True
        if executor is not None:
            executor.shutdown(kill=True)
            executor = None
        _clean_stale(outdir)
        raise
    finally:
        if executor is not None:
            executor.shutdown()
        _clean_stale(outdir)  # every worker has stopped: whatever partial is left is dead
        result = _finish(cases, outdir, config, batch, records, interrupted, t_start)
        if progress is not None:
            progress.close(ok=result.n_ok, failed=result.n_failed)
    return result


def _schedule(todo, executor, outdir, config, batch, budget, case_fn, records, progress) -> None:
    running: dict[Any, tuple[Case, bool, int, bool]] = {}  # future -> (case, verify, mem, solo)
    solo: collections.deque = collections.deque()
    used = 0
    broken = False

    def submit(case: Case, verify: bool, mem: int, alone: bool) -> None:
        nonlocal used
        fut = executor.submit(execute_case, case, str(outdir), config, case_fn, verify)
        running[fut] = (case, verify, mem, alone)
        used += mem
        if progress is not None:
            progress.case_started(case.case_id)

    while todo or solo or running:
        if not broken:
            if solo:
                if not running:
                    case, verify = solo.popleft()
                    submit(case, verify, 0, True)
            else:
                cap = executor.capacity()
                while todo and len(running) < cap:
                    case, verify = todo[0]
                    mem = estimate_case_memory(case, batch.memory_factor) if executor.memory_aware else 0
                    if running and used + mem > budget:
                        break
                    if not running and mem > budget:
                        log.warning("case %s needs about %.1f GB, more than the %.1f GB budget; "
                                    "running it alone", case.case_id, mem / 1e9, budget / 1e9)
                    todo.popleft()
                    submit(case, verify, mem, False)
        if not running:
            continue
        for fut in executor.wait(running):
            case, verify, mem, alone = running.pop(fut)
            used -= mem
            try:
                rec = fut.result()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # the worker (not the case) failed
                if executor.is_worker_death(exc):
                    broken = broken or executor.name == "process"
                    if not alone:
                        log.warning("the worker running case %s died; retrying it on its own", case.case_id)
                        solo.append((case, verify))
                        continue
                    msg = ("the worker process running this case died (killed, out of memory or a "
                           f"crash in native code; estimate {estimate_case_memory(case, batch.memory_factor) / 1e9:.1f} GB); "
                           "see case.log, and rerun it alone with --jobs 1")
                else:
                    msg = f"internal error: {type(exc).__name__}: {exc}"
                rec = CaseRecord(case_id=case.case_id, status="failed", error=msg,
                                 error_type=type(exc).__name__, study=case.study, series=case.series)
                with contextlib.suppress(OSError):
                    _salvage_dead_case(Path(outdir), case, rec)
            records[case.case_id] = rec
            if progress is not None:
                progress.case_finished(rec.case_id, rec.status, rec.seconds, rec.error)
        if broken and not running:
            executor.restart()
            broken = False


def _salvage_dead_case(outdir: Path, case: Case, record: CaseRecord) -> None:
    """After a worker died: keep its ``case.log`` and record the error in ``OUTDIR/<case_id>/``."""
    mine = outdir / f".{case.case_id}.partial-{os.getpid()}"
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir()
    for partial in sorted(outdir.glob(f".{case.case_id}.partial-*")):
        if partial != mine and (partial / "case.log").is_file():
            os.replace(partial / "case.log", mine / "case.log")
        if partial != mine:
            shutil.rmtree(partial, ignore_errors=True)
    with open(mine / "case.log", "a", encoding="utf-8") as fh:
        fh.write(f"{_dt.datetime.now().isoformat(timespec='seconds')} ERROR printpipe.batch: "
                 f"{record.error}\n")
    info = {"printpipe_version": __version__, "case_id": case.case_id, "study_uid_hash": case.study,
            "series_uid_hash": case.series, "choice_reason": case.reason, "fingerprint": None,
            "input_hash": None, "params_hash": None, "record": record.to_dict()}
    atomic_write_text(mine / "case.json", json.dumps(info, indent=2) + "\n")
    _publish_case(mine, outdir / case.case_id)


def _landed(case: Case, outdir: Path, config: Any) -> CaseRecord | None:
    """The record of a case whose output landed whole (its folder renamed into place, same input and
    parameters) while the batch was interrupted before it heard back from the worker; None if not."""
    final = outdir / case.case_id
    if _resume_check(case, final, _params_hash(_config_for_case(config, case)))[0] != "skip":
        return None
    return dataclasses.replace(_record_from_finished(case, final, "finished as the batch was interrupted"),
                               resumed=False)


def _finish(cases, outdir, config, batch, records, interrupted, t_start) -> BatchResult:
    ordered = []
    for case in cases:
        rec = records.get(case.case_id)
        if rec is None and interrupted:
            rec = _landed(case, outdir, config)
        if rec is None:
            rec = CaseRecord(case_id=case.case_id, status="interrupted", study=case.study,
                             series=case.series, error="not finished: the batch was interrupted; "
                                                        "rerun with --resume")
        ordered.append(rec)
    seconds = time.perf_counter() - t_start
    result = BatchResult(records=tuple(ordered), outdir=outdir, seconds=seconds,
                         executor=batch.executor, interrupted=interrupted)
    summary = {
        "printpipe_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "executor": batch.executor,
        "jobs": batch.jobs,
        "resume": batch.resume,
        "all_series": batch.all_series,
        "interrupted": interrupted,
        "seconds": round(seconds, 3),
        "params_hash": _params_hash(config),
        "parameters": config.to_dict() if hasattr(config, "to_dict") else None,
        "counts": {"cases": len(ordered), "ok": result.n_ok, "failed": result.n_failed,
                   "resumed": result.n_resumed, "interrupted": result.count("interrupted")},
        "cases": [r.to_dict() for r in ordered],
    }
    atomic_write_text(outdir / "batch.json", json.dumps(summary, indent=2) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for r in ordered:
        d = r.to_dict()
        d["warnings"] = "; ".join(r.warnings)
        d["resumed"] = "yes" if r.resumed else ""
        writer.writerow(["" if d[k] is None else d[k] for k in _CSV_COLUMNS])
    atomic_write_text(outdir / "batch.csv", buf.getvalue())
    return dataclasses.replace(result, summary_files=(outdir / "batch.json", outdir / "batch.csv"))
