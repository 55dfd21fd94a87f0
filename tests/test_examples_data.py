"""Dataset examples: the running top k against a brute-force top k, the crop box against the receptive
field worked out by hand, a resumed pass against an uninterrupted one, refused checkpoints, unreadable
photos skipped and counted, bad input in one line, the mode end to end, and the shared MobileNetV2
on real photos."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import DATA, MOBILENET, TinyNet, needs_shared, run_script
from PIL import Image
from torch import nn

import dgnam
from dgnam.core.models import Target
from dgnam.errors import DgnamError
from dgnam.views.examples import engine
from dgnam.views.examples.source import open_examples_source
from dgnam.views.examples.topk import TopK

pytestmark = pytest.mark.usefixtures("one_thread")

N = 23  # photos in the folder (one of them unreadable)


def _photo(seed: int, size: tuple[int, int] = (40, 36)) -> Image.Image:
    """A random smooth-ish colour photo (no two alike)."""
    g = np.random.default_rng(seed)
    small = g.integers(0, 256, (size[1] // 4, size[0] // 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BICUBIC)


@pytest.fixture
def photos(tmp_path):
    """An image folder in class sub-folders (labels 0 and 1): 22 PNG photos, two of them the same
    picture (equal values: the lower index must come first), and one file that is not an image."""
    root = tmp_path / "photos"
    for c in ("cats", "dogs"):
        (root / c).mkdir(parents=True)
    for i in range(22):
        img = _photo(7 if i == 15 else i)  # photo 15 is photo 7 again
        img.save(root / ("cats" if i < 11 else "dogs") / f"p{i:02d}.png")
    (root / "dogs" / "p99.png").write_bytes(b"\x89PNG\r\n not really")
    return root


def tiny(net: nn.Module | None = None) -> Target:
    aliases = {"conv1": "features.0", "pool2": "features.5", "fc1": "classifier.1", "fc2": "classifier.2"}
    return Target(net or TinyNet(), mean=(0.5,) * 3, std=(0.25,) * 3, name="tiny", input_size=32, aliases=aliases,
                  categories=[f"class{i}" for i in range(10)])


def brute_force(target: Target, images: torch.Tensor, keep: list[int], layer: str, units: list[int], k: int):
    """Top k by sorting every image's full activations at once: (values, indices, positions or None)."""
    with torch.no_grad():
        act = target(images, [layer])[layer][:, units].float()
    flat = act.flatten(2) if act.dim() == 4 else act[..., None]
    best, arg = flat.max(-1)  # (B, U)
    out_v, out_i, out_p = [], [], []
    for u in range(len(units)):
        order = np.lexsort((np.array(keep), -best[:, u].numpy()))[:k]  # value descending, then index
        out_v.append(best[order, u])
        out_i.append([keep[o] for o in order])
        w = act.shape[-1]
        out_p.append([[int(arg[o, u]) // w, int(arg[o, u]) % w] for o in order])
    return torch.stack(out_v), torch.tensor(out_i), (torch.tensor(out_p) if act.dim() == 4 else None)


def test_running_top_k_equals_a_brute_force_top_k(photos):
    target = tiny()
    source = open_examples_source(photos, 32)
    assert len(source) == N and source.label_names == ["cats", "dogs"]
    plans = engine.plan_units(target, ["conv1", "pool2", "fc1", "fc2"], "all", [3, 7], 32)
    state = engine.run_pass(target, source, plans, 5, batch_size=4, progress=False)
    assert state.done and state.seen == N - 1 and state.skipped == 1
    items = [source.item(i) for i in range(N)]
    keep = [i for i, (im, _) in enumerate(items) if im is not None]
    images = torch.stack([items[i][0] for i in keep])
    for plan in plans:
        topk, _ = state.layers[plan.layer]
        values, indices, positions = brute_force(target, images, keep, plan.layer, plan.units, 5)
        assert torch.equal(topk.indices, indices), plan.layer
        assert torch.allclose(topk.values, values, rtol=1e-5, atol=1e-6)
        assert topk.positions is None if positions is None else torch.equal(topk.positions, positions)
    fc2 = state.layers["fc2"][0]
    assert plans[-1].units == [3, 7] and fc2.indices.shape == (2, 5)


def test_ties_go_to_the_lower_index_whatever_the_batches():
    values = torch.tensor([[1.0], [3.0], [3.0], [2.0], [3.0], [0.5]])
    results = []
    for order in ([0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [4, 0, 2, 5, 1, 3]):
        t = TopK(1, 3, spatial=False)
        for a in range(0, 6, 2):
            idx = torch.tensor(order[a : a + 2])
            t.update(values[idx], idx, None)
        results.append(t.indices[0].tolist())
    assert results == [[1, 2, 4]] * 3


def test_histogram_counts_every_photo_in_edges_fixed_by_the_first_ones(photos):
    target = tiny()
    source = open_examples_source(photos, 32)
    plans = engine.plan_units(target, ["conv1", "fc1"], "first:6", None, 32)
    state = engine.run_pass(target, source, plans, 3, batch_size=4, bins=8, warmup=7, progress=False)
    images = torch.stack([im for im, _ in (source.item(i) for i in range(N)) if im is not None])
    for plan in plans:
        edges, counts = state.layers[plan.layer][1].export()
        with torch.no_grad():
            act = target(images, [plan.layer])[plan.layer][:, plan.units]
        v = (act.flatten(2).amax(-1) if act.dim() == 4 else act).numpy()  # (photos, units)
        assert edges.shape == (6, 8 + 3) and counts.shape == (6, 8 + 2)
        for u in range(6):
            e = edges[u].numpy()
            assert e[1] == pytest.approx(v[:7, u].min())  # the first 7 readable photos fix the edges
            assert e[0] == pytest.approx(v[:, u].min()) and e[-1] == pytest.approx(max(v[:, u].max(), e[-2]))
            want = [(v[:, u] < e[1]).sum()] + [((v[:, u] >= a) & (v[:, u] < b)).sum() for a, b in zip(e[1:-2], e[2:-1])] \
                + [(v[:, u] >= e[-2]).sum()]
            assert counts[u].tolist() == want and counts[u].sum() == N - 1


def test_crop_boxes_are_the_receptive_field_of_the_peak(photos):
    """One 3x3 conv: the box is the peak +- 1, clipped; then a stride-2 3x3 conv over it: 5 x 5 fields two
    pixels apart, starting two pixels before the unit's centre (worked out by hand)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1))
    target = Target(net, mean=(0.5,) * 3, std=(0.25,) * 3, name="convs", input_size=24)
    ex = dgnam.dataset_examples(target, photos, ["0", "1"], k=6, batch_size=8, image_size=24)
    for layer, box in (("0", lambda y, x: (y - 1, x - 1, y + 2, x + 2)),
                       ("1", lambda y, x: (2 * y - 2, 2 * x - 2, 2 * y + 3, 2 * x + 3))):
        lay = ex[layer]
        assert ex.doc["layers"][layer]["field"]["size"] == ([3, 3] if layer == "0" else [5, 5])
        for u in range(4):
            for (y, x), got in zip(lay.positions[u].tolist(), lay.boxes[u].tolist()):
                t, left, b, r = box(y, x)
                assert got == [max(t, 0), max(left, 0), min(b, 24), min(r, 24)]
        crops = ex.crops(layer, 2)
        assert [tuple(c.shape[1:]) for c in crops] == [(b - t, r - left) for t, left, b, r in lay.boxes[2].tolist()]
    boxes = [b for u in range(4) for b in ex["0"].boxes[u].tolist()]
    assert any(b[0] == 0 or b[1] == 0 or b[2] == 24 or b[3] == 24 for b in boxes)  # some were clipped


def _same(a, b) -> None:
    for layer in a.layers:
        x, y = a[layer], b[layer]
        assert torch.equal(x.indices, y.indices) and torch.equal(x.values, y.values), layer
        assert x.positions is None if y.positions is None else torch.equal(x.positions, y.positions)
        assert torch.equal(x.hist_edges, y.hist_edges) and torch.equal(x.hist_counts, y.hist_counts)


KW = dict(layers=["conv1", "pool2", "fc2"], units="all", k=4, batch_size=3, checkpoint_every=1, strips=False)


def test_a_stopped_pass_resumes_to_the_result_of_an_uninterrupted_one(photos, tmp_path):
    whole = dgnam.dataset_examples(tiny(), photos, **KW, out_dir=tmp_path / "a")
    out = tmp_path / "b"
    part = dgnam.dataset_examples(tiny(), photos, **KW, out_dir=out, max_batches=3)
    assert not part.finished and not (out / "examples.json").exists() and (out / engine.CHECKPOINT_NAME).is_file()
    rest = dgnam.dataset_examples(tiny(), photos, **KW, out_dir=out)
    assert rest.finished and rest.doc["pass"]["images"] == N - 9  # only what the checkpoint had not seen
    _same(whole, rest)
    assert rest.doc["layers"] == whole.doc["layers"]
    again = dgnam.dataset_examples(tiny(), photos, **KW, out_dir=out, resume=False, max_batches=1)
    assert not again.finished and not (out / "examples.json").exists()  # a new pass: the old result is gone


def test_ctrl_c_saves_the_state_and_a_second_call_resumes(photos, tmp_path, monkeypatch):
    whole = dgnam.dataset_examples(tiny(), photos, **KW, out_dir=tmp_path / "a")
    calls = {"n": 0}
    real = engine.unit_values

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 3 * 4 + 2:  # the fifth batch, second layer
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(engine, "unit_values", interrupted)
    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):  # no checkpoint before it: the one written as it stops
        dgnam.dataset_examples(tiny(), photos, **{**KW, "checkpoint_every": 100}, out_dir=out)
    monkeypatch.setattr(engine, "unit_values", real)
    saved = torch.load(out / engine.CHECKPOINT_NAME, weights_only=True)
    assert saved["next"] == 12 and not saved["done"] and not (out / "examples.json").exists()
    rest = dgnam.dataset_examples(tiny(), photos, **{**KW, "checkpoint_every": 100}, out_dir=out)
    assert rest.doc["pass"]["images"] == N - 12
    _same(whole, rest)


def test_a_checkpoint_of_other_settings_is_refused(photos, tmp_path):
    out = tmp_path / "b"
    dgnam.dataset_examples(tiny(), photos, **KW, out_dir=out, max_batches=2)
    before = (out / engine.CHECKPOINT_NAME).read_bytes()
    with pytest.raises(DgnamError, match=r"made for other settings \(k differ\); .*examples.resume=false") as e:
        dgnam.dataset_examples(tiny(), photos, **{**KW, "k": 5}, out_dir=out)
    assert "\n" not in str(e.value)
    other = TinyNet()
    other.classifier[2].bias.data += 1  # other weights, same architecture
    with pytest.raises(DgnamError, match=r"\(model differ\)"):
        dgnam.dataset_examples(tiny(other), photos, **KW, out_dir=out)
    assert (out / engine.CHECKPOINT_NAME).read_bytes() == before and not (out / "examples.json").exists()
    fresh = dgnam.dataset_examples(tiny(), photos, **{**KW, "k": 5}, out_dir=out, resume=False)
    assert fresh.finished and fresh.doc["k"] == 5 and fresh.doc["pass"]["images"] == N


def test_an_unreadable_photo_is_skipped_and_counted(photos, tmp_path, caplog):
    with caplog.at_level("WARNING"):
        ex = dgnam.dataset_examples(tiny(), photos, ["fc2"], "all", k=N, out_dir=tmp_path / "o", strips=False)
    bad = next(i for i in range(N) if ex.source.item(i)[0] is None)
    assert ex.doc["dataset"] | {"label_names": None} == {
        "source": str(photos), "count": N, "seen": N - 1, "skipped": 1, "skipped_first": [bad], "label_names": None}
    assert all(bad not in row["indices"] and len(row["indices"]) == N - 1 for row in ex.doc["layers"]["fc2"]["units"].values())
    lines = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert lines == [f"skipped 1 unreadable images of {N} (first indices: {bad})"]


def _broken_folder(tmp_path):
    root = tmp_path / "broken"
    root.mkdir()
    for i in range(3):
        (root / f"x{i}.jpg").write_bytes(b"not a jpeg")
    return root


BAD = [
    ("empty", dict(), "holds no images"),
    ("unit", dict(layers=["pool2"], units=[16]), "pool2: unit 16 is out of range: the layer has 16 units (valid: 0 to 15)"),
    ("k", dict(k=0), "examples.k=0 must be an integer >= 1"),
    ("layer", dict(layers=["conv9"]), "unknown layer 'conv9' for tiny (did you mean conv1?); valid layers: conv1, pool2"),
    ("unreadable", dict(), "no readable image in"),
]


@pytest.mark.parametrize(("case", "kw", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_writes_nothing(photos, tmp_path, case, kw, message):
    data = {"empty": tmp_path / "none", "unreadable": _broken_folder(tmp_path)}.get(case, photos)
    if case == "empty":
        data.mkdir()
    out = tmp_path / "out"
    out.mkdir()  # a folder of the user's: left as it was
    with pytest.raises(DgnamError) as e:
        dgnam.dataset_examples(tiny(), data, **{"layers": ["conv1"], **kw}, out_dir=out)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert list(out.iterdir()) == []


def _parquet(path, photos_dir):
    files = sorted(p for p in photos_dir.rglob("*.png"))
    blobs, labels = [], []
    for f in files:
        buf = io.BytesIO()
        try:
            Image.open(f).convert("RGB").save(buf, format="JPEG")
            blobs.append(buf.getvalue())
        except OSError:
            blobs.append(f.read_bytes())  # the broken one stays broken
        labels.append(0 if f.parent.name == "cats" else 1)
    images = pa.array([{"bytes": b, "path": f.name} for b, f in zip(blobs, files)],
                      type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"image": images, "label": pa.array(labels, pa.int64())}), path, row_group_size=8)
    (path.parent / "classes.json").write_text(json.dumps([{"label": 0, "name": "cat"}, {"label": 1, "name": "dog"}]))
    return path


def test_the_mode_end_to_end(photos, tmp_path, monkeypatch, capsys):
    (tmp_path / "shard").mkdir()
    data = _parquet(tmp_path / "shard" / "train-00000-of-00001.parquet", photos)
    out = tmp_path / "run"
    code = run_script(monkeypatch, "visualize.py", "experiment=dataset_examples", "model=custom",
                      "model._target_=nets.cifar_net", "image_size=32", "layers=[body.0,body.5,logits]",
                      "units=first:3", "examples.classes=[2,5]", "examples.k=4", "batch_size=5",
                      f"examples.data={data}", "output.progress=false", f"hydra.run.dir={out}")
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "examples.json").read_text())
    assert doc["version"] == 1 and doc["k"] == 4 and doc["image_size"] == 32
    assert doc["dataset"] | {"skipped_first": None} == {
        "source": str(data), "count": N, "seen": N - 1, "skipped": 1, "skipped_first": None, "label_names": ["cat", "dog"]}
    assert list(doc["layers"]) == ["body.0", "body.5", "logits"]
    conv, logits = doc["layers"]["body.0"], doc["layers"]["logits"]
    assert conv["shape"] == [8, 32, 32] and conv["kind"] == "conv" and conv["field"]["size"] == [3, 3]
    assert logits["kind"] == "linear" and logits["field"] is None and list(logits["units"]) == ["2", "5"]
    rows = pq.read_table(out / "examples.parquet").to_pylist()
    assert len(rows) == (3 + 3 + 2) * 4
    for layer, node in doc["layers"].items():
        for u, row in node["units"].items():
            assert row["values"] == sorted(row["values"], reverse=True) and len(row["indices"]) == 4
            mine = [r for r in rows if r["layer"] == layer and r["unit"] == int(u)]
            assert [r["index"] for r in mine] == row["indices"] and [r["rank"] for r in mine] == [0, 1, 2, 3]
            assert [r["label"] for r in mine] == row["labels"] and set(row["labels"]) <= {0, 1}
            assert [r["value"] for r in mine] == pytest.approx(row["values"])
            strip = Image.open(out / row["strip"])
            assert strip.size[0] >= 4 * 112 and strip.size[1] >= (2 if node["kind"] == "conv" else 1) * 112
            for rel, box in zip(row["crops"], row["boxes"] or [[0, 0, 32, 32]] * 4):
                w, h = Image.open(out / rel).size
                assert max(w, h) == 128 and abs(w / h - (box[3] - box[1]) / (box[2] - box[0])) < 0.1
            assert sum(row["hist"]["counts"]) == N - 1 and len(row["hist"]["edges"]) == len(row["hist"]["counts"]) + 1


@needs_shared(MOBILENET)
@needs_shared(DATA)
def test_the_shared_mobilenet_finds_each_class_among_real_photos(tmp_path):
    """Among 5 validation photos each of four classes and 40 others, each class logit's top photo is
    of that class, and its top 5 hold at least three of the class's five."""
    classes = [1, 130, 340, 980]  # goldfish, flamingo, zebra, volcano
    tab = pq.read_table(DATA / "valid-00000-of-00001.parquet")
    labels = np.array(tab.column("label").to_pylist())
    rows = np.flatnonzero(np.isin(labels, classes)).tolist() + np.flatnonzero(~np.isin(labels, classes))[::123][:40].tolist()
    data = tmp_path / "valid.parquet"
    pq.write_table(tab.take(sorted(rows)), data)
    shutil.copy(DATA / "classes.json", tmp_path / "classes.json")
    net = __import__("torchvision").models.mobilenet_v2()
    net.load_state_dict(torch.load(MOBILENET, weights_only=True))
    ex = dgnam.dataset_examples(net, data, ["logits"], classes, k=5, mean=(0.5,) * 3, std=(0.5,) * 3,
                                image_size=160, batch_size=30, strips=False, device="cpu")
    lay = ex["logits"]
    assert lay.labels[:, 0].tolist() == classes
    assert [(lay.labels[r] == c).sum().item() >= 3 for r, c in enumerate(classes)] == [True] * 4


def test_units_whose_examples_tie_at_a_clipped_value_are_named(photos, tmp_path, caplog):
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Hardtanh(0.0, 1.0))  # unit 0 saturates on every photo, unit 1 never
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([10.0, 0.01])[:, None, None, None].expand(2, 3, 1, 1))
        net[0].bias.zero_()
    target = Target(net, mean=(0.5,) * 3, std=(0.25,) * 3, name="clipped", input_size=32)
    with caplog.at_level("WARNING"):
        ex = dgnam.dataset_examples(target, photos, ["1"], k=4, strips=False, out_dir=tmp_path / "o")
    assert ex.doc["layers"]["1"]["tied_units"] == [0]
    assert ex["1"].values[0].tolist() == [1.0] * 4 and ex["1"].indices[0].tolist() == [0, 1, 2, 3]
    assert any("1: 1 of 2 units have 4 examples of one value (1 for unit 0" in r.getMessage() for r in caplog.records)
