"""Write book/api.md from the package tree: one section per module, grouped like lib/__init__.py.

Usage: python scripts/gen_api.py [--check]   (--check: exit 1 if book/api.md is out of date)

Every module of `instabilities` gets an ``automodule`` block; the package faces (``curvature``,
``dynamics``, ``experiments``) get their docstring only, because their public names are documented in
the submodules that define them (documenting them twice would be a Sphinx duplicate warning).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "book" / "api.md"
SUBPACKAGES = ("curvature", "dynamics", "experiments")
SKIP = {"instabilities.__main__"}

INTRO = """# API reference

This page documents the Python package `instabilities` (the folder `lib/` of the repository), generated
from its docstrings (`python scripts/gen_api.py` writes this page; a test checks that it lists every module).
Chapters import it (`from instabilities import experiments, plotting`) and only print and plot: every figure
and number in the book is computed by these functions. Install it with `make setup`, or with `pip install -e .`
in an environment that has `requirements.txt`.

The package has a flat **core** (configurations, results, data, models, losses, optimizer update rules,
training loops, figures, command line) and three subpackages: **`curvature`** (every Hessian product,
eigensolver and tracker), **`dynamics`** (closed forms and small dynamical systems, one module per topic) and
**`experiments`** (the registry that chapters call, the reproduction machinery, and one module per part of the
book). `python -m instabilities list` lists the registered experiments.
"""

BLOCK = """### `{name}`

```{{eval-rst}}
.. automodule:: {name}
{options}```
"""
MEMBERS = "   :members:\n   :undoc-members:\n   :show-inheritance:\n"


def modules() -> dict[str, list[str]]:
    sys.path.insert(0, str(ROOT))
    pkg = importlib.import_module("instabilities")
    groups: dict[str, list[str]] = {"core": [], **{s: [] for s in SUBPACKAGES}}
    for info in pkgutil.walk_packages(pkg.__path__, "instabilities."):
        name = info.name
        if name in SKIP:
            continue
        parts = name.split(".")
        if len(parts) == 2 and parts[1] in SUBPACKAGES:
            continue  # the faces are listed at the top of their group
        group = parts[1] if len(parts) > 2 else "core"
        groups[group].append(name)
    return {g: sorted(v) for g, v in groups.items()}


def render() -> str:
    groups = modules()
    out = [INTRO]
    out.append("## Core modules\n")
    out += [BLOCK.format(name=m, options=MEMBERS) for m in groups["core"]]
    for sub in SUBPACKAGES:
        out.append(f"## `instabilities.{sub}`\n")
        out.append(BLOCK.format(name=f"instabilities.{sub}", options="   :no-members:\n"))
        out += [BLOCK.format(name=m, options=MEMBERS) for m in groups[sub]]
    return "\n".join(out)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not API.exists() or API.read_text() != text:
            print("book/api.md is out of date: run `python scripts/gen_api.py`.")
            return 1
        return 0
    API.write_text(text)
    print(f"wrote {API.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
