"""Check and run the commands of the documentation (tests/docs/markdown.py finds them).

Checking a command (every command, marked or not) costs well under a second: a Hydra entry
point's config is composed with the command's overrides, every combination of a sweep (what
Hydra would do before running anything); an argparse entry point parses its arguments; a
script, module, notebook or Make target must exist (scripts also ``bash -n``); any other
shell line must be valid shell syntax (``bash -n``); a Python snippet must compile.

Running a command happens in the process of the test, in a working folder of its own: the
Hydra entry points through their real ``main`` (so the command line is parsed exactly as
the shell would hand it over), with a small budget appended (:data:`BUDGET`), Python
snippets with ``exec`` in a namespace that holds :data:`SNIPPET_NAMES`, shared by the
snippets of one file. What commands change in the process (torch's default dtype, e3nn's
code generation, warning filters, logging handlers) is put back after each file
(:func:`process_state`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import runpy
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.docs.markdown import ROOT, Command

# The Hydra entry points and their config names (conf/<name>.yaml).
HYDRA_ENTRIES = {
    "macelab.train": "train",
    "macelab.evaluate": "evaluate",
    "macelab.md": "md",
    "macelab.export": "export",
    "macelab.quantize": "quantize",
}
# The console scripts of pyproject.toml ([project.scripts]), as the modules they run: the same
# programs as ``python -m <module>`` (macelab-train: macelab.train).
CONSOLE_SCRIPTS = {
    name: target.split(":")[0]
    for name, target in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "scripts"
    ].items()
}
# Appended to a command that runs, so that it runs in seconds on a CPU (later overrides win:
# a command's own model/size=medium trains model/size=tiny here).
BUDGET: dict[str, list[str]] = {
    "macelab.train": [
        "model/size=tiny",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "data.num_train=20",
        "data.num_valid=5",
    ],
    "macelab.evaluate": ["limit_test_batches=1"],
    "macelab.quantize": ["limit_test_batches=1"],
    "macelab.md": ["steps=10", "log_every=5"],
    "macelab.export": [],
    "macelab.precision_report": [
        *("--size", "tiny", "--precisions", "64,32", "--structures", "1", "--transforms", "1")
    ],
}
# The names a Python snippet may use without defining them (the text around it does).
SNIPPET_NAMES = ("cfg", "datamodule", "statistics", "batch", "model", "atoms")


class CommandError(AssertionError):
    """A command or snippet of the documentation failed; the message says which and why."""


@dataclass
class Invocation:
    """What a shell command starts."""

    kind: str  # module | script | make | bash | papermill | shell
    target: str  # module name, script or notebook path, Make target
    args: list[str]
    env: dict[str, str]


def invocation(command: Command) -> Invocation:
    """The program a shell command starts, with its arguments (``VAR=x`` prefixes apart)."""
    argv = command.argv()
    env = {}
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
        key, value = argv.pop(0).split("=", 1)
        env[key] = value
    if argv and argv[0] in ("torchrun", "srun"):  # the program they start on each rank
        starts = [i for i, word in enumerate(argv) if word in ("-m", "python", "python3")]
        if starts:
            argv = argv[starts[0] :] if argv[starts[0]] != "-m" else ["python", *argv[starts[0] :]]
    program = argv[0] if argv else ""
    if program in CONSOLE_SCRIPTS:  # macelab-train ...: python -m macelab.train ...
        return Invocation("module", CONSOLE_SCRIPTS[program], argv[1:], env)
    if program in ("python", "python3") and len(argv) > 2 and argv[1] == "-m":
        return Invocation("module", argv[2], argv[3:], env)
    if program in ("python", "python3") and len(argv) > 1:
        return Invocation("script", argv[1], argv[2:], env)
    if program == "make":
        return Invocation("make", argv[1] if len(argv) > 1 else "", argv[2:], env)
    if program == "bash" and len(argv) > 1 and not argv[1].startswith("-"):
        return Invocation("bash", argv[1], argv[2:], env)
    if program == "papermill":
        return Invocation("papermill", argv[1], argv[2:], env)
    return Invocation("shell", program, argv[1:], env)


# -- checking -------------------------------------------------------------------------------


def check(command: Command) -> None:
    """Check ``command`` without running it (see the module docstring)."""
    if command.language == "python":
        try:
            compile(command.text, command.id, "exec")
        except SyntaxError as error:
            raise CommandError(f"{command.id}: the snippet does not compile: {error}") from None
        return
    call = invocation(command)
    if call.kind == "module" and call.target in HYDRA_ENTRIES:
        compose_all(call.target, call.args, command.id)
    elif call.kind == "module" and call.target == "macelab.precision_report":
        from macelab.precision_report import build_parser

        _parse(build_parser(), call.args, command.id)
    elif call.kind == "module":
        if _find_module(call.target) is None:
            raise CommandError(f"{command.id}: no module {call.target} here")
    elif call.kind == "script":
        path = ROOT / call.target
        if not path.is_file():
            raise CommandError(f"{command.id}: no file {call.target}")
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
    elif call.kind == "make":
        makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
        if not re.search(rf"^{re.escape(call.target)}:", makefile, re.MULTILINE):
            raise CommandError(f"{command.id}: the Makefile has no target {call.target!r}")
    elif call.kind == "bash":
        if not (ROOT / call.target).is_file():
            raise CommandError(f"{command.id}: no script {call.target}")
        _bash_syntax(["bash", "-n", str(ROOT / call.target)], command.id)
    elif call.kind == "papermill":
        check_papermill(call, command.id)
    else:
        _bash_syntax(["bash", "-n", "-c", command.text], command.id)


# Hydra's own flags (``--cfg job`` prints the composed config instead of running): not
# overrides, so the check composes the config without them.
HYDRA_FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--info", "-i")
HYDRA_FLAGS = ("-m", "--multirun", "--resolve", "--help", "-h", "--hydra-help", "--version")


def _without_hydra_flags(args: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in HYDRA_FLAGS_WITH_VALUE:
            skip = True
        elif arg not in HYDRA_FLAGS and not arg.startswith(("--cfg=", "--package=", "--info=")):
            kept.append(arg)
    return kept


def compose_all(module: str, args: list[str], where: str) -> int:
    """Compose the entry point's config for every combination of the command's sweep; returns
    the number of combinations. CommandError with Hydra's message if one does not compose."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from macelab.cli import quote_numeric_group_options
    from macelab.config import CONFIG_DIR

    overrides = list(quote_numeric_group_options(_without_hydra_flags(args)))
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            for job in jobs:
                compose(HYDRA_ENTRIES[module], overrides=job, return_hydra_config=True)
    except Exception as error:  # Hydra's own errors: the message is what a user would read
        raise CommandError(f"{where}: {module} {' '.join(args)}: {error}") from None
    finally:
        GlobalHydra.instance().clear()
    return len(jobs)


def check_papermill(call: Invocation, where: str) -> None:
    """The notebook exists and declares every ``-p`` parameter in its parameters cell."""
    import json

    notebook = ROOT / call.target
    if not notebook.is_file():
        raise CommandError(f"{where}: no notebook {call.target}")
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise CommandError(f"{where}: {call.target} has no cell tagged parameters")
    source = "".join(tagged[0]["source"])
    names = [call.args[i + 1] for i, word in enumerate(call.args) if word in ("-p", "--parameters")]
    for name in names:
        if not re.search(rf"^{re.escape(name)}\s*=", source, re.MULTILINE):
            raise CommandError(f"{where}: {call.target} has no parameter {name!r}")


def _parse(parser: Any, args: list[str], where: str) -> Any:
    try:
        return parser.parse_args(args)
    except SystemExit:
        raise CommandError(f"{where}: {parser.prog} refuses {' '.join(args)}") from None


def _find_module(name: str) -> Any:
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return None


def _bash_syntax(argv: list[str], where: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise CommandError(f"{where}: not valid shell: {result.stderr.strip()}")


# -- running --------------------------------------------------------------------------------


def run(command: Command, workdir: Path, namespace: Callable[[], dict[str, Any]]) -> None:
    """Run ``command`` in ``workdir`` with the budget (see the module docstring).

    ``namespace()`` is the dict Python snippets run in: one per Markdown file, so that a
    snippet sees what the snippets above it defined, as a reader does. CommandError if the
    command fails.
    """
    with _cwd(workdir):
        if command.language == "python":
            namespace = namespace()
            try:
                exec(compile(command.text, command.id, "exec"), namespace)
            except Exception as error:
                raise CommandError(f"{command.id}: {type(error).__name__}: {error}") from error
            return
        call = invocation(command)
        with _environment(call.env):
            if call.kind == "module" and call.target in HYDRA_ENTRIES:
                run_hydra(call.target, call.args, command)
            elif call.kind == "module" and call.target == "macelab.precision_report":
                from macelab.precision_report import main

                _exit_status(lambda: main([*call.args, *BUDGET[call.target]]), command)
            elif call.kind == "module" and _find_module(call.target) is not None:
                _exit_status(lambda: _run_module(call.target, call.args), command)
            else:
                raise CommandError(
                    f"{command.id}: the command test does not run `{command.text}`; mark what it "
                    "needs (# needs: ...) or teach tests/docs/runner.py to run it"
                )


def run_hydra(module: str, args: list[str], command: Command) -> None:
    """``python -m <module> <args>`` through the module's own ``main``, with the budget; a
    run or sweep folder of its own under ``outputs/`` unless the command names one."""
    from hydra.core.global_hydra import GlobalHydra

    from macelab.cli import quote_numeric_group_options

    entry = importlib.import_module(module)
    extra = list(BUDGET[module])
    if any(a.startswith("hparams_search=") for a in args):  # two trials of the search
        extra += ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1"]
    multirun = "-m" in args or "--multirun" in args
    folder = f"outputs/doc-commands/line{command.line}"
    if multirun and not any(a.startswith("hydra.sweep.dir=") for a in args):
        extra.append(f"hydra.sweep.dir={folder}")
    if not multirun and not any(a.startswith("hydra.run.dir=") for a in args):
        extra.append(f"hydra.run.dir={folder}")
    argv = [str(Path(entry.__file__)), *quote_numeric_group_options([*args, *extra])]
    saved = sys.argv
    GlobalHydra.instance().clear()
    sys.argv = argv
    try:
        _exit_status(entry.main, command)
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()


def _run_module(name: str, args: list[str]) -> None:
    saved = sys.argv
    sys.argv = [name, *args]
    try:
        runpy.run_module(name, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved


def _exit_status(function: Callable[[], Any], command: Command) -> None:
    try:
        status = function()
    except SystemExit as error:
        status = error.code
    if status not in (None, 0):
        raise CommandError(f"{command.id}: `{command.text}` exited with status {status}")


@contextlib.contextmanager
def process_state() -> Iterator[list[str]]:
    """Put back what commands and snippets change process-wide: torch's default dtype and
    matmul precision, e3nn's optimisation defaults, warning filters, the root logger's
    handlers and level, sys.argv and the working folder.

    Yields the warnings raised meanwhile (``file:line: Category: message``), filtered as a
    fresh interpreter filters them (pytest's own filters do not apply), so that a test can
    see what a user would see on stderr.
    """
    import logging
    import warnings

    import torch

    from macelab._compat import import_e3nn

    e3nn = import_e3nn()
    root = logging.getLogger()
    saved = (
        torch.get_default_dtype(),
        torch.get_float32_matmul_precision(),
        e3nn.get_optimization_defaults(),
        list(root.handlers),
        root.level,
        list(sys.argv),
        Path.cwd(),
    )
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning):
            warnings.simplefilter("ignore", category)
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield caught
        finally:
            caught.extend(
                f"{r.filename}:{r.lineno}: {r.category.__name__}: {r.message}" for r in records
            )
            torch.set_default_dtype(saved[0])
            torch.set_float32_matmul_precision(saved[1])
            e3nn.set_optimization_defaults(**saved[2])
            for handler in list(root.handlers):
                if handler not in saved[3]:
                    root.removeHandler(handler)
                    handler.close()
            for handler in saved[3]:
                if handler not in root.handlers:
                    root.addHandler(handler)
            root.setLevel(saved[4])
            sys.argv = saved[5]
            os.chdir(saved[6])


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
