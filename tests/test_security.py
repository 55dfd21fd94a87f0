"""No file a user passes can run code: a crafted pickle (whose ``__reduce__`` calls ``os.system``)
given to every entry that reads a file is refused with one line, and its marker never appears."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import REPO
from torch import nn

from dgnam.errors import DgnamError

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402
from train_generator import run as train_run  # noqa: E402

SHIPPED_PRIOR = REPO / "dgnam" / "priors" / "mobilenet_v2_pool_g64.pt"
TINY_TRAIN = [
    "encoder=mobilenet_v2_random", "data=synthetic", "trainer=smoke", "resolution=64", "threads=1",
    "generator.fc=[16]", "generator.width=0.0625", "discriminator.spec.code_fc=[16]",
    "discriminator.spec.joint_fc=[16]", "discriminator.spec.image_fc=[16]",
    "discriminator.spec.convs=[[4,7,4],[8,3,2]]", "code_stats.max_images=16", "grid_images=4",
]
SMALL = ["steps=1", "image_size=64", "batch_size=1", "units=[0]", "output.progress=false"]


class Evil:
    """Unpickled without weights_only, this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path):
    """(marker, crafted .pt pickle, crafted .pt2 export archive)."""
    marker = tmp_path / "pwned"
    pt = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil(marker), "format": Evil(marker)}, pt)

    class Tiny(nn.Module):
        def forward(self, x):
            return x.mean((2, 3)).repeat(1, 334)[:, :1000]

    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(Tiny(), (torch.rand(1, 3, 8, 8),)), good)
    buf = io.BytesIO()
    torch.save((Evil(marker),), buf)  # torch.export.load falls back to weights_only=False for these
    pt2 = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(pt2, "w") as dst:
        for info in src.infolist():
            data = buf.getvalue() if info.filename.endswith("sample_inputs/model.pt") else src.read(info.filename)
            dst.writestr(info, data)
    return marker, pt, pt2


def test_the_crafted_files_do_run_code_when_loaded_unsafely(evil):
    """The test's own premise: without the protections, both files execute their payload."""
    marker, pt, pt2 = evil
    torch.load(pt, weights_only=False)
    assert marker.exists()
    marker.unlink()
    try:
        torch.export.load(str(pt2))
    except Exception:
        pass
    assert marker.exists()


def _image(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (120, 80, 40)).save(path)
    return path


VISUALIZE_CASES = {
    "model.weights_file": lambda pt, pt2, img: ["model=alexnet", "model.weights=null", f"model.weights_file={pt}"],
    "model.weights_file (timm)": lambda pt, pt2, img: ["model=timm", "model.arch=test_resnet", f"model.weights_file={pt}"],
    "model.weights_file (custom)": lambda pt, pt2, img: ["model=custom", "model._target_=nets.cifar_net",
                                                         f"model.weights_file={pt}", "image_size=32"],
    "param.prior": lambda pt, pt2, img: ["method=dgnam", "model=alexnet", "model.weights=null", f"param.prior={pt}"],
    "param.encoder_weights": lambda pt, pt2, img: [
        "method=dgnam", "model=alexnet", "model.weights=null", f"param.prior={SHIPPED_PRIOR}",
        f"param.encoder_weights={pt}", "init.kind=image", f"init.path={img}"],
    "param.stats": lambda pt, pt2, img: ["method=latent_am", "model=alexnet", "model.weights=null", f"param.stats={pt}"],
    "param.decoder_file": lambda pt, pt2, img: ["method=latent_am", "model=alexnet", "model.weights=null",
                                                f"param.decoder_file={pt}"],
    "init.path": lambda pt, pt2, img: ["model=alexnet", "model.weights=null", "init.kind=image", f"init.path={pt}"],
    "image (views)": lambda pt, pt2, img: ["experiment=activation_maps", "model=alexnet", "model.weights=null",
                                           "layers=conv1", f"image={pt}"],
    "param.spectrum": lambda pt, pt2, img: ["method=maco", "model=alexnet", "model.weights=null", f"param.spectrum={pt}"],
    "style.image": lambda pt, pt2, img: ["experiment=style", "model=alexnet", "model.weights=null", "layers=conv1",
                                         "style.content_layer=conv2", f"style.image={pt}"],
    "deepdream.guide": lambda pt, pt2, img: ["experiment=deepdream", "model=alexnet", "model.weights=null",
                                             "layers=conv2", f"deepdream.guide={pt}"],
}


@pytest.mark.parametrize("entry", list(VISUALIZE_CASES))
def test_visualize_refuses_a_crafted_file(compose, evil, tmp_path, entry):
    marker, pt, pt2 = evil
    if entry == "param.encoder_weights" and not SHIPPED_PRIOR.is_file():
        pytest.skip(f"{SHIPPED_PRIOR} not found")
    if "timm" in entry:
        pytest.importorskip("timm", reason="timm is an optional extra (pip install -e .[timm])")
    cfg = compose([*VISUALIZE_CASES[entry](pt, pt2, _image(tmp_path)), *SMALL])
    with pytest.raises(DgnamError, match=str(pt.name)):
        visualize.run(cfg, str(tmp_path / "run"))
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pt2 archive", "pt2 pickle", "torchvision weights"])
def test_judges_refuse_a_crafted_file(evil, kind):
    from dgnam.eval.judges import load_judge

    marker, pt, pt2 = evil
    spec = {"pt2 archive": {"kind": "pt2", "path": str(pt2), "input_size": 8},
            "pt2 pickle": {"kind": "pt2", "path": str(pt)},
            "torchvision weights": {"kind": "torchvision", "arch": "alexnet", "weights_file": str(pt)}}[kind]
    with pytest.raises(DgnamError, match="evil"):
        load_judge(spec)
    assert not marker.exists()


@pytest.mark.parametrize("key", ["ckpt_path", "export.from_ckpt", "encoder.target.weights_file"])
def test_train_generator_refuses_a_crafted_file(compose, evil, tmp_path, key):
    marker, pt, pt2 = evil
    over = [*TINY_TRAIN, f"{key}={pt}"]
    if key == "encoder.target.weights_file":
        over.append("encoder.target.weights=null")
    with pytest.raises(DgnamError, match="evil.pt"):
        train_run(compose(over, name="train_generator"), out_dir=tmp_path / "run")
    assert not marker.exists()


@pytest.mark.parametrize("argv", [
    ["-m", "dgnam.generator.latent_stats", "--cache", "{pt}", "--out", "{tmp}/stats.pt"],
    ["-m", "dgnam.generator.evaluate", "--prior", "{pt}", "--val", "{tmp}", "--out", "{tmp}/eval"],
])
def test_module_clis_refuse_a_crafted_file(evil, tmp_path, argv):
    marker, pt, pt2 = evil
    args = [a.format(pt=pt, tmp=tmp_path) for a in argv]
    p = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().count("\n") == 0 and "evil.pt" in p.stderr, p.stderr
    assert not marker.exists()


def test_resume_from_a_crafted_checkpoint_is_one_line_and_leaves_nothing(evil, tmp_path):
    """Through the CLI: exit 2, one line on stderr naming the file, no run directory left."""
    marker, pt, pt2 = evil
    run_dir = tmp_path / "run"
    p = subprocess.run([sys.executable, "train_generator.py", *TINY_TRAIN, f"ckpt_path={pt}",
                        f"hydra.run.dir={run_dir}"], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().startswith("error: ") and p.stderr.strip().count("\n") == 0, p.stderr
    assert str(pt) in p.stderr
    assert not run_dir.exists() and not marker.exists()


def test_a_crafted_weights_file_through_the_cli_is_one_line_without_warnings(evil, tmp_path):
    marker, pt, pt2 = evil
    run_dir = tmp_path / "run"
    p = subprocess.run([sys.executable, "visualize.py", "model=alexnet", "model.weights=null",
                        f"model.weights_file={pt}", f"hydra.run.dir={run_dir}"], capture_output=True, text=True,
                       cwd=REPO, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot read weights file"), p.stderr
    assert not run_dir.exists() and not marker.exists()
