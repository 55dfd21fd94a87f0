"""trainer=ddp: generator training in 2 processes (Lightning's DDP on gloo, CPU), against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, assert_resumed
from test_generator import TINY_OVERRIDES

from dgnam.generator.prior import load_prior

SMALL = ["data.limit_train=16", "data.limit_val=8", "data.batch_size=4", "trainer.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """train_generator.py trainer=ddp with 2 CPU processes, 6 optimizer steps (3 of G and 3 of D):
    each rank has 2 of the 4 batches of an epoch; every step's weight digests per rank."""
    run_dir = tmp_path_factory.mktemp("ddp")
    cmd = [sys.executable, "train_generator.py", *TINY_OVERRIDES, *SMALL, "trainer=ddp", "trainer.devices=2",
           "device=cpu", "trainer.max_steps=6", "trainer.max_time=null", "trainer.enable_progress_bar=false",
           "trainer.checkpoint_every_minutes=null",
           "+callbacks.weight_digests._target_=dgnam.generator.callbacks.WeightDigests",
           f"+callbacks.weight_digests.dirpath={run_dir / 'digests'}", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return run_dir, p


def test_ranks_hold_identical_weights_after_each_step(ddp_run):
    run_dir, p = ddp_run
    lines = [(run_dir / "digests" / f"rank{r}.jsonl").read_text().splitlines() for r in (0, 1)]
    steps = [json.loads(line)["step"] for line in lines[0]]
    assert steps == [0, 1, 2, 3]  # the start, then after every step
    assert lines[0] == lines[1]
    assert len({json.loads(line)["generator"] for line in lines[0]}) == 4  # and the weights did change
    assert p.stdout.count("prior: ") == 1  # rank 0 exports, once
    assert [f.name for f in (run_dir / "grids").iterdir()] == ["epoch000-it0000002.png"]  # the one validation
    assert sorted(f.name for f in (run_dir / "checkpoints").iterdir()) == ["best-000-0000004.ckpt", "last.ckpt"]


def test_code_statistics_equal_the_single_process_ones_and_the_checkpoint_resumes(ddp_run, compose, tmp_path):
    from train_generator import run

    run_dir, _ = ddp_run
    one = run(compose(TINY_OVERRIDES + SMALL + ["trainer.max_steps=2"], name="train_generator"), out_dir=tmp_path / "one")
    _, ddp_info = load_prior(run_dir / "prior.pt")
    _, one_info = load_prior(one["prior"])
    for k in ("code_mean", "code_std", "code_upper"):
        assert torch.equal(ddp_info[k], one_info[k]), k
    last = run_dir / "checkpoints" / "last.ckpt"
    ddp_sd = torch.load(last, weights_only=False)["state_dict"]
    one_sd = torch.load(one["last_ckpt"], weights_only=False)["state_dict"]
    for k in ("generator.in_mean", "generator.in_scale"):  # G's input standardization, from the statistics
        assert torch.equal(ddp_sd[k], one_sd[k]), k
    # the 2-process checkpoint resumes in one process, where it stopped
    probe = ["+callbacks.start._target_=conftest.StartWeights", f"+callbacks.start.path={tmp_path / 'start.pt'}"]
    res = run(compose(TINY_OVERRIDES + SMALL + ["trainer.max_steps=10", "trainer.max_epochs=-1", f"ckpt_path={last}",
                                                *probe], name="train_generator"), out_dir=tmp_path / "resumed")
    assert res["iterations"] == 5 and res["global_step"] == 10
    assert_resumed(tmp_path / "start.pt", torch.load(last, weights_only=False))  # from the 2-process weights
