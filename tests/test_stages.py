"""The prior recipe in stages within one run (``stages:``), and the one-command presets that use it
(``experiment_train=mobilenet_v2_prior_gpu``, ``vgg16_prior_gpu``, ``alexnet_prior_gpu``,
``any_prior_gpu``, ``mobilenet_v2_prior_cpu``), shrunk to run on the CPU: random weights, synthetic
photos, a tiny head, a few steps per stage, a checkpoint written and resumed."""

from __future__ import annotations

import csv
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
from conftest import REPO
from test_spatial import SPATIAL_TRAIN

from dgnam.core.models import build_target
from dgnam.errors import DgnamError
from dgnam.generator.encoder import auto_perceptual_layers
from dgnam.generator.prior import load_prior
from dgnam.generator.stages import parse_stages

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_prior  # noqa: E402  (benchmarks/gpu_prior.py: the GPU check's prior section)

NAMES = ("latent", "image", "feature", "perceptual", "adversarial", "grid")
STAGED = [*SPATIAL_TRAIN, "trainer.max_steps=40", "trainer.max_epochs=-1", "data.synthetic_size=8",
          "data.batch_size=4", "data.limit_train=null",
          "+stages.latent.steps=2", "+stages.latent.weights.adversarial=1.0",
          "+stages.perceptual.steps=3", "+stages.perceptual.weights={adversarial: 0.0, perceptual: 10.0}",
          "+stages.perceptual.perceptual_layers=[[features.3.add,1.0],[features.6.conv.0,1.0]]",
          "+stages.perceptual.lr_scale=0.1",
          "+stages.deep.steps=null", "+stages.deep.perceptual_layers=auto_past",
          "+stages.deep.weights={adversarial: 0.0, perceptual: 10.0}", "+stages.deep.lr_scale=0.1"]


def rows(run_dir: Path) -> list[dict]:
    return [r for r in csv.DictReader(open(run_dir / "csv" / "metrics.csv")) if r.get("train/stage")]


@pytest.mark.parametrize("node, message", [
    ({"a": {"steps": 2, "lr": 1}}, "stages.a: unknown key(s) lr; valid: steps, weights"),
    ({"a": {"steps": None}, "b": {"steps": 2}}, "stages.a.steps is null, which only the last stage may be"),
    ({"a": {"steps": 0}}, "stages.a.steps=0 must be a positive number"),
    ({"a": {"steps": 2, "weights": {"style": 1.0}}}, "stages.a.weights: unknown loss term(s) style; valid: latent"),
    ({"a": {"steps": 2, "weights": {"image": -1.0}}}, "must all be >= 0"),
    ({"a": {"steps": 2, "perceptual_layers": "deep"}}, "stages.a.perceptual_layers='deep'; valid: [[layer, weight]"),
    ({"a": {"steps": 2, "lr_scale": 0}}, "stages.a.lr_scale=0.0 must be positive"),
    ({"a": {"steps": 2, "feature_items": 0}}, "stages.a.feature_items=0 must be positive"),
    ([1, 2], "stages must be a mapping of stage name"),
])
def test_stage_errors_are_one_line(node, message):
    with pytest.raises(DgnamError) as err:
        parse_stages(node, {"latent": 1.0}, NAMES)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_stages_follow_each_other_and_merge_their_weights():
    st = parse_stages({"a": {"steps": 3, "weights": {"adversarial": 5.0}}, "b": {"steps": None, "lr_scale": 0.5}},
                      {"latent": 1.0, "adversarial": 0.0}, NAMES)
    assert [(s.start, s.end) for s in st] == [(0, 3), (3, None)]
    assert st[0].weights == {"latent": 1.0, "adversarial": 5.0} and st[1].weights == {"latent": 1.0, "adversarial": 0.0}
    assert st[1].lr_scale == 0.5 and parse_stages(None, {}, NAMES) == []


def test_auto_perceptual_layers_pick_by_depth_around_the_code():
    t = build_target("vgg16", conv_relu=True)
    assert auto_perceptual_layers(t, "conv5_3", 128) == [("features.15", 1.0), ("features.22", 1.0), ("conv5_3", 1.0)]
    past = auto_perceptual_layers(t, "conv5_3", 128, past=True)
    assert len(past) == 4 and past[-1][0] == "avgpool"  # the last map with a side > 1: what the classifier reads
    with pytest.raises(DgnamError, match="needs a spatial code layer"):
        auto_perceptual_layers(t, "fc6", 128)


def test_a_staged_run_switches_terms_lr_and_d_by_iteration_and_resumes_in_its_stage(compose, tmp_path):
    from dgnam.generator.train import run

    out = run(compose([*STAGED, "trainer.max_steps=7"], name="train_generator"), out_dir=tmp_path / "a")
    # stage 1: 2 iterations with D (4 optimizer steps), then 3 iterations of stage 2 without D (3 steps)
    assert out["iterations"] == 5 and out["global_step"] == 7
    got = rows(tmp_path / "a")
    assert [r["train/stage"] for r in got] == ["1.0", "1.0", "2.0", "2.0", "2.0"]
    lr = [float(r["lr"]) for r in got]
    assert lr[2] == pytest.approx(0.1 * lr[1]) and lr[4] == pytest.approx(lr[2])
    assert all(r.get("train/perceptual") for r in got[2:]) and not any(r.get("train/perceptual") for r in got[:2])
    ckpt = torch.load(out["last_ckpt"], weights_only=False)
    d_after_stage1 = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("discriminator.")}
    # resumed: it goes on in stage 3 (the iteration count says where), at the scaled rate, D untouched
    out2 = run(compose([*STAGED, "trainer.max_steps=10", f"ckpt_path={out['last_ckpt']}"],
                       name="train_generator"), out_dir=tmp_path / "b")
    assert out2["iterations"] == 8
    later = rows(tmp_path / "b")
    assert [r["train/stage"] for r in later] == ["3.0"] * 3
    assert float(later[0]["lr"]) == pytest.approx(lr[4])
    end = torch.load(out2["last_ckpt"], weights_only=False)["state_dict"]
    assert all(torch.equal(end[k], v) for k, v in d_after_stage1.items())  # D trains in stage 1 only
    g, info = load_prior(out2["prior"])
    assert info["extra"]["config"]["stages"]["deep"]["perceptual_layers"] == "auto_past"


# the presets at tiny sizes on the CPU, as the GPU check's dry run runs them; one iteration per stage
SHRUNK = [*gpu_prior.SHRUNK, "stages.latent.steps=1", "stages.perceptual.steps=1", "stages.deep.steps=1",
          "stages.grid.steps=2"]
PRESETS = {  # the preset and what makes it small: a code of side 4 at 64 px (the head's 4 -> 8 for the 64-px decoder)
    "mobilenet_v2_prior_gpu": ["encoder.target.weights_file=null", "encoder.input_size=64"],
    "mobilenet_v2_prior_cpu": ["encoder.target.weights_file=null", "encoder.input_size=64", "data.cache=false"],
    "vgg16_prior_gpu": ["encoder.target.weights=null", "encoder.input_size=64"],
    "alexnet_prior_gpu": ["encoder.target.weights=null", "encoder.input_size=80", "encoder.comparator_input_size=80"],
    "any_prior_gpu": ["encoder.target._target_=torchvision.models.resnet18", "encoder.code_layer=layer3.1.relu_1",
                      "encoder.input_size=64"],
}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_each_prior_preset_runs_its_stages_shrunk_and_resumes(compose, tmp_path, preset):
    from dgnam.generator.train import run

    base = [f"experiment_train={preset}", *SHRUNK, *PRESETS[preset]]
    out = run(compose([*base, "trainer.max_steps=3"], name="train_generator"), out_dir=tmp_path / "a")
    assert out["iterations"] == 2 and [r["train/stage"] for r in rows(tmp_path / "a")] == ["1.0", "2.0"]
    # resumed: stage 3, then the grid stage, whose 2 iterations end the run (max_steps is past them)
    out2 = run(compose([*base, "trainer.max_steps=50", f"ckpt_path={out['last_ckpt']}"], name="train_generator"),
               out_dir=tmp_path / "b")
    got = rows(tmp_path / "b")
    assert out2["iterations"] == 5 and [r["train/stage"] for r in got] == ["3.0", "4.0", "4.0"]
    assert [bool(r.get("train/grid")) for r in got] == [False, True, True]  # the grid term in stage 4 only
    # a finished run resumed again does nothing more
    out3 = run(compose([*base, "trainer.max_steps=50", f"ckpt_path={out2['last_ckpt']}"], name="train_generator"),
               out_dir=tmp_path / "c")
    assert out3["iterations"] == 5
    g, info = load_prior(out2["prior"])
    assert g(torch.rand(1, info["code_dim"])).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("preset, arch", [("vgg16_prior_gpu", "VGG16_Weights"), ("alexnet_prior_gpu", "AlexNet_Weights")])
def test_vgg16_and_alexnet_presets_offline_without_a_weights_file_are_one_line(compose, tmp_path, monkeypatch,
                                                                                preset, arch):
    from dgnam.generator.train import run

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def refuse(url, dst, **kw):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    with pytest.raises(DgnamError) as err:
        run(compose([f"experiment_train={preset}", *SHRUNK], name="train_generator"), out_dir=tmp_path / "run")
    msg = str(err.value)
    assert msg.startswith(f"cannot download {arch}.IMAGENET1K_V1") and "\n" not in msg
    assert "encoder.target.weights=null encoder.target.weights_file=" in msg
    assert not (tmp_path / "run" / "prior.pt").exists()
