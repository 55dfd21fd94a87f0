"""The TAEF2 decoder as a module, the latent prior G(h) = Dec(H(h)), its training, and latent AM."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from conftest import DATA, SHARED, needs_shared
from test_generator import _changed, _snap, _trainer
from torch import nn
from torch.utils.data import DataLoader

from dgnam.core import objectives as O
from dgnam.core.loop import optimize
from dgnam.core.params import GeneratorParam, LatentParam
from dgnam.core.transforms import Resize
from dgnam.errors import DgnamError
from dgnam.generator.arch import Discriminator
from dgnam.generator.cache import CachedCodes
from dgnam.generator.data import SyntheticImages, collate
from dgnam.generator.encoder import Comparator, Encoder
from dgnam.generator.latent import LatentGenerator, head_spec
from dgnam.generator.latent_module import LatentGeneratorModule
from dgnam.generator.latent_stats import latent_statistics, load_latent_stats
from dgnam.generator.latent_stats import main as stats_main
from dgnam.generator.losses import Balancer
from dgnam.generator.prior import load_prior, save_prior
from dgnam.generator.taef2 import TAEF2_DECODER, TAEF2Decoder, TAEF2Encoder, build

pytestmark = pytest.mark.usefixtures("one_thread")

DEC = SHARED / "models" / "taef2_decoder.pth"
ENC = SHARED / "models" / "taef2_encoder.pth"
TINY_HEAD = {"fc": [16], "width": 0.0625}


def tiny_latent_generator(code_dim: int = 32, resolution: int = 64) -> LatentGenerator:
    torch.manual_seed(0)
    return LatentGenerator(code_dim, head_spec(resolution=resolution, **TINY_HEAD))


# ------------------------------------------------------------------------------------- the decoder
@needs_shared(DEC)
def test_taef2_loads_strictly_and_reproduces_photos():
    import pyarrow.parquet as pq

    from dgnam.generator.data import decode_image, pil_to_tensor

    enc, dec = TAEF2Encoder(ENC).eval(), TAEF2Decoder(DEC).eval()
    sd = torch.load(DEC, weights_only=True)
    assert set(sd) == set(dec.layers.state_dict())  # every key of the file, no more, no less
    rows = pq.read_table(next(DATA.glob("valid-*.parquet"))).slice(0, 8).column("image").to_pylist()
    x = torch.stack([pil_to_tensor(decode_image(r["bytes"])) for r in rows])  # (8, 3, 128, 128)
    with torch.no_grad():
        z = enc(x)
        y = dec(z)
    assert z.shape == (8, 32, 16, 16)
    psnr = (10 * torch.log10(1 / (y - x).pow(2).flatten(1).mean(1))).mean().item()
    assert psnr > 24.0, psnr  # TAEF2's own figure is ~26 dB; a wrong block wiring gives < 12 dB


def test_decoder_file_errors_are_one_line(tmp_path):
    with pytest.raises(DgnamError, match=r"TAEF2 decoder weights not found: .*madebyollin/taesd"):
        TAEF2Decoder(tmp_path / "missing.pth")
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(DgnamError, match="cannot read TAEF2 decoder weights"):
        TAEF2Decoder(bad)
    other = tmp_path / "encoder_as_decoder.pth"
    torch.save(build([["conv", 3, 64, 1, True]]).state_dict(), other)  # keys of another architecture
    with pytest.raises(DgnamError, match=r"does not fit the TAEF2 decoder architecture: .*missing"):
        TAEF2Decoder(other)
    shaped = tmp_path / "shaped.pth"
    sd = TAEF2Decoder(None).layers.state_dict()
    sd["1.weight"] = torch.zeros(64, 16, 3, 3)
    torch.save(sd, shaped)
    with pytest.raises(DgnamError, match="1 mis-shaped"):
        TAEF2Decoder(shaped)


def test_decoder_spec_has_the_documented_layout():
    kinds = [e[0] for e in TAEF2_DECODER]
    assert kinds.count("up") == 3 and kinds.count("block") == 10 and kinds[0] == "clamp"
    z = torch.zeros(1, 32, 4, 4)
    assert TAEF2Decoder(None)(z).shape == (1, 3, 32, 32)


# ------------------------------------------------------------------------------------- the prior
@pytest.mark.parametrize("res", [64, 128, 256])
def test_latent_shapes_at_each_resolution(res):
    g = LatentGenerator(8, head_spec(resolution=res, fc=[8], width=0.0625))
    h = torch.rand(2, 8)
    assert g.latent(h).shape == (2, 32, res // 8, res // 8)
    assert g(h).shape == (2, 3, res, res)
    assert g.resolution == res
    assert 0 <= g(h).min() and g(h).max() <= 1


def test_unsupported_latent_resolution_is_a_user_error():
    with pytest.raises(DgnamError, match="not a multiple of 8"):
        head_spec(resolution=100)
    with pytest.raises(DgnamError, match="unsupported resolution 512.*valid: 64, 128, 256"):
        head_spec(resolution=512)


def test_decoder_stays_frozen_and_in_eval_mode():
    g = tiny_latent_generator()
    g.train()
    assert not g.decoder.training and g.head.training
    assert all(not p.requires_grad for p in g.decoder.parameters())
    assert all(p.requires_grad for p in g.head.parameters())


def test_latent_prior_round_trip_carries_the_decoder(tmp_path):
    g = tiny_latent_generator(code_dim=8)
    stats = {"code_mean": torch.rand(8), "code_std": torch.rand(8), "code_upper": torch.rand(8) + 1}
    p = save_prior(tmp_path / "p.pt", g, {"arch": "tiny", "layer": "fc1"}, stats, half=False)
    g2, info = load_prior(p)
    assert isinstance(g2, LatentGenerator) and info["kind"] == "latent" and info["resolution"] == 64
    h = torch.rand(3, 8)
    assert torch.allclose(g2(h), g.eval()(h), atol=1e-6)
    for k, v in g.decoder.state_dict().items():  # the decoder's weights are in the file
        assert torch.equal(g2.decoder.state_dict()[k], v)


# ------------------------------------------------------------------------------------- training
def _module(tiny_target, **kw):
    enc = Encoder(tiny_target, "fc1", input_size=32)
    comp = Comparator(tiny_target, "conv2", input_size=32)
    g = tiny_latent_generator(enc.code_dim)
    d = Discriminator(enc.code_dim, {"convs": [[8, 3, 1], [8, 3, 2]], "image_fc": [8], "code_fc": [8],
                                     "joint_fc": [8], "dropout": 0.0, "in_channels": 32})
    kw.setdefault("weights", {"latent": 1.0, "feature": 0.01, "adversarial": 1.0})
    m = LatentGeneratorModule(g, enc, comp, d, latent_encoder=TAEF2Encoder(None), balance=Balancer(enabled=False),
                              **kw)
    return m, enc, comp, g, d


def test_d_step_and_g_step_change_only_their_own_parameters(tiny_target, tmp_path):
    m, enc, comp, g, d = _module(tiny_target)
    seen: dict[str, object] = {}

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            opt_g, opt_d = pl_module.optimizers()
            seen["g0"], seen["d0"], seen["dec0"] = _snap(g.head), _snap(d), _snap(g.decoder)

            def d_post(opt, *a):
                seen["after_d"] = (_changed(seen["g0"], g.head), _changed(seen["d0"], d))
                seen["d1"] = _snap(d)

            def g_post(opt, *a):
                seen["after_g"] = (_changed(seen["g0"], g.head), _changed(seen["d1"], d))

            self.hooks = [opt_d.optimizer.register_step_post_hook(d_post),
                          opt_g.optimizer.register_step_post_hook(g_post)]

        def on_train_batch_end(self, *a, **k):
            for h in self.hooks:
                h.remove()

    data = DataLoader(SyntheticImages(8, 64), batch_size=4, collate_fn=collate)
    _trainer(tmp_path, max_steps=2, callbacks=[Spy()]).fit(m, data)
    g_changed, d_changed = seen["after_d"]
    assert not g_changed and d_changed, "the D step must change D only"
    g_changed, d_changed = seen["after_g"]
    assert g_changed and not d_changed, "the G step must change the head only"
    assert not _changed(seen["dec0"], g.decoder), "the decoder is frozen"
    assert not g.decoder.training


def test_feature_term_schedule_acts(tiny_target):
    m, enc, comp, g, d = _module(tiny_target, feature_every=2, feature_items=3)
    sizes: list[int] = []
    comp.register_forward_pre_hook(lambda mod, args: sizes.append(args[0].shape[0]))
    x = torch.stack([SyntheticImages(5, 64)[i]["image"] for i in range(5)])
    batch = {"image": x}
    h, f = m.codes_and_feats(batch)
    for it, want in ((0, True), (1, False), (2, True)):
        m.iteration.fill_(it)
        sizes.clear()
        terms = m.loss_terms(batch, g.latent(h), f, None)
        assert ("feature" in terms) == want, it
        assert sizes == ([3] if want else [])  # the comparator saw only feature_items items
    assert set(m.loss_terms(batch, g.latent(h), f, None)) >= {"latent"}
    with pytest.raises(DgnamError, match="feature_every=0"):
        _module(tiny_target, feature_every=0)
    with pytest.raises(DgnamError, match="unknown loss term"):
        _module(tiny_target, weights={"pixels": 1.0})


def test_tiny_latent_prior_trains_and_beats_the_mean_latent(tiny_target, tmp_path):
    torch.manual_seed(0)
    m, enc, comp, g, d = _module(tiny_target, weights={"latent": 1.0},
                                 optimizer_g=lambda p: torch.optim.Adam(p, lr=1e-2))
    m.discriminator = None
    x = torch.stack([SyntheticImages(16, 64)[i]["image"] for i in range(16)])
    with torch.no_grad():
        codes = enc(x)
        lat = m.latent_encoder(x)
        lat = (lat - lat.mean()) / lat.std()  # unit-scale latents
    g.set_input_stats(codes.mean(0), codes.std(0))
    cache = {"images": (x * 255).round().byte(), "codes": codes[:, None], "feats": None, "latents": lat[:, None],
             "labels": torch.zeros(16, dtype=torch.long)}
    data = DataLoader(CachedCodes(cache), batch_size=16, collate_fn=collate)
    mean_err = (lat - lat.mean(0, keepdim=True)).pow(2).mean().item()
    _trainer(tmp_path, max_steps=150, max_epochs=-1).fit(m, data)
    with torch.no_grad():
        err = (g.latent(codes) - lat).pow(2).mean().item()
    assert err < 0.5 * mean_err, (err, mean_err)


def test_train_generator_runs_the_latent_kind(compose, tmp_path):
    from test_generator import TINY_OVERRIDES

    from dgnam.generator.train import run

    cfg = compose(TINY_OVERRIDES + [
        "generator=latent", "generator.fc=[16]", "generator.width=0.0625", "generator.decoder_file=null",
        "generator.latent_encoder_file=null", "discriminator.latent_spec.convs=[[8,3,1],[8,3,2]]",
        "+loss.weights.latent=1.0", "loss.weights.image=0", "loss.weights.adversarial=1.0",
        "loss.feature_items=2", "data.cache=true", f"data.cache_dir={tmp_path / 'cache'}",
        "trainer.max_steps=4"], name="train_generator")
    out = run(cfg, out_dir=tmp_path / "run")
    g, info = load_prior(out["prior"])
    assert info["kind"] == "latent" and isinstance(g, LatentGenerator)
    assert g(torch.rand(2, info["code_dim"])).shape == (2, 3, 64, 64)


def test_cache_holds_the_latents_of_the_photos(tiny_target, tmp_path):
    from PIL import Image

    from dgnam.generator.cache import load_or_encode

    folder = tmp_path / "photos" / "a"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray((torch.rand(40, 48, 3) * 255).byte().numpy()).save(folder / f"{i}.png")
    enc = Encoder(tiny_target, "fc1", input_size=32)
    lat = TAEF2Encoder(None).eval()
    out = load_or_encode(tmp_path / "cache", tmp_path / "photos", enc, None, 32, load_size=32, flips=True,
                         latent_encoder=lat)
    assert out["latents"].shape == (3, 2, 32, 4, 4)  # (N, views, C, r, r)
    with torch.no_grad():
        want = lat(out["images"][:1].float() / 255)
    assert torch.allclose(out["latents"][0, 0].float(), want[0], atol=2e-2)
    again = load_or_encode(tmp_path / "cache", tmp_path / "photos", enc, None, 32, load_size=32, flips=True,
                           latent_encoder=lat)
    assert torch.equal(again["latents"], out["latents"])  # read back from the one cache file
    assert len(list((tmp_path / "cache").glob("codes-*.pt"))) == 1


def test_latent_prior_with_a_missing_decoder_is_one_line(compose, tmp_path):
    from test_generator import TINY_OVERRIDES

    from dgnam.generator.train import run

    cfg = compose(TINY_OVERRIDES + ["generator=latent", f"generator.decoder_file={tmp_path / 'nope.pth'}"],
                  name="train_generator")
    with pytest.raises(DgnamError, match="TAEF2 decoder weights not found"):
        run(cfg, out_dir=tmp_path / "run")


# ------------------------------------------------------------------------------------- DGN-AM
def test_clamp_and_decay_hold_through_the_latent_prior(tiny_target):
    g = tiny_latent_generator(code_dim=16).requires_grad_(False)
    mean, std = torch.full((16,), 0.5), torch.full((16,), 0.25)
    p = GeneratorParam(torch.zeros(2, 3, 8, 8), noise=True, generator=torch.Generator().manual_seed(0), gen=g,
                       code_mean=mean, code_std=std)
    upper = mean + 3 * std
    seen = []

    def check(step):
        seen.append((p.code.min().item(), (p.code - upper).max().item()))

    res = optimize(p, tiny_target, O.channel("conv2", [0, 1]), steps=8, grad_norm="l1",
                   optimizer=lambda ps: torch.optim.SGD(ps, lr=8.0), transforms=Resize(32),
                   post_steps=p.post_steps(), callback=check)
    assert all(lo >= 0 and hi <= 1e-6 for lo, hi in seen)
    # every item rose through Dec(H(h)), by more than the spread of these units over random codes in the box
    # (std 1.5e-4 and 2.8e-4: a random head and decoder barely move them; the rises are 4e-4 and 9e-4)
    assert (res.history[-1] > res.history[0] + 2e-4).all(), res.history[[0, -1]]


def test_latent_prior_code_size_must_fit_the_encoder(tmp_path):
    g = tiny_latent_generator(code_dim=8).requires_grad_(False)
    enc = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))  # gives 5-d codes
    with pytest.raises(DgnamError, match="5-d codes but the generator takes 8-d"):
        GeneratorParam(torch.rand(1, 3, 8, 8), noise=False, gen=g, code_mean=torch.zeros(8),
                       code_std=torch.ones(8), encoder=enc)


# ------------------------------------------------------------------------------------- latent AM
def _stats_file(tmp_path, c=32):
    lat = torch.randn(20, c, 4, 4)
    st = latent_statistics(lat, 0.05)
    p = tmp_path / "stats.pt"
    torch.save({"format": "dgnam-latent-stats", **st}, p)
    return p, st


def _dec_file(tmp_path):
    p = tmp_path / "dec.pth"
    torch.manual_seed(0)
    torch.save(TAEF2Decoder(None).layers.state_dict(), p)
    return p


def test_latent_statistics_of_known_latents():
    lat = torch.arange(2 * 2 * 1 * 5, dtype=torch.float).reshape(2, 2, 1, 5)  # channel 0: 0-4, 10-14
    st = latent_statistics(lat, 0.0)
    assert st["mean"].tolist() == [7.0, 12.0]
    assert st["low"].tolist() == [0.0, 5.0] and st["high"].tolist() == [14.0, 19.0]


def test_latent_am_clamps_per_channel_and_the_pull_acts(tiny_target, tmp_path):
    sp, st = _stats_file(tmp_path)
    dp = _dec_file(tmp_path)
    p = LatentParam.from_files(torch.zeros(2, 3, 32, 32), noise=True, generator=torch.Generator().manual_seed(0),
                    decoder_file=str(dp), stats=str(sp))
    assert p().shape == (2, 3, 32, 32) and p.z.shape == (2, 32, 4, 4)
    lo, hi = st["low"].view(1, -1, 1, 1), st["high"].view(1, -1, 1, 1)
    res = optimize(p, tiny_target, O.channel("conv2", [0, 1]), steps=6, grad_norm="l1",
                   optimizer=lambda ps: torch.optim.SGD(ps, lr=5.0), post_steps=p.post_steps())
    assert (p.z >= lo - 1e-6).all() and (p.z <= hi + 1e-6).all()
    assert (res.history[-1] > res.history[0] + 0.005).all(), res.history[[0, -1]]  # every item, by a margin

    def distance(pull):
        q = LatentParam.from_files(torch.zeros(1, 3, 32, 32), noise=True, generator=torch.Generator().manual_seed(0),
                        decoder_file=str(dp), stats=str(sp), pull=pull, clamp=False)
        obj = O.channel("conv2", [0])
        if q.penalty() is not None:
            obj = obj - q.penalty()
        optimize(q, tiny_target, obj, steps=10, grad_norm="l1", optimizer=lambda ps: torch.optim.SGD(ps, lr=0.5))
        return ((q.z - q.mu) / q.sd).pow(2).mean().item()

    assert distance(50.0) < distance(0.0)


def test_latent_am_bad_inputs(tmp_path):
    sp, _ = _stats_file(tmp_path)
    dp = _dec_file(tmp_path)
    init = torch.zeros(1, 3, 32, 32)
    with pytest.raises(DgnamError, match="latent statistics file not found"):
        LatentParam.from_files(init, decoder_file=str(dp), stats=str(tmp_path / "none.pt"))
    wrong = tmp_path / "wrong.pt"
    torch.save({"format": "dgnam-latent-stats", "mean": torch.zeros(4), "std": torch.ones(4),
                "low": torch.zeros(4), "high": torch.ones(5)}, wrong)
    with pytest.raises(DgnamError, match="1-d tensors of one length"):
        LatentParam.from_files(init, decoder_file=str(dp), stats=str(wrong))
    (tmp_path / "four").mkdir()
    small, _ = _stats_file(tmp_path / "four", c=4)
    with pytest.raises(DgnamError, match="4 channels but the decoder's latent has 32"):
        LatentParam.from_files(init, decoder_file=str(dp), stats=str(small))
    with pytest.raises(DgnamError, match="needs param.encoder_file"):
        LatentParam.from_files(init, noise=False, decoder_file=str(dp), stats=str(sp))
    zi = LatentParam.from_files(torch.rand(1, 3, 32, 32), noise=False, decoder_file=str(dp), encoder_file=str(_enc_file(tmp_path)),
                     stats=str(sp))
    assert zi.z.shape == (1, 32, 4, 4)
    with pytest.raises(DgnamError, match="pull=-1"):
        LatentParam.from_files(init, decoder_file=str(dp), stats=str(sp), pull=-1)
    with pytest.raises(DgnamError, match="multiple of 8"):
        LatentParam.from_files(torch.zeros(1, 3, 30, 30), decoder_file=str(dp), stats=str(sp))


def _enc_file(tmp_path):
    p = tmp_path / "enc.pth"
    torch.save(TAEF2Encoder(None).layers.state_dict(), p)
    return p


def test_latent_stats_cli(tmp_path, capsys):
    cache = tmp_path / "codes.pt"
    lat = torch.randn(6, 1, 32, 2, 2) * torch.arange(1, 33).view(1, 1, 32, 1, 1) + 5
    torch.save({"latents": lat, "meta": {}}, cache)
    stats_main(["--cache", str(cache), "--out", str(tmp_path / "s.pt")])
    st = load_latent_stats(tmp_path / "s.pt")
    per_channel = lat.squeeze(1).transpose(0, 1).reshape(32, -1).double().numpy()  # (C, N*r*r), as numpy sees it
    for key, ref in (("mean", np.mean(per_channel, 1)), ("std", np.std(per_channel, 1, ddof=1)),
                     ("low", np.quantile(per_channel, 0.005, 1)), ("high", np.quantile(per_channel, 0.995, 1))):
        np.testing.assert_allclose(st[key].double().numpy(), ref, rtol=1e-5, atol=1e-5, err_msg=key)
    torch.save({"codes": torch.zeros(2, 1, 4)}, tmp_path / "nolat.pt")
    with pytest.raises(SystemExit) as e:
        stats_main(["--cache", str(tmp_path / "nolat.pt"), "--out", str(tmp_path / "t.pt")])
    assert e.value.code == 2 and "holds no latents" in capsys.readouterr().err
    assert not (tmp_path / "t.pt").exists()


REPO_PRIORS = __import__("pathlib").Path(__file__).resolve().parents[1] / "dgnam" / "priors"


def test_shipped_latent_prior_and_statistics_load():
    g, info = load_prior(REPO_PRIORS / "mobilenet_v2_latent_g128.pt")
    assert isinstance(g, LatentGenerator) and info["kind"] == "latent"
    assert info["code_dim"] == 1280 and info["resolution"] == 128
    assert info["encoder"]["layer"] == "flatten" and info["encoder"]["weights_file"] == "mobilenet_v2_imagenet.pth"
    assert (info["code_upper"] >= info["code_mean"]).all()
    out = g(info["code_mean"][None])
    assert out.shape == (1, 3, 128, 128) and 0 <= out.min() and out.max() <= 1
    assert (REPO_PRIORS / "mobilenet_v2_latent_g128.pt").stat().st_size < 50e6
    st = load_latent_stats(REPO_PRIORS / "taef2_latent_stats.pt")
    assert st["mean"].shape == (32,) and (st["low"] < st["mean"]).all() and (st["mean"] < st["high"]).all()
    assert (REPO_PRIORS / "LICENSE-taef2.txt").is_file()  # the decoder's weights ship in the prior


@needs_shared(DEC)
def test_shipped_latent_prior_decoder_is_taef2():
    g, _ = load_prior(REPO_PRIORS / "mobilenet_v2_latent_g128.pt")
    ref = TAEF2Decoder(DEC)
    for k, v in ref.layers.state_dict().items():
        assert torch.allclose(g.decoder.layers.state_dict()[k], v.float(), atol=1e-3), k
