"""Draw the book map (book/_static/book_map.svg): which chapter builds on which.

The chapters, their numbers and their parts come from ``_toc.yml``; the arrows from ``EDGES`` below
(a chapter -> a later chapter that uses it). Run ``python scripts/book_map.py`` after changing either;
``tests/test_website.py::test_book_map_is_current`` fails when the SVG is out of date.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "book" / "_static" / "book_map.svg"
EDGES = [
    ("quadratic_threshold", "measuring_sharpness"),
    ("quadratic_threshold", "edge_of_stability"),
    ("measuring_sharpness", "edge_of_stability"),
    ("edge_of_stability", "eos_controls"),
    ("edge_of_stability", "catapults_self_stabilization"),
    ("edge_of_stability", "rotational_polarity"),
    ("catapults_self_stabilization", "rotational_polarity"),
    ("rotational_polarity", "flatness_bias"),
    ("flatness_bias", "sgd_instabilities"),
    ("flatness_bias", "adaptive_methods"),
    ("sgd_instabilities", "label_noise_model"),
    ("label_noise_model", "label_noise_architectures"),
    ("label_noise_model", "reconciling"),
    ("flatness_bias", "reconciling"),
]
SHORT = {
    "quadratic_threshold": "Quadratic threshold",
    "measuring_sharpness": "Measuring sharpness",
    "edge_of_stability": "Edge of stability",
    "eos_controls": "EoS controls",
    "catapults_self_stabilization": "Catapults, self-stab.",
    "rotational_polarity": "Rotational polarity",
    "flatness_bias": "Flatness bias",
    "sgd_instabilities": "SGD instabilities",
    "adaptive_methods": "Adaptive methods",
    "label_noise_model": "Label-noise model",
    "label_noise_architectures": "Architectures",
    "reconciling": "Reconciling",
}
SHORT_PART = {
    "Instabilities drive flatness": "Instabilities → flatness",
    "Noise geometry and sharpness": "Noise geometry",
}
FILLS = ["#e8e8f4", "#e0efec", "#f4f0dc", "#efe3ea", "#e6eee0"]


def numbered_parts(toc_path: Path = REPO / "_toc.yml") -> list[tuple[str, list[str]]]:
    toc = yaml.safe_load(toc_path.read_text())
    return [
        (p["caption"], [c["file"].split("/")[-1] for c in p["chapters"]])
        for p in toc.get("parts", [])
        if p.get("numbered")
    ]


def svg(parts: list[tuple[str, list[str]]]) -> str:
    bw, bh, gap, dy = 172, 40, 18, 80
    width = len(parts) * (bw + gap) + gap
    rows = max(len(ch) for _, ch in parts)
    height = 60 + dy * (rows - 1) + bh + 40
    pos, number, n = {}, {}, 0
    for c, (_, chapters) in enumerate(parts):
        for r, doc in enumerate(chapters):
            n += 1
            pos[doc] = (gap + c * (bw + gap), 50 + r * dy, c, r)
            number[doc] = n
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        'aria-labelledby="t d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
        '<title id="t">Book map</title>',
        '<desc id="d">Which chapter builds on which: an arrow goes from a chapter '
        "to a later chapter that uses it.</desc>",
        '<defs><marker id="a" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    for c, (caption, _) in enumerate(parts):
        x = gap + c * (bw + gap) + bw / 2
        out.append(
            f'<text x="{x}" y="28" text-anchor="middle" font-size="13" font-weight="bold" fill="#222">'
            f"{html.escape(SHORT_PART.get(caption, caption))}</text>"
        )
    for a, b in EDGES:
        if a not in pos or b not in pos:
            continue
        xa, ya, ca, ra = pos[a]
        xb, yb, cb, rb = pos[b]
        if ca == cb and rb == ra + 1:
            out.append(
                f'<line x1="{xa + bw / 2}" y1="{ya + bh}" x2="{xb + bw / 2}" y2="{yb}" stroke="#333" '
                'stroke-width="1.5" marker-end="url(#a)"/>'
            )
        elif ca == cb:
            x1, y1, x2, y2 = xa, ya + bh / 2, xb, yb + bh / 2
            out.append(
                f'<path d="M{x1},{y1} C{x1 - 28},{y1 + 30} {x2 - 28},{y2 - 30} {x2},{y2}" fill="none" '
                'stroke="#333" stroke-width="1.5" stroke-dasharray="5 3" marker-end="url(#a)"/>'
            )
        else:
            out.append(
                f'<line x1="{xa + bw}" y1="{ya + bh / 2}" x2="{xb}" y2="{yb + bh / 2}" stroke="#333" '
                'stroke-width="1.5" marker-end="url(#a)"/>'
            )
    for c, (_, chapters) in enumerate(parts):
        for doc in chapters:
            x, y, _, _ = pos[doc]
            label = f"{number[doc]}  {SHORT.get(doc, doc.replace('_', ' ').capitalize())}"
            out.append(
                f'<rect x="{x}" y="{y}" width="{bw}" height="{bh}" rx="6" fill="{FILLS[c % len(FILLS)]}" '
                'stroke="#333" stroke-width="1.2"/>'
            )
            out.append(f'<text x="{x + 9}" y="{y + 25}" font-size="13" fill="#111">{html.escape(label)}</text>')
    out.append(
        f'<text x="{gap}" y="{height - 10}" font-size="11" fill="#444">An arrow goes from a chapter to a '
        "later chapter that uses it (dashed: within a part, skipping a chapter).</text>"
    )
    return "\n".join(out) + "\n</svg>\n"


def main(argv: list[str]) -> int:
    text = svg(numbered_parts())
    if argv[:1] == ["--check"]:
        return 0 if OUT.is_file() and OUT.read_text() == text else 1
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
