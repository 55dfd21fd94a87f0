"""Checkpoints of generator training: written atomically (:class:`AtomicCheckpointIO`), read without
running code, and checked against the run's config before Lightning starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from dgnam.errors import DgnamValueError
from dgnam.generator.arch import Generator
from dgnam.generator.module import GeneratorModule
from dgnam.io import save_torch
from dgnam.safeload import check_finite_tensors, check_state_dict, load_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint is written beside its final name and renamed over it (atomic on one
    filesystem; Lightning's own writer stages through the temporary folder and copies). A write that
    fails, such as on a full disk, removes its partial file, leaves the last good checkpoint as it
    was, and stops training with one line."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        try:
            save_torch(checkpoint, path)
        except OSError as e:
            raise DgnamValueError(f"cannot write checkpoint {path}: {e.strerror or e} (disk full?); the last good "
                             f"checkpoint is kept") from None


def read_checkpoint(ckpt: Path) -> dict[str, Any]:
    """A Lightning checkpoint of train_generator.py, read without running code (``weights_only``);
    anything else is one line naming the file."""
    state = load_file(ckpt, "checkpoint", finite=False)  # callbacks keep inf as "no best score yet"
    sd = state.get("state_dict") if isinstance(state, dict) else None
    if not isinstance(sd, dict) or not any(str(k).startswith("generator.") for k in sd):
        raise DgnamValueError(f"{ckpt} is not a training checkpoint of train_generator.py (no generator weights in it)")
    check_finite_tensors(sd, f"checkpoint {ckpt}")
    return state


def load_generator_weights(generator: Generator, ckpt: Path) -> dict[str, Any]:
    """Load G's weights from a Lightning checkpoint of :class:`GeneratorModule`; returns the checkpoint."""
    state = read_checkpoint(ckpt)
    sd = {k[len("generator."):]: v for k, v in state["state_dict"].items() if k.startswith("generator.")}
    check_state_dict(generator.state_dict(), sd, f"checkpoint {ckpt} does not fit this config's generator "
                     f"(another encoder, resolution or widths?)")
    generator.load_state_dict(sd)
    return state


def check_resume(module: GeneratorModule, ckpt: Path) -> int:
    """Before Lightning starts: ``ckpt`` is readable, made for this encoder, and its generator and
    discriminator weights fit this config (resolution, widths, kind). Returns the logging step the
    resumed run starts at (Lightning's count of batches that stepped: the ``step`` column of the logs)."""
    state = read_checkpoint(ckpt)
    module.check_encoder(state.get("dgnam_encoder"))
    frozen = module.frozen_prefixes
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(frozen)}
    theirs = {k: v for k, v in state["state_dict"].items() if not str(k).startswith(frozen)}
    check_state_dict(own, theirs, f"checkpoint {ckpt} does not fit this config (another resolution, widths, "
                     f"generator kind or discriminator?)")
    epoch_loop = ((state.get("loops") or {}).get("fit_loop") or {}).get("epoch_loop.state_dict") or {}
    return int(epoch_loop.get("_batches_that_stepped") or 0)
