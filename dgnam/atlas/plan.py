"""What an atlas run is asked to compute, checked before any work: the layers and their units (this
shard's), the methods with their settings, and the model's fingerprint.

Each (unit, method) pair has a *key*: the SHA-256 of the settings that decide its image (method,
steps, image size, seed, overrides, the model's fingerprint). A record whose key matches is not
computed again (:mod:`dgnam.atlas.records`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import OmegaConf

from dgnam.core.models import Target
from dgnam.core.units import Unit, select_units, shard_units
from dgnam.errors import DgnamValueError
from dgnam.views.common import depth, layer_list

METHOD_KEYS = ("method", "steps", "image_size", "layers", "overrides")


@dataclass(frozen=True)
class MethodSpec:
    """One entry of ``atlas.methods``: a recipe of ``conf/method/`` with the atlas's settings for it.
    ``layers`` None: every layer of the atlas; else only these (names as the model resolves them)."""

    name: str
    steps: int
    image_size: int
    layers: tuple[str, ...] | None = None
    overrides: tuple[str, ...] = ()

    def settings(self, fingerprint: str, seed: int) -> dict[str, Any]:
        return {"method": self.name, "steps": self.steps, "image_size": self.image_size, "seed": seed,
                "overrides": list(self.overrides), "model": fingerprint}


def key_of(settings: Mapping[str, Any]) -> str:
    """The SHA-256 of settings (sorted JSON): equal settings, equal keys."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class LayerInfo:
    """A layer as the pages show it: its activation shape, kind (conv, linear or tokens), depth."""

    name: str
    shape: tuple[int, ...]
    kind: str
    depth: int
    logits: bool

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "kind": self.kind, "depth": self.depth,
                "logits": self.logits, "units": int(self.shape[-1] if self.kind == "tokens" else self.shape[0])}


@dataclass
class Plan:
    """The checked request: layers (depth order), this shard's units, methods, and the model."""

    target: Target
    fingerprint: str
    layers: dict[str, LayerInfo]
    units: list[Unit]
    methods: list[MethodSpec]
    seed: int
    batch_size: int
    model: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"

    def units_of(self, layer: str) -> list[Unit]:
        return [u for u in self.units if u.layer == layer]

    def applies(self, spec: MethodSpec, layer: str) -> bool:
        """Whether ``spec`` runs on ``layer`` (its ``layers`` list, compared as graph nodes)."""
        if spec.layers is None:
            return True
        node = self.target.resolve(layer)
        return any(self.target.resolve(name) == node for name in spec.layers)


def fingerprint(target: Target) -> str:
    """SHA-256 (16 hex digits) of the model's weights, in key order, with its input normalization:
    the same network gives the same fingerprint however it was loaded."""
    h = hashlib.sha256()
    for name, t in sorted(target.model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(target.mean.flatten().cpu().numpy().tobytes() + target.std.flatten().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _plain(x: Any) -> Any:
    return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else x


def method_specs(entries: Any, steps: int, image_size: int, valid: Sequence[str]) -> list[MethodSpec]:
    """``atlas.methods`` -> specs. An entry is a method name (``lucid``) or a mapping
    ``{method, steps, image_size, layers, overrides}``; missing steps and sizes are the atlas's."""
    entries = _plain(entries)
    if isinstance(entries, str):
        entries = [entries]
    if not entries:
        raise DgnamValueError(f"atlas.methods is empty; give one or more of: {', '.join(valid)}")
    out: list[MethodSpec] = []
    for i, entry in enumerate(entries):
        e = {"method": entry} if isinstance(entry, str) else dict(entry or {})
        unknown = [k for k in e if k not in METHOD_KEYS]
        if unknown:
            raise DgnamValueError(f"atlas.methods[{i}] has an unknown key {unknown[0]!r}; valid: {', '.join(METHOD_KEYS)}")
        name = e.get("method")
        if name not in valid:
            raise DgnamValueError(f"unknown method {name!r} in atlas.methods; valid: {', '.join(valid)}")
        if any(s.name == name for s in out):
            raise DgnamValueError(f"atlas.methods lists {name!r} twice; give each method once")
        st, size = e.get("steps") or steps, e.get("image_size") or image_size
        for key, val, low in (("steps", st, 1), ("image_size", size, 8)):
            if not isinstance(val, int) or isinstance(val, bool) or val < low:
                raise DgnamValueError(f"atlas.methods[{i}].{key}={val!r} must be an integer >= {low}")
        layers = e.get("layers")
        layers = (layers,) if isinstance(layers, str) else (tuple(str(x) for x in layers) if layers else None)
        over = e.get("overrides") or ()
        out.append(MethodSpec(str(name), int(st), int(size), layers,
                              (over,) if isinstance(over, str) else tuple(str(o) for o in over)))
    return out


def layer_infos(target: Target, layers: Any, size: int) -> dict[str, LayerInfo]:
    """The named layers (checked: an unknown name lists the valid ones), in depth order."""
    logits = target.resolve("logits")
    out = {}
    for name in layer_list(target, layers):
        shape = tuple(int(s) for s in target.layer_shape(name, size))
        kind = "conv" if len(shape) == 3 else "tokens" if len(shape) == 2 and target.resolve(name) != logits else "linear"
        out[name] = LayerInfo(name, shape, kind, depth(target, name), target.resolve(name) == logits)
    return out


def plan_units(target: Target, infos: Mapping[str, LayerInfo], default: Any, per_layer: Mapping[str, Any] | None,
               kind: str, size: int, shard_index: int = 0, shard_count: int = 1) -> list[Unit]:
    """Every layer's units (``per_layer[layer]``, by name or alias, or ``default``), then this shard's
    block of them all (contiguous, in layer order: :func:`dgnam.core.units.shard_units`)."""
    per_layer = dict(_plain(per_layer) or {})
    nodes = {target.resolve(str(k)): v for k, v in per_layer.items()}  # an unknown name lists the valid ones
    units: list[Unit] = []
    for name in infos:  # a layer of atlas.units that this run does not name is left alone
        spec = per_layer[name] if name in per_layer else nodes.get(target.resolve(name), default)
        units += select_units(target, name, _plain(spec), kind, None, size)
    return shard_units(units, shard_index, shard_count)
