"""Small file helpers shared by every area of the kit."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (shards, tarballs, binaries, tokenizer files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()
