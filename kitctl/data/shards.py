"""llm.c token shard files: read, write, and the exact upstream layout.

A shard (llm.c ``dev/data/data_common.py`` write_datafile, read by ``llmc/dataloader.h``) is a header of
256 little-endian int32 -- ``[20240520 (magic), 1 (version), n_tokens, 0, ...]`` -- followed by
``n_tokens`` uint16 GPT-2 token ids. Shard 0 is ``<name>_val_000000.bin``, every later one
``<name>_train_%06d.bin``.

The token *stream* is every document as ``[50256] + encode_ordinary(text)``, concatenated in order;
llm.c's ``fineweb.py`` cuts it into consecutive shards of exactly ``shard_size`` tokens (a document that
crosses a boundary is split, its remainder starts the next shard; a document that exactly fills a shard
ends it) and writes whatever is left as a last, shorter shard. ``ShardWriter`` does the same, and also
lets a document longer than a shard spill over as many shards as it needs (upstream crashes there).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO, Callable, Optional

import numpy as np

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import atomic_output, replace_atomic, temp_path
from kitctl.core.llmc_files import HEADER_BYTES, shard_filename
from kitctl.core.llmc_files import TOKEN_DTYPE as _TOKEN_DTYPE
from kitctl.core.llmc_files import pack_shard_header as header_bytes
from kitctl.core.proc import signals_deferred
from kitctl.core.shard_folder import read_header

TOKEN_DTYPE = np.dtype(_TOKEN_DTYPE)


def write_shard(path: Path, tokens: np.ndarray) -> str:
    """Write one shard atomically (kitctl.core.files: temp beside it, fsync, rename). Returns its sha256."""
    tokens = np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE)
    head = header_bytes(len(tokens))
    h = hashlib.sha256(head)
    body = tokens.data.cast("B")
    h.update(body)
    with atomic_output(Path(path)) as f:
        f.write(head)
        f.write(body)
    return h.hexdigest()


def check_shard(path: Path) -> int:
    """Check header (magic, version) and that the file size matches its token count. Returns n_tokens.
    kitctl.core.shard_folder.read_header reads it; a bad shard stays exit 1 here (a file `kitctl data` made or
    downloaded, not one the user named)."""
    try:
        return read_header(Path(path))
    except ConfigError as e:
        raise KitError(e.message, e.hint) from None


def read_shard(path: Path) -> np.ndarray:
    """Tokens of one shard (checked), as a uint16 array (memory-mapped)."""
    n = check_shard(path)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n,))


class ShardWriter:
    """Cuts a token stream into shards exactly like llm.c's fineweb.py (see module docstring).

    Tokens are streamed straight into the current shard's temp file (no shard-sized buffer, no extra copy);
    a full shard's header is known up front (``shard_size`` tokens), the last, partial shard gets its header
    rewritten at the end. Each file is hashed as it is written (the last, partial one re-read once, its header having
    changed). Each shard is fsync'd and renamed into place
    (``kitctl.core.files.replace_atomic``); a failure or Ctrl-C (``abort``) removes the temp file.

    ``first_shard_size`` sizes shard 0 (the val shard) separately; default ``shard_size``.
    ``on_shard(index, path, n_tokens, sha256, stream_end)`` is called after each shard is renamed into
    place; ``stream_end`` is the stream position (tokens since the start of the whole stream) where it ends.
    """

    def __init__(self, out_dir: Path, name: str, shard_size: int, first_shard_size: Optional[int] = None,
                 start_index: int = 0, start_pos: int = 0,
                 on_shard: Optional[Callable[[int, Path, int, str, int], None]] = None):
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        self.out_dir = Path(out_dir)
        self.name = name
        self.shard_size = shard_size
        self.first_shard_size = first_shard_size or shard_size
        self.index = start_index
        self.pos = start_pos          # stream position of the first token of the current shard
        self.on_shard = on_shard
        self.fill = 0
        self._f: Optional[BinaryIO] = None
        self._hash = hashlib.sha256()

    def _cap(self) -> int:
        return self.first_shard_size if self.index == 0 else self.shard_size

    def _path(self) -> Path:
        return self.out_dir / shard_filename(self.name, self.index)

    def _tmp(self) -> Path:
        return temp_path(self._path())

    def _open(self) -> BinaryIO:
        f = open(self._tmp(), "wb")   # noqa: SIM115 - stays open across add() calls; _finish/abort close it
        head = header_bytes(self._cap())
        f.write(head)
        self._hash = hashlib.sha256(head)      # hashed as written (a partial last shard: re-read, see close)
        self._f = f
        return f

    def add(self, tokens: np.ndarray) -> None:
        tokens = np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE)
        i, n = 0, len(tokens)
        while i < n:
            f = self._f if self._f is not None else self._open()
            cap = self._cap()
            take = min(cap - self.fill, n - i)
            body = tokens[i:i + take].data.cast("B")
            f.write(body)
            self._hash.update(body)            # sha256 releases the GIL: the workers keep tokenizing
            self.fill += take
            i += take
            if self.fill == cap:
                self._finish()

    def _finish(self, reread: bool = False) -> None:
        """The shard is complete in its temp file: fsync and rename it into place. Its sha256 was taken while
        writing; ``reread``: the header was rewritten (the last, partial shard), hash the file as it is."""
        f, n, path = self._f, self.fill, self._path()
        assert f is not None
        f.close()
        self._f = None
        h = self._hash
        if reread:
            h = hashlib.sha256()
            with open(self._tmp(), "rb") as r:
                while chunk := r.read(1 << 22):
                    h.update(chunk)
        with signals_deferred():   # a Ctrl-C/SIGTERM lands after the shard is both in place and recorded
            replace_atomic(self._tmp(), path)      # fsync, rename; the temp is removed if that fails
            self.pos += n
            if self.on_shard:
                self.on_shard(self.index, path, n, h.hexdigest(), self.pos)
        self.index += 1
        self.fill = 0

    def close(self) -> None:
        """Write the last, partial shard (if any tokens are left), as upstream does at the end."""
        if self._f is None:
            return
        if not self.fill:
            self.abort()
            return
        self._f.seek(0)
        self._f.write(header_bytes(self.fill))
        self._finish(reread=self.fill != self._cap())

    def abort(self) -> None:
        """Drop the shard in progress (its temp file); finished shards stay."""
        if self._f is not None:
            self._f.close()
            self._f = None
            self._tmp().unlink(missing_ok=True)
        self.fill = 0
