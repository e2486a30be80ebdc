"""Colab support: a first cell in every chapter that installs the book's package on Colab only.

Colab opens a chapter straight from the repository, without the environment of ``make book``. After
forking, run once (and commit the result):

    make colab-cells REPO=https://github.com/<owner>/<name>

Each chapter then starts with a code cell, tagged ``remove-cell`` (not shown on the website) and
``colab-install``, that does nothing outside Colab and on Colab runs
``pip install "git+<REPO>"`` (plus mnist1d). Running the command again with another URL updates
the cell; ``python scripts/colab_cells.py remove book/*.ipynb`` takes it out again. The website
checks refuse a placeholder URL anywhere on the site.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path

TAG = "colab-install"
_REPO_URL = re.compile(r"^https://(github\.com|gitlab\.com|bitbucket\.org)/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/?$")


def cell_source(repo: str) -> str:
    repo = repo.rstrip("/")
    return (
        "# On Colab only: install the book's package (lib/) and its data set from the repository.\n"
        "import sys\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install -q mnist1d "git+{repo}"\n'
    )


def add(repo: str, path: Path) -> bool:
    if not _REPO_URL.match(repo) or "OWNER" in repo.upper().split("/")[3:4]:
        raise SystemExit(f"not a repository URL: {repo!r} (give https://github.com/<owner>/<name>)")
    nb = json.loads(path.read_text())
    source = cell_source(repo)
    for cell in nb["cells"]:
        if TAG in cell.get("metadata", {}).get("tags", []):
            if "".join(cell["source"]) == source:
                return False
            cell["source"] = source.splitlines(keepends=True)
            break
    else:
        nb["cells"].insert(
            0,
            {
                "cell_type": "code",
                "execution_count": None,
                "id": uuid.uuid4().hex[:8],
                "metadata": {"tags": ["remove-cell", TAG]},
                "outputs": [],
                "source": source.splitlines(keepends=True),
            },
        )
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def remove(path: Path) -> bool:
    nb = json.loads(path.read_text())
    cells = [c for c in nb["cells"] if TAG not in c.get("metadata", {}).get("tags", [])]
    if len(cells) == len(nb["cells"]):
        return False
    nb["cells"] = cells
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "add":
        changed = [p for p in argv[2:] if add(argv[1], Path(p))]
    elif len(argv) >= 2 and argv[0] == "remove":
        changed = [p for p in argv[1:] if remove(Path(p))]
    else:
        print(__doc__)
        return 2
    print(f"{len(changed)} notebooks changed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
