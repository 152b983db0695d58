"""``python -m macelab.md``: molecular dynamics with a trained macelab model (ASE).

Reads a structure, attaches :class:`macelab.calculator.MACECalculator` (a checkpoint or an
ensemble of them, any precision), draws Maxwell-Boltzmann velocities at ``temperature_K``
(zero total momentum and angular momentum, seeded) and integrates with velocity Verlet
(``ensemble=nve``) or Langevin dynamics (``ensemble=langevin``). Every ``log_every`` steps
it appends a frame to ``trajectory.extxyz`` and a line to ``md.log`` (time in ps, potential,
kinetic and total energy in eV, temperature in K); a progress bar shows the run.

Two atoms closer than ``min_distance`` (0.3 Å), in the starting structure or at any step,
stop the run with an error naming the atoms, the file, the frame and the step: a model
gives NaN (or meaningless) energies there, and the dynamics would go on with them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from macelab._compat import thermalize
from macelab.calculator import MACECalculator
from macelab.cli import prepare_argv, user_errors_exit
from macelab.config import CONFIG_DIR
from macelab.data.neighbors import DEFAULT_MIN_DISTANCE, too_close_error
from macelab.devices import resolve_device
from macelab.errors import AtomsTooCloseError, ConfigError, DataError
from macelab.runtime import RuntimePlan, inference_precision, set_fields

log = logging.getLogger(__name__)
ENSEMBLES = ("nve", "langevin")


def read_structure(path: str, frame: int):
    """The ``frame``-th structure of ``path``; DataError names the file if ASE cannot."""
    import ase.io

    if not Path(path).is_file():
        raise DataError(f"structure file {path} does not exist; pass structure=<file>.")
    try:
        return ase.io.read(path, index=frame)
    except Exception as error:  # any reader failure is the file's problem
        raise DataError(
            f"could not read frame {frame} of {path} with ASE ({type(error).__name__}: "
            f"{error}); give a file in a format ASE reads (extxyz, xyz, cif, POSCAR)."
        ) from error


def precision_name(precision: Any) -> str:
    """The name of ``cfg.precision``: a node of conf/precision (``precision=32`` on the
    command line, as for training) or, in a hand-written config, the name itself."""
    if isinstance(precision, Mapping):
        return str(precision["name"])
    return str(precision)


def accelerate_option(value: Any) -> str | None:
    """``accelerate`` as MACECalculator takes it: ``null`` (or ``none``) is None."""
    if value is None or str(value).lower() in ("none", "null", ""):
        return None
    return str(value)


# the old ``accelerate=`` values, as runtime plan fields
ACCELERATE_FIELDS = {"graphs": {"cuda_graphs": True}, "compiled": {"compile": True}}


def md_plan(cfg: DictConfig) -> RuntimePlan:
    """How the dynamics' models compute: the runtime group (``runtime.cuda_graphs``,
    ``runtime.compile``, ``runtime.backend``, ...), with the old ``accelerate=`` mapped onto
    it (one deprecation line in the log); they disagreeing is a ConfigError."""
    runtime = dict(set_fields(cfg.get("runtime")))
    mode = accelerate_option(cfg.get("accelerate"))
    if mode is not None:
        if mode not in ACCELERATE_FIELDS:
            raise ConfigError(
                f"accelerate={mode!r} (an old name); use runtime.cuda_graphs=true (graphs) or "
                "runtime.compile=true (compiled), or neither."
            )
        fields = ACCELERATE_FIELDS[mode]
        new = " ".join(f"runtime.{k}={str(v).lower()}" for k, v in fields.items())
        if any(k in ("cuda_graphs", "compile") and not fields.get(k) for k in runtime):
            raise ConfigError(
                f"accelerate={mode} (an old name) and the runtime group disagree; set {new} only."
            )
        log.warning("accelerate=%s is deprecated: it is %s", mode, new)
        runtime.update(fields)
    return RuntimePlan.from_mapping(runtime)


# a plan's step strategy as MACECalculator's ``accelerate``
CALCULATOR_MODES = {None: None, "graphed": "graphs", "compiled": "compiled"}


def md_precision(precision: Any, plan: RuntimePlan) -> str:
    """The calculator's precision name: the precision group's, or
    ``runtime.precision_policy`` where that is set (the group at its default, ``64``, counts
    as not given)."""
    name = precision_name(precision)
    if plan.precision_policy is None:
        return name
    return precision_name(inference_precision(None if name == "64" else name, plan))


def run_md(cfg: DictConfig) -> dict[str, Any]:
    """Run the dynamics of ``cfg`` (conf/md.yaml); returns a summary."""
    import numpy as np
    from ase import units
    from ase.constraints import FixCom
    from ase.io import write
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet
    from rich.progress import Progress

    if cfg.ensemble not in ENSEMBLES:
        raise ConfigError(f"ensemble={cfg.ensemble!r}; choose one of {', '.join(ENSEMBLES)}.")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atoms = read_structure(str(cfg.structure), int(cfg.frame))
    device = resolve_device(str(cfg.device))
    checkpoints = cfg.ckpt_path
    sources = [str(c) for c in checkpoints] if not isinstance(checkpoints, str) else checkpoints
    min_distance = cfg.get("min_distance", DEFAULT_MIN_DISTANCE)
    plan = md_plan(cfg)
    # the kernels only where the plan names them: otherwise each model computes as its
    # run did (or with e3nn where that cannot run here)
    kernels = {"backend", "fused_convolution"} & set(set_fields(plan.to_dict()))
    atoms.calc = MACECalculator(
        sources,
        device=device,
        precision=md_precision(cfg.precision, plan),
        accelerate=CALCULATOR_MODES[plan.step_strategy],
        edge_chunk=plan.edge_chunk,
        runtime=plan if kernels else None,
        trust_pickle=bool(cfg.get("trust_pickle", False)),
        min_distance=min_distance,
    )
    rng = np.random.default_rng(int(cfg.seed))
    thermalize(atoms, float(cfg.temperature_K), rng=rng)
    Stationary(atoms)
    if len(atoms) > 2 and not any(atoms.pbc):
        ZeroRotation(atoms)
    timestep = float(cfg.timestep_fs) * units.fs
    if cfg.ensemble == "nve":
        dynamics = VelocityVerlet(atoms, timestep=timestep)
    else:
        # the centre of mass held by a constraint, as ASE advises (Langevin's own fixcm
        # does not sample NVT exactly, and is deprecated)
        atoms.set_constraint(FixCom())
        dynamics = Langevin(
            atoms,
            timestep=timestep,
            temperature_K=float(cfg.temperature_K),
            friction=float(cfg.friction_per_fs) / units.fs,
            fixcm=False,
            rng=rng,
        )
    trajectory = output_dir / "trajectory.extxyz"
    log_path = output_dir / "md.log"
    trajectory.unlink(missing_ok=True)
    energies: list[float] = []

    def record() -> None:
        potential = atoms.get_potential_energy()
        kinetic = atoms.get_kinetic_energy()
        time_ps = dynamics.get_time() / (1000 * units.fs)
        temperature = atoms.get_temperature()
        energies.append(potential + kinetic)
        with log_path.open("a") as handle:
            handle.write(
                f"{time_ps:12.5f} {potential:16.6f} {kinetic:14.6f} {potential + kinetic:16.6f}"
                f" {temperature:10.2f}\n"
            )
        write(trajectory, atoms, format="extxyz", append=True)

    log_path.write_text(
        "# time_ps potential_eV kinetic_eV total_eV temperature_K\n", encoding="utf-8"
    )
    every = max(1, int(cfg.log_every))
    started = False
    try:
        record()
        started = True
        with Progress(transient=True) as progress:
            task = progress.add_task(f"MD ({cfg.ensemble})", total=int(cfg.steps))
            done = 0
            while done < int(cfg.steps):
                chunk = min(every, int(cfg.steps) - done)
                dynamics.run(chunk)
                done += chunk
                progress.update(task, advance=chunk)
                if done % every == 0 or done == int(cfg.steps):
                    record()
    except AtomsTooCloseError as error:
        # a step moves the atoms, then computes forces: the failing step is the next one
        where = f"frame {int(cfg.frame)}, MD step {dynamics.nsteps + 1}" if started else None
        raise too_close_error(
            error.pair,
            error.min_distance,
            option="min_distance",
            atomic_numbers=atoms.numbers,
            file=str(cfg.structure),
            record=where or int(cfg.frame),
            advice=(
                "The dynamics drove them together (too large a timestep_fs or temperature_K, "
                "or a model not trained on such geometries): change those"
                if started
                else "Fix this structure or start from another frame"
            ),
        ) from None
    drift = (energies[-1] - energies[0]) / len(atoms)
    summary = {"steps": int(cfg.steps), "atoms": len(atoms), "drift_eV_per_atom": drift}
    log.info("wrote %s and %s; total energy drift %.3g eV/atom", trajectory, log_path, drift)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="md")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    run_md(cfg)


def cli() -> None:
    """The ``macelab-md`` console script: ``python -m macelab.md`` by another name."""
    prepare_argv()
    main()


if __name__ == "__main__":
    cli()
