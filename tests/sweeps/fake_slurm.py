"""A stand-in for SLURM's ``sbatch``, ``srun`` and ``sacct`` on one machine, for tests.

:func:`install` writes three executables into a folder that the test puts first on PATH:

- ``sbatch SCRIPT`` copies the script into the record folder (``$FAKE_SLURM_RECORD``),
  prints ``Submitted batch job 4242`` and then, in the background, runs the script with the
  variables SLURM gives a batch job (one run per array index), once submitit has put the
  pickled call into the job's folder; it marks each finished job with ``done_<job id>``.
- ``srun [--unbuffered] [--output F] [--error F] CMD...`` starts ``--ntasks-per-node``
  copies of CMD with the per-task variables (``SLURM_PROCID``, ``SLURM_LOCALID``, ...), the
  output patterns ``%j %A %a %t`` filled in, and waits for them (killing them all after
  ``FAKE_SLURM_TIMEOUT_S`` seconds so that nothing outlives a failed test).
- ``sacct`` reports the jobs as RUNNING until they are marked done, then COMPLETED.
"""

from __future__ import annotations

import sys
from pathlib import Path

JOB_ID = 4242

SBATCH = r"""
import os, re, shlex, shutil, subprocess, sys, time
from pathlib import Path

record = Path(os.environ["FAKE_SLURM_RECORD"])
if sys.argv[1] != "--run":  # submission: record, answer, and run the job in the background
    script = Path(sys.argv[-1])
    record.mkdir(parents=True, exist_ok=True)
    shutil.copy(script, record / f"sbatch_{len(list(record.glob('sbatch_*.sh')))}.sh")
    log = open(record / "jobs.log", "a")
    subprocess.Popen([sys.executable, __file__, "--run", str(script)], stdout=log, stderr=log)
    print(f"Submitted batch job {JOB_ID}")
    sys.exit(0)

script = Path(sys.argv[2])
text = script.read_text()
flags = {k: v for k, v in re.findall(r"^#SBATCH --([\w-]+)(?:=(\S*))?", text, re.M)}
nodes, per_node = int(flags.get("nodes", 1)), int(flags.get("ntasks-per-node", 1))
folder = shlex.split([line for line in text.splitlines() if line.startswith("srun ")][0])[-1]
base = {
    **os.environ,
    "SLURM_JOB_NAME": flags.get("job-name", "fake"),
    "SLURM_NNODES": "1",
    "SLURM_JOB_NUM_NODES": "1",
    "SLURM_NODELIST": "localhost",
    "SLURM_JOB_NODELIST": "localhost",
    "SLURM_NTASKS": str(per_node),
    "SLURM_NTASKS_PER_NODE": str(per_node),
    "SLURM_CPUS_PER_TASK": flags.get("cpus-per-task", "1"),
}
array = re.match(r"(\d+)-(\d+)", flags.get("array", ""))
indices = range(int(array[1]), int(array[2]) + 1) if array else [None]
for index in indices:
    env, job_id = dict(base, SLURM_JOB_ID=str(JOB_ID)), str(JOB_ID)
    if index is not None:
        job_id = f"{JOB_ID}_{index}"
        env.update(SLURM_JOB_ID=str(JOB_ID + 1 + index), SLURM_ARRAY_JOB_ID=str(JOB_ID),
                   SLURM_ARRAY_TASK_ID=str(index))
    # submitit moves the pickled call into the job's folder once sbatch has answered
    submitted = Path(folder.replace("%j", job_id)) / f"{job_id}_submitted.pkl"
    deadline = time.time() + 60
    while not submitted.exists() and time.time() < deadline:
        time.sleep(0.2)
    if nodes == 1:
        subprocess.run(["bash", str(script)], env=env, check=False)
    (record / f"done_{job_id}").touch()
"""

SRUN = r"""
import os, subprocess, sys

args, paths = sys.argv[1:], {}
while args and args[0].startswith("--"):
    flag = args.pop(0)
    if flag in ("--output", "--error"):
        paths[flag] = args.pop(0)


def fill(pattern, task):
    env = os.environ
    array_job, index = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    for key, value in (("%A", array_job), ("%a", index), ("%j", env["SLURM_JOB_ID"]),
                       ("%t", str(task))):
        if value is not None:
            pattern = pattern.replace(key, value)
    return pattern


tasks = []
for task in range(int(os.environ["SLURM_NTASKS_PER_NODE"])):
    env = dict(os.environ, SLURM_PROCID=str(task), SLURM_LOCALID=str(task), SLURM_NODEID="0",
               SLURM_STEP_ID="0")
    out = open(fill(paths["--output"], task), "a") if "--output" in paths else None
    err = open(fill(paths["--error"], task), "a") if "--error" in paths else out
    tasks.append(subprocess.Popen(args, env=env, stdout=out, stderr=err))
codes = []
for process in tasks:
    try:
        codes.append(process.wait(timeout=float(os.environ.get("FAKE_SLURM_TIMEOUT_S", 300))))
    except subprocess.TimeoutExpired:
        for other in tasks:
            other.kill()
        codes.append(124)
sys.exit(max(codes))
"""

SACCT = r"""
import os
from pathlib import Path

record = Path(os.environ["FAKE_SLURM_RECORD"])
print("JobID|State|NodeList")
for suffix in ["", *(f"_{i}" for i in range(16))]:
    state = "COMPLETED" if (record / f"done_{JOB_ID}{suffix}").exists() else "RUNNING"
    print(f"{JOB_ID}{suffix}|{state}|localhost")
"""


def install(folder: Path) -> Path:
    """Write fake ``sbatch``, ``srun`` and ``sacct`` into ``folder``; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in (("sbatch", SBATCH), ("srun", SRUN), ("sacct", SACCT)):
        path = folder / name
        path.write_text(f"#!{sys.executable}\nJOB_ID = {JOB_ID}\n{body}")
        path.chmod(0o755)
    return folder
