"""Mistakes at the boundary: one line on stderr naming the bad value (and the valid choices), exit
status 2, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_script
from PIL import Image

from dgnam.errors import DgnamError

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402
from train_generator import run as train_run  # noqa: E402

TINY_TRAIN = [
    "encoder=mobilenet_v2_random", "data=synthetic", "trainer=smoke", "resolution=64", "threads=1",
    "generator.fc=[16]", "generator.width=0.0625", "discriminator.spec.code_fc=[16]",
    "discriminator.spec.joint_fc=[16]", "discriminator.spec.image_fc=[16]",
    "discriminator.spec.convs=[[4,7,4],[8,3,2]]", "code_stats.max_images=16", "grid_images=4",
]
SMALL = ["model=alexnet", "model.weights=null", "steps=1", "image_size=64", "batch_size=1", "units=[0]",
         "output.progress=false"]


def cli(script: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)


def one_line(p: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, p.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("args, expect", [
    (["objectiv=logit"], "unknown key 'objectiv'"),
    (["output.pgn=false"], "unknown key 'output.pgn' (did you mean output.png?)"),
    (["method=lucidd"], "unknown method 'lucidd' (did you mean lucid?); valid: dgnam,"),
    (["-m", "method=pixel,lucidd"], "unknown method 'lucidd'"),
    (["units=[1,2"], "cannot parse override 'units=[1,2'"),
    (["priors.jitter=abc"], "priors.jitter"),
])
def test_a_mistyped_override_is_one_line(tmp_path, monkeypatch, capsys, args, expect):
    monkeypatch.chdir(tmp_path)
    code = run_script(monkeypatch, "visualize.py", *args, f"hydra.run.dir={tmp_path / 'run'}")
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], lines
    assert not (tmp_path / "run").exists() and not (tmp_path / "outputs").exists()


def test_a_mistyped_training_override_is_one_line(tmp_path):
    line = one_line(cli("train_generator.py", "trainer=smok", cwd=tmp_path))
    assert "unknown trainer 'smok' (did you mean smoke?)" in line
    assert not (tmp_path / "outputs").exists()


def test_a_bad_dgnam_cpu_bf16_is_its_own_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DGNAM_CPU_BF16", "yes")
    code = run_script(monkeypatch, "visualize.py", *SMALL, f"hydra.run.dir={tmp_path / 'run'}")
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (after the random-weights warning)
    assert code == 2 and last.startswith("error: DGNAM_CPU_BF16='yes'; valid: 0"), last  # not a layer's size error
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["under a file", "under /proc"])
def test_a_run_directory_that_cannot_be_created_is_one_line(tmp_path, monkeypatch, capsys, where):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    run_dir = blocker / "run" if where == "under a file" else Path("/proc/dgnam-run")
    monkeypatch.chdir(tmp_path)
    assert run_script(monkeypatch, "visualize.py", *SMALL, f"hydra.run.dir={run_dir}") == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot create the run directory" in lines[0] and str(run_dir) in lines[0]


@pytest.mark.parametrize("over, expect", [
    (["optimizer.lr=nan"], "optimizer.lr=nan must be a finite number"),
    (["optimizer.lr=-1"], "optimizer.lr=-1 must be a number > 0"),
    (["optimizer=sgd", "optimizer.lr=nan"], "optimizer.lr=nan"),
    (["optimizer=sgd", "optimizer.lr=0"], "optimizer.lr=0 must be a number > 0"),
    (["+optimizer.betas=[0.9,1.5]"], "optimizer.betas[1]=1.5 must be a number in [0, 1)"),
    (["priors.tv=inf"], "priors.tv=inf must be a finite number"),
    (["units=[]"], "units=[] selects no unit"),
    (["units=[1,1]"], "units lists unit 1 twice"),
    (["init.low=0.8", "init.high=0.2"], "0 <= low <= high <= 1"),
    (["output.fps=0"], "output.fps=0 must be an integer >= 1"),
    (["output.grid_cols=-2"], "output.grid_cols=-2 must be an integer >= 1"),
    (["input_resize=0"], "input_resize=0 must be an integer >= 8 or null"),
    (["layers=logits", "units=[1,goldfish]"], "twice"),
])
def test_bad_numbers_and_units_are_refused_before_any_work(compose, tmp_path, over, expect):
    cfg = compose([*SMALL, *over])
    with pytest.raises(DgnamError) as e:
        visualize.run(cfg, str(tmp_path / "run"))
    assert expect in str(e.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("over, expect", [
    (["optimizer_g.lr=nan"], "optimizer_g.lr=nan must be a finite number"),
    (["optimizer_d.lr=-1"], "optimizer_d.lr=-1 must be a number > 0"),
    (["loss.weights.image=-1"], "loss.weights.image=-1"),
    (["grad_clip_g=0"], "grad_clip_g=0 must be a number > 0"),
    (["code_noise=-0.5"], "code_noise=-0.5"),
    (["data.batch_size=0"], "data.batch_size=0 must be an integer >= 1"),
    (["data.crop_scale=[0.9,0.1]"], "data.crop_scale=[0.9, 0.1] must be [low, high]"),
    (["generator.width=-1"], "generator.width=-1 must be a number > 0"),
    (["trainer.max_steps=abc"], "trainer.max_steps='abc' must be an integer >= 1 (or -1)"),
])
def test_bad_training_numbers_are_refused_before_any_work(compose, tmp_path, over, expect):
    cfg = compose([*TINY_TRAIN, *over], name="train_generator")
    with pytest.raises(DgnamError) as e:
        train_run(cfg, out_dir=tmp_path / "run")
    assert expect in str(e.value)
    assert not (tmp_path / "run").exists()


def test_resuming_a_checkpoint_of_another_shape_stops_before_lightning(compose, tmp_path):
    first = train_run(compose(TINY_TRAIN, name="train_generator"), out_dir=tmp_path / "a")
    ckpt = first["last_ckpt"]
    assert ckpt and Path(ckpt).is_file()
    other = [*TINY_TRAIN, "generator.fc=[32]", f"ckpt_path={ckpt}"]
    with pytest.raises(DgnamError, match="does not fit this config"):
        train_run(compose(other, name="train_generator"), out_dir=tmp_path / "b")
    assert not (tmp_path / "b" / "tb").exists() and not (tmp_path / "b" / "csv").exists()


def test_a_16_bit_grayscale_image_is_scaled_not_clipped(tmp_path):
    from dgnam.io import load_image

    ramp = np.linspace(0, 65535, 64 * 256).reshape(64, 256).astype(np.uint16)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    x = load_image(path)
    assert x.shape == (3, 64, 256)
    assert abs(float(x.mean()) - 0.5) < 0.01 and float(x.min()) == 0.0 and float(x.max()) == 1.0


@pytest.mark.parametrize("standardize", ["true", "false"])
def test_a_folder_of_corrupt_images_stops_before_training(compose, tmp_path, standardize):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"img{i}.jpg").write_bytes(b"not a jpeg")
    over = [*TINY_TRAIN, "data=imagenet_folder", f"data.train={photos}", "data.val=null", "data.cache=false",
            f"generator.standardize_input={standardize}"]
    with pytest.raises(DgnamError, match="all 3 items were skipped"):
        train_run(compose(over, name="train_generator"), out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "tb").exists()


def test_resuming_into_the_same_run_directory_keeps_every_logged_row(compose, tmp_path):
    import csv

    run_dir = tmp_path / "run"
    first = train_run(compose([*TINY_TRAIN, "trainer.max_steps=4", "trainer.log_every_n_steps=1"],
                              name="train_generator"), out_dir=run_dir)
    metrics = run_dir / "csv" / "metrics.csv"
    before = list(csv.DictReader(open(metrics)))
    assert before
    train_run(compose([*TINY_TRAIN, "trainer.max_steps=8", "trainer.log_every_n_steps=1",
                       f"ckpt_path={first['last_ckpt']}"], name="train_generator"), out_dir=run_dir)
    after = list(csv.DictReader(open(metrics)))
    assert len(after) > len(before)
    for old, new in zip(before, after):  # the earlier rows, unchanged (columns may have been added)
        assert {k: v for k, v in old.items() if v} == {k: v for k, v in new.items() if k in old and v}


def test_resuming_after_a_kill_logs_no_step_twice_and_keeps_the_replaced_rows(compose, tmp_path):
    """A run killed some steps after its last checkpoint: the resumed run logs those steps again;
    the rows the killed run logged after the checkpoint move to metrics.replaced.csv."""
    import csv
    import shutil

    run_dir = tmp_path / "run"
    over = [*TINY_TRAIN, "trainer.log_every_n_steps=1"]
    first = train_run(compose([*over, "trainer.max_steps=4"], name="train_generator"), out_dir=run_dir)
    mid = tmp_path / "mid.ckpt"
    shutil.copy(first["last_ckpt"], mid)  # the last checkpoint before the kill
    train_run(compose([*over, "trainer.max_steps=8", f"ckpt_path={first['last_ckpt']}"], name="train_generator"),
              out_dir=run_dir)  # the steps the killed run did after it
    metrics = run_dir / "csv" / "metrics.csv"
    logged = list(csv.DictReader(open(metrics)))
    resumes_at = first["iterations"]  # the step column counts iterations
    after_mid = [r for r in logged if r["step"] and int(r["step"]) >= resumes_at]
    assert after_mid
    train_run(compose([*over, "trainer.max_steps=8", f"ckpt_path={mid}"], name="train_generator"), out_dir=run_dir)
    rows = list(csv.DictReader(open(metrics)))
    keyed = [(r["step"], *sorted(k for k, v in r.items() if v and k != "step")) for r in rows]
    assert len(keyed) == len(set(keyed)), "a step was logged twice with the same metrics"
    replaced = list(csv.DictReader(open(run_dir / "csv" / "metrics.replaced.csv")))
    assert [r["step"] for r in replaced] == [r["step"] for r in after_mid]
    assert [r for r in rows if r["step"] and int(r["step"]) < resumes_at] == \
        [r for r in logged if r["step"] and int(r["step"]) < resumes_at]


class InterruptAt:
    """A callback that presses Ctrl-C after ``n`` training batches (Hydra target of the test below)."""

    def __new__(cls, n: int):
        from lightning.pytorch.callbacks import Callback

        class _Stop(Callback):
            def on_train_batch_end(self, trainer, *_a):
                if trainer.fit_loop.epoch_loop._batches_that_stepped >= n:
                    raise KeyboardInterrupt

        return _Stop()


def test_ctrl_c_saves_the_training_state_and_the_resumed_run_loses_nothing(compose, tmp_path, capsys):
    import csv

    run_dir = tmp_path / "run"
    over = [*TINY_TRAIN, "trainer.log_every_n_steps=1", "trainer.max_steps=-1", "trainer.max_epochs=50"]
    with pytest.raises(KeyboardInterrupt):
        train_run(compose([*over, "+callbacks.stop._target_=test_boundary.InterruptAt", "+callbacks.stop.n=5"],
                          name="train_generator"), out_dir=run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"interrupted: the training state is in {last}; resume with ckpt_path={last}" in capsys.readouterr().err
    state = torch.load(last, weights_only=True)
    assert state["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"] == 5
    before = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    train_run(compose([*TINY_TRAIN, "trainer.log_every_n_steps=1", "trainer.max_steps=16", f"ckpt_path={last}"],
                      name="train_generator"), out_dir=run_dir)
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    steps = [int(r["step"]) for r in rows if r.get("train/total")]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 7  # every iteration once, none lost
    assert rows[: len(before)] == before or all(a["step"] == b["step"] for a, b in zip(before, rows))


class _DiskFull:
    def __reduce__(self):
        raise OSError(28, "No space left on device")


def test_a_checkpoint_that_cannot_be_written_keeps_the_last_good_one(tmp_path):
    from dgnam.generator.checkpoints import AtomicCheckpointIO

    ck = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, ck)
    good = ck.read_bytes()
    with pytest.raises(DgnamError, match="cannot write checkpoint .*No space left on device.*last good checkpoint"):
        io.save_checkpoint({"state_dict": {"w": _DiskFull()}}, ck)
    assert ck.read_bytes() == good
    assert sorted(p.name for p in ck.parent.iterdir()) == ["last.ckpt"]  # no partial file


def test_training_on_a_full_disk_stops_with_one_line_and_keeps_the_log(compose, tmp_path, monkeypatch):
    import dgnam.io as io

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.torch, "save", full)
    run_dir = tmp_path / "run"
    with pytest.raises(DgnamError, match="cannot write checkpoint .*No space left"):
        train_run(compose([*TINY_TRAIN, "trainer.log_every_n_steps=1"], name="train_generator"), out_dir=run_dir)
    assert not [p for p in (run_dir / "checkpoints").glob("*")]  # nothing partial
    assert (run_dir / "csv" / "metrics.csv").is_file()


def test_torch_s_failed_write_on_a_full_disk_is_an_oserror_and_leaves_no_file(tmp_path, monkeypatch):
    """torch's zip writer reports a full disk as a RuntimeError ("unexpected pos ..."); save_torch
    raises it as ENOSPC with the file's name, and removes the partial file."""
    import errno
    import shutil

    import dgnam.io as io

    def failing(obj, f):
        open(f, "wb").write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 171008 vs 170896")

    monkeypatch.setattr(io.torch, "save", failing)
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(OSError) as e:
        io.save_torch({"w": torch.ones(1)}, tmp_path / "x.pt")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_anywhere_is_one_line_and_exit_2(capsys):
    """A full disk that reaches the entry point (TensorBoard's writer, any output) is one line,
    exit status 2; the writer thread's own traceback is not printed."""
    import errno
    import threading

    from dgnam.cli import _exit_on_user_error

    def run():
        t = threading.Thread(target=lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
        t.start()
        t.join()
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SystemExit) as e:
        _exit_on_user_error(run)()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: cannot write under ")
    assert "No space left on device (disk full?)" in err and "Traceback" not in err
    with pytest.raises(OSError):  # another OSError is not a user error: it keeps its traceback
        _exit_on_user_error(lambda: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))()


def test_the_decodable_check_leaves_the_random_streams_alone(compose):
    """check_decodable reads a batch (random crops and flips) before training; the run must draw
    the same numbers after it as without it (same seed, same bytes)."""
    import random

    from hydra.utils import instantiate

    from dgnam.generator.train import check_decodable

    dm = instantiate(compose(TINY_TRAIN, name="train_generator").data, resolution=64)
    dm.setup("fit")

    def draws(check: bool) -> tuple:
        torch.manual_seed(0)
        random.seed(0)
        np.random.seed(0)
        if check:
            check_decodable(dm)
        return torch.rand(3).tolist(), random.random(), float(np.random.rand())

    assert draws(True) == draws(False)


def test_a_run_that_fails_at_once_leaves_no_outputs_folder(tmp_path, monkeypatch, capsys):
    """Hydra makes outputs/<name>/<time>/ before dgnam sees the config; on a user error all of it goes."""
    monkeypatch.chdir(tmp_path)
    args = ("model=alexnet", "model.weights=null", "layers=conv99")
    assert run_script(monkeypatch, "visualize.py", *args) == 2
    assert "error: unknown layer 'conv99'" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "outputs").exists()
    keep = tmp_path / "outputs" / "am" / "earlier"
    keep.mkdir(parents=True)  # folders that hold something stay
    assert run_script(monkeypatch, "visualize.py", *args) == 2
    assert keep.is_dir() and sorted(p.name for p in (tmp_path / "outputs" / "am").iterdir()) == ["earlier"]


def test_a_parquet_whose_image_column_holds_strings_stops_before_training(compose, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    photo = tmp_path / "real.png"
    Image.new("RGB", (8, 8)).save(photo)
    table = pa.table({"image": [str(photo)] * 4, "label": [0, 1, 2, 3]})  # paths as strings: not images
    pq.write_table(table, tmp_path / "train.parquet")
    over = [*TINY_TRAIN, "data=imagenet50", f"data.train={tmp_path / 'train.parquet'}", "data.val=null",
            "data.cache=false"]
    with pytest.raises(DgnamError, match="all 4 items were skipped"):
        train_run(compose(over, name="train_generator"), out_dir=tmp_path / "run")


def test_a_validation_interval_longer_than_an_epoch_stops_before_lightning(compose, tmp_path):
    cfg = compose([*TINY_TRAIN, "trainer.val_check_interval=400"], name="train_generator")
    with pytest.raises(DgnamError, match="val_check_interval=400 is more than the 4 training batches"):
        train_run(cfg, out_dir=tmp_path / "run")
    assert not any((tmp_path / "run" / d).exists() for d in ("tb", "csv", "checkpoints"))
