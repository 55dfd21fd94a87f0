"""Receptive fields: computed from the architecture == measured by gradient; single-neuron AM changes
only the field; the receptive_field mode end to end; bad input."""

from __future__ import annotations

import functools
import json
import logging
import sys

import pytest
import torch
from conftest import REPO

from dgnam.core.loop import optimize
from dgnam.core.models import build_target
from dgnam.core.params import PixelParam
from dgnam.core.poststeps import BlurEvery, Decay
from dgnam.core.transforms import Jitter
from dgnam.errors import DgnamError
from dgnam.views.receptive import KeepOutside, box_mask, gradient_boxes, layer_fields, neurons, probe_model

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["model=alexnet", "model.weights=null", "steps=2", "image_size=64", "output.progress=false"]


def _random(arch: str):
    logging.getLogger("dgnam.core.models").setLevel(logging.ERROR)  # the random-weights banner
    return build_target(arch)


def _agreement(target, layers, size):
    """Computed and measured boxes of the centre and two corner units of every layer."""
    shapes: dict = {}
    fields = layer_fields(target, layers, size, shapes)
    requests = {}
    for layer in layers:
        _, h, w = shapes[layer] if len(shapes[layer]) == 3 else (0, 1, 1)
        requests[layer] = [(w // 2, h // 2), (0, 0), (w - 1, h - 1)]
    measured = gradient_boxes(target, requests, size)
    computed = {la: [fields[la].box(x, y, size, size) for x, y in requests[la]] for la in layers}
    return fields, computed, measured


@pytest.mark.parametrize("arch, known", [
    ("vgg16", {"conv1_1": 3, "conv1_2": 5, "pool1": 6, "conv3_3": 40, "conv4_3": 92, "conv5_3": 196, "pool5": 212}),
    ("alexnet", {"conv1": 11, "pool1": 19, "conv2": 51, "pool2": 67, "conv5": 163, "pool5": 195}),
])
def test_computed_fields_agree_with_gradient_for_every_conv_and_pool(arch, known):
    target = _random(arch)
    layers = [a for a in target.aliases if a.startswith(("conv", "pool"))]
    assert len(layers) == (18 if arch == "vgg16" else 8)
    size = 224 if arch == "vgg16" else 227  # a centre unit whose whole field is inside the image
    fields, computed, measured = _agreement(target, layers, size)
    for layer in layers:
        assert measured[layer] == computed[layer], layer
        x0, y0, x1, y1 = measured[layer][0]  # the centre unit: the whole field inside the image
        assert (y1 - y0, x1 - x0) == fields[layer].size, layer
    assert {la: fields[la].size[0] for la in known} == known  # the published values
    if arch == "alexnet":  # 227 = 4 * 54 + 11: the last 2 rows and columns never reach any layer
        assert measured["pool5"][2] == (94, 94, 225, 225) == computed["pool5"][2]
        _, computed, measured = _agreement(target, ["fc6"], size)
        assert measured["fc6"] == computed["fc6"] == [(0, 0, 225, 225)] * 3


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_fields_agree_through_residual_blocks(arch):
    target = _random(arch)
    layers = [n for n in target.nodes if n.endswith(("add", "conv.0", "maxpool", "relu_1"))][:24]
    _, computed, measured = _agreement(target, layers, 96)
    assert measured == computed


def test_fields_after_global_pooling_are_the_whole_image(tiny_target):
    fields = layer_fields(tiny_target, ["conv1", "pool2", "fc1", "input"], 32)
    assert fields["fc1"].whole and fields["fc1"].box(3, 3, 32, 32) == (0, 0, 32, 32)
    assert fields["input"].size == (1, 1)
    assert fields["conv1"].size == (3, 3) and fields["conv1"].start == (-1, -1)
    assert fields["pool2"].size == (10, 10) and fields["pool2"].stride == (4, 4)


def test_probe_covers_the_real_gradient(tiny_target):
    """On the network itself the non-zero gradient lies inside the field (it may be smaller: ReLUs,
    max-pools); on the probe it fills the field exactly."""
    size, layer, (x, y) = 32, "conv2", (5, 6)
    box = layer_fields(tiny_target, [layer], size)[layer].box(x, y, size, size)
    img = torch.rand(1, 3, size, size, requires_grad=True)
    tiny_target(img, [layer])[layer][0, 3, y, x].backward()
    nz = torch.nonzero(img.grad.abs().sum((0, 1)))
    assert len(nz) > 0
    assert nz[:, 0].min() >= box[1] and nz[:, 0].max() < box[3]
    assert nz[:, 1].min() >= box[0] and nz[:, 1].max() < box[2]
    assert gradient_boxes(tiny_target, {layer: [(x, y)]}, size, probe_model(tiny_target))[layer] == [box]


def test_single_neuron_am_changes_only_the_field(tiny_target):
    """With priors that touch every pixel (decay, blur) and jitter, only the field may change."""
    size, layer = 32, "conv2"
    fields = layer_fields(tiny_target, [layer], size)
    positions = [(4, 4), (0, 9)]  # a field inside the image, one clipped at the left edge
    boxes = [fields[layer].box(x, y, size, size) for x, y in positions]
    init = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.4
    mask = box_mask(boxes, size, size)
    objective = neurons(layer, [1, 2], [p[0] for p in positions], [p[1] for p in positions])

    def run(keep: bool):
        param = PixelParam(init)
        posts = [Decay(0.01), BlurEvery(2, 1.0)] + ([KeepOutside(param, mask)] if keep else [])
        res = optimize(param, tiny_target, objective, steps=30, transforms=Jitter(2),
                       optimizer=functools.partial(torch.optim.Adam, lr=0.05), post_steps=posts)
        return res, (res.images - init).abs().amax(1, keepdim=True)

    res, change = run(keep=True)
    assert float(change.masked_fill(mask, 0).max()) == 0.0  # nothing outside the field moved
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        assert float(change[i, 0, y0:y1, x0:x1].mean()) > 0.01  # the field did
    assert (res.history[-1] > res.history[0] + 0.1).all()  # and the neuron rose
    _, free = run(keep=False)
    assert float(free.masked_fill(mask, 0).max()) > 0.01  # without the post-step the priors leak out


def test_receptive_field_mode_end_to_end(compose, tmp_path):
    cfg = compose(["experiment=receptive_field", *SMALL, "layers=[pool2,conv1]", "units=[0,5]",
                   "rf.zoom_size=48"])
    res = visualize.run(cfg, tmp_path)
    rows = json.loads((tmp_path / "results.json").read_text())
    assert len(rows) == 4 and rows == res["results"]
    assert [r["layer"] for r in rows] == ["conv1", "conv1", "pool2", "pool2"]  # depth order
    for r in rows:
        assert r["agree"] is True and r["max_change_outside"] == 0.0
        assert r["activation"] >= r["start_activation"]
    assert all(r["activation"] > r["start_activation"] for r in rows[:2])  # pre-ReLU conv1 rises
    assert rows[0]["field_size"] == [11, 11] and rows[2]["field_size"] == [67, 67]
    for name in ("rf_conv1.png", "rf_pool2.png", "rf_summary.png", "fields.md", "results.csv",
                 "conv1/5_full.png", "pool2/0_crop.png"):
        assert (tmp_path / name).is_file(), name
    assert "| pool2 | features.5 |" in (tmp_path / "fields.md").read_text()


def test_start_from_the_photo_and_layers_all(compose, tmp_path):
    cfg = compose(["experiment=receptive_field", *SMALL, "layers=all", "units=[0]", "steps=1",
                   "image_size=72", "rf.zoom_size=32", "init.kind=image", "init.path=astronaut"])
    rows = visualize.run(cfg, tmp_path)["results"]
    assert [r["layer"] for r in rows] == ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]
    assert all(r["agree"] for r in rows)


def test_vgg16_preset_composes(compose):
    cfg = compose(["experiment=receptive_field_vgg16", "model.weights=null"])
    assert cfg.mode == "receptive_field" and cfg.model.arch == "vgg16" and "conv5_3" in cfg.layers


@pytest.mark.parametrize("overrides, message", [
    (["position=[500,1]"], "position (x=500, y=1) is outside conv2"),
    (["layers=[conv9_9]"], "unknown layer 'conv9_9'"),
    (["layers=[fc7]"], "need a conv or pool layer"),
    (["units=[999]"], "unit 999 is out of range"),
    (["param=fft"], "needs param=pixel"),
    (["init.kind=image", "init.path=/nonexistent/start.png"], "image file not found"),
])
def test_bad_input_is_one_clear_error(compose, tmp_path, overrides, message):
    cfg = compose(["experiment=receptive_field", *SMALL, "layers=[conv2]", *overrides])
    with pytest.raises(DgnamError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        visualize.run(cfg, tmp_path)
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())
