"""The matplotlib backend of macelab's figures: inline in Jupyter, headless elsewhere.

Inside an IPython shell or Jupyter kernel the backend is left as the shell set it (the
inline backend shows each figure under its cell); a script or a training run gets Agg, so
that saving figures never needs a display. An explicit ``MPLBACKEND`` is always kept.
"""

from __future__ import annotations

import os
import sys


def in_ipython() -> bool:
    """Whether this runs inside an IPython shell or a Jupyter kernel."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return get_ipython is not None and get_ipython() is not None


def use_headless_backend() -> None:
    """Select Agg unless inside IPython/Jupyter or ``MPLBACKEND`` names a backend."""
    if in_ipython() or os.environ.get("MPLBACKEND"):
        return
    import matplotlib

    matplotlib.use("Agg")
