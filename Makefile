# Two commands on a fresh machine: `make run` (everything locally, no cloud account) and
# `make test` (the whole suite). Both create .venv and install the project on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# Once per virtualenv: the class archive that makes each local Spark session start in
	# ~4 s instead of ~10 (glue/spark.py); Spark works without it.
	$(BIN)/python -m glue.spark --class-archive
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ml-demo up

# Two workers, each test file on one of them (module fixtures such as a sandbox deployment
# are built once). A single file or test: `.venv/bin/pytest tests/...` runs in one process.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .ml-demo .pytest_cache .hypothesis
