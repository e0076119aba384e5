"""``manifest.json``: what a data folder holds, how it was made, and how far a run got.

Written next to the shards by ``kitctl data`` after every completed shard (atomically: temp file + rename),
read back to resume, by ``kitctl data verify``, and by the train planner (``load(dir)``).

Schema (``schema_version`` 1)::

    {
      "format": "llmc-kit/data",   "schema_version": 1,
      "dataset": "fineweb10B",          # recipe name, or "local" for files given as DATASET
      "name": "fineweb",                # file prefix: <name>_val_000000.bin, <name>_train_000001.bin, ...
      "complete": true,                 # false while a run is in progress or was interrupted
      "run": {                          # identity of the run: a re-run must match it to resume
        "source": "HuggingFaceFW/fineweb@9767af12bf8f sample-10BT (14 parquet files)",
        "source_fingerprint": "<sha256>",     # repo@revision+pattern, or input file names+sizes
        "revision": "9767af12...",            # HF revision (null for local inputs)
        "tokenizer": {"encoding": "gpt2", "vocab.bpe": "<sha256>", "encoder.json": "<sha256>"},
        "shard_size": 100000000, "first_shard_size": 100000000,
        "kit_version": "0.1.0", "pins_sha256": "<sha256 of docker/versions.yaml>"
      },
      "shards": [                       # in order; shard 0 is the val shard
        {"index": 0, "file": "fineweb_val_000000.bin", "split": "val", "tokens": 100000000,
         "sha256": "<sha256 of the whole file>",
         "end": {"doc": 93518, "offset": 211, "pos": 100000000}}   # resume point (absent if pre-tokenized)
      ],
      "total_tokens": ..., "val_tokens": ..., "train_tokens": ...,
      "val_pattern": "fineweb_val_*.bin", "train_pattern": "fineweb_train_*.bin"
    }

For llm.c: ``train_gpt2cu -i "<dir>/<train_pattern>" -j "<dir>/<val_pattern>"``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from kitctl.core.errors import KitError

MANIFEST = "manifest.json"
FORMAT = "llmc-kit/data"
SCHEMA_VERSION = 1
# run fields that must match for a re-run to continue in the same folder
IDENTITY = ("source_fingerprint", "revision", "tokenizer", "shard_size", "first_shard_size")


@dataclass
class Shard:
    index: int
    file: str
    tokens: int
    sha256: str
    split: str = "train"
    end: Optional[dict[str, int]] = None

    def to_json(self) -> dict[str, Any]:
        d = {"index": self.index, "file": self.file, "split": self.split, "tokens": self.tokens,
             "sha256": self.sha256}
        if self.end is not None:
            d["end"] = self.end
        return d


@dataclass
class DataManifest:
    """A data folder as the train planner sees it."""

    dir: Path
    name: str
    dataset: str
    run: dict[str, Any]
    shards: list[Shard] = field(default_factory=list)
    complete: bool = False

    # --- what the planner needs
    @property
    def val_files(self) -> list[Path]:
        return [self.dir / s.file for s in self.shards if s.split == "val"]

    @property
    def train_files(self) -> list[Path]:
        return [self.dir / s.file for s in self.shards if s.split == "train"]

    @property
    def total_tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    @property
    def val_tokens(self) -> int:
        return sum(s.tokens for s in self.shards if s.split == "val")

    @property
    def train_tokens(self) -> int:
        return sum(s.tokens for s in self.shards if s.split == "train")

    @property
    def tokens_per_shard(self) -> dict[str, int]:
        return {s.file: s.tokens for s in self.shards}

    @property
    def val_pattern(self) -> str:
        return f"{self.name}_val_*.bin"

    @property
    def train_pattern(self) -> str:
        return f"{self.name}_train_*.bin"

    def llmc_args(self, root: Optional[str] = None) -> list[str]:
        """``-i``/``-j`` for train_gpt2cu; ``root`` replaces the folder (e.g. its path inside a container)."""
        d = root if root is not None else str(self.dir)
        return ["-i", f"{d}/{self.train_pattern}", "-j", f"{d}/{self.val_pattern}"]

    # --- serialization
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "schema_version": SCHEMA_VERSION, "dataset": self.dataset, "name": self.name,
            "complete": self.complete, "run": self.run, "shards": [s.to_json() for s in self.shards],
            "total_tokens": self.total_tokens, "val_tokens": self.val_tokens, "train_tokens": self.train_tokens,
            "val_pattern": self.val_pattern, "train_pattern": self.train_pattern,
        }

    def save(self) -> None:
        path = self.dir / MANIFEST
        tmp = path.with_name(f".{MANIFEST}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        os.replace(tmp, path)


def exists(dir: Path) -> bool:
    return (Path(dir) / MANIFEST).is_file()


def load(dir: Path) -> DataManifest:
    """Read ``<dir>/manifest.json``. Raises KitError with a hint when missing or malformed."""
    dir = Path(dir)
    path = dir / MANIFEST
    if not path.is_file():
        raise KitError(f"{dir} has no {MANIFEST}", f"make the data first: `kitctl data` (writes {MANIFEST})",
                       exit_code=2)
    try:
        d = json.loads(path.read_text())
        if d.get("format") != FORMAT:
            raise ValueError(f"format is {d.get('format')!r}, not {FORMAT!r}")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"schema_version {d.get('schema_version')} (this kitctl reads {SCHEMA_VERSION})")
        shards = [Shard(index=s["index"], file=s["file"], tokens=s["tokens"], sha256=s["sha256"],
                        split=s.get("split", "train"), end=s.get("end")) for s in d["shards"]]
        return DataManifest(dir=dir, name=d["name"], dataset=d.get("dataset", ""), run=d.get("run", {}),
                            shards=shards, complete=bool(d.get("complete")))
    except (ValueError, KeyError, TypeError) as e:
        raise KitError(f"{path} is not a kitctl data manifest: {e}",
                       "move the folder aside, or delete the manifest to start over") from None


def identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences in the identity fields of two run records."""
    out = []
    for k in IDENTITY:
        if old.get(k) != new.get(k):
            out.append(f"{k}: folder has {old.get(k)!r}, this run wants {new.get(k)!r}")
    return out


def verify(dir: Path, on_file=None) -> tuple["DataManifest", list[str]]:
    """Re-check a data folder: every shard's header, size, token count and sha256 against the manifest,
    shard numbering, and stray shard files. Returns (manifest, problems); no problems means good."""
    from kitctl.data.shards import check_shard, shard_filename
    from kitctl.core.files import sha256_file

    m = load(dir)
    problems = []
    for pos, s in enumerate(m.shards):
        p = m.dir / s.file
        if s.index != pos or s.file != shard_filename(m.name, s.index):
            problems.append(f"{s.file}: listed as shard {s.index} at position {pos} (expected {shard_filename(m.name, pos)})")
        if not p.is_file():
            problems.append(f"{s.file}: missing")
            continue
        try:
            n = check_shard(p)
        except KitError as e:
            problems.append(e.message)
            continue
        if n != s.tokens:
            problems.append(f"{s.file}: header says {n:,} tokens, manifest {s.tokens:,}")
        sha = sha256_file(p)
        if sha != s.sha256:
            problems.append(f"{s.file}: sha256 {sha[:16]}... differs from the manifest's {s.sha256[:16]}...")
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
