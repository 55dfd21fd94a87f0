"""The ``prior`` section of benchmarks/gpu_check.py: does the prior recipe scale to a GPU?

``experiment_train=mobilenet_v2_prior_gpu`` (``--preset``) trains on one Parquet shard of the shared
ImageNet-50 for the section's time, with all four of its stages (latent, perceptual, deep, grid)
inside that time; then its reconstructions of held-out photos are judged, and DGN-AM runs through the new
prior on the comparison's classes, judged too.

- Photos: the shard's 5,000 rows are split in two Parquet files on the machine: every
  :data:`HOLD_EVERY`-th row (500 photos, the 5th of every other class) is held out, the other
  4,500 train. Nothing else travels: no validation shard (``data.val=null``).
- Stage lengths: a warm-up run of the same preset on the same photos (:data:`WARM` iterations per
  stage, a synchronize after each, the first :data:`WARM_SKIP` of each stage untimed, codes from 256
  photos) gives each stage's seconds per G iteration. The training time ``T`` is what is left of
  the section minus :data:`RESERVE` (E's code statistics before and after training, the export, the
  evaluation, DGN-AM). ``stages.latent.steps`` = :data:`SHARES` [0] x T / its seconds per iteration,
  ``stages.perceptual.steps`` = :data:`SHARES` [1] x T and ``stages.deep.steps`` = :data:`SHARES` [2]
  x T / theirs; the grid stage (``steps: null`` here) runs until ``trainer.max_time`` = T, so it has
  ~10 % of T and is reached unless the first three stages run 11 % slower than in the warm-up. The
  section's ``setup_s`` (from the run's start to its first batch) and ``after_training_s`` say how much of RESERVE was needed.
- Reported, one row each: the iterations, seconds and images/s (G iterations x batch / seconds,
  from the first batch's start to the last one's end, synchronized at stage changes) of each stage
  and of the whole training; on the held-out photos, the reconstructions' PSNR, the target's top-1
  of them against the label, and the judge's (MobileNetV1 0.5/160, ``<shared>/models``) top-1 of
  them, of the photos at 128 px and of the photos themselves; DGN-AM (``method=dgnam_deep
  param.prior=<the new prior>``, fp32) on the comparison's 20 classes: the judge's top-1 and mean
  probability of the class (benchmarks/bench_dgnam.py's ``judged``), to set beside the ``dgnam``
  section's fp32 row (the shipped prior). Without the judge file the judge numbers are None.
- The dry run (CPU): the preset shrunk as tests/test_stages.py shrinks it (random MobileNetV2
  weights, written to a file so the prior can rebuild its encoder; synthetic photos; a tiny head),
  stages of at most 2 iterations, 8 synthetic held-out photos, DGN-AM of 1 class for 1 step.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from bench_generator import SHARED
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict

REPO = Path(__file__).resolve().parents[1]
SHARD = SHARED / "data" / "imagenet50-128" / "train-00000-of-00006.parquet"  # 5,000 photos, 26.8 MiB
HOLD_EVERY = 10        # every 10th row of the shard is held out (row 9, 19, ...)
SHARES = (0.4, 0.3, 0.2)  # of the training time: the latent, perceptual and deep stage; the grid stage has the rest
WARM, WARM_SKIP = 10, 3  # warm-up iterations per stage, of which the first ones are not timed
RESERVE = 75.0         # seconds of the section kept for what is not training (see the docstring)
STAGES = ("latent", "perceptual", "deep", "grid")


# tests/test_stages.py's SHRUNK and PRESETS["mobilenet_v2_prior_gpu"]: the preset at tiny sizes on the CPU
SHRUNK = ["device=cpu", "data=synthetic", "data.synthetic_size=8", "data.limit_train=null", "data.batch_size=4",
          "data.num_workers=0", "trainer=smoke", "trainer.max_epochs=-1", "trainer.max_steps=-1",
          "trainer.max_time=null", "trainer.val_check_interval=null", "trainer.limit_val_batches=1", "threads=1",
          "resolution=64", "generator.decoder_file=null", "generator.latent_encoder_file=null",
          "generator.spec.start_channels=8", "generator.spec.stack=[[conv,8],[up,8],[conv,8]]",
          "discriminator.latent_spec.convs=[[8,3,1],[8,3,2]]", "discriminator.spec.code_fc=[8]",
          "discriminator.spec.joint_fc=[8]", "discriminator.spec.image_fc=[8]", "code_stats.max_images=8",
          "grid_images=2", "loss.feature_items=2", "stages.perceptual.feature_items=2",
          "stages.deep.feature_items=2", "encoder.input_size=64"]


def stage_steps(steps: list[int]) -> list[str]:
    """Overrides giving the stages before the last these lengths; the last runs to trainer.max_time."""
    return [*(f"stages.{n}.steps={k}" for n, k in zip(STAGES[:-1], steps)), f"stages.{STAGES[-1]}.steps=null"]


class StageClock(Callback):
    """Counts and times the G iterations of each stage of a run (``stages`` of the module); with
    ``stop_at``, stops the run after that many; with ``sync_each``, synchronizes the GPU after
    every iteration (the warm-up's per-iteration times). :attr:`last` is the latest clock made."""

    last: StageClock | None = None

    def __init__(self, stop_at: int | None = None, sync_each: bool = False) -> None:
        self.stop_at, self.sync_each = stop_at, sync_each
        self.ends: dict[int, list[float]] = {}   # stage -> the end time of each of its iterations
        self.start: dict[int, float] = {}        # stage -> its first iteration's start
        self.stop: dict[int, float] = {}         # stage -> its last iteration's end (synchronized)
        self.current: int | None = None
        StageClock.last = self

    @staticmethod
    def _sync(module: Any) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        it = int(module.iteration)
        stage = module.stages.index_at(it) if module.stages is not None else 0
        if stage != self.current:
            now = self._sync(module)
            if self.current is not None:
                self.stop[self.current] = now
            self.start.setdefault(stage, now)
            self.current = stage

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = self._sync(module) if self.sync_each else time.perf_counter()
        self.ends.setdefault(self.current, []).append(now)
        if self.stop_at is not None and int(module.iteration) >= self.stop_at:
            trainer.should_stop = True

    def on_train_end(self, trainer: Any, module: Any) -> None:
        if self.current is not None:
            self.stop[self.current] = self._sync(module)

    def iterations(self) -> dict[int, int]:
        return {s: len(v) for s, v in sorted(self.ends.items())}

    def seconds(self) -> dict[int, float]:
        return {s: self.stop.get(s, self.ends[s][-1]) - self.start[s] for s in sorted(self.ends)}

    def per_iteration(self, skip: int) -> dict[int, float]:
        """Each stage's median seconds per iteration, its first ``skip`` iterations left out."""
        out = {}
        for s, ends in self.ends.items():
            times = [self.start[s], *ends]
            steps = [b - a for a, b in zip(times, times[1:])]
            out[s] = statistics.median(steps[min(skip, len(steps) - 1):])
        return out


def split_shard(shard: Path, folder: Path, every: int = HOLD_EVERY) -> tuple[Path, Path]:
    """``shard`` as ``train.parquet`` (all rows but every ``every``-th) and ``heldout.parquet`` (those),
    each one row group (a worker then reads its file once)."""
    import pyarrow.parquet as pq

    table = pq.read_table(shard)
    held = [i for i in range(table.num_rows) if i % every == every - 1]
    kept = [i for i in range(table.num_rows) if i % every != every - 1]
    paths = folder / "train.parquet", folder / "heldout.parquet"
    for path, rows in zip(paths, (kept, held)):
        part = table.take(rows)
        pq.write_table(part, path, row_group_size=max(1, part.num_rows))
    return paths


def hms(seconds: float) -> str:
    s = max(int(seconds), 1)
    return f"00:{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def compose(overrides: list[str], clock: dict[str, Any] | None = None) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="train_generator", overrides=overrides)
    GlobalHydra.instance().clear()
    with open_dict(cfg):  # no checkpoints, progress bar or grids: the clock alone
        cfg.callbacks = {"stage_clock": {"_target_": "gpu_prior.StageClock", **(clock or {})}}
    return cfg


def train_and_judge(a: argparse.Namespace, out: Path, seconds: float, device: torch.device,
                    copy_in_parts: Callable[[Path, Path], list[str]]) -> dict[str, Any]:
    from dgnam.generator.train import run

    end = time.monotonic() + seconds
    dry, s = a.dry_run, a.sizes
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        (tmp / "run").mkdir()
        if dry:  # random weights in a file: the prior can then rebuild its encoder, and DGN-AM use the same net
            import torchvision

            torch.manual_seed(0)
            wf = tmp / "run" / "mobilenet_v2_random.pth"
            torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), wf)
            base = [f"experiment_train={a.preset}", *SHRUNK, f"encoder.target.weights_file={wf}"]
            data, held, photos_from = [], None, "synthetic (dry run)"
        else:
            base = [f"experiment_train={a.preset}", "trainer.enable_progress_bar=false", "data.val=null"]
            if SHARD.is_file():
                train_file, held = split_shard(SHARD, tmp)
                data, photos_from = [f"data.train={train_file}"], f"{SHARD.name}, every {HOLD_EVERY}th row held out"
            else:
                data, held, photos_from = ["data=synthetic", "data.synthetic_size=4096", "data.limit_train=null"], \
                    None, "synthetic (no shard)"
        # warm-up: a few iterations of each stage, synchronized, for each stage's seconds per iteration
        warm = 2 if dry else WARM
        cfg = compose([*base, *data, *stage_steps([warm] * (len(STAGES) - 1)),
                       "code_stats.max_images=" + ("8" if dry else "256"), "logger=none"]
                      + ([] if dry else [f"trainer.max_time={hms(120)}"]), {"stop_at": len(STAGES) * warm, "sync_each": True})
        t_warm = time.perf_counter()
        run(cfg, out_dir=tmp / "warmup")
        warm_s = time.perf_counter() - t_warm
        spi = StageClock.last.per_iteration(1 if dry else WARM_SKIP)
        train_s = max(end - time.monotonic() - (0 if dry else RESERVE), 10.0)
        steps = [max(1, math.floor(share * train_s / (spi.get(i) or max(spi.values()))))
                 for i, share in enumerate(SHARES)]
        if dry:  # 1-2 iterations per stage
            steps = [min(n, 2) for n in steps]
        overrides = [*base, *data, *stage_steps(steps)]
        overrides += [] if dry else [f"trainer.max_time={hms(train_s)}"]
        cfg = compose(overrides, {"stop_at": sum(steps) + 2} if dry else {})
        t_run = time.perf_counter()
        res = run(cfg, out_dir=tmp / "run")
        t_after = time.perf_counter()
        clock = StageClock.last
        setup_s = min(clock.start.values()) - t_run  # E's code statistics, the parts, the loaders
        metrics = tmp / "run" / "csv" / "metrics.csv"
        csv_stages: list[int] = []
        if metrics.is_file():
            shutil.copy(metrics, out / "train-metrics.csv")
            csv_stages = sorted({int(float(r["train/stage"])) for r in csv.DictReader(open(metrics))
                                 if r.get("train/stage")})
        batch = int(cfg.data.batch_size)
        its, secs = clock.iterations(), clock.seconds()
        rows: list[dict[str, Any]] = []
        for i, name in enumerate(STAGES):
            n, t = its.get(i, 0), secs.get(i)
            rows.append({"what": f"stage {i + 1}: {name}", "planned_iterations": steps[i] if i < len(steps) else "to the end",
                         "iterations": n, "seconds": round(t, 1) if t else None,
                         "images_s": round(n * batch / t, 1) if t else None,
                         "warmup_s_per_iteration": round(spi[i], 4) if i in spi else None})
        n_all, t_all = sum(its.values()), sum(secs.values())
        rows.append({"what": f"training, batch {batch}", "iterations": n_all, "seconds": round(t_all, 1),
                     "images_s": round(n_all * batch / t_all, 1) if t_all else None})
        rows.append(held_out(res["prior"], held, device, dry, photos_from))
        rows.append(dgnam_row(res["prior"], s, device, dry, wf if dry else None))
        files = copy_in_parts(Path(res["prior"]), out)
    return {"preset": "shrunk (dry run)" if dry else a.preset, "overrides": overrides,
            "stages_reached": sum(n > 0 for n in its.values()), "csv_stages": csv_stages,
            "warmup_s": round(warm_s, 1), "setup_s": round(setup_s, 1), "train_budget_s": round(train_s, 1),
            "after_training_s": round(time.perf_counter() - t_after, 1),
            "prior": ", ".join(files), "rows": rows}


def judge_file() -> Path:
    from dgnam.paths import shared_dir

    return Path(shared_dir()) / "models" / "judge_mobilenet_v1_0.5_160.pt2"


@torch.no_grad()
def held_out(prior: str, held: Path | None, device: torch.device, dry: bool, photos_from: str) -> dict[str, Any]:
    """The reconstructions of the held-out photos: PSNR, the target's and the judge's top-1."""
    from dgnam.core.images import resize
    from dgnam.generator.data import SyntheticImages
    from dgnam.generator.evaluate import evaluate, judge_scores, load_photos
    from dgnam.generator.prior import load_prior, prior_encoder

    g, info = load_prior(prior, device=device)
    enc = prior_encoder(info, None, prior, device=device)
    if held is not None:
        photos, labels = load_photos(str(held), None, 128)
    else:
        ds = SyntheticImages(8 if dry else 500, 64 if dry else 128, seed=1)
        items = list(ds)
        photos, labels = torch.stack([it["image"] for it in items]), torch.tensor([it["label"] for it in items])
    x = photos.to(device)
    ev = evaluate(g, enc, None, x, labels.to(device), resize(x, info["resolution"]).mean(0))
    row = {"what": f"held-out photos: {len(labels)}, {photos_from}", "psnr_db": round(ev["psnr_db"], 2),
           "target_top1": round(ev["top1_recon_vs_label"], 3), "judge_top1": None,
           "judge_top1_photo_128": None, "judge_top1_photo": None}
    if judge_file().is_file():
        from dgnam.eval.judges import load_judge

        judge = load_judge({"kind": "pt2", "path": str(judge_file()), "input_size": 160})
        j = judge_scores(lambda im: judge(im.cpu()), g, enc, x, labels)  # the judge runs on the CPU
        row.update({"judge_top1": round(j["judge_top1_recon"], 3),
                    "judge_top1_photo_128": round(j["judge_top1_downsampled_photo"], 3),
                    "judge_top1_photo": round(j["judge_top1_photo"], 3)})
    return row


def dgnam_row(prior: str, s: dict[str, Any], device: torch.device, dry: bool, weights: Path | None) -> dict[str, Any]:
    """DGN-AM (``method=dgnam_deep``, fp32) through the new prior on the comparison's classes, judged."""
    from bench_dgnam import COMPARE, config, judged

    from dgnam.views.am import compute_am

    units = COMPARE[: s["classes"]]
    extra = [f"param.prior={prior}"] + ([f"steps={s['dgnam_steps']}", f"model.weights_file={weights}"] if dry else [])
    row = {"what": f"DGN-AM dgnam_deep fp32 through this prior, classes: {len(units)}", "judge_top1": None,
           "judge_p": None}
    if judge_file().is_file():
        j = judged("dgnam_deep", "fp32", units, len(units), str(device), extra)
        return {**row, "judge_top1": round(j["top1"], 3), "judge_p": round(j["p"], 3),
                "steps": round(j["steps"], 1), "s_per_image": round(j["seconds"], 3)}
    r = compute_am(config("dgnam_deep", "fp32", units, len(units), str(device), extra)).rows
    return {**row, "target_top1": round(sum(q["top1"] == q["unit"] for q in r) / len(r), 3),
            "steps": round(sum(q["steps"] for q in r) / len(r), 1),
            "s_per_image": round(sum(q["seconds"] for q in r) / len(r), 3)}
