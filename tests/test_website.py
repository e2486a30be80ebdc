"""The website: checks of the built book (``_build/html``) and unit tests of the checks themselves.

* Unit tests build tiny synthetic sites in a temporary folder and show that each check detects
  what it should (a broken link, a missing anchor, a warning in the log, an image that does not
  load, math that MathJax did not typeset, a request to another host, a leaked solution).
* The student edition is built from a two-page mini-book with the book's own ``_config.yml``.
* The checks of the real site need ``make book`` first (CI runs ``make book`` then ``make test``);
  they open every page in headless Chromium and save screenshots under ``_build/screenshots``.

The browser tests are skipped when Chromium is missing, except under ``CI`` (then they fail).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import site_checks as sc  # noqa: E402
import student_edition  # noqa: E402

REPO = sc.REPO
MATHJAX = REPO / "book" / "_static" / "mathjax"
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium() -> str:
    path = sc.chromium_path()
    if path is None:
        if IN_CI:
            pytest.fail("CI is set but chromium is not installed: run `bash scripts/install_browser.sh` "
                        "(or `make browser`) before `make test`")
        pytest.skip("chromium is not installed (install it with `bash scripts/install_browser.sh`); "
                    "under CI=true this is a failure")
    return path


@pytest.fixture(scope="module")
def site() -> Path:
    if not (sc.SITE / "index.html").is_file():
        pytest.fail(f"no built website in {sc.SITE}: run `make book` (or `make html`) before the website tests")
    return sc.SITE


def toc_files() -> list[str]:
    """Every page listed in ``_toc.yml`` (root first), as docnames like ``book/intro``."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return [re.sub(r"\.(md|ipynb)$", "", f) for f in files]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def tiny_png(path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    fig.savefig(path, dpi=30)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# Unit tests of the static checks on synthetic sites
# ------------------------------------------------------------------------------------------------
def test_link_checker_finds_missing_files_and_anchors(tmp_path):
    site = tmp_path / "site"
    write(site / "a.html", '<h1 id="sec">A</h1><a name="old"></a>')
    write(site / "b c.html", "<p>space</p>")
    write(site / "sub" / "index.html", '<a href="../index.html#top">up</a>')
    write(site / "_static" / "x.css", "")
    write(site / "index.html", """<div id="top"></div>
      <a href="a.html">ok</a> <a href="a.html#sec">ok</a> <a href="a.html#old">ok</a>
      <a href="b%20c.html">ok</a> <a href="sub/">ok</a> <a href="#top">ok</a> <a href="">ok</a>
      <link rel="stylesheet" href="_static/x.css?v=123"> <a href="https://example.org/x.html">ext</a>
      <a href="mailto:a@b.c">mail</a> <img src="data:image/png;base64,AAAA">
      <a href="a.html#nosuch">bad anchor</a> <a href="missing.html">bad file</a>
      <img src="_images/gone.png"> <a href="#nowhere">bad local anchor</a>
      <a href="../outside.html">outside</a>""")
    write(site / "redirect.html", '<meta http-equiv="Refresh" content="0; url=intro.html" />')
    problems = sc.broken_links(site)
    assert len(problems) == 6, problems
    joined = "\n".join(problems)
    for needle in ("'nosuch'", "missing.html", "_images/gone.png", "'nowhere'", "outside the site",
                   "redirect.html: <meta> 'intro.html'"):
        assert needle in joined
    # Fix the page: no problem left.
    write(site / "index.html", '<p id="top"></p><a href="a.html#sec">ok</a><a href="sub/">ok</a>')
    write(site / "intro.html", "<p>the redirect target</p>")
    assert sc.broken_links(site) == []
    assert [p.name for p in sc.html_pages(site, redirects=False)].count("redirect.html") == 0


def test_figure_check_flags_pages_without_figures(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "a.html").write_text('<p>text</p><img src="../_images/fig.png">')
    (tmp_path / "book" / "b.html").write_text('<p>text only</p><img src="../_static/logo.png">')
    (tmp_path / "book" / "c.html").write_text('<img src="data:image/png;base64,AAAA">')
    assert sc.pages_without_figures(tmp_path, ["book/a", "book/b", "book/c", "book/d"]) == ["book/b", "book/d"]


def test_log_check_reports_sphinx_warnings_and_errors_only():
    log = "\n".join([
        "reading sources... [ 50%] book/intro",
        "[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All communication ...",
        "\x1b[91m/work/book/x.md:12: WARNING: undefined label: 'eq-foo'\x1b[39;49;00m",
        "/work/lib/toys.py:docstring of instabilities.dynamics.toys.f:3: ERROR: Undefined substitution referenced: \"x\".",
        "build succeeded.",
    ])
    found = sc.log_warnings(log)
    assert len(found) == 2
    assert "undefined label" in found[0] and "\x1b" not in found[0]
    assert "Undefined substitution" in found[1]
    assert sc.log_warnings("build succeeded.\n") == []


def test_static_checks_detect_cdn_mathjax_rendered_errors_and_missing_download(tmp_path):
    site = tmp_path / "site"
    write(site / "good.html", '<script defer src="_static/mathjax/tex-chtml.js?v=1"></script>'
                              '<a href="_sources/book/ch.ipynb">download</a>')
    write(site / "_sources" / "book" / "ch.ipynb", "{}")
    write(site / "book" / "ch.html", '<a href="../_sources/book/ch.ipynb">.ipynb</a>')
    write(site / "book" / "plain.html", "<p>no download</p>")
    write(site / "cdn.html", '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>')
    write(site / "err.html", '<div class="system-message"><p>Unknown directive</p></div>')
    assert [p.split(":")[0] for p in sc.mathjax_cdn_references(site)] == ["cdn.html"]
    assert [p.split(":")[0] for p in sc.rendered_errors(site)] == ["err.html"]
    assert sc.notebook_download_problems(site, ["book/ch"]) == []
    problems = sc.notebook_download_problems(site, ["book/plain", "book/absent"])
    assert len(problems) == 2 and "no download link" in problems[0] and "missing" in problems[1]


def test_strip_solutions_removes_only_solution_blocks():
    text = "\n".join([
        "Intro", "```{exercise} E", ":label: ex-a", "Do it.", "```",
        "````{solution} ex-a", ":class: dropdown", "SECRET-1", "```python", "x = 1", "```", "````",
        ":::{solution} ex-a", "SECRET-2", ":::", "```python", "kept = True", "```", "End", ""])
    out = student_edition.strip_solutions(text)
    assert "SECRET" not in out and "x = 1" not in out
    for kept in ("Intro", "{exercise} E", "Do it.", "kept = True", "End"):
        assert kept in out


def test_student_config_sets_hide_solutions(tmp_path):
    dest = tmp_path / "student.yml"
    student_edition.student_config(REPO / "_config.yml", dest)
    cfg = yaml.safe_load(dest.read_text())
    original = yaml.safe_load((REPO / "_config.yml").read_text())
    assert cfg["sphinx"]["config"]["hide_solutions"] is True
    assert "student edition" in cfg["title"]
    assert cfg["sphinx"]["extra_extensions"] == original["sphinx"]["extra_extensions"]
    for name, folder in cfg["sphinx"].get("local_extensions", {}).items():
        assert (Path(folder) / f"{name}.py").is_file()     # absolute: found from the new file's folder


def test_frame_slider_offers_its_initial_frame_as_a_static_fallback():
    """HTML builds show the slider; builds without HTML (LaTeX/PDF) get the initial frame as a PNG."""
    import base64
    import matplotlib.pyplot as plt
    from instabilities import widgets

    def draw(v):
        fig, ax = plt.subplots(figsize=(1.5, 1))
        ax.plot([0, 1], [0, v])
        return fig

    slider = widgets.frame_slider(draw, [0.5, 1.0, 2.0, 4.0], "eta", initial=2)
    bundle = slider._repr_mimebundle_()
    assert bundle["text/html"].count("<img") == 4 and 'class="frame-slider"' in bundle["text/html"]
    frames = re.findall(r'src="data:image/png;base64,([^"]+)"', bundle["text/html"])
    assert bundle["image/png"] == frames[2] != frames[0]
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")


# ------------------------------------------------------------------------------------------------
# The student edition, built from a mini-book with the book's configuration
# ------------------------------------------------------------------------------------------------
def build_mini_book(root: Path, config: Path, out: Path) -> subprocess.CompletedProcess:
    jb = Path(sys.executable).parent / "jupyter-book"
    env = dict(os.environ, BOOK_BUILD="1")
    return subprocess.run([str(jb), "build", str(root), "--config", str(config), "--path-output", str(out),
                           "-W", "-n", "--keep-going", "--builder", "html"],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def mini_book(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("minibook")
    (root / "references.bib").symlink_to(REPO / "references.bib")
    (root / "book").mkdir()
    for name in ("_static", "_ext"):
        (root / "book" / name).symlink_to(REPO / "book" / name)
    write(root / "book" / "intro.md", "# Mini book\n\nThe threshold $2/\\eta$; see {ref}`ex-mini`.\n")
    write(root / "book" / "chapter.md", "\n".join([
        "# A chapter", "", "## Exercises", "",
        "```{exercise} Threshold", ":label: ex-mini", "Show that GD on $\\lambda x^2/2$ is stable iff $\\eta\\lambda<2$.", "```",
        "", "```{solution} ex-mini", ":class: dropdown", "MINI-SOLUTION-TEXT: the factor is $1-\\eta\\lambda$.", "```", ""]))
    write(root / "_toc.yml", "format: jb-book\nroot: book/intro\nchapters:\n  - file: book/chapter\n")
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    return root


def test_student_build_has_exercises_but_no_solutions(mini_book):
    teacher = build_mini_book(mini_book, mini_book / "_config.yml", mini_book / "out-teacher")
    assert teacher.returncode == 0, teacher.stdout[-3000:] + teacher.stderr[-3000:]
    teacher_site = mini_book / "out-teacher" / "_build" / "html"
    # The control: the normal build shows the solution (so the check below can fail).
    assert sc.exercise_count(teacher_site) >= 1
    assert sc.solution_leaks(teacher_site, ("MINI-SOLUTION-TEXT",))

    config = mini_book / "out-student" / "_config.yml"
    student_edition.student_config(mini_book / "_config.yml", config)
    student = build_mini_book(mini_book, config, mini_book / "out-student")
    assert student.returncode == 0, student.stdout[-3000:] + student.stderr[-3000:]
    student_site = mini_book / "out-student" / "_build" / "html"
    assert student_edition.strip_sources(student_site) >= 1
    assert sc.exercise_count(student_site) >= 1
    assert "Show that GD" in (student_site / "book" / "chapter.html").read_text()
    assert sc.solution_leaks(student_site, ("MINI-SOLUTION-TEXT",)) == []
    assert sc.log_warnings(student.stdout + student.stderr) == []
    assert sc.broken_links(student_site) == []


# ------------------------------------------------------------------------------------------------
# The browser check on a synthetic site
# ------------------------------------------------------------------------------------------------
def test_browser_check_detects_broken_images_untypeset_math_and_foreign_requests(tmp_path, chromium):
    if not (MATHJAX / "tex-chtml.js").is_file():
        pytest.fail("local MathJax missing: run `make setup` (scripts/fetch_mathjax.sh)")
    from instabilities import widgets
    import matplotlib.pyplot as plt

    site = tmp_path / "site"
    (site / "_static").mkdir(parents=True)
    (site / "_static" / "mathjax").symlink_to(MATHJAX)
    tiny_png(site / "fig.png")

    def draw(v):
        fig, ax = plt.subplots(figsize=(1.5, 1))
        ax.plot([0, 1], [0, v])
        return fig

    slider = widgets.frame_slider_html(draw, [0.5, 1.0, 2.0], "eta")
    mathjax = '<script defer src="_static/mathjax/tex-chtml.js"></script>'
    write(site / "good.html", f"<html><head>{mathjax}</head><body>"
          r'<p><span class="math notranslate nohighlight">\(\eta\lambda<2\)</span></p>'
          f'<img src="fig.png">{slider}</body></html>')
    write(site / "bad.html", "<html><body>"
          r'<p><span class="math notranslate nohighlight">\(x^2\)</span></p>'
          '<img src="missing.png"><img src="http://127.0.0.1:9/elsewhere.png">'
          '<div class="frame-slider"><img src="gone.png"></div>'
          "<script>throw new Error('boom')</script></body></html>")
    with sc.serve(site) as origin, sc.Browser(chromium) as browser:
        good = sc.inspect_page(browser, origin + "good.html", origin, tmp_path / "good.png")
        bad = sc.inspect_page(browser, origin + "bad.html", origin)
    assert good.problems(origin) == [], good
    assert good.mjx >= 1 and good.sliders == 1 and good.slider_images == 3 and good.images == 4
    assert (tmp_path / "good.png").stat().st_size > 1000
    text = "\n".join(bad.problems(origin))
    assert "MathJax did not typeset" in text
    assert "missing.png" in text and "gone.png" in text
    assert "frame slider without loadable frames" in text
    assert "127.0.0.1:9/elsewhere.png" in text           # a request outside the site
    assert "boom" in text                                 # a JavaScript exception


# ------------------------------------------------------------------------------------------------
# The real website (built by `make book`)
# ------------------------------------------------------------------------------------------------
def test_build_log_has_no_warnings(site):
    if not sc.BUILD_LOG.is_file():
        pytest.fail(f"{sc.BUILD_LOG} missing: build the site with `make html` (it tees the log there)")
    assert sc.log_warnings(sc.BUILD_LOG.read_text(errors="replace")) == []


def test_every_toc_page_is_built(site):
    missing = [doc for doc in toc_files() if not (site / f"{doc}.html").is_file()]
    assert missing == []


def test_no_broken_internal_links(site):
    assert sc.broken_links(site) == []


def test_no_rendered_errors(site):
    assert sc.rendered_errors(site) == []


def test_mathjax_is_local(site):
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert sc.mathjax_cdn_references(site) == []
    uses = [p for p in sc.html_pages(site) if "_static/mathjax/tex-chtml.js" in p.read_text(errors="replace")]
    assert uses, "no page loads the local MathJax"


def test_chapters_downloadable_as_notebooks_with_launch_buttons(site):
    notebooks = [doc for doc in toc_files() if (REPO / f"{doc}.ipynb").is_file()]
    assert sc.notebook_download_problems(site, notebooks) == []
    no_launch = [doc for doc in notebooks
                 if "mybinder.org/v2/" not in (site / f"{doc}.html").read_text(errors="replace")]
    assert no_launch == [], "notebook pages without a Binder launch button"


def test_every_chapter_shows_its_figures(site):
    notebooks = [doc for doc in toc_files() if (REPO / f"{doc}.ipynb").is_file()]
    assert notebooks, "no notebook chapters in the table of contents"
    assert sc.pages_without_figures(site, notebooks) == []


def test_pages_in_browser(site, chromium):
    """Every page: math typeset by the local MathJax, every image (and frame-slider frame) loads,
    no request leaves the site, no JavaScript error. Screenshots go to _build/screenshots."""
    pages = sc.html_pages(site, redirects=False)   # redirects (index.html) are checked as links
    shutil.rmtree(sc.SCREENSHOTS, ignore_errors=True)
    problems, reports = [], []
    with sc.serve(site) as origin, sc.Browser(chromium) as browser:
        for page in pages:
            rel = page.relative_to(site).as_posix()
            shot = sc.SCREENSHOTS / (rel[:-len(".html")].replace("/", "__") + ".png")
            report = sc.inspect_page(browser, origin + rel, origin, shot)
            reports.append(report)
            problems += report.problems(origin)
    assert problems == []
    assert sum(r.mjx for r in reports) > 0, "no typeset math anywhere on the site"
    sliders = [r for r in reports if r.sliders]
    assert all(r.slider_images > 0 and r.broken_slider_images == 0 for r in sliders)
