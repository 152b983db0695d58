"""What the entry points print (issue 33): one line per log record, no Lightning tips, a
progress bar on terminals only, and the choices behind the quick start's speed."""

from __future__ import annotations

import logging

import pytest

from macelab.cli import _DROP_TIPS, progress_bar, tidy_output
from macelab.md import accelerate_option, precision_name
from macelab.train import use_torchscript


@pytest.fixture
def root_handler():
    """A handler on the root logger, as Hydra installs one, removed afterwards."""
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    lightning = logging.getLogger("lightning")
    saved = list(lightning.handlers), lightning.propagate
    yield handler
    root.removeHandler(handler)
    lightning.handlers[:], lightning.propagate = saved
    logging.getLogger("lightning.pytorch.utilities.rank_zero").removeFilter(_DROP_TIPS)


def test_lightning_records_print_once_and_without_tips(root_handler):
    import lightning  # noqa: F401 (imported, as the entry points that train do)

    logger = logging.getLogger("lightning")
    logger.addHandler(logging.StreamHandler())  # what Lightning's import adds (once a process)
    tidy_output()
    assert not logger.handlers and logger.propagate
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    record = tips.makeRecord(tips.name, logging.INFO, __file__, 1, "💡 Tip: try x", (), None)
    assert not _DROP_TIPS.filter(record) and _DROP_TIPS in tips.filters
    record.msg = "GPU available: False, used: False"
    assert _DROP_TIPS.filter(record)


def test_progress_bar_auto_follows_the_terminal(monkeypatch):
    import sys

    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert progress_bar("auto") is False and progress_bar(True) is True
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert progress_bar("auto") is True and progress_bar(False) is False


def test_torchscript_off_only_for_plain_precisions_on_a_cpu():
    from macelab.errors import ConfigError

    assert use_torchscript("auto", on_cpu=True, trainer_precision="32-true") is False
    assert use_torchscript("auto", on_cpu=True, trainer_precision="64-true") is False
    assert use_torchscript("auto", on_cpu=True, trainer_precision="bf16-mixed") is True
    assert use_torchscript("auto", on_cpu=True, trainer_precision=object()) is True  # policy
    assert use_torchscript("auto", on_cpu=False, trainer_precision="32-true") is True
    assert use_torchscript(True, on_cpu=True, trainer_precision="32-true") is True
    with pytest.raises(ConfigError, match="e3nn_torchscript"):
        use_torchscript("sometimes", on_cpu=True, trainer_precision="32-true")


def test_md_takes_precision_as_a_group_or_a_name_and_null_acceleration():
    assert precision_name({"name": "32", "trainer": "32-true"}) == "32"
    assert precision_name("64") == "64"
    assert accelerate_option(None) is None and accelerate_option("None") is None
    assert accelerate_option("graphs") == "graphs"
