"""Faults a user meets: NaN that must not pass silently, sweeps that survive a bad or killed job, run
folders that one command writes at a time, values that are what they say, devices, Python's error
types, the report's notion of one experiment, and error lines kept whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_script
from nets import CifarNet, cifar_net
from PIL import Image

import dgnam
from dgnam.cli import guarded
from dgnam.errors import DgnamError, DgnamFileNotFoundError, DgnamValueError, NonFiniteError, first_line

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
CUSTOM = ["model=custom", "model._target_=nets.cifar_net", "steps=3", "output.progress=false", "image_size=32",
          "batch_size=2", "layers=logits", "units=[0,3]"]


def one_error_line(capsys, call) -> str:
    """Run ``call`` as the CLI's main would (``guarded``): exit 2 and exactly one ``error:`` line."""
    with pytest.raises(SystemExit) as e:
        call()
    assert e.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def cli(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "visualize.py"), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def digest(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time (ns)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------- 1. NaN
@pytest.mark.parametrize("which", ["all", "head.weight"])
def test_a_weights_file_with_nan_stops_before_any_step_in_one_line(compose, tmp_path, capsys, which):
    state = CifarNet().state_dict()
    for k in state:
        if which in ("all", k):
            state[k] = state[k].clone()
            state[k].view(-1)[0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    cfg = compose([*CUSTOM, f"model.weights_file={tmp_path / 'nan.pth'}"])
    line = one_error_line(capsys, lambda: guarded(visualize.run)(cfg, str(tmp_path / "out")))
    first = "body.0.weight" if which == "all" else "head.weight"
    assert f"tensor '{first}' holds 1 NaN" in line and "nan.pth" in line, line
    assert not (tmp_path / "out").exists()


def test_a_model_with_nan_weights_from_python_is_refused():
    net = cifar_net()
    with torch.no_grad():
        net.head.bias[2] = float("inf")
    with pytest.raises(ValueError, match=r"'head.bias' holds 0 NaN and 1 infinite"):
        dgnam.visualize(net, "logits", [0], steps=1, image_size=32)


def test_a_prior_with_a_nan_head_weight_is_refused_before_any_step(compose, tmp_path, capsys):
    from test_generator import tiny_generator

    from dgnam.generator.prior import load_prior, save_prior
    from dgnam.generator.stats import code_statistics

    enc = {"arch": "tiny", "weights_file": "w.pth", "layer": "fc1", "pooling": "none", "input_size": 32}
    path = save_prior(tmp_path / "p.pt", tiny_generator(5), enc, code_statistics([torch.rand(10, 5)]))
    blob = torch.load(path, weights_only=True)
    key = next(k for k in blob["state_dict"] if k.endswith("weight"))
    blob["state_dict"][key].view(-1)[3] = float("nan")
    torch.save(blob, tmp_path / "nan_prior.pt")
    with pytest.raises(DgnamValueError, match=f"state_dict.{key}' holds 1 NaN"):
        load_prior(tmp_path / "nan_prior.pt")
    cfg = compose([*CUSTOM, "method=dgnam", f"param.prior={tmp_path / 'nan_prior.pt'}", "input_resize=32"])
    line = one_error_line(capsys, lambda: guarded(visualize.run)(cfg, str(tmp_path / "out")))
    assert "nan_prior.pt" in line and "holds 1 NaN" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method, expect", [
    ("yosinski", "the image became NaN or infinite at step 1 for logits 0, logits 3"),
    ("lucid", "the optimizer's step overflowed at step 0"),
])
def test_a_learning_rate_that_diverges_stops_at_its_step(compose, tmp_path, capsys, method, expect):
    cfg = compose([*CUSTOM, f"method={method}", "optimizer.lr=3e38"])
    line = one_error_line(capsys, lambda: guarded(visualize.run)(cfg, str(tmp_path / "out")))
    assert expect in line and "optimizer.lr" in line, line
    assert not (tmp_path / "out").exists()  # no PNG, no row for the bad items


def test_the_loop_names_the_step_and_items_that_went_non_finite():
    from dgnam.core.loop import check_finite

    image = torch.zeros(3, 3, 4, 4)
    check_finite(5, torch.ones(3), image)  # all finite: nothing
    with pytest.raises(NonFiniteError) as e:
        check_finite(7, torch.tensor([1.0, float("nan"), 2.0]), image, ["a", "b", "c"])
    assert (e.value.step, e.value.items) == (7, [1]) and "objective" in str(e.value) and "for b:" in str(e.value)
    image[2, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="the image became NaN or infinite at step 9 for item 2"):
        check_finite(9, torch.ones(3), image)


def test_training_stops_at_the_step_its_loss_is_not_finite():
    from dgnam.generator.losses import check_finite_loss

    check_finite_loss({"image": torch.tensor(1.0)}, torch.tensor(1.0), 3)
    with pytest.raises(NonFiniteError, match=r"at step 12 \(terms: feature\)"):
        check_finite_loss({"image": torch.tensor(1.0), "feature": torch.tensor(float("inf"))},
                          torch.tensor(float("inf")), 12)


def test_results_are_strict_json_with_null_for_a_missing_number(tmp_path):
    from dgnam.io import write_results

    write_results([{"unit": 0, "activation": float("nan"), "grid": [1.0, float("inf")]}], tmp_path)
    text = (tmp_path / "results.json").read_text()

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    assert json.loads(text, parse_constant=refuse) == [{"unit": 0, "activation": None, "grid": [1.0, None]}]


# ---------------------------------------------------------------------------- 2. sweeps, 3. folders
def _wait_for_job(folder: Path, proc: subprocess.Popen, limit: float = 180) -> int:
    """The pid of the job command that holds ``folder`` (its lock file says ``running <pid>``)."""
    t0 = time.time()
    while time.time() - t0 < limit and proc.poll() is None:
        try:
            state = (folder / ".dgnam-run").read_text().split()
            if state[:1] == ["running"]:
                return int(state[1])
        except (OSError, IndexError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"job in {folder} never started")


def test_a_sweep_survives_a_bad_job_and_a_killed_one_and_reruns_only_those(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    args = ["-m", *[a for a in CUSTOM if not a.startswith(("units=", "steps="))], "steps=200",
            "units=[0],[99],[1]", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "visualize.py"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.kill(_wait_for_job(sweep / "2", proc), signal.SIGKILL)  # job 2 (units=[1]), mid-run
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err[-3000:]
    summary = err[err.index("error: 2 job(s) of the sweep failed"):].splitlines()
    assert summary[1].startswith("  job 1 (") and "units=[99]" in summary[1] and "unit 99 is out of range" in summary[1]
    assert summary[2].startswith("  job 2 (") and "units=[1]" in summary[2] and "killed by SIGKILL" in summary[2]
    assert f"hydra.sweep.dir={sweep}" in summary[3]
    assert (sweep / "0" / "results.json").is_file()
    assert not (sweep / "1").exists() and not (sweep / "2").exists()  # failed jobs that wrote nothing: no folder
    finished = digest(sweep / "0")

    again = cli(*args, cwd=tmp_path)  # the same command: only the failed jobs run
    assert again.returncode == 1 and "job 0 (" in again.stderr and "finished earlier: skipped" in again.stderr
    assert "error: 1 job(s) of the sweep failed" in again.stderr and "units=[99]" in again.stderr
    assert (sweep / "2" / "results.json").is_file() and not (sweep / "1").exists()
    fixed = [a.replace("units=[0],[99],[1]", "units=[9]") for a in args if a not in ("-m",)
             and not a.startswith("hydra.sweep.dir")]
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    launch_here(monkeypatch, *fixed, f"hydra.run.dir={sweep / '1'}")  # the bad job, its value fixed
    assert all(json.loads((sweep / j / "results.json").read_text())[0]["unit"] == u
               for j, u in (("0", 0), ("1", 9), ("2", 1)))
    assert digest(sweep / "0") == finished  # no file of a finished job changed


def test_a_sweep_in_which_nothing_ran_leaves_no_folder(tmp_path, monkeypatch, capsys):
    from dgnam import sweeps

    monkeypatch.chdir(tmp_path)
    (tmp_path / "multirun" / "sw").mkdir(parents=True)
    (tmp_path / "multirun" / "sw" / "multirun.yaml").write_text("hydra: {}\n")
    monkeypatch.setattr(sweeps, "FAILED", [sweeps.Failure(0, "units=[99]", "unit 99 is out of range")])
    with pytest.raises(SystemExit) as e:
        sweeps.finish(Path("multirun/sw"))
    assert e.value.code == 1 and not (tmp_path / "multirun").exists()  # nor its empty parent
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == ["error: 1 job(s) of the sweep failed:", "  job 0 (units=[99]): unit 99 is out of range"]


def launch_here(monkeypatch, *args: str) -> None:
    """``python visualize.py <args>``, run in this process as the script itself."""
    code = run_script(monkeypatch, "visualize.py", *args)
    if code:
        raise SystemExit(code)


def test_a_failed_command_changes_nothing_of_an_earlier_run_and_a_busy_folder_is_refused(tmp_path, monkeypatch,
                                                                                          capsys):
    from dgnam import rundirs

    monkeypatch.syspath_prepend(str(REPO / "tests"))
    run = tmp_path / "run"
    launch_here(monkeypatch, *CUSTOM, f"hydra.run.dir={run}")
    assert (run / ".dgnam-run").read_text().startswith("finished") and (run / "results.json").is_file()
    before = digest(run)
    capsys.readouterr()
    line = one_error_line(capsys, lambda: launch_here(monkeypatch, *CUSTOM, "units=[99]", f"hydra.run.dir={run}"))
    assert line.startswith("error: unit 99")  # a rerun that fails: the earlier run's files as they were
    assert {k: v[0] for k, v in digest(run).items()} == {k: v[0] for k, v in before.items()}

    claim = rundirs.claim(run)  # another command holds the folder
    try:
        line = one_error_line(capsys, lambda: launch_here(monkeypatch, *CUSTOM, "units=[1]", f"hydra.run.dir={run}"))
    finally:
        rundirs.abandon()
    assert "is in use by another dgnam command" in line and f"running {os.getpid()}" in line and claim.path == run
    assert {k: v[0] for k, v in digest(run).items()} == {k: v[0] for k, v in before.items()}


# ------------------------------------------------------------------------------------ 4. values
def test_every_boolean_key_takes_only_a_boolean(compose):
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import ValidationError

    from dgnam.ranges import VISUALIZE, boolean_keys, check_ranges

    keys = boolean_keys()
    assert {"model.compile", "output.png", "param.clamp", "data.flip", "export.half"} <= set(keys)
    cfg = compose(["method=dgnam"])
    present = [k for k in keys if OmegaConf.select(cfg, k, default="<absent>") != "<absent>"]
    assert len(present) >= 8, present
    typed = []
    for key in present:
        for bad in ("maybe", "no", 1):
            c = cfg.copy()
            try:
                with open_dict(c):
                    OmegaConf.update(c, key, bad)
            except ValidationError:  # a structured config's bool: OmegaConf itself refuses "maybe"
                typed.append(key)
                break
            with pytest.raises(DgnamValueError, match=f"^{key}={bad!r} must be true or false"):
                check_ranges(c, VISUALIZE)
    assert "model.compile" not in typed and len(typed) < len(present)
    check_ranges(cfg, VISUALIZE)  # the defaults themselves pass


def test_the_python_api_checks_its_arguments_as_the_cli_does():
    with pytest.raises(ValueError, match="image_size=0 must be an integer >= 8"):
        dgnam.visualize(cifar_net(), "logits", [0], steps=1, image_size=0)
    with pytest.raises(ValueError, match="output.progress='yes' must be true or false"):
        dgnam.visualize(cifar_net(), "logits", [0], steps=1, image_size=32, progress="yes")


def test_a_failed_view_leaves_no_temporary_folder(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    photo = Image.fromarray(np.full((40, 40, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="no_such_layer"):
        dgnam.activation_maps(CifarNet(), photo, ["no_such_layer"])
    with pytest.raises(ValueError):
        dgnam.invert(CifarNet(), photo, ["body.1"], steps=0)
    view = dgnam.activation_maps(CifarNet(), photo, ["body.1"], units="first:2")
    assert [p.name for p in tmp_path.iterdir()] == [view.folder.name]  # only the result's own folder


def test_an_animated_image_says_once_that_its_first_frame_is_used(tmp_path, caplog):
    from dgnam.io import load_image

    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with caplog.at_level("WARNING"):
        x = load_image(tmp_path / "a.gif")
        load_image(tmp_path / "a.gif")
    said = [r.getMessage() for r in caplog.records if "frames" in r.getMessage()]
    assert said == [f"{tmp_path / 'a.gif'} has 2 frames (an animation); its first frame is used"]
    assert abs(float(x.mean()) - 10 / 255) < 0.02


# ----------------------------------------------------------------------------------- 5. devices
@pytest.mark.parametrize("device, expect", [
    ("mps", "device 'mps' is not available here"), ("xpu", "device 'xpu' is not available here"),
    ("meta", "device 'meta' holds shapes without values"), ("cuda:7", "device 'cuda:7' is not available here"),
    ("banana", "unknown device 'banana'"),
])
def test_a_device_that_is_not_here_is_one_line_that_lists_those_that_are(compose, tmp_path, capsys, device, expect):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    cfg = compose([*CUSTOM, f"device={device}"])
    line = one_error_line(capsys, lambda: guarded(visualize.run)(cfg, str(tmp_path / "out")))
    assert expect in line and "available here: auto, cpu" in line, line


def test_a_model_on_the_meta_device_is_one_line():
    with torch.device("meta"):
        net = cifar_net()
    with pytest.raises(ValueError, match="its weights are on the meta device"):
        dgnam.visualize(net, "logits", [0], steps=1, image_size=32)


# ------------------------------------------------------------------------------- 6. error types
def test_errors_are_the_builtin_exceptions_python_users_catch(tmp_path):
    with pytest.raises(ValueError) as bad:
        dgnam.visualize(cifar_net(), "logits", [0], method="no_such_method")
    with pytest.raises(FileNotFoundError) as missing:
        dgnam.activation_maps(CifarNet(), tmp_path / "missing.jpg", ["body.1"])
    assert isinstance(bad.value, DgnamError) and isinstance(missing.value, DgnamFileNotFoundError)
    assert str(missing.value) == f"image file not found: {tmp_path / 'missing.jpg'}"
    assert issubclass(NonFiniteError, ValueError) and issubclass(dgnam.errors.RunDirInUseError, RuntimeError)


# ------------------------------------------------------------------------------------- 7. report
def _fake_run(folder: Path, arch: str, method: str = "lucid", steps: int = 64) -> Path:
    from omegaconf import OmegaConf

    from dgnam.io import save_png

    (folder / "logits").mkdir(parents=True)
    (folder / ".hydra").mkdir()
    save_png(torch.rand(3, 16, 16), folder / "logits" / "1.png")
    (folder / "results.json").write_text(json.dumps([{"method": method, "seed": 0, "layer": "logits", "unit": 1,
                                                      "label": "1", "kind": "class", "image": "logits/1.png",
                                                      "activation": 1.0}]))
    OmegaConf.save({"model": {"arch": arch, "weights_file": f"/w/{arch}.pth"}, "steps": steps, "method_name": method,
                    "output": {"png": True}, "device": "cpu"}, folder / ".hydra" / "config.yaml")
    return folder


def test_the_report_keeps_runs_of_two_models_apart_and_refuses_true_duplicates(tmp_path):
    from dgnam.eval.runs import gather_rows

    a, b = _fake_run(tmp_path / "a", "mobilenet_v2"), _fake_run(tmp_path / "b", "resnet18")
    rows = gather_rows([a, b])
    assert sorted(r["method"] for r in rows) == ["lucid@mobilenet_v2:mobilenet_v2", "lucid@resnet18:resnet18"]
    c = _fake_run(tmp_path / "c", "mobilenet_v2", steps=512)  # same model, another config
    assert sorted(r["method"] for r in gather_rows([a, c])) == ["lucid [steps=512]", "lucid [steps=64]"]
    again = _fake_run(tmp_path / "again", "mobilenet_v2")  # the same experiment run twice
    with pytest.raises(DgnamValueError, match="1 images are the same experiment in two runs .* report.duplicates"):
        gather_rows([a, again])
    kept = gather_rows([a, again], duplicates="last")
    assert [r["run"] for r in kept] == [str(again)] and kept[0]["method"] == "lucid"


# -------------------------------------------------------------------------------- 8. whole lines
def test_error_lines_keep_the_whole_reason_on_one_line():
    reason = "a library said this " + "and more, " * 30 + "and the end of the reason."
    assert first_line(ValueError(reason)) == reason  # ~330 characters: not cut at 160
    assert first_line(RuntimeError("Error(s) in loading:\n\tMissing key(s): 'a'.")) == "Error(s) in loading: Missing key(s): 'a'."
    long = first_line(ValueError("word " * 400))
    assert len(long) <= 602 and long.endswith(" …")
    assert str(DgnamValueError("one\nline")) == "one line" and "\n" not in str(DgnamFileNotFoundError("a\nb"))
