"""Data: files, units, neighbour lists, graphs, splits, statistics and the Lightning data
module (:class:`macelab.data.datamodule.MACEDataModule`). It knows nothing of the model
beyond ``r_max`` and the element table; see ``docs/design.md``."""
