"""Train a generator prior G (DeePSiM) that inverts a frozen encoder layer.

    python train_generator.py                                   # the recipe (AlexNet fc6, 256 px)
    python train_generator.py experiment_train=mobilenet_v2_cpu # what runs on a 2-core CPU
    python train_generator.py experiment_train=mobilenet_v2_gpu # the full recipe at 128 px, one GPU
    python train_generator.py ... ckpt_path=outputs/.../checkpoints/last.ckpt   # resume

Outputs under Hydra's run directory: checkpoints/ (last.ckpt, best-*.ckpt by validation MSE),
tb/ (TensorBoard), csv/metrics.csv, grids/*.png (fixed validation images beside their
reconstructions, every epoch) and prior.pt (fp16 generator + code statistics, see docs/generator.md).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import dgnam.config  # noqa: F401  (registers the resolvers the configs use)
from dgnam.cli import guarded, launch
from dgnam.generator.train import run

__all__ = ["main", "run"]


@hydra.main(version_base="1.3", config_path="conf", config_name="train_generator")
@guarded
def main(cfg: DictConfig) -> None:
    out = run(cfg)
    if out["prior"] is None:  # a rank other than 0 of trainer=ddp: rank 0 says where the prior is
        return
    print(f"prior: {out['prior']}  val_mse: {out['val_mse']}  steps: {out['iterations']}")


if __name__ == "__main__":
    launch(main, Path(__file__).resolve().parent / "conf", "train_generator")
