"""Every number the two CLIs accept, and its valid range, as data.

:data:`VISUALIZE` and :data:`TRAIN` list each numeric config key with its range; :func:`check_ranges`
checks a composed config against one of them before any work (one line naming the key and the
range), and ``docs/errors.md`` prints both tables (``tests/test_errors_doc.py`` keeps the page and
these tables equal, and ``tests/test_ranges.py`` checks that every number of every preset is covered
and that every range is enforced).

A key is dotted; ``*`` stands for every item of a list or every child of a node
(``loss.weights.*``, ``discriminator.spec.convs.*.*``), a number for one item of a list
(``generator.spec.stack.*.1``: the channels of each ``[kind, channels]`` layer). A key absent from the config is not checked
(``param.clamp_k`` exists only for the DGN-AM methods).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dgnam.errors import DgnamValueError


@dataclass(frozen=True)
class Range:
    """A numeric key's valid values: ``low``/``high`` bounds (``None``: unbounded), each included
    unless ``open_low``/``open_high``; ``integer``; ``null`` allowed (the feature off, or the
    default); ``also``: other accepted values (``-1``: no limit); ``why``: what the value means."""

    key: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    integer: bool = False
    null: bool = False
    also: tuple[Any, ...] = ()
    why: str = ""  # what the value means, shown after the range

    def describe(self) -> str:
        """The valid values in words, e.g. ``a number in [0, 1)``, ``an integer >= 1 or null``."""
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            rng = f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
        elif self.low is not None:
            rng = f"{'>' if self.open_low else '>='} {self.low:g}"
        elif self.high is not None:
            rng = f"{'<' if self.open_high else '<='} {self.high:g}"
        else:
            rng = ""
        text = f"{kind} {rng}".strip()
        if self.also:
            text += f" (or {', '.join(map(str, self.also))})"
        text += " or null" if self.null else ""
        return f"{text} ({self.why})" if self.why else text

    def ok(self, v: Any) -> bool:
        if v is None:
            return self.null
        if v in self.also and not isinstance(v, bool):
            return True
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if self.integer and float(v) != int(v):
            return False
        if self.low is not None and (v <= self.low if self.open_low else v < self.low):
            return False
        return not (self.high is not None and (v >= self.high if self.open_high else v > self.high))

    def bad_value(self) -> Any:
        """A value outside the range (for the tests that check each range is enforced)."""
        tries: list[Any] = []
        if self.low is not None:
            tries.append(self.low - (0 if self.open_low else 1))
        if self.high is not None:
            tries.append(self.high + (0 if self.open_high else 1))
        tries += [0.5, "abc"]
        return next(v for v in tries if not self.ok(v))


def _r(key: str, low: float | None = None, high: float | None = None, **kw: Any) -> Range:
    return Range(key, low, high, **kw)


def positive(key: str, **kw: Any) -> Range:
    """A number > 0."""
    return Range(key, 0, open_low=True, **kw)


def count(key: str, low: int = 1, **kw: Any) -> Range:
    """An integer >= ``low`` (1: a positive count)."""
    return Range(key, low, integer=True, **kw)


def fraction(key: str, **kw: Any) -> Range:
    """A number in [0, 1)."""
    return Range(key, 0, 1, open_high=True, **kw)


def weight(key: str, **kw: Any) -> Range:
    """A number >= 0 (a weight, a sigma, a decay)."""
    return Range(key, 0, **kw)


def optimizer_ranges(prefix: str) -> tuple[Range, ...]:
    """The numbers of a torch optimizer's node ``prefix`` (``optimizer``, ``optimizer_g``)."""
    return (positive(f"{prefix}.lr"), fraction(f"{prefix}.momentum"), weight(f"{prefix}.weight_decay"),
            positive(f"{prefix}.eps"), fraction(f"{prefix}.betas.*"), weight(f"{prefix}.dampening"))


N = {"null": True}  # null allowed: the feature off, or the default

#: ``visualize.py``: every mode and method.
VISUALIZE: tuple[Range, ...] = (
    _r("seed", integer=True), count("steps"), count("batch_size"), count("shard.count", why="jobs the units are split over"),
    count("shard.index", 0, why="this job's block of the units, 0 .. shard.count - 1"), count("image_size", 8), count("input_resize", 8, **N),
    _r("init.low", 0, 1), _r("init.high", 0, 1), count("octaves.n"), _r("octaves.scale", 1, open_low=True),
    count("output.grid_cols", **N), count("samples", why="images per unit, each from its own chain"),
    count("chain_steps", **N, why="steps from one sample to the next of one chain"),
    count("init.top", **N, why="init.kind=facets: the unit's most activating photos its samples start from"),
    _r("init.keep", 0, 1, **N, why="init.kind=facets: the share of the best photo's activation a start reaches"),
    count("init.limit", **N, why="init.kind=facets: scan only the first N photos"),
    count("pool.size", **N, why="samples drawn per unit to keep samples=K of"),
    _r("pool.keep", 0, 1, **N, why="the share of the unit's best activation a kept sample reaches"),
    weight("ppgn.e1", why="the code prior's weight, h += e1 (R(h) - h)"),
    weight("ppgn.e3", why="the noise's std per code unit, in units of that unit's std"),
    weight("diversity.weight", why="each sample pays weight x its similarity to the unit's other samples"),
    _r("diversity.until", 0, 1, open_low=True, **N, why="the share of the steps the diversity term runs for"), count("output.frame_every"), count("output.fps"),
    count("early_stop.patience", 0, why="steps without a rise of any item's objective before stopping; 0: off"),
    weight("early_stop.min_delta", why="a rise is more than min_delta * max(|best|, 1)"),
    *optimizer_ranges("optimizer"),
    _r("scheduler.start_factor", 0, 1, open_low=True), _r("scheduler.end_factor", 0, 1), count("scheduler.total_iters", 0),
    fraction("priors.decay", why="x *= 1 - decay after every step"), count("priors.blur_every", 0), weight("priors.blur_sigma"), count("priors.pad", 0),
    count("priors.jitter", 0), count("priors.jitter2", 0), positive("priors.scale.*"), count("priors.rotate", 0, high=180),
    weight("priors.tv"), positive("priors.tv_beta"), weight("priors.l2"), weight("priors.alpha_norm"),
    positive("priors.alpha"), _r("priors.clip_norm_pct", 0, 100, open_high=True),
    _r("priors.clip_contrib_pct", 0, 100, open_high=True),
    fraction("param.decay", why="h *= 1 - decay after every step"),
    weight("param.clamp_k", why="upper = mean + clamp_k * std; null: no clamp", **N), weight("param.l2"), weight("param.init_sd"),
    weight("param.clamp_margin"), weight("param.pull"), count("param.resolution", 8), weight("param.decay_power"),
    positive("param.sd"),
    count("model.input_size", 8, **N), count("model.num_classes", **N), _r("model.mean.*"), positive("model.std.*"),
    count("position.*", 0),
    count("maps.tile"), count("maps.cols"), count("rf.zoom_size"), weight("inversion.tv_growth"),
    count("examples.k", why="photos kept per unit"), count("examples.limit", **N), count("examples.workers", 0),
    count("examples.checkpoint_every", why="batches between checkpoints"), count("examples.max_batches", **N),
    count("examples.bins"), count("examples.warmup", why="photos whose values fix the histogram's edges"),
    count("examples.tile", 16), count("examples.crop_size", 16, high=512),
    weight("deepdream.layers.*", why="the weight of a layer's term"), count("deepdream.roll", 0),
    count("style.image_size", 8, **N), weight("style.layers.*", why="the weight of a layer's Gram term"),
    weight("style.content_weight"),
    count("report.stats_size", **N), positive("report.hf_radius"), count("report.judges.*.input_size", **N),
    count("report.judges.*.batch_size", **N),
    count("atlas.methods.*.steps", **N), count("atlas.methods.*.image_size", 8, **N),
    count("atlas.examples.k", why="dataset examples kept per unit"), count("atlas.examples.limit", **N),
    count("atlas.examples.batch_size", **N), count("atlas.examples.image_size", 8, **N),
    count("atlas.card_size", 16, why="px"), count("atlas.quality", high=100, why="JPEG quality"),
)

#: ``train_generator.py``: every preset and generator kind.
TRAIN: tuple[Range, ...] = (
    _r("seed", integer=True), count("threads", **N), count("resolution", 8), weight("code_noise", **N),
    positive("grad_clip_g", **N), count("grid_images", **N),
    weight("loss.weights.*"), count("loss.feature_every"), count("loss.feature_items", **N), weight("loss.perceptual_layers.*.1"),
    count("loss.grid_codes", low=0), weight("loss.grid_noise"), count("loss.grid_periods.*", 2),
    count("stages.*.steps", **N), weight("stages.*.weights.*"), count("stages.*.feature_every", **N),
    count("stages.*.feature_items", **N), positive("stages.*.lr_scale", **N), weight("stages.*.perceptual_layers.*.1"),
    weight("loss.balance.d_stop"), weight("loss.balance.d_resume"), positive("loss.balance.g_pause"),
    *optimizer_ranges("optimizer_g"), *optimizer_ranges("optimizer_d"),
    count("scheduler.milestones.*"), positive("scheduler.gamma"), count("scheduler.warmup_steps", 0),
    weight("code_stats.k", **N), count("code_stats.max_images", **N),
    positive("generator.width", **N), count("generator.fc.*"),
    count("generator.spec.fc.*"), count("generator.spec.conv_kernel"), count("generator.spec.up_kernel"),
    count("generator.spec.start_channels"), count("generator.spec.start_size"), count("generator.spec.stack.*.1"),
    count("generator.spec.out_channels"), weight("generator.spec.slope"),
    count("discriminator.spec.convs.*.*"), count("discriminator.spec.image_fc.*"), count("discriminator.spec.code_fc.*"),
    count("discriminator.spec.joint_fc.*"), fraction("discriminator.spec.dropout"), weight("discriminator.spec.slope"),
    count("discriminator.latent_spec.convs.*.*"),
    count("encoder.input_size", 8, **N), count("encoder.comparator_input_size", 8, **N),
    count("encoder.target.input_size", 8, **N), _r("encoder.target.mean.*"), positive("encoder.target.std.*"),
    count("data.batch_size", **N), count("data.encode_batch_size", **N), count("data.load_size", 8, **N),
    count("data.limit_train", **N), count("data.limit_val", **N), count("data.num_workers", 0, **N),
    _r("data.crop_scale.*", 0, 1, open_low=True), count("data.synthetic_size"),
    count("trainer.max_steps", also=(-1,), **N), count("trainer.max_epochs", also=(-1,), **N),
    count("trainer.log_every_n_steps", **N), positive("trainer.val_check_interval", **N),
    positive("trainer.limit_val_batches", **N), count("trainer.progress_bar_refresh", 0, **N),
    count("trainer.check_val_every_n_epoch", **N), count("trainer.num_sanity_val_steps", 0, also=(-1,), **N),
    positive("trainer.checkpoint_every_minutes", **N),
    count("trainer.devices", why="processes (GPUs, or CPU processes on gloo) per node"),
    count("trainer.num_nodes", why="machines, each running trainer.devices processes"),
    count("callbacks.*.save_top_k", 0, also=(-1,)), positive("callbacks.periodic_checkpoint.minutes", **N),
    count("callbacks.progress_bar.refresh_rate", 0),
)


def _items(node: Any, parts: list[str], prefix: str) -> Iterator[tuple[str, Any]]:
    """(concrete key, value) for every match of ``parts`` under ``node``."""
    if not parts:
        yield prefix, node
        return
    head, rest = parts[0], parts[1:]
    if isinstance(node, Mapping):
        keys = [k for k in node if isinstance(k, str)] if head == "*" else ([head] if head in node else [])
        for k in keys:
            yield from _items(node[k], rest, f"{prefix}.{k}" if prefix else k)
    elif isinstance(node, list) and (head == "*" or head.isdigit()):
        for i, v in enumerate(node):
            if head == "*" or int(head) == i:
                yield from _items(v, rest, f"{prefix}[{i}]")


def plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config as plain containers, resolved, without Hydra's own node."""
    if OmegaConf.is_config(cfg):
        keys = [k for k in cfg if k != "hydra"]
        return {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k])
                else OmegaConf.select(cfg, str(k)) for k in keys}
    return {k: v for k, v in dict(cfg).items() if k != "hydra"}


def _package(path: Path, conf: Path) -> str | None:
    """The package a config file's keys land in: its ``# @package`` line, else its group's path
    (``model/vgg16.yaml``: ``model``; a primary config: the top level); None for Hydra's own."""
    rel = path.relative_to(conf)
    for line in path.read_text().splitlines()[:5]:
        if line.startswith("# @package"):
            pkg = line.split(None, 2)[2].strip()
            return "" if pkg == "_global_" else pkg
    group = ".".join(rel.parts[:-1])
    return None if group == "hydra" or group.startswith("hydra.") else group


def _bool_leaves(node: Any, prefix: str) -> Iterator[str]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            if isinstance(k, str) and not k.startswith("_") and k not in ("defaults", "hydra"):
                yield from _bool_leaves(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(node, bool):
        yield prefix


@functools.lru_cache(maxsize=4)
def boolean_keys(conf: Path | None = None) -> tuple[str, ...]:
    """Every key that some config file under ``conf`` (default: dgnam's) sets to true or false: such a
    key takes only a boolean (``model.compile=maybe`` would otherwise read as true)."""
    from dgnam.paths import CONF_DIR

    conf = Path(conf or CONF_DIR)
    keys: set[str] = set()
    for path in sorted(conf.rglob("*.yaml")):
        pkg = _package(path, conf)
        if pkg is not None:
            node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            keys.update(_bool_leaves(node, pkg))
    return tuple(sorted(keys))


def check_booleans(cfg: DictConfig | Mapping[str, Any], keys: tuple[str, ...] | None = None) -> None:
    """Every boolean key (:func:`boolean_keys`) present in ``cfg`` is true, false or null, or a
    one-line :class:`DgnamError` ``<key>=<value> must be true or false``."""
    node = plain(cfg)
    for key in boolean_keys() if keys is None else keys:
        for k, v in _items(node, key.split("."), ""):
            if v is not None and not isinstance(v, bool):
                raise DgnamValueError(f"{k}={v!r} must be true or false (a boolean key; yes, no, on, off, 0 and 1 "
                                      f"are not booleans here)")


def check_ranges(cfg: DictConfig | Mapping[str, Any], ranges: tuple[Range, ...]) -> None:
    """Every boolean key of ``cfg`` a boolean (:func:`check_booleans`) and every key of ``ranges``
    present in ``cfg`` in its range, or a one-line :class:`DgnamError`: ``<key>=<value> must be <range>``."""
    node = plain(cfg)
    check_booleans(node)
    for r in ranges:
        for key, v in _items(node, r.key.split("."), ""):
            if isinstance(v, (Mapping, list)) or not r.ok(v):
                raise DgnamValueError(f"{key}={v!r} must be {r.describe()}")


def table(ranges: tuple[Range, ...]) -> str:
    """A Markdown table of ``ranges``: key and valid values."""
    rows = ["| key | valid values |", "| --- | --- |"]
    rows += [f"| `{r.key}` | {r.describe()} |" for r in ranges]
    return "\n".join(rows)
