"""Observe commands: ``kitctl tensorboard``, ``kitctl status``, ``kitctl report`` (logic in logs/tbserve/status/report)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from kitctl.core.context import config, console
from kitctl.core import validate
from kitctl.core.validate import checked

app = typer.Typer()   # commands of this area; kitctl/cli.py merges them into the kitctl app


@app.command()
def tensorboard(
    runs: Optional[List[str]] = typer.Argument(None, help="run names under <data_root>/runs or run folders; default all"),
    port: int = typer.Option(6006, "--port", "-p", callback=checked(validate.port), help="TensorBoard's port"),
    host: Optional[str] = typer.Option("127.0.0.1", "--host", callback=checked(validate.host_address), help="address to bind: 127.0.0.1 (default: this machine only) or 0.0.0.0 (every interface)"),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="keep converting new log lines"),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="serve TensorBoard (--no-serve only converts)"),
    interval: float = typer.Option(5.0, "--interval", callback=checked(validate.positive_float), help="seconds between looks at the logs when following"),
) -> None:
    """llm.c's main.log (+ stdout.log) -> TensorBoard event files in <run>/tb/, then serve TensorBoard, live."""
    from kitctl.observe.logs import resolve_runs
    from kitctl.observe.tensorboard import run_tensorboard

    runs_dir = config().runs_dir
    run_dirs = resolve_runs(runs or [], runs_dir, allow_empty=follow, command="tensorboard")
    if not run_dirs:
        console.print(f"no runs under {runs_dir} yet; waiting for one to appear")
    run_tensorboard(run_dirs, None if runs else runs_dir, port=port, host=host, follow=follow, serve=serve,
                    interval=interval, say=lambda m: console.print(m, highlight=False, markup=False))


@app.command()
def status(
    run: Optional[str] = typer.Argument(None, help="run name or folder; default the most recently active run"),
) -> None:
    """One screen about a run: step/total, tok/s, ETA, losses, HellaSwag, GPUs, whether it is alive."""
    from kitctl.observe.logs import latest_run, resolve_runs
    from kitctl.observe.status import collect, render

    runs_dir = config().runs_dir
    run_dir = resolve_runs([run], runs_dir, command="status")[0] if run else latest_run(runs_dir)
    console.print(render(collect(run_dir)))


@app.command()
def report(
    runs: Optional[List[str]] = typer.Argument(None, help="run names or folders; default all runs"),
    out: Path = typer.Option(Path("report.png"), "--out", "-o", callback=checked(validate.writable_file, suffixes=(".png", ".html")), help="report.png or report.html"),
    label: Optional[List[str]] = typer.Option(None, "--label", "-l", help="legend name of each run, in order"),
) -> None:
    """Loss and HellaSwag curves of one or more runs vs the GPT-2 124M / GPT-3 124M references.

    A run is a name under <data_root>/runs, a run folder, or a main.log file (any file name)."""
    from kitctl.observe.logs import resolve_runs
    from kitctl.observe.report import write_report

    run_paths = resolve_runs(runs or [], config().runs_dir, files=True)
    plotted, skipped = write_report(run_paths, out, label)
    for p in skipped:
        console.print(f"skipped {p.name}: no loss logged yet", highlight=False)
    console.print(f"wrote {out} ({', '.join(r.name for r in plotted)})", highlight=False)
