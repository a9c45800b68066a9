# `make demo` and `make test` set everything up on a fresh machine; nothing else is needed.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install services demo readme-figure test test-fast lint bench clean

install: $(STAMP)

# Real servers and browsers the tests use: PostgreSQL (many search workers), Chromium (HTML reports).
services:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql chromium >/dev/null; \
	fi

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The ablation of the design notes' question (which expansion?), a small search under a FLOP
# budget, and a report of each.
demo: install services
	$(PYTHON) -m search.run block=bottleneck expansion=2,4,8 hydra.sweep.dir=multirun/demo
	$(PYTHON) -m search.report multirun/demo
	$(PYTHON) -m search.run search=optuna budget.flops=3M search.n_trials=10 search.study_name=demo \
		trainer.max_epochs=10 trainer.progress_refresh=0
	$(PYTHON) -m search.report search.storage=sqlite:///runs/demo/study.db

# The README's figure, from the demo search's report (the demo itself leaves tracked files alone).
readme-figure: demo
	cp runs/demo/report/accuracy_vs_flops.png docs/search_accuracy_vs_flops.png

test: install services
	$(PYTHON) -m ruff check blocks search tests benchmarks
	$(PYTHON) -m pytest -q

test-fast: install
	$(PYTHON) -m pytest -q -m "not slow"

lint: install
	$(PYTHON) -m ruff check blocks search tests benchmarks

bench: install
	$(PYTHON) benchmarks/complexity_speed.py
	$(PYTHON) benchmarks/training_throughput.py --floor
	$(PYTHON) benchmarks/search_overhead.py

clean:
	rm -rf $(VENV) outputs multirun
