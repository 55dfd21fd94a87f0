"""docs/errors.md lists mistakes and the one line each gives; this test produces every line from the
code and fails when the page differs (``DGNAM_UPDATE_DOCS=1 pytest tests/test_errors_doc.py`` rewrites
the table)."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import REPO

from dgnam import ranges
from dgnam.errors import DgnamError

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402
from train_generator import run as train_run  # noqa: E402

DOC = REPO / "docs" / "errors.md"
R = ["model=alexnet", "model.weights=null"]  # random weights: no download
TINY = ["encoder=mobilenet_v2_random", "data=synthetic", "trainer=smoke", "resolution=64"]

# (entry script, arguments shown, arguments added to run it offline and small)
CASES: list[tuple[str, list[str], list[str]]] = [
    ("visualize.py", ["objectiv=logit"], []),
    ("visualize.py", ["output.pgn=false"], []),
    ("visualize.py", ["method=lucidd"], []),
    ("visualize.py", ["-m", "method=pixel,lucidd"], []),
    ("visualize.py", ["priors.sharpen=1"], []),
    ("visualize.py", ["priors.jitter=abc"], []),
    ("visualize.py", ["units=[1,2"], []),
    ("visualize.py", ["hydra.run.dir=/proc/run"], []),
    ("visualize.py", ["model=alexnet", "layers=conv6"], ["model.weights=null"]),
    ("visualize.py", ["layers=logits", "units=[bananas]"], R),
    ("visualize.py", ["units=[]"], R),
    ("visualize.py", ["units=[1,1]"], R),
    ("visualize.py", ["optimizer.lr=nan"], R),
    ("visualize.py", ["optimizer.lr=-1"], R),
    ("visualize.py", ["priors.decay=1.5"], R),
    ("visualize.py", ["method=dgnam", "param.clamp_k=-1"], R),
    ("visualize.py", ["method=dgnam", "param.decay=1.5"], R),
    ("visualize.py", ["grad_norm=l3"], R),
    ("visualize.py", ["class_score=softmax"], R),
    ("visualize.py", ["class_score=log_softmax", "layers=conv5"], R),
    ("visualize.py", ["init.kind=image", "init.path=missing.png"], R),
    ("visualize.py", ["model.weights_file=missing.pth"], ["model=alexnet", "model.weights=null"]),
    ("visualize.py", ["device=cuda:7"], R),
    ("visualize.py", ["device=mps"], R),
    ("visualize.py", ["model.compile=maybe"], R),
    ("visualize.py", ["method=yosinski", "optimizer.lr=3e38"], [*R, "steps=2", "image_size=64", "units=[0]"]),
    ("visualize.py", ["experiment=report", "report.runs=[.]", "report.duplicates=keep"], []),
    ("visualize.py", ["init.low=0.8", "init.high=0.2"], R),
    ("visualize.py", ["method=dgnam_deep", "param.prior=mobilenet_v2_deep"], R),
    ("visualize.py", ["method=dgnam_deep", "param.prior=https://127.0.0.1:9/vgg16_fc6.pt"], R),
    ("visualize.py", ["method=dgnam_deep", "param.prior=http://127.0.0.1:9/vgg16_fc6.pt", f"param.prior_sha256={'0' * 64}"], R),
    ("visualize.py", ["experiment=dataset_examples", "layers=[conv1]", "units=[64]"], R),
    ("visualize.py", ["experiment=dataset_examples", "examples.data=missing/photos"], [*R, "layers=[conv1]"]),
    ("visualize.py", ["experiment=dataset_examples", "examples.k=0"], R),
    ("visualize.py", ["model=custom", "model._target_=mypkg.nets.build"], []),
    ("visualize.py", ["model=timm", "model.arch=vit_smal_patch16_224"], []),
    ("visualize.py", ["experiment=atlas", "atlas.methods=[lucid,lucidd]"], []),
    ("visualize.py", ["experiment=atlas", "atlas.examples.run=missing"], []),
    ("visualize.py", ["experiment=atlas_gather", "atlas.sources=[.]"], []),
    ("train_generator.py", ["trainer=smok"], []),
    ("train_generator.py", ["optimizer_g.lr=nan"], TINY),
    ("train_generator.py", ["loss.weights.image=-1"], TINY),
    ("train_generator.py", ["data.crop_scale=[0.9,0.1]"], TINY),
    ("train_generator.py", ["trainer.max_steps=abc"], TINY),
    ("train_generator.py", ["ckpt_path=missing.ckpt"], TINY),
    ("train_generator.py", ["encoder=custom", "encoder.code_layer=fc6"], ["data=synthetic", "trainer=smoke"]),
]


def error_line(compose, script: str, shown: list[str], extra: list[str], capsys, out) -> str:
    """The line the entry script prints for these arguments (run in-process, nothing written)."""
    from dgnam.cli import check_overrides

    args = [*shown, *extra]
    name = script.removesuffix(".py")
    capsys.readouterr()
    try:
        if script == "visualize.py":
            visualize.check_prior_overrides(args)
        check_overrides(REPO / "conf", name, args)
    except SystemExit:
        return capsys.readouterr().err.strip()
    cfg = compose([a for a in args if a != "-m" and not a.startswith("hydra.")], name=name)
    with pytest.raises(DgnamError) as e:
        if script == "visualize.py":
            visualize.run(cfg, str(out))
        else:
            train_run(cfg, out_dir=out)
    return f"error: {e.value}"


def table(rows: list[tuple[str, str]]) -> str:
    out = ["| command | what it prints (stderr, exit status 2) |", "| --- | --- |"]
    for cmd, line in rows:
        cell = line.replace("|", "\\|")
        out.append(f"| `{cmd}` | `{cell}` |")
    return "\n".join(out)


def block(text: str, tag: str) -> tuple[str, str, str]:
    """(before, inside, after) of the ``<!-- tag:begin -->`` ... ``<!-- tag:end -->`` block."""
    begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
    head, rest = text.split(begin, 1)
    inside, tail = rest.split(end, 1)
    return head + begin, inside.strip(), end + tail


def check_or_update(tag: str, want: str) -> None:
    head, have, tail = block(DOC.read_text(), tag)
    if os.environ.get("DGNAM_UPDATE_DOCS") and have != want:
        DOC.write_text(f"{head}\n{want}\n{tail}")
        pytest.fail(f"docs/errors.md ({tag}) rewritten; check the diff and rerun without DGNAM_UPDATE_DOCS")
    assert have == want, f"docs/errors.md ({tag}) is out of date: DGNAM_UPDATE_DOCS=1 pytest tests/test_errors_doc.py"


def test_the_errors_page_shows_what_the_code_prints(compose, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths in the cases (missing.png, ...) resolve here
    rows = []
    for i, (script, shown, extra) in enumerate(CASES):
        line = error_line(compose, script, shown, extra, capsys, tmp_path / f"run{i}")
        assert line.startswith("error: ") and "\n" not in line, line
        rows.append((f"python {script} {' '.join(shown)}", line))
    check_or_update("errors", table(rows))


def test_the_errors_page_lists_every_checked_number():
    want = "\n\n".join([f"**`visualize.py`**\n\n{ranges.table(ranges.VISUALIZE)}",
                          f"**`train_generator.py`**\n\n{ranges.table(ranges.TRAIN)}"])
    check_or_update("ranges", want)
