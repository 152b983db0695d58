"""One module per benchmark, each naming its files, splits and test sets."""

from __future__ import annotations

from macelab.data.datasets import acac, bpa, rmd17, xyz

DATASETS = {"acac": acac, "3bpa": bpa, "rmd17": rmd17, "xyz": xyz}
"""``data.dataset`` value -> the module that loads it."""

__all__ = ["DATASETS"]
