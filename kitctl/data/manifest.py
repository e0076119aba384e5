"""``manifest.json``: what a data folder holds, how it was made, and how far a run got.

One typed record (:class:`DataManifest`, a :class:`kitctl.core.records.Record`) shared by its writer
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
         "end": {"doc": 93518, "offset": 211, "pos": 100000000}}   # resume point (absent if pre-tokenized)
      ],
      "total_tokens": ..., "val_tokens": ..., "train_tokens": ...,            # derived, for readers
      "val_pattern": "fineweb_val_*.bin", "train_pattern": "fineweb_train_*.bin"
    }

For llm.c: ``train_gpt2cu -i "<dir>/<train_pattern>" -j "<dir>/<val_pattern>"``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, computed_field

from kitctl.core.errors import KitError
from kitctl.core.files import sha256_file
from kitctl.core.records import Record
from kitctl.data.shards import check_shard, shard_filename

MANIFEST = "manifest.json"
FORMAT: Literal["llmc-kit/data"] = "llmc-kit/data"
SCHEMA_VERSION = 1
# run fields that must match for a re-run to continue in the same folder
IDENTITY = ("source_fingerprint", "revision", "tokenizer", "shard_size", "first_shard_size")


def start_over_hint(folder: Path) -> str:
    """The one fix for a folder whose manifest is missing or damaged (make, verify and resume all say it)."""
    return (f"move {folder} aside (or delete it) and re-run the same `kitctl data` command to make it again, "
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


class RunInfo(BaseModel):
    """How the shards were made. ``IDENTITY`` fields must match for a re-run to continue the folder."""

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
    started: Optional[str] = None
    finished: Optional[str] = None
    failed: Optional[str] = None


RunLike = Union[RunInfo, dict]


def as_run(run: RunLike) -> RunInfo:
    return run if isinstance(run, RunInfo) else RunInfo.model_validate(run)


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
        return f"{self.name}_val_*.bin"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def train_pattern(self) -> str:
        return f"{self.name}_train_*.bin"

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
        d = root if root is not None else str(self.dir)
        return ["-i", f"{d}/{self.train_pattern}", "-j", f"{d}/{self.val_pattern}"]

    def save(self) -> None:
        self.write(self.dir / MANIFEST)


def exists(dir: Path) -> bool:
    return (Path(dir) / MANIFEST).is_file()


def load(dir: Path) -> DataManifest:
    """Read ``<dir>/manifest.json``; a KitError with :func:`start_over_hint` when damaged (exit 2 when missing)."""
    dir = Path(dir)
    path = dir / MANIFEST
    if not path.is_file():
        raise KitError(f"{dir} has no {MANIFEST}", f"make the data first: `kitctl data` (writes {MANIFEST})",
                       exit_code=2)
    m = DataManifest.read(path, hint=start_over_hint(dir))      # damaged: exit 1 with the one hint
    m.dir = dir
    return m


def identity_diff(old: RunLike, new: RunLike) -> list[str]:
    """Human-readable differences in the identity fields of two runs."""
    a, b = as_run(old), as_run(new)
    return [f"{k}: folder has {getattr(a, k)!r}, this run wants {getattr(b, k)!r}"
            for k in IDENTITY if getattr(a, k) != getattr(b, k)]


def shard_problem(m: DataManifest, s: Shard) -> Optional[str]:
    """Why shard ``s`` of ``m`` is not intact (missing, size, llm.c header, token count, sha256), or None."""
    p = m.dir / s.file
    if not p.is_file():
        return "missing"
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


def verify(dir: Path, on_file: Optional[Callable[[Shard], Any]] = None) -> tuple[DataManifest, list[str]]:
    """Re-check a data folder: every shard's header, size, token count and sha256 against the manifest,
    shard numbering, and stray shard files. Returns (manifest, problems); no problems means good."""
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
    listed = {s.file for s in m.shards}
    for p in sorted(list(m.dir.glob(m.val_pattern)) + list(m.dir.glob(m.train_pattern))):
        if p.name not in listed:
            problems.append(f"{p.name}: shard file not in the manifest")
    if not m.shards:
        problems.append("no shards")
    if not m.complete:
        problems.append("the run that made this folder did not finish (re-run the same `kitctl data` to complete it)")
    return m, problems
