"""Interactive figures that work in Jupyter *and* on the static website.

:func:`frame_slider` renders a figure for each value of one parameter and returns an HTML
block with a range slider that swaps the pre-rendered images with a few lines of inline
JavaScript: it needs no kernel and no internet, so it works on the built website, and in
Jupyter too. :func:`live_slider` is the ``ipywidgets`` version that redraws for any value;
:func:`explore` shows the frame slider everywhere and adds the live slider only in a live
Jupyter session (not while the book is being built, when ``BOOK_BUILD`` is set).
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
import uuid
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt

DrawFn = Callable[[float], "plt.Figure"]


def _figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def frame_slider_html(
    draw: DrawFn, values: Sequence[float], label: str, initial: int | None = None, fmt: str = "{:.3g}"
) -> str:
    """HTML of a slider over pre-rendered frames ``draw(v)`` for ``v`` in ``values``."""
    if len(values) == 0:
        raise ValueError("frame_slider needs at least one value")
    frames = [_figure_png(draw(v)) for v in values]
    initial = len(values) // 2 if initial is None else initial
    uid = "fs" + uuid.uuid4().hex[:8]
    labels = [fmt.format(v) for v in values]
    imgs = "".join(
        f'<img class="{uid}-f" src="data:image/png;base64,{f}" alt="{html.escape(label)} = {labels[i]}" '
        f'style="display:{"block" if i == initial else "none"};max-width:100%">'
        for i, f in enumerate(frames)
    )
    return (
        f'<div class="frame-slider" id="{uid}">'
        f'<label>{html.escape(label)} = <span id="{uid}-v">{labels[initial]}</span> '
        f'<input type="range" min="0" max="{len(values) - 1}" value="{initial}" step="1" '
        f"oninput=\"(function(i){{var fs=document.querySelectorAll('.{uid}-f');"
        f"for(var k=0;k<fs.length;k++)fs[k].style.display=(k==i)?'block':'none';"
        f"document.getElementById('{uid}-v').textContent={labels!r}[i];}})(this.value)\"></label>"
        f"{imgs}</div>"
    )


class FrameSlider:
    """Displayable frame slider: HTML where HTML renders (website, Jupyter), else its initial frame.

    The MIME bundle holds ``text/html`` (the slider) and ``image/png`` (the frame shown first), so a
    LaTeX/PDF build, which cannot run the slider, prints that frame as a static figure.
    """

    def __init__(self, html_text: str, label: str) -> None:
        self.data = html_text
        self.label = label
        shown = re.search(r'src="data:image/png;base64,([^"]+)"[^>]*style="display:block', html_text)
        self.png = shown.group(1) if shown else None

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        bundle = {"text/html": self.data, "text/plain": f"<frame slider over {self.label}>"}
        if self.png:
            bundle["image/png"] = self.png
        return bundle


def frame_slider(draw: DrawFn, values: Sequence[float], label: str, **kw) -> FrameSlider:
    """Display a :func:`frame_slider_html` block (with its initial frame as a static fallback)."""
    return FrameSlider(frame_slider_html(draw, values, label, **kw), label)


def _figure_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def live_slider(draw: DrawFn, low: float, high: float, step: float, value: float, label: str):
    """An ``ipywidgets`` slider redrawing ``draw(v)`` for any ``v`` in ``[low, high]`` (needs a kernel).

    The figure is an ``ipywidgets.Image`` whose PNG bytes are replaced on each move: no ``Output``
    widget and no ``clear_output``. Headless executors (nbclient, used by ``jupyter nbconvert
    --execute`` and ``jupyter execute``) emulate a front end for ``Output`` widgets by sending
    comm messages back to the kernel while they wait for the cell's reply; with an ``Output``
    widget and ``clear_output(wait=True)`` that occasionally left ``nbconvert --execute`` waiting
    forever on an idle kernel. An ``Image`` widget is plain widget state: nothing to emulate.
    """
    import ipywidgets as w

    slider = w.FloatSlider(
        value=value, min=low, max=high, step=step, description=label, continuous_update=False, readout_format=".3g"
    )
    image = w.Image(value=_figure_bytes(draw(value)), format="png", layout=w.Layout(max_width="100%", height="auto"))

    def redraw(change=None) -> None:
        image.value = _figure_bytes(draw(slider.value))

    slider.observe(redraw, names="value")
    return w.VBox([slider, image])


def building_book() -> bool:
    """True while the website is being built (the Makefile sets ``BOOK_BUILD=1``)."""
    return os.environ.get("BOOK_BUILD", "") not in ("", "0")


def explore(draw: DrawFn, values: Sequence[float], label: str, live_range: tuple[float, float, float] | None = None):
    """Frame slider everywhere, plus a live ``ipywidgets`` slider in an interactive session."""
    from IPython.display import display

    display(frame_slider(draw, values, label))
    if live_range is not None and not building_book():
        low, high, step = live_range
        display(live_slider(draw, low, high, step, float(values[len(values) // 2]), label))
