"""The device a command runs on, checked before any work starts.

``device=cuda`` on a machine without a usable CUDA GPU otherwise fails deep inside torch
(``AssertionError: Torch not compiled with CUDA enabled``) after the model has loaded; this
says so at once, as one paragraph, and what to pass instead.
"""

from __future__ import annotations

import torch

from macelab.errors import ConfigError


def resolve_device(device: str | torch.device, key: str = "device") -> torch.device:
    """``device`` as a :class:`torch.device`; ``"auto"`` is ``cuda`` where a GPU is usable,
    else ``cpu``. ``key`` names the setting in the error (``device``, ``accelerator``).

    Raises:
        ConfigError: a CUDA device where torch sees none (a CPU build of torch, no driver,
            or an index past the number of GPUs).
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"{key}={device!r} is not a device torch knows ({error}).") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no usable GPU"
            raise ConfigError(
                f"{key}={device} but torch sees no CUDA GPU here ({build}); use {key}=cpu, "
                "or run on a machine with an NVIDIA GPU and the CUDA build of torch."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{key}={device} but this machine has {torch.cuda.device_count()} GPU(s) "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})."
            )
    return resolved
