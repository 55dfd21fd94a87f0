"""The prepared GPU check (benchmarks/gpu_check.py) in its CPU dry run: every section runs at tiny
sizes and writes its results, so the script is ready whenever a GPU is at hand."""

from __future__ import annotations

import json

import pytest
from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dry_run_writes_every_section(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check

    assert gpu_check.main(["--dry-run", "--out", str(tmp_path), "--minutes", "10"]) == 0  # a cap: the dry run stops when done
    res = json.loads((tmp_path / "results.json").read_text())
    assert list(res["sections"]) == ["tests", "am", "dgnam", "train", "prior"]
    assert all(s["status"] == "ok" for s in res["sections"].values()), res
    am = res["sections"]["am"]["rows"]
    assert {(r["model"], r["variant"]) for r in am} >= {("alexnet", "fp32"), ("alexnet", "bf16")}
    assert all(r["unit_steps_s"] > 0 for r in am)
    dg = res["sections"]["dgnam"]["rows"]
    assert [r["precision"] for r in dg] == ["fp32", "bf16", "auto"] and dg[-1]["classes"] == 2
    check_prior(res["sections"]["prior"])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["RESULTS-gpu.md", "cuda-tests.xml", "prior.pt", "results.json", "train-metrics.csv"]
    assert all(p.stat().st_size <= 16 * 2**20 for p in tmp_path.iterdir())
    md = (tmp_path / "RESULTS-gpu.md").read_text()
    assert "## am (ok" in md and "| alexnet | bf16 |" in md and "Machine: no GPU" in md


def check_prior(sec):
    """The prior section's rows: every stage reached (1-2 iterations each in the dry run), images/s,
    the held-out reconstructions and DGN-AM through the new prior judged. The judge numbers are None
    only where the shared judge file is absent (a checkout without ../shared)."""
    import gpu_prior

    rows = {r["what"].split(":")[0]: r for r in sec["rows"]}
    stages = [rows[f"stage {i}"] for i in (1, 2, 3, 4)]
    assert all(1 <= r["iterations"] <= 2 and r["images_s"] > 0 for r in stages), stages
    assert [r["planned_iterations"] for r in stages[:3]] == [r["iterations"] for r in stages[:3]]
    assert sec["stages_reached"] == 4 and sec["csv_stages"] == [1, 2, 3, 4]
    train = next(r for r in sec["rows"] if r["what"].startswith("training"))
    assert train["iterations"] == sum(r["iterations"] for r in stages) and train["images_s"] > 0
    held, dg = rows["held-out photos"], rows["DGN-AM dgnam_deep fp32 through this prior, classes"]
    assert held["psnr_db"] > 0 and 0 <= held["target_top1"] <= 1 and dg["steps"] == 1
    judged = [held["judge_top1"], held["judge_top1_photo_128"], held["judge_top1_photo"], dg["judge_top1"], dg["judge_p"]]
    if gpu_prior.judge_file().is_file():
        assert all(isinstance(v, float) and 0 <= v <= 1 for v in judged), (held, dg)
    else:  # no shared judge: the numbers are None, and DGN-AM gives the target's own top-1 instead
        assert judged == [None] * 5 and 0 <= dg["target_top1"] <= 1


def test_a_held_out_split_takes_every_tenth_row_and_trains_on_the_rest(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_prior

    images = [{"bytes": bytes([i]), "path": f"{i}.jpg"} for i in range(25)]
    pq.write_table(pa.table({"image": images, "label": list(range(25))}), tmp_path / "shard.parquet")
    train, held = gpu_prior.split_shard(tmp_path / "shard.parquet", tmp_path)
    assert pq.read_table(held)["label"].to_pylist() == [9, 19]
    assert pq.read_table(train)["label"].to_pylist() == [i for i in range(25) if i % 10 != 9]
    assert pq.ParquetFile(train).num_row_groups == 1


def test_a_failing_section_is_recorded_and_the_others_run(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check

    def boom(*a):
        raise RuntimeError("no such thing")

    monkeypatch.setitem(gpu_check.SECTIONS, "train", (boom, 0.1))
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path), "--only", "train", "prior"]) == 1
    res = json.loads((tmp_path / "results.json").read_text())["sections"]
    assert res["train"] == {"status": "failed", "error": "RuntimeError: no such thing", "seconds": res["train"]["seconds"]}
    assert res["prior"]["status"] == "ok"


def test_large_files_come_back_in_parts(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check

    monkeypatch.setattr(gpu_check, "PART", 10)
    src = tmp_path / "prior.pt"
    src.write_bytes(bytes(range(25)))
    (tmp_path / "out").mkdir()
    names = gpu_check.copy_in_parts(src, tmp_path / "out")
    assert names == ["prior.pt.part0", "prior.pt.part1", "prior.pt.part2"]
    assert b"".join((tmp_path / "out" / n).read_bytes() for n in names) == src.read_bytes()
