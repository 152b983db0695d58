"""The per-stage precision ablation (issue 28, item 3) as training recipes.

From float32, one stage group of MACE at a time runs in bf16 or fp16 (every other stage
stays fp32): embedding, radial MLP, spherical harmonics, tensor product, symmetric
contraction, linear layers and updates, readouts, and each interaction layer as a whole.
Each recipe is a ``precision=`` override of the training config (a per-stage policy built
on the command line: ``precision.policy.default=fp32`` and the one group lowered), trained
on the runtime path that takes a policy (CUDA graphs; the compiled step runs in the
model's own dtype only). This script prints the recipes in the ``name=overrides`` lines that
``benchmarks/gpu/reproduce_acac.sh`` reads, one per line; on an 8-GPU machine each trains
on its own GPU:

    RECIPES="$(python benchmarks/studies/stage_ablation.py --dtypes bf16)" \\
        MAX_TIME=00:00:20:00 bash benchmarks/gpu/reproduce_acac.sh start

The trained runs then go into ``benchmarks/studies/recipe_table.py`` like any recipe.
"""

from __future__ import annotations

import argparse

# stage group -> fnmatch patterns over the model's stage names (docs/precision.md)
GROUPS: dict[str, tuple[str, ...]] = {
    "embedding": ("embedding",),
    "radial_mlp": ("interactions.*.radial_mlp",),
    "spherical_harmonics": ("spherical_harmonics",),
    "tensor_product": ("interactions.*.tensor_product",),
    "contraction": ("products.*.contraction",),
    "linear_update": ("interactions.*.linear_up", "interactions.*.linear", "products.*.update"),
    "readout": ("readouts.*",),
    "layer_0": ("interactions.0.*", "products.0.*", "readouts.0"),
    "layer_1": ("interactions.1.*", "products.1.*", "readouts.1"),
}
# the path a policy can train on (overrides the shared PATH_FLAGS of reproduce_acac.sh)
POLICY_PATH = ("runtime.compile=false", "runtime.cuda_graphs=true")


def overrides(group: str, dtype: str) -> list[str]:
    """The training overrides that lower ``group`` to ``dtype`` from float32."""
    stages = ",".join(f"{pattern}:{dtype}" for pattern in GROUPS[group])
    return [
        f"precision=policy_safe{'_fp16' if dtype == 'fp16' else ''}",
        f"precision.name=lower_{group}_{dtype}",
        "precision.policy.default=fp32",
        "~precision.policy.stages",
        f"+precision.policy.stages={{{stages}}}",
        *POLICY_PATH,
    ]


def recipes(groups: list[str], dtypes: list[str]) -> list[str]:
    """``name=overrides`` lines, the float32 baseline on the same path first."""
    lines = [f"fp32_graphs=precision=32 {' '.join(POLICY_PATH)}"]
    for dtype in dtypes:
        for group in groups:
            lines.append(f"{group}_{dtype}={' '.join(overrides(group, dtype))}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default=",".join(GROUPS), help="comma list of stage groups")
    parser.add_argument("--dtypes", default="bf16,fp16", help="comma list of bf16, fp16")
    args = parser.parse_args(argv)
    groups = args.groups.split(",")
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown stage group(s) {unknown}; known: {', '.join(GROUPS)}")
    dtypes = args.dtypes.split(",")
    if not set(dtypes) <= {"bf16", "fp16"}:
        parser.error(f"--dtypes takes bf16 and fp16, got {dtypes}")
    print("\n".join(recipes(groups, dtypes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
