"""Shared-memory slots between the reader process and its forked tokenizer workers.

Sending a batch's text to a worker and its tokens back through a pipe costs ~5 copies of every byte plus the
syscalls (measured: ~0.6 CPU-s per 200 MB of text, ~5% of the tokenizing itself). Instead each worker gets
``k`` fixed slots in an anonymous shared mapping made before the fork: the reader copies a pyarrow string
array's offsets and UTF-8 bytes into an input slot (two memcpy), the worker writes its uint16 tokens into
an output slot, and the queues carry only slot numbers and lengths. A batch that does not fit (a huge
document), has nulls, or is a Python list (jsonl, txt) goes through the queue as before.
"""
from __future__ import annotations

import mmap
from typing import Any, Optional

import numpy as np

IN_SLOT_BYTES = 8 << 20          # offsets + UTF-8 text of one batch
OUT_SLOT_BYTES = 8 << 20         # its uint16 tokens


class Slots:
    """``k`` slots of ``size`` bytes in one anonymous shared mapping (inherited by forked children)."""

    def __init__(self, k: int, size: int):
        self.k, self.size = k, size
        self.mem = mmap.mmap(-1, k * size)

    def view(self, i: int) -> memoryview:
        return memoryview(self.mem)[i * self.size:(i + 1) * self.size]

    def close(self) -> None:
        try:
            self.mem.close()
        except BufferError:      # a caller still holds a view of the last tokens: the mapping goes with it
            pass


def pack_text(arr: Any, slot: memoryview) -> Optional[tuple[int, int]]:
    """Copy a pyarrow (large) string array into ``slot`` as [int64 offsets (n+1)][UTF-8 bytes]; returns
    (n, data bytes), or None when it is not such an array, has nulls, or does not fit."""
    import pyarrow as pa     # ~0.6 s to import: paid only by a run that reads parquet, not by every kitctl start

    if not isinstance(arr, pa.Array) or arr.null_count or not (pa.types.is_string(arr.type) or
                                                               pa.types.is_large_string(arr.type)):
        return None
    n = len(arr)
    bufs = arr.buffers()
    otype = np.int32 if pa.types.is_string(arr.type) else np.int64
    offs = np.frombuffer(bufs[1], otype, count=n + 1, offset=arr.offset * np.dtype(otype).itemsize)
    start, end = int(offs[0]), int(offs[-1])
    head = 8 * (n + 1)
    if head + end - start > len(slot):
        return None
    np.frombuffer(slot, np.int64, count=n + 1)[:] = offs - start
    if end > start:
        np.frombuffer(slot, np.uint8, count=end - start, offset=head)[:] = \
            np.frombuffer(bufs[2], np.uint8, count=end - start, offset=start)
    return n, end - start


def fitting(arr: Any, size: int) -> list[Any]:
    """``arr`` cut into consecutive zero-copy slices that :func:`pack_text` fits in a slot of ``size`` bytes (a
    batch of long documents would otherwise go through the queue, pickled: 4 of 30 batches of 200 MB of varied
    text did); a document that alone exceeds the slot stays a slice of its own. Anything else: ``[arr]``."""
    import pyarrow as pa

    if not isinstance(arr, pa.Array) or arr.null_count or not (pa.types.is_string(arr.type) or
                                                               pa.types.is_large_string(arr.type)):
        return [arr]
    n = len(arr)
    otype = np.int32 if pa.types.is_string(arr.type) else np.int64
    offs = np.frombuffer(arr.buffers()[1], otype, count=n + 1, offset=arr.offset * np.dtype(otype).itemsize)
    if 8 * (n + 1) + int(offs[-1] - offs[0]) <= size:
        return [arr]
    out, i = [], 0
    need = offs.astype(np.int64) + 8 * np.arange(n + 1)     # a slice [i, j) needs need[j] - need[i] + 8 bytes
    while i < n:
        j = int(np.searchsorted(need, need[i] + size - 8, side="right")) - 1
        j = min(max(j, i + 1), n)
        out.append(arr.slice(i, j - i))
        i = j
    return out


def unpack_text(slot: memoryview, n: int, nbytes: int) -> Any:
    """The array :func:`pack_text` stored (zero-copy over the slot)."""
    import pyarrow as pa     # ~0.6 s to import: paid only by a run that reads parquet, not by every kitctl start

    head = 8 * (n + 1)
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(slot[:head]),
                                                        pa.py_buffer(slot[head:head + nbytes])])


def pack_tokens(tokens: np.ndarray, slot: memoryview) -> Optional[int]:
    """Copy uint16 tokens into ``slot``; their count, or None when they do not fit."""
    n = len(tokens)
    if 2 * n > len(slot):
        return None
    np.frombuffer(slot, np.uint16, count=n)[:] = tokens
    return n


def unpack_tokens(slot: memoryview, n: int) -> np.ndarray:
    """The tokens :func:`pack_tokens` stored (a view: valid until the slot is reused)."""
    return np.frombuffer(slot, np.uint16, count=n)
