"""kitctl: the Typer app. Thin: parse options, call the library, render errors. No logic here.

Commands are grouped by area in ``kitctl/<area>/cli.py`` (images, data, train, observe, cluster, pipeline), each
with its own small ``typer.Typer``; this module owns the app, merges theirs in, holds the global options
(kitctl/core/context.py keeps their state) and renders errors.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from kitctl import __version__
from kitctl.cluster import cli as cluster_cli
from kitctl.core.config import write_template
from kitctl.core.context import config, console, err_console, state
from kitctl.core.errors import KitError
from kitctl.data import cli as data_cli
from kitctl.images import cli as images_cli
from kitctl.observe import cli as observe_cli
from kitctl.pipeline import cli as pipeline_cli
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
    config_file: Optional[Path] = typer.Option(None, "--config", "-c", help="kit.yaml to use (default ./kit.yaml)"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    state.reset(config_file)


@app.command()
def init(
    path: Path = typer.Argument(Path("kit.yaml"), help="where to write the config"),
    data_root: str = typer.Option("./data", help="the big disk for datasets, HF cache and runs"),
    force: bool = typer.Option(False, help="overwrite an existing file"),
    stdout: bool = typer.Option(False, "--stdout", help="print the template instead of writing it"),
) -> None:
    """Write a commented kit.yaml."""
    from kitctl.core.config import TEMPLATE

    if stdout:
        sys.stdout.write(TEMPLATE.format(data_root=data_root))
        return
    write_template(path, data_root, force)
    console.print(f"wrote {path}: edit data_root (your big disk) and arch, then `kitctl doctor`")


def render_error(e: KitError) -> None:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(e.message)}", markup=True, highlight=False)
    if e.hint:
        err_console.print(f"[yellow]hint:[/] {escape(e.hint)}", highlight=False)


def _register() -> None:
    """Merge each area's commands into the one app, in the order `kitctl --help` lists them."""
    for area in (images_cli, data_cli, train_cli, observe_cli, cluster_cli, pipeline_cli):
        app.registered_commands.extend(area.app.registered_commands)
        app.registered_groups.extend(area.app.registered_groups)


_register()


def main() -> None:
    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:  # click returns typer.Exit(code)'s code in non-standalone mode
            sys.exit(rc)
    except KitError as e:
        render_error(e)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):  # click turns Ctrl-C inside a command into Abort
        err_console.print("[yellow]interrupted[/]: nothing was left half-written; re-run the same command to resume")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if os.environ.get("KITCTL_DEBUG"):
            raise
        render_error(_unexpected(e))
        sys.exit(1)


def _unexpected(e: Exception) -> KitError:
    """An error no command turned into a KitError: still one clear message, never a bare traceback."""
    import errno

    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return KitError(f"the disk is full: {e}",
                        "free space on the data root (or point data_root in kit.yaml at a bigger disk) and re-run "
                        "the same command: finished steps are kept and it continues where it stopped")
    if isinstance(e, PermissionError):
        return KitError(f"permission denied: {e}", "check who owns that path, or run as its owner")
    return KitError(f"internal error: {type(e).__name__}: {e}",
                    "re-run with KITCTL_DEBUG=1 for the traceback, and report it with that output")


if __name__ == "__main__":  # pragma: no cover
    main()
