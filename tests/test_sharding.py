"""Sweeps across jobs: the launcher configs compose, experiment=compare_all_sharded splits the units
over jobs, and the report gathered over the shards equals the report of the unsharded job."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from dgnam.core.units import Unit, shard_units
from dgnam.errors import DgnamError


def _has(module: str) -> bool:
    """Whether an optional plugin is installed (find_spec raises when its parent package is absent)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


HAS_JOBLIB = _has("hydra_plugins.hydra_joblib_launcher")
HAS_SUBMITIT = _has("hydra_plugins.hydra_submitit_launcher")
TINY = ["experiment=compare_all_sharded", "model=torchvision", "model.arch=mobilenet_v2", "model.weights=null", "method=pixel", "steps=2",
        "image_size=64", "units=[1,2,3,4,5]", "batch_size=2", "report.judges=[]", "output.progress=false"]


def test_shards_are_contiguous_blocks_that_make_up_the_units():
    units = [Unit("logits", i, "class", f"c{i}") for i in range(7)]
    blocks = [shard_units(units, i, 3) for i in range(3)]
    assert [[u.index for u in b] for b in blocks] == [[0, 1], [2, 3], [4, 5, 6]]
    assert shard_units(units) == units
    with pytest.raises(DgnamError, match="shard.index=3 must be in 0 .. shard.count - 1 = 2"):
        shard_units(units, 3, 3)
    with pytest.raises(DgnamError, match="shard.count=8 is more than the 7 units"):
        shard_units(units, 0, 8)


def test_the_sharded_preset_composes(compose):
    cfg = compose(["experiment=compare_all_sharded"])
    assert cfg.units == "all" and cfg.shard.count == 10 and cfg.unit == "class"


@pytest.mark.parametrize("launcher, plugin, keys", [
    ("local_parallel", HAS_JOBLIB, {"n_jobs": 2}),
    ("slurm_gpu", HAS_SUBMITIT, {"gpus_per_node": 1, "tasks_per_node": 1}),
])
def test_launcher_configs_compose(launcher, plugin, keys):
    if not plugin:
        pytest.skip(f"the Hydra launcher plugin of hydra/launcher={launcher} is not installed (pip install -e .[cluster])")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("visualize", overrides=["experiment=compare_all_sharded", f"hydra/launcher={launcher}"],
                          return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    assert "Launcher" in cfg.hydra.launcher._target_
    assert {k: cfg.hydra.launcher[k] for k in keys} == keys


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """One random MobileNetV2 for every job (random weights drawn in each job would differ)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_random.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), path)
    return path


def _multirun(sweep, extra):
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "visualize.py", "-m", *TINY, *extra, f"hydra.sweep.dir={sweep}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((sweep / "report" / "report.json").read_text())


def _comparable(rows):
    drop = {"run", "source", "image", "seconds", "batch_seconds"}  # timings differ; paths name the job
    return sorted(({k: v for k, v in r.items() if k not in drop} for r in rows), key=lambda r: r["unit"])


def test_report_over_the_shards_equals_the_unsharded_one(tmp_path, weights):
    w = [f"model.weights_file={weights}"]
    whole = _multirun(tmp_path / "whole", ["shard.count=1", "shard.index=0", *w])
    launcher = ["hydra/launcher=local_parallel"] if HAS_JOBLIB else []  # else Hydra's basic launcher
    sharded = _multirun(tmp_path / "sharded", ["shard.count=2", "shard.index=0,1", *launcher, *w])
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir() if p.name.isdigit()) == ["0", "1"]
    assert [r["unit"] for r in _comparable(whole)] == [1, 2, 3, 4, 5]
    assert _comparable(sharded) == _comparable(whole)


def test_a_missing_shard_is_reported(tmp_path, caplog):
    from dgnam.eval.report import check_shards

    lines = check_shards({("pixel", 0): {(0, 3), (2, 3)}, ("lucid", 0): {(0, 1)}})
    assert lines == ["method pixel seed 0: shard(s) 1 of 3 missing (give every shard's sweep directory in report.runs)"]
    assert "shard(s) 1 of 3 missing" in caplog.text
