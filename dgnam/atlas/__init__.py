"""The atlas: a static site of what the units of one model respond to, grown unit by unit.

``visualize.py experiment=atlas`` computes, for the layers and units asked, each method's feature
visualization (:func:`dgnam.visualize`, batched over a layer's units) and the units' dataset
examples, keeps a record per unit (``records/<layer>/<unit>.json``, with the settings that made
it), and rebuilds the site from every record in the folder: ``index.html`` (the layers), a page per
layer (a card per unit) and a page per unit. A unit whose record matches the settings is not
computed again, so an atlas grows by rerunning with more layers, units or methods; shards of a
sweep (``shard.index``/``shard.count``) are gathered into one site by ``experiment=atlas_gather``
or by :class:`GatherCallback` at the end of the sweep. docs/atlas.md tells the whole story.
"""

from dgnam.atlas.run import GatherCallback, make_plan, run_atlas, run_gather
from dgnam.atlas.site import build_site

__all__ = ["GatherCallback", "build_site", "make_plan", "run_atlas", "run_gather"]
