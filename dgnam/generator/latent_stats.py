"""Per-channel statistics of real TAEF2 latents, for latent AM's clamp and pull
(:class:`dgnam.core.params.LatentParam`): written here, read by :func:`load_latent_stats`.

    python -m dgnam.generator.latent_stats --cache outputs/code_cache/codes-<key>.pt \
        --out dgnam/priors/taef2_latent_stats.pt
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from dgnam.errors import DgnamValueError
from dgnam.safeload import load_file

STATS_FORMAT = "dgnam-latent-stats"


@torch.no_grad()
def latent_statistics(latents: Tensor, q: float = 0.005) -> dict[str, Tensor]:
    """Per-channel statistics of real latents (N, C, r, r): ``mean``, ``std`` and the range
    ``low``, ``high`` = the ``q`` and ``1 - q`` quantiles (over a sample of at most 2^24 values)."""
    c = latents.shape[1]
    flat = latents.float().transpose(0, 1).reshape(c, -1)  # (C, N r r)
    if flat.shape[1] > 2**24 // c:
        idx = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(0))[: 2**24 // c]
        sample = flat[:, idx]
    else:
        sample = flat
    return {"mean": flat.mean(1), "std": flat.std(1), "low": sample.quantile(q, dim=1),
            "high": sample.quantile(1 - q, dim=1)}


def load_latent_stats(path: str | Path) -> dict[str, Tensor]:
    """Per-channel statistics of real TAEF2 latents (``mean``, ``std``, ``low``, ``high``: (C,)),
    written by ``python -m dgnam.generator.latent_stats``; loaded without running code."""
    p = Path(path).expanduser()
    blob = load_file(p, "latent statistics file", " (param.stats=<file>; rebuild it with "
                     "python -m dgnam.generator.latent_stats)")
    if not isinstance(blob, dict) or blob.get("format") != STATS_FORMAT:
        raise DgnamValueError(f"{p} is not a latent statistics file (no format tag {STATS_FORMAT!r})")
    keys = ("mean", "std", "low", "high")
    bad = [k for k in keys if not isinstance(blob.get(k), Tensor) or blob[k].dim() != 1]
    if bad or len({blob[k].numel() for k in keys}) != 1:
        raise DgnamValueError(f"latent statistics {p}: {', '.join(bad) or 'mean/std/low/high'} must be 1-d tensors "
                         f"of one length (the latent channels)")
    return {k: blob[k].float() for k in keys}


def main(argv: list[str] | None = None) -> None:
    """``python -m dgnam.generator.latent_stats --cache CODES.pt --out FILE``: the latent statistics
    of a code cache written by ``train_generator.py`` with ``generator=latent`` (see docs/generator.md).
    A mistake is one line on stderr and exit status 2."""
    from dgnam.cli import one_line_errors  # the command line only: loading statistics needs none of it

    one_line_errors(_main)(argv)


def _main(argv: list[str] | None) -> None:
    import argparse

    from dgnam.io import save_torch

    s = argparse.ArgumentParser(prog="python -m dgnam.generator.latent_stats", description=main.__doc__)
    s.add_argument("--cache", required=True, help="a codes-*.pt cache that holds latents")
    s.add_argument("--out", required=True)
    s.add_argument("--q", type=float, default=0.005, help="low/high quantiles q and 1 - q (default 0.005)")
    a = s.parse_args(argv)
    if not 0 <= a.q < 0.5:
        raise DgnamValueError(f"--q={a.q} must be in [0, 0.5)")
    cache = load_file(a.cache, "code cache")
    lat = cache.get("latents") if isinstance(cache, dict) else None
    if not isinstance(lat, Tensor) or lat.dim() != 5:
        raise DgnamValueError(f"{a.cache} holds no latents (encode with generator=latent)")
    st = latent_statistics(lat.flatten(0, 1), a.q)
    blob = {"format": STATS_FORMAT, **st, "q": a.q, "n": int(lat.shape[0]),
            "source": Path(a.cache).name, "meta": cache.get("meta", {})}
    save_torch(blob, a.out)
    print(f"wrote {a.out}: {lat.shape[0]} images, mean {st['mean'].mean():.3f}, "
          f"range {st['low'].min():.2f} .. {st['high'].max():.2f}")


if __name__ == "__main__":
    main()
