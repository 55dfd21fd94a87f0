"""The generator priors that ship with dgnam, as named weights (in the manner of torchvision's
``Weights`` enums): each entry gives the file, its sha256 and size, the encoder and code layer it
inverts, the command that trained it and its measured numbers, each with the command behind it.

    import dgnam
    dgnam.priors.list()                                    # every shipped prior, with its numbers
    p = dgnam.priors.get("mobilenet_v2_latent_spatial_gridfree_g128")   # the default (dgnam.priors.DEFAULT)
    p.path, p.sha256, p.numbers, p.command
    G, info = dgnam.generator.load_prior("mobilenet_v2_latent_spatial_gridfree_g128")   # verified, loaded weights-only
    dgnam.priors.resolve("https://lab.example/vgg16_fc6.pt", sha256="...")   # downloaded once (torch hub cache)

On the command line the same names go to ``param.prior=<name>``; a URL goes with its sha256
(``param.prior=<url> param.prior_sha256=<sha256>``). A file given by path is read as it is (a shipped
one is verified too). The ``dgnam/priors`` folder also holds the other artifacts (MACO's spectrum,
TAEF2's latent statistics, the code DAE of ``method=ppgn``).
"""

from __future__ import annotations

import builtins
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dgnam.errors import DgnamFileNotFoundError, DgnamValueError
from dgnam.priors.hub import check_file, check_sha256_arg, fetch, is_url

HERE = Path(__file__).resolve().parent
_EVAL = ("python -m dgnam.generator.evaluate --prior dgnam/priors/{0}.pt --val '../shared/data/imagenet50-128/valid-*.parquet' "
         "--limit 1000 --judge ../shared/models/judge_mobilenet_v1_0.5_160.pt2{1}")
_COMPARE = "python visualize.py -m experiment=compare method={0} seed={1} batch_size=20"


@dataclass(frozen=True)
class Prior:
    """A shipped generator prior. ``numbers``: ``recon_*`` on 1,000 held-out validation photos
    (``recon_command``; G(E(x)) against the photo: pixel MSE, PSNR, how often MobileNetV2 gives it the
    photo's top-1 class and the independent judge the photo's label) and ``compare_judge_top1_pct``
    (the 20-class comparison, ``compare_command``: how often the judge names the class of DGN-AM's
    image through this prior, mean ± sd over seeds); docs/generator.md and docs/compare-results.md."""

    name: str
    sha256: str
    size: int                   # bytes
    kind: str                   # pixel (DeePSiM) | latent (a head into the frozen TAEF2 decoder)
    resolution: int             # the side of G's images
    encoder: str                # the network whose code G inverts, and its weights file
    code_layer: str
    methods: tuple[str, ...]    # the method= configs that use it
    command: tuple[str, ...]    # how it was trained (the same is stored in the file: info["extra"]["command"])
    numbers: dict[str, Any] = field(default_factory=dict)
    recon_command: str = ""
    compare_command: tuple[str, ...] = ()

    @property
    def file(self) -> str:
        return f"{self.name}.pt"

    @property
    def path(self) -> Path:
        return HERE / self.file

    def verify(self) -> Path:
        """The file's path once its sha256 is checked (a one-line error if it is not this prior)."""
        if not self.path.is_file():
            raise DgnamFileNotFoundError(f"the prior {self.name} is missing from {HERE}; reinstall dgnam")
        return check_file(self.path, self.sha256, f"the prior {self.name}")

    def __repr__(self) -> str:
        n = self.numbers
        return (f"Prior({self.name!r}: {self.kind} {self.resolution} px from {self.encoder} {self.code_layer}, "
                f"{self.size / 1e6:.1f} MB; reconstructions judge {n['recon_judge_top1_pct']} %, "
                f"comparison judge top-1 {n['compare_judge_top1_pct']}; methods {', '.join(self.methods)})")


_MOBILENET = "mobilenet_v2 (mobilenet_v2_imagenet.pth)"
_SPATIAL = "features.14.conv.0"
_PRIORS = (
    Prior("mobilenet_v2_latent_spatial_gridfree_g128", "79c0552bda881855c736cebe2b60576c10a3d55ecf3d029b084c2faeb4221482",
          5743161, "latent", 128, _MOBILENET, _SPATIAL, ("dgnam_deep", "param.prior default"),
          ("python train_generator.py experiment_train=mobilenet_v2_latent_spatial_gridfree_cpu "
           "hydra.run.dir=outputs/train_generator/mobilenet_v2_latent_spatial_gridfree_cpu "
           "export.path=dgnam/priors/mobilenet_v2_latent_spatial_gridfree_g128.pt",),
          {"recon_mse": 0.0238, "recon_psnr_db": 16.73, "recon_mobilenet_top1_pct": 24.5, "recon_judge_top1_pct": 21.3,
           "compare_judge_top1_pct": "98.3 ± 2.9 % (3 seeds, 200 steps, bf16; fp32 93.3 %, p 0.893)", "compare_judge_p": 0.892,
           "compare_grid": 0.98},
          _EVAL.format("mobilenet_v2_latent_spatial_gridfree_g128", " --threads 1"),
          (_COMPARE.format("dgnam_deep", "0,1,2") + " hydra.sweep.dir=multirun/compare_gridfree",)),
    Prior("mobilenet_v2_latent_spatial_deep_g128", "cfb60a519ae67258a8f68a69c2a8827b5555963c723da391e31232f284a58d18",
          5742505, "latent", 128, _MOBILENET, _SPATIAL, ("ppgn", "dgnam_deep + param.prior=<this name> steps=100"),
          ("python train_generator.py experiment_train=mobilenet_v2_latent_spatial_deep_cpu threads=1 "
           "hydra.run.dir=outputs/train_generator/mobilenet_v2_latent_spatial_deep_cpu "
           "export.path=dgnam/priors/mobilenet_v2_latent_spatial_deep_g128.pt",),
          {"recon_mse": 0.0244, "recon_psnr_db": 16.63, "recon_mobilenet_top1_pct": 27.7, "recon_judge_top1_pct": 23.1,
           "compare_judge_top1_pct": "100.0 ± 0.0 % (3 seeds, 200 steps, fp32)", "compare_judge_p": 0.902},
          _EVAL.format("mobilenet_v2_latent_spatial_deep_g128", " --threads 1"),
          (_COMPARE.format("dgnam_deep", "0,1,2") + " param.prior=mobilenet_v2_latent_spatial_deep_g128"
           " hydra.sweep.dir=multirun/compare_deep",)),
    Prior("mobilenet_v2_latent_spatial_perceptual_g128", "bec5aaa0ecca4b319a436cabfef170979fa637881e0c67c469067c2dd4307d64",
          5743041, "latent", 128, _MOBILENET, _SPATIAL, ("dgnam_perceptual",),
          ("python train_generator.py experiment_train=mobilenet_v2_latent_spatial_perceptual_cpu threads=1 "
           "'trainer.max_time=\"00:00:50:00\"' hydra.run.dir=outputs/train_generator/mobilenet_v2_latent_spatial_perceptual_cpu "
           "export.path=dgnam/priors/mobilenet_v2_latent_spatial_perceptual_g128.pt",),
          {"recon_mse": 0.0231, "recon_psnr_db": 16.87, "recon_mobilenet_top1_pct": 14.7, "recon_judge_top1_pct": 13.7,
           "compare_judge_top1_pct": "98.3 ± 2.9 % (3 seeds)", "compare_judge_p": 0.856},
          _EVAL.format("mobilenet_v2_latent_spatial_perceptual_g128", ""),
          tuple(_COMPARE.format("dgnam_perceptual", s) + f" hydra.sweep.dir=multirun/compare_perceptual{x}"
                for s, x in ((0, ""), (1, "_s1"), (2, "_s2")))),
    Prior("mobilenet_v2_latent_spatial_g128", "ea4ec9f2a7255340e01adce2b83c983640a87cec97c2565ea3206bd56bc63bb2",
          5741685, "latent", 128, _MOBILENET, _SPATIAL, ("dgnam_spatial",),
          ("python train_generator.py experiment_train=mobilenet_v2_latent_spatial_cpu "
           "hydra.run.dir=outputs/train_generator/mobilenet_v2_latent_spatial_cpu "
           "export.path=dgnam/priors/mobilenet_v2_latent_spatial_g128.pt",
           "python train_generator.py experiment_train=mobilenet_v2_latent_spatial_cpu "
           "hydra.run.dir=outputs/train_generator/mobilenet_v2_latent_spatial_cpu "
           "export.path=dgnam/priors/mobilenet_v2_latent_spatial_g128.pt "
           "ckpt_path=outputs/train_generator/mobilenet_v2_latent_spatial_cpu/checkpoints/it867.ckpt  # resumed with the clip"),
          {"recon_mse": 0.0270, "recon_psnr_db": 16.12, "recon_mobilenet_top1_pct": 4.2, "recon_judge_top1_pct": 4.3,
           "compare_judge_top1_pct": "90.0 ± 5.0 % (3 seeds)", "compare_judge_p": 0.765},
          _EVAL.format("mobilenet_v2_latent_spatial_g128", ""),
          (_COMPARE.format("dgnam_spatial", "0,1,2") + " hydra.sweep.dir=multirun/compare_spatial",)),
    Prior("mobilenet_v2_latent_g128", "ddc0a1de03d8673632220fd87767a79a47193ad6bbef689494fa213ea5bb1a3a",
          10406325, "latent", 128, _MOBILENET, "flatten (pooled 1280-d)", ("dgnam_latent",),
          ("python train_generator.py experiment_train=mobilenet_v2_latent_cpu "
           "hydra.run.dir=outputs/train_generator/mobilenet_v2_latent_cpu export.path=dgnam/priors/mobilenet_v2_latent_g128.pt",),
          {"recon_mse": 0.0617, "recon_psnr_db": 12.57, "recon_mobilenet_top1_pct": 0.9, "recon_judge_top1_pct": 0.4,
           "compare_judge_top1_pct": "17.5 ± 10.6 % (2 seeds)", "compare_judge_p": 0.141},
          _EVAL.format("mobilenet_v2_latent_g128", ""),
          ("python visualize.py -m experiment=compare method=dgnam_latent,dgnam_tr batch_size=20 hydra.sweep.dir=multirun/compare_latent_s0",
           _COMPARE.format("dgnam_latent", 1))),
    Prior("mobilenet_v2_pool_g64", "0f2e0076c457f6c136df9f4198879693e34c70a48998f9ea2155240ccf2b9e79",
          9482624, "pixel", 64, _MOBILENET, "flatten (pooled 1280-d)", ("dgnam", "dgnam_tuned", "dgnam_tr"),
          ("python train_generator.py experiment_train=mobilenet_v2_cpu hydra.run.dir=outputs/train_generator/mobilenet_v2_cpu_v2",
           "python train_generator.py experiment_train=mobilenet_v2_cpu hydra.run.dir=outputs/train_generator/mobilenet_v2_cpu_v2_export "
           "export.from_ckpt=outputs/train_generator/mobilenet_v2_cpu_v2/checkpoints/best.ckpt export.path=dgnam/priors/mobilenet_v2_pool_g64.pt"),
          {"recon_mse": 0.0522, "recon_psnr_db": 13.31, "recon_mobilenet_top1_pct": 1.7, "recon_judge_top1_pct": 0.6,
           "compare_judge_top1_pct": "10.0 ± 5.0 % (3 seeds, method=dgnam_tuned)", "compare_judge_p": 0.062},
          _EVAL.format("mobilenet_v2_pool_g64", " --mean-image outputs/mean_image_train64_all.pt"),
          ("python visualize.py -m experiment=compare method=dgnam,dgnam_tuned batch_size=20 hydra.sweep.dir=multirun/compare/final2_dgnam",
           "python visualize.py -m experiment=compare method=lucid,dgnam_tuned seed=1,2 batch_size=20 hydra.sweep.dir=multirun/compare/final2_seeds")),
)
PRIORS: dict[str, Prior] = {p.name: p for p in _PRIORS}
DEFAULT = "mobilenet_v2_latent_spatial_gridfree_g128"


def get(name: str) -> Prior:
    """The shipped prior ``name`` (a file name with ``.pt`` works too)."""
    key = str(name).removesuffix(".pt")
    if key not in PRIORS:
        close = difflib.get_close_matches(key, PRIORS, n=2, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise DgnamValueError(f"unknown prior {name!r}{hint}; shipped: {', '.join(PRIORS)} (or a file, or a URL "
                         f"with param.prior_sha256=<sha256>)")
    return PRIORS[key]


def list() -> builtins.list[Prior]:  # noqa: A001  (dgnam.priors.list(), as the issue and torchvision's list_models)
    """Every shipped prior, best first by the comparison's judge top-1."""
    return builtins.list(_PRIORS)


def table() -> str:
    """The shipped priors as the Markdown of docs/priors.md (tests/test_priors.py keeps the page so)."""
    out = ["| name | kind, side | code layer | size | reconstructions: MSE, PSNR, MobileNetV2 / judge top-1 | "
           "comparison: judge top-1 (p) | methods |", "| --- | --- | --- | ---: | --- | --- | --- |"]
    for p in _PRIORS:
        n = p.numbers
        out.append(f"| `{p.name}` | {p.kind}, {p.resolution} px | `{p.code_layer}` | {p.size / 1e6:.1f} MB | "
                   f"{n['recon_mse']}, {n['recon_psnr_db']} dB, {n['recon_mobilenet_top1_pct']} % / "
                   f"{n['recon_judge_top1_pct']} % | {n['compare_judge_top1_pct']} ({n['compare_judge_p']}) | "
                   f"{', '.join(p.methods)} |")
    for p in _PRIORS:
        out += ["", f"**`{p.name}`** (sha256 `{p.sha256}`)", "", "```bash", "# trained by",
                *p.command, "# reconstructions of 1,000 held-out photos", p.recon_command,
                "# the 20-class comparison (then experiment=report over the runs)", *p.compare_command, "```"]
    return "\n".join(out)


def resolve(prior: str | os.PathLike, sha256: str | None = None, progress: bool = True) -> Path:
    """The local file of ``prior``: a shipped name (verified), a URL (downloaded once into the torch
    hub cache and checked against ``sha256``) or a path (checked against ``sha256`` when given; a
    shipped file given by its path is verified against its entry)."""
    if is_url(prior):
        return fetch(str(prior), sha256, progress=progress)
    text = str(prior)
    named = text.removesuffix(".pt") in PRIORS or ("/" not in text and not Path(text).suffix)
    if named and not Path(os.path.expanduser(text)).is_file():  # a name (an unknown one: the shipped names)
        return get(text).verify()
    path = Path(os.path.expanduser(text))
    if sha256 is not None and path.is_file():
        return check_file(path, check_sha256_arg(sha256, f"the prior {path}"), f"the prior {path}")
    entry = PRIORS.get(path.stem)
    if entry is not None and path.is_file() and path.resolve() == entry.path:
        return entry.verify()
    return path
