"""model=custom: any callable returning an nn.Module, from the CLI (Hydra instantiation)."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import REPO, run_script
from nets import CifarNet

from dgnam.config import build_target_from_cfg
from dgnam.errors import DgnamError

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
CUSTOM = ["model=custom", "model._target_=nets.cifar_net", "steps=2", "output.progress=false", "image_size=32",
          "batch_size=2", "layers=logits"]


def test_custom_model_with_its_arguments_weights_and_class_names(compose, tmp_path):
    trained = CifarNet(num_classes=4)
    with torch.no_grad():
        trained.head.bias.add_(1.0)  # differs from a fresh CifarNet(4)
    torch.save(trained.state_dict(), tmp_path / "net.pth")
    cfg = compose([*CUSTOM, "+model.num_classes=4", f"model.weights_file={tmp_path / 'net.pth'}",
                   "model.class_names=[cat,dog,frog,ship]", "units=[frog,ship]"])
    target = build_target_from_cfg(cfg, torch.device("cpu"))
    x = torch.rand(2, 3, 32, 32)
    ref = trained.eval()((x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                         / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
    assert torch.allclose(target(x, ["logits"])["logits"], ref, atol=1e-5)
    rows = visualize.run(cfg, tmp_path / "run")["results"]
    assert [r["label"] for r in rows] == ["2 frog", "3 ship"]
    assert (tmp_path / "run" / "logits" / "2_frog.png").is_file()


@pytest.mark.parametrize("overrides, message", [
    (["model._target_=nets.no_such_net"], "model._target_='nets.no_such_net' cannot be imported"),
    (["model._target_=???"], "model=custom needs model._target_="),
    (["model._target_=collections.OrderedDict"], "returned a OrderedDict, not a torch.nn.Module"),
    (["+model.depth=3"], "model._target_='nets.cifar_net' failed (cifar_net() got an unexpected keyword"),
    (["units=[0]", "model.input_size=48"], "cifar_net cannot run on 48 x 48 images; it takes 3 x 32 x 32"),
    (["model.class_names=/nonexistent/names.txt"], "class names file not found"),
])
def test_bad_custom_model_is_one_line(compose, tmp_path, overrides, message):
    cfg = compose([*CUSTOM, "units=[0]", *overrides])
    with pytest.raises(DgnamError) as err:
        visualize.run(cfg, tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())


def test_cli_custom_target_that_fails_to_import(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = run_script(monkeypatch, "visualize.py", "model=custom", "model._target_=mypkg.nets.build", "hydra.run.dir=out")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert last.startswith("error: model._target_='mypkg.nets.build' cannot be imported"), err
    assert not (tmp_path / "out").exists()
