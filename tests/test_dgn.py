"""DGN-AM as a parameterization of the loop, with a tiny generator."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from dgnam.core import objectives as O
from dgnam.core.loop import optimize
from dgnam.core.params import GeneratorParam
from dgnam.core.transforms import Resize
from dgnam.errors import DgnamError

D = 16


class TinyGen(nn.Module):
    """code (B, 16) -> image (B, 3, 16, 16) in [0, 1]."""

    code_dim = D

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(D, 32 * 4 * 4)
        self.up = nn.Sequential(nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.LeakyReLU(0.3),
                                nn.ConvTranspose2d(16, 3, 4, 2, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.up(self.fc(h).view(-1, 32, 4, 4)))


def _param(batch=2, seed=0, **kw):
    kw.setdefault("code_mean", torch.full((D,), 0.5))
    kw.setdefault("code_std", torch.full((D,), 0.25))
    return GeneratorParam(torch.zeros(batch, 3, 8, 8), noise=True, generator=torch.Generator().manual_seed(seed),
                          gen=TinyGen().requires_grad_(False), **kw)


SGD8 = functools.partial(torch.optim.SGD, lr=8.0)


def _run(target, param, units, steps=10, opt=SGD8, **kw):
    return optimize(param, target, O.channel("conv2", units), steps=steps, optimizer=opt, grad_norm="l1",
                    transforms=Resize(32), post_steps=param.post_steps(), **kw)


def test_clamp_and_decay_hold_after_every_step(tiny_target):
    p = _param()
    upper = 0.5 + 3 * 0.25
    seen = []

    def check(param, step):
        seen.append((float(param.code.detach().min()), float(param.code.detach().max())))

    optimize(p, tiny_target, O.channel("conv2", [1, 2]), steps=10, optimizer=SGD8, grad_norm="l1",
               transforms=Resize(32), post_steps=[*p.post_steps(), check])
    assert len(seen) == 10
    assert all(lo >= 0 and hi <= upper + 1e-6 for lo, hi in seen)
    # the decay acts before the clamp: with a zero gradient the code shrinks by 0.99 a step
    q = _param(clamp_k=None)
    h0 = q.code.detach().clone()
    for post in q.post_steps():
        post(q, 0)
    assert torch.allclose(q.code.detach(), 0.99 * h0)


def test_objective_rises_through_the_generator(tiny_target):
    p = _param()
    res = _run(tiny_target, p, [3, 5], steps=30, opt=functools.partial(torch.optim.SGD, lr=0.05))
    assert (res.history[-5:].mean(0) > res.history[0] + 1e-3).all()
    assert res.images.shape == (2, 3, 16, 16)


def test_code_gradient_matches_finite_differences(tiny_target):
    gen = TinyGen().double().requires_grad_(False)
    tgt = tiny_target.double()
    torch.manual_seed(0)
    h = (torch.rand(1, D, dtype=torch.float64) + 0.1).requires_grad_(True)
    obj = O.channel("conv2", 4)

    def f(code):
        return obj(tgt(Resize(32)(gen(code)), obj.layers)).sum()

    f(h).backward()
    eps = 1e-6
    fd = torch.zeros(D, dtype=torch.float64)
    for i in range(D):
        e = torch.zeros_like(h)
        e[0, i] = eps
        with torch.no_grad():
            fd[i] = (f(h + e) - f(h - e)) / (2 * eps)
    assert torch.allclose(h.grad[0], fd, rtol=1e-4, atol=1e-8)


def test_batched_equals_one_at_a_time(tiny_target):
    units = [0, 4, 9]
    batched = _run(tiny_target, _param(3), units).images
    single = torch.cat([_run(tiny_target, _param(1), [u]).images for u in units])
    assert torch.allclose(batched, single, atol=1e-5)


def test_explicit_l2_penalty_is_an_objective_on_the_code(tiny_target):
    p = _param(l2=0.5, clamp_k=None, decay=0.0)
    pen = p.penalty()
    assert pen.layers == {"code"}
    assert torch.allclose(pen(p.extra()), 0.5 * p.code.detach().pow(2).sum(1))
    # with the penalty and no unit, plain gradient steps shrink the code like a decay of 2 * lr * l2
    h0 = p.code.detach().clone()
    optimize(p, tiny_target, -pen, steps=1, optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    assert torch.allclose(p.code.detach(), (1 - 2 * 0.1 * 0.5) * h0, atol=1e-6)


def test_missing_prior_and_statistics_are_clear_errors(tmp_path):
    with pytest.raises(DgnamError, match="generator prior not found"):
        GeneratorParam.from_prior(torch.zeros(1, 3, 8, 8), prior=str(tmp_path / "nope.pt"))
    with pytest.raises(DgnamError, match="statistics"):
        GeneratorParam(torch.zeros(1, 3, 8, 8), gen=TinyGen(), code_mean=None, code_std=None, clamp_k=3.0)


def test_start_from_an_image_encodes_it_with_the_priors_encoder(tmp_path):
    """init.kind=image: h0 = E(image), E rebuilt from the prior's description and a weights file."""
    import torchvision

    from dgnam.core.models import build_target
    from dgnam.generator import (
        Encoder,
        Generator,
        code_statistics,
        generator_spec,
        save_prior,
    )

    torch.manual_seed(0)
    weights = tmp_path / "enc.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), weights)
    enc = Encoder(build_target("mobilenet_v2", weights_file=str(weights), mean=[0.5] * 3, std=[0.5] * 3),
                  "flatten", input_size=32, weights=str(weights))
    g = Generator(1280, generator_spec(resolution=64, fc=[16], width=1 / 32))
    prior = save_prior(tmp_path / "p.pt", g, enc.describe(), code_statistics([torch.rand(4, 1280)]))
    img = torch.rand(2, 3, 40, 40)
    p = GeneratorParam.from_prior(img, noise=False, prior=str(prior), clamp_k=None)  # weights found beside the prior
    with torch.no_grad():
        want = enc(img)
    scale = want.abs().max()  # a random network's pooled features are tiny: compare relative to them
    assert p.code.shape == (2, 1280) and scale > 0
    assert (p.code.detach() - want).abs().max() <= 1e-4 * scale
    assert (p.code[0] - p.code[1]).abs().max() > 1e-2 * scale  # each item its own image
    # the weights given explicitly, from elsewhere
    moved = tmp_path / "elsewhere" / "other.pth"
    moved.parent.mkdir()
    weights.rename(moved)
    q = GeneratorParam.from_prior(img, noise=False, prior=str(prior), clamp_k=None, encoder_weights=str(moved))
    assert (q.code.detach() - want).abs().max() <= 1e-4 * scale
    with pytest.raises(DgnamError, match="enc.pth were not found"):
        GeneratorParam.from_prior(img, noise=False, prior=str(prior))
    with pytest.raises(DgnamError, match="encoder weights file not found"):
        GeneratorParam.from_prior(img, noise=False, prior=str(prior), encoder_weights=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("kw, match", [({"decay": 1.5}, "param.decay=1.5 must be in"),
                                       ({"decay": -0.1}, "param.decay=-0.1"),
                                       ({"clamp_k": -1.0}, "param.clamp_k=-1.0 must be >= 0"),
                                       ({"init_sd": -1.0}, "param.init_sd=-1.0")])
def test_out_of_range_code_priors_are_user_errors(kw, match):
    with pytest.raises(DgnamError, match=match):
        _param(**kw)
