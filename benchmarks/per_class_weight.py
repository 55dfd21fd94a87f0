"""A diversity weight per class, chosen by the target alone, from finished runs that differ only in it.

    python benchmarks/per_class_weight.py runs/cmp_facets_w10/report runs/cmp_facets_w20/report \
        runs/cmp_facets_w25/report runs/cmp_facets_w30/report [--layer features.16.add] [--alpha 0.8 0.9 1 1.1]

Each report folder is a comparison report (``experiment=compare method=ppgn samples=K init.kind=facets
diversity.weight=W``) of the same classes, seed and starts at another ``diversity.weight`` (read from each
run's ``.hydra/config.yaml``). The photos whose class evidence varies most need the most weight, and a
fixed weight gives every class the same; this asks whether choosing it per class moves the trade-off
between the judge's top-1 and the diversity measure. For each class and each ``alpha`` the rule keeps the
smallest weight whose K samples are at least ``alpha`` x as far apart (mean pairwise cosine distance of the
target's features at ``--layer``, averaged over positions) as the K start photos the facets chose; the
largest weight when none is. The judge only scores the result, with the report's numbers: its top-1 of
every kept sample and the diversity of its penultimate features, against the class's validation photos
(recomputed: the mean over all pairs of each class's photos, the report's current reference). Prints
one row per fixed weight and per ``alpha``, and how well the target's diversity of a class's starts
predicts the judge's diversity of its photos (Pearson r over the classes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prior_ceiling import compare_setup  # noqa: E402  (benchmarks/, beside this script)

from dgnam.api_views import compose_config  # noqa: E402
from dgnam.config import build_target_from_cfg  # noqa: E402
from dgnam.eval.diversity import class_photos, feature_space, pairwise_cosine_distance  # noqa: E402
from dgnam.io import load_image  # noqa: E402
from dgnam.views.facets import load_starts  # noqa: E402


def runs_by_weight(reports: list[Path]) -> dict[float, dict[int, list[dict]]]:
    """{diversity.weight: {unit: its class samples' report rows, by sample}} of the report folders."""
    out: dict[float, dict[int, list[dict]]] = {}
    for rep in reports:
        rows = [r for r in json.loads((rep / "report.json").read_text()) if r.get("kind") == "class"]
        cfg = OmegaConf.load(REPO / rows[0]["run"] / ".hydra" / "config.yaml")
        w = float(OmegaConf.select(cfg, "diversity.weight", default=0.0) or 0.0)
        units: dict[int, list[dict]] = {}
        for r in rows:
            units.setdefault(int(r["unit"]), []).append(r)
        out[w] = {u: sorted(v, key=lambda r: r["sample"]) for u, v in units.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", type=Path, help="report folders of runs that differ only in diversity.weight")
    ap.add_argument("--layer", default="features.16.add", help="the target's layer whose distances the rule compares")
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.8, 0.9, 1.0, 1.1, 1.2])
    args = ap.parse_args(argv)
    runs = runs_by_weight(args.reports)
    weights = sorted(runs)
    units = sorted(set.intersection(*(set(v) for v in runs.values())))
    _, judge, photo_files = compare_setup()
    target = build_target_from_cfg(compose_config(["experiment=compare"]), torch.device("cpu"))
    space = feature_space(judge)
    photos = class_photos(photo_files, units, 2)
    ref = {u: pairwise_cosine_distance(space(photos[u])) for u in units}

    @torch.no_grad()
    def spread(images: torch.Tensor) -> float:
        return pairwise_cosine_distance(target(images, [args.layer])[args.layer].float().flatten(2).mean(2))

    start, tdiv, named, jdiv = {}, {}, {}, {}
    for u in units:
        first = runs[weights[0]][u]
        starts = load_starts({"path": None}, [[{"facet_photo": r["facet_photo"]} for r in first]], 224)[0]
        start[u] = spread(starts)
        for w in weights:
            rows = runs[w][u]
            if [r["facet_photo"] for r in rows] != [r["facet_photo"] for r in first]:
                raise SystemExit(f"unit {u}: the runs at weights {weights[0]:g} and {w:g} start from other photos")
            tdiv[u, w] = spread(torch.stack([load_image(r["source"]) for r in rows]))
            named[u, w] = sum(int(r[f"{judge.name}_top1"]) for r in rows)  # the report's judge ...
            jdiv[u, w] = float(rows[0]["diversity"])  # ... and its diversity of the K samples
    k = len(runs[weights[0]][units[0]])
    photo = sum(ref.values()) / len(units)

    def row(name: str, pick: dict[int, float]) -> str:
        n = sum(named[u, pick[u]] for u in units)
        d = sum(jdiv[u, pick[u]] for u in units) / len(units)
        return f"| {name} | {100 * n / (k * len(units)):.1f} % | {d:.3f} | {100 * d / photo:.0f} % |"

    s, p = torch.tensor([start[u] for u in units]), torch.tensor([ref[u] for u in units])
    r = float(torch.corrcoef(torch.stack([s, p]))[0, 1])
    print(f"{len(units)} classes x {k} samples; the photos' diversity {photo:.3f}; the target's diversity of the "
          f"starts at {args.layer} against the judge's of the photos: r = {r:.2f}\n")
    print("| weight | judge top-1 | diversity | share of the photos' |")
    print("| --- | ---: | ---: | ---: |")
    for w in weights:
        print(row(f"{w:g} for every class", dict.fromkeys(units, w)))
    for a in args.alpha:
        pick = {u: next((w for w in weights if tdiv[u, w] >= a * start[u]), weights[-1]) for u in units}
        print(row(f"per class, alpha {a:g} (" + " ".join(f"{pick[u]:g}" for u in units) + ")", pick))


if __name__ == "__main__":
    main()
