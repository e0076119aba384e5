"""``kitctl status``: one screen about one run: progress, speed, ETA, losses, HellaSwag, GPUs, alive or not.

Everything comes from the run folder: ``main.log`` and ``stdout.log`` (see ``kitctl.observe.logs``), ``run.json`` (written
by ``kitctl train``; read defensively, any field may be missing) and the checkpoint files. Whether the training
process is alive is decided, in order, by: the session in run.json (interrupted, or an exit status: finished /
failed; an end time: stopped); a ``pid`` recorded for this host; a container name (recorded, or the ``--name`` of
the recorded ``docker run`` line; asked of ``docker inspect``); a ``train_gpt2cu`` process on this host whose
``-o`` is this folder (from /proc; finds native runs and llm.c started by hand); the final step's ``DONE_`` file;
else "unknown", with how long ago the logs were last written.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from kitctl.core.errors import KitError
from kitctl.core.pipeline_state import status_rows
from kitctl.observe.logs import MAIN_LOG, STDOUT_LOG, RunLogs, last_logged, read_run
from kitctl.train.facts import DONE_RE

_CKPT = re.compile(r"model_(\d{8})\.bin$")


@dataclass
class Liveness:
    state: str          # running | finished | failed | stopped | unknown
    detail: str


@dataclass
class RunStatus:
    run_dir: Path
    logs: RunLogs
    meta: dict = field(default_factory=dict)
    steps_done: Optional[int] = None      # optimizer steps completed (llm.c's step + 1)
    total_steps: Optional[int] = None
    tokens_per_s: Optional[float] = None
    ms_per_step: Optional[float] = None
    eta_s: Optional[float] = None
    last_checkpoint: Optional[int] = None
    done_step: Optional[int] = None
    gpus: list[str] = field(default_factory=list)
    gpus_source: str = ""
    live: Liveness = field(default_factory=lambda: Liveness("unknown", ""))
    log_age_s: Optional[float] = None
    notes: list[str] = field(default_factory=list)


def read_meta(run_dir: Path) -> tuple[dict, Optional[str]]:
    p = run_dir / "run.json"
    if not p.exists():
        return {}, None
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        return {}, f"run.json is unreadable ({e}); showing what the logs say"
    return (meta, None) if isinstance(meta, dict) else ({}, "run.json is not a JSON object")


def _find(meta: Any, *keys: str) -> Any:
    """The first of ``keys`` found at the top level of meta or one level down (e.g. under "plan")."""
    if not isinstance(meta, dict):
        return None
    for k in keys:
        if meta.get(k) is not None:
            return meta[k]
    for v in meta.values():
        if isinstance(v, dict):
            for k in keys:
                if v.get(k) is not None:
                    return v[k]
    return None


def _argv_steps(meta: dict) -> Optional[int]:
    argv = _find(meta, "argv", "llmc_argv", "command")
    if isinstance(argv, str):
        argv = argv.split()
    if not isinstance(argv, list):
        return None
    argv = [str(a) for a in argv]
    for i, a in enumerate(argv[:-1]):
        if a == "-x":
            try:
                n = int(argv[i + 1])
            except ValueError:
                return None
            return n if n > 0 else None
    return None


def _pid_alive(pid: int) -> Optional[bool]:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True


def _container_running(name: str) -> Optional[bool]:
    if shutil.which("docker") is None:
        return None
    try:
        r = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return False if "No such" in (r.stderr + r.stdout) else None
    return r.stdout.strip() == "true"


def _ago(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def _argv_value(meta: dict, flag: str) -> Optional[str]:
    argv = _find(meta, "argv")
    if isinstance(argv, list):
        argv = [str(a) for a in argv]
        for i, a in enumerate(argv[:-1]):
            if a == flag:
                return argv[i + 1]
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
    return None


def find_llmc_process(run_dir: Path, proc: Path = Path("/proc")) -> Optional[int]:
    """A train_gpt2cu process on this host writing to run_dir (its ``-o``), or None. Linux /proc only.

    Finds native runs, including llm.c started by hand, that no run.json describes."""
    try:
        target = run_dir.resolve()
        entries = list(proc.iterdir())
    except OSError:
        return None
    for e in entries:
        if not e.name.isdigit():
            continue
        try:
            args = (e / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = Path(os.readlink(e / "cwd"))
        except OSError:
            continue
        if not any(Path(a).name.startswith("train_gpt2") for a in args[:3]):
            continue
        for i, a in enumerate(args[:-1]):
            if a == "-o":
                out = Path(args[i + 1])
                try:
                    if (cwd / out).resolve() == target:
                        return int(e.name)
                except OSError:
                    pass
    return None


def liveness(meta: dict, run_dir: Path, log_age_s: Optional[float], finished_by_files: bool,
             proc: Path = Path("/proc")) -> Liveness:
    age = f"; logs written {_ago(log_age_s)} ago" if log_age_s is not None else ""
    session = meta.get("session") if isinstance(meta.get("session"), dict) else {}
    if session.get("status") == "interrupted":
        nxt = session.get("next_resume_step")
        return Liveness("stopped", "interrupted; " + (f"re-run `kitctl train` to resume from step {nxt}"
                                                      if nxt is not None else "no checkpoint yet: the next run starts over"))
    code = _find(meta, "exit_status", "exit_code", "returncode", "status_code")
    if isinstance(code, int) and not isinstance(code, bool):
        return (Liveness("finished", "exited with status 0") if code == 0
                else Liveness("failed", f"exited with status {code}; see {run_dir / STDOUT_LOG}"))
    if _find(meta, "end", "ended", "end_time", "finished_at") is not None:
        return Liveness("stopped", "run.json records an end time")
    pid = _find(meta, "pid")
    host = _find(meta, "host", "hostname")
    if isinstance(pid, int) and not isinstance(pid, bool):
        if host and host != socket.gethostname():
            return Liveness("unknown", f"pid {pid} runs on host {host}, not this one{age}")
        alive = _pid_alive(pid)
        if alive:
            return Liveness("running", f"pid {pid} is alive{age}")
        if alive is False:
            return Liveness("finished" if finished_by_files else "stopped",
                            f"pid {pid} is gone{age}" + ("" if finished_by_files else
                                                         "; `kitctl train` resumes from the last checkpoint"))
    container = _find(meta, "container", "container_name")
    if isinstance(container, dict):       # a recorded ContainerSpec
        container = container.get("name")
    if not container and "docker" in [str(a) for a in (_find(meta, "argv") or [])[:2]]:
        container = _argv_value(meta, "--name")       # the docker run line kitctl train recorded
    if isinstance(container, str) and container:
        running = _container_running(container)
        if running:
            return Liveness("running", f"container {container} is running{age}")
        if running is False:
            return Liveness("finished" if finished_by_files else "stopped", f"container {container} is not running{age}")
    found = find_llmc_process(run_dir, proc)
    if found is not None:
        return Liveness("running", f"train_gpt2cu pid {found} writes here{age}")
    if finished_by_files:
        return Liveness("finished", f"the final step's DONE file is there{age}")
    return Liveness("unknown", f"no live train_gpt2cu found for this folder on this host{age}")


def collect(run_dir: Path, gpus_query=None) -> RunStatus:
    if not run_dir.is_dir():
        raise KitError(f"run folder {run_dir} does not exist", "list runs with `ls <data_root>/runs`", exit_code=2)
    logs = read_run(run_dir)
    meta, note = read_meta(run_dir)
    st = RunStatus(run_dir, logs, meta)
    if note:
        st.notes.append(note)
    if not logs.has_main_log and not logs.has_stdout:
        st.notes.append(f"no {MAIN_LOG} or {STDOUT_LOG} yet: training has not logged a step")
    elif logs.has_main_log and not logs.streams:
        st.notes.append(f"{MAIN_LOG} has no complete line yet")
    if logs.bad_lines:
        st.notes.append(f"{logs.bad_lines} line(s) of {MAIN_LOG} were not llm.c log lines and were skipped")
    ms = logs.streams.get("perf/ms_per_step") or {}
    st.steps_done = logs.steps_done
    st.total_steps = logs.total_steps or _argv_steps(meta) or _find(meta, "total_steps", "num_steps", "max_steps", "steps")
    tok = logs.streams.get("perf/tokens_per_sec") or {}
    if tok:
        st.tokens_per_s = tok[last_logged(tok)]
    if ms:
        recent = list(ms.values())[-20:]          # the 20 logged last
        st.ms_per_step = statistics.median(recent)
    # checkpoints
    ckpts, dones = [], []
    for p in run_dir.iterdir():
        if m := _CKPT.match(p.name):
            ckpts.append(int(m.group(1)))
        elif m := DONE_RE.match(p.name):
            dones.append(int(m.group(1)))
    st.last_checkpoint = max(ckpts, default=None)
    st.done_step = max(dones, default=None)
    finished_by_files = bool(st.total_steps and st.done_step is not None and st.done_step >= st.total_steps)
    mtimes = [(run_dir / f).stat().st_mtime for f in (MAIN_LOG, STDOUT_LOG) if (run_dir / f).exists()]
    st.log_age_s = time.time() - max(mtimes) if mtimes else None
    st.live = liveness(meta, run_dir, st.log_age_s, finished_by_files)
    if (st.live.state in ("running", "unknown") and st.ms_per_step and st.total_steps and st.steps_done is not None
            and st.steps_done < st.total_steps):
        st.eta_s = (st.total_steps - st.steps_done) * st.ms_per_step / 1000
    # GPUs: what the run recorded, else this machine's
    recorded = _find(meta, "gpus")
    if isinstance(recorded, list) and recorded:
        st.gpus = [(f"{g['index']}: " if "index" in g else "") + str(g.get("name", g)) if isinstance(g, dict) else str(g)
                   for g in recorded]
        st.gpus_source = "run.json"
    else:
        from kitctl.host import gpus as gpus_mod

        found = (gpus_query or gpus_mod.query)()
        st.gpus = [f"{g.index}: {g.name} (sm_{g.compute_cap}, {g.memory_gb:.0f} GB)" for g in found]
        st.gpus_source = "this machine" if found else "none found on this machine (nvidia-smi)"
    return st


def _fmt_duration(s: float) -> str:
    s = int(s)
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m = rem // 60
    return (f"{d}d " if d else "") + f"{h}h {m:02d}m"


def render(st: RunStatus):
    """A rich renderable: one panel."""
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    colour = {"running": "green", "finished": "cyan", "failed": "red", "stopped": "yellow"}.get(st.live.state, "white")
    t.add_row("process", f"[{colour}]{st.live.state}[/] ({st.live.detail})" if st.live.detail else st.live.state)
    for label, value in status_rows(st.run_dir):   # a `kitctl reproduce` run: its stage (kitctl/core/pipeline_state.py)
        t.add_row(label, escape(value))
    if st.steps_done is not None:
        prog = f"{st.steps_done} / {st.total_steps}" if st.total_steps else f"{st.steps_done} / ?"
        if st.total_steps:
            prog += f"  ({100 * st.steps_done / st.total_steps:.1f}%)"
        t.add_row("step", prog)
    else:
        t.add_row("step", "no step logged yet")
    if st.tokens_per_s is not None:
        t.add_row("speed", f"{st.tokens_per_s:,.0f} tok/s" + (f", {st.ms_per_step:.0f} ms/step" if st.ms_per_step else ""))
    if st.eta_s is not None:
        t.add_row("ETA", f"{_fmt_duration(st.eta_s)} (at {st.ms_per_step:.0f} ms/step)")
    lg = st.logs
    for label, tag, fmt in (("train loss", "loss/train", "{:.4f}"), ("val loss", "loss/val", "{:.4f}")):
        last = lg.last(tag)
        t.add_row(label, f"{fmt.format(last[1])} at step {last[0]}" if last else "-")
    hs = lg.streams.get("eval/hellaswag_acc") or {}
    if hs:
        s_last = last_logged(hs)
        best = max(hs, key=lambda s: hs[s])
        t.add_row("HellaSwag", f"{100 * hs[s_last]:.2f}% at step {s_last} (best {100 * hs[best]:.2f}% at {best}; "
                               "GPT-2 124M: 29.4%)")
    else:
        t.add_row("HellaSwag", "-")
    t.add_row("checkpoint", f"step {st.last_checkpoint}" if st.last_checkpoint is not None else "none yet")
    t.add_row("GPUs", ("\n".join(st.gpus) if st.gpus else "-") + (f"  [dim]({st.gpus_source})[/]" if st.gpus else f" ({st.gpus_source})"))
    for n in st.notes:
        t.add_row("note", f"[yellow]{n}[/]")
    return Panel(t, title=f"[bold]{st.run_dir.name}[/]", subtitle=str(st.run_dir), expand=False)
