"""Vision transformers: torchvision's vit_b_16 (random weights, 32-px input: 2 x 2 patches + the
class token), block aliases and token units (channel over patches, class token, one patch)."""

from __future__ import annotations

import pytest
import torch
import torchvision

import dgnam
from dgnam.core.models import IMAGENET_MEAN, IMAGENET_STD
from dgnam.core.units import token_grid
from dgnam.errors import DgnamError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return torchvision.models.vit_b_16(image_size=32).eval()


def _block_output(vit, image, block=3):
    out = {}
    h = vit.encoder.layers[block].register_forward_hook(lambda _m, _i, o: out.setdefault("x", o))
    try:
        with torch.no_grad():
            vit((image - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    finally:
        h.remove()
    return out["x"]  # (B, 5, 768)


@pytest.mark.parametrize("kind, position, pick", [
    ("channel", None, lambda t, c: t[:, 1:, c].mean(1)),   # mean over the 4 patch tokens
    ("cls", None, lambda t, c: t[:, 0, c]),                 # the class token
    ("neuron", [1, 0], lambda t, c: t[:, 1 + 0 * 2 + 1, c]),  # patch (x=1, y=0)
])
def test_token_units_score_what_they_say(vit, kind, position, pick):
    vis = dgnam.visualize(vit, "block3", [7, 300], unit=kind, position=position, method="lucid", steps=2)
    assert vis.images.shape == (2, 3, 32, 32)  # the model's input size from torchvision's metadata
    acts = _block_output(vit, vis.images)
    for i, (row, c) in enumerate(zip(vis.results, (7, 300))):
        assert row["activation"] == pytest.approx(float(pick(acts, c)[i]), rel=1e-4, abs=1e-4)


def test_vit_class_units_and_fixed_size(vit):
    vis = dgnam.visualize(vit, "logits", ["goldfish"], method="lucid", steps=2, image_size=48)
    assert vis.images.shape[-1] == 48 and vis.results[0]["label"] == "1 goldfish"  # resized to 32 for the ViT
    assert "block11" in dgnam.wrap_model(vit).layer_names


def test_token_grid_and_bad_token_units(vit):
    assert token_grid(197) == (1, 14) and token_grid(196) == (0, 14) and token_grid(5) == (1, 2)
    with pytest.raises(DgnamError, match="inside the 2 x 2 patch grid"):
        dgnam.visualize(vit, "block3", 0, unit="neuron", position=[2, 0], steps=1)
    with pytest.raises(DgnamError, match="does not fit block3"):
        dgnam.visualize(vit, "block3", 0, unit="unit", steps=1)
