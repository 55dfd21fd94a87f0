"""PPGN-h sampling around the activation-maximization loop (Nguyen et al., CVPR 2017).

``method=ppgn`` adds the code prior and noise terms of the PPGN-h sampler,
``h <- h + e1 (R(h) - h) + e2 d log p(y | G(h)) / dh + N(0, e3^2)``, to DGN-AM's loop as a post-step
(:class:`dgnam.core.poststeps.CodePrior`): e2 is the optimizer's step, R a denoising autoencoder of
real codes (:mod:`dgnam.generator.dae`). ``samples=K`` runs K chains per unit, each from its own
start and with its own noise, so that a unit gets K distinct images; with ``chain_steps=n`` the K
samples come from one chain instead, sample k going on from sample k-1 for n more steps.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dgnam.checks import one_of, positive_int
from dgnam.core import objectives as O
from dgnam.core import poststeps as P
from dgnam.core.loop import PostStep
from dgnam.core.params.base import ImageParam
from dgnam.core.units import CLASS_SCORES, Unit
from dgnam.errors import DgnamValueError


def check_samples(cfg: DictConfig) -> int:
    """``samples`` (images per unit, default 1); its range is checked with every number
    (:data:`dgnam.ranges.VISUALIZE`)."""
    return positive_int(cfg, "samples", default=1)


def check_class_score(cfg: DictConfig, plan: dict[str, list[Unit]]) -> str:
    """``class_score``: what a class unit maximizes, its logit (default) or its log softmax probability
    (PPGN's condition ``log p(y | x)``); ``log_softmax`` needs class units in every layer of the run."""
    score = one_of(cfg.get("class_score", "logit"), "class_score", CLASS_SCORES)
    if score != "logit":
        for layer, units in plan.items():
            if units and units[0].kind != "class":
                raise DgnamValueError(f"class_score={score} needs class units (a logit layer, unit=class); "
                                      f"layer {layer} has {units[0].kind} units: use class_score=logit")
    return score


def check_chain(cfg: DictConfig, samples: int, octaves: int) -> int | None:
    """``chain_steps``: the steps from one sample to the next when the K samples come from one chain
    (None: K chains). Its range is checked with every number."""
    n = cfg.get("chain_steps")
    if n is None or samples == 1:
        return None
    if octaves > 1:
        raise DgnamValueError(f"chain_steps={n} continues one chain at one image size: it needs octaves=1")
    return positive_int(cfg, "chain_steps")


def check_ppgn(cfg: DictConfig, probe: ImageParam) -> dict[str, Any] | None:
    """``ppgn: {dae, e1, e3}`` checked against the parameterization (before any work; the numbers'
    ranges are checked with every number, :data:`dgnam.ranges.VISUALIZE`); None when the
    config has no ``ppgn`` node or both terms are 0. Loads R and checks it fits the prior's code."""
    node = cfg.get("ppgn")
    if node is None:
        return None
    vals = {key: float(node.get(key, 0.0)) for key in ("e1", "e3")}  # >= 0: dgnam.ranges.VISUALIZE
    if not vals["e1"] and not vals["e3"]:
        return None
    info = getattr(probe, "info", None)
    if not hasattr(probe, "code") or not isinstance(info, dict) or "code_std" not in info:
        raise DgnamValueError("method=ppgn samples a generator's code: it needs param=generator (a prior with code "
                         "statistics)")
    dae = None
    if vals["e1"]:
        if not node.get("dae"):
            raise DgnamValueError(f"ppgn.e1={vals['e1']} needs ppgn.dae=<file> (a code DAE: python -m dgnam.generator.dae)")
        from dgnam.generator.dae import load_dae

        dae = load_dae(str(node.dae), int(info["code_dim"]))
    return {"dae": dae, "std": info["code_std"].float().reshape(-1), **vals}


def code_prior_step(ppgn: dict[str, Any] | None, seed: int, device: torch.device) -> list[P.PostStep]:
    """The post-step of one batch (its noise drawn from a generator seeded by ``seed``)."""
    if ppgn is None:
        return []
    dae = ppgn["dae"].to(device) if ppgn["dae"] is not None else None
    return [P.CodePrior(dae, ppgn["e1"], ppgn["e3"], ppgn["std"], torch.Generator().manual_seed(seed + 7919))]


def check_diversity(cfg: DictConfig, samples: int, chain: int | None, target: Any) -> tuple[float, str, float] | None:
    """``diversity: {weight, layer, until}``: a unit's K samples optimized together in one batch, each paying
    ``weight`` x its mean Gram-matrix similarity to the others at ``layer``
    (:func:`dgnam.core.objectives.diversity`) for the first ``until`` share of the steps. None when the
    weight is 0 or there is one sample."""
    node = cfg.get("diversity")
    weight = float(node.get("weight", 0.0) or 0.0) if node is not None else 0.0  # >= 0: dgnam.ranges
    if not weight:
        return None
    if samples < 2:
        raise DgnamValueError(f"diversity.weight={weight:g} compares a unit's samples: it needs samples=K with K >= 2")
    if chain is not None:
        raise DgnamValueError(f"diversity.weight={weight:g} runs a unit's samples side by side: it cannot take "
                              f"chain_steps={chain} (one chain); drop one of them")
    layer = node.get("layer")
    if not layer:
        raise DgnamValueError(f"diversity.weight={weight:g} needs diversity.layer=<a layer of the target>")
    target.resolve(str(layer))  # an unknown layer names the valid ones
    until = node.get("until", 1.0)  # in (0, 1]: dgnam.ranges
    return weight, str(layer), 1.0 if until is None else float(until)


def until_step(term: O.Objective, last: int) -> tuple[O.Objective, PostStep]:
    """``term`` for the steps before step ``last`` of a run, 0 from there on, and the post-step
    that counts the steps (the loop calls it after each step with the step's number)."""
    on = [last > 0]

    def fn(acts: O.Acts) -> torch.Tensor:
        value = term(acts)
        return value if on[0] else torch.zeros_like(value)

    def count(_param: ImageParam, step: int) -> None:
        on[0] = step + 1 < last

    return O.Objective(fn, term.layers, f"{term.name} until step {last}"), count


def check_pool(cfg: DictConfig, samples: int, target: Any) -> tuple[int, float, str] | None:
    """``pool: {size, keep, layer}``: run ``size`` (M) samples per unit and keep ``samples`` (K) of them,
    chosen by the target alone (:func:`select_pool`). None when ``pool.size`` is null. The numbers'
    ranges are checked with every number (:data:`dgnam.ranges.VISUALIZE`)."""
    node = cfg.get("pool")
    if node is None or node.get("size") is None:
        return None
    size = positive_int(cfg, "pool.size")
    if size <= samples:
        raise DgnamValueError(f"pool.size={size} draws the samples to choose from: it must be larger than "
                              f"samples={samples} (or null: no choice)")
    layer = node.get("layer") or OmegaConf.select(cfg, "diversity.layer")
    if not layer:
        raise DgnamValueError(f"pool.size={size} chooses samples far apart at a layer: it needs pool.layer=<a layer "
                              "of the target> (or diversity.layer)")
    target.resolve(str(layer))  # an unknown layer names the valid ones
    keep = node.get("keep", 0.7)  # in [0, 1]: dgnam.ranges
    return size, 0.7 if keep is None else float(keep), str(layer)


def pool_features(acts: torch.Tensor) -> torch.Tensor:
    """(N, C) features of a layer's activations for :func:`select_pool`: a conv layer's map
    averaged over its positions."""
    f = acts.detach().float()
    return (f.flatten(2).mean(2) if f.dim() > 2 else f.flatten(1)).cpu()


def select_pool(activation: torch.Tensor, features: torch.Tensor, k: int, keep: float) -> list[int]:
    """Which k of a unit's M samples to keep, by the target alone: the candidates are the samples whose
    activation is at least ``keep`` x the best one's (all M when the best is <= 0; the k best when fewer
    than k pass); of those, the best sample first, then again and again the candidate farthest (largest
    cosine distance of ``features`` to the nearest one already kept). Returns indices in 0..M-1, sorted."""
    m = int(activation.shape[0])
    best = float(activation.max())
    cand = [i for i in range(m) if best <= 0 or float(activation[i]) >= keep * best]
    if len(cand) < k:
        cand = sorted(range(m), key=lambda i: -float(activation[i]))[:k]
    f = torch.nn.functional.normalize(features.double(), dim=1)
    chosen = [max(cand, key=lambda i: float(activation[i]))]
    near = 1 - f[cand] @ f[chosen[0]]  # distance of each candidate to its nearest kept sample
    while len(chosen) < k:
        j = cand[int(torch.argmax(near.masked_fill(torch.tensor([c in chosen for c in cand]), -1.0)))]
        chosen.append(j)
        near = torch.minimum(near, 1 - f[cand] @ f[j])
    return sorted(chosen)
