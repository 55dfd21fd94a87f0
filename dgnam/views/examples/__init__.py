"""Dataset examples: the real photos that excite each unit most, from one checkpointed pass of a dataset.

- :mod:`~dgnam.views.examples.source`: the photos (a folder, Parquet shards, files, a tensor, a Dataset);
- :mod:`~dgnam.views.examples.topk`: each unit's running top k and histogram;
- :mod:`~dgnam.views.examples.engine`: the batched pass, its checkpoints and resume;
- :mod:`~dgnam.views.examples.output`: strips, crops, ``examples.parquet`` and ``examples.json``;
- :mod:`~dgnam.views.examples.run`: the ``dataset_examples`` mode (:func:`run_dataset_examples`).
"""

from dgnam.views.examples.engine import LayerPlan, PassState, plan_units, run_pass
from dgnam.views.examples.run import run_dataset_examples
from dgnam.views.examples.source import ExampleSource, open_examples_source
from dgnam.views.examples.topk import Histogram, TopK, unit_values

__all__ = ["ExampleSource", "Histogram", "LayerPlan", "PassState", "TopK", "open_examples_source", "plan_units",
           "run_dataset_examples", "run_pass", "unit_values"]
