"""A run's logs -> TensorBoard event files in ``<run>/tb/``, incrementally (``kitctl tensorboard``).

Event files are written with the ``tensorboard`` package's own record writer and protos (no TensorFlow).
``tb/kitctl-state.json`` (a :class:`SyncState` record, written atomically) records how many bytes of each source
were already converted, the largest step written per tag and the size of the event file written last. A re-run
converts only the new lines. When new lines re-log a step that was already written (llm.c resumed from an older
checkpoint), we append a ``SessionLog.START`` event at the first such step and rewrite every tag from that step
on with the log's last-wins values. That is TensorBoard's own restart protocol: its reader drops the points at
and after a ``START`` step (``EventAccumulator`` purge), and its Rust data server drops a series' points at and
after any step that goes backwards (reservoir preemption), so both show exactly the log's last-wins curve,
without duplicates. If a source shrank or its first bytes changed (a fresh run in the same folder), everything
is rewritten from step 0 the same way. If we were killed between writing events and saving the state, the event
file is cut back to the size the state recorded, so nothing is ever written twice.
"""
from __future__ import annotations

import hashlib
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from pydantic import BaseModel, Field, field_validator

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import check_regular
from kitctl.core.records import Record
from kitctl.core.llmc_files import MAIN_LOG, STDOUT_LOG
from kitctl.core.run_folder import RunFolder, Streams, iter_main_log, read_head
from kitctl.observe.logs import TAG_DESCRIPTIONS, iter_stdout
from kitctl.observe.runs import list_runs

TB_DIR = "tb"
STATE_FILE = "kitctl-state.json"
# a rewrite after a resume holds the points from the re-logged step on in memory (~100 bytes each): beyond this
# many it is refused with the fix (delete tb/: a conversion from scratch streams the logs block by block)
MAX_REWRITE_POINTS = 4_000_000
TB_CHUNK = 1 << 20          # the logs are converted this many bytes at a time (~25,000 main.log lines) ...
WRITE_BATCH = 20_000        # ... and their events written this many at a time: memory stays bounded (~100 MB)
EVENT_FILE_RE = re.compile(r"^events\.out\.tfevents\.[A-Za-z0-9._-]+$")


class SourceState(BaseModel):
    """How much of one log (main.log / stdout.log) was converted, and a hash of its first bytes."""

    offset: int = Field(ge=0)
    head_n: int = Field(ge=0)
    head: str


class SyncState(Record):
    """``<run>/tb/kitctl-state.json``: what the event files of a run already hold."""

    KIND = "TensorBoard sync state"
    sources: dict[str, SourceState] = Field(default_factory=dict)
    max_step: dict[str, int] = Field(default_factory=dict)      # per tag: the largest step written
    described: list[str] = Field(default_factory=list)          # tags whose metadata (description) is written
    event_file: Optional[str] = None                             # the event file written last (in tb/)
    event_size: int = Field(default=0, ge=0)                             # its size once its last points were written
    file_time: int = Field(default=0, ge=0)                              # second and sequence of that file's name
    file_seq: int = Field(default=0, ge=0)

    @field_validator("event_file")
    @classmethod
    def _plain_event_file(cls, v: Optional[str]) -> Optional[str]:
        # the state names a file that a restart truncates: never anything but an event file inside tb/
        if v is not None and not EVENT_FILE_RE.match(v):
            raise ValueError(f"{v!r} is not an event file name")
        return v



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
    def _load_state(self) -> SyncState:
        fix = f"delete {self.tb_dir} to convert the run again from scratch"
        if not self.state_path.exists() and not self.state_path.is_symlink():
            return SyncState()
        try:
            st = SyncState.read(self.state_path, hint=fix)
        except KitError as e:          # a damaged state file is bad input, not a failed step
            raise ConfigError(e.message, e.hint) from None
        # cut a half-recorded event file back to what the state says was written
        if st.event_file:
            p = self.tb_dir / st.event_file
            try:
                if p.is_file() and p.stat().st_size > st.event_size:
                    with open(p, "r+b") as f:
                        f.truncate(st.event_size)
            except OSError as e:
                raise ConfigError(f"cannot repair {p}: {e.strerror or e}", fix) from None
        return st

    def _make_tb_dir(self) -> None:
        try:
            self.tb_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ConfigError(f"{self.tb_dir} is a file; the TensorBoard events go into a folder of that name",
                              f"move {self.tb_dir} away and run again") from None
        except OSError as e:
            raise ConfigError(f"cannot create {self.tb_dir}: {e.strerror or e}",
                              f"the run folder must be writable to convert its logs (ls -ld {self.run_dir})") from None

    def _save_state(self) -> None:
        self._make_tb_dir()
        try:
            self.state.write(self.state_path)
        except OSError as e:
            raise ConfigError(f"cannot write {self.state_path}: {e.strerror or e}",
                              "free some space or make the run folder writable, then run again") from None

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
            # tensorboard (third party) is imported on first use: ~0.15 s every other kitctl command should not pay
            from tensorboard.compat.proto import event_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter

            self._make_tb_dir()
            t = max(int(time.time()), self.state.file_time)
            seq = self.state.file_seq + 1
            name = f"events.out.tfevents.{t:010d}.{seq:06d}.{socket.gethostname()}.kitctl"
            self._path = self.tb_dir / name
            # open for the life of this instance (follow keeps it between polls); close() closes it
            self._writer = RecordWriter(open(self._path, "ab"))  # noqa: SIM115
            self._writer.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
            self._writer.flush()
            # record the new file (holding only its header) before any point goes in, so that a kill while
            # writing is cut back on the next start
            self.state.file_time, self.state.file_seq, self.state.event_file = t, seq, name
            self.state.event_size = self._path.stat().st_size
            self._save_state()
        return self._writer

    def _write(self, events) -> None:
        w = self._events()
        for ev in events:
            w.write(ev.SerializeToString())
        w.flush()
        self.state.event_size = self._path.stat().st_size

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # the sync -----------------------------------------------------------
    def _start(self, name: str) -> int:
        """Where the new lines of one source begin: the offset converted so far, or -1 when the source shrank or its
        first bytes changed (a fresh run in the same folder). Reads only the first bytes, never the whole log."""
        src = self.state.sources.get(name)
        if not src:
            return 0
        size, head = read_head(self.run_dir / name, src.head_n)
        if size < src.offset or len(head) < src.head_n or _head_hash(head, src.head_n) != src.head:
            return -1
        return src.offset

    def _blocks(self, name: str, start: int) -> Iterator[tuple[Streams, int]]:
        """(streams, bytes) of one source from ``start`` on, one block (run_folder.LOG_CHUNK bytes) at a time."""
        if name == MAIN_LOG:
            for streams, _, used in iter_main_log(self.run_dir / name, start, TB_CHUNK):
                yield streams, used
        else:
            for info, used in iter_stdout(self.run_dir / name, start, TB_CHUNK):
                yield info.streams, used

    def _write_points(self, todo: Streams, described: set[str], first: Optional[list] = None) -> None:
        """Write ``todo``'s points (step order) after the events in ``first``, WRITE_BATCH events at a time."""
        from tensorboard.compat.proto import event_pb2, summary_pb2      # on first use, as above
        from tensorboard.plugins.scalar import metadata as scalar_metadata

        now = time.time()
        events = list(first or [])
        for s, t, v in sorted((s, t, v) for t, pts in todo.items() for s, v in pts.items()):
            val = summary_pb2.Summary.Value(tag=t, simple_value=v)
            if t not in described:   # the scalars plugin's metadata, with a description, once per tag
                val.metadata.CopyFrom(scalar_metadata.create_summary_metadata(
                    display_name=t, description=TAG_DESCRIPTIONS.get(t, f"llm.c main.log key {t}")))
                described.add(t)
            events.append(event_pb2.Event(wall_time=now, step=s, summary=summary_pb2.Summary(value=[val])))
            if len(events) >= WRITE_BATCH:
                self._write(events)
                events = []
        if events:
            self._write(events)

    def _stream_new(self, starts: dict[str, int], res: SyncResult, described: set[str]
                    ) -> tuple[Optional[int], dict[str, int]]:
        """Convert the new lines block by block (memory: one block, whatever the log's size). Returns
        (None, where each source ends) when done, or (the first re-logged step, ...) when a block re-logs a step
        already written: the caller then rewrites from there."""
        max_step = self.state.max_step
        ends = dict(starts)
        for name in self.SOURCES:
            for streams, used in self._blocks(name, starts[name]):
                again = [s for t, pts in streams.items() if t in max_step for s in pts if s <= max_step[t]]
                if again:
                    return min(again), ends
                self._write_points(streams, described)
                for t, pts in streams.items():
                    if pts:
                        max_step[t] = max(max(pts), max_step.get(t, -1))
                        res.written += len(pts)
                        res.tags = sorted({*res.tags, t})
                ends[name] += used
        return None, ends

    def _rewrite_from(self, purge_from: int, res: SyncResult, described: set[str]) -> dict[str, int]:
        """A resume or a fresh run re-logged steps: every source is read again (last wins) and every tag rewritten
        from ``purge_from`` on behind a SessionLog.START. Memory grows with the points from there on: more than
        MAX_REWRITE_POINTS is refused with how to convert it from scratch (which streams)."""
        from tensorboard.compat.proto import event_pb2

        full: Streams = {}
        ends: dict[str, int] = {}
        kept = 0
        for name in self.SOURCES:
            ends[name] = 0
            for streams, used in self._blocks(name, 0):
                for t, pts in streams.items():
                    dst = full.setdefault(t, {})
                    for step, v in pts.items():
                        if step >= purge_from:
                            kept += step not in dst
                            dst.pop(step, None)
                            dst[step] = v
                if kept > MAX_REWRITE_POINTS:
                    raise ConfigError(f"{self.run_dir}: its logs re-log steps from {purge_from} on (a resume) and "
                                      f"rewriting TensorBoard's copy would hold more than {MAX_REWRITE_POINTS:,} "
                                      "points in memory",
                                      f"delete {self.tb_dir} and run again: a conversion from scratch streams the "
                                      "logs in bounded memory")
                ends[name] += used
        start = event_pb2.Event(wall_time=time.time(), step=purge_from,
                                session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
        self._write_points(full, described, first=[start])
        for t, pts in full.items():
            if pts:
                self.state.max_step[t] = max(pts)
        res.written = sum(len(p) for p in full.values())
        res.tags = sorted(t for t, p in full.items() if p)
        res.purged_from = purge_from
        return ends

    def _check_sources(self) -> None:
        """Every source is a regular file (or absent) before anything is written: a FIFO or device in the place of
        the second log is refused (exit 2) before the first one's points go in."""
        for name in self.SOURCES:
            try:
                check_regular(self.run_dir / name, "log file", f"llm.c writes {name} as a file: move it away")
            except FileNotFoundError:
                pass
            except OSError as e:
                raise ConfigError(f"cannot read {self.run_dir / name}: {e.strerror or e}",
                                  "check the file and the disk it is on") from None

    def sync(self) -> SyncResult:
        self._check_sources()
        res = SyncResult(self.run_dir)
        starts = {name: self._start(name) for name in self.SOURCES}   # only the lines added since the last sync
        described = set(self.state.described)
        if any(s < 0 for s in starts.values()) and self.state.max_step:
            purge_from: Optional[int] = 0      # a source shrank or changed: a fresh run in the same folder
        else:
            purge_from, ends = self._stream_new({n: max(s, 0) for n, s in starts.items()}, res, described)
        if purge_from is not None:
            res.written, res.tags = 0, []
            ends = self._rewrite_from(purge_from, res, described)
        self.state.described = sorted(described)
        for name, end in ends.items():
            head_n = min(end, 4096)
            _, head = read_head(self.run_dir / name, head_n)
            self.state.sources[name] = SourceState(offset=end, head_n=head_n, head=_head_hash(head, head_n))
        self._save_state()
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
                if not rd.is_dir():      # removed while we follow: never re-create it by writing tb/ there
                    continue
                r = syncs[rd].sync()
                if on_result and r.written:
                    on_result(r)
            if should_stop():
                return
            time.sleep(interval)
    finally:
        for s in syncs.values():
            s.close()


def describe_sync(r: SyncResult) -> str:
    """One line about what a sync did, for the terminal."""
    name = r.run_dir.name
    if r.written:
        how = f" (rewrote from step {r.purged_from}: the run was resumed or restarted)" if r.purged_from is not None else ""
        return f"{name}: wrote {r.written} points of {len(r.tags)} tag(s) to {r.run_dir / TB_DIR}{how}"
    run = RunFolder(r.run_dir)
    if not run.main_log.exists() and not run.stdout_log.exists():
        return f"{name}: no {MAIN_LOG} yet (llm.c writes it from the first step); will show up once it has lines"
    if run.main_log.exists() and run.main_log.stat().st_size == 0:
        return f"{name}: {MAIN_LOG} is empty so far (llm.c writes a line per step)"
    return f"{name}: up to date"
