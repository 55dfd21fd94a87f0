"""dgnam.ranges: every number of every preset is listed, every preset is in range, and every listed
range is enforced by its entry point (one line naming the key, before any work)."""

from __future__ import annotations

import copy
import re
import sys
from typing import Any

import pytest
from conftest import CONF, REPO
from omegaconf import OmegaConf

from dgnam import ranges
from dgnam.errors import DgnamError

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402
from train_generator import run as train_run  # noqa: E402

# Numbers checked by the code that reads them, with messages of their own (unit indices or names).
FREE = {"visualize": ("units.*", "examples.classes.*", "atlas.units.*.*"), "train_generator": ()}
GROUPS = {"visualize": ("experiment", "method", "model", "optimizer", "param", "scheduler"),
          "train_generator": ("experiment_train", "encoder", "generator", "data", "trainer")}
TABLES = {"visualize": ranges.VISUALIZE, "train_generator": ranges.TRAIN}


def variants(name: str) -> list[list[str]]:
    """The defaults, and each option of each config group on its own."""
    out: list[list[str]] = [[]]
    for g in GROUPS[name]:
        plus = "+" if g == "scheduler" else ""  # not in visualize.yaml's defaults list
        out += [[f"{plus}{g}={p.stem}"] for p in sorted((CONF / g).glob("*.yaml"))]
    return out


@pytest.fixture(scope="module")
def configs():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import dgnam.config  # noqa: F401  (registers the structured configs and resolvers)

    out: dict[str, list[tuple[list[str], dict[str, Any]]]] = {}
    for name in TABLES:
        out[name] = []
        for ov in variants(name):
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                cfg = compose(config_name=name, overrides=ov)
            out[name].append((ov, ranges.plain(cfg)))
    GlobalHydra.instance().clear()
    return out


def leaves(node: Any, prefix: str = ""):
    """(pattern key with * for list items, value) of every leaf."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for v in node:
            yield from leaves(v, f"{prefix}.*")
    else:
        yield prefix, node


def matches(pattern: str, key: str) -> bool:
    """Whether a table key matches a leaf's key (list items are * in both; a number matches *)."""
    pattern = re.sub(r"\.\d+(?=\.|$)", ".*", pattern)
    return re.fullmatch(re.escape(pattern).replace(r"\*", r"[^.]+"), key) is not None


@pytest.mark.parametrize("name", list(TABLES))
def test_every_number_of_every_preset_is_listed(configs, name):
    missing = set()
    for _, node in configs[name]:
        for key, v in leaves(node):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                pats = [r.key for r in TABLES[name]] + list(FREE[name])
                if not any(matches(p, key) for p in pats):
                    missing.add(key)
    assert not missing, f"numbers without a range in dgnam/ranges.py: {sorted(missing)}"


@pytest.mark.parametrize("name", list(TABLES))
def test_every_preset_is_in_range(configs, name):
    for ov, node in configs[name]:
        try:
            ranges.check_ranges(node, TABLES[name])
        except DgnamError as e:
            pytest.fail(f"{name} {ov}: {e}")


def test_the_listing_check_can_fail():
    node = {"steps": 10, "new_number": 3}
    keys = [k for k, v in leaves(node) if not any(matches(r.key, k) for r in ranges.VISUALIZE)]
    assert keys == ["new_number"]


def get_path(node: Any, key: str) -> Any:
    for p in key.split(".") if key else []:
        node = node[int(p)] if isinstance(node, list) else node[p]
    return node


def set_path(node: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key (list items as numbers); the parent must exist."""
    parent, _, last = key.rpartition(".")
    target = get_path(node, parent)
    target[int(last) if isinstance(target, list) else last] = value


def concrete(node: dict[str, Any], pattern: str) -> str | None:
    """The first key of ``node`` that ``pattern`` matches, with list items as numbers."""
    def walk(n: Any, parts: list[str], prefix: str):
        if not parts:
            yield prefix
            return
        head, rest = parts[0], parts[1:]
        if isinstance(n, dict):
            for k in (list(n) if head == "*" else [head] if head in n else []):
                yield from walk(n[k], rest, f"{prefix}.{k}" if prefix else k)
        elif isinstance(n, list) and (head == "*" or head.isdigit()):
            for i, v in enumerate(n):
                if head == "*" or int(head) == i:
                    yield from walk(v, rest, f"{prefix}.{i}")
    return next(walk(node, pattern.split("."), ""), None)


def locate(configs: list[tuple[list[str], dict[str, Any]]], pattern: str) -> tuple[Any, str | None]:
    """(a copy of the first preset that holds ``pattern``'s key, the concrete key), else the first
    that holds its parent node (the key is added there), else (None, None)."""
    parent, _, leaf = pattern.rpartition(".")
    for head, tail in ((pattern, None), (parent, leaf)):
        for _, n in configs:
            found = concrete(n, head) if head else ""
            if found is None or tail is not None and not isinstance(get_path(n, found), dict):
                continue
            key = found if tail is None else f"{found}.{tail}".lstrip(".")
            return copy.deepcopy(n), key
    return None, None


CASES = [(name, r) for name, table in TABLES.items() for r in table]


@pytest.mark.parametrize(("name", "rng"), CASES, ids=[f"{n}:{r.key}" for n, r in CASES])
def test_each_range_is_enforced_by_its_entry_point(configs, tmp_path, name, rng):
    bad = rng.bad_value()
    node, key = locate(configs[name], rng.key)
    if key is None:  # a list users may add (optimizer.betas, position): [bad] in the defaults
        node, key = copy.deepcopy(configs[name][0][1]), rng.key.replace(".*", ".0")
        set_path(node, key.rpartition(".")[0], [bad])
    else:
        set_path(node, key, bad)
    cfg = OmegaConf.create(node)
    out = tmp_path / "out"
    with pytest.raises(DgnamError) as e:
        if name == "visualize":
            visualize.run(cfg, str(out))
        else:
            train_run(cfg, out_dir=out)
    shown = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)
    assert str(e.value).startswith(f"{shown}={bad!r} must be"), str(e.value)
    assert not out.exists()
