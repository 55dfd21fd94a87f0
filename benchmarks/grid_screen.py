"""Screen changes against the TAEF2 decoder's grid: DGN-AM through the default prior (method=dgnam_deep)
with one change to how the latent z = H(h) is made or penalized, on a few classes; prints one JSON line
(grid ratio per image and median, the shared judge's top-1 and p, the target's logits, the share of
latent values outside the real latents' range) and appends it to work_cache/grid/results.jsonl.

    python benchmarks/grid_screen.py none 9,99,281,409                      # no change
    python benchmarks/grid_screen.py clamp 9,99,281,409 Xmode=clamp         # z clamped per channel to the real range
    python benchmarks/grid_screen.py squash 9,99,281,409 Xmode=squash       # z squashed (tanh) into that range
    python benchmarks/grid_screen.py ppgn 9,99,281,409 Xdae=dgnam/priors/mobilenet_v2_latent_spatial_deep_code_dae.pt Xe1=0.3
    python benchmarks/grid_screen.py pen_grid 9,99,281,409 Xpen=grid Xlam=300   # penalty on the 8-px lines' power
    python benchmarks/grid_screen.py pen_cons 9,99,281,409 Xpen=cons Xlam=10    # ||Enc(Dec(z)) - z||^2 / std^2
    python benchmarks/grid_screen.py spin2 9,99,281,409 Xspin=2                 # cycle spinning: decodes over sub-cell shifts, averaged

Arguments after the units: X<key>=<value> options of this script, or visualize.py overrides. The table
in docs/ppgn.md came from these commands (its PPGN row from a DAE trained 1500 steps, val error 0.871).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import CONF, JUDGE  # noqa: E402

from dgnam.config import build  # noqa: E402
from dgnam.core import objectives as O  # noqa: E402
from dgnam.eval.judges import load_judge  # noqa: E402
from dgnam.eval.stats import grid_ratio  # noqa: E402
from dgnam.generator.latent_stats import load_latent_stats  # noqa: E402
from dgnam.io import save_png  # noqa: E402
from dgnam.views.am import compute_am  # noqa: E402


class Wrapped(torch.nn.Module):
    """The prior's generator with this screen's change to its latent z = H(h) (``opts``: the X options)."""

    def __init__(self, gen: torch.nn.Module, opts: dict[str, str], stats: dict[str, torch.Tensor],
                 encoder: torch.nn.Module | None) -> None:
        super().__init__()
        self.g, self.opts, self.encoder = gen, opts, encoder
        self.code_dim = getattr(gen, "code_dim", None)
        self.lo, self.hi, self.sd = stats["lo"], stats["hi"], stats["sd"]
        self.seen: list[torch.Tensor] = []

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        opts, z = self.opts, self.g.latent(h)
        mode = opts.get("mode", "none")
        if mode == "clamp":
            z = torch.maximum(torch.minimum(z, self.hi), self.lo)
        elif mode == "squash":  # soft clamp into the real range
            c, r = (self.hi + self.lo) / 2, (self.hi - self.lo) / 2
            z = c + r * torch.tanh((z - c) / r)
        elif mode == "blur":  # smooth the latent across cells
            k = float(opts.get("k", 0.5))
            zb = F.avg_pool2d(F.pad(z, (1, 1, 1, 1), mode="replicate"), 3, 1)
            z = (1 - k) * z + k * zb
        self.seen.append(z.detach())
        pen = opts.get("pen")
        if pen:
            img0 = self.g.decode(z) if opts.get("up") != "2" else None
            if pen == "cons":
                self.last_pen = ((self.encoder(img0) - z) / self.sd).pow(2).mean((1, 2, 3))
            elif pen == "grid":
                self.last_pen = grid_power(img0)
            return img0
        if "spin" in opts:  # cycle spinning: average decodes over sub-cell shifts of the latent
            return spin_decode(self.g.decode, z, int(opts["spin"]))
        if opts.get("up") == "2":
            zz = F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False)
            img = self.g.decode(zz)
            return F.interpolate(img, size=z.shape[-1] * 8, mode="bilinear", antialias=True, align_corners=False)
        return self.g.decode(z)


def shift_latent(z: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    """z moved by (dy, dx) cells (fractions allowed): bilinear, edges replicated."""
    _, _, h, w = z.shape
    ys = (torch.arange(h, dtype=z.dtype) - dy).clamp(0, h - 1)
    xs = (torch.arange(w, dtype=z.dtype) - dx).clamp(0, w - 1)
    y0, x0 = ys.floor().long(), xs.floor().long()
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    fy, fx = (ys - y0).view(1, 1, h, 1), (xs - x0).view(1, 1, 1, w)
    r = z[:, :, y0] * (1 - fy) + z[:, :, y1] * fy
    return r[..., x0] * (1 - fx) + r[..., x1] * fx


def spin_decode(decode, z: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of decode(z shifted by (a/n, b/n) cells) shifted back by (8a/n, 8b/n) px, a, b in 0..n-1."""
    cell, out = 8, 0
    for a in range(n):
        for b in range(n):
            img = decode(shift_latent(z, a / n, b / n))
            py, px = cell * a // n, cell * b // n
            if py or px:  # move back, replicating the last rows/columns
                img = F.pad(img, (0, px, 0, py), mode="replicate")[..., py:, px:]
            out = out + img
    return out / (n * n)


def grid_power(img: torch.Tensor) -> torch.Tensor:
    """Fraction of the luma's (Hann-windowed) power on the spectral lines of an 8-px period."""
    n = img.shape[-1]
    luma = 0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]
    luma = luma - luma.mean((-2, -1), keepdim=True)
    w = torch.hann_window(n, periodic=False)
    pw = torch.fft.fft2(luma * w.view(n, 1) * w.view(1, n)).abs().pow(2)
    lines = torch.zeros(n, n, dtype=torch.bool)
    idx = [k * n // 8 for k in range(1, 8)]
    lines[idx, :] = True
    lines[:, idx] = True
    return pw[:, lines].sum(1) / pw.flatten(1).sum(1).clamp_min(1e-12)


def main(argv: list[str]) -> None:
    torch.set_num_threads(2)
    name, units, extra = argv[0], [int(u) for u in argv[1].split(",")], argv[2:]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("visualize", overrides=["model=mobilenet_v2_shared", "method=dgnam_deep", "layers=logits",
                      f"units=[{','.join(map(str, units))}]", f"batch_size={len(units)}", "output.progress=false",
                      *[e for e in extra if "=" in e and not e.startswith("X")]])
    st = load_latent_stats(str(REPO / "dgnam/priors/taef2_latent_stats.pt"))
    stats = {"lo": st["low"].view(1, -1, 1, 1), "hi": st["high"].view(1, -1, 1, 1),
             "mu": st["mean"].view(1, -1, 1, 1), "sd": st["std"].view(1, -1, 1, 1)}
    opts = dict(e[1:].split("=", 1) for e in extra if e.startswith("X"))
    encoder = None
    if opts.get("pen") == "cons":
        from dgnam.generator.taef2 import TAEF2Encoder

        encoder = TAEF2Encoder(str(REPO.parent / "shared/models/taef2_encoder.pth")).eval().requires_grad_(False)
    base, lam, wrapped = build(cfg.param), float(opts.get("lam", 0)), []

    def factory(**kw):
        p = base(**kw)
        p.gen = Wrapped(p.gen, opts, stats, encoder)
        wrapped.append(p.gen)
        if opts.get("pen"):
            p.extra = lambda: {"code": p.code, "pen": getattr(p.gen, "last_pen", torch.zeros(p.code.shape[0]))}
            p.penalty = lambda: lam * O.Objective(lambda a: a["pen"], {"pen"}, "pen")
        return p

    t = time.time()
    extra_posts = []
    if "dae" in opts:
        from dgnam.core.poststeps import CodePrior
        from dgnam.generator.dae import load_dae
        from dgnam.generator.prior import load_prior

        _, info = load_prior(cfg.param.prior)
        dae = load_dae(opts["dae"], info["code_dim"])
        extra_posts.append(CodePrior(dae, float(opts.get("e1", 0)), float(opts.get("e3", 0)), info["code_std"].float(),
                                     torch.Generator().manual_seed(1)))
    am = compute_am(cfg, param_factory=factory, extra_post_steps=extra_posts)
    secs = time.time() - t
    imgs = am.images["logits"]
    judge = load_judge({"kind": "pt2", "path": str(JUDGE)})
    with torch.no_grad():
        pr = judge(imgs).softmax(-1)
    top1 = (pr.argmax(-1) == torch.tensor(units)).float()
    p = pr[torch.arange(len(units)), torch.tensor(units)]
    g = grid_ratio(imgs)
    z = wrapped[-1].seen[-1]
    lo, hi = stats["lo"], stats["hi"]
    out = {"name": name, "grid_median": g.median().item(), "grid": [round(v, 3) for v in g.tolist()],
           "top1": top1.mean().item(), "p": p.mean().item(), "act": [round(r["activation"], 1) for r in am.rows],
           "z_out_of_range": ((z < lo) | (z > hi)).float().mean().item(),
           "z_absstd": ((z - stats["mu"]) / stats["sd"]).abs().mean().item(), "s_per_image": secs / len(units)}
    print(json.dumps(out))
    d = REPO / "work_cache/grid" / name
    d.mkdir(parents=True, exist_ok=True)
    for u, im in zip(units, imgs):
        save_png(im, d / f"{u}.png")
    torch.save(z, d / "latents.pt")
    with open(REPO / "work_cache/grid/results.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
