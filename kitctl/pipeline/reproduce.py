"""``kitctl reproduce``: preflight -> build -> data -> hellaswag -> tune -> train -> report, resumable.

The plan first (:func:`make_forecast`: pure planner on what each area reports; nothing is written or
downloaded), then the stages in order. The run folder ``<data_root>/runs/<name>`` (the training run's own folder)
holds ``reproduce.json`` (kitctl.core.pipeline_state: every stage's status, measured vs forecast time, progress;
written atomically after every change) and ``logs/<stage>.log``. Re-running the same command continues with the
first stage not done: a stage interrupted by Ctrl-C, SIGTERM, a crash or a reboot runs again and picks up its own
progress (data keeps finished shards, training resumes from its newest checkpoint); finished stages are skipped.
Different options for the same run folder are refused (exit 2) with what differs.
"""
from __future__ import annotations

import os
import shlex
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from rich.console import Console
from rich.markup import escape

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.records import error_text, short
from kitctl.core.pipeline_state import FILENAME, FINISHED, STAGES, PipelineState, StageState, now_iso, process_alive
from kitctl.core.proc import TerminationAsInterrupt
from kitctl.pipeline import forecast as fc
from kitctl.pipeline import sources
from kitctl.pipeline import stages as st
from kitctl.pipeline.inputs import Gathered, ReproduceOptions, check_offline, decisions, gather
from kitctl.train import writer_lock

SAVE_EVERY_S = 2.0        # progress writes of reproduce.json at most this often
TRAIN_POLL_S = 5.0        # how often the train stage's progress is read from main.log


def make_forecast(cfg, opts: ReproduceOptions, plan_only: bool = False) -> tuple[Gathered, fc.Forecast]:
    """The whole plan, read-only: what each stage will need (disk, download, time). ``plan_only``: a dry run,
    which plans on a machine without GPUs too (the train stage then says how to plan it)."""
    g = gather(cfg, opts, plan_only)
    f = fc.plan_stages(g.inputs)
    f.notes = [*g.notes, *f.notes]
    f.decisions = decisions(g)
    sources.attach(cfg, opts, g, f)
    check_offline(opts, f)
    return g, f


def data_done_bytes(g: Gathered) -> int:
    """Shard bytes already on disk (a resumed data stage needs that much less)."""
    d = g.data_plan.out_dir
    return sum(p.stat().st_size for p in d.glob(f"{g.data_plan.name}_*.bin")) if d.is_dir() else 0


class _StateFile:
    """reproduce.json and the lock around writing it (the train progress thread writes too)."""

    def __init__(self, path: Path, state: PipelineState):
        self.path, self.state = path, state
        self.lock = threading.Lock()
        self.last = 0.0

    def save(self, force: bool = True) -> None:
        with self.lock:
            if not force and time.monotonic() - self.last < SAVE_EVERY_S:
                return
            self.state.updated = now_iso()
            self.state.write(self.path)
            self.last = time.monotonic()


def open_state(run_dir: Path, opts: ReproduceOptions, argv: list[str]) -> _StateFile:
    """Read (or start) reproduce.json; refuse another live session or different options."""
    path = run_dir / FILENAME
    old = PipelineState.read_optional(path)
    if old is not None:
        running = [s.name for s in old.stages if s.status == "running"]
        if running and process_alive(old.pid, old.host):
            raise KitError(f"another kitctl reproduce (pid {old.pid}) is running {run_dir} (stage {running[0]})",
                           "wait for it, or stop it (Ctrl-C in its terminal, or kill -INT "
                           f"{old.pid}); `kitctl status {run_dir}` shows where it is")
        new = opts.key()
        diffs = [f"{k}: this run was started with {old.key.get(k)!r}, now {v!r}" for k, v in new.items()
                 if old.key.get(k) != v]
        if diffs:
            raise ConfigError(f"{run_dir} is a kitctl reproduce run started with other options:\n  " + "\n  ".join(diffs),
                              "re-run it with the same options (see `command` in reproduce.json), or pick another "
                              f"--name for a new run, or delete {path} to re-plan this folder (data and "
                              "checkpoints are kept; training resumes only if its settings match)")
        for s in old.stages:
            if s.status == "running":      # a crash or a reboot: that session ended without saying so
                s.status, s.detail = "interrupted", s.detail or "the last session ended without finishing it"
        state = old
    else:
        state = PipelineState(preset=opts.preset, run_dir=str(run_dir), key=opts.key())
    state.command, state.pid, state.host = list(argv), os.getpid(), socket.gethostname()
    run_dir.mkdir(parents=True, exist_ok=True)
    sf = _StateFile(path, state)
    sf.save()
    return sf


class _Poller:
    """A thread calling ``fn`` every ``period`` seconds until stopped (the train stage's progress)."""

    def __init__(self, fn: Callable[[], None], period: float):
        self.fn, self.period = fn, period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.period):
            try:
                self.fn()
            except Exception:      # a progress read must never break the run
                pass

    def __enter__(self) -> _Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def _finish(s: StageState, status: str, detail: str) -> None:
    s.status, s.detail, s.ended = status, detail, now_iso()  # type: ignore[assignment]
    if status in FINISHED:
        s.progress = 1.0 if status == "done" else s.progress


def run_pipeline(cfg, opts: ReproduceOptions, console: Console, argv: list[str],
                 g: Gathered, f: fc.Forecast) -> PipelineState:
    """Run every stage not done yet, in order; returns the final record. Raises KitError on a failure or an
    interrupt (exit 130) after recording it."""
    # one writer per run folder: the session holds its lock; the train stage takes it again (re-entrant)
    with writer_lock(g.run_dir, shlex.join(argv) or "kitctl reproduce"):
        return _run_pipeline(cfg, opts, console, argv, g, f)


def _run_pipeline(cfg, opts: ReproduceOptions, console: Console, argv: list[str],
                  g: Gathered, f: fc.Forecast) -> PipelineState:
    sf = open_state(g.run_dir, opts, argv)
    state = sf.state
    prefetch = st.Prefetch(g.data_plan)
    with TerminationAsInterrupt():
        for name in STAGES:
            s = state.stage(name)
            if s.status in FINISHED:
                console.print(f"[bold]{name}[/]: {s.status} earlier ({escape(s.detail)})", highlight=False)
                continue
            if name in ("tune", "train"):   # plan on the real shards now (and, for train, the new tune cache)
                g, f = make_forecast(cfg, opts)
            if name == "build" and f.overlap[0] and state.stage("data").status not in FINISHED:
                prefetch.start(lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True))
            _run_stage(cfg, opts, console, g, f, sf, s, prefetch)
    return state


def _run_stage(cfg, opts: ReproduceOptions, console: Console, g: Gathered, f: fc.Forecast, sf: _StateFile,
               s: StageState, prefetch: Optional[st.Prefetch] = None) -> None:
    planned = f.stage(s.name)
    s.status, s.sessions, s.started = "running", s.sessions + 1, s.started or now_iso()  # type: ignore[assignment]
    s.ended, s.log = None, f"logs/{s.name}.log"
    if s.forecast_seconds is None and planned.status not in ("skipped", "done"):
        s.forecast_seconds, s.forecast_low, s.forecast_high = planned.seconds, planned.low, planned.high
        s.forecast_basis = planned.detail
    sf.save()
    console.print(f"\n[bold]== {s.name}[/] ({STAGES.index(s.name) + 1}/{len(STAGES)})", highlight=False)
    log = st.StageLog(g.run_dir / s.log, console)
    log.line(f"# {now_iso()} session {s.sessions}: {' '.join(sf.state.command)}")

    def progress(frac: Optional[float], text: str) -> None:
        s.progress, s.progress_text = frac, text
        sf.save(force=False)

    ctx = st.StageContext(cfg, opts, g, f, console, log, progress)
    t0 = time.monotonic()
    try:
        if s.name == "train":
            def poll() -> None:
                assert g.train_plan is not None     # a run plans on GPUs (gather refuses without)
                progress(*st.train_progress(g.run_dir, g.train_plan.decisions.schedule.steps))
            with _Poller(poll, TRAIN_POLL_S):
                res = st.train(ctx)
        elif s.name == "preflight":
            res = st.preflight(ctx, data_done_bytes(g))
        elif s.name == "data" and prefetch is not None:
            prefetch.wait(log.say)
            res = st.data(ctx)
        else:
            res = getattr(st, s.name)(ctx)
    except KeyboardInterrupt:
        _finish(s, "interrupted", "stopped by Ctrl-C / SIGTERM")
        log.line(f"# {now_iso()} interrupted")
        raise KitError(f"interrupted during {s.name}: nothing was left half-written",
                       "re-run the same command: it continues with this stage", exit_code=130) from None
    except KitError as e:
        _finish(s, "interrupted" if e.exit_code == 130 else "failed", short(e.message.splitlines()[0]))
        log.line(f"# {now_iso()} {s.status}: {e.message}")
        if e.exit_code == 130:
            raise
        where = f"the {s.name} stage's log: {log.path}"
        if where not in (e.hint or ""):
            e.hint = f"{e.hint}; {where}" if e.hint else where
        raise
    except BaseException as e:
        _finish(s, "failed", error_text(e))
        log.line(f"# {now_iso()} failed: {type(e).__name__}: {e}")
        raise
    finally:
        s.seconds += time.monotonic() - t0
        log.close()
        sf.save()
    _finish(s, res.status, res.detail)
    if s.name == "train":
        s.progress_text = res.detail
    sf.save()
    console.print(f"[bold]{s.name}[/]: {res.status} ({escape(res.detail)})", highlight=False)
