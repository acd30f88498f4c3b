"""Progress reporting on stderr: per-stage progress for ``run``, a bar over cases for ``batch``.

Library functions take a ``progress(stage, fraction)`` callable (see ``docs/architecture.md``); this
module builds such callables and the case bar used by :func:`printpipe.batch.run_many`. Everything
here writes to a text stream (stderr in the CLI), never to stdout, which carries results.

Three output modes:

* interactive (the stream is a terminal): one line rewritten in place with ``\\r``;
* plain (a file or pipe): one line per stage start/finish or per finished case, nothing rewritten;
* JSON lines (``--log-json``): one JSON object per line with the keys ``event``, ``case_id``,
  ``stage``, ``fraction``, ``status``, ``seconds``, ``error`` (``null`` where they do not apply) and
  ``time`` (UTC, ISO 8601).

``quiet`` turns every mode off except JSON lines, which are asked for explicitly.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
import threading
import time
from typing import IO, Callable

log = logging.getLogger(__name__)

__all__ = ["json_event", "stage_printer", "CaseBar"]

Progress = Callable[[str, float], None]

_JSON_KEYS = ("event", "case_id", "stage", "fraction", "status", "seconds", "error")


def json_event(stream: IO[str], event: str, **fields) -> dict:
    """Write one JSON object (one line) describing ``event`` to ``stream`` and return it.

    Parameters
    ----------
    stream : text stream
        Usually ``sys.stderr``.
    event : str
        ``"stage"``, ``"case_start"``, ``"case_done"``, ``"batch_start"``, ``"batch_done"``.
    **fields
        Values for ``case_id``, ``stage``, ``fraction``, ``status``, ``seconds``, ``error`` and any
        extra keys; missing standard keys are written as ``null``.

    Returns
    -------
    dict
        The object that was written.
    """
    obj = {key: None for key in _JSON_KEYS}
    obj["event"] = event
    obj.update(fields)
    if isinstance(obj.get("seconds"), float):
        obj["seconds"] = round(obj["seconds"], 3)
    if isinstance(obj.get("fraction"), float):
        obj["fraction"] = round(obj["fraction"], 4)
    obj["time"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    stream.write(json.dumps(obj, separators=(",", ":")) + "\n")
    stream.flush()
    return obj


def _is_tty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def stage_printer(stream: IO[str] | None = None, quiet: bool = False, json_lines: bool = False,
                  case_id: str | None = None) -> Progress:
    """Build a ``progress(stage, fraction)`` callback that reports pipeline stages on ``stream``.

    Parameters
    ----------
    stream : text stream, optional
        Where to write (default ``sys.stderr``).
    quiet : bool
        Write nothing (unless ``json_lines`` is set).
    json_lines : bool
        Write one JSON object per call (``event="stage"``) instead of human-readable text.
    case_id : str, optional
        Included in JSON lines so several cases can share one log.

    Returns
    -------
    callable
        ``progress(stage: str, fraction: float) -> None``; ``fraction`` is clipped to 0..1. Calls are
        cheap and thread-safe; human-readable output is throttled to changes of at least 5 %.

    Notes
    -----
    Stages report ``0.0`` when they start and ``1.0`` when they finish (see
    :func:`printpipe.pipeline.run`); a stage may report intermediate fractions. In plain mode only the
    start and the end of each stage are printed, with the stage's wall time.

    Examples
    --------
    >>> import io
    >>> buf = io.StringIO()
    >>> p = stage_printer(buf)
    >>> p("read", 0.0); p("read", 1.0)
    >>> buf.getvalue().splitlines()[0]
    'read ...'
    """
    stream = stream if stream is not None else sys.stderr
    lock = threading.Lock()
    tty = _is_tty(stream)
    state = {"stage": None, "t0": time.perf_counter(), "shown": -1.0, "width": 0}

    def progress(stage: str, fraction: float) -> None:
        try:
            fraction = min(max(float(fraction), 0.0), 1.0)
        except (TypeError, ValueError):
            fraction = 0.0
        with lock:
            new_stage = stage != state["stage"]
            if new_stage:
                state["stage"], state["t0"], state["shown"] = stage, time.perf_counter(), -1.0
            elapsed = time.perf_counter() - state["t0"]
            if json_lines:
                json_event(stream, "stage", case_id=case_id, stage=stage, fraction=fraction,
                           seconds=elapsed)
                return
            if quiet:
                return
            if tty:
                if not new_stage and (state["shown"] >= 1.0
                                      or (fraction < 1.0 and fraction - state["shown"] < 0.05)):
                    return
                state["shown"] = fraction
                text = f"{stage:<10} {_bar(fraction, 20)} {fraction * 100:3.0f}%  {elapsed:6.1f} s"
                end = "\n" if fraction >= 1.0 else ""
                pad = max(state["width"] - len(text), 0)
                stream.write("\r" + text + " " * pad + end)
                state["width"] = 0 if end else len(text)
                stream.flush()
            else:
                if new_stage and fraction < 1.0:
                    stream.write(f"{stage} ...\n")
                elif fraction >= 1.0 and state["shown"] < 1.0:
                    from printpipe.i18n import _

                    stream.write(_("{stage} done in {seconds} s").format(stage=stage, seconds=f"{elapsed:.1f}")
                                 + "\n")
                else:
                    return
                state["shown"] = fraction
                stream.flush()

    return progress


def _bar(fraction: float, width: int) -> str:
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class CaseBar:
    """A progress bar over the cases of a batch, on stderr.

    :func:`printpipe.batch.run_many` calls :meth:`start` once, :meth:`case_started` and
    :meth:`case_finished` per case (from the parent process, in completion order) and :meth:`close`
    at the end.

    Parameters
    ----------
    stream : text stream, optional
        Default ``sys.stderr``.
    quiet : bool
        No human-readable output.
    json_lines : bool
        One JSON object per event instead of the bar (``batch_start``, ``case_start``,
        ``case_done``, ``batch_done``).
    """

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False, json_lines: bool = False):
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.json_lines = json_lines
        self.tty = _is_tty(self.stream)
        self.total = 0
        self.done = 0
        self.counts: dict[str, int] = {}
        self.running: set[str] = set()
        self.t0 = time.perf_counter()
        self._width = 0
        self._lock = threading.Lock()

    # -- events -----------------------------------------------------------------------------------
    def start(self, total: int, **info) -> None:
        """The batch starts with ``total`` cases (``info`` goes into the JSON ``batch_start`` line)."""
        with self._lock:
            self.total, self.done, self.t0 = int(total), 0, time.perf_counter()
            if self.json_lines:
                json_event(self.stream, "batch_start", total=self.total, **info)
            elif not self.quiet:
                self._render()

    def case_started(self, case_id: str) -> None:
        with self._lock:
            self.running.add(case_id)
            if self.json_lines:
                json_event(self.stream, "case_start", case_id=case_id)
            elif not self.quiet and self.tty:
                self._render()

    def case_finished(self, case_id: str, status: str, seconds: float | None = None,
                      error: str | None = None) -> None:
        with self._lock:
            self.running.discard(case_id)
            self.done += 1
            self.counts[status] = self.counts.get(status, 0) + 1
            if self.json_lines:
                json_event(self.stream, "case_done", case_id=case_id, status=status, seconds=seconds,
                           error=error)
                return
            if self.quiet:
                return
            if self.tty:
                if status == "failed":  # a failure gets its own permanent line above the bar
                    self._clear()
                    self.stream.write(f"case {case_id} failed: {error}\n")
                self._render()
            else:
                secs = "" if seconds is None else f" in {seconds:.1f} s"
                msg = f": {error}" if error else ""
                self.stream.write(f"[{self.done}/{self.total}] case {case_id} {status}{secs}{msg}\n")
                self.stream.flush()

    def close(self, **info) -> None:
        """End the bar (``info`` goes into the JSON ``batch_done`` line)."""
        with self._lock:
            elapsed = time.perf_counter() - self.t0
            if self.json_lines:
                json_event(self.stream, "batch_done", seconds=elapsed, **self.counts, **info)
            elif not self.quiet and self.tty:
                self._render()
                self.stream.write("\n")
                self.stream.flush()
                self._width = 0

    # -- drawing ----------------------------------------------------------------------------------
    def _clear(self) -> None:
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0

    def _render(self) -> None:
        if not self.tty:
            return
        frac = self.done / self.total if self.total else 1.0
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        counts = "  ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        text = (f"cases {_bar(frac, 24)} {self.done}/{self.total}  {counts}  "
                f"running {len(self.running)}  {_clock(elapsed)}"
                + (f" eta {_clock(eta)}" if eta is not None else ""))
        pad = max(self._width - len(text), 0)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)
