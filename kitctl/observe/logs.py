"""llm.c's logs -> numbers: one series (step -> value) per tag, read from a run folder's logs.

Sources (both in a run folder ``<data_root>/runs/<name>/``):

* ``main.log``, llm.c's ``s:N trl:x`` / ``s:N tel:x`` / ``s:N eval:x`` lines: read by the run folder's one
  main.log reader (:func:`kitctl.core.run_folder.parse_main_log`, in bounded blocks; the format and its rules, last
  value for a step wins after a resume, are described there).
* ``stdout.log`` (llm.c's stdout as the train command saved it): the step line of ``train_gpt2.cu``
  (:func:`kitctl.core.run_folder.parse_step`)::

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from kitctl.core.files import check_regular
from kitctl.core.llmc_files import MAIN_LOG
from kitctl.core.run_folder import (LOG_CHUNK, MAX_STEP, RunFolder, Series, Streams, complete_part, iter_lines,
                                    last_logged, log_number, merge, parse_step, put_last, read_main_log)

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
        ms, tok = log_number(s.ms), log_number(s.tok_s)
        if ms is not None:
            put_last(info.streams.setdefault(STDOUT_TAGS["ms"], {}), step, ms)
        if tok is not None:
            put_last(info.streams.setdefault(STDOUT_TAGS["tok_s"], {}), step, tok)
        info.total_steps = s.total
        info.last_step = step
    return info


def iter_stdout(path: Path, start: int = 0, chunk: int = LOG_CHUNK) -> Iterator[tuple[StdoutInfo, int]]:
    """(step-line scalars, bytes) of a stdout.log block by block."""
    for block in iter_lines(path, start, chunk):
        yield parse_stdout(block), len(block)


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
    folder = RunFolder(run)
    main_path, out_path = folder.main_log, folder.stdout_log
    streams, bad, _ = folder.read_main_log()
    info, _ = read_stdout(out_path)
    streams.update(info.streams)
    return RunLogs(run, streams, info.total_steps, bad, main_path.exists(), out_path.exists(), name)
