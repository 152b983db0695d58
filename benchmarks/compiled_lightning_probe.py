"""Where does the compiled training step's difference from eager come from? A CPU probe.

Three short Lightning runs of the same tiny float64 configuration (the one of
``tests/training/test_cuda_graphs_gpu.py``: 2 epochs of 6 steps, stage two from epoch 1):

* ``eager``: the plain run;
* ``noise``: the plain run with every initial weight multiplied by ``1 + 1e-13 z`` (z
  standard normal): how much training amplifies a rounding-size difference;
* ``traced``: ``training.compile_step=true`` with the step compiled by ``aot_eager`` (the
  make_fx trace through the double backward, no code generation), i.e. everything of the
  compiled path except Inductor's generated code and CUDA graphs.

It prints the largest relative difference of each run's test metrics from the eager run's
and writes them to ``DIR/compiled_lightning_probe.json``. Takes about 3 minutes on 2 cores.

    MACELAB_DATA=../shared/data python -m benchmarks.compiled_lightning_probe --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from tests.training.conftest import TINY

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
# the GPU test's configuration (tests/training: TINY plus stage two from epoch 1)
OVERRIDES = [*TINY, "training.stage_two.start_epoch=1"]
NOISE = 1e-13


def _run(out: Path, overrides: list[str]) -> dict[str, Any]:
    """One training run in ``out``; its test metrics (results.json)."""
    from macelab.train import run_training

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    out.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.job.num = 0
        cfg.paths.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    run_training(cfg)
    return json.loads((out / "results.json").read_text())


def _largest_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    return max(
        abs(b[test][name] - value) / abs(value)
        for test, metrics in a.items()
        for name, value in metrics.items()
        if isinstance(value, float) and value
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import macelab.model as model_package
    import macelab.speed.compiled_train as compiled_train

    build_model = model_package.build_model
    noise = {"on": False}

    def noisy_build(*a: Any, **k: Any) -> torch.nn.Module:
        model = build_model(*a, **k)
        if noise["on"]:
            generator = torch.Generator().manual_seed(123)
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1 + NOISE * torch.randn(p.shape, generator=generator, dtype=p.dtype))
        return model

    model_package.build_model = noisy_build  # the training module imports it from here
    compile_init = compiled_train.CompiledTrainStep.__init__

    def traced_only(self: Any, *a: Any, **k: Any) -> None:
        compile_init(self, *a, **{**k, "backend": "aot_eager"})

    compiled_train.CompiledTrainStep.__init__ = traced_only
    results = {"eager": _run(args.out / "eager", OVERRIDES)}
    noise["on"] = True
    results["noise"] = _run(args.out / "noise", OVERRIDES)
    noise["on"] = False
    results["traced"] = _run(args.out / "traced", [*OVERRIDES, "training.compile_step=true"])
    record = {
        "benchmark": "compiled_lightning_probe",
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "command": "python -m benchmarks.compiled_lightning_probe "
        + " ".join(argv or sys.argv[1:]),
        "weight_noise": NOISE,
        "max_rel_diff_vs_eager": {
            name: _largest_difference(results["eager"], results[name])
            for name in ("noise", "traced")
        },
        "results": results,
    }
    (args.out / "compiled_lightning_probe.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record["max_rel_diff_vs_eager"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
