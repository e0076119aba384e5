"""A shard folder on disk, :class:`DataFolder`: ``manifest.json`` (:class:`~kitctl.core.data_manifest.DataManifest`)
is the truth (issues 17, 30).

The folder class lives here, below data and train, so that its writer (``kitctl data``) and every reader (train,
tune, reproduce, status, data's own "is it complete" check) share one record, one check, one shard writer
(:class:`ShardWriter`) and one shard-header reader (:func:`read_header`). What train reads from a data folder is
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

Writing goes through the folder too (``kitctl data``: kitctl.data.tokenize and kitctl.data.pretokenized only call
it): :meth:`DataFolder.resume_or_start` opens the record of a re-run or starts one, :meth:`DataFolder.intact_prefix`
keeps the shards a re-run can keep, :meth:`DataFolder.clean_leftovers` removes what an interrupted writer left,
:meth:`DataFolder.writer` cuts a token stream into shards (:class:`ShardWriter`: temp file, sha256 while writing,
fsync and rename through kitctl.core.files) and commits each one to the record (:meth:`DataFolder.commit_shard`),
and :meth:`DataFolder.save_manifest` writes the record atomically (temp, fsync, rename): at the start of a run,
after finished shards (batched: when the shards since the last save reach 1/:data:`SAVE_FRACTION` of those it
lists, or :data:`SAVE_EVERY_S` have passed), when a run stops and when it completes. A shard is renamed into place
and its entry added with SIGINT/SIGTERM/SIGHUP held in between (kitctl.core.proc.signals_deferred); a shard is
fsynced (on a thread, while the next one is written) before it is renamed, and the folder once before each save,
so a manifest never names a shard that is not on disk for good (docs/reliability.md section 19).
"""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import shlex
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Literal, Optional

from pydantic import Field

from kitctl.core.data_manifest import (MANIFEST, DataManifest, RunLike, Shard, ShardEnd, as_run, identity_diff,
                                       start_over_hint)
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import fsync_dir, fsync_file, rename_synced, sha256_file, temp_path
from kitctl.core.llmc_files import (GLOB_UNSAFE, HEADER_BYTES, TOKENIZER_BIN, HeaderError, pack_shard_header,
                                    parse_shard_filename, shard_filename, shard_globs, shard_patterns,
                                    unpack_shard_header)
from kitctl.core.llmc_files import shard_size as _shard_bytes
from kitctl.core.proc import signals_deferred
from kitctl.core.records import Record

SAVE_EVERY_S = 5.0
SAVE_FRACTION = 16              # save when the new shards reach 1/SAVE_FRACTION of the listed ones
Log = Callable[[str], Any]


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
        """Is there a manifest entry at all (a regular file, or something else :meth:`manifest` refuses)?"""
        return os.path.lexists(self.manifest_path)

    def manifest(self) -> DataManifest:
        """Read ``manifest.json``; a KitError with :func:`start_over_hint` when damaged (exit 2 when missing or not
        a regular file)."""
        path = self.manifest_path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise ConfigError(f"{self.dir} has no {MANIFEST}",
                              f"make the data first: `kitctl data` (writes {MANIFEST})") from None
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror or e}", "check the folder's permissions") from None
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file ({_kind(st.st_mode)})", start_over_hint(self.dir))
        m = DataManifest.read(path, hint=start_over_hint(self.dir))      # damaged: exit 1 with the one hint
        m.dir = self.dir
        return m

    def save_manifest(self, m: DataManifest) -> None:
        """Write ``m`` as this folder's ``manifest.json``, atomically (temp, fsync, rename)."""
        m.write(self.manifest_path)

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
               log: Optional[Log] = None) -> tuple[DataManifest, list[str]]:
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
            problems += self._record_checked_stamps(m, log)
        return m, problems

    def _record_checked_stamps(self, m: DataManifest, log: Optional[Log]) -> list[str]:
        """Every shard's bytes matched but an mtime did not: record the new stamps in the manifest, or, in a
        read-only folder, aside where train's check reads them (no dead end). Returns the problem if neither can."""
        for s in m.shards:
            s.stamp(m.dir / s.file)
        try:
            self.save_manifest(m)
            if log:
                log(f"{m.dir}: shard mtimes changed but every sha256 matches: the new mtimes are recorded in {MANIFEST}")
            return []
        except OSError as e:
            try:
                side = record_verified(m)
            except OSError as e2:
                return [f"{MANIFEST}: the shards' bytes match but their mtimes changed, and the new ones could not be "
                        f"recorded there ({e.strerror or e}) nor in {verified_path(m.dir)} ({e2.strerror or e2})"]
            if log:
                log(f"{m.dir}: shard mtimes changed but every sha256 matches; {MANIFEST} cannot be rewritten "
                    f"({e.strerror or e}), so the checked stamps are kept in {side}: train trusts them")
            return []

    def refuse(self, m: DataManifest, kinds: tuple[str, ...]) -> None:
        """Exit 2 naming the files when ``m`` (this folder's manifest) and the folder disagree in one of ``kinds``."""
        bad = tuple(p for p in compare(m) if p.kind in kinds)
        if bad:
            raise ConfigError(describe(self.dir, bad), fix_for(self.dir, bad))

    def check(self) -> FolderCheck:
        """Compare a shard folder with its manifest.json; no manifest: ok, with a note. A damaged manifest: KitError.
        Stamps ``kitctl data verify`` recorded aside for a read-only folder count as the manifest's."""
        dir = self.dir
        if not self.has_manifest():
            return FolderCheck(dir, None, notes=(f"{dir} has no {MANIFEST} (shards made elsewhere?): its files are taken "
                                                 "as they are, unchecked against a manifest",))
        m = self.manifest()
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


    # ----------------------------------------------------------------------------------- writing (kitctl data)
    def resume_or_start(self, name: str, dataset: str, run: RunLike, log: Optional[Log] = None) -> DataManifest:
        """Open (resume) or start this folder's record; refuse a folder made with another config.

        A folder does not bind a re-run to its old config when nothing of it can be reused: no shards yet (a first
        run that failed or was stopped early), or a run that *failed* (bad input, full disk) -- the retry starts
        over."""
        run = as_run(run)
        if self.has_manifest():
            m = self.manifest()
            diff = identity_diff(m.run, run)
            if m.name != name:
                diff.insert(0, f"name: folder has {m.name!r}, this run wants {name!r}")
            if not diff:
                return m
            if not m.shards or (m.run.failed and not m.complete):
                if m.shards and log:
                    log(f"{self.dir}: the run that made its {len(m.shards)} shard(s) failed ({m.run.failed}); "
                        "this run has a different config, so it starts over")
                self.clean_leftovers(m.name, 0)
                return DataManifest(dir=self.dir, name=name, dataset=dataset, run=run)
            raise ConfigError(
                f"{self.dir} already holds shards made with a different config:\n    " + "\n    ".join(diff),
                "re-run with the same options to continue that run, add --fresh to start over (`kitctl data`: the "
                "folder moves aside to <folder>.old-<time>, nothing is deleted), or pick another --out folder")
        existing = [p for p in sorted(self.dir.glob("*.bin")) if p.name != TOKENIZER_BIN] if self.dir.is_dir() else []
        if existing:
            raise KitError(f"{self.dir} holds .bin files ({existing[0].name}, ...) but no {MANIFEST}, so they "
                           "were not made by kitctl data (or the manifest was deleted)", start_over_hint(self.dir))
        self.dir.mkdir(parents=True, exist_ok=True)
        return DataManifest(dir=self.dir, name=name, dataset=dataset, run=run)

    def intact_prefix(self, m: DataManifest, log: Optional[Log] = None) -> list[Shard]:
        """The manifest's shards whose files are intact, in order, up to the first bad one. A re-run resumes there
        and rewrites everything after it (a shard's contents depend on every document before it)."""
        good = []
        for s in m.shards:
            if s.end is None:          # no resume point recorded
                break
            p = self.dir / s.file
            why = None
            if p.is_file() and p.stat().st_size != _shard_bytes(s.tokens):
                why = f"{p.stat().st_size:,} bytes, the manifest says {s.tokens:,} tokens"
            why = why or self.shard_problem(m, s)
            if why:
                if log:
                    log(f"{s.file}: {why}; rewriting from shard {s.index} on")
                break
            good.append(s)
        return good

    def clean_leftovers(self, name: str, from_index: int) -> None:
        """Temp files of an interrupted writer, and shard files at or past the resume point ``from_index``."""
        d = self.dir
        for p in [*d.glob(f".tmp-{name}_*.bin.*"), *d.glob(f".{name}_*.bin.tmp"), *d.glob(f".tmp-{MANIFEST}.*")]:
            p.unlink(missing_ok=True)
        for p in [*d.glob(f"{name}_val_*.bin"), *d.glob(f"{name}_train_*.bin")]:
            try:
                idx = int(p.stem.rsplit("_", 1)[1])
            except ValueError:
                continue
            if idx >= from_index:
                p.unlink()

    def restamp(self, m: DataManifest, log: Optional[Log] = None) -> None:
        """Every shard's sha256 was just checked: record mtimes that changed (a copy without -p) or were never
        recorded (an older manifest), so train's cheap check trusts the folder again."""
        stale = [s for s in m.shards if s.mtime_ns is None or s.size is None or s.ino is None
                 or s.changed(os.stat(self.dir / s.file))]
        if not stale:
            return
        for s in stale:
            s.stamp(self.dir / s.file)
        self.save_manifest(m)
        if log:
            log(f"{self.dir}: {len(stale)} shard(s) checked by sha256; their sizes and mtimes recorded in {MANIFEST}")

    def commit_shard(self, m: DataManifest, file: str, tokens: int, sha256: str,
                     end: Optional[ShardEnd] = None) -> Shard:
        """Add the shard ``file`` (in place, complete) as the next entry of ``m``, with its stat stamps."""
        index = len(m.shards)
        s = Shard(index=index, file=file, tokens=tokens, sha256=sha256, split="val" if index == 0 else "train",
                  end=end).stamp(self.dir / file)
        m.shards.append(s)
        return s

    def adopt_shard(self, m: DataManifest, file: str) -> Shard:
        """:meth:`commit_shard` for a shard placed here whole (downloaded or linked: ``fineweb10B-pretokenized``):
        its header and size checked (a bad one is exit 1: a file `kitctl data` fetched, not one the user named) and
        its sha256 taken."""
        p = self.dir / file
        try:
            n = read_header(p)
        except ConfigError as e:
            raise KitError(e.message, e.hint) from None
        return self.commit_shard(m, file, n, sha256_file(p))

    def writer(self, m: DataManifest, shard_size: int, first_shard_size: Optional[int] = None,
               resume_point: Optional[Callable[[int], ShardEnd]] = None) -> ShardWriter:
        """A :class:`ShardWriter` that continues ``m`` (this folder's record) after its last shard."""
        return ShardWriter(self, m, shard_size, first_shard_size, resume_point)


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


@dataclass
class _Finished:
    """A shard whose bytes are complete in its temp file, fsynced on a thread (``sync``) before it is committed."""

    tmp: Path
    path: Path
    tokens: int
    sha256: str
    end: Optional[ShardEnd]
    sync: threading.Thread = field(init=False, repr=False)
    error: Optional[BaseException] = field(default=None, init=False)

    def start(self) -> _Finished:
        def run() -> None:
            try:
                fsync_file(self.tmp)
            except BaseException as e:   # noqa: BLE001 - handed to the writer's thread, raised there
                self.error = e
        self.sync = threading.Thread(target=run, name="kitctl-shard-fsync", daemon=True)
        self.sync.start()
        return self


class ShardWriter:
    """Cuts a token stream into shards exactly like llm.c's fineweb.py, continuing the record ``m`` of ``folder``
    (made by :meth:`DataFolder.writer`).

    llm.c's layout (``dev/data/data_common.py`` write_datafile, read by ``llmc/dataloader.h``): a header of 256
    little-endian int32 -- ``[20240520 (magic), 1 (version), n_tokens, 0, ...]`` -- and ``n_tokens`` uint16 GPT-2
    token ids; shard 0 is ``<name>_val_000000.bin``, every later one ``<name>_train_%06d.bin``. The token stream is
    every document as ``[50256] + encode_ordinary(text)``, concatenated in order; fineweb.py cuts it into
    consecutive shards of exactly ``shard_size`` tokens (a document that crosses a boundary is split, its remainder
    starts the next shard; a document that exactly fills a shard ends it) and writes what is left as a last,
    shorter shard. Here a document longer than a shard also spills over as many shards as it needs (upstream
    crashes there). ``first_shard_size`` sizes shard 0 (the val shard) separately; default ``shard_size``.

    Tokens (a contiguous uint16 array: numpy's, or any buffer) are streamed straight into the current shard's temp
    file (no shard-sized buffer, no extra copy); a full shard's header is known up front, the last, partial one gets
    its header rewritten at the end. Each file is hashed as it is written (the last, partial one re-read once, its
    header having changed) and its resume point taken where it ends (``resume_point(stream position)``). Then it is
    fsynced on a thread while the next shard is written; once that is done it is renamed into place and committed
    to ``m`` (:meth:`DataFolder.commit_shard`) with signals held in between (at most two shards wait at a time).
    The folder is fsynced once before each save of the record (:meth:`save`, in batches: module docstring), so the
    record never names a shard that is not on disk for good (docs/reliability.md section 19). A failure or Ctrl-C
    (:meth:`abort`) commits the finished shards and removes the temp file of the one in progress.
    """

    def __init__(self, folder: DataFolder, m: DataManifest, shard_size: int, first_shard_size: Optional[int] = None,
                 resume_point: Optional[Callable[[int], ShardEnd]] = None):
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        self.folder, self.m = folder, m
        self.shard_size = shard_size
        self.first_shard_size = first_shard_size or shard_size
        self.resume_point = resume_point
        self.index = len(m.shards)            # the shard being written
        end = m.shards[-1].end if m.shards else None
        self.pos = end.pos if end else 0      # stream position of the first token of the current shard
        self.fill = 0
        self.saves = 0
        self._listed, self._saved_at = len(m.shards), time.monotonic()
        self._f: Optional[BinaryIO] = None
        self._hash = hashlib.sha256()
        self._waiting: list[_Finished] = []   # finished, being fsynced, not yet committed (in order)
        self._renamed = False                 # a shard was renamed into the folder since its last fsync

    # --- the record
    def save(self) -> None:
        """Save the record now (at the start of a run, when it stops, when it completes): the renames of the shards
        it lists are made durable first (one fsync of the folder)."""
        if self._renamed:
            fsync_dir(self.folder.dir)
            self._renamed = False
        self.folder.save_manifest(self.m)
        self.saves += 1
        self._listed, self._saved_at = len(self.m.shards), time.monotonic()

    def _maybe_save(self) -> None:
        new = len(self.m.shards) - self._listed
        if new >= max(1, self._listed // SAVE_FRACTION) or time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            self.save()

    def drop_since(self, start_index: int) -> int:
        """Take back the shards from ``start_index`` on (the files and their entries; the record is marked
        incomplete and saved). Returns how many entries went."""
        self.abort()
        n = len(self.m.shards) - start_index
        del self.m.shards[start_index:]
        self.m.complete = False
        self.folder.clean_leftovers(self.m.name, start_index)
        self.save()
        return n

    # --- the shards
    def _cap(self) -> int:
        return self.first_shard_size if self.index == 0 else self.shard_size

    def _path(self) -> Path:
        return self.folder.dir / shard_filename(self.m.name, self.index)

    def _open(self) -> BinaryIO:
        f = open(temp_path(self._path()), "wb")   # noqa: SIM115 - stays open across add() calls; _finish/abort close it
        head = pack_shard_header(self._cap())
        f.write(head)
        self._hash = hashlib.sha256(head)      # hashed as written (a partial last shard: re-read, see close)
        self._f = f
        return f

    def add(self, tokens: Any) -> None:
        """Append ``tokens`` (a contiguous array of uint16) to the stream."""
        raw = memoryview(tokens)
        if raw.itemsize != 2 or raw.format not in ("H", "<H", "=H") or not raw.c_contiguous:
            raise TypeError(f"tokens must be a contiguous uint16 array, not format {raw.format!r}")
        self._commit(wait_until=len(self._waiting))      # those fsynced by now
        raw = raw.cast("B")
        i, n = 0, len(raw) // 2
        while i < n:
            f = self._f if self._f is not None else self._open()
            cap = self._cap()
            take = min(cap - self.fill, n - i)
            body = raw[2 * i:2 * (i + take)]
            f.write(body)
            self._hash.update(body)            # sha256 releases the GIL: the workers keep tokenizing
            self.fill += take
            i += take
            if self.fill == cap:
                self._finish()

    def _finish(self, reread: bool = False) -> None:
        """The shard is complete in its temp file: start its fsync, then commit the one before it. Its sha256 was
        taken while writing; ``reread``: the header was rewritten (the last, partial shard), hash the file as is."""
        f, n, path = self._f, self.fill, self._path()
        assert f is not None
        tmp = temp_path(path)
        f.close()
        h = self._hash
        if reread:
            h = hashlib.sha256()
            with open(tmp, "rb") as r:
                while chunk := r.read(1 << 22):
                    h.update(chunk)
        end = self.resume_point(self.pos + n) if self.resume_point else None    # where it ends in the stream now
        self._waiting.append(_Finished(tmp, path, n, h.hexdigest(), end).start())
        self._f = None
        self.pos += n
        self.index += 1
        self.fill = 0
        self._commit(wait_until=1)

    def _commit(self, wait_until: int = 0, *, drop_failed: bool = False) -> None:
        """Commit the waiting shards, in order, whose fsync is done, waiting while more than ``wait_until`` wait (0:
        all of them). Each is renamed into place and recorded with signals held in between: a Ctrl-C/SIGTERM lands
        after the shard is both in place and recorded. A failed fsync is raised (its temp, and those after it,
        removed); with ``drop_failed`` it is not raised."""
        while self._waiting:
            w = self._waiting[0]
            if len(self._waiting) > wait_until:
                w.sync.join()
            elif w.sync.is_alive():
                return
            if w.error is not None:
                for later in self._waiting:
                    later.sync.join()
                    later.tmp.unlink(missing_ok=True)
                self._waiting.clear()
                if drop_failed:
                    return
                raise w.error
            with signals_deferred():
                rename_synced(w.tmp, w.path)      # the temp is removed if that fails
                self._waiting.pop(0)
                self._renamed = True
                self.folder.commit_shard(self.m, w.path.name, w.tokens, w.sha256, w.end)
                self._maybe_save()

    def close(self) -> None:
        """Write the last, partial shard (if any tokens are left), as upstream does at the end, and commit every
        finished shard."""
        if self._f is not None and not self.fill:
            self._drop_current()
        if self._f is not None:
            self._f.seek(0)
            self._f.write(pack_shard_header(self.fill))
            self._finish(reread=self.fill != self._cap())
        self._commit()

    def abort(self) -> None:
        """Drop the shard in progress (its temp file); finished shards are committed (a failed fsync drops its shard
        and those after it: a re-run writes them again)."""
        self._drop_current()
        self._commit(drop_failed=True)

    def _drop_current(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
            temp_path(self._path()).unlink(missing_ok=True)
        self.fill = 0
