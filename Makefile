# Two commands on a fresh machine: `make run` serves the API, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test unit integration bench soak lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	PY=$(PY) scripts/run.sh

test: $(STAMP)
	$(PY) -m pytest -q

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) bench/run.py

soak: $(STAMP)
	$(PY) -m pytest -q -m soak tests/reliability --soak

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff==0.17.5 mypy==2.4.1
	$(PY) -m ruff check app tests bench
	$(PY) -m mypy --strict app

clean:
	rm -rf $(VENV) .redis .pytest_cache
