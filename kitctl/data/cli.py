"""`kitctl data`: datasets -> llm.c shards on the data root. Thin: parse, plan, run, render.

Shape: ``data`` is a command group whose default command is ``make``, so both
``kitctl data [DATASET] [options]`` and ``kitctl data verify DIR`` work (and ``kitctl data make ...``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from kitctl.core.context import config, console
from kitctl.core import validate
from kitctl.core.validate import checked
from kitctl.core.errors import KitError

app = typer.Typer()   # commands of this area; kitctl/cli.py merges them into the kitctl app


class _DefaultMake(TyperGroup):
    """Anything that is not a subcommand (a dataset name, a path, an option) goes to `make`."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["make", *args]
        return super().parse_args(ctx, args)


data_app = typer.Typer(cls=_DefaultMake, no_args_is_help=False, add_completion=False,
                       help="Datasets -> llm.c token shards. `kitctl data [DATASET] [options]` is `kitctl data "
                            "make` (options: `kitctl data make --help`); `kitctl data verify DIR` re-checks a "
                            "folder; `kitctl data recipes` lists datasets. Docs: docs/data.md.")
app.add_typer(data_app, name="data")


@data_app.command("make")
def make(
    dataset: Optional[str] = typer.Argument(None, help="recipe (default fineweb10B; see `kitctl data recipes`) "
                                            "or local files: a .parquet/.jsonl/.txt file, a folder or a glob"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", callback=checked(validate.writable_folder), help="output folder (default <data_root>/<recipe>)"),
    name: Optional[str] = typer.Option(None, "--name", callback=checked(validate.run_name), help="file prefix (default as llm.c: fineweb, edu_fineweb, ...)"),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", help="tokens per shard (default 100,000,000)"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", callback=checked(validate.workers), help="tokenizer processes (default: all cores; 0: tokenize in this process)"),
    stream: bool = typer.Option(False, "--stream", help="read HF parquet over HTTP; no HF cache on disk"),
    source: Optional[Path] = typer.Option(None, "--source", help="local input for a recipe (tinyshakespeare "
                                          "input.txt, hellaswag_val.jsonl, downloaded parquet files, a shard folder)"),
    tokenizer_dir: Optional[Path] = typer.Option(None, "--tokenizer-dir", callback=checked(validate.readable_folder), help="folder with GPT-2 vocab.bpe + "
                                                 "encoder.json (offline); default tokenizer_dir from kit.yaml"),
    shards: Optional[int] = typer.Option(None, "--shards", callback=checked(validate.positive_int), help="pre-tokenized recipe: first N train shards only"),
    runtime: Optional[str] = typer.Option(None, "--runtime", callback=checked(validate.choice, choices=("docker", "native")), help="docker (the kit's data image) | native"),
    force: bool = typer.Option(False, "--force", help="hellaswag: replace an existing eval file that differs"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (and the docker command) and stop"),
) -> None:
    """Tokenize a dataset into llm.c shards (resumable; re-run the same command to continue)."""
    from kitctl.data.plan import docker_spec, execute, make_plan

    cfg = config()
    rt = runtime or cfg.runtime
    if rt not in ("docker", "native"):
        raise KitError(f"--runtime {rt}: use docker or native", exit_code=2)
    plan = make_plan(cfg, dataset, out, name, shard_size, workers, stream, str(source) if source else None,
                     tokenizer_dir, shards, force=force)
    validate.writable_folder(plan.out_dir, "the output folder")   # a read-only data root: refused before any work
    if dry_run:
        for line in plan.describe():
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        if rt == "docker":
            from kitctl.host.runtimes import docker_run_argv, shell_line

            console.print("docker:      " + shell_line(docker_run_argv(docker_spec(plan, cfg))),
                          highlight=False, markup=False, soft_wrap=True)
        return
    if rt == "docker":
        from kitctl.host.runtimes import DockerRuntime

        plan.out_dir.mkdir(parents=True, exist_ok=True)
        plan.hf_home.mkdir(parents=True, exist_ok=True)
        rc = DockerRuntime().run(docker_spec(plan, cfg), on_line=lambda l: console.print(l, highlight=False, markup=False))
        if rc:
            raise KitError(f"kitctl data in the data image exited with {rc}", exit_code=130 if rc == 130 else 1)
        return
    if plan.kind != "tokenize":
        execute(plan, log=lambda s: console.print(s, highlight=False, markup=False))
        return
    try:
        with _Bar(plan) as bar:
            summary = execute(plan, progress=bar.update, log=bar.log)
    except KeyboardInterrupt:   # typer would turn this into a silent exit 130
        raise KitError(f"interrupted: {plan.out_dir} keeps every finished shard (no partial files)",
                       "re-run the same command to continue where it stopped", exit_code=130) from None
    if summary.already_complete:
        console.print(f"{plan.out_dir} is already complete: {summary.total_tokens:,} tokens in "
                      f"{summary.total_shards} shards (`kitctl data verify {plan.out_dir}` re-checks them)",
                      highlight=False)
        return
    resumed = f", resumed at shard {summary.resumed_from}" if summary.resumed_from else ""
    console.print(f"done: {summary.tokens:,} tokens, {summary.shards} shards, {summary.seconds:.1f} s, "
                  f"{summary.tok_per_s:,.0f} tok/s{resumed} -> {plan.out_dir} "
                  f"({summary.total_tokens:,} tokens in {summary.total_shards} shards)", highlight=False)


class _Bar:
    """One rich progress bar: shard number, tokens, tok/s, ETA (from the estimated token count)."""

    def __init__(self, plan):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("shard {task.fields[shard]}"), BarColumn(),
                                 TextColumn("{task.completed:,.0f} tok"), TextColumn("{task.fields[rate]} tok/s"),
                                 TimeRemainingColumn(), console=console, transient=False)
        self.total = plan.est_tokens
        self.t0 = time.perf_counter()
        self.done = 0

    def __enter__(self):
        self.task = None      # started on the first tokens (an already complete folder shows no bar)
        return self

    def update(self, n: int, shard: int) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("tokenize", total=self.total, shard=shard, rate="-")
            self.last_line, self.last_shard = time.perf_counter(), shard
        self.done += n
        now = time.perf_counter()
        dt = now - self.t0
        rate = self.done / dt if dt > 0 else 0.0
        self.progress.update(self.task, advance=n, shard=shard, rate=f"{rate:,.0f}" if dt > 0 else "-")
        # no terminal (docker logs, CI, a pipe): the bar cannot redraw, so print a line now and then
        if not self.progress.console.is_terminal and (shard != self.last_shard or now - self.last_line >= 30):
            eta = ""
            if self.total and rate > 0 and self.total > self.done:
                s = int((self.total - self.done) / rate)
                eta = f", ETA {s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
            self.log(f"shard {shard}: {self.done:,} tokens, {rate:,.0f} tok/s{eta}")
            self.last_line, self.last_shard = now, shard

    def log(self, s: str) -> None:
        self.progress.console.print(s, highlight=False, markup=False)

    def __exit__(self, *exc):
        if self.task is not None:
            self.progress.stop()
        return False


@data_app.command("verify")
def verify(dir: Path = typer.Argument(..., help="a folder written by `kitctl data` (has manifest.json)")) -> None:
    """Re-check a data folder: headers, token counts and sha256 of every shard against manifest.json."""
    from kitctl.data.manifest import verify as verify_dir

    m, problems = verify_dir(dir)
    if problems:
        for p in problems:
            console.print(f"[red]bad[/]: {p}", highlight=False)
        raise KitError(f"{dir}: {len(problems)} problem(s) found",
                       "re-run the same `kitctl data` command: it re-checks every shard and rewrites from the first "
                       "bad or missing one on")
    console.print(f"ok: {dir}: {len(m.shards)} shards ({len(m.val_files)} val, {len(m.train_files)} train), "
                  f"{m.total_tokens:,} tokens, headers and sha256 match manifest.json", highlight=False)


@data_app.command("recipes")
def recipes() -> None:
    """List the dataset recipes (datasets/*.yaml)."""
    from kitctl.data.sources import load_recipe, recipe_names

    for n in recipe_names():
        r = load_recipe(n)
        console.print(f"{n:26s} {r.description}", highlight=False, markup=False, soft_wrap=True)
