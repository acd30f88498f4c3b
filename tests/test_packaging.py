"""The wheel installs only the ``printpipe`` package, with ``cli``/``kernels`` mapped inside it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        pytest.fail(f"wheel build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (whl,) = out.glob("printpipe-*.whl")
    return whl


def test_wheel_has_one_top_level_package(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
        assert top == {"printpipe"}, top
        # cli/ and kernels/ from the repo root are installed inside the package
        assert "printpipe/cli/main.py" in names
        assert "printpipe/kernels/__init__.py" in names
        # printer profiles ship as package data
        assert any(n.startswith("printpipe/printers/") and n.endswith(".toml") for n in names)
        # gettext catalogs ship compiled, so an installed wheel speaks Chinese without a build step
        assert {f"printpipe/locale/{lang}/LC_MESSAGES/printpipe.mo" for lang in ("zh", "en")} <= set(names)
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "printpipe = printpipe.cli.main:console" in zf.read(entry).decode()


def test_installed_wheel_runs_outside_repo(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                    "--target", str(target), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import printpipe, sys; from printpipe.cli.main import main; "
            "print(printpipe.__file__); sys.exit(main(['--version']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert str(target) in proc.stdout  # imported from the installed wheel, not the repo
    assert "printpipe 0." in proc.stdout
