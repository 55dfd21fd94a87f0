"""The parameterization contract: an ``nn.Module`` whose ``forward()`` returns images
(B, 3, H, W) in [0, 1], and says what the loop and the modes need to know about it.

The batch dimension holds many units at once: item b is optimized for unit b and nothing couples
items, so a unit's result does not depend on what else shares its batch.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from dgnam.core import objectives as O
from dgnam.core import poststeps as P


class ImageParam(nn.Module):
    """Base class of every parameterization: a trainable image batch of side ``size`` (H, W).

    A subclass implements ``forward()`` and ``size``, and overrides what applies to it:

    - ``pixel_space``: the trainable tensor is the image itself, so pixel-space priors (decay, blur,
      clipping, the [0, 1] clamp) and octaves apply to it;
    - :meth:`post_steps`: projections run after every optimizer step (e.g. a code's decay and clamp);
    - :meth:`penalty`: an objective to subtract (e.g. an L2 term on a code), or None;
    - :meth:`extra`: pseudo-layers that objectives may read besides the target's layers (the code);
    - :meth:`resize`: change the size in place between octaves.
    """

    pixel_space: ClassVar[bool] = False
    size: tuple[int, int]

    def post_steps(self) -> list[P.PostStep]:
        """Projections the loop runs after each step, in order (none by default)."""
        return []

    def penalty(self) -> O.Objective | None:
        """An objective subtracted from the unit's (None by default)."""
        return None

    def extra(self) -> dict[str, Tensor]:
        """Pseudo-layers for objectives, by name (none by default)."""
        return {}

    def resize(self, size: tuple[int, int]) -> None:
        """Change the image size in place, keeping the current picture (for octaves)."""
        raise NotImplementedError(f"{type(self).__name__} cannot change size between octaves; use param=pixel")
