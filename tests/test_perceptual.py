"""The perceptual term of latent priors (several layers of the encoder's network on the decoded
image against the photo's) and fine-tuning from a prior (``generator.init_from``)."""

from __future__ import annotations

import math

import pytest
import torch
from test_spatial import SPATIAL_TRAIN

import dgnam
from dgnam.errors import DgnamError
from dgnam.generator.encoder import Perceptual
from dgnam.generator.prior import load_prior

pytestmark = pytest.mark.usefixtures("one_thread")


def test_perceptual_is_each_layer_s_relative_error_weighted(tiny_target):
    p = Perceptual(tiny_target, [["conv1", 2.0], ["conv2", 0.5]], input_size=32)
    x = torch.rand(3, 3, 32, 32)
    assert p(x, x).item() == pytest.approx(0.0, abs=1e-6)
    y = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        fx, fy = tiny_target(x, ["conv1", "conv2"]), tiny_target(y, ["conv1", "conv2"])
    want = sum(w * ((fy[k] - fx[k]).pow(2).flatten(1).sum(1) / fx[k].pow(2).flatten(1).sum(1)).mean()
               for k, w in (("conv1", 2.0), ("conv2", 0.5)))
    assert p(y, x).item() == pytest.approx(want.item(), rel=1e-5)
    # the gradient reaches the reconstruction, not the photo
    y.requires_grad_(True)
    x.requires_grad_(True)
    p(y, x).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0 and x.grad is None


def test_perceptual_layers_errors_are_one_line(tiny_target):
    with pytest.raises(DgnamError, match="unknown layer 'conv9'"):
        Perceptual(tiny_target, [["conv1", 1.0], ["conv9", 1.0]])
    with pytest.raises(DgnamError, match=r"item 'conv1' must be a pair \[layer, weight\]"):
        Perceptual(tiny_target, ["conv1"])
    with pytest.raises(DgnamError, match="needs loss.perceptual_layers"):
        Perceptual(tiny_target, [])


PERCEPTUAL = ["+loss.weights.perceptual=10.0", "loss.perceptual_layers=[[features.3.add,1.0],[features.6.conv.0,1.0]]",
              "loss.weights.adversarial=0"]


def test_a_latent_prior_fine_tunes_from_a_prior_with_the_perceptual_term(compose, tmp_path):
    """Stage 1 trains a prior; stage 2 starts from exactly its weights (init_from), trains with the
    perceptual term (logged, and it changes the head), and exports a prior of the same shape."""
    from dgnam.generator.train import build_parts, run

    first = run(compose(SPATIAL_TRAIN, name="train_generator"), out_dir=tmp_path / "one")
    stage2 = [*SPATIAL_TRAIN, *PERCEPTUAL, f"generator.init_from={first['prior']}"]
    cfg = compose(stage2, name="train_generator")
    parts = build_parts(cfg, torch.device("cpu"))
    g1, _ = load_prior(first["prior"], clamp=False)
    head1 = {k: v for k, v in g1.state_dict().items() if k.startswith("head.")}
    head2 = {k: v for k, v in parts["generator"].state_dict().items() if k.startswith("head.")}
    assert head1.keys() == head2.keys() and all(torch.equal(head1[k], head2[k]) for k in head1)

    second = run(cfg, out_dir=tmp_path / "two")
    g2, _ = load_prior(second["prior"], clamp=False)
    # the same fine-tune with the perceptual weight at 0 (same seed, data and other terms) ends elsewhere:
    # the term reaches the head's gradient, not only the log
    zero = run(compose([*stage2, "loss.weights.perceptual=0.0"], name="train_generator"), out_dir=tmp_path / "zero")
    g0, _ = load_prior(zero["prior"], clamp=False)
    for k in head1:
        if k.endswith("weight"):
            assert not torch.equal(head1[k], g2.state_dict()[k]), k  # trained
            assert not torch.equal(g0.state_dict()[k], g2.state_dict()[k]), k  # and by the term
    import csv

    rows = list(csv.DictReader(open(tmp_path / "two" / "csv" / "metrics.csv")))
    vals = [float(r["train/perceptual"]) for r in rows if r.get("train/perceptual")]
    assert len(vals) == second["iterations"] and all(0 < v < math.inf for v in vals)  # every step, finite
    assert vals[-1] < vals[0]  # the term it minimizes fell (deterministic: seed 0)


def test_init_from_a_prior_that_does_not_fit_is_one_line(compose, tmp_path):
    from dgnam.generator.train import build_parts, run

    first = run(compose(SPATIAL_TRAIN, name="train_generator"), out_dir=tmp_path / "one")
    other_layer = [*SPATIAL_TRAIN, "encoder.code_layer=features.5.conv.0", f"generator.init_from={first['prior']}"]
    with pytest.raises(DgnamError, match=r"was trained on mobilenet_v2 layer 'features.6.conv.0'.*"
                                         r"this run's encoder is mobilenet_v2 layer 'features.5.conv.0'"):
        build_parts(compose(other_layer, name="train_generator"), torch.device("cpu"))
    wider = [*SPATIAL_TRAIN, "generator.spec.start_channels=16", f"generator.init_from={first['prior']}"]
    with pytest.raises(DgnamError, match="its weights do not fit this run's generator spec"):
        build_parts(compose(wider, name="train_generator"), torch.device("cpu"))
    with pytest.raises(DgnamError, match="not found"):
        build_parts(compose([*SPATIAL_TRAIN, f"generator.init_from={tmp_path / 'nope.pt'}"], name="train_generator"),
                    torch.device("cpu"))
    pixel = compose(["encoder=mobilenet_v2_random", "data=synthetic", "resolution=32", *PERCEPTUAL],
                    name="train_generator")
    with pytest.raises(DgnamError, match="loss.weights.perceptual is a term of latent priors"):
        build_parts(pixel, torch.device("cpu"))


def test_validation_reports_the_encoder_s_top1_agreement(tiny_target):
    from dgnam.generator.encoder import Encoder
    from dgnam.generator.module import GeneratorModule

    m = GeneratorModule(torch.nn.Identity(), Encoder(tiny_target, "fc1", input_size=32))
    x = torch.rand(6, 3, 32, 32)
    assert m.top1_agreement(x, x).item() == 1.0
    with torch.no_grad():
        px = tiny_target(x, ["logits"])["logits"].argmax(1)
        y = torch.rand(6, 3, 32, 32)
        py = tiny_target(y, ["logits"])["logits"].argmax(1)
    assert m.top1_agreement(y, x).item() == pytest.approx((px == py).float().mean().item())


def test_the_shipped_perceptual_prior_is_a_fine_tune_of_the_spatial_one():
    """Same encoder, spec, code statistics' source and decoder; a different head."""
    from conftest import REPO

    a, ia = load_prior(REPO / "dgnam" / "priors" / "mobilenet_v2_latent_spatial_g128.pt")
    b, ib = load_prior(REPO / "dgnam" / "priors" / "mobilenet_v2_latent_spatial_perceptual_g128.pt")
    assert ia["encoder"] == ib["encoder"] and ia["spec"] == ib["spec"]
    assert torch.allclose(ia["code_mean"], ib["code_mean"], rtol=1e-3, atol=1e-4)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if k.startswith("decoder."))
    assert any(not torch.equal(sa[k], sb[k]) for k in sa if k.startswith("head.") and k.endswith("weight"))
    cfg = ib["extra"]["config"]
    # the parent by name and hash (dgnam.priors), not by one machine's path
    assert cfg["loss"]["weights"]["perceptual"] > 0 and cfg["generator"]["init_from"] == "mobilenet_v2_latent_spatial_g128"
    assert ib["extra"]["init_from_sha256"] == dgnam.priors.get("mobilenet_v2_latent_spatial_g128").sha256


def test_the_shipped_deep_prior_is_the_third_stage(compose):
    """Stage 3 starts from stage 2 and adds layers past the code. The default prior (param=generator,
    dgnam_deep, ppgn) is the grid-free stage 4; the paper-recipe methods keep the pixel prior they
    were measured with."""
    from conftest import REPO

    from dgnam.generator.encoder import same_encoder

    b, ib = load_prior(REPO / "dgnam" / "priors" / "mobilenet_v2_latent_spatial_perceptual_g128.pt")
    c, ic = load_prior(REPO / "dgnam" / "priors" / "mobilenet_v2_latent_spatial_deep_g128.pt")
    assert same_encoder(ib["encoder"], ic["encoder"]) and ib["spec"] == ic["spec"]
    sb, sc = b.state_dict(), c.state_dict()
    assert all(torch.equal(sb[k], sc[k]) for k in sb if k.startswith("decoder."))
    assert any(not torch.equal(sb[k], sc[k]) for k in sb if k.startswith("head.") and k.endswith("weight"))
    cfg = ic["extra"]["config"]
    assert cfg["generator"]["init_from"] == "mobilenet_v2_latent_spatial_perceptual_g128"
    assert ic["extra"]["init_from_sha256"] == dgnam.priors.get("mobilenet_v2_latent_spatial_perceptual_g128").sha256
    assert [name for name, _ in cfg["loss"]["perceptual_layers"]][-2:] == ["features.16.add", "features.18"]
    prior = {m: compose([f"method={m}"] if m else ["param=generator"]).param.prior
             for m in ("", "dgnam", "dgnam_tuned", "dgnam_tr", "dgnam_deep", "ppgn")}
    assert prior[""].endswith("mobilenet_v2_latent_spatial_gridfree_g128.pt") and prior["dgnam_deep"] == prior[""]
    assert prior["ppgn"] == prior[""]  # PPGN runs through the default prior (R is of the encoder's codes, which it shares)
    assert all(prior[m].endswith("mobilenet_v2_pool_g64.pt") for m in ("dgnam", "dgnam_tuned", "dgnam_tr"))
