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
    assert res["sections"]["prior"]["rows"][0]["iterations"] >= 1
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["RESULTS-gpu.md", "cuda-tests.xml", "prior.pt", "results.json", "train-metrics.csv"]
    assert all(p.stat().st_size <= 16 * 2**20 for p in tmp_path.iterdir())
    md = (tmp_path / "RESULTS-gpu.md").read_text()
    assert "## am (ok" in md and "| alexnet | bf16 |" in md and "Machine: no GPU" in md


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
