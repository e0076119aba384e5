"""The offline bundle's format: one uncompressed tar whose first member is ``manifest.json``.

``kitctl bundle`` (kitctl/pipeline/bundle.py) packs what a box without network needs; ``kitctl reproduce
--bundle``, ``kitctl build --bundle`` and ``kitctl data --bundle`` read it through this module. It is in core
because those three areas read it and none may import another.

Layout (member names; every member's size and sha256 are in the manifest)::

    manifest.json                      first member: BundleManifest (format, kit version, members, what was packed)
    images/runtime.tar, images/data.tar   `docker save` of the runtime / data image (left out with --no-images)
    llmc/llm.c-<commit>.tar.gz         llm.c's pinned source tarball (or llmc/llm.c/... : an allow-listed checkout)
    cudnn-frontend/include/...         cudnn-frontend headers (native builds, when packed with --cudnn-frontend)
    tokenizer/vocab.bpe, tokenizer/encoder.json   GPT-2's BPE files
    hellaswag/hellaswag_val.jsonl      the HellaSwag validation set
    dataset/...                        optional: the dataset's local input (parquet / jsonl / txt, or ready shards)
    wheels/*.whl                       the kit's wheelhouse: kitctl's own wheel and every dependency at the locked
                                       version (kitctl/pipeline/wheelhouse.py); `tar -xf FILE wheels` then
                                       `pip install --no-index --find-links wheels llmc-kit` installs the kit

Checks, as git checks objects on read: :func:`open_bundle` reads the manifest and the tar's member list (cheap,
an uncompressed tar is walked by seeking) and refuses a member that is missing, extra, of another size (a
partial copy), a link or a special file, and a manifest whose ``contents`` names anything but its own members
(the manifest is data to check, not to trust); :func:`unpack` hashes every member while it extracts it and
refuses one whose sha256 differs (damage). Both refuse with exit 2 naming the member. The unpacked folder appears
whole (a temp folder renamed) under ``<data_root>/bundles/<manifest sha256[:12]>`` and is reused by later
commands: each use compares every member's size and mtime with the stamp written at unpack time and re-checks
(or extracts again) a member that differs. Unpacking holds a lock per bundle (a second process waits, then
reuses the result); a signal removes the partial folder; a killed unpack's folder is removed by the next one.
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Iterator, Optional

from pydantic import BaseModel

from kitctl.core import validate
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import atomic_output, free_bytes, is_disk_full, open_regular
from kitctl.core.layout import DataLayout
from kitctl.core.proc import TerminationAsInterrupt
from kitctl.core.progress import progress_bar
from kitctl.core.records import Record, loads_json, short

FORMAT = "llmc-kit-bundle"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
CHUNK = 1 << 20

# member kinds (the first path part names it)
IMAGE_RUNTIME = "images/runtime.tar"
IMAGE_DATA = "images/data.tar"
TOKENIZER_FILES = ("vocab.bpe", "encoder.json")
HELLASWAG = "hellaswag/hellaswag_val.jsonl"
WHEELS = "wheels"          # the wheelhouse's folder at the tar's top level

ProgressFn = Callable[[int], None]      # bytes done since the last call
Say = Callable[[str], None]
STAMP = ".kitctl-unpacked.json"        # in the unpacked folder: each member's size and mtime as unpacked
RESERVED = (MANIFEST, STAMP)            # top-level names no member may take
# contents keys that name a member (or a folder of members) the reader opens
CONTENT_PATHS = {"dataset_path": "member or folder", "llmc": "member or folder",
                 "cudnn_frontend": "folder", "hellaswag_path": "member"}


class Member(BaseModel):
    name: str
    bytes: int
    sha256: str


class BundleManifest(Record):
    """What a bundle holds (its first member)."""

    KIND = "bundle manifest"
    format: str = FORMAT
    created: str = ""
    kit_version: str = ""
    members: list[Member] = []
    # what was packed, as the reader needs it: {"dataset": spec or recipe, "dataset_kind": recipe|local|none,
    # "dataset_path": member path of the input under dataset/, "llmc": member path, "llmc_commit",
    # "images": {"runtime": {"ref", "id", "recipe_hash"}, "data": {...}}, "hellaswag": {"sha256", "examples"}}
    contents: dict[str, Any] = {}

    def member(self, name: str) -> Optional[Member]:
        return next((m for m in self.members if m.name == name), None)


MAX_HEADER_BYTES = 1 << 20     # a pax / GNU long-name header: a path and a few keys (tarfile reads one whole)


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a pax or GNU long-name header into memory whole, at the size the header declares: one that
    declares GBs (a hostile or sparse bundle) is refused before it is read."""

    def _proc_pax(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size > MAX_HEADER_BYTES:
            raise tarfile.HeaderError(f"a pax header of {self.size:,} bytes (at most {MAX_HEADER_BYTES:,})")
        return super()._proc_pax(tf)  # type: ignore[misc, no-any-return]

    def _proc_gnulong(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size > MAX_HEADER_BYTES:
            raise tarfile.HeaderError(f"a long-name header of {self.size:,} bytes (at most {MAX_HEADER_BYTES:,})")
        return super()._proc_gnulong(tf)  # type: ignore[misc, no-any-return]


def _tar(fh: IO[bytes]) -> tarfile.TarFile:
    return tarfile.open(fileobj=fh, mode="r:", tarinfo=_BoundedTarInfo)


def _refuse(path: Path, what: str, fix: str = "") -> ConfigError:
    return ConfigError(f"bundle {path}: {what}", fix or "copy the bundle again (compare its size with the "
                       "original's), or make a new one with `kitctl bundle --out FILE` on the box that has network")


def _safe_name(name: object) -> bool:
    """A plain relative path inside the bundle: not absolute, no ``..``, ``.`` or empty parts, no backslash or
    control character, not one of the reader's own file names."""
    if not isinstance(name, str) or not name or len(name) > 1024:
        return False
    p = PurePosixPath(name)
    return (not p.is_absolute() and p.as_posix() == name and ".." not in p.parts and "\\" not in name
            and not any(ord(c) < 32 or c == "\x7f" for c in name) and name not in RESERVED)


@dataclass
class Bundle:
    path: Path
    manifest: BundleManifest
    key: str                       # sha256 of the manifest's bytes, first 12 hex: names the unpacked folder

    def has(self, name: str) -> bool:
        return self.manifest.member(name) is not None

    def names(self, prefix: str) -> list[str]:
        return [m.name for m in self.manifest.members if m.name.startswith(prefix)]


def _read_manifest(path: Path, tf: tarfile.TarFile) -> tuple[BundleManifest, bytes]:
    """The first member, manifest.json, parsed and checked (format, schema); its raw bytes (the bundle's key)."""
    try:
        first = tf.next()
        if first is None or first.name != MANIFEST or not first.isfile():
            raise _refuse(path, f"its first member is {short(first.name, 80) if first else 'nothing'!r}, not "
                          f"{MANIFEST}", "a kitctl bundle starts with manifest.json; make one with `kitctl bundle "
                          "--out FILE`")
        if first.size > MAX_MANIFEST_BYTES:
            raise _refuse(path, f"its {MANIFEST} is {first.size:,} bytes, more than the {MAX_MANIFEST_BYTES >> 20} "
                          "MiB a bundle's manifest ever is (a damaged or hostile bundle)")
        f = tf.extractfile(first)
        assert f is not None
        raw = f.read()
    except tarfile.TarError as e:
        raise _refuse(path, f"cannot read its manifest ({short(e, 160)})") from None
    try:
        manifest = BundleManifest.model_validate(loads_json(raw, MANIFEST))
    except ValueError as e:
        raise _refuse(path, f"member {MANIFEST} is damaged ({short(str(e).splitlines()[0], 200)})") from None
    if manifest.format != FORMAT:
        raise _refuse(path, f"{MANIFEST} says format {manifest.format!r}, not {FORMAT}")
    if manifest.schema_version > BundleManifest.SCHEMA:
        raise _refuse(path, f"written by a newer kitctl (bundle schema {manifest.schema_version})",
                      "upgrade llmc-kit on this box, or pack the bundle with this box's kitctl version")
    return manifest, raw


def _check_members(path: Path, tf: tarfile.TarFile, manifest: BundleManifest, size: int) -> set[str]:
    """Every member after the manifest is listed in it, a regular file of the listed size, and whole in the file;
    the names seen."""
    want = {m.name: m for m in manifest.members}
    seen: set[str] = set()
    last = MANIFEST
    try:
        while (ti := tf.next()) is not None:
            if ti.name not in want:
                raise _refuse(path, f"member {short(ti.name, 120)!r} is not in its manifest (an altered bundle)")
            if ti.name in seen:
                raise _refuse(path, f"member {ti.name} is in it twice (an altered bundle)")
            m = want[ti.name]
            if not ti.isfile():
                kind = ("a symlink" if ti.issym() else "a hard link" if ti.islnk() else "a folder" if ti.isdir()
                        else "a device" if ti.ischr() or ti.isblk() else "a FIFO" if ti.isfifo() else "not a file")
                raise _refuse(path, f"member {ti.name} is {kind}, not a regular file (an altered bundle: the "
                              "kit never packs links or special files)")
            if ti.size != m.bytes:
                raise _refuse(path, f"member {ti.name} is {ti.size:,} bytes, the manifest says {m.bytes:,} "
                              "(a partial or damaged copy)")
            if ti.offset_data + ti.size > size:
                raise _refuse(path, f"member {ti.name} is cut short: the file ends inside it (a partial copy)")
            seen.add(ti.name)
            last = ti.name
    except tarfile.TarError as e:
        raise _refuse(path, f"unreadable after member {last} ({e}): a partial or damaged copy") from None
    return seen


def open_bundle(path: Path) -> Bundle:
    """Read the manifest and check the tar's members against it (names and sizes; no content read)."""
    path = Path(path)
    with _open_file(path) as fh:
        try:
            tf = _tar(fh)  # noqa: SIM115 (closed by the with below; uncompressed only: members are found by seeking)
        except (tarfile.TarError, OSError) as e:
            raise _refuse(path, f"not a kitctl bundle (not an uncompressed tar: {short(e, 160)})") from None
        with tf:
            manifest, raw = _read_manifest(path, tf)
            _check_names(path, manifest)
            seen = _check_members(path, tf, manifest, os.fstat(fh.fileno()).st_size)
    missing = [m.name for m in manifest.members if m.name not in seen]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise _refuse(path, f"member {missing[0]} is missing{more}: a partial copy")
    _check_contents(path, manifest)
    return Bundle(path, manifest, hashlib.sha256(raw).hexdigest()[:12])


def _open_file(path: Path) -> IO[bytes]:
    """The bundle opened for reading when it is a regular file; a folder, FIFO, device or socket is named as what it
    is (never read: a FIFO would wait for a writer forever), a missing file as missing."""
    try:
        return open_regular(path, "--bundle", "give the file `kitctl bundle --out FILE` wrote")
    except FileNotFoundError:
        raise ConfigError(f"--bundle {path}: no such file", "give the file `kitctl bundle --out FILE` wrote") from None
    except PermissionError:
        raise ConfigError(f"--bundle {path}: permission denied", "check who owns it (ls -l)") from None


def _check_names(path: Path, manifest: BundleManifest) -> None:
    """Every member name is a plain relative path, listed once, and no member is also another's folder."""
    names: set[str] = set()
    for m in manifest.members:
        if not _safe_name(m.name):
            raise _refuse(path, f"member name {short(repr(m.name), 120)} is not a plain relative path inside the "
                          "bundle (an altered bundle)")
        if m.name in names:
            raise _refuse(path, f"member {m.name} is listed twice in its manifest (an altered bundle)")
        names.add(m.name)
    folders = {p.as_posix() for n in names for p in PurePosixPath(n).parents}
    clash = sorted(names & folders)
    if clash:
        raise _refuse(path, f"member {clash[0]} is a file and also the folder of other members (an altered bundle)")


def _names_member(manifest: BundleManifest, rel: str, kind: str) -> bool:
    exact = manifest.member(rel) is not None
    folder = any(m.name.startswith(rel + "/") for m in manifest.members)
    return {"member": exact, "folder": folder}.get(kind, exact or folder)


def _check_contents(path: Path, manifest: BundleManifest) -> None:
    """The manifest's ``contents`` is data, not trusted: every path in it is a member (or a folder of members) whose
    name the member check accepted, and every image reference is a Docker reference."""
    c = manifest.contents
    for key, kind in CONTENT_PATHS.items():
        rel = c.get(key)
        if rel in (None, ""):
            continue
        if not _safe_name(rel) or not _names_member(manifest, str(rel), kind):
            raise _refuse(path, f"its manifest's contents.{key} {short(repr(rel), 120)} names no {kind} of the "
                          "bundle (an altered bundle: every input is read from inside the bundle only)")
    for key in ("preset", "dataset", "dataset_kind", "llmc_commit"):
        if c.get(key) is not None and not isinstance(c.get(key), str):
            raise _refuse(path, f"its manifest's contents.{key} is not a string (an altered bundle)")
    images = c.get("images") or {}
    if not isinstance(images, dict) or any(not isinstance(v, dict) for v in images.values()):
        raise _refuse(path, "its manifest's contents.images is not a table of images (an altered bundle)")
    for which, info in images.items():
        ref = info.get("ref")
        try:
            validate.docker_ref(ref if isinstance(ref, str) else repr(ref), f"contents.images.{which}.ref")
        except ConfigError as e:
            raise _refuse(path, f"its manifest's {e.message} (an altered bundle)") from None


def is_bundle(path: Path) -> bool:
    """Does the regular file ``path`` look like a kitctl bundle (a tar whose first member is manifest.json)? For
    ``kitctl bundle --out``: a bundle is replaced, any other file only with --force."""
    try:
        with _open_file(Path(path)) as fh, _tar(fh) as tf:
            first = tf.next()
            return first is not None and first.name == MANIFEST
    except (ConfigError, OSError, tarfile.TarError):
        return False


def unpacked_dir(root: Path, b: Bundle) -> Path:
    return Path(root) / b.key


class UnpackStamp(Record):
    """``<unpacked folder>/.kitctl-unpacked.json``: each member's size and mtime (ns) as unpacked and verified; every
    later use compares them (a stat per member) and re-checks a member that differs."""

    KIND = "unpacked-bundle stamp"
    members: dict[str, list[int]] = {}


def _stat_key(p: Path) -> Optional[list[int]]:
    """[size, mtime_ns] of a regular file (links not followed); None when missing or not a regular file."""
    try:
        st = os.lstat(p)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns] if stat.S_ISREG(st.st_mode) else None


def _copy_member(src: IO[bytes], out: Path, m: Member, bundle: Path, progress: Optional[ProgressFn]) -> None:
    """Write one member's bytes to ``out`` (hashing them); a sha256 that differs from the manifest's is refused."""
    h = hashlib.sha256()
    with open(out, "wb") as f:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            f.write(chunk)
            if progress:
                progress(len(chunk))
    if h.hexdigest() != m.sha256:
        raise _refuse(bundle, f"member {m.name} is damaged: sha256 {h.hexdigest()[:16]}..., the manifest says "
                      f"{m.sha256[:16]}...")


def _extract_all(b: Bundle, tmp: Path, progress: Optional[ProgressFn]) -> None:
    want = {m.name: m for m in b.manifest.members}
    with _open_file(b.path) as fh, _tar(fh) as tf:
        for ti in tf:
            if ti.name == MANIFEST:
                continue
            m = want.get(ti.name)
            if m is None or not ti.isfile():         # changed since open_bundle checked it
                raise _refuse(b.path, f"member {short(ti.name, 120)!r} changed while it was read")
            out = tmp / ti.name
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(ti)
            assert src is not None
            _copy_member(src, out, m, b.path, progress)


def _write_stamp(b: Bundle, folder: Path) -> None:
    UnpackStamp(members={m.name: _stat_key(folder / m.name) or [] for m in b.manifest.members}).write(folder / STAMP)


def unpack(b: Bundle, root: Path, progress: Optional[ProgressFn] = None) -> Path:
    """Extract every member into ``root/<key>``, checking each member's sha256 as it is written; a member that
    differs is refused naming it and nothing is left under the final name. The caller holds the bundle's lock
    (:func:`ensure_unpacked`). A signal (SIGTERM, SIGHUP, Ctrl-C) removes the partial folder and says so."""
    dest = unpacked_dir(root, b)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{b.key}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with TerminationAsInterrupt():
            tmp.mkdir()
            _extract_all(b, tmp, progress)
            (tmp / MANIFEST).write_text(b.manifest.to_json())
            _write_stamp(b, tmp)
            if dest.exists():            # a folder that failed its re-check: replaced whole
                shutil.rmtree(dest)
            os.replace(tmp, dest)
    except KeyboardInterrupt:
        shutil.rmtree(tmp, ignore_errors=True)
        raise KitError(f"interrupted while unpacking {b.path}: the partial unpack was removed (nothing is left "
                       "half-unpacked)", "re-run the same command to unpack it again", exit_code=130) from None
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(e):
            raise
        raise ConfigError(f"cannot unpack {b.path} under {root}: {e.strerror or e}",
                          "check that the data root is writable and has room (`kitctl doctor`)") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


@contextlib.contextmanager
def _locked(root: Path, key: str, say: Say) -> Iterator[None]:
    """Hold ``root/.lock-<key>`` (flock): one process unpacks or repairs a bundle at a time; another one waits,
    then finds the finished unpack and reuses it."""
    try:
        fd = os.open(root / f".lock-{key}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if is_disk_full(e):
            raise
        raise ConfigError(f"cannot use the unpacked bundles under {root}: {e.strerror or e}",
                          "check that the data root is writable (`kitctl doctor`)") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another kitctl is unpacking this bundle into {root / key}: waiting for it")
            with TerminationAsInterrupt():
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except KeyboardInterrupt:
                    raise KitError("interrupted while waiting for another kitctl to unpack the bundle",
                                   "re-run the command; the other one goes on", exit_code=130) from None
        yield
    finally:
        os.close(fd)


def _clean_leftovers(root: Path, mine: str, say: Say) -> None:
    """Remove the temp folders of unpacks that were killed (SIGKILL, a crash, a reboot): every ``.tmp-<key>.*``
    whose bundle lock nobody holds now (a live unpack holds it; the caller holds the lock of ``mine``)."""
    for tmp in sorted(root.glob(".tmp-*")):
        key = tmp.name[len(".tmp-"):].split(".", 1)[0]
        if key == mine:
            shutil.rmtree(tmp, ignore_errors=True)
            say(f"removed {tmp.name} under {root}: left by an unpack that was killed")
            continue
        fd = os.open(root / f".lock-{key}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue                      # being unpacked right now (by us or another process)
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
                say(f"removed {tmp.name} under {root}: left by an unpack that was killed")
        finally:
            os.close(fd)


def _recheck(b: Bundle, dest: Path, say: Say) -> bool:
    """The cheap re-check of an unpacked folder: each member's size and mtime against the stamp. A member that
    differs is hashed: the same bytes (only touched) are kept, others are extracted again from the bundle; files
    that are not members are removed. False when the folder is not sound enough to repair (unpack it again)."""
    try:
        stamp = UnpackStamp.read(dest / STAMP) if _stat_key(dest / STAMP) else None
    except KitError:            # damaged: every member is hashed once more, then a new stamp is written
        stamp = None
    have = stamp.members if stamp else {}
    if stamp is None:
        say(f"the unpacked bundle {dest} has no sound record of its unpack (an older kitctl made it, or the record "
            "is damaged): every member's sha256 is checked once")
    real = os.path.realpath(dest)
    redo: list[Member] = []
    changed = False
    for m in b.manifest.members:
        p = dest / m.name
        if os.path.realpath(p.parent) != os.path.normpath(os.path.join(real, os.path.dirname(m.name))):
            # a folder on the way became a link: extracting through it would write outside
            say(f"bundle member {m.name}: a folder above it in {dest} was replaced: unpacking the bundle again")
            return False
        key = _stat_key(p)
        if key is not None and key == have.get(m.name):
            continue
        changed = True
        if key is not None and key[0] == m.bytes and _sha256(p) == m.sha256:
            if stamp is not None:
                say(f"bundle member {m.name} was touched since it was unpacked: sha256 re-checked, unchanged")
            continue
        say(f"bundle member {m.name} was {'changed' if key or os.path.lexists(p) else 'deleted'} in {dest} since it "
            "was unpacked: "
            "extracting it again from the bundle")
        redo.append(m)
    changed |= _remove_extras(b, dest, say)
    if redo:
        _extract_some(b, dest, redo)
    if changed or stamp is None:
        _write_stamp(b, dest)
    return True


def _differences(b: Bundle, dest: Path) -> list[str]:
    """The members whose size or mtime differ from the stamp (read only: what a dry run may look at)."""
    try:
        have = UnpackStamp.read(dest / STAMP).members
    except KitError:
        return ["(the stamp)"]
    return [m.name for m in b.manifest.members if _stat_key(dest / m.name) != have.get(m.name)]


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open_regular(p, "bundle member") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _remove_extras(b: Bundle, dest: Path, say: Say) -> bool:
    keep = {m.name for m in b.manifest.members} | set(RESERVED)
    extras = [p for p in dest.rglob("*") if not p.is_dir() or p.is_symlink()]
    extras = [p for p in extras if p.relative_to(dest).as_posix() not in keep]
    for p in extras:
        say(f"removed {p} from the unpacked bundle: it is not one of the bundle's members")
        p.unlink()
    return bool(extras)


def _extract_some(b: Bundle, dest: Path, members: list[Member]) -> None:
    """Extract ``members`` again into ``dest`` (each through a temp file renamed onto its name)."""
    want = {m.name: m for m in members}
    with _open_file(b.path) as fh, _tar(fh) as tf, TerminationAsInterrupt():
        for ti in tf:
            m = want.get(ti.name)
            if m is None or not ti.isfile():
                continue
            out = dest / m.name
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(ti)
            assert src is not None
            with atomic_output(out) as f:
                h = hashlib.sha256()
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    f.write(chunk)
                if h.hexdigest() != m.sha256:
                    raise _refuse(b.path, f"member {m.name} is damaged: sha256 {h.hexdigest()[:16]}..., the "
                                  f"manifest says {m.sha256[:16]}...")


def ensure_unpacked(b: Bundle, root: Path, progress: Callable[[], Any], say: Say) -> Path:
    """The bundle unpacked and sound under ``root/<key>``: under its lock, leftovers of killed unpacks are removed,
    an existing unpack is re-checked (:func:`_recheck`), else it is unpacked (``progress()`` gives the context
    manager of a progress bar whose ``advance`` hears bytes)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if is_disk_full(e):
            raise
        raise ConfigError(f"cannot make {root} for the unpacked bundle: {e.strerror or e}",
                          "check that the data root is writable (`kitctl doctor`)") from None
    dest = unpacked_dir(root, b)
    with _locked(root, b.key, say):
        _clean_leftovers(root, b.key, say)
        if dest.is_dir() and not dest.is_symlink() and _recheck(b, dest, say):
            return dest
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        with progress() as bar:
            return unpack(b, root, bar.advance)


def verify(b: Bundle, progress: Optional[ProgressFn] = None) -> None:
    """Read every member and check its sha256, writing nothing (``--dry-run``)."""
    want = {m.name: m for m in b.manifest.members}
    with _open_file(b.path) as fh, _tar(fh) as tf:
        for ti in tf:
            m = want.get(ti.name)
            if m is None:
                continue
            src = tf.extractfile(ti)
            assert src is not None
            h = hashlib.sha256()
            while chunk := src.read(CHUNK):
                h.update(chunk)
                if progress:
                    progress(len(chunk))
            if h.hexdigest() != m.sha256:
                raise _refuse(b.path, f"member {m.name} is damaged: sha256 {h.hexdigest()[:16]}..., the manifest "
                              f"says {m.sha256[:16]}...")


def total_bytes(b: Bundle) -> int:
    return sum(m.bytes for m in b.manifest.members)


# ------------------------------------------------------------------------------------------------ writing
def write_bundle(out: Path, files: list[tuple[str, Path]], contents: dict[str, Any], kit_version: str, created: str,
                 progress: Optional[ProgressFn] = None) -> BundleManifest:
    """Write ``files`` ((member name, source path)) as a bundle at ``out``, atomically: hashes first (the
    manifest leads the tar), then the tar beside ``out``, renamed onto it when whole. ``progress`` hears bytes
    read (every file is read twice: hash, then copy)."""
    members = []
    for name, src in files:
        if not _safe_name(name):
            raise ValueError(f"bad member name {name!r}")
        h = hashlib.sha256()
        with open(src, "rb") as inp:
            while chunk := inp.read(CHUNK):
                h.update(chunk)
                if progress:
                    progress(len(chunk))
        members.append(Member(name=name, bytes=Path(src).stat().st_size, sha256=h.hexdigest()))
    manifest = BundleManifest(created=created, kit_version=kit_version, members=members, contents=contents)
    raw = manifest.to_json().encode()
    with atomic_output(Path(out)) as f, tarfile.open(fileobj=f, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo(MANIFEST)
        ti.size, ti.mode = len(raw), 0o644
        tf.addfile(ti, io.BytesIO(raw))
        for (name, src), m in zip(files, members, strict=True):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = m.bytes, 0o644, int(Path(src).stat().st_mtime)
            with open(src, "rb") as fh:
                tf.addfile(ti, _Counting(fh, progress))
    return manifest


class _Counting:
    """A file wrapper reporting bytes read (tarfile.addfile copies through read())."""

    def __init__(self, f: IO[bytes], progress: Optional[ProgressFn]):
        self.f, self.progress = f, progress

    def read(self, n: int = -1) -> bytes:
        b: bytes = self.f.read(n)
        if self.progress and b:
            self.progress(len(b))
        return b


# ------------------------------------------------------------------------------------------------ reading
@dataclass
class Unpacked:
    """An unpacked, verified bundle, as the inputs it replaces."""

    root: Path
    manifest: BundleManifest
    source: Path                   # the bundle file
    pending: bool = False          # --dry-run of a bundle not unpacked yet: verified, its files are not on disk

    def pending_note(self) -> str:
        state = "differs from its unpacked copy" if self.root.is_dir() else "is not unpacked yet"
        return (f"dry run: the bundle {self.source} is verified (every member's sha256) and {state}; the plan reads "
                f"its files: run without --dry-run to unpack (or repair) it at {self.root}, then --dry-run shows the "
                "whole plan. Nothing was written.")

    @property
    def contents(self) -> dict[str, Any]:
        return self.manifest.contents

    def _path(self, key: str) -> Optional[Path]:
        rel = self.contents.get(key)          # checked by open_bundle: a member (or folder of members) inside
        if not rel:
            return None
        p = self.root / str(rel)
        if not _safe_name(rel) or os.path.commonpath([os.path.abspath(p), os.path.abspath(self.root)]) != \
                os.path.abspath(self.root):
            raise ConfigError(f"bundle {self.source}: contents.{key} is outside the bundle", "make a new bundle")
        return p

    @property
    def llmc_src(self) -> Optional[str]:
        p = self._path("llmc")
        return str(p) if p else None

    @property
    def cudnn_frontend(self) -> Optional[Path]:
        return self._path("cudnn_frontend")

    @property
    def tokenizer_dir(self) -> Optional[Path]:
        p = self.root / "tokenizer"
        return p if all((p / f).is_file() for f in TOKENIZER_FILES) else None

    @property
    def hellaswag(self) -> Optional[Path]:
        return self._path("hellaswag_path")

    @property
    def dataset(self) -> tuple[Optional[str], Optional[Path]]:
        """(DATASET, --source): a recipe and its packed input, local files as DATASET, or (None, None)."""
        kind, p = self.contents.get("dataset_kind"), self._path("dataset_path")
        if kind == "recipe" and p is not None:
            return str(self.contents.get("dataset")), p
        if kind == "local" and p is not None:
            return str(p), None
        return None, None

    def image(self, which: str) -> Optional[tuple[Path, dict[str, Any]]]:
        """(tar, {"ref", "id", "recipe_hash", ...}) of the packed runtime / data image, or None."""
        info = (self.contents.get("images") or {}).get(which)
        name = IMAGE_RUNTIME if which == "runtime" else IMAGE_DATA
        there = self.manifest.member(name) is not None if self.pending else (self.root / name).is_file()
        if not info or not there:
            return None
        return self.root / name, info


def dry_run_view(ub: Unpacked) -> Unpacked:
    """For a dry run that must plan from a bundle not unpacked yet (``kitctl reproduce --dry-run``): its members but
    the images (the plan needs their sizes and contents: the dataset, HellaSwag, llm.c) in a temporary folder
    outside the data root, removed when the command ends; the images stay in the bundle (the plan only names them)."""
    if not ub.pending:
        return ub
    tmp = Path(tempfile.mkdtemp(prefix="kitctl-bundle-plan-"))
    atexit.register(shutil.rmtree, tmp, True)
    b = open_bundle(ub.source)
    _extract_some(b, tmp, [m for m in b.manifest.members if not m.name.startswith("images/")])
    return Unpacked(tmp, b.manifest, ub.source, pending=True)


def use_bundle(path: Path, data_root: Path, console: Any = None, dry_run: bool = False,
               say: Optional[Say] = None, free_fn: Callable[[Path], int] = free_bytes) -> Unpacked:
    """Open, check and unpack a bundle under ``<data_root>/bundles`` (a progress bar while unpacking); an earlier
    unpack is re-checked (size + mtime per member) and reused. ``dry_run``: read and verify the bundle (or the
    earlier unpack), write nothing. The unpack folder is on the data root's filesystem: too little free space there
    is refused before a byte is written."""
    tell: Say = say or (lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)
                        if console is not None else print(line))
    b = open_bundle(path)
    root = DataLayout(Path(data_root)).bundles
    dest = unpacked_dir(root, b)
    if dry_run:
        if dest.is_dir() and (dest / STAMP).is_file() and not _differences(b, dest):
            return Unpacked(dest, b.manifest, Path(path))
        with progress_bar(f"verifying {Path(path).name}", total_bytes(b), console=console, unit="bytes") as bar:
            verify(b, bar.advance)
        return Unpacked(dest, b.manifest, Path(path), pending=True)

    if not (dest / STAMP).is_file():      # a first unpack: its room is judged before a byte (or folder) is written
        need, free = total_bytes(b), free_fn(root)
        if need > free:
            raise KitError(f"not enough disk space to unpack {Path(path).name}: {need / 1e9:.1f} GB into {root} (the "
                           f"bundle unpack folder, on the data root's filesystem), {free / 1e9:.1f} GB free there; the "
                           "run then needs more on the same disk (`kitctl reproduce --dry-run --json`: filesystems)",
                           "point the data root at a bigger disk (`kitctl init --data-root /big/disk`), or free space")

    def unpack_bar() -> Any:
        return progress_bar(f"unpacking {Path(path).name}", total_bytes(b), console=console, unit="bytes")

    return Unpacked(ensure_unpacked(b, root, unpack_bar, tell), b.manifest, Path(path))
