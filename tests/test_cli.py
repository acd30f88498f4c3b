"""The command line: exit codes, one-line errors without traceback, results on stdout."""

from __future__ import annotations

import pytest

from printpipe.cli.main import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert "printpipe" in capsys.readouterr().out


def test_usage_error_exits_2(capsys):
    assert main(["run"]) == 2  # missing INPUT and -o
    assert "usage:" in capsys.readouterr().err


def test_unknown_command_exits_2(capsys):
    assert main(["frobnicate"]) == 2


def test_missing_input_is_one_line_error(tmp_path, capsys):
    rc = main(["run", str(tmp_path / "nope"), "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.startswith("printpipe:")]
    assert len(lines) == 1 and "InputError" in lines[0] and "nope" in lines[0]
    # nothing half-written: the output folder holds no model or manifest
    out = tmp_path / "out"
    assert not (out / "model.stl").exists() and not (out / "manifest.json").exists()
    assert not any(p.name.startswith(".printpipe-staging") for p in out.iterdir()) if out.exists() else True


def test_empty_folder_is_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["run", str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "InputError" in err


def test_debug_shows_traceback(tmp_path, capsys):
    rc = main(["run", str(tmp_path / "nope"), "-o", str(tmp_path / "out"), "--quiet", "--debug"])
    assert rc == 1
    assert "Traceback" in capsys.readouterr().err


def test_console_exits_at_once_with_the_output_flushed():
    """The ``printpipe`` command ends through ``os._exit`` (no interpreter teardown); what was
    printed to a pipe (block-buffered) must still arrive, and the exit code must be main's."""
    import subprocess
    import sys

    code = ("import sys, atexit; from printpipe.cli import main as m; "
            "atexit.register(lambda: print('TEARDOWN', file=sys.stderr)); "
            "sys.argv = ['printpipe'] + sys.argv[1:]; m.console()")
    ok = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "printpipe" in ok.stdout
    assert "TEARDOWN" not in ok.stderr  # atexit handlers did not run: the quick exit was taken
    bad = subprocess.run([sys.executable, "-c", code, "frobnicate"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "usage:" in bad.stderr


def test_console_waits_for_a_thread_still_running(monkeypatch):
    """A non-daemon thread still alive gets the normal exit (which waits for it), never os._exit."""
    import os
    import threading

    from printpipe.cli import main as cli_main

    monkeypatch.setattr(cli_main, "main", lambda: 0)
    monkeypatch.setattr(os, "_exit", lambda code: pytest.fail("os._exit with a thread still running"))
    release = threading.Event()
    worker = threading.Thread(target=release.wait, daemon=False)
    worker.start()
    try:
        with pytest.raises(SystemExit) as exc:
            cli_main.console()
        assert exc.value.code == 0
    finally:
        release.set()
        worker.join()
