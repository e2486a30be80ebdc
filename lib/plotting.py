"""Figure conventions of the book: labelled axes, the 2/eta line, readable in grayscale.

Colours come from a sequential map with monotone lightness (viridis), and every series also
gets its own line style / marker, so figures survive black-and-white printing.
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

LINESTYLES = ["-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (1, 1))]
MARKERS = ["o", "s", "^", "D", "v", "x", "*", "P"]


def use_book_style() -> None:
    """Apply the book's matplotlib style (call once at the top of a chapter)."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 8,
            "legend.frameon": False,
            "lines.linewidth": 1.6,
            "font.size": 10,
        }
    )


def series_colors(n: int, cmap: str = "viridis") -> list:
    """``n`` colours of increasing lightness (distinguishable in grayscale)."""
    return [mpl.colormaps[cmap](v) for v in np.linspace(0.0, 0.85, max(n, 1))]


def series_style(i: int, n: int) -> dict:
    """Colour, line style and marker for series ``i`` of ``n``."""
    return {
        "color": series_colors(n)[i],
        "linestyle": LINESTYLES[i % len(LINESTYLES)],
        "marker": MARKERS[i % len(MARKERS)],
        "markevery": 0.1,
        "markersize": 4,
    }


def threshold_line(ax, eta: float, color="k", label: bool | str = True, factor: float = 2.0, **kw) -> None:
    """Dashed horizontal line at the stability threshold ``factor / eta`` (default 2/eta)."""
    text = label if isinstance(label, str) else (rf"$2/\eta={factor / eta:.3g}$" if label else None)
    ax.axhline(factor / eta, color=color, linestyle="--", linewidth=1.0, alpha=0.8, label=text, **kw)


def label_axes(ax, xlabel: str, ylabel: str, title: str | None = None) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)


def plain_log_y(ax) -> None:
    """Plain numbers on a logarithmic y axis (minor ticks labelled at 2, 3, 5 only)."""
    from matplotlib import ticker

    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(
        ticker.FuncFormatter(
            lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** np.floor(np.log10(v))) in (2, 3, 5) else ""
        )
    )


def subplots(n: int = 1, ncols: int | None = None, width: float = 3.4, height: float = 3.0, **kw):
    """``plt.subplots`` with a panel size that suits the book's page width."""
    ncols = ncols or n
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)
    return fig, axes.ravel()[:n] if n > 1 else axes.ravel()[0]


def stored_or_note(ax, stored, text: str | None = None) -> bool:
    """Write a note on ``ax`` when a stored full-scale result is missing or stale; True if usable."""
    if getattr(stored, "available", False):
        return True
    msg = text or ("full-scale result not available\n(" + getattr(stored, "status", "missing") + ")")
    ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.3")
    ax.set_xticks([])
    ax.set_yticks([])
    return False
