"""llm.c's logs -> numbers: one series (step -> value) per tag, read from a run folder's logs.

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

Non-finite values (llm.c prints ``nan``, ``-nan``, ``inf``) are kept as they are: a run whose loss became NaN has
diverged, and that is a state status, report and TensorBoard show (:meth:`RunLogs.diverged`), not a line to skip.
A step outside 0 .. 2**63-1 (TensorBoard's int64) is not an llm.c step: the line counts as unreadable.

The TensorBoard side (event files in ``<run>/tb/``) is ``kitctl.observe.tbsync``; which folders are runs is
``kitctl.observe.runs``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import check_regular, open_regular, read_chunks
from kitctl.core.llmc_files import MAIN_LOG, STDOUT_LOG
from kitctl.train import parse_step


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


MAX_STEP = (1 << 63) - 1     # TensorBoard's step is an int64


def _num(text: str | bytes | float) -> Optional[float]:
    """The number in ``text``: non-finite values (nan, -nan, inf) included, since they are what divergence looks
    like; None when it is not a number."""
    try:
        return float(text)
    except (ValueError, OverflowError):
        return None


def value_word(v: float) -> str:
    """How a loss is named in messages: 'NaN', 'inf', '-inf', or the number."""
    if math.isnan(v):
        return "NaN"
    return ("inf" if v > 0 else "-inf") if math.isinf(v) else f"{v:.4f}"


@dataclass(frozen=True)
class Divergence:
    """The loss has been non-finite since ``step`` (its last logged values, in logging order, all are)."""

    tag: str
    step: int
    value: float

    def describe(self) -> str:
        what = "loss" if self.tag == "loss/train" else self.tag.replace("/", " ")
        return f"{what} is {value_word(self.value)} since step {self.step}"


def divergence(series: Series, tag: str = "loss/train") -> Optional[Divergence]:
    """Where the trailing run of non-finite values of ``series`` starts (logging order), or None when the value
    logged last is finite."""
    since: Optional[tuple[int, float]] = None
    for step in reversed(series):
        v = series[step]
        if math.isfinite(v):
            break
        since = (step, v)
    return Divergence(tag, since[0], series[last_logged(series)]) if since else None


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
        if not 0 <= step <= MAX_STEP:
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
        s = parse_step(line)          # the one parser of llm.c's step line
        if s is None:
            continue
        step = s.step - 1
        if not 0 <= step <= MAX_STEP:
            continue
        ms, tok = _num(s.ms), _num(s.tok_s)
        if ms is not None:
            _put(info.streams.setdefault(STDOUT_TAGS["ms"], {}), step, ms)
        if tok is not None:
            _put(info.streams.setdefault(STDOUT_TAGS["tok_s"], {}), step, tok)
        info.total_steps = s.total
        info.last_step = step
    return info


LOG_CHUNK = 8 << 20          # a log is read this many bytes at a time: memory stays bounded whatever its size
MAX_LINE = 1 << 20           # an llm.c log line is under 200 bytes; a 1 MiB "line" is not a log
_FOLDER_HINT = "llm.c writes {} as a file: move the folder away, or name the run folder instead"


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


def merge(into: Streams, more: Streams) -> Streams:
    """Add ``more`` (logged later) to ``into``: last value wins, in logging order."""
    for tag, series in more.items():
        dst = into.setdefault(tag, {})
        for step, v in series.items():
            _put(dst, step, v)
    return into


def iter_main_log(path: Path, start: int = 0, chunk: int = LOG_CHUNK) -> Iterator[tuple[Streams, int, int]]:
    """(streams, unreadable lines, bytes) of a main.log block by block: memory is one block, whatever the size."""
    for block in iter_lines(path, start, chunk):
        s, b = parse_main_log(block)
        yield s, b, len(block)


def iter_stdout(path: Path, start: int = 0, chunk: int = LOG_CHUNK) -> Iterator[tuple[StdoutInfo, int]]:
    """(step-line scalars, bytes) of a stdout.log block by block."""
    for block in iter_lines(path, start, chunk):
        yield parse_stdout(block), len(block)


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


def read_stdout(path: Path, start: int = 0) -> tuple[StdoutInfo, int]:
    """(step-line scalars, bytes of complete lines read) of a stdout.log from ``start`` on, incrementally."""
    info = StdoutInfo()
    used = 0
    for block in iter_lines(path, start):
        more = parse_stdout(block)
        merge(info.streams, more.streams)
        if more.last_step is not None:
            info.total_steps, info.last_step = more.total_steps, more.last_step
        used += len(block)
    return info, used


def read_head(path: Path, n: int) -> tuple[int, bytes]:
    """(size, the first ``n`` bytes) of a log; (0, b"") when it does not exist."""
    try:
        with open_regular(path, "log file", _FOLDER_HINT.format(path.name)) as f:
            return os.fstat(f.fileno()).st_size, f.read(n)
    except FileNotFoundError:
        return 0, b""
    except OSError as e:
        raise _log_error(path, e) from None


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
    def diverged(self) -> Optional[Divergence]:
        """The train loss (else the val loss) has been NaN/inf since some step, or None."""
        for tag in ("loss/train", "loss/val"):
            if self.streams.get(tag):
                return divergence(self.streams[tag], tag)
        return None

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
    if run.exists() and not run.is_dir():
        check_regular(run, MAIN_LOG)           # a device, FIFO or socket: exit 2 naming it
        streams, bad, _ = read_main_log(run)
        if not name and run.name != MAIN_LOG:
            name = run.stem
        return RunLogs(run.parent, streams, None, bad, True, False, name)
    main_path, out_path = run / MAIN_LOG, run / STDOUT_LOG
    streams, bad, _ = read_main_log(main_path)
    info, _ = read_stdout(out_path)
    streams.update(info.streams)
    return RunLogs(run, streams, info.total_steps, bad, main_path.exists(), out_path.exists(), name)
