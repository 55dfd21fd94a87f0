"""examples/from_python.py runs headless on tiny sizes and writes what visualize.py writes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import MOBILENET, REPO, needs_shared


def test_from_python_example_runs_headless(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "DGNAM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "from_python.py"), "--tiny", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    timm = [("timm_vit_small", 4)] if importlib.util.find_spec("timm") else []
    for name, n in [("cifar", 10), ("vit_b_16", 4), *timm] + ([("mobilenet_v2", 4)] if MOBILENET.exists() else []):
        rows = json.loads((tmp_path / name / "results.json").read_text())
        rows = rows["results"] if isinstance(rows, dict) else rows
        assert len(rows) == n and (tmp_path / name / "grid_logits.png").is_file()
    assert "Visualization(10 units of logits" in proc.stdout


@needs_shared(MOBILENET)
def test_notebook_runs_headless_and_shows_its_pictures(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="the notebook extra (pip install -e .[notebook])")
    nbclient = pytest.importorskip("nbclient", reason="the notebook extra (pip install -e .[notebook])")
    path = REPO / "examples" / "from_python.ipynb"
    stored = nbformat.read(path, as_version=4)
    shown = [o for c in stored.cells if c.cell_type == "code" for o in c.get("outputs", [])
             if "image/png" in o.get("data", {})]
    assert len(shown) >= 5, "the committed notebook keeps its pictures (run it with its outputs)"
    nb = nbformat.read(path, as_version=4)
    env = {"DGNAM_TINY": "1", "DGNAM_THREADS": "1", "DGNAM_OUT": str(tmp_path / "out")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits them
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
    assert len(pngs) == len(shown)  # every picture cell drew again
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert (tmp_path / "out" / "classes" / "grid_logits.png").is_file()
