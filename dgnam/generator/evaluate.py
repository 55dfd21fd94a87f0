"""Evaluate a trained prior on held-out photos and draw its loss curves and sample grids.

    python -m dgnam.generator.evaluate --prior dgnam/priors/mobilenet_v2_pool_g64.pt \\
        --val '../shared/data/imagenet50-128/valid-*.parquet' --limit 1000 \\
        --metrics outputs/train_generator/mobilenet_v2_cpu/csv/metrics.csv --out docs/img

Reported (on ``limit`` validation photos, evenly spread, i.e. one per class for 1000 of
imagenet50-128): pixel MSE and PSNR of G(E(x)) against x at the generator's resolution, next to the
mean training image as a baseline; the comparator's feature error; how often the encoder's own
network gives x and G(E(x)) the same top-1 class (and the same for the mean image); the median grid
ratio of G(E(x)) at the 8-px and 4-px periods beside the photos' (``grid_recon_median``,
``grid4_recon_median``, ``grid_photo_median``, ``grid4_photo_median``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dgnam.cli import one_line_errors
from dgnam.core.images import mse_to_psnr, resize
from dgnam.eval.stats import FINE_GRID_PERIOD, GRID_PERIOD, grid_ratio
from dgnam.generator.data import ImageDataset, open_source
from dgnam.generator.encoder import Comparator, Encoder
from dgnam.generator.prior import load_prior, prior_encoder


def _psnr(mse_per_item: Tensor) -> float:
    return float(mse_to_psnr(mse_per_item).mean())


@torch.no_grad()
def photo_predictions(target: Any, photos: Tensor, res: int, batch_size: int = 50) -> tuple[Tensor, Tensor]:
    """Top-1 classes of the photos and of the photos resized to ``res``, both classified at the
    target's input size: (N,), (N,)."""
    px, pr = [], []
    size = target.input_size
    with torch.no_grad():
        for i in range(0, photos.shape[0], batch_size):
            x = photos[i: i + batch_size]
            px.append(target(resize(x, size), ["logits"])["logits"].argmax(1))
            pr.append(target(resize(resize(x, res), size), ["logits"])["logits"].argmax(1))
    return torch.cat(px), torch.cat(pr)


def evaluate(generator: torch.nn.Module, encoder: Encoder, comparator: Comparator | None, photos: Tensor,
             labels: Tensor, mean_image: Tensor, batch_size: int = 50,
             photo_preds: tuple[Tensor, Tensor] | None = None) -> dict[str, Any]:
    """Metrics of G(E(x)) on ``photos`` (N, 3, S, S) in [0, 1] (the full-size originals).

    E sees the photos at its own input size; reconstructions are compared with the photos resized to
    G's resolution; classification runs the encoder's network on images resized to its input size.
    ``photo_preds``: :func:`photo_predictions` computed earlier (they do not depend on G)."""
    target = encoder.target
    res = generator.resolution
    cls_size = target.input_size
    logits_layer = "logits"
    grid_keys = [f"{tag}_{name}" for tag in ("grid", "grid4") for name in ("recon", "photo")]
    out: dict[str, list[Tensor]] = {k: [] for k in ("mse", "mse_mean", "feat", "feat_mean", "feat_norm", "pred_g",
                                                     *grid_keys)}
    m = mean_image[None]  # (1, 3, R, R)
    if photo_preds is None:
        photo_preds = photo_predictions(target, photos, res, batch_size)
    pred_m = target(resize(m, cls_size), [logits_layer])[logits_layer].argmax(1)  # (1,)
    for i in range(0, photos.shape[0], batch_size):
        x = photos[i: i + batch_size]
        xr = resize(x, res)  # (B, 3, R, R)
        g = generator(encoder(x)).float().clamp(0, 1)
        out["mse"].append((g - xr).pow(2).flatten(1).mean(1))
        for name, imgs in (("recon", g), ("photo", xr)):  # how much of a decoder's grid G draws from real codes
            out[f"grid_{name}"].append(grid_ratio(imgs, GRID_PERIOD))
            out[f"grid4_{name}"].append(grid_ratio(imgs, FINE_GRID_PERIOD))
        out["mse_mean"].append((m - xr).pow(2).flatten(1).mean(1))
        if comparator is not None:
            fx = comparator(xr)
            out["feat"].append((comparator(g) - fx).pow(2).flatten(1).sum(1))
            out["feat_mean"].append((comparator(m.expand_as(xr)) - fx).pow(2).flatten(1).sum(1))
            out["feat_norm"].append(fx.pow(2).flatten(1).sum(1))
        out["pred_g"].append(target(resize(g, cls_size), [logits_layer])[logits_layer].argmax(1))
    cat = {k: torch.cat(v) if v else None for k, v in out.items()}
    px, cat["pred_xr"] = photo_preds
    cat["pred_m"] = pred_m.expand_as(px)
    res_d: dict[str, Any] = {
        "n": int(photos.shape[0]), "resolution": res,
        "pixel_mse": float(cat["mse"].mean()), "pixel_mse_mean_image": float(cat["mse_mean"].mean()),
        "psnr_db": _psnr(cat["mse"]), "psnr_db_mean_image": _psnr(cat["mse_mean"]),
        "top1_agree_recon": float((cat["pred_g"] == px).float().mean()),
        "top1_agree_mean_image": float((cat["pred_m"] == px).float().mean()),
        "top1_agree_downsampled_photo": float((cat["pred_xr"] == px).float().mean()),
        "top1_photo_vs_label": float((px == labels).float().mean()),
        "top1_recon_vs_label": float((cat["pred_g"] == labels).float().mean()),
        "top1_downsampled_vs_label": float((cat["pred_xr"] == labels).float().mean()),
        **{f"{k}_median": float(cat[k].nanmedian()) for k in grid_keys},
    }
    if cat["feat"] is not None:
        res_d.update({
            "feature_rel_error": float((cat["feat"] / cat["feat_norm"]).mean()),
            "feature_rel_error_mean_image": float((cat["feat_mean"] / cat["feat_norm"]).mean()),
            "feature_mse": float(cat["feat"].mean() / comparator_numel(comparator, res)),
            "feature_mse_mean_image": float(cat["feat_mean"].mean() / comparator_numel(comparator, res)),
        })
    return res_d


@torch.no_grad()
def judge_scores(judge: Any, generator: torch.nn.Module, encoder: Encoder, photos: Tensor, labels: Tensor,
                 batch_size: int = 50) -> dict[str, float]:
    """An independent classifier's top-1 accuracy against the true labels on the photos, on the photos
    resized to G's resolution (the best a G of that resolution can do) and on G(E(x))."""
    res = generator.resolution
    hits = {"photo": [], "downsampled_photo": [], "recon": []}
    for i in range(0, photos.shape[0], batch_size):
        x, y = photos[i: i + batch_size], labels[i: i + batch_size]
        g = generator(encoder(x)).float().clamp(0, 1)
        for key, imgs in (("photo", x), ("downsampled_photo", resize(x, res)), ("recon", g)):
            hits[key].append(judge(imgs).argmax(1) == y)
    return {f"judge_top1_{k}": float(torch.cat(v).float().mean()) for k, v in hits.items()}


def comparator_numel(comparator: Comparator, res: int) -> int:
    return math.prod(comparator.target.layer_shape(comparator.layer, comparator.input_size or res))


def load_photos(source: Any, limit: int | None, size: int) -> tuple[Tensor, Tensor]:
    """Central squares of the photos at ``size`` (N, 3, size, size) and their labels (N,)."""
    ds = ImageDataset(open_source(source, limit), resolution=size, train=False)
    items = [it for it in (ds[i] for i in range(len(ds))) if it is not None]
    return torch.stack([it["image"] for it in items]), torch.tensor([it["label"] for it in items])


def sample_grid(generator: torch.nn.Module, encoder: Encoder, photos: Tensor, n: int = 32, per_row: int = 8) -> Tensor:
    """Rows alternate: ``per_row`` photos, then their reconstructions below. (3, H, W) in [0, 1]."""
    from torchvision.utils import make_grid

    res = generator.resolution
    with torch.no_grad():
        x = resize(photos[:n], res)
        g = generator(encoder(photos[:n])).float().clamp(0, 1)
    rows = []
    for i in range(0, x.shape[0], per_row):
        rows += [x[i: i + per_row], g[i: i + per_row]]
    return make_grid(torch.cat(rows), nrow=per_row, padding=2, pad_value=1.0)


def plot_curves(metrics_csv: str | Path, path: str | Path, max_step: int | None = None) -> None:
    """Training loss terms and validation MSE against the iteration, from Lightning's metrics.csv
    (up to ``max_step``, e.g. the exported checkpoint's, when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_csv) as f:
        rows = [r for r in csv.DictReader(f) if max_step is None or int(r["step"]) <= max_step]
    def series(key: str) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for r in rows:
            if r.get(key) not in (None, ""):
                xs.append(int(r["step"]))
                ys.append(float(r[key]))
        return xs, ys

    keys = [k for k in ("train/image", "train/latent", "train/feature", "train/perceptual", "train/adversarial", "train/total")
            if rows and k in rows[0]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k in keys:
        xs, ys = series(k)
        if xs:
            axes[0].plot(xs, ys, label=k, lw=0.8)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("optimizer step")
    axes[0].set_title("training loss terms (unweighted)")
    axes[0].legend()
    for k in ("train/mse", "val/mse", "val/latent_mse"):
        xs, ys = series(k)
        if xs:
            axes[1].plot(xs, ys, label=k, lw=0.8 if k == "train/mse" else 2, marker=None if k == "train/mse" else "o")
    axes[1].set_xlabel("optimizer step")
    axes[1].set_title("pixel MSE (images in [0, 1])")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@one_line_errors
def main(argv: list[str] | None = None) -> dict[str, Any]:
    from torchvision.utils import save_image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", required=True)
    ap.add_argument("--val", required=True, help="validation photos: Parquet glob or image folder")
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--photo-size", type=int, default=128, help="side of the originals (E's input before its resize)")
    ap.add_argument("--weights-file", help="the encoder's weights file (default: ../shared/models/<name>)")
    ap.add_argument("--comparator", default=None, help="comparator layer (default: from the prior's config)")
    ap.add_argument("--mean-image", help="a .pt tensor (3, R, R); default: mean of the validation photos")
    ap.add_argument("--metrics", help="Lightning metrics.csv for the loss curves")
    ap.add_argument("--max-step", type=int, help="plot the curves up to this step (e.g. the exported checkpoint's)")
    ap.add_argument("--out", default="outputs/evaluate",
                    help="folder for the sample grid (and the curves); docs/img for the published figures")
    ap.add_argument("--prefix", default="generator_")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--judge", help="an independent classifier (.pt2, RGB in [0, 1], 1000 logits): its top-1 "
                    "accuracy on the photos and on the reconstructions")
    ap.add_argument("--judge-size", type=int, default=160, help="the judge's input side")
    ap.add_argument("--photo-preds", help="cache file for the photos' own top-1 classes (computed once)")
    ap.add_argument("--only-photo-preds", action="store_true", help="compute the photo predictions and stop")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    g, info = load_prior(a.prior)
    enc = prior_encoder(info, a.weights_file, a.prior)
    target = enc.target
    cfg = info["extra"].get("config", {})
    comp_layer = a.comparator or cfg.get("encoder", {}).get("comparator_layer")
    comp_size = cfg.get("encoder", {}).get("comparator_input_size") or info["resolution"]
    comp = Comparator(target, comp_layer, comp_size) if comp_layer else None
    photos, labels = load_photos(a.val, a.limit, a.photo_size)
    mean_image = (torch.load(a.mean_image, weights_only=True) if a.mean_image
                  else resize(photos, info["resolution"]).mean(0))
    preds = None
    if a.photo_preds and Path(a.photo_preds).is_file():
        preds = tuple(torch.load(a.photo_preds, weights_only=True))
    if preds is None or a.only_photo_preds:
        preds = photo_predictions(target, photos, info["resolution"])
        if a.photo_preds:
            torch.save(list(preds), a.photo_preds)
        if a.only_photo_preds:
            return {}
    res = evaluate(g, enc, comp, photos, labels, mean_image, photo_preds=preds)
    if a.judge:
        from dgnam.eval.judges import load_judge

        res.update(judge_scores(load_judge({"kind": "pt2", "path": a.judge, "input_size": a.judge_size}),
                                g, enc, photos, labels))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    save_image(sample_grid(g, enc, photos[:: max(1, len(photos) // 32)][:32]), out / f"{a.prefix}samples.png")
    if a.metrics:
        plot_curves(a.metrics, out / f"{a.prefix}curves.png", a.max_step)
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
