"""Targets: classifiers wrapped with their input normalization and friendly layer names.

A :class:`Target` takes images in RGB [0, 1], normalizes them with the statistics that belong to its
weights, and returns the activations of exactly the layers asked for (a ``torch.fx`` feature
extractor built once per layer set; the graph is pruned past the deepest requested node, so later
layers are never computed and no hooks are installed). A module that ``torch.fx`` cannot trace is
read with forward hooks on exactly the modules asked for, removed after every forward pass.

:func:`build_target` builds one from a torchvision name; :func:`wrap_model` around any ``nn.Module``
(normalization and input size given, or read from timm/torchvision metadata).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from dgnam.core import precision as PR
from dgnam.core.aliases import ALIAS_STYLE, imagenet_categories, sequential_aliases
from dgnam.core.devices import pick_device
from dgnam.core.fold import fold_batchnorm
from dgnam.core.weights import check_weights, download, load_weights_file, resolve_weights_enum
from dgnam.errors import DgnamError, DgnamValueError, choices, first_line
from dgnam.safeload import weights_only_everywhere

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT = "input"  # pseudo-layer: the (transformed) image in [0, 1], before normalization
OUTPUT = "output"  # the model's output, for a target read with forward hooks (no fx graph)
GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma: RGB -> the single channel of a grey-input model

class Target(nn.Module):
    """A frozen classifier in eval mode that maps images in [0, 1] to named activations.

    Args:
        model: any ``nn.Module`` taking (B, C, H, W); layers are ``torch.fx`` graph nodes, or module
            names read with forward hooks when fx cannot trace it (then ``traced`` is false).
        mean, std: the input normalization of its weights, per input channel: three (RGB), or one
            for a grey-input model (the RGB image is turned into luma first).
        name: the architecture name, for messages.
        input_size: the square side the weights were trained at (used by callers that resize).
        aliases: friendly layer name -> graph node name.
        categories: class names of the output logits, if known.
        channels_last: run convolutions in NHWC memory layout (faster on CPU with oneDNN and on
            GPUs; measured ~1.4x for VGG16 at batch 8 on CPU); results are the same.
        fixed_size: the model takes only ``input_size`` x ``input_size`` images (a vision
            transformer with a fixed position embedding): every image is resized to it first.
        size_multiple: the model takes only sides that are multiples of this (a transformer's
            patch size): an image of another side is resized to the nearest multiple first.
        compile: run each layer set's extractor through ``torch.compile`` (the first call of a layer
            set and image size compiles it; see benchmarks/RESULTS.md for when it pays).
        precision: ``fp32``, ``bf16`` (bfloat16 autocast of the forward pass), or ``auto`` (bf16
            where the device computes it natively, :mod:`dgnam.core.precision`); activations are
            returned as float32.
        tracer_kwargs: passed to torchvision's fx feature extraction (``leaf_modules``,
            ``autowrap_functions``): a library's untraceable parts kept whole, as timm's are.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        name: str = "model",
        input_size: int = 224,
        aliases: dict[str, str] | None = None,
        categories: Sequence[str] | None = None,
        channels_last: bool = True,
        fixed_size: bool = False,
        size_multiple: int = 1,
        compile: bool = False,
        precision: str = "fp32",
        tracer_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if len(mean) != len(std) or len(mean) not in (1, 3):
            raise DgnamValueError(f"mean={list(mean)} and std={list(std)} need one value per input channel (3, or 1 for a grey-input model)")
        self.compile, self.precision = bool(compile), PR.check_precision(precision, "model.precision")
        check_weights(model, name)
        for m in model.modules():  # in-place ReLUs would overwrite pre-ReLU activations we return
            if hasattr(m, "inplace"):
                m.inplace = False
        self.model = model.eval().requires_grad_(False)
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.in_channels = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.name = name
        self.input_size = input_size
        self.fixed_size = fixed_size
        self.size_multiple = max(1, int(size_multiple))
        self.categories = list(categories) if categories is not None else None
        self.tracer_kwargs = tracer_kwargs
        try:
            self.nodes: list[str] = [n for n in get_graph_node_names(self.model, tracer_kwargs=tracer_kwargs)[1]
                                     if n != "x"]
            self.traced = True
        except Exception as e:  # data-dependent control flow, unsupported ops ...
            log.warning("%s cannot be traced by torch.fx (%s); its layers are module names, read with forward "
                        "hooks on the modules asked for (removed after each pass)", name, first_line(e))
            self.nodes = [n for n, _ in self.model.named_modules() if n] + [OUTPUT]
            self.traced = False
        self.aliases = dict(aliases or {})
        self.aliases.setdefault("logits", self.nodes[-1])
        self._extractors: dict[tuple[str, ...], nn.Module] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}

    def train(self, mode: bool = True) -> Target:  # a target never leaves eval mode
        return super().train(False)

    @property
    def layer_names(self) -> list[str]:
        """Every name :meth:`resolve` accepts: aliases first, then graph node names."""
        return list(self.aliases) + [n for n in self.nodes if n not in self.aliases]

    def resolve(self, layer: str) -> str:
        """Alias or node name -> graph node name; an unknown name lists the valid ones."""
        if layer == INPUT:
            return INPUT
        if layer in self.aliases:
            return self.aliases[layer]
        if layer in self.nodes:
            return layer
        close = difflib.get_close_matches(layer, self.layer_names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise DgnamValueError(
            f"unknown layer {layer!r} for {self.name}{hint}; valid layers: {choices(self.layer_names, 60)}"
        )

    def normalize(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> the model's input space (resized first to its fixed side, or to a multiple of its patch size; luma
        for a grey-input model)."""
        side = (self.input_size,) * 2 if self.fixed_size else tuple(
            max(self.size_multiple, round(n / self.size_multiple) * self.size_multiple) for n in image.shape[-2:])
        if tuple(image.shape[-2:]) != side:
            image = F.interpolate(image, size=side, mode="bilinear", align_corners=False, antialias=True)
        if self.in_channels == 1:
            image = (image * image.new_tensor(GREY).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return (image - self.mean) / self.std

    def seen(self, images: Tensor) -> Tensor:
        """Images as the model sees their colour: grey ones (repeated to RGB) for a grey-input model."""
        if self.in_channels == 3:
            return images
        grey = (images.float() * images.new_tensor(GREY, dtype=torch.float32).view(1, 3, 1, 1)).sum(1, keepdim=True)
        grey = grey.expand_as(images)
        return grey if images.is_floating_point() else grey.round().to(images.dtype)

    def _extractor(self, nodes: tuple[str, ...]) -> nn.Module:
        if nodes not in self._extractors:
            ex = create_feature_extractor(self.model, return_nodes=list(nodes), tracer_kwargs=self.tracer_kwargs).eval()
            ex = fold_batchnorm(ex, self.channels_last)
            self._extractors[nodes] = torch.compile(ex) if self.compile else ex
        return self._extractors[nodes]

    def _hooked(self, x: Tensor, nodes: tuple[str, ...]) -> dict[str, Tensor]:
        """The outputs of modules ``nodes`` (and :data:`OUTPUT`) by forward hooks on exactly those
        modules, removed when the pass ends (also when it fails). A module called twice gives its
        last output."""
        modules = dict(self.model.named_modules())
        feats: dict[str, Tensor] = {}
        handles = [modules[n].register_forward_hook(lambda _m, _i, o, n=n: feats.__setitem__(n, o))
                   for n in nodes if n != OUTPUT]
        try:
            out = self.model(x)
        finally:
            for h in handles:
                h.remove()
        if OUTPUT in nodes:
            feats[OUTPUT] = out
        return feats

    def forward(self, image: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
        """Activations of ``layers`` (aliases or node names) for images (B, 3, H, W) in [0, 1].

        The pseudo-layer ``"input"`` returns ``image`` itself (for image priors such as TV).
        """
        layers = list(dict.fromkeys(layers))
        resolved = {layer: self.resolve(layer) for layer in layers}
        nodes = tuple(sorted({n for n in resolved.values() if n != INPUT}))
        out: dict[str, Tensor] = {}
        if nodes:
            x = self.normalize(image)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            bf16 = PR.resolve(self.precision, x.device) == "bf16"
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                feats = self._extractor(nodes)(x) if self.traced else self._hooked(x, nodes)
            if bf16:
                feats = {k: v.float() for k, v in feats.items()}
            out = {layer: feats[node] for layer, node in resolved.items() if node != INPUT}
        if INPUT in resolved.values():
            out.update({layer: image for layer, node in resolved.items() if node == INPUT})
        return out

    @torch.no_grad()
    def layer_shape(self, layer: str, size: int | None = None) -> tuple[int, ...]:
        """Shape of one item's activation at ``layer`` for a square input of ``size`` (default: input_size)."""
        size = size or self.input_size
        key = f"{self.resolve(layer)}@{size}"
        if key not in self._shapes:
            x = torch.zeros(1, 3, size, size, device=self.mean.device)
            try:
                self._shapes[key] = tuple(self(x, [layer])[layer].shape[1:])
            except DgnamError:  # a setting's own error (one line already), not the size's
                raise
            except (RuntimeError, AssertionError, ValueError) as e:
                fix = (f"{self.name} takes {self.in_channels} x {self.input_size} x {self.input_size} inputs: use "
                       f"image_size={self.input_size}" if size != self.input_size else
                       "give the side the model takes (model.input_size=..., or input_size= in Python)")
                raise DgnamValueError(f"layer {layer} of {self.name} cannot be computed for a {size} x {size} image "
                                 f"({first_line(e)}); {fix}, or a larger image_size") from None
        return self._shapes[key]

    def class_index(self, name: str | int) -> int:
        """Class name (exact, case-insensitive, or a unique substring) or index -> logit index."""
        if isinstance(name, int) or (isinstance(name, str) and name.strip().lstrip("-").isdigit()):
            return int(name)
        if not self.categories:
            raise DgnamValueError(f"class name {name!r} given, but {self.name} has no class names; use an index")
        low = [c.lower() for c in self.categories]
        key = name.strip().lower().replace("_", " ")
        if key in low:
            return low.index(key)
        hits = [i for i, c in enumerate(low) if key in c]
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise DgnamValueError(
                f"class name {name!r} is ambiguous: {choices([self.categories[i] for i in hits], 12)}"
            )
        close = difflib.get_close_matches(key, low, n=5, cutoff=0.6)
        hint = f"; closest: {', '.join(self.categories[low.index(c)] for c in close)}" if close else ""
        raise DgnamValueError(f"class name {name!r} not found among the {len(low)} classes of {self.name}{hint}")


def build_target(
    arch: str = "vgg16",
    weights: str | None = None,
    weights_file: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: int | None = None,
    num_classes: int = 1000,
    conv_relu: bool = False,
    fc_relu: bool = True,
    channels_last: bool = True,
    compile: bool = False,
    precision: str = "fp32",
    download_timeout: float = 20.0,
    device: str | torch.device = "cpu",
) -> Target:
    """Build a :class:`Target` from a torchvision architecture name.

    Weights, in order of precedence: ``weights_file`` (a local ``state_dict``; normalization from
    ``mean``/``std``, ImageNet statistics if not given), ``weights`` (a torchvision enum name such
    as ``"IMAGENET1K_V1"``, ``"VGG16_Weights.IMAGENET1K_V1"`` or ``"DEFAULT"``; downloaded into
    torch's hub cache, normalization from the enum), or neither (random weights, with a warning).

    Aliases: conv layers (``conv5_3``, ``conv1``) are pre-ReLU unless ``conv_relu``; ``fc6``/``fc7``
    are post-ReLU unless ``fc_relu`` is false; ``fc8`` and ``logits`` are the pre-softmax logits.
    ``compile`` and ``precision``: see :class:`Target`.
    """
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        close = difflib.get_close_matches(arch, available, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise DgnamValueError(f"unknown model {arch!r}{hint}; valid: torchvision classifiers such as "
                         f"vgg16, alexnet, resnet50, mobilenet_v2 (all: {len(available)} names)")
    categories: Sequence[str] | None = imagenet_categories() if num_classes == 1000 else None
    if weights_file:
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        load_weights_file(model, weights_file, arch)
        mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
        input_size = input_size or 224
    elif weights:
        enum = resolve_weights_enum(arch, weights)
        download(enum, download_timeout)
        with weights_only_everywhere():  # the cached file in torch's hub folder is read without code
            model = torchvision.models.get_model(arch, weights=enum)
        tf = enum.transforms()
        mean, std = mean or tf.mean, std or tf.std
        input_size = input_size or int(tf.crop_size[0])
        categories = enum.meta.get("categories", categories)
    else:
        log.warning(
            "\n%s\n  %s has RANDOM WEIGHTS: its images show nothing learned. Give model.weights=<enum>\n"
            "  or model.weights_file=<state_dict.pth> for a trained network.\n%s", "!" * 78, arch, "!" * 78
        )
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
        input_size = input_size or 224
    style = ALIAS_STYLE.get(arch)
    aliases = sequential_aliases(model, style, conv_relu, fc_relu) if style else {}
    return Target(model, mean, std, name=arch, input_size=input_size, aliases=aliases,
                  categories=categories, channels_last=channels_last, compile=compile,
                  precision=precision).to(pick_device(device))
