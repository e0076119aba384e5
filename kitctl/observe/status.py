"""``kitctl status``: one screen about one run: progress, speed, ETA, losses, HellaSwag, GPUs, alive or not.

Everything comes from the run folder: ``main.log`` and ``stdout.log`` (``kitctl.observe.logs``), ``run.json``
and the checkpoint files, both read through ``kitctl.core.run_folder.RunFolder`` (run.json as the writer's own
``RunRecord``; a damaged one becomes a note and the logs are still shown). Whether the training is alive: ``kitctl.observe.liveness``.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.pipeline_state import status_rows
from kitctl.core.progress import format_duration
from kitctl.host import gpus as gpus_mod
from kitctl.core import data_folder
from kitctl.core.llmc_files import MAIN_LOG, RUN_JSON, STDOUT_LOG
from kitctl.core.run_folder import Checkpoints, RunFolder, last_logged
from kitctl.core.run_record import RunRecord, gpu_label, total_steps
from kitctl.observe.liveness import Liveness, find_llmc_process, liveness
from kitctl.observe.logs import Divergence, RunLogs, read_run, value_word

__all__ = ["RunStatus", "collect", "render", "find_llmc_process", "read_meta"]



@dataclass
class RunStatus:
    run_dir: Path
    logs: RunLogs
    meta: Optional[RunRecord] = None
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
    diverged: Optional[Divergence] = None   # the loss has been NaN/inf since a step

    def as_json(self) -> dict[str, object]:
        """What scripts read (``kitctl status --json``): the state, progress and divergence as plain values."""
        d = self.diverged
        return {"run": str(self.run_dir), "state": self.live.state, "detail": self.live.detail,
                "steps_done": self.steps_done, "total_steps": self.total_steps, "tokens_per_s": _finite(self.tokens_per_s),
                "eta_s": _finite(self.eta_s), "last_checkpoint": self.last_checkpoint,
                "diverged": None if d is None else {"tag": d.tag, "since_step": d.step, "value": value_word(d.value),
                                                    "message": d.describe()},
                "notes": list(self.notes)}


def _finite(v: Optional[float]) -> Optional[float]:
    """A number for JSON (which has no NaN or inf): non-finite values are null."""
    return v if v is not None and math.isfinite(v) else None


def read_meta(run_dir: Path) -> tuple[Optional[RunRecord], Optional[str]]:
    """(run.json, None), (None, None) without one, or (None, a note) when it is damaged: status still shows
    what the logs say."""
    try:
        return RunFolder(run_dir).read(), None
    except ConfigError:       # a device, FIFO or socket in its place: refused (exit 2), not shown as a note
        raise
    except KitError as e:
        return None, f"run.json is unreadable: {e.message}; showing what the logs say ({e.hint})"


def _check_run_dir(run_dir: Path) -> list[str]:
    """The names in the run folder; exit 2 when it is missing, a file, or unreadable."""
    if not run_dir.exists():
        raise ConfigError(f"run folder {run_dir} does not exist", "list runs with `ls <data_root>/runs`")
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run folder",
                          "name the folder llm.c writes (-o), or a run under <data_root>/runs")
    try:
        return [p.name for p in run_dir.iterdir()]
    except OSError as e:
        raise ConfigError(f"cannot read the run folder {run_dir}: {e.strerror or e}",
                          f"check who owns it (ls -ld {run_dir}); run kitctl as that user") from None


def data_notes(meta: Optional[RunRecord]) -> list[str]:
    """The run's shard folder (run.json's data.dir) against its manifest (kitctl.core.data_folder): a note when
    they no longer agree, since `kitctl train` would refuse to resume on it. Status itself never fails on it."""
    folder = meta.data.dir if meta is not None and meta.data is not None else None
    if not folder or not Path(folder).is_dir():
        return []
    try:
        c = data_folder.DataFolder(Path(folder)).check()
    except KitError as e:
        return [f"the run's data folder {folder}: {e.message}"]
    if c.ok:
        return []
    return [data_folder.describe(c.dir, c.problems, limit=3) + "; `kitctl train` refuses it until fixed: "
            + data_folder.fix_for(c.dir, c.problems)]


def _mtime(p: Path) -> Optional[float]:
    try:
        return p.stat().st_mtime
    except OSError:
        return None


def collect(run_dir: Path, gpus_query: Optional[Callable[[], list]] = None) -> RunStatus:
    names = _check_run_dir(run_dir)
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
    st.notes += data_notes(meta)
    st.steps_done = logs.steps_done
    st.total_steps = logs.total_steps or (total_steps(meta) if meta else None)
    tok = logs.streams.get("perf/tokens_per_sec") or {}
    if tok:
        st.tokens_per_s = tok[last_logged(tok)]
    if ms:
        recent = list(ms.values())[-20:]          # the 20 logged last
        st.ms_per_step = statistics.median(recent)
    # checkpoints
    ckpts = Checkpoints.of_names(names)
    st.last_checkpoint = ckpts.last_model
    st.done_step = ckpts.last_done
    finished_by_files = bool(st.total_steps and st.done_step is not None and st.done_step >= st.total_steps)
    folder = RunFolder(run_dir)
    mtimes = [t for t in (_mtime(f) for f in (folder.main_log, folder.stdout_log)) if t is not None]
    st.log_age_s = time.time() - max(mtimes) if mtimes else None
    st.live = liveness(meta, run_dir, st.log_age_s, finished_by_files)
    st.diverged = logs.diverged
    if st.diverged is None and (st.live.state in ("running", "unknown") and st.ms_per_step and st.total_steps and st.steps_done is not None
            and st.steps_done < st.total_steps):
        st.eta_s = (st.total_steps - st.steps_done) * st.ms_per_step / 1000
    # GPUs: what the run recorded, else this machine's
    if meta and meta.gpus:
        st.gpus = [gpu_label(g) for g in meta.gpus]
        st.gpus_source = RUN_JSON
    else:
        found = (gpus_query or gpus_mod.query)()
        st.gpus = [f"{g.index}: {g.name} (sm_{g.compute_cap}, {g.memory_label})" for g in found]
        st.gpus_source = "this machine" if found else "none found on this machine (nvidia-smi)"
    return st


def render(st: RunStatus) -> Panel:
    """A rich renderable: one panel. Text from the run folder (names, notes, GPU names) is escaped: a run
    called ``x[/]`` is shown as it is, not read as rich markup."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column(overflow="fold")        # long paths in notes fold onto the next line instead of being cut
    colour = {"running": "green", "finished": "cyan", "failed": "red", "stopped": "yellow"}.get(st.live.state, "white")
    t.add_row("process", f"[{colour}]{st.live.state}[/] ({escape(st.live.detail)})" if st.live.detail else st.live.state)
    if st.diverged is not None:     # a state of its own: no ETA, said first (exit code 3, --json "diverged")
        t.add_row("diverged", f"[bold red]{escape(st.diverged.describe())}[/]: the run will not recover by "
                              "itself; stop it and resume from an earlier checkpoint with a lower learning rate")
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
        t.add_row("ETA", f"{format_duration(st.eta_s)} (at {st.ms_per_step:.0f} ms/step)")
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
    rt = st.meta.runtime if st.meta else None
    if rt is not None and rt.kind == "docker":   # what the image was built from (docker/images.lock), from run.json
        t.add_row("image", escape(f"{rt.image or '?'}, " + (f"images.lock {rt.images_lock[:12]}" if rt.images_lock
                                                             else "built without docker/images.lock")))
    gpus = escape("\n".join(st.gpus)) if st.gpus else "-"
    t.add_row("GPUs", gpus + (f"  [dim]({st.gpus_source})[/]" if st.gpus else f" ({st.gpus_source})"))
    for n in st.notes:
        t.add_row("note", f"[yellow]{escape(n)}[/]")
    return Panel(t, title=f"[bold]{escape(st.run_dir.name)}[/]", subtitle=escape(str(st.run_dir)), expand=False)
