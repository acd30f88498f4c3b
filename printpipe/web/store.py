"""Jobs of ``printpipe serve`` in one SQLite file (``DATA/jobs.sqlite3``), shared by two processes.

The web process inserts jobs, reads them for the pages and sets the cancel flag; the worker process
claims the oldest queued job, writes its progress and its outcome. SQLite in WAL mode lets both do
so at once; every call opens its own short-lived connection, so neither process holds a lock while
it works.

A job's life: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``. A job that was
``running`` when the server stopped is queued again at the next start (its output folder is
removed first), so a restart loses nothing.

What is stored: a random id (the URL), a counter (``Case N``, the job's only name), the options
chosen on the form, progress per stage, and for a finished job the figures of its manifest and the
error class and message. Never an upload's file name or anything read from the DICOM headers.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

__all__ = ["Job", "JobStore", "TERMINAL"]

TERMINAL = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    number      INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT UNIQUE NOT NULL,
    created     REAL NOT NULL,
    started     REAL,
    finished    REAL,
    status      TEXT NOT NULL,
    options     TEXT NOT NULL,
    input_kind  TEXT NOT NULL,
    stage       TEXT,
    stages      TEXT NOT NULL DEFAULT '{}',
    cancel      INTEGER NOT NULL DEFAULT 0,
    error_type  TEXT,
    error       TEXT,
    result      TEXT
);
"""


@dataclass(frozen=True)
class Job:
    """One row of the job table (see the module docstring for the states)."""

    number: int
    id: str
    created: float
    started: float | None
    finished: float | None
    status: str
    options: dict
    input_kind: str
    stage: str | None
    stages: dict = field(default_factory=dict)
    cancel: bool = False
    error_type: str | None = None
    error: str | None = None
    result: dict | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class JobStore:
    """The job table of one data folder.

    Parameters
    ----------
    data_dir : path
        The ``--data`` folder; the database is ``jobs.sqlite3`` in it and each job's files live in
        ``jobs/<id>/`` (``input.zip`` or ``input/``, then ``out/``).
    """

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "jobs.sqlite3"
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)

    # -- paths --------------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        if not _valid_id(job_id):
            raise KeyError(job_id)
        return self.data_dir / "jobs" / job_id

    # -- web process ----------------------------------------------------------------------------------
    def new_id(self) -> str:
        return secrets.token_hex(8)

    def add(self, job_id: str, options: dict, input_kind: str) -> Job:
        """Queue a job whose input already sits in :meth:`job_dir`."""
        with self._connect() as con:
            con.execute("INSERT INTO jobs (id, created, status, options, input_kind) VALUES (?, ?, 'queued', ?, ?)",
                        (job_id, time.time(), json.dumps(options), input_kind))
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        if not _valid_id(job_id):
            return None
        with self._connect() as con:
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list(self, limit: int = 50) -> list[Job]:
        with self._connect() as con:
            rows = con.execute("SELECT * FROM jobs ORDER BY number DESC LIMIT ?", (limit,)).fetchall()
        return [_job(r) for r in rows]

    def request_cancel(self, job_id: str) -> Job | None:
        """Flag a job for cancelling; a queued one is cancelled at once."""
        with self._connect() as con:
            con.execute("UPDATE jobs SET status = 'cancelled', cancel = 1, finished = ? "
                        "WHERE id = ? AND status = 'queued'", (time.time(), job_id))
            con.execute("UPDATE jobs SET cancel = 1 WHERE id = ? AND status = 'running'", (job_id,))
        return self.get(job_id)

    def requeue_interrupted(self) -> list[str]:
        """At start-up: jobs left ``running`` by a stopped server go back to the queue (their ids are
        returned); those whose cancelling had been asked for end ``cancelled``."""
        with self._connect() as con:
            rows = con.execute("SELECT id, cancel FROM jobs WHERE status = 'running'").fetchall()
            ids = [r["id"] for r in rows if not r["cancel"]]
            con.execute("UPDATE jobs SET status = 'cancelled', finished = ? WHERE status = 'running' AND cancel = 1",
                        (time.time(),))
            con.execute("UPDATE jobs SET status = 'queued', stage = NULL, stages = '{}', started = NULL "
                        "WHERE status = 'running'")
        for row in rows:  # a half-done output folder (the pipeline's staging) is started afresh
            jdir = self.job_dir(row["id"])
            shutil.rmtree(jdir / "out", ignore_errors=True)
            if row["cancel"]:  # ... and a cancelled job's CT goes, as it would have at its end
                (jdir / "input.zip").unlink(missing_ok=True)
                shutil.rmtree(jdir / "input", ignore_errors=True)
        return ids

    # -- worker process -------------------------------------------------------------------------------
    def claim_next(self) -> Job | None:
        """Mark the oldest queued job ``running`` and return it (None when the queue is empty)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            row = con.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY number LIMIT 1").fetchone()
            if row is None:
                con.execute("COMMIT")
                return None
            con.execute("UPDATE jobs SET status = 'running', started = ? WHERE id = ?", (time.time(), row["id"]))
            con.execute("COMMIT")
        return self.get(row["id"])

    def progress(self, job_id: str, stage: str, stages: dict) -> bool:
        """Record progress; return True when the job has been asked to stop."""
        with self._connect() as con:
            con.execute("UPDATE jobs SET stage = ?, stages = ? WHERE id = ? AND status = 'running'",
                        (stage, json.dumps(stages), job_id))
            row = con.execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["cancel"])

    def cancel_requested(self, job_id: str) -> bool:
        with self._connect() as con:
            row = con.execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["cancel"])

    def finish(self, job_id: str, status: str, *, result: dict | None = None, error_type: str | None = None,
               error: str | None = None) -> None:
        if status not in TERMINAL:
            raise ValueError(f"finish() takes one of {TERMINAL}; got {status!r}")
        with self._connect() as con:
            con.execute("UPDATE jobs SET status = ?, finished = ?, result = ?, error_type = ?, error = ? WHERE id = ?",
                        (status, time.time(), json.dumps(result) if result is not None else None,
                         error_type, error, job_id))

    # -- helpers --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            con.execute("PRAGMA busy_timeout = 10000")
            yield con
        finally:
            con.close()


def _valid_id(job_id: Any) -> bool:
    return isinstance(job_id, str) and len(job_id) == 16 and all(c in "0123456789abcdef" for c in job_id)


def _job(row: sqlite3.Row) -> Job:
    return Job(
        number=row["number"], id=row["id"], created=row["created"], started=row["started"],
        finished=row["finished"], status=row["status"], options=json.loads(row["options"]),
        input_kind=row["input_kind"], stage=row["stage"], stages=json.loads(row["stages"] or "{}"),
        cancel=bool(row["cancel"]), error_type=row["error_type"], error=row["error"],
        result=json.loads(row["result"]) if row["result"] else None,
    )
