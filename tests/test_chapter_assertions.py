"""Chapters are tests: every chapter carries hidden assertion cells (tag ``remove-cell``) that check its
prose claims on the numbers it has just computed. nbval executes them; this test makes sure they exist,
so that a chapter cannot silently lose them."""

import json
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTERS = sorted(BOOK.glob("*.ipynb"))


def assertion_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return [
        "".join(c["source"])
        for c in cells
        if c["cell_type"] == "code"
        and "remove-cell" in c.get("metadata", {}).get("tags", [])
        and re.search(r"^\s*assert\b", "".join(c["source"]), flags=re.M)
    ]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 12


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_assertion_cells(path):
    cells = assertion_cells(path)
    assert cells, f"{path.name} has no hidden assertion cell (a code cell tagged remove-cell with an assert)"
    asserts = sum(len(re.findall(r"^\s*assert\b", c, flags=re.M)) for c in cells)
    assert asserts >= 3, f"{path.name} asserts only {asserts} claims"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapters_are_stored_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    dirty = [i for i, c in enumerate(c for c in cells if c["cell_type"] == "code") if c.get("outputs")]
    assert not dirty, f"{path.name}: code cells {dirty} have stored outputs; strip them"
