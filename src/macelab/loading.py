"""Reading torch files without running code from them (docs/security.md).

``torch.load`` unpickles: a pickle can name any Python callable, which runs while the file
loads (``os.system`` included). Two kinds of file reach macelab:

- macelab checkpoints (Lightning's ``.ckpt``) hold tensors and plain values only (dicts,
  lists, tuples, strings, numbers, None). :func:`load_weights` reads them with
  ``weights_only=True``, torch's restricted unpickler, which refuses every other object, and
  turns a refusal into an :class:`~macelab.errors.UntrustedFileError` naming the file.
- mace-torch model files are pickled ``torch.nn.Module`` objects: they cannot load without
  running code from the file. :func:`load_pickle` loads them only when the caller says the
  file is trusted (``trust_pickle=True``).

``weights_only`` is always passed explicitly. Importing mace-torch sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process, which turns ``torch.load``
calls that leave ``weights_only`` unset into full unpickling; an explicit argument wins over
it (tested in tests/use/test_safe_loading.py). Lightning's own loads are made weights-only
by :func:`macelab._compat.lightning_loading`.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from macelab.errors import UntrustedFileError

log = logging.getLogger(__name__)

TRUST_OPTION = "trust_pickle"
OPT_IN = (
    "trust_pickle=true on the command line (pretrained.trust_pickle=true for a fine-tuning "
    "run's pretrained model), or trust_pickle=True in Python"
)


def load_weights(path: str | Path, map_location: Any = "cpu", *, trust_pickle: bool = False) -> Any:
    """``torch.load`` of a file that should hold tensors and plain values only.

    Without ``trust_pickle`` anything else in the file is refused (UntrustedFileError) before
    it runs; with it, the file is fully unpickled (only for files you trust). Other errors
    (a missing, truncated or foreign file) propagate unchanged.
    """
    if trust_pickle:
        log.warning("loading %s with full unpickling (trust_pickle): it may run code", path)
        return torch.load(path, map_location=map_location, weights_only=False)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():
            raise
        raise UntrustedFileError(
            f"{path} holds Python objects other than tensors and plain values "
            f"({_what_was_refused(error)}), which macelab's own checkpoints never contain; "
            "unpickling it would run code stored in the file, which may be malicious, so it "
            f"was not loaded. If you made this file or trust its source, load it anyway with "
            f"{OPT_IN} (see docs/security.md).",
            file=path,
        ) from None


def load_pickle(
    path: str | Path, map_location: Any = "cpu", *, trust_pickle: bool, what: str
) -> Any:
    """``torch.load`` of a file that is a pickle by design (e.g. a mace-torch model file).

    Loading runs code from the file, so it happens only with ``trust_pickle``; otherwise
    UntrustedFileError says why and how to opt in. ``what`` names the kind of file.
    """
    if not trust_pickle:
        raise UntrustedFileError(
            f"{path} is a {what}, which is a Python pickle: loading it runs code stored in the "
            "file, and a malicious file can do anything your account can, so macelab loads "
            f"one only when you say you trust it. For a file you made or got from a source you "
            f"trust (such as the official MACE foundation models), set {OPT_IN}. Converted "
            "models saved as macelab checkpoints or model folders load without this risk "
            "(see docs/security.md).",
            file=path,
        )
    return torch.load(path, map_location=map_location, weights_only=False)


def _what_was_refused(error: Exception) -> str:
    """``posix.system`` from torch's refusal message, or a generic description."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    if found:
        return f"it asks for {found.group(1)}"
    return "pickle instructions the weights-only loader does not accept"
