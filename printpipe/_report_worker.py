"""The report's pictures drawn in a child process while the parent segments, meshes and exports.

The pictures (matplotlib CT slices, VTK 3-D views) take seconds of one core and need nothing the
later stages make except the final meshes. :class:`ReportWorker` starts a child when the case
starts. On a CT of moderate size the parent then tells it to get ready (:meth:`ReportWorker.prepare`):
while the parent reads and segments the CT (which leaves a core mostly idle), the child checks that
off-screen rendering works and imports matplotlib and PyVista (about 1.5 s of CPU and 250 MB).
Once segmentation has ended the parent sends the three CT planes the slice pictures show (a few
MB, cut out in the parent: the child never holds the volume), and the child draws them beside
surface extraction and repair; the parent then sends the final meshes as plain arrays, and the
child draws the 3-D views beside the export. The parent collects the picture list when it writes
the report.

The child only writes PNGs into the staging folder; if it fails, dies or is not wanted, the parent
draws whatever is missing itself (:meth:`ReportWorker.result` returns None), so the report never
depends on the worker. The child is started with ``fork`` where that is safe (no other Python
threads in the parent) and with ``forkserver`` otherwise; started before the CT is read, it shares
no large array with the parent either way.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["ReportWorker"]


class ReportWorker:
    """Draw the report's pictures for one case in a child process.

    Parameters
    ----------
    outdir : path
        Folder the pictures go into (``outdir/pictures``), the case's staging folder.
    lang : str
        Language of the text in the pictures (resolved by the caller: the child does not see the
        parent's language choice when started with ``forkserver``).

    The data follow with :meth:`send_slices` and :meth:`send_parts`, in that order; :meth:`prepare`,
    before them, lets the child get ready (imports, rendering probe) before the slices arrive.
    """

    def __init__(self, outdir, lang: str):
        method = "fork" if threading.active_count() == 1 else "forkserver"
        ctx = multiprocessing.get_context(method)
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_child, name="printpipe-report", args=(child_conn, str(outdir), lang),
                                 daemon=True)
        self._proc.start()
        child_conn.close()
        self._sent = {"slices": False, "parts": False}
        self._told: set[str] = set()  # other messages sent ("prepare")
        self._sender: threading.Thread | None = None

    def prepare(self) -> None:
        """Let the child import matplotlib and PyVista and probe rendering now (about 1.5 s of CPU
        and 250 MB of memory, the latter beside whatever this process holds meanwhile)."""
        self._send("prepare", None)

    def send_slices(self, volume, labels: np.ndarray, names: Mapping[int, str]) -> None:
        """Hand the CT planes of the slice pictures (cut here from ``volume`` and ``labels``, see
        :func:`printpipe.report.slice_planes`) and the part names to the child, which draws them."""
        from printpipe.report import slice_planes

        self._send("slices", (slice_planes(volume, labels), dict(names)))

    def send_parts(self, parts: Mapping[str, Any]) -> None:
        """Hand the final meshes (patient frame) to the child, which then draws the 3-D views."""
        self._send("parts", {name: (np.asarray(m.vertices), np.asarray(m.faces)) for name, m in parts.items()})

    def _send(self, kind: str, payload) -> None:
        """Send from a thread, after any earlier message: the pipe holds only 64 KiB, so a plain
        ``send`` would block this process until the child (still importing, or drawing) reads."""
        before = self._sender

        def send() -> None:
            if before is not None:
                before.join()
            try:
                self._conn.send((kind, payload))
                if kind in self._sent:
                    self._sent[kind] = True
                else:
                    self._told.add(kind)
            except (OSError, ValueError) as exc:  # the child is gone: result() says so
                log.debug("report worker: could not send the %s (%s)", kind, exc)

        self._sender = threading.Thread(target=send, name=f"printpipe-report-{kind}", daemon=True)
        self._sender.start()

    def _join_sender(self, timeout: float | None) -> None:
        if self._sender is not None:
            self._sender.join(timeout)

    def result(self, timeout: float = 600.0) -> dict | None:
        """The pictures drawn (see :func:`printpipe.report.draw_pictures`), or None on any failure."""
        try:
            self._join_sender(timeout)
            if not all(self._sent.values()) or not self._conn.poll(timeout):
                log.warning("report worker gave no pictures; drawing them in the main process")
                return None
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            log.warning("report worker ended without pictures (%s); drawing them in the main process", exc)
            return None
        finally:
            self.close()
        if status != "ok":
            log.warning("report worker failed (%s); drawing the pictures in the main process", value)
            return None
        return value

    def close(self) -> None:
        """Stop the child if it still runs (a failed case) and release the pipe.

        A child that was sent nothing yet is only importing: it is stopped at once. One that is
        drawing is asked to leave (and stopped after 2 s), so that no picture is written into a
        staging folder being removed.
        """
        if self._proc.is_alive() and self._sent["slices"] and (self._sender is None or not self._sender.is_alive()):
            try:
                self._conn.send(None)  # a child waiting for meshes leaves quietly
            except (OSError, ValueError):
                pass
            self._proc.join(2.0)
        if self._proc.is_alive():
            self._proc.terminate()  # also unblocks a sender thread still writing to the pipe
            self._proc.join(2.0)
        self._join_sender(2.0)
        self._conn.close()


#: seconds the rendering probe may take in the worker before the worker is ended (its parent then
#: draws the pictures itself, probing in a child with the same limit)
_PROBE_LIMIT_S = 120


def _prepare() -> None:  # pragma: no cover - child
    """Probe off-screen rendering and import matplotlib and PyVista (about 1.5 s of CPU in all)
    while the parent reads and segments the CT: the pictures then start at once when their data
    arrive.

    The probe runs in this process (:func:`printpipe.report.probe_rendering_here`), not in a child
    of its own: this worker is the child whose crash costs nothing. A probe stuck in the graphics
    driver (holding the GIL) is ended by SIGALRM's default action, which needs no Python code.
    """
    import signal

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.figure  # noqa: F401
    import matplotlib.patheffects  # noqa: F401

    from printpipe.report import probe_rendering_here

    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(_PROBE_LIMIT_S)
    try:
        backend = probe_rendering_here()
    finally:
        signal.alarm(0)
    if backend == "pyvista":
        import pyvista  # noqa: F401
        import pyvista.plotting  # noqa: F401


def _receive(conn, kind: str, prepared: list):  # pragma: no cover - child
    """The next message's payload when it is ``kind``; None when the parent says stop.

    A "prepare" message on the way is acted on (:func:`_prepare`, once; ``prepared`` records it);
    without one the child prepares when the data arrive.
    """
    message = conn.recv()
    if message is not None and message[0] == "prepare":
        if not prepared:
            _prepare()
            prepared.append(True)
        message = conn.recv()
    if message is None:
        return None
    got, payload = message
    if got != kind:
        raise RuntimeError(f"report worker: expected the {kind}, got the {got}")
    if not prepared:
        _prepare()
        prepared.append(True)
    return payload


def _child(conn, outdir: str, lang: str) -> None:  # pragma: no cover - child
    try:
        import trimesh

        from printpipe.report import draw_pictures, merge_pictures

        prepared: list = []
        slices = _receive(conn, "slices", prepared)
        if slices is None:
            return
        planes, names = slices
        first = draw_pictures(Path(outdir), planes=planes, names=names, lang=lang)
        del slices, planes
        payload = _receive(conn, "parts", prepared)
        if payload is None:
            return
        parts = {name: trimesh.Trimesh(vertices=v, faces=f, process=False) for name, (v, f) in payload.items()}
        views = draw_pictures(Path(outdir), parts=parts, lang=lang)
        conn.send(("ok", merge_pictures(first, views)))
    except EOFError:
        return
    except BaseException as exc:  # the parent draws the pictures itself
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
    finally:
        conn.close()
