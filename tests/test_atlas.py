"""experiment=atlas: a static site of a model's units, grown incrementally, sharded and gathered.

Every atlas here is tiny: the CIFAR-style net of tests/nets.py, 32-px images, two cheap methods with
3 steps, and a made-up examples.json (tests/atlas_fixtures.py) for the dataset examples."""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from atlas_fixtures import SIZE, examples_run, photos
from browser import Browser, find_chromium
from conftest import REPO

import dgnam.atlas.compute as C
from dgnam.atlas import GatherCallback
from dgnam.atlas.html import histogram
from dgnam.errors import DgnamError

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", '<i>odd & "quoted"</i>']


@pytest.fixture
def data(tmp_path):
    """The photos and an examples run over them for body.3 (conv) and head (the logits)."""
    src = photos(tmp_path / "photos")
    run = examples_run(tmp_path / "exrun", src, {"body.3": (16, True), "head": (10, False)})
    names = tmp_path / "names.txt"
    names.write_text("\n".join(NAMES) + "\n")
    return {"photos": src, "run": run, "names": names}


def overrides(data, *extra):
    return ["experiment=atlas", "model=custom", "model._target_=nets.cifar_net", "model.input_size=32",
            f"model.class_names={data['names']}", "layers=[body.0,body.3,head]", "units=first:3", "~atlas.units",
            "atlas.methods=[pixel,lucid]", "steps=3", "image_size=32", "batch_size=2", "atlas.card_size=24",
            "atlas.examples.data=null", f"atlas.examples.run={data['run']}", "atlas.model_name=null", "device=cpu",
            "output.progress=false", *extra]


@pytest.fixture
def counted(monkeypatch):
    """Every call of dgnam.visualize the atlas makes: (method, layer, units)."""
    calls = []
    real = C.visualize

    def spy(target, layer, units, **kw):
        calls.append((kw["method"], layer, tuple(units)))
        return real(target, layer, units, **kw)

    monkeypatch.setattr(C, "visualize", spy)
    return calls


def build(compose, data, out, *extra):
    return visualize.run(compose(overrides(data, *extra)), str(out))


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("href", "src") and v]


def page_links(page: Path) -> Links:
    p = Links()
    p.feed(page.read_text())
    return p


def test_every_page_and_link_resolves_in_chromium(compose, data, tmp_path):
    out = tmp_path / "atlas"
    build(compose, data, out, "+atlas.units={head: [0, 1, 9]}")
    pages = sorted(out.rglob("*.html"))
    # the index, 3 layer pages, 9 unit pages
    assert len(pages) == 1 + 3 + 9 and (out / "index.html") in pages
    for page in pages:
        for link in page_links(page).links:
            assert not re.match(r"^[a-z]+:", link), f"{page}: {link} is not a relative link"
            assert (page.parent / link).resolve().is_file(), f"{page.relative_to(out)} links to missing {link}"
    # neighbours: unit 1 of body.3 links to units 0 and 2, both neighbouring layers, its layer, the index
    links = page_links(out / "units" / "body.3" / "1.html").links
    for want in ("../../units/body.3/0.html", "../../units/body.3/2.html", "../../layers/body.0.html", "../../layers/head.html", "../../layers/body.3.html",
                 "../../index.html"):
        assert want in links, want
    # a class name is text, never markup
    head = (out / "units" / "head" / "9.html").read_text()
    assert "&lt;i&gt;odd &amp; &quot;quoted&quot;&lt;/i&gt;" in head and "<i>" not in head
    assert "i" not in page_links(out / "layers" / "head.html").tags
    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium binary found (apt-get install chromium; or set CHROMIUM=<path>)")
    with Browser(binary) as b:
        reports = [b.load(p.as_uri()) for p in pages]
        bad = {r.url: r.problems for r in reports if r.problems}
        assert not bad, bad
        assert all(r.title for r in reports)
        # the browser does see a broken link: a page with one planted fails
        planted = out / "layers" / "planted.html"
        planted.write_text((out / "layers" / "body.0.html").read_text().replace('src="../img/', 'src="../nope/', 1))
        assert b.load(planted.as_uri()).problems


def test_records_carry_the_examples_and_class_names(compose, data, tmp_path):
    out = tmp_path / "atlas"
    build(compose, data, out)
    rec = json.loads((out / "records" / "body.3" / "2.json").read_text())
    ex = rec["examples"]
    assert ex["values"] == [10.2, 9.2, 8.2] and ex["indices"] == [2, 3, 4] and ex["labels"] == [2, 3, 4]
    assert ex["boxes"] == [[2, 4, 18, 12]] * 3 and len(ex["crops"]) == 3
    assert all((out / c).is_file() for c in ex["crops"] + ex["full"])
    # the photos are the ones the examples name (photo 3 is tinted in its first channel)
    from PIL import Image
    assert Image.open(out / ex["full"][1]).size == (SIZE, SIZE)
    assert Image.open(data["photos"] / "0003.png").convert("RGB").getpixel((5, 5))[0] == 85
    assert abs(Image.open(out / ex["full"][1]).getpixel((5, 5))[0] - 85) <= 12  # a JPEG of it
    assert set(rec["methods"]) == {"pixel", "lucid"}
    logit = json.loads((out / "records" / "head" / "2.json").read_text())
    assert logit["name"] == "bird" and logit["layer_info"]["logits"]
    page = (out / "units" / "head" / "2.html").read_text()
    assert "unit 2: bird" in page
    # the box is drawn where the record says: [top 2, left 4, bottom 18, right 12] of a 32-px photo
    assert "top:6.25%;left:12.50%;height:50.00%;width:25.00%" in (out / "units" / "body.3" / "2.html").read_text()
    assert "no dataset examples" in (out / "layers" / "body.0.html").read_text()  # the run has none for body.0


def test_examples_computed_by_the_engine_are_the_top_photos(compose, data, tmp_path):
    """atlas.examples.data streams the photos through dgnam.dataset_examples; the examples it keeps
    are the photos whose logit is highest, as the network computes them here directly."""
    import numpy as np
    import torch
    from nets import cifar_net
    from PIL import Image

    out = tmp_path / "atlas"
    build(compose, data, out, "layers=[body.3,head]", "atlas.methods=[pixel]", "atlas.examples.run=null",
          f"atlas.examples.data={data['photos']}", "atlas.examples.k=3")
    files = sorted(data["photos"].glob("*.png"))
    x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
                     for f in files]).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = cifar_net().eval()((x - mean) / std)
    for u in range(3):
        ex = json.loads((out / "records" / "head" / f"{u}.json").read_text())["examples"]
        top = logits[:, u].topk(3)
        assert ex["indices"] == top.indices.tolist()
        assert ex["values"] == pytest.approx(top.values.tolist(), abs=1e-4)
        assert all((out / c).is_file() for c in ex["crops"])
    conv = json.loads((out / "records" / "body.3" / "1.json").read_text())["examples"]
    assert len(conv["crops"]) == 3 and len(conv["boxes"]) == 3 and conv["field"]["size"][0] > 1
    assert all((out / f).is_file() for f in conv["full"])
    assert not list(out.glob(".examples-*"))  # the engine's own folder is gone


def test_a_second_build_computes_nothing_and_a_grown_one_only_the_new(compose, data, tmp_path, counted):
    out = tmp_path / "atlas"
    build(compose, data, out)
    assert {(m, layer) for m, layer, _ in counted} == {(m, la) for m in ("pixel", "lucid") for la in ("body.0", "body.3", "head")}
    assert sum(len(u) for _, _, u in counted) == 2 * 9
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".jpg", ".json")
             and p.parent.name != "atlas"}
    counted.clear()
    build(compose, data, out)
    assert counted == []
    assert {p: p.stat().st_mtime_ns for p in files} == files  # no image, record or example rewritten
    # more units of one layer, and lucid with other steps: only those are computed
    build(compose, data, out, "atlas.methods=[pixel,{method: lucid, steps: 4}]", "+atlas.units={body.3: first:5}")
    assert sorted(counted) == sorted([("pixel", "body.3", (3, 4)), ("lucid", "body.0", (0, 1)), ("lucid", "body.0", (2,)),
                                      ("lucid", "body.3", (0, 1)), ("lucid", "body.3", (2, 3)), ("lucid", "body.3", (4,)),
                                      ("lucid", "head", (0, 1)), ("lucid", "head", (2,))])
    rec = json.loads((out / "records" / "body.3" / "4.json").read_text())
    assert rec["methods"]["lucid"]["settings"]["steps"] == 4 and rec["examples"]["values"][0] == 10.4
    assert len(list((out / "units" / "body.3").glob("*.html"))) == 5
    # the index is rebuilt from every record: a run of one layer keeps the others' pages
    counted.clear()
    build(compose, data, out, "layers=[head]", "atlas.methods=[pixel,{method: lucid, steps: 4}]")
    assert counted == []
    index = (out / "index.html").read_text()
    assert all(f"layers/{la}.html" in index for la in ("body.0", "body.3", "head"))


def test_a_failed_build_leaves_the_site_as_it_was(compose, data, tmp_path, monkeypatch):
    out = tmp_path / "atlas"
    build(compose, data, out)
    before = (out / "index.html").read_bytes()

    def broken(*a, **kw):
        raise RuntimeError("planted")

    monkeypatch.setattr(C, "visualize", broken)
    with pytest.raises(RuntimeError, match="planted"):
        build(compose, data, out, "units=first:4")
    assert (out / "index.html").read_bytes() == before
    assert not (out / "units" / "body.3" / "3.html").exists()  # (its examples were imported before the failure)


def test_shards_gathered_make_the_site_of_one_build(compose, data, tmp_path):
    one = tmp_path / "one"
    build(compose, data, one)
    sweep = tmp_path / "sweep"
    for i in range(3):
        build(compose, data, sweep / str(i), "shard.count=3", f"shard.index={i}")
    shard_pages = [{p.relative_to(sweep / str(i)) for p in (sweep / str(i) / "units").rglob("*.html")} for i in range(3)]
    assert all(len(s) == 3 for s in shard_pages) and not set.intersection(*shard_pages)
    res = visualize.run(compose(["experiment=atlas_gather", f"atlas.sources=[{sweep}]"]), str(tmp_path / "gathered"))
    pages = lambda root: {p.relative_to(root) for p in root.rglob("*.html")}  # noqa: E731
    assert pages(tmp_path / "gathered") == pages(one)
    assert json.loads((tmp_path / "gathered" / "atlas.json").read_text()) == json.loads((one / "atlas.json").read_text())
    assert res["out_dir"] == str(tmp_path / "gathered")
    # the multirun callback (which experiment=atlas sets) gathers a sweep the same way
    from omegaconf import OmegaConf

    preset = OmegaConf.load(REPO / "conf" / "experiment" / "atlas.yaml")
    assert preset.hydra.callbacks.atlas._target_ == "dgnam.atlas.GatherCallback"
    GatherCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert pages(sweep / "atlas") == pages(one)


@pytest.mark.parametrize("extra, message", [
    (["atlas.methods=[pixel,lucidd]"], "unknown method 'lucidd' in atlas.methods; valid: "),
    (["layers=[body.0,body.9]"], "unknown layer 'body.9'"),
    (["+atlas.units={head: [3, 10]}"], "unit 10 is out of range: the layer has 10 units"),
    (["shard.count=2", "shard.index=2"], r"shard.index=2 must be in 0 .. shard.count - 1 = 1"),
    (["atlas.methods=[{method: pixel, layers: [body.7]}]"], "unknown layer 'body.7'"),
    (["+atlas.units={body.9: first:2}"], "unknown layer 'body.9'"),
    (["atlas.methods=[{method: pixel, step: 3}]"], r"atlas.methods\[0\] has an unknown key 'step'"),
])
def test_bad_input_is_one_line_and_writes_nothing(compose, data, tmp_path, extra, message):
    out = tmp_path / "atlas"
    with pytest.raises(DgnamError, match=message) as err:
        build(compose, data, out, *extra)
    assert "\n" not in str(err.value)
    assert not out.exists() or not any(out.iterdir())


def test_gathering_a_folder_without_records_is_one_line(compose, data, tmp_path):
    good = tmp_path / "good"
    build(compose, data, good, "layers=[head]")
    empty = tmp_path / "empty"
    (empty / "0").mkdir(parents=True)
    out = tmp_path / "gathered"
    with pytest.raises(DgnamError, match=f"atlas.sources: {empty} holds no atlas records") as err:
        visualize.run(compose(["experiment=atlas_gather", f"atlas.sources=[{good},{empty}]"]), str(out))
    assert "\n" not in str(err.value) and (not out.exists() or not any(out.iterdir()))
    other = tmp_path / "other"  # another network: other weights, another fingerprint
    build(compose, data, other, "layers=[body.3]", "+model.num_classes=5", "model.class_names=null", "atlas.examples.run=null")
    with pytest.raises(DgnamError, match="atlas.sources hold the records of 2 models") as err:
        visualize.run(compose(["experiment=atlas_gather", f"atlas.sources=[{good},{other}]"]), str(out))
    assert "\n" not in str(err.value) and (not out.exists() or not any(out.iterdir()))


def test_the_histogram_draws_the_counts():
    hist = {"edges": [0.0, 1.0, 2.0, 4.0, 8.0], "counts": [100, 0, 10, 1]}
    svg = ET.fromstring(histogram(hist, width=80, height=64, threshold=6.0))
    ns = "{http://www.w3.org/2000/svg}"
    bars = svg.findall(f".//{ns}rect")
    assert len(bars) == 3  # the empty bin draws nothing
    xs = [float(b.get("x")) for b in bars]
    assert xs == [0.0, 20.0, 40.0]  # bins placed by their edges: 0, 2 and 4 of 0..8 over 80 px
    heights = [float(b.get("height")) for b in bars]
    import math
    assert heights[0] == pytest.approx(50) and heights[1] == pytest.approx(50 * math.log1p(10) / math.log1p(100), abs=0.1)
    line = svg.find(f".//{ns}line[@stroke='#b3261e']")
    assert float(line.get("x1")) == pytest.approx(60.0)  # the threshold 6.0 of 0..8
