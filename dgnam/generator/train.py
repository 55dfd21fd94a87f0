"""``run(cfg)``: build every part from a composed config, train, compute code statistics, export.

Called by ``train_generator.py`` (under Hydra) and directly by tests."""

from __future__ import annotations

import copy
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from dgnam.checks import one_of
from dgnam.cli import run_dir
from dgnam.config import build, build_model_node  # also registers the resolvers and specs the configs use
from dgnam.core.models import pick_device
from dgnam.errors import DgnamFileNotFoundError, DgnamValueError
from dgnam.generator.arch import Discriminator, Generator, generator_spec
from dgnam.generator.checkpoints import AtomicCheckpointIO, check_resume, load_generator_weights
from dgnam.generator.config_checks import check_numbers
from dgnam.generator.datamodule import check_decodable, compute_code_stats
from dgnam.generator.encoder import Comparator, Encoder, Perceptual, perceptual_layers
from dgnam.generator.latent import CODE_KINDS, LatentGenerator, head_spec
from dgnam.generator.latent_module import LatentGeneratorModule
from dgnam.generator.loggers import CSVLogger
from dgnam.generator.losses import Balancer
from dgnam.generator.module import GeneratorModule
from dgnam.generator.prior import KINDS, init_from_prior, save_prior
from dgnam.generator.stages import StageSchedule, parse_stages, union_weights
from dgnam.generator.taef2 import LATENT_CHANNELS, TAEF2Decoder, TAEF2Encoder

log = logging.getLogger(__name__)


def _plain(x: Any) -> Any:
    return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig) or OmegaConf.is_list(x) else x


def build_group(node: Any) -> list[Any]:
    """One object per entry of a dict of ``_target_`` nodes (``cfg.callbacks``, ``cfg.logger``), in
    order; a null entry (``callbacks.sample_grids=null``), or one whose target gives ``None``, is none."""
    built = [build(entry) for entry in (node or {}).values() if entry is not None]
    return [b for b in built if b is not None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_parts(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Encoder, comparator, generator, discriminator and the module, from ``cfg``."""
    ecfg = cfg.encoder
    target = build_model_node(ecfg.target, device, "encoder.target")
    weights = ecfg.target.get("weights_file") or ecfg.target.get("weights")
    encoder = Encoder(target, ecfg.code_layer, ecfg.get("pooling", "none"), ecfg.get("input_size"), weights,
                      builder=str(ecfg.target.get("_target_")))
    res = int(cfg.resolution)
    gcfg = cfg.generator
    kind = gcfg.get("kind", "pixel")
    if kind not in KINDS:
        raise DgnamValueError(f"unknown generator.kind {kind!r}; valid: {', '.join(KINDS)}")
    base_w = {k: float(v) for k, v in _plain(cfg.loss.weights).items()}
    loss_names = LatentGeneratorModule.loss_names if kind == "latent" else GeneratorModule.loss_names
    stages = parse_stages(_plain(cfg.get("stages")), base_w, loss_names)
    w = union_weights(stages, base_w)  # every part some stage needs
    comparator = None
    if w.get("feature", 0) > 0:
        layer = ecfg.get("comparator_layer") or ecfg.code_layer
        comparator = Comparator(target, layer, ecfg.get("comparator_input_size") or res)
        comparator.target.layer_shape(layer, comparator.input_size)  # fails early if too small
    code_dim = encoder.code_dim
    latent_encoder = None
    if kind == "latent":
        code = one_of(gcfg.get("code", "flat"), "generator.code", CODE_KINDS)
        shape = encoder.code_shape if code == "spatial" else None
        if shape is not None and len(shape) != 3:
            raise DgnamValueError(f"generator.code=spatial needs an unpooled conv layer as the code; {ecfg.code_layer} "
                             f"(pooling {ecfg.get('pooling', 'none')}) gives a flat code of {code_dim} units; "
                             f"valid: generator.code=flat, or a conv layer with encoder.pooling=none")
        spec = head_spec(_plain(gcfg.spec), res, _plain(gcfg.get("fc")), float(gcfg.get("width", 1.0)), shape)
        generator = LatentGenerator(code_dim, spec, TAEF2Decoder(gcfg.decoder_file).to(device))
        latent_encoder = TAEF2Encoder(gcfg.latent_encoder_file).to(device).eval().requires_grad_(False)
    else:
        spec = generator_spec(_plain(gcfg.spec), res, _plain(gcfg.get("fc")), float(gcfg.get("width", 1.0)),
                              gcfg.get("start_channels"))
        generator = Generator(code_dim, spec)
    if gcfg.get("init_from"):
        init_from_prior(generator, encoder.describe(), os.path.expanduser(str(gcfg.init_from)))
    perceptual, per_stage = None, [None] * len(stages)  # per_stage: each stage's perceptual layers
    if w.get("perceptual", 0) > 0:
        if kind != "latent":
            raise DgnamValueError("loss.weights.perceptual is a term of latent priors (generator=latent); "
                             "for a pixel prior use loss.weights.feature")
        psize = ecfg.get("comparator_input_size") or res
        per_stage = [perceptual_layers(target, s.perceptual_layers, ecfg.code_layer, psize) for s in stages]
        base_layers = perceptual_layers(target, _plain(cfg.loss.get("perceptual_layers")), ecfg.code_layer, psize)
        union = list({n: (n, wt) for n, wt in [*(base_layers or []), *(x for ls in per_stage for x in ls or [])]}.values())
        perceptual = Perceptual(target, union, psize)
        perceptual.layers = list(base_layers or union)
    discriminator = None
    if w.get("adversarial", 0) > 0:
        dspec = _plain(cfg.discriminator.spec)
        if kind == "latent":  # D judges latents
            dspec = {**dspec, **_plain(cfg.discriminator.get("latent_spec") or {}), "in_channels": LATENT_CHANNELS}
        discriminator = Discriminator(code_dim if cfg.discriminator.get("sees_code", True) else 0, dspec)
    balance = build(cfg.loss.balance) if cfg.loss.get("balance") else Balancer(enabled=False)
    common = dict(
        optimizer_g=build(cfg.optimizer_g), optimizer_d=build(cfg.optimizer_d),
        scheduler=build(cfg.scheduler) if cfg.get("scheduler") else None,
        weights=w, balance=balance, channels_last=bool(cfg.get("channels_last", True)),
        code_noise=float(cfg.get("code_noise", 0.0)), grid_images=int(cfg.get("grid_images", 16)),
        grad_clip_g=cfg.get("grad_clip_g"),
    )
    if kind == "latent":
        periods = cfg.loss.get("grid_periods")  # null: [8]; [] is named as an error by the module
        module = LatentGeneratorModule(generator, encoder, comparator, discriminator, latent_encoder=latent_encoder,
                                       feature_every=int(cfg.loss.get("feature_every", 1)),
                                       feature_items=cfg.loss.get("feature_items"), perceptual=perceptual,
                                       grid_codes=int(cfg.loss.get("grid_codes", 0)),
                                       grid_noise=float(cfg.loss.get("grid_noise", 1.0)),
                                       grid_periods=[8] if periods is None else list(periods), **common)
    else:
        module = GeneratorModule(generator, encoder, comparator, discriminator, **common)
    if stages:
        module.stages = StageSchedule(stages, per_stage)
    return {"target": target, "encoder": encoder, "comparator": comparator, "generator": generator,
            "discriminator": discriminator, "module": module, "spec": spec, "latent_encoder": latent_encoder}


def write_prior(cfg: DictConfig, dm: Any, parts: dict[str, Any], out: Path, device: torch.device,
                extra: dict[str, Any]) -> Path:
    """Code statistics over the training data (or those of ``generator.init_from`` with
    ``code_stats.from_init``: the same encoder, checked when it was loaded, on the same photos), then
    G (as it is now) and them into the prior file."""
    init = cfg.generator.get("init_from")
    if cfg.code_stats.get("from_init") and init:
        from dgnam.generator.prior import STAT_KEYS, load_prior

        _, info = load_prior(os.path.expanduser(str(init)))
        stats = {k: info[k].cpu() for k in STAT_KEYS}
        log.info("code statistics of %s (code_stats.from_init)", init)
    else:
        stats = compute_code_stats(dm, parts["encoder"], float(cfg.code_stats.k), cfg.code_stats.get("max_images"),
                                   device)
    prior_path = Path(cfg.export.path) if cfg.export.get("path") else out / "prior.pt"
    try:
        save_prior(prior_path, parts["generator"].cpu().float(), parts["encoder"].describe(), stats,
                   extra={"config": _plain(cfg), **extra}, half=bool(cfg.export.get("half", True)))
    except OSError as e:
        raise DgnamValueError(f"cannot write the prior {prior_path}: {e.strerror or e} (disk full?); the checkpoints "
                         f"are kept: export it later with export.from_ckpt=<checkpoint>") from None
    log.info("wrote %s", prior_path)
    return prior_path


def export_checkpoint(cfg: DictConfig, dm: Any, parts: dict[str, Any], ckpt: Path, out: Path,
                      device: torch.device) -> dict[str, Any]:
    """Write a prior from a checkpoint without training (``export.from_ckpt``): G's weights from the
    checkpoint, the code statistics from this config's training data."""
    state = load_generator_weights(parts["generator"], ckpt)
    dm.setup("fit")
    cb = {k: v for k, v in (state.get("callbacks") or {}).items() if "ModelCheckpoint" in str(k)}
    best = next((float(v["best_model_score"]) for v in cb.values()
                 if isinstance(v, dict) and v.get("best_model_score") is not None), None)
    iterations = int(state.get("global_step", 0))
    prior_path = write_prior(cfg, dm, parts, out, device, {"val_mse": None, "best_val_mse": best,
                                                           "iterations": iterations, "checkpoint": str(ckpt)})
    return {"run_dir": str(out), "prior": str(prior_path), "best_ckpt": str(ckpt), "last_ckpt": None,
            "val_mse": best, "iterations": iterations, "global_step": iterations, "skipped_images": 0,
            "code_dim": parts["encoder"].code_dim, "resolution": int(cfg.resolution)}


def trainer_precision(precision: str, device: torch.device) -> str:
    """Lightning's precision for ``trainer.precision``: ``auto`` is ``bf16-mixed`` where the device
    computes bf16 in hardware (a GPU that supports it; a CPU with AVX-512 BF16 or AMX, unless
    ``DGNAM_CPU_BF16=0``), else ``32-true``; any other value is passed to Lightning as it is."""
    from dgnam.core.precision import native_bf16

    if precision != "auto":
        return precision
    return "bf16-mixed" if native_bf16(device) else "32-true"


def rank_device(device: torch.device) -> torch.device:
    """Under a distributed launch (``trainer=ddp``: Lightning's launcher, or SLURM, sets ``LOCAL_RANK``),
    a CUDA device becomes this process's own GPU; the CPU stays the CPU."""
    local = os.environ.get("LOCAL_RANK") or os.environ.get("SLURM_LOCALID")
    if device.type != "cuda" or local is None or device.index is not None:
        return device
    dev = torch.device("cuda", int(local))
    torch.cuda.set_device(dev)
    return dev


def run(cfg: DictConfig, out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train a generator prior as ``cfg`` says; returns paths and final metrics.

    The callbacks and loggers are the entries of ``cfg.callbacks`` and ``cfg.logger`` (see
    :func:`build_group`), with ``${run_dir}`` = ``out_dir`` (default: Hydra's run directory). Without
    validation data, callbacks that monitor a ``val/`` metric are left out; with
    ``trainer.enable_progress_bar=false``, progress bars.

    With ``trainer=ddp`` (``trainer.strategy``, ``trainer.devices``, ``trainer.num_nodes``) Lightning
    runs one process per device; each builds the same parts, code statistics and data, trains on its
    share of the batches, and rank 0 alone writes checkpoints, logs, grids and the prior.

    Returns ``{"run_dir", "prior", "best_ckpt", "last_ckpt", "val_mse", "iterations",
    "global_step", "skipped_images", "code_dim", "resolution"}`` (on ranks other than 0:
    ``{"run_dir", "prior": None, "rank", "iterations", "global_step"}``)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
    from lightning.pytorch.utilities import rank_zero_only

    check_numbers(cfg)
    out = Path(out_dir) if out_dir is not None else run_dir()
    out.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.run_dir = str(out)  # ${run_dir}: where the callbacks and loggers write
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    seed_everything(int(cfg.seed))  # the same on every rank: each builds the same parts and statistics
    device = rank_device(pick_device(cfg.get("device", "auto")))
    res = int(cfg.resolution)

    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(os.path.expanduser(str(ckpt_path))).is_file():
        raise DgnamFileNotFoundError(f"checkpoint not found: {ckpt_path}")

    from_ckpt = cfg.export.get("from_ckpt") if cfg.get("export") else None
    if from_ckpt and not Path(os.path.expanduser(str(from_ckpt))).is_file():
        raise DgnamFileNotFoundError(f"export.from_ckpt: checkpoint not found: {from_ckpt}")

    dm = build(cfg.data, resolution=res)
    parts = build_parts(cfg, device)
    module: GeneratorModule = parts["module"]
    dm.attach(parts["encoder"], parts["comparator"], device, latent_encoder=parts["latent_encoder"])
    if from_ckpt:
        return export_checkpoint(cfg, dm, parts, Path(os.path.expanduser(str(from_ckpt))), out, device)

    resume_step = None
    if ckpt_path:
        resume_step = check_resume(module, Path(os.path.expanduser(str(ckpt_path))))
    dm.setup("fit")
    check_decodable(dm)
    vci = cfg.trainer.get("val_check_interval")
    if isinstance(vci, int) and dm.val_src is not None and cfg.trainer.get("check_val_every_n_epoch") is not None:
        n = len(dm.train_dataloader())
        if vci > n:
            raise DgnamValueError(f"trainer.val_check_interval={vci} is more than the {n} training batches of an epoch; "
                             f"give at most {n}, a fraction of an epoch (e.g. 0.5), or null (once per epoch)")
    tcfg = dict(_plain(cfg.trainer))
    precision = trainer_precision(str(tcfg.pop("precision", "auto")), device)
    for key in ("checkpoint_every_minutes", "progress_bar_refresh"):  # read by conf/callbacks, not the Trainer's
        tcfg.pop(key, None)
    callbacks = build_group(cfg.get("callbacks"))
    if dm.val_src is None:  # no validation data: nothing to monitor (no best checkpoint)
        callbacks = [c for c in callbacks if not str(getattr(c, "monitor", None) or "").startswith("val/")]
    if not tcfg.get("enable_progress_bar", True):  # Lightning refuses a progress bar callback then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    ckpts = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    last_cb = next((c for c in ckpts if c.save_last), None)
    best_cb = next((c for c in ckpts if c.monitor), None)
    tcfg.setdefault("enable_checkpointing", bool(ckpts))  # callbacks=none: no Lightning default either
    loggers = build_group(cfg.get("logger"))
    for lg in loggers if resume_step is not None and rank_zero_only.rank == 0 else []:
        if isinstance(lg, CSVLogger) and (n := lg.resume_at(resume_step)):
            log.info("%d rows logged from step %d on (after the checkpoint) moved to %s/metrics.replaced.csv",
                     n, resume_step, lg.log_dir)
    if cfg.generator.get("standardize_input", True) and not ckpt_path and not cfg.generator.get("init_from"):
        # every rank computes the same statistics (same seed, same images, same order): G starts alike
        st = compute_code_stats(dm, parts["encoder"], float(cfg.code_stats.k), cfg.code_stats.get("max_images"),
                                device)
        parts["generator"].set_input_stats(st["code_mean"], st["code_std"])
    trainer = L.Trainer(**tcfg, accelerator="gpu" if device.type == "cuda" else "cpu", precision=precision, default_root_dir=str(out), logger=loggers or False, callbacks=callbacks,
                        plugins=[AtomicCheckpointIO()])
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    except SystemExit:
        if trainer.interrupted:  # Lightning's graceful Ctrl-C ends in exit(1); the CLI says "interrupted", 130
            raise KeyboardInterrupt from None
        raise
    if not trainer.is_global_zero:  # rank 0 writes the prior; the others are done
        return {"run_dir": str(out), "prior": None, "rank": trainer.global_rank,
                "iterations": int(module.iteration), "global_step": int(trainer.global_step)}

    # the prior: best weights by validation reconstruction when there are any, else the last
    best = best_cb.best_model_path if best_cb is not None and best_cb.best_model_path else None
    if best and cfg.export.get("use_best", True):
        load_generator_weights(parts["generator"], Path(best))
    val_mse = trainer.callback_metrics.get("val/mse")
    best_score = best_cb.best_model_score if best_cb is not None else None
    last = last_cb.last_model_path if last_cb is not None else ""
    prior_path = write_prior(cfg, dm, parts, out, device, {
        "val_mse": float(val_mse) if val_mse is not None else None,
        "best_val_mse": float(best_score) if best_score is not None else None,
        "iterations": int(module.iteration), "checkpoint": best or last})
    return {"run_dir": str(out), "prior": str(prior_path), "best_ckpt": best, "last_ckpt": last or None,
            "val_mse": float(val_mse) if val_mse is not None else None, "iterations": int(module.iteration),
            "global_step": int(trainer.global_step), "skipped_images": int(module.skipped_images),
            "code_dim": parts["encoder"].code_dim, "resolution": res}
