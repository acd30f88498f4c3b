"""``printpipe serve``: a local web page over :func:`printpipe.pipeline.run` for the printer room.

A thin layer with no pipeline logic of its own::

    browser --upload--> app (Starlette, uvicorn)  --SQLite job row-->  worker process
                        pages, downloads, polling                      pipeline.run(progress=...)

- :mod:`printpipe.web.app` serves the pages (Simplified Chinese or English, from ``Accept-Language``
  or the switch), takes uploads (a CT ``.zip`` or a folder), and shows progress, errors and results;
- :mod:`printpipe.web.store` keeps the jobs in SQLite under the data folder, so a restart shows
  finished jobs again and picks up queued ones;
- :mod:`printpipe.web.worker` runs one job at a time in a separate process, so the page stays
  responsive, and stops a job when it is cancelled;
- :mod:`printpipe.web.uploads` checks uploads (size, zip paths, symlinks) before anything is read.

Privacy: jobs are named ``Case N`` by a counter; upload file names, DICOM tags and folder names never
reach a page, a URL, a job name or a log line. The uploaded CT is deleted once its job has finished.
"""

from __future__ import annotations

__all__ = ["create_app", "serve"]


def __getattr__(name: str):
    # starlette, uvicorn and jinja2 load only when the web app is used
    if name in ("create_app", "serve"):
        from printpipe.web import app

        return getattr(app, name)
    raise AttributeError(f"module 'printpipe.web' has no attribute {name!r}")
