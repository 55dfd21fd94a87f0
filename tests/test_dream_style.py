"""DeepDream and style transfer: the dream objective rises, octave sizes and the detail carried up,
Gram matrices, the style loss falls while the content is kept, both modes from their real presets
(shrunk), the same seed gives the same bytes, and bad input is one clear line with nothing written."""

from __future__ import annotations

import functools
import json
import sys

import pytest
import torch
from conftest import REPO, run_script

from dgnam.config import octave_sizes
from dgnam.core import objectives as O
from dgnam.core.images import resize
from dgnam.core.loop import optimize
from dgnam.core.params import PixelParam
from dgnam.core.poststeps import Clamp
from dgnam.errors import DgnamError
from dgnam.io import source_image
from dgnam.views.dream import dream_objective
from dgnam.views.inversion import feature_errors
from dgnam.views.style import style_objective

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# A random MobileNetV2 (one fixed draw, in a weights file) has the shared model's layer names, so the
# real presets run as they are.
SHRUNK = ["model=torchvision", "model.arch=mobilenet_v2", "model.weights=null", "image_size=64", "steps=2",
          "output.progress=false"]


@pytest.fixture(scope="module")
def random_mobilenet(tmp_path_factory) -> list[str]:
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_random.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), path)
    return [*SHRUNK, f"model.weights_file={path}"]


def _sgd(lr: float):
    return functools.partial(torch.optim.SGD, lr=lr)


def test_the_dream_objective_rises(tiny_target):
    photo = source_image(None, 32)
    for weights in ({"conv2": 1.0}, {"conv1": 0.5, "pool2": 1.0}):
        objective, terms = dream_objective(weights)
        res = optimize(PixelParam(photo[None]), tiny_target, objective, steps=15, optimizer=_sgd(0.01),
                       grad_norm="l1", post_steps=[Clamp(-0.5, 0.5)], terms=terms)
        assert res.history[-1, 0] > 1.5 * res.history[0, 0]
        assert set(res.terms) == set(weights) and all(h[-1, 0] > h[0, 0] for h in res.terms.values())
    guide = tiny_target(source_image("skimage:coffee", 32)[None], ["conv2"])
    objective, _ = dream_objective({"conv2": 1.0}, guide=guide)
    res = optimize(PixelParam(photo[None]), tiny_target, objective, steps=15, optimizer=_sgd(0.01), grad_norm="l1")
    assert res.history[-1, 0] > res.history[0, 0] + 0.1 * res.history[0, 0].abs()


def test_guided_dream_is_the_best_dot_product_per_position():
    acts = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).reshape(1, 2, 1, 2)  # positions (1, 0) and (0, 2)
    guide = torch.tensor([[1.0, 1.0], [3.0, 0.0]]).T.reshape(1, 2, 1, 2)  # guide vectors (1, 1) and (3, 0)
    score = O.guided_dream("x", guide)({"x": acts})
    assert torch.allclose(score, torch.tensor([(3.0 + 2.0) / 2]))  # max(1, 3) and max(2, 0), averaged


def test_octave_sizes_and_the_detail_carried_up():
    assert octave_sizes(320, 4, 1.4) == [117, 163, 229, 320]
    assert octave_sizes(64, 1, 1.4) == [64]
    photo = source_image(None, 64)[None]
    param = PixelParam(resize(photo, 32, antialias=True))
    param.carry_detail(photo)
    param.resize((64, 64))  # no detail yet: the photo itself at the new size
    assert torch.allclose(param(), photo, atol=1e-6)
    with torch.no_grad():
        param.x.add_(0.1)  # detail everywhere
    param.resize((96, 96))
    assert torch.allclose(param() - resize(photo, 96, antialias=True), torch.full((1, 3, 96, 96), 0.1), atol=1e-4)


def test_gram_matrix_of_a_known_tensor():
    f = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, -1.0]]).reshape(1, 2, 2, 2)
    expect = torch.tensor([[30.0, -2.0], [-2.0, 2.0]]) / 4  # F F^T / (H W)
    assert torch.allclose(O.gram(f), expect[None])
    assert torch.allclose(O.style_match("x", f)({"x": f}), torch.zeros(1))
    assert torch.allclose(O.style_match("x", f)({"x": torch.zeros_like(f)}), torch.ones(1))


def test_the_style_loss_falls_and_the_content_is_kept(tiny_target):
    content, style = source_image(None, 32), source_image("skimage:brick", 32)
    errors = {}
    for cw in (100.0, 0.0):  # the style terms start near 100 here: the astronaut is far from a grey wall
        objective, terms = style_objective(tiny_target, style, content, {"conv1": 1.0, "conv2": 1.0}, "conv1", cw)
        res = optimize(PixelParam(content[None]), tiny_target, objective, steps=60,
                       optimizer=functools.partial(torch.optim.Adam, lr=0.03), post_steps=[Clamp(-0.5, 0.5)],
                       terms=terms)
        for name in ("style:conv1", "style:conv2"):
            assert res.terms[name][-1, 0] < 0.5 * res.terms[name][0, 0], name
        refs = {"conv1": tiny_target(content[None], ["conv1"])["conv1"]}
        errors[cw] = feature_errors(tiny_target, res.images, ["conv1"], refs)[0]
    assert errors[100.0] < 0.5 and errors[100.0] < 0.6 * errors[0.0]  # the early layer stays close to the photo's


@pytest.mark.parametrize("mode, extra, image", [
    ("deepdream", ["octaves.n=2", "deepdream.roll=4"], "dream.png"),
    ("deepdream", ["octaves.n=1", "deepdream.guide=skimage:coffee", "deepdream.reduce=mean"], "dream.png"),
    ("style", ["style.image_size=48"], "styled.png"),
    ("style", ["param=fft", "style.start=noise", "priors.tv=0.1"], "styled.png"),
])
def test_both_modes_compose_from_the_real_presets_and_run_shrunk(compose, random_mobilenet, tmp_path, mode, extra,
                                                               image):
    cfg = compose([f"experiment={mode}", *random_mobilenet, "output.gif=true", "output.frame_every=1", *extra])
    res = visualize.run(cfg, tmp_path)
    for name in (image, "original.png", "before_after.png", "optimization.gif", "results.csv", "steps.csv"):
        assert (tmp_path / name).is_file(), name
    rows = json.loads((tmp_path / "results.json").read_text())
    steps = json.loads((tmp_path / "steps.json").read_text())
    n_oct = int(cfg.octaves.n) if mode == "deepdream" else 1
    assert rows == res["results"] and len(steps) == 2 * n_oct
    terms = {r["term"] for r in rows}
    if mode == "deepdream":
        assert terms == {"features.13.add"} and [s["size"] for s in steps] == [46, 46, 64, 64][-2 * n_oct:]
    else:
        assert CONTENT_AND_STYLE <= terms and ("penalty" in terms) == ("priors.tv=0.1" in extra)
    assert all(set(s) >= terms for s in steps)


CONTENT_AND_STYLE = {"content", "style:features.0", "style:features.11.conv.0"}


@pytest.mark.parametrize("mode", ["deepdream", "style"])
def test_the_same_seed_gives_byte_identical_output(compose, random_mobilenet, tmp_path, mode):
    name = "dream.png" if mode == "deepdream" else "styled.png"
    over = [f"experiment={mode}", *random_mobilenet, "octaves.n=2", "deepdream.roll=4", "seed=3"]
    first = [visualize.run(compose(over), tmp_path / d) and (tmp_path / d / name).read_bytes() for d in "ab"]
    assert first[0] == first[1]
    visualize.run(compose([*over[:-1], "seed=4"]), tmp_path / "c")
    if mode == "deepdream":  # the roll draws from the seed
        assert (tmp_path / "c" / name).read_bytes() != first[0]


@pytest.mark.parametrize("mode, overrides, message", [
    ("deepdream", ["image=/nonexistent/photo.png"], "image: image file not found: /nonexistent/photo.png"),
    ("deepdream", ["deepdream.guide=/nonexistent/guide.png"], "deepdream.guide: image file not found"),
    ("deepdream", ["deepdream.guide=BAD"], "deepdream.guide: cannot read image"),
    ("style", ["style.image=/nonexistent/style.png"], "style.image: image file not found"),
    ("style", ["image=BAD"], "image: cannot read image"),
    ("style", ["style.image=skimage:mona_lisa"], "unknown scikit-image sample 'mona_lisa'; valid: astronaut"),
    ("deepdream", ["deepdream.layers={features.99:1.0}"], "unknown layer 'features.99' for mobilenet_v2"),
    ("style", ["style.layers={features.0:1.0,features.77.conv.0:1.0}"], "unknown layer 'features.77.conv.0'"),
    ("style", ["style.content_layer=feature.6.add"], "unknown layer 'feature.6.add'"),
    ("deepdream", ["deepdream.layers={features.3.add:-1.0}"],
     "deepdream.layers.features.3.add=-1.0 must be a number >= 0"),
    ("style", ["style.layers={features.0:1.0,features.4.conv.0:-0.5}"],
     "style.layers.features.4.conv.0=-0.5 must be a number >= 0"),
    ("style", ["style.content_weight=-1"], "style.content_weight=-1 must be a number >= 0"),
    ("deepdream", ["deepdream.layers={features.3.add:0.0}"], "every weight is 0"),
    ("deepdream", ["deepdream.reduce=max"], "unknown deepdream.reduce 'max'; valid: l2, mean"),
    ("style", ["style.start=grey"], "unknown style.start 'grey'; valid: content, noise"),
    ("style", ["style.content_layer=classifier.1"], "needs conv layers"),
    ("deepdream", ["param=fft", "octaves.n=2"], "octaves need param=pixel"),
    ("deepdream", ["param=maco", "octaves.n=1", "param.spectrum=BADSPEC"], "the spectrum has shape (3, 16, 16)"),
])
def test_bad_input_is_one_clear_line_and_nothing_is_written(compose, tmp_path, mode, overrides, message):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    spec = tmp_path / "spec.pt"
    torch.save({"magnitude": torch.ones(3, 16, 16)}, spec)
    overrides = [o.replace("BADSPEC", str(spec)).replace("BAD", str(bad)) for o in overrides]
    out = tmp_path / "out"
    with pytest.raises(DgnamError, match=None) as err:
        visualize.run(compose([f"experiment={mode}", *SHRUNK, *overrides]), out)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_cli_error_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = run_script(monkeypatch, "visualize.py", "experiment=style", *SHRUNK,
                      "style.image=/nonexistent/painting.jpg", "hydra.run.dir=out")
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("!", " "))]
    assert lines[-1] == "error: style.image: image file not found: /nonexistent/painting.jpg", err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
