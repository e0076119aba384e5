"""kitctl's click command built once per process, as a real `kitctl` run builds it.

``app(...)`` (kitctl.cli.main) asks typer for the click command, and typer builds it from the Typer app on every
call: ~45 ms of CPU, most of an in-process CLI test (tests/hostile's cases measured ~55 ms each). A process
that runs many commands (a pytest worker; kitctl_proc's forkserver, whose forks inherit it) builds it once
here. Click commands are made to be invoked many times; a Typer app whose commands or groups change is built
again. Nothing about what a command does changes: the same argv goes through the same cli.main.
"""
from __future__ import annotations

import weakref
from typing import Any

_BUILT: weakref.WeakKeyDictionary[Any, tuple[tuple[int, int, int], Any]] = weakref.WeakKeyDictionary()


def _shape(app: Any) -> tuple[int, int, int]:
    return (len(app.registered_commands), len(app.registered_groups), id(app.registered_callback))


def install() -> None:
    """Make typer.main.get_command (which Typer.__call__ looks up at each call) remember what it built, per app."""
    import typer.main

    real = typer.main.get_command
    if getattr(real, "_kit_once", False):
        return

    def get_command(app: Any) -> Any:
        shape = _shape(app)
        hit = _BUILT.get(app)
        if hit is None or hit[0] != shape:
            hit = _BUILT[app] = (shape, real(app))
        return hit[1]

    get_command._kit_once = True      # type: ignore[attr-defined]
    get_command.__wrapped__ = real    # type: ignore[attr-defined]
    typer.main.get_command = get_command


def build_kitctl() -> None:
    """install(), then build kitctl's command now (kitctl_proc's server: before it forks the commands)."""
    import typer.main

    from kitctl.cli import app

    install()
    typer.main.get_command(app)
