"""Every chapter must also run when stored full-scale results are present.

CI has no GPU, so ``results/full`` is usually empty and the chapters' "plot the stored full-scale
result" branches would never execute. This test fills a *temporary* results folder with stand-ins:
for each registered experiment it runs the ``ci`` configuration and stores those arrays under the
experiment's name with the provenance (and hence the config hash) of its ``full`` configuration.
The arrays have the same names and layout as a real full-scale result, only smaller, so every
chapter then takes its full-scale branch. Nothing is written to the repository.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from instabilities import experiments, results

BOOK = Path(__file__).resolve().parent.parent / "book"


def chapters_using_stored_results() -> list[str]:
    names = []
    for nb in sorted(BOOK.glob("*.ipynb")):
        text = nb.read_text()
        if "experiments.stored(" in text:
            names.append(nb.stem)
    return names


@pytest.fixture(scope="module")
def stand_in_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    old = os.environ.get("INSTABILITIES_RESULTS")
    os.environ["INSTABILITIES_RESULTS"] = str(root)
    stored = []
    try:
        for name in experiments.names():
            if experiments.missing_data(experiments.config(name, "ci")):
                continue  # e.g. CIFAR-10 is not on this machine
            arrays = experiments.run(name, experiments.config(name, "ci"))
            prov = results.provenance(experiments.config(name, "full"), "cpu",
                                      extra={"experiment": name, "scale": "full",
                                             "stand_in": "ci-scale arrays, test fixture only"})
            results.save_result(results.results_dir("full") / f"{name}.npz", arrays, prov)
            stored.append(name)
        yield root, stored
    finally:
        if old is None:
            os.environ.pop("INSTABILITIES_RESULTS", None)
        else:
            os.environ["INSTABILITIES_RESULTS"] = old


def test_stand_ins_are_current(stand_in_results):
    root, stored = stand_in_results
    assert len(stored) >= 10
    for name in stored:
        assert experiments.stored(name).available, name


@pytest.mark.parametrize("chapter", chapters_using_stored_results())
def test_chapter_runs_with_full_results(stand_in_results, chapter):
    nb = nbformat.read(BOOK / f"{chapter}.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(BOOK)}}).execute()
    text = json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])
    assert "Stored full-scale result" in text, f"{chapter} did not report a stored full-scale result"
    assert "STALE" not in text
