"""`kitctl train` and `kitctl tune`: thin wrappers over kitctl.train.planner (plan), kitctl.train.runner and kitctl.train.tune."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from kitctl.core.context import config, console
from kitctl.core import validate
from kitctl.core.validate import checked
from kitctl.cluster.cli import SlurmCli, train_with_launcher
from kitctl.train.planner import Plan, TrainRequest

app = typer.Typer()   # commands of this area; kitctl/cli.py merges them into the kitctl app

_RUNTIME = typer.Option(None, "--runtime", callback=checked(validate.choice, choices=("docker", "native")), help="docker (the kit's image) or native (host mpirun + native build); "
                                                "default: kit.yaml's runtime")
_GPUS = typer.Option("all", "--gpus", help="all | N (the first N) | 0,2 (these indices)")
_INV = typer.Option(None, "--inventory", callback=checked(validate.readable_file, text=True), help="plan for another machine: a file of nvidia-smi --query-gpu="
                                              "index,name,compute_cap,memory.total,driver_version --format=csv,noheader")
_MPIRUN = typer.Option("/usr/bin/mpirun", "--mpirun", help="host mpirun (native runtime)")


def show_plan(plan: Plan) -> None:
    t = Table(title=f"kitctl train plan ({plan.runtime})", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in plan.describe():
        t.add_row(k, escape(v))
    console.print(t)
    if plan.options:
        o = Table(title="GPU options (ranks run in lock-step at the slowest GPU's speed)", title_justify="left")
        for col in ("", "option", "GPUs", "precision", "est. tokens/s"):
            o.add_column(col)
        for opt in plan.options:
            o.add_row("->" if opt.chosen else "", opt.label, ",".join(str(g.index) for g in opt.gpus),
                      opt.precision, f"{opt.est_tok_s:,.0f}" if opt.est_tok_s else "n/a")
        console.print(o)
        console.print("estimates: published peak TFLOPS (kitctl/gpu_peaks.yaml) x an assumed utilization; "
                      "run `kitctl tune` for measured numbers", style="dim")
    for n in plan.notes:
        console.print(f"- {n}", highlight=False, markup=False)


@app.command(context_settings={"help_option_names": ["--help"]})
def train(
    passthrough: Optional[List[str]] = typer.Argument(None, help="after `--`: extra train_gpt2cu flags, "
                                                                  "appended to its argv (e.g. -- -lg 100)"),
    preset: str = typer.Option("gpt2-124m", "--preset", help="gpt2-124m | gpt2-350m | gpt2-774m | gpt2-1558m"),
    gpus: str = _GPUS,
    micro_batch: Optional[int] = typer.Option(None, "--micro-batch", "-b", callback=checked(validate.positive_int), help="per-GPU micro-batch B "
                                                                                "(default: tune cache, else memory model)"),
    recompute: Optional[int] = typer.Option(None, "--recompute", callback=checked(validate.int_range, lo=0, hi=2), help="llm.c -r: 0 none, 1 GELU, 2 GELU+LN"),
    precision: Optional[str] = typer.Option(None, "--precision", help="bf16 | fp32 (default: bf16 when every "
                                                                       "GPU is sm_80+, else the faster choice)"),
    steps: Optional[int] = typer.Option(None, "--steps", "-x", callback=checked(validate.steps_or_epoch), help="optimizer steps (default: the preset's; "
                                                                    "-1 = one epoch of the shards)"),
    total_batch: Optional[int] = typer.Option(None, "--total-batch", "-d", callback=checked(validate.positive_int), help="tokens per optimizer step"),
    name: Optional[str] = typer.Option(None, "--name", callback=checked(validate.run_name), help="run name: <data_root>/runs/<name> (default: preset)"),
    out: Optional[Path] = typer.Option(None, "--out", callback=checked(validate.writable_folder), help="run folder (overrides --name)"),
    data: Optional[Path] = typer.Option(None, "--data", help="shard folder (default <data_root>/<preset's dataset>)"),
    runtime: Optional[str] = _RUNTIME,
    binary: Optional[Path] = typer.Option(None, "--binary", callback=checked(validate.readable_file), help="native: train_gpt2cu to run "
                                                                 "(default <data_root>/native/bin/...)"),
    mpirun: str = _MPIRUN,
    inventory: Optional[Path] = _INV,
    fresh: bool = typer.Option(False, "--fresh", help="start over in a folder with checkpoints "
                                                      "(they move to archive-<time>/)"),
    no_tune: bool = typer.Option(False, "--no-tune", help="ignore the tune cache; size B with the memory model"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and the exact command; run nothing"),
    # --launcher slurm (multi-node): options and logic live in kitctl/cli_cluster.py and kitctl/slurm*.py
    launcher: str = SlurmCli.launcher, nodes: int = SlurmCli.nodes, gpus_per_node: Optional[int] = SlurmCli.gpus_per_node,
    partition: Optional[str] = SlurmCli.partition, time: Optional[str] = SlurmCli.time,
    account: Optional[str] = SlurmCli.account, container: str = SlurmCli.container,
    image: Optional[str] = SlurmCli.image, sif: Optional[Path] = SlurmCli.sif,
    shared_dir: Optional[Path] = SlurmCli.shared_dir, init: str = SlurmCli.init,
    sbatch_opt: Optional[List[str]] = SlurmCli.sbatch_opt, submit: bool = SlurmCli.submit,
) -> None:
    """Train GPT-2 with llm.c's train_gpt2cu on this machine's GPUs (mpirun; docker or native), resumable;
    or on a Slurm cluster with --launcher slurm (docs/cluster.md)."""
    from kitctl.train.runner import plan_for, run_training

    cfg = config()
    req = TrainRequest(preset=preset, gpus=gpus, micro_batch=micro_batch, recompute=recompute, precision=precision,
                       steps=steps, total_batch=total_batch, name=name, out=out, data=data,
                       runtime=runtime or cfg.runtime, binary=binary, fresh=fresh, no_tune=no_tune,
                       passthrough=list(passthrough or []))
    if launcher != "local":
        return train_with_launcher(cfg, req, inventory=inventory, mpirun=mpirun, dry_run=dry_run, show_plan=show_plan,
                                   launcher=launcher, nodes=nodes, gpus_per_node=gpus_per_node, partition=partition,
                                   time=time, account=account, container=container, image=image, sif=sif,
                                   shared_dir=shared_dir, init=init, sbatch_opt=sbatch_opt, submit=submit)
    plan, facts, replan = plan_for(cfg, req, inventory, mpirun)
    show_plan(plan)
    if dry_run:
        console.print("command:", style="bold")
        sys.stdout.write(plan.command_line() + "\n")
        sys.stdout.flush()
        return
    run_training(plan, facts, console, replan)


@app.command(context_settings={"help_option_names": ["--help"]})
def tune(
    preset: str = typer.Option("gpt2-124m", "--preset"),
    gpus: str = _GPUS,
    precision: Optional[str] = typer.Option(None, "--precision", help="bf16 | fp32 (default as for train)"),
    data: Optional[Path] = typer.Option(None, "--data", help="shard folder (default as for train)"),
    runtime: Optional[str] = _RUNTIME,
    binary: Optional[Path] = typer.Option(None, "--binary", callback=checked(validate.readable_file), help="native: train_gpt2cu to measure"),
    mpirun: str = _MPIRUN,
    inventory: Optional[Path] = _INV,
    steps: int = typer.Option(20, "--steps", callback=checked(validate.positive_int), help="optimizer steps per config"),
    warmup: int = typer.Option(5, "--warmup", callback=checked(validate.non_negative_int), help="first steps left out of the timing"),
    min_b: int = typer.Option(8, "--min-b", callback=checked(validate.positive_int), help="smallest B tried (smaller ones only if nothing bigger fits)"),
    full: bool = typer.Option(False, "--full", help="every allowed B >= --min-b x recompute 0/1/2, even those "
                                                    "the memory model rules out (a reference sweep)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the configs and the first command; run nothing"),
) -> None:
    """Measure tokens/s of micro-batch x recompute on these GPUs and cache the fastest for `kitctl train`."""
    from kitctl.train.tune import run_tune

    cfg = config()
    req = TrainRequest(preset=preset, gpus=gpus, precision=precision, data=data, runtime=runtime or cfg.runtime,
                       binary=binary)
    run_tune(cfg, req, console, inventory, mpirun, steps, warmup, min_b, full, dry_run)
