# `make demo` and `make test` set everything up on a fresh machine; nothing else is needed.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: install
	$(PYTHON) -m search.run block=bottleneck expansion=2,4,8

test: install
	$(PYTHON) -m pytest -q

test-fast: install
	$(PYTHON) -m pytest -q -m "not slow"

lint: install
	$(PYTHON) -m ruff check blocks search tests benchmarks

bench: install
	$(PYTHON) benchmarks/complexity_speed.py
	$(PYTHON) benchmarks/training_throughput.py

clean:
	rm -rf $(VENV) outputs multirun
