"""``printpipe serve`` without a browser: upload checks, the job store, the pages' safety rules.

The app is driven through Starlette's TestClient with the worker off (``start_worker=False``), so
these tests take well under a second each; the end-to-end path with a real worker and a real
browser is ``tests/test_web_browser.py``.
"""

from __future__ import annotations

import io
import stat
import warnings
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="starlette not installed (pip install -e '.[dev]')")
pytest.importorskip("httpx", reason="httpx (dev extra) drives Starlette's TestClient")

with warnings.catch_warnings():  # newer Starlette would rather use httpx2; httpx still works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from printpipe.errors import InputError  # noqa: E402
from printpipe.web.app import create_app  # noqa: E402
from printpipe.web.store import JobStore  # noqa: E402
from printpipe.web.uploads import check_relative_name, check_zip, save_folder_files  # noqa: E402
from printpipe.web.worker import QUALITY, WHAT, pipeline_config, validate_options  # noqa: E402

LOCAL = "http://127.0.0.1:8765"
# a name as a hospital export might write it: it must never come back in a page or the database
PATIENT = "ZHANG_SAN_0012345"


def _zip(path: Path, members: dict[str, bytes], *, symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.fixture(autouse=True)
def _process_language_unchanged():
    yield
    from printpipe.i18n import set_lang

    set_lang(None)  # run_job sets the worker process's language; other tests expect the locale's


@pytest.fixture
def client(tmp_path):
    app = create_app(tmp_path / "data", start_worker=False, max_upload_mb=1)
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def _form(**overrides):
    data = {"printer": "ender3", "material": "PLA", "what": "femur_left", "quality": "draft"}
    data.update(overrides)
    return data


# -- zip and folder checks --------------------------------------------------------------------------

def test_check_zip_accepts_relative_members(tmp_path):
    path = _zip(tmp_path / "ok.zip", {"ct/a.dcm": b"x", "ct/sub/b.dcm": b"y", "ct/": b""})
    assert check_zip(path) == 2  # "ct/" is a folder entry


@pytest.mark.parametrize("name, match", [
    ("../evil.dcm", r"'\.\.'"),
    ("ct/../../evil.dcm", r"'\.\.'"),
    ("/etc/evil.dcm", "absolute path"),
    ("C:\\evil.dcm", "absolute path"),
    ("\\\\server\\share\\evil.dcm", "absolute path"),
])
def test_check_zip_refuses_paths_that_leave_the_folder(tmp_path, name, match):
    path = _zip(tmp_path / "bad.zip", {"ct/a.dcm": b"x", name: b"y"})
    with pytest.raises(InputError, match=match):
        check_zip(path)


def test_check_zip_refuses_symlinks(tmp_path):
    path = _zip(tmp_path / "link.zip", {"ct/a.dcm": b"x"}, symlink="ct/link.dcm")
    with pytest.raises(InputError, match="symbolic link"):
        check_zip(path)


def test_check_zip_refuses_non_zip_empty_and_bombs(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip" * 50)
    with pytest.raises(InputError, match="not a zip archive"):
        check_zip(junk)
    with pytest.raises(InputError, match="empty"):
        check_zip(_zip(tmp_path / "empty.zip", {"ct/": b""}))
    # 3 MB of zeros compress to a few KB: the unpacked size counts, not the upload's
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.dcm", b"\0" * (3 << 20))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(InputError, match="unpacks to"):
        check_zip(bomb, max_unpacked_bytes=1 << 20)
    with pytest.raises(InputError, match="entries"):
        check_zip(_zip(tmp_path / "many.zip", {f"{i}.dcm": b"x" for i in range(5)}), max_members=4)


def test_errors_never_name_the_member(tmp_path):
    path = _zip(tmp_path / "bad.zip", {f"../{PATIENT}/a.dcm": b"y"})
    with pytest.raises(InputError) as info:
        check_zip(path)
    assert PATIENT not in str(info.value)


def test_folder_files_are_stored_under_numbered_names(tmp_path):
    files = [(f"{PATIENT}/IM0001.dcm", io.BytesIO(b"a")), (f"{PATIENT}/sub/IM0002", io.BytesIO(b"b"))]
    assert save_folder_files(files, tmp_path / "in") == 2
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["000001.dcm", "000002"]
    with pytest.raises(InputError, match=r"'\.\.'"):
        save_folder_files([("x/../../y.dcm", io.BytesIO(b"a"))], tmp_path / "in2")
    assert check_relative_name("a/./b//c.dcm").as_posix() == "a/b/c.dcm"


# -- options -> pipeline configuration ---------------------------------------------------------------

def test_every_choice_maps_to_a_valid_pipeline_config():
    for what in WHAT:
        for quality in QUALITY:
            options = validate_options({"printer": "ender3", "material": "PETG", "what": what,
                                        "quality": quality, "supports": False})
            cfg = pipeline_config(options)
            assert cfg.printer == "ender3" and cfg.material == "PETG" and cfg.slicing.support is False
    assert pipeline_config(validate_options(_form(what="hip_left"))).segment.split_hemipelvis
    assert pipeline_config(validate_options(_form(what="mirror_right"))).segment.mirror == "right"
    assert pipeline_config(validate_options(_form(quality="draft"))).slicing.layer_height_mm == 0.3
    with pytest.raises(InputError, match="unknown printer"):
        validate_options(_form(printer="no-such-printer"))
    with pytest.raises(InputError, match="what to print"):
        validate_options(_form(what="skull"))


# -- the job store -----------------------------------------------------------------------------------

def test_store_keeps_jobs_across_restarts_and_requeues_interrupted_ones(tmp_path):
    store = JobStore(tmp_path)
    a, b = store.new_id(), store.new_id()
    store.add(a, {"what": "femurs"}, "zip")
    store.add(b, {"what": "pelvis"}, "folder")
    claimed = store.claim_next()
    assert claimed.id == a and claimed.status == "running"
    assert store.progress(a, "segment", {"read": 1.0, "segment": 0.5}) is False
    # the server stops here; a new store on the same folder sees both jobs, the running one queued again
    again = JobStore(tmp_path)
    assert again.requeue_interrupted() == [a]
    jobs = {j.id: j for j in again.list()}
    assert jobs[a].status == "queued" and jobs[a].stages == {} and jobs[b].status == "queued"
    assert [j.number for j in again.list()] == [2, 1]
    # cancelling: a queued job ends at once, a running one sees the flag at its next progress report
    again.request_cancel(b)
    assert again.get(b).status == "cancelled"
    again.claim_next()
    again.request_cancel(a)
    assert again.progress(a, "surface", {"surface": 0.1}) is True
    again.finish(a, "cancelled")
    assert again.claim_next() is None
    assert again.get("../../etc") is None


# -- the pages --------------------------------------------------------------------------------------

def test_language_from_accept_language_and_from_the_switch(client):
    zh = client.get("/", headers={"accept-language": "zh-CN,zh;q=0.9,en;q=0.5"})
    assert zh.status_code == 200 and '<html lang="zh-CN">' in zh.text
    en = client.get("/", headers={"accept-language": "en-US,en;q=0.9"})
    assert '<html lang="en">' in en.text and "New print job" in en.text
    r = client.get("/lang/zh?next=/", headers={"accept-language": "en"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert '<html lang="zh-CN">' in client.get("/", headers={"accept-language": "en"}).text
    r = client.get("/lang/en?next=//evil.example/", follow_redirects=False)
    assert r.headers["location"] == "/"


def test_upload_refusals_are_one_plain_line_and_create_no_job(client, tmp_path):
    junk = b"not a zip" * 10
    r = client.post("/jobs", data=_form(), files={"ct_zip": (f"{PATIENT}.zip", junk, "application/zip")},
                    headers={"accept-language": "en"})
    assert r.status_code == 400
    assert "not a zip archive" in r.text and PATIENT not in r.text
    r = client.post("/jobs", data=_form(), headers={"accept-language": "en"})
    assert r.status_code == 400 and "choose a CT first" in r.text
    big = b"\0" * (2 << 20)  # the app was made with max_upload_mb=1
    r = client.post("/jobs", data=_form(), files={"ct_zip": ("a.zip", big, "application/zip")},
                    headers={"accept-language": "en"})
    assert r.status_code == 413 and "larger than the 1 MB" in r.text
    assert JobStore(tmp_path / "data").list() == []
    assert not list((tmp_path / "data").glob("jobs/*"))


def test_upload_queues_a_job_named_by_a_counter_only(client, tmp_path):
    data = tmp_path / "data"
    ct = _zip(tmp_path / f"{PATIENT}.zip", {f"{PATIENT}/IM0001.dcm": b"x"})
    r = client.post("/jobs", data=_form(), files={"ct_zip": (f"{PATIENT}.zip", ct.read_bytes(), "application/zip")},
                    headers={"accept-language": "en"}, follow_redirects=False)
    assert r.status_code == 303
    job_id = r.headers["location"].rsplit("/", 1)[-1]
    page = client.get(f"/jobs/{job_id}", headers={"accept-language": "en"}).text
    api = client.get(f"/api/jobs/{job_id}").json()
    index = client.get("/").text
    assert api["name"] == "Case 1" and api["status"] == "queued" and api["percent"] == 0
    assert (data / "jobs" / job_id / "input.zip").is_file()
    for text in (page, index, str(api), r.headers["location"], (data / "jobs.sqlite3").read_bytes().decode("latin-1")):
        assert PATIENT not in text
    # the same folder upload: numbered files, no names
    r = client.post("/jobs", data=_form(), files=[("ct_folder", (f"{PATIENT}/IM0001.dcm", b"x", "application/dicom"))],
                    follow_redirects=False)
    job2 = r.headers["location"].rsplit("/", 1)[-1]
    assert [p.name for p in (data / "jobs" / job2 / "input").iterdir()] == ["000001.dcm"]
    # cancel a queued job: it ends at once
    client.post(f"/jobs/{job2}/cancel", follow_redirects=False)
    assert client.get(f"/api/jobs/{job2}").json()["status"] == "cancelled"


def test_files_are_served_only_when_listed_by_the_finished_job(client, tmp_path):
    store = JobStore(tmp_path / "data")
    job_id = store.new_id()
    out = store.job_dir(job_id) / "out"
    out.mkdir(parents=True)
    (out / "model.gcode").write_text("G28\n")
    (out / "secret.txt").write_text("no")
    store.add(job_id, _form(), "zip")
    store.claim_next()
    assert client.get(f"/jobs/{job_id}/files/model.gcode").status_code == 404  # not finished yet
    store.finish(job_id, "done", result={"outputs": [{"path": "model.gcode", "kind": "gcode", "bytes": 4}],
                                         "print": None, "parts": [], "warnings": []})
    r = client.get(f"/jobs/{job_id}/files/model.gcode")
    assert r.status_code == 200 and r.text == "G28\n"
    assert 'filename="case1-model.gcode"' in r.headers["content-disposition"]
    assert client.get(f"/jobs/{job_id}/files/secret.txt").status_code == 404
    assert client.get(f"/jobs/{job_id}/files/../jobs.sqlite3").status_code == 404
    assert client.get("/jobs/0123456789abcdef").status_code == 404


def test_failed_job_shows_its_error_in_the_readers_language(client, tmp_path):
    store = JobStore(tmp_path / "data")
    job_id = store.new_id()
    store.add(job_id, _form(), "zip")
    store.claim_next()
    store.finish(job_id, "failed", error_type="SegmentationError", error="no bone found at 226 HU")
    en = client.get(f"/api/jobs/{job_id}", headers={"accept-language": "en"}).json()["error"]
    zh = client.get(f"/api/jobs/{job_id}", headers={"accept-language": "zh"}).json()["error"]
    assert "no bone found at 226 HU" in en and "\n" not in en
    assert zh != en and "226" in zh


def test_local_mode_answers_only_loopback_host_names(tmp_path):
    app = create_app(tmp_path / "d", start_worker=False)
    with TestClient(app, base_url="http://evil.example:8765") as c:
        assert c.get("/").status_code == 403  # DNS rebinding: a page elsewhere naming this server
    with TestClient(app, base_url="http://localhost:8765") as c:
        assert c.get("/").status_code == 200
        r = c.post("/jobs", data=_form(), headers={"origin": "http://evil.example"})
        assert r.status_code == 403


def test_remote_mode_wants_the_token(tmp_path):
    app = create_app(tmp_path / "d", start_worker=False, token="s3cret-token", local=False)
    with TestClient(app, base_url="http://192.0.2.10:8765") as c:
        assert c.get("/").status_code == 403
        assert c.get("/?token=wrong").status_code == 403
        r = c.get("/?token=s3cret-token", follow_redirects=False)
        assert r.status_code == 303 and "token" not in r.headers["location"]
        assert c.get("/").status_code == 200  # the cookie carries it from now on


def test_serve_refuses_a_public_address_without_the_flag(tmp_path):
    from printpipe.web.app import serve

    with pytest.raises(InputError, match="--allow-remote"):
        serve("0.0.0.0", 8765, tmp_path)


def test_worker_records_a_failed_case_as_one_translated_line(tmp_path):
    from printpipe.web.worker import run_job

    store = JobStore(tmp_path)
    job_id = store.new_id()
    _zip(store.job_dir(job_id).parent.parent / "x.zip", {})  # make the jobs/ folder
    store.job_dir(job_id).mkdir(parents=True)
    _zip(store.job_dir(job_id) / "input.zip", {f"{PATIENT}/notes.txt": b"no DICOM here\n" * 20})
    store.add(job_id, {**validate_options(_form()), "lang": "en"}, "zip")
    run_job(store, store.claim_next())
    job = store.get(job_id)
    assert job.status == "failed" and job.error_type == "InputError"
    assert "\n" not in job.error and PATIENT not in job.error and str(tmp_path) not in job.error
    assert not (store.job_dir(job_id) / "input.zip").exists()  # the CT is removed once the job ends
    assert not (store.job_dir(job_id) / "out").exists()


def test_error_lines_lose_server_paths_and_upload_names(tmp_path):
    from printpipe.web.worker import _scrub

    _zip(tmp_path / "input.zip", {f"{PATIENT}/IM0001.dcm": b"x"})
    text = _scrub(f"cannot read {tmp_path}/input.zip member {PATIENT}/IM0001.dcm:\n  bad header", tmp_path)
    assert PATIENT not in text and str(tmp_path) not in text and "\n" not in text
    assert text == "cannot read the upload member <file>/<file>: bad header"


def _sleeper(seconds):  # a stand-in worker process (module level: spawn pickles it by name)
    import time

    time.sleep(seconds)


def test_supervisor_stops_a_job_that_ignores_cancel_and_reports_a_dead_worker(tmp_path, monkeypatch):
    import multiprocessing

    from printpipe.web import worker

    sup = worker.Supervisor(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    spawned = []

    def fake_spawn():
        sup._proc = ctx.Process(target=_sleeper, args=(60,), daemon=True)
        sup._proc.start()
        spawned.append(sup._proc)

    monkeypatch.setattr(sup, "_spawn", fake_spawn)
    store = sup.store
    a = store.new_id()
    store.job_dir(a).mkdir(parents=True)
    (store.job_dir(a) / "out").mkdir()
    (store.job_dir(a) / "input.zip").write_bytes(b"x")
    store.add(a, {"what": "femurs"}, "zip")
    fake_spawn()
    store.claim_next()
    store.request_cancel(a)
    sup._check({a: -1e9})  # asked long ago, still running: the process is ended
    assert store.get(a).status == "cancelled"
    assert not spawned[0].is_alive() and len(spawned) == 2 and spawned[1].is_alive()
    assert not (store.job_dir(a) / "out").exists() and not (store.job_dir(a) / "input.zip").exists()
    # the worker dies under a running job: the job fails with a plain line, a new worker starts
    b = store.new_id()
    store.job_dir(b).mkdir(parents=True)
    store.add(b, {"what": "femurs"}, "zip")
    store.claim_next()
    spawned[1].kill()
    spawned[1].join()
    sup._check({})
    job = store.get(b)
    assert job.status == "failed" and "worker process stopped" in job.error
    assert len(spawned) == 3
    sup.stop()
    assert not spawned[2].is_alive()


def test_a_refused_upload_keeps_the_choices(client):
    r = client.post("/jobs", data=_form(what="hip_right", printer="mk3s", quality="draft"),
                    headers={"accept-language": "en"})
    assert r.status_code == 400
    assert 'value="hip_right" checked' in r.text and '<option value="mk3s" selected>' in r.text
    assert '<option value="draft" selected>' in r.text and 'id="supports" checked' not in r.text


def test_log_lines_of_a_job_lose_the_upload_names(tmp_path):
    import logging

    from printpipe.web.worker import _LogScrubber

    _zip(tmp_path / "input.zip", {f"{PATIENT}/IM0001.dcm": b"x"})
    record = logging.LogRecord("printpipe.dicom", logging.WARNING, __file__, 1,
                               "skipping %s: pixel data truncated (%d of %d bytes)",
                               (f"{PATIENT}/IM0001.dcm", 10, 20), None)
    assert _LogScrubber(tmp_path).filter(record)
    assert record.getMessage() == "skipping <file>/<file>: pixel data truncated (10 of 20 bytes)"
