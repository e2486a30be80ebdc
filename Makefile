# Two commands on a fresh machine (see README):
#   make book   - create .venv, install everything, build the website (CPU scale, offline data)
#   make test   - library unit tests + every chapter executed by nbval (+ the website checks)
# More targets: html-student (solutions left out, into _build/student), test-website (browser checks
# of _build/html, screenshots in _build/screenshots), browser (install chromium), pdf (needs TeX Live).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
SHELL   := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: book setup html html-student test test-website browser pdf clean

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

# The build log is kept for the website checks (tests/test_website.py asserts it has no WARNING).
html: setup
	mkdir -p _build
	env -u MPLBACKEND BOOK_BUILD=1 $(BIN)/jupyter-book build . -W -n --keep-going --builder html 2>&1 | tee _build/build.log

# Student edition: sphinx-exercise's hide_solutions, and solutions stripped from the downloads.
html-student: setup
	$(BIN)/python scripts/student_edition.py config _config.yml _build/.student/_config.yml
	env -u MPLBACKEND BOOK_BUILD=1 $(BIN)/jupyter-book build . --config _build/.student/_config.yml --path-output _build/.student \
	  -W -n --keep-going --builder html 2>&1 | tee _build/student-build.log
	$(BIN)/python scripts/student_edition.py strip-sources _build/.student/_build/html
	rm -rf _build/student && cp -r _build/.student/_build/html _build/student
	@echo "student edition: _build/student/index.html"

# Checks of the built website in headless Chromium (run `make book` first).
test-website: setup
	$(BIN)/python -m pytest tests/test_website.py -q -p no:cacheprovider

browser:
	bash scripts/install_browser.sh

# PDF of the whole book via LaTeX (not part of CI). Needs: apt-get install texlive-latex-recommended
# texlive-latex-extra texlive-fonts-recommended texlive-xetex latexmk lmodern tex-gyre
pdf: setup
	mkdir -p _build
	env -u MPLBACKEND BOOK_BUILD=1 $(BIN)/jupyter-book build . --builder pdflatex 2>&1 | tee _build/pdf-build.log
	@echo "PDF: _build/latex/instabilities-and-flatness.pdf"

test: setup
	bash scripts/run_tests.sh

clean:
	rm -rf _build
