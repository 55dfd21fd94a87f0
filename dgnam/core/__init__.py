"""The core: the loop, objectives, transforms, post-steps, targets, units and parameterizations.

No Hydra, no files written: everything here takes built objects and returns tensors."""
