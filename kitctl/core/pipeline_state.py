"""The stage record of ``kitctl reproduce``: ``<run folder>/reproduce.json``, one typed, atomically written file.

It lives in core (not in kitctl/pipeline, which writes it) because ``kitctl status`` (kitctl/observe) reads it too
and observe may not import the pipeline layer above it. Writer: kitctl.pipeline.reproduce. Readers:
:func:`read_pipeline_state` and :func:`status_rows` (the rows ``kitctl status`` shows for a run folder that
``kitctl reproduce`` drives: which stage runs, its progress, forecast vs measured time).
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, Field

from kitctl.core.errors import KitError
from kitctl.core.progress import format_duration
from kitctl.core.records import Record

FILENAME = "reproduce.json"
STAGES = ("preflight", "build", "data", "hellaswag", "tune", "train", "report")
Status = Literal["pending", "running", "done", "skipped", "failed", "interrupted"]
FINISHED: tuple[str, ...] = ("done", "skipped")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class StageState(BaseModel):
    """One stage: what happened to it, across every session of the same command."""

    name: str
    status: Status = "pending"
    detail: str = ""                        # why skipped / what was made / the error, one line
    log: Optional[str] = None               # the stage's log file (relative to the run folder)
    started: Optional[str] = None           # first start (UTC ISO)
    ended: Optional[str] = None
    sessions: int = 0                       # how many times it was started
    seconds: float = 0.0                    # measured: sum of the time it ran, over every session
    forecast_seconds: Optional[float] = None   # the forecast when it first started (the whole stage)
    forecast_low: Optional[float] = None
    forecast_high: Optional[float] = None
    forecast_basis: str = ""
    progress: Optional[float] = Field(default=None, ge=0.0, le=1.0)   # 0..1 while it runs, when known
    progress_text: str = ""                 # e.g. "step 8200/19073" or "shard 12, 1.2B tokens"


class PipelineState(Record):
    """``reproduce.json``: the options the run was started with (what a re-run must match) and every stage."""

    SCHEMA = 1
    KIND = "kitctl reproduce stage record"
    preset: str
    run_dir: str
    command: list[str] = Field(default_factory=list)
    key: dict[str, Any] = Field(default_factory=dict)      # options that must be the same when the command is re-run
    stages: list[StageState] = Field(default_factory=lambda: [StageState(name=n) for n in STAGES])
    pid: Optional[int] = None                    # the kitctl process of the current / last session
    host: str = ""
    created: str = Field(default_factory=now_iso)
    updated: str = Field(default_factory=now_iso)

    def stage(self, name: str) -> StageState:
        for s in self.stages:
            if s.name == name:
                return s
        st = StageState(name=name)
        self.stages.append(st)
        return st

    def current(self) -> Optional[StageState]:
        """The first stage not done or skipped (None: the pipeline is complete)."""
        return next((s for s in self.stages if s.status not in FINISHED), None)

    @property
    def complete(self) -> bool:
        return self.current() is None


def read_pipeline_state(run_dir: Path) -> Optional[PipelineState]:
    """The record of ``run_dir`` (None when there is none: not a ``kitctl reproduce`` run)."""
    path = Path(run_dir) / FILENAME
    if not path.is_file():
        return None
    return PipelineState.read(path, hint=f"delete {path}: the next `kitctl reproduce` re-plans (data and "
                                          "checkpoints are kept and reused)")


def process_alive(pid: Optional[int], host: str) -> Optional[bool]:
    """Is the recorded kitctl process still running? None when it cannot be told (another host, no /proc)."""
    if pid is None or host != socket.gethostname():
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return None
    return b"kitctl" in cmdline and pid != os.getpid()


def _stage_line(s: StageState) -> str:
    out: str = s.status
    if s.progress is not None and s.status == "running":
        out += f" {100 * s.progress:.0f}%"
    if s.progress_text and s.status in ("running", "interrupted", "failed"):
        out += f" ({s.progress_text})"
    return out


def status_rows(run_dir: Path) -> list[tuple[str, str]]:
    """(label, value) rows about the pipeline driving ``run_dir``; [] when no ``kitctl reproduce`` drives it.

    ``kitctl status`` shows them: the stage now (n of 7, its progress, whether the kitctl process lives), each
    stage's state in one line, and the forecast vs measured time of the stages that ran."""
    try:
        st = read_pipeline_state(run_dir)
    except KitError as e:
        return [("reproduce", f"{run_dir / FILENAME} is unreadable: {e.message}")]
    if st is None:
        return []
    cur = st.current()
    if cur is None:
        head = "complete: every stage done or skipped"
    else:
        n = [s.name for s in st.stages].index(cur.name) + 1
        alive = process_alive(st.pid, st.host)
        who = {True: f"kitctl pid {st.pid} running", False: "no kitctl running: re-run the same command to continue",
               None: "process unknown"}[alive] if cur.status == "running" else "re-run the same command to continue"
        head = f"stage {n}/{len(st.stages)} {cur.name}: {_stage_line(cur)}; {who}"
    rows = [("reproduce", head), ("stages", ", ".join(f"{s.name} {_stage_line(s)}" for s in st.stages))]
    timed = [s for s in st.stages if s.forecast_seconds and (s.seconds or s.status == "running")]
    if timed:
        rows.append(("stage time", "; ".join(
            f"{s.name} {format_duration(s.seconds)} of forecast {format_duration(s.forecast_seconds)}"
            for s in timed)))
    return rows
