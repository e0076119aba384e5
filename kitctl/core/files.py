"""File helpers shared by every area of the kit: the one atomic writer, sha256, free space.

Every file the kit writes and later reads back (manifests, run records, shards, tokenizer tables, reports,
scripts) goes through :func:`atomic_output` or :func:`write_atomic`: the bytes land in a temp file beside the
target, are fsynced, then renamed onto the final name. On any failure (a full disk, Ctrl-C, a crash in the
producer) the temp file is removed, so a final name only ever holds a complete file and no stray temp is left.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Union

from kitctl.core.errors import ConfigError

_TMP_PREFIX = ".tmp-"


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (shards, tarballs, binaries, tokenizer files)."""
    h = hashlib.sha256()
    with open_regular(path, "file") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def existing_parent(p: Path) -> Path:
    """``p`` (made absolute) or its nearest ancestor that exists: where a not-yet-created folder will live."""
    p = Path(p).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


@contextlib.contextmanager
def tidy_on_failure(folder: Path) -> Iterator[None]:
    """Creates nothing itself: notes which of ``folder`` and its parents do not exist yet, and when the body
    raises, removes those of them that are empty, deepest first. A step that fails (a download with no network)
    leaves no empty folders behind; what the body put in them stays (a resume needs it)."""
    missing: list[Path] = []
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        yield
    except BaseException:
        for d in missing:
            try:
                d.rmdir()
            except FileNotFoundError:       # the body removed it already
                continue
            except OSError:                 # not empty: it holds what the body made, and so do its parents
                break
        raise


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or would hold it, if it does not exist yet)."""
    return shutil.disk_usage(existing_parent(Path(path))).free


def is_disk_full(e: BaseException) -> bool:
    """A full disk or a used-up quota: not bad input (exit 1, the same command works once there is space);
    callers that turn OSErrors into exit-2 messages let these through to the CLI's one disk-full message."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def temp_path(path: Path) -> Path:
    """The temp name :func:`atomic_output` uses for ``path`` (same folder, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f"{_TMP_PREFIX}{path.name}.{os.getpid()}")


@contextlib.contextmanager
def atomic_output(path: Path, mode: str = "wb", tmp: Optional[Path] = None) -> Iterator[IO[Any]]:
    """Open a temp file for writing; on a clean exit fsync it and rename it onto ``path``.

    On any exception (``BaseException``: Ctrl-C included) the temp file is removed and ``path`` is left as it
    was (absent, or the previous complete version)::

        with atomic_output(out / "manifest.json", "w") as f:
            f.write(text)
    """
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else temp_path(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def normal_mode(path: Path) -> None:
    """Give a file the mode a plain ``open`` would (0666 less the umask): for files a library created 0600."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_atomic(path: Path, data: Union[bytes, str], tmp: Optional[Path] = None) -> None:
    """Write ``data`` (bytes, or str as UTF-8) to ``path`` atomically (see :func:`atomic_output`)."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_output(path, "wb", tmp) as f:
        f.write(payload)


def replace_atomic(tmp: Path, path: Path) -> None:
    """Move a finished temp file (written by a producer that needs its own file handle) onto ``path``:
    fsync it first, remove it if the rename fails."""
    try:
        fsync_file(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    rename_synced(tmp, path)
    fsync_dir(Path(path).parent)


def fsync_file(path: Path) -> None:
    """Put a finished file's bytes on disk for good (by name: e.g. on a thread while the next file is written)."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def rename_synced(tmp: Path, path: Path) -> None:
    """The rename step of :func:`replace_atomic`, for a temp file already fsynced (:func:`fsync_file`): the temp is
    removed if the rename fails. The folder is not fsynced: a caller that renames many files does that once
    (:func:`fsync_dir`) before it records them (kitctl.core.data_folder.ShardWriter, before each manifest save)."""
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(folder: Path) -> None:
    """fsync a folder: the renames into it are on disk for good (best effort: a folder that cannot be opened or
    fsynced, e.g. on some network file systems, is left as it is)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------ reading user paths
# Every file read from a path a person gave (kit.yaml, an inventory, a dataset, a run's logs and run.json, a
# checkpoint) is opened through :func:`open_regular` or read through :func:`read_limited`: a device (/dev/zero),
# a FIFO or a socket is refused at once, naming the path (reading one never ends or never answers), and a file
# larger than its kind ever is is refused before it is read into memory.

SPECIAL_HINT = ("pass a regular file: kitctl does not read devices (such as /dev/zero), FIFOs or sockets, "
                "which never end or never answer")


def special_kind(mode: int) -> Optional[str]:
    """'a FIFO (named pipe)', 'a socket', 'a character device', 'a block device', or None for a file/folder."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return None


def _not_regular(path: Path, what: str, mode: int, hint: Optional[str]) -> ConfigError:
    if stat.S_ISDIR(mode):
        return ConfigError(f"{path} is a folder, not a {what}", hint or f"pass the {what} itself, not a folder")
    kind = special_kind(mode) or "not a regular file"
    return ConfigError(f"{what} {path} is {kind}, not a regular file", SPECIAL_HINT)


def check_regular(path: Path, what: str, hint: Optional[str] = None) -> os.stat_result:
    """``stat(path)`` (links followed) when it is a regular file; a :class:`ConfigError` (exit 2) naming the path for
    a folder, device, FIFO or socket. A missing file raises FileNotFoundError, as ``stat`` does. For readers that
    hand the path on (numpy.memmap, pyarrow, a subprocess); readers of their own use :func:`open_regular`."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(Path(path), what, st.st_mode, hint)
    return st


def check_folder(path: Path, what: str, hint: Optional[str] = None) -> Path:
    """``path`` when it is a folder (links followed); a :class:`ConfigError` naming it when it is a file or a special
    file. A missing folder raises FileNotFoundError."""
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        kind = special_kind(st.st_mode) or "a file"
        raise ConfigError(f"{what} {path} is {kind}, not a folder", hint or f"pass the folder as {what}")
    return Path(path)


def open_regular(path: Path, what: str, hint: Optional[str] = None) -> IO[bytes]:
    """Open ``path`` for reading (binary) only if it is a regular file, without ever blocking: the open is
    non-blocking (a FIFO with no writer would hang a plain ``open``), the type is checked on the open descriptor
    (no window between the check and the read), then the descriptor is made blocking again. OSErrors (missing,
    permission) pass through for the caller to word."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        if e.errno == errno.ENXIO:          # a unix socket (or a FIFO opened for writing with no reader)
            raise ConfigError(f"{what} {path} is a socket, not a regular file", SPECIAL_HINT) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(Path(path), what, st.st_mode, hint)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def too_large(path: Path, what: str, size: int, limit: int, hint: Optional[str] = None) -> ConfigError:
    return ConfigError(f"{path} is {size:,} bytes: too large for a {what} (at most {human_bytes(limit)})",
                       hint or f"point at the right {what}")


def read_limited(path: Path, what: str, limit: int, hint: Optional[str] = None) -> bytes:
    """All bytes of the regular file ``path``, at most ``limit`` of them (see :func:`open_regular`); a file larger
    than ``limit`` (or one that grows past it while read) is a :class:`ConfigError` naming it, never read whole."""
    with open_regular(path, what, hint) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise too_large(Path(path), what, size, limit, hint)
        data = f.read(limit + 1)
    if len(data) > limit:
        raise too_large(Path(path), what, len(data), limit, hint)
    return data


def read_chunks(path: Path, what: str, start: int = 0, chunk: int = 8 << 20,
                hint: Optional[str] = None) -> Iterator[bytes]:
    """A regular file's bytes from ``start`` on, ``chunk`` bytes at a time (a log read incrementally: memory stays
    at one chunk however large the file is). Nothing when the file does not exist."""
    try:
        f = open_regular(path, what, hint)
    except FileNotFoundError:
        return
    with f:
        f.seek(start)
        while data := f.read(chunk):
            yield data
