"""visualize.py: configs compose and instantiate, run(cfg) end to end, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from conftest import CONF, MOBILENET, REPO, needs_shared
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from dgnam.config import check_priors
from dgnam.core.models import build_target
from dgnam.errors import DgnamError

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

SMALL = ["model.weights=null", "steps=2", "image_size=96", "batch_size=2", "output.progress=false"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["param", "optimizer", "scheduler"])
def test_every_option_composes_and_instantiates(compose, group, tmp_path):
    for name in options(group):
        cfg = compose([f"{group}={name}"] if group != "scheduler" else [f"+scheduler={name}"])
        obj = instantiate(cfg[group])
        params = [torch.nn.Parameter(torch.zeros(2))]
        if group == "param":
            kw = {"init": torch.rand(2, 3, 16, 16), "noise": name in ("generator", "latent"),
                  "generator": torch.Generator()}
            if name == "latent" and not Path(str(cfg.param.decoder_file)).is_file():
                from dgnam.generator.taef2 import TAEF2Decoder  # no shared TAEF2 here: random weights

                torch.save(TAEF2Decoder(None).layers.state_dict(), tmp_path / "dec.pth")
                kw["decoder_file"] = str(tmp_path / "dec.pth")
            if name == "generator" and not Path(str(cfg.param.prior)).is_file():
                # no trained prior here: the same config with a tiny generator and code statistics
                tiny = torch.nn.Sequential(torch.nn.Linear(4, 3 * 16 * 16), torch.nn.Unflatten(1, (3, 16, 16)),
                                           torch.nn.Sigmoid())
                kw.update(prior=None, gen=tiny, code_mean=torch.zeros(4), code_std=torch.ones(4))
            built = obj(**kw)
            out = built()
            assert out.shape[:2] == (2, 3) and out.min() >= 0 and out.max() <= 1
            if name not in ("generator", "latent"):  # a generator has its own resolution
                assert out.shape[-2:] == (16, 16)
        elif group == "optimizer":
            assert isinstance(obj(params), torch.optim.Optimizer)
        else:
            opt = torch.optim.SGD(params, lr=8.0)
            sched = obj(opt)
            for _ in range(cfg.steps - 1):
                opt.step()
                sched.step()
            assert opt.param_groups[0]["lr"] < 1e-9  # linear 8 -> 1e-10


@pytest.mark.parametrize("name", ["vgg16", "alexnet", "torchvision", "mobilenet_v2_shared"])
def test_every_model_composes_and_instantiates(compose, name):
    if name == "mobilenet_v2_shared" and not MOBILENET.exists():
        pytest.skip(f"shared asset {MOBILENET} not found (set DGNAM_SHARED)")
    over = [f"model={name}"] + ([] if name == "mobilenet_v2_shared" else ["model.weights=null"])
    if name == "torchvision":
        over.append("model.arch=squeezenet1_1")
    cfg = compose(over)
    target = instantiate(cfg.model, device="cpu")
    assert target(torch.rand(1, 3, 64, 64), ["logits"])["logits"].shape == (1, 1000)


def am_presets() -> list[str]:
    """The presets of conf/experiment/ whose mode is ``am`` (the others have tests of their own:
    test_actmaps, test_inversion, test_receptive, test_dream_style, test_report)."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        names = [n for n in options("experiment")
                 if hcompose(config_name="visualize", overrides=[f"experiment={n}"]).mode == "am"]
    GlobalHydra.instance().clear()
    return names


def test_the_am_presets_are_found():
    assert {"classes", "compare", "lucid", "keras_filters"} <= set(am_presets()) and "inversion" not in am_presets()


@pytest.mark.parametrize("name", am_presets())
def test_every_experiment_runs_shrunk(compose, name, tmp_path):
    cfg = compose([f"experiment={name}"])
    check_priors(OmegaConf.to_container(cfg.priors))
    if cfg.model.weights_file and not Path(str(cfg.model.weights_file)).is_file():
        pytest.skip(f"{name} needs {cfg.model.weights_file} (shared asset not found; set DGNAM_SHARED)")
    over = [f"experiment={name}", *SMALL]
    if cfg.octaves.n > 1:
        over += ["octaves.n=2", "image_size=80"]
    units = cfg.units
    over.append("units=[0,1]" if isinstance(units, str) else f"units=[{units[0]},{units[1]}]"
                if not isinstance(units[0], str) else f"units=[{units[0]!r},{units[1]!r}]".replace("'", '"'))
    if cfg.get("shard") is not None and cfg.shard.count > 1:
        over.append("shard.count=1")  # the shrunk job runs its 2 units in one shard
    res = visualize.run(compose(over), tmp_path)
    layers = [cfg.layers] if isinstance(cfg.layers, str) else list(cfg.layers)
    assert len(res["results"]) == 2 * len(layers)
    for layer in layers:
        assert (tmp_path / f"grid_{layer}.png").is_file()


def test_run_end_to_end(compose, tmp_path):
    cfg = compose(["model=alexnet", *SMALL, "layers=[conv2,fc8]", "units=[0,1,2]",
                   "output.gif=true", "output.mp4=true", "output.frame_every=1", "priors.jitter=4",
                   "priors.decay=0.01"])
    res = visualize.run(cfg, tmp_path)
    rows = json.loads((tmp_path / "results.json").read_text())
    assert len(rows) == 6 and rows == res["results"]
    assert {r["kind"] for r in rows} == {"channel", "class"}
    for r in rows:
        assert r["steps"] == 2 and r["batch_seconds"] == pytest.approx(r["seconds"] * r["batch_size"])
        assert ("probability" in r) == (r["kind"] == "class")
    assert (tmp_path / "results.csv").read_text().count("\n") == 7
    for layer in ("conv2", "fc8"):
        pngs = sorted((tmp_path / layer).glob("*.png"))
        assert len(pngs) == 3
        assert Image.open(pngs[0]).size == (96, 96)
        grid = Image.open(tmp_path / f"grid_{layer}.png")
        assert grid.size[0] > 3 * 96
        for fmt in ("gif", "mp4"):  # a frame at steps 0 and 1 (frame_every=1) and the final image
            frames = iio.imread(tmp_path / f"optimization_{layer}.{fmt}", index=None)
            assert frames.shape[0] == 3 and frames.shape[-1] == 3 and frames[0].std() > 0, (fmt, frames.shape)
    assert not list(tmp_path.rglob(".*.png"))  # no temporary files left behind


def test_class_names_and_ranges(compose, tmp_path):
    cfg = compose(["model=alexnet", *SMALL, "layers=logits", "units=[goldfish,'great white shark',7]",
                   "steps=1"])
    rows = visualize.run(cfg, tmp_path)["results"]
    assert [r["unit"] for r in rows] == [1, 2, 7]
    assert rows[0]["label"] == "1 goldfish"
    cfg = compose(["model=alexnet", *SMALL, "layers=conv1", "units=3-5", "steps=1", "output.png=false"])
    assert [r["unit"] for r in visualize.run(cfg, tmp_path)["results"]] == [3, 4, 5]


def test_neuron_units_at_a_position(compose, tmp_path):
    cfg = compose(["model=alexnet", *SMALL, "layers=conv3", "units=first:2", "position=[1,2]",
                   "output.png=false"])
    rows = visualize.run(cfg, tmp_path)["results"]
    assert [(r["kind"], r["x"], r["y"]) for r in rows] == [("neuron", 1, 2)] * 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["layers=conv9_9"], "unknown layer 'conv9_9'"),
        (["layers=conv1_1", "units=[64]"], "unit 64 is out of range"),
        (["layers=fc8", "units=[not_a_class_xyz]"], "not found"),
        (["steps=0"], "steps=0 must be an integer >= 1"),
        (["image_size=-3"], "image_size=-3 must be an integer >= 8"),
        (["batch_size=0"], "batch_size=0"),
        (["+priors.sharpen=1"], "unknown prior 'sharpen'"),
        (["init.kind=image", "init.path=/nonexistent/picture.png"], "image file not found"),
        (["model.weights=null", "model.weights_file=/nonexistent/w.pth"], "weights file not found"),
        (["model.arch=vgg99"], "unknown model 'vgg99'"),
        (["layers=conv1_1", "position=[500,1]", "unit=neuron"], "outside conv1_1"),
        (["grad_norm=l7"], "unknown grad_norm"),
        (["param=fft", "octaves.n=3"], "octaves need param=pixel"),
        (["model.arch=alexnet", "image_size=40"], "cannot be computed for a 40 x 40 image"),
    ],
)
def test_bad_input_is_one_clear_error(compose, tmp_path, overrides, message):
    cfg = compose(["model=vgg16", *SMALL, *overrides])
    with pytest.raises(DgnamError, match=message) as err:
        visualize.run(cfg, tmp_path)
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing written


def test_unknown_layer_lists_valid_names(compose, tmp_path):
    with pytest.raises(DgnamError) as err:
        visualize.run(compose(["model=alexnet", *SMALL, "layers=conv6"]), tmp_path)
    for name in ("conv1", "conv5", "pool5", "fc6", "fc8"):
        assert name in str(err.value)


def test_unreadable_init_image(compose, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    out = tmp_path / "out"
    with pytest.raises(DgnamError, match="cannot read image"):
        visualize.run(compose(["model=alexnet", *SMALL, "init.kind=image", f"init.path={bad}"]), out)
    assert not out.exists()


def test_weights_for_another_architecture(tmp_path):
    path = tmp_path / "alexnet.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(DgnamError, match="does not fit vgg16"):
        build_target("vgg16", weights_file=str(path))


def test_offline_download_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def refuse(url, dst, **kw):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    with pytest.raises(DgnamError) as err:
        build_target("alexnet", weights="IMAGENET1K_V1")
    msg = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in msg and "model.weights_file=" in msg and "\n" not in msg
    with pytest.raises(DgnamError, match="unknown weights 'IMAGENET9K'"):
        build_target("alexnet", weights="IMAGENET9K")


def test_local_weights_file_loads(tmp_path):
    import torchvision

    path = tmp_path / "alexnet.pth"
    torch.manual_seed(0)
    ref = torchvision.models.alexnet()
    torch.save(ref.state_dict(), path)
    target = build_target("alexnet", weights_file=str(path), mean=(0.5,) * 3, std=(0.5,) * 3)
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(target(x, ["logits"])["logits"], ref.eval()((x - 0.5) / 0.5), atol=1e-5)


@needs_shared(MOBILENET)
def test_shared_mobilenet_class_visualization_fools_the_target(compose, tmp_path):
    cfg = compose(["model=mobilenet_v2_shared", "layers=logits", "units=[goldfish,pizza]", "steps=40",
                   "image_size=128", "priors.jitter=4", "output.progress=false"])
    rows = visualize.run(cfg, tmp_path)["results"]
    assert all(r["probability"] > 0.9 and r["top1"] == r["unit"] for r in rows)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "visualize.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    for args, needle in [(["model=vgg16", "model.arch=nonet"], "unknown model 'nonet'"),
                         (["priors.sharpen=2"], "unknown prior 'sharpen'")]:
        proc = _cli(*args, "hydra.run.dir=out", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert lines[-1].startswith("error: ") and needle in lines[-1], proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", options("method"))
def test_every_method_runs_shrunk(compose, name, tmp_path):
    cfg = compose([f"method={name}"])
    if cfg.param._target_.endswith("GeneratorParam") and not Path(str(cfg.param.prior)).is_file():
        pytest.skip(f"generator prior {cfg.param.prior} not found (train_generator.py writes it)")
    over = [f"method={name}", "model=alexnet", *SMALL, "layers=fc8", "units=[1,2]"]
    if cfg.init.kind == "facets":  # starts from the photos that excite the unit most: a few synthetic ones
        from atlas_fixtures import photos

        over += [f"init.path={photos(tmp_path / 'photos', 6)}", "init.layer=fc7", "init.top=4",
                 f"init.cache={tmp_path / 'cache'}"]
    rows = visualize.run(compose(over), tmp_path / "run")["results"]
    assert [r["method"] for r in rows] == [cfg.method_name] * 2
    assert all((tmp_path / "run" / r["image"]).is_file() for r in rows)


def test_atomic_write_gives_usual_permissions(tmp_path):
    import os

    from dgnam.io import atomic_write

    umask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a" / "x.txt", lambda tmp: Path(tmp).write_text("hi"))
    finally:
        os.umask(umask)
    assert path.read_text() == "hi" and (path.stat().st_mode & 0o777) == 0o644
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "y.txt", lambda tmp: (_ for _ in ()).throw(RuntimeError("boom")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # nothing half-written left


def test_dgnam_results_score_the_image_the_target_saw(compose, tmp_path):
    """G makes small images that the target sees resized (input_resize): results.json must hold the
    target's activation on the resized image, not on G's raw output."""
    from torch import nn

    from dgnam.config import build_target_from_cfg
    from dgnam.core.params import GeneratorParam
    from dgnam.core.transforms import Resize
    from dgnam.views.am import run_am

    class Gen32(nn.Module):  # code (B, 8) -> (B, 3, 32, 32)
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(8, 3 * 8 * 8)

        def forward(self, h):
            return torch.sigmoid(nn.functional.interpolate(self.fc(h).view(-1, 3, 8, 8), size=32))

    gen = Gen32().requires_grad_(False)

    def factory(init, noise, generator):
        return GeneratorParam(init, noise=noise, generator=generator, gen=gen,
                              code_mean=torch.full((8,), 0.5), code_std=torch.full((8,), 0.2))

    import torchvision

    weights = tmp_path / "mnv2.pth"  # fixed random weights, so that the target can be rebuilt
    torch.save(torchvision.models.mobilenet_v2().state_dict(), weights)
    cfg = compose(["method=dgnam", "model=torchvision", "model.arch=mobilenet_v2", f"model.weights_file={weights}",
                   *SMALL, "layers=logits", "units=[1,2]", "input_resize=96"])
    out = run_am(cfg, tmp_path / "run", param_factory=factory)
    images = out["images"]["logits"]
    assert images.shape == (2, 3, 32, 32)  # G's own output is what is saved
    target = build_target_from_cfg(cfg, torch.device("cpu"))
    with torch.no_grad():
        seen = target(Resize(96)(images), ["logits"])["logits"]
        raw = target(images, ["logits"])["logits"]
    for i, row in enumerate(out["results"]):
        assert row["activation"] == pytest.approx(float(seen[i, row["unit"]]), rel=1e-4, abs=0)
        assert row["activation"] != pytest.approx(float(raw[i, row["unit"]]), rel=1e-2, abs=0)
