"""Writing the comparison report: ``report.md``, the self-contained ``report.html``, ``grid.png``,
the copied PNGs under ``images/`` and ``report.json``/``.csv``, ``summary.json``/``.csv``.

Also the small helpers they share with :mod:`dgnam.eval.report`: the unit key of a row, means that
skip missing values, percentages and number formatting.
"""

from __future__ import annotations

import base64
import html
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dgnam.eval.judges import Judge
from dgnam.eval.stats import HF_RADIUS, STATS_SIZE
from dgnam.io import atomic_write, labelled_grid, load_image, safe_name, save_png, write_results


def _unit_key(row: Mapping[str, Any]) -> tuple:
    return (str(row["layer"]), row["kind"], int(row["unit"]))


def _mean(vals: Sequence[float]) -> float | None:
    vals = [float(v) for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def _pct(vals: Sequence[Any]) -> float | None:
    m = _mean(vals)
    return None if m is None else 100.0 * m


def _scale(v: float | None, k: float) -> float | None:
    return None if v is None else v * k


# ----------------------------------------------------------------------------------------------
# Writing


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _summary_table(summary: Sequence[Mapping[str, Any]], judge_names: Sequence[str]) -> list[list[str]]:
    """Header + one row of display strings per method."""
    head = ["method", "n (units × seeds)", "target act.", "target p", "target top-1 %"]
    for j in judge_names:
        head += [f"{j} top-1 %", f"{j} top-5 %", f"{j} p"]
    head += ["TV", "HF energy", "grid", "grid 4 px", "s / image"]
    div = any(s.get("diversity") is not None for s in summary)
    if div:
        head += ["diversity", "photos' diversity"]
    table = [head]
    for s in summary:
        n = f"{s['images']} ({s['units']} × {s['seeds']})"
        row = [s["method"], n, _fmt(s["activation"], 2), _fmt(s["probability"]), _fmt(s["target_top1_pct"], 1)]
        for j in judge_names:
            top1 = _fmt(s[f"{j}_top1_pct"], 1)
            if s.get(f"{j}_top1_pct_sd") is not None:
                top1 += f" ± {s[f'{j}_top1_pct_sd']:.1f}"
            row += [top1, _fmt(s[f"{j}_top5_pct"], 1), _fmt(s[f"{j}_prob"])]
        row += [_fmt(s["tv"]), _fmt(s["hf_energy"]), _fmt(s.get("grid")), _fmt(s.get("grid4")), _fmt(s["seconds"], 1)]
        if div:
            row += [_fmt(s.get("diversity")), _fmt(s.get("photo_diversity"))]
        table.append(row)
    return table


def _md_table(table: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "|".join("---" for _ in table[0]) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table[1:]]
    return "\n".join(lines)


def _html_table(table: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cells(rows: Sequence[dict[str, Any]]) -> tuple[list[tuple], dict]:
    """Units in order of appearance (layer, then index) and (unit, method) -> rows over seeds."""
    layers = list(dict.fromkeys(str(r["layer"]) for r in rows))
    units = sorted({_unit_key(r) for r in rows}, key=lambda k: (layers.index(k[0]), k[1], k[2]))
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: int(r["seed"])):
        cells.setdefault((_unit_key(r), r["method"]), []).append(r)
    return units, cells


def _labels(rows: Sequence[Mapping[str, Any]]) -> dict[tuple, str]:
    """The unit's label of each unit key (a sample's row names the unit without its ``_s<k>``)."""
    out = {}
    for r in rows:
        label = str(r.get("label") or r["unit"])
        tail = f"_s{r['sample']}" if r.get("sample") is not None else ""
        out[_unit_key(r)] = label[: -len(tail)] if tail and label.endswith(tail) else label
    return out


def _grid(rows: Sequence[dict[str, Any]], methods: Sequence[str], judge: str | None, out: Path) -> Path:
    """grid.png: a row per unit, a column per method (the lowest seed), captions with the first
    judge's probability of the intended class."""
    units, cells = _cells(rows)
    labels = _labels(rows)
    side = max(int(r["size"]) for r in rows)
    tile = max(side, 192)  # room for the captions; small images are enlarged (nearest)
    imgs, caps = [], []
    for u in units:
        for m in methods:
            rs = cells.get((u, m))
            if not rs:
                imgs.append(torch.full((3, side, side), 0.85))
                caps.append(f"{m}: (none)")
                continue
            imgs.append(load_image(rs[0]["source"]))
            p = rs[0].get(f"{judge}_prob") if judge else None
            caps.append(f"{m} {'' if p is None else f'J={p:.2f} '}{labels[u]}")
    grid = labelled_grid(imgs, caps, cols=len(methods), tile=tile)
    return save_png(grid.float() / 255, out / "grid.png")


def _samples_grid(rows: Sequence[dict[str, Any]], methods: Sequence[str], judge: str | None, out: Path) -> Path | None:
    """samples.png for runs with ``samples=K``: a row per unit and method (the lowest seed), its K
    samples side by side, each captioned with the judge's top-1 class and probability of the unit's
    class; None when no unit has more than one sample."""
    units, cells = _cells(rows)
    labels = _labels(rows)
    lines = []
    for u in units:
        for m in methods:
            rs = [r for r in cells.get((u, m), []) if int(r["seed"]) == int(cells[(u, m)][0]["seed"])]
            if len(rs) > 1:
                lines.append((labels[u], m, sorted(rs, key=lambda r: int(r.get("sample", 0)))))
    if not lines:
        return None
    k = max(len(rs) for _, _, rs in lines)
    side = max(int(r["size"]) for r in rows)
    imgs, caps = [], []
    for label, m, rs in lines:
        for i in range(k):
            if i >= len(rs):
                imgs.append(torch.full((3, side, side), 0.85))
                caps.append("")
                continue
            r = rs[i]
            imgs.append(load_image(r["source"]))
            pred, p = (r.get(f"{judge}_pred"), r.get(f"{judge}_prob")) if judge else (None, None)
            caps.append(f"{m} {label} s{r.get('sample', i)}" + (f" J={p:.2f}" if p is not None else "")
                        + (f" [{str(pred).split(' ', 1)[-1][:18]}]" if pred else ""))
    grid = labelled_grid(imgs, caps, cols=k, tile=max(side, 192))
    return save_png(grid.float() / 255, out / "samples.png")


def _copy_images(rows: list[dict[str, Any]], out: Path) -> None:
    """Copy every PNG to ``out/images/<method>/seed<k>/<layer>/<name>`` and point ``image`` there."""
    for r in rows:
        method, layer = safe_name(r["method"]) or "_", safe_name(r["layer"]) or "_"
        rel = Path("images") / method / f"seed{int(r['seed'])}" / layer / Path(r["source"]).name
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if Path(r["source"]).resolve() != dst.resolve():
            shutil.copyfile(r["source"], dst)
        r["image"] = rel.as_posix()


def _definitions(judges: Sequence[Judge], hf_radius: float, stats_size: int | None = STATS_SIZE) -> list[str]:
    lines = [
        "- **target act.**: the target's value of the unit on the final image; **target p**: its softmax "
        "probability of the intended class; **target top-1 %**: how often that class is its first choice.",
        "- **judge top-1 % / top-5 %**: how often the judge ranks the intended class first / in its first five; "
        "**judge p**: its mean softmax probability of that class (class units only). Judges see the finished "
        "PNG, resized (antialiased) to their own input size; they never took part in making it.",
        "- **TV**: total variation, the mean over pixels and channels of sqrt(dx² + dy²) for pixel values in "
        "[0, 1] (0 for a constant image, 1.41 for a one-pixel black/white checkerboard, 0.02-0.06 for photos "
        "at 224 px).",
        f"- **HF energy**: the fraction of the image's spectral energy (per channel, mean removed) at radial "
        f"frequencies above {hf_radius:g} cycles/pixel ({hf_radius / 0.5:.0%} of Nyquist); "
        + ("photos at 224 px score 0.01-0.03, " if hf_radius == HF_RADIUS else "")
        + "a one-pixel checkerboard 1."
        + (f" Both are measured after resizing every image to {stats_size} px, so that images of different "
           f"sizes (e.g. a 64-px generator output) compare." if stats_size else
           " Compare it between images of the same size."),
        "- **grid**: the median over images of the spectral grid ratio (`dgnam.eval.stats.grid_ratio`): the "
        "luma's power on the spectral lines of an 8-px period divided by the power on the lines beside them, "
        "measured at the size the image was made. Photos score about 1 (median 0.96 over the shared 128-px "
        "validation photos); an 8-px grid, like the one a latent decoder draws from latents off its "
        "manifold, scores above (an 8-px grid of 5 % contrast over a photo-like image: 1.1-1.2).",
        "- **grid 4 px**: the same ratio on the lines of a 4-px period, the finer cross-hatch that can stay "
        "where the 8-px grid is gone (photos: median 0.98, 10th-90th percentile 0.86-1.10).",
        "- **diversity** (runs with samples=K): for each unit, the mean pairwise cosine distance of the first "
        "exported judge's penultimate (pooled) features over its K images, averaged over units; **photos' "
        "diversity**: what K photos of each class from `report.photos` score, the mean over every pair of the "
        "class's photos there (the expected value for K drawn at random; the shared validation split has 5 "
        "per class; over the comparison's 20 classes 0.31-0.53 per class, 0.411 on average).",
        "- **n**: images averaged (units × seeds); with several seeds, ± is the standard deviation over seeds "
        "of the per-seed value.",
    ]
    if judges:
        lines.append("- **judges**: " + "; ".join(
            f"`{j.name}` ({j.source}, input {j.input_size} px)" for j in judges))
    return lines


def _cell_text(rs: Sequence[Mapping[str, Any]], judge: str | None) -> str:
    tp = _mean([r.get("probability") for r in rs])
    jp = _mean([r.get(f"{judge}_prob") for r in rs]) if judge else None
    parts = []
    if tp is not None:
        parts.append(f"p={tp:.2f}")
    else:
        parts.append(f"act={_mean([r['activation'] for r in rs]):.2f}")
    if jp is not None:
        hits = sum(int(r.get(f"{judge}_top1") or 0) for r in rs)
        parts.append(f"J={jp:.2f}" + (" ✓" if hits * 2 > len(rs) else ""))
    return " ".join(parts)


def write_report(out: Path, rows: list[dict[str, Any]], summary: list[dict[str, Any]],
                 judges: Sequence[Judge], methods: Sequence[str], runs: Sequence[Path],
                 hf_radius: float = HF_RADIUS, stats_size: int | None = STATS_SIZE) -> dict[str, Path]:
    """Write report.md, report.html, grid.png, report.json/.csv and summary.json/.csv to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    _copy_images(rows, out)
    judge_names = [j.name for j in judges]
    first = judge_names[0] if judge_names else None
    grid = _grid(rows, methods, first, out)
    samples = _samples_grid(rows, methods, first, out)
    write_results(rows, out, name="report")
    write_results(summary, out, name="summary")
    table = _summary_table(summary, judge_names)
    units, cells = _cells(rows)
    labels = _labels(rows)
    targets = sorted({str(r.get("target")) for r in rows if r.get("target")})
    intro = (f"{len(rows)} images: {len(units)} units × {len(methods)} methods ({', '.join(methods)})"
             + (f", target {', '.join(targets)}" if targets else "") + f", from {len(runs)} runs.")
    cell_note = ("Per unit: the target's probability of the class (p; its activation for other units) and "
                 + (f"the judge `{first}`'s (J; ✓ when it ranks the class first for most seeds)" if first else "no judge")
                 + ", means over seeds.")
    cols = ["unit"] + list(methods)

    # Markdown
    md = ["# Activation maximization: methods compared", "", intro, "", "## Per method", "",
          _md_table(table), "", *_definitions(judges, hf_radius, stats_size), "",
          "## Side by side", "", "Rows are units, columns methods (lowest seed"
          + (f"; J = `{first}`'s probability of the class" if first else "") + ").", "",
          f"![grid]({grid.name})", "", *(["## Samples", "", "Each unit's samples (`samples=K`) in a row, "
          "captioned with the judge's probability of the class and its top-1 class.", "",
          f"![samples]({samples.name})", ""] if samples else []), "## Per unit", "", cell_note, ""]
    utable = [cols]
    for u in units:
        row = [labels[u]]
        for m in methods:
            rs = cells.get((u, m))
            row.append(f"[{_cell_text(rs, first)}]({rs[0]['image']})" if rs else "–")
        utable.append(row)
    md += [_md_table(utable), "", "Runs: " + ", ".join(f"`{r}`" for r in runs), ""]
    atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text("\n".join(md)))

    # HTML, self-contained
    def data_uri(path: str) -> str:
        return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")

    cells_html = []
    for u in units:
        tds = [f"<th>{html.escape(labels[u])}</th>"]
        for m in methods:
            rs = cells.get((u, m))
            if not rs:
                tds.append("<td>–</td>")
                continue
            pred = rs[0].get(f"{first}_pred") if first else None
            title = html.escape(f"{m}, seed {rs[0]['seed']}" + (f"; judge's top-1: {pred}" if pred else ""))
            tds.append(f'<td><img src="{data_uri(rs[0]["source"])}" title="{title}" width="160"><br>'
                       f"{html.escape(_cell_text(rs, first))}</td>")
        cells_html.append("<tr>" + "".join(tds) + "</tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    def plain(text: str) -> str:  # Markdown emphasis and code marks dropped
        return html.escape(text.replace("**", "").replace("`", ""))

    defs = "".join(f"<li>{plain(d[2:])}</li>" for d in _definitions(judges, hf_radius, stats_size))
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Activation maximization: methods compared</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 6px;text-align:center;font-size:13px}} th{{background:#f4f4f4}}
img{{display:block;margin:auto;image-rendering:auto}}</style></head><body>
<h1>Activation maximization: methods compared</h1>
<p>{html.escape(intro)}</p>
<h2>Per method</h2>
{_html_table(table)}
<ul>{defs}</ul>
<h2>Side by side</h2>
<p>{plain(cell_note)} Hover an image for its seed and the judge's top-1 class.</p>
<table><thead><tr>{head}</tr></thead><tbody>{''.join(cells_html)}</tbody></table>
<p>Runs: {html.escape(', '.join(str(r) for r in runs))}</p>
</body></html>
"""
    atomic_write(out / "report.html", lambda tmp: Path(tmp).write_text(page))
    return {"md": out / "report.md", "html": out / "report.html", "grid": grid,
            **({"samples": samples} if samples else {})}
