"""Tokenizing documents on every core: ``[EOT] + encode_ordinary(text)`` per document, batches in order.

Shape (measured on 2 cores, see docs/data.md): the main thread reads record batches from the source (pyarrow
decodes with the GIL released) and hands each batch to a pool of tokenizer *threads*; results are taken back
in submission order (a bounded deque of futures, so memory stays flat). tiktoken's Rust core releases the GIL
while it encodes (tiktoken >= 0.7; measured here with the pinned 0.14: 2 threads 1.9x one), so threads scale
like processes without any of their costs: no pickling of texts or token arrays, no worker start-up, no
children to stop on Ctrl-C or kill -9. A batch becomes one uint16 array (tiktoken's token buffer, never a
Python list of ints) plus the per-document token counts.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generator, Iterable, Iterator, Optional

import numpy as np

from kitctl.data.shards import EOT
from kitctl.data.tokenizer import get_encoding

IN_FLIGHT_PER_WORKER = 3          # batches queued per tokenizer thread
MAX_WORKERS_PER_CORE = 4          # --workers above cores x this is refused (each thread holds batches)

TokenBatch = tuple[np.ndarray, np.ndarray]   # (uint16 tokens, int64 tokens per document incl. its EOT)


def cores() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    return cores()


def max_workers() -> int:
    return MAX_WORKERS_PER_CORE * cores()


SEP = "<|endoftext|>"
_ALLOW_EOT = frozenset({SEP})


def _encoder():
    """``encode_ordinary`` as a uint32 array: tiktoken's token buffer, no Python list of ints."""
    enc = get_encoding()
    no_special: set[str] = set()

    def encode(text: str) -> np.ndarray:
        # == encode_ordinary(text): no special token allowed or disallowed, so "<|endoftext|>" is plain text
        return enc.encode_to_numpy(text, allowed_special=no_special, disallowed_special=())

    def encode_joined(text: str) -> np.ndarray:
        # EOT + doc + EOT + doc ...: the special token splits the text, every piece between two of them is
        # encoded on its own (tiktoken's regex runs on that slice alone), i.e. [EOT] + encode_ordinary(doc) each
        return enc.encode_to_numpy(text, allowed_special=_ALLOW_EOT, disallowed_special=())
    encode.joined = encode_joined  # type: ignore[attr-defined]
    return encode


def _one_by_one(texts: list, encode) -> TokenBatch:
    parts: list[np.ndarray] = []
    lens = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        try:
            a = encode(t if t is not None else "")
        except UnicodeEncodeError:   # lone surrogates: the same fix-up tiktoken's encode_ordinary applies
            a = encode(t.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))
        parts.append(a)
        lens[i] = len(a) + 1
    out = np.empty(int(lens.sum()), dtype=np.uint16)
    pos = 0
    for a, k in zip(parts, lens):          # [EOT] + tokens, per document, cast to uint16 in place
        out[pos] = EOT
        out[pos + 1:pos + k] = a
        pos += int(k)
    return out, lens


def tokenize_batch(texts: Any, encode=None) -> TokenBatch:
    """Documents (a list of str, or a pyarrow string array) -> (concatenated uint16 tokens, per-document
    token counts incl. the EOT).

    One call into tiktoken per batch: the documents joined with "<|endoftext|>" (allowed as the special token)
    encode to exactly ``[EOT] + encode_ordinary(doc)`` per document, and the EOT positions give the lengths
    (ordinary text never encodes to 50256). That keeps the GIL free for the whole batch. A batch in which a
    document holds a literal "<|endoftext|>" (plain text for llm.c) or a lone surrogate goes one by one."""
    encode = encode or _encoder()
    if not isinstance(texts, list):          # a pyarrow string array
        texts = texts.to_pylist()
    if not texts:
        return np.empty(0, np.uint16), np.empty(0, np.int64)
    if None in texts:
        texts = [t if t is not None else "" for t in texts]
    joined = SEP + SEP.join(texts)
    if joined.count(SEP) == len(texts):      # no document holds the literal (a match never straddles two)
        try:
            toks = encode.joined(joined)
        except UnicodeEncodeError:
            return _one_by_one(texts, encode)
        starts = np.flatnonzero(toks == EOT)
        lens = np.diff(starts, append=len(toks)).astype(np.int64)
        return toks.astype(np.uint16), lens
    return _one_by_one(texts, encode)


class TokenizerPool:
    """``workers`` tokenizer threads; ``map`` yields results in input order, with a bounded number in flight."""

    def __init__(self, workers: int):
        self.workers = workers
        self.encode = _encoder()
        self._ex: Optional[ThreadPoolExecutor] = ThreadPoolExecutor(workers, thread_name_prefix="kitctl-tokenize") \
            if workers > 0 else None

    def map(self, batches: Iterable[Any]) -> Iterator[TokenBatch]:
        if self._ex is None:
            for b in batches:
                yield tokenize_batch(b, self.encode)
            return
        pending: deque[Future] = deque()
        limit = self.workers * IN_FLIGHT_PER_WORKER
        for b in batches:
            pending.append(self._ex.submit(tokenize_batch, b, self.encode))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True, cancel_futures=True)   # at most one batch per thread still finishing
            self._ex = None

    def __enter__(self) -> "TokenizerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_tokens(batches: Iterable[Any], workers: int = 0) -> Generator[TokenBatch, None, None]:
    """(tokens, lens) per batch of documents, in order. ``workers=0`` tokenizes in this thread."""
    with TokenizerPool(workers) as pool:
        yield from pool.map(batches)
