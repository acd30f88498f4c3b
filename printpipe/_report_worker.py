"""The report's pictures drawn in a child process while the parent meshes, repairs and exports.

The pictures (matplotlib CT slices, VTK 3-D views) take seconds of one core and need nothing the
later stages make except the final meshes. :class:`ReportWorker` starts a child right after
segmentation; it draws the CT slices at once (beside surface extraction and repair in the parent),
then waits for the meshes, which the parent sends as plain arrays once they are final, and draws
the 3-D views beside the export. The parent collects the picture list when it writes the report.

The child only writes PNGs into the staging folder; if it fails, dies or is not wanted, the parent
draws whatever is missing itself (:meth:`ReportWorker.result` returns None), so the report never
depends on the worker. The child is started with ``fork`` where that is safe (no other Python
threads in the parent; the volume and labels are then shared copy-on-write, not copied) and with
``forkserver`` otherwise.
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
    volume, labels, names
        As for :func:`printpipe.report.write_report`.
    lang : str
        Language of the text in the pictures (resolved by the caller: the child does not see the
        parent's language choice when started with ``forkserver``).
    """

    def __init__(self, outdir, volume, labels: np.ndarray, names: Mapping[int, str], lang: str):
        method = "fork" if threading.active_count() == 1 else "forkserver"
        ctx = multiprocessing.get_context(method)
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_child, name="printpipe-report",
                                 args=(child_conn, str(outdir), volume, labels, dict(names), lang), daemon=True)
        self._proc.start()
        child_conn.close()
        self._sent = False
        self._sender: threading.Thread | None = None

    def send_parts(self, parts: Mapping[str, Any]) -> None:
        """Hand the final meshes (patient frame) to the child, which then draws the 3-D views.

        Sent from a thread: the pipe holds only 64 KiB, so a plain ``send`` would block this
        process until the child, still drawing the CT slices, starts reading.
        """
        payload = {name: (np.asarray(m.vertices), np.asarray(m.faces)) for name, m in parts.items()}

        def send() -> None:
            try:
                self._conn.send(payload)
                self._sent = True
            except (OSError, ValueError) as exc:  # the child is gone: result() says so
                log.debug("report worker: could not send the meshes (%s)", exc)

        self._sender = threading.Thread(target=send, name="printpipe-report-send", daemon=True)
        self._sender.start()

    def _join_sender(self, timeout: float | None) -> None:
        if self._sender is not None:
            self._sender.join(timeout)

    def result(self, timeout: float = 600.0) -> dict | None:
        """The pictures drawn (see :func:`printpipe.report.draw_pictures`), or None on any failure."""
        try:
            self._join_sender(timeout)
            if not self._sent or not self._conn.poll(timeout):
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
        """Stop the child if it still runs (a failed case) and release the pipe."""
        if self._proc.is_alive() and (self._sender is None or not self._sender.is_alive()):
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


def _prepare_views() -> None:  # pragma: no cover - child
    """Collect the rendering probe and import pyvista (about a second) before the meshes arrive."""
    from printpipe.report import render_backend

    if render_backend() == "pyvista":
        import pyvista  # noqa: F401
        import pyvista.plotting  # noqa: F401


def _child(conn, outdir: str, volume, labels, names, lang: str) -> None:  # pragma: no cover - child
    try:
        import trimesh

        from printpipe.report import draw_pictures, merge_pictures

        first = draw_pictures(Path(outdir), volume=volume, labels=labels, names=names, lang=lang)
        del volume, labels
        _prepare_views()  # while the parent is still meshing: the views then start at once
        payload = conn.recv()
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
