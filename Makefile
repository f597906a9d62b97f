# Two commands on a fresh machine: `make run` serves the API, `make test` runs every test.
# Each target installs only what it needs: serving deps for run, + test tools for test, + bench tools for bench.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
QUICK  ?=

.PHONY: run test unit integration cluster bench soak lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.serve: pyproject.toml | $(PY)
	$(PIP) -e .
	touch $@

$(VENV)/.test: $(VENV)/.serve
	$(PIP) -e ".[test]"
	touch $@

$(VENV)/.bench: $(VENV)/.test
	$(PIP) -e ".[test,bench]"
	touch $@

$(VENV)/.lint: $(VENV)/.test
	$(PIP) -e ".[test,lint]"
	touch $@

run: $(VENV)/.serve
	PY=$(PY) scripts/run.sh

test: $(VENV)/.test
	$(PY) -m pytest -q

unit: $(VENV)/.test
	$(PY) -m pytest -q tests/unit

integration: $(VENV)/.test
	$(PY) -m pytest -q tests/integration

cluster: $(VENV)/.test
	$(PY) -m pytest -q -m cluster tests/cluster

bench: $(VENV)/.bench
	scripts/need-wrk.sh
	$(PY) bench/run.py $(if $(QUICK),--quick)

soak: $(VENV)/.test
	$(PY) -m pytest -q -m soak tests/reliability --soak

lint: $(VENV)/.lint
	$(PY) -m ruff check app tests bench
	$(PY) -m mypy --strict app

clean:
	rm -rf $(VENV) .redis .pytest_cache
