"""Tests of the MACE model. Importing macelab first makes e3nn importable under torch >= 2.6
(see macelab._compat), so test modules may import e3nn directly."""

import macelab  # noqa: F401
