# printpipe: `make demo` and `make test` set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.printpipe-installed
BENCH_STAMP := $(VENV)/.printpipe-bench-installed
export PYVISTA_OFF_SCREEN := true
export MPLBACKEND := Agg

.PHONY: demo test bench install sysdeps sample clean i18n serve

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

# The local web page for the printer room: http://127.0.0.1:8765/ (HOST, PORT, DATA override).
HOST ?= 127.0.0.1
PORT ?= 8765
DATA ?= out/serve
serve: install sysdeps
	$(VENV)/bin/printpipe serve --host $(HOST) --port $(PORT) --data $(DATA)

test: install sysdeps
	$(PY) -m pytest -q tests

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) sysdeps
	@sh scripts/install_bench_peers.sh
	$(PY) benchmarks/run_all.py

# Translations (Simplified Chinese, English): extract the marked messages and the error templates,
# update the catalogs, fill English, compile the .mo files (committed: a wheel needs no build step),
# then list what still lacks a Chinese translation.
LOCALE  := printpipe/locale
PYBABEL := $(VENV)/bin/pybabel
i18n: install
	$(PY) scripts/extract_error_templates.py
	$(PYBABEL) -q extract -F babel.cfg -k NP_:1c,2 -k _t --add-location=file --sort-by-file --width=100 \
	    --project=printpipe --copyright-holder="printpipe developers" -o $(LOCALE)/printpipe.pot .
	for l in zh en; do \
	    if [ -f $(LOCALE)/$$l/LC_MESSAGES/printpipe.po ]; then \
	        $(PY) scripts/i18n_catalogs.py carry $$l || exit 1; \
	        $(PYBABEL) -q update --no-fuzzy-matching --ignore-obsolete --width=100 -D printpipe -l $$l \
	            -i $(LOCALE)/printpipe.pot -d $(LOCALE) || exit 1; \
	    else \
	        $(PYBABEL) -q init --width=100 -D printpipe -l $$l -i $(LOCALE)/printpipe.pot -d $(LOCALE) || exit 1; \
	    fi; \
	done
	$(PY) scripts/i18n_catalogs.py fill-en
	$(PY) scripts/i18n_catalogs.py compile
	-$(PY) scripts/i18n_catalogs.py missing zh > /dev/null

sample: install
	$(PY) scripts/make_sample_dicom.py

clean:
	rm -rf out .pytest_cache build dist *.egg-info
