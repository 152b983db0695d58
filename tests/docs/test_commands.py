"""Every command and Python snippet of README.md and docs/*.md works when pasted (issue 33).

What is tested. Every fenced ```` ```bash ```` command and ```` ```python ```` snippet of
README.md and docs/*.md (tests/docs/markdown.py extracts them) is *checked*: a Hydra entry
point's config composes with the command's overrides (each combination of a sweep), an
argparse entry point accepts its arguments, a script, module, notebook or Make target
exists, other shell lines are valid shell, a snippet compiles (tests/docs/runner.py). Then
each Markdown file's commands and snippets that need nothing beyond a CPU are *run*, in
file order, in a working folder of the file's own, with a small budget appended
(runner.BUDGET: a tiny model, one epoch of two batches, one test batch per test set, ten MD
steps ...), so that the whole file runs in tens of seconds.

The convention in the Markdown, for commands that cannot run on a CPU in seconds:

* ``# needs: gpu`` at the end of a command (``# needs: gpu, data`` for several), or as a
  comment line of a Python snippet, marks that command or snippet;
* ``<!-- needs: cluster -->`` on the line above a fence marks every command of the block;
* ``<!-- covered-by: tests/analysis/test_notebooks.py -->`` above a fence names the test
  that runs the block's commands in full (then they are only checked here).

What a mark may say (markdown.NEEDS): ``gpu`` (a CUDA GPU), ``cluster`` (several nodes or
SLURM), ``network`` (a download or an online account such as wandb), ``data`` (the
benchmark data: run here when ``MACELAB_DATA`` has it), ``long`` (minutes to hours, or the
test suite itself). Marked commands are checked, not run.

Placeholders and files. Commands use these as a user would have them; the session makes
them once per test worker, and each Markdown file gets a copy in its working folder:

* ``<run>``: a run folder (``outputs/quickstart/runs/<date>_<time>``), made by the real
  command line, ``python -m macelab.train`` with the budget; ``<ckpt>``: its
  ``checkpoints/best.ckpt``; ``run0/``, ``run1/``: copies of it (an ensemble's members);
* ``<sweep>``: a sweep folder (``outputs/quickstart/multiruns/<date>_<time>``) of two runs
  of that kind (``precision=32,64``);
* ``molecule.xyz``: an AcAc structure; ``mine.xyz``, ``train.xyz`` (30 AcAc structures with
  energies and forces, no isolated atoms, as a user's own data would be) and ``test.xyz``
  (10 more), from the AcAc data shipped with macelab;
* ``MACE-OFF23_small.model``: a mace-torch model file exported from ``<run>`` (the real
  foundation model is a download).

Python snippets may use the names ``cfg`` (the quick start's composed config with the
budget), ``datamodule`` (its data module, set up), ``statistics``, ``batch`` (a training
batch), ``model`` (the model of ``<ckpt>``) and ``atoms`` (``molecule.xyz``), which the
text around them defines for the reader.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli import cli_env
from tests.docs.markdown import ROOT, Command, all_commands, commands, markdown_files
from tests.docs.runner import BUDGET, CommandError, check, process_state, run, run_hydra

pytestmark = pytest.mark.slow

RUN = "outputs/quickstart/runs/2026-01-01_12-00-00"
SWEEP = "outputs/quickstart/multiruns/2026-01-01_12-00-00"
PLACEHOLDERS = {"<run>": RUN, "<ckpt>": f"{RUN}/checkpoints/best.ckpt", "<sweep>": SWEEP}
# Output that no command should print (issue 33): Lightning's product tips, Lightning's
# CSVLogger deleting "previous" logs of a fresh run folder, torch's warnings about a variable
# that mace-torch sets; and (noise_in) Lightning's own copy of each log line.
NOISE = ("💡 Tip", "will be deleted", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")


def noise_in(output: str) -> list[str]:
    """What of NOISE ``output`` holds; ``INFO: ...`` lines are Lightning's second copy of a
    record that Hydra's handler prints too."""
    found = [text for text in NOISE if text in output]
    if any(line.startswith("INFO: ") for line in output.splitlines()):
        found.append("INFO: lines (Lightning's own copy of log records)")
    return found


def _has_data() -> bool:
    root = os.environ.get("MACELAB_DATA")
    return bool(root) and (Path(root) / "dataset_3BPA").is_dir()


def runnable(command: Command) -> bool:
    """Whether the command test runs ``command`` here (else it only checks it)."""
    if command.covered_by is not None:
        return False
    return not command.needs or (command.needs == {"data"} and _has_data())


def substitute(command: Command) -> Command:
    text = command.text
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return Command(
        command.path, command.line, command.language, text, command.needs, command.covered_by
    )


ALL = all_commands()
DOCS_THAT_RUN = [str(p) for p in markdown_files() if any(runnable(c) for c in commands(p))]


# -- the session's run, sweep and files -----------------------------------------------------


@pytest.fixture(scope="session")
def made(tmp_path_factory) -> dict[str, Any]:
    """The run, sweep and input files behind the placeholders (see the module docstring);
    ``output``: what the run's command printed."""
    import ase.io

    from macelab.data.locate import locate

    base = tmp_path_factory.mktemp("doc_inputs")
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "macelab.train",
            *BUDGET["macelab.train"],
            "hydra.run.dir=run",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=base,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    seconds = time.perf_counter() - started
    helper = Command(Path("tests/docs/test_commands.py"), 0, "bash", "the session's inputs")
    sweep = ["-m", "precision=32,64", "hydra.sweep.dir=sweep"]
    export = ["ckpt_path=run/checkpoints/best.ckpt", "format=mace_torch"]
    with (
        open(os.devnull, "w") as quiet,
        process_state(),
        contextlib.redirect_stdout(quiet),
        contextlib.redirect_stderr(quiet),
    ):
        os.chdir(base)
        run_hydra("macelab.train", sweep, helper)
        run_hydra("macelab.export", [*export, "out=MACE-OFF23_small.model"], helper)
    train = locate("dataset_acac/train_300K.xyz", download=False).path
    test = locate("dataset_acac/test_MD_300K.xyz", download=False).path
    frames = ase.io.read(train, index=":30")
    ase.io.write(base / "mine.xyz", frames)
    ase.io.write(base / "train.xyz", frames)
    ase.io.write(base / "test.xyz", ase.io.read(test, index=":10"))
    ase.io.write(base / "molecule.xyz", ase.io.read(test, index=10))
    return {"base": base, "output": result.stdout + result.stderr, "train_seconds": seconds}


def workspace(made: dict[str, Any], folder: Path) -> Path:
    """A working folder like a clone's root (its folders and files linked, ``outputs/`` its
    own) with a copy of the placeholders' run, sweep and files."""
    base = made["base"]
    for entry in ROOT.iterdir():
        if not entry.name.startswith(".") and entry.name != "outputs":
            (folder / entry.name).symlink_to(entry)
    shutil.copytree(base / "run", folder / RUN)
    shutil.copytree(base / "sweep", folder / SWEEP)
    for member in ("run0", "run1"):
        shutil.copytree(base / "run", folder / member)
    for name in ("mine.xyz", "train.xyz", "test.xyz", "molecule.xyz", "MACE-OFF23_small.model"):
        shutil.copy(base / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def snippet_names(made) -> Any:
    """The names Python snippets may use (module docstring), built on first use."""
    built: dict[str, Any] = {}

    def names() -> dict[str, Any]:
        if not built:
            built.update(_snippet_names(made["base"]))
        return built

    return names


def _snippet_names(base: Path) -> dict[str, Any]:
    import ase.io
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from macelab.config import CONFIG_DIR
    from macelab.training.checkpoint import load_model

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=BUDGET["macelab.train"])
    GlobalHydra.instance().clear()
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model, _ = load_model(str(base / "run" / "checkpoints" / "best.ckpt"))
    return {
        "cfg": cfg,
        "datamodule": datamodule,
        "statistics": datamodule.statistics,
        "batch": next(iter(datamodule.train_dataloader())),
        "model": model,
        "atoms": ase.io.read(base / "molecule.xyz"),
    }


# -- the tests ------------------------------------------------------------------------------


def test_the_convention_holds():
    """Marks name known needs (parsing refuses others), every block language is bash or
    python, and ``<run>`` is always a whole run folder (never ``runs/<run>``)."""
    assert len(ALL) > 40, len(ALL)
    for command in ALL:
        assert "runs/<run>" not in command.text, f"{command.id}: <run> is the run folder itself"
        assert "<date>" not in command.text, f"{command.id}: use <sweep> for a sweep folder"
        leftover = [p for p in ("<", ">") if p in command.text and command.language == "bash"]
        if leftover:
            known = any(p in command.text for p in PLACEHOLDERS)
            assert known or command.needs, f"{command.id}: unknown placeholder in {command.text}"


@pytest.mark.parametrize("command", ALL, ids=[c.id for c in ALL])
def test_every_command_checks(command):
    """Each command composes / parses / exists (runner.check), marked or not."""
    check(substitute(command))


@pytest.mark.parametrize("doc", DOCS_THAT_RUN)
def test_the_commands_of_each_file_run(doc, made, snippet_names, tmp_path, capfd):
    """Each file's commands that need only a CPU run in order (module docstring); every
    failure is reported, each with the end of what it printed."""
    folder = workspace(made, tmp_path)
    failures, timings, seen = [], [], set()
    namespace: dict[str, Any] = {}

    def snippet_namespace() -> dict[str, Any]:
        if not namespace:
            namespace.update({"__name__": "__main__", **snippet_names()})
        return namespace

    capfd.readouterr()
    for command in (substitute(c) for c in commands(Path(doc)) if runnable(c)):
        if command.text in seen:  # the same command again: it ran above
            continue
        seen.add(command.text)
        started = time.perf_counter()
        warned: list[str] = []
        try:
            with process_state() as warned:
                run(command, folder, snippet_namespace)
            error = None
        except CommandError as failure:
            error = str(failure)
        timings.append((time.perf_counter() - started, command.id))
        printed = capfd.readouterr()
        output = printed.out + printed.err + "".join(f"{w}\n" for w in warned)
        if warned:
            with capfd.disabled():
                print(f"{command.id} warns:", *warned, sep="\n  ")
        ours = command.language == "python" or "macelab" in command.text  # not mace-torch's
        noise = noise_in(output) if ours else []
        if error is None and noise:
            error = f"{command.id}: prints {noise}"
        if error is not None:
            failures.append(f"{error}\n--- end of its output:\n{output[-2500:]}")
    with capfd.disabled():
        total = sum(t for t, _ in timings)
        print(f"\n{doc}: {len(timings)} commands in {total:.0f} s")
        for seconds, where in sorted(timings, reverse=True)[:8]:
            print(f"  {seconds:6.1f} s  {where}")
    assert not failures, "\n\n".join(failures)


def test_a_training_run_prints_each_thing_once(made):
    """The session's run, by the real command line (``python -m macelab.train`` with the
    budget): one line per log record, a line per epoch with the validation errors, no
    third-party tips or warnings (issue 33)."""
    import re

    output = made["output"]
    assert not noise_in(output), noise_in(output)
    assert output.count("GPU available") == 1, output
    assert re.search(r"epoch 1/1: val F RMSE [\d.]+ meV/Å, E RMSE [\d.]+ meV", output), output
    warnings = re.findall(r"^\S+\.py:\d+: .*$", output, re.MULTILINE)
    assert not warnings, warnings
