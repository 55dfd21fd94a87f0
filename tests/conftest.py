"""Shared fixtures: a tiny target network, config composition, the shared assets (optional)."""

from __future__ import annotations

import logging
import os
import runpy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import dgnam.config  # noqa: F401  (registers the structured configs that conf/ refers to)
from dgnam.core.models import Target

REPO = Path(__file__).resolve().parents[1]
# precision=auto is bf16 only on CPUs with bf16 hardware (AMX, AVX-512 BF16): the suite's exact
# comparisons are fp32's, so it runs every CPU as fp32-only (subprocesses inherit it); the tests of
# auto itself set dgnam.core.precision._cpu_bf16 as they need
os.environ.setdefault("DGNAM_CPU_BF16", "0")
CONF = REPO / "conf"
SHARED = Path(os.environ.get("DGNAM_SHARED", REPO.parent / "shared"))
MOBILENET = SHARED / "models" / "mobilenet_v2_imagenet.pth"
JUDGE = SHARED / "models" / "judge_mobilenet_v1_0.5_160.pt2"
DATA = SHARED / "data" / "imagenet50-128"


class TinyNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(64, 32), nn.ReLU(inplace=True), nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@pytest.fixture
def tiny_target() -> Target:
    aliases = {"conv1": "features.0", "conv2": "features.3", "pool2": "features.5",
               "fc1": "classifier.1", "fc2": "classifier.2"}
    return Target(TinyNet(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name="tiny", input_size=32,
                  aliases=aliases, categories=[f"class{i}" for i in range(10)])


@pytest.fixture(scope="module")
def one_thread():
    """Run a module on one torch thread: small tensors are fastest so, and a busy machine is not
    oversubscribed. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run_script(monkeypatch, script: str, *args: str) -> int:
    """``python <script> <args>`` run in this process as the script itself (``runpy``, as
    ``__main__``): what the command does, without a new interpreter's seconds of imports. Returns its
    exit status (0 when it returns)."""
    monkeypatch.setattr(sys, "argv", [str(REPO / script), *args])
    handlers, level = logging.root.handlers[:], logging.root.level  # Hydra's job logging, undone after
    try:
        runpy.run_path(str(REPO / script), run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        for h in logging.root.handlers[:]:
            if h not in handlers:
                logging.root.removeHandler(h)
                h.close()
        logging.root.setLevel(level)
    return 0


def needs_shared(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.exists(), reason=f"shared asset {path} not found (set DGNAM_SHARED)")


@pytest.fixture
def compose():
    """compose(config_name, overrides) with the real conf/ directory."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def _compose(overrides=(), name: str = "visualize"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hcompose(config_name=name, overrides=list(overrides))

    yield _compose
    GlobalHydra.instance().clear()


class StartWeights:
    """A Lightning callback for resume tests (``+callbacks.start._target_=conftest.StartWeights
    +callbacks.start.path=...``): saves the module's weights and global step as training starts, so a
    test can check that a resumed run began from its checkpoint and not from a fresh start."""

    def __new__(cls, path: str):
        from lightning.pytorch.callbacks import Callback

        class _StartWeights(Callback):
            def on_train_start(self, trainer, pl_module) -> None:
                state = {k: v.detach().clone().cpu() for k, v in pl_module.state_dict().items()}
                torch.save({"state_dict": state, "global_step": trainer.global_step}, path)

        return _StartWeights()


def assert_resumed(start_file: Path, saved: dict, first_csv_rows: list[dict] | None = None,
                   csv_file: Path | None = None) -> None:
    """What only a resume gives: the weights at the start of the second run are those of ``saved``
    (the checkpoint, read before the second run overwrote it), the metrics rows logged before the
    checkpoint are unchanged, and no step is logged twice (when the run resumed into the same folder:
    ``first_csv_rows`` read before it, ``csv_file`` after)."""
    import csv

    start = torch.load(start_file, weights_only=True)
    assert start["global_step"] == saved["global_step"] > 0
    trained = [k for k, v in saved["state_dict"].items() if v.is_floating_point()]
    assert trained and all(torch.equal(start["state_dict"][k], saved["state_dict"][k]) for k in trained)
    if first_csv_rows is None:
        return
    rows = list(csv.DictReader(open(csv_file)))
    before = [r for r in first_csv_rows if int(r["step"]) < saved["global_step"]]
    assert before and [{k: r.get(k, "") for k in b} for r, b in zip(rows, before)] == before  # (columns may be added)
    keys = [(r["step"], tuple(k for k, v in r.items() if v not in ("", None) and k != "step")) for r in rows]
    assert len(keys) == len(set(keys)), "a step logged twice"
