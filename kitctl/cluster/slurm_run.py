"""`kitctl train --launcher slurm`: plan for nodes x GPUs, render the sbatch script, write it, submit it.

The same planner as single-node training (kitctl.train.build_plan) over ``slurm.cluster_facts``: the
compute node's GPUs (``--inventory``, or this machine's) repeated ``--nodes`` times, so B, memory, resume and
the divisibility rule see every rank. The pure parts are ``slurm`` (rendering) and ``slurm_checks``; this
module reads the machine (kitctl.train.gather_facts), writes the run folder (``sbatch.sh`` atomically:
never a partial script under its name) and calls sbatch.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from kitctl.cluster import slurm, slurm_checks
from kitctl.cluster.slurm import SCRIPT_NAME, SlurmOptions, SlurmScript
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import atomic_output, is_disk_full
from kitctl.train import MICRO_BATCHES, Plan, build_plan, gather_facts, get_preset, prepare_out, write_run_json


@dataclasses.dataclass
class SlurmLaunch:
    plan: Plan
    script: SlurmScript
    path: Optional[Path] = None
    job_id: Optional[str] = None


def plan_slurm(cfg: KitConfig, req, opts: SlurmOptions, inventory: Optional[Path] = None,
               mpirun: str = "/usr/bin/mpirun", *, check_paths: bool = True) -> SlurmLaunch:
    """Plan + render (reads the data folder, run folder and inventory; starts nothing)."""
    # check the cheap Slurm inputs before reading the data
    slurm_checks.check_run_name(req.name)
    slurm_checks.check_counts(opts.nodes, opts.gpus_per_node)
    slurm_checks.check_shared_dir(opts.shared_dir, must_exist=check_paths)
    slurm_checks.check_time(opts.time)
    req = dataclasses.replace(req, runtime=opts.runtime)
    facts = gather_facts(cfg, req, inventory, mpirun)
    gpus = slurm.node_gpus(facts.gpus, req.gpus, opts.gpus_per_node)
    opts = dataclasses.replace(opts, gpus_per_node=len(gpus))
    _check_some_micro_batch_divides(req, opts)
    plan = build_plan(dataclasses.replace(req, gpus="all"), slurm.cluster_facts(facts, gpus, opts.nodes))
    return SlurmLaunch(plan, slurm.render_plan(plan, opts, check_paths=check_paths))


def _check_some_micro_batch_divides(req, opts: SlurmOptions) -> None:
    """Before the planner: when no micro-batch can divide the total batch over nodes x GPUs, say which
    --nodes would (the planner alone would suggest --gpus)."""
    preset = get_preset(req.preset)
    T = req.seq_len or preset.seq_len
    D = req.total_batch or preset.total_batch
    ranks = opts.nodes * (opts.gpus_per_node or 1)
    if D < 1:
        return      # the planner refuses a non-positive total batch
    candidates = [req.micro_batch] if req.micro_batch else list(MICRO_BATCHES)
    if not any(D % (b * T * ranks) == 0 for b in candidates):
        slurm_checks.check_divisibility(min(candidates), T, D, opts.nodes, opts.gpus_per_node or 1)


def _session(launch: SlurmLaunch, opts: SlurmOptions) -> dict:
    return {"launcher": "slurm", "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "job_id": launch.job_id, "script": str(launch.path), "nodes": opts.nodes,
            "gpus_per_node": opts.gpus_per_node or launch.plan.decisions.ranks // opts.nodes,
            "runtime": {"kind": opts.container, "image": opts.image, "sif": str(opts.sif) if opts.sif else None}}


def train_on_slurm(cfg: KitConfig, req, opts: SlurmOptions, *, inventory: Optional[Path] = None,
                   mpirun: str = "/usr/bin/mpirun", submit: bool = False, dry_run: bool = False,
                   console=None, show_plan=None) -> SlurmLaunch:
    """The whole of `kitctl train --launcher slurm`: --dry-run prints the script; otherwise the run folder is
    prepared, the script written to <run>/sbatch.sh and, with --submit, handed to sbatch."""
    launch = plan_slurm(cfg, req, opts, inventory, mpirun, check_paths=not dry_run)
    plan, script = launch.plan, launch.script
    say = (lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True)) if console else print
    if show_plan is not None:
        show_plan(plan)
    say(f"slurm: {opts.nodes} node(s) x {script.ranks // opts.nodes} GPU(s) = {script.ranks} ranks, "
        f"B={script.micro_batch} x T={script.seq_len}, total batch {script.total_batch}, "
        f"{script.grad_accum} grad-accumulation step(s); container {opts.container}; llm.c init -pi {opts.init}")
    if dry_run:
        sys.stdout.write(script.text)
        sys.stdout.flush()
        return launch
    out_dir = plan.decisions.out_dir
    make_run_dir(out_dir)
    prepare_out(plan)
    launch.path = write_script(script.text, out_dir)
    if submit:
        launch.job_id = submit_script(launch.path)
    write_run_json(plan, _session(launch, opts))
    q = shlex.quote       # every path in a line to paste into a shell is quoted
    run_q = q(str(out_dir))
    if launch.job_id:
        say(f"submitted Slurm job {launch.job_id}: {launch.path}\n"
            f"  log:     tail -f {q(str(out_dir / f'slurm-{launch.job_id}.out'))}\n"
            f"  queue:   squeue -j {launch.job_id}        cancel: scancel {launch.job_id}\n"
            f"  observe: kitctl status {run_q}; kitctl tensorboard {run_q}")
    else:
        say(f"wrote {launch.path}\n  submit it with: sbatch {q(str(launch.path))}   (or re-run with --submit)")
    return launch


# ------------------------------------------------------------------------------------------------------------
# thin runtime: the run folder, the script, sbatch


def make_run_dir(run_dir: Path) -> Path:
    """Create the run folder (sbatch opens the job's --output there before it starts); exit 2 when it cannot be."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{run_dir} is a file, not a run folder", "move it away, or pick another --name / --out") from None
    except OSError as e:
        raise ConfigError(f"cannot create the run folder {run_dir}: {e.strerror or e}",
                          "check data_root in kit.yaml (or --out): it must be a folder you can write") from None
    return run_dir


def write_script(text: str, run_dir: Union[str, Path], name: str = SCRIPT_NAME) -> Path:
    """Write the script into the run folder, atomically and executable (temp file, fsync, rename): a full disk
    or Ctrl-C leaves the previous script or none, never a truncated one that sbatch would run."""
    run = make_run_dir(Path(run_dir))
    path = run / name
    if path.is_dir():
        raise ConfigError(f"{path} is a folder", f"move it away: the script is written as {path}")
    try:
        with atomic_output(path, "w") as f:
            f.write(text)
            os.fchmod(f.fileno(), 0o755)
    except OSError as e:
        if is_disk_full(e):
            raise
        raise ConfigError(f"cannot write {path}: {e.strerror or e}",
                          "free some space or make the run folder writable, then run again") from None
    return path


def parse_job_id(out: str) -> str:
    """``sbatch --parsable`` prints ``JOBID`` or ``JOBID;CLUSTER``."""
    line = out.strip().splitlines()[-1] if out.strip() else ""
    job = line.split(";")[0].strip()
    if not job.isdigit():
        raise KitError(f"sbatch did not print a job id (got {out.strip()[-200:]!r})", "run sbatch by hand to see why")
    return job


def submit_script(script_path: Union[str, Path], *, sbatch: str = "sbatch", extra_args: Sequence[str] = (),
                  env: Optional[Mapping[str, str]] = None) -> str:
    """``sbatch --parsable SCRIPT`` -> the job id. Raises KitError when sbatch is missing or refuses.
    (A quick call whose stdout, the job id, must stay apart from its stderr: subprocess.run, not a stream.)"""
    exe = shutil.which(sbatch)
    if exe is None:
        raise KitError(f"{sbatch} not found on PATH: this is not a Slurm login node",
                       "copy the script to a login node and run `sbatch <script>` there, or render it with --dry-run")
    r = subprocess.run([exe, "--parsable", *extra_args, str(script_path)], capture_output=True, text=True,
                       env={**os.environ, **dict(env or {})})
    if r.returncode != 0:
        raise KitError(f"sbatch refused {script_path}: {(r.stderr or r.stdout).strip()[-800:]}",
                       "check --partition/--time/--gpus-per-node against `sinfo -o '%P %l %G %D'`")
    return parse_job_id(r.stdout)
