"""Latent priors on a spatial code (an unpooled conv layer): the head's spec and shapes, training end to
end, DGN-AM through the prior, and the photo cache that a run on another encoder layer reuses."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from dgnam.core import objectives as O
from dgnam.core.loop import optimize
from dgnam.core.params import GeneratorParam
from dgnam.core.transforms import Resize
from dgnam.errors import DgnamError
from dgnam.generator.cache import load_or_encode
from dgnam.generator.encoder import Encoder
from dgnam.generator.latent import LatentGenerator, LatentHead, head_spec
from dgnam.generator.prior import load_prior
from dgnam.generator.taef2 import TAEF2Encoder

pytestmark = pytest.mark.usefixtures("one_thread")

SPATIAL_STACK = {"start_channels": 8, "stack": [["conv", 8], ["up", 8], ["conv", 8], ["up", 8]], "slope": 0.2}


def spatial_spec(resolution: int, shape=(6, 4, 4)) -> dict:
    return head_spec({**SPATIAL_STACK, "fc": [99], "out_channels": 32}, resolution, code_shape=shape)


@pytest.mark.parametrize("res, side", [(32, 4), (64, 8), (128, 16)])
def test_a_spatial_head_maps_the_code_s_grid_to_the_latent(res, side):
    spec = spatial_spec(res)
    assert spec["fc"] == [] and spec["start_size"] == 4 and spec["code_shape"] == [6, 4, 4]
    head = LatentHead(6 * 4 * 4, spec)
    assert isinstance(head.fc[0], torch.nn.Conv2d) and head.fc[0].kernel_size == (1, 1)
    assert head(torch.rand(3, 96)).shape == (3, 32, side, side)


def test_a_spatial_head_keeps_where_things_are():
    """A change at one position of the code changes the latent near that position most: the head is
    convolutional, unlike an fc head that mixes every unit into every position."""
    torch.manual_seed(0)
    head = LatentHead(96, spatial_spec(32)).eval()
    head.set_input_stats(torch.zeros(96), torch.ones(96))
    h = torch.rand(1, 6, 4, 4)
    h2 = h.clone()
    h2[0, :, 0, 0] += 5.0  # the top-left cell
    with torch.no_grad():
        d = (head(h2.flatten(1)) - head(h.flatten(1))).abs().sum(1)[0]  # (4, 4)
    assert d[0, 0] > 10 * d[3, 3]


def test_spatial_head_errors_are_one_line():
    with pytest.raises(DgnamError, match="square with a power-of-two side"):
        spatial_spec(64, (6, 4, 3))
    with pytest.raises(DgnamError, match="larger than the latent side 2"):
        spatial_spec(16, (6, 4, 4))
    with pytest.raises(DgnamError, match="does not hold the code's 95 units"):
        LatentHead(95, spatial_spec(64))


SPATIAL_TRAIN = [
    "encoder=mobilenet_v2_random", "encoder.code_layer=features.6.conv.0", "data=synthetic", "trainer=smoke",
    "resolution=64", "threads=1", "generator=latent", "generator.code=spatial", "generator.decoder_file=null",
    "generator.latent_encoder_file=null", "generator.spec.start_channels=8",
    "generator.spec.stack=[[conv,8],[up,8],[conv,8]]", "discriminator.latent_spec.convs=[[8,3,1],[8,3,2]]",
    "discriminator.spec.code_fc=[8]", "discriminator.spec.joint_fc=[8]", "discriminator.spec.image_fc=[8]",
    "+loss.weights.latent=1.0", "loss.weights.image=1.0", "loss.weights.feature=0", "loss.weights.adversarial=1.0",
    "loss.feature_items=2", "code_stats.max_images=16", "grid_images=4", "trainer.max_steps=4",
]


def test_train_generator_trains_a_spatial_latent_prior_and_dgn_am_runs_through_it(compose, tmp_path, tiny_target):
    from dgnam.generator.train import run

    out = run(compose([*SPATIAL_TRAIN, "data.cache=true", f"data.cache_dir={tmp_path / 'cache'}"],
                      name="train_generator"), out_dir=tmp_path / "run")
    assert out["code_dim"] == 192 * 4 * 4  # features.6.conv.0 of MobileNetV2 at 32 px, unpooled
    g, info = load_prior(out["prior"])
    assert isinstance(g, LatentGenerator) and g.spec["code_shape"] == [192, 4, 4]
    g.requires_grad_(False)
    stats = info
    p = GeneratorParam(torch.zeros(2, 3, 8, 8), noise=True, generator=torch.Generator().manual_seed(0), gen=g,
                       code_mean=stats["code_mean"], code_std=stats["code_std"])
    with torch.no_grad():  # start inside the box, at the code's mean: the recipe's N(0, 1) start lies outside it,
        p.code.copy_(stats["code_mean"].expand_as(p.code))  # and may score above anything inside (it does for unit 0)
    upper = stats["code_mean"] + 3 * stats["code_std"]
    seen = []
    res = optimize(p, tiny_target, O.channel("conv2", [0, 1]), steps=6, grad_norm="l1",
                   optimizer=lambda ps: torch.optim.SGD(ps, lr=2.0), transforms=Resize(32),
                   post_steps=p.post_steps(), callback=lambda step: seen.append(
                       (p.code.min().item(), (p.code - upper).max().item())))
    assert all(lo >= 0 and hi <= 1e-5 for lo, hi in seen)  # DGN-AM's clamp, per unit of the 3,072-d code
    # every item rose (a head trained 4 steps on a random decoder moves these units by about 1e-3 and 2e-5-1e-4,
    # depending on the CPU's arithmetic; float32's resolution at these values is ~1e-7)
    assert (res.history[-1] > res.history[0] + 5e-6).all(), res.history[[0, -1]]


def test_a_spatial_code_needs_an_unpooled_conv_layer(compose, tmp_path):
    from dgnam.generator.train import run

    cfg = compose([*SPATIAL_TRAIN, "encoder.code_layer=flatten"], name="train_generator")
    with pytest.raises(DgnamError, match="generator.code=spatial needs an unpooled conv layer"):
        run(cfg, out_dir=tmp_path / "run")
    cfg = compose([*SPATIAL_TRAIN, "generator.code=grid"], name="train_generator")
    with pytest.raises(DgnamError, match="unknown generator.code 'grid'; valid: flat, spatial"):
        run(cfg, out_dir=tmp_path / "run2")


class CountingEncoder(TAEF2Encoder):
    calls = 0

    def forward(self, x):
        type(self).calls += 1
        return super().forward(x)


def test_a_run_on_another_encoder_layer_reuses_the_photos_and_latents(tiny_target, tmp_path):
    folder = tmp_path / "photos" / "a"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray((torch.rand(40, 48, 3) * 255).byte().numpy()).save(folder / f"{i}.png")
    lat = CountingEncoder(None).eval()
    first = load_or_encode(tmp_path / "cache", tmp_path / "photos", Encoder(tiny_target, "fc1", input_size=32), None,
                           32, load_size=32, flips=True, latent_encoder=lat)
    calls = CountingEncoder.calls
    assert calls > 0 and len(list((tmp_path / "cache").glob("photos-*.pt"))) == 1
    other = Encoder(tiny_target, "conv2", input_size=32)  # another layer: new codes, same photos
    second = load_or_encode(tmp_path / "cache", tmp_path / "photos", other, None, 32, load_size=32, flips=True,
                            latent_encoder=lat)
    assert CountingEncoder.calls == calls  # the latent encoder did not run again
    assert torch.equal(second["latents"], first["latents"]) and torch.equal(second["images"], first["images"])
    with torch.no_grad():
        x = first["images"].float() / 255
        want = torch.stack([other(x), other(x.flip(-1))], 1)
    assert torch.allclose(second["codes"].float(), want, atol=1e-2)
    assert second["meta"]["encoder"]["layer"] == "conv2"
    assert len(list((tmp_path / "cache").glob("codes-*.pt"))) == 2


def test_a_latent_prior_run_resumes_from_its_checkpoint(compose, tmp_path):
    """The latent encoder's frozen weights are left out of checkpoints; resuming must not ask for them."""
    import csv

    from conftest import assert_resumed

    from dgnam.generator.train import run

    first = run(compose(SPATIAL_TRAIN, name="train_generator"), out_dir=tmp_path / "run")
    metrics = tmp_path / "run" / "csv" / "metrics.csv"
    rows = list(csv.DictReader(open(metrics)))
    saved = torch.load(first["last_ckpt"], weights_only=False)  # the run below overwrites last.ckpt
    probe = ["+callbacks.start._target_=conftest.StartWeights", f"+callbacks.start.path={tmp_path / 'start.pt'}"]
    again = run(compose([*SPATIAL_TRAIN, "trainer.max_steps=8", f"ckpt_path={first['last_ckpt']}", *probe],
                        name="train_generator"), out_dir=tmp_path / "run")
    assert again["global_step"] == 8
    assert_resumed(tmp_path / "start.pt", saved, rows, metrics)


@pytest.mark.parametrize("name", ["mobilenet_v2_latent_spatial_g128.pt", "mobilenet_v2_latent_spatial_perceptual_g128.pt"])
def test_the_shipped_spatial_priors_load_and_draw_from_their_code(name):
    from conftest import REPO

    path = REPO / "dgnam" / "priors" / name
    g, info = load_prior(path)
    assert isinstance(g, LatentGenerator) and info["kind"] == "latent" and info["resolution"] == 128
    assert info["code_dim"] == 576 * 8 * 8 and g.spec["code_shape"] == [576, 8, 8]
    assert info["encoder"]["layer"] == "features.14.conv.0" and info["encoder"]["pooling"] == "none"
    assert (info["code_upper"] >= info["code_mean"]).all() and (info["code_mean"] >= 0).all()  # after ReLU6
    out = g(info["code_mean"][None])
    assert out.shape == (1, 3, 128, 128) and 0 <= out.min() and out.max() <= 1
    assert path.stat().st_size < 50e6


def test_an_interrupted_encode_goes_on_where_it_stopped(tiny_target, tmp_path, monkeypatch):
    import dgnam.generator.cache as cache

    folder = tmp_path / "photos" / "a"
    folder.mkdir(parents=True)
    for i in range(7):
        Image.fromarray((torch.rand(40, 48, 3) * 255).byte().numpy()).save(folder / f"{i}.png")
    enc = Encoder(tiny_target, "fc1", input_size=32)
    args = (tmp_path / "photos", enc, None, 32)
    kw = {"load_size": 32, "flips": True, "batch_size": 2, "latent_encoder": TAEF2Encoder(None).eval()}
    whole = cache.encode_dataset(*args, **kw)  # no interruption, nothing saved on the way
    decode, seen = cache.decode_image, []

    def stop_at_fifth(data):
        seen.append(1)
        if len(seen) == 5:
            raise KeyboardInterrupt
        return decode(data)

    monkeypatch.setattr(cache, "decode_image", stop_at_fifth)
    with pytest.raises(KeyboardInterrupt):
        cache.encode_dataset(*args, parts_dir=tmp_path / "parts", part_batches=1, **kw)
    assert len(list((tmp_path / "parts").glob("part-*.pt"))) == 2  # images 0-1 and 2-3 were kept
    seen.clear()
    monkeypatch.setattr(cache, "decode_image", lambda data: seen.append(1) or decode(data))
    again = cache.encode_dataset(*args, parts_dir=tmp_path / "parts", part_batches=1, **kw)
    assert len(seen) == 3  # only images 4-6 were read again
    for k in ("images", "codes", "latents", "labels"):
        assert torch.equal(again[k], whole[k]), k
    assert again["skipped"] == 0

    part = sorted((tmp_path / "parts").glob("part-*.pt"))[1]
    part.rename(part.with_name("part-999999999.pt"))  # a gap: chunks that do not follow each other
    with pytest.raises(DgnamError, match="does not continue"):
        cache.encode_dataset(*args, parts_dir=tmp_path / "parts", **kw)


def test_the_cache_deletes_its_chunks_once_the_file_is_written(tiny_target, tmp_path):
    folder = tmp_path / "photos" / "a"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray((torch.rand(40, 48, 3) * 255).byte().numpy()).save(folder / f"{i}.png")
    load_or_encode(tmp_path / "cache", tmp_path / "photos", Encoder(tiny_target, "fc1", input_size=32), None, 32,
                   load_size=32, flips=False, batch_size=1)
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".pt"]  # no .parts folder left
