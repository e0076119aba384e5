"""`kitctl train --launcher slurm`: plan for nodes x GPUs, render the sbatch script, write it, submit it.

The same planner as single-node training (kitctl.train.planner.build_plan) over ``slurm.cluster_facts``: the
compute node's GPUs (``--inventory``, or this machine's) repeated ``--nodes`` times, so B, memory, resume and
the divisibility rule see every rank. The pure parts are in kitctl/slurm.py; this module reads the machine
(kitctl.train.gather.gather_facts), writes the run folder and calls sbatch.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Optional

from kitctl.cluster import slurm
from kitctl.core.config import KitConfig
from kitctl.cluster.slurm import SlurmOptions, SlurmScript


@dataclasses.dataclass
class SlurmLaunch:
    plan: object                 # kitctl.train.planner.Plan
    script: SlurmScript
    path: Optional[Path] = None
    job_id: Optional[str] = None


def plan_slurm(cfg: KitConfig, req, opts: SlurmOptions, inventory: Optional[Path] = None,
               mpirun: str = "/usr/bin/mpirun", *, check_paths: bool = True) -> SlurmLaunch:
    """Plan + render (reads the data folder, run folder and inventory; starts nothing)."""
    from kitctl.train.planner import build_plan
    from kitctl.train.gather import gather_facts

    # check the cheap Slurm inputs before reading the data
    slurm.check_counts(opts.nodes, opts.gpus_per_node)
    slurm.check_shared_dir(opts.shared_dir, must_exist=check_paths)
    slurm.check_time(opts.time)
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
    from kitctl.train.planner import MICRO_BATCHES, get_preset

    preset = get_preset(req.preset)
    T = req.seq_len or preset.seq_len
    D = req.total_batch or preset.total_batch
    ranks = opts.nodes * (opts.gpus_per_node or 1)
    if D < 1:
        return      # the planner refuses a non-positive total batch
    candidates = [req.micro_batch] if req.micro_batch else list(MICRO_BATCHES)
    if not any(D % (b * T * ranks) == 0 for b in candidates):
        slurm.check_divisibility(min(candidates), T, D, opts.nodes, opts.gpus_per_node or 1)


def _session(launch: SlurmLaunch, opts: SlurmOptions) -> dict:
    return {"launcher": "slurm", "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "job_id": launch.job_id, "script": str(launch.path), "nodes": opts.nodes,
            "gpus_per_node": opts.gpus_per_node or launch.plan.ranks // opts.nodes,
            "runtime": {"kind": opts.container, "image": opts.image, "sif": str(opts.sif) if opts.sif else None}}


def train_on_slurm(cfg: KitConfig, req, opts: SlurmOptions, *, inventory: Optional[Path] = None,
                   mpirun: str = "/usr/bin/mpirun", submit: bool = False, dry_run: bool = False,
                   console=None, show_plan=None) -> SlurmLaunch:
    """The whole of `kitctl train --launcher slurm`: --dry-run prints the script; otherwise the run folder is
    prepared, the script written to <run>/sbatch.sh and, with --submit, handed to sbatch."""
    from kitctl.train.runner import prepare_out, write_run_json

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
    prepare_out(plan)
    launch.path = slurm.write_script(script.text, plan.out_dir)
    if submit:
        launch.job_id = slurm.submit(launch.path)
    write_run_json(plan, _session(launch, opts))
    if launch.job_id:
        say(f"submitted Slurm job {launch.job_id}: {launch.path}\n"
            f"  log:     tail -f {plan.out_dir}/slurm-{launch.job_id}.out\n"
            f"  queue:   squeue -j {launch.job_id}        cancel: scancel {launch.job_id}\n"
            f"  observe: kitctl status {plan.out_dir}; kitctl tensorboard {plan.out_dir}")
    else:
        say(f"wrote {launch.path}\n  submit it with: sbatch {launch.path}   (or re-run with --submit)")
    return launch
