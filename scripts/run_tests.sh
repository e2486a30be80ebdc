#!/usr/bin/env bash
# The test command of README (`make test`): unit tests of lib, then every chapter under nbval, then
# the website checks (tests/test_website.py: links, build log, local MathJax, downloads, the student
# edition, and every page in headless Chromium; they need the site that `make book` built).
# pytest exits 5 when it collects no test; that is treated as a failure of this script, because
# both suites must always contain tests.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
status=0
$BIN/python -m pytest tests -q -p no:cacheprovider --ignore=tests/test_website.py || status=$?
if [ "$status" -eq 5 ]; then echo "pytest collected no library tests (exit 5)"; fi
book_status=0
$BIN/python -m pytest --nbval-lax --nbval-cell-timeout=600 -p no:cacheprovider -q book || book_status=$?
if [ "$book_status" -eq 5 ]; then echo "nbval collected no chapter (exit 5)"; fi
site_status=0
$BIN/python -m pytest tests/test_website.py -q -p no:cacheprovider -rs || site_status=$?
if [ "$status" -ne 0 ] || [ "$book_status" -ne 0 ] || [ "$site_status" -ne 0 ]; then
  echo "FAILED: library tests exit $status, chapters exit $book_status, website checks exit $site_status"
  exit 1
fi
echo "all tests passed"
