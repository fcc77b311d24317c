# Two commands for a fresh machine: `make app` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8866
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: app test install install-test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch 2.13.0 first where no torch is importable: its CPU build lies on this kind of machine's
# disk, while an unpinned torch would download a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(STAMP)

install-test: $(TEST_STAMP)
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; browser tests will fail"; }

# Localhost only; voila-config/voila.py culls idle kernels, lets closed tabs shut theirs down and caps
# sessions (README, "Serving the dashboard safely"). Override any of it: make app VOILA_ARGS="--Voila.x=y".
VOILA_ARGS ?=
app: install
	$(VENV)/bin/voila app.ipynb --port=$(PORT) --no-browser --Voila.ip=127.0.0.1 --Voila.config_file_paths=voila-config $(VOILA_ARGS)

test: install-test
	$(PY) -m pytest -q

lint: install-test
	$(VENV)/bin/ruff check fusion_explorer tests benchmarks

bench: install
	$(PY) benchmarks/bench_bicubic.py

clean:
	rm -rf $(VENV) build *.egg-info test-artifacts
