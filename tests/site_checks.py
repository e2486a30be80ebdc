"""Checks of the built website: links, build log, MathJax, downloads, solutions, and a headless browser.

Everything here works on a folder of HTML files, so the checks are unit-tested on tiny synthetic
sites (``tests/test_website.py``) and then applied to the real build in ``_build/html``.

The browser is Debian's ``chromium``, driven through the Chrome DevTools Protocol over
``--remote-debugging-pipe`` (file descriptors 3 and 4, messages separated by NUL bytes). That needs
no Python package, no driver download and no network: pages are served from ``127.0.0.1`` by a
thread of this process.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import html.parser
import http.server
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The built site and its build log (`make html` writes both); overridable to check another build.
SITE = Path(os.environ.get("WEBSITE_DIR", REPO / "_build" / "html"))
BUILD_LOG = Path(os.environ.get("WEBSITE_LOG", REPO / "_build" / "build.log"))
SCREENSHOTS = REPO / "_build" / "screenshots"

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--window-size=1280,900",
]

# Lines of the build log that contain "WARNING" but are not Sphinx warnings: ipykernel announces
# every kernel it starts for notebook execution with this notice (logging level WARNING).
BENIGN_LOG_LINES = [re.compile(r"\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption")]
LOG_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL|SEVERE)\b")
# JavaScript errors that do not affect the page (none today: the THEBE_JS_URL redeclaration of
# jupyter-book 1.x is fixed by book/_ext/book_site.py, and the browser test now fails on it).
BENIGN_JS_EXCEPTIONS: list[re.Pattern] = []

MATHJAX_CDN = re.compile(
    r"(cdn\.jsdelivr\.net/npm/mathjax|unpkg\.com/mathjax|cdnjs\.cloudflare\.com/ajax/libs/mathjax"
    r"|<script[^>]+src=\"(?:https?:)?//[^\"]*mathjax)",
    re.IGNORECASE,
)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


# --------------------------------------------------------------------------------------------
# Static checks on the HTML files
# --------------------------------------------------------------------------------------------
def html_pages(site: Path, redirects: bool = True) -> list[Path]:
    """Every HTML page of the site, without the theme's and MathJax's static files (and without
    pure redirect pages such as the root ``index.html`` when ``redirects`` is False)."""
    site = Path(site)
    pages = sorted(
        p for p in site.rglob("*.html") if p.relative_to(site).parts[0] not in ("_static", "_sources", "_images")
    )
    return pages if redirects else [p for p in pages if parse_page(p).redirect is None]


class _PageParser(html.parser.HTMLParser):
    """Collects element ids (``id=`` and ``<a name=>``) and the relative links of one page."""

    LINK_ATTRS = {
        "a": "href",
        "link": "href",
        "area": "href",
        "img": "src",
        "script": "src",
        "iframe": "src",
        "source": "src",
        "video": "src",
        "audio": "src",
        "embed": "src",
    }

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []  # (tag, url)
        self.redirect: str | None = None  # target of a <meta http-equiv="refresh">

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        attr = self.LINK_ATTRS.get(tag)
        if attr and attrs.get(attr) is not None:
            self.links.append((tag, attrs[attr].strip()))
        if tag == "meta" and (attrs.get("http-equiv") or "").lower() == "refresh":
            m = re.search(r"url\s*=\s*['\"]?([^'\";]+)", attrs.get("content") or "", re.IGNORECASE)
            if m:
                self.redirect = m.group(1).strip()
                self.links.append(("meta", self.redirect))

    handle_startendtag = handle_starttag


@functools.lru_cache(maxsize=4096)
def _parse(path: Path, stamp: tuple[int, int]) -> _PageParser:
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def parse_page(path: Path) -> _PageParser:
    """Ids and links of one HTML file (cached while the file is unchanged)."""
    stat = Path(path).stat()
    return _parse(Path(path), (stat.st_mtime_ns, stat.st_size))


def broken_links(site: Path) -> list[str]:
    """Relative links whose target file is missing, or whose ``#anchor`` is not an id of the target.

    External links (any URL with a scheme, ``//host`` links) are not checked: the site is checked
    offline. A link to a folder resolves to its ``index.html``.
    """
    site = Path(site).resolve()
    problems = []
    for page in html_pages(site):
        for tag, url in parse_page(page).links:
            if not url or SCHEME.match(url) or url.startswith("//"):
                continue
            parts = urllib.parse.urlsplit(url)
            path, fragment = urllib.parse.unquote(parts.path), urllib.parse.unquote(parts.fragment)
            target = (
                page
                if not path
                else (page.parent / path).resolve()
                if not path.startswith("/")
                else (site / path.lstrip("/")).resolve()
            )
            where = f"{page.relative_to(site)}: <{tag}> {url!r}"
            if site not in target.parents and target != site:
                problems.append(f"{where} points outside the site")
                continue
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{where}: missing file {target.relative_to(site)}")
                continue
            if fragment and target.suffix == ".html" and fragment not in parse_page(target).ids:
                problems.append(f"{where}: no element with id {fragment!r} in {target.relative_to(site)}")
    return problems


def pages_without_figures(site: Path, docnames: list[str]) -> list[str]:
    """Pages among ``docnames`` that show no figure: no ``<img>`` from ``_images/`` or a data URI.

    Executed chapters that plot must carry their figures into the site; a global non-interactive
    matplotlib backend (``MPLBACKEND=Agg``) in the build silently drops them.
    """
    missing = []
    for doc in docnames:
        page = Path(site) / f"{doc}.html"
        srcs = [url for tag, url in parse_page(page).links if tag == "img"] if page.is_file() else []
        if not any("_images/" in u or u.startswith("data:image/") for u in srcs):
            missing.append(doc)
    return missing


def log_warnings(log_text: str) -> list[str]:
    """Lines of a build log with ``WARNING`` or ``ERROR`` (Sphinx and docutils messages; docutils
    errors in autodoc docstrings do not always fail a ``-W`` build), minus known benign notices."""
    clean = re.sub(r"\x1b\[[0-9;]*m", "", log_text)
    return [
        line
        for line in clean.splitlines()
        if LOG_PROBLEM.search(line) and not any(p.search(line) for p in BENIGN_LOG_LINES)
    ]


def rendered_errors(site: Path) -> list[str]:
    """Pages where docutils rendered an error inline (system messages, problematic markup)."""
    bad = re.compile(r'class="[^"]*\b(system-message|problematic)\b')
    return [
        f"{p.relative_to(site)}: {m.group(1)}"
        for p in html_pages(site)
        for m in [bad.search(p.read_text(encoding="utf-8", errors="replace"))]
        if m
    ]


def mathjax_cdn_references(site: Path) -> list[str]:
    """Pages that reference MathJax on a CDN (the site must typeset with its local copy)."""
    out = []
    for p in html_pages(site):
        for m in MATHJAX_CDN.finditer(p.read_text(encoding="utf-8", errors="replace")):
            out.append(f"{p.relative_to(site)}: {m.group(0)[:120]}")
    return out


def notebook_download_problems(site: Path, docnames: list[str]) -> list[str]:
    """For each notebook page ``docname`` (e.g. ``book/quadratic_threshold``), check that its HTML
    page offers the ``.ipynb`` download (jupyter-book copies it to ``_sources/``) and that it exists."""
    site = Path(site)
    problems = []
    for doc in docnames:
        page = site / f"{doc}.html"
        if not page.is_file():
            problems.append(f"{doc}: page {page.name} missing")
            continue
        links = [u for _, u in parse_page(page).links if u.split("?")[0].endswith(f"_sources/{doc}.ipynb")]
        if not links:
            problems.append(f"{doc}: no download link to _sources/{doc}.ipynb")
        elif not (page.parent / urllib.parse.unquote(links[0])).resolve().is_file():
            problems.append(f"{doc}: download target {links[0]} missing")
    return problems


def solution_leaks(site: Path, secret_texts: tuple[str, ...] = ()) -> list[str]:
    """Where a student build still shows solutions: solution admonitions in pages, or any of
    ``secret_texts`` in pages, in the downloadable sources or in the search index."""
    site = Path(site)
    out = []
    for p in html_pages(site):
        text = p.read_text(encoding="utf-8", errors="replace")
        if re.search(r'class="[^"]*\bsolution\b', text):
            out.append(f"{p.relative_to(site)}: solution admonition")
    for p in [*site.glob("_sources/**/*"), *site.glob("searchindex.js"), *html_pages(site)]:
        if p.is_file():
            text = p.read_text(encoding="utf-8", errors="replace")
            out += [f"{p.relative_to(site)}: contains {s!r}" for s in secret_texts if s in text]
    return out


def exercise_count(site: Path) -> int:
    """Number of exercise admonitions in the site's pages."""
    return sum(
        len(re.findall(r'class="[^"]*\bexercise\b', p.read_text(encoding="utf-8", errors="replace")))
        for p in html_pages(site)
    )


# --------------------------------------------------------------------------------------------
# Headless Chromium over the DevTools protocol (pipe transport)
# --------------------------------------------------------------------------------------------
def chromium_path() -> str | None:
    """The Chromium executable, or None when the browser is not installed."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    """A headless Chromium with one tab, controlled with DevTools commands over a pipe."""

    def __init__(self, executable: str | None = None, timeout: float = 30.0) -> None:
        executable = executable or chromium_path()
        if executable is None:
            raise BrowserError("chromium is not installed: run `bash scripts/install_browser.sh`")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_browser_r, self._to_browser_w = os.pipe()
        self._from_browser_r, from_browser_w = os.pipe()
        # Chromium expects the pipe on fds 3 (commands) and 4 (replies); move them there in a shell
        # (through high numbers, so that the moves cannot clobber each other).
        redirect = f'exec 100<&{to_browser_r} 101>&{from_browser_w}; exec "$@" 3<&100 4>&101 100<&- 101>&-'
        self.stderr = open(Path(self.profile) / "stderr.log", "wb")
        self.proc = subprocess.Popen(
            [
                "bash",
                "-c",
                redirect,
                "chromium",
                executable,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self.profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.command("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.command("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.command(f"{domain}.enable", session=True)
        self.command(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )

    # -- protocol ------------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise BrowserError("timed out waiting for chromium")
            ready, _, _ = select.select([self._from_browser_r], [], [], 0.5)
            if ready:
                chunk = os.read(self._from_browser_r, 1 << 20)
                if not chunk:
                    raise BrowserError(
                        f"chromium closed the DevTools pipe (crashed?); see {Path(self.profile) / 'stderr.log'}"
                    )
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def command(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        """Send one DevTools command and return its result (events meanwhile go to ``events``)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, start: int = 0) -> dict:
        """Wait for event ``method`` (looking at events from index ``start`` on)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events[start:]:
                if event.get("method") == method:
                    return event
            start = len(self.events)
            self.events.append(self._read_message(deadline))

    # -- page helpers --------------------------------------------------------------------------
    def goto(self, url: str) -> int:
        """Load ``url`` and wait for its load event; returns the index of its first event."""
        start = len(self.events)
        result = self.command("Page.navigate", {"url": url}, session=True)
        if result.get("errorText"):
            raise BrowserError(f"cannot load {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired", start)
        return start

    def evaluate(self, expression: str, await_promise: bool = True):
        """Value of a JavaScript expression in the page (promises are awaited)."""
        result = self.command(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
            session=True,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def set_viewport(self, width: int, height: int, mobile: bool = False) -> None:
        """Emulate a window of ``width`` x ``height`` CSS pixels (``mobile``: a phone, e.g. 390 x 844)."""
        self.command(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
            session=True,
        )

    def screenshot(self, path: Path, full_page: bool = False) -> None:
        """Save a PNG of the viewport (or of the whole page)."""
        params = {"format": "png"}
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": size[0], "height": min(size[1], 12000), "scale": 1},
            )
        data = self.command("Page.captureScreenshot", params, session=True)["data"]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.command("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser_w, self._from_browser_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(site: Path) -> Iterator[str]:
    """Serve ``site`` on ``http://127.0.0.1:<free port>/`` from a background thread."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# What a page looks like once loaded and typeset (evaluated in the page).
_INSPECT_JS = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  const bad = imgs.filter(i => !(i.naturalWidth > 0)).map(i => (i.getAttribute('src') || '').slice(0, 120));
  const slider = Array.from(document.querySelectorAll('.frame-slider img'));
  const mj = Array.from(document.querySelectorAll('script[src*="mathjax" i]')).map(s => s.src);
  return {
    math: document.querySelectorAll('.math, .MathJax_Preview, span.math, div.math').length,
    mjx: document.querySelectorAll('mjx-container').length,
    mjx_errors: document.querySelectorAll('mjx-merror').length,
    images: imgs.length, broken_images: bad,
    sliders: document.querySelectorAll('.frame-slider').length,
    slider_images: slider.length, broken_slider_images: slider.filter(i => !(i.naturalWidth > 0)).length,
    mathjax_scripts: mj, title: document.title,
    viewport: window.innerWidth, page_width: document.documentElement.scrollWidth,
    // chapter figures drawn narrower than they are (or than the phone screen): unreadable panels
    shrunk_figures: Array.from(document.querySelectorAll('.cell_output img'))
      .filter(i => !i.closest('.frame-slider') && i.naturalWidth > 0)
      .filter(i => window.screen.width < 720
                   && i.getBoundingClientRect().width + 2 < Math.min(i.naturalWidth, 0.85 * window.screen.width))
      .map(i => Math.round(i.getBoundingClientRect().width) + 'px of ' + i.naturalWidth + 'px'),
  };
})()
"""


@dataclasses.dataclass
class PageReport:
    url: str
    math: int = 0
    mjx: int = 0
    mjx_errors: int = 0
    images: int = 0
    broken_images: list = dataclasses.field(default_factory=list)
    sliders: int = 0
    slider_images: int = 0
    broken_slider_images: int = 0
    mathjax_scripts: list = dataclasses.field(default_factory=list)
    title: str = ""
    viewport: int = 0
    page_width: int = 0
    shrunk_figures: list = dataclasses.field(default_factory=list)
    external_requests: list = dataclasses.field(default_factory=list)
    failed_requests: list = dataclasses.field(default_factory=list)
    js_exceptions: list = dataclasses.field(default_factory=list)

    def problems(self, origin: str) -> list[str]:
        """What is wrong with the page as a reader would see it (empty list: nothing)."""
        out = []
        if self.math and not self.mjx:
            out.append(f"{self.math} math elements but no mjx-container: MathJax did not typeset")
        if self.mjx_errors:
            out.append(f"{self.mjx_errors} MathJax errors (mjx-merror)")
        if self.mjx and not any(s.startswith(origin) for s in self.mathjax_scripts):
            out.append(f"MathJax not loaded from the site itself: {self.mathjax_scripts}")
        if self.broken_images:
            out.append(f"images that did not load: {self.broken_images}")
        if self.sliders and (self.slider_images == 0 or self.broken_slider_images):
            out.append(
                f"frame slider without loadable frames ({self.broken_slider_images} of {self.slider_images} broken)"
            )
        if self.external_requests:
            out.append(f"requests outside the site: {self.external_requests[:5]}")
        if self.failed_requests:
            out.append(f"failed requests: {self.failed_requests[:5]}")
        if self.js_exceptions:
            out.append(f"JavaScript exceptions: {self.js_exceptions[:3]}")
        if self.viewport and self.page_width > self.viewport + 1:
            out.append(f"page is {self.page_width}px wide in a {self.viewport}px window (horizontal scrolling)")
        if self.shrunk_figures:
            out.append(f"figures shrunk below a readable size: {self.shrunk_figures[:4]}")
        return [f"{self.url}: {p}" for p in out]


def inspect_page(
    browser: Browser, url: str, origin: str, screenshot: Path | None = None, window_width: int | None = None
) -> PageReport:
    """Load ``url``, wait for MathJax and the images, record requests and errors, take a screenshot.

    ``window_width``: the emulated window (a phone's layout viewport grows to fit a too-wide page,
    so the page width is compared with the window that was asked for)."""
    start = browser.goto(url)
    values = browser.evaluate(_INSPECT_JS)
    if window_width:
        values["viewport"] = window_width
    report = PageReport(url=url, **values)
    requests = {}
    for event in browser.events[start:]:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            requests[params["requestId"]] = params["request"]["url"]
            u = params["request"]["url"]
            if not (u.startswith(origin) or u.startswith(("data:", "blob:", "about:"))):
                report.external_requests.append(u)
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            report.failed_requests.append(f"{requests.get(params['requestId'], '?')} ({params.get('errorText')})")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            report.failed_requests.append(f"{params['response']['url']} (HTTP {params['response']['status']})")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description", details.get("text", "?"))[:200]
            if not any(p.search(text) for p in BENIGN_JS_EXCEPTIONS):
                report.js_exceptions.append(text)
    del browser.events[:]
    if screenshot is not None:
        browser.screenshot(screenshot)
    return report


# --------------------------------------------------------------------------------------------
# What a reader sees: leftover TeX, placeholder URLs, numbered figures, footer, favicon
# --------------------------------------------------------------------------------------------
# Text where TeX was not turned into math: a dollar sign, \( \) \[ \] delimiters, or a TeX command.
_LEFTOVER_TEX = re.compile(r"\$|\\[()\[\]]|\\[A-Za-z]{2,}")
# Elements whose text is code, math or machinery, not prose.
_SKIP_TAGS = {
    "script",
    "style",
    "pre",
    "code",
    "kbd",
    "samp",
    "textarea",
    "svg",
    "math",
    "mjx-container",
    "title",
    "noscript",
}
_SKIP_CLASSES = {
    "math",
    "highlight",
    "cell_output",
    "output",
    "MathJax",
    "frame-slider",
    "sig",
    "sig-object",
    "viewcode-block",
    "headerlink",
    "search",
    "bd-search",
}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# Words of prose inside a math element ("Gradient flow from the same start ..."): three words of
# four letters or more in a row, after \text{...}-like groups and TeX commands are removed.
_MATH_TEXT_GROUPS = re.compile(
    r"\\(?:text\w*|math(?:rm|bf|it|sf|tt|cal|bb)|operatorname\*?|mbox|label|tag)\s*\{[^{}]*\}"
)
_PROSE_IN_MATH = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{4,}\s+[A-Za-z]{4,}\s+[A-Za-z]{4,}")


class _TextParser(html.parser.HTMLParser):
    """Text of a page outside code and math, and the TeX inside math elements (with a path of tags)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, skipped, is_math)
        self.prose: list[str] = []
        self.math: list[str] = []

    def _skipped(self) -> bool:
        return any(s for _, s, _ in self.stack)

    def _in_math(self) -> bool:
        return any(m for _, _, m in self.stack)

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            return
        classes = set((dict(attrs).get("class") or "").split())
        self.stack.append((tag, tag in _SKIP_TAGS or bool(classes & _SKIP_CLASSES), "math" in classes))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        if self._in_math():
            self.math.append(data)
        elif not self._skipped() and data.strip():
            self.prose.append(data)


def leftover_tex(site: Path, pages: list[Path] | None = None) -> list[str]:
    """Pages whose text shows TeX that was not typeset: ``$``, ``\\(``, ``\\[`` or ``\\command`` in
    prose outside code and math, or English prose inside a math element (a ``$$`` in a list item
    that MyST read as inline ``$`` pairs). MathJax reports no error for either, so check the HTML."""
    out = []
    site = Path(site)
    for page in pages if pages is not None else html_pages(site, redirects=False):
        parser = _TextParser()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        rel = page.relative_to(site) if page.is_relative_to(site) else page
        for text in parser.prose:
            m = _LEFTOVER_TEX.search(text)
            if m:
                snippet = " ".join(text[max(0, m.start() - 40) : m.end() + 40].split())
                out.append(f"{rel}: raw TeX {m.group(0)!r} in text: ...{snippet}...")
        for tex in parser.math:
            stripped = _MATH_TEXT_GROUPS.sub(" ", tex)
            m = _PROSE_IN_MATH.search(re.sub(r"\\[A-Za-z]+", " ", stripped))
            if m:
                out.append(f"{rel}: prose typeset as math: {' '.join(tex.split())[:120]!r}")
    return out


# URLs that must never reach the site: a placeholder repository, jupyter-book's default repository.
PLACEHOLDER_URL = re.compile(
    r"(github\.com|/gh|/github)/(OWNER|YOUR[-_A-Z]*|USER|USERNAME|<[^>]*>)/|executablebooks/jupyter-book"
    r"|example\.(com|org)|your-fork",
    re.IGNORECASE,
)
LAUNCH_URL = re.compile(r"https://(mybinder\.org/v2/|colab\.research\.google\.com/github/)[^\"' <>]+")


def placeholder_urls(site: Path) -> list[str]:
    """Links (href/src) and launch URLs on the site's pages that point at a placeholder repository."""
    out = []
    site = Path(site)
    for page in html_pages(site):
        text = page.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"""(?:href|src|content)\s*=\s*["']([^"']+)["']""", text):
            if PLACEHOLDER_URL.search(m.group(1)):
                out.append(f"{page.relative_to(site)}: {m.group(1)[:120]}")
    return out


def launch_links(page: Path) -> list[str]:
    """Binder and Colab launch URLs on one page."""
    return [m.group(0) for m in LAUNCH_URL.finditer(Path(page).read_text(encoding="utf-8", errors="replace"))]


class _FigureParser(html.parser.HTMLParser):
    """For each content image: is it in a <figure> with a numbered <figcaption>, and what is its alt?"""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, set, str]] = []  # (tag, classes, id)
        self.images: list[dict] = []  # src, alt, figure index or None
        self.figures: list[dict] = []  # id, numbered caption?
        self._open_figures: list[int] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        if tag == "img":
            src = a.get("src") or ""
            if "_images/" in src or src.startswith("data:image/"):
                in_slider = any("frame-slider" in c for _, c, _ in self.stack)
                self.images.append(
                    {
                        "src": src[:80],
                        "alt": a.get("alt") or "",
                        "slider": in_slider,
                        "figure": self._open_figures[-1] if self._open_figures else None,
                    }
                )
            return
        if tag in _VOID:
            return
        if tag == "figure":
            self.figures.append({"id": a.get("id") or "", "numbered": False})
            self._open_figures.append(len(self.figures) - 1)
        if "caption-number" in classes and self._open_figures:
            self.figures[self._open_figures[-1]]["numbered"] = True
        self.stack.append((tag, classes, a.get("id") or ""))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                if tag == "figure" and self._open_figures:
                    self._open_figures.pop()
                del self.stack[i:]
                return


_NON_DESCRIPTIVE_ALT = re.compile(
    r"(^$|\.(png|jpe?g|svg|gif)$|[0-9a-f]{16,}|^<.*>$|^(figure|image|plot)$)", re.IGNORECASE
)


def figure_problems(site: Path, docnames: list[str]) -> list[str]:
    """Figures of the chapter pages ``docnames`` that are not numbered, captioned figures with a
    descriptive alt text. Frame sliders are checked only for an alt text (their frames carry
    "eta = 0.5"-style alts and are numbered through the figure around them when there is one)."""
    out = []
    for doc in docnames:
        page = Path(site) / f"{doc}.html"
        if not page.is_file():
            continue
        parser = _FigureParser()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        for img in parser.images:
            if img["slider"]:
                if not img["alt"]:
                    out.append(f"{doc}: slider frame without alt text")
                continue
            if img["figure"] is None:
                out.append(f"{doc}: image {img['src']!r} is not in a numbered, captioned figure")
            elif not parser.figures[img["figure"]]["numbered"]:
                out.append(f"{doc}: figure {parser.figures[img['figure']]['id']!r} has no numbered caption")
            if _NON_DESCRIPTIVE_ALT.search(img["alt"].strip()):
                out.append(f"{doc}: image {img['src']!r} has no descriptive alt text (alt={img['alt'][:40]!r})")
    return out


def footer_problems(site: Path) -> list[str]:
    """Pages without the build stamp (version, date) in the footer or without a favicon link."""
    out = []
    for page in html_pages(Path(site), redirects=False):
        text = page.read_text(encoding="utf-8", errors="replace")
        rel = page.relative_to(site)
        m = re.search(r'class="book-build-stamp">(.*?)</p>', text, re.DOTALL)
        if not m or not re.search(r"built \d{4}-\d{2}-\d{2}", m.group(1)):
            out.append(f"{rel}: no build stamp with a date in the footer")
        if not re.search(r'<link[^>]+rel="(shortcut )?icon"', text):
            out.append(f"{rel}: no favicon link")
    return out


_SEARCH_JS = r"""
(async () => {
  for (let k = 0; k < 100; k++) {
    const items = document.querySelectorAll('#search-results li, ul.search li');
    const status = document.querySelector('#search-results p.search-summary, .search-summary');
    if (items.length && status && /found|matching|result/i.test(status.textContent)) {
      return Array.from(items).slice(0, 12).map(li => {
        const a = li.querySelector('a');
        return a ? a.getAttribute('href') : '';
      });
    }
    await new Promise(r => setTimeout(r, 100));
  }
  return [];
})()
"""


def search_results(browser: Browser, origin: str, query: str) -> list[str]:
    """The first result links of the site's search page for ``query`` (in the browser)."""
    browser.goto(origin + "search.html?q=" + urllib.parse.quote(query))
    return browser.evaluate(_SEARCH_JS) or []
