"""init.kind=facets: each of a unit's samples starts from another of the photos that excite the unit
most, chosen by the target to differ (multifaceted activation maximization)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from atlas_fixtures import photos
from conftest import REPO
from PIL import Image

from dgnam.errors import DgnamError
from dgnam.views import facets as F

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_choose_takes_the_strongest_then_the_farthest_of_the_top():
    act = torch.tensor([1.0, 9.0, 8.0, 7.0, 0.5, 6.0])
    e = torch.eye(3)
    feat = torch.stack([-e[0], e[0], e[0] + 0.1 * e[1], e[1], e[2], e[0] + 0.5 * e[1]])
    assert F.choose(act, feat, 1, 4) == [1]  # the most activating photo
    assert F.choose(act, feat, 2, 4) == [1, 3]  # then the farthest of the top 4 (3, orthogonal to 1)
    assert F.choose(act, feat, 3, 4) == [1, 3, 5]  # 5 is farther than 2 from the nearest chosen (1 or 3)
    # photo 0 is opposite to 1 but outside the top 4 (too weak): chosen only when the top takes it in
    assert F.choose(act, feat, 2, 6) == [1, 0]
    assert F.choose(act, feat, 2, 6, keep=0.5) == [1, 3]  # keep: 0 (1 < 0.5 x 9) is too weak again
    assert F.choose(act, feat, 3, 6, keep=0.95) == [1, 2, 3]  # fewer than 3 pass: the 3 strongest


def _cfg(compose, folder, *extra):
    return compose(["model=custom", "model._target_=nets.cifar_net", "method=pixel", "layers=logits", "units=[1,3]",
                    "steps=1", "optimizer.lr=1e-6", "image_size=32", "samples=2", "batch_size=2", "init.kind=facets",
                    f"init.path={folder}", "init.top=4", "init.keep=0", "init.layer=body.4", "output.progress=false",
                    "priors.jitter=0", "priors.blur_every=0", "priors.decay=0", *extra])


@pytest.mark.parametrize("batch", [2, 1])  # one batch of both units, or a batch per unit
def test_each_sample_starts_from_its_own_facet(compose, tmp_path, batch):
    folder = photos(tmp_path / "photos", 12)
    cfg = _cfg(compose, folder, f"init.cache={tmp_path / 'cache'}", f"batch_size={batch}")
    rows = visualize.run(cfg, tmp_path / "run")["results"]
    from dgnam.config import build_target_from_cfg

    net = build_target_from_cfg(cfg, torch.device("cpu"))
    files = sorted(folder.glob("*.png"))
    x = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1).float() / 255 for p in files])
    with torch.no_grad():
        acts = net(x, ["logits", "body.4"])
    feat = torch.nn.functional.normalize(acts["body.4"].float().mean((2, 3)), dim=1)
    for u in (1, 3):
        logit = acts["logits"][:, u].float()
        top = torch.argsort(logit, descending=True)[:4].tolist()
        best = top[0]
        far = min(top[1:], key=lambda j: float(feat[j] @ feat[best]))  # the least similar of the other three
        assert u == 3 or far != top[1]  # (unit 1: the farthest is not the second strongest)
        mine = sorted((r for r in rows if r["unit"] == u), key=lambda r: r["sample"])
        assert [r["facet_photo"] for r in mine] == [best, far]
        for r, j in zip(mine, (best, far)):
            assert r["facet_activation"] == pytest.approx(float(logit[j]), rel=1e-3, abs=1e-3)
            png = np.asarray(Image.open(tmp_path / "run" / r["image"])).astype(float)
            assert np.abs(png - np.asarray(Image.open(files[j])).astype(float)).max() <= 2  # started from photo j
    assert len(list((tmp_path / "cache").glob("scan-*.pt"))) == 1
    strong = visualize.run(_cfg(compose, folder, f"init.cache={tmp_path / 'cache'}", "init.keep=1"), tmp_path / "k1")
    two = torch.argsort(acts["logits"][:, 1].float(), descending=True)[:2].tolist()  # unit 1's best logit is > 0
    assert [r["facet_photo"] for r in strong["results"] if r["unit"] == 1] == two  # keep=1: the two strongest


def test_the_scan_is_cached_and_a_broken_cache_is_scanned_again(compose, tmp_path, monkeypatch):
    folder = photos(tmp_path / "photos", 12)
    cfg = _cfg(compose, folder, f"init.cache={tmp_path / 'cache'}")
    calls = []
    real = F._photo
    monkeypatch.setattr(F, "_photo", lambda ds, i, size: calls.append(i) or real(ds, i, size))
    first = visualize.run(cfg, tmp_path / "a")["results"]
    assert len(calls) == 12 + 4  # every photo scanned, then the 2 x 2 starts loaded
    calls.clear()
    again = visualize.run(cfg, tmp_path / "b")["results"]
    assert len(calls) == 4  # the scan came from the cache
    assert [r["facet_photo"] for r in again] == [r["facet_photo"] for r in first]
    scan = next((tmp_path / "cache").glob("scan-*.pt"))
    scan.write_bytes(b"not a scan")
    calls.clear()
    third = visualize.run(cfg, tmp_path / "c")["results"]
    assert len(calls) == 12 + 4 and [r["facet_photo"] for r in third] == [r["facet_photo"] for r in first]
    assert torch.load(scan, weights_only=True)["act"].shape == (12, 10)  # replaced by a whole scan: every logit
    calls.clear()  # other logits of the layer: the same scan
    other = visualize.run(_cfg(compose, folder, f"init.cache={tmp_path / 'cache'}", "units=[0,7]"), tmp_path / "d")
    assert len(calls) == 4 and len(list((tmp_path / "cache").glob("scan-*.pt"))) == 1
    assert {r["unit"] for r in other["results"]} == {0, 7}
    # neurons: a scan of their own, a column per unit
    cfg = _cfg(compose, folder, f"init.cache={tmp_path / 'cache'}", "layers=body.4", "unit=neuron")
    neurons = visualize.run(cfg, tmp_path / "e")["results"]
    from dgnam.config import build_target_from_cfg

    x = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1).float() / 255
                     for p in sorted(folder.glob("*.png"))])
    with torch.no_grad():
        body = build_target_from_cfg(cfg, torch.device("cpu"))(x, ["body.4"])["body.4"].float()
    for r in neurons:  # each neuron's start: a photo among its strongest, its value at the neuron's position
        value = body[r["facet_photo"], r["unit"], 8, 8]  # x = y = None: the centre of the 16 x 16 map
        assert r["facet_activation"] == pytest.approx(float(value), rel=1e-2, abs=1e-2)
        assert int((body[:, r["unit"], 8, 8] > value).sum()) < 4  # among the top 4
    assert sorted(torch.load(p, weights_only=True)["act"].shape[1] for p in (tmp_path / "cache").glob("scan-*.pt")) == [2, 10]


@pytest.mark.parametrize("extra, message", [
    (["init.top=1"], r"init.top=1 must be an integer >= samples=2"),
    (["init.limit=3"], r"init.limit=3 must be null or an integer >= init.top=4"),
    (["init.keep=1.5"], r"init.keep=1.5 must be"),
    (["init.layer=null"], r"init.kind=facets needs init.layer=<a layer of the target>"),
    (["init.layer=body.44"], r"unknown layer 'body.44'"),
    (["chain_steps=3"], r"init.kind=facets starts every sample from its own photo: it cannot take chain_steps=3"),
])
def test_bad_facet_settings_are_one_line_and_write_nothing(compose, tmp_path, extra, message):
    folder = photos(tmp_path / "photos", 12)
    with pytest.raises(DgnamError, match=message) as e:
        visualize.run(_cfg(compose, folder, f"init.cache={tmp_path / 'cache'}", *extra), tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_facets_outside_activation_maximization_is_one_line(compose, tmp_path):
    folder = photos(tmp_path / "photos", 12)
    cfg = compose(["experiment=inversion", "model=custom", "model._target_=nets.cifar_net", "layers=[body.1]",
                   "steps=2", "image_size=32", "batch_size=2", "init.kind=facets", f"init.path={folder}",
                   "output.progress=false"])
    with pytest.raises(DgnamError, match=r"init.kind=facets: only mode=am takes it; valid here: noise") as e:
        visualize.run(cfg, tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()

