"""macelab: a PyTorch Lightning + Hydra research framework for MACE interatomic potentials.

Importing :mod:`macelab` first makes e3nn importable under every supported torch release
(see :mod:`macelab._compat`).
"""

from macelab._compat import import_e3nn

import_e3nn()

__version__ = "0.1.0"

__all__ = ["__version__"]
