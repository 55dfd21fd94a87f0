"""Generator prior: architectures, losses, the training module, code statistics, the artifact."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import assert_resumed, run_script
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from dgnam.errors import DgnamError
from dgnam.generator import (
    Balancer,
    CodeStats,
    Comparator,
    Discriminator,
    Encoder,
    Generator,
    code_statistics,
    generator_spec,
    load_prior,
    save_prior,
)
from dgnam.generator.cache import CachedCodes
from dgnam.generator.data import SyntheticImages, collate
from dgnam.generator.losses import euclidean, weighted_sum
from dgnam.generator.module import GeneratorModule
from dgnam.generator.schedule import warmup_multistep

REPO = Path(__file__).resolve().parents[1]
TINY_G = {"fc": [16], "width": 1 / 32}
TINY_OVERRIDES = [
    "encoder=mobilenet_v2_random", "data=synthetic", "trainer=smoke", "resolution=64", "threads=1",
    "generator.fc=[16]", "generator.width=0.0625", "discriminator.spec.code_fc=[16]",
    "discriminator.spec.joint_fc=[16]", "discriminator.spec.image_fc=[16]",
    "discriminator.spec.convs=[[4,7,4],[8,3,2]]", "code_stats.max_images=16", "grid_images=4",
]


def tiny_generator(code_dim: int = 32, resolution: int = 64) -> Generator:
    return Generator(code_dim, generator_spec(resolution=resolution, fc=TINY_G["fc"], width=TINY_G["width"]))


def tiny_disc(code_dim: int = 32) -> Discriminator:
    spec = {"convs": [[4, 7, 4], [8, 3, 2]], "image_fc": [8], "code_fc": [8], "joint_fc": [8], "dropout": 0.0,
            "slope": 0.3}
    return Discriminator(code_dim, spec)


# ------------------------------------------------------------------------------------ architectures
@pytest.mark.parametrize("res", [64, 128, 256])
def test_generator_output_shape_at_each_resolution(res):
    g = tiny_generator(10, res)
    out = g(torch.rand(2, 10))
    assert out.shape == (2, 3, res, res)
    ups = [k for k, _ in g.spec["stack"] if k == "up"]
    assert 4 * 2 ** len(ups) == res and g.spec["stack"][-1] == ["up", 3]


def test_full_recipe_spec_matches_the_table():
    spec = generator_spec(resolution=256)
    assert spec["fc"] == [4096, 4096] and spec["start_channels"] == 256
    assert [c for _, c in spec["stack"]] == [256, 512, 256, 256, 128, 128, 64, 32, 3]
    g = Generator(4096, generator_spec(resolution=64))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())
    slopes = {m.negative_slope for m in g.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.3}
    assert isinstance(g.deconv[-1], torch.nn.ConvTranspose2d)  # no output nonlinearity


def test_input_standardization_reparameterizes_the_first_layer():
    torch.manual_seed(0)
    g = tiny_generator(6)
    h = torch.rand(3, 6) * 4
    ref = g(h)
    mean, std = torch.full((6,), 2.0), torch.full((6,), 0.5)
    g.set_input_stats(mean, std, eps=0.0)
    assert torch.allclose(g(h), g.deconv(g.fc((h - 2.0) / 0.5).view(3, *g.start[:1], 4, 4)), atol=1e-6)
    assert not torch.allclose(g(h), ref)
    assert "in_mean" in g.state_dict() and "in_scale" in g.state_dict()  # saved with the weights


def test_unsupported_resolution_is_a_user_error():
    with pytest.raises(DgnamError, match="unsupported resolution 96; valid: 8, 16, 32, 64, 128, 256"):
        generator_spec(resolution=96)


def test_discriminator_sees_image_and_code():
    d = tiny_disc(12).eval()
    x = torch.rand(3, 3, 64, 64)
    a, b = d(x, torch.zeros(3, 12)), d(x, torch.ones(3, 12))
    assert a.shape == (3, 2) and not torch.allclose(a, b)  # the code changes the verdict


# ----------------------------------------------------------------------------------------- losses
def test_euclidean_is_caffe_half_sum_mean():
    a, b = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    assert euclidean(a, b).item() == pytest.approx(0.5 * 48)


def test_loss_weights_act():
    terms = {"image": torch.tensor(2.0), "feature": torch.tensor(3.0)}
    assert weighted_sum(terms, {"image": 1.0, "feature": 0.0}).item() == pytest.approx(2.0)
    assert weighted_sum(terms, {"image": 0.5, "feature": 2.0}).item() == pytest.approx(7.0)
    # in the module, a zero weight removes the term (its network is not even run)
    g = tiny_generator()
    x = torch.rand(4, 3, 64, 64)
    m = GeneratorModule(g, weights={"image": 1.0, "feature": 0.0})
    assert set(m.loss_terms({"image": x}, g(torch.rand(4, 32)), None, None)) == {"image"}
    with pytest.raises(DgnamError, match="unknown loss term"):
        GeneratorModule(g, weights={"pixel": 1.0})


def test_balancing_switch_acts():
    b = Balancer(enabled=True)
    assert b.update(d_loss=1.0, g_adv=1.0) == (True, True)
    assert b.update(d_loss=0.05, g_adv=1.0) == (False, True)   # r < 0.1: D stops
    assert b.update(d_loss=0.3, g_adv=1.0) == (False, True)    # stays off until r > 0.5
    assert b.update(d_loss=0.6, g_adv=1.0) == (True, True)     # resumes
    assert b.update(d_loss=20.0, g_adv=1.0) == (True, False)   # r > 10: G pauses
    off = Balancer(enabled=False)
    assert off.update(0.0, 1.0) == (True, True) and off.update(100.0, 1.0) == (True, True)


def test_warmup_multistep_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = warmup_multistep(opt, milestones=[6, 8], gamma=0.5, warmup_steps=4)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1, 0.5, 0.5, 0.25, 0.25])


# --------------------------------------------------------------------------------- training module
def _parts(tiny_target, adversarial: float = 1.0, feature: float = 1.0, **kw):
    enc = Encoder(tiny_target, "fc1", input_size=32)
    comp = Comparator(tiny_target, "conv2", input_size=32)
    g, d = tiny_generator(enc.code_dim), tiny_disc(enc.code_dim)
    m = GeneratorModule(g, enc, comp, d, weights={"image": 1.0, "feature": feature, "adversarial": adversarial},
                        balance=Balancer(enabled=False), **kw)
    return m, enc, comp, g, d


def _trainer(tmp_path, **kw):
    args = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path))
    args.update(kw)
    return L.Trainer(**args)


def _loader(n=8, bs=4, res=64):
    return DataLoader(SyntheticImages(n, res), batch_size=bs, collate_fn=collate)


def _snap(mod):
    return {k: v.detach().clone() for k, v in mod.state_dict().items()}


def _changed(before, mod):
    return {k for k, v in mod.state_dict().items() if not torch.equal(before[k], v)}


def test_d_step_then_g_step_change_only_their_own_parameters(tiny_target, tmp_path):
    torch.manual_seed(0)
    m, enc, comp, g, d = _parts(tiny_target)
    frozen0 = _snap(enc), _snap(comp)
    seen: dict[str, object] = {}

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            opt_g, opt_d = pl_module.optimizers()
            seen["g0"], seen["d0"] = _snap(g), _snap(d)

            def d_pre(opt, *a):  # D's gradients exist, G's do not (the fake images were detached)
                seen["d_grads"] = all(p.grad is not None for p in d.parameters())
                seen["g_grads_in_d_step"] = any(p.grad is not None for p in g.parameters())

            def d_post(opt, *a):
                seen["after_d"] = (_changed(seen["g0"], g), _changed(seen["d0"], d))
                seen["d1"] = _snap(d)

            def g_pre(opt, *a):  # the G step leaves no gradient on D, E or C
                seen["d_grads_in_g_step"] = any(p.grad is not None for p in d.parameters())
                seen["g_grads"] = all(p.grad is not None for p in g.parameters())

            def g_post(opt, *a):
                seen["after_g"] = (_changed(seen["g0"], g), _changed(seen["d1"], d))

            self.hooks = [opt_d.optimizer.register_step_pre_hook(d_pre), opt_d.optimizer.register_step_post_hook(d_post),
                          opt_g.optimizer.register_step_pre_hook(g_pre), opt_g.optimizer.register_step_post_hook(g_post)]

        def on_train_batch_end(self, *a, **k):
            for h in self.hooks:
                h.remove()

    _trainer(tmp_path, max_steps=2, callbacks=[Spy()]).fit(m, _loader())
    g_changed, d_changed = seen["after_d"]
    assert not g_changed and d_changed, "the D step must change D only"
    g_changed, d_changed = seen["after_g"]
    assert g_changed and not d_changed, "the G step must change G only"
    assert seen["d_grads"] and not seen["g_grads_in_d_step"]
    assert seen["g_grads"] and not seen["d_grads_in_g_step"]
    assert not _changed(frozen0[0], enc) and not _changed(frozen0[1], comp)
    assert not enc.training and not comp.training and not tiny_target.training
    assert all(not p.requires_grad for p in tiny_target.parameters())
    assert all(p.grad is None for p in tiny_target.parameters())


def test_balancer_pauses_d_in_the_module(tiny_target, tmp_path):
    m, enc, comp, g, d = _parts(tiny_target)
    m.balance = Balancer(enabled=True, d_stop=1e9, d_resume=2e9)  # r is always < d_stop: D stops
    m.balance.train_d = False
    d0 = _snap(d)
    _trainer(tmp_path, max_steps=4).fit(m, _loader())
    assert not _changed(d0, d)


def _recon_mse(g, data):
    with torch.no_grad():
        return torch.stack([((g(b["code"]) - b["image"]) ** 2).mean() for b in data]).mean().item()


def test_a_few_steps_lower_the_reconstruction_loss(tiny_target, tmp_path):
    torch.manual_seed(0)
    m, enc, comp, g, d = _parts(tiny_target, adversarial=0.0, feature=0.0,
                                optimizer_g=lambda p: torch.optim.Adam(p, lr=2e-3))
    x = torch.stack([SyntheticImages(8, 64)[i]["image"] for i in range(8)])
    with torch.no_grad():
        cache = {"images": (x * 255).round().byte(), "codes": enc(x)[:, None], "feats": None,
                 "labels": torch.zeros(8, dtype=torch.long)}
    data = DataLoader(CachedCodes(cache), batch_size=8, collate_fn=collate)
    before = _recon_mse(g, data)
    _trainer(tmp_path, max_steps=40, max_epochs=-1).fit(m, data)
    after = _recon_mse(g, data)
    assert int(m.iteration) == 40
    assert after < 0.7 * before, (before, after)


def test_gradient_clipping_bounds_the_g_step(tiny_target, tmp_path):
    """With SGD, one G step moves G's parameters by lr * min(|grad|, clip): clipping bounds it."""
    x = torch.stack([SyntheticImages(4, 64)[i]["image"] for i in range(4)])

    def step_size(clip):
        torch.manual_seed(0)
        m, enc, *_ = _parts(tiny_target, adversarial=0.0, feature=0.0, grad_clip_g=clip,
                            optimizer_g=lambda p: torch.optim.SGD(p, lr=1.0))
        with torch.no_grad():
            cache = {"images": (x * 255).round().byte(), "codes": enc(x)[:, None], "feats": None,
                     "labels": torch.zeros(4, dtype=torch.long)}
        before = torch.cat([q.detach().flatten().clone() for q in m.generator.parameters()])
        _trainer(tmp_path, max_steps=1, max_epochs=-1).fit(
            m, DataLoader(CachedCodes(cache), batch_size=4, collate_fn=collate))
        after = torch.cat([q.detach().flatten() for q in m.generator.parameters()])
        return float((after - before).norm())

    free = step_size(None)
    assert free > 1e-3
    assert step_size(free / 10) == pytest.approx(free / 10, rel=1e-3)
    with pytest.raises(DgnamError, match="grad_clip_g=0"):
        _parts(tiny_target, grad_clip_g=0)


# ------------------------------------------------------------------------------------ statistics
def test_code_statistics_on_known_inputs():
    codes = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 6.0], [4.0, 1.0, 10.0]])
    st = code_statistics([codes[:2], codes[2:]], k=3.0)
    assert torch.allclose(st["code_mean"], torch.tensor([2.0, 1.0, 6.0]))
    std = torch.tensor([(8 / 3) ** 0.5, 0.0, (32 / 3) ** 0.5])
    assert torch.allclose(st["code_std"], std)
    assert torch.allclose(st["code_upper"], torch.tensor([2.0, 1.0, 6.0]) + 3 * std)
    assert int(st["code_count"]) == 3
    s = CodeStats()
    s.update(codes[:, None].expand(3, 2, 3))  # (N, views, D): every view counts
    assert int(s.result()["code_count"]) == 6
    with pytest.raises(ValueError):
        CodeStats().result()


# -------------------------------------------------------------------------------------- artifact
def test_prior_round_trip_and_errors(tmp_path):
    g = tiny_generator(5)
    stats = code_statistics([torch.rand(10, 5)])
    enc = {"arch": "tiny", "weights_file": "w.pth", "layer": "fc1", "pooling": "none", "input_size": 32}
    p = save_prior(tmp_path / "p.pt", g, enc, stats)
    g2, info = load_prior(p)
    assert not g2.training and all(not q.requires_grad for q in g2.parameters())
    h = torch.rand(2, 5) * 50
    out = g2(h)
    assert out.shape == (2, 3, 64, 64) and out.min() >= 0 and out.max() <= 1
    ref = Generator(5, g.spec)
    ref.load_state_dict({k: v.half().float() for k, v in g.state_dict().items()})
    assert torch.allclose(g2(h), ref(h).clamp(0, 1), atol=1e-5)
    assert info["encoder"]["layer"] == "fc1" and info["code_dim"] == 5 and info["resolution"] == 64
    assert torch.allclose(info["code_upper"], stats["code_upper"])
    assert all(p.dtype == torch.float16 for p in torch.load(p, weights_only=True)["state_dict"].values())
    with pytest.raises(DgnamError, match="not found"):
        load_prior(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DgnamError, match="cannot read"):
        load_prior(tmp_path / "bad.pt")
    blob = torch.load(p, weights_only=True)
    del blob["code_upper"]
    torch.save(blob, tmp_path / "nostats.pt")
    with pytest.raises(DgnamError, match="code statistics"):
        load_prior(tmp_path / "nostats.pt")
    blob = torch.load(p, weights_only=True)
    blob["state_dict"]["fc.0.weight"] = torch.zeros(3, 3)
    torch.save(blob, tmp_path / "shape.pt")
    with pytest.raises(DgnamError, match="do not fit"):
        load_prior(tmp_path / "shape.pt")


def test_unknown_encoder_layer_lists_valid_ones(tiny_target):
    with pytest.raises(DgnamError, match="unknown layer 'fc9'.*valid layers"):
        Encoder(tiny_target, "fc9")
    with pytest.raises(DgnamError, match="unknown pooling"):
        Encoder(tiny_target, "conv2", pooling="mean")
    e = Encoder(tiny_target, "conv2", pooling="avg", input_size=32)
    assert e(torch.rand(2, 3, 40, 40)).shape == (2, 16) and e.code_dim == 16


# ---------------------------------------------------------------------------------- configs, run()
def test_every_config_composes(compose):
    conf = REPO / "conf"
    groups = {g: sorted(p.stem for p in (conf / g).glob("*.yaml"))
              for g in ("encoder", "generator", "data", "trainer", "callbacks", "logger")}
    for group, names in groups.items():
        assert names, group
        for name in names:  # the group holds what its file says (the file's keys and values, its defaults aside)
            cfg = compose([f"{group}={name}"], name="train_generator")
            raw = OmegaConf.to_container(OmegaConf.load(conf / group / f"{name}.yaml"), resolve=False)
            got = OmegaConf.to_container(cfg[group], resolve=False) if cfg[group] is not None else {}
            own = {k: v for k, v in raw.items() if k != "defaults"}
            assert {k: got.get(k, "missing") for k in own} == own and (own or not got), (group, name)  # none: empty
    presets = sorted(p.stem for p in (conf / "experiment_train").glob("*.yaml"))
    assert {"mobilenet_v2_cpu", "mobilenet_v2_gpu", "mobilenet_v2_latent_cpu", "mobilenet_v2_prior_gpu",
            "vgg16_prior_gpu", "alexnet_prior_gpu", "any_prior_gpu"} <= set(presets)
    codes = {"vgg16_prior_gpu": "conv5_3", "alexnet_prior_gpu": "conv5", "any_prior_gpu": "???"}
    for name in presets:
        cfg = compose([f"experiment_train={name}"], name="train_generator")
        spatial = name.startswith(("mobilenet_v2_latent_spatial", "mobilenet_v2_prior"))
        want = codes.get(name, "features.14.conv.0" if spatial else "flatten")
        assert OmegaConf.to_container(cfg.encoder)["code_layer"] == want and cfg.resolution in (64, 128), name
    cfg = compose([], name="train_generator")  # the recipe
    assert cfg.loss.weights.image == pytest.approx(2e-6 * 255**2, rel=1e-3)
    assert cfg.loss.weights.feature == 0.01 and cfg.loss.weights.adversarial == 100
    assert cfg.encoder.code_layer == "fc6" and cfg.encoder.comparator_layer == "pool5"
    assert cfg.optimizer_g.lr == 2e-4 and cfg.optimizer_g.weight_decay == 4e-4 and cfg.data.batch_size == 64
    assert cfg.scheduler.milestones == [300000, 500000, 700000, 900000, 1100000] and cfg.scheduler.gamma == 0.5
    assert cfg.trainer.max_steps == 1300000 and cfg.code_stats.k == 3.0
    assert cfg.loss.balance.d_stop == 0.1 and cfg.loss.balance.d_resume == 0.5 and cfg.loss.balance.g_pause == 10


def test_gpu_preset_builds_and_fits_50_mb(compose):
    from dgnam.generator.train import build_parts

    cfg = compose(["experiment_train=mobilenet_v2_gpu", "encoder=mobilenet_v2_random", "encoder.input_size=64",
                   "encoder.comparator_input_size=64"], name="train_generator")
    parts = build_parts(cfg, torch.device("cpu"))
    g = parts["generator"]
    assert g(torch.rand(1, 1280)).shape == (1, 3, 128, 128)
    assert sum(p.numel() for p in g.parameters()) * 2 < 50e6  # fp16 bytes
    assert parts["discriminator"] is not None and parts["module"].balance.enabled


@pytest.mark.parametrize("preset", ["mobilenet_v2_latent_cpu"])
def test_latent_presets_build_and_fit_50_mb(compose, preset):
    from dgnam.generator.latent import LatentGenerator
    from dgnam.generator.latent_module import LatentGeneratorModule
    from dgnam.generator.train import build_parts

    cfg = compose([f"experiment_train={preset}", "encoder=mobilenet_v2_random", "encoder.input_size=64",
                   "generator.decoder_file=null", "generator.latent_encoder_file=null"], name="train_generator")
    parts = build_parts(cfg, torch.device("cpu"))
    g = parts["generator"]
    assert isinstance(g, LatentGenerator) and isinstance(parts["module"], LatentGeneratorModule)
    assert g(torch.rand(1, 1280)).shape == (1, 3, 128, 128)
    assert sum(p.numel() for p in g.parameters()) * 2 < 50e6  # fp16 bytes, decoder included
    assert parts["discriminator"].convs[0].in_channels == 32  # D judges latents
    assert parts["module"].balance.enabled and parts["latent_encoder"] is not None


def test_run_end_to_end_and_resume(compose, tmp_path):
    from train_generator import run

    cfg = compose(TINY_OVERRIDES + ["trainer.max_steps=4"], name="train_generator")
    out = run(cfg, out_dir=tmp_path / "a")
    assert out["iterations"] == 2 and out["global_step"] == 4  # G and D steps count separately
    g, info = load_prior(out["prior"])
    assert g(torch.rand(2, info["code_dim"])).shape == (2, 3, 64, 64)
    assert info["code_upper"].shape == (info["code_dim"],) and (info["code_upper"] >= info["code_mean"]).all()
    rows = list(csv.DictReader(open(tmp_path / "a" / "csv" / "metrics.csv")))
    cols = set(rows[0])
    assert {"train/image", "train/feature", "train/adversarial", "train/d_real", "train/d_fake"} <= cols
    assert any((tmp_path / "a" / "tb").iterdir())
    last = out["last_ckpt"]
    assert last and Path(last).is_file()
    # resume: the step count continues, from the checkpoint's weights
    probe = ["+callbacks.start._target_=conftest.StartWeights", f"+callbacks.start.path={tmp_path / 'start.pt'}"]
    cfg2 = compose(TINY_OVERRIDES + ["trainer.max_steps=8", f"ckpt_path={last}", *probe], name="train_generator")
    out2 = run(cfg2, out_dir=tmp_path / "b")
    assert out2["iterations"] == 4 and out2["global_step"] == 8
    assert_resumed(tmp_path / "start.pt", torch.load(last, weights_only=False))
    # a checkpoint made for another encoder is refused
    cfg3 = compose(TINY_OVERRIDES + ["trainer.max_steps=8", f"ckpt_path={last}", "encoder.code_layer=classifier.1"],
                   name="train_generator")
    with pytest.raises(DgnamError, match="checkpoint was made for encoder"):
        run(cfg3, out_dir=tmp_path / "c")
    # export.from_ckpt: a prior from a checkpoint, without training
    cfg4 = compose(TINY_OVERRIDES + [f"export.from_ckpt={last}"], name="train_generator")
    out4 = run(cfg4, out_dir=tmp_path / "d")
    assert out4["iterations"] == 4 and not (tmp_path / "d" / "checkpoints").exists()
    g4, info4 = load_prior(out4["prior"])
    want = torch.load(last, weights_only=False)["state_dict"]
    for k, v in g4.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v.float(), want["generator." + k].half().float()), k
    assert info4["code_upper"].shape == (info4["code_dim"],)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    for bad, match in [(tmp_path / "nope.ckpt", "checkpoint not found"), (tmp_path / "junk.ckpt", "cannot read"),
                       (out["prior"], "not a training checkpoint")]:
        with pytest.raises(DgnamError, match=match):
            run(compose(TINY_OVERRIDES + [f"export.from_ckpt={bad}"], name="train_generator"), out_dir=tmp_path / "e")
    with pytest.raises(DgnamError, match="does not fit this config's generator"):
        run(compose(TINY_OVERRIDES + [f"export.from_ckpt={last}", "generator.fc=[8]"], name="train_generator"),
            out_dir=tmp_path / "f")


def test_periodic_checkpoint_writes_last_every_interval(tmp_path):
    from dgnam.generator.callbacks import PeriodicCheckpoint

    now = [0.0]
    written = []

    class FakeStrategy:  # one process: broadcast returns its argument
        def broadcast(self, obj, src=0):
            return obj

    class FakeTrainer:
        strategy, is_global_zero = FakeStrategy(), True

        def save_checkpoint(self, path, weights_only=None):
            assert weights_only is False  # the full training state (Lightning warns when it is not given)
            Path(path).write_text(str(now[0]))
            written.append(Path(path).name)

    cb = PeriodicCheckpoint(tmp_path / "ck" / "last.ckpt", minutes=2, clock=lambda: now[0])
    trainer = FakeTrainer()
    for t in [0, 30, 100, 119, 121, 200, 241, 245]:  # seconds
        now[0] = float(t)
        cb.on_train_batch_end(trainer, None, None, None, 0)
    assert cb.saves == 2  # at 121 s and 241 s
    assert written == ["last.ckpt.tmp", "last.ckpt.tmp"]  # written aside, then renamed
    assert (tmp_path / "ck" / "last.ckpt").read_text() == "241.0"
    assert not (tmp_path / "ck" / "last.ckpt.tmp").exists()
    with pytest.raises(DgnamError, match="checkpoint_every_minutes=0"):
        PeriodicCheckpoint(tmp_path / "x.ckpt", minutes=0)


def test_run_with_validation_writes_grids_and_best(compose, tmp_path):
    from train_generator import run

    cfg = compose(TINY_OVERRIDES + ["trainer.max_steps=-1", "trainer.max_epochs=1", "loss.weights.adversarial=0",
                                    "data.cache=true", f"data.cache_dir={tmp_path / 'cache'}"], name="train_generator")
    out = run(cfg, out_dir=tmp_path / "a")
    assert out["best_ckpt"] and Path(out["best_ckpt"]).is_file()
    import csv

    logged = [float(r["val/mse"]) for r in csv.DictReader(open(tmp_path / "a" / "csv" / "metrics.csv")) if r.get("val/mse")]
    assert len(logged) == 1 and 0 < logged[0] < 1  # one validation; a mean squared error of [0, 1] images (NaN fails)
    assert out["val_mse"] == pytest.approx(logged[0])
    grids = list((tmp_path / "a" / "grids").glob("*.png"))
    assert grids
    from PIL import Image

    w, h = Image.open(grids[0]).size
    assert w == 8 * 66 + 2 and h == 66 + 2  # 4 originals beside 4 reconstructions, one row of 8


def test_callbacks_and_loggers_are_config_entries(compose, tmp_path):
    """conf/callbacks and conf/logger: a null entry switches one off; callbacks=none logger=none leave the prior only."""
    from train_generator import run

    one_epoch = TINY_OVERRIDES + ["trainer.max_steps=8"]  # 4 iterations: one epoch, then validation
    out = run(compose(one_epoch + ["callbacks.sample_grids=null", "logger.tensorboard=null"], name="train_generator"),
              out_dir=tmp_path / "a")
    assert out["best_ckpt"] and out["last_ckpt"] and (tmp_path / "a" / "csv" / "metrics.csv").is_file()
    assert not (tmp_path / "a" / "grids").exists() and not (tmp_path / "a" / "tb").exists()
    out = run(compose(one_epoch + ["callbacks=none", "logger=none"], name="train_generator"), out_dir=tmp_path / "b")
    assert out["best_ckpt"] is None and out["last_ckpt"] is None and 0 < out["val_mse"] < 1  # validated, NaN fails
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["prior.pt"]


@pytest.mark.parametrize("override,match", [
    ("data.train=/nonexistent/dir", "data path not found: /nonexistent/dir"),
    ("data.train=/nonexistent/*.parquet", "nothing matches /nonexistent/\\*.parquet"),
    ("resolution=96", "unsupported resolution 96"),
    ("encoder.code_layer=fc99", "unknown layer 'fc99'"),
    ("ckpt_path=/nonexistent.ckpt", "checkpoint not found"),
])
def test_bad_inputs_are_user_errors(compose, tmp_path, override, match):
    from train_generator import run

    cfg = compose(TINY_OVERRIDES + [override], name="train_generator")
    with pytest.raises(DgnamError, match=match):
        run(cfg, out_dir=tmp_path)


def test_empty_data_folder_is_a_user_error(compose, tmp_path):
    from train_generator import run

    (tmp_path / "empty").mkdir()
    cfg = compose(TINY_OVERRIDES + [f"data.train={tmp_path / 'empty'}"], name="train_generator")
    with pytest.raises(DgnamError, match="empty"):
        run(cfg, out_dir=tmp_path / "out")


def test_cli_prints_one_line_and_exits_2(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "train_generator.py"), "encoder=mobilenet_v2_random",
                        "data=synthetic", "data.train=/nonexistent/photos", f"hydra.run.dir={tmp_path / 'run'}"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert lines == ["error: data.train: data path not found: /nonexistent/photos"]
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


def test_cli_error_keeps_an_existing_run_directory(tmp_path, monkeypatch, capsys):
    """A user error in a run directory given again (e.g. to resume) must not delete earlier outputs."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_text("earlier work")
    monkeypatch.chdir(REPO)
    code = run_script(monkeypatch, "train_generator.py", "encoder=mobilenet_v2_random", "data=synthetic",
                      "ckpt_path=/nonexistent.ckpt", f"hydra.run.dir={run_dir}")
    assert code == 2 and "error: checkpoint not found" in capsys.readouterr().err
    assert (run_dir / "checkpoints" / "last.ckpt").read_text() == "earlier work"


def test_shipped_prior_loads():
    path = REPO / "dgnam" / "priors" / "mobilenet_v2_pool_g64.pt"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    g, info = load_prior(path)
    assert info["code_dim"] == 1280 and info["resolution"] == 64
    assert info["encoder"]["arch"] == "mobilenet_v2" and info["encoder"]["layer"] == "flatten"
    assert info["encoder"]["weights_file"] == "mobilenet_v2_imagenet.pth"
    for k in ("code_mean", "code_std", "code_upper"):
        assert info[k].shape == (1280,)
    assert (info["code_upper"] >= info["code_mean"]).all() and (info["code_mean"] >= 0).all()
    out = g(info["code_mean"][None])
    assert out.shape == (1, 3, 64, 64) and 0 <= out.min() and out.max() <= 1
    assert path.stat().st_size < 50e6


def test_grid_scores_of_reconstructions_see_a_decoder_mesh():
    """The generator report's grid medians: a G that returns the photo scores the photos' ratio, one
    that lays a faint 4-px cross-hatch over it scores higher at both periods (the 4-px lines are 8-px lines too)."""
    from dgnam.generator.evaluate import evaluate

    g = torch.Generator().manual_seed(0)
    n = 64
    f = (torch.fft.fftfreq(n).view(n, 1) ** 2 + torch.fft.fftfreq(n).view(1, n) ** 2).sqrt().clamp_min(1 / n)
    photos = torch.fft.ifft2(torch.complex(torch.randn(6, 3, n, n, generator=g), torch.randn(6, 3, n, n, generator=g)) / f).real
    photos = (photos - photos.amin((2, 3), keepdim=True)) / (photos.amax((2, 3), keepdim=True) - photos.amin((2, 3), keepdim=True))

    class Same(torch.nn.Module):
        resolution = n

        def forward(self, h):
            return h

    class Meshed(Same):
        def forward(self, h):
            h = h.clone()
            h[..., 1::4, :] *= 0.9
            h[..., :, 1::4] *= 0.9
            return h

    class Net:  # E's network: class 0 for everything
        input_size = n

        def __call__(self, x, layers):
            return {"logits": torch.zeros(x.shape[0], 10)}

    class Encoder:  # the identity as E
        target = Net()

        def __call__(self, x):
            return x

    def grid_scores(generator, encoder, photos, batch_size):
        none = torch.zeros(len(photos), dtype=torch.long)
        res = evaluate(generator, encoder, None, photos, none, photos.mean(0), batch_size, photo_preds=(none, none))
        return {k: v for k, v in res.items() if k.startswith("grid")}

    same = grid_scores(Same(), Encoder(), photos, batch_size=4)
    assert set(same) == {"grid_recon_median", "grid4_recon_median", "grid_photo_median", "grid4_photo_median"}
    assert same["grid_recon_median"] == pytest.approx(same["grid_photo_median"])
    assert 0.8 < same["grid4_photo_median"] < 1.2
    meshed = grid_scores(Meshed(), Encoder(), photos, batch_size=4)
    assert meshed["grid4_recon_median"] > same["grid4_photo_median"] + 0.5
    assert meshed["grid_recon_median"] > same["grid_photo_median"] + 0.1
    assert meshed["grid4_photo_median"] == same["grid4_photo_median"]


def test_judge_scores_of_reconstructions():
    """The generator report's independent-judge accuracy: perfect for a perfect G, chance-like for a bad one."""
    from dgnam.generator.evaluate import judge_scores

    levels = torch.tensor([0.1, 0.4, 0.7, 0.95])
    photos = levels[:, None, None, None].expand(4, 3, 16, 16).clone()
    labels = torch.arange(4)

    def judge(x):  # the class is the nearest brightness level
        return -(x.mean((1, 2, 3))[:, None] - levels[None]).abs()

    def encoder(x):
        return x.mean((1, 2, 3))[:, None]

    class Perfect(torch.nn.Module):
        resolution = 8

        def forward(self, h):
            return h[:, :, None, None].expand(-1, 3, 8, 8)

    class Black(Perfect):
        def forward(self, h):
            return torch.zeros(h.shape[0], 3, 8, 8)

    good = judge_scores(judge, Perfect(), encoder, photos, labels, batch_size=3)
    assert good == {"judge_top1_photo": 1.0, "judge_top1_downsampled_photo": 1.0, "judge_top1_recon": 1.0}
    bad = judge_scores(judge, Black(), encoder, photos, labels)
    assert bad["judge_top1_recon"] == 0.25 and bad["judge_top1_photo"] == 1.0


class _Evil:
    """A pickle that runs a shell command when it is unpickled without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_runs_no_code(compose, tmp_path):
    from train_generator import run

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": _Evil(marker)}, evil)
    with pytest.raises(DgnamError, match="cannot read checkpoint"):
        run(compose(TINY_OVERRIDES + [f"export.from_ckpt={evil}"], name="train_generator"), out_dir=tmp_path / "e")
    assert not marker.exists()
