"""The error of bf16 autocast against fp32 in one step of DGN-AM and of Lucid, on the real prior and target.

    python benchmarks/bf16_error.py                 # batch 4, the default prior, the shared MobileNetV2
    python benchmarks/bf16_error.py --device cuda --batch 32

For DGN-AM (``method=dgnam_deep``) the code is the run's start (h ~ N(0, 1), one draw) and codes drawn
uniformly in [0, upper] (where the clamp keeps them); for Lucid a random FFT image. Each is passed
through the prior (or the parameterization), the transforms and the target in fp32 and under bf16
autocast (``precision=bf16``: both the prior's decoder and the target), and the script prints the
largest and mean absolute difference of the image (in [0, 1]), the largest difference of the class
logits relative to the largest |logit|, and the cosine similarity of the gradient that reaches the
optimized tensor (what the optimizer follows; with the normalized DGN-AM step only its direction counts).
"""

from __future__ import annotations

import argparse

import torch
from torch.nn.functional import cosine_similarity

from dgnam.api_views import compose_config
from dgnam.config import build, build_priors, build_target_from_cfg, make_init
from dgnam.core import transforms as T
from dgnam.core.models import pick_device

UNITS = [1, 130, 323, 417, 950, 963, 980, 22]


def one_pass(method: str, precision: str, batch: int, device: torch.device, start: str, part: str = "all"):
    over = [f"precision={precision}"] if part == "all" else [f"{part}.precision={precision}"]
    cfg = compose_config(["model=mobilenet_v2_shared", f"method={method}", "precision=fp32", *over])
    target = build_target_from_cfg(cfg, device)
    g = torch.Generator().manual_seed(0)
    init = make_init(cfg.init, batch, int(cfg.image_size), 0).to(device)
    param = build(cfg.param)(init=init, noise=True, generator=g).to(device)
    if start == "inside the clamp":
        with torch.no_grad():
            u = torch.rand(param.code.shape, generator=torch.Generator().manual_seed(1)).to(device)
            param.code.copy_(u * param.upper)
    tfs, _, _ = build_priors(cfg.priors, torch.Generator().manual_seed(0), pixel=False)
    if cfg.get("input_resize"):
        tfs.append(T.Resize(int(cfg.input_resize)))
    image = param()
    logits = target(tfs(image), ["logits"])["logits"]
    units = torch.tensor((UNITS * batch)[:batch], device=device)
    logits[torch.arange(batch), units].sum().backward()
    raw = next(p for p in param.parameters() if p.requires_grad)
    return image.detach().float().cpu(), logits.detach().float().cpu(), raw.grad.detach().float().cpu()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--parts", nargs="+", default=["all"], choices=["all", "param", "model"],
                    help="what runs in bf16: all, or only the prior (param) or only the target (model)")
    args = ap.parse_args()
    device = pick_device(args.device)
    print(f"# bf16 autocast against fp32, batch {args.batch}, {device}, torch {torch.__version__}")
    print("| method | in bf16 | start | image max abs err | image mean abs err | logits max rel err | top-1 agree | "
          "grad cosine (min over items) |")
    print("|---|---|---|---|---|---|---|---|")
    runs = [(m, s, part) for part in args.parts
            for m, starts in (("dgnam_deep", ["noise (the run's start)", "inside the clamp"]), ("lucid", ["noise"]))
            for s in starts if not (m == "lucid" and part == "param")]
    for method, start, part in runs:
        i32, l32, g32 = one_pass(method, "fp32", args.batch, device, start)
        i16, l16, g16 = one_pass(method, "bf16", args.batch, device, start, part)
        d = (i16 - i32).abs()
        rel = ((l16 - l32).abs().amax(1) / l32.abs().amax(1)).max()
        agree = (l16.argmax(1) == l32.argmax(1)).float().mean()
        cos = cosine_similarity(g16.flatten(1), g32.flatten(1), dim=1).min()
        what = {"all": "prior and target", "param": "prior", "model": "target"}[part]
        print(f"| {method} | {what} | {start} | {d.max():.4f} | {d.mean():.5f} | {rel:.4f} | {agree:.2f} | {cos:.4f} |",
              flush=True)


if __name__ == "__main__":
    main()
