"""Sphinx extension: the website's build-time settings that a static ``_config.yml`` cannot express.

* **Launch buttons only with a real repository.** ``_config.yml`` names no repository, so the site
  has no Binder/Colab buttons and no repository link. ``make book REPO=https://github.com/you/fork``
  (or the environment variable ``BOOK_REPOSITORY_URL``) turns them on: the theme then links Binder
  (which builds ``binder/``) and Colab to that repository.
* **A footer with the version, the commit and the build date** on every page.
* **The theme's thebe configuration script once per page.** jupyter-book 1.x registers sphinx-thebe's
  inline configuration twice, and the second copy throws ``SyntaxError: Identifier 'THEBE_JS_URL'
  has already been declared`` in every page's console. Identical inline scripts are dropped.
* **An author-year bibliography.** The pybtex style ``authoryear`` labels entries "Cohen et al.,
  2021" (the text cites author-year too) and sorts them by author and year.
"""
from __future__ import annotations

import datetime as _dt
import html
import os
import re
import subprocess
from pathlib import Path

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as _PlainStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle as _AuthorYearSort

REPO_ENV = "BOOK_REPOSITORY_URL"
# A repository URL must be a real https URL of a repository, never a placeholder.
_REPO_URL = re.compile(r"^https://(github\.com|gitlab\.com|bitbucket\.org)/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/?$")
PLACEHOLDERS = ("OWNER", "YOUR", "USER/", "example.com", "executablebooks/jupyter-book")


def repository_url() -> str:
    """The repository URL configured for this build ('' when none)."""
    url = os.environ.get(REPO_ENV, "").strip()
    if not url:
        return ""
    if not _REPO_URL.match(url) or any(p.lower() in url.lower() for p in PLACEHOLDERS):
        raise ValueError(f"{REPO_ENV}={url!r} is not a repository URL: give "
                         "REPO=https://github.com/<owner>/<name> (your fork), or leave it unset for no launch buttons")
    return url.rstrip("/")


def _config_inited(app, config) -> None:
    opts = dict(config.html_theme_options or {})
    url = repository_url()
    launch = dict(opts.get("launch_buttons") or {})
    if url:
        opts["repository_url"] = url
        opts["use_repository_button"] = True
        opts["use_issues_button"] = True
        launch.setdefault("notebook_interface", "jupyterlab")
        launch["binderhub_url"] = launch.get("binderhub_url") or "https://mybinder.org"
        launch["colab_url"] = launch.get("colab_url") or "https://colab.research.google.com"
    else:
        # No repository: no launch buttons and no link to jupyter-book's default repository.
        opts["repository_url"] = ""
        for key in ("use_repository_button", "use_issues_button", "use_edit_page_button"):
            opts[key] = False
        for key in ("binderhub_url", "jupyterhub_url", "colab_url", "deepnote_url", "jupyterlite_url"):
            launch.pop(key, None)
        launch["thebe"] = False
    opts["launch_buttons"] = launch
    config.html_theme_options = opts


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(root: Path | None = None) -> str:
    """The package version from pyproject.toml (the installed metadata can be older)."""
    if root is not None and (root / "pyproject.toml").is_file():
        m = re.search(r'^version\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(), re.MULTILINE)
        if m:
            return m.group(1)
    try:
        from importlib.metadata import version
        return version("instabilities")
    except Exception:  # the package is not installed (a mini-book in a test)
        return ""


def footer_html(root: Path) -> str:
    """'Version 0.3.0 · commit abc1234 · built 2026-11-30 (UTC)' as an HTML paragraph."""
    parts = []
    version = _version(root)
    if version:
        parts.append(f"Version {html.escape(version)}")
    commit = _git_commit(root)
    if commit:
        url = repository_url()
        parts.append(f'commit <a href="{url}/commit/{commit}">{commit}</a>' if url else f"commit {commit}")
    parts.append(f"built {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    return f'<p class="book-build-stamp">{" · ".join(parts)}</p>'


def _page_context(app, pagename, templatename, context, doctree) -> None:
    context["theme_extra_footer"] = (context.get("theme_extra_footer") or "") + getattr(app.env, "book_footer", "")
    scripts, seen = [], set()
    for script in context.get("script_files", []):
        attrs = getattr(script, "attributes", {}) or {}
        body = attrs.get("body")
        # an inline script (no file; its filename is None or '') is identified by its body
        key = body if body and not getattr(script, "filename", None) else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen.add(key)
        scripts.append(script)
    if "script_files" in context:
        context["script_files"] = scripts


def _builder_inited(app) -> None:
    app.env.book_footer = footer_html(Path(app.confdir))


# ------------------------------------------------------------------------------------------------
# Author-year bibliography (pybtex plugins)
# ------------------------------------------------------------------------------------------------
def _plain_name(person) -> str:
    """'Jastrzębski' from the BibTeX 'Jastrz{\\k{e}}bski' (TeX accents decoded, braces gone)."""
    from pybtex.richtext import Text
    last = " ".join(person.prelast_names + person.last_names)
    try:
        return Text.from_latex(last).render_as("text")
    except Exception:
        return re.sub(r"[{}\\]", "", last)


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels 'Cohen et al., 2021', 'Wang and Roberts, 2025', 'Greydanus, 2020' (a, b on clashes)."""

    def format_labels(self, sorted_entries):
        labels = [self.label(entry) for entry in sorted_entries]
        counts: dict[str, int] = {}
        for lab in labels:
            counts[lab] = counts.get(lab, 0) + 1
        used: dict[str, int] = {}
        for lab in labels:
            if counts[lab] > 1:
                used[lab] = used.get(lab, 0) + 1
                yield f"{lab}{chr(ord('a') + used[lab] - 1)}"
            else:
                yield lab

    @staticmethod
    def label(entry) -> str:
        persons = entry.persons.get("author") or entry.persons.get("editor") or []
        names = [_plain_name(p) for p in persons]
        if not names:
            who = entry.fields.get("title", entry.key)[:20]
        elif len(names) == 1:
            who = names[0]
        elif len(names) == 2:
            who = f"{names[0]} and {names[1]}"
        else:
            who = f"{names[0]} et al."
        return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearStyle(_PlainStyle):
    default_label_style = AuthorYearLabelStyle
    default_sorting_style = _AuthorYearSort


def _register_pybtex() -> None:
    try:
        register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabelStyle)
        register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    except Exception:  # already registered (a second Sphinx app in the same process)
        pass


_register_pybtex()


def setup(app):
    app.connect("config-inited", _config_inited)
    app.connect("builder-inited", _builder_inited)
    app.connect("html-page-context", _page_context, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
