"""A run folder (llm.c's ``-o``): :class:`RunFolder`, the one home of everything the kit and llm.c share there.

In the shape of pipx's ``Venv`` + metadata (kitctl.core.data_folder.DataFolder is its twin for shard folders):

- **run.json** (schema: :mod:`kitctl.core.run_record`): :meth:`RunFolder.load` / :meth:`RunFolder.read` (the
  bounded record reader), :meth:`RunFolder.update` (read-modify-write under ``.run.json.lock``: ``kitctl eval``'s
  results) and :meth:`RunFolder.write_session` (``kitctl train``'s record of a session: the earlier sessions, the
  eval results and a newer kit's keys are kept). Who writes run.json: these two methods, nothing else.
- **llm.c's checkpoint files** (names in kitctl.core.llmc_files): :meth:`RunFolder.model_path`, ``state_path``,
  ``done_path`` and :meth:`RunFolder.checkpoints` (:class:`Checkpoints`: which steps have a model file, a DONE
  marker, how many state files). llm.c writes ``model_N.bin``, then ``state_N_*.bin``, then ``DONE_N``.
- **main.log's reader**: :func:`parse_main_log` is the one parser of llm.c's ``s:N trl:x`` lines, read in
  bounded blocks (:func:`iter_lines`, :func:`read_main_log`; :meth:`RunFolder.last_train_step` reads its tail).
  observe (status, report, TensorBoard), model (valloss) and the pipeline's progress read it here. stdout.log's
  step line has its one parser here too (:func:`parse_step`: ``kitctl train`` live, observe from the file), and
  its start-up table (:func:`table_values`: valloss's B and T, report's data pattern).
- **the one writer** (:meth:`RunFolder.writer`): ``kitctl train``, the train stage of ``kitctl reproduce`` and
  anything else that makes llm.c write checkpoints hold ``<run>/.kitctl-writer.lock`` (flock) for the whole
  session; a second one is refused (exit 1) with the holder's pid, command and how to stop it. The kernel drops
  the lock when the holder dies (kill -9 included), so a stale lock never blocks. The lock is re-entrant within a
  process (reproduce holds it, its train stage takes it again). Writers the lock cannot see are asked for too:
  a ``train_gpt2cu`` whose ``-o`` is this folder (started by hand, or left by a killed kitctl) and what the
  caller knows (the recorded container, still running after its kitctl died).
- :func:`find_llmc_process`, :func:`container_running`: what liveness (``kitctl status``) and the writer check
  both ask of this machine.

The main.log format, written by llm.c's ``llmc/logger.h`` (rank 0 only)::

    s:%d trl:%.4f lr:%.6f norm:%.2f     train loss, learning rate, grad norm  (older llm.c: ``s:%d trl:%.4f``)
    s:%d tel:%.4f                       val loss
    s:%d eval:%.4f                      HellaSwag accuracy (acc_norm, 0..1)

llm.c opens it in append mode per line. A fresh run (no ``-y 1``) truncates it; a resumed run appends and re-logs
the steps after the checkpoint it resumed from. Like llm.c's own ``dev/vislog.ipynb`` the reader keeps the **last
value logged for a step** ("last wins"), so a resume never gives duplicate points. Only complete lines count: a
half-written last line is read once its newline is there. Non-finite values (``nan``, ``-nan``, ``inf``) are kept:
a diverged run is a state to show, not a line to skip. A step outside 0 .. 2**63-1 (TensorBoard's int64) is not
an llm.c step: the line counts as unreadable.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Optional

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import open_regular, read_chunks
from kitctl.core.llmc_files import (MAIN_LOG, RUN_FILE_GLOBS, RUN_JSON, STDOUT_LOG, done_filename, model_filename,
                                    parse_done_filename, parse_model_filename, parse_state_filename, state_filename)
from kitctl.core.proc import start_ticks
from kitctl.core.run_record import MAX_HISTORY, RunRecord

LOCK_FILE = ".kitctl-writer.lock"
RECORD_LOCK_FILE = ".run.json.lock"
MARKERS = (MAIN_LOG, STDOUT_LOG, RUN_JSON)   # a folder holding one of these is a run (llm.c's logs, the kit's record)


# ------------------------------------------------------------------------ the one writer: the lock and this machine
@dataclass
class _Held:
    file: IO[str]
    depth: int


# run folders this process holds the writer lock of: resolved path -> the open lock file and how deep
_HELD: dict[str, _Held] = {}

OtherWriter = Callable[[], Optional[tuple[str, str]]]   # -> (who writes, how to stop it), or None


def container_running(name: str) -> Optional[bool]:
    """Is the docker container ``name`` running? None when it cannot be told (no docker, no engine)."""
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
                try:
                    if (cwd / args[i + 1]).resolve() == target:
                        return int(e.name)
                except (OSError, ValueError):
                    pass
    return None


# ------------------------------------------------------------------------------------------------- main.log
# main.log keys -> the kit's tags (TensorBoard's, status', report's; unknown keys of llm.c forks become llmc/<key>)
MAIN_TAGS = {
    "trl": "loss/train",
    "tel": "loss/val",
    "lr": "train/learning_rate",
    "norm": "train/grad_norm",
    "eval": "eval/hellaswag_acc",
}

Series = dict[int, float]           # step -> value
Streams = dict[str, Series]         # tag -> series

MAX_STEP = (1 << 63) - 1     # TensorBoard's step is an int64
LOG_CHUNK = 8 << 20          # a log is read this many bytes at a time: memory stays bounded whatever its size
MAX_LINE = 1 << 20           # an llm.c log line is under 200 bytes; a 1 MiB "line" is not a log
_FOLDER_HINT = "llm.c writes {} as a file: move the folder away, or name the run folder instead"


def complete_part(data: bytes) -> bytes:
    """The bytes up to and including the last newline (a torn last line is left for later)."""
    end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else b""


def log_number(text: str | bytes | float) -> Optional[float]:
    """The number in ``text``: non-finite values (nan, -nan, inf) included, since they are what divergence looks
    like; None when it is not a number."""
    try:
        return float(text)
    except (ValueError, OverflowError):
        return None


def put_last(series: Series, step: int, value: float) -> None:
    """Last value wins, and the series' order is the order the values were last logged in: after a resume
    the last key is the step llm.c logged last (not the largest step, which may be a stale one)."""
    series.pop(step, None)
    series[step] = value


def last_logged(series: Series) -> int:
    return next(reversed(series))


def merge(into: Streams, more: Streams) -> Streams:
    """Add ``more`` (logged later) to ``into``: last value wins, in logging order."""
    for tag, series in more.items():
        dst = into.setdefault(tag, {})
        for step, v in series.items():
            put_last(dst, step, v)
    return into


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
        if not 0 <= step <= MAX_STEP:
            bad += 1
            continue
        got = False
        for kv in parts[1:]:
            key, sep, val = kv.partition(":")
            v = log_number(val) if sep else None
            if v is None:
                continue
            put_last(streams.setdefault(MAIN_TAGS.get(key, f"llmc/{key}"), {}), step, v)
            got = True
        bad += not got
    return streams, bad


# ------------------------------------------------------------------------------------- stdout.log's step line
# rank 0 of train_gpt2.cu (f1e2ace) prints, once per optimizer step (the step 1-based: step + 1):
#   step %4d/%d | loss %7.6f (%+.2fz)| norm %6.4f (%+.2fz)| lr %.2e | %.2f ms | %.1f%% bf16 MFU | %.0f tok/s
_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf|-nan|-inf)"
STEP_RE = re.compile(
    rf"^step\s+(?P<step>\d+)/(?P<total>\d+) \| loss (?P<loss>{_NUM}) \((?P<lossz>{_NUM})z\)\| "
    rf"norm (?P<norm>{_NUM}) \((?P<normz>{_NUM})z\)\| lr (?P<lr>{_NUM}) \| (?P<ms>{_NUM}) ms \| "
    rf"(?P<mfu>{_NUM})% bf16 MFU \| (?P<toks>{_NUM}) tok/s")


@dataclass(frozen=True)
class Step:
    step: int          # 1-based, as printed
    total: int
    loss: float
    norm: float
    lr: float
    ms: float
    mfu: Optional[float]   # percent; None when llm.c does not know the GPU (it prints -100%)
    tok_s: float


def parse_step(line: str) -> Optional[Step]:
    """The one parser of llm.c's step line (``kitctl train`` live, observe from stdout.log); None for other lines."""
    m = STEP_RE.match(line.strip())
    if not m:
        return None
    mfu = float(m["mfu"])
    return Step(int(m["step"]), int(m["total"]), float(m["loss"]), float(m["norm"]), float(m["lr"]),
                float(m["ms"]), None if mfu < 0 else mfu, float(m["toks"]))


def table_values(text: str, label: str) -> list[str]:
    """The values of the rows ``| <label> | <value> |`` of llm.c's start-up table in stdout.log's ``text``, in
    order (a resumed run prints the table again: the last is the last run's)."""
    return re.findall(rf"^\|\s*{re.escape(label)}\s*\|\s*(\S[^|\n]*?)\s*\|", text, re.M)


def _log_error(path: Path, e: OSError) -> KitError:
    if isinstance(e, PermissionError):
        return ConfigError(f"cannot read {path}: permission denied",
                           f"check who owns it (ls -l {path}); run kitctl as that user or make it readable")
    return ConfigError(f"cannot read {path}: {e.strerror or e}", "check the file and the disk it is on")


def iter_lines(path: Path, start: int = 0, chunk: int = LOG_CHUNK) -> Iterator[bytes]:
    """A log's complete lines from byte ``start`` on, in blocks of whole lines (a torn last line is left for
    later); nothing when it does not exist yet. Read incrementally: memory is one block, however large the log.
    A folder, device, FIFO or socket where the log should be, or a line over 1 MiB: exit 2 naming the path."""
    carry = b""
    try:
        for data in read_chunks(path, "log file", start, chunk, _FOLDER_HINT.format(path.name)):
            buf = carry + data if carry else data
            end = buf.rfind(b"\n")
            if end < 0:
                carry = buf
            else:
                yield buf[: end + 1]
                carry = buf[end + 1:]
            if len(carry) > MAX_LINE:
                raise ConfigError(f"{path} has a line longer than {MAX_LINE >> 20} MiB: not an llm.c log",
                                  f"llm.c writes {path.name} as short text lines; move this file away")
    except OSError as e:
        raise _log_error(path, e) from None


def iter_main_log(path: Path, start: int = 0, chunk: int = LOG_CHUNK) -> Iterator[tuple[Streams, int, int]]:
    """(streams, unreadable lines, bytes) of a main.log block by block: memory is one block, whatever the size."""
    for block in iter_lines(path, start, chunk):
        s, b = parse_main_log(block)
        yield s, b, len(block)


def read_main_log(path: Path, start: int = 0) -> tuple[Streams, int, int]:
    """(streams, unreadable lines, bytes of complete lines read) of a main.log from ``start`` on, incrementally."""
    streams: Streams = {}
    bad = used = 0
    for block in iter_lines(path, start):
        s, b = parse_main_log(block)
        merge(streams, s)
        bad += b
        used += len(block)
    return streams, bad, used


def read_head(path: Path, n: int) -> tuple[int, bytes]:
    """(size, the first ``n`` bytes) of a log; (0, b"") when it does not exist."""
    try:
        with open_regular(path, "log file", _FOLDER_HINT.format(path.name)) as f:
            return os.fstat(f.fileno()).st_size, f.read(n)
    except FileNotFoundError:
        return 0, b""
    except OSError as e:
        raise _log_error(path, e) from None


# ---------------------------------------------------------------------------------------------- checkpoints
@dataclass(frozen=True)
class Checkpoints:
    """What llm.c's checkpoint files in a run folder say (from one listing of it)."""

    models: dict[int, str] = field(default_factory=dict)   # step -> model_%08d.bin
    done: tuple[int, ...] = ()                              # steps with a DONE_%08d, ascending
    states: dict[int, int] = field(default_factory=dict)   # step -> how many state_%08d_*.bin (one per rank)

    @classmethod
    def of_names(cls, names: Iterable[str]) -> Checkpoints:
        models: dict[int, str] = {}
        done: list[int] = []
        states: dict[int, int] = {}
        for n in names:
            if (step := parse_model_filename(n)) is not None:
                models[step] = n
            elif (step := parse_done_filename(n)) is not None:
                done.append(step)
            elif (st := parse_state_filename(n)) is not None:
                states[st[0]] = states.get(st[0], 0) + 1
        return cls(models, tuple(sorted(done)), states)

    @property
    def last_done(self) -> Optional[int]:
        """The newest step llm.c finished checkpointing (its DONE file is written last)."""
        return self.done[-1] if self.done else None

    @property
    def last_model(self) -> Optional[int]:
        return max(self.models, default=None)

    @property
    def any(self) -> bool:
        """Is any of llm.c's checkpoint files (model, state, DONE) there?"""
        return bool(self.models or self.done or self.states)


# --------------------------------------------------------------------------------------------------- the folder
def _holder(lock: Path) -> str:
    """Who holds the lock, from what its holder wrote in it: 'pid N on HOST (`command`)'."""
    try:
        words = lock.read_text(errors="replace").splitlines()
    except OSError:
        words = []
    fields = dict(w.split("=", 1) for w in words if "=" in w)
    pid = fields.get("pid", "?")
    where = f" on {fields['host']}" if fields.get("host") and fields["host"] != socket.gethostname() else ""
    what = f" ({fields['command']})" if fields.get("command") else ""
    return f"pid {pid}{where}{what}"


class RunFolder:
    """One run folder (llm.c's ``-o``): its files' paths, run.json, the checkpoints, main.log and the writer lock."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # ------------------------------------------------------------------------------------------ paths
    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def main_log(self) -> Path:
        return self.path / MAIN_LOG

    @property
    def stdout_log(self) -> Path:
        return self.path / STDOUT_LOG

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    def model_path(self, step: int) -> Path:
        return self.path / model_filename(step)

    def state_path(self, step: int, rank: int) -> Path:
        return self.path / state_filename(step, rank)

    def done_path(self, step: int) -> Path:
        return self.path / done_filename(step)

    # ------------------------------------------------------------------------------------ checkpoints
    def checkpoints(self) -> Checkpoints:
        """The folder's checkpoint files, from one listing (an OSError, e.g. no such folder, passes through)."""
        return Checkpoints.of_names(os.listdir(self.path))

    def archive(self, dest: Path) -> Path:
        """Move every file llm.c and the kit write here (checkpoints, DONE markers, logs, run.json) into ``dest``,
        a new folder (``kitctl train --fresh``: an earlier run is kept, not deleted)."""
        dest.mkdir()
        for pattern in RUN_FILE_GLOBS:
            for p in self.path.glob(pattern):
                p.rename(dest / p.name)
        return dest

    # --------------------------------------------------------------------------------------- run.json
    def load(self) -> tuple[Optional[RunRecord], Optional[str]]:
        """``(record, None)``; ``(None, None)`` when there is no run.json; ``(None, why)`` when it cannot be read
        (``why``: :meth:`Record.read`'s message, naming the file)."""
        if not self.run_json.exists():
            return None, None
        try:
            return RunRecord.read(self.run_json), None
        except KitError as e:
            return None, e.message

    def read(self) -> Optional[RunRecord]:
        """run.json, or None when there is none; a KitError when it is damaged (a ConfigError, exit 2, when a
        device, FIFO or socket is in its place)."""
        path = self.run_json
        if not path.exists():
            return None
        return RunRecord.read(path, hint=f"it is rewritten by the next `kitctl train` of this run; to read the logs "
                                         f"only, move it away (mv {path} {path}.bad)")

    @contextlib.contextmanager
    def record_lock(self) -> Iterator[None]:
        """Hold ``<run>/.run.json.lock`` (flock) while run.json is read, changed and written back."""
        with open(self.path / RECORD_LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def update(self, change: Callable[[RunRecord], None], hint: str) -> RunRecord:
        """Read run.json (an empty record when there is none), apply ``change``, write it back atomically, under
        the lock, with only the fields it had or ``change`` assigned (assign a field, do not mutate it in place).
        A damaged run.json is a KitError with ``hint``: it is never replaced by a record that lost its sessions."""
        with self.record_lock():
            rec = RunRecord.read(self.run_json, hint=hint) if self.run_json.exists() else RunRecord()
            change(rec)
            rec.write(self.run_json, exclude_unset=True)
            return rec

    def write_session(self, rec: RunRecord) -> Path:
        """Write ``rec`` (a session's whole record: plan, launch, runtime, data, session) as run.json, atomically
        and under the lock, keeping what the file holds across sessions: the previous session moves to
        ``history`` when it is another one (at most MAX_HISTORY kept), the eval results and a newer kit's keys
        stay. A run.json that cannot be read is replaced."""
        with self.record_lock():
            old, _ = self.load()
            history = list(old.history) if old else []
            session_id = rec.session.id if rec.session else None
            if old and old.session and old.session.id != session_id:
                history.append(old.session)
            kept = {"history": history[-MAX_HISTORY:], "evals": list(old.evals) if old else [],
                    **((old.model_extra or {}) if old else {})}
            return rec.model_copy(update=kept).write(self.run_json)

    # --------------------------------------------------------------------------------------- main.log
    def read_main_log(self) -> tuple[Streams, int, int]:
        """(streams, unreadable lines, bytes read) of the folder's main.log; empty when there is none."""
        return read_main_log(self.main_log)

    def last_train_step(self, tail: int = 4096) -> Optional[int]:
        """llm.c's step (0-based) of the train-loss line logged last, from main.log's last ``tail`` bytes; None
        when there is none or it cannot be read. A device, FIFO or socket in its place: exit 2, naming it."""
        try:
            with open_regular(self.main_log, "log file") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - tail))
                data = f.read(tail)
        except OSError:
            return None
        train = parse_main_log(data)[0].get(MAIN_TAGS["trl"])
        return last_logged(train) if train else None

    @contextlib.contextmanager
    def writer(self, command: str, others: Optional[OtherWriter] = None,
               proc: Path = Path("/proc")) -> Iterator[None]:
        """Hold the folder's writer lock for the block; refuse (KitError, exit 1) while another kitctl holds it
        or another writer (``train_gpt2cu -o`` here, ``others()``) is live. Re-entrant within this process."""
        self.path.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        held = _HELD.get(key)
        if held is not None:
            held.depth += 1
            try:
                yield
            finally:
                held.depth -= 1
            return
        f = self._acquire(command)
        _HELD[key] = _Held(f, 1)
        try:
            self._refuse_unlocked_writers(others, proc)
            yield
        finally:
            del _HELD[key]
            f.close()

    def _acquire(self, command: str) -> IO[str]:
        lock = self.lock_path
        f = open(lock, "a+")   # noqa: SIM115 - held for the session; writer() closes it
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            who = _holder(lock)
            pid = who.split()[1] if who.startswith("pid ") else "PID"
            raise KitError(f"another kitctl is writing checkpoints to {self.path}: {who}",
                           f"wait for it to finish, or stop it (Ctrl-C in its terminal, or kill -INT {pid}); "
                           f"`kitctl status {self.path}` shows where it is. Two trainers in one run folder "
                           "would write over each other's checkpoints") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid={os.getpid()}\nstart={start_ticks(os.getpid())}\nhost={socket.gethostname()}\n"
                f"command={command}\n")
        f.flush()
        return f

    def _refuse_unlocked_writers(self, others: Optional[OtherWriter], proc: Path) -> None:
        pid = find_llmc_process(self.path, proc)
        if pid is not None:
            raise KitError(f"a train_gpt2cu (pid {pid}) is writing to {self.path} without kitctl (started by hand, "
                           "or left running by a kitctl that was killed)",
                           f"wait for it to finish, or stop it with `kill -INT {pid}`; then re-run this command "
                           "(it resumes from the newest complete checkpoint)")
        other = others() if others is not None else None
        if other is not None:
            who, stop = other
            raise KitError(f"{who} is writing to {self.path}",
                           f"wait for it to finish, or stop it with `{stop}`; then re-run this command "
                           "(it resumes from the newest complete checkpoint)")
