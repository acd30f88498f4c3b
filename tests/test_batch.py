"""Batch processing: cases from a tree of studies, containment, resume, interruption, Dask, CLI.

Most tests run the real executor (spawned worker processes) on a cheap stand-in for the pipeline
(:func:`fake_case`), so the batch machinery is tested in seconds; the end-to-end tests at the bottom
run :func:`printpipe.pipeline.run` on small phantom studies and are skipped while the pipeline's
stages are incomplete.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from printpipe import batch as B
from printpipe.dicom import DicomConfig
from printpipe.errors import InputError

HERE = Path(__file__).resolve().parent
SHAPE = (48, 64, 64)          # small phantom: about 0.5 s to make and write, 400 mm field of view
STUDIES = {                   # folder -> (study uid, [(series uid, slices, seed)])
    "site1/study_a": ("1.2.826.0.1.3680043.10.1", [("1.2.826.0.1.3680043.10.1.1", 48, 1)]),
    "site1/study_b": ("1.2.826.0.1.3680043.10.2", [("1.2.826.0.1.3680043.10.2.1", 48, 2)]),
    "site2/study_c": ("1.2.826.0.1.3680043.10.3", [("1.2.826.0.1.3680043.10.3.1", 48, 3),
                                                   ("1.2.826.0.1.3680043.10.3.2", 24, 4)]),
}
PATIENT_NAME = "DOE^JANE"


# -- test data ------------------------------------------------------------------------------------

def _write_tree(root: Path) -> Path:
    from printpipe.phantom import pelvis_phantom, write_dicom_series

    for folder, (study_uid, series) in STUDIES.items():
        for series_uid, slices, seed in series:
            ph = pelvis_phantom(shape=(slices,) + SHAPE[1:], seed=seed, noise_hu=5.0)
            write_dicom_series(ph.volume, root / folder / series_uid[-1], study_uid=study_uid,
                               series_uid=series_uid, seed=seed, patient_name=PATIENT_NAME,
                               series_number=int(series_uid[-1]))
    # a broken study: DICOM files whose pixel data is cut off (a failed network copy)
    good = sorted((root / "site1/study_a/1").glob("*.dcm"))[:6]
    broken = root / "site2" / "broken_study"
    broken.mkdir(parents=True)
    for i, f in enumerate(good):
        (broken / f"im{i}.dcm").write_bytes(f.read_bytes()[:700])
    (root / "site2" / "README.txt").write_text("not DICOM\n")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return _write_tree(tmp_path_factory.mktemp("studies"))


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    """Stands in for PipelineConfig: a dicom field, to_dict and params_hash."""

    dicom: DicomConfig = DicomConfig()
    level: int = 1

    def to_dict(self):
        return dataclasses.asdict(self)

    def params_hash(self):
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class FakeResult:
    status: str
    outdir: Path
    manifest: dict
    seconds: float
    parts: int = 1
    triangles: int = 0
    volume_mm3: float = 0.0
    warnings: tuple = ()
    error: str | None = None


def _count(tag: str) -> None:
    counter = os.environ.get("PRINTPIPE_TEST_COUNTER")
    if counter:
        with open(counter, "a") as fh:
            fh.write(f"{tag} {os.getpid()} {time.time():.6f}\n")


def fake_case(source, outdir, config):
    """A pipeline stand-in: 'reads' the series (file sizes), fails on truncated files, writes outputs.

    Behaviour is steered by environment variables (inherited by spawned workers):
    PRINTPIPE_TEST_COUNTER (file that gets one line per start/end), PRINTPIPE_TEST_SLEEP (seconds
    per case), PRINTPIPE_TEST_CRASH (a source folder name whose worker process is killed),
    PRINTPIPE_TEST_BUG (a folder name that raises a plain exception).
    """
    source = Path(source)
    _count(f"start:{source.name}")
    time.sleep(float(os.environ.get("PRINTPIPE_TEST_SLEEP", "0")))
    if source.name == os.environ.get("PRINTPIPE_TEST_CRASH"):
        os.kill(os.getpid(), signal.SIGKILL)
    if source.name == os.environ.get("PRINTPIPE_TEST_BUG"):
        raise ZeroDivisionError("simulated bug")
    files = sorted(p for p in source.rglob("*.dcm"))
    if not files or min(p.stat().st_size for p in files) < 2000:
        raise InputError(f"truncated pixel data in {len(files)} file(s); re-export the series")
    h = hashlib.sha256(b"".join(p.read_bytes()[-512:] for p in files)).hexdigest()[:32]
    (outdir / "parts").mkdir(parents=True, exist_ok=True)
    (outdir / "model.stl").write_text("solid fake\nendsolid fake\n")
    manifest = {"status": "ok", "input_hash": h, "params_hash": config.params_hash(),
                "series": config.dicom.series, "warnings": []}
    (outdir / "manifest.json").write_text(json.dumps(manifest))
    _count(f"end:{source.name}")
    return FakeResult("ok", outdir, manifest, 0.01, parts=2, triangles=100 * len(files),
                      volume_mm3=float(len(files)))


def _events(counter: Path) -> list[str]:
    return counter.read_text().split("\n")[:-1] if counter.exists() else []


def _started(counter: Path) -> list[str]:
    return [line.split()[0][len("start:"):] for line in _events(counter) if line.startswith("start:")]


@pytest.fixture
def counter(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "counter.txt"
    monkeypatch.setenv("PRINTPIPE_TEST_COUNTER", str(path))
    return path


def _no_partials(outdir: Path) -> bool:
    return not [p for p in outdir.iterdir() if ".partial-" in p.name or ".old-" in p.name]


# -- cases ----------------------------------------------------------------------------------------

def test_find_cases_one_per_study_plus_unreadable_folder(tree):
    cases = B.find_cases(tree)
    by_folder = {c.folder: c for c in cases}
    # three studies (study_c has two series; its 48-slice series is chosen) plus the broken folder
    assert sorted(by_folder) == ["site1/study_a/1", "site1/study_b/1", "site2/broken_study",
                                 "site2/study_c/1"]
    assert by_folder["site2/study_c/1"].shape == (48, 64, 64)
    assert "most slices" in by_folder["site2/study_c/1"].reason
    assert "no readable DICOM series" in by_folder["site2/broken_study"].reason


def test_case_ids_are_stable_hashes_without_patient_data(tree):
    first = B.find_cases(tree)
    again = B.find_cases(tree)
    assert [c.case_id for c in first] == [c.case_id for c in again]
    for c in first:
        assert len(c.case_id) == 12 and int(c.case_id, 16) >= 0  # 12 hex digits
    # the ID of a series is sha256(study hash + stack id)[:12]; the hashes are sha256(uid)[:16]
    uid_hash = lambda u: hashlib.sha256(u.encode()).hexdigest()[:16]  # noqa: E731
    study, series = STUDIES["site1/study_a"][0], STUDIES["site1/study_a"][1][0][0]
    expected = hashlib.sha256((uid_hash(study) + uid_hash(series)).encode()).hexdigest()[:12]
    assert expected in {c.case_id for c in first}
    # no folder names, UIDs or patient names in the IDs
    text = " ".join(c.case_id for c in first)
    for needle in ("study", "site", "1.2.826", "DOE"):
        assert needle not in text


def test_all_series_gives_one_case_per_eligible_series(tree):
    cases = B.find_cases(tree, all_series=True)
    study_c = [c for c in cases if c.folder.startswith("site2/study_c")]
    assert len(study_c) == 2
    assert all("eligible CT stack" in c.reason for c in study_c)
    assert len({c.case_id for c in cases}) == len(cases)


def test_study_without_usable_series_fails_with_the_choice_message(tree, tmp_path, counter):
    # --series that matches no stack: every study is a case that fails with choose()'s message,
    # and nothing is run on a series the user did not ask for
    cases = B.find_cases(tree, series="#9")
    chosen = [c for c in cases if c.folder != "site2/broken_study"]
    assert chosen and all(c.error and "no usable series" in c.reason for c in chosen)
    result = B.run_many(chosen, tmp_path / "out", FakeConfig(), B.BatchConfig(jobs=1, warmup=False),
                        case_fn=fake_case)
    assert {r.status for r in result.records} == {"failed"}
    assert all(r.error == c.error and r.error_type == "InputError" for r, c in zip(result.records, chosen))
    assert _started(counter) == []


def test_case_id_mapping_by_uids_and_folders(tree, tmp_path):
    mapping = tmp_path / "ids.csv"
    study, series = STUDIES["site1/study_a"][0], STUDIES["site1/study_a"][1][0][0]
    mapping.write_text(f"study_uid,series_uid,case_id\n{study},{series},P001\n"
                       "site1/study_b,P002\n")
    cases = B.find_cases(tree, id_map=B.load_case_ids(mapping))
    by_folder = {c.folder: c.case_id for c in cases}
    assert by_folder["site1/study_a/1"] == "P001"
    assert by_folder["site1/study_b/1"] == "P002"
    assert len(by_folder["site2/study_c/1"]) == 12  # unmapped: hash ID


def test_case_id_mapping_rejects_unsafe_and_duplicate_ids(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a/b,../evil\n")
    with pytest.raises(InputError, match="not a safe folder name"):
        B.load_case_ids(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("x,P1\ny,P1\n")
    with pytest.raises(InputError, match="used twice"):
        B.load_case_ids(dup)


def test_memory_estimate_scales_with_volume():
    small = B.Case("a", "x", shape=(100, 512, 512))
    big = B.Case("b", "x", shape=(400, 512, 512))
    # slices * rows * cols * 2 bytes * factor + a fixed 256 MiB per process
    assert B.estimate_case_memory(small, factor=16) == 100 * 512 * 512 * 2 * 16 + (256 << 20)
    assert B.estimate_case_memory(big, factor=16) - (256 << 20) == 4 * (B.estimate_case_memory(small, 16) - (256 << 20))
    assert B.available_memory() > 0


def test_batch_config_validates():
    with pytest.raises(InputError, match="jobs"):
        B.BatchConfig(jobs=0)
    with pytest.raises(InputError, match="exclude each other"):
        B.BatchConfig(scheduler="tcp://x:8786", dask_local=2)
    with pytest.raises(InputError, match="fork is unsafe"):
        B.BatchConfig(mp_context="fork")


# -- running (fake pipeline, real executor) -------------------------------------------------------

def _run(tree, out, counter=None, **kw):
    cases = B.find_cases(tree)
    batch = B.BatchConfig(jobs=kw.pop("jobs", 2), warmup=False, **kw)
    return cases, B.run_many(cases, out, FakeConfig(), batch, case_fn=fake_case)


def test_bad_case_is_contained_and_reported(tree, tmp_path, counter):
    out = tmp_path / "out"
    cases, result = _run(tree, out)
    assert result.exit_code == 1
    status = {r.case_id: r for r in result.records}
    broken = next(c for c in cases if c.folder == "site2/broken_study")
    assert status[broken.case_id].status == "failed"
    assert "truncated pixel data" in status[broken.case_id].error
    assert status[broken.case_id].error_type == "InputError"
    good = [c for c in cases if c is not broken]
    assert all(status[c.case_id].status == "ok" for c in good)
    for c in good:
        manifest = json.loads((out / c.case_id / "manifest.json").read_text())
        # every case selected its own series through DicomConfig.series
        assert manifest["series"] == c.series
        assert (out / c.case_id / "case.log").is_file()
    # the failed case keeps its log and error, not model files
    assert sorted(p.name for p in (out / broken.case_id).iterdir()) == ["case.json", "case.log"]
    assert _no_partials(out)
    rows = list(csv.DictReader((out / "batch.csv").open()))
    assert [r["case_id"] for r in rows] == [c.case_id for c in cases]
    assert {r["status"] for r in rows} == {"ok", "failed"}
    summary = json.loads((out / "batch.json").read_text())
    assert summary["counts"] == {"cases": 4, "ok": 3, "failed": 1, "resumed": 0, "interrupted": 0}
    # no patient names, UIDs or folder names in the summaries
    text = (out / "batch.json").read_text() + (out / "batch.csv").read_text()
    for needle in ("DOE", "1.2.826", "study_a", "site1", "broken_study"):
        assert needle not in text


def test_internal_error_and_dead_worker_do_not_stop_the_batch(tree, tmp_path, counter, monkeypatch):
    # every chosen series lives in a folder named "1": all of them hit the simulated bug
    monkeypatch.setenv("PRINTPIPE_TEST_BUG", "1")
    monkeypatch.setenv("PRINTPIPE_TEST_CRASH", "broken_study")
    out = tmp_path / "out"
    cases, result = _run(tree, out)
    status = {c.folder: r for c, r in zip(cases, result.records)}
    ids = {c.folder: c.case_id for c in cases}
    for folder in ("site1/study_a/1", "site1/study_b/1", "site2/study_c/1"):
        assert status[folder].status == "failed"
        assert status[folder].error == "internal error: ZeroDivisionError: simulated bug"
        log_text = (out / ids[folder] / "case.log").read_text()
        assert "Traceback" in log_text and "ZeroDivisionError" in log_text
    crashed = status["site2/broken_study"]
    assert crashed.status == "failed" and "worker process running this case died" in crashed.error
    # the dead worker's log was kept with the error
    info = json.loads((out / ids["site2/broken_study"] / "case.json").read_text())
    assert info["record"]["status"] == "failed"
    assert (out / ids["site2/broken_study"] / "case.log").is_file()
    # the crashing case was retried once on its own before being given up
    assert _started(counter).count("broken_study") == 2
    assert _no_partials(out)


def test_memory_budget_limits_concurrency(tree, tmp_path, counter, monkeypatch):
    monkeypatch.setenv("PRINTPIPE_TEST_SLEEP", "0.3")
    out = tmp_path / "out"
    # a budget below one case's estimate: cases must run one at a time despite jobs=2
    _run(tree, out, memory_budget_bytes=1 << 20)
    spans = {}
    for line in _events(counter):
        tag, _pid, t = line.split()
        kind, name = tag.split(":")
        spans.setdefault(name, {})[kind] = float(t)
    done = sorted((s["start"], s.get("end", s["start"])) for s in spans.values())
    for (s0, e0), (s1, _e1) in zip(done, done[1:]):
        assert s1 >= e0, "two cases overlapped although the memory budget allows only one"


def test_resume_redoes_only_missing_cases_and_cleans_stale_partials(tree, tmp_path, counter):
    out = tmp_path / "out"
    cases, first = _run(tree, out)
    ok = [r.case_id for r in first.records if r.status == "ok"]
    # simulate a killed run: one finished case lost, a stale partial folder left behind
    import shutil

    shutil.rmtree(out / ok[0])
    stale = out / f".{ok[0]}.partial-999999"
    (stale / "parts").mkdir(parents=True)
    (stale / "model.stl").write_text("half")
    mtimes = {cid: (out / cid / "manifest.json").stat().st_mtime_ns for cid in ok[1:]}
    counter.unlink()
    _, second = _run(tree, out, resume=True)
    rerun = set(_started(counter))
    by_id = {c.case_id: c for c in cases}
    assert rerun == {Path(by_id[ok[0]].source).name, "broken_study"}  # the lost and the failed case
    assert not stale.exists() and _no_partials(out)
    for cid, mt in mtimes.items():  # kept cases were not rewritten
        assert (out / cid / "manifest.json").stat().st_mtime_ns == mt
    rec = {r.case_id: r for r in second.records}
    assert all(rec[cid].resumed and rec[cid].status == "ok" for cid in ok[1:])
    assert rec[ok[1]].triangles == {r.case_id: r for r in first.records}[ok[1]].triangles
    assert second.n_resumed == 2 and second.exit_code == 1
    # changed parameters: everything is redone
    counter.unlink()
    cases = B.find_cases(tree)
    B.run_many(cases, out, FakeConfig(level=2), B.BatchConfig(jobs=2, resume=True, warmup=False),
               case_fn=fake_case)
    assert len(_started(counter)) == 4


def test_dry_run_writes_nothing(tree, tmp_path):
    out = tmp_path / "out"
    cases = B.find_cases(tree)
    result = B.run_many(cases, out, FakeConfig(), B.BatchConfig(dry_run=True), case_fn=fake_case)
    assert {r.status for r in result.records} == {"planned"}
    assert not out.exists()


_INTERRUPT_SCRIPT = """
import sys
sys.path.insert(0, {here!r})
from test_batch import FakeConfig, fake_case
from printpipe import batch as B
cases = B.find_cases({tree!r})
try:
    B.run_many(cases, {out!r}, FakeConfig(), B.BatchConfig(jobs=1, warmup=False, resume=True),
               case_fn=fake_case)
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_interrupted_run_leaves_no_partial_folder_and_resumes(tree, tmp_path, counter):
    out = tmp_path / "out"
    script = _INTERRUPT_SCRIPT.format(here=str(HERE), tree=str(tree), out=str(out))
    # 2 s per fake case: the interrupt must land while later cases still run, even when a loaded
    # machine delays this poll (at 1 s the batch once finished first under a load of 4)
    env = dict(os.environ, PRINTPIPE_TEST_SLEEP="2.0")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the first case is finished
            if any((p / "manifest.json").exists() for p in out.glob("*")):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the batch finished no case within 60 s")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _no_partials(out)
    summary = json.loads((out / "batch.json").read_text())
    assert summary["interrupted"] is True
    finished = {c["case_id"] for c in summary["cases"] if c["status"] == "ok"}
    interrupted = {c["case_id"] for c in summary["cases"] if c["status"] == "interrupted"}
    assert finished and interrupted
    for cid in interrupted:  # no half-written case folder
        assert not (out / cid / "manifest.json").exists()
    # resume: only what did not finish runs again
    counter.unlink()
    cases = B.find_cases(tree)
    result = B.run_many(cases, out, FakeConfig(), B.BatchConfig(jobs=2, resume=True, warmup=False),
                        case_fn=fake_case)
    by_id = {c.case_id: Path(c.source).name for c in cases}
    assert sorted(_started(counter)) == sorted(by_id[c] for c in by_id if c not in finished)
    assert result.n_resumed == len(finished)


def test_dask_local_cluster_contains_the_bad_case(tree, tmp_path, counter):
    pytest.importorskip("distributed")
    out = tmp_path / "out"
    cases, result = _run(tree, out, jobs=None, dask_local=2)
    assert result.executor == "dask-local"
    status = {c.folder: r for c, r in zip(cases, result.records)}
    assert status["site2/broken_study"].status == "failed"
    assert "truncated pixel data" in status["site2/broken_study"].error
    assert all(r.status == "ok" for f, r in status.items() if f != "site2/broken_study")
    assert result.exit_code == 1 and _no_partials(out)
    # the work ran in two other processes (the cluster's workers), not in this one
    pids = {line.split()[1] for line in _events(counter)}
    assert str(os.getpid()) not in pids and 1 <= len(pids) <= 2


def test_dask_scheduler_address(tree, tmp_path, counter):
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "out"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        cases, result = _run(tree, out, jobs=None, scheduler=cluster.scheduler_address)
    assert result.executor == "dask"
    assert [r.status for r in result.records].count("ok") == 3 and result.n_failed == 1


def test_missing_dask_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name.startswith("distributed"):
            raise ImportError("No module named 'distributed'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(InputError, match=r"printpipe\[dask\]"):
        B._DaskExecutor(None, 1, {})


# -- progress -------------------------------------------------------------------------------------

def test_case_bar_json_lines_and_plain_text():
    import io

    from printpipe.progress import CaseBar, stage_printer

    buf = io.StringIO()
    bar = CaseBar(buf, json_lines=True)
    bar.start(2)
    bar.case_started("abc")
    bar.case_finished("abc", "failed", 1.5, "boom")
    bar.close()
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["batch_start", "case_start", "case_done", "batch_done"]
    done = lines[2]
    assert (done["case_id"], done["status"], done["seconds"], done["error"]) == ("abc", "failed", 1.5, "boom")
    for line in lines:
        assert {"event", "case_id", "stage", "fraction", "status", "seconds", "error"} <= set(line)

    buf = io.StringIO()
    bar = CaseBar(buf)
    bar.start(1)
    bar.case_finished("abc", "ok", 2.0)
    bar.close()
    assert buf.getvalue() == "[1/1] case abc ok in 2.0 s\n"

    quiet = io.StringIO()
    p = stage_printer(quiet, quiet=True)
    p("read", 0.0), p("read", 1.0)
    assert quiet.getvalue() == ""
    js = io.StringIO()
    p = stage_printer(js, json_lines=True, case_id="c1")
    p("segment", 0.5)
    line = json.loads(js.getvalue())
    assert (line["event"], line["case_id"], line["stage"], line["fraction"]) == ("stage", "c1", "segment", 0.5)


# -- CLI ------------------------------------------------------------------------------------------

def test_cli_dry_run_lists_cases_and_reasons(tree, tmp_path, capsys):
    _pipeline_or_skip()
    from printpipe.cli.main import main

    out = tmp_path / "out"
    assert main(["batch", str(tree), "-o", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    for c in B.find_cases(tree):
        assert c.case_id in text
    assert "most slices" in text and "no readable DICOM series" in text
    assert "study_a" not in text  # folders (possibly patient names) only with --show-phi
    assert not out.exists()


def _parse(argv):
    from printpipe.cli.main import build_parser

    return build_parser().parse_args(argv)


def test_cli_config_file_applies_and_command_line_wins(tree, tmp_path):
    cfg = tmp_path / "batch.toml"
    cfg.write_text('jobs = 2\nresume = true\nmemory-budget = 3.5\n')
    args = _parse(["batch", str(tree), "-o", str(tmp_path / "o"), "--config", str(cfg)])
    assert (args.jobs, args.resume, args.memory_budget) == (2, True, 3.5)
    args = _parse(["batch", str(tree), "-o", str(tmp_path / "o"), "--jobs", "1", "--config", str(cfg)])
    assert args.jobs == 1
    # the defaults are back for the next parse without --config
    args = _parse(["batch", str(tree), "-o", str(tmp_path / "o")])
    assert (args.jobs, args.resume) == (None, False)


def test_cli_config_file_pipeline_options(tree, tmp_path):
    args = _parse(["batch", str(tree), "-o", str(tmp_path / "o")])
    if not hasattr(args, "smooth_iterations"):
        pytest.skip("pipeline options (cli/options.py stages) not available yet")
    cfg = tmp_path / "p.toml"
    cfg.write_text("smooth_iterations = 7\n")
    args = _parse(["batch", str(tree), "-o", str(tmp_path / "o"), "--config", str(cfg)])
    assert args.smooth_iterations == 7


@pytest.mark.parametrize("text, match", [
    ("jobz = 2\nfoo_bar = 1\n", "unknown key(s) foo_bar, jobz"),
    ("jobs = 'many'\n", "jobs = 'many' is not accepted by --jobs"),
    ("resume = 'yes'\n", "expected true or false"),
    ("jobs = [\n", "not valid TOML"),
])
def test_cli_config_file_errors_are_usage_errors(tree, tmp_path, capsys, text, match):
    from printpipe.cli.main import main

    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert main(["batch", str(tree), "-o", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert match in capsys.readouterr().err


# -- end to end on the real pipeline --------------------------------------------------------------

def _pipeline_or_skip():
    try:
        from printpipe.pipeline import PipelineConfig
    except ImportError as exc:
        pytest.skip(f"printpipe.pipeline is not complete yet: {exc}")
    return PipelineConfig


@pytest.mark.slow
def test_cli_batch_end_to_end_with_resume(tree, tmp_path, capsys):
    _pipeline_or_skip()
    from printpipe.cli.main import main

    out = tmp_path / "out"
    rc = main(["batch", str(tree), "-o", str(out), "--jobs", "2", "--no-report", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 1, text  # the broken study fails, the others do not
    rows = {r["case_id"]: r for r in csv.DictReader((out / "batch.csv").open())}
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"]
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 3
    for r in ok:
        manifest = json.loads((out / r["case_id"] / "manifest.json").read_text())
        assert int(r["triangles"]) > 0 and float(r["volume_mm3"]) > 0
        assert manifest["params_hash"] and manifest["input_hash"]
        assert (out / r["case_id"] / "model.stl").is_file()
    assert "batch.csv" in text and "3 ok" in text and "1 failed" in text
    # resume: nothing finished is recomputed (manifests untouched), the failed case is retried
    mt = {r["case_id"]: (out / r["case_id"] / "manifest.json").stat().st_mtime_ns for r in ok}
    import shutil

    shutil.rmtree(out / ok[0]["case_id"] / "parts", ignore_errors=True)  # not checked by resume
    (out / ok[1]["case_id"] / "case.json").unlink()  # forces the input-hash check (reads the series)
    rc = main(["batch", str(tree), "-o", str(out), "--jobs", "2", "--no-report", "--quiet", "--resume"])
    assert rc == 1
    for cid, m in mt.items():
        assert (out / cid / "manifest.json").stat().st_mtime_ns == m
    assert "3 resumed" in capsys.readouterr().out


@pytest.mark.slow
def test_dask_local_end_to_end(tree, tmp_path):
    PipelineConfig = _pipeline_or_skip()
    pytest.importorskip("distributed")
    # one good study and the broken one keep this test short; the fake-pipeline Dask tests above
    # cover the full tree
    cases = [c for c in B.find_cases(tree) if c.folder in ("site1/study_a/1", "site2/broken_study")]
    result = B.run_many(cases, tmp_path / "out", PipelineConfig(report=False), B.BatchConfig(dask_local=2))
    assert result.executor == "dask-local"
    assert result.n_ok == 1 and result.n_failed == 1 and result.exit_code == 1
    good = next(r for r in result.records if r.status == "ok")
    assert good.triangles > 0 and good.volume_mm3 > 0
    assert (tmp_path / "out" / good.case_id / "model.stl").is_file()
    failed = next(r for r in result.records if r.status == "failed")
    assert failed.error and "internal error" not in failed.error


def test_a_case_that_landed_as_the_batch_was_interrupted_is_recorded_as_finished(tree, tmp_path, counter):
    """Ctrl-C can land after a worker renamed a case's folder into place and before the batch heard
    back: that case is finished (same input, same parameters), not interrupted, and only the
    cases with no output are reported interrupted."""
    out = tmp_path / "out"
    cases, first = _run(tree, out)
    ok = [r.case_id for r in first.records if r.status == "ok"]
    batch = B.BatchConfig(jobs=1, warmup=False)
    # no record heard for any case: the finished ones are found on disk, the failed one is not
    result = B._finish(cases, out, FakeConfig(), batch, {}, True, time.perf_counter())
    status = {r.case_id: r for r in result.records}
    assert ok and all(status[cid].status == "ok" and not status[cid].resumed for cid in ok)
    assert {cid for cid, r in status.items() if r.status == "interrupted"} == {
        r.case_id for r in first.records if r.status != "ok"}
    assert json.loads((out / "batch.json").read_text())["interrupted"] is True
