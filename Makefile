# optdfa — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# Pinned to the CPU wheel that installs fast here; users wanting a CUDA build override it, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.optdfa-installed

.PHONY: install demo test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(TORCH_SPEC)
	# lightonml 1.4.3 pins numexpr 2.7.*, which does not build on Python 3.11: install it without
	# its pins, then the packages it really imports (it still uses pkg_resources: setuptools<81).
	$(PIP) install --quiet --no-deps "lightonml==1.4.3"
	$(PIP) install --quiet numexpr attrs requests "setuptools<81"
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

# DFA on the embedded digits data with the feedback projection on a simulated LightOn
# Aurora-class OPU (binary DMD frames, speckle, shot/read noise, 8-bit camera): about a minute.
demo: install
	$(VENV)/bin/optdfa train --config experiments/baselines/digits-mlp.toml --method dfa \
		--backend sim-opu --profile lighton-aurora --epochs 15 --out runs/demo --overwrite

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check optdfa tests experiments hardware
	$(VENV)/bin/ruff format --check optdfa tests experiments hardware

format: install
	$(VENV)/bin/ruff format optdfa tests experiments hardware
	$(VENV)/bin/ruff check --fix optdfa tests experiments hardware

bench: install
	$(VENV)/bin/optdfa bench all

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
