"""Activation maps: the maps are the target's activations, drawn per filter; the mode end to end;
photos in any colour mode; bad input."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import MOBILENET, REPO, needs_shared, run_script
from PIL import Image

from dgnam.errors import DgnamError
from dgnam.io import source_image
from dgnam.views.actmaps import activation_maps, colorize
from dgnam.views.common import layer_list, main_layers

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["model=alexnet", "model.weights=null", "image_size=64", "output.progress=false"]


def test_maps_are_the_layer_activations(tiny_target):
    image = source_image(None, 32)
    maps = activation_maps(tiny_target, image, ["conv1", "pool2"])
    assert maps["conv1"].shape == (8, 32, 32) and maps["pool2"].shape == (16, 8, 8)
    ref = tiny_target(image[None], ["conv1"])["conv1"][0]
    assert torch.allclose(maps["conv1"], ref)


def test_colorize_scales(tiny_target):
    maps = torch.stack([torch.linspace(0, 1, 16).view(4, 4), 10 + torch.linspace(0, 1, 16).view(4, 4),
                        torch.full((4, 4), 3.0)])
    per_map = colorize(maps, "per_map", "gray", tile=8)
    assert per_map.shape == (3, 3, 8, 8)
    assert torch.allclose(per_map[0], per_map[1], atol=1e-6)  # each map spans the full range
    assert float(per_map[2].max()) == pytest.approx(0.0, abs=1e-6)  # a constant map: bottom colour
    layer = colorize(maps, "layer", "gray", tile=8)
    assert float(layer[0].max()) < 0.2 and float(layer[1].min()) > 0.9  # one scale for all maps


def test_astronaut_is_the_default_photo():
    img = source_image(None, 64)
    assert img.shape == (3, 64, 64) and 0 <= float(img.min()) and float(img.max()) <= 1
    assert float(img.std()) > 0.1
    assert torch.equal(img, source_image("astronaut", 64))


def test_layers_all(tiny_target):
    assert main_layers(tiny_target) == ["conv1", "conv2", "pool2", "fc1", "fc2"]
    assert layer_list(tiny_target, ["pool2", "conv1"]) == ["conv1", "pool2"]  # depth order
    with pytest.raises(DgnamError, match="unknown layer 'conv7'"):
        layer_list(tiny_target, ["conv7"])


def test_activation_maps_mode_end_to_end(compose, tmp_path):
    cfg = compose(["experiment=activation_maps", *SMALL, "layers=[conv2,conv1]"])
    res = visualize.run(cfg, tmp_path)
    rows = json.loads((tmp_path / "results.json").read_text())
    assert len(rows) == 64 + 192 and rows == res["results"]
    assert {r["layer"] for r in rows} == {"conv1", "conv2"}
    assert res["maps"]["conv1"].shape == (64, 15, 15)
    fig = Image.open(tmp_path / "actmaps_conv1.png")
    assert fig.size[0] > 64 + 16 * 56 and fig.size[1] >= 4 * 56  # photo beside a 16-column grid
    saved = torch.load(tmp_path / "maps_conv2.pt", weights_only=True)
    assert saved["maps"].shape == (192, 7, 7) and saved["filters"][:3] == [0, 1, 2]
    assert (tmp_path / "input.png").is_file() and (tmp_path / "results.csv").is_file()


def test_a_chosen_subset_of_filters(compose, tmp_path):
    cfg = compose(["experiment=activation_maps", *SMALL, "layers=conv3", "units=first:5", "maps.scale=layer"])
    rows = visualize.run(cfg, tmp_path)["results"]
    assert [r["filter"] for r in rows] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK"])
def test_grayscale_and_rgba_photos_load_as_rgb(tmp_path, mode):
    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 255, (40, 50, 4), dtype=np.uint8), "RGBA").convert(mode)
    path = tmp_path / f"photo.{'jpg' if mode == 'CMYK' else 'png'}"
    pil.save(path)
    img = source_image(str(path), 32)
    assert img.shape == (3, 32, 32) and 0 <= float(img.min()) and float(img.max()) <= 1
    if mode in ("L", "LA"):
        assert torch.allclose(img[0], img[1]) and torch.allclose(img[1], img[2])


def test_an_rgba_photo_end_to_end(compose, tmp_path):
    arr = np.zeros((40, 50, 4), dtype=np.uint8)
    arr[..., 0], arr[..., 3] = 200, 128  # half-transparent red on white
    path = tmp_path / "photo.png"
    Image.fromarray(arr, "RGBA").save(path)
    out = tmp_path / "out"
    res = visualize.run(compose(["experiment=activation_maps", *SMALL, "layers=conv1", f"image={path}"]), out)
    assert len(res["results"]) == 64 and (out / "actmaps_conv1.png").is_file()
    photo = np.asarray(Image.open(out / "input.png"))
    assert abs(int(photo[10, 10, 0]) - 228) <= 2 and abs(int(photo[10, 10, 1]) - 127) <= 2


@pytest.mark.parametrize("overrides, message", [
    (["image=/nonexistent/photo.png"], "image file not found"),
    (["layers=conv9"], "unknown layer 'conv9'"),
    (["layers=fc7"], "need a conv or pool layer"),
    (["units=[64]", "layers=conv1"], "unit 64 is out of range"),
    (["maps.scale=global"], "unknown maps.scale 'global'"),
    (["maps.cmap=rainbowz"], "unknown maps.cmap 'rainbowz'"),
])
def test_bad_input_is_one_clear_error(compose, tmp_path, overrides, message):
    with pytest.raises(DgnamError, match=message) as err:
        visualize.run(compose(["experiment=activation_maps", *SMALL, *overrides]), tmp_path)
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())


def test_corrupt_photo(compose, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    with pytest.raises(DgnamError, match="cannot read image"):
        visualize.run(compose(["experiment=activation_maps", *SMALL, f"image={bad}"]), out)
    assert not out.exists()


@needs_shared(MOBILENET)
def test_trained_mobilenet_first_layer_maps_follow_the_photo(compose, tmp_path):
    """Trained first-layer filters are edge and colour detectors: their maps correlate with the
    photo's structure far more than a random network's would be expected to by chance."""
    cfg = compose(["experiment=activation_maps", "model=mobilenet_v2_shared", "layers=features.0",
                   "image_size=96", "output.progress=false"])
    res = visualize.run(cfg, tmp_path)
    maps = res["maps"]["features.0"]  # (32, 48, 48)
    assert maps.shape == (32, 48, 48)
    gray = torch.nn.functional.avg_pool2d(source_image(None, 96).mean(0, keepdim=True)[None], 2)[0, 0]
    corr = [abs(float(torch.corrcoef(torch.stack([m.flatten(), gray.flatten()]))[0, 1])) for m in maps]
    assert max(corr) > 0.5


def test_cli_error_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = run_script(monkeypatch, "visualize.py", "experiment=activation_maps", "model=alexnet",
                      "model.weights=null", "image=/nonexistent/photo.png", "hydra.run.dir=out")
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1] == "error: image file not found: /nonexistent/photo.png", err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
