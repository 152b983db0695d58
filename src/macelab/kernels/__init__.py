"""Alternative implementations of the symmetric contraction (Eq. 10-11): sparse
Clebsch-Gordan terms in torch and a fused Triton kernel, selected with :func:`set_backend`
(docs/kernels.md)."""

from macelab.kernels.backend import BACKENDS, check_backend, get_backend, set_backend
from macelab.kernels.frozen_contraction import freeze_contractions
from macelab.kernels.sparse_cg import SparseContraction, sparse_contraction

__all__ = [
    "BACKENDS",
    "SparseContraction",
    "check_backend",
    "freeze_contractions",
    "get_backend",
    "set_backend",
    "sparse_contraction",
]
