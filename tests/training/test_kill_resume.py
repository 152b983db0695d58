"""``python -m macelab.train`` killed with SIGKILL, resumed with ``ckpt_path=last``, ends
where an uninterrupted run ends: weights, EMA, optimiser, scheduler, test metrics and every
row of ``metrics.csv``.

The kills are real (``kill -9`` of the training process): during a save of ``last.ckpt``
or ``best.ckpt``, after an end-of-epoch save, and at random moments of a run whose saves
are slowed down so that many kills land inside one. ``$TMPDIR`` is on another filesystem
than the run folder (``/dev/shm``, where there is one), the setup in which Lightning's own
checkpoint writer left ``last.ckpt`` empty.

Bound: float64, one thread per process. The resumed runs agree with the uninterrupted one
to rtol 1e-12 / atol 1e-14 on every weight, EMA weight and optimiser moment (the bound of
tests/training/test_train_e2e.py; measured: an ulp or two, under 1% of that tolerance, e.g.
4.4e-16 on weights of order 1, from the summation order of vectorised CPU kernels), and to
rel 1e-9 on test metrics and on every metrics.csv value (wall times aside). A resume that
gets the data order wrong moves the weights far more: skipping one batch, as a second
resume did before these tests, by ~1e-2.

Time: about 2.5 minutes on two CPU cores, the three tests together (12 processes of ~6 s
start-up and a few seconds of training each; the uninterrupted run runs beside the first).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.cli import cli_env
from tests.training.conftest import TINY
from tests.training.test_train_e2e import _final_state

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# 20 structures in batches of 5: 4 steps an epoch, 3 epochs, 12 steps; validation and test
# on one batch. Each process spends ~6 s starting and a few seconds training.
RUN = [
    *TINY,
    "model.channels=8",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=null",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.num_train=20",
]
KILLED = -signal.SIGKILL
TIME_COLUMNS = ("time/",)  # wall times differ from run to run


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """The command's environment: a shared graph cache, ``$TMPDIR`` on another filesystem."""
    base = tmp_path_factory.mktemp("kill_resume")
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        tmpdir = Path(shm / f"macelab-test-{os.getpid()}")
    else:  # no tmpfs here: a plain other folder
        tmpdir = base / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    yield cli_env(MACELAB_CACHE=str(base / "cache"), TMPDIR=str(tmpdir), PYTHONPATH=pythonpath)
    shutil.rmtree(tmpdir, ignore_errors=True)


def start(run: Path, env: dict[str, str], *overrides: str) -> subprocess.Popen:
    """``python -m macelab.train`` with the tiny run's overrides, in the background."""
    run.parent.mkdir(parents=True, exist_ok=True)
    output = open(run.parent / f"{run.name}.log", "ab")  # noqa: SIM115 (the process owns it)
    return subprocess.Popen(
        [sys.executable, "-m", "macelab.train", *RUN, *overrides, f"hydra.run.dir={run}"],
        stdout=output,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )


def finish(process: subprocess.Popen, run: Path, expected: int = 0) -> None:
    code = process.wait(timeout=600)
    log = (run.parent / f"{run.name}.log").read_text()[-3000:]
    assert code == expected, f"exit status {code}, expected {expected}:\n{log}"


def train(run: Path, env: dict[str, str], *overrides: str, expected: int = 0) -> None:
    finish(start(run, env, *overrides), run, expected)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, env):
    """The uninterrupted run, started in the background at once (it runs beside the
    first test's processes); the fixture's value waits for it."""
    run = tmp_path_factory.mktemp("straight") / "run"
    process = start(run, env)

    def wait() -> Path:
        if process.returncode is None:
            finish(process, run)
        return run

    yield wait
    if process.poll() is None:
        process.kill()
        process.wait()


def last_state(run: Path) -> tuple[int, bool]:
    """The global step of ``last.ckpt`` and whether its epoch was complete (it must load)."""
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    return int(checkpoint["global_step"]), bool(checkpoint["macelab"]["epoch_complete"])


def temporaries(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob(".*.tmp"))


def metric_rows(run: Path) -> dict[tuple, dict[str, float]]:
    """metrics.csv as {(step, columns): values}, wall-time columns left out; no key twice."""
    from macelab.training.csv_logger import read_rows

    rows: dict[tuple, dict[str, float]] = {}
    for row in read_rows(run / "metrics.csv"):
        values = {k: float(v) for k, v in row.items() if not k.startswith(TIME_COLUMNS)}
        key = (int(values["step"]), tuple(sorted(values)))
        assert key not in rows, f"row logged twice: {key}"
        rows[key] = values
    return rows


def assert_same_run(expected_run: Path, run: Path, lost_steps: set[int] = frozenset()) -> None:
    """The same final state, test metrics and metrics.csv rows; rows of ``lost_steps`` may be
    missing (logged after a checkpoint and before the kill that followed it at once)."""
    expected, actual = _final_state(expected_run), _final_state(run)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-12, atol=1e-14, msg=key)

    expected_results = json.loads((expected_run / "results.json").read_text())
    results = json.loads((run / "results.json").read_text())
    assert results.keys() == expected_results.keys()
    for name, metrics in expected_results.items():
        for key, value in metrics.items():
            assert results[name][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, key)

    expected_rows, rows = metric_rows(expected_run), metric_rows(run)
    assert set(rows) <= set(expected_rows), set(rows) - set(expected_rows)
    missing = {key for key in expected_rows if key not in rows}
    assert {step for step, _ in missing} <= set(lost_steps), sorted(missing)
    for key, values in rows.items():
        for column, value in values.items():
            reference = expected_rows[key][column]
            assert value == pytest.approx(reference, rel=1e-9, abs=1e-12) or (
                math.isnan(value) and math.isnan(reference)
            ), (key, column)


def test_kills_during_saves_and_after_an_epoch_end_resume_exactly(tmp_path, env, straight):
    run = tmp_path / "run"
    every_3 = "callbacks.last_checkpoint.every_n_train_steps=3"  # saves at steps 3, 6, 9
    kill_in_save = "checkpoint_io._target_=tests.training.killer.SigkillDuringSave"

    # Killed halfway through writing last.ckpt at the end of epoch 0 (step 4): the one of
    # step 3 is still whole.
    last_2nd = ["+checkpoint_io.file=last.ckpt", "+checkpoint_io.nth=2"]
    train(run, env, every_3, kill_in_save, *last_2nd, expected=KILLED)
    assert last_state(run) == (3, False)
    assert [name.split(".")[1] for name in temporaries(run)] == ["last"]
    best = (run / "checkpoints" / "best.ckpt").read_bytes()  # written just before

    # Resumed; killed halfway through writing best.ckpt after the same epoch: the previous
    # best.ckpt is untouched.
    best_1st = ["+checkpoint_io.file=best.ckpt", "+checkpoint_io.nth=1"]
    train(run, env, every_3, "ckpt_path=last", kill_in_save, *best_1st, expected=KILLED)
    assert (run / "checkpoints" / "best.ckpt").read_bytes() == best
    assert last_state(run) == (3, False)

    # Resumed; killed as epoch 1 starts, after the end-of-epoch save of step 4.
    at_epoch_1 = [
        "+callbacks.kill._target_=tests.training.killer.SigkillAtEpochStart",
        "+callbacks.kill.step=4",
    ]
    train(run, env, every_3, "ckpt_path=last", *at_epoch_1, expected=KILLED)
    assert last_state(run) == (4, True)
    assert temporaries(run) == []  # the next good save of a file removes a killed one's

    # Resumed at the next epoch; killed halfway through its second save of last.ckpt (at the
    # end of epoch 1): the one of step 6, mid-epoch, is still whole.
    train(run, env, every_3, "ckpt_path=last", kill_in_save, *last_2nd, expected=KILLED)
    assert last_state(run) == (6, False)

    train(run, env, every_3, "ckpt_path=last")
    assert last_state(run) == (12, True)
    assert temporaries(run) == []
    assert_same_run(straight(), run)


RANDOM_KILLS = 3


def test_kills_at_random_moments_resume_exactly(tmp_path, env, straight):
    rng = random.Random(20261207)
    run, started = tmp_path / "run", tmp_path / "training_started"
    common = [
        "callbacks.last_checkpoint.every_n_train_steps=1",
        "checkpoint_io._target_=tests.training.killer.SlowSaves",
        "+checkpoint_io.seconds=0.2",  # a step takes ~0.1 s: most of the time goes to saves
        "+callbacks.started._target_=tests.training.killer.MarkTrainingStarted",
        f"+callbacks.started.path={started}",
    ]
    kills: list[str] = []
    resumed_at: set[int] = set()  # global steps of the checkpoints resumed from
    for attempt in range(RANDOM_KILLS + 1):
        resume = []
        if (run / "checkpoints" / "last.ckpt").exists():
            resumed_at.add(last_state(run)[0])
            resume = ["ckpt_path=last"]
        started.unlink(missing_ok=True)
        process = start(run, env, *common, *resume)
        if attempt == RANDOM_KILLS:
            finish(process, run)
            break
        while not started.exists() and process.poll() is None:
            time.sleep(0.02)
        delay = rng.uniform(0.0, 3.0)
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
        code = process.wait()
        assert code in (0, KILLED), (run.parent / f"{run.name}.log").read_text()[-3000:]
        in_save = (run / "checkpoints").is_dir() and bool(temporaries(run))
        kills.append(f"{delay:.2f} s into training: exit {code}, during a save: {in_save}")
        if code == 0:
            break
    print("kills:", *kills, sep="\n  ")
    # Rows of the step just before a resume point can be lost: logged right after that
    # checkpoint, they are not logged again.
    assert_same_run(straight(), run, lost_steps={step - 1 for step in resumed_at})


def test_a_finished_run_continues_into_the_same_wandb_run(tmp_path, env, straight):
    pytest.importorskip("wandb")
    run = tmp_path / "run"
    wandb_env = {**env, "WANDB_MODE": "offline"}
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        wandb_env[name] = str(tmp_path / name.lower())
    wandb_env.pop("WANDB_RUN_ID", None)

    train(run, wandb_env, "logger=wandb", "trainer.max_epochs=2")
    assert last_state(run) == (8, True)  # the finished run's last.ckpt is its final state
    train(run, wandb_env, "logger=wandb", "ckpt_path=last")  # on to 3 epochs

    run_id = (run / "wandb_run_id.txt").read_text().strip()
    offline_runs = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(name.endswith(f"-{run_id}") for name in offline_runs)
    # The first run's test rows (at step 8) are replaced by the continued run's rows.
    assert_same_run(straight(), run)
