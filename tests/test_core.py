"""The loop, objectives, parameterizations, transforms and priors on a tiny network."""

from __future__ import annotations

import functools

import pytest
import torch

from dgnam.config import build_priors, octave_sizes
from dgnam.core import objectives as O
from dgnam.core import poststeps as P
from dgnam.core.loop import normalize_grad, optimize
from dgnam.core.params import FFTParam, PixelParam, noise_init

ADAM = functools.partial(torch.optim.Adam, lr=0.05)


def _run(target, objective, param=None, steps=15, **kw):
    param = param or PixelParam(noise_init(2, (32, 32), seed=1))
    return optimize(param, target, objective, steps=steps, optimizer=kw.pop("optimizer", ADAM), **kw)


@pytest.mark.parametrize(
    "make",
    [
        lambda: O.channel("conv2", [3, 5]),
        lambda: O.neuron("conv1", [1, 2], x=4, y=7),
        lambda: O.class_logit("fc2", [0, 9]),
        lambda: O.channel("classifier.0", [4, 5]),
        lambda: O.channel("pool2", 1),
    ],
    ids=["channel", "neuron", "class", "fc-unit", "pool-channel"],
)
@pytest.mark.parametrize("param", ["pixel", "fft"])
def test_every_objective_rises(tiny_target, make, param):
    obj = make()
    init = noise_init(2, (32, 32), seed=1)
    p = PixelParam(init) if param == "pixel" else FFTParam(init, noise=True, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = obj(tiny_target(p(), obj.layers))
    res = _run(tiny_target, obj, p, steps=20)
    with torch.no_grad():
        after = obj(tiny_target(res.images, obj.layers))
    assert (after > before + 1e-3).all(), (before, after)
    assert res.history.shape == (20, 2)


def test_feature_match_inverts_early_layer(tiny_target):
    torch.manual_seed(0)
    ref_img = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref = tiny_target(ref_img, ["conv1"])["conv1"]
    obj = O.feature_match("conv1", ref)
    res = _run(tiny_target, obj, PixelParam(torch.full((1, 3, 32, 32), 0.5)), steps=200,
               optimizer=functools.partial(torch.optim.Adam, lr=0.02))
    assert res.history[-1, 0] > -0.02  # normalized feature error below 2 %
    assert (res.images - ref_img).abs().mean() < (0.5 - ref_img).abs().mean() / 2


def test_objective_algebra_and_layers():
    a, b = O.channel("conv1", 0), O.total_variation()
    c = 2 * a - 0.5 * b
    assert c.layers == {"conv1", "input"}
    acts = {"conv1": torch.ones(2, 3, 4, 4), "input": torch.zeros(2, 3, 4, 4)}
    assert torch.allclose(c(acts), torch.full((2,), 2.0))
    assert torch.allclose((-a)(acts), -a(acts))
    with pytest.raises(TypeError):
        a * b


def test_only_needed_layers_are_computed(tiny_target):
    acts = tiny_target(torch.rand(1, 3, 32, 32), ["conv1"])
    assert set(acts) == {"conv1"}
    ext = tiny_target._extractors[("features.0",)]
    # the extractor's graph stops at the first conv: no later module is called
    called = {n.target for n in ext.graph.nodes if n.op == "call_module"}
    assert called == {"features.0"}


def test_pre_relu_alias_is_pre_relu(tiny_target):
    # torchvision-style in-place ReLUs must not overwrite the conv output we return
    acts = tiny_target(torch.rand(2, 3, 32, 32), ["conv1", "features.1"])
    assert (acts["conv1"] < 0).any()
    assert (acts["features.1"] >= 0).all()


def _hf_energy(x: torch.Tensor) -> float:
    spec = torch.fft.rfft2(x - x.mean((-2, -1), keepdim=True)).abs()
    h = x.shape[-2]
    fy = torch.fft.fftfreq(h).abs()[:, None]
    fx = torch.fft.rfftfreq(x.shape[-1])[None, :]
    return float((spec * ((fx > 0.25) | (fy > 0.25))).pow(2).sum())


def test_blur_lowers_high_frequency_energy():
    torch.manual_seed(0)
    p = PixelParam(torch.rand(1, 3, 32, 32))
    before = _hf_energy(p.x.data)
    P.BlurEvery(every=1, sigma=1.0)(p, 0)
    assert _hf_energy(p.x.data) < 0.2 * before
    q = PixelParam(torch.rand(1, 3, 32, 32))
    snapshot = q.x.data.clone()
    P.BlurEvery(every=4, sigma=1.0)(q, 0)  # not a blur step
    assert torch.equal(q.x.data, snapshot)


def test_tv_prior_lowers_total_variation(tiny_target):
    tv = O.total_variation()
    obj = O.channel("conv2", 3)
    plain = _run(tiny_target, obj, steps=30)
    _, _, penalty = build_priors({"tv": 50.0}, torch.Generator())
    smooth = _run(tiny_target, obj - penalty, steps=30)
    tv_plain = tv({"input": plain.images})
    tv_smooth = tv({"input": smooth.images})
    assert (tv_smooth < 0.5 * tv_plain).all()


def test_decay_lowers_norm():
    torch.manual_seed(0)
    p = PixelParam(torch.rand(2, 3, 8, 8))
    n0 = p.x.data.norm()
    P.Decay(0.1)(p, 0)
    assert torch.allclose(p.x.data.norm(), 0.9 * n0)


def test_clip_small_norm_zeroes_the_weakest_pixels():
    x = torch.zeros(1, 3, 4, 4)
    x[0, :, 0, :] = 0.01   # weak row
    x[0, :, 1:, :] = 0.3
    p = PixelParam(x + 0.5)
    P.ClipSmallNorm(pct=20)(p, 0)
    assert (p.x.data[0, :, 0, :] == 0).all()
    assert torch.allclose(p.x.data[0, :, 1:, :], torch.full((3, 3, 4), 0.3))


def test_clip_small_contribution_uses_gradient():
    p = PixelParam(torch.full((1, 3, 4, 4), 0.8))  # x = 0.3 everywhere
    g = torch.ones(1, 3, 4, 4)
    g[..., 0, 0] = 1e-4  # one pixel barely contributes
    p.x.grad = -g        # loop stores d(-score)/dx
    P.ClipSmallContribution(pct=5)(p, 0)
    assert p.x.data[0, :, 0, 0].abs().sum() == 0
    assert (p.x.data[0, :, 1:, :] != 0).all()


def test_clamp_holds_after_every_step(tiny_target):
    seen = []
    res = _run(tiny_target, O.channel("conv2", 1), steps=10, optimizer=functools.partial(torch.optim.SGD, lr=50.0),
               post_steps=[P.Clamp(-0.5, 0.5), lambda p, s: seen.append(float(p.x.detach().abs().max()))])
    assert max(seen) <= 0.5 + 1e-6
    assert res.images.min() >= 0 and res.images.max() <= 1


def test_octaves_produce_configured_sizes(tiny_target):
    sizes = octave_sizes(48, 3, 1.2)
    assert sizes == [33, 40, 48]
    seen = []
    p = PixelParam(noise_init(1, (sizes[0], sizes[0])))
    res = optimize(p, tiny_target, O.channel("conv2", 0), steps=2, optimizer=ADAM,
                   octave_sizes=[(s, s) for s in sizes], callback=lambda s: seen.append(tuple(p.size)))
    assert seen == [(33, 33)] * 2 + [(40, 40)] * 2 + [(48, 48)] * 2
    assert res.images.shape[-2:] == (48, 48)
    assert res.history.shape == (6, 1)


@pytest.mark.parametrize("param", ["pixel", "fft"])
def test_batched_equals_unbatched(tiny_target, param):
    """Each item's result is what it would be alone with the same seed, transforms included."""
    units = [0, 3, 7]

    def run(idx):
        g = torch.Generator().manual_seed(0)
        init = noise_init(len(idx), (32, 32), seed=0)
        p = PixelParam(init) if param == "pixel" else FFTParam(init, noise=True, generator=g)
        tfs, posts, penalty = build_priors({"jitter": 4, "scale": [0.9, 1.0, 1.1], "rotate": 5, "tv": 0.1,
                                            "decay": 0.01 if param == "pixel" else 0.0}, g,
                                           pixel=param == "pixel")
        obj = O.channel("conv2", idx) - penalty
        return optimize(p, tiny_target, obj, steps=8, optimizer=ADAM, transforms=tfs, post_steps=posts,
                        grad_norm="l2").images

    batched = run(units)
    single = torch.cat([run([u]) for u in units])
    assert torch.allclose(batched, single, atol=1e-5)


def test_normalize_grad_is_per_item():
    g = torch.stack([torch.ones(3, 2, 2), 100 * torch.ones(3, 2, 2)])
    for kind in ("l1", "l2"):
        n = normalize_grad(g, kind)
        assert torch.allclose(n, torch.ones_like(n), atol=1e-6)
    with pytest.raises(ValueError):
        normalize_grad(g, "l3")


def test_fft_param_reproduces_its_init():
    torch.manual_seed(0)
    img = torch.rand(2, 3, 24, 20) * 0.8 + 0.1
    assert torch.allclose(FFTParam(img)(), img, atol=1e-4)


def test_transforms_follow_the_seed():
    from dgnam.core.transforms import Jitter

    x = torch.rand(1, 3, 16, 16)
    a = Jitter(4, torch.Generator().manual_seed(3))
    b = Jitter(4, torch.Generator().manual_seed(3))
    outs_a = [a(x) for _ in range(5)]
    outs_b = [b(x) for _ in range(5)]
    assert all(torch.equal(u, v) for u, v in zip(outs_a, outs_b))
    assert outs_a[0].shape[-2:] == (12, 12)
    assert len({tuple(o.flatten()[:4].tolist()) for o in outs_a}) > 1


def test_channels_last_gives_the_same_activations():
    from conftest import TinyNet

    from dgnam.core.models import Target

    x = torch.rand(2, 3, 32, 32)
    a = Target(TinyNet(), (0.5,) * 3, (0.25,) * 3, channels_last=True)(x, ["features.3", "logits"])
    b = Target(TinyNet(), (0.5,) * 3, (0.25,) * 3, channels_last=False)(x, ["features.3", "logits"])
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
