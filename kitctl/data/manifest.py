"""``manifest.json``: what a data folder holds, how it was made, and how far a run got.

One typed record (:class:`DataManifest`, a :class:`kitctl.core.records.Record`, defined in
:mod:`kitctl.core.shard_folder` with the folder check every reader uses) shared by its writer
(``kitctl data``: the tokenize run, pre-tokenized downloads) and its readers (resume, ``kitctl data verify``).
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

from pathlib import Path
from typing import Any, Callable, Optional

from kitctl.core.errors import KitError
from kitctl.core.files import sha256_file
from kitctl.core.llmc_files import shard_filename
# the record and the folder contract live in core (kitctl.core.shard_folder); re-exported for data's callers
from kitctl.core.shard_folder import (  # noqa: F401
    MANIFEST, DataManifest, RunInfo, RunLike, Shard, ShardEnd, as_run, compare, exists, load,
    record_verified, start_over_hint, verified_path)
from kitctl.data.shards import check_shard

# run fields that must match for a re-run to continue in the same folder
IDENTITY = ("source_fingerprint", "revision", "tokenizer", "shard_size", "first_shard_size")


def identity_diff(old: RunLike, new: RunLike) -> list[str]:
    """Human-readable differences in the identity fields of two runs."""
    a, b = as_run(old), as_run(new)
    return [f"{k}: folder has {getattr(a, k)!r}, this run wants {getattr(b, k)!r}"
            for k in IDENTITY if getattr(a, k) != getattr(b, k)]


def shard_problem(m: DataManifest, s: Shard) -> Optional[str]:
    """Why shard ``s`` of ``m`` is not intact (missing, size, llm.c header, token count, sha256), or None."""
    if "/" in s.file or s.file in (".", ".."):
        return "outside the folder"
    p = m.dir / s.file
    if p.is_symlink() or not p.is_file():
        return "missing" if not p.is_symlink() and not p.exists() else "not a regular file"
    try:
        n = check_shard(p)
    except KitError as e:
        return e.message.replace(f"{p}: ", "")
    if n != s.tokens:
        return f"header says {n:,} tokens, the manifest {s.tokens:,}"
    sha = sha256_file(p)
    if sha != s.sha256:
        return f"sha256 differs from the manifest ({sha[:16]}... vs {s.sha256[:16]}...)"
    return None


def verify(dir: Path, on_file: Optional[Callable[[Shard], Any]] = None,
           log: Optional[Callable[[str], Any]] = None) -> tuple[DataManifest, list[str]]:
    """Re-check a data folder: every shard's header, size, token count and sha256 against the manifest,
    shard numbering, stray shard files and special files (kitctl.core.shard_folder.compare). Returns (manifest,
    problems); no problems means good. When every shard's bytes match but an mtime does not (a copy without
    ``-p``), the manifest records the new mtimes: the cheap check of train and data trusts them again."""
    m = load(dir)
    problems = []
    for pos, s in enumerate(m.shards):
        if s.index != pos or s.file != shard_filename(m.name, s.index):
            problems.append(f"{s.file}: listed as shard {s.index} at position {pos} "
                            f"(expected {shard_filename(m.name, pos)})")
        why = shard_problem(m, s)
        if why:
            problems.append(f"{s.file}: {why}")
        if on_file:
            on_file(s)
    seen = {p.split(":", 1)[0] for p in problems}
    problems += [str(p) for p in compare(m) if p.kind in ("stray", "special") and p.file not in seen]
    if not m.shards:
        problems.append("no shards")
    if not m.complete:
        problems.append("the run that made this folder did not finish (re-run the same `kitctl data` to complete it)")
    if not problems and any(p.kind == "mtime" for p in compare(m)):
        for s in m.shards:
            s.stamp(m.dir / s.file)
        try:
            m.save()
            if log:
                log(f"{m.dir}: shard mtimes changed but every sha256 matches: the new mtimes are recorded in {MANIFEST}")
        except OSError as e:
            # a read-only folder: keep the checked stamps aside, where train's check reads them (no dead end)
            try:
                side = record_verified(m)
                if log:
                    log(f"{m.dir}: shard mtimes changed but every sha256 matches; {MANIFEST} cannot be rewritten "
                        f"({e.strerror or e}), so the checked stamps are kept in {side}: train trusts them")
            except OSError as e2:
                problems.append(f"{MANIFEST}: the shards' bytes match but their mtimes changed, and the new ones "
                                f"could not be recorded there ({e.strerror or e}) nor in "
                                f"{verified_path(m.dir)} ({e2.strerror or e2})")
    return m, problems
