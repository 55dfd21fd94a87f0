"""The decoder's grid as a training term: the grid loss on known images (zero for a photo's own grid,
positive for an 8-px grid, and its gradient removes the grid), and the latent prior's ``grid`` term in
a real (tiny) training run."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from test_spatial import SPATIAL_TRAIN

from dgnam.errors import DgnamError
from dgnam.eval.stats import grid_ratio
from dgnam.generator.losses import grid_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def photo_like(n: int = 2, side: int = 64, seed: int = 0) -> torch.Tensor:
    """Images with a photo's 1/f amplitude spectrum and random phases, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    f = torch.fft.fftfreq(side).abs()
    amp = 1 / (f.view(-1, 1) ** 2 + f.view(1, -1) ** 2).sqrt().clamp_min(1 / side)
    spec = amp * torch.exp(2j * math.pi * torch.rand(n, 3, side, side, generator=g))
    x = torch.fft.ifft2(spec).real
    x = (x - x.amin((2, 3), keepdim=True)) / (x.amax((2, 3), keepdim=True) - x.amin((2, 3), keepdim=True))
    return 0.2 + 0.6 * x


def with_grid(x: torch.Tensor, contrast: float = 0.08) -> torch.Tensor:
    """An 8-px grid of dark lines (every 8th row and column) over ``x``."""
    g = torch.zeros(x.shape[-2:])
    g[::8, :] = 1
    g[:, ::8] = 1
    return (x - contrast * g).clamp(0, 1)


def test_the_grid_loss_is_zero_for_a_photo_and_its_gradient_removes_a_grid():
    photo = photo_like()
    assert grid_loss(photo, photo) == 0  # no more grid than the photo: nothing to pay
    gridded = with_grid(photo)
    assert (grid_ratio(gridded) > 1.5).all() and (grid_ratio(photo) < 1.1).all()
    assert grid_loss(gridded, photo) > 0.3
    img = gridded.clone().requires_grad_(True)
    opt = torch.optim.Adam([img], lr=2e-3)
    for _ in range(150):
        opt.zero_grad()
        grid_loss(img, photo).backward()
        opt.step()
    after = grid_ratio(img.detach())
    assert (after < grid_ratio(photo) + 0.1).all(), after  # the grid is gone ...
    assert (img.detach() - gridded).abs().mean() < 0.05  # ... by small changes to the image
    # without photos, the reference is a ratio of 1
    assert grid_loss(gridded) == pytest.approx(torch.log(grid_ratio(gridded)).mean().item(), rel=1e-3)


def test_the_grid_term_weighs_each_of_its_periods():
    from types import SimpleNamespace

    from dgnam.generator.latent_module import LatentGeneratorModule

    photo = photo_like()
    g = torch.zeros(64, 64)
    g[::4, :] = 1
    g[:, ::4] = 1
    hatch = (photo - 0.05 * g).clamp(0, 1)  # a 4-px cross-hatch: half its lines fall on the 8-px grid's lines
    term = {tuple(p): LatentGeneratorModule._grid(SimpleNamespace(grid_periods=p), hatch, photo).item()
            for p in ([8], [4], [8, 4])}
    assert term[(8, 4)] == pytest.approx((term[(8,)] + term[(4,)]) / 2, rel=1e-5)
    assert term[(4,)] > 1.3 * term[(8,)] > 0  # the 4-px period sees the hatch best
    assert LatentGeneratorModule._grid(SimpleNamespace(grid_periods=[8, 4]), photo, photo).item() == 0


def test_the_grid_term_trains_a_latent_prior(compose, tmp_path):
    from dgnam.generator.train import run

    over = [*SPATIAL_TRAIN, "+loss.weights.grid=10.0", "loss.grid_codes=2", "loss.grid_noise=1.0", "loss.feature_every=1",
            "trainer.max_steps=3"]
    first = run(compose(over, name="train_generator"), out_dir=tmp_path / "run")
    rows = list(csv.DictReader(open(tmp_path / "run" / "csv" / "metrics.csv")))
    vals = [float(r["train/grid"]) for r in rows if r.get("train/grid")]
    assert len(vals) == len(rows) >= 2 and all(math.isfinite(v) and v >= 0 for v in vals)
    assert any(v > 0 for v in vals)  # a random decoder's images carry some grid: the term is live
    four = run(compose([*over, "loss.grid_periods=[8,4]", "trainer.max_steps=1"], name="train_generator"),
               out_dir=tmp_path / "four")
    assert four["prior"] and tmp_path.joinpath("four", "csv", "metrics.csv").is_file()
    first4 = [float(r["train/grid"]) for r in csv.DictReader(open(tmp_path / "four" / "csv" / "metrics.csv"))
              if r.get("train/grid")]
    assert first4 and first4[0] != pytest.approx(vals[0])  # the same first step, another term
    with pytest.raises(DgnamError, match=r"loss.grid_periods\[0\]=1 must be an integer >= 2"):
        run(compose([*over, "loss.grid_periods=[1]"], name="train_generator"), out_dir=tmp_path / "bad")
    with pytest.raises(DgnamError, match=r"loss.grid_periods=\[\] names no period") as e:
        run(compose([*over, "loss.grid_periods=[]"], name="train_generator"), out_dir=tmp_path / "bad")
    assert "\n" not in str(e.value)
    with pytest.raises(DgnamError, match=r"loss.grid_codes=-1 must be an integer >= 0"):
        run(compose([*over, "loss.grid_codes=-1"], name="train_generator"), out_dir=tmp_path / "bad")
    assert not (tmp_path / "bad" / "prior.pt").exists()
    # a fine-tune of the same encoder takes its parent's code statistics instead of encoding the photos again
    from dgnam.generator.prior import STAT_KEYS, load_prior

    tune = run(compose([*over, f"generator.init_from={first['prior']}", "code_stats.from_init=true",
                        "code_stats.max_images=4", "trainer.max_steps=1"], name="train_generator"), out_dir=tmp_path / "tune")
    (_, parent), (_, child) = load_prior(first["prior"]), load_prior(tune["prior"])
    assert all(torch.equal(parent[k], child[k]) for k in STAT_KEYS)
