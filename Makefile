# `make demo` and `make test` create/refresh .venv, install HIKARI into it and run the main job / the tests.
# The venv is reused while pyproject.toml and this Makefile are unchanged (stamp file).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hikari-installed
# torch/torchvision pinned to the builds this project is tested with; override on a GPU machine if needed,
# e.g. `make test TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install demo test serve clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hikari demo --out runs/demo

# The page and HTTP API on what `make demo` trained, at http://127.0.0.1:8000/ (Ctrl+C stops).
serve: $(STAMP)
	$(VENV)/bin/hikari serve --demo --demo-dir runs/demo

# One torch thread per test worker: two workers on two cores, each with two threads, run ~5x slower.
test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(VENV)/bin/python -m pytest -n 2 $(PYTEST_ARGS)

clean:
	rm -rf runs build src/*.egg-info .pytest_cache
