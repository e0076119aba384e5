"""Small file helpers shared by every area of the kit."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (shards, tarballs, binaries, tokenizer files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def existing_parent(p: Path) -> Path:
    """``p`` (made absolute) or its nearest ancestor that exists: where a not-yet-created folder will live."""
    p = Path(p).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or would hold it, if it does not exist yet)."""
    return shutil.disk_usage(existing_parent(Path(path))).free


def write_atomic(path: Path, data: bytes, tmp: Path) -> None:
    """Write ``data`` to ``tmp``, then rename it onto ``path``; on any failure (disk full, Ctrl-C) ``tmp`` is
    removed, so neither a partial ``path`` nor a stray temp file is left behind."""
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
