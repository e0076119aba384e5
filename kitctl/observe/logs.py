"""llm.c's logs -> numbers -> TensorBoard event files.

Sources (both in a run folder ``<data_root>/runs/<name>/``):

* ``main.log``, written by llm.c's ``llmc/logger.h`` (rank 0 only)::

      s:%d trl:%.4f lr:%.6f norm:%.2f     train loss, learning rate, grad norm  (older llm.c: ``s:%d trl:%.4f``)
      s:%d tel:%.4f                       val loss
      s:%d eval:%.4f                      HellaSwag accuracy (acc_norm, 0..1)

  llm.c opens it in append mode per line. A fresh run (no ``-y 1``) truncates it; a resumed run appends and
  re-logs the steps after the checkpoint it resumed from. Like llm.c's own ``dev/vislog.ipynb`` we keep the
  **last value logged for a step** ("last wins"), so a resume never gives duplicate points.
* ``stdout.log`` (llm.c's stdout as the train command saved it): the step line of ``train_gpt2.cu``::

      step %4d/%d | loss %7.6f (%+.2fz)| norm %6.4f (%+.2fz)| lr %.2e | %.2f ms | %.1f%% bf16 MFU | %.0f tok/s

  gives ms/step, tokens/s (llm.c's bias-corrected EMA) and the total number of steps. That line prints
  ``step + 1``; we store it under ``step`` so it lines up with ``main.log``.

Only complete lines count: a half-written last line is read once its newline is there.

TensorBoard event files are written with the ``tensorboard`` package's own record writer and protos (no TensorFlow)
into ``<run>/tb/``, incrementally: ``tb/kitctl-state.json`` records how many bytes of each source were already
converted, the largest step written per tag and the size of the event file written last. A re-run converts only
the new lines. When new lines re-log a step that was already written (llm.c resumed from an older checkpoint),
we append a ``SessionLog.START`` event at the first such step and rewrite every tag from that step on with the
log's last-wins values. That is TensorBoard's own restart protocol: its reader drops the points at and after a
``START`` step (``EventAccumulator`` purge), and its Rust data server drops a series' points at and after any step
that goes backwards (reservoir preemption), so both show exactly the log's last-wins curve, without duplicates.
If a source shrank or its first bytes changed (a fresh run in the same folder), everything is rewritten from
step 0 the same way. If we were killed between writing events and saving the state, the event file is cut back
to the size the state recorded, so nothing is ever written twice.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from kitctl.train import steplog
from kitctl.core.errors import KitError

MAIN_LOG = "main.log"
STDOUT_LOG = "stdout.log"
TB_DIR = "tb"
STATE_FILE = "kitctl-state.json"
STATE_VERSION = 1

# main.log keys -> TensorBoard tags (unknown keys of llm.c forks become llmc/<key>)
MAIN_TAGS = {
    "trl": "loss/train",
    "tel": "loss/val",
    "lr": "train/learning_rate",
    "norm": "train/grad_norm",
    "eval": "eval/hellaswag_acc",
}
STDOUT_TAGS = {"tok_s": "perf/tokens_per_sec", "ms": "perf/ms_per_step"}
TAG_DESCRIPTIONS = {
    "loss/train": "llm.c train loss (main.log trl)",
    "loss/val": "llm.c validation loss (main.log tel)",
    "train/learning_rate": "learning rate (main.log lr)",
    "train/grad_norm": "gradient norm before clipping (main.log norm)",
    "eval/hellaswag_acc": "HellaSwag acc_norm, 0..1 (main.log eval)",
    "perf/tokens_per_sec": "tokens/s, llm.c's bias-corrected EMA (stdout.log)",
    "perf/ms_per_step": "milliseconds per optimizer step (stdout.log)",
}

Series = dict[int, float]           # step -> value
Streams = dict[str, Series]         # tag -> series

def complete_part(data: bytes) -> bytes:
    """The bytes up to and including the last newline (a torn last line is left for later)."""
    end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else b""


def _num(text: str | bytes | float) -> Optional[float]:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _put(series: Series, step: int, value: float) -> None:
    """Last value wins, and the series' order is the order the values were last logged in: after a resume
    the last key is the step llm.c logged last (not the largest step, which may be a stale one)."""
    series.pop(step, None)
    series[step] = value


def last_logged(series: Series) -> int:
    return next(reversed(series))


def parse_main_log(data: bytes | str) -> tuple[Streams, int]:
    """Parse main.log text (complete lines only). Returns (tag -> {step: value}, number of unreadable lines).

    A later line for the same step and key replaces an earlier one (llm.c re-logs steps after a resume).
    """
    if isinstance(data, str):
        data = data.encode()
    streams: Streams = {}
    bad = 0
    for raw in complete_part(data).splitlines():
        parts = raw.decode("utf-8", "replace").split()
        if not parts:
            continue
        if not parts[0].startswith("s:"):
            bad += 1
            continue
        try:
            step = int(parts[0][2:])
        except ValueError:
            bad += 1
            continue
        got = False
        for kv in parts[1:]:
            key, sep, val = kv.partition(":")
            v = _num(val) if sep else None
            if v is None:
                continue
            _put(streams.setdefault(MAIN_TAGS.get(key, f"llmc/{key}"), {}), step, v)
            got = True
        bad += not got
    return streams, bad


@dataclass
class StdoutInfo:
    streams: Streams = field(default_factory=dict)
    total_steps: Optional[int] = None    # train_num_batches, from the last step line
    last_step: Optional[int] = None      # 0-based step of the last step line


def parse_stdout(data: bytes | str) -> StdoutInfo:
    """Scalars from llm.c's step lines in stdout.log (complete lines only, last value for a step wins)."""
    if isinstance(data, str):
        data = data.encode()
    info = StdoutInfo()
    # splitlines also splits at "\r" (llm.c's "evaluating HellaSwag: i/n\r" shares a line with the next step)
    for line in complete_part(data).decode(errors="replace").splitlines():
        s = steplog.parse_step(line)          # the one parser of llm.c's step line
        if s is None:
            continue
        step = s.step - 1
        ms, tok = _num(s.ms), _num(s.tok_s)
        if ms is not None:
            _put(info.streams.setdefault(STDOUT_TAGS["ms"], {}), step, ms)
        if tok is not None:
            _put(info.streams.setdefault(STDOUT_TAGS["tok_s"], {}), step, tok)
        info.total_steps = s.total
        info.last_step = step
    return info


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as e:
        raise KitError(f"cannot read {path}: {e.strerror}", "check the file's permissions") from None


@dataclass
class RunLogs:
    """Everything the logs of one run say (complete lines only)."""

    run_dir: Path
    streams: Streams
    total_steps: Optional[int]
    bad_lines: int
    has_main_log: bool
    has_stdout: bool
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.run_dir.name

    def last(self, tag: str) -> Optional[tuple[int, float]]:
        """(step, value) logged last for a tag (after a resume: the resumed run's latest, not the largest step)."""
        s = self.streams.get(tag)
        if not s:
            return None
        step = last_logged(s)
        return step, s[step]

    @property
    def steps_done(self) -> Optional[int]:
        """Optimizer steps done: the train step logged last, plus one."""
        for tag in ("loss/train", STDOUT_TAGS["ms"]):
            if self.streams.get(tag):
                return last_logged(self.streams[tag]) + 1
        return None


def read_run(run: Path, name: str = "") -> RunLogs:
    """A run folder's main.log + stdout.log; or, given a file, that file as a main.log (any file name; named
    after the file, or after its folder when the file is called main.log)."""
    if run.is_file():
        streams, bad = parse_main_log(read_bytes(run))
        if not name and run.name != MAIN_LOG:
            name = run.stem
        return RunLogs(run.parent, streams, None, bad, True, False, name)
    main_path, out_path = run / MAIN_LOG, run / STDOUT_LOG
    streams, bad = parse_main_log(read_bytes(main_path))
    info = parse_stdout(read_bytes(out_path))
    streams.update(info.streams)
    return RunLogs(run, streams, info.total_steps, bad, main_path.exists(), out_path.exists(), name)


# ---------------------------------------------------------------- runs


def list_runs(runs_dir: Path) -> list[Path]:
    """Run folders under runs_dir: those with a main.log, stdout.log, run.json or reproduce.json (a
    `kitctl reproduce` run before training starts)."""
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir()
                  if p.is_dir() and any((p / f).exists() for f in (MAIN_LOG, STDOUT_LOG, "run.json", "reproduce.json")))


def resolve_runs(names: Iterable[str], runs_dir: Path, *, allow_empty: bool = False,
                 files: bool = False, command: str = "report") -> list[Path]:
    """RUN arguments (a run folder, its main.log, or a name under runs_dir) -> run folders; none -> all runs.

    With ``files``, a file argument is kept as it is (read as a main.log whatever its name). ``command``: the
    kitctl command whose hint names a run folder."""
    names = list(names)
    if not names:
        runs = list_runs(runs_dir)
        if not runs and not allow_empty:
            raise KitError(f"no runs under {runs_dir} (a run is a folder with main.log, stdout.log or run.json)",
                           f"start one with `kitctl train`, or name a run folder, e.g. "
                           f"`kitctl {command} path/to/log124M`")
        return runs
    out = []
    for n in names:
        p = Path(n)
        if p.is_file():
            if files:
                out.append(p.absolute())
                continue
            if p.name in (MAIN_LOG, STDOUT_LOG):    # a log file names its run folder
                p = p.parent
        for cand in (p, runs_dir / n):
            if cand.is_dir():
                out.append(cand.absolute())
                break
        else:
            have = ", ".join(r.name for r in list_runs(runs_dir)) or "none"
            raise KitError(f"run {n!r} not found (neither a folder nor a run under {runs_dir})",
                           f"runs under {runs_dir}: {have}", exit_code=2)
    return out


def latest_run(runs_dir: Path) -> Path:
    runs = list_runs(runs_dir)
    if not runs:
        raise KitError(f"no runs under {runs_dir}",
                       "start one with `kitctl train`, or name a run folder: `kitctl status path/to/run`")

    def mtime(p: Path) -> float:
        return max((p / f).stat().st_mtime for f in (MAIN_LOG, STDOUT_LOG, "run.json", ".") if (p / f).exists())

    return max(runs, key=mtime)


# ---------------------------------------------------------------- TensorBoard writer


@dataclass
class SyncResult:
    run_dir: Path
    written: int = 0            # scalar points written this time
    purged_from: Optional[int] = None   # step from which points were rewritten (resume / fresh run)
    tags: list[str] = field(default_factory=list)
    message: str = ""


def _head_hash(data: bytes, n: int) -> str:
    return hashlib.sha256(data[:n]).hexdigest()


class TensorBoardSync:
    """Keeps ``<run>/tb/`` in step with a run's logs. One instance per run; ``sync()`` as often as you like.

    One event file per instance (a new one only when something is written); ``close()`` when done.
    """

    SOURCES = (MAIN_LOG, STDOUT_LOG)

    def __init__(self, run_dir: Path, tb_dir: Optional[Path] = None):
        self.run_dir = Path(run_dir)
        self.tb_dir = Path(tb_dir) if tb_dir else self.run_dir / TB_DIR
        self.state_path = self.tb_dir / STATE_FILE
        self._writer = None
        self.state = self._load_state()

    # state -----------------------------------------------------------
    def _load_state(self) -> dict:
        fresh = {"version": STATE_VERSION, "sources": {}, "max_step": {}, "event_file": None, "event_size": 0}
        try:
            st = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return fresh
        except (OSError, ValueError):
            st = None
        if not isinstance(st, dict) or st.get("version") != STATE_VERSION:
            raise KitError(f"{self.state_path} is not a state file this kitctl understands",
                           f"delete {self.tb_dir} to convert the run again from scratch", exit_code=2)
        # cut a half-recorded event file back to what the state says was written
        ev = st.get("event_file")
        if ev:
            p = self.tb_dir / ev
            if p.exists() and p.stat().st_size > st.get("event_size", 0):
                with open(p, "r+b") as f:
                    f.truncate(st["event_size"])
        return st

    def _save_state(self) -> None:
        self.tb_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        os.replace(tmp, self.state_path)

    # writing -----------------------------------------------------------
    def _events(self):
        """The open event file of this instance, created on first use.

        TensorBoard reads a folder's event files in name order, and the restart marker only works if files are
        read in the order they were written. TensorBoard's own ``EventFileWriter`` names files by the second
        plus a per-process counter that does not sort past 9 (``...1``, ``...10``, ``...2``), so two files made
        within one second can be read out of order. We name them ourselves, ``events.out.tfevents.<second>.
        <sequence, 6 digits>.<host>.kitctl`` with a never-decreasing second, and write the records with
        TensorBoard's ``RecordWriter`` (the TFRecord framing its writer uses)."""
        if self._writer is None:
            from tensorboard.compat.proto import event_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter

            self.tb_dir.mkdir(parents=True, exist_ok=True)
            t = max(int(time.time()), self.state.get("file_time", 0))
            seq = self.state.get("file_seq", 0) + 1
            name = f"events.out.tfevents.{t:010d}.{seq:06d}.{socket.gethostname()}.kitctl"
            self._path = self.tb_dir / name
            self._writer = RecordWriter(open(self._path, "ab"))
            self._writer.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
            self._writer.flush()
            # record the new file (holding only its header) before any point goes in, so that a kill while
            # writing is cut back on the next start
            self.state.update(file_time=t, file_seq=seq, event_file=name, event_size=self._path.stat().st_size)
            self._save_state()
        return self._writer

    def _write(self, events) -> None:
        w = self._events()
        for ev in events:
            w.write(ev.SerializeToString())
        w.flush()
        self.state["event_size"] = self._path.stat().st_size

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # the sync -----------------------------------------------------------
    def _read_source(self, name: str) -> tuple[bytes, bytes, bool]:
        """(all complete bytes, the new complete bytes, rewritten?) of one source."""
        data = complete_part(read_bytes(self.run_dir / name))
        src = self.state["sources"].get(name)
        if not src:
            return data, data, False
        off, head_n = src["offset"], src["head_n"]
        if len(data) < off or _head_hash(data, head_n) != src["head"]:
            return data, data, True
        return data, data[off:], False

    def sync(self) -> SyncResult:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.scalar import metadata as scalar_metadata

        res = SyncResult(self.run_dir)
        full: Streams = {}
        new: Streams = {}
        rewritten = False
        datas = {}
        for name in self.SOURCES:
            data, fresh, rw = self._read_source(name)
            datas[name] = data
            rewritten |= rw
            parse = (lambda b: parse_main_log(b)[0]) if name == MAIN_LOG else (lambda b: parse_stdout(b).streams)
            whole = parse(data)
            full.update(whole)
            new.update(whole if fresh is data else parse(fresh))
        max_step: dict[str, int] = self.state["max_step"]
        purge_from: Optional[int] = None
        if rewritten and max_step:
            purge_from = 0
        else:
            for tag, pts in new.items():
                done = max_step.get(tag)
                if done is not None:
                    again = [s for s in pts if s <= done]
                    if again:
                        purge_from = min(again) if purge_from is None else min(purge_from, min(again))
        if purge_from is not None:
            todo = {t: {s: v for s, v in pts.items() if s >= purge_from} for t, pts in full.items()}
        else:
            todo = {t: {s: v for s, v in pts.items() if s > max_step.get(t, -1)} for t, pts in new.items()}
        now = time.time()
        events = []
        if purge_from is not None:
            events.append(event_pb2.Event(wall_time=now, step=purge_from,
                                          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
        points = sorted((s, t, v) for t, pts in todo.items() for s, v in pts.items())
        described = set(self.state.setdefault("described", []))
        for s, t, v in points:
            val = summary_pb2.Summary.Value(tag=t, simple_value=v)
            if t not in described:   # the scalars plugin's metadata, with a description, once per tag
                val.metadata.CopyFrom(scalar_metadata.create_summary_metadata(
                    display_name=t, description=TAG_DESCRIPTIONS.get(t, f"llm.c main.log key {t}")))
                described.add(t)
            events.append(event_pb2.Event(wall_time=now, step=s, summary=summary_pb2.Summary(value=[val])))
        if events:
            self._write(events)
        self.state["described"] = sorted(described)
        for t, pts in todo.items():
            if pts:
                max_step[t] = max(max(pts), max_step.get(t, -1)) if purge_from is None else max(full[t])
        for name, data in datas.items():
            head_n = min(len(data), 4096)
            self.state["sources"][name] = {"offset": len(data), "head_n": head_n, "head": _head_hash(data, head_n)}
        self._save_state()
        res.written = len(points)
        res.purged_from = purge_from
        res.tags = sorted(t for t, pts in todo.items() if pts)
        return res


def sync_runs(run_dirs: Iterable[Path]) -> list[SyncResult]:
    """Convert each run once (no follow)."""
    out = []
    for rd in run_dirs:
        s = TensorBoardSync(rd)
        try:
            out.append(s.sync())
        finally:
            s.close()
    return out


def follow(runs_dir: Optional[Path], run_dirs: list[Path], interval: float = 5.0,
           on_result: Optional[Callable[[SyncResult], None]] = None,
           should_stop: Callable[[], bool] = lambda: False,
           on_new_run: Optional[Callable[[list[Path]], None]] = None) -> None:
    """Keep converting: every ``interval`` seconds sync each run (and, with ``runs_dir``, any new run folder)
    until ``should_stop()`` or Ctrl-C. Writers stay open between polls, so one event file per run per session."""
    syncs: dict[Path, TensorBoardSync] = {}
    try:
        while True:
            dirs = list(run_dirs)
            if runs_dir is not None:
                dirs = sorted(set(dirs) | set(list_runs(runs_dir)))
            fresh = [rd for rd in dirs if rd not in syncs]
            for rd in fresh:
                syncs[rd] = TensorBoardSync(rd)
            if fresh and on_new_run:
                on_new_run(fresh)
            for rd in dirs:
                r = syncs[rd].sync()
                if on_result and r.written:
                    on_result(r)
            if should_stop():
                return
            time.sleep(interval)
    finally:
        for s in syncs.values():
            s.close()
