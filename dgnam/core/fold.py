"""Folding a frozen target's BatchNorms into its convolutions (:func:`fold_batchnorm`), done once per
feature extractor by :class:`dgnam.core.models.Target`."""

from __future__ import annotations

import copy

import torch
from torch import nn


def fold_batchnorm(extractor: torch.fx.GraphModule, channels_last: bool = True) -> torch.fx.GraphModule:
    """Fold every eval-mode BatchNorm into the convolution before it: the weights are frozen, so
    ``bn(conv(x))`` is one convolution with rescaled weights, and the batch-norm pass and its backward
    pass vanish from every step. Inside a leaf module of the graph (torchvision's Conv2dNormActivation,
    whose inner outputs cannot be requested) every (Conv2d, BatchNorm2d) pair of a Sequential is
    folded; between graph nodes, torch.fx's ``fuse`` folds a pair unless the convolution's own output
    is also used (a requested pre-BN layer keeps its BatchNorm). The extractor is copied first, so
    the model's own modules are never touched. Returns the extractor itself when it has no BatchNorm."""
    from torch.fx.experimental.optimization import fuse
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if not any(isinstance(m, nn.BatchNorm2d) for m in extractor.modules()):
        return extractor
    ex = copy.deepcopy(extractor).eval()  # (a deep copy of torchvision's extractor comes back in train mode)
    leaves = [ex.get_submodule(n.target) for n in ex.graph.nodes if n.op == "call_module"]
    for leaf in leaves:
        for seq in (m for m in leaf.modules() if isinstance(m, nn.Sequential)):
            names = list(seq._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = seq._modules[a], seq._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                    seq._modules[a], seq._modules[b] = fuse_conv_bn_eval(conv.eval(), bn.eval()), nn.Identity()
    ex = fuse(ex, inplace=True, no_trace=True).eval()
    return ex.to(memory_format=torch.channels_last) if channels_last else ex
