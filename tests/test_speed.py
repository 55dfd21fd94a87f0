"""The speed features: bf16 autocast of the target and of a prior's decoder against float32 (within
stated tolerances), ``precision=auto`` (bf16 only where the hardware computes it), and the early stop
(it ends a saturated run and never a rising one)."""

from __future__ import annotations

import functools
import sys

import pytest
import torch
from conftest import REPO, TinyNet
from test_latent import tiny_latent_generator

from dgnam.core import precision as PR
from dgnam.core.loop import EarlyStop, optimize
from dgnam.core.models import Target
from dgnam.core.objectives import Objective
from dgnam.core.params import GeneratorParam, LatentParam, PixelParam
from dgnam.errors import DgnamError
from dgnam.generator.taef2 import TAEF2Decoder

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# bfloat16 keeps 8 bits of mantissa (~0.4 % per rounding). Through the decoder's 20-odd random-weight
# convolutions the image stays within BF16_IMAGE (absolute, images in [0, 1]) of its float32 value,
# and the gradient that reaches the code keeps a cosine similarity of at least BF16_GRAD_COS.
BF16_IMAGE = 0.05
BF16_GRAD_COS = 0.98


def _image_and_grad(param) -> tuple[torch.Tensor, torch.Tensor]:
    image = param()
    (grad,) = torch.autograd.grad((image * torch.linspace(0, 1, image.numel()).view_as(image)).sum(),
                                  next(p for p in param.parameters() if p.requires_grad))
    return image.detach(), grad.flatten()


def _generator_param(precision: str) -> GeneratorParam:
    gen = tiny_latent_generator(code_dim=16).requires_grad_(False)
    return GeneratorParam(torch.zeros(2, 3, 8, 8), generator=torch.Generator().manual_seed(0), gen=gen,
                          code_mean=torch.full((16,), 0.5), code_std=torch.full((16,), 0.25), precision=precision)


def _latent_param(precision: str) -> LatentParam:
    torch.manual_seed(0)
    stats = {"mean": torch.zeros(32), "std": torch.ones(32), "low": -torch.ones(32) * 3, "high": torch.ones(32) * 3}
    return LatentParam(torch.zeros(2, 3, 32, 32), generator=torch.Generator().manual_seed(0),
                       decoder=TAEF2Decoder(None).eval().requires_grad_(False), stats=stats, precision=precision)


@pytest.mark.parametrize("make", [_generator_param, _latent_param], ids=["generator", "latent"])
def test_bf16_decoder_stays_within_the_stated_tolerance_of_fp32(make):
    img32, g32 = _image_and_grad(make("fp32"))
    img16, g16 = _image_and_grad(make("bf16"))
    assert img16.dtype == torch.float32  # the loop and the target get float32 images
    err = (img16 - img32).abs().max().item()
    assert 0 < err < BF16_IMAGE  # it did run in bf16, and stays close
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > BF16_GRAD_COS


def test_auto_precision_follows_the_hardware(monkeypatch):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    target = lambda p: Target(TinyNet(), (0.5,) * 3, (0.25,) * 3, name="tiny", input_size=32, precision=p)  # noqa: E731
    y32 = target("fp32")(x, ["logits"])["logits"]
    monkeypatch.setattr(PR, "_cpu_bf16", lambda: False)
    assert PR.resolve("auto", "cpu") == "fp32"
    assert torch.equal(target("auto")(x, ["logits"])["logits"], y32)  # no bf16 hardware: exactly fp32
    monkeypatch.setattr(PR, "_cpu_bf16", lambda: True)
    assert PR.resolve("auto", "cpu") == "bf16" and PR.resolve("fp32", "cpu") == "fp32"
    y_auto = target("auto")(x, ["logits"])["logits"]
    assert torch.equal(y_auto, target("bf16")(x, ["logits"])["logits"]) and not torch.equal(y_auto, y32)
    g = _generator_param("auto")
    assert torch.equal(g(), _generator_param("bf16")())


def test_dgnam_cpu_bf16_overrides_what_the_cpu_reports(monkeypatch):
    monkeypatch.setattr(PR, "_cpu_bf16_detected", lambda: True)
    monkeypatch.setenv("DGNAM_CPU_BF16", "0")
    assert PR.resolve("auto", "cpu") == "fp32"  # a bf16 CPU run as fp32-only (the test suite does)
    monkeypatch.setattr(PR, "_cpu_bf16_detected", lambda: False)
    monkeypatch.setenv("DGNAM_CPU_BF16", "1")
    assert PR.resolve("auto", "cpu") == "bf16"
    monkeypatch.setenv("DGNAM_CPU_BF16", "")
    assert PR.resolve("auto", "cpu") == "fp32"  # unset: what the CPU reports
    monkeypatch.setenv("DGNAM_CPU_BF16", "yes")
    with pytest.raises(DgnamError, match=r"^DGNAM_CPU_BF16='yes'; valid: 0 \(fp32 only\), 1 .*, or unset"):
        PR.resolve("auto", "cpu")


def test_one_precision_key_reaches_the_target_and_the_prior(compose):
    cfg = compose(["method=dgnam_deep", "precision=bf16"])
    assert cfg.model.precision == "bf16" and cfg.param.precision == "bf16"
    cfg = compose(["method=latent_am", "precision=fp32", "param.precision=bf16"])
    assert cfg.model.precision == "fp32" and cfg.param.precision == "bf16"


@pytest.mark.parametrize("overrides, message", [
    (["precision=fp8"], "unknown precision 'fp8'; valid: auto, fp32, bf16"),
    (["model.precision=half"], "unknown model.precision 'half'; valid: auto, fp32, bf16"),
    (["method=dgnam_deep", "param.precision=fp16"], "unknown param.precision 'fp16'; valid: auto, fp32, bf16"),
    (["early_stop.patience=-2"], "early_stop.patience=-2 must be an integer >= 0"),
])
def test_bad_precision_or_early_stop_is_one_line_before_any_work(compose, tmp_path, overrides, message):
    cfg = compose(["model=alexnet", "model.weights=null", "steps=1", "image_size=64", *overrides])
    with pytest.raises(DgnamError, match=message) as err:
        visualize.run(cfg, tmp_path)
    assert "\n" not in str(err.value) and not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------- early stop
def test_early_stop_waits_for_every_item():
    stop = EarlyStop(patience=3, min_delta=0.01)
    flat, rising = torch.tensor(5.0), 1.0
    calls = []
    for t in range(12):
        rising *= 1.1  # item 1 keeps rising by 10 % a step
        calls.append(stop(torch.stack([flat, torch.tensor(rising)])))
    assert not any(calls)  # one rising item keeps the whole batch going
    stop = EarlyStop(patience=3, min_delta=0.01)
    seq = [1.0, 2.0, 3.0, 3.001, 3.002, 3.0, 2.9]  # rises, then stays within 1 % of its best
    assert [stop(torch.tensor([v])) for v in seq] == [False, False, False, False, False, True, True]


def _pixel_run(objective: Objective, steps: int, patience: int):
    param = PixelParam(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.4)
    return optimize(param, lambda x, layers: {"input": x}, objective, steps=steps,
                    optimizer=functools.partial(torch.optim.Adam, lr=0.05), early_stop=EarlyStop(patience, 0.0))


def test_early_stop_ends_a_saturated_run_and_never_a_rising_one():
    # saturating: -(x - 0.3)^2 reaches its maximum 0 and stays there
    saturating = Objective(lambda a: -(a["input"] - 0.3).pow(2).flatten(1).mean(1), {"input"}, "sat")
    res = _pixel_run(saturating, 300, patience=10)
    assert 10 < res.history.shape[0] < 300  # stopped, after at least `patience` steps
    assert (res.history[0] < -0.03).all() and (res.history.max(0).values > -0.005).all()  # at its plateau
    # rising without bound: the mean pixel value of an unclamped parameterization
    rising = Objective(lambda a: a["input"].flatten(1).mean(1) * 100, {"input"}, "rise")
    assert _pixel_run(rising, 60, patience=10).history.shape[0] == 60


def test_early_stop_through_the_cli_records_the_steps_it_ran(compose, tmp_path):
    cfg = compose(["model=alexnet", "model.weights=null", "layers=conv1", "units=[0,1]", "image_size=64",
                   "steps=400", "optimizer.lr=0.5", "early_stop.patience=5", "early_stop.min_delta=0.5",
                   "output.png=false", "output.grid=false"])
    rows = visualize.run(cfg, tmp_path)["results"]
    assert {r["steps"] for r in rows} == {rows[0]["steps"]} and 5 < rows[0]["steps"] < 400



# ------------------------------------------------------------------------------ batch-norm folding
def _bn_net() -> torch.nn.Module:
    from torchvision.ops import Conv2dNormActivation

    torch.manual_seed(0)
    net = torch.nn.Sequential(Conv2dNormActivation(3, 8, 3), torch.nn.Conv2d(8, 8, 3, padding=1),
                              torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                              torch.nn.BatchNorm2d(8), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(8, 5))
    for m in net.modules():  # statistics far from the identity, so that a wrong fold shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.2, 3), m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    return net.eval()


@pytest.mark.parametrize("channels_last", [True, False])
def test_batchnorm_is_folded_into_the_convolutions_without_changing_any_activation(channels_last):
    from torchvision.models.feature_extraction import create_feature_extractor

    net = _bn_net()
    target = Target(net, (0.5,) * 3, (0.25,) * 3, name="bn", input_size=16, channels_last=channels_last)
    layers = ["0", "2", "4", "logits"]  # "2": a BatchNorm's output; "4": a conv asked for before its BatchNorm "5"
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    got = target(x, layers)
    ref = create_feature_extractor(_bn_net(), return_nodes=["0", "2", "4", "8"])((x - 0.5) / 0.25)
    for layer, node in zip(layers, ["0", "2", "4", "8"]):
        assert torch.allclose(got[layer], ref[node], rtol=1e-4, atol=1e-5), layer
    (g,) = torch.autograd.grad(got["logits"][:, 2].sum(), x)
    (g_ref,) = torch.autograd.grad(ref["8"][:, 2].sum(), x)
    assert torch.allclose(g, g_ref, rtol=1e-4, atol=1e-6)
    ex = target._extractor(tuple(sorted(target.resolve(layer) for layer in layers)))
    kept = [n for n, m in ex.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert kept == ["5"]  # the BN after "4" stays (its input was asked for); the other two are folded
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in target.model.modules()) == 3  # the model untouched


def test_generator_training_auto_precision_is_bf16_mixed_only_on_bf16_hardware(monkeypatch):
    """train_generator.py's trainer.precision=auto: Lightning's bf16 autocast where the CPU has bf16
    hardware (the one-run CPU prior trains ~2.5x faster there), fp32 elsewhere; other values pass through."""
    from dgnam.generator.train import trainer_precision

    monkeypatch.setenv("DGNAM_CPU_BF16", "1")
    assert trainer_precision("auto", torch.device("cpu")) == "bf16-mixed"
    assert trainer_precision("32-true", torch.device("cpu")) == "32-true"
    monkeypatch.setenv("DGNAM_CPU_BF16", "0")
    assert trainer_precision("auto", torch.device("cpu")) == "32-true"
    assert trainer_precision("bf16-mixed", torch.device("cpu")) == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trainer_precision("auto", torch.device("cuda")) == "32-true"  # no GPU that computes bf16
