"""Observe commands: ``kitctl tensorboard``, ``kitctl status``, ``kitctl report``.

Thin: options in, the library (runs, tbsync, tensorboard, status, report) does the work, lines out.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from kitctl.core import validate
from kitctl.core.context import config, console
from kitctl.observe.report import NothingToPlot, check_out, write_report
from kitctl.observe.runs import latest_run, list_runs, resolve_run, resolve_runs
from kitctl.observe.status import collect, render
from kitctl.observe.tensorboard import DEFAULT_HOST, check_interval, check_port, run_tensorboard

app = typer.Typer()   # commands of this area; kitctl/cli.py builds one when it is asked for (COMMANDS lists them)


@app.command()
def tensorboard(
    ctx: typer.Context,
    runs: Optional[List[str]] = typer.Argument(None, help="run names under <data_root>/runs or run folders; default all"),
    port: int = typer.Option(6006, "--port", "-p", help="TensorBoard's port (1-65535)"),
    host: str = typer.Option(DEFAULT_HOST, "--host", help="address to listen on (default 127.0.0.1: this machine "
                                                          "only; 0.0.0.0: every interface)"),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="keep converting new log lines"),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="serve TensorBoard (--no-serve only converts)"),
    interval: float = typer.Option(5.0, "--interval", help="seconds between looks at the logs when following (> 0)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say which runs would be converted (to <run>/tb/) and "
                                 "where TensorBoard would listen; write and serve nothing"),
) -> None:
    """llm.c's main.log (+ stdout.log) -> TensorBoard event files in <run>/tb/, then serve TensorBoard, live."""
    check_port(port)                  # bad options before reading kit.yaml or any run
    check_interval(interval)
    if not serve:
        validate.refuse_unused(ctx, {"port": "--port", "host": "--host"}, "with --no-serve: no server listens",
                               "leave out {flags}, or leave out --no-serve to serve TensorBoard")
    if not follow:
        validate.refuse_unused(ctx, {"interval": "--interval"}, "with --no-follow: the logs are converted once",
                               "leave out {flags}, or leave out --no-follow to keep converting")
    runs_dir = config(writes=not dry_run).runs_dir
    run_dirs = resolve_runs(runs or [], runs_dir, allow_empty=follow, command="tensorboard")
    if dry_run:
        for d in run_dirs:
            _say(f"would convert {d} -> {d / 'tb'}")
        if not run_dirs:
            _say(f"no runs under {runs_dir} yet" + ("; it would wait for one to appear" if follow else ""))
        if serve:
            _say(f"would serve TensorBoard on http://{host}:{port}" + (f", following new log lines every "
                                                                       f"{interval:g} s" if follow else ""))
        return
    if not run_dirs:
        console.print(f"no runs under {runs_dir} yet; waiting for one to appear", highlight=False, markup=False)
    run_tensorboard(run_dirs, None if runs else runs_dir, port=port, host=host, follow=follow, serve=serve,
                    interval=interval, say=lambda m: console.print(m, highlight=False, markup=False))


def _say(line: str) -> None:
    console.print(line, highlight=False, markup=False, soft_wrap=True)


DIVERGED_EXIT = 3      # `kitctl status`: the loss is NaN/inf (documented in docs/observe.md and reliability.md)


@app.command()
def status(
    run: Optional[str] = typer.Argument(None, help="run name or folder; default the most recently active run"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (state, steps, ETA, diverged) instead"),
) -> None:
    """One screen about a run: step/total, tok/s, ETA, losses, HellaSwag, GPUs, whether it is alive. No runs yet is
    said and exits 0, as `kitctl report` with nothing to plot (a state, not a failure).

    Exit status: 0, or 3 when the loss has been NaN/inf since some step (the run diverged)."""
    runs_dir = config().runs_dir
    if not run and not list_runs(runs_dir):
        _say(f"nothing to show yet: no runs under {runs_dir} (start one with `kitctl train`, or name a run folder: "
             "`kitctl status path/to/run`)")
        return
    run_dir = resolve_run(run, runs_dir) if run else latest_run(runs_dir)
    st = collect(run_dir)
    if as_json:
        sys.stdout.write(json.dumps(st.as_json(), indent=1) + "\n")
        sys.stdout.flush()
    else:
        console.print(render(st))
    if st.diverged is not None:
        raise typer.Exit(DIVERGED_EXIT)


@app.command()
def report(
    runs: Optional[List[str]] = typer.Argument(None, help="run names or folders; default all runs"),
    out: Path = typer.Option(Path("report.png"), "--out", "-o", help="report.png or report.html"),
    label: Optional[List[str]] = typer.Option(None, "--label", "-l", help="legend name of each run, in order"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say which runs would be plotted into --out; write "
                                 "nothing"),
) -> None:
    """Loss and HellaSwag curves of one or more runs vs the GPT-2 124M / GPT-3 124M references.

    A run is a name under <data_root>/runs, a run folder, or a main.log file (any file name). Nothing to plot yet
    (no runs, or none has logged a loss) is said, nothing is written, and the exit code is 0; bad input (a run
    that does not exist, an --out that cannot be written, --label count) is exit 2."""
    runs_dir = config().runs_dir
    run_paths = resolve_runs(runs or [], runs_dir, files=True, allow_empty=True)
    if not run_paths:
        _say(f"nothing to plot yet: no runs under {runs_dir}; no report written (start one with `kitctl train`, "
             "or name a run folder, e.g. `kitctl report path/to/log124M`)")
        return
    if dry_run:
        check_out(out)
        _say(f"would plot {', '.join(str(p) for p in run_paths)} (those with a loss logged) into {out}")
        return
    try:
        plotted, skipped = write_report(run_paths, out, label)
    except NothingToPlot as e:
        _say(f"{e.message}; no report written ({e.hint})")
        return
    for p in skipped:
        console.print(f"skipped {p.name}: no loss logged yet", highlight=False, markup=False)
    console.print(f"wrote {out} ({', '.join(r.name for r in plotted)})", highlight=False, markup=False)
