"""The code prior of PPGN-h (Nguyen et al., CVPR 2017): a denoising autoencoder R on the generator's
code h, trained on the codes E(x) of real photos.

R learns to undo Gaussian noise on real codes, so ``R(h) - h`` points from ``h`` towards where real
codes lie (for small noise it is proportional to the gradient of log p(h), Alain & Bengio 2014). The
PPGN sampler adds ``e1 * (R(h) - h)`` to every DGN-AM step (:class:`CodePrior`).

R works on a spatial code (C, s, s), e.g. the shared MobileNetV2's features.14.conv.0 (576 x 8 x 8),
in standardized units (each code unit minus its mean over real photos, divided by its std): a 1 x 1
convolution to ``width`` channels, ``depth`` 3 x 3 convolutions with LeakyReLU, a 1 x 1 convolution
back to C, added to the noisy input (a residual denoiser).

Training (:func:`train_dae`) is a Lightning run over cached codes with checkpoints and resume; the
file it exports holds plain tensors and a description, read with ``weights_only=True`` and checked
key by key and shape by shape (:func:`load_dae`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dgnam.errors import DgnamError, DgnamValueError

FORMAT = "dgnam-code-dae"


class CodeDAE(nn.Module):
    """R: codes (B, C*s*s) -> denoised codes (B, C*s*s), for a spatial code of shape (C, s, s).

    Args:
        shape: the code's (C, s, s).
        mean, std: (C*s*s,) statistics of real codes (the prior's ``code_mean``, ``code_std``).
        width, depth: hidden channels and the number of 3 x 3 convolutions.
        noise: the std of the Gaussian noise R was trained to remove, in standardized units.
    """

    def __init__(self, shape: tuple[int, int, int], mean: Tensor, std: Tensor, width: int = 128, depth: int = 2,
                 noise: float = 1.0) -> None:
        super().__init__()
        c, h, w = (int(v) for v in shape)
        if mean.numel() != c * h * w or std.numel() != c * h * w:
            raise DgnamValueError(f"code statistics of {mean.numel()} units do not fit a code of shape {c} x {h} x {w}")
        self.shape, self.width, self.depth, self.noise = (c, h, w), int(width), int(depth), float(noise)
        self.register_buffer("mean", mean.float().reshape(1, c, h, w).clone())
        self.register_buffer("std", std.float().clamp_min(1e-3).reshape(1, c, h, w).clone())
        layers: list[nn.Module] = [nn.Conv2d(c, width, 1), nn.LeakyReLU(0.2)]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(width, c, 1))
        self.net = nn.Sequential(*layers)
        nn.init.zeros_(self.net[-1].weight)  # starts as the identity: R(h) = h
        nn.init.zeros_(self.net[-1].bias)

    def standardize(self, code: Tensor) -> Tensor:
        return (code.reshape(-1, *self.shape) - self.mean) / self.std

    def forward(self, code: Tensor) -> Tensor:
        u = self.standardize(code.float())
        return ((u + self.net(u)) * self.std + self.mean).reshape(code.shape)

    def denoising_error(self, code: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Mean squared error, in standardized units, of R on ``code`` + N(0, noise^2) against ``code``."""
        u = self.standardize(code.float())
        eps = torch.randn(u.shape, generator=generator, device=u.device) if generator is not None else \
            torch.randn_like(u)
        noisy = u + self.noise * eps
        return (noisy + self.net(noisy) - u).pow(2).mean()

    def describe(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "width": self.width, "depth": self.depth, "noise": self.noise}


def save_dae(dae: CodeDAE, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write R's weights and description (plain tensors and values; fp32), atomically."""
    from dgnam.io import save_torch

    state = {k: v.detach().cpu().clone() for k, v in dae.state_dict().items()}
    return save_torch({"format": FORMAT, "spec": dae.describe(), "state_dict": state, "extra": extra or {}},
                      Path(path))


def load_dae(path: str | os.PathLike, code_dim: int | None = None, device: str | torch.device = "cpu") -> CodeDAE:
    """Load a code DAE written by :func:`save_dae` (``weights_only``, every key and shape checked).
    ``code_dim``: the prior's code size; a DAE made for another code is one clear error."""
    from dgnam.safeload import check_state_dict, load_file

    p = Path(path)
    blob = load_file(p, "code DAE")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or not isinstance(blob.get("spec"), dict):
        raise DgnamValueError(f"{p} is not a code DAE (written by dgnam.generator.dae; format {FORMAT!r})")
    spec = blob["spec"]
    try:
        shape = tuple(int(v) for v in spec["shape"])
        dim = math.prod(shape)
        dae = CodeDAE(shape, torch.zeros(dim), torch.ones(dim), int(spec["width"]), int(spec["depth"]),
                      float(spec["noise"]))
    except (KeyError, TypeError, ValueError) as e:
        raise DgnamValueError(f"code DAE {p} has a bad description {spec!r}: {e}") from None
    if code_dim is not None and dim != int(code_dim):
        raise DgnamValueError(f"code DAE {p} is for {' x '.join(map(str, shape))} codes ({dim} units), but the prior's "
                         f"code has {code_dim} units: train one on this prior's codes")
    state = blob.get("state_dict")
    if not isinstance(state, dict):
        raise DgnamValueError(f"code DAE {p}: its weights do not match its description {spec}")
    check_state_dict(dae.state_dict(), state, f"code DAE {p}: its weights do not match its description {spec}")
    dae.load_state_dict(state)
    return dae.eval().requires_grad_(False).to(device)


# ----------------------------------------------------------------------------------------------
# training


def _batch_error(dae: CodeDAE, batch: Tensor, i: int) -> Tensor:
    """The denoising error of validation batch ``i``, its noise drawn from a generator seeded by ``i``
    (the same draws before, during and after training)."""
    return dae.denoising_error(batch.float(), torch.Generator(device=batch.device).manual_seed(i))


@torch.no_grad()
def _val_error(dae: CodeDAE, val_codes: Tensor, batch_size: int) -> float:
    return float(torch.stack([_batch_error(dae, b, i) for i, b in enumerate(val_codes.split(batch_size))]).mean())


def _module(dae: CodeDAE, lr: float):
    import lightning as L

    class DAEModule(L.LightningModule):
        """Lightning wrapper: the denoising error on training codes; on validation codes with a fixed
        noise draw, beside the error of doing nothing (``noise^2``)."""

        def __init__(self) -> None:
            super().__init__()
            self.dae = dae

        def training_step(self, batch: Tensor, _i: int) -> Tensor:
            loss = self.dae.denoising_error(batch)
            self.log("train/denoise", loss, prog_bar=True)
            return loss

        def validation_step(self, batch: Tensor, i: int) -> None:
            self.log("val/denoise", _batch_error(self.dae, batch, i), prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.Adam(self.dae.parameters(), lr=lr)

    return DAEModule()


def train_dae(codes: Tensor, val_codes: Tensor, shape: tuple[int, int, int], mean: Tensor, std: Tensor,
              out_dir: str | os.PathLike, steps: int = 2000, batch_size: int = 64, lr: float = 1e-3, width: int = 128,
              depth: int = 2, noise: float = 1.0, ckpt_path: str | None = None, seed: int = 0,
              progress: bool = True, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train R on ``codes`` (N, C*s*s) for ``steps`` Adam steps, validating on ``val_codes`` every
    200 steps; checkpoints in ``out_dir/checkpoints`` (``last.ckpt`` resumes with ``ckpt_path``), the
    metrics in ``out_dir/csv``, the DAE in ``out_dir/code_dae.pt``. Returns the file and the
    validation denoising error before (the identity) and after."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    for name, v in (("steps", steps), ("batch_size", batch_size), ("width", width), ("depth", depth)):
        if int(v) < 1:
            raise DgnamValueError(f"{name}={v} must be an integer >= 1")
    if not (noise > 0 and lr > 0):
        raise DgnamValueError(f"noise={noise} and lr={lr} must be > 0")
    out = Path(out_dir)
    L.seed_everything(seed, verbose=False)
    dae = CodeDAE(shape, mean, std, width, depth, noise)
    before = _val_error(dae, val_codes, batch_size)
    module = _module(dae, lr)
    if ckpt_path:  # before Lightning reads it: readable without running code, and made for this DAE
        from dgnam.safeload import check_finite_tensors, check_state_dict, load_file

        state = load_file(ckpt_path, "checkpoint", finite=False)  # callbacks keep inf as "no best score yet"
        sd = state.get("state_dict") if isinstance(state, dict) else None
        if not isinstance(sd, dict):
            raise DgnamValueError(f"{ckpt_path} is not a training checkpoint of a code DAE (no weights in it)")
        check_finite_tensors(sd, f"checkpoint {ckpt_path}")
        check_state_dict(module.state_dict(), sd, f"checkpoint {ckpt_path} does not fit this code DAE "
                         "(another prior, width or depth?)")
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, every_n_train_steps=min(200, int(steps)),
                           save_top_k=0)
    trainer = L.Trainer(max_steps=int(steps), accelerator="cpu" if not torch.cuda.is_available() else "auto",
                        devices=1, logger=CSVLogger(out, name="csv", version=""), callbacks=[ckpt],
                        val_check_interval=min(200, int(steps)), check_val_every_n_epoch=None,
                        enable_progress_bar=progress, enable_model_summary=False, log_every_n_steps=10)
    train = DataLoader(codes, batch_size=batch_size, shuffle=True, drop_last=len(codes) > batch_size)
    val = DataLoader(val_codes, batch_size=batch_size)
    trainer.fit(module, train, val, ckpt_path=ckpt_path, weights_only=True)
    dae = module.dae.cpu().eval()
    after = _val_error(dae, val_codes, batch_size)
    path = save_dae(dae, out / "code_dae.pt", {**(extra or {}), "steps": int(trainer.global_step),
                                                "val_denoise_identity": before, "val_denoise": after})
    return {"dae": str(path), "val_denoise_identity": before, "val_denoise": after,
            "global_step": int(trainer.global_step), "last_ckpt": str(out / "checkpoints" / "last.ckpt")}


# ----------------------------------------------------------------------------------------------
# the command: codes of the shared photos, then R


@torch.no_grad()
def encode_codes(encoder: nn.Module, size: int, files: str, limit: int, batch_size: int = 64,
                 progress: bool = True) -> Tensor:
    """Codes ``encoder(x)`` (N, D) in fp16 of ``limit`` photos of ``files`` (Parquet or a folder),
    each the central square resized to ``size`` (the encoder's input size)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from dgnam.generator.data import ImageDataset, collate, open_source

    ds = ImageDataset(open_source(files, limit=limit), resolution=size)
    out = []
    for b in tqdm(DataLoader(ds, batch_size=batch_size, collate_fn=collate), desc="encoding", unit="batch",
                  disable=not progress):
        out.append(encoder(b["image"]).flatten(1).half())
    return torch.cat(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m dgnam.generator.dae --prior P --out DIR``: encode shared photos with the prior's
    encoder (cached in DIR/codes.pt), train R on them (resumable: run the same command again),
    write DIR/code_dae.pt. A mistake is one line on stderr and exit status 2."""
    import argparse
    import sys

    from dgnam.paths import shared_dir

    ap = argparse.ArgumentParser(prog="python -m dgnam.generator.dae", description=main.__doc__.splitlines()[0])
    ap.add_argument("--prior", required=True, help="the generator prior whose code R learns")
    ap.add_argument("--out", required=True, help="the run folder (codes cache, checkpoints, csv, code_dae.pt)")
    ap.add_argument("--train", default=None, help="training photos (default: the shared ImageNet-50 train split)")
    ap.add_argument("--val", default=None, help="validation photos (default: the shared validation split)")
    ap.add_argument("--photos", type=int, default=12000, help="training photos to encode (default 12000)")
    ap.add_argument("--val-photos", type=int, default=500)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--noise", type=float, default=1.0, help="training noise std, in standardized code units")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        from dgnam.generator.prior import load_prior
        from dgnam.safeload import load_file

        if a.photos < 1 or a.val_photos < 1:
            raise DgnamValueError(f"--photos={a.photos} and --val-photos={a.val_photos} must be >= 1")
        _, info = load_prior(a.prior)
        shape = info.get("spec", {}).get("code_shape")
        if not shape or len(shape) != 3:
            raise DgnamValueError(f"{a.prior} has a flat code; the code DAE needs a spatial code (generator.code=spatial)")
        data = Path(shared_dir()) / "data" / "imagenet50-128"
        out = Path(a.out)
        cache = out / "codes.pt"
        key = {"prior": Path(a.prior).name, "photos": a.photos, "val_photos": a.val_photos}
        blob = load_file(cache, "codes cache") if cache.is_file() else None
        if not isinstance(blob, dict) or blob.get("key") != key:
            from dgnam.generator.prior import prior_encoder

            enc = prior_encoder(info, None, a.prior).eval()  # E rebuilt from the prior's description
            size = int(info["encoder"].get("input_size") or 128)
            train = encode_codes(enc, size, a.train or str(data / "train-*.parquet"), a.photos)
            val = encode_codes(enc, size, a.val or str(data / "valid-*.parquet"), a.val_photos)
            out.mkdir(parents=True, exist_ok=True)
            from dgnam.io import save_torch

            save_torch({"key": key, "train": train, "val": val}, cache)
        else:
            train, val = blob["train"], blob["val"]
        last = out / "checkpoints" / "last.ckpt"
        res = train_dae(train, val, tuple(shape), info["code_mean"], info["code_std"], out, a.steps, a.batch_size,
                        a.lr, a.width, a.depth, a.noise, str(last) if last.is_file() else None, a.seed,
                        extra={"prior": Path(a.prior).name, "command": "python -m dgnam.generator.dae " + " ".join(
                            sys.argv[1:] if argv is None else argv)})
    except DgnamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {res['dae']}: validation denoising error {res['val_denoise']:.4f} "
          f"(doing nothing: {res['val_denoise_identity']:.4f}), {res['global_step']} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
