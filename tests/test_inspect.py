"""``printpipe inspect``: table and JSON of the stacks found, no patient identifiers by default."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from printpipe.cli.main import main
from printpipe.dicom import uid_hash

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works with any pytest import mode
from test_dicom_synthetic import simple_series, write_slice  # noqa: E402


@pytest.fixture
def mixed(tmp_path) -> tuple[Path, str, str]:
    a = simple_series(tmp_path / "a", n=6, number=2)
    b = simple_series(tmp_path / "b", n=4, dz=1.0, number=5)
    write_slice(tmp_path / "a" / "scout", np.zeros((20, 24), np.int16), (0, 0, 0), iop=(1, 0, 0, 0, 0, -1),
                series_uid=a, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), number=2)
    (tmp_path / "readme.txt").write_text("x")
    return tmp_path, a, b


def test_table_lists_stacks_and_the_choice(mixed, capsys):
    folder, a, b = mixed
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert uid_hash(a) + "-1" in out and uid_hash(b) in out and "localizer" in out
    assert "skipped: 1 not DICOM" in out
    assert f"run would read #" in out and "most slices (6)" in out
    for forbidden in ("Synthetic", "SYN-001", a, b):  # names, IDs, raw UIDs stay hidden
        assert forbidden not in out
    chosen = [line for line in out.splitlines() if line.startswith("*")]
    assert len(chosen) == 1 and uid_hash(a) + "-1" in chosen[0]


def test_json_and_show_phi(mixed, capsys):
    folder, a, b = mixed
    assert main(["inspect", str(folder), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["chosen"] == uid_hash(a) + "-1" and len(data["series"]) == 3
    assert data["skipped"] == {"not DICOM": 1}
    assert "SYN-001" not in json.dumps(data) and "files" not in data["series"][0]
    assert main(["inspect", str(folder), "--json", "--show-phi"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["series"][0]["phi"]["PatientID"] == "SYN-001" and data["series"][0]["files"]


def test_series_option_and_failures(mixed, tmp_path, capsys):
    folder, a, b = mixed
    assert main(["inspect", str(folder), "--json", "--series", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["chosen"] == uid_hash(b)
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "x.txt").write_text("x")
    assert main(["inspect", str(empty)]) == 1
    assert "run would fail: no DICOM files found" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
