# Two commands from a fresh clone: `make quickstart` (the main job end to end) and `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: setup test test-fast quickstart clean-venv

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build where a CPU one is wanted. Then lwpose
# itself, editable (the venv's lwpose is this checkout), with every extra and the test tools.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# The whole suite; tests needing ../shared skip with their reason unless LWPOSE_REQUIRE_SHARED=1.
test: setup
	$(PY) -m pytest -q tests

# Everything but the tests marked slow.
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

# Synthetic data, a small model trained from scratch on the CPU, validation and a demo video (README, top).
# CHECKPOINT=path.pth validates and demos that model instead of training one.
quickstart: setup
	$(PY) scripts/quickstart.py $(if $(CHECKPOINT),--checkpoint-path $(CHECKPOINT))

clean-venv:
	rm -rf $(VENV)
