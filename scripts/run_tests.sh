#!/usr/bin/env bash
# The test command of README (`make test`): unit tests of lib, then every chapter under nbval.
# pytest exits 5 when it collects no test; that is treated as a failure of this script, because
# both suites must always contain tests.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
status=0
$BIN/python -m pytest tests -q -p no:cacheprovider || status=$?
if [ "$status" -eq 5 ]; then echo "pytest collected no library tests (exit 5)"; fi
book_status=0
$BIN/python -m pytest --nbval-lax --nbval-cell-timeout=600 -p no:cacheprovider -q book || book_status=$?
if [ "$book_status" -eq 5 ]; then echo "nbval collected no chapter (exit 5)"; fi
if [ "$status" -ne 0 ] || [ "$book_status" -ne 0 ]; then
  echo "FAILED: library tests exit $status, chapters exit $book_status"
  exit 1
fi
echo "all tests passed"
