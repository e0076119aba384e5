"""One tokenize run: a source -> llm.c shards in a folder, resumable, one writer at a time.

The documents are tokenized on every core (``kitctl.data.pool``), cut into shards exactly like llm.c's
fineweb.py and recorded in ``manifest.json`` with, per shard, the document and offset where the next one starts:
the resume point. The writing, resuming and saving are kitctl.core.data_folder.DataFolder's (its ``writer()``);
this module feeds it tokens and resume points. A re-run with the same identity re-checks every shard the manifest
lists (size, header, sha256), keeps the intact prefix and continues from its end, skipping earlier documents
without tokenizing them.

The manifest is not rewritten after every shard (that is quadratic in the shard count): it is saved when
the shards since the last save reach 1/16 of those it lists, or 5 s have passed -- so every shard of a
normal run (100M tokens, ~15 s) is recorded as it lands, and tiny shards cost O(n) JSON in all -- and always
when the run stops (Ctrl-C, SIGTERM, an error) or completes. After kill -9, shards past the last save are
rewritten by the next run (same bytes).
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Generator, Iterator, Optional

import numpy as np

from kitctl.core.data_folder import DataFolder, ShardWriter
from kitctl.core.data_manifest import MANIFEST, DataManifest, EncoderInfo, RunInfo, RunLike, ShardEnd, as_run
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.records import short
from kitctl.core.proc import TerminationAsInterrupt
from kitctl.data import encoders
from kitctl.data.pool import LOCK_FDS, default_workers, iter_tokens
from kitctl.data.sources import BATCH_ROWS, Source

DEFAULT_SHARD_SIZE = 10**8
LOCK_FILE = ".kitctl-data.lock"
FELL_BACK = "fell back:"        # the manifest's encoder.gate of a run whose fast encoder failed the identity gate

ProgressFn = Callable[[int, int], None]   # (tokens added, current shard index)
LogFn = Callable[[str], None]


@dataclass
class Summary:
    out_dir: Path
    tokens: int            # tokens written in this run
    shards: int            # shards written in this run
    total_tokens: int      # tokens in the folder
    total_shards: int
    seconds: float
    resumed_from: int = 0  # shard index this run started at
    already_complete: bool = False

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _lock(out_dir: Path) -> IO:
    """One writer per folder: a second `kitctl data` on the same --out is refused, not interleaved.
    (flock: released by the kernel when the last copy of the fd closes; forked workers close theirs.)"""
    f = open(out_dir / LOCK_FILE, "w")   # noqa: SIM115 - held for the whole run; make_shards closes it
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise KitError(f"another `kitctl data` is writing {out_dir} right now",
                       "wait for it to finish (or stop it); re-running the same command later continues it") from None
    LOCK_FDS.add(f.fileno())      # tokenizer workers fork from us: they drop their copy (pool._die_with_parent)
    return f


_NONE = np.zeros(0, np.int64)


@dataclass
class _Cursor:
    """Where the batch being written starts in the document stream (to record each shard's end as document +
    offset): its first document's index and stream position, and its documents' cumulative token counts."""

    doc0: int
    doc0_pos: int
    cum: np.ndarray = field(default_factory=lambda: _NONE)


def make_shards(source: Source, out_dir: Path, name: str, run: RunLike, dataset: str = "local",
                workers: Optional[int] = None, progress: Optional[ProgressFn] = None,
                batch_rows: int = BATCH_ROWS, log: Optional[LogFn] = None, encoder: Optional[str] = None) -> Summary:
    """Tokenize ``source`` into llm.c shards in ``out_dir``, resuming from its manifest if there is one.

    ``run`` (a :class:`kitctl.core.data_manifest.RunInfo` or its dict) holds at least ``shard_size`` and
    ``source_fingerprint``. Every shard kept from an earlier run is re-checked; ``log`` hears about a bad one.
    ``encoder``: a name of :mod:`kitctl.data.encoders` (default: :func:`kitctl.data.encoders.choose`'s pick); it
    must encode a sample of this run's first documents exactly like tiktoken, or the run uses tiktoken."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    new = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = _lock(out_dir)
    except OSError as e:
        raise _os_error(e, out_dir) from None
    ok = False
    try:
        summary = _make_shards(_Job(source, out_dir, name, as_run(run), dataset, workers, progress, batch_rows, log,
                                    encoder, t0))
        ok = True
        return summary
    finally:
        LOCK_FDS.discard(lock.fileno())
        lock.close()
        if not ok and new:
            _remove_if_nothing_made(out_dir)


def _remove_if_nothing_made(out_dir: Path) -> None:
    """A first run that failed before its first shard made only the lock and an empty manifest: it leaves
    nothing (a failed run's folder would bind nothing anyway, see DataFolder.resume_or_start)."""
    names = {p.name for p in out_dir.iterdir()}
    if not names <= {LOCK_FILE, MANIFEST}:
        return
    if MANIFEST in names:
        try:
            if DataFolder(out_dir).manifest().shards:
                return
        except KitError:
            return
    for n in names:
        (out_dir / n).unlink()
    out_dir.rmdir()


def _os_error(e: OSError, out_dir: Path) -> KitError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return KitError(f"writing {out_dir} failed: {e.strerror} ({e.filename or out_dir})",
                        "free space there (or point --out / data_root at a bigger disk) and re-run the same command: "
                        "finished shards are kept, nothing partial was left under a shard's name")
    return ConfigError(f"writing {out_dir} failed: {e.strerror or e} ({e.filename or out_dir})",
                       "check that the folder is writable (ls -ld) and re-run the same command")


@dataclass
class _Job:
    """One make_shards call: what to tokenize, where, and how."""

    source: Source
    out_dir: Path
    name: str
    run: RunInfo
    dataset: str
    workers: Optional[int]
    progress: Optional[ProgressFn]
    batch_rows: int
    log: Optional[LogFn]
    encoder: Optional[str]
    t0: float

    def summary(self, m: DataManifest, start_index: int, **kw: Any) -> Summary:
        made = m.shards[start_index:]
        return Summary(self.out_dir, sum(s.tokens for s in made), len(made), m.total_tokens, len(m.shards),
                       time.perf_counter() - self.t0, resumed_from=start_index, **kw)


def _make_shards(job: _Job) -> Summary:
    folder = DataFolder(job.out_dir)
    m = folder.resume_or_start(job.name, job.dataset, job.run, job.log)
    if m.complete:      # complete only when it holds exactly what it lists; missing or changed shards are rewritten
        folder.refuse(m, ("stray", "special", "name"))
    good = folder.intact_prefix(m, job.log)
    if m.complete and len(good) == len(m.shards):
        folder.restamp(m, job.log)
        return job.summary(m, len(m.shards), already_complete=True)
    started = m.run.started if m.shards else None
    m.complete, m.shards = False, good
    m.run = job.run.model_copy(update={"started": started or _now(), "finished": None, "failed": None})
    start_index = len(m.shards)
    _write_from(folder, m, job)
    return job.summary(m, start_index)


def _write_from(folder: DataFolder, m: DataManifest, job: _Job) -> None:
    """Tokenize from the end of ``m``'s intact shards to the end of the input, then record the folder complete.
    A failure is recorded in the manifest (Ctrl-C is not a failure) with every finished shard, then raised."""
    start_index = len(m.shards)
    end = m.shards[-1].end if m.shards else None
    start_doc, skip_tokens, start_pos = (end.doc, end.offset, end.pos) if end else (0, 0, 0)
    cur = _Cursor(doc0=start_doc, doc0_pos=start_pos - skip_tokens)   # the batch being written, for shard ends

    def resume_point(end_pos: int) -> ShardEnd:
        local = end_pos - cur.doc0_pos
        k = int(np.searchsorted(cur.cum, local, side="right"))
        offset = int(local - (cur.cum[k - 1] if k > 0 else 0))
        return ShardEnd(doc=cur.doc0 + k, offset=offset, pos=end_pos)

    shard_size = int(job.run.shard_size or DEFAULT_SHARD_SIZE)
    writer = folder.writer(m, shard_size, int(job.run.first_shard_size or shard_size), resume_point)
    _save(writer, job.out_dir, lambda: folder.clean_leftovers(job.name, start_index))
    input_changed = _InputGuard(job.source, writer, start_index)
    stream: Optional[_Stream] = None
    failure: Optional[BaseException] = None
    try:
        with TerminationAsInterrupt():       # `docker stop` / kill: stop like Ctrl-C (resumable)
            stream = _Stream(lambda: job.source.iter_batches(start_doc=start_doc, batch_rows=job.batch_rows),
                             job.workers)
            m.run.encoder = stream.gated(job.encoder, job.log)
            _feed(stream, writer, cur, skip_tokens, job.progress)
            writer.close()                   # the last, partial shard: its end is the end of the stream
            changed = input_changed()        # the fingerprint's files, checked again after reading
            if changed is not None:
                raise changed
    except OSError as e:
        failure = e
        raise (input_changed() or _os_error(e, job.out_dir)) from None
    except KitError as e:
        failure = e
        raise (input_changed() or e) from None
    except BaseException as e:
        failure = e
        raise
    finally:
        if stream is not None:
            stream.close()                   # stop the tokenizer workers now (queued batches are dropped)
        writer.abort()                       # no temp file left behind (a no-op after close)
        if failure is not None:
            _record_failure(m, writer, failure)
    m.complete = True
    m.run.finished = _now()
    _save(writer, job.out_dir)


def _save(writer: ShardWriter, out_dir: Path, before: Optional[Callable[[], None]] = None) -> None:
    """The manifest saved (after ``before``), a disk error said as the data stage's own."""
    try:
        if before is not None:
            before()
        writer.save()
    except OSError as e:
        raise _os_error(e, out_dir) from None


def _record_failure(m: DataManifest, writer: ShardWriter, failure: BaseException) -> None:
    """Every finished shard stays recorded, and why the run stopped (Ctrl-C is a stop, not a failure)."""
    if not isinstance(failure, KeyboardInterrupt):
        m.run.failed = short(f"{type(failure).__name__}: {getattr(failure, 'message', None) or failure}")
    try:
        writer.save()
    except OSError:
        pass


class _Stream:
    """The run's token stream behind its identity gate. :meth:`gated` picks the encoder (``--encoder``, else the
    fast one when installed at its pin), encodes a sample of the run's first documents with it, starts the
    stream with it and encodes the same sample with tiktoken while the first batches are tokenized (tiktoken's
    load and encode are then off the critical path); nothing is written before that: the first tokens are
    handed on only once the two agreed token by token. A difference (or an error) and the stream starts over
    with tiktoken, which the run says and the manifest records. Iterating gives (tokens, lens) per batch;
    :meth:`close` stops the tokenizer threads or processes."""

    def __init__(self, batches_from: Callable[[], Iterator[Any]], workers: Optional[int]):
        self.batches_from, self.workers = batches_from, workers
        self.tokens: Generator[tuple[np.ndarray, np.ndarray], None, None] = _nothing()
        self.head: Optional[tuple[np.ndarray, np.ndarray]] = None

    def _start(self, batches: Iterator[Any], name: str, fell_back: bool = False) -> None:
        n = default_workers(name) if self.workers is None else self.workers
        if n == 0 and fell_back:
            n = default_workers(encoders.REFERENCE)   # not tiktoken in one thread: its processes
        self.tokens = iter_tokens(batches, n, name)

    def gated(self, requested: Optional[str], log: Optional[LogFn]) -> EncoderInfo:
        name, note = encoders.choose(requested)
        if note and log and requested is None:
            log(note)
        batches = self.batches_from()
        first = next(batches, None)
        if first is None:
            self._start(iter(()), name)
            return _info(encoders.REFERENCE if name == encoders.REFERENCE else name, "no documents to check")
        docs = first if isinstance(first, list) else first.slice(0, encoders.GATE_DOCS).to_pylist()
        pending = encoders.start_gate(name, docs)
        if name == encoders.REFERENCE:
            self._start(itertools.chain([first], batches), name)
            return _info(name, "the reference")
        if pending.failed is None:            # the first batches are tokenized while tiktoken checks the sample
            self._start(itertools.chain([first], batches), name)
            self.head = next(self.tokens, None)
        g = encoders.finish_gate(pending)
        if not g.mismatch:
            return _info(name, f"identical to tiktoken on the run's first {g.docs} documents ({g.tokens:,} tokens)")
        if log:
            log(f"warning: {g.mismatch}: this run uses tiktoken (the reference) instead; the shards are "
                "unaffected, only slower")
        if pending.failed is None:             # the candidate's tokens are dropped (none was written): read again
            self.close()
            self.head, batches = None, self.batches_from()
        else:
            batches = itertools.chain([first], batches)
        self._start(batches, g.encoder, fell_back=True)
        return _info(g.encoder, f"{FELL_BACK} {g.mismatch}")

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        if self.head is not None:
            head, self.head = self.head, None
            return head
        return next(self.tokens)

    def close(self) -> None:
        self.tokens.close()


def _nothing() -> Generator[tuple[np.ndarray, np.ndarray], None, None]:
    yield from ()


def _info(name: str, gate: str) -> EncoderInfo:
    return EncoderInfo(name=name, version=encoders.installed_version(name) or "", gate=gate)


def _feed(stream: Iterator[tuple[np.ndarray, np.ndarray]], writer: ShardWriter, cur: _Cursor, skip_tokens: int,
          progress: Optional[ProgressFn]) -> None:
    """Write the token stream into shards, keeping ``cur`` at the batch being written (for each shard's end)."""
    first_batch = True
    for tokens, lens in stream:
        if first_batch and skip_tokens:
            tokens = tokens[skip_tokens:]
        first_batch = False
        cur.cum = np.cumsum(lens)
        writer.add(tokens)
        cur.doc0 += len(lens)
        cur.doc0_pos += int(cur.cum[-1]) if len(cur.cum) else 0
        cur.cum = _NONE
        if progress:
            progress(len(tokens), writer.index)


class _InputGuard:
    """The inputs changed while they were read: drop this run's shards (they may mix old and new bytes under
    the old fingerprint) and say so; the next run fingerprints the input as it is then and starts over.
    Calling it returns that error (the same one every time), or None while the inputs are unchanged."""

    def __init__(self, source: Source, writer: ShardWriter, start_index: int):
        self.source, self.writer, self.start_index = source, writer, start_index
        self.reported: Optional[KitError] = None

    def __call__(self) -> Optional[KitError]:
        if self.reported is not None:
            return self.reported
        changes = self.source.changed()
        if not changes:
            return None
        self.writer.m.run.failed = "the input changed while it was read"
        n = len(self.writer.m.shards) - self.start_index
        try:
            self.writer.drop_since(self.start_index)
        except OSError:
            pass
        self.reported = KitError(
            "the input changed while kitctl data read it:\n    " + "\n    ".join(changes[:10])
            + (f"\n    ... and {len(changes) - 10} more" if len(changes) > 10 else "")
            + f"\n  the {n} shard(s) this run wrote were deleted: they could mix the old and the new bytes",
            "re-run the same command once the input has stopped changing: it tokenizes the input as it "
            "is then (a download or an editor still writing it? wait for it to finish)")
        return self.reported
