#!/usr/bin/env bash
# The test command of README (`make test`), in this order:
#  1. unit tests of lib (pytest tests, without the website checks);
#  2. every chapter under nbval: `make book` already executed each chapter once under nbval
#     (scripts/execute_chapters.sh) and recorded the results in _build/executed/nbval.json; that record
#     is accepted when every chapter passed and nothing a chapter depends on has changed since
#     (notebook, lib/, results/full/, requirements); otherwise the chapters are executed again here;
#  3. the website checks (tests/test_website.py: links, build log, local MathJax, downloads, leftover
#     TeX, launch buttons, figures, the student edition, and every page in headless Chromium at desktop
#     and phone widths; they need the site that `make book` built).
# pytest exits 5 when it collects no test; that is a failure here, because every suite must have tests.
# Set FORCE_NBVAL=1 to execute the chapters even when the record is current.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
t0=$(date +%s)
status=0
$BIN/python -m pytest tests -q -p no:cacheprovider --ignore=tests/test_website.py || status=$?
if [ "$status" -eq 5 ]; then echo "pytest collected no library tests (exit 5)"; fi
t1=$(date +%s)
book_status=0
if [ "${FORCE_NBVAL:-0}" = "0" ] && \
   $BIN/python scripts/nbval_save.py current _build/executed/nbval.json book/*.ipynb; then
  echo "chapters: nbval results of this tree's \`make book\` reused (see _build/executed/nbval.json)"
else
  bash scripts/execute_chapters.sh || book_status=$?
fi
t2=$(date +%s)
site_status=0
$BIN/python -m pytest tests/test_website.py -q -p no:cacheprovider -rs || site_status=$?
t3=$(date +%s)
echo "times: library tests $((t1 - t0)) s, chapters $((t2 - t1)) s, website checks $((t3 - t2)) s"
if [ "$status" -ne 0 ] || [ "$book_status" -ne 0 ] || [ "$site_status" -ne 0 ]; then
  echo "FAILED: library tests exit $status, chapters exit $book_status, website checks exit $site_status"
  exit 1
fi
echo "all tests passed"
