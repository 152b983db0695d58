"""What the package declares: console scripts for every entry point, one version, a licence,
a changelog, and every package that src/ imports among the dependencies or an extra.

The wheel itself (built, installed into a fresh environment, its console scripts run) is
checked by ``.ci/check_wheel`` (``make check-wheel``, a CI step).
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

import macelab

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# Import names whose distribution is named differently, for packages that may be absent here.
DISTRIBUTIONS = {
    "yaml": "pyyaml",
    "hydra": "hydra-core",
    "mace": "mace-torch",
    "torch_geometric": "torch-geometric",
    "cuequivariance_torch": "cuequivariance-torch",
}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalise(re.match(r"[A-Za-z0-9._-]+", requirement).group())


def _entry_point_modules() -> set[str]:
    """Modules of src/macelab run as ``python -m macelab.<name>`` with a ``main``."""
    modules = set()
    for path in (ROOT / "src" / "macelab").glob("*.py"):
        text = path.read_text()
        if 'if __name__ == "__main__":' in text and re.search(r"^def main\(", text, re.M):
            modules.add(f"macelab.{path.stem}")
    return modules


def test_every_entry_point_has_a_console_script():
    scripts = PROJECT["scripts"]
    targets = {target.split(":")[0] for target in scripts.values()}
    assert targets == _entry_point_modules()
    for name, target in scripts.items():
        module, function = target.split(":")
        assert name == "macelab-" + module.rsplit(".", 1)[-1].replace("_", "-")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_the_version_has_one_source():
    assert "version" not in PROJECT and PROJECT["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "src/macelab/__init__.py"
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", macelab.__version__)


def test_licence_and_changelog():
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "macelab developers" in licence
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert f"## [{macelab.__version__}]" in changelog


def _third_party_imports() -> set[str]:
    names = set()
    for path in (ROOT / "src" / "macelab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "macelab"}


def test_every_imported_package_is_declared():
    required = {_requirement_name(r) for r in PROJECT["dependencies"]}
    optional = {
        _requirement_name(r) for extra in PROJECT["optional-dependencies"].values() for r in extra
    }
    installed = packages_distributions()
    undeclared = []
    for name in sorted(_third_party_imports()):
        distribution = DISTRIBUTIONS.get(name) or (installed.get(name) or [name])[0]
        if _normalise(distribution) not in required | optional:
            undeclared.append(f"{name} ({distribution})")
    assert not undeclared, f"imported in src/ but not in pyproject.toml: {undeclared}"


@pytest.mark.parametrize(
    ("extra", "package"),
    [
        ("tensorboard", "tensorboard"),
        ("wandb", "wandb"),
        ("notebooks", "jupyterlab"),
        ("hparams", "hydra-optuna-sweeper"),
        ("docs", "mkdocstrings-python"),
        ("kernels", "triton"),
        ("cueq", "cuequivariance-torch"),
        ("mace", "mace-torch"),
    ],
)
def test_optional_packages_are_extras_not_dependencies(extra, package):
    extras = PROJECT["optional-dependencies"]
    assert package in {_requirement_name(r) for r in extras[extra]}
    assert package not in {_requirement_name(r) for r in PROJECT["dependencies"]}
