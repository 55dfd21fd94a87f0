"""dgnam.visualize: one call on any nn.Module, the same images as the CLI, and bad input."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
import torchvision
from conftest import MOBILENET, REPO, needs_shared
from nets import CifarNet, Untraceable
from PIL import Image

import dgnam
from dgnam.errors import DgnamError

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _png_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_api_on_a_custom_module_returns_images_numbers_and_a_grid(tmp_path):
    vis = dgnam.visualize(CifarNet(), "logits", [0, 3], method="lucid", steps=3, batch_size=2)
    assert vis.images.shape == (2, 3, 32, 32)  # image_size defaults to the model's input size
    assert 0 <= vis.images.min() and vis.images.max() <= 1
    assert [r["unit"] for r in vis.results] == [0, 3] and all("activation" in r for r in vis.results)
    assert [p.size for p in vis.pil] == [(32, 32), (32, 32)] and vis.pil[0].mode == "RGB"
    png = vis._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in vis._repr_html_() and "<td>3</td>" in vis._repr_html_()
    out = vis.save(tmp_path / "api")
    assert {"logits/0.png", "logits/3.png", "grid_logits.png"} <= set(_png_bytes(out))
    assert (out / "results.json").is_file() and (out / "results.csv").is_file()
    assert (out / ".hydra" / "config.yaml").is_file()


def test_api_and_cli_give_identical_images(compose, tmp_path):
    over = ["method=lucid", "steps=3", "image_size=32", "batch_size=2", "layers=logits", "units=[1,2]",
            "output.progress=false", "seed=3"]
    cli = visualize.run(compose(["model=custom", "model._target_=nets.cifar_net", "model.input_size=32", *over]),
                        tmp_path / "cli")
    vis = dgnam.visualize(CifarNet(), "logits", [1, 2], method="lucid", steps=3, batch_size=2, seed=3)
    vis.save(tmp_path / "api")
    assert torch.equal(vis.images, cli["images"]["logits"])
    cli_png, api_png = _png_bytes(tmp_path / "cli"), _png_bytes(tmp_path / "api")
    assert cli_png.keys() == api_png.keys() and cli_png == api_png
    assert [r["activation"] for r in vis.results] == [r["activation"] for r in cli["results"]]


@needs_shared(MOBILENET)
def test_shared_mobilenet_through_the_api_equals_the_cli(compose, tmp_path):
    over = ["steps=2", "image_size=64", "batch_size=2", "layers=logits", "units=[0,goldfish]", "output.progress=false"]
    cli = visualize.run(compose(["model=mobilenet_v2_shared", "method=lucid", *over]), tmp_path / "cli")
    net = torchvision.models.mobilenet_v2()
    net.load_state_dict(torch.load(MOBILENET, weights_only=True))
    vis = dgnam.visualize(net, "logits", [0, "goldfish"], method="lucid", steps=2, image_size=64, batch_size=2,
                          mean=[0.5] * 3, std=[0.5] * 3)
    assert torch.equal(vis.images, cli["images"]["logits"])
    assert vis.results[1]["label"] == "1 goldfish"


def test_untraceable_module_falls_back_to_hooks_on_exactly_the_asked_modules(caplog):
    net = Untraceable()
    with caplog.at_level(logging.WARNING):
        vis = dgnam.visualize(net, "act", [1, 2], method="pixel", steps=2, image_size=16)
    assert "cannot be traced" in caplog.text
    assert vis.images.shape == (2, 3, 16, 16)
    during = [seen for seen in net.hooks_seen if any(seen.values())]
    assert during and all(seen == {**{n: 0 for n in seen}, "act": 1} for seen in during)
    assert all(len(m._forward_hooks) == 0 for m in net.modules())  # removed after the run


def test_a_fixed_size_model_sees_every_image_at_its_size():
    vis = dgnam.visualize(CifarNet(), "logits", 0, method="pixel", steps=1, image_size=48)
    assert vis.images.shape[-1] == 48  # optimized at 48 px, resized to the 32 px the linear layer takes


def test_train_mode_gets_a_notice_and_eval(caplog):
    net = CifarNet().train()
    with caplog.at_level(logging.WARNING):
        dgnam.visualize(net, "logits", 0, method="pixel", steps=1)
    assert "train mode" in caplog.text and not net.training


@pytest.mark.parametrize("call, message", [
    (lambda: dgnam.visualize("resnet18", "logits", 0), "model must be a torch.nn.Module"),
    (lambda: dgnam.visualize(CifarNet(), "conv5_3", 0, steps=1), "unknown layer 'conv5_3' for CifarNet"),
    (lambda: dgnam.visualize(CifarNet(), "logits", 0, input_size=64), "CifarNet cannot run on 64 x 64 images; it "
                                                                      "takes 3 x 32 x 32: give input_size=32"),
    (lambda: dgnam.visualize(CifarNet(), "logits", 0, method="lucd"), "unknown method 'lucd' (did you mean lucid"),
    (lambda: dgnam.visualize(CifarNet(), "logits", 0, class_names=["a", "b"]), "2 class names given"),
])
def test_bad_input_is_one_line(call, message):
    with pytest.raises(DgnamError, match="^.*$") as e:
        call()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_grey_input_and_own_class_names_from_a_file(tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(f"digit {i}" for i in range(10)) + "\n")
    vis = dgnam.visualize(CifarNet(in_channels=1), "logits", ["digit 7"], method="pixel", steps=2,
                          class_names=str(names))
    assert vis.results[0]["unit"] == 7 and vis.results[0]["label"] == "7 digit 7"
    img = vis.images[0]
    assert torch.allclose(img[0], img[1]) and torch.allclose(img[1], img[2])  # grey: what the model sees
    vis.save(tmp_path / "out")
    assert Image.open(tmp_path / "out" / "logits" / "7_digit_7.png").size == (32, 32)
