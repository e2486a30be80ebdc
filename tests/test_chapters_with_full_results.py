"""Every chapter must also run when stored full-scale results are present.

A chapter's "plot the stored full-scale result" branch runs in the normal nbval run (``make book``)
whenever ``results/full`` holds a current result for each of its experiments. Only the chapters with
a missing or stale result still need a separate check, and only they are executed again here: a
*temporary* results folder gets the real stored results plus stand-ins for the missing ones (the
``ci`` configuration's arrays stored under the experiment's name with the provenance, hence the
config hash, of its ``full`` configuration: same names and layout as a real full-scale result, only
smaller), so the chapter takes its full-scale branch. Nothing is written to the repository.
This keeps CI from executing every chapter a third time (issue 16): with every offline result
stored, this test executes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from instabilities import experiments, results

BOOK = Path(__file__).resolve().parent.parent / "book"


def _runnable(name: str) -> bool:
    return not experiments.missing_data(experiments.config(name, "ci"))


def experiments_without_current_result(chapter: str) -> list[str]:
    """Experiments of ``chapter`` (registry) that CI can run but that have no current stored result."""
    return [
        n
        for n in experiments.names()
        if experiments.get(n).chapter == chapter and _runnable(n) and not experiments.stored(n).available
    ]


def chapters_using_stored_results() -> list[str]:
    return [nb.stem for nb in sorted(BOOK.glob("*.ipynb")) if "experiments.stored(" in nb.read_text()]


def chapters_needing_stand_ins() -> list[str]:
    """Chapters whose full-scale branch the nbval run did not exercise (a result missing or stale)."""
    return [c for c in chapters_using_stored_results() if experiments_without_current_result(c)]


def test_every_chapter_with_stored_results_is_covered():
    """The chapters not executed here have every result stored: their full branch ran in nbval."""
    for chapter in set(chapters_using_stored_results()) - set(chapters_needing_stand_ins()):
        assert experiments_without_current_result(chapter) == []


stored_failures: dict[str, str] = {}


@pytest.fixture(scope="module")
def stand_in_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    needed = sorted({n for c in chapters_needing_stand_ins() for n in experiments_without_current_result(c)})
    real = results.results_dir("full")
    current = [n for n in experiments.names() if _runnable(n) and experiments.stored(n).available]
    old = os.environ.get("INSTABILITIES_RESULTS")
    os.environ["INSTABILITIES_RESULTS"] = str(root)
    stored = []
    try:
        dest = results.results_dir("full")
        dest.mkdir(parents=True, exist_ok=True)
        for name in current:  # the real results, as they are
            for f in real.glob(f"{name}.*"):
                shutil.copy2(f, dest / f.name)
            stored.append(name)
        failures = {}
        for name in needed:  # stand-ins for the missing ones (a failure fails only its chapters)
            try:
                arrays = experiments.run(name, experiments.config(name, "ci"))
            except Exception as exc:  # noqa: BLE001 - reported by the chapters that need it
                failures[name] = f"{type(exc).__name__}: {exc}"
                continue
            prov = results.provenance(
                experiments.config(name, "full"),
                "cpu",
                extra={"experiment": name, "scale": "full", "stand_in": "ci-scale arrays, test fixture only"},
                code=experiments.get(name).code_identity(),
            )
            results.save_result(results.results_dir("full") / f"{name}.npz", arrays, prov)
            stored.append(name)
        stored_failures.update(failures)
        yield root, stored
    finally:
        if old is None:
            os.environ.pop("INSTABILITIES_RESULTS", None)
        else:
            os.environ["INSTABILITIES_RESULTS"] = old


def test_stand_ins_are_current(stand_in_results):
    root, stored = stand_in_results
    for name in stored:
        assert experiments.stored(name).available, name


@pytest.mark.parametrize("chapter", chapters_needing_stand_ins())
def test_chapter_runs_with_full_results(stand_in_results, chapter):
    broken = {n: stored_failures[n] for n in experiments_without_current_result(chapter) if n in stored_failures}
    assert not broken, f"{chapter}: the ci run of its experiments failed, no stand-in: {broken}"
    nb = nbformat.read(BOOK / f"{chapter}.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(BOOK)}}).execute()
    text = json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])
    assert "Stored full-scale result" in text, f"{chapter} did not report a stored full-scale result"
    assert "STALE" not in text
