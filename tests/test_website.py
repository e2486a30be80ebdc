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

import json
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
# Every figure of a chapter in a numbered, captioned figure with a descriptive alt text (CONTRIBUTING.md
# "Figures and captions"): every chapter follows it, so a figure without one fails the checks.
FIGURES_STRICT = True
PHONE = (390, 844)  # the phone window of the browser checks (CSS pixels)
DESKTOP = (1280, 900)


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium() -> str:
    path = sc.chromium_path()
    if path is None:
        if IN_CI:
            pytest.fail(
                "CI is set but chromium is not installed: run `bash scripts/install_browser.sh` "
                "(or `make browser`) before `make test`"
            )
        pytest.skip(
            "chromium is not installed (install it with `bash scripts/install_browser.sh`); "
            "under CI=true this is a failure"
        )
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
    write(
        site / "index.html",
        """<div id="top"></div>
      <a href="a.html">ok</a> <a href="a.html#sec">ok</a> <a href="a.html#old">ok</a>
      <a href="b%20c.html">ok</a> <a href="sub/">ok</a> <a href="#top">ok</a> <a href="">ok</a>
      <link rel="stylesheet" href="_static/x.css?v=123"> <a href="https://example.org/x.html">ext</a>
      <a href="mailto:a@b.c">mail</a> <img src="data:image/png;base64,AAAA">
      <a href="a.html#nosuch">bad anchor</a> <a href="missing.html">bad file</a>
      <img src="_images/gone.png"> <a href="#nowhere">bad local anchor</a>
      <a href="../outside.html">outside</a>""",
    )
    write(site / "redirect.html", '<meta http-equiv="Refresh" content="0; url=intro.html" />')
    problems = sc.broken_links(site)
    assert len(problems) == 6, problems
    joined = "\n".join(problems)
    for needle in (
        "'nosuch'",
        "missing.html",
        "_images/gone.png",
        "'nowhere'",
        "outside the site",
        "redirect.html: <meta> 'intro.html'",
    ):
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
    log = "\n".join(
        [
            "reading sources... [ 50%] book/intro",
            "[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All communication ...",
            "\x1b[91m/work/book/x.md:12: WARNING: undefined label: 'eq-foo'\x1b[39;49;00m",
            "/work/lib/toys.py:docstring of instabilities.dynamics.toys.f:3: "
            'ERROR: Undefined substitution referenced: "x".',
            "build succeeded.",
        ]
    )
    found = sc.log_warnings(log)
    assert len(found) == 2
    assert "undefined label" in found[0] and "\x1b" not in found[0]
    assert "Undefined substitution" in found[1]
    assert sc.log_warnings("build succeeded.\n") == []


def test_static_checks_detect_cdn_mathjax_rendered_errors_and_missing_download(tmp_path):
    site = tmp_path / "site"
    write(
        site / "good.html",
        '<script defer src="_static/mathjax/tex-chtml.js?v=1"></script><a href="_sources/book/ch.ipynb">download</a>',
    )
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
    text = "\n".join(
        [
            "Intro",
            "```{exercise} E",
            ":label: ex-a",
            "Do it.",
            "```",
            "````{solution} ex-a",
            ":class: dropdown",
            "SECRET-1",
            "```python",
            "x = 1",
            "```",
            "````",
            ":::{solution} ex-a",
            "SECRET-2",
            ":::",
            "```python",
            "kept = True",
            "```",
            "End",
            "",
        ]
    )
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
        assert (Path(folder) / f"{name}.py").is_file()  # absolute: found from the new file's folder


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


def test_leftover_tex_check_on_synthetic_html(tmp_path):
    """The HTML MyST made of the two broken theorems of the review, and a clean page."""
    site = tmp_path / "site"
    math = '<span class="math notranslate nohighlight">{}</span>'
    write(
        site / "bad1.html",
        "<ol><li><p>Final sharpness, then "
        + math.format(r"\(S(\theta_\infty)\)")
        + math.format(r"\( Gradient flow from the same start conserves \)")
        + r" S=\sqrt{d_0^2+4y^2} and "
        + math.format(r"\(\eta\)")
        + r"|r_t|<\sqrt2$, GD ends</p></li></ol>",
    )
    write(
        site / "bad2.html",
        "<p>and $</p>" + '<div class="math notranslate nohighlight">\\[S(\\theta)=2/\\eta\\]</div><p>$</p>',
    )
    write(site / "bad3.html", r"<p>The threshold \(2/\eta\) was not typeset.</p>")
    write(
        site / "good.html",
        "<p>Costs and "
        + math.format(r"\(\text{the sharpness } S(\theta) < 2/\eta\)")
        + '</p><pre>price = $5 \\alpha</pre><code>$x$</code><div class="cell_output"><pre>$</pre></div>'
        + '<div class="math notranslate nohighlight">\\[\\begin{aligned} a &= b \\end{aligned}\\]</div>'
        + "<script>var s = '$';</script>",
    )
    problems = sc.leftover_tex(site)
    by_page = {p.split(":")[0] for p in problems}
    assert by_page == {"bad1.html", "bad2.html", "bad3.html"}, problems
    assert any("prose typeset as math" in p for p in problems)
    assert any("'\\\\sqrt'" in p or "'$'" in p for p in problems if p.startswith("bad1"))


def test_figure_check_on_synthetic_html(tmp_path):
    site = tmp_path / "site"
    good = (
        '<figure class="align-default" id="fig-eos"><div class="cell_output"><img alt="Sharpness against '
        'step for three step sizes" src="../_images/a.png"></div><figcaption><p><span class="caption-number">'
        'Fig. 3.1 </span><span class="caption-text">Sharpness.</span></p></figcaption></figure>'
        '<div class="frame-slider"><img alt="eta = 0.5" src="data:image/png;base64,AAAA"></div>'
    )
    write(site / "book" / "good.html", good)
    write(
        site / "book" / "bare.html",
        '<div class="cell_output"><img alt="../_images/5b40aa0f11e2c3d4e5f6.png" '
        'src="../_images/5b40aa0f11e2c3d4e5f6.png"></div>',
    )
    write(site / "book" / "nocap.html", '<figure id="fig-x"><img alt="Loss curves" src="../_images/b.png"></figure>')
    assert sc.figure_problems(site, ["book/good"]) == []
    bare = sc.figure_problems(site, ["book/bare"])
    assert len(bare) == 2 and "not in a numbered" in bare[0] and "alt text" in bare[1]
    assert "no numbered caption" in sc.figure_problems(site, ["book/nocap"])[0]


def test_placeholder_and_launch_checks_on_synthetic_html(tmp_path):
    site = tmp_path / "site"
    write(
        site / "a.html",
        '<a href="https://mybinder.org/v2/gh/OWNER/instabilities-book/main?urlpath=lab">b</a>'
        '<a href="https://github.com/executablebooks/jupyter-book">repo</a>',
    )
    write(site / "b.html", '<a href="https://colab.research.google.com/github/ada/book/blob/main/book/x.ipynb">c</a>')
    assert len(sc.placeholder_urls(site)) == 2
    assert sc.launch_links(site / "b.html") == [
        "https://colab.research.google.com/github/ada/book/blob/main/book/x.ipynb"
    ]


def test_book_map_is_current():
    """book/_static/book_map.svg matches _toc.yml (run `python scripts/book_map.py` after changing it)."""
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "book_map.py"), "--check"], timeout=60)
    assert out.returncode == 0, "the book map is out of date: run `python scripts/book_map.py`"


def test_live_slider_is_an_image_widget_not_an_output_widget():
    """The nbconvert hang: nbclient emulates a front end for Output widgets; the live slider has none."""
    import ipywidgets
    import matplotlib.pyplot as plt

    from instabilities import widgets

    def draw(v):
        fig, ax = plt.subplots(figsize=(1.5, 1))
        ax.plot([0, 1], [0, v])
        return fig

    box = widgets.live_slider(draw, 0.5, 2.0, 0.5, 1.0, "eta")
    slider, image = box.children
    assert isinstance(image, ipywidgets.Image) and bytes(image.value).startswith(b"\x89PNG")
    before = bytes(image.value)
    slider.value = 2.0
    assert bytes(image.value) != before
    assert not any(isinstance(c, ipywidgets.Output) for c in box.children)


def test_local_path_nbconvert_executes_a_chapter(tmp_path):
    """The documented student path: `jupyter nbconvert --execute` (with the live slider, BOOK_BUILD
    unset) finishes, within a hard timeout, and JupyterLab is installed for `make lab`."""
    bindir = Path(sys.executable).parent
    lab = subprocess.run([str(bindir / "jupyter"), "lab", "--version"], capture_output=True, text=True, timeout=120)
    assert lab.returncode == 0, "JupyterLab missing: `make lab` would fail (" + lab.stderr[-300:] + ")"
    env = {k: v for k, v in os.environ.items() if k not in ("BOOK_BUILD", "MPLBACKEND")}
    env["OMP_NUM_THREADS"] = "1"
    chapter = REPO / "book" / "quadratic_threshold.ipynb"
    try:
        run = subprocess.run(
            [
                str(bindir / "jupyter"),
                "nbconvert",
                "--to",
                "notebook",
                "--execute",
                "--ExecutePreprocessor.timeout=600",
                "--output-dir",
                str(tmp_path),
                str(chapter),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            cwd=REPO / "book",
        )
    except subprocess.TimeoutExpired:
        pytest.fail("jupyter nbconvert --execute did not finish within 300 s (the hang of issue 15)")
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / chapter.name).is_file()


def test_every_bibliography_entry_has_a_link():
    """A DOI, an arXiv id (eprint) or a URL on every entry of references.bib (an ISBN for a book)."""
    from pybtex.database import parse_file

    bib = parse_file(str(REPO / "references.bib"))
    missing = [
        key
        for key, e in bib.entries.items()
        if not any(f in e.fields for f in ("doi", "url", "eprint")) and not (e.type == "book" and "isbn" in e.fields)
    ]
    assert missing == [], f"references.bib entries without doi/url/eprint: {missing}"


# ------------------------------------------------------------------------------------------------
# The student edition, built from a mini-book with the book's configuration
# ------------------------------------------------------------------------------------------------
def build_mini_book(
    root: Path, config: Path, out: Path, builder: str = "html", repo: str = ""
) -> subprocess.CompletedProcess:
    jb = Path(sys.executable).parent / "jupyter-book"
    env = dict(os.environ, BOOK_BUILD="1", BOOK_REPOSITORY_URL=repo)
    env.pop("MPLBACKEND", None)
    return subprocess.run(
        [
            str(jb),
            "build",
            str(root),
            "--config",
            str(config),
            "--path-output",
            str(out),
            "-W",
            "-n",
            "--keep-going",
            "--builder",
            builder,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def mini_book(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("minibook")
    (root / "references.bib").symlink_to(REPO / "references.bib")
    (root / "book").mkdir()
    for name in ("_static", "_ext"):
        (root / "book" / name).symlink_to(REPO / "book" / name)
    write(root / "book" / "intro.md", "# Mini book\n\nThe threshold $2/\\eta$; see {ref}`ex-mini`.\n")
    write(
        root / "book" / "chapter.md",
        "\n".join(
            [
                "# A chapter",
                "",
                "## Exercises",
                "",
                "```{exercise} Threshold",
                ":label: ex-mini",
                "Show that GD on $\\lambda x^2/2$ is stable iff $\\eta\\lambda<2$.",
                "```",
                "",
                "```{solution} ex-mini",
                ":class: dropdown",
                "MINI-SOLUTION-TEXT: the factor is $1-\\eta\\lambda$.",
                "```",
                "",
            ]
        ),
    )
    # The bug of the review (flatness_bias Thm 6.2, rotational_polarity Thm 5.2): display math written
    # inside a list item of a theorem, on lines of their own but not indented.
    write(
        root / "book" / "broken.md",
        "\n".join(
            [
                "# Broken math",
                "",
                "```{prf:theorem} Final sharpness",
                ":label: thm-broken",
                "",
                "1. **Final sharpness.** If every step is stable, then",
                "$$S(\\theta_\\infty)=\\sqrt{d_0^2+4y^2}$$",
                "Gradient flow from the same start conserves $d$ and stays below $\\eta\\|r_t\\|<\\sqrt2$.",
                "2. **Polarity.** The rotation satisfies",
                "$$S(\\theta)=\\frac{2}{\\eta}$$",
                "```",
                "",
                "The same statement written correctly:",
                "",
                "1. **Final sharpness.** If every step is stable, then",
                "",
                "   $$",
                "   S(\\theta_\\infty)=\\sqrt{d_0^2+4y^2}",
                "   $$ (eq-mini)",
                "",
                "   as {eq}`eq-mini` says.",
                "",
            ]
        ),
    )
    write(
        root / "book" / "refs.md",
        "# References\n\nSee {cite:t}`cohen2021eos`.\n\n```{bibliography}\n:filter: docname in docnames\n```\n",
    )
    write(
        root / "book" / "nbpage.ipynb",
        json.dumps(
            {
                "cells": [
                    {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": ["# A notebook page"]},
                    {
                        "cell_type": "code",
                        "id": "c1",
                        "metadata": {},
                        "execution_count": None,
                        "outputs": [],
                        "source": ["print(6 * 7)"],
                    },
                ],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        ),
    )
    write(
        root / "_toc.yml",
        "format: jb-book\nroot: book/intro\nchapters:\n  - file: book/chapter\n"
        "  - file: book/broken\n  - file: book/nbpage\n  - file: book/refs\n",
    )
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    return root


def test_student_build_has_exercises_but_no_solutions(mini_book):
    teacher = build_mini_book(mini_book, mini_book / "_config.yml", mini_book / "out-teacher")
    assert teacher.returncode == 0, teacher.stdout[-3000:] + teacher.stderr[-3000:]
    teacher_site = mini_book / "out-teacher" / "_build" / "html"
    # The control: the normal build shows the solution (so the check below can fail).
    assert sc.exercise_count(teacher_site) >= 1
    assert sc.solution_leaks(teacher_site, ("MINI-SOLUTION-TEXT",))
    # The leftover-TeX check flags the broken theorem (both symptoms) and nothing on the other pages.
    tex = sc.leftover_tex(teacher_site)
    assert tex and all(t.startswith("book/broken.html") for t in tex), tex
    joined = "\n".join(tex)
    assert "prose typeset as math" in joined and ("raw TeX '$'" in joined or "raw TeX '\\\\sqrt'" in joined), joined
    broken = (teacher_site / "book" / "broken.html").read_text()
    assert 'class="eqno"' in broken and 'href="#equation-eq-mini"' in broken  # numbered, referenced
    # No repository configured: no launch button, no repository link, no placeholder anywhere.
    assert sc.launch_links(teacher_site / "book" / "nbpage.html") == []
    assert sc.placeholder_urls(teacher_site) == []
    assert sc.footer_problems(teacher_site) == []
    # Author-year bibliography with links.
    refs = (teacher_site / "book" / "refs.html").read_text()
    assert "Cohen et al., 2021" in refs and "arxiv.org/abs/2103.00065" in refs, refs[-3000:]

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


def test_launch_buttons_only_with_a_repository(mini_book):
    """With REPO, notebook pages get Binder and Colab buttons for that repository; a placeholder is refused."""
    built = build_mini_book(
        mini_book, mini_book / "_config.yml", mini_book / "out-repo", repo="https://github.com/ada/instabilities-book"
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    site = mini_book / "out-repo" / "_build" / "html"
    links = sc.launch_links(site / "book" / "nbpage.html")
    assert any("mybinder.org/v2/gh/ada/instabilities-book/main" in u for u in links), links
    assert any(
        "colab.research.google.com/github/ada/instabilities-book/blob/main/book/nbpage.ipynb" in u for u in links
    ), links
    assert sc.launch_links(site / "book" / "chapter.html") == []  # a markdown page: nothing to launch
    assert sc.placeholder_urls(site) == []
    refused = build_mini_book(
        mini_book, mini_book / "_config.yml", mini_book / "out-bad", repo="https://github.com/OWNER/instabilities-book"
    )
    assert refused.returncode != 0 and "not a repository URL" in refused.stdout + refused.stderr


def test_latex_sources_of_the_pdf_path(mini_book):
    """`make pdf` = the LaTeX builder + latexmk: the LaTeX sources generate (TeX itself is not in CI)."""
    built = build_mini_book(mini_book, mini_book / "_config.yml", mini_book / "out-latex", builder="latex")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    tex = mini_book / "out-latex" / "_build" / "latex" / "instabilities-and-flatness.tex"
    assert tex.is_file()
    text = tex.read_text()
    assert "\\begin{document}" in text and "Final sharpness" in text and "42" in text


# ------------------------------------------------------------------------------------------------
# The browser check on a synthetic site
# ------------------------------------------------------------------------------------------------
def test_browser_check_detects_broken_images_untypeset_math_and_foreign_requests(tmp_path, chromium):
    if not (MATHJAX / "tex-chtml.js").is_file():
        pytest.fail("local MathJax missing: run `make setup` (scripts/fetch_mathjax.sh)")
    import matplotlib.pyplot as plt

    from instabilities import widgets

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
    write(
        site / "good.html",
        f"<html><head>{mathjax}</head><body>"
        r'<p><span class="math notranslate nohighlight">\(\eta\lambda<2\)</span></p>'
        f'<img src="fig.png">{slider}</body></html>',
    )
    write(
        site / "bad.html",
        "<html><body>"
        r'<p><span class="math notranslate nohighlight">\(x^2\)</span></p>'
        '<img src="missing.png"><img src="http://127.0.0.1:9/elsewhere.png">'
        '<div class="frame-slider"><img src="gone.png"></div>'
        "<script>throw new Error('boom')</script></body></html>",
    )
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
    assert "127.0.0.1:9/elsewhere.png" in text  # a request outside the site
    assert "boom" in text  # a JavaScript exception


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


def test_chapters_downloadable_as_notebooks(site):
    notebooks = [doc for doc in toc_files() if (REPO / f"{doc}.ipynb").is_file()]
    assert sc.notebook_download_problems(site, notebooks) == []


def test_launch_buttons_all_or_none_and_no_placeholder(site):
    """Without REPO the site has no launch button; with one, every notebook page has Binder and Colab."""
    assert sc.placeholder_urls(site) == []
    notebooks = [doc for doc in toc_files() if (REPO / f"{doc}.ipynb").is_file()]
    links = {doc: sc.launch_links(site / f"{doc}.html") for doc in notebooks}
    if any(links.values()):
        assert all(any("mybinder.org" in u for u in v) and any("colab" in u for u in v) for v in links.values()), links


def test_no_leftover_tex(site):
    """No `$`, `\\(`, `\\[` or TeX command in the text of any page, and no prose typeset as math."""
    assert sc.leftover_tex(site) == []


def test_figures_numbered_and_captioned(site):
    notebooks = [doc for doc in toc_files() if (REPO / f"{doc}.ipynb").is_file()]
    problems = sc.figure_problems(site, notebooks)
    if FIGURES_STRICT:
        assert problems == []
    elif problems:
        import warnings

        pages = sorted({p.split(":")[0] for p in problems})
        warnings.warn(
            f"{len(problems)} figure problems on {len(pages)} chapters (report only; "
            f"FIGURES_STRICT makes this fail): {problems[:6]}",
            stacklevel=2,
        )


def test_footer_stamp_and_favicon_on_every_page(site):
    assert sc.footer_problems(site) == []


def test_mathjax_trimmed(site):
    folder = site / "_static" / "mathjax"
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 5e6, f"{size / 1e6:.1f} MB of MathJax on the site (only tex-chtml.js and what it loads are needed)"
    assert not (folder / "tex-svg-full.js").exists() and not (folder / "sre").exists()


def test_every_chapter_shows_its_figures(site):
    notebooks = [doc for doc in toc_files() if (REPO / f"{doc}.ipynb").is_file()]
    assert notebooks, "no notebook chapters in the table of contents"
    assert sc.pages_without_figures(site, notebooks) == []


def test_pages_in_browser(site, chromium):
    """Every page, at desktop (1280 px) and phone (390 px) widths: math typeset by the local MathJax,
    every image (and frame-slider frame) loads, no request leaves the site, no JavaScript error, no
    page wider than the window, and (on the phone) no chapter figure shrunk below a readable size.
    Screenshots go to _build/screenshots/{desktop,phone}."""
    pages = sc.html_pages(site, redirects=False)  # redirects (index.html) are checked as links
    shutil.rmtree(sc.SCREENSHOTS, ignore_errors=True)
    problems, reports = [], []
    with sc.serve(site) as origin, sc.Browser(chromium) as browser:
        for label, (width, height), mobile in (("desktop", DESKTOP, False), ("phone", PHONE, True)):
            browser.set_viewport(width, height, mobile)
            for page in pages:
                rel = page.relative_to(site).as_posix()
                shot = sc.SCREENSHOTS / label / (rel[: -len(".html")].replace("/", "__") + ".png")
                report = sc.inspect_page(browser, origin + rel, origin, shot, window_width=width)
                if label == "desktop":
                    reports.append(report)
                problems += [f"[{label} {width}px] {p}" for p in report.problems(origin)]
    assert problems == []
    assert sum(r.mjx for r in reports) > 0, "no typeset math anywhere on the site"
    sliders = [r for r in reports if r.sliders]
    assert all(r.slider_images > 0 and r.broken_slider_images == 0 for r in sliders)


def test_search_ranks_chapters_before_api_entries(site, chromium):
    with sc.serve(site) as origin, sc.Browser(chromium) as browser:
        results = sc.search_results(browser, origin, "sharpness")
    assert results, "the search page returned no result for 'sharpness'"
    first = results[0]
    assert "api.html" not in first, f"first search result is an API entry: {results[:5]}"
