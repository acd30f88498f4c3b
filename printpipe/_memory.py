"""Handing freed memory back to the operating system."""

from __future__ import annotations


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``; a few ms).

    numpy arrays freed by a stage stay in the heap of the thread that allocated them (glibc raises
    its mmap threshold after the first large free, and every thread has an arena of its own), and
    would count against the run's peak until reused. Elsewhere (no glibc) nothing.
    """
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # pragma: no cover - not glibc
        pass
