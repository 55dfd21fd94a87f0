"""Judges and the comparison report: both kinds of judge file load, bad judge files fail in one line,
the image statistics are right on known images, and the report builds from tiny real runs."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import DATA, JUDGE, REPO, needs_shared
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from dgnam.cli import guarded
from dgnam.errors import DgnamError
from dgnam.eval.judges import load_judge
from dgnam.eval.report import build_report, find_run_dirs, order_methods
from dgnam.eval.run import ReportCallback
from dgnam.eval.stats import grid_ratio, high_frequency_energy, total_variation

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

SMALL = ["model=alexnet", "model.weights=null", "steps=2", "image_size=96", "output.progress=false",
         "layers=logits", "unit=class", "units=[1,2]", "batch_size=2"]


class FixedJudge(nn.Module):
    """Logits that ignore the image: class 1 first (10), class 2 second (5), the rest 0."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        bias = torch.zeros(classes)
        bias[1], bias[2 % classes] = 10.0, 5.0
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))[:, None] * 0.0 + self.bias  # (B, classes)


def export(model: nn.Module, path: Path, size: int = 64, dynamic_batch: bool = True) -> Path:
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=1024)
        prog = torch.export.export(model.eval(), (torch.rand(2, 3, size, size),), dynamic_shapes=({0: batch},))
    else:  # a program fixed to a batch of 1
        prog = torch.export.export(model.eval(), (torch.rand(1, 3, size, size),))
    torch.export.save(prog, str(path))
    return path


@pytest.fixture(scope="module")
def judge_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("judges")
    sq = torchvision.models.squeezenet1_1(weights=None)
    torch.save(sq.state_dict(), d / "squeezenet.pth")
    (d / "garbage.pt2").write_bytes(b"this is not a torch.export archive\n" * 10)
    return {"fixed": export(FixedJudge(), d / "fixed.pt2"),
            "ten": export(FixedJudge(10), d / "ten.pt2"),
            "batch1": export(FixedJudge(), d / "batch1.pt2", dynamic_batch=False),
            "squeezenet": d / "squeezenet.pth",
            "garbage": d / "garbage.pt2"}


# ---------------------------------------------------------------------------------------------
# judges


def test_pt2_judge_loads_and_resizes(judge_files):
    judge = load_judge({"kind": "pt2", "path": str(judge_files["fixed"]), "input_size": 64})
    assert judge.name == "fixed" and judge.input_size == 64
    logits = judge(torch.rand(3, 3, 96, 80))  # any size: resized and cropped to 64 x 64
    assert logits.shape == (3, 1000)
    assert logits.argmax(-1).tolist() == [1, 1, 1]
    one = load_judge({"path": str(judge_files["batch1"]), "input_size": 64})  # fixed batch: split
    assert one.batch_size == 1 and one(torch.rand(3, 3, 64, 64)).shape == (3, 1000)


def test_torchvision_judge_loads_its_weights(judge_files):
    judge = load_judge({"kind": "torchvision", "name": "sq", "arch": "squeezenet1_1",
                        "weights_file": str(judge_files["squeezenet"]), "input_size": 64,
                        "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    x = torch.rand(2, 3, 64, 64)
    ref = torchvision.models.squeezenet1_1(weights=None)
    ref.load_state_dict(torch.load(judge_files["squeezenet"], weights_only=True))
    with torch.no_grad():
        expected = ref.eval()((x - 0.5) / 0.25)
    got = judge(x)
    assert got.shape == (2, 1000)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case, spec, needle", [
    ("garbage", {"kind": "pt2"}, "garbage.pt2"),
    ("missing", {"kind": "pt2"}, "missing.pt2"),
    ("ten", {"kind": "pt2", "input_size": 64}, "(2, 10)"),
    ("garbage", {"kind": "torchvision", "arch": "squeezenet1_1"}, "garbage.pt2"),
    ("squeezenet", {"kind": "torchvision", "arch": "resnet18"}, "squeezenet.pth"),
    ("fixed", {"kind": "onnx"}, "onnx"),
    ("fixed", {"kind": "pt2"}, "set its input_size"),  # exported for 64 px, asked for the default 160
])
def test_bad_judge_file_is_one_line(judge_files, tmp_path, case, spec, needle):
    path = judge_files.get(case, tmp_path / f"{case}.pt2")
    key = "weights_file" if spec["kind"] == "torchvision" else "path"
    with pytest.raises(DgnamError) as e:
        load_judge({**spec, key: str(path)})
    msg = str(e.value)
    assert "\n" not in msg and needle in msg, msg


# ---------------------------------------------------------------------------------------------
# image statistics


def test_image_statistics_on_known_images():
    n = 64
    const = torch.full((1, 3, n, n), 0.3)
    assert total_variation(const).item() == 0.0
    assert high_frequency_energy(const).item() == 0.0
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    checker = ((i + j) % 2).float().expand(1, 3, n, n)
    assert total_variation(checker).item() == pytest.approx(math.sqrt(2), rel=1e-6)
    assert high_frequency_energy(checker).item() == pytest.approx(1.0, abs=1e-6)
    # sinusoids exactly on a DFT bin: 0.125 cycles/pixel is all low, 0.375 all high (radius 0.25)
    low = (0.5 + 0.4 * torch.cos(2 * math.pi * 8 * j / n)).float().expand(1, 3, n, n)
    high = (0.5 + 0.4 * torch.cos(2 * math.pi * 24 * j / n)).float().expand(1, 3, n, n)
    assert high_frequency_energy(low).item() == pytest.approx(0.0, abs=1e-6)
    assert high_frequency_energy(high).item() == pytest.approx(1.0, abs=1e-6)
    assert 0 < total_variation(low).item() < total_variation(high).item()
    batch = torch.cat([const, checker, low])
    assert high_frequency_energy(batch).tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-6)


def _pink(n: int, batch: int, seed: int = 0) -> torch.Tensor:
    """Images with a photo's 1/f amplitude spectrum and random phases, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    f = (torch.fft.fftfreq(n).view(n, 1) ** 2 + torch.fft.fftfreq(n).view(1, n) ** 2).sqrt().clamp_min(1 / n)
    spec = torch.complex(torch.randn(batch, 3, n, n, generator=g), torch.randn(batch, 3, n, n, generator=g)) / f
    img = torch.fft.ifft2(spec).real
    lo, hi = img.amin((2, 3), keepdim=True), img.amax((2, 3), keepdim=True)
    return (img - lo) / (hi - lo)


def test_grid_ratio_scores_a_grid_high_and_photo_like_images_near_one():
    n = 128
    pink = _pink(n, 6)
    assert ((grid_ratio(pink) > 0.85) & (grid_ratio(pink) < 1.1)).all()  # a photo's spectrum: about 1
    grid = pink.clone()
    grid[..., ::8, :] *= 0.95  # dark lines every 8 px, 5 % contrast
    grid[..., :, ::8] *= 0.95
    assert (grid_ratio(grid) > 1.08).all() and (grid_ratio(grid) > grid_ratio(pink) + 0.1).all()
    strong = pink.clone()
    strong[..., ::8, :] = 0
    assert (grid_ratio(strong) > 3).all()  # black rows every 8 px (the columns stay clean)
    assert (grid_ratio(pink, period=16) < 1.1).all() and (grid_ratio(strong, period=7) < 1.1).all()  # other periods
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    cells = (((i // 8) + (j // 8)) % 2).float().expand(1, 3, n, n)  # a checkerboard of 8-px cells: period 16
    assert grid_ratio(cells, period=16).item() > 10  # its odd harmonics (8, 24, 40 ... cycles) lie on these lines
    assert grid_ratio(cells, period=8).item() < 1  # and none on the lines of an 8-px period (16, 32 ... cycles)
    assert grid_ratio(torch.rand(1, 3, 16, 16)).isnan().all()  # too small to hold the lines


def test_grid4_counts_a_4px_cross_hatch_in_the_report_rows(tmp_path):
    """The report's grid4 (period 4) is high for a faint 4-px cross-hatch over a photo-like image and
    about 1 for the image without it; a checkerboard of 8-px cells (period 16) leaves it near 1."""
    from dgnam.eval.report import score_rows
    from dgnam.eval.stats import FINE_GRID_PERIOD
    from dgnam.io import save_png

    n = 128
    pink = _pink(n, 1, seed=3)
    hatch = pink.clone()
    hatch[..., 1::4, :] *= 0.95  # dark lines every 4 px, 5 % contrast
    hatch[..., :, 1::4] *= 0.95
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    cells = 0.5 + 0.1 * (((i // 8) + (j // 8)) % 2).float().expand(1, 3, n, n)
    paths = {}
    for name, img in {"pink": pink, "hatch": hatch, "cells": cells}.items():
        paths[name] = tmp_path / f"{name}.png"
        save_png(img[0], paths[name])
    rows = [{"source": str(p), "kind": "channel", "unit": 0, "method": k} for k, p in paths.items()]
    g4 = {r["method"]: r["grid4"] for r in score_rows(rows, [], stats_size=None)}
    assert FINE_GRID_PERIOD == 4
    assert 0.85 < g4["pink"] < 1.1 and g4["hatch"] > 1.5 and g4["hatch"] > g4["pink"] + 0.4, g4
    assert g4["cells"] < 1.1, g4


@needs_shared(DATA)
def test_grid_ratio_of_shared_photos_is_about_one():
    from dgnam.generator.data import ImageDataset, ParquetImages

    ds = ImageDataset(ParquetImages(str(DATA / "valid-*.parquet"), limit=64), resolution=128)
    r = grid_ratio(torch.stack([ds[i]["image"] for i in range(len(ds))]))
    assert 0.9 < r.median().item() < 1.02 and (r < 1.2).float().mean() > 0.9, r


def test_methods_order_is_stable_and_configurable():
    assert order_methods({"lucid", "zeta", "pixel", "alpha"}) == ["pixel", "lucid", "alpha", "zeta"]
    assert order_methods({"lucid", "pixel"}, ["lucid", "dgnam"]) == ["lucid", "pixel"]


# ---------------------------------------------------------------------------------------------
# the report from tiny real runs


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    d = tmp_path_factory.mktemp("runs")
    runs = {}
    for name, extra in {"pixel": ["method=pixel"], "pixel_s1": ["method=pixel", "seed=1"],
                        "yosinski": ["method=yosinski"]}.items():
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose(config_name="visualize", overrides=SMALL + extra)
        visualize.run(cfg, str(d / name))
        runs[name] = d / name
    GlobalHydra.instance().clear()
    return runs


def test_report_builds_from_tiny_runs(compose, tiny_runs, judge_files, tmp_path):
    cfg = compose(["experiment=report"])
    OmegaConf.update(cfg, "report.runs", [str(p) for p in tiny_runs.values()])
    OmegaConf.update(cfg, "report.judges", [{"kind": "pt2", "name": "fixed", "input_size": 64,
                                             "path": str(judge_files["fixed"])}])
    OmegaConf.update(cfg, "report.methods_order", ["yosinski", "pixel"])
    out = tmp_path / "report"
    res = visualize.run(cfg, str(out))  # mode=report through visualize.py's MODES

    for f in ("report.md", "report.html", "grid.png", "report.json", "report.csv", "summary.json"):
        assert (out / f).is_file(), f
    rows = json.loads((out / "report.json").read_text())
    assert len(rows) == 6 == len(res["results"])  # 2 units x (2 pixel seeds + 1 yosinski seed)
    by_unit = {r["unit"]: r for r in rows if r["method"] == "yosinski"}
    assert by_unit[1]["fixed_top1"] == 1 and by_unit[1]["fixed_top5"] == 1
    assert by_unit[2]["fixed_top1"] == 0 and by_unit[2]["fixed_top5"] == 1
    z = math.exp(10) + math.exp(5) + 998
    assert by_unit[2]["fixed_prob"] == pytest.approx(math.exp(5) / z, rel=1e-4)
    for r in rows:
        assert (out / r["image"]).is_file() and 0 <= r["hf_energy"] <= 1 and r["tv"] > 0

    summary = res["summary"]
    assert [s["method"] for s in summary] == ["yosinski", "pixel"]
    pix = summary[1]
    assert (pix["images"], pix["units"], pix["seeds"]) == (4, 2, 2)
    assert pix["fixed_top1_pct"] == pytest.approx(50.0) and pix["fixed_top5_pct"] == pytest.approx(100.0)
    assert pix["fixed_prob"] == pytest.approx((math.exp(10) + math.exp(5)) / z / 2, rel=1e-4)
    assert pix["fixed_top1_pct_sd"] == pytest.approx(0.0)
    assert pix["activation"] == pytest.approx(sum(r["activation"] for r in rows if r["method"] == "pixel") / 4)

    md = (out / "report.md").read_text()
    assert "![grid](grid.png)" in md and "| fixed top-1 % |" in md and "| grid | grid 4 px |" in md
    assert all(math.isfinite(r["grid4"]) for r in rows) and pix["grid4"] is not None
    assert "| pixel | 4 (2 × 2) |" in md and "50.0 ± 0.0" in md
    assert md.index("| yosinski |") < md.index("| pixel |")
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4  # 2 units x 2 methods, lowest seed
    with Image.open(out / "grid.png") as g:  # 2 rows x 2 columns of 192-px tiles + 14-px captions
        assert g.size == (2 * (192 + 2) + 2, 2 * (192 + 14 + 2) + 2)


def test_callback_reports_over_a_sweep_directory(tiny_runs, judge_files, tmp_path):
    sweep = tmp_path / "sweep"
    for i, name in enumerate(["pixel", "yosinski"]):
        shutil.copytree(tiny_runs[name], sweep / str(i))
    assert [p.name for p in find_run_dirs(sweep)] == ["0", "1"]
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}},
                            "report": {"judges": [{"path": str(judge_files["fixed"]), "input_size": 64}]}})
    ReportCallback().on_multirun_end(config=cfg)
    rows = json.loads((sweep / "report" / "report.json").read_text())
    assert sorted({r["method"] for r in rows}) == ["pixel", "yosinski"] and len(rows) == 4


def test_report_refuses_the_target_as_judge_and_empty_dirs(tiny_runs, tmp_path):
    with pytest.raises(DgnamError, match="no results.json"):
        build_report([tmp_path], tmp_path / "out", judges=[])
    run = tiny_runs["pixel"]
    fake = tmp_path / "weights.pth"
    fake.write_bytes(b"x")
    cfg_file = run / ".hydra" / "config.yaml"
    cfg_file.parent.mkdir(exist_ok=True)
    cfg_file.write_text(f"model:\n  arch: alexnet\n  weights_file: {fake}\n")
    try:
        with pytest.raises(DgnamError, match="target's weights file"):
            build_report([run], tmp_path / "out", judges=[{"kind": "torchvision", "arch": "alexnet",
                                                           "weights_file": str(fake)}])
    finally:
        shutil.rmtree(cfg_file.parent)


def test_presets_compose(compose):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hcompose(config_name="visualize", overrides=["experiment=compare"], return_hydra_config=True)
    units = list(cfg.units)
    assert len(units) == 20 == len(set(units)) and all(0 <= u < 1000 for u in units)
    assert cfg.layers == "logits" and cfg.unit == "class" and cfg.name == "compare"
    assert cfg.hydra.sweeper.params.method.split(",") == ["pixel", "yosinski", "lucid", "maco", "dgnam", "dgnam_tuned",
                                                          "dgnam_tr", "dgnam_latent", "dgnam_spatial", "dgnam_perceptual",
                                                          "dgnam_deep", "latent_am"]
    assert list(cfg.report.methods_order) == cfg.hydra.sweeper.params.method.split(",")
    assert cfg.report.stats_size == 224
    assert cfg.hydra.callbacks.report._target_ == "dgnam.eval.run.ReportCallback"
    assert cfg.report.judges[0].path.endswith("models/judge_mobilenet_v1_0.5_160.pt2")
    rep = compose(["experiment=report"])
    assert rep.mode == "report" and rep.report.judges[0].path == cfg.report.judges[0].path


@needs_shared(JUDGE)
@needs_shared(DATA)
def test_shared_judge_names_the_class_of_shared_photos():
    from dgnam.generator.data import ImageDataset, ParquetImages

    judge = load_judge({"kind": "pt2", "path": str(JUDGE)})
    ds = ImageDataset(ParquetImages(str(DATA / "valid-*.parquet"), limit=32), resolution=128)
    items = [ds[i] for i in range(len(ds))]
    with torch.no_grad():
        top1 = judge(torch.stack([it["image"] for it in items])).argmax(-1)
    right = (top1 == torch.tensor([it["label"] for it in items])).sum().item()
    assert right >= 16, right  # 19 of these 32 photos (1,000 classes); its answer on noise is one class


def test_bad_judge_in_report_mode_exits_with_one_line(compose, tiny_runs, judge_files, tmp_path, capsys):
    cfg = compose(["experiment=report", f"report.runs=[{tiny_runs['pixel']}]",
                   f"report.judges=[{{path:'{judge_files['garbage']}'}}]"])
    with pytest.raises(SystemExit) as e:
        guarded(visualize.run)(cfg, str(tmp_path / "out"))  # what visualize.py's main does on errors
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot read judge file") and "garbage.pt2" in lines[0]
    assert not (tmp_path / "out" / "report.md").exists()


def test_image_statistics_compare_images_of_different_sizes(tmp_path):
    """A 64-px image and the same image at 224 px get the same TV once both are measured at 224 px."""
    from dgnam.core.images import resize_crop
    from dgnam.eval.report import score_rows
    from dgnam.io import save_png

    i, j = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    small = (0.5 + 0.4 * torch.sin(2 * math.pi * 3 * (i + j) / 64)).float().expand(3, 64, 64)
    paths = {"small": tmp_path / "small.png", "big": tmp_path / "big.png"}
    save_png(small, paths["small"])
    save_png(resize_crop(small, 224), paths["big"])
    rows = [{"source": str(p), "kind": "channel", "unit": 0, "method": k} for k, p in paths.items()]
    same = {r["method"]: r["tv"] for r in score_rows(rows, [], stats_size=224)}
    assert same["small"] == pytest.approx(same["big"], rel=0.05)
    raw = {r["method"]: r["tv"] for r in score_rows(rows, [], stats_size=None)}
    assert raw["small"] > 2.5 * raw["big"]  # per-pixel TV of a smaller image is larger


def test_a_unit_with_samples_is_labelled_without_a_sample_s_suffix():
    from dgnam.eval.render import _labels

    rows = [{"method": "ppgn", "seed": 0, "layer": "logits", "unit": 9, "kind": "class", "label": f"9 ostrich_s{k}", "sample": k}
            for k in range(3)] + [{"method": "ppgn", "seed": 0, "layer": "logits", "unit": 1, "kind": "class", "label": "1 goldfish_s1"}]
    assert sorted(_labels(rows).values()) == ["1 goldfish_s1", "9 ostrich"]
