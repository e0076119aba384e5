"""`kitctl train` and `kitctl tune`: thin wrappers over kitctl.train.session (plan + run), kitctl.train.tune.

Other launchers than this machine's mpirun (``--launcher slurm``) plug in from higher layers with
:func:`add_launcher`: they bring their own options, which `kitctl train` then lists, and a function that takes
the request. The train area never imports them.
"""
from __future__ import annotations

import dataclasses
import inspect
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from kitctl.core.context import config, console
from kitctl.core import validate
from kitctl.core.validate import checked
from kitctl.core.errors import ConfigError
from kitctl.train.plan import Plan
from kitctl.train.request import TrainRequest
from kitctl.train.image_source import use_pulled
from kitctl.train.runner import writer_lock
from kitctl.train.session import plan_for, run_training
from kitctl.train.tune import run_tune, tune_first

app = typer.Typer()   # commands of this area; kitctl/cli.py builds one when it is asked for (COMMANDS lists them)

_RUNTIME = typer.Option(None, "--runtime", help="docker (the kit's image) or native (host mpirun + native build); "
                                                "default: kit.yaml's runtime")
_GPUS = typer.Option("all", "--gpus", help="all | N (a count: the first N GPUs) | 0,2 (these indices; one GPU by index: 0, with the comma)")
_INV = typer.Option(None, "--inventory", help="plan for another machine: a file of nvidia-smi --query-gpu="
                                              "index,name,compute_cap,memory.total,driver_version --format=csv,noheader")
_MPIRUN = typer.Option("/usr/bin/mpirun", "--mpirun", help="host mpirun (native runtime)")
LOCAL = "local (this machine: mpirun)"


@dataclass(frozen=True)
class Launcher:
    """A way to run `kitctl train` elsewhere. ``run(cfg, req, *, inventory, mpirun, dry_run, show_plan, launcher,
    **options)`` gets the request and every option in ``options`` (name -> (type, typer.Option))."""

    name: str
    summary: str
    options: dict[str, tuple[Any, Any]]
    run: Callable[..., None]


LAUNCHERS: dict[str, Launcher] = {}
_planned: Optional[Callable[[Any, str], Any]] = None


def use_planned_data(planner: Callable[[Any, str], Any]) -> None:
    """The hook: (config, preset name) -> the shards the preset's dataset will have once `kitctl data` writes them
    (token counts only), for a dry run before the data exists (kitctl/cli.py hands in the pipeline's planner)."""
    global _planned
    _planned = planner


def _planned_data(cfg: Any, req: TrainRequest) -> Any:
    """A dry run of the preset's own shard folder that does not exist yet: plan on the dataset's size."""
    if req.data is not None or _planned is None:
        return None
    from kitctl.train.presets import get_preset
    if cfg.layout.shards(get_preset(req.preset).data).exists():
        return None
    return _planned(cfg, req.preset)


def show_plan(plan: Plan) -> None:
    t = Table(title=f"kitctl train plan ({plan.decisions.runtime})", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in plan.describe():
        t.add_row(k, escape(v))
    console.print(t)
    options = plan.decisions.hardware.options
    if options:
        o = Table(title="GPU options (ranks run in lock-step at the slowest GPU's speed)", title_justify="left")
        for col in ("", "option", "GPUs", "precision", "est. tokens/s"):
            o.add_column(col)
        for opt in options:
            o.add_row("->" if opt.chosen else "", opt.label, ",".join(str(g.index) for g in opt.gpus),
                      opt.precision, f"{opt.est_tok_s:,.0f}" if opt.est_tok_s else "n/a")
        console.print(o)
        console.print("estimates: each option's fastest config that fits, from measured tokens/s "
                      "(kitctl/train/throughput.yaml) scaled by published peaks (gpu_peaks.yaml); "
                      "`kitctl tune` measures", style="dim")
    for n in plan.notes:
        console.print(f"- {n}", highlight=False, markup=False)


def train(
    passthrough: Optional[List[str]] = typer.Argument(None, help="after `--`: extra train_gpt2cu flags, "
                                                                  "appended to its argv (e.g. -- -lg 100)"),
    preset: str = typer.Option("gpt2-124m", "--preset", help="gpt2-124m | gpt2-350m | gpt2-774m | gpt2-1558m"),
    gpus: str = _GPUS,
    micro_batch: Optional[int] = typer.Option(None, "--micro-batch", "-b", callback=checked(validate.llmc_int), help="per-GPU micro-batch B (default: "
                                              "tune cache, else the fastest that fits by the throughput table)"),
    recompute: Optional[int] = typer.Option(None, "--recompute", callback=checked(validate.int_range, lo=0, hi=2, why="llm.c -r: 0 none, 1 GELU, 2 GELU + layernorm"), help="llm.c -r: 0 none, 1 GELU, 2 GELU+LN"),
    precision: Optional[str] = typer.Option(None, "--precision", help="bf16 | fp32 (default: bf16 when every "
                                                                       "GPU is sm_80+, else the faster choice)"),
    force_memory: bool = typer.Option(False, "--force-memory", help="run a -b the memory model predicts cannot "
                                      "fit the GPU (default: refused, naming the largest B that fits)"),
    steps: Optional[int] = typer.Option(None, "--steps", "-x", callback=checked(validate.steps_or_epoch), help="optimizer steps (default: the preset's; "
                                                                    "-1 = one epoch of the shards)"),
    total_batch: Optional[int] = typer.Option(None, "--total-batch", "-d", callback=checked(validate.llmc_int, lo=None), help="tokens per optimizer step"),
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
    no_tune: bool = typer.Option(False, "--no-tune", help="ignore the tune cache and never tune first (GPUs "
                                                          "without measurements); B from the throughput table"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and the exact command; run nothing"),
    image: Optional[str] = typer.Option(None, "--image", help="docker: REGISTRY/REPO[:TAG] pushed by `kitctl build "
                                        "--push`: pulled, its labels checked, run instead of the local build "
                                        "(kit.yaml: pull_image); slurm+pyxis: an enroot .sqsh on the shared "
                                        "filesystem or a registry image"),
    launcher: str = typer.Option("local", "--launcher", help=LOCAL),
    **launcher_options: Any,
) -> None:
    """Train GPT-2 with llm.c's train_gpt2cu on this machine's GPUs (mpirun; docker or native), resumable;
    or on a Slurm cluster with --launcher slurm (docs/cluster.md)."""
    cfg = config(writes=not dry_run)
    req = TrainRequest(preset=preset, gpus=gpus, micro_batch=micro_batch, recompute=recompute, precision=precision,
                       steps=steps, total_batch=total_batch, name=name, out=out, data=data,
                       runtime=runtime or cfg.runtime, binary=binary, fresh=fresh, no_tune=no_tune,
                       tune_first=not no_tune, passthrough=tuple(passthrough or ()), force_memory=force_memory)
    if launcher != "local":
        other = LAUNCHERS.get(launcher)
        if other is None:
            raise ConfigError(f"--launcher {launcher!r} is not one of {', '.join(['local', *LAUNCHERS])}",
                              f"pass --launcher {' or '.join(LAUNCHERS) or 'local'} or leave it out")
        if "image" in other.options:
            launcher_options["image"] = image
        elif image:
            raise ConfigError(f"--image with --launcher {launcher}: that launcher takes no image", "leave --image out")
        return other.run(cfg, dataclasses.replace(req, tune_first=False), inventory=inventory, mpirun=mpirun,
                         dry_run=dry_run, show_plan=show_plan, launcher=launcher, **launcher_options)
    pull = image or cfg.pull_image
    if pull and req.runtime == "docker":
        use_pulled(cfg, pull, dry_run, lambda s: console.print(s, highlight=False, markup=False, soft_wrap=True))
    elif image:
        raise ConfigError("--image is a docker image: with --runtime native it does nothing",
                          "leave --image out, or use --runtime docker")
    plan, facts, replan = plan_for(cfg, req, inventory, mpirun, data=_planned_data(cfg, req) if dry_run else None)
    if inventory is not None and not dry_run:
        raise ConfigError(f"--inventory {inventory} describes another machine: it plans, it cannot train here",
                          "add --dry-run to see the plan for that machine; on the machine itself, run without "
                          "--inventory (its own GPUs are used)")
    show_plan(plan)
    if dry_run:
        console.print("command:", style="bold")
        sys.stdout.write(plan.launch.command_line() + "\n")
        sys.stdout.flush()
        return
    # one writer per run folder, taken before tuning first: a second trainer is refused before it measures
    with writer_lock(plan.decisions.out_dir, "kitctl " + shlex.join(sys.argv[1:])):
        tuned = None
        if plan.decisions.tune_first is not None:
            tuned = tune_first(cfg, plan, console, inventory, mpirun)
            plan, facts, replan = plan_for(cfg, dataclasses.replace(req, tune_first=False), inventory, mpirun)
            b = plan.decisions.batch
            console.print(f"planned from the measurement: micro-batch B {b.micro_batch} -r {b.recompute} "
                          f"({b.choice})", highlight=False)
        run_training(plan, facts, console, replan, tuned=str(tuned.path) if tuned else None)


_OWN = inspect.signature(train)


def _signature() -> inspect.Signature:
    """`train`'s own options, then every registered launcher's (what Typer reads to build the command)."""
    own = [p for p in _OWN.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    summary = " or ".join([LOCAL, *(f"{n} ({lc.summary})" for n, lc in LAUNCHERS.items())])
    own = [p.replace(default=typer.Option("local", "--launcher", help=summary)) if p.name == "launcher" else p
           for p in own]
    names = {p.name for p in own}    # an option train has itself (--image) is handed to the launcher by train
    extra = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann)
             for lc in LAUNCHERS.values() for k, (ann, opt) in lc.options.items() if k not in names]
    return _OWN.replace(parameters=[*own, *extra])


def add_launcher(launcher: Launcher) -> None:
    """Register a launcher: `kitctl train --launcher NAME` with its options."""
    LAUNCHERS[launcher.name] = launcher
    train.__signature__ = _signature()   # type: ignore[attr-defined]


train.__signature__ = _signature()   # type: ignore[attr-defined]
app.command(context_settings={"help_option_names": ["--help"]})(train)


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
    steps: int = typer.Option(20, "--steps", callback=checked(validate.llmc_int), help="optimizer steps per config"),
    warmup: int = typer.Option(5, "--warmup", callback=checked(validate.llmc_int, lo=0), help="first steps left out of the timing"),
    min_b: int = typer.Option(8, "--min-b", callback=checked(validate.llmc_int), help="smallest B tried (smaller ones only if nothing bigger fits)"),
    full: bool = typer.Option(False, "--full", help="every allowed B >= --min-b x recompute 0/1/2, even those "
                                                    "the memory model rules out (a reference sweep)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the configs and the first command; run nothing"),
) -> None:
    """Measure tokens/s of micro-batch x recompute on these GPUs and cache the fastest for `kitctl train`."""
    if inventory is not None and not dry_run:
        raise ConfigError(f"--inventory {inventory} describes another machine: tune measures this one's GPUs",
                          "add --dry-run to list the configs for that machine; on the machine itself, run without "
                          "--inventory")
    cfg = config(writes=not dry_run)
    req = TrainRequest(preset=preset, gpus=gpus, precision=precision, data=data, runtime=runtime or cfg.runtime,
                       binary=binary)
    run_tune(cfg, req, console, inventory, mpirun, steps, warmup, min_b, full, dry_run)
