"""Train a generator prior G (DeePSiM) that inverts a frozen encoder layer (installed: ``dgnam-train``,
the same app).

    python train_generator.py                                   # the recipe (AlexNet fc6, 256 px)
    python train_generator.py experiment_train=mobilenet_v2_cpu # what runs on a 2-core CPU
    python train_generator.py experiment_train=mobilenet_v2_gpu # the full recipe at 128 px, one GPU
    python train_generator.py ... ckpt_path=outputs/.../checkpoints/last.ckpt   # resume

Outputs under Hydra's run directory: checkpoints/ (last.ckpt, best-*.ckpt by validation MSE),
tb/ (TensorBoard), csv/metrics.csv, grids/*.png (fixed validation images beside their
reconstructions, every epoch) and prior.pt (fp16 generator + code statistics, see docs/generator.md).
"""

from __future__ import annotations

from dgnam.commands import train as main
from dgnam.commands import train_app
from dgnam.generator.train import run

__all__ = ["main", "run", "train_app"]

if __name__ == "__main__":
    main()
