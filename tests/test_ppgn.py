"""PPGN-h: the code DAE R (trains, lowers its denoising error, loads safely), the sampler's terms in
the loop (samples=K distinct images per unit; e1 = e3 = 0 is DGN-AM's path), bad input; the
diversity measure of the report."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image
from test_spatial import SPATIAL_TRAIN

from dgnam.core.poststeps import CodePrior
from dgnam.errors import DgnamError
from dgnam.eval.diversity import feature_space, pairwise_cosine_distance, penultimate
from dgnam.generator.dae import CodeDAE, load_dae, save_dae, train_dae
from dgnam.generator.prior import load_prior

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SHAPE = (8, 4, 4)


def structured_codes(n: int, seed: int = 0) -> torch.Tensor:
    """Codes (n, 8*4*4) that lie near a 3-d subspace (ReLU of a random map of 3 factors): a DAE can
    learn where they live, so it can remove noise that leaves that subspace."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(3, 8 * 4 * 4, generator=torch.Generator().manual_seed(99))
    return torch.relu(torch.randn(n, 3, generator=g) @ basis)


def test_the_dae_trains_on_synthetic_codes_and_lowers_its_denoising_error(tmp_path):
    codes, val = structured_codes(512), structured_codes(128, seed=1)
    mean, std = codes.mean(0), codes.std(0)
    res = train_dae(codes, val, SHAPE, mean, std, tmp_path / "r", steps=150, batch_size=32, lr=3e-3, width=32,
                    noise=0.5, progress=False)
    assert res["global_step"] == 150 and (tmp_path / "r" / "checkpoints" / "last.ckpt").is_file()
    # the identity's error is noise^2 = 0.25; R removes most of the noise that leaves the subspace
    assert res["val_denoise_identity"] == pytest.approx(0.25, rel=0.05)
    assert res["val_denoise"] < 0.5 * res["val_denoise_identity"], res
    dae = load_dae(res["dae"], code_dim=8 * 4 * 4)
    noisy = val + 0.5 * std * torch.randn(val.shape, generator=torch.Generator().manual_seed(3))
    assert (dae(noisy) - val).pow(2).mean() < 0.6 * (noisy - val).pow(2).mean()  # R(h) is nearer the real code
    # resumes from its checkpoint: the step count continues, the weights start from the checkpoint's
    again = train_dae(codes, val, SHAPE, mean, std, tmp_path / "r", steps=200, batch_size=32, lr=3e-3, width=32,
                      noise=0.5, progress=False, ckpt_path=res["last_ckpt"])
    assert again["global_step"] == 200 and again["val_denoise"] < 0.5 * again["val_denoise_identity"]


def test_a_dae_file_loads_weights_only_and_checks_its_code(tmp_path):
    dae = CodeDAE(SHAPE, torch.zeros(128), torch.ones(128), width=8)
    path = save_dae(dae, tmp_path / "r.pt")
    assert load_dae(path, 128).shape == SHAPE
    with pytest.raises(DgnamError, match=r"is for 8 x 4 x 4 codes \(128 units\), but the prior's code has 3072"):
        load_dae(path, 3072)
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["net.0.weight"] = torch.zeros(3, 3)
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(DgnamError, match="do not match its description"):
        load_dae(tmp_path / "bad.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(DgnamError, match="is not a code DAE"):
        load_dae(tmp_path / "other.pt")
    torch.save(CodeDAE, tmp_path / "pickle.pt")  # a class: only a full unpickler could load it
    with pytest.raises(DgnamError, match="cannot read code DAE"):
        load_dae(tmp_path / "pickle.pt")


def test_the_code_prior_step_pulls_towards_r_and_its_noise_is_per_item():
    class Half(torch.nn.Module):  # an R that halves every code
        def forward(self, h):
            return 0.5 * h

    class P(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.code = torch.nn.Parameter(torch.ones(2, 6))

    p = P()
    CodePrior(Half(), e1=0.2, e3=0.0)(p, 0)
    assert torch.allclose(p.code, torch.full((2, 6), 0.9))  # h + 0.2 (0.5 h - h)
    CodePrior(Half(), e1=0.0, e3=0.1, std=torch.full((6,), 2.0), generator=torch.Generator().manual_seed(0))(p, 0)
    moved = p.code - 0.9
    assert not torch.equal(moved[0], moved[1]) and 0.05 < moved.std() < 0.5  # std 0.1 x 2, its own draw per item
    before = p.code.detach().clone()
    CodePrior(Half(), e1=0.0, e3=0.0)(p, 0)
    assert torch.equal(p.code, before)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    """A tiny spatial latent prior (192 x 4 x 4 code, random decoder) and a code DAE for it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dgnam.generator.train import run

    d = tmp_path_factory.mktemp("ppgn")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train_generator", overrides=SPATIAL_TRAIN)
    GlobalHydra.instance().clear()
    out = run(cfg, out_dir=d / "prior")
    _, info = load_prior(out["prior"])
    dae = CodeDAE((192, 4, 4), info["code_mean"], info["code_std"], width=16)
    torch.nn.init.normal_(dae.net[-1].weight, std=0.1)  # not the identity
    return out["prior"], str(save_dae(dae, d / "r.pt"))


def _vis(compose, prior, dae, *extra):
    ppgn = ["method=ppgn", f"ppgn.dae={dae}"] if dae else ["method=dgnam_deep"]
    return compose(["model=custom", "model._target_=nets.cifar_net", *ppgn, f"param.prior={prior}",
                    "layers=logits", "units=[0,3]", "steps=4", "batch_size=2", "output.progress=false",
                    "input_resize=32", *extra])


def test_samples_give_distinct_images_per_unit_and_a_row_each(compose, tiny_prior, tmp_path):
    prior, dae = tiny_prior
    res = visualize.run(_vis(compose, prior, dae, "samples=3", "ppgn.e1=0.5", "ppgn.e3=0.5"), tmp_path / "k")
    rows = res["results"]
    assert [(r["unit"], r["sample"]) for r in rows] == [(0, 0), (0, 1), (0, 2), (3, 0), (3, 1), (3, 2)]
    assert [r["image"] for r in rows[:3]] == ["logits/0_s0.png", "logits/0_s1.png", "logits/0_s2.png"]
    imgs = [np.asarray(Image.open(tmp_path / "k" / r["image"])) for r in rows]
    assert all(not np.array_equal(imgs[i], imgs[j]) for i in range(6) for j in range(i + 1, 6))
    assert json.loads((tmp_path / "k" / "results.json").read_text()) == rows
    grid = Image.open(tmp_path / "k" / "grid_logits.png")
    assert grid.size[0] < grid.size[1] * 2  # 3 columns (a unit's samples) by 2 rows, not 6 in one row


def test_without_its_terms_ppgn_is_dgn_am_to_the_byte(compose, tiny_prior, tmp_path):
    prior, dae = tiny_prior
    visualize.run(_vis(compose, prior, dae, "ppgn.e1=0", "ppgn.e3=0"), tmp_path / "zero")
    visualize.run(_vis(compose, prior, None), tmp_path / "dgnam")
    visualize.run(_vis(compose, prior, dae, "ppgn.e1=0.5"), tmp_path / "prior_on")
    for u in (0, 3):
        zero, plain, on = (np.asarray(Image.open(tmp_path / d / "logits" / f"{u}.png"))
                           for d in ("zero", "dgnam", "prior_on"))
        assert np.array_equal(zero, plain) and not np.array_equal(on, plain)


@pytest.mark.parametrize("extra, message", [
    (["samples=0"], r"samples=0 must be an integer >= 1"),
    (["ppgn.e1=-0.1"], r"ppgn.e1=-0.1 must be a number >= 0"),
    (["ppgn.e3=-1"], r"ppgn.e3=-1 must be a number >= 0"),
    (["ppgn.dae=null"], r"ppgn.e1=0.3 needs ppgn.dae=<file>"),
])
def test_bad_input_is_one_line_and_writes_nothing(compose, tiny_prior, tmp_path, extra, message):
    prior, dae = tiny_prior
    with pytest.raises(DgnamError, match=message) as e:
        visualize.run(_vis(compose, prior, dae, *extra), tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_ppgn_needs_a_code_to_sample():
    from omegaconf import OmegaConf

    from dgnam.core.params import PixelParam
    from dgnam.views.sampling import check_ppgn

    cfg = OmegaConf.create({"ppgn": {"dae": "r.pt", "e1": 0.3, "e3": 0.0}})
    with pytest.raises(DgnamError, match=r"method=ppgn samples a generator's code: it needs param=generator"):
        check_ppgn(cfg, PixelParam(torch.zeros(1, 3, 8, 8)))
    assert check_ppgn(OmegaConf.create({"ppgn": {"dae": None, "e1": 0, "e3": 0}}), PixelParam(torch.zeros(1, 3, 8, 8))) \
        is None  # both terms off: plain DGN-AM, whatever the parameterization


def test_a_dae_for_another_code_is_one_line(compose, tiny_prior, tmp_path):
    prior, _ = tiny_prior
    other = save_dae(CodeDAE(SHAPE, torch.zeros(128), torch.ones(128), width=8), tmp_path / "other.pt")
    with pytest.raises(DgnamError, match=r"is for 8 x 4 x 4 codes \(128 units\), but the prior's code has 3072"):
        visualize.run(_vis(compose, prior, other), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- diversity
def test_pairwise_cosine_distance_on_known_vectors():
    assert pairwise_cosine_distance(torch.tensor([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(1.0)
    assert pairwise_cosine_distance(torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])) == pytest.approx(0.0)
    # pairs (a,b) 1, (a,c) 2, (b,c) 1 - cos(90) ... a = x, b = y, c = -x: distances 1, 2, 1
    assert pairwise_cosine_distance(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])) == pytest.approx(4 / 3)
    with pytest.raises(DgnamError, match="at least 2 images"):
        pairwise_cosine_distance(torch.ones(1, 3))


def test_penultimate_features_of_an_exported_classifier(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 10)).eval()
    x = torch.rand(2, 3, 16, 16)
    prog = torch.export.export(net, (x,))
    feats = penultimate(prog.module())(x)
    with torch.no_grad():
        assert torch.allclose(feats, net[:4](x), atol=1e-6)  # the input of the last linear layer
        assert torch.allclose(prog.module()(x), net(x), atol=1e-6)  # the original is left as it was


class TinyJudge(torch.nn.Module):
    """A tiny exported classifier: conv, pool, then a linear layer to 1000 logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 1000)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_the_report_gives_the_diversity_of_samples_and_of_photos(compose, tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from dgnam.eval.judges import load_judge
    from dgnam.eval.report import build_report

    cfg = compose(["model=alexnet", "model.weights=null", "method=pixel", "steps=2", "image_size=64", "samples=3",
                   "layers=logits", "units=[1,2]", "batch_size=2", "output.progress=false"])
    visualize.run(cfg, tmp_path / "run")
    prog = torch.export.export(TinyJudge().eval(), (torch.rand(2, 3, 32, 32),),
                               dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    torch.export.save(prog, str(tmp_path / "j.pt2"))
    rng = np.random.default_rng(0)
    cells, labels = [], []
    for label in (1, 1, 1, 1, 2, 2, 2, 5):  # 3 samples of each class: class 1 has 4 photos, class 2 3
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buf, "PNG")
        cells.append({"bytes": buf.getvalue(), "path": None})
        labels.append(label)
    pq.write_table(pa.table({"image": cells, "label": labels}), tmp_path / "photos.parquet")
    rep = build_report([tmp_path / "run"], tmp_path / "rep", judges=[{"path": str(tmp_path / "j.pt2"),
                       "input_size": 32}], photos=str(tmp_path / "photos.parquet"))
    judge = load_judge({"path": str(tmp_path / "j.pt2"), "input_size": 32})
    feats = penultimate(judge.model)
    for unit in (1, 2):
        rows = [r for r in rep["results"] if r["unit"] == unit]
        imgs = torch.stack([torch.from_numpy(np.asarray(Image.open(r["source"]))).permute(2, 0, 1)
                            .float() / 255 for r in rows])
        with torch.no_grad():  # independently: the judge's pooled features of the 3 PNGs, resized as it resizes
            want = pairwise_cosine_distance(feats(judge.resize(imgs)))
        assert len(rows) == 3 and all(r["diversity"] == pytest.approx(want, rel=1e-5) for r in rows)
        assert all(r["photo_diversity"] > 0 and r["photo_diversity"] != r["diversity"] for r in rows)
    # the photos' number is the mean over every pair of the class's photos (the expected diversity of 3
    # of them drawn at random), not that of the first 3
    from dgnam.eval.diversity import class_photos

    space = feature_space(judge)
    ph = class_photos(tmp_path / "photos.parquet", [1, 2], 2)
    assert [len(ph[1]), len(ph[2])] == [4, 3]
    for unit in (1, 2):
        every = pairwise_cosine_distance(space(ph[unit]))
        assert all(r["photo_diversity"] == pytest.approx(every, rel=1e-6) for r in rep["results"] if r["unit"] == unit)
    assert pairwise_cosine_distance(space(ph[1][:3])) != pytest.approx(pairwise_cosine_distance(space(ph[1])))
    s = rep["summary"][0]
    assert s["diversity"] == pytest.approx(np.mean([r["diversity"] for r in rep["results"][::3]]))
    assert "photos' diversity" in (tmp_path / "rep" / "report.md").read_text()
    # samples.png: a row per unit, its 3 samples in order; the tile at (row i, column k) is unit i's sample k
    grid = torch.from_numpy(np.asarray(Image.open(tmp_path / "rep" / "samples.png"))).permute(2, 0, 1).float() / 255
    tile = 192  # 64-px images enlarged (nearest) to the report's tile, 2 px padding, a 14-px caption under each
    assert grid.shape[1:] == (2 + 2 * (tile + 14 + 2), 2 + 3 * (tile + 2))
    for i, unit in enumerate((1, 2)):
        rows = sorted((r for r in rep["results"] if r["unit"] == unit), key=lambda r: r["sample"])
        for k, r in enumerate(rows):
            png = torch.from_numpy(np.asarray(Image.open(r["source"]))).permute(2, 0, 1).float() / 255
            y, x = 2 + i * (tile + 16), 2 + k * (tile + 2)
            assert torch.allclose(grid[:, y : y + tile : 3, x : x + tile : 3], png, atol=1 / 255)
    with pytest.raises(DgnamError, match=r"photos.parquet holds fewer than 3 photos of classes \[5\]"):
        class_photos(tmp_path / "photos.parquet", [1, 5], 3)


def _color_photos(path, n: int = 6) -> list[tuple[int, int, int]]:
    """A Parquet file of n one-colour photos (40 x 30 px, PNG); returns their colours."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    colors = [(40 * i, 255 - 40 * i, 100) for i in range(n)]
    cells = []
    for c in colors:
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), c).save(buf, "PNG")
        cells.append({"bytes": buf.getvalue(), "path": None})
    pq.write_table(pa.table({"image": cells, "label": list(range(n))}), path)
    return colors


def test_photo_starts_draw_one_photo_per_seed(compose, tmp_path):
    """init.kind=photos: each seed (so each sample) starts from its own photo of the dataset, the same
    for every item of a batch; the start code is the prior's encoding of that photo."""
    from dgnam.config import make_init

    colors = _color_photos(tmp_path / "p.parquet")
    init = {"kind": "photos", "path": str(tmp_path / "p.parquet")}
    drawn = []
    for seed in range(8):
        x = make_init(init, 2, 16, seed)
        assert x.shape == (2, 3, 16, 16) and torch.equal(x[0], x[1])
        rgb = tuple(round(v) for v in (x[0, :, 8, 8] * 255).tolist())
        assert rgb in colors and torch.allclose(x[0], x[0, :, :1, :1].expand(3, 16, 16), atol=1 / 255)
        drawn.append(rgb)
        assert torch.equal(make_init(init, 1, 16, seed)[0], x[0])  # the seed alone decides
    assert len(set(drawn)) >= 3
    # through the loop (pixel space, one tiny step): sample k starts from seed + k's photo
    cfg = compose(["model=custom", "model._target_=nets.cifar_net", "method=pixel", "layers=logits", "units=[0]",
                   "steps=1", "optimizer.lr=1e-6", "image_size=16", "samples=2", "init.kind=photos",
                   f"init.path={tmp_path / 'p.parquet'}", "output.progress=false", "priors.jitter=0",
                   "priors.blur_every=0", "priors.decay=0"])
    visualize.run(cfg, tmp_path / "run")
    for k in range(2):
        png = np.asarray(Image.open(tmp_path / "run" / "logits" / f"0_s{k}.png")).astype(float)
        assert np.abs(png - np.asarray(drawn[k])).max() <= 2, k
    with pytest.raises(DgnamError, match="nope.parquet"):
        make_init({"kind": "photos", "path": str(tmp_path / "nope.parquet")}, 1, 16, 0)


def test_chain_steps_take_the_samples_from_one_chain(compose, tiny_prior, tmp_path):
    """chain_steps=n: sample 0 is the plain run; sample k > 0 goes on from sample k-1's code for n steps."""
    prior, dae = tiny_prior
    chain = visualize.run(_vis(compose, prior, dae, "samples=3", "chain_steps=2"), tmp_path / "chain")["results"]
    apart = visualize.run(_vis(compose, prior, dae, "samples=3"), tmp_path / "apart")["results"]
    assert [r["steps"] for r in chain] == [4, 2, 2, 4, 2, 2]
    for i in (0, 3):  # sample 0: the same run either way; a later sample starts where the one before ended
        assert chain[i]["activation"] == apart[i]["activation"]
        for k in (1, 2):
            assert chain[i + k]["start_activation"] == pytest.approx(chain[i + k - 1]["activation"], rel=1e-4, abs=1e-5)
            assert chain[i + k]["start_activation"] != pytest.approx(apart[i + k]["start_activation"], rel=1e-3)
    with pytest.raises(DgnamError, match=r"chain_steps=0 must be an integer >= 1"):
        visualize.run(_vis(compose, prior, dae, "samples=2", "chain_steps=0"), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_the_diversity_term_scores_alike_samples_high_and_its_gradient_pulls_them_apart():
    from dgnam.core.objectives import diversity

    term = diversity("x", group=3)
    same = torch.rand(1, 4, 5, 5).expand(6, -1, -1, -1)
    assert torch.allclose(term({"x": same}), torch.ones(6))  # one picture three times: similarity 1
    apart = torch.zeros(3, 4, 2, 2)
    for k in range(3):
        apart[k, k] = 1.0  # each sample's energy in its own channel: orthogonal Gram matrices
    assert torch.allclose(term({"x": apart}), torch.zeros(3))
    a = torch.rand(6, 4, 5, 5, generator=torch.Generator().manual_seed(0)).requires_grad_()
    before = term({"x": a}).mean().item()
    opt = torch.optim.SGD([a], lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        term({"x": a.relu()}).sum().backward()  # subtracted from the objective: descend on it
        opt.step()
    assert term({"x": a.relu()}).mean().item() < before - 0.05
    with pytest.raises(ValueError, match="does not split into groups of 3"):
        term({"x": torch.rand(4, 4, 2, 2)})


def _gram_similarity(images, layer="body.4"):
    """Mean similarity of a unit's samples (consecutive triples) at ``layer`` of the tiny target."""
    from dgnam.core.objectives import diversity

    net = sys.modules["nets"].cifar_net().eval()
    x = torch.stack([torch.from_numpy(np.asarray(im)).permute(2, 0, 1).float() / 255 for im in images])
    x = torch.nn.functional.interpolate(x, size=32, mode="bilinear", antialias=True)
    with torch.no_grad():
        acts = {layer: net.body[:5](x)}
    return diversity(layer, 3)(acts).mean().item()


def test_diversity_runs_a_units_samples_side_by_side_and_makes_them_less_alike(compose, tmp_path):
    sims = {}
    for w in ("1e-9", "30"):
        out = tmp_path / f"w{w}"
        cfg = compose(["model=custom", "model._target_=nets.cifar_net", "method=pixel", "image_size=32", "layers=logits",
                       "units=[0,3]", "steps=12", "batch_size=2", "output.progress=false", "samples=3",
                       f"diversity.weight={w}", "diversity.layer=body.4"])
        rows = visualize.run(cfg, out)["results"]
        assert [(r["unit"], r["sample"]) for r in rows] == [(0, 0), (0, 1), (0, 2), (3, 0), (3, 1), (3, 2)]
        assert {r["batch_size"] for r in rows} == {6}  # both units' three samples in one pass
        sims[w] = _gram_similarity([Image.open(out / r["image"]).convert("RGB") for r in rows])
    assert sims["30"] < sims["1e-9"] - 0.01, sims


def test_the_diversity_term_runs_for_the_share_of_the_steps_until_says():
    from dgnam.core.objectives import Objective
    from dgnam.views.sampling import until_step

    term, count = until_step(Objective(lambda a: a["x"].sum(1), {"x"}, "t"), 2)
    acts = {"x": torch.ones(3, 4)}
    assert term.layers == {"x"} and term(acts).tolist() == [4.0] * 3
    count(None, 0)  # after step 0: step 1 still has it
    assert term(acts).tolist() == [4.0] * 3
    count(None, 1)
    assert term(acts).tolist() == [0.0] * 3


def test_diversity_until_changes_only_the_steps_it_covers(compose, tmp_path):
    def images(*extra):
        out = tmp_path / "_".join(extra)
        cfg = compose(["model=custom", "model._target_=nets.cifar_net", "method=pixel", "image_size=32", "layers=logits",
                       "units=[0]", "steps=12", "output.progress=false", "samples=3", "diversity.layer=body.4", *extra])
        return [np.asarray(Image.open(out / r["image"])) for r in visualize.run(cfg, out)["results"]]

    tiny = images("diversity.weight=1e-12")
    never = images("diversity.weight=30", "diversity.until=0.01")  # round(0.12 steps): no step has the term
    half, whole = images("diversity.weight=30", "diversity.until=0.5"), images("diversity.weight=30")
    assert all(np.array_equal(a, b) for a, b in zip(tiny, never))
    assert not any(np.array_equal(a, b) for a, b in zip(half, tiny))
    assert not any(np.array_equal(a, b) for a, b in zip(half, whole))


def test_side_by_side_samples_start_as_they_would_alone(compose, tiny_prior, tmp_path):
    """With a negligible diversity weight, each sample of the one pass is its own chain's run (seed + k)."""
    prior, _ = tiny_prior
    apart = visualize.run(_vis(compose, prior, None, "samples=2"), tmp_path / "apart")["results"]
    joint = visualize.run(_vis(compose, prior, None, "samples=2", "diversity.weight=1e-12", "diversity.layer=body.4"),
                          tmp_path / "joint")["results"]
    assert [r["batch_size"] for r in joint] == [4] * 4 and [r["batch_size"] for r in apart] == [2] * 4
    for a, j in zip(apart, joint):
        assert j["start_activation"] == pytest.approx(a["start_activation"], rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("extra, message", [
    (["diversity.weight=1"], r"diversity.weight=1 compares a unit's samples: it needs samples=K with K >= 2"),
    (["samples=2", "diversity.weight=1"], r"diversity.weight=1 needs diversity.layer=<a layer of the target>"),
    (["samples=2", "diversity.weight=1", "diversity.layer=body.44"], r"unknown layer 'body.44'"),
    (["samples=2", "diversity.weight=1", "diversity.layer=body.4", "chain_steps=2"], r"cannot take chain_steps=2"),
    (["samples=2", "diversity.weight=-1"], r"diversity.weight=-1 must be a number >= 0"),
    (["samples=2", "diversity.weight=1", "diversity.layer=body.4", "diversity.until=0"], r"diversity.until=0 must be"),
])
def test_bad_diversity_settings_are_one_line_and_write_nothing(compose, tiny_prior, tmp_path, extra, message):
    prior, _ = tiny_prior
    with pytest.raises(DgnamError, match=message) as e:
        visualize.run(_vis(compose, prior, None, *extra), tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_the_shipped_dae_serves_the_default_prior_and_stage_3_alike():
    """method=ppgn runs R (made with the stage-3 prior) through the default grid-free prior: R sees only
    the encoder's codes, so the two priors must share the encoder and the code statistics R was made with."""
    from dgnam.generator.encoder import same_encoder

    pri = REPO / "dgnam" / "priors"
    _, deep = load_prior(pri / "mobilenet_v2_latent_spatial_deep_g128.pt")
    _, free = load_prior(pri / "mobilenet_v2_latent_spatial_gridfree_g128.pt")
    assert same_encoder(deep["encoder"], free["encoder"]) and deep["code_dim"] == free["code_dim"]
    dae = load_dae(pri / "mobilenet_v2_latent_spatial_deep_code_dae.pt", code_dim=free["code_dim"])
    for info in (deep, free):
        assert torch.equal(dae.mean.flatten(), info["code_mean"].float().flatten())
        assert torch.equal(dae.std.flatten(), info["code_std"].float().clamp_min(1e-3).flatten())


def test_the_log_softmax_class_score_is_log_p_and_its_gradient_fades_as_the_class_grows_certain():
    from dgnam.core.objectives import class_log_softmax, class_logit

    z = torch.tensor([[2.0, 0.0, -1.0], [9.0, 0.0, -1.0]], requires_grad=True)
    score = class_log_softmax("logits", [0, 0])({"logits": z})
    assert torch.allclose(score, z.log_softmax(-1)[:, 0])
    score.sum().backward()
    p = z.detach().softmax(-1)
    assert torch.allclose(z.grad, torch.nn.functional.one_hot(torch.tensor([0, 0]), 3) - p)  # PPGN's one_hot - p
    uncertain, certain = z.grad.abs().sum(1)
    assert certain < uncertain / 10  # p(0) = 0.9998 against 0.84: the class term all but stops
    z.grad = None
    class_logit("logits", [0, 0])({"logits": z}).sum().backward()
    assert torch.equal(z.grad[0], z.grad[1])  # the logit's gradient does not fade


def _pixel(compose, *extra):
    return compose(["model=custom", "model._target_=nets.cifar_net", "method=pixel", "image_size=32",
                    "layers=logits", "units=[0,3]", "steps=6", "batch_size=2", "output.progress=false", *extra])


def test_class_score_log_softmax_is_what_the_loop_maximizes(compose, tmp_path):
    def images(*extra):
        out = tmp_path / "_".join(extra or ("default",))
        return [np.asarray(Image.open(out / r["image"])) for r in visualize.run(_pixel(compose, *extra), out)["results"]]

    default, logit, lsm = images(), images("class_score=logit"), images("class_score=log_softmax")
    assert all(np.array_equal(a, b) for a, b in zip(default, logit))
    assert not any(np.array_equal(a, b) for a, b in zip(lsm, logit))


@pytest.mark.parametrize("extra, message", [
    (["class_score=softmax"], r"unknown class_score 'softmax'; valid: logit, log_softmax"),
    (["class_score=log_softmax", "layers=body.4"], r"class_score=log_softmax needs class units .* layer body.4 has "
                                                   r"channel units: use class_score=logit"),
])
def test_a_bad_class_score_is_one_line_and_writes_nothing(compose, tmp_path, extra, message):
    with pytest.raises(DgnamError, match=message) as e:
        visualize.run(_pixel(compose, *extra), tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_objective_for_names_an_unknown_class_score():
    from dgnam.core.units import Unit, objective_for

    with pytest.raises(DgnamError, match=r"unknown class_score 'prob'; valid: logit, log_softmax"):
        objective_for([Unit("logits", 0, "class", "0")], "prob")
