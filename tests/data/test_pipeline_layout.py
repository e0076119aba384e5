"""Issue 31, the pipeline at I/O speed: how the tokens are made (docs/data.md "where the time goes").

- the fast encoder tokenizes in this process, on threads (a reader thread, encode threads, the caller writing):
  the same batches, in order, as one call per batch on the main thread, and no worker process;
- batches of long documents are cut to fit the workers' shared-memory slots (not pickled through the queue),
  in order, each piece packing into a slot except a document that alone is larger.
"""
from __future__ import annotations

import multiprocessing as mp
import threading

import numpy as np
import pytest

from data_ref import EDGE_DOCS
from kitctl.data import encoders, pool, slots

pytestmark = pytest.mark.usefixtures("tiktoken_cache")


@pytest.mark.slow          # gigatoken's load and first call, tiktoken's: ~0.5 s quiet
def test_fast_encoder_tokenizes_on_threads_of_this_process_in_order():
    import pyarrow as pa

    assert pool.default_workers(encoders.FAST) == 0 and pool.default_workers(encoders.REFERENCE) == pool.cores()
    fast = encoders.load(encoders.FAST)
    docs = [f"{i} " + EDGE_DOCS[i % len(EDGE_DOCS)] * (1 + i % 5) for i in range(120)]
    batches = [pa.array(docs[i:i + 7]) for i in range(0, len(docs), 7)]
    names: set[str] = set()
    got = []
    for toks, lens in pool.iter_tokens(iter(batches), 0, encoders.FAST):
        names |= {t.name for t in threading.enumerate()}
        got.append((toks.copy(), lens))
    assert not mp.active_children()                       # no worker process
    assert any(n.startswith("kitctl-encode") for n in names) and "kitctl-read-ahead" in names
    want = [fast.encode_docs(b) for b in batches]
    assert len(got) == len(want)
    assert all(np.array_equal(g[0], w[0]) and np.array_equal(g[1], w[1]) for g, w in zip(got, want, strict=True))
    # ... and the same tokens as tiktoken, the reference
    ref_toks, ref_lens = encoders.load(encoders.REFERENCE).encode_docs(docs)
    assert np.array_equal(np.concatenate([g[0] for g in got]), ref_toks)
    assert np.array_equal(np.concatenate([g[1] for g in got]), ref_lens)
    assert not any(t.name.startswith(("kitctl-encode", "kitctl-read-ahead")) for t in threading.enumerate())


def test_threaded_stream_closed_early_stops_its_threads():
    import pyarrow as pa

    batches = (pa.array([f"doc {i} " * 50] * 16) for i in range(10_000))
    stream = pool.iter_tokens(batches, 0, encoders.FAST)
    next(stream)
    stream.close()
    assert not any(t.name.startswith(("kitctl-encode", "kitctl-read-ahead")) for t in threading.enumerate())


def test_batches_are_cut_to_fit_a_slot_in_order():
    import pyarrow as pa

    sizes = [5, 100, 3, 300, 7, 7, 7, 1000, 2, 50, 0, 9]
    docs = ["é" * (k // 2) + "a" * (k % 2) for k in sizes]
    for typ in (pa.string(), pa.large_string()):
        arr = pa.array(docs, typ).slice(1)                  # a slice, as a resumed run reads it
        for size in (64, 200, 400, 2000, 1 << 20):
            parts = slots.fitting(arr, size)
            assert sum((p.to_pylist() for p in parts), []) == docs[1:]
            for p in parts:
                fits = slots.pack_text(p, memoryview(bytearray(size))) is not None
                assert fits or len(p) == 1, (size, p.to_pylist())
            if size == 200:                                 # greedy: [100, 3] [300] [7, 7, 7] [1000] [2, 50, 0, 9]
                assert [len(p) for p in parts] == [2, 1, 3, 1, 4]
            if size >= 2000:
                assert parts == [arr]                       # a batch that fits is not cut
    assert slots.fitting(["a list"], 10) == [["a list"]]
    with_null = pa.array(["x" * 100, None, "y" * 100])
    assert slots.fitting(with_null, 64) == [with_null]      # nulls: the queue path, as before
