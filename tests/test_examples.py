"""examples/from_python.py runs headless on tiny sizes and writes what visualize.py writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import MOBILENET, REPO


def test_from_python_example_runs_headless(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "DGNAM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "from_python.py"), "--tiny", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, n in [("cifar", 10), ("vit_b_16", 4)] + ([("mobilenet_v2", 4)] if MOBILENET.exists() else []):
        rows = json.loads((tmp_path / name / "results.json").read_text())
        rows = rows["results"] if isinstance(rows, dict) else rows
        assert len(rows) == n and (tmp_path / name / "grid_logits.png").is_file()
    assert "Visualization(10 units of logits" in proc.stdout
