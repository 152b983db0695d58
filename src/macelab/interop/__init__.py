"""Interoperability with mace-torch, the reference implementation of MACE.

``from_mace_torch`` turns a mace-torch ``MACE``/``ScaleShiftMACE`` (e.g. a foundation model
loaded with ``load_mace_torch_file(path, trust_pickle=True)``) into the equivalent macelab
model; ``to_mace_torch`` goes the other way, so that a model trained in macelab runs in
mace-torch's tools. Both need the optional ``mace-torch`` package (``pip install
'macelab[mace]'``), which pins e3nn 0.4.4. mace-torch model files are pickles, which run
code from the file as they load, so they load only with ``trust_pickle=True``
(docs/security.md).
"""

from macelab.interop.cg_basis import BasisMismatchError, translate_path_weights
from macelab.interop.mace_torch import (
    UnsupportedModelError,
    from_mace_torch,
    load_mace_torch_file,
    mace_torch_hyperparameters,
    mace_torch_inputs,
    to_mace_torch,
)

__all__ = [
    "BasisMismatchError",
    "UnsupportedModelError",
    "from_mace_torch",
    "load_mace_torch_file",
    "mace_torch_hyperparameters",
    "mace_torch_inputs",
    "to_mace_torch",
    "translate_path_weights",
]
