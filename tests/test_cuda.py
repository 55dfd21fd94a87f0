"""Device paths: CPU against CUDA on tiny nets, bfloat16 autocast against float32, channels_last, and
torch.compile against eager. The CUDA tests skip without a GPU; ``benchmarks/gpu_check.sh`` runs this
file on one. The bf16 and compile tests also run on the CPU."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import TinyNet

from dgnam.core import objectives as O
from dgnam.core.loop import optimize
from dgnam.core.models import Target
from dgnam.core.params import PixelParam, noise_init

pytestmark = pytest.mark.usefixtures("one_thread")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]

# bfloat16 keeps 8 bits of mantissa (~0.4 % per rounding): through the tiny net's four layers the
# logits stay within BF16_LOGITS of their float32 values (relative to the largest |logit|), and 20 AM
# steps end within BF16_SCORE of the float32 run's objective.
BF16_LOGITS = 0.03
BF16_SCORE = 0.10


def tiny(device: str = "cpu", **kw) -> Target:
    return Target(TinyNet(), (0.5,) * 3, (0.25,) * 3, name="tiny", input_size=32, **kw).to(device)


def am(target: Target, steps: int = 20, device: str = "cpu"):
    torch.manual_seed(0)
    param = PixelParam(noise_init(4, (32, 32))).to(device)
    return optimize(param, target, O.class_logit("logits", [0, 1, 2, 3]), steps=steps,
                    optimizer=functools.partial(torch.optim.Adam, lr=0.05))


def logits_and_grad(target: Target, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y = target(x, ["logits"])["logits"]
    (g,) = torch.autograd.grad(y[:, 0].sum(), x)
    return y.detach().cpu(), g.cpu()


@CUDA
def test_cpu_and_cuda_agree_on_a_tiny_net():
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y_cpu, g_cpu = logits_and_grad(tiny("cpu"), x)
    y_gpu, g_gpu = logits_and_grad(tiny("cuda"), x.cuda())
    assert torch.allclose(y_cpu, y_gpu, atol=1e-4, rtol=1e-3)
    assert torch.allclose(g_cpu, g_gpu, atol=1e-5, rtol=1e-3)
    r_cpu, r_gpu = am(tiny("cpu"), 10), am(tiny("cuda"), 10, "cuda")
    assert torch.allclose(r_cpu.history, r_gpu.history, rtol=1e-3, atol=1e-3)
    assert (r_cpu.images - r_gpu.images).abs().max() < 1e-2


@CUDA
def test_channels_last_gives_the_same_activations_on_cuda():
    x = torch.rand(4, 3, 32, 32, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    a, ga = logits_and_grad(tiny("cuda", channels_last=True), x)
    b, gb = logits_and_grad(tiny("cuda", channels_last=False), x)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-3) and torch.allclose(ga, gb, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_stays_within_the_stated_tolerance_of_fp32(device):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    y32, _ = logits_and_grad(tiny(device), x)
    y16, _ = logits_and_grad(tiny(device, precision="bf16"), x)
    assert y16.dtype == torch.float32
    err = (y16 - y32).abs().max() / y32.abs().max()
    assert 0 < err < BF16_LOGITS  # it did run in bf16, and stays close
    s32 = am(tiny(device), device=device).history[-1]
    s16 = am(tiny(device, precision="bf16"), device=device).history[-1]
    assert ((s16 - s32).abs() / s32.abs().clamp_min(1e-3)).max() < BF16_SCORE


def test_unknown_precision_is_a_user_error():
    from dgnam.errors import DgnamError

    with pytest.raises(DgnamError, match="valid: auto, fp32, bf16"):
        tiny(precision="fp8")


@CUDA
def test_generator_training_runs_on_cuda_with_bf16_autocast(compose, tmp_path):
    from test_generator import TINY_OVERRIDES

    from dgnam.generator.prior import load_prior
    from train_generator import run

    out = run(compose(TINY_OVERRIDES + ["device=cuda"], name="train_generator"), out_dir=tmp_path)
    assert out["iterations"] == 2
    gen, info = load_prior(out["prior"], "cuda")  # the prior it wrote loads (weights only) and draws on the GPU
    images = gen(torch.stack([info["code_mean"], info["code_mean"] + info["code_std"]]).cuda())
    assert images.is_cuda and torch.isfinite(images).all() and (images[0] - images[1]).abs().max() > 0


def test_torch_compile_matches_eager_for_the_target_and_dynamo_runs_the_generator_unchanged(monkeypatch):
    from test_generator import tiny_generator

    from dgnam.core.params import GeneratorParam

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ya, ga = logits_and_grad(tiny(), x)
    compiled = tiny(compile=True)
    yb, gb = logits_and_grad(compiled, x)
    assert all(type(e).__name__ == "OptimizedModule" for e in compiled._extractors.values())
    assert torch.allclose(ya, yb, atol=1e-5) and torch.allclose(ga, gb, atol=1e-6)
    # G through dynamo only (backend "eager"): the wiring, without a second inductor compile (seconds)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    g = tiny_generator(code_dim=8).eval().requires_grad_(False)
    stats = dict(code_mean=torch.zeros(8), code_std=torch.ones(8))
    eager, comp = (GeneratorParam(torch.zeros(2, 3, 8, 8), gen=g, compile=c, **stats) for c in (False, True))
    assert type(comp._run).__name__ == "OptimizedModule" and set(comp.state_dict()) == set(eager.state_dict())
    ia, ib = eager(), comp()
    ia.sum().backward(), ib.sum().backward()
    assert torch.allclose(ia, ib, atol=1e-5) and torch.allclose(eager.code.grad, comp.code.grad, atol=1e-5)
