"""``manifest.json``: what a data folder holds, how it was made, and how far a run got.

One typed record (:class:`DataManifest`, a :class:`kitctl.core.records.Record`, defined in
:mod:`kitctl.core.shard_folder` beside :class:`~kitctl.core.shard_folder.DataFolder`, which reads it, checks the
folder against it -- cheaply, or every sha256 for ``kitctl data verify`` -- and gives train its facts) shared by
its writer (``kitctl data``: the tokenize run, pre-tokenized downloads) and its readers. Here: what a re-run must
match to resume (:data:`IDENTITY`).
It is written atomically (temp, fsync, rename), at the start of a run, after finished shards (batched, see
``kitctl.data.tokenize``), when a run stops and when it completes.

Schema (``schema_version`` 1)::

    {
      "schema_version": 1, "format": "llmc-kit/data",
      "dataset": "fineweb10B",          # recipe name, or "local" for files given as DATASET
      "name": "fineweb",                # file prefix: <name>_val_000000.bin, <name>_train_000001.bin, ...
      "complete": true,                 # false while a run is in progress or was stopped
      "run": {                          # identity of the run: a re-run must match it to resume
        "source": "HuggingFaceFW/fineweb@9767af12bf8f sample-10BT (14 parquet files)",
        "source_fingerprint": "<sha256>",     # repo@revision+pattern, or the sha256 of every input file's bytes
        "revision": "9767af12...",            # HF revision (null for local inputs)
        "tokenizer": {"encoding": "gpt2", "vocab.bpe": "<sha256>", "encoder.json": "<sha256>"},
        "shard_size": 100000000, "first_shard_size": 100000000,
        "kit_version": "0.1.0", "pins_sha256": "<sha256 of docker/versions.yaml>",
        "started": "...", "finished": "...", "failed": null     # "failed": why the last run stopped with an error
      },
      "shards": [                       # in order; shard 0 is the val shard
        {"index": 0, "file": "fineweb_val_000000.bin", "split": "val", "tokens": 100000000,
         "sha256": "<sha256 of the whole file>",
         "size": 200001024, "mtime_ns": 1765000000000000000,     # as written: train's cheap check (core.shard_folder)
         "end": {"doc": 93518, "offset": 211, "pos": 100000000}}   # resume point (absent if pre-tokenized)
      ],
      "total_tokens": ..., "val_tokens": ..., "train_tokens": ...,            # derived, for readers
      "val_pattern": "fineweb_val_*.bin", "train_pattern": "fineweb_train_*.bin"
    }

For llm.c: ``train_gpt2cu -i "<dir>/<train_pattern>" -j "<dir>/<val_pattern>"``.
"""
from __future__ import annotations

# the record and the folder contract live in core (kitctl.core.shard_folder); re-exported for data's callers
from kitctl.core.shard_folder import (  # noqa: F401
    MANIFEST, DataManifest, RunInfo, RunLike, Shard, ShardEnd, as_run, compare, exists, load,
    record_verified, start_over_hint, verified_path)

# run fields that must match for a re-run to continue in the same folder
IDENTITY = ("source_fingerprint", "revision", "tokenizer", "shard_size", "first_shard_size")


def identity_diff(old: RunLike, new: RunLike) -> list[str]:
    """Human-readable differences in the identity fields of two runs."""
    a, b = as_run(old), as_run(new)
    return [f"{k}: folder has {getattr(a, k)!r}, this run wants {getattr(b, k)!r}"
            for k in IDENTITY if getattr(a, k) != getattr(b, k)]
