"""Shared test fixtures.

Real CT series live in ``../shared/realdata`` beside the repository (CI clones the repo with
``shared/`` next to it). Tests that need them use the ``realdata`` fixture or the
``realdata_dir(name)`` helper and are skipped with a reason when the data is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Headless rendering everywhere (pyvista/VTK, matplotlib).
os.environ.setdefault("PYVISTA_OFF_SCREEN", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


def realdata_dir(name: str) -> Path:
    """Path of one real series folder, or skip the test with a reason when it is absent."""
    path = REALDATA / name
    if not path.is_dir():
        pytest.skip(f"real CT data not found at {path} (needs ../shared/realdata beside the repo)")
    return path


@pytest.fixture
def realdata():
    """The ``realdata_dir`` helper as a fixture: ``realdata("pelvic-ref003-ct")``."""
    return realdata_dir


@pytest.fixture
def rng():
    return __import__("numpy").random.default_rng(12345)
