"""The record of a shard folder, ``manifest.json`` (:class:`DataManifest`): its schema, its parse and the rules a
re-run's identity must match (issues 17, 30). The folder it describes, and every read and write of it, is
:class:`kitctl.core.data_folder.DataFolder`.

``kitctl data`` writes it through :class:`~kitctl.core.data_folder.DataFolder` atomically (temp, fsync, rename):
at the start of a run, after finished shards (batched, see ``kitctl.data.tokenize``), when a run stops and when
it completes. Schema (``schema_version`` 1)::

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
         "size": 200001024, "mtime_ns": 1765000000000000000,     # as written: the cheap check (DataFolder.check)
         "end": {"doc": 93518, "offset": 211, "pos": 100000000}}   # resume point (absent if pre-tokenized)
      ],
      "total_tokens": ..., "val_tokens": ..., "train_tokens": ...,            # derived, for readers
      "val_pattern": "fineweb_val_*.bin", "train_pattern": "fineweb_train_*.bin"
    }

For llm.c: ``train_gpt2cu -i "<dir>/<train_pattern>" -j "<dir>/<val_pattern>"``.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, computed_field

from kitctl.core.llmc_files import MANIFEST_JSON, shard_globs, shard_patterns
from kitctl.core.llmc_files import shard_size as _shard_bytes
from kitctl.core.records import Record

MANIFEST = MANIFEST_JSON
FORMAT: Literal["llmc-kit/data"] = "llmc-kit/data"
SCHEMA_VERSION = 1


def start_over_hint(folder: Path) -> str:
    """The one fix for a folder whose manifest is missing or damaged (make, verify and resume all say it)."""
    return (f"move {shlex.quote(str(folder))} aside (or delete it) and re-run the same `kitctl data` command to make it again, "
            "or pick another --out folder")


class ShardEnd(BaseModel):
    """Where the next shard starts: document index, token offset inside it, stream position."""

    doc: int
    offset: int
    pos: int


class Shard(BaseModel):
    model_config = ConfigDict(extra="ignore")

    index: int
    file: str
    split: Literal["val", "train"] = "train"
    tokens: int
    sha256: str
    end: Optional[ShardEnd] = None
    size: Optional[int] = None           # bytes when written (absent in older manifests: 1024 + 2 * tokens)
    mtime_ns: Optional[int] = None       # st_mtime_ns when written (absent in older manifests: not checked)
    # the inode and its change time when written: a same-size edit with its mtime put back (touch -d, cp -p over it,
    # os.utime) still moves ctime, and a replaced file is another inode (absent in older manifests: not checked)
    ino: Optional[int] = None
    ctime_ns: Optional[int] = None

    @property
    def expected_size(self) -> int:
        return self.size if self.size is not None else _shard_bytes(self.tokens)

    def stamp(self, path: Path) -> Shard:
        """Record ``path``'s size, mtime, inode and ctime as this shard's (after it was written or verified)."""
        st = os.stat(path)
        self.size, self.mtime_ns, self.ino, self.ctime_ns = st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns
        return self

    def changed(self, st: os.stat_result) -> Optional[str]:
        """Why the file behind ``st`` may not be the one recorded (mtime, inode or ctime differs), or None."""
        if self.mtime_ns is not None and st.st_mtime_ns != self.mtime_ns:
            return "its mtime differs from the manifest's"
        if self.ino is not None and st.st_ino != self.ino:
            return "it is another file (its inode differs from the manifest's: replaced or copied)"
        if self.ctime_ns is not None and st.st_ctime_ns != self.ctime_ns:
            return "its ctime differs from the manifest's (changed, even if its mtime was put back)"
        return None


class EncoderInfo(BaseModel):
    """The BPE implementation that tokenized a run (kitctl.data.encoders): not part of the run's identity (every
    encoder the kit uses gives tiktoken's tokens, checked on a sample of the run's documents before its first
    shard). ``gate``: what that check found, e.g. why the run fell back to tiktoken."""

    model_config = ConfigDict(extra="ignore")

    name: str
    version: str = ""
    gate: str = ""


class RunInfo(BaseModel):
    """How the shards were made. :data:`IDENTITY` fields must match for a re-run to continue."""

    model_config = ConfigDict(extra="ignore")

    source: str = ""
    source_fingerprint: str
    revision: Optional[str] = None
    tokenizer: dict[str, str] = Field(default_factory=lambda: {"encoding": "gpt2"})
    shard_size: Optional[int] = None
    first_shard_size: Optional[int] = None
    kit_version: str = ""
    pins_sha256: str = ""
    pretokenized: bool = False
    encoder: Optional[EncoderInfo] = None     # absent in manifests older than issue 31 (tokenized by tiktoken)
    started: Optional[str] = None
    finished: Optional[str] = None
    failed: Optional[str] = None


RunLike = Union[RunInfo, dict[str, Any]]


def as_run(run: RunLike) -> RunInfo:
    return run if isinstance(run, RunInfo) else RunInfo.model_validate(run)


# run fields that must match for a re-run to continue in the same folder
IDENTITY = ("source_fingerprint", "revision", "tokenizer", "shard_size", "first_shard_size")


def identity_diff(old: RunLike, new: RunLike) -> list[str]:
    """Human-readable differences in the identity fields of two runs."""
    a, b = as_run(old), as_run(new)
    return [f"{k}: folder has {getattr(a, k)!r}, this run wants {getattr(b, k)!r}"
            for k in IDENTITY if getattr(a, k) != getattr(b, k)]


class DataManifest(Record):
    """A data folder: its shards in order, the run that made them, whether that run finished."""

    SCHEMA: ClassVar[int] = SCHEMA_VERSION
    KIND: ClassVar[str] = "kitctl data manifest"

    format: Literal["llmc-kit/data"] = "llmc-kit/data"
    dataset: str = ""
    name: str
    complete: bool = False
    run: RunInfo
    shards: list[Shard] = Field(default_factory=list)
    dir: Path = Field(Path("."), exclude=True)          # where it was read from / is written to (not stored)

    # --- what readers (train planner, verify) need; stored too, so plain JSON readers get them
    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def val_tokens(self) -> int:
        return sum(s.tokens for s in self.shards if s.split == "val")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def train_tokens(self) -> int:
        return sum(s.tokens for s in self.shards if s.split == "train")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def val_pattern(self) -> str:
        return shard_patterns(self.name)[0]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def train_pattern(self) -> str:
        return shard_patterns(self.name)[1]

    @property
    def val_files(self) -> list[Path]:
        return [self.dir / s.file for s in self.shards if s.split == "val"]

    @property
    def train_files(self) -> list[Path]:
        return [self.dir / s.file for s in self.shards if s.split == "train"]

    @property
    def tokens_per_shard(self) -> dict[str, int]:
        return {s.file: s.tokens for s in self.shards}

    def llmc_args(self, root: Optional[str] = None) -> list[str]:
        """``-i``/``-j`` for train_gpt2cu; ``root`` replaces the folder (e.g. its path inside a container)."""
        val, train = shard_globs(root if root is not None else str(self.dir), self.name)
        return ["-i", train, "-j", val]
