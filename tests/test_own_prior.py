"""A generator prior for your own network: train_generator.py encoder=custom on an image folder,
then DGN-AM through that prior on the same network (model=custom)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import REPO, run_script
from PIL import Image

from dgnam.errors import DgnamError
from dgnam.generator.prior import load_prior, prior_encoder

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
import visualize  # noqa: E402
from train_generator import run as train_run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
ENCODER = ["encoder=custom", "encoder.target._target_=nets.cifar_net", "encoder.code_layer=body.4",
           "encoder.pooling=avg", "encoder.input_size=32"]
TINY = ["trainer=smoke", "resolution=64", "threads=1", "generator.fc=[16]", "generator.width=0.0625",
        "discriminator.spec.code_fc=[16]", "discriminator.spec.joint_fc=[16]", "discriminator.spec.image_fc=[16]",
        "discriminator.spec.convs=[[4,7,4],[8,3,2]]", "code_stats.max_images=16", "grid_images=4",
        "data.batch_size=4", "data.num_workers=0", "data.load_size=64", "data.limit_val=4"]


def image_folder(root, n: int = 6) -> None:
    """root/<class>/<i>.png: smooth random colour images, the layout of ImageNet's folders."""
    rng = np.random.default_rng(0)
    for cls in ("cats", "ships"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(small).resize((80, 80), Image.BILINEAR).save(root / cls / f"{i}.png")


def test_train_a_prior_on_your_own_network_then_dgn_am_through_it(compose, tmp_path):
    image_folder(tmp_path / "photos")
    # 200 steps at lr 1e-3 (about 10 s): the 4 steps of trainer=smoke give a G whose images barely move with
    # the code inside DGN-AM's box [0, mean + 3 std], and the units then fall from their noise start.
    cfg = compose([*ENCODER, *TINY, "data=imagenet_folder", f"data.train={tmp_path / 'photos'}",
                   f"data.val={tmp_path / 'photos'}", f"export.path={tmp_path / 'mine.pt'}",
                   "trainer.max_steps=200", "trainer.max_epochs=1000", "optimizer_g.lr=1e-3", "optimizer_d.lr=1e-3"],
                  name="train_generator")
    out = train_run(cfg, out_dir=tmp_path / "train")
    g, info = load_prior(out["prior"])
    assert info["code_dim"] == 16 and g(torch.rand(2, 16)).shape == (2, 3, 64, 64)  # body.4: 16 channels, pooled
    e = info["encoder"]
    assert e["builder"] == "nets.cifar_net" and e["arch"] == "cifar_net" and e["layer"] == "body.4"
    with pytest.raises(DgnamError, match=r"encoder is a network of your own \(nets.cifar_net, layer body.4\)"):
        prior_encoder(info)  # never imported from what a file says

    for method in ("dgnam", "dgnam_tuned"):  # the recipe's 200 steps, and its step size scaled to small codes
        vis = compose(["model=custom", "model._target_=nets.cifar_net", f"method={method}",
                       f"param.prior={out['prior']}", "layers=logits", "units=[0,3]", "batch_size=2",
                       "output.progress=false", "input_resize=null"])
        rows = visualize.run(vis, tmp_path / method)["results"]
        assert [r["label"] for r in rows] == ["0", "3"]
        for r in rows:  # every unit asked for rises from its noise start, by a margin
            assert r["steps"] == 200 and r["activation"] > r["start_activation"] + 0.05, (method, r)
        a, b = (np.asarray(Image.open(tmp_path / method / "logits" / f"{u}.png")) for u in (0, 3))
        assert a.shape == (64, 64, 3) and not np.array_equal(a, b)  # the prior's resolution; each unit its own code


def test_encoder_custom_without_a_target_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = run_script(monkeypatch, "train_generator.py", "encoder=custom", "encoder.code_layer=x", "data=synthetic",
                      "hydra.run.dir=run")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert last.startswith("error: encoder=custom needs encoder.target._target_="), err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_encoder_custom_with_a_layer_of_another_model_lists_its_layers(compose, tmp_path):
    cfg = compose([*ENCODER, *TINY, "encoder.code_layer=features.14.conv.0", "data=synthetic"], name="train_generator")
    with pytest.raises(DgnamError, match=r"unknown layer 'features.14.conv.0' for cifar_net.*valid layers: .*body.4"):
        train_run(cfg, out_dir=tmp_path / "t")
