"""timm models: model=timm from the CLI, timm modules through dgnam.visualize, their errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import REPO, run_script
from PIL import Image

import dgnam
from dgnam.config import build_target_from_cfg
from dgnam.errors import DgnamError

timm = pytest.importorskip("timm", reason="timm is an optional extra (pip install -e .[timm])")
sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TIMM = ["model=timm", "steps=2", "output.progress=false", "batch_size=2", "image_size=64", "method=lucid"]


def test_timm_vit_is_traced_with_timms_settings_and_has_block_units():
    torch.manual_seed(0)
    target = dgnam.wrap_model(timm.create_model("test_vit"))
    assert target.traced  # torchvision's tracer alone cannot trace timm's ViT (its checks on shapes)
    assert target.input_size == 160 and target.mean.flatten().tolist() == [0.5, 0.5, 0.5]  # timm's pretrained_cfg
    assert target.aliases["block0"] == "blocks.0.add_1" and target.aliases["logits"] == "head"
    assert target.layer_shape("block0", 64) == (17, 64)  # a class token and 4 x 4 patches of 16 px
    assert target.categories is not None and len(target.categories) == 1000


def test_api_on_a_timm_vit_with_random_weights(tmp_path):
    torch.manual_seed(0)
    net = timm.create_model("test_vit")
    kw = dict(method="lucid", steps=3, image_size=64, batch_size=2)
    cls = dgnam.visualize(net, "block1", [0, 5], unit="cls", **kw)
    mean = dgnam.visualize(net, "block1", [0, 5], unit="channel", **kw)
    patch = dgnam.visualize(net, "block1", [0], unit="neuron", position=[1, 2], **{**kw, "steps": 30})
    assert cls.images.shape == (2, 3, 64, 64) and patch.images.shape == (1, 3, 64, 64)
    assert not torch.equal(cls.images, mean.images)  # the class token is another unit than the patch mean
    # one patch through Lucid's jitter and scaling needs more steps than a mean over all patches
    assert all(r["activation"] > r["start_activation"] for r in cls.results + mean.results + patch.results)
    assert [u.token for u in cls.units] == [0, 0] and patch.units[0].token == 1 + 2 * 4 + 1  # prefix + y * side + x


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_cli_timm_with_a_weights_file_gives_the_apis_images(compose, tmp_path, suffix):
    torch.manual_seed(1)
    net = timm.create_model("test_resnet", num_classes=5)
    with torch.no_grad():
        net.fc.bias.copy_(torch.arange(5.0))  # trained weights differ from a fresh model's
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    else:
        torch.save(net.state_dict(), path)
    cfg = compose([*TIMM, "model.arch=test_resnet", f"model.weights_file={path}", "model.num_classes=5",
                   "model.class_names=[a,b,c,d,e]", "layers=logits", "units=[c,e]"])
    target = build_target_from_cfg(cfg, torch.device("cpu"))
    x = torch.rand(1, 3, 64, 64)
    assert target.mean.flatten().tolist() == pytest.approx(list(net.pretrained_cfg["mean"]))  # timm's pretrained_cfg
    assert torch.allclose(target(x, ["logits"])["logits"], net.eval()((x - target.mean) / target.std), atol=1e-5)
    out = visualize.run(cfg, tmp_path / "cli")
    assert [r["label"] for r in out["results"]] == ["2 c", "4 e"]
    api = dgnam.visualize(net, "logits", ["c", "e"], method="lucid", steps=2, image_size=64, batch_size=2,
                          class_names=list("abcde"))
    for img, name in zip(api.pil, ["2_c", "4_e"]):
        assert np.array_equal(np.asarray(img), np.asarray(Image.open(tmp_path / "cli" / "logits" / f"{name}.png")))


def test_unknown_timm_name_lists_close_matches(compose):
    cfg = compose([*TIMM, "model.arch=vit_smal_patch16_224"])
    with pytest.raises(DgnamError, match=r"unknown timm model 'vit_smal_patch16_224'; closest: vit_small_patch16_224"):
        build_target_from_cfg(cfg, torch.device("cpu"))


def test_cli_unknown_timm_name_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = run_script(monkeypatch, "visualize.py", *TIMM, "model.arch=resnet5", "hydra.run.dir=run")
    text = capsys.readouterr().err
    assert code == 2
    err = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert err[-1].startswith("error: unknown timm model 'resnet5'; closest: resnet50") and "Traceback" not in text
    assert not (tmp_path / "run").exists()


def test_without_timm_installed_the_error_says_how_to_install(compose, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(DgnamError, match=r"model=timm needs the timm package.*pip install -e \.\[timm\]"):
        build_target_from_cfg(compose([*TIMM, "model.arch=test_vit"]), torch.device("cpu"))


def test_timm_pretrained_offline_is_one_line(compose, monkeypatch):
    def no_network(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", lambda *a, pretrained=False, **k:
                        no_network() if pretrained else timm.models.create_model(*a, **k))
    with pytest.raises(DgnamError, match=r"could not fetch the pretrained weights of test_vit .*model.weights_file"):
        build_target_from_cfg(compose([*TIMM, "model.arch=test_vit", "model.pretrained=true"]), torch.device("cpu"))
