"""numba kernels of printpipe: marching cubes, mesh smoothing (and slicing, when present).

Kernels are ``@njit(cache=True)`` functions on numpy arrays: no I/O, no trimesh, no config objects,
and they never raise (the Python wrappers validate). Importing this package does not compile
anything; :func:`warmup` compiles every kernel on a tiny input, or loads it from numba's cache.

Processes and the numba cache
-----------------------------
numba writes its on-disk cache without locking, and several processes compiling the same function
at once can corrupt it (numba issue #4807). Batch runs therefore call :func:`warmup` once in the
parent process *before* starting a pool, so that the workers only read the cache. Code that may
compile in several processes at once should wrap the first calls in :func:`compile_lock`, a file
lock (``fcntl.flock``) in the numba cache directory that serialises compilation between processes.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

from printpipe.kernels.mc import marching_cubes
from printpipe.kernels.smooth import (
    SMOOTH_METHODS,
    build_adjacency,
    mesh_volume,
    restore_volume,
    smooth_mesh,
    taubin_smooth,
    windowed_sinc_smooth,
)

__all__ = [
    "marching_cubes",
    "build_adjacency",
    "mesh_volume",
    "restore_volume",
    "smooth_mesh",
    "taubin_smooth",
    "windowed_sinc_smooth",
    "SMOOTH_METHODS",
    "warmup",
    "compile_lock",
    "KERNEL_MODULES",
]

log = logging.getLogger(__name__)

#: Modules whose ``warmup()`` compiles numba code: the kernels here, plus the compiled helpers of the
#: segmentation and the mesh back end (repair, export), given by their full module name.
KERNEL_MODULES = ("mc", "smooth", "slice", "checks", "printpipe.segment", "printpipe.repair",
                  "printpipe.export")


def _cache_dir() -> Path:
    """The directory numba caches into (``NUMBA_CACHE_DIR`` or a temp fallback for the lock)."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "__pycache__"


@contextlib.contextmanager
def compile_lock(timeout_s: float = 600.0) -> Iterator[None]:
    """Hold an exclusive inter-process file lock while numba may compile and write its cache.

    The lock file lives in the numba cache directory (``NUMBA_CACHE_DIR`` or
    ``kernels/__pycache__``); when that is not writable it falls back to the system temporary
    directory. Processes that enter this context one after another compile (and write the cache)
    one at a time, which avoids numba issue #4807. On platforms without ``fcntl`` it does nothing.

    Parameters
    ----------
    timeout_s : float
        Give up waiting after this many seconds and continue without the lock (logged).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = _cache_dir() / "printpipe-numba.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")
    except OSError:
        fh = open(Path(tempfile.gettempdir()) / "printpipe-numba.lock", "a+")
    with fh:
        start = time.monotonic()
        locked = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except OSError:
                if time.monotonic() - start > timeout_s:
                    log.warning("numba compile lock %s not acquired after %.0f s; going on without it",
                                path, timeout_s)
                    break
                time.sleep(0.05)
        try:
            yield
        finally:
            if locked:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def warmup() -> dict[str, float]:
    """Compile (or load from numba's cache) every kernel on a tiny 4x4x4 input.

    Loops over the kernel modules ``mc``, ``smooth`` and ``slice``; each one that exists and has a
    module-level ``warmup()`` is called, under :func:`compile_lock`. Batch runs call this in the
    parent process before starting workers.

    Returns
    -------
    dict
        Seconds spent per module.
    """
    timings: dict[str, float] = {}
    with compile_lock():
        for name in KERNEL_MODULES:
            modname = name if "." in name else f"printpipe.kernels.{name}"
            try:
                module = importlib.import_module(modname)
            except ModuleNotFoundError as exc:
                if exc.name != modname:
                    raise
                continue
            fn = getattr(module, "warmup", None)
            if fn is None:
                continue
            t0 = time.perf_counter()
            fn()
            timings[name] = time.perf_counter() - t0
    log.debug("kernel warmup: %s", timings)
    return timings
