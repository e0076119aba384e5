"""File helpers shared by every area of the kit: the one atomic writer, sha256, free space.

Every file the kit writes and later reads back (manifests, run records, shards, tokenizer tables, reports,
scripts) goes through :func:`atomic_output` or :func:`write_atomic`: the bytes land in a temp file beside the
target, are fsynced, then renamed onto the final name. On any failure (a full disk, Ctrl-C, a crash in the
producer) the temp file is removed, so a final name only ever holds a complete file and no stray temp is left.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Union

_TMP_PREFIX = ".tmp-"


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (shards, tarballs, binaries, tokenizer files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    _fsync_dir(path.parent)


def write_atomic(path: Path, data: Union[bytes, str], tmp: Optional[Path] = None) -> None:
    """Write ``data`` (bytes, or str as UTF-8) to ``path`` atomically (see :func:`atomic_output`)."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_output(path, "wb", tmp) as f:
        f.write(payload)


def replace_atomic(tmp: Path, path: Path) -> None:
    """Move a finished temp file (written by a producer that needs its own file handle) onto ``path``:
    fsync it first, remove it if the rename fails."""
    try:
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(Path(path).parent)


def _fsync_dir(folder: Path) -> None:
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
