"""Show what units of an image network respond to (installed: ``dgnam-visualize``, the same app).

    python visualize.py model=mobilenet_v2_shared layers=logits units=[goldfish,1]
    python visualize.py experiment=lucid model=alexnet model.weights=null
    python visualize.py -m experiment=classes seed=0,1,2        # a Hydra sweep

Thin entry point: Hydra composes ``conf/visualize.yaml``; :func:`run` (in :mod:`dgnam.commands`)
does the work and is what tests call.
"""

from __future__ import annotations

from dgnam.commands import MODES, check_prior_overrides, run, visualize_app
from dgnam.commands import visualize as main

__all__ = ["MODES", "check_prior_overrides", "main", "run", "visualize_app"]

if __name__ == "__main__":
    main()
