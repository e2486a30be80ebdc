# Two commands on a fresh machine (see README):
#   make book   - create .venv, install everything, build the website (CPU scale, offline data)
#   make test   - library unit tests + every chapter executed by nbval (+ the website checks)
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin

.PHONY: book setup html test test-lib test-book clean

book: setup html

setup: $(VENV)/.installed book/_static/mathjax/tex-chtml.js

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q -e . --no-deps
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (instabilities)"
	touch $@

book/_static/mathjax/tex-chtml.js:
	bash scripts/fetch_mathjax.sh

html: setup
	BOOK_BUILD=1 $(BIN)/jupyter-book build . -W -n --keep-going --builder html

test: setup
	bash scripts/run_tests.sh

clean:
	rm -rf _build
