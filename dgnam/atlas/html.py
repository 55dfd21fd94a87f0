"""The pieces of the atlas pages: the page frame, a unit's card, the activation histogram as inline
SVG, and the style sheet and script every page shares. Every text put in a page goes through
:func:`esc`; every link is relative, so the site opens from the file system."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

CSS = """
:root { --fg: #1d2126; --muted: #5d6570; --line: #d9dde3; --bg: #f6f7f9; --card: #fff; --accent: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
nav { display: flex; flex-wrap: wrap; gap: .3rem 1rem; padding: .55rem 1.2rem; background: #20252b; }
nav a, nav span { color: #e8ebef; text-decoration: none; }
nav a:hover { text-decoration: underline; }
nav .off { color: #7b838d; }
nav .here { font-weight: 600; }
main { padding: 1rem 1.2rem 2.5rem; max-width: 1500px; }
h1 { font-size: 1.35rem; margin: .2rem 0 .3rem; }
h2 { font-size: 1.05rem; margin: 1.4rem 0 .5rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
.meta { color: var(--muted); margin: 0 0 .8rem; }
table { border-collapse: collapse; background: var(--card); }
th, td { border: 1px solid var(--line); padding: .3rem .6rem; text-align: left; vertical-align: middle; }
th { background: #eceef2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.peek { white-space: nowrap; }
.peek img { width: 40px; height: 40px; margin-right: 2px; vertical-align: middle; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(var(--cardw, 300px), 1fr)); gap: .8rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .5rem; }
.card .title { display: block; font-weight: 600; color: var(--fg); text-decoration: none; margin-bottom: .3rem;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.card .title:hover { color: var(--accent); }
.vis { display: flex; gap: 4px; }
figure { margin: 0; }
figcaption { font-size: 11px; color: var(--muted); }
.vis img { display: block; background: #ddd; }
.strip { display: grid; grid-template-columns: repeat(6, 1fr); gap: 2px; margin: .35rem 0 .2rem; }
.strip img { width: 100%; height: auto; aspect-ratio: 1; object-fit: cover; display: block; }
.strip .none { grid-column: 1 / -1; }
.none { color: var(--muted); font-size: 12px; }
svg.hist { display: block; }
.big { display: flex; flex-wrap: wrap; gap: 1rem; }
.big img { display: block; image-rendering: auto; }
.examples { display: flex; flex-wrap: wrap; gap: .6rem; }
.ex { width: 132px; font-size: 12px; }
.ex img { width: 128px; height: 128px; object-fit: cover; display: block; }
.photo { position: relative; display: inline-block; }
.photo img { display: block; width: 192px; height: 192px; }
.photo .box { position: absolute; border: 2px solid #ffd400; outline: 1px solid #000; pointer-events: none; }
.photos { display: flex; flex-wrap: wrap; gap: .6rem; }
.photos figure { width: 192px; font-size: 12px; }
.keys { color: var(--muted); font-size: 12px; margin-top: 2rem; }
"""

# Left and right arrows follow the page's prev / next links (nothing else runs).
JS = """document.addEventListener("keydown", function (e) {
  if (e.altKey || e.ctrlKey || e.metaKey) return;
  var rel = e.key === "ArrowLeft" ? "prev" : e.key === "ArrowRight" ? "next" : e.key === "ArrowUp" ? "up" : null;
  var a = rel && document.querySelector('a[rel="' + rel + '"]');
  if (a) window.location.href = a.href;
});
"""


WIDE = ' fill="#a9bcd8"'  # the fill of a bin wider than the usual ones (the under- and overflow bins)


def esc(text: Any) -> str:
    """Any value as HTML text (quotes escaped too: safe inside attributes)."""
    return html.escape(str(text), quote=True)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "–" if v is None else str(v)


def page(title: str, up: str, nav: Sequence[tuple[str, str | None, str]], body: str) -> str:
    """A whole page. ``up``: the way to the site's root (``""``, ``"../"``); ``nav``: (text, href or
    None when there is no such page, rel) links, href relative to this page."""
    links = []
    for text, href, rel in nav:
        if href is None:
            links.append(f'<span class="off">{esc(text)}</span>')
        else:
            r = f' rel="{esc(rel)}"' if rel else ""
            links.append(f'<a href="{esc(href)}"{r}>{esc(text)}</a>')
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)}</title><link rel="stylesheet" href="{esc(up)}style.css"></head>\n'
            f'<body><nav>{"".join(links)}</nav>\n<main>\n{body}\n</main>\n'
            f'<script src="{esc(up)}atlas.js"></script></body></html>\n')


def img(src: str, alt: str, width: int, height: int | None = None, lazy: bool = True) -> str:
    load = ' loading="lazy"' if lazy else ""
    return (f'<img src="{esc(src)}" alt="{esc(alt)}" width="{int(width)}" height="{int(height or width)}"{load}>')


def histogram(hist: Mapping[str, Sequence[float]] | None, width: int = 260, height: int = 64,
              threshold: float | None = None, caption: bool = True) -> str:
    """An activation histogram as inline SVG: a bar per bin, heights on a log scale (log(1 + count), so
    the rare high values that make the examples stay visible; a bin wider than most, such as an
    under- or overflow bin, is paler), the edges' range below (and with
    ``caption`` how many values it counts), and a red line at ``threshold`` (the k-th example's value)."""
    if not hist or not hist.get("counts") or len(hist.get("edges", [])) != len(hist["counts"]) + 1:
        return '<p class="none">no histogram</p>'
    edges, counts = [float(e) for e in hist["edges"]], [max(0.0, float(c)) for c in hist["counts"]]
    lo, hi = edges[0], edges[-1]
    span = (hi - lo) or 1.0
    top = max(math.log1p(c) for c in counts) or 1.0
    plot_h = height - 14

    def x(v: float) -> float:
        return (v - lo) / span * width

    widths = sorted(b - a for a, b in zip(edges, edges[1:]))
    usual = widths[len(widths) // 2]
    bars = []
    for a, b, c in zip(edges, edges[1:], counts):
        if c <= 0:
            continue
        h = max(1.0, math.log1p(c) / top * plot_h)
        wide = b - a > 1.5 * usual  # an under- or overflow bin: wider than the others, drawn paler
        bars.append(f'<rect x="{x(a):.1f}" y="{plot_h - h:.1f}" width="{max(0.8, x(b) - x(a) - 0.3):.1f}" '
                    f'height="{h:.1f}"{WIDE if wide else ""}><title>{esc(fmt(a))} to {esc(fmt(b))}: {int(c)}'
                    f'</title></rect>')
    mark = ""
    if threshold is not None and lo <= threshold <= hi:
        mark = (f'<line x1="{x(threshold):.1f}" x2="{x(threshold):.1f}" y1="0" y2="{plot_h}" stroke="#b3261e" '
                f'stroke-width="1.5"><title>k-th example: {esc(fmt(threshold))}</title></line>')
    zero = f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="0" y2="{plot_h}" stroke="#9aa1ab" stroke-dasharray="2 2"/>' \
        if lo < 0 < hi else ""
    total = int(sum(counts))
    return (f'<svg class="hist" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'xmlns="http://www.w3.org/2000/svg"><title>activations over {total} values (log counts)</title>'
            f'<g fill="#4a6fa5">{"".join(bars)}</g>{zero}{mark}'
            f'<text x="0" y="{height - 2}" font-size="10" fill="#5d6570">{esc(fmt(lo))}</text>'
            f'<text x="{width}" y="{height - 2}" font-size="10" fill="#5d6570" text-anchor="end">{esc(fmt(hi))}</text>'
            + (f'<text x="{width / 2:.0f}" y="{height - 2}" font-size="10" fill="#5d6570" text-anchor="middle">'
               f'{total} values, log counts</text>' if caption else "") + '</svg>')


def title_of(rec: Mapping[str, Any]) -> str:
    """``unit 12`` or ``unit 1: goldfish`` (a logit with a class name)."""
    return f"unit {rec['unit']}: {rec['name']}" if rec.get("name") else f"unit {rec['unit']}"


def card(rec: Mapping[str, Any], methods: Sequence[str], up: str, size: int, strip: int = 6) -> str:
    """A unit's card on its layer page: each method's image, the top dataset examples, the histogram."""
    href = f"{up}units/{unit_href(rec)}"
    figs = []
    for m in methods:
        e = rec.get("methods", {}).get(m)
        if e:
            figs.append(f'<figure>{img(up + e["card"], f"{m} of {title_of(rec)}", size)}'
                        f'<figcaption>{esc(m)} · {esc(fmt(e.get("activation")))}</figcaption></figure>')
    ex = rec.get("examples") or {}
    crops = ex.get("crops") or []
    strip_html = ("".join(img(up + c, f"example {i + 1}", 40) for i, c in enumerate(crops[:strip]))
                  if crops else '<span class="none">no dataset examples</span>')
    values = ex.get("values") or []
    hist = histogram(ex.get("hist"), width=max(200, len(figs or [1]) * (size + 4) - 4), height=44,
                     threshold=values[-1] if values else None, caption=False) if ex else ""
    return (f'<div class="card" id="u{int(rec["unit"])}"><a class="title" href="{esc(href)}" '
            f'title="{esc(title_of(rec))}">{esc(title_of(rec))}</a>'
            f'<div class="vis">{"".join(figs) or "<span class=none>no images</span>"}</div>'
            f'<div class="strip">{strip_html}</div>{hist}</div>')


def unit_href(rec: Mapping[str, Any]) -> str:
    from dgnam.atlas.records import layer_dir

    return f"{layer_dir(rec['layer'])}/{int(rec['unit'])}.html"
