"""kitctl: the Typer app. Thin: parse options, call the library, render errors. No logic here.

Commands are grouped by area in ``kitctl/<area>/cli.py`` (images, data, train, observe, cluster, model,
pipeline), each with its own small ``typer.Typer``; this module owns the app, merges theirs in, holds the global
options (kitctl/core/context.py keeps their state) and renders errors.
"""
from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path
from typing import Optional, Union

import click
import typer
from rich.markup import escape
from typer.exceptions import TyperException

from kitctl import __version__
from kitctl.cluster import cli as cluster_cli
from kitctl.core import validate
from kitctl.core.config import template_text, user_config_path, write_template
from kitctl.core.context import console, err_console, state
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.records import short
from kitctl.data import cli as data_cli
from kitctl.host import doctor
from kitctl.host.gpus import query as query_gpus
from kitctl.data import container as data_container
from kitctl.images import build as images_build
from kitctl.images import cli as images_cli
from kitctl.model import cli as model_cli
from kitctl.model.record import eval_summary
from kitctl.observe import cli as observe_cli
from kitctl.observe import report
from kitctl.pipeline import cli as pipeline_cli
from kitctl.pipeline import reference, sources
from kitctl.pipeline.inputs import planned_data
from kitctl.train import cli as train_cli

app = typer.Typer(
    name="kitctl",
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


def _register() -> None:
    """Merge each area's commands into the one app, in the order `kitctl --help` lists them."""
    for area in (images_cli, data_cli, train_cli, observe_cli, cluster_cli, model_cli, pipeline_cli):
        app.registered_commands.extend(area.app.registered_commands)
        app.registered_groups.extend(area.app.registered_groups)
    # The hooks a lower area offers and a higher one fills, from above both (no area imports this module).
    # `kitctl report` shows `kitctl eval`'s results; observe and model are sibling layers
    report.add_run_column("evals (kitctl eval)", eval_summary)
    # doctor (host) judges disks against the reference plan's figures, which the pipeline's planner computes
    doctor.use_disk_model(reference.disk_need)
    # ... and probes the hosts the reproduce plan downloads from (after mirrors), which the pipeline knows
    doctor.use_endpoints(sources.endpoints)
    # `kitctl train --dry-run` before the data exists plans on the preset's dataset size (the pipeline's planner)
    train_cli.use_planned_data(planned_data)
    # `kitctl data` uses the data image only when it is this kit's recipe: the hash is the images area's to say
    data_container.use_data_recipe_hash(images_build.data_recipe_hash)


_register()


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
