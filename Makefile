# The README's two commands: `make demo` (set up, then the main job on the bundled model) and
# `make test` (set up, then the test suite). Both create .venv from scratch on a fresh machine.
# `make lab` opens the notebooks in JupyterLab; `make wheel-check` tries the pip route (CI runs both checks).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lab wheel-check clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(PY) -m app_helpers info --model auto --task ioi
	HF_HUB_OFFLINE=1 $(PY) -m app_helpers run --model auto --task ioi --out out/demo

# The suite in TEST_JOBS processes (pytest-xdist), each test file on one of them, each on one torch thread
# (tests/conftest.py): on 2 cores about half the time of one process. TEST_JOBS=0 runs it in this process.
TEST_JOBS ?= 2
test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile

lab: setup  # JupyterLab on the notebooks, with the pinned stack of .venv
	HF_HUB_OFFLINE=1 $(VENV)/bin/jupyter lab notebooks/

wheel-check: setup  # the pip route: wheel → fresh venv → bundled models offline, from outside the checkout
	bash .ci/wheel_check.sh

clean:
	rm -rf $(VENV) .pytest_cache
