"""Tokenizing documents on every core: ``[EOT] + encode_ordinary(text)`` per document, batches in order.

Shape (measured on 2 cores, see docs/data.md): the main process reads record batches from the source (pyarrow,
cheap) and hands batch *i* to worker process *i mod N* (forked, bounded queues, so memory stays flat and
results come back in order without sorting; the text and the tokens travel through shared-memory slots,
``kitctl.data.slots``, not pipes). A worker tokenizes a whole batch with ONE call of the run's encoder
(``kitctl.data.encoders``: tiktoken, or the gated fast one, built in the parent before the fork) and sends back
one uint16 array plus the per-document lengths (no Python lists of ints).

Why processes, not threads: tiktoken releases the GIL, so threads would scale, but measured here tiktoken's
Rust core runs 25-38% slower per token in any thread other than a process's main thread (Python's own ``re`` and
hashlib do not), while a forked worker's main thread runs at full speed (bench notes in docs/data.md).

The fast encoder (gigatoken) is the exception: it releases the GIL and runs at full speed on any thread, so
by default it tokenizes in this process (``workers=0``): a reader thread decodes parquet ahead, encode threads
tokenize the arrow batches in place, and the main thread writes and hashes the shards -- no fork, no copy of
the text into shared memory and of the tokens out of it (measured on 2 cores, 200 MB of varied text: 2.0-2.2
CPU-s for the whole stream vs 2.3-2.7 with one worker process; docs/data.md).
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
from collections import deque
from typing import Any, Generator, Iterable, Optional


from kitctl.core.errors import KitError
from kitctl.data import slots
from kitctl.data.slots import Slots
from kitctl.data import encoders
from kitctl.data.encoders import Encoder

IN_FLIGHT_PER_WORKER = 3          # batches queued per worker
THREAD_IN_FLIGHT = 6              # batches queued for the encode threads (a run's gate encodes tiktoken's side of its
                                  # sample after the first batch: the encode thread keeps ~0.15 s of work meanwhile)

TokenBatch = encoders.TokenBatch   # (uint16 tokens, int64 tokens per document incl. its EOT)


def cores() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_workers(encoder: str = encoders.REFERENCE) -> int:
    """Tokenizer processes: one per core with tiktoken (the BPE is the cost). With the fast encoder none: it
    runs on threads of this process (:func:`iter_tokens`; one gigatoken thread encodes faster than one process
    reads parquet and writes shards, and the processes' copies through shared memory cost more than they gave:
    measured in docs/data.md)."""
    return 0 if encoder == encoders.FAST else cores()


def encode_threads() -> int:
    """Encode threads of the in-process path with a GIL-free encoder: one per core, at most 3 -- past that the
    reader (parquet) is the limit. The encode is the stream's largest part and the reader and the writing main
    thread wait most of the time: on 2 cores 2 encode threads were faster than 1 in 4 of 4 alternated pairs at
    load ~1 (varied 200 MB: 1.47-1.69 vs 1.78-2.06 s end to end; synthetic 3 of 4), the same at load 1.4 (6+6
    runs: best 1.83 s both, medians 1.93 vs 1.97 s, ~0.1 CPU-s more) and at load 0.6 (4+4: best 1.54 vs 1.51 s,
    medians 1.59 vs 1.66 s); docs/data.md "Toward the floor"."""
    return max(1, min(cores(), 3))


def tokenize_batch(texts: Any, encoder: Optional[Encoder] = None) -> TokenBatch:
    """Documents (a list of str, or a pyarrow string array) -> (concatenated uint16 tokens, per-document
    token counts incl. the EOT), with ``encoder`` (default: tiktoken, the reference)."""
    encoder = encoder or encoders.load(encoders.REFERENCE)
    if not isinstance(texts, list):          # a pyarrow string array
        if getattr(encoder, "takes_arrow", False):
            return encoder.encode_docs(texts.fill_null("") if texts.null_count else texts)
        texts = texts.to_pylist()
    if None in texts:
        texts = [t if t is not None else "" for t in texts]
    return encoder.encode_docs(texts)


LOCK_FDS: set[int] = set()   # folder-lock fds of this process (kitctl.data.tokenize); a forked worker drops its copies


def _die_with_parent(parent: int) -> None:
    """Worker start: never hold the parent's folder lock, and die when the parent dies (even by kill -9).

    A forked child shares the parent's open files, and flock() is only released when every copy is closed:
    a worker that outlived a killed parent would keep the folder locked. We point our copies of the lock fds
    at /dev/null (releasing them, while their numbers stay valid), and ask Linux for SIGKILL when the parent
    goes (PR_SET_PDEATHSIG); the parent-pid checks in ``_worker`` stay as the portable fallback."""
    if LOCK_FDS:
        null = os.open(os.devnull, os.O_RDONLY)
        for fd in LOCK_FDS:
            try:
                os.dup2(null, fd)
            except OSError:
                pass
        os.close(null)
        LOCK_FDS.clear()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)   # 1 = PR_SET_PDEATHSIG
        except Exception:   # pragma: no cover - no libc prctl
            pass
    if os.getppid() != parent:    # the parent died before prctl took effect
        os._exit(0)


def _keep_freed_memory() -> None:
    """glibc: serve the per-batch buffers (joined text, token buffers: MBs each) from the heap and keep freed
    memory, instead of mmap + munmap per batch -- which costs a page fault per 4 KB on every batch (measured:
    80k faults per 200 MB of text without, 12k with)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 256 << 20)    # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 << 20)    # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _worker(in_q, out_q, parent: int, ins: Slots, outs: Slots, encoder_name: str) -> None:
    _die_with_parent(parent)
    _keep_freed_memory()
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the parent handles Ctrl-C and stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)    # (not the parent's SIGTERM -> KeyboardInterrupt)
    out_q.cancel_join_thread()    # if the parent was killed, exit without waiting to flush to nobody
    encode = encoders.load(encoder_name)       # built in the parent before the fork: inherited, not rebuilt
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
            if isinstance(item, tuple):              # ("slot", i, n_docs, n_bytes): the text is in input slot i
                _, i, n, nbytes = item
                tokens, lens = tokenize_batch(slots.unpack_text(ins.view(i), n, nbytes), encode)
                ntok = slots.pack_tokens(tokens, outs.view(i))
                res: Any = ("slot", i, ntok, lens) if ntok is not None else (tokens, lens)
            else:
                res = tokenize_batch(item, encode)
        except BaseException as e:                   # report, don't die silently
            res = ("error", f"{type(e).__name__}: {e}")
        while True:
            try:
                out_q.put(res, timeout=1.0)
                break
            except queue.Full:
                if os.getppid() != parent:
                    return


class TokenizerPool:
    """N forked worker processes fed round robin; results are read back in submission order."""

    def __init__(self, n: int, encoder: str = encoders.REFERENCE):
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        self.n = n
        self.ins = [ctx.Queue(IN_FLIGHT_PER_WORKER) for _ in range(n)]
        self.outs = [ctx.Queue(IN_FLIGHT_PER_WORKER + 1) for _ in range(n)]
        # job j of a worker uses its slot j % IN_FLIGHT_PER_WORKER: results are taken in order, so that slot's
        # previous job was consumed (and the caller is done with its tokens) before it is reused
        self.in_slots = [Slots(IN_FLIGHT_PER_WORKER, slots.IN_SLOT_BYTES) for _ in range(n)]
        self.out_slots = [Slots(IN_FLIGHT_PER_WORKER, slots.OUT_SLOT_BYTES) for _ in range(n)]
        self.procs = [ctx.Process(target=_worker, args=(self.ins[i], self.outs[i], os.getpid(), self.in_slots[i],
                                                        self.out_slots[i], encoder), daemon=True)
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

    def submit(self, batch: Any) -> None:
        w, job = self.sent % self.n, self.sent // self.n
        i = job % IN_FLIGHT_PER_WORKER
        packed = slots.pack_text(batch, self.in_slots[w].view(i))
        self.ins[w].put(("slot", i, *packed) if packed is not None else batch)
        self.pending.append(w)
        self.sent += 1

    def full(self) -> bool:
        return len(self.pending) >= self.n * IN_FLIGHT_PER_WORKER

    def get(self) -> TokenBatch:
        w = self.pending.popleft()
        while True:
            try:
                res = self.outs[w].get(timeout=5.0)
                break
            except queue.Empty:
                if not self.procs[w].is_alive():
                    raise KitError(f"tokenizer worker {w} died (exit code {self.procs[w].exitcode})",
                                   "out of memory? try fewer --workers") from None
        if isinstance(res[0], str) and res[0] == "error":
            raise KitError(f"tokenizing failed in a worker: {res[1]}")
        if isinstance(res[0], str):                  # ("slot", i, n_tokens, lens)
            _, i, ntok, lens = res
            return slots.unpack_tokens(self.out_slots[w].view(i), ntok), lens
        return res

    def close(self, kill: bool = False) -> None:
        for p, q in zip(self.procs, self.ins, strict=True):
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
        for m in self.in_slots + self.out_slots:
            m.close()


READ_AHEAD = 4                    # batches read ahead of the pool (~1.5 MB each)


def read_ahead(batches: Iterable[Any], depth: int = READ_AHEAD) -> Generator[Any, None, None]:
    """``batches``, read by a thread ``depth`` batches ahead: parquet decoding (pyarrow, GIL released) overlaps
    the main thread's shard writing and hashing instead of alternating with it. An error in the reader is raised
    here, in order; closing the generator stops the reader."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for b in batches:
                if not put(("batch", b)):
                    return
            put(("end", None))
        except BaseException as e:       # handed to the consumer, raised there
            put(("error", e))

    t = threading.Thread(target=run, name="kitctl-read-ahead", daemon=True)
    t.start()
    try:
        while True:
            kind, v = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise v
            yield v
    finally:
        stop.set()
        t.join(timeout=5)


def iter_tokens(batches: Iterable[Any], workers: int = 0,
                encoder: str = encoders.REFERENCE) -> Generator[TokenBatch, None, None]:
    """(tokens, lens) per batch of documents, in order. ``workers=0`` tokenizes in this process."""
    enc = encoders.load(encoder)       # before forking: the workers inherit it
    if workers <= 0:
        if getattr(enc, "threads_ok", False):
            yield from _threaded(batches, enc, encode_threads())
            return
        for b in batches:
            yield tokenize_batch(b, enc)
        return
    pool = TokenizerPool(workers, encoder)
    ok = False
    ahead = read_ahead(batches)
    try:
        for batch in ahead:
            for b in slots.fitting(batch, slots.IN_SLOT_BYTES):
                pool.submit(b)
                if pool.full():
                    yield pool.get()
        while pool.pending:
            yield pool.get()
        ok = True
    finally:
        ahead.close()
        pool.close(kill=not ok)


def _threaded(batches: Iterable[Any], enc: Encoder, threads: int) -> Generator[TokenBatch, None, None]:
    """(tokens, lens) per batch, in order, tokenized on ``threads`` threads of this process (an encoder that
    releases the GIL and runs at full speed off the main thread). A reader thread decodes the batches and hands
    each to the encode threads as it comes (up to THREAD_IN_FLIGHT ahead of the caller, whatever the caller is
    doing meanwhile -- a run's gate checks its sample with tiktoken then); the caller's thread only writes.
    An error in the reader is raised here, in order. Closing the generator drops what is queued and waits for
    the running calls."""
    from concurrent.futures import ThreadPoolExecutor

    _keep_freed_memory()                 # as in a worker process: the per-batch buffers reuse freed memory
    ex = ThreadPoolExecutor(threads, thread_name_prefix="kitctl-encode")
    # read_ahead's thread decodes each batch and submits it: the encode threads start on it at once
    futures = read_ahead((ex.submit(tokenize_batch, b, enc) for b in batches),
                         max(THREAD_IN_FLIGHT, threads * IN_FLIGHT_PER_WORKER))
    try:
        for fut in futures:
            yield fut.result()
    finally:
        futures.close()                  # the reader stops
        ex.shutdown(wait=True, cancel_futures=True)     # queued batches are dropped, running calls waited for
