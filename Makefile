# printpipe: `make demo` and `make test` set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.printpipe-installed
BENCH_STAMP := $(VENV)/.printpipe-bench-installed
export PYVISTA_OFF_SCREEN := true
export MPLBACKEND := Agg

.PHONY: demo test bench install sysdeps sample clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# System packages used by the QA report (off-screen 3-D rendering) and its browser test.
sysdeps:
	@sh scripts/install_sysdeps.sh

demo: install sysdeps
	$(VENV)/bin/printpipe run sample_dicom -o out/demo --printer ender3

test: install sysdeps
	$(PY) -m pytest -q tests

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) sysdeps
	@sh scripts/install_bench_peers.sh
	$(PY) benchmarks/run_all.py

sample: install
	$(PY) scripts/make_sample_dicom.py

clean:
	rm -rf out .pytest_cache build dist *.egg-info
