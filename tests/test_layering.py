"""The import graph of ``src/macelab``: layers point down, nothing imports in a circle.

Every ``import macelab...`` and ``from macelab... import ...`` in the source is read with
``ast`` (module level and inside functions alike: a function-local import is still an
arrow of the graph, only a hidden one), and checked against :data:`LAYERS`.
"""

from __future__ import annotations

import ast
import importlib.util
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "macelab"

# The layer of each top-level package or module of macelab. A module may import from its
# own package and from packages of a strictly lower layer, never sideways or up:
#   0  the ground: errors, and the e3nn/torch compatibility shims every layer needs;
#   1  leaves that know no physics: the package root, config and device helpers, file
#      loading, command-line helpers, and the data pipeline (which hands the model only
#      r_max and statistics, STYLE.md section 2);
#   2  model: the equations (reads statistics and config types, nothing that runs it);
#   3  alternative implementations of the model's stages (kernels), precision policies,
#      mace-torch interop and AOTInductor packaging: each reads the model, none another;
#   4  speed: compiled and graphed potentials and training steps over 3;
#   5  runtime: the declared plan of how a model computes, applied in one place;
#   6  training: the LightningModule, checkpoints, callbacks;
#   7  models from any source: checkpoints, folders, mace-torch files, foundation models;
#   8  users of those models: the ASE calculator, analysis, sweeps;
#   9  entry points (python -m macelab.<name>).
LAYERS: dict[str, int] = {
    "errors": 0,
    "_compat": 0,
    "macelab": 1,
    "config": 1,
    "devices": 1,
    "dtypes": 1,
    "loading": 1,
    "cli": 1,
    "data": 1,
    "model": 2,
    "kernels": 3,
    "precision": 3,
    "interop": 3,
    "aoti": 3,
    "speed": 4,
    "runtime": 5,
    "training": 6,
    "foundations": 7,
    "calculator": 8,
    "analysis": 8,
    "sweeps": 8,
    "train": 9,
    "evaluate": 9,
    "export": 9,
    "md": 9,
    "quantize": 9,
    "precision_report": 9,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = SRC.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> list[tuple[str, bool]]:
    """The macelab modules ``path`` imports, each with whether the import is inside a
    function (``from a import b`` counts as ``a.b`` where ``b`` is a module)."""
    tree = ast.parse(path.read_text())
    local_nodes = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [
                f"{node.module}.{alias.name}"
                if _is_module(f"{node.module}.{alias.name}")
                else node.module
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            if name == "macelab" or name.startswith("macelab."):
                found.append((name, id(node) in local_nodes))
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _module_name(path)
        graph[source] |= {name for name, _ in _imports(path) if name != source}
    return graph


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "macelab"


def test_every_package_has_a_layer():
    tops = {_top(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert tops <= set(LAYERS), f"give these a layer in LAYERS: {sorted(tops - set(LAYERS))}"


def test_imports_point_down_the_layers():
    wrong = sorted(
        f"{source} -> {target}"
        for source, targets in _graph().items()
        for target in targets
        if _top(source) != _top(target) and LAYERS[_top(target)] >= LAYERS[_top(source)]
    )
    assert not wrong, "imports sideways or up the layers:\n" + "\n".join(wrong)


def test_no_import_cycles():
    """No module reaches itself through imports (function-local ones included)."""
    graph = _graph()
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    # a package's __init__ re-exporting its modules is not a cycle of the code
    cycles = [c for c in cycles if not _only_package_init(c)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _only_package_init(cycle: str) -> bool:
    """``a -> a.b -> a``: a module of package ``a`` imports a name ``a/__init__`` re-exports."""
    nodes = cycle.split(" -> ")
    packages = [n for n in nodes if (SRC.joinpath(*n.split(".")) / "__init__.py").is_file()]
    return bool(packages) and all(
        n in packages or any(n.startswith(p + ".") for p in packages) for n in nodes
    )


def function_local_imports() -> list[str]:
    """``module: target`` for every import of a macelab module inside a function."""
    return sorted(
        f"{_module_name(path)}: {name}"
        for path in PACKAGE.rglob("*.py")
        for name, local in _imports(path)
        if local
    )


# Ratchet: function-local imports of macelab hide the import graph (imports belong at the
# top of a file; only optional heavy third-party packages are imported lazily). Lower this
# number as they go; it must never rise. The one left: macelab.precision imports its
# Lightning plugin (macelab.precision.plugin, which imports macelab.precision.policy) only
# when a policy is trained with, so the model layers below do not load Lightning.
LOCAL_IMPORT_BUDGET = 1


def test_function_local_imports_of_macelab_do_not_grow():
    found = function_local_imports()
    assert len(found) <= LOCAL_IMPORT_BUDGET, "\n".join(found)


def test_layering_test_sees_the_package():
    assert importlib.util.find_spec("macelab") is not None
    assert "macelab.model.mace" in _graph()


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: _module_name(p))
def test_no_forward_is_replaced_at_run_time(path: Path):
    """How a module computes is changed by swapping the module (runtime plan), never by
    assigning to ``<module>.forward``."""
    tree = ast.parse(path.read_text())
    assigned = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute) and target.attr == "forward"
    ]
    assert not assigned, f"{path.name} assigns .forward at line(s) {assigned}"
