"""The Starlette application of ``printpipe serve``: pages, uploads, progress, downloads.

Routes (every page in Simplified Chinese or English: the ``lang`` cookie set by the switch, else
``Accept-Language``)::

    GET  /                         upload form and the list of jobs
    POST /jobs                     upload a CT (.zip or folder) with the choices -> /jobs/<id>
    GET  /jobs/<id>                progress, the error, or the result with pictures and downloads
    GET  /api/jobs/<id>            the job as JSON (the page polls it twice a second)
    POST /jobs/<id>/cancel         stop the job
    GET  /jobs/<id>/files/<path>   a file of the job's result (only files its manifest lists)
    GET  /lang/<zh|en>?next=/...   switch the language

Safety: bound to 127.0.0.1 the app answers only requests addressed to a loopback name (no DNS
rebinding); bound to another address it wants the token printed at start-up (``?token=`` once,
then a cookie). Form posts from another origin are refused. The request body is capped at
``max_upload_bytes`` while it streams in.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import mimetypes
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from printpipe.errors import InputError, PrintpipeError
from printpipe.i18n import N_, detect_lang, get_translator, normalize_lang
from printpipe.web.store import JobStore
from printpipe.web.uploads import DEFAULT_MAX_UPLOAD_MB, check_zip, save_folder_files, upload_error
from printpipe.web.worker import QUALITY, STAGES, WHAT, Supervisor, validate_options

log = logging.getLogger(__name__)

__all__ = ["create_app", "serve", "DEFAULT_MAX_UPLOAD_MB"]

HERE = Path(__file__).resolve().parent
_TOKEN_COOKIE = "printpipe_token"
_LANG_COOKIE = "printpipe_lang"
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")

_STATUS = {
    "queued": N_("Waiting"),
    "running": N_("Running"),
    "done": N_("Finished"),
    "failed": N_("Failed"),
    "cancelled": N_("Cancelled"),
}

_PICTURES = {
    "axial": N_("Axial slice with the parts outlined"),
    "coronal": N_("Coronal slice with the parts outlined"),
    "sagittal": N_("Sagittal slice with the parts outlined"),
    "3d_all": N_("3-D view of all parts"),
    "toolpaths": N_("G-code toolpaths"),
}


class _TooLarge(Exception):
    pass


class _BodyLimit:
    """ASGI middleware: a request body longer than ``limit`` bytes fails while it streams in."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        return await self.app(scope, limited, send)


class _Guard:
    """ASGI middleware: loopback Host names only (local mode) or the access token (remote mode)."""

    def __init__(self, app, token: str | None, local: bool):
        self.app = app
        self.token = token
        self.local = local

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        _ = get_translator(_lang_of(request))
        if self.local and _host_name(request.headers.get("host", "")) not in _LOOPBACK_NAMES:
            response = _plain(403, _("This printpipe server only answers on this computer (127.0.0.1)."))
            return await response(scope, receive, send)
        if self.token:
            given = request.query_params.get("token")
            if given and hmac.compare_digest(given, self.token):
                # swap the token in the address for a cookie, so it does not linger in the address bar
                response = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
                response.set_cookie(_TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
                return await response(scope, receive, send)
            cookie = request.cookies.get(_TOKEN_COOKIE, "")
            if not hmac.compare_digest(cookie, self.token):
                response = _plain(403, _("This printpipe server needs its access token: open the address "
                                         "with ?token= that it printed when it started."))
                return await response(scope, receive, send)
        if request.method == "POST":
            origin = request.headers.get("origin")
            if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
                response = _plain(403, _("A form from another web site was refused."))
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(data_dir: str | Path, *, token: str | None = None, local: bool = True,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, start_worker: bool = True):
    """Build the ASGI application for the data folder ``data_dir``.

    Parameters
    ----------
    data_dir : path
        Jobs database and job files (created if missing).
    token : str, optional
        Access token every request must carry (remote mode); None in local mode.
    local : bool
        Answer only requests addressed to a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``).
    max_upload_mb : float
        Largest request body accepted, in MiB.
    start_worker : bool
        Start the worker process with the app (tests of the pages alone pass False).
    """
    store = JobStore(data_dir)
    supervisor = Supervisor(data_dir) if start_worker else None
    limit = int(max_upload_mb * 1024 * 1024)
    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"]))

    def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        lang = _lang_of(request)
        _ = get_translator(lang)
        html = env.get_template(template).render(_=_, lang=lang, other_lang="en" if lang == "zh" else "zh",
                                                  path=request.url.path, **context)
        return HTMLResponse(html, status_code=status_code, headers=_NO_STORE)

    def form_context(lang: str, chosen: dict | None = None) -> dict:
        """What the form offers, and what was chosen (kept when an upload is refused)."""
        from printpipe.slicing.printers import list_materials, list_printers

        _ = get_translator(lang)
        chosen = {k: v for k, v in (chosen or {}).items() if v is not None}
        return {
            "chosen": {"printer": "ender3", "material": "PLA", "what": "pelvis", "quality": "standard",
                       "supports": True, **chosen},
            "printers": [(p.id, p.name, p.volume_text) for p in list_printers()],
            "materials": [m.name for m in list_materials()],
            "whats": [(k, _(v[0])) for k, v in WHAT.items()],
            "qualities": [(k, _(v[0])) for k, v in QUALITY.items()],
            "max_upload_mb": int(max_upload_mb),
        }

    def jobs_context(lang: str) -> list[dict]:
        return [_job_summary(j, lang) for j in store.list()]

    async def index(request: Request) -> Response:
        lang = _lang_of(request)
        return page(request, "index.html", jobs=jobs_context(lang), error=None, **form_context(lang))

    async def upload(request: Request) -> Response:
        lang = _lang_of(request)
        _ = get_translator(lang)
        job_id = store.new_id()
        jdir = store.job_dir(job_id)
        t0 = time.perf_counter()
        form = None
        chosen: dict = {}
        try:
            declared = int(request.headers.get("content-length") or 0)
            if declared > limit:
                raise _TooLarge()
            form = await request.form(max_files=100_000, max_fields=100)
            chosen = {"printer": form.get("printer"), "material": form.get("material"), "what": form.get("what"),
                      "quality": form.get("quality"), "supports": form.get("supports") == "on"}
            options = validate_options(chosen)
            options["lang"] = lang
            jdir.mkdir(parents=True)
            zip_file = form.get("ct_zip")
            folder = [f for f in form.getlist("ct_folder") if isinstance(f, UploadFile) and f.filename]
            if isinstance(zip_file, UploadFile) and zip_file.filename:
                target = jdir / "input.zip"
                with open(target, "wb") as out:
                    shutil.copyfileobj(zip_file.file, out, 1 << 20)
                check_zip(target)
                kind = "zip"
            elif folder:
                save_folder_files(((f.filename or "", f.file) for f in folder), jdir / "input")
                kind = "folder"
            else:
                raise upload_error(N_("choose a CT first: a .zip of the DICOM files, or the folder that holds them"))
        except _TooLarge:
            shutil.rmtree(jdir, ignore_errors=True)
            message = _("The upload is larger than the {limit} MB allowed; upload one CT series at a time, "
                        "or start the server with a larger --max-upload-mb.").format(limit=int(max_upload_mb))
            return page(request, "index.html", status_code=413, jobs=jobs_context(lang), error=message,
                        **form_context(lang, chosen))
        except PrintpipeError as exc:
            shutil.rmtree(jdir, ignore_errors=True)
            return page(request, "index.html", status_code=400, jobs=jobs_context(lang),
                        error=_translate_error(exc, lang), **form_context(lang, chosen))
        finally:
            if form is not None:
                await form.close()  # the spooled upload's temporary files go now, not at garbage collection
        store.add(job_id, options, kind)
        log.info("job %s queued (%s upload, %.1f s)", job_id, kind, time.perf_counter() - t0)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    def get_job(request: Request):
        job = store.get(request.path_params["job_id"])
        return job

    async def job_page(request: Request) -> Response:
        lang = _lang_of(request)
        _ = get_translator(lang)
        job = get_job(request)
        if job is None:
            return page(request, "error.html", status_code=404, message=_("There is no such job."))
        return page(request, "job.html", job=_job_summary(job, lang), result=_result_view(job, lang))

    async def job_api(request: Request) -> Response:
        job = get_job(request)
        if job is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        return JSONResponse(_job_summary(job, _lang_of(request)), headers=_NO_STORE)

    async def cancel(request: Request) -> Response:
        job = get_job(request)
        if job is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        store.request_cancel(job.id)
        log.info("job %s: cancel requested", job.id)
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    async def job_file(request: Request) -> Response:
        lang = _lang_of(request)
        _ = get_translator(lang)
        job = get_job(request)
        rel = request.path_params["path"]
        listed = {o["path"]: o for o in ((job.result or {}).get("outputs", []) if job else [])}
        if job is None or job.status != "done" or rel not in listed:
            return page(request, "error.html", status_code=404, message=_("There is no such file."))
        path = store.job_dir(job.id) / "out" / rel
        if not path.is_file():
            return page(request, "error.html", status_code=404, message=_("There is no such file."))
        inline = path.suffix.lower() in (".png", ".html", ".json")
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix.lower() == ".gcode":
            media = "text/x-gcode"
        name = f"case{job.number}-{path.name}"
        return FileResponse(path, media_type=media, filename=None if inline else name,
                            content_disposition_type="inline" if inline else "attachment")

    async def switch_lang(request: Request) -> Response:
        lang = normalize_lang(request.path_params["lang"]) or "en"
        target = request.query_params.get("next") or "/"
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(_LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax")
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if supervisor is not None:
            supervisor.start()
        try:
            yield
        finally:
            if supervisor is not None:
                supervisor.stop()

    routes = [
        Route("/", index),
        Route("/jobs", upload, methods=["POST"]),
        Route("/jobs/{job_id}", job_page),
        Route("/api/jobs/{job_id}", job_api),
        Route("/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/jobs/{job_id}/files/{path:path}", job_file),
        Route("/lang/{lang}", switch_lang),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.store = store
    app.state.supervisor = supervisor
    return _Guard(_BodyLimit(app, limit), token=token, local=local)


def serve(host: str = "127.0.0.1", port: int = 8765, data: str | Path | None = None, *,
          allow_remote: bool = False, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, echo=print) -> None:
    """Run the web app with uvicorn until interrupted (``printpipe serve``).

    A non-loopback ``host`` needs ``allow_remote=True``; then a random access token is made and the
    address to open (with ``?token=``) is passed to ``echo``.
    """
    import secrets

    import uvicorn

    local = _is_loopback(host)
    if not local and not allow_remote:
        raise InputError(f"--host {host} would let other computers reach patient CTs; add --allow-remote "
                         f"to do so on purpose (an access token is then printed), or use --host 127.0.0.1")
    data = Path(data) if data is not None else Path.home() / ".printpipe" / "serve"
    token = None if local else secrets.token_urlsafe(24)
    app = create_app(data, token=token, local=local, max_upload_mb=max_upload_mb)
    shown = f"[{host}]" if ":" in host else host
    if token:
        if host in ("0.0.0.0", "::"):
            shown = _this_machine_address() or shown
        echo(f"printpipe serve: open http://{shown}:{port}/?token={token} (the token is needed from "
             f"other computers; keep it to the printer room)")
    else:
        echo(f"printpipe serve: open http://{shown}:{port}/ in a browser on this computer")
    echo(f"printpipe serve: jobs are kept in {data}; press Ctrl+C to stop")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


# -- helpers ----------------------------------------------------------------------------------------

_NO_STORE = {"Cache-Control": "no-store"}


def _plain(status: int, text: str) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain; charset=utf-8")


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _this_machine_address() -> str | None:
    """This computer's address on its local network (no packet is sent: a UDP socket is only
    pointed at a private address so the kernel picks the outgoing interface)."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _lang_of(request: Request) -> str:
    return normalize_lang(request.cookies.get(_LANG_COOKIE)) or detect_lang(
        request.headers.get("accept-language") or "en")


def _translate_error(exc: BaseException, lang: str) -> str:
    from printpipe.i18n import translate_error

    return translate_error(exc, lang)


def _stored_error(job, lang: str) -> str | None:
    """The one-line error of a failed job in ``lang`` (the class and message were stored)."""
    if job.status != "failed":
        return None
    _ = get_translator(lang)
    if job.error_type == "internal":
        return _("Internal error: {message} (please report it)").format(message=job.error or "")
    import printpipe.errors as errors

    cls = getattr(errors, job.error_type or "", None)
    if not (isinstance(cls, type) and issubclass(cls, PrintpipeError)):
        cls = PrintpipeError
    return _translate_error(cls(job.error or ""), lang)


def _expected_stages(job) -> list[str]:
    """The stages every job goes through, plus those this job has reported, in pipeline order."""
    names = {"read", "segment", "surface", "repair", "export", "slice", "report", *job.stages}
    if WHAT.get(job.options.get("what"), ("", {}))[1].get("mirror"):
        names.add("mirror")
    order = list(STAGES)
    return sorted(names, key=lambda s: order.index(s) if s in order else len(order))


def _job_summary(job, lang: str) -> dict:
    _ = get_translator(lang)
    stages = []
    total = done = 0.0
    for name in _expected_stages(job):
        label, weight = STAGES.get(name, (name, 1.0))
        fraction = 1.0 if job.status == "done" else float(job.stages.get(name, 0.0))
        stages.append({"name": name, "label": _(label), "percent": int(fraction * 100)})
        total += weight
        done += weight * fraction
    overall = 100 if job.status == "done" else min(99, int(100 * done / total)) if total else 0
    what = WHAT.get(job.options.get("what"), ("?", {}))[0]
    return {
        "id": job.id,
        "number": job.number,
        "name": _("Case {n}").format(n=job.number),
        "status": job.status,
        "status_label": _(_STATUS.get(job.status, job.status)),
        "terminal": job.terminal,
        "cancel_requested": job.cancel,
        "stage": job.stage,
        "stage_label": _(STAGES[job.stage][0]) if job.stage in STAGES else None,
        "stages": stages,
        "percent": overall,
        "error": _stored_error(job, lang),
        "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(job.created)),
        "what": _(what),
        "printer": job.options.get("printer"),
        "material": job.options.get("material"),
    }


def _result_view(job, lang: str) -> dict | None:
    if job.status != "done" or not job.result:
        return None
    from printpipe.i18n import part_label

    _ = get_translator(lang)
    res = job.result
    outputs = res.get("outputs", [])
    base = f"/jobs/{job.id}/files/"
    pictures = []
    for o in outputs:
        if o["kind"] != "png":
            continue
        stem = Path(o["path"]).stem
        if stem in _PICTURES:
            caption = _(_PICTURES[stem])
        elif stem.startswith("3d_"):
            caption = _("3-D view: {part}").format(part=part_label(stem[3:], lang))
        else:
            caption = stem
        pictures.append({"url": base + o["path"], "caption": caption})
    order = {"3d_all": 0, "toolpaths": 1}
    pictures.sort(key=lambda p: order.get(Path(p["url"]).stem, 2))

    def entry(o, label):
        return {"url": base + o["path"], "label": label, "file": Path(o["path"]).name,
                "size": _size(o["bytes"])}

    gcode = [entry(o, _("G-code, plate {n}").format(n=i + 1) if sum(x["kind"] == "gcode" for x in outputs) > 1
                   else _("G-code"))
             for i, o in enumerate([o for o in outputs if o["kind"] == "gcode"])]
    models = []
    for o in outputs:
        p = o["path"]
        if p == "model.stl":
            models.append(entry(o, _("All parts, one STL")))
        elif p == "model.3mf":
            models.append(entry(o, _("All parts, 3MF (opens in PrusaSlicer, Cura, Bambu Studio)")))
        elif p.startswith("parts/") and p.endswith(".stl"):
            models.append(entry(o, _("STL: {part}").format(part=part_label(Path(p).stem, lang))))
        elif o["kind"] in ("obj", "ply"):
            models.append(entry(o, p))
    others = []
    kinds = (  # (test on the path, label), in the order they are offered
        (lambda p: p == "report.html", _("Quality report (open in the browser)")),
        (lambda p: p.endswith(".seg.nrrd"), _("Label map for 3D Slicer (.seg.nrrd)")),
        (lambda p: p.endswith((".nii.gz", ".nii")), _("Label map, NIfTI (ITK-SNAP, 3D Slicer)")),
        (lambda p: p.endswith(".nrrd") and not p.endswith(".seg.nrrd"), _("Label map (NRRD)")),
        (lambda p: p == "labels.json", _("Names of the labels (JSON)")),
        (lambda p: p == "manifest.json", _("Manifest (all figures, JSON)")),
    )
    for test, label in kinds:
        others += [entry(o, label) for o in outputs if test(o["path"])]
    pr = res.get("print") or {}
    print_view = None
    if pr:
        minutes = int(round(float(pr.get("time_s", 0)) / 60))
        print_view = {
            "printer": pr.get("printer"), "material": pr.get("material"),
            "time": _("{h} h {m} min").format(h=minutes // 60, m=f"{minutes % 60:02d}"),
            "filament": _("{m} m, {g} g").format(m=f"{float(pr.get('filament_mm', 0)) / 1000:.1f}",
                                                 g=f"{float(pr.get('filament_g', 0)):.0f}"),
            "plates": pr.get("plates", 1), "layers": pr.get("layer_count"),
        }
    parts = [{"label": part_label(p["name"], lang), "volume_cm3": f"{p['volume_mm3'] / 1000:.1f}",
              "size": " x ".join(f"{s:.0f}" for s in p["size_mm"]), "watertight": p["watertight"]}
             for p in res.get("parts", [])]
    return {"print": print_view, "pictures": pictures, "gcode": gcode, "models": models, "others": others,
            "parts": parts, "warnings": res.get("warnings", []), "seconds": res.get("seconds"),
            "report_url": base + "report.html" if any(o["path"] == "report.html" for o in outputs) else None}


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
