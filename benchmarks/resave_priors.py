"""Re-save the shipped generator priors so that they record names, hashes and the training command,
never the paths of the machine that trained them (same tensors: the script checks every one).

    python benchmarks/resave_priors.py            # rewrites dgnam/priors/*_g*.pt in place, prints the sha256s
    python benchmarks/resave_priors.py mobilenet_v2_latent_spatial_gridfree_g128.pt   # only the files named

Paths under the shared folder become ``${dgnam_shared:}/...`` (what conf/ writes), paths under a
checkout become relative to it (``outputs/...``), and ``generator.init_from`` the name of the prior
it started from. ``extra`` gains ``command`` (the training command of docs/generator.md),
``encoder_weights_sha256`` and, for a fine-tune, ``init_from_sha256``. dgnam.priors lists the result.
Running it again keeps every tensor but gives the files new sha256s (torch.save names the records in
its zip after the temporary file it writes): put the printed ones into dgnam/priors/__init__.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dgnam.generator.prior import FORMAT  # noqa: E402
from dgnam.io import save_torch  # noqa: E402
from dgnam.paths import PRIORS_DIR, shared_dir  # noqa: E402
from dgnam.priors.hub import sha256_of  # noqa: E402

RUN = "python train_generator.py experiment_train={} hydra.run.dir=outputs/train_generator/{} export.path=dgnam/priors/{}"
COMMANDS = {  # docs/generator.md, in the order they ran (a fine-tune after its parent)
    "mobilenet_v2_pool_g64.pt": [
        "python train_generator.py experiment_train=mobilenet_v2_cpu hydra.run.dir=outputs/train_generator/mobilenet_v2_cpu_v2",
        "python train_generator.py experiment_train=mobilenet_v2_cpu hydra.run.dir=outputs/train_generator/mobilenet_v2_cpu_v2_export "
        "export.from_ckpt=outputs/train_generator/mobilenet_v2_cpu_v2/checkpoints/best.ckpt export.path=dgnam/priors/mobilenet_v2_pool_g64.pt"],
    "mobilenet_v2_latent_g128.pt": [RUN.format("mobilenet_v2_latent_cpu", "mobilenet_v2_latent_cpu", "mobilenet_v2_latent_g128.pt")],
    "mobilenet_v2_latent_spatial_g128.pt": [
        RUN.format("mobilenet_v2_latent_spatial_cpu", "mobilenet_v2_latent_spatial_cpu", "mobilenet_v2_latent_spatial_g128.pt"),
        RUN.format("mobilenet_v2_latent_spatial_cpu", "mobilenet_v2_latent_spatial_cpu", "mobilenet_v2_latent_spatial_g128.pt")
        + " ckpt_path=outputs/train_generator/mobilenet_v2_latent_spatial_cpu/checkpoints/it867.ckpt  # resumed with the clip"],
    "mobilenet_v2_latent_spatial_perceptual_g128.pt": [
        RUN.format("mobilenet_v2_latent_spatial_perceptual_cpu", "mobilenet_v2_latent_spatial_perceptual_cpu",
                   "mobilenet_v2_latent_spatial_perceptual_g128.pt").replace("_cpu hydra", "_cpu threads=1 'trainer.max_time=\"00:00:50:00\"' hydra", 1)],
    "mobilenet_v2_latent_spatial_deep_g128.pt": [
        RUN.format("mobilenet_v2_latent_spatial_deep_cpu", "mobilenet_v2_latent_spatial_deep_cpu",
                   "mobilenet_v2_latent_spatial_deep_g128.pt").replace("_cpu hydra", "_cpu threads=1 hydra", 1)],
    "mobilenet_v2_latent_spatial_gridfree_g128.pt": [
        RUN.format("mobilenet_v2_latent_spatial_gridfree_cpu", "mobilenet_v2_latent_spatial_gridfree_cpu",
                   "mobilenet_v2_latent_spatial_gridfree_g128.pt")],
}


def clean(value, shared: str):
    """Every string without one machine's paths (see the module's docstring)."""
    if isinstance(value, dict):
        return {k: clean(v, shared) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clean(v, shared) for v in value)
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    if value.startswith(shared + "/"):
        return "${dgnam_shared:}/" + value[len(shared) + 1:]
    m = re.match(r"^/.*?/dgnam/priors/([^/]+)\.pt$", value)
    if m:
        return m.group(1)
    m = re.match(r"^/.*?/((outputs|multirun)/.*)$", value)
    if m:
        return m.group(1)
    raise ValueError(f"no rule for the path {value}")


def main() -> None:
    shared = str(Path(shared_dir()).resolve())
    digests = {}
    only = set(sys.argv[1:])
    if only - set(COMMANDS):
        raise SystemExit(f"unknown prior file(s) {sorted(only - set(COMMANDS))}; valid: {', '.join(COMMANDS)}")
    for name, commands in COMMANDS.items():
        if only and name not in only:
            continue
        path = PRIORS_DIR / name
        blob = torch.load(path, map_location="cpu", weights_only=True)
        assert blob["format"] == FORMAT
        extra = dict(blob["extra"])
        cfg = extra.get("config", {})
        init_from = (cfg.get("generator") or {}).get("init_from")
        extra = clean(extra, shared)
        extra["command"] = commands
        extra["encoder_weights_sha256"] = sha256_of(Path(shared) / "models" / blob["encoder"]["weights_file"])
        if init_from:
            parent = Path(init_from).stem + ".pt"  # a path before, a name after
            extra["init_from_sha256"] = digests.get(parent) or sha256_of(PRIORS_DIR / parent)
        new = {**blob, "extra": extra}
        save_torch(new, path)
        back = torch.load(path, map_location="cpu", weights_only=True)
        for k, v in blob.items():  # the same tensors, bit for bit
            if k == "state_dict":
                assert all(torch.equal(v[t], back[k][t]) and v[t].dtype == back[k][t].dtype for t in v) and v.keys() == back[k].keys()
            elif isinstance(v, torch.Tensor):
                assert torch.equal(v, back[k]) and v.dtype == back[k].dtype
            elif k != "extra":
                assert v == back[k], k
        digests[name] = sha256_of(path)
        print(f"{name} {digests[name]} {path.stat().st_size}")


if __name__ == "__main__":
    main()
