"""Feature inversion: an early layer reproduces its input, the error grows with depth, priors smooth,
batching does not change results; the inversion mode end to end; bad input."""

from __future__ import annotations

import functools
import json
import sys

import numpy as np
import pytest
import torch
from conftest import MOBILENET, REPO, needs_shared
from PIL import Image
from skimage.metrics import structural_similarity

from dgnam.core.loop import optimize
from dgnam.core.params import PixelParam, noise_init
from dgnam.core.poststeps import Clamp
from dgnam.errors import DgnamError
from dgnam.io import source_image
from dgnam.views.inversion import batches, feature_errors, feature_match_items, image_errors, plan_jobs

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["model=alexnet", "model.weights=null", "steps=2", "image_size=64", "output.progress=false"]


def _tv(img: torch.Tensor) -> float:
    return float((img[..., 1:, :] - img[..., :-1, :]).abs().mean() + (img[..., 1:] - img[..., :-1]).abs().mean())


def _invert(target, photo, layers, steps=150, lr=0.05):
    refs = {k: v.detach() for k, v in target(photo[None], layers).items()}
    param = PixelParam(noise_init(len(layers), photo.shape[-2:], 0.0, 1.0))
    res = optimize(param, target, feature_match_items(layers, refs), steps=steps,
                   optimizer=functools.partial(torch.optim.Adam, lr=lr), post_steps=[Clamp(-0.5, 0.5)])
    return res, refs


def test_early_layer_reproduces_its_input_and_error_grows_with_depth(tiny_target):
    photo = source_image(None, 32)
    layers = ["conv1", "pool2", "fc2"]
    res, refs = _invert(tiny_target, photo, layers)
    psnr, ssim = image_errors(res.images, photo)
    feat = feature_errors(tiny_target, res.images, layers, refs)
    assert psnr[0] > 25 and ssim[0] > 0.9  # 8 linear 3x3 filters of 3 colours: invertible
    assert feat[0] < 0.05
    assert psnr[0] > psnr[1] > psnr[2] - 1.0 and ssim[0] > ssim[1]
    assert (res.history[-1] > res.history[0]).all()  # every item's match improved


def test_items_do_not_interact(tiny_target):
    photo = source_image(None, 32)
    together, _ = _invert(tiny_target, photo, ["conv1", "pool2"], steps=20)
    alone, _ = _invert(tiny_target, photo, ["pool2"], steps=20)
    assert torch.allclose(together.images[1], alone.images[0], atol=1e-5)


def test_jobs_tv_grows_with_depth_and_batches(tiny_target):
    jobs = plan_jobs(tiny_target, ["conv1", "fc2"], ["plain", "priors"], tv=1.0, tv_growth=3.0)
    assert [(j.layer, j.variant) for j in jobs] == [("conv1", "plain"), ("conv1", "priors"),
                                                    ("fc2", "plain"), ("fc2", "priors")]
    assert jobs[1].tv_weight < jobs[3].tv_weight <= 4.0
    assert [len(b) for b in batches(jobs, 2, False)] == [2, 2]
    assert all({j.variant for j in b} == {"plain"} or {j.variant for j in b} == {"priors"}
               for b in batches(jobs, 3, True))


def test_inversion_mode_end_to_end(compose, tmp_path):
    cfg = compose(["experiment=inversion", *SMALL, "layers=[pool5,conv1]", "batch_size=3"])
    res = visualize.run(cfg, tmp_path)
    rows = json.loads((tmp_path / "results.json").read_text())
    assert rows == res["results"]
    assert [(r["layer"], r["variant"]) for r in rows] == [("conv1", "plain"), ("conv1", "priors"),
                                                          ("pool5", "plain"), ("pool5", "priors")]
    original = np.asarray(Image.open(tmp_path / "original.png"), dtype=np.float64) / 255
    for r in rows:
        assert r["steps"] == 2 and r["feature_error"] < r["start_feature_error"]  # 2 steps already match better
        # PSNR and SSIM as an independent library computes them from the saved PNGs (8-bit: a small tolerance)
        img = np.asarray(Image.open(tmp_path / r["layer"] / f"{r['variant']}.png"), dtype=np.float64) / 255
        assert r["psnr"] == pytest.approx(10 * np.log10(1 / np.mean((img - original) ** 2)), abs=0.05)
        ssim = structural_similarity(img, original, channel_axis=2, data_range=1.0, gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False)
        assert r["ssim"] == pytest.approx(ssim, abs=0.01)
    assert rows[0]["tv_weight"] == 0 and 0 < rows[1]["tv_weight"] < rows[3]["tv_weight"]
    md = (tmp_path / "results.md").read_text()
    assert md.count("\n| conv1 |") == 1 and "priors: SSIM" in md
    for name in ("inversion_grid.png", "inversion_errors.png", "original.png", "conv1/plain.png",
                 "pool5/priors.png", "results.csv"):
        assert (tmp_path / name).is_file(), name


def test_plain_only_and_a_grayscale_photo(compose, tmp_path):
    from PIL import Image

    path = tmp_path / "gray.png"
    Image.fromarray((torch.rand(50, 40) * 255).byte().numpy(), "L").save(path)
    cfg = compose(["experiment=inversion", *SMALL, "layers=conv2", "inversion.variants=[plain]",
                   f"image={path}"])
    rows = visualize.run(cfg, tmp_path / "out")["results"]
    assert [(r["layer"], r["variant"]) for r in rows] == [("conv2", "plain")]


@pytest.mark.parametrize("overrides, message", [
    (["layers=[conv1,conv9]"], "unknown layer 'conv9'"),
    (["inversion.variants=[plain,fancy]"], "unknown inversion variant 'fancy'"),
    (["inversion.tv_growth=-1"], "inversion.tv_growth=-1 must be a number >= 0"),
    (["image=/nonexistent/photo.png"], "image file not found"),
    (["steps=0"], "steps=0 must be an integer >= 1"),
    (["priors.tv=-2"], "priors.tv=-2.0 must be a number >= 0"),
])
def test_bad_input_is_one_clear_error(compose, tmp_path, overrides, message):
    with pytest.raises(DgnamError, match=message) as err:
        visualize.run(compose(["experiment=inversion", *SMALL, "layers=[conv1]", *overrides]), tmp_path)
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())


@needs_shared(MOBILENET)
def test_trained_mobilenet_early_close_deep_far_priors_smoother(compose, tmp_path):
    cfg = compose(["experiment=inversion", "model=mobilenet_v2_shared", "image_size=64", "steps=60",
                   "batch_size=4", "layers=[features.1.conv.2,features.14.conv.3]", "output.progress=false"])
    res = visualize.run(cfg, tmp_path)
    by = {(r["layer"], r["variant"]): r for r in res["results"]}
    early, deep = by[("features.1.conv.2", "plain")], by[("features.14.conv.3", "plain")]
    assert early["psnr"] > deep["psnr"] + 3 and early["ssim"] > deep["ssim"] + 0.2
    assert by[("features.1.conv.2", "priors")]["ssim"] > 0.5  # the astronaut, recognizably
    imgs = res["images"]
    assert _tv(imgs["features.14.conv.3/priors"]) < 0.5 * _tv(imgs["features.14.conv.3/plain"])
