"""Receptive fields: computed from the architecture, measured by gradient, and explored with
single-neuron activation maximization that may change only the field.

- :mod:`~dgnam.views.receptive.fields`: the field arithmetic over the target's ``torch.fx`` graph
  (:func:`layer_fields`, :class:`Field`, :class:`Axis`);
- :mod:`~dgnam.views.receptive.probe`: the all-positive float64 probe network and
  :func:`gradient_boxes`, which measures the fields by gradient;
- :mod:`~dgnam.views.receptive.run`: the single-neuron objective, the keep-outside post-step, the
  drawing helpers and the ``receptive_field`` mode (:func:`run_receptive_field`).
"""

from dgnam.views.receptive.fields import (
    PIXEL,
    WHOLE,
    Axis,
    Field,
    layer_fields,
    module_field,
    pixel_field,
)
from dgnam.views.receptive.probe import gradient_boxes, probe_model
from dgnam.views.receptive.run import (
    KeepOutside,
    box_mask,
    neurons,
    outline,
    run_receptive_field,
    zoom_crop,
)

__all__ = [
    "PIXEL", "WHOLE", "Axis", "Field", "KeepOutside", "box_mask", "gradient_boxes", "layer_fields",
    "module_field", "neurons", "outline", "pixel_field", "probe_model", "run_receptive_field", "zoom_crop",
]
