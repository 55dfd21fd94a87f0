"""Priors as named weights (dgnam.priors): every shipped file is its entry (sha256, size, the command
in the file), records no machine's paths, and is verified when loaded by name or path; a prior by URL
is downloaded once into the torch hub cache, checked against its sha256 and loaded weights-only; a
mismatch or an unreachable URL is one line."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest
import torch
from conftest import TinyNet

import dgnam
from dgnam.errors import DgnamError
from dgnam.generator.prior import load_prior
from dgnam.priors import hub

DEFAULT_PRIOR = dgnam.priors.get(dgnam.priors.DEFAULT)  # the prior of method=dgnam_deep
TINY = dict(steps=2, image_size=32, mean=[0.5] * 3, std=[0.25] * 3)


def strings(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from strings(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from strings(v)
    elif isinstance(x, str):
        yield x


@pytest.mark.parametrize("entry", dgnam.priors.list(), ids=lambda p: p.name)
def test_every_shipped_prior_is_its_entry_and_records_no_machines_paths(entry):
    assert entry.path.stat().st_size == entry.size and hub.sha256_of(entry.path) == entry.sha256
    blob = torch.load(entry.path, map_location="cpu", weights_only=True)
    assert tuple(blob["extra"]["command"]) == entry.command
    assert blob["resolution"] == entry.resolution and blob.get("kind", "pixel") == entry.kind
    assert blob["encoder"]["weights_file"] in entry.encoder and blob["encoder"]["layer"] in entry.code_layer
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    assert [s for s in strings(meta) if s.startswith("/") or "/work/" in s] == []
    assert {"recon_judge_top1_pct", "compare_judge_top1_pct"} <= set(entry.numbers) and entry.recon_command


def test_every_other_shipped_file_records_no_machines_paths():
    for f in sorted(dgnam.PRIORS_DIR.glob("*.pt")):
        blob = torch.load(f, map_location="cpu", weights_only=True)
        meta = {k: v for k, v in blob.items() if k != "state_dict"} if isinstance(blob, dict) else {}
        assert [s for s in strings(meta) if s.startswith("/") or "/work/" in s] == [], f.name


def test_a_name_is_its_file_and_an_unknown_name_is_one_line():
    assert dgnam.priors.resolve(DEFAULT_PRIOR.name) == DEFAULT_PRIOR.path == dgnam.priors.resolve(DEFAULT_PRIOR.path)
    assert dgnam.priors.get(DEFAULT_PRIOR.file) is DEFAULT_PRIOR
    with pytest.raises(DgnamError, match=r"unknown prior 'mobilenet_v2_deep'.*shipped: mobilenet_v2_latent_spatial_gridfree_g128"):
        dgnam.priors.get("mobilenet_v2_deep")


def test_param_prior_by_name_draws_what_the_file_draws(one_thread):
    net = TinyNet()
    by_name = dgnam.visualize(net, "logits", [1], method="dgnam_deep", overrides=[f"param.prior={DEFAULT_PRIOR.name}"], **TINY)
    by_path = dgnam.visualize(net, "logits", [1], method="dgnam_deep", **TINY)
    assert by_name.cfg.param.prior == DEFAULT_PRIOR.name
    assert torch.equal(by_name.images, by_path.images)


def damaged_copy(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    bad = folder / DEFAULT_PRIOR.file
    shutil.copy2(DEFAULT_PRIOR.path, bad)
    with open(bad, "r+b") as f:  # one byte of the weights flipped
        f.seek(DEFAULT_PRIOR.size // 2)
        b = f.read(1)
        f.seek(DEFAULT_PRIOR.size // 2)
        f.write(bytes([b[0] ^ 1]))
    return bad


def test_a_damaged_shipped_file_is_refused_by_its_sha256(tmp_path, monkeypatch):
    damaged_copy(tmp_path / "priors")
    monkeypatch.setattr(dgnam.priors, "HERE", tmp_path / "priors")
    with pytest.raises(DgnamError, match=r"^the prior mobilenet_v2_latent_spatial_gridfree_g128 \(.*\) has sha256 .*expected 79c0552bda881855"):
        load_prior(DEFAULT_PRIOR.name)
    with pytest.raises(DgnamError, match="has sha256"):  # a file with its sha256 given
        dgnam.priors.resolve(tmp_path / "priors" / DEFAULT_PRIOR.file, sha256=DEFAULT_PRIOR.sha256)


@pytest.fixture
def server(tmp_path):
    """A file server on 127.0.0.1 (an ephemeral port) over ``tmp_path/www``, stopped after the test;
    it counts the requests it answered."""
    www = tmp_path / "www"
    www.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(args)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    httpd.timeout = 5
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", www, hits
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=5)


def test_a_prior_by_url_is_downloaded_once_checked_and_loaded(server, tmp_path, monkeypatch, one_thread):
    url, www, hits = server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    shutil.copy2(DEFAULT_PRIOR.path, www / "lab_prior.pt")
    net = TinyNet()
    over = [f"param.prior={url}/lab_prior.pt", f"param.prior_sha256={DEFAULT_PRIOR.sha256}"]
    by_url = dgnam.visualize(net, "logits", [1], method="dgnam_deep", overrides=over, **TINY)
    cached = hub.cache_dir() / f"{DEFAULT_PRIOR.sha256[:12]}-lab_prior.pt"
    assert cached.is_relative_to(tmp_path / "torch_home") and hub.sha256_of(cached) == DEFAULT_PRIOR.sha256
    n = len(hits)
    g, info = load_prior(f"{url}/lab_prior.pt", sha256=DEFAULT_PRIOR.sha256)  # from the cache: no new request
    assert len(hits) == n >= 1 and info["code_dim"] == 36864
    assert torch.equal(by_url.images, dgnam.visualize(net, "logits", [1], method="dgnam_deep", **TINY).images)
    # file:// works the same
    assert load_prior(Path(www / "lab_prior.pt").as_uri(), sha256=DEFAULT_PRIOR.sha256)[1]["code_dim"] == 36864


def test_a_wrong_sha256_or_an_unreachable_url_is_one_line_and_keeps_nothing(server, tmp_path, monkeypatch):
    url, www, _ = server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    damaged_copy(www)
    with pytest.raises(DgnamError, match=r"^the prior downloaded from .* has sha256 .*not the given 79c0552bda881855.*not kept"):
        dgnam.priors.resolve(f"{url}/{DEFAULT_PRIOR.file}", sha256=DEFAULT_PRIOR.sha256, progress=False)
    assert not any(hub.cache_dir().iterdir())
    with pytest.raises(DgnamError, match=r"^cannot download the prior .*/missing.pt: "):
        dgnam.priors.resolve(f"{url}/missing.pt", sha256=DEFAULT_PRIOR.sha256, progress=False)
    with pytest.raises(DgnamError, match=r"^cannot download the prior file://.*: "):
        dgnam.priors.resolve((tmp_path / "nothing.pt").as_uri(), sha256=DEFAULT_PRIOR.sha256, progress=False)
    with pytest.raises(DgnamError, match=r"needs its sha256 as 64 hex digits"):
        dgnam.priors.resolve(f"{url}/{DEFAULT_PRIOR.file}")


def test_the_priors_page_lists_the_entries():
    """docs/priors.md holds dgnam.priors.table() (DGNAM_UPDATE_DOCS=1 rewrites it)."""
    import os

    from conftest import REPO

    doc = REPO / "docs" / "priors.md"
    head, rest = doc.read_text().split("<!-- priors:begin -->\n", 1)
    have, tail = rest.split("<!-- priors:end -->", 1)
    want = dgnam.priors.table() + "\n"
    if os.environ.get("DGNAM_UPDATE_DOCS") and have != want:
        doc.write_text(f"{head}<!-- priors:begin -->\n{want}<!-- priors:end -->{tail}")
        pytest.fail("docs/priors.md rewritten; rerun without DGNAM_UPDATE_DOCS")
    assert have == want, "docs/priors.md is out of date: DGNAM_UPDATE_DOCS=1 pytest tests/test_priors.py"
