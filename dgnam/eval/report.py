"""The comparison report: the same units through several methods, judged by networks that did not
make the images.

Input: run directories of ``visualize.py`` (mode ``am``: a ``results.json`` and a PNG per unit), or
Hydra multirun sweep directories holding numbered job directories. Output, in one directory:

- ``report.md`` (tables, the grid, links to the PNGs copied under ``images/``) and ``report.html``
  (the same, self-contained: every image inline as a base64 data URI);
- ``grid.png``: rows = units, columns = methods (the lowest seed of each);
- ``report.json`` / ``report.csv``: one row per image; ``summary.json`` / ``summary.csv``: one row
  per method.

Per image: the target's activation and probability (from the run), each judge's top-1 and top-5 hit
and its probability for the intended class (class units only), and two image statistics,
:func:`total_variation` and :func:`high_frequency_energy`. Judges score finished images only: they
never enter an objective.

Build one from Python with :func:`build_report`, from the command line with
``python visualize.py experiment=report report.runs=[DIR,...]``, or at the end of a multirun with
:class:`ReportCallback` (``conf/experiment/compare.yaml``).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import shutil
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from dgnam.cli import atomic_write
from dgnam.errors import DgnamError, first_line
from dgnam.core.images import resize_crop
from dgnam.core.images import total_variation as image_tv
from dgnam.io import labelled_grid, load_image, safe_name, save_png, write_results
from dgnam.eval.judges import Judge, load_judge

log = logging.getLogger(__name__)

DEFAULT_METHODS_ORDER = ("pixel", "yosinski", "lucid", "dgnam")
HF_RADIUS = 0.25  # cycles per pixel: half the Nyquist frequency
STATS_SIZE = 224  # images are resized to this side before TV and HF energy, so that sizes compare
REQUIRED_KEYS = ("method", "seed", "layer", "unit", "kind", "image")


def default_judges() -> list[dict[str, Any]]:
    """The shared independent judge (MobileNetV1 0.5/160) beside the checkout."""
    shared = os.environ.get("DGNAM_SHARED", "../shared")
    return [{"kind": "pt2", "name": "mobilenet_v1_160",
             "path": f"{shared}/models/judge_mobilenet_v1_0.5_160.pt2", "input_size": 160}]


# ----------------------------------------------------------------------------------------------
# Image statistics


def total_variation(images: Tensor) -> Tensor:
    """Mean gradient magnitude: (B, C, H, W) in [0, 1] -> (B,).

    ``TV = mean over c, i < H-1, j < W-1 of sqrt((x[c,i,j+1] - x[c,i,j])^2 + (x[c,i+1,j] - x[c,i,j])^2)``
    (isotropic, per pixel and channel, in [0, sqrt 2]); the same as
    ``dgnam.core.objectives.total_variation(beta=1)`` without its smoothing epsilon. A constant image has 0.
    """
    return image_tv(images.float(), beta=1.0)


def high_frequency_energy(images: Tensor, radius: float = HF_RADIUS) -> Tensor:
    """Fraction of spectral energy above ``radius`` cycles/pixel: (B, C, H, W) -> (B,) in [0, 1].

    Per channel, the mean is removed and the power spectrum ``|DFT2(x)|^2`` taken; with radial
    frequency ``f = sqrt(fx^2 + fy^2)`` (``fx, fy`` in [-0.5, 0.5) cycles per pixel),
    ``HF = sum over channels and f > radius of power / sum over channels of power``. With the
    default ``radius = 0.25`` (half the Nyquist frequency), photos at 224 px score 0.01-0.03 and a
    one-pixel checkerboard 1. A constant image has no energy and scores 0. The number depends on
    the resolution: compare images of the same size.
    """
    x = images.double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2)  # (B, C, H, W)
    h, w = x.shape[-2:]
    fy = torch.fft.fftfreq(h, dtype=torch.float64).view(h, 1)
    fx = torch.fft.fftfreq(w, dtype=torch.float64).view(1, w)
    high = (fx.pow(2) + fy.pow(2)).sqrt() > radius  # (H, W)
    total = power.flatten(1).sum(1)
    hf = (power * high).flatten(1).sum(1)
    return torch.where(total > 1e-12 * h * w, hf / total.clamp_min(1e-300), torch.zeros_like(total)).float()


# ----------------------------------------------------------------------------------------------
# Gathering runs


def find_run_dirs(path: str | os.PathLike) -> list[Path]:
    """A run directory (it holds ``results.json``) -> ``[path]``; a sweep directory -> its job
    directories that hold one, in job order (numbered ones by number)."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_dir():
        raise DgnamError(f"run directory not found: {p}")
    if (p / "results.json").is_file():
        return [p]
    jobs = [d for d in p.iterdir() if d.is_dir() and (d / "results.json").is_file()]
    if not jobs:
        raise DgnamError(f"no results.json in {p} nor in its job directories; give run directories of "
                         "visualize.py (mode am) or a multirun sweep directory")
    return sorted(jobs, key=lambda d: (0, int(d.name), "") if d.name.isdigit() else (1, 0, d.name))


def _run_model(run: Path) -> dict[str, Any]:
    """The target recorded in a run's ``.hydra/config.yaml`` (arch and weights file), if any."""
    cfg_file = run / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        return {}
    try:
        cfg = OmegaConf.load(cfg_file)
        arch = OmegaConf.select(cfg, "model.arch", default=None)
        try:
            wfile = OmegaConf.select(cfg, "model.weights_file", default=None)
        except Exception:  # an interpolation that cannot be resolved here
            wfile = None
        return {"arch": arch, "weights_file": wfile}
    except Exception:
        return {}


def gather_rows(runs: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows of every ``results.json`` under ``runs`` (run or sweep directories), each with
    ``run`` (its directory), ``source`` (the PNG's absolute path) and ``target`` (the arch, if
    recorded). Rows without a PNG are skipped; a later duplicate (same method, seed, layer, unit)
    replaces an earlier one."""
    rows: dict[tuple, dict[str, Any]] = {}
    dirs = [d for r in runs for d in find_run_dirs(r)]
    if not dirs:
        raise DgnamError("no runs given; e.g. report.runs=[outputs/am/2026-01-01_12-00-00]")
    skipped = replaced = 0
    for d in dirs:
        res_file = d / "results.json"
        try:
            data = json.loads(res_file.read_text())
        except (OSError, ValueError) as e:
            raise DgnamError(f"cannot read {res_file}: {first_line(e, 120)}") from None
        if not isinstance(data, list):
            raise DgnamError(f"{res_file} holds a {type(data).__name__}, not a list of result rows")
        model = _run_model(d)
        for row in data:
            missing = [k for k in REQUIRED_KEYS if k not in row]
            if missing:
                raise DgnamError(f"{res_file}: a row lacks the key {missing[0]!r} (is it from mode=am?)")
            if not row["image"]:
                skipped += 1
                continue
            src = (d / row["image"]).resolve()
            if not src.is_file():
                raise DgnamError(f"image {src} named in {res_file} not found")
            key = (row["method"], int(row["seed"]), str(row["layer"]), int(row["unit"]), row["kind"])
            replaced += key in rows
            rows[key] = {**row, "run": str(d), "source": str(src), "target": model.get("arch"),
                         "_weights_file": model.get("weights_file")}
    if skipped:
        log.warning("%d rows without a PNG (output.png=false) skipped", skipped)
    if replaced:
        log.warning("%d duplicate rows (same method, seed, layer, unit) replaced by later runs", replaced)
    return list(rows.values())


def order_methods(methods: Iterable[str], order: Sequence[str] | None = None) -> list[str]:
    """Methods named in ``order`` first, in that order; the others after, alphabetically."""
    order = list(order) if order is not None else list(DEFAULT_METHODS_ORDER)
    present = set(methods)
    return [m for m in order if m in present] + sorted(present - set(order))


def _unit_key(row: Mapping[str, Any]) -> tuple:
    return (str(row["layer"]), row["kind"], int(row["unit"]))


# ----------------------------------------------------------------------------------------------
# Scoring


def _check_independent(specs: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> None:
    """A judge must not be the target: refuse a judge spec naming the target's weights file."""
    target_files = set()
    for r in rows:
        if r.get("_weights_file"):
            try:
                target_files.add(Path(str(r["_weights_file"])).resolve())
            except (OSError, RuntimeError):
                pass
    for spec in specs:
        f = spec.get("weights_file") or spec.get("path")
        if f and Path(os.path.expanduser(str(f))).resolve() in target_files:
            raise DgnamError(f"judge {spec.get('name') or f} uses the target's weights file {f}; a judge must be "
                             "a network trained apart from the target")


@torch.no_grad()
def score_rows(rows: Sequence[dict[str, Any]], judges: Sequence[Judge], hf_radius: float = HF_RADIUS,
               stats_size: int | None = STATS_SIZE) -> list[dict[str, Any]]:
    """Per-image rows: the run's numbers plus ``tv``, ``hf_energy`` and, per judge ``J``,
    ``J_top1``/``J_top5`` (1 if the intended class is among its first 1 / 5, class units only),
    ``J_prob`` (its softmax probability of the intended class) and ``J_pred`` (its top-1 class).
    TV and HF energy are measured on the image resized (antialiased) to ``stats_size`` (None: as is),
    so that a 64-px generator output and a 224-px pixel-space image are measured alike."""
    from dgnam.core.models import imagenet_categories

    cats = imagenet_categories()
    images = [load_image(r["source"]) for r in rows]
    out: list[dict[str, Any]] = []
    for r, img in zip(rows, images):
        o = {k: v for k, v in r.items() if not k.startswith("_")}
        if o["kind"] == "class" and "top1" in o:
            o["target_top1"] = int(int(o["top1"]) == int(o["unit"]))
        simg = resize_crop(img, int(stats_size)) if stats_size and img.shape[-1] != stats_size else img
        o["tv"] = float(total_variation(simg[None])[0])
        o["hf_energy"] = float(high_frequency_energy(simg[None], hf_radius)[0])
        o["size"] = int(img.shape[-1])
        out.append(o)
    for judge in judges:
        # group by image size so each group is one batch through the judge
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_size.setdefault(tuple(img.shape[-2:]), []).append(i)
        for idx in by_size.values():
            logits = judge(torch.stack([images[i] for i in idx]))  # (n, 1000)
            probs = logits.softmax(-1)
            top5 = probs.topk(5, dim=-1).indices
            for j, i in enumerate(idx):
                o = out[i]
                pred = int(top5[j, 0])
                o[f"{judge.name}_pred"] = f"{pred} {cats[pred]}" if pred < len(cats) else str(pred)
                if o["kind"] == "class":
                    u = int(o["unit"])
                    o[f"{judge.name}_top1"] = int(pred == u)
                    o[f"{judge.name}_top5"] = int(u in top5[j].tolist())
                    o[f"{judge.name}_prob"] = float(probs[j, u])
    return out


# ----------------------------------------------------------------------------------------------
# Aggregation


def _mean(vals: Sequence[float]) -> float | None:
    vals = [float(v) for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def _seed_sd(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """Standard deviation over seeds of the per-seed mean of ``key`` (None with one seed)."""
    per_seed: dict[int, list[float]] = {}
    for r in rows:
        if r.get(key) is not None:
            per_seed.setdefault(int(r["seed"]), []).append(float(r[key]))
    means = [sum(v) / len(v) for v in per_seed.values()]
    return statistics.stdev(means) if len(means) > 1 else None


def summarize(rows: Sequence[Mapping[str, Any]], judge_names: Sequence[str],
              methods_order: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per method (in ``methods_order``): counts and means over all its images (units x
    seeds). Percentages are in [0, 100]; ``*_sd`` is the spread over seeds of the per-seed mean."""
    out = []
    for m in order_methods({r["method"] for r in rows}, methods_order):
        rs = [r for r in rows if r["method"] == m]
        cls = [r for r in rs if r["kind"] == "class"]
        s: dict[str, Any] = {
            "method": m, "images": len(rs), "units": len({_unit_key(r) for r in rs}),
            "seeds": len({int(r["seed"]) for r in rs}), "class_images": len(cls),
            "activation": _mean([r["activation"] for r in rs]),
            "probability": _mean([r.get("probability") for r in cls]),
            "target_top1_pct": _pct([r.get("target_top1") for r in cls]),
        }
        for j in judge_names:
            s[f"{j}_top1_pct"] = _pct([r.get(f"{j}_top1") for r in cls])
            s[f"{j}_top1_pct_sd"] = _scale(_seed_sd(cls, f"{j}_top1"), 100)
            s[f"{j}_top5_pct"] = _pct([r.get(f"{j}_top5") for r in cls])
            s[f"{j}_prob"] = _mean([r.get(f"{j}_prob") for r in cls])
        s["tv"] = _mean([r["tv"] for r in rs])
        s["hf_energy"] = _mean([r["hf_energy"] for r in rs])
        s["seconds"] = _mean([r.get("seconds") for r in rs])
        out.append(s)
    return out


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
    head += ["TV", "HF energy", "s / image"]
    table = [head]
    for s in summary:
        n = f"{s['images']} ({s['units']} × {s['seeds']})"
        row = [s["method"], n, _fmt(s["activation"], 2), _fmt(s["probability"]), _fmt(s["target_top1_pct"], 1)]
        for j in judge_names:
            top1 = _fmt(s[f"{j}_top1_pct"], 1)
            if s.get(f"{j}_top1_pct_sd") is not None:
                top1 += f" ± {s[f'{j}_top1_pct_sd']:.1f}"
            row += [top1, _fmt(s[f"{j}_top5_pct"], 1), _fmt(s[f"{j}_prob"])]
        row += [_fmt(s["tv"]), _fmt(s["hf_energy"]), _fmt(s["seconds"], 1)]
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
    return {_unit_key(r): str(r.get("label") or r["unit"]) for r in rows}


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
          f"![grid]({grid.name})", "", "## Per unit", "", cell_note, ""]
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
    return {"md": out / "report.md", "html": out / "report.html", "grid": grid}


def build_report(runs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                 judges: Sequence[Mapping[str, Any] | Judge] | None = None,
                 methods_order: Sequence[str] | None = None, hf_radius: float = HF_RADIUS,
                 stats_size: int | None = STATS_SIZE) -> dict[str, Any]:
    """Gather the runs, score every image, and write the report into ``out_dir``.

    ``judges``: judge specs (see :func:`dgnam.eval.judges.load_judge`) or loaded :class:`Judge` objects;
    ``None`` means the shared judge (:func:`default_judges`), ``[]`` no judge.
    Returns ``{"out_dir", "results": per-image rows, "summary": per-method rows, "files"}``.
    """
    out = Path(out_dir)
    rows = gather_rows(runs)
    if not rows:
        raise DgnamError(f"the runs {', '.join(map(str, runs))} hold no images to report on")
    wanted = default_judges() if judges is None else list(judges)
    _check_independent([j for j in wanted if not isinstance(j, Judge)], rows)
    loaded = [j if isinstance(j, Judge) else load_judge(j) for j in wanted]
    names = [j.name for j in loaded]
    if len(set(names)) != len(names):
        raise DgnamError(f"two judges share a name ({', '.join(names)}); give each a distinct name")
    scored = score_rows(rows, loaded, hf_radius, stats_size)
    methods = order_methods({r["method"] for r in scored}, methods_order)
    summary = summarize(scored, names, methods)
    dirs = list(dict.fromkeys(Path(r["run"]) for r in scored))
    files = write_report(out, scored, summary, loaded, methods, dirs, hf_radius, stats_size)
    return {"out_dir": str(out), "results": scored, "summary": summary, "files": files}


# ----------------------------------------------------------------------------------------------
# Entry points: visualize.py mode=report and the multirun callback


def _plain(x: Any) -> Any:
    return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else x


def _report_args(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    rc = cfg.get("report") or {}
    judges = _plain(rc.get("judges")) if "judges" in rc else None
    order = _plain(rc.get("methods_order")) if rc.get("methods_order") is not None else None
    size = rc.get("stats_size", STATS_SIZE)
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise DgnamError(f"report.stats_size={size!r} must be a positive integer (pixels) or null")
    return {"judges": judges, "methods_order": order, "hf_radius": float(rc.get("hf_radius") or HF_RADIUS),
            "stats_size": size}


def run_report(cfg: DictConfig, out_dir: str | Path) -> dict:
    """``visualize.py mode=report``: the report over ``cfg.report.runs`` into ``out_dir``."""
    runs = _plain(OmegaConf.select(cfg, "report.runs", default=None))
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    if not runs:
        raise DgnamError("report.runs is empty; give run or sweep directories, e.g. "
                         "report.runs=[multirun/compare/2026-01-01_12-00-00]")
    res = build_report(runs, out_dir, **_report_args(cfg))
    log.info("report: %s", res["files"]["html"])
    return res


class ReportCallback(Callback):
    """Build the report over the sweep directory when a Hydra multirun ends.

    Reads ``report.judges``, ``report.methods_order``, ``report.hf_radius`` and ``report.stats_size`` from the job config
    (defaults when absent) and writes into ``<hydra.sweep.dir>/<subdir>``. Enable it with::

        hydra:
          callbacks:
            report:
              _target_: dgnam.eval.report.ReportCallback
    """

    def __init__(self, subdir: str = "report") -> None:
        self.subdir = subdir

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        try:
            res = build_report([sweep], sweep / self.subdir, **_report_args(config))
        except DgnamError as e:
            print(f"error: report: {e}", file=sys.stderr)
            sys.exit(2)
        print(f"report over {len(res['results'])} images: {res['files']['md']} and {res['files']['html']}")
