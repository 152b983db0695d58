"""A model folder's README (its model card), generated from its ``model.yaml`` and the
raw results files it cites, so that no number in it is copied by hand.

    python -m macelab.analysis.model_card models/acac-300K

reads ``model.yaml`` (``metadata``: name, data, recipe, command, device, date, wall time,
``results``: the raw results file of the test sets, ``notes``; ``checks``: the CPU
regression check) and writes ``README.md`` beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from macelab.training.results import format_table, paper_results

FIELDS = (
    ("trained_on", "Data"),
    ("recipe", "Recipe"),
    ("checkpoint", "Weights"),
    ("command", "Command"),
    ("device", "Device"),
    ("date", "Date"),
    ("train_seconds", "Training wall time (s)"),
    ("macelab_commit", "macelab commit"),
    ("results", "Raw results"),
)


def model_card(folder: Path, root: Path) -> str:
    """The markdown model card of ``folder``; paths in ``model.yaml`` are relative to ``root``."""
    config: dict[str, Any] = yaml.safe_load((folder / "model.yaml").read_text())
    meta = config.get("metadata") or {}
    run = config.get("run") or {}
    name = meta.get("name", folder.name)
    lines = [f"# {name}", ""]
    if meta.get("summary"):
        lines += [meta["summary"], ""]
    lines += [
        "Load it without running code from the files (YAML + safetensors):",
        "",
        "```bash",
        f"python -m macelab.evaluate ckpt_path={folder.as_posix()}",
        "```",
        "",
        "```python",
        "from macelab.calculator import MACECalculator",
        f'calc = MACECalculator("{folder.as_posix()}", device="cpu")',
        "```",
        "",
        "| | |",
        "|---|---|",
    ]
    model = config["model"]
    parameters = meta.get("num_parameters")
    architecture = (
        f"{model['channels']} channels, L <= {model['max_L']}, l_max {model['max_ell']}, "
        f"correlation {model['correlation']}, {model['num_interactions']} interactions, "
        f"r_max {model['r_max']} Å" + (f"; {parameters:,} parameters" if parameters else "")
    )
    lines.append(f"| Model | {architecture} |")
    for key, label in FIELDS:
        if meta.get(key) is not None:
            value = meta[key]
            value = f"`{value}`" if key in ("command", "results") else value
            lines.append(f"| {label} | {value} |")
    lines.append("")
    results_file = meta.get("results")
    if results_file:
        path = root / results_file
        results = json.loads(path.read_text())
        title = f"Test sets (RMSE; from `{results_file}`), beside the MACE paper"
        lines += [format_table(results, paper_results(run.get("benchmark")), title)]
    for check in config.get("checks") or []:
        lines += [
            "### Regression check",
            "",
            f"`tests/use/test_model_artifacts.py` evaluates this folder on CPU on the first "
            f"{check['structures']} structures of {check['test_set']} and asserts "
            f"{check['metric']} = {check['value']:.6g} to {check['rtol']:g} relative "
            f"(recorded with: `{check['command']}`).",
            "",
        ]
    if meta.get("notes"):
        lines += ["### Notes", ""] + [f"- {note}" for note in meta["notes"]] + [""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a model folder (model.yaml, model.safetensors)")
    parser.add_argument("--root", type=Path, default=Path("."), help="what paths are relative to")
    args = parser.parse_args()
    card = model_card(args.folder, args.root)
    (args.folder / "README.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
