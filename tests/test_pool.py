"""pool.size=M: a unit's M samples run, K (samples) kept, chosen by the target alone: those near the best
activation, farthest apart at a layer. The kept images are the M-sample run's own, byte for byte."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

from dgnam.errors import DgnamError
from dgnam.views.sampling import select_pool

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_select_pool_keeps_strong_samples_far_apart():
    act = torch.tensor([10.0, 9.5, 2.0, 9.0, 8.0, 9.8])
    e = torch.eye(4)
    feats = torch.stack([e[0], e[0] + 0.1 * e[1], e[2], e[0] + 0.2 * e[1], e[3], e[0]])
    # sample 2 is the most different but too weak (2 < 0.7 x 10); 4 is strong and orthogonal to the best (0)
    assert select_pool(act, feats, 2, 0.7) == [0, 4]
    # third: of 1, 3, 5 (all near 0), 3 is farthest from 0; 5 is 0's twin
    assert select_pool(act, feats, 3, 0.7) == [0, 3, 4]
    assert select_pool(act, feats, 3, 0.0) == [0, 2, 4]  # keep 0: every sample is a candidate
    assert select_pool(act, feats, 3, 1.0) == [0, 1, 5]  # only the best passes: the k strongest
    # farthest from the nearest kept one, not from the best: 2 is far from 0 but 1's twin, 3 is far from 1
    two = torch.stack([e[0], e[1], e[1] + 0.05 * e[0], e[0] + e[2]])
    assert select_pool(torch.tensor([4.0, 3.0, 3.0, 3.0]), two, 3, 0.5) == [0, 1, 3]
    # best <= 0: every sample is a candidate, the best (2) first, then (all others equally far) the first
    assert select_pool(-act, feats, 2, 0.7) == [0, 2]


def _cfg(compose, *extra):
    return compose(["model=custom", "model._target_=nets.cifar_net", "method=pixel", "image_size=32", "layers=logits",
                    "units=[0,3]", "steps=6", "batch_size=2", "output.progress=false", *extra])


def _run(compose, out, *extra):
    return visualize.run(_cfg(compose, *extra), out)["results"]


@pytest.mark.parametrize("side_by_side", [False, True])
def test_a_pool_keeps_k_of_the_m_sample_runs_images(compose, tmp_path, side_by_side):
    div = ["diversity.weight=5", "diversity.layer=body.4"] if side_by_side else []
    every = _run(compose, tmp_path / "m", "samples=4", *div)
    kept = _run(compose, tmp_path / "k", "samples=2", "pool.size=4", "pool.layer=body.4", "pool.keep=1", *div)
    assert len(kept) == 4 and {r["pool_size"] for r in kept} == {4}
    for u in (0, 3):
        mine = [r for r in every if r["unit"] == u]
        strongest = sorted(sorted(mine, key=lambda r: -r["activation"])[:2], key=lambda r: r["sample"])
        ks = [r for r in kept if r["unit"] == u]
        assert [r["sample"] for r in ks] == [r["sample"] for r in strongest]  # keep=1: the two strongest
        for a, b in zip(ks, strongest):
            assert a["image"] == b["image"] == f"logits/{u}_s{a['sample']}.png"
            assert np.array_equal(np.asarray(Image.open(tmp_path / "k" / a["image"])),
                                  np.asarray(Image.open(tmp_path / "m" / b["image"])))
            assert a["seconds"] == pytest.approx(2 * a["batch_seconds"] / a["batch_size"])  # a kept image's cost
    written = sorted(p.name for p in (tmp_path / "k" / "logits").glob("*.png"))
    assert written == sorted(r["image"].split("/")[1] for r in kept)  # the dropped samples are not written


def test_a_pool_chooses_by_distance_at_the_layer(compose, tmp_path):
    every = _run(compose, tmp_path / "m", "samples=4")
    kept = _run(compose, tmp_path / "k", "samples=2", "pool.size=4", "pool.layer=body.4", "pool.keep=0")
    from dgnam.config import build_target_from_cfg
    from dgnam.views.sampling import pool_features

    net = build_target_from_cfg(_cfg(compose), torch.device("cpu"))
    for u in (0, 3):
        mine = [r for r in every if r["unit"] == u]
        x = torch.stack([torch.from_numpy(np.asarray(Image.open(tmp_path / "m" / r["image"]))).permute(2, 0, 1)
                         .float() / 255 for r in mine])
        with torch.no_grad():
            f = torch.nn.functional.normalize(pool_features(net(x, ["body.4"])["body.4"]), dim=1)
        best = max(mine, key=lambda r: r["activation"])["sample"]
        far = min(range(4), key=lambda j: float(f[j] @ f[best]))  # the least similar to the best one
        assert [r["sample"] for r in kept if r["unit"] == u] == sorted({best, far})


@pytest.mark.parametrize("extra, message", [
    (["samples=2", "pool.size=2", "pool.layer=body.4"], r"pool.size=2 draws the samples .* larger than samples=2"),
    (["samples=2", "pool.size=0"], r"pool.size=0 must be an integer >= 1"),
    (["samples=2", "pool.size=4"], r"pool.size=4 chooses samples far apart at a layer: it needs pool.layer="),
    (["samples=2", "pool.size=4", "pool.layer=body.44"], r"unknown layer 'body.44'"),
    (["samples=2", "pool.size=4", "pool.layer=body.4", "pool.keep=1.5"], r"pool.keep=1.5 must be"),
])
def test_bad_pool_settings_are_one_line_and_write_nothing(compose, tmp_path, extra, message):
    with pytest.raises(DgnamError, match=message) as e:
        _run(compose, tmp_path / "out", *extra)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
