"""The package as a user installs it: the wheel carries conf/ exactly (the configs it composes are the
checkout's), and from a fresh virtual environment with the wheel installed (not editable), in a folder
outside the checkout, the Python API (pixel and DGN-AM), ``dgnam.priors`` and the console scripts
``dgnam-visualize`` / ``dgnam-train`` work, with their one-line errors.

The environment reuses the installed dependencies (a ``.pth`` line naming this interpreter's
site-packages, whose own ``.pth`` files, the editable install among them, are not run), so nothing is
downloaded; the wheel is built from a copy of the checkout, which stays clean."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import CONF, REPO

from dgnam.cli import _compose
from dgnam.paths import CONF_DIR

PY = sys.executable
PKG_FILES = ("pyproject.toml", "README.md", "dgnam", "conf")
# What the configs compose to (unresolved: the priors' folder differs by design), as JSON per name:
# the defaults and one option of each preset group (the files themselves are compared byte for byte).
GROUPS = (("visualize", "method", "dgnam_deep"), ("visualize", "experiment", "compare"),
          ("train_generator", "experiment_train", "mobilenet_v2_latent_spatial_deep_cpu"))
COMPOSE = r"""
import json, sys
from omegaconf import OmegaConf
import dgnam.config  # the structured configs conf/ refers to
from dgnam.cli import _compose
from dgnam.paths import CONF_DIR
def plain(cfg):  # without Hydra's own node (it names the config folder and the time)
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}
out = {}
for name, group, option in GROUPS:
    out[name] = plain(_compose(CONF_DIR, name, []))
    out[f"{name}:{group}={option}"] = plain(_compose(CONF_DIR, name, [f"{group}={option}"]))
json.dump({"conf": str(CONF_DIR), "configs": out}, sys.stdout, sort_keys=True, default=str)
"""
TINY_NET = '''
import torch
from torch import nn

def build(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, num_classes))
'''
API = '''
import json, dgnam, tinynet
net = tinynet.build()
px = dgnam.visualize(net, "logits", [0, 3], method="pixel", steps=4, image_size=32)
dg = dgnam.visualize(net, "logits", [1], method="dgnam_deep", steps=2, image_size=32)
dg.save("api_out")
print(json.dumps({"dgnam": dgnam.__file__, "pixel": list(px.images.shape), "dgnam_deep": list(dg.images.shape),
                  "rise": [r["activation"] > r["start_activation"] for r in px.results],
                  "priors": [p.name for p in dgnam.priors.list()], "listed": repr(dgnam.priors.list())}))
'''


def _plain(cfg) -> dict:
    from omegaconf import OmegaConf

    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}


def test_the_package_list_is_every_package_folder():
    """pyproject.toml lists the packages (conf/ is mapped to dgnam.conf); a new subpackage must be added."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "dgnam").rglob("__init__.py")}
    assert set(listed) == found | {"dgnam.conf"}


def test_the_checkout_uses_its_own_conf():
    assert CONF_DIR == CONF


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in PKG_FILES:
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(p, src / name)
    subprocess.run([PY, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
                    "-w", str(dist), str(src)], check=True, capture_output=True)
    (whl,) = dist.glob("dgnam-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    env = tmp_path_factory.mktemp("venv")
    subprocess.run([PY, "-m", "venv", "--without-pip", str(env)], check=True)
    site = Path(subprocess.run([str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "reuse_installed.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([PY, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q", "--no-deps",
                    "--no-index", "--disable-pip-version-check", str(wheel)], check=True, capture_output=True)
    return env


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("elsewhere")
    (d / "tinynet.py").write_text(TINY_NET)
    return d


def run_in(venv: Path, where: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(where), "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}: {p.stderr[-2000:]}")
    return p


def test_the_wheel_carries_conf_exactly(wheel):
    """Every file of conf/, byte for byte, and nothing else, is dgnam/conf/ in the wheel."""
    with zipfile.ZipFile(wheel) as z:
        shipped = {n.removeprefix("dgnam/conf/"): z.read(n) for n in z.namelist() if n.startswith("dgnam/conf/")}
        assert any(n.startswith("dgnam/priors/") and n.endswith("_g128.pt") for n in z.namelist())
    ours = {str(p.relative_to(CONF)): p.read_bytes() for p in CONF.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert sorted(shipped) == sorted(ours)
    assert all(shipped[n] == ours[n] for n in ours)


def test_the_installed_package_composes_the_checkouts_configs(venv, elsewhere):
    p = run_in(venv, elsewhere, str(venv / "bin" / "python"), "-c", f"GROUPS = {GROUPS!r}\n{COMPOSE}")
    installed = json.loads(p.stdout)
    assert Path(installed["conf"]).is_relative_to(venv) and installed["conf"].endswith("dgnam/conf")
    ours = {}  # the same on the checkout's conf/
    for name, group, option in GROUPS:
        ours[name] = _plain(_compose(CONF_DIR, name, []))
        ours[f"{name}:{group}={option}"] = _plain(_compose(CONF_DIR, name, [f"{group}={option}"]))
    ours = json.loads(json.dumps(ours, sort_keys=True, default=str))
    assert sorted(installed["configs"]) == sorted(ours) and len(ours) == 5
    assert [k for k in ours if installed["configs"][k] != ours[k]] == []


def test_the_installed_api_runs_outside_the_checkout(venv, elsewhere):
    out = json.loads(run_in(venv, elsewhere, str(venv / "bin" / "python"), "-c", API).stdout.strip().splitlines()[-1])
    assert Path(out["dgnam"]).is_relative_to(venv)
    assert out["pixel"] == [2, 3, 32, 32] and out["dgnam_deep"][:2] == [1, 3] and all(out["rise"])
    assert out["priors"][0] == "mobilenet_v2_latent_spatial_gridfree_g128" and "judge top-1 98.3" in out["listed"]
    assert (elsewhere / "api_out" / "grid_logits.png").is_file()


def test_the_console_scripts_run_as_the_entry_scripts(venv, elsewhere):
    vis, train = str(venv / "bin" / "dgnam-visualize"), str(venv / "bin" / "dgnam-train")
    tiny = ["model=custom", "model._target_=tinynet.build", "layers=logits", "steps=2", "image_size=32", "name=tiny"]
    p = run_in(venv, elsewhere, vis, "-m", *tiny, "units=0-1", "seed=0,1")
    runs = sorted((elsewhere / "multirun" / "tiny").glob("*/*/results.json"))
    assert [r.parent.name for r in runs] == ["0", "1"], p.stdout + p.stderr
    assert all((r.parent / "visualize.log").is_file() and (r.parent / "logits" / "1.png").is_file() for r in runs)
    for cmd, bad, start in ((vis, "method=lucidd", "error: unknown method 'lucidd' (did you mean lucid?)"),
                            (train, "trainer=smok", "error: unknown trainer 'smok'")):
        p = run_in(venv, elsewhere, cmd, bad, check=False)
        assert p.returncode == 2 and p.stderr.startswith(start) and p.stderr.count("\n") == 1, (bad, p.stderr)
    assert not (elsewhere / "outputs").exists()  # no run directory is left by a command that failed at once
