"""`kitctl data`: datasets -> llm.c shards on the data root. Thin: parse, plan, run, render.

Shape: ``data`` is a command group whose default command is ``make``, so both
``kitctl data [DATASET] [options]`` and ``kitctl data verify DIR`` work (and ``kitctl data make ...``).
"""
from __future__ import annotations

import contextlib
import os
import shlex
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from typer.core import TyperGroup

from kitctl.core import validate
from kitctl.core.context import config, console
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.data_folder import DataFolder
from kitctl.core.progress import Bar, format_duration, progress_bar
from kitctl.core.validate import checked
from kitctl.data import encoders
from kitctl.core.data_manifest import MANIFEST, DataManifest
from kitctl.data.container import (PATH_MAP_ENV, adopt_image, choose_runtime, docker_spec, image_difference,
                                   pull_image, to_host)
from kitctl.data.execute import execute
from kitctl.data.plan import DataPlan, make_plan
from kitctl.data.recipes import load_recipe, recipe_names
from kitctl.data.tokenize import Summary
from kitctl.host import registry
from kitctl.host.runtimes import DockerRuntime, data_image_ref, docker_run_argv, shell_line


app = typer.Typer()   # commands of this area; kitctl/cli.py builds one when it is asked for (COMMANDS lists them)


class _DefaultMake(TyperGroup):
    """Anything that is not a subcommand (a dataset name, a path, an option) goes to `make`."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["make", *args]
        return super().parse_args(ctx, args)


data_app = typer.Typer(cls=_DefaultMake, no_args_is_help=False, add_completion=False,
                       help="Datasets -> llm.c token shards. `kitctl data \\[DATASET] \\[options]` is `kitctl data "
                            "make` (options: `kitctl data make --help`); `kitctl data verify DIR` re-checks a "
                            "folder; `kitctl data recipes` lists datasets. Docs: docs/data.md.")
app.add_typer(data_app, name="data")


def _say(line: str) -> None:
    console.print(to_host(line), highlight=False, markup=False, soft_wrap=True)


def _pull_if_asked(cfg, image: Optional[str], runtime: Optional[str], dry_run: bool) -> None:
    """--image / kit.yaml pull_image: pull the data image (docker only; a dry run pulls nothing)."""
    if image is not None:
        validate.docker_ref(image, "--image")
    pull = image or cfg.pull_image
    if pull and (runtime or cfg.runtime) == "docker" and not dry_run:
        pull_image(cfg, pull, _say)
    elif image and (runtime or cfg.runtime) != "docker":
        raise ConfigError("--image is the data image: with --runtime native it does nothing",
                          "leave --image out, or use --runtime docker")


def _fresh_aside(plan) -> Optional[Path]:
    """--fresh: where the existing output folder moves (None: nothing there); only a folder kitctl data made."""
    aside = _aside(plan.out_dir) if _has_files(plan.out_dir) else None
    if aside and not DataFolder(plan.out_dir).manifest_path.is_file():     # only a folder kitctl data made is moved
        raise ConfigError(f"--fresh moves a `kitctl data` folder aside; {plan.out_dir} has no {MANIFEST}, so it "
                          "is not one (or its manifest was deleted)", "pick another --out folder, or move that one "
                          "aside yourself")
    return aside


@data_app.command("make")
def make(
    dataset: Optional[str] = typer.Argument(None, help="recipe (default fineweb10B; see `kitctl data recipes`) "
                                            "or local files: a .parquet/.jsonl/.txt file, a folder or a glob"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", callback=checked(validate.writable_folder),
                                       help="output folder (default <data_root>/<recipe>)"),
    name: Optional[str] = typer.Option(None, "--name", callback=checked(validate.run_name),
                                       help="file prefix (default as llm.c: fineweb, edu_fineweb, ...)"),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", help="tokens per shard (default 100,000,000)"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", callback=checked(validate.workers),
                                          help="tokenizer processes (default: all cores with tiktoken; 0 with "
                                          "gigatoken, on threads; 0: tokenize in this process; at most 4 x cores)"),
    stream: bool = typer.Option(False, "--stream", help="read HF parquet over HTTP; no HF cache on disk"),
    source: Optional[str] = typer.Option(None, "--source", help="local input for a recipe (tinyshakespeare "
                                         "input.txt, hellaswag_val.jsonl, downloaded parquet files, a shard folder; "
                                         "hellaswag: also the jsonl's URL on a mirror)"),
    tokenizer_dir: Optional[Path] = typer.Option(None, "--tokenizer-dir", callback=checked(validate.readable_folder),
                                                 help="folder with GPT-2 vocab.bpe + "
                                                 "encoder.json (offline); default tokenizer_dir from kit.yaml"),
    shards: Optional[int] = typer.Option(None, "--shards", callback=checked(validate.int_range, lo=1, hi=validate.MAX_SHARDS, why="llm.c names shards with six digits"),
                                         help="pre-tokenized recipe: first N train shards only"),
    encoder: Optional[str] = typer.Option(None, "--encoder", callback=checked(validate.choice, choices=encoders.NAMES),
                                          help="BPE implementation: tiktoken (the reference) | gigatoken (~18x "
                                          "faster per core, byte-identical; the default when installed, checked "
                                          "against tiktoken on every run's first documents)"),
    runtime: Optional[str] = typer.Option(None, "--runtime", callback=checked(validate.choice, choices=("docker", "native")),
                                          help="docker (the kit's data image; the default "
                                          "falls back to native when the image is missing) | native"),
    force: bool = typer.Option(False, "--force", help="hellaswag: replace an existing eval file that differs"),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="an offline bundle (`kitctl bundle`): its dataset "
                                          "(or, for hellaswag, its jsonl), tokenizer and data image; no network"),
    image: Optional[str] = typer.Option(None, "--image", help="docker: REGISTRY/REPO pushed by `kitctl build "
                                        "--push`: pull REPO:data instead of building (kit.yaml: pull_image)"),
    fresh: bool = typer.Option(False, "--fresh", help="start over: an existing output folder is moved aside to "
                               "<folder>.old-<time> (nothing is deleted)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (and the docker command) and stop"),
) -> None:
    """Tokenize a dataset into llm.c shards (resumable; re-run the same command to continue)."""
    cfg = config(writes=not dry_run)
    if bundle is not None:
        got = _from_bundle(cfg, bundle, dataset, source, tokenizer_dir, runtime, dry_run)
        if got is None:               # a dry run of a bundle not unpacked yet: verified, nothing written
            return
        dataset, source, tokenizer_dir = got
    _pull_if_asked(cfg, image, runtime, dry_run)
    rt, note = choose_runtime(cfg, runtime, dry_run=dry_run)
    plan = make_plan(cfg, dataset, out, name, shard_size, workers, stream, source,
                     tokenizer_dir, shards, force=force, encoder=encoder)
    if fresh and plan.kind == "hellaswag":
        raise ConfigError("--fresh starts a shard folder over; the HellaSwag eval file is one file",
                          "use --force to replace an eval file that differs")
    validate.writable_folder(plan.out_dir, "the output folder")   # a read-only data root: refused before any work
    if note:
        _say(note)
    aside = _fresh_aside(plan) if fresh else None
    if dry_run:
        _say_plan(plan, cfg, rt, aside)
        return
    if plan.shard_note:
        _say(f"shard size {plan.shard_size:,} tokens: {plan.shard_note}")
    if aside:
        plan.out_dir.rename(aside)
        _say(f"--fresh: moved {plan.out_dir} aside to {aside} (delete it when you no longer need it)")
    if rt == "docker":
        plan.out_dir.mkdir(parents=True, exist_ok=True)
        plan.hf_home.mkdir(parents=True, exist_ok=True)
        spec = docker_spec(plan, cfg)
        rc = DockerRuntime().run(spec, on_line=lambda line: _say(to_host(line, spec.env[PATH_MAP_ENV])))
        if rc:
            raise KitError(f"kitctl data in the data image exited with {rc}", exit_code=130 if rc == 130 else 1)
        return
    if plan.kind != "tokenize":
        execute(plan, log=_say)
        return
    try:
        with _Progress(plan) as bar:
            summary = execute(plan, progress=bar.update, log=bar.log)
        assert isinstance(summary, Summary)          # a tokenize plan gives a Summary
    except KeyboardInterrupt:   # typer would turn this into a silent exit 130
        raise KitError(f"interrupted: {plan.out_dir} keeps every finished shard (no partial files)",
                       "re-run the same command to continue where it stopped", exit_code=130) from None
    if summary.already_complete:
        _say(f"{plan.out_dir} is already complete: {summary.total_tokens:,} tokens in {summary.total_shards} "
             f"shards (`kitctl data verify {shlex.quote(str(plan.out_dir))}` re-checks them)")
        return
    resumed = f", resumed at shard {summary.resumed_from}" if summary.resumed_from else ""
    _say(f"done: {summary.tokens:,} tokens, {summary.shards} shards, {format_duration(summary.seconds)}, "
         f"{summary.tok_per_s:,.0f} tok/s{resumed} -> {plan.out_dir} "
         f"({summary.total_tokens:,} tokens in {summary.total_shards} shards)")


def _say_plan(plan, cfg, rt: str, aside: Optional[Path]) -> None:
    """``--dry-run``: the plan, the --fresh move and the exact docker command."""
    for line in plan.describe():
        _say(line)
    if aside:
        _say(f"--fresh:      {plan.out_dir} would move to {aside}")
    if rt == "docker":
        _say("docker:      " + shell_line(docker_run_argv(docker_spec(plan, cfg))))


def _from_bundle(cfg, bundle: Path, dataset: Optional[str], source: Optional[str], tokenizer_dir: Optional[Path],
                 runtime: Optional[str], dry_run: bool) -> Optional[tuple[Optional[str], Optional[str], Optional[Path]]]:
    """DATASET, --source and --tokenizer-dir from the bundle (refusing a flag for what it holds); its data image
    loaded when the docker runtime needs it."""
    from kitctl.core.bundle import use_bundle     # ~20 ms of imports: only a run with --bundle pays them

    ub = use_bundle(bundle.absolute(), cfg.data_root, console, dry_run=dry_run)
    if ub.pending:
        _say(ub.pending_note())
        return None
    os.environ["HF_HUB_OFFLINE"] = "1"
    if source is not None:
        raise ConfigError("--source with --bundle: the input comes from the bundle", "leave --source or --bundle out")
    if dataset == "hellaswag":
        if ub.hellaswag is None:
            raise ConfigError(f"the bundle {bundle} holds no HellaSwag file", "pack one (`kitctl bundle "
                              "--hellaswag-source FILE`), or give it here without --bundle: --source FILE")
        source = str(ub.hellaswag)
    else:
        ds, ds_source = ub.dataset
        if ds is None:
            raise ConfigError(f"the bundle {bundle} holds no dataset (it was packed for "
                              f"{ub.contents.get('dataset')}, whose input was not packed)",
                              "pack it with `kitctl bundle --dataset ... --source FILES`, or give the files here "
                              "without --bundle (--source FILES)")
        packed = ub.contents.get("dataset")
        if dataset is not None and dataset != packed:
            raise ConfigError(f"DATASET {dataset} with --bundle: the bundle holds {packed}",
                              "leave DATASET out to tokenize the bundle's, or leave --bundle out")
        dataset, source = ds, str(ds_source) if ds_source is not None else None
    tok = tokenizer_dir or ub.tokenizer_dir
    packed_image = ub.image("data")
    if packed_image is not None and (runtime or cfg.runtime) == "docker" and not dry_run:
        ref = data_image_ref(cfg)
        if not registry.image_present(ref) or image_difference(cfg, ref):
            _say(f"$ docker load -i {packed_image[0]}")
            loaded = registry.load_expected(packed_image[0], packed_image[1].get("ref"), "the bundle's data image",
                                            _say)
            adopt_image(cfg, loaded, "loaded from the bundle", _say)
    return dataset, source, tok


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _aside(folder: Path) -> Path:
    """Where --fresh moves an output folder: a sibling <name>.old-<UTC time> (a free name)."""
    base = folder.with_name(f"{folder.name}.old-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    cand, n = base, 1
    while cand.exists():
        cand, n = base.with_name(f"{base.name}-{n}"), n + 1
    return cand


class _Progress:
    """The kit's progress bar (tokens, shard, tok/s, ETA from the estimate), started on the first tokens (an
    already complete folder shows none). Without a terminal (docker logs, CI, a pipe) the bar cannot redraw, so
    a line is printed per shard or every 30 s instead."""

    def __init__(self, plan: DataPlan):
        self.total = plan.est_tokens
        self.stack = contextlib.ExitStack()
        self.bar: Optional[Bar] = None
        self.t0 = time.perf_counter()
        self.done, self.last_line, self.last_shard = 0, 0.0, -1

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def update(self, n: int, shard: int) -> None:
        if self.bar is None:
            self.bar = self.stack.enter_context(progress_bar(
                "shard {task.fields[shard]} {task.fields[rate]} tok/s", self.total, console=console, shard=shard,
                rate="-"))
            self.t0, self.last_line, self.last_shard = time.perf_counter(), time.perf_counter(), shard
        self.done += n
        now = time.perf_counter()
        rate = self.done / (now - self.t0) if now > self.t0 else 0.0
        self.bar.update(completed=self.done, shard=shard, rate=f"{rate:,.0f}")
        if not console.is_terminal and (shard != self.last_shard or now - self.last_line >= 30):
            left = (self.total - self.done) / rate if self.total and rate > 0 and self.total > self.done else None
            self.log(f"shard {shard}: {self.done:,} tokens, {rate:,.0f} tok/s"
                     + (f", ETA {format_duration(left)}" if left is not None else ""))
            self.last_line, self.last_shard = now, shard

    def log(self, s: str) -> None:
        _say(s)


@data_app.command("verify")
def verify(dir: Path = typer.Argument(..., help="a folder written by `kitctl data` (has manifest.json)")) -> None:
    """Re-check a data folder: headers, token counts and sha256 of every shard against manifest.json."""
    m, problems = DataFolder(dir).verify(log=_say)
    if problems:
        for p in problems:
            console.print(f"[red]bad[/]: {escape(str(p))}", highlight=False)
        raise KitError(f"{dir}: {len(problems)} problem(s) found",
                       "re-run the same `kitctl data` command: it re-checks every shard and rewrites from the first "
                       "bad or missing one on")
    _say(f"ok: {dir}: {len(m.shards)} shards ({len(m.val_files)} val, {len(m.train_files)} train), "
         f"{m.total_tokens:,} tokens, headers and sha256 match manifest.json")
    _say(f"encoder: {encoder_line(m)}")


def encoder_line(m: DataManifest) -> str:
    """What tokenized a folder, from its manifest (older manifests did not record it: tiktoken then)."""
    e = m.run.encoder
    if m.run.pretokenized:
        return "none (ready shards, tokenized elsewhere)"
    if e is None:
        return "not recorded (a manifest older than kitctl's encoder choice: tiktoken)"
    return f"{e.name} {e.version}".rstrip() + (f" ({e.gate})" if e.gate else "")


@data_app.command("recipes")
def recipes() -> None:
    """List the dataset recipes (datasets/*.yaml)."""
    for n in recipe_names():
        _say(f"{n:26s} {load_recipe(n).description}")
