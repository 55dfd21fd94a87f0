"""MACO: only the phase is optimized and the amplitude spectrum stays the natural one; the spectrum
file that ships, the command that builds one (from the shared photos or a folder), and bad spectra."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from conftest import DATA, needs_shared
from PIL import Image

from dgnam.core import objectives as O
from dgnam.core.loop import optimize
from dgnam.core.params import MacoParam
from dgnam.core.params.maco import decorrelate, load_spectrum, resize_spectrum
from dgnam.errors import DgnamError
from dgnam.paths import PRIORS_DIR
from dgnam.spectrum import DEFAULT_OUT, build_spectrum, main

pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED = PRIORS_DIR / "maco_spectrum.pt"


def _amplitude(images: torch.Tensor) -> torch.Tensor:
    """The amplitude spectrum of what MacoParam standardized (undo its sigmoid and colour mixing)."""
    return torch.fft.rfft2(decorrelate(torch.logit(images.double().clamp(1e-9, 1 - 1e-9)).float())).abs()


def test_only_the_phase_moves_and_the_spectrum_stays_natural(tiny_target):
    param = MacoParam(torch.zeros(2, 3, 32, 32), noise=True, generator=torch.Generator().manual_seed(0),
                      spectrum=str(SHIPPED))
    assert [n for n, p in param.named_parameters() if p.requires_grad] == ["phase"]
    before = param().detach()
    assert before.shape == (2, 3, 32, 32) and 0 < before.min() and before.max() < 1
    assert torch.equal(before[0], before[1])  # one draw for every item
    res = optimize(param, tiny_target, O.channel("conv2", [3, 5]), steps=30,
                   optimizer=functools.partial(torch.optim.Adam, lr=0.05))
    assert (res.history[-1] > res.history[0]).all()
    assert not torch.allclose(res.images, before, atol=1e-2)
    mag = param.magnitude
    for img in (before, res.images):
        ratio = (_amplitude(img) / mag)[..., 1:, 1:]  # the mean removal changes the constant term only
        spread = ratio.flatten(1).std(1) / ratio.flatten(1).mean(1)
        assert (spread < 0.05).all(), spread


def test_the_shipped_spectrum_falls_with_frequency():
    data = torch.load(SHIPPED, weights_only=True)
    assert data["size"] == 128 and data["images"] == 3000 and DEFAULT_OUT == SHIPPED
    mag = load_spectrum(str(SHIPPED))
    assert mag.shape == (3, 128, 65)
    low, high = mag[:, 1:4, 1:4].mean(), mag[:, 60:68, 55:65].mean()
    assert low > 20 * high  # natural images: about 1 / f
    assert mag[0, 1:, 1:].mean() > 2 * mag[1:, 1:, 1:].mean()  # most energy in the luminance channel
    assert torch.allclose(resize_spectrum(mag, (128, 128)), mag, atol=1e-5)
    assert resize_spectrum(mag, (224, 224)).shape == (3, 224, 113)


def test_the_command_builds_a_spectrum_from_a_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.jpg").write_text("not an image")  # skipped, not fatal
    out = tmp_path / "spec.pt"
    main(["--data", str(folder), "--out", str(out), "--size", "16"])
    data = torch.load(out, weights_only=True)
    assert data["images"] == 3 and data["magnitude"].shape == (3, 16, 9)
    param = MacoParam(torch.zeros(1, 3, 24, 24), noise=True, spectrum=str(out))
    assert param().shape == (1, 3, 24, 24)


@needs_shared(DATA)
def test_a_spectrum_of_a_few_shared_photos_is_close_to_the_shipped_one():
    few = build_spectrum(str(DATA / "valid-*.parquet"), size=128, limit=100)["magnitude"]
    shipped = load_spectrum(str(SHIPPED))
    rel = (few - shipped).abs().mean() / shipped.mean()
    assert rel < 0.15, rel


@pytest.mark.parametrize("content, message", [
    ({"magnitude": torch.ones(3, 16, 16)}, "the spectrum has shape (3, 16, 16); it must be (3, S, S // 2 + 1)"),
    ({"magnitude": torch.ones(16, 9)}, "the spectrum has shape (16, 9)"),
    ({"magnitude": -torch.ones(3, 16, 9)}, "negative or non-finite"),
    ({"spectrum": torch.ones(3, 16, 9)}, "has no 'magnitude' entry"),
    (None, "MACO spectrum file not found"),
])
def test_a_bad_spectrum_file_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "spec.pt"
    if content is not None:
        torch.save(content, path)
    with pytest.raises(DgnamError) as err:
        MacoParam(torch.zeros(1, 3, 16, 16), noise=True, spectrum=str(path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_bad_spectrum_fails_the_run_before_anything_is_written(compose, tmp_path):
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO))
    import visualize

    spec = tmp_path / "spec.pt"
    torch.save({"magnitude": torch.ones(3, 8, 8)}, spec)
    cfg = compose(["method=maco", "model=alexnet", "model.weights=null", "image_size=64", "steps=1",
                   "layers=fc8", "units=[1]", f"param.spectrum={spec}", "output.progress=false"])
    out = tmp_path / "out"
    with pytest.raises(DgnamError, match=r"the spectrum has shape \(3, 8, 8\)"):
        visualize.run(cfg, out)
    assert not out.exists()
