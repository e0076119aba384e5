"""kitctl: the Typer app. Thin: parse options, call the library, render errors. No logic here.

Commands are grouped by area in ``kitctl/<area>/cli.py`` (images, data, train, observe, cluster, model,
pipeline), each with its own small ``typer.Typer``. This module owns the app, holds the global options
(kitctl/core/context.py keeps their state), renders errors, and loads an area's commands only when one of them is
asked for: ``kitctl data ...`` imports the data area, not train, cluster or the pipeline. `kitctl --help` lists
every command from :data:`COMMANDS` without importing any of them (docs/architecture.md, "How commands load").
"""
from __future__ import annotations

import contextlib
import copy
import errno
import os
import shutil
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Union

import click
import typer
import typer.main
from rich.markup import escape
from typer import _click     # the pinned typer's bundled click: its groups and commands are built from it
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import TyperException

from kitctl import __version__
from kitctl.core import validate
from kitctl.core.config import template_text, user_config_path, write_template
from kitctl.core.context import console, err_console, state
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.records import short

if TYPE_CHECKING:
    from kitctl.core.config import KitConfig


# ------------------------------------------------------------------------------------------------------------
# Each area's commands, imported when asked for. A loader imports its area's cli module, fills the hooks that
# area offers (explicitly, here: a lower area never imports a higher one) and returns the area's Typer app.
# A hook filled with a function of a higher, heavier area gets a small function that imports it when called.

def _images() -> typer.Typer:
    from kitctl.host import doctor
    from kitctl.images import cli

    # doctor (host) judges disks against the reference plan's figures, which the pipeline's planner computes
    doctor.use_disk_model(_disk_need)
    # ... and probes the hosts the reproduce plan downloads from (after mirrors), which the pipeline knows
    doctor.use_endpoints(_endpoints)
    return cli.app


def _data() -> typer.Typer:
    with _one_blas_thread():
        from kitctl.data import cli

    _use_data_recipe_hash()
    return cli.app


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """numpy imported by `kitctl data` with one OpenBLAS thread: OpenBLAS starts a thread per core at import
    (~0.07 CPU-s of the data stage's start-up on 2 cores, measured), and the data stage does no BLAS math. Only
    when numpy is not imported yet and the user set nothing; the environment is restored after (children and
    other areas, e.g. the model area's numpy forward pass, are unaffected)."""
    var = "OPENBLAS_NUM_THREADS"
    mine = "numpy" not in sys.modules and var not in os.environ
    if mine:
        os.environ[var] = "1"
    try:
        yield
    finally:
        if mine:
            os.environ.pop(var, None)


def _train() -> typer.Typer:
    from kitctl.cluster import cli as cluster_cli
    from kitctl.train import cli

    # `kitctl train --dry-run` before the data exists plans on the preset's dataset size (the pipeline's planner)
    cli.use_planned_data(_planned_data)
    # `kitctl train --launcher slurm` and its options: the cluster area's launcher (train never imports cluster)
    cli.add_launcher(cluster_cli.SLURM)
    return cli.app


def _observe() -> typer.Typer:
    from kitctl.observe import cli

    _use_eval_column()
    return cli.app


def _cluster() -> typer.Typer:
    from kitctl.cluster import cli

    return cli.app


def _model() -> typer.Typer:
    from kitctl.model import cli

    return cli.app


def _pipeline() -> typer.Typer:
    from kitctl.pipeline import cli

    _use_data_recipe_hash()     # reproduce and demo make data
    _use_eval_column()          # ... and write the report
    return cli.app


def _use_data_recipe_hash() -> None:
    from kitctl.data import container

    # `kitctl data` uses the data image only when it is this kit's recipe: the hash is the images area's to say
    container.use_data_recipe_hash(_data_recipe_hash)


def _use_eval_column() -> None:
    from kitctl.model.record import eval_summary
    from kitctl.observe import report

    # `kitctl report` shows `kitctl eval`'s results; observe and model are sibling layers
    report.add_run_column("evals (kitctl eval)", eval_summary)


def _disk_need(cfg: KitConfig) -> Any:
    from kitctl.pipeline.reference import disk_need

    return disk_need(cfg)


def _endpoints(cfg: KitConfig) -> Any:
    from kitctl.pipeline.sources import endpoints

    return endpoints(cfg)


def _planned_data(cfg: KitConfig, preset: str) -> Any:
    from kitctl.pipeline.inputs import planned_data

    return planned_data(cfg, preset)


def _data_recipe_hash(cfg: KitConfig) -> Optional[str]:
    from kitctl.images.build import data_recipe_hash

    return data_recipe_hash(cfg)


class Entry(NamedTuple):
    load: Callable[[], typer.Typer]
    help: str                          # the command's line in `kitctl --help` (its help's first paragraph)


# Every command but `init` (below), in the order `kitctl --help` lists them. tests/test_cli_startup.py checks
# that each help line is the command's own and that every command here resolves.
COMMANDS: dict[str, Entry] = {
    "build": Entry(_images, "Build the images (or, with --runtime native, llm.c's binaries on this host)."),
    "lock": Entry(_images, "Lock what the images are built from: each base image's digest and every apt package's "
                           "version, in docker/images.lock (other stages already in it are kept). Builds then use "
                           "it."),
    "render": Entry(_images, "Write the Dockerfile and its build context, for plain `docker buildx build`."),
    "doctor": Entry(_images, "Check Docker and its storage, the NVIDIA runtime, GPUs, driver, disks and shared "
                             "memory, and the hosts the plan downloads from; say what the box is ready for (data, "
                             "build, train, multi-node with Slurm) and what each finding means."),
    "smoke": Entry(_images, "Run the image smoke checks: SASS per arch (cuobjdump), mpirun -np 2, NCCL allreduce on "
                            "GPUs."),
    "train": Entry(_train, "Train GPT-2 with llm.c's train_gpt2cu on this machine's GPUs (mpirun; docker or "
                           "native), resumable; or on a Slurm cluster with --launcher slurm (docs/cluster.md)."),
    "tune": Entry(_train, "Measure tokens/s of micro-batch x recompute on these GPUs and cache the fastest for "
                          "`kitctl train`."),
    "tensorboard": Entry(_observe, "llm.c's main.log (+ stdout.log) -> TensorBoard event files in <run>/tb/, then "
                                   "serve TensorBoard, live."),
    "status": Entry(_observe, "One screen about a run: step/total, tok/s, ETA, losses, HellaSwag, GPUs, whether it "
                              "is alive. No runs yet is said and exits 0, as `kitctl report` with nothing to plot (a "
                              "state, not a failure)."),
    "report": Entry(_observe, "Loss and HellaSwag curves of one or more runs vs the GPT-2 124M / GPT-3 124M "
                              "references."),
    "export": Entry(_cluster, "Turn the kit's image into what a cluster loads: enroot .sqsh, Apptainer .sif or a "
                              "docker save tar."),
    "export-model": Entry(_model, "llm.c checkpoint -> HuggingFace transformers folder (model.safetensors, "
                                  "config.json, tokenizer), no PyTorch."),
    "sample": Entry(_model, "Generate text from a run's model (exported on first use to <run>/hf/model_NNNNNNNN)."),
    "eval": Entry(_model, "Score a run's model with lm-evaluation-harness (extra: pip install "
                          "'llmc-kit\\[eval]'); saved in run.json."),
    "demo": Entry(_pipeline, "Run the kit end to end on embedded inputs, as far as this machine allows; say what "
                             "was skipped."),
    "bundle": Entry(_pipeline, "Pack one file with what a box without network needs: the kit itself (a wheelhouse) "
                               "and the inputs of `kitctl reproduce --bundle FILE`."),
    "reproduce": Entry(_pipeline, "Reproduce GPT-2 end to end: preflight, build, data, HellaSwag, tune, train (-h "
                                  "1), report. Resumable: re-run the same command after Ctrl-C, a crash or a reboot. "
                                  "The plan (disk, download, time) comes first."),
    "data": Entry(_data, "Datasets -> llm.c token shards. `kitctl data \\[DATASET] \\[options]` is `kitctl data "
                         "make` (options: `kitctl data make --help`); `kitctl data verify DIR` re-checks a folder; "
                         "`kitctl data recipes` lists datasets. Docs: docs/data.md."),
}


class _Commands(MutableMapping[str, _click.Command]):
    """The root group's commands: those defined here, then every name in :data:`COMMANDS`, each built from its
    area's app the first time it is looked up (``kitctl train ...`` looks up ``train``; click's ``get_command``,
    Typer's "did you mean" and tests read this mapping as they would a dict)."""

    def __init__(self, own: MutableMapping[str, _click.Command]) -> None:
        self._loaded = dict(own)

    def __getitem__(self, name: str) -> _click.Command:
        if name not in self._loaded:
            entry = COMMANDS[name]                          # KeyError: not a command (click says "No such command")
            self._loaded[name] = typer.main.get_group(entry.load()).commands[name]
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._order())

    def __len__(self) -> int:
        return len(self._loaded.keys() | COMMANDS.keys())

    def __setitem__(self, name: str, command: _click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def listing(self) -> dict[str, _click.Command]:
        """Each command as `kitctl --help` lists it: one already built as it is, the others by their line in
        :data:`COMMANDS` (nothing is imported)."""
        out = {}
        for name in self._order():
            out[name] = self._loaded.get(name) or TyperCommand(name, help=COMMANDS[name].help)
        return out

    def _order(self) -> list[str]:
        return [*(n for n in self._loaded if n not in COMMANDS), *COMMANDS]


class _Kitctl(TyperGroup):
    """The root group, with its commands in :class:`_Commands`."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands(self.commands)

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return list(self.commands)

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        listing = copy.copy(self)               # `kitctl --help`: the same group, its commands as listed
        assert isinstance(self.commands, _Commands)
        listing.commands = self.commands.listing()
        TyperGroup.format_help(listing, ctx, formatter)


app = typer.Typer(
    name="kitctl",
    cls=_Kitctl,
    help="llmc-kit: reproduce GPT-2 (124M) with karpathy/llm.c, from a bare GPU box to a cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        console.print(f"kitctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    config_file: Optional[Path] = typer.Option(None, "--config", "-c", help="kit.yaml to use (default: $KIT_CONFIG, else kit.yaml here or in a parent folder, else "
                                                 "~/.config/llmc-kit/kit.yaml)"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    state.reset(config_file)


@app.command()
def init(
    path: Optional[Path] = typer.Argument(None, help="where to write the config (default ./kit.yaml)"),
    data_root: Optional[str] = typer.Option(None, help="the big disk for datasets, HF cache and runs "
                                                       "(relative: relative to the config file's folder; default "
                                                       "./data)"),
    user: bool = typer.Option(False, "--user", help="write the user's kit.yaml ($XDG_CONFIG_HOME/llmc-kit/kit.yaml, "
                                                    "default ~/.config/llmc-kit/kit.yaml), used from any folder "
                                                    "that has no kit.yaml of its own"),
    force: bool = typer.Option(False, help="overwrite an existing file"),
    stdout: bool = typer.Option(False, "--stdout", help="print the template instead of writing it"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would be written where; write nothing"),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="docker | native (default: docker where a docker "
                                          "CLI is on PATH, else native where nvcc is; said why)"),
    arch: Optional[str] = typer.Option(None, "--arch", help="auto | 75,86 (compute capabilities; default: auto "
                                       "where nvidia-smi lists GPUs here, else [75, 86]; said why)"),
) -> None:
    """Write a commented kit.yaml (found like git's config: --config, KIT_CONFIG, this folder or a parent, the
    user's). The checkout's .gitignore lists /kit.yaml: your settings stay out of commits."""
    if user and path is not None:
        raise ConfigError(f"--user writes {user_config_path()}; a PATH ({path}) as well says two places",
                          "drop PATH, or drop --user")
    if user and stdout:
        raise ConfigError("--user names where to write; --stdout writes nowhere", "drop one of them")
    if user and data_root is None:
        raise ConfigError("--user needs --data-root: the user's kit.yaml serves every folder, so its data root "
                          "must be an absolute path on your big disk", "e.g. kitctl init --user --data-root /mnt/big/llmc")
    if user and not os.path.isabs(os.path.expanduser(data_root or "")):
        raise ConfigError(f"--data-root {data_root}: the user's kit.yaml needs an absolute data root (a relative one "
                          f"would land beside {user_config_path()})", "e.g. --data-root /mnt/big/llmc")
    if stdout and (path is not None or force):
        given = " and ".join(x for x, v in ((str(path), path), ("--force", force)) if v)
        raise ConfigError(f"--stdout prints the template and writes no file: {given} does nothing with it",
                          f"leave out --stdout to write {path or 'kit.yaml'}, or leave out {given} to print")
    root = data_root if data_root is not None else "./data"
    from kitctl.host.gpus import query as query_gpus

    rt, ar, why = propose_setup(runtime, arch, docker=shutil.which("docker") is not None,
                                nvcc=shutil.which("nvcc") is not None or Path("/usr/local/cuda/bin/nvcc").is_file(),
                                gpus=query_gpus() if arch is None else [])
    if stdout:
        sys.stdout.write(template_text(root, ar, rt))
        return
    target = user_config_path() if user else (path or Path("kit.yaml"))
    if dry_run:
        template_text(root, ar, rt)
        if target.exists() and not force:
            raise ConfigError(f"{target} already exists", "pass --force to overwrite it, or edit it")
        console.print(f"would {'overwrite' if target.exists() else 'write'} {target.absolute()} (data_root {root}, "
                      f"runtime {rt}, arch {ar}); `--stdout` prints its text", highlight=False, markup=False,
                      soft_wrap=True)
    else:
        write_template(target, root, force, ar, rt)
        console.print(f"wrote {target} (data_root {root}, runtime {rt}, arch {ar}); edit data_root if it is not your "
                      "big disk, then `kitctl doctor`", highlight=False, markup=False, soft_wrap=True)
    for line in why:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def propose_setup(runtime: Optional[str], arch: Optional[str], docker: bool, nvcc: bool, gpus: list
                  ) -> tuple[str, Union[str, list[int]], list[str]]:
    """kit.yaml's runtime and arch for ``kitctl init`` (pure): the given ones, checked, else what this box has,
    each with the reason said."""
    why = []
    if runtime is None:
        if docker or not nvcc:
            runtime = "docker"
            why.append("runtime docker: " + ("a docker CLI is on PATH (the kit's images)" if docker else
                                             "no docker CLI and no nvcc here: docker is the default (install Docker "
                                             "Engine, or a CUDA toolkit and `kitctl init --runtime native`)"))
        else:
            runtime = "native"
            why.append("runtime native: no docker CLI on PATH, and nvcc is here (llm.c builds with this host's CUDA "
                       "toolkit and MPI)")
    elif runtime not in ("docker", "native"):
        raise ConfigError(f"--runtime {runtime!r}: allowed are docker, native",
                          "docker: the kit's images; native: this host's CUDA toolkit and MPI")
    ar: Union[str, list[int]]
    if arch is None:
        if gpus:
            ar = "auto"
            caps = sorted({f"sm_{g.compute_cap}" for g in gpus})
            why.append(f"arch auto: nvidia-smi lists {len(gpus)} GPU(s) here ({', '.join(caps)}): builds are for "
                       "this box's GPUs")
        else:
            ar = [75, 86]
            why.append("arch [75, 86] (2080 Ti + 3090): no GPU seen here; set arch (or --arch) for the box that "
                       "trains")
    elif arch.strip() == "auto":
        ar = "auto"
    else:
        ar = validate.arch_list(arch, "--arch")
    return runtime, ar, why


def render_error(e: KitError) -> None:

    err_console.print(f"[bold red]error:[/] {escape(e.message)}", markup=True, highlight=False)
    if e.hint:
        err_console.print(f"[yellow]hint:[/] {escape(e.hint)}", highlight=False)


def main(argv: Optional[list[str]] = None) -> None:
    """The ``kitctl`` entry point: run the app, turn every failure into one message and an exit code.

    2: bad input (usage, option values, kit.yaml, user paths); 1: a step failed; 130: interrupted."""
    try:
        rc = app(args=argv, prog_name="kitctl", standalone_mode=False)
        if isinstance(rc, int) and rc:  # typer returns typer.Exit(code)'s code in non-standalone mode
            if rc == 130:               # typer turns Ctrl-C inside a command into Exit(130)
                _say_interrupted()
            sys.exit(rc)
    except KitError as e:
        render_error(e)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):  # click turns Ctrl-C inside a command into Abort
        _say_interrupted()
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (TyperException, click.exceptions.ClickException) as e:
        # the pinned typer raises its own bundled click's exceptions (typer._click, subclasses of
        # TyperException), not the `click` package's: catch both
        sys.exit(render_usage_error(e))
    except Exception as e:
        if os.environ.get("KITCTL_DEBUG"):
            raise
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            err = disk_full(e)            # a state of the machine, not a bug: no check can see it coming
        else:                              # the two nets below are what tests/hostile proves unreachable
            err = (_os_error(e) if isinstance(e, OSError) else None) or _unexpected(e)
        render_error(err)
        sys.exit(err.exit_code)


def _say_interrupted() -> None:
    err_console.print("[yellow]interrupted[/]: nothing was left half-written; re-run the same command to resume")


def render_usage_error(e: Exception) -> int:
    """A usage error (unknown option or command, missing argument, a value of the wrong type) as the usage
    line, ``error: ...`` and a hint naming the --help to read. Returns the exit code (2)."""

    ctx = getattr(e, "ctx", None)
    command = getattr(ctx, "command_path", None) or "kitctl"
    if type(e).__name__ == "NoArgsIsHelpError":   # bare `kitctl` / a group without its subcommand: help shown
        text = e.format_message().strip() if hasattr(e, "format_message") else ""
        if text:
            err_console.print(text, markup=False, highlight=False)
        message = "no command given"
    else:
        if ctx is not None:
            err_console.print(ctx.get_usage(), markup=False, highlight=False)
        message = e.format_message() if hasattr(e, "format_message") else str(e)
    err_console.print(f"[bold red]error:[/] {escape(short(message, 600))}", highlight=False)
    lists = "commands" if ctx is None or hasattr(ctx.command, "commands") else "options"   # a group or a command
    err_console.print(f"[yellow]hint:[/] {escape(f'`{command} --help` lists the {lists}')}", highlight=False)
    code = getattr(e, "exit_code", 2)
    return code if isinstance(code, int) and code else 2


# errno of a user path that cannot be used as given -> what it means for that path
_PATH_ERRNOS = {
    errno.EACCES: ("permission denied", "check who owns it (ls -ld {p}) or pick a path you can write to"),
    errno.EPERM: ("operation not permitted", "check who owns it (ls -ld {p}) or pick another path"),
    errno.EROFS: ("it is on a read-only file system", "pick a path on a writable disk (data_root in kit.yaml, --out)"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "fix the path: every folder in it must be a folder"),
    errno.EISDIR: ("it is a folder where a file was expected", "pass a file name, not a folder"),
    errno.ENOENT: ("it (or its folder) does not exist", "check the path; create its folder first if it is new"),
    errno.EEXIST: ("it already exists", "move it away or pick another path"),
    errno.ENAMETOOLONG: ("the name is too long", "pick a shorter path"),
    errno.ELOOP: ("it is a loop of symbolic links", "fix the link"),
}


def _os_error(e: OSError) -> Optional[KitError]:
    """An OSError that names a path: the path is the user's input, so one clear exit-2 message."""
    if e.filename is None or e.errno not in _PATH_ERRNOS:
        return None
    what, fix = _PATH_ERRNOS[e.errno]
    path = short(e.filename, 200)
    also = f" (-> {short(e.filename2, 200)})" if e.filename2 else ""
    return ConfigError(f"cannot use {path}{also}: {what}", fix.format(p=path))


def disk_full(e: OSError) -> KitError:
    """ENOSPC / EDQUOT anywhere: exit 1 (the atomic writer has already removed its temp file)."""
    what = "the disk is full" if e.errno == errno.ENOSPC else "the disk quota is used up"
    return KitError(f"{what}: {short(e)}",
                    "free space on the data root (or point data_root in kit.yaml at a bigger disk) and re-run "
                    "the same command: finished steps are kept and it continues where it stopped")


def _unexpected(e: Exception) -> KitError:
    """The last resort: an error no command turned into a KitError. Still one short message, never a bare
    traceback; tests/hostile checks that no bad input ends up here."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return disk_full(e)
    if isinstance(e, PermissionError):
        return KitError(f"permission denied: {short(e)}", "check who owns that path, or run as its owner")
    return KitError(f"internal error: {type(e).__name__}: {short(e)}",
                    "re-run with KITCTL_DEBUG=1 for the traceback, and report it with that output")


if __name__ == "__main__":  # pragma: no cover
    main()
