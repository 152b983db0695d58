"""The MACE model (Batatia et al., NeurIPS 2022): one module per block of the paper.

``MACE`` (:mod:`.mace`) assembles the stages; ``build_model`` (:mod:`.build`) makes one from
a Hydra config and the data statistics. See ``docs/model.md`` for the equations, the stage
names and the parameter counts.
"""

from macelab.model.build import build_model, count_parameters
from macelab.model.compressed_tables import compressed_table_bytes, int8_tables
from macelab.model.embedding import UnknownElementError
from macelab.model.mace import MACE

__all__ = [
    "MACE",
    "UnknownElementError",
    "build_model",
    "compressed_table_bytes",
    "count_parameters",
    "int8_tables",
]
