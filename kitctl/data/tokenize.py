"""The parallel tokenize -> shard pipeline.

Shape (measured on 2 cores, see docs/data.md): the main process reads record batches from the source
(pyarrow, cheap) and hands each batch to worker process ``i % N`` (round robin, bounded queues, so memory
stays flat and results come back in order without sorting). A worker tokenizes every document as
``[EOT] + encode_ordinary(text)`` with tiktoken's ``encode_to_numpy`` (no Python int lists), and sends
back one uint16 array per batch plus the per-document lengths. The main process copies tokens into the
shard buffer and writes shards with numpy (``ShardWriter``), recording after every shard the document and
offset where the next one starts -- that is the resume point in ``manifest.json``.

tiktoken's own ``encode_ordinary_batch`` uses threads, but its Rust core holds the GIL while encoding, so
threads do not scale; processes do.
"""
from __future__ import annotations

import datetime as _dt
import os
import queue
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from kitctl.data import manifest as mf
from kitctl.data.shards import EOT, HEADER_BYTES, ShardWriter
from kitctl.data.sources import BATCH_ROWS, Source
from kitctl.core.errors import KitError
from kitctl.core.files import existing_parent, free_bytes

DEFAULT_SHARD_SIZE = 10**8
QUEUE_DEPTH = 3          # batches in flight per worker


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------ tokenizing
_ENC = None
_EOT_ARR = np.array([EOT], dtype=np.uint32)


def _encoding():
    global _ENC
    if _ENC is None:
        from kitctl.data.tokenizer import get_encoding

        _ENC = get_encoding()
    return _ENC


def _encode(enc, text: str) -> np.ndarray:
    # == encode_ordinary(text): no special tokens allowed, none disallowed, so "<|endoftext|>" is plain text
    try:
        return enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
    except UnicodeEncodeError:   # lone surrogates: the same fix-up tiktoken's encode_ordinary applies
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())


def tokenize_batch(texts) -> tuple[np.ndarray, np.ndarray]:
    """Documents -> (concatenated uint16 tokens, per-document token counts incl. the EOT)."""
    enc = _encoding()
    if not isinstance(texts, list):          # a pyarrow string array
        texts = texts.to_pylist()
    parts = []
    lens = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        a = _encode(enc, t if t is not None else "")
        parts.append(_EOT_ARR)
        parts.append(a)
        lens[i] = len(a) + 1
    if not parts:
        return np.empty(0, np.uint16), lens
    return np.concatenate(parts).astype(np.uint16), lens


_LOCK_FDS: set[int] = set()   # folder-lock fds of this process (see _lock); a forked worker drops its copies


def _die_with_parent(parent: int) -> None:
    """Worker start: never hold the parent's folder lock, and die when the parent dies (even by kill -9).

    A forked child shares the parent's open files, and flock() is only released when every copy is closed:
    a worker that outlived a killed parent would keep the folder locked. We point our copies of the lock fds
    at /dev/null (releasing them, while their numbers stay valid), and ask Linux for SIGKILL when the parent
    goes (PR_SET_PDEATHSIG); the parent-pid checks in ``_worker`` stay as the portable fallback."""
    if _LOCK_FDS:
        null = os.open(os.devnull, os.O_RDONLY)
        for fd in _LOCK_FDS:
            try:
                os.dup2(null, fd)
            except OSError:
                pass
        os.close(null)
        _LOCK_FDS.clear()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)   # 1 = PR_SET_PDEATHSIG
        except Exception:   # pragma: no cover - no libc prctl
            pass
    if os.getppid() != parent:    # the parent died before prctl took effect
        os._exit(0)


def _worker(in_q, out_q, parent: int) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the parent handles Ctrl-C and stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)    # (not the parent's SIGTERM -> KeyboardInterrupt)
    out_q.cancel_join_thread()    # if the parent was killed, exit without waiting to flush to nobody
    while True:
        try:
            item = in_q.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:               # parent was killed: exit instead of lingering
                return
            continue
        if item is None:
            return
        try:
            res: Any = tokenize_batch(item)
        except BaseException as e:                   # report, don't die silently
            res = ("error", f"{type(e).__name__}: {e}")
        while True:
            try:
                out_q.put(res, timeout=1.0)
                break
            except queue.Full:
                if os.getppid() != parent:
                    return


class _Pool:
    """N worker processes fed round robin; results are read back in submission order."""

    def __init__(self, n: int):
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        self.n = n
        self.ins = [ctx.Queue(QUEUE_DEPTH) for _ in range(n)]
        self.outs = [ctx.Queue(QUEUE_DEPTH + 1) for _ in range(n)]
        self.procs = [ctx.Process(target=_worker, args=(self.ins[i], self.outs[i], os.getpid()), daemon=True)
                      for i in range(n)]
        # children must start with default SIGTERM and ignored SIGINT (not inherit our handlers)
        old = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            for p in self.procs:
                p.start()
        except ValueError:   # not the main thread: signals can't be set, start as is
            for p in self.procs:
                if p.pid is None:
                    p.start()
        finally:
            try:
                signal.signal(signal.SIGTERM, old[0])
                signal.signal(signal.SIGINT, old[1])
            except ValueError:
                pass
        self.sent = 0
        self.pending: deque[int] = deque()

    def submit(self, batch) -> None:
        w = self.sent % self.n
        self.ins[w].put(batch)
        self.pending.append(w)
        self.sent += 1

    def full(self) -> bool:
        return len(self.pending) >= self.n * QUEUE_DEPTH

    def get(self):
        w = self.pending.popleft()
        while True:
            try:
                res = self.outs[w].get(timeout=5.0)
                break
            except queue.Empty:
                if not self.procs[w].is_alive():
                    raise KitError(f"tokenizer worker {w} died (exit code {self.procs[w].exitcode})",
                                   "out of memory? try fewer --workers") from None
        if isinstance(res, tuple) and len(res) == 2 and isinstance(res[0], str):
            raise KitError(f"tokenizing failed in a worker: {res[1]}")
        return res

    def close(self, kill: bool = False) -> None:
        for p, q in zip(self.procs, self.ins):
            if kill:
                p.terminate()
            else:
                try:
                    q.put_nowait(None)
                except Exception:
                    p.terminate()
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        for q in self.ins + self.outs:
            q.cancel_join_thread()
            q.close()


def iter_tokens(source: Source, start_doc: int = 0, workers: int = 0, batch_rows: int = BATCH_ROWS):
    """(tokens, lens) per batch, in order. ``workers=0`` tokenizes in this process."""
    batches = source.iter_batches(start_doc=start_doc, batch_rows=batch_rows)
    if workers <= 0:
        for b in batches:
            yield tokenize_batch(b)
        return
    pool = _Pool(workers)
    ok = False
    try:
        for b in batches:
            pool.submit(b)
            if pool.full():
                yield pool.get()
        while pool.pending:
            yield pool.get()
        ok = True
    finally:
        pool.close(kill=not ok)


# ------------------------------------------------------------------------------------------- the run
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


ProgressFn = Callable[[int, int], None]   # (tokens added, current shard index)


def _clean_leftovers(out_dir: Path, name: str, from_index: int) -> None:
    for p in out_dir.glob(f".{name}_*.bin.tmp"):
        p.unlink(missing_ok=True)
    for p in list(out_dir.glob(f"{name}_val_*.bin")) + list(out_dir.glob(f"{name}_train_*.bin")):
        try:
            idx = int(p.stem.rsplit("_", 1)[1])
        except ValueError:
            continue
        if idx >= from_index:
            p.unlink()


def _valid_prefix(m: mf.DataManifest, log: Optional[Callable[[str], None]] = None) -> list[mf.Shard]:
    """Shards of the manifest whose files are intact -- size, llm.c header, token count and the sha256 the
    manifest recorded -- in order, up to the first bad one. A re-run resumes there and rewrites everything
    after it (a shard's contents depend on every document before it). Hashing is cheap next to tokenizing."""
    from kitctl.data.shards import check_shard
    from kitctl.core.files import sha256_file

    good = []
    for s in m.shards:
        if s.end is None:          # no resume point recorded
            break
        p = m.dir / s.file
        why = None
        if not p.is_file():
            why = "missing"
        elif p.stat().st_size != HEADER_BYTES + 2 * s.tokens:
            why = f"{p.stat().st_size:,} bytes, the manifest says {s.tokens:,} tokens"
        else:
            try:
                check_shard(p)
            except KitError as e:
                why = e.message.replace(f"{p}: ", "")
            else:
                if sha256_file(p) != s.sha256:
                    why = "sha256 differs from the manifest"
        if why:
            if log:
                log(f"{s.file}: {why}; rewriting from shard {s.index} on")
            break
        good.append(s)
    return good


def prepare_manifest(out_dir: Path, name: str, dataset: str, run: dict[str, Any]) -> mf.DataManifest:
    """Open (resume) or start the manifest of ``out_dir``; refuse a folder made with another config."""
    out_dir = Path(out_dir)
    if mf.exists(out_dir):
        m = mf.load(out_dir)
        diff = mf.identity_diff(m.run, run)
        if m.name != name:
            diff.insert(0, f"name: folder has {m.name!r}, this run wants {name!r}")
        if diff:
            raise KitError(
                f"{out_dir} already holds shards made with a different config:\n    " + "\n    ".join(diff),
                "re-run with the same options to continue that run, pick another --out folder, "
                "or delete the folder to start over", exit_code=2)
        return m
    existing = sorted(out_dir.glob("*.bin")) if out_dir.is_dir() else []
    existing = [p for p in existing if p.name not in ("gpt2_tokenizer.bin",)]
    if existing:
        raise KitError(f"{out_dir} holds .bin files ({existing[0].name}, ...) but no {mf.MANIFEST}, so they "
                       "were not made by kitctl data (or the manifest was deleted)",
                       "pick another --out folder, or move those files away")
    out_dir.mkdir(parents=True, exist_ok=True)
    return mf.DataManifest(dir=out_dir, name=name, dataset=dataset, run=run)


def make_shards(source: Source, out_dir: Path, name: str, run: dict[str, Any], dataset: str = "local",
                workers: Optional[int] = None, progress: Optional[ProgressFn] = None,
                batch_rows: int = BATCH_ROWS, log: Optional[Callable[[str], None]] = None) -> Summary:
    """Tokenize ``source`` into llm.c shards in ``out_dir``, resuming from its manifest if there is one.

    ``run`` must hold at least ``shard_size``, ``first_shard_size``, ``source_fingerprint`` (see manifest.py).
    Every shard kept from an earlier run is re-checked (size, header, sha256); ``log`` hears about a bad one.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(out_dir)
    try:
        return _make_shards(source, out_dir, name, run, dataset, workers, progress, batch_rows, t0, log)
    finally:
        _LOCK_FDS.discard(lock.fileno())
        lock.close()


def _lock(out_dir: Path):
    """One writer per folder: a second `kitctl data` on the same --out is refused, not interleaved."""
    import fcntl

    f = open(out_dir / ".kitctl-data.lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise KitError(f"another `kitctl data` is writing {out_dir} right now",
                       "wait for it to finish (or stop it); re-running the same command later continues it") from None
    _LOCK_FDS.add(f.fileno())     # tokenizer workers fork from us: they close their copy (_die_with_parent)
    return f


def _make_shards(source, out_dir, name, run, dataset, workers, progress, batch_rows, t0, log) -> Summary:
    m = prepare_manifest(out_dir, name, dataset, run)
    shard_size, first = int(run["shard_size"]), int(run.get("first_shard_size") or run["shard_size"])
    good = _valid_prefix(m, log)
    if m.complete:
        if len(good) == len(m.shards):
            return Summary(out_dir, 0, 0, m.total_tokens, len(m.shards), time.perf_counter() - t0,
                           resumed_from=len(m.shards), already_complete=True)
        m.complete = False
    m.shards = good
    m.run = {**m.run, **{k: v for k, v in run.items() if k not in mf.IDENTITY}}
    m.run.setdefault("started", _now())
    start_index = len(m.shards)
    if m.shards:
        end = m.shards[-1].end
        start_doc, skip_tokens, start_pos = end["doc"], end["offset"], end["pos"]
    else:
        start_doc = skip_tokens = start_pos = 0
    _clean_leftovers(out_dir, name, start_index)
    m.save()

    # where are we in the document stream? (to record each shard's end as document + offset)
    cur = {"doc0": start_doc, "doc0_pos": start_pos - skip_tokens, "cum": np.zeros(0, np.int64)}
    written = {"tokens": 0, "shards": 0}

    def on_shard(index: int, path: Path, n: int, sha: str, end_pos: int) -> None:
        local = end_pos - cur["doc0_pos"]
        cum = cur["cum"]
        k = int(np.searchsorted(cum, local, side="right"))
        doc = cur["doc0"] + k
        offset = int(local - (cum[k - 1] if k > 0 else 0))
        m.shards.append(mf.Shard(index=index, file=path.name, tokens=n, sha256=sha,
                                 split="val" if index == 0 else "train",
                                 end={"doc": doc, "offset": offset, "pos": end_pos}))
        m.save()
        written["tokens"] += n
        written["shards"] += 1

    writer = ShardWriter(out_dir, name, shard_size, first, start_index=start_index, start_pos=start_pos,
                         on_shard=on_shard)
    old_term = _sigterm_as_interrupt()
    try:
        first_batch = True
        for tokens, lens in iter_tokens(source, start_doc, default_workers() if workers is None else workers,
                                        batch_rows):
            if first_batch and skip_tokens:
                tokens = tokens[skip_tokens:]
            first_batch = False
            cum = np.cumsum(lens)
            cur["cum"] = cum
            writer.add(tokens)
            cur["doc0"] += len(lens)
            cur["doc0_pos"] += int(cum[-1]) if len(cum) else 0
            cur["cum"] = np.zeros(0, np.int64)
            if progress:
                progress(len(tokens), writer.index)
        # the last, partial shard: its end is the end of the stream
        writer.close()
    finally:
        writer.abort()        # interrupted or failed: no temp file left behind (no-op after close)
        _restore_sigterm(old_term)
    m.complete = True
    m.run["finished"] = _now()
    m.save()
    return Summary(out_dir, written["tokens"], written["shards"], m.total_tokens, len(m.shards),
                   time.perf_counter() - t0, resumed_from=start_index)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _sigterm_as_interrupt():
    """`docker stop` / kill send SIGTERM: stop like Ctrl-C (no partial files, resumable)."""
    try:
        def handler(signum, frame):
            raise KeyboardInterrupt
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:        # not the main thread
        return None


def _restore_sigterm(old) -> None:
    if old is not None:
        signal.signal(signal.SIGTERM, old)


# ---------------------------------------------------------------------------------------- disk space
def estimate_bytes(tokens: int, n_shards_hint: int = 1) -> int:
    return 2 * tokens + HEADER_BYTES * max(1, n_shards_hint)


def check_space(need: dict[Path, int], free_fn: Callable[[Path], int] = None) -> None:
    """``need``: {folder: bytes}. Folders on the same filesystem are summed. Raises KitError when short."""
    free_fn = free_fn or free_bytes
    by_dev: dict[Any, list] = {}
    for folder, nbytes in need.items():
        probe = existing_parent(Path(folder))
        try:
            dev = os.stat(probe).st_dev
        except OSError:
            dev = str(probe)
        entry = by_dev.setdefault(dev, [probe, 0, []])
        entry[1] += nbytes
        entry[2].append(f"{folder} {_gb(nbytes)}")
    for probe, nbytes, parts in by_dev.values():
        free = free_fn(probe)
        if nbytes > free:
            raise KitError(
                f"not enough disk space: need about {_gb(nbytes)} on {probe} ({'; '.join(parts)}), "
                f"{_gb(free)} free",
                "point data_root (kit.yaml) or --out at a bigger disk; --stream avoids the HF cache; "
                "a smaller dataset (e.g. fineweb10B) needs less")


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
