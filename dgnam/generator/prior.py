"""The trained prior as one file: generator weights (fp16), its kind and spec, the encoder it inverts
and the code statistics. :func:`load_prior` is what DGN-AM uses.

Two kinds: ``pixel`` (:class:`dgnam.generator.arch.Generator`, the DeePSiM deconvolution stack) and
``latent`` (:class:`dgnam.generator.latent.LatentGenerator`, a head into a frozen TAEF2 decoder whose
weights are stored in the file too)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dgnam.errors import DgnamFileNotFoundError, DgnamValueError, first_line
from dgnam.generator.arch import Generator
from dgnam.generator.latent import LatentGenerator
from dgnam.safeload import check_state_dict, load_file

KINDS = ("pixel", "latent")

FORMAT = "dgnam-generator-prior"
VERSION = 1
STAT_KEYS = ("code_mean", "code_std", "code_upper")


def save_prior(path: str | os.PathLike, generator: Generator | LatentGenerator, encoder: dict[str, Any], stats: dict[str, Tensor],
               extra: dict[str, Any] | None = None, half: bool = True) -> Path:
    """Write the prior file (atomically). ``encoder`` is :meth:`Encoder.describe`; ``stats`` from
    :func:`dgnam.generator.stats.code_statistics`; ``extra`` is free metadata (plain types)."""
    missing = [k for k in STAT_KEYS if k not in stats]
    if missing:
        raise ValueError(f"code statistics lack {', '.join(missing)}")
    sd = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().contiguous()
          for k, v in generator.state_dict().items()}
    blob = {
        "format": FORMAT, "version": VERSION, "kind": getattr(generator, "kind", "pixel"),
        "spec": generator.spec, "code_dim": generator.code_dim, "resolution": generator.resolution,
        "encoder": dict(encoder),
        "state_dict": sd,
        **{k: stats[k].detach().float().cpu() for k in STAT_KEYS},
        "code_k": float(stats.get("code_k", torch.tensor(3.0))),
        "extra": dict(extra or {}),
    }
    from dgnam.io import save_torch  # file output, only when writing (loading a prior needs none)

    return save_torch(blob, path)


def resolve_prior(prior: str | os.PathLike, sha256: str | None = None) -> Path:
    """The file of ``prior``: a shipped prior's name (verified by its sha256), a URL (downloaded once,
    checked against ``sha256``) or a path; see :func:`dgnam.priors.resolve`."""
    from dgnam.priors import resolve

    return resolve(prior, sha256)


def load_prior(path: str | os.PathLike, device: str | torch.device = "cpu", clamp: bool = True,
               dtype: torch.dtype = torch.float32, sha256: str | None = None) -> tuple[Generator | LatentGenerator, dict[str, Any]]:
    """Load a prior written by :func:`save_prior`: a file, a shipped prior's name or a URL with its
    ``sha256`` (:func:`resolve_prior`).

    Returns ``(generator, info)``: the generator is in eval mode with gradients off for its
    parameters and maps codes (B, D) to images (B, 3, R, R); with ``clamp`` (default) its output is
    clamped to [0, 1]. ``info`` holds ``encoder`` (arch, weights_file, layer, pooling, input_size,
    mean, std), ``code_dim``, ``resolution``, ``code_mean``, ``code_std``, ``code_upper`` (float32
    tensors (D,) on ``device``), ``code_k``, ``spec`` and ``extra``.

    Raises :class:`DgnamError` for a missing, unreadable or incomplete file.
    """
    p = resolve_prior(path, sha256)
    blob = load_file(p, "generator prior")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise DgnamValueError(f"{p} is not a dgnam generator prior (no format tag {FORMAT!r})")
    need = ("spec", "code_dim", "resolution", "encoder", "state_dict", *STAT_KEYS)
    missing = [k for k in need if k not in blob]
    if missing:
        what = "code statistics" if set(missing) & set(STAT_KEYS) else "keys"
        raise DgnamValueError(f"generator prior {p} lacks {what}: {', '.join(missing)}")
    d = int(blob["code_dim"])
    for k in STAT_KEYS:
        t = blob[k]
        if not isinstance(t, Tensor) or tuple(t.shape) != (d,):
            raise DgnamValueError(f"generator prior {p}: {k} has shape {tuple(getattr(t, 'shape', ()))}, expected ({d},)")
    kind = blob.get("kind", "pixel")
    if kind not in KINDS:
        raise DgnamValueError(f"generator prior {p} is of unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    try:
        g = (LatentGenerator(d, blob["spec"], clamp=clamp) if kind == "latent"
             else Generator(d, blob["spec"], clamp=clamp))
    except Exception as e:
        raise DgnamValueError(f"generator prior {p}: bad spec ({first_line(e)})") from None
    sd = blob["state_dict"]
    if not isinstance(sd, dict):
        raise DgnamValueError(f"generator prior {p}: its state_dict is a {type(sd).__name__}")
    check_state_dict(g.state_dict(), sd, f"generator prior {p}: weights do not fit its spec")
    g.load_state_dict({k: v.float() for k, v in sd.items()})
    g = g.to(device=device, dtype=dtype).eval().requires_grad_(False)
    info = {
        "kind": kind, "encoder": dict(blob["encoder"]), "code_dim": d, "resolution": int(blob["resolution"]),
        **{k: blob[k].float().to(device) for k in STAT_KEYS},
        "code_k": float(blob.get("code_k", 3.0)), "spec": blob["spec"], "extra": blob.get("extra", {}),
    }
    return g, info


def prior_encoder(info: dict[str, Any], weights_file: str | os.PathLike | None = None,
                  prior_path: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
    """Rebuild the encoder E a prior was trained on (``info`` from :func:`load_prior`).

    The prior stores E's architecture, layer, pooling, input size, normalization and the *name* of
    its weights file. The file is ``weights_file`` when given, else the first of
    ``<prior's folder>/<name>`` and ``<shared>/models/<name>`` that exists.
    """
    from dgnam.core.models import build_target
    from dgnam.generator.encoder import TIMM_BUILDER, TORCHVISION_BUILDER, Encoder
    from dgnam.paths import shared_dir

    e = info.get("encoder") or {}
    if not e.get("arch") or not e.get("layer"):
        raise DgnamValueError("the generator prior does not describe its encoder (arch and layer)")
    builder = e.get("builder") or TORCHVISION_BUILDER
    if builder not in (TORCHVISION_BUILDER, TIMM_BUILDER):  # a network of one's own: never imported from a file
        raise DgnamValueError(f"the prior's encoder is a network of your own ({builder}, layer {e['layer']}), which a "
                         f"prior file does not rebuild; start DGN-AM from a random code (init.kind=noise), or from "
                         f"Python pass the encoder: dgnam.generator.Encoder(dgnam.wrap_model(net), {e['layer']!r})")
    name = e.get("weights_file")
    if weights_file is not None:
        wf = Path(weights_file)
        if not wf.is_file():
            raise DgnamFileNotFoundError(f"encoder weights file not found: {wf}")
    elif name:
        places = ([Path(prior_path).resolve().parent / name] if prior_path else []) + \
                 [Path(shared_dir()) / "models" / name]
        wf = next((p for p in places if p.is_file()), None)
        if wf is None:
            raise DgnamFileNotFoundError(f"the prior's encoder weights {name} were not found (looked in "
                             f"{', '.join(str(p.parent) for p in places)}); give param.encoder_weights=<file>")
    else:
        raise DgnamValueError("the prior's encoder was trained with random weights; it cannot be rebuilt")
    if builder == TIMM_BUILDER:
        from dgnam.core.timm_models import build_timm_target

        target = build_timm_target(e["arch"], weights_file=str(wf), mean=e.get("mean"), std=e.get("std"),
                                   device=device)
    else:
        target = build_target(e["arch"], weights_file=str(wf), mean=e.get("mean"), std=e.get("std"), device=device)
    return Encoder(target, e["layer"], e.get("pooling", "none"), e.get("input_size"), str(wf))


def init_from_prior(generator: Generator | LatentGenerator, encoder: dict[str, Any],
                    path: str | os.PathLike) -> dict[str, Any]:
    """Start training from a prior's weights (``generator.init_from=<file>``): the prior must be of
    the same kind, for the same encoder, with the same spec, code size and resolution. Its input
    statistics come with its weights. Returns the prior's ``info`` (see :func:`load_prior`)."""
    from dgnam.generator.encoder import same_encoder

    src, info = load_prior(path, clamp=False)
    what = f"generator.init_from={path}"
    kind = getattr(generator, "kind", "pixel")
    if info["kind"] != kind:
        raise DgnamValueError(f"{what} is a {info['kind']} prior; this run trains a {kind} one")
    if not same_encoder(info["encoder"], encoder):
        e = info["encoder"]
        raise DgnamValueError(f"{what} was trained on {e.get('arch')} layer {e.get('layer')!r} (pooling "
                         f"{e.get('pooling')}); this run's encoder is {encoder.get('arch')} layer "
                         f"{encoder.get('layer')!r} (pooling {encoder.get('pooling')})")
    if info["code_dim"] != generator.code_dim or info["resolution"] != generator.resolution:
        raise DgnamValueError(f"{what} maps {info['code_dim']} units to {info['resolution']} px; this run's generator "
                         f"maps {generator.code_dim} units to {generator.resolution} px")
    check_state_dict(generator.state_dict(), src.state_dict(), f"{what}: its weights do not fit this run's generator spec")
    # a latent prior's frozen decoder stays the one this run loaded (the prior holds it in fp16)
    sd = {k: v for k, v in src.state_dict().items() if not (kind == "latent" and k.startswith("decoder."))}
    generator.load_state_dict(sd, strict=False)
    return info
