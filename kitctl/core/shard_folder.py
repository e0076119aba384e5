"""A shard folder on disk, :class:`DataFolder`: ``manifest.json`` is the truth (issues 17, 30).

The typed manifest (:class:`DataManifest`) and the folder class live here, below data and train, so that its
writer (``kitctl data``) and every reader (train, tune, reproduce, status, data's own "is it complete" check) share
one record, one check and one shard-header reader (:func:`read_header`). What train reads from a data folder is
:meth:`DataFolder.facts` (a :class:`DataInfo`): the manifest's shard list and token counts once the folder agrees
with it, the shard headers only for a folder without one. :meth:`DataFolder.check` compares the folder with its
manifest, cheaply (no file is read):

- the same set of shard files: none missing, no stray file llm.c's globs would pick up (``<name>_train_*.bin``,
  ``<name>_val_*.bin``) or any other llm.c shard name, nothing listed outside the folder (``../``, ``/``);
- regular files only (no symlink, FIFO, socket, device, folder under a shard's name);
- each file's size, mtime, inode and ctime as recorded when it was written (the full sha256 stays in ``kitctl data
  verify``, which records them again once every sha256 matches).

:meth:`DataFolder.require_consistent` turns a mismatch into exit 2 naming the files and the fix. A folder without a
manifest (shards made elsewhere) passes with a note.

``kitctl data`` writes the record (kitctl.data.tokenize, kitctl.data.pretokenized) atomically (temp, fsync, rename):
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

import fnmatch
import glob
import hashlib
import os
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, computed_field

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import sha256_file
from kitctl.core.llmc_files import (GLOB_UNSAFE, HEADER_BYTES, MANIFEST_JSON, TOKENIZER_BIN, HeaderError,
                                    parse_shard_filename, shard_filename, shard_globs, shard_patterns,
                                    unpack_shard_header)
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

    def save(self) -> None:
        self.write(self.dir / MANIFEST)


def exists(dir: Path) -> bool:
    """Is there a manifest entry at all (a regular file, or something else that :func:`load` will refuse)?"""
    return os.path.lexists(Path(dir) / MANIFEST)


def load(dir: Path) -> DataManifest:
    """Read ``<dir>/manifest.json``; a KitError with :func:`start_over_hint` when damaged (exit 2 when missing
    or not a regular file)."""
    dir = Path(dir)
    path = dir / MANIFEST
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ConfigError(f"{dir} has no {MANIFEST}", f"make the data first: `kitctl data` (writes {MANIFEST})") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}", "check the folder's permissions") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path} is not a regular file ({_kind(st.st_mode)})", start_over_hint(dir))
    m = DataManifest.read(path, hint=start_over_hint(dir))      # damaged: exit 1 with the one hint
    m.dir = dir
    return m


# --------------------------------------------------------------------------------------------- the check
@dataclass(frozen=True)
class Problem:
    """One way the folder disagrees with its manifest."""

    file: str
    kind: Literal["name", "missing", "special", "size", "mtime", "stray"]
    why: str

    def __str__(self) -> str:
        return f"{self.file}: {self.why}"


@dataclass(frozen=True)
class FolderCheck:
    dir: Path
    manifest: Optional[DataManifest]
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


def _special(path: Path, mode: int) -> str:
    if stat.S_ISLNK(mode):
        try:
            return f"a symlink (to {os.readlink(path)}), not a regular file"
        except OSError:
            return "a symlink, not a regular file"
    return f"{_kind(mode)}, not a regular file"


def _listed_problem(m: DataManifest, pos: int, s: Shard) -> Optional[Problem]:
    want = shard_filename(m.name, pos) if pos < 1_000_000 else None
    if s.file != want or s.index != pos:
        where = " (outside the folder)" if "/" in s.file or s.file in (".", "..") or "\\" in s.file else ""
        return Problem(s.file, "name", f"listed as shard {s.index} at position {pos}{where}; expected {want}")
    p = m.dir / s.file
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return Problem(s.file, "missing", "listed in the manifest but missing")
    except OSError as e:
        return Problem(s.file, "missing", f"cannot be read ({e.strerror or e})")
    if not stat.S_ISREG(st.st_mode):
        return Problem(s.file, "special", _special(p, st.st_mode))
    if st.st_size != s.expected_size:
        return Problem(s.file, "size", f"{st.st_size:,} bytes, the manifest recorded {s.expected_size:,}")
    changed = s.changed(st)
    if changed:
        return Problem(s.file, "mtime", f"modified after `kitctl data` wrote it ({changed})")
    return None


def _looks_like_shard(name: str, m: DataManifest) -> bool:
    if name == TOKENIZER_BIN or name.startswith("."):
        return False
    return (parse_shard_filename(name) is not None or any(fnmatch.fnmatchcase(name, g) for g in shard_patterns(m.name)))


def compare(m: DataManifest) -> tuple[Problem, ...]:
    """Every way the folder ``m.dir`` disagrees with ``m`` (empty: they agree). Reads metadata only."""
    problems = [p for pos, s in enumerate(m.shards) if (p := _listed_problem(m, pos, s))]
    listed = {s.file for s in m.shards}
    try:
        names = sorted(os.listdir(m.dir))
    except OSError as e:
        raise ConfigError(f"cannot list the shard folder {m.dir}: {e.strerror or e}",
                          "check the folder's permissions") from None
    for n in names:
        if n not in listed and _looks_like_shard(n, m):
            try:
                mode = os.lstat(m.dir / n).st_mode
            except OSError:
                continue
            what = "" if stat.S_ISREG(mode) else f" ({_special(m.dir / n, mode)})"
            read = any(fnmatch.fnmatchcase(n, g) for g in shard_patterns(m.name))
            problems.append(Problem(n, "stray", f"a shard file the manifest does not list{what}"
                                    + (": llm.c would read it" if read else " (another dataset's name)")))
    return tuple(problems)


class VerifiedStamps(Record):
    """What ``kitctl data verify`` checked by sha256 in a folder it could not write (read-only): the shards' stat
    stamps then, beside the manifest's own sha256. Kept under ~/.cache/llmc-kit/verified/; readers apply them when
    the manifest is still the one verified and a shard is still the file that was hashed."""

    KIND = "verified shard stamps"
    folder: str
    manifest_sha256: str
    stamps: dict[str, list[int]] = Field(default_factory=dict)     # file -> [size, mtime_ns, ino, ctime_ns]


def verified_path(dir: Path) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(str(Path(dir).resolve()).encode()).hexdigest()[:32]
    return cache / "llmc-kit" / "verified" / f"{key}.json"


def _manifest_sha(dir: Path) -> str:
    return hashlib.sha256((Path(dir) / MANIFEST).read_bytes()).hexdigest()


def record_verified(m: DataManifest) -> Path:
    """After every sha256 matched in a folder whose manifest cannot be rewritten: keep the stamps aside."""
    stamps = {}
    for s in m.shards:
        st = os.stat(m.dir / s.file)
        stamps[s.file] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    path = verified_path(m.dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    return VerifiedStamps(folder=str(m.dir.resolve()), manifest_sha256=_manifest_sha(m.dir), stamps=stamps).write(path)


def _apply_verified(m: DataManifest) -> bool:
    """Use the stamps ``kitctl data verify`` kept aside for this folder (same manifest bytes): True if any."""
    path = verified_path(m.dir)
    try:
        rec = VerifiedStamps.read(path) if path.is_file() else None
        if rec is None or rec.manifest_sha256 != _manifest_sha(m.dir) or rec.folder != str(m.dir.resolve()):
            return False
    except (KitError, OSError):
        return False
    used = False
    for s in m.shards:
        v = rec.stamps.get(s.file)
        if v is not None and len(v) == 4:
            s.size, s.mtime_ns, s.ino, s.ctime_ns = v
            used = True
    return used


def fix_for(dir: Path, problems: tuple[Problem, ...]) -> str:
    """What to do about ``problems`` (the hint of :func:`require_consistent`)."""
    kinds = {p.kind for p in problems}
    fixes = []
    if "stray" in kinds:
        strays = [p.file for p in problems if p.kind == "stray"]
        fixes.append(f"move the stray file(s) out of {dir} ({', '.join(strays[:3])}{', ...' if len(strays) > 3 else ''})")
    if kinds & {"missing", "special", "size", "name"}:
        fixes.append(f"re-run the `kitctl data` command that made the folder (it rewrites missing or damaged shards), "
                     f"or {start_over_hint(dir)}")
    if "mtime" in kinds:
        fixes.append(f"run `kitctl data verify {shlex.quote(str(dir))}`: it checks every shard's sha256 and, when they all match, "
                     "records the new mtimes")
    return "; ".join(fixes)


def describe(dir: Path, problems: tuple[Problem, ...], limit: int = 8) -> str:
    lines = [str(p) for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    return (f"the shard folder {dir} does not match its {MANIFEST}:\n    " + "\n    ".join(lines))


# --------------------------------------------------------------------------------------------- the folder
def read_header(path: Path) -> int:
    """The token count of the llm.c shard at ``path`` (header and file size agree, at least one token): the one
    shard-header reader (``kitctl data``'s checks and train's reading of a folder without a manifest). Exit 2
    naming the file otherwise."""
    path = Path(path)
    fix = "re-make the shards with `kitctl data` (delete the file and re-run the command that made it)"
    try:
        with path.open("rb") as f:
            head = f.read(HEADER_BYTES)
        size = path.stat().st_size
    except OSError as e:
        raise ConfigError(f"cannot read shard {path}: {e.strerror or e}", "check the file's permissions") from None
    if len(head) < HEADER_BYTES:
        raise ConfigError(f"{path}: {len(head)} bytes, shorter than llm.c's {HEADER_BYTES}-byte header", fix)
    try:
        n = unpack_shard_header(head)
    except HeaderError as e:
        raise ConfigError(f"{path}: not an llm.c token shard ({e})", fix) from None
    if size != _shard_bytes(n) or n <= 0:
        raise ConfigError(f"{path}: {size} bytes but the header says {n} tokens ({_shard_bytes(n)} bytes)",
                          fix + " (an interrupted copy?)")
    return n


@dataclass(frozen=True)
class ShardTokens:
    """One shard as the training planner sees it: its file name and token count."""

    name: str
    tokens: int


@dataclass(frozen=True)
class DataInfo:
    """What train reads from a shard folder (``<prefix>_val_000000.bin``, ``<prefix>_train_%06d.bin``):
    :meth:`DataFolder.facts`; a pipeline plans with one made by hand before its data stage writes the shards."""

    dir: Path
    prefix: str
    train: tuple[ShardTokens, ...]
    val: tuple[ShardTokens, ...]
    manifest_sha256: Optional[str] = None
    complete: Optional[bool] = None       # manifest.json's "complete" (None: no manifest)
    notes: tuple[str, ...] = ()           # what the folder check said (e.g. no manifest: taken as it is)

    @property
    def train_tokens(self) -> int:
        return sum(s.tokens for s in self.train)

    @property
    def min_shard_tokens(self) -> int:
        return min(s.tokens for s in (*self.train, *self.val))

    @property
    def fingerprint(self) -> str:
        """A hash of the shard names and token counts: what a resumed run must see again. (Not manifest.json's
        sha256: `kitctl data` rewrites the manifest without changing finished shards.)"""
        h = hashlib.sha256()
        for s in (*self.val, *self.train):
            h.update(f"{s.name}:{s.tokens}\n".encode())
        return "shards:" + h.hexdigest()[:32]

    def train_glob(self, root: str) -> str:
        """llm.c's -i: ``root`` (this folder, or its path in a container) and the prefix escaped for glob(3)."""
        return shard_globs(root, self.prefix)[1]

    def val_glob(self, root: str) -> str:
        return shard_globs(root, self.prefix)[0]


class DataFolder:
    """A shard folder on disk and its record, ``manifest.json`` (pipx's ``Venv`` + metadata shape): where the
    manifest is, reading it, the check of the folder against it, its shards' paths and headers, and the facts
    train plans with. ``kitctl data`` writes the record (kitctl.data.tokenize, kitctl.data.pretokenized); every
    reader (train, tune, reproduce, status, data's own checks) comes here."""

    def __init__(self, dir: Path):
        self.dir = Path(dir)

    def __repr__(self) -> str:
        return f"DataFolder({str(self.dir)!r})"

    @property
    def manifest_path(self) -> Path:
        return self.dir / MANIFEST

    def has_manifest(self) -> bool:
        return exists(self.dir)

    def manifest(self) -> DataManifest:
        return load(self.dir)

    def manifest_sha256(self) -> str:
        return _manifest_sha(self.dir)

    def shard_problem(self, m: DataManifest, s: Shard) -> Optional[str]:
        """Why shard ``s`` of ``m`` is not intact (missing, size, llm.c header, token count, sha256), or None."""
        if "/" in s.file or s.file in (".", ".."):
            return "outside the folder"
        p = m.dir / s.file
        if p.is_symlink() or not p.is_file():
            return "missing" if not p.is_symlink() and not p.exists() else "not a regular file"
        try:
            n = read_header(p)
        except KitError as e:
            return e.message.replace(f"{p}: ", "")
        if n != s.tokens:
            return f"header says {n:,} tokens, the manifest {s.tokens:,}"
        sha = sha256_file(p)
        if sha != s.sha256:
            return f"sha256 differs from the manifest ({sha[:16]}... vs {s.sha256[:16]}...)"
        return None

    def verify(self, on_file: Optional[Callable[[Shard], Any]] = None,
               log: Optional[Callable[[str], Any]] = None) -> tuple[DataManifest, list[str]]:
        """Re-check a data folder: every shard's header, size, token count and sha256 against the manifest,
        shard numbering, stray shard files and special files (:func:`compare`). Returns (manifest,
        problems); no problems means good. When every shard's bytes match but an mtime does not (a copy without
        ``-p``), the manifest records the new mtimes: the cheap check of train and data trusts them again."""
        m = self.manifest()
        problems = []
        for pos, s in enumerate(m.shards):
            if s.index != pos or s.file != shard_filename(m.name, s.index):
                problems.append(f"{s.file}: listed as shard {s.index} at position {pos} "
                                f"(expected {shard_filename(m.name, pos)})")
            why = self.shard_problem(m, s)
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

    def refuse(self, m: DataManifest, kinds: tuple[str, ...]) -> None:
        """Exit 2 naming the files when ``m`` (this folder's manifest) and the folder disagree in one of ``kinds``."""
        bad = tuple(p for p in compare(m) if p.kind in kinds)
        if bad:
            raise ConfigError(describe(self.dir, bad), fix_for(self.dir, bad))

    def check(self) -> FolderCheck:
        """Compare a shard folder with its manifest.json; no manifest: ok, with a note. A damaged manifest: KitError.
        Stamps ``kitctl data verify`` recorded aside for a read-only folder count as the manifest's."""
        dir = self.dir
        if not exists(dir):
            return FolderCheck(dir, None, notes=(f"{dir} has no {MANIFEST} (shards made elsewhere?): its files are taken "
                                                 "as they are, unchecked against a manifest",))
        m = load(dir)
        problems = compare(m)
        if any(p.kind == "mtime" for p in problems) and _apply_verified(m):
            problems = compare(m)
            if not problems:
                return FolderCheck(dir, m, (), (f"{dir} is read-only: its shards' stamps since `kitctl data verify` "
                                                f"are in {verified_path(dir)}",))
        return FolderCheck(dir, m, problems)

    def require_consistent(self) -> FolderCheck:
        """:meth:`check`, with a mismatch as exit 2 naming the files and the fix."""
        c = self.check()
        if c.problems:
            fix = fix_for(c.dir, c.problems)
            if c.manifest is not None and not c.manifest.complete:
                fix = ("the `kitctl data` run that writes this folder has not finished: re-run the same command to "
                       "complete it; else " + fix)
            raise ConfigError(describe(c.dir, c.problems), fix)
        return c

    def facts(self) -> DataInfo:
        """What train reads: the folder must agree with its manifest (:meth:`require_consistent`), whose shard list
        and token counts are then the facts (no file is opened); a folder without a manifest is listed and its
        shard headers read (:func:`read_header`), with a note. Exit 2 when there is no training or validation
        shard, shards of several datasets, or a folder llm.c's -i / -j patterns would not name exactly."""
        d = self.dir
        if not d.is_dir():
            raise ConfigError(f"no shard folder at {d}",
                              "make shards with `kitctl data` (e.g. `kitctl data tinyshakespeare`) or point --data at "
                              "a folder holding <name>_val_000000.bin and <name>_train_000001.bin ...")
        check = self.require_consistent()
        m = check.manifest
        split: dict[str, dict[str, list[ShardTokens]]] = {"train": {}, "val": {}}
        if m is not None:
            for s in m.shards:           # named shard_filename(m.name, position): the check saw to that
                if s.tokens <= 0 or s.expected_size != _shard_bytes(s.tokens):
                    raise ConfigError(f"{self.manifest_path} lists {s.file} with {s.tokens} tokens in "
                                      f"{s.expected_size} bytes", start_over_hint(d))
                sn = parse_shard_filename(s.file)
                assert sn is not None
                split[sn.split].setdefault(sn.prefix, []).append(ShardTokens(s.file, s.tokens))
        else:
            for p in sorted(d.iterdir()):
                if sn := parse_shard_filename(p.name):
                    _regular(p)
                    split[sn.split].setdefault(sn.prefix, []).append(ShardTokens(p.name, read_header(p)))
        train, val = split["train"], split["val"]
        prefixes = sorted(set(train) | set(val))
        if not train:
            raise ConfigError(f"no training shards (*_train_NNNNNN.bin) in {d}",
                              "make them with `kitctl data`, or pass --data DIR with the shard folder")
        if len(prefixes) > 1:
            raise ConfigError(f"{d} holds shards of several datasets: {', '.join(prefixes)}",
                              "keep one dataset per folder (kitctl data does) and pass that folder with --data")
        prefix = prefixes[0]
        if not val.get(prefix):
            raise ConfigError(f"no validation shard {shard_filename(prefix, 0)} in {d}",
                              "llm.c needs one for -j; re-make the shards with `kitctl data`")
        _check_llmc_globs(d.resolve(), prefix, train[prefix], val[prefix])
        return DataInfo(d.resolve(), prefix, tuple(train[prefix]), tuple(val[prefix]),
                        self.manifest_sha256() if m is not None else None, m.complete if m is not None else None,
                        check.notes)


def _regular(p: Path) -> None:
    """A shard must be a regular file (a symlink to one is fine in a folder without a manifest): a FIFO or device
    under a shard's name is refused before anything opens it."""
    try:
        ok = stat.S_ISREG(os.stat(p).st_mode)
    except OSError as e:
        raise ConfigError(f"cannot read shard {p}: {e.strerror or e}", "check the file (a dangling symlink?)") from None
    if not ok:
        raise ConfigError(f"{p} is not a regular file", "move it out of the shard folder; shards are plain files")


def _check_llmc_globs(folder: Path, prefix: str, train: list[ShardTokens], val: list[ShardTokens]) -> None:
    """What llm.c will glob is what was checked: the escaped -i / -j patterns match exactly these shards (Python's
    glob reads the bracket escapes as glob(3) does); a backslash, which the two read differently, is refused."""
    if GLOB_UNSAFE in str(folder) or GLOB_UNSAFE in prefix:
        raise ConfigError(f"the shard folder {folder} has a backslash in its path: llm.c's glob(3) reads it as an "
                          "escape, so -i / -j would not name this folder",
                          "move or link the shards to a folder without a backslash and pass it with --data")
    val_glob, train_glob = shard_globs(str(folder), prefix)
    for pattern, want in ((train_glob, train), (val_glob, val)):
        got = {str(Path(p)) for p in glob.glob(pattern)}
        wanted = {str(folder / s.name) for s in want}
        if got != wanted:
            extra = sorted(got ^ wanted)
            raise ConfigError(f"llm.c's pattern {pattern} would not read exactly the checked shards of {folder}: "
                              f"it differs at {', '.join(extra[:3])}",
                              "rename the folder to plain letters, digits, '-', '_' and '.', then pass it with --data")
