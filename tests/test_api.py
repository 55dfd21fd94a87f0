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


CUSTOM_CLI = ["model=custom", "model._target_=nets.cifar_net", "model.input_size=32", "output.progress=false"]


def test_activation_maps_through_the_api_equal_the_clis(compose, tmp_path):
    from dgnam.views.actmaps import run_activation_maps

    cli = run_activation_maps(compose(["experiment=activation_maps", *CUSTOM_CLI, "layers=[body.1,body.4]",
                                       "units=first:4", "image_size=32", "image=skimage:coffee"]), tmp_path / "cli")
    view = dgnam.activation_maps(CifarNet(), "skimage:coffee", ["body.1", "body.4"], units="first:4")
    assert view.mode == "activation_maps" and [p.name for p in view.figures] == ["actmaps_body.1.png", "actmaps_body.4.png"]
    for layer in ("body.1", "body.4"):
        assert torch.equal(view.data[layer], cli["maps"][layer])
    assert view.results == cli["results"] and len(view.results) == 8
    assert view._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n" and view._repr_html_().count("<img") == 2
    saved, theirs = _png_bytes(view.save(tmp_path / "saved")), _png_bytes(tmp_path / "cli")
    assert saved.keys() == theirs.keys() and saved["input.png"] == theirs["input.png"]  # titles name the model


def test_invert_through_the_api_equals_the_cli_and_takes_a_tensor(compose, tmp_path):
    from dgnam.views.inversion import run_inversion

    over = ["experiment=inversion", *CUSTOM_CLI, "layers=[body.1]", "steps=4", "image_size=32", "batch_size=2"]
    photo = torch.rand(3, 40, 40)
    Image.fromarray((photo.permute(1, 2, 0) * 255).round().byte().numpy()).save(tmp_path / "photo.png")
    cli = run_inversion(compose([*over, f"image={tmp_path / 'photo.png'}"]), tmp_path / "cli")
    view = dgnam.invert(CifarNet(), photo, ["body.1"], steps=4, batch_size=2, out_dir=tmp_path / "api")
    assert view.folder == tmp_path / "api" and (view.folder / "inversion_grid.png").is_file()
    assert sorted(view.data) == ["body.1/plain", "body.1/priors"]
    assert [r["feature_error"] for r in view.results] == [r["feature_error"] for r in cli["results"]]
    assert all(torch.equal(view.data[k], cli["images"][k]) for k in view.data)
    one = dgnam.invert(CifarNet(), photo, "body.1", steps=2, variants=["plain"])
    assert [r["variant"] for r in one.results] == ["plain"]


def test_dgnam_with_a_prior_through_the_api_equals_the_cli(compose, tmp_path):
    prior = REPO / "dgnam" / "priors" / "mobilenet_v2_pool_g64.pt"
    over = ["steps=3", "batch_size=2", "layers=logits", "units=[1,4]", "seed=2"]
    cli = visualize.run(compose([*CUSTOM_CLI, "method=dgnam", f"param.prior={prior}", *over]), tmp_path / "cli")
    vis = dgnam.visualize(CifarNet(), "logits", [1, 4], method="dgnam", steps=3, batch_size=2, seed=2,
                          overrides=[f"param.prior={prior}"])
    assert vis.images.shape == (2, 3, 64, 64)  # the prior's resolution, whatever the model's input
    assert torch.equal(vis.images, cli["images"]["logits"])
    assert vis.cfg.method_name == "dgnam"


@pytest.mark.parametrize("call, message", [
    (lambda: dgnam.activation_maps(CifarNet(), 3.5, "body.1"), "image must be a file path, a PIL image"),
    (lambda: dgnam.activation_maps(CifarNet(), torch.rand(2, 8, 8), "body.1"), "image tensor must be (3, H, W)"),
    (lambda: dgnam.invert(CifarNet(), None, ["features.3"], steps=1), "unknown layer 'features.3' for CifarNet"),
    (lambda: dgnam.invert(CifarNet(), None, ["body.1"], steps=1, variants=["blurry"]), "unknown inversion variant"),
])
def test_bad_view_input_is_one_line(call, message):
    with pytest.raises(DgnamError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)
