"""The static site of an atlas folder, rebuilt from every record found in it: ``index.html`` (the
layers), a page per layer (a card per unit) and a page per unit (everything large), linked to their
neighbours. ``index.html`` is written last and atomically, so a site whose build failed keeps its
old front page."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dgnam.atlas import records as R
from dgnam.atlas.html import CSS, JS, card, esc, fmt, histogram, img, page, title_of, unit_href
from dgnam.errors import DgnamValueError
from dgnam.io import atomic_write, write_json

CARD = 128   # card images, px
LARGE = 256  # a unit page's images, px (shown at least this wide)


def _write(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _layers(recs: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Records by layer, layers in depth order, units in index order."""
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in recs:
        by.setdefault(r["layer"], []).append(r)
    order = sorted(by, key=lambda name: (by[name][0]["layer_info"]["depth"], name))
    return {name: sorted(by[name], key=lambda r: int(r["unit"])) for name in order}


def _methods(recs: Sequence[Mapping[str, Any]], order: Sequence[str] = ()) -> list[str]:
    seen = list(order)
    for r in recs:
        seen += [m for m in r.get("methods", {}) if m not in seen]
    return [m for m in seen if any(m in r.get("methods", {}) for r in recs)]


def _shape(info: Mapping[str, Any]) -> str:
    return " × ".join(str(s) for s in info["shape"])


def build_site(root: Path, method_order: Sequence[str] = ()) -> dict[str, Any]:
    """Write the site of ``root`` from its records; returns a summary (layers, units, methods)."""
    recs = R.find(root)
    if not recs:
        raise DgnamValueError(f"{root} holds no atlas records (records/<layer>/<unit>.json); nothing to build")
    models = {(r["model"]["name"], r["model"]["fingerprint"]) for r in recs}
    if len(models) > 1:
        raise DgnamValueError(f"{root} holds records of {len(models)} models ({', '.join(f'{n} {f}' for n, f in sorted(models))}); "
                              f"an atlas shows one model")
    model = recs[0]["model"]
    layers, methods = _layers(recs), _methods(recs, method_order)
    names = list(layers)
    _write(root / "style.css", CSS)
    _write(root / "atlas.js", JS)
    for li, name in enumerate(names):
        _write(root / "layers" / f"{R.layer_dir(name)}.html", _layer_page(model, names, li, layers[name], methods))
        units = layers[name]
        for ui, rec in enumerate(units):
            _write(root / "units" / unit_href(rec), _unit_page(model, names, li, units, ui, methods))
    summary = {"model": model, "methods": methods,
               "layers": [{**layers[n][0]["layer_info"], "name": n, "in_atlas": len(layers[n]),
                           "computed": {m: sum(m in r.get("methods", {}) for r in layers[n]) for m in methods},
                           "examples": sum(bool(r.get("examples")) for r in layers[n])} for n in names]}
    write_json(root / "atlas.json", summary)
    _write(root / "index.html", _index(summary, layers))
    return summary


def _nav(up: str, names: Sequence[str], li: int, on_layer_page: bool) -> list[tuple[str, str | None, str]]:
    """Index, previous / next layer and (on a unit page) the unit's layer. The arrow keys follow the
    rel links: on a layer page prev / next are the layers, on a unit page the units (added after)."""
    prev_l = f"{up}layers/{R.layer_dir(names[li - 1])}.html" if li > 0 else None
    next_l = f"{up}layers/{R.layer_dir(names[li + 1])}.html" if li + 1 < len(names) else None
    rel = ("prev", "next") if on_layer_page else ("", "")
    nav = [("atlas index", f"{up}index.html", "up" if on_layer_page else ""), ("◀ previous layer", prev_l, rel[0])]
    if not on_layer_page:
        nav.append((f"layer {names[li]}", f"{up}layers/{R.layer_dir(names[li])}.html", "up"))
    return nav + [("next layer ▶", next_l, rel[1])]


def _index(summary: Mapping[str, Any], layers: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    model, methods = summary["model"], summary["methods"]
    rows = []
    for info in summary["layers"]:
        recs = layers[info["name"]]
        computed = ", ".join(f"{m} ({n})" for m, n in info["computed"].items() if n) or "–"
        shown = next((m for m in methods if info["computed"].get(m)), None)
        peek = "".join(img(r["methods"][shown]["card"], f"{shown} unit {r['unit']}", 40)
                       for r in [r for r in recs if shown in r.get("methods", {})][:8]) if shown else ""
        rows.append(f'<tr><td><a href="layers/{esc(R.layer_dir(info["name"]))}.html">{esc(info["name"])}</a></td>'
                    f'<td>{esc(_shape(info))}</td><td>{esc(info["kind"])}</td>'
                    f'<td class="num">{info["in_atlas"]} of {info["units"]}</td><td>{esc(computed)}</td>'
                    f'<td class="num">{info["examples"]}</td><td class="peek">{peek}</td></tr>')
    body = (f'<h1>Atlas of {esc(model["name"])}</h1>'
            f'<p class="meta">{sum(i["in_atlas"] for i in summary["layers"])} units in {len(rows)} layers · '
            f'methods: {esc(", ".join(methods) or "none")} · weights fingerprint {esc(model["fingerprint"])}</p>'
            f'<table><tr><th>layer</th><th>activation shape</th><th>kind</th><th>units in the atlas</th>'
            f'<th>feature visualizations (units)</th><th>units with dataset examples</th><th>first units</th></tr>'
            f'{"".join(rows)}</table>'
            f'<p class="keys">A layer page shows a card per unit: each method\'s image (what maximizes the unit), the '
            f'unit\'s top dataset examples, and the histogram of its activations over the dataset. '
            f'On every page the arrow keys follow the previous / next links.</p>')
    return page(f"Atlas of {model['name']}", "", [("atlas index", "index.html", "")], body)


def _layer_page(model: Mapping[str, Any], names: Sequence[str], li: int, recs: Sequence[Mapping[str, Any]],
                methods: Sequence[str]) -> str:
    name, info = names[li], recs[0]["layer_info"]
    shown = [m for m in methods if any(m in r.get("methods", {}) for r in recs)]
    nav = _nav("../", names, li, True)
    body = (f'<h1>{esc(name)}</h1><p class="meta">{esc(model["name"])} · {esc(info["kind"])} layer, activation '
            f'{esc(_shape(info))} · {len(recs)} of {info["units"]} units · '
            f'{esc(", ".join(shown) or "no feature visualizations")}</p>'
            f'<div class="cards" style="--cardw: {max(220, len(shown or [1]) * (CARD + 4) + 20)}px">'
            f'{"".join(card(r, shown, "../", CARD) for r in recs)}</div>')
    return page(f"{name} · {model['name']}", "../", nav, body)


def _unit_page(model: Mapping[str, Any], names: Sequence[str], li: int, units: Sequence[Mapping[str, Any]], ui: int,
               methods: Sequence[str]) -> str:
    rec, up = units[ui], "../../"
    prev_u = f"{up}units/{unit_href(units[ui - 1])}" if ui > 0 else None
    next_u = f"{up}units/{unit_href(units[ui + 1])}" if ui + 1 < len(units) else None
    nav = _nav(up, names, li, False)
    nav += [(f"◀ {title_of(units[ui - 1]) if ui > 0 else 'previous unit'}", prev_u, "prev"),
            (f"{title_of(units[ui + 1]) if ui + 1 < len(units) else 'next unit'} ▶", next_u, "next")]
    info = rec["layer_info"]
    figs = []
    for m in methods:
        e = rec.get("methods", {}).get(m)
        if not e:
            continue
        s = e.get("settings", {})
        extra = f" · p {fmt(e['probability'])}" if e.get("probability") is not None else ""
        figs.append(f'<figure>{img(up + e["image"], f"{m} of {title_of(rec)}", LARGE, lazy=False)}<figcaption>'
                    f'{esc(m)}: activation {esc(fmt(e.get("activation")))}{esc(extra)} · {esc(s.get("steps"))} steps, '
                    f'{esc(s.get("image_size"))} px</figcaption></figure>')
    body = [f'<h1>{esc(rec["layer"])} · {esc(title_of(rec))}</h1>'
            f'<p class="meta">{esc(model["name"])} · {esc(rec["kind"])} unit of a {esc(info["kind"])} layer '
            f'({esc(_shape(info))})</p>',
            '<h2>Feature visualizations</h2>', f'<div class="big">{"".join(figs) or "<p class=none>none computed</p>"}</div>']
    body += _examples_html(rec.get("examples"), up)
    return page(f"{rec['layer']} {title_of(rec)} · {model['name']}", up, nav, "".join(body))


def _examples_html(ex: Mapping[str, Any] | None, up: str) -> list[str]:
    if not ex:
        return ["<h2>Dataset examples</h2><p class=none>none computed for this unit</p>"]
    values, labels = ex.get("values") or [], ex.get("label_names") or ex.get("labels") or []
    items = []
    for i, crop in enumerate(ex.get("crops") or []):
        label = labels[i] if i < len(labels) and labels[i] is not None else ""
        items.append(f'<div class="ex">{img(up + crop, f"example {i + 1}", 128)}'
                     f'<div>#{i + 1} · {esc(fmt(values[i]) if i < len(values) else "")}</div>'
                     f'<div>{esc(label)}</div></div>')
    out = [f'<h2>Top {len(items)} dataset examples</h2><p class="meta">from {esc(ex.get("source") or "?")}; '
           f'value and the photo\'s class</p><div class="examples">{"".join(items)}</div>']
    full, boxes, size = ex.get("full") or [], ex.get("boxes") or [], ex.get("image_size") or 0
    if full and size and boxes:  # a flat layer's crops are its whole photos already
        photos = []
        for i, rel in enumerate(full):
            box = ""
            if i < len(boxes) and boxes[i]:
                t, lft, b, r = (max(0.0, min(100.0, 100.0 * float(v) / size)) for v in boxes[i])
                box = f'<div class="box" style="top:{t:.2f}%;left:{lft:.2f}%;height:{b - t:.2f}%;width:{r - lft:.2f}%"></div>'
            photos.append(f'<figure><div class="photo">{img(up + rel, f"photo of example {i + 1}", 192)}{box}</div>'
                          f'<figcaption>#{i + 1} · photo {esc(ex["indices"][i])}</figcaption></figure>')
        field = ex.get("field")
        what = f" ({esc(field['size'][0])} × {esc(field['size'][1])} px)" if field else ""
        out.append(f'<h2>Where in the photos</h2><p class="meta">The photos as the network saw them ({esc(size)} px); the '
                   f'yellow box is the receptive field{what} of the strongest position.</p>'
                   f'<div class="photos">{"".join(photos)}</div>')
    values_t = values[-1] if values else None
    out.append(f'<h2>Activations over the dataset</h2>{histogram(ex.get("hist"), 640, 160, values_t)}'
               f'<p class="meta">The red line is the k-th example\'s value.</p>')
    return out
