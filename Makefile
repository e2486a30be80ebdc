# Two commands on a fresh machine (see README):
#   make book   - create .venv, install everything, execute every chapter once (nbval), build the website
#   make test   - library unit tests + the chapters' nbval results (re-run only if stale) + website checks
# More targets: lab (JupyterLab on the chapters), html-student (solutions left out, into _build/student),
# test-website (browser checks of _build/html), browser (install chromium), latex (LaTeX sources of the
# book), pdf (needs TeX Live), colab-cells (first-cell install for Colab), clean.
#
# Launch buttons (Binder, Colab) and a repository link appear only with a repository URL:
#   make book REPO=https://github.com/<owner>/<name>     (or export BOOK_REPOSITORY_URL)
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
SHELL   := /bin/bash
.SHELLFLAGS := -o pipefail -c
REPO    ?= $(BOOK_REPOSITORY_URL)
# jupyter-book's build, with the matplotlib backend of the chapters (a global Agg backend would drop
# their figures), BOOK_BUILD=1 (no live ipywidgets slider) and the repository URL, if any.
JB      := env -u MPLBACKEND BOOK_BUILD=1 BOOK_REPOSITORY_URL="$(REPO)" $(BIN)/jupyter-book

.PHONY: book setup execute html html-student lab test test-website browser latex pdf colab-cells clean

book: setup execute html

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

# Every chapter executed once, under nbval (the test of every chapter), two at a time (a chapter that
# already passed with today's inputs, per _build/executed/nbval.json, is not run again); the executed
# notebooks go to the jupyter-cache that the website build reads (_build/.jupyter_cache) and the
# results to _build/executed/nbval.json. A failing chapter does not stop `make book` here: the
# website build then executes it itself and fails on it, and `make test` reports it.
execute: setup
	-bash scripts/execute_chapters.sh --stale

# The build log is kept for the website checks (tests/test_website.py asserts it has no WARNING).
# execute_notebooks: cache - chapters executed by `make execute` are not executed again.
html: setup
	mkdir -p _build
	$(JB) build . -W -n --keep-going --builder html 2>&1 | tee _build/build.log

# Student edition: sphinx-exercise's hide_solutions, and solutions stripped from the downloads.
# It reuses the executed chapters of the main build (a copy of its jupyter-cache).
html-student: setup
	$(BIN)/python scripts/student_edition.py config _config.yml _build/.student/_config.yml
	mkdir -p _build/.student/_build
	if [ -d _build/.jupyter_cache ]; then rm -rf _build/.student/_build/.jupyter_cache; \
	  cp -r _build/.jupyter_cache _build/.student/_build/.jupyter_cache; fi
	$(JB) build . --config _build/.student/_config.yml --path-output _build/.student \
	  -W -n --keep-going --builder html 2>&1 | tee _build/student-build.log
	$(BIN)/python scripts/student_edition.py strip-sources _build/.student/_build/html
	rm -rf _build/student && cp -r _build/.student/_build/html _build/student
	@echo "student edition: _build/student/index.html"

# JupyterLab on the chapters (after `make book` or `make setup`); the sliders are live there.
lab: setup
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) book/

# Checks of the built website in headless Chromium (run `make book` first).
test-website: setup
	$(BIN)/python -m pytest tests/test_website.py -q -p no:cacheprovider

browser:
	bash scripts/install_browser.sh

# LaTeX sources of the whole book (plain Sphinx LaTeX, figures included); no TeX needed. Chapters
# come from the jupyter-cache when `make book` ran first.
latex: setup
	mkdir -p _build
	$(JB) build . --builder latex 2>&1 | tee _build/latex-build.log
	@echo "LaTeX sources: _build/latex/instabilities-and-flatness.tex"

# PDF of the whole book (not part of CI: TeX Live is ~1 GB). Needs: apt-get install
# texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended texlive-xetex latexmk lmodern tex-gyre
pdf: setup
	mkdir -p _build
	$(JB) build . --builder pdflatex 2>&1 | tee _build/pdf-build.log
	@echo "PDF: _build/latex/instabilities-and-flatness.pdf"

# Colab runs a chapter straight from the repository: give every chapter a first cell that installs
# the package from REPO when (and only when) it runs on Colab. Run once after forking; commit the result.
colab-cells: setup
	@if [ -z "$(REPO)" ]; then echo "usage: make colab-cells REPO=https://github.com/<owner>/<name>"; exit 2; fi
	$(BIN)/python scripts/colab_cells.py add "$(REPO)" book/*.ipynb

test: setup
	bash scripts/run_tests.sh

clean:
	rm -rf _build
