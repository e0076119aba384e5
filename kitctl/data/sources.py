"""Where documents come from: local files (and HF parquet, see ``kitctl.data.hf``) -> ordered document batches.

A ``Source`` yields batches of document texts (a pyarrow string array or a list of str) in a fixed,
documented order, and can start at any document index cheaply (resume). Orders:

- parquet files: files sorted by path, rows in file order (what HuggingFace ``load_dataset`` gives for
  the same files); only the ``text`` column is read, one row group at a time, in record batches.
- jsonl: one JSON object per line, its ``text`` field.
- txt: the whole file is one document (a recipe may split it, e.g. tinyshakespeare on blank lines).

A source also has a *fingerprint* -- what a resumed run must see again: the sha256 of every input file's bytes
(content, not names or sizes), or for HuggingFace files the repository, pinned revision and file pattern (the hub
addresses content by revision) -- and can hand out a *sample* of its documents spread over its files, from
which the disk preflight measures tokens per byte (``kitctl.data.space``).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Optional, Sequence, Union

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import check_regular, open_regular, sha256_file, too_large
from kitctl.core.records import error_text

TEXT_COLUMN = "text"
BATCH_ROWS = 512              # documents a batch: ~1.5 MB of web text, ~0.1 s on one core (a short tail at the end)
SAMPLE_FILES = 8              # a sample reads from at most this many files (spread over the list) ...
SAMPLE_SPOTS = 4              # ... and from this many places in each (row groups, file offsets)
MAX_JSONL_LINE = 64 << 20     # one document a line: a web page is KBs; a 64 MiB line is not a document
PARQUET_BUFFER = 1 << 20       # local parquet is read in pieces of this size (see _open_parquet)
MAX_TXT_BYTES = 1 << 30       # a .txt input is one document, read whole (tinyshakespeare: 1 MB)

Batch = Union[Sequence[str], Any]   # list[str] or a pyarrow (Large)StringArray


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).absolute().relative_to(Path(folder).absolute())
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------ local files
SUFFIXES = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".txt": "txt",
            ".text": "txt", ".md": "txt"}


def is_local_spec(spec: str) -> bool:
    return any(c in spec for c in "*?[") or os.sep in spec or Path(spec).exists() or \
        Path(spec).suffix.lower() in SUFFIXES


def resolve_local(spec: str, out_dir: Optional[Path] = None) -> list[Path]:
    """A file, a folder (its parquet/jsonl/txt files, recursively) or a glob -> sorted files.

    ``out_dir`` (where the shards go) must not be read back as input: inside an input folder it is refused;
    files a glob matches inside it (manifest.json, ...) are left out."""
    p = Path(os.path.expanduser(spec))
    if any(c in spec for c in "*?["):
        matched = [Path(f) for f in glob.glob(os.path.expanduser(spec), recursive=True)]
        _no_special(f for f in matched if not f.is_dir())
        files = [f for f in matched if f.is_file()]
        if out_dir is not None:
            files = [f for f in files if not _inside(f, out_dir)]
        if not files:
            raise ConfigError(f"no files match {spec}", "check the pattern (quote it so the shell leaves it alone)")
    elif p.is_dir():
        if out_dir is not None and _inside(out_dir, p):
            raise ConfigError(f"the output folder {out_dir} is inside the input folder {p}: its manifest and shards "
                              "would be read back as input on the next run",
                              f"pass --out with a folder outside {p} (or give the input files as a glob)")
        found = [f for f in p.rglob("*") if f.suffix.lower() in SUFFIXES and not f.is_dir()]
        _no_special(found)
        files = [f for f in found if f.is_file()]
        if not files:
            raise ConfigError(f"folder {p} holds no .parquet, .jsonl or .txt files")
    elif p.exists():
        check_regular(p, "input")        # a device, FIFO or socket: exit 2 naming it
        files = [p]
    else:
        raise ConfigError(f"input {spec} does not exist", "give an existing file, folder or glob, or a recipe name "
                          "(`kitctl data recipes` lists them)")
    bad = [f for f in files if f.suffix.lower() not in SUFFIXES]
    if bad:
        raise ConfigError(f"cannot read {bad[0]}: unknown file type '{bad[0].suffix}'",
                          "inputs are .parquet, .jsonl (one JSON object a line) or .txt (one document)")
    return sorted(files, key=lambda f: str(f))


def _no_special(paths: Iterable[Path]) -> None:
    """Refuse an input that is a device, FIFO or socket (skipping it silently would drop data without a word)."""
    for f in paths:
        if f.exists() and not f.is_file():
            check_regular(f, "input")


Signature = Optional[tuple[int, int, int, int, int]]


def _signature(f: Union[Path, str]) -> Signature:
    """(size, mtime_ns, ctime_ns, inode, device) of a local file, None when it is gone. ctime moves on every
    write, even one that puts the old mtime back (touch -d)."""
    try:
        st = os.stat(f)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _describe_change(before: Signature, now: Signature) -> str:
    if now is None:
        return "deleted (or moved away)"
    if before is None:
        return "created"
    if before[3:] != now[3:]:
        return "replaced by another file"
    if before[0] != now[0]:
        return f"size {before[0]:,} -> {now[0]:,} bytes"
    if before[1] != now[1]:
        return "modified (same size, new modification time)"
    return "written to (same size and modification time, new change time)"


def _open_local(f: Union[Path, str]) -> IO[bytes]:
    try:
        return open_regular(Path(f), "input")
    except FileNotFoundError:
        raise ConfigError(f"input {f} does not exist (was it moved or deleted while kitctl data ran?)",
                          "put it back and re-run the same command") from None
    except OSError as e:
        raise ConfigError(f"cannot read input {f}: {e.strerror or e}", "check the file and its permissions") from None


# -------------------------------------------------------------------------------------------- sources
class Source:
    """Ordered documents; see the module docstring."""

    description: str = ""

    def iter_batches(self, start_doc: int = 0, batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def check(self) -> None:
        """Open every input once and fail early with a clear message (missing column, unreadable file)."""

    def changed(self) -> list[str]:
        """What changed in the inputs since the source was made (one line per file); empty when nothing did.
        Checked after the documents were read: a change while reading means the shards may mix old and new bytes
        under a fingerprint of the old ones."""
        return []

    def basis_bytes(self) -> dict[str, int]:
        """{kind: bytes} the token estimate scales from (parquet: text bytes; jsonl/txt: file bytes)."""
        return {}

    def sample(self, budget: int) -> dict[str, tuple[list[str], int]]:
        """{kind: (documents, their basis bytes)}: about ``budget`` bytes spread over the input."""
        return {}


def _open_parquet(path, filesystem=None):
    import pyarrow.parquet as pq     # ~0.9 s to import: paid only when a parquet file is read

    try:
        if filesystem is not None:
            return pq.ParquetFile(filesystem.open(path, "rb"))
        # read a column chunk 1 MiB at a time as it is decoded, not whole first (pre_buffer): a sample's or the
        # first batch's few rows then cost a page, not the row group (0.09-0.18 s -> 0.02 s on 120 MB row
        # groups), and the text stays in cache (200 MB read: 0.25-0.53 -> 0.21-0.25 s; docs/data.md)
        return pq.ParquetFile(_open_local(path), pre_buffer=False, buffer_size=PARQUET_BUFFER)
    except FileNotFoundError:
        raise ConfigError(f"input {path} does not exist") from None
    except Exception as e:
        raise ConfigError(f"cannot read {path} as parquet: {error_text(e)}",
                          "the file is damaged or not parquet; re-download it or remove it from the input") from None


def _text_col_index(pf, path) -> int:
    names = pf.schema_arrow.names
    if TEXT_COLUMN not in names:
        raise ConfigError(f"{path} has no '{TEXT_COLUMN}' column (columns: {', '.join(names) or 'none'})",
                          "documents are read from a column named 'text'; rename the column")
    return names.index(TEXT_COLUMN)


class FilesSource(Source):
    """Local parquet / jsonl / txt files, in the given order (or hf:// paths through a filesystem)."""

    def __init__(self, files: Sequence[Union[Path, str]], split_on: Optional[str] = None, filesystem=None,
                 description: str = "", fingerprint_extra: str = "", hash_content: Optional[bool] = None):
        """``hash_content`` (default: for local files) puts every file's sha256 in the fingerprint; HF files
        are named by ``fingerprint_extra`` instead (repo@revision:pattern -- the hub addresses content)."""
        self.files = list(files)
        self.hash_content = (filesystem is None) if hash_content is None else hash_content
        self._fp: Optional[str] = None
        self._fp_thread: Optional[threading.Thread] = None
        self.split_on = split_on
        self.fs = filesystem
        self.description = description or ", ".join(str(f) for f in self.files[:3]) + \
            (f" (+{len(self.files) - 3} more)" if len(self.files) > 3 else "")
        self._fp_extra = fingerprint_extra
        # size, mtime, ctime and inode of every local input, taken before anything is hashed or read
        self._stat0 = {str(f): _signature(f) for f in self.files} if filesystem is None else {}

    def changed(self) -> list[str]:
        out = []
        for f, before in self._stat0.items():
            now = _signature(f)
            if now != before:
                out.append(f"{f}: {_describe_change(before, now)}")
        return out

    def _open(self, f) -> IO[bytes]:
        """Open one input: through the filesystem for HF files, else only a regular file (see core.files)."""
        return self.fs.open(str(f), "rb") if self.fs is not None else _open_local(f)

    def _kind(self, f) -> str:
        return SUFFIXES.get(Path(str(f)).suffix.lower(), "parquet")

    def _size(self, f) -> int:
        if self.fs is not None:
            return int(self.fs.info(str(f))["size"])
        try:
            return Path(f).stat().st_size
        except FileNotFoundError:
            raise ConfigError(f"input {f} does not exist") from None

    def check(self) -> None:
        for f in self.files:
            if self._kind(f) == "parquet":
                _text_col_index(_open_parquet(str(f), self.fs), f)
            elif not (self.fs or Path(f).is_file()):
                raise ConfigError(f"input {f} does not exist")

    def basis_bytes(self) -> dict[str, int]:
        """parquet: the text column's uncompressed size from the metadata (nothing is read; repeated text is
        dictionary-encoded and far smaller there than as text -- the sample's tokens per *metadata* byte
        accounts for that); jsonl/txt: file sizes."""
        out: dict[str, int] = {}
        for f in self.files:
            k = self._kind(f)
            out[k] = out.get(k, 0) + (sum(self._rg_bytes(f)[1]) if k == "parquet" else self._size(f))
        return out

    def _rg_bytes(self, f) -> tuple[list[int], list[int]]:
        """(rows, text-column metadata bytes) per row group of one parquet file."""
        pf = _open_parquet(str(f), self.fs)
        i = _text_col_index(pf, f)
        md = pf.metadata
        return ([md.row_group(r).num_rows for r in range(md.num_row_groups)],
                [md.row_group(r).column(i).total_uncompressed_size for r in range(md.num_row_groups)])

    def prefetch_fingerprint(self) -> None:
        """Start hashing the inputs in a background thread (hashlib and file reads release the GIL), so the
        content fingerprint is ready when the run needs it instead of adding a serial step."""
        if self._fp is None and self._fp_thread is None and self.hash_content:
            self._fp_thread = threading.Thread(target=self._fingerprint_quietly, name="kitctl-fingerprint",
                                               daemon=True)
            self._fp_thread.start()

    def _fingerprint_quietly(self) -> None:
        """The background hash: a failure here (an input gone, unreadable) is left to ``fingerprint()``, which
        hashes again in the foreground and reports it as the command's error, not as a thread's traceback."""
        try:
            self._fingerprint()
        except Exception:
            pass

    def fingerprint(self) -> str:
        """sha256 over every file's content (local inputs) or names + sizes (HF files, see __init__), in order."""
        if self._fp_thread is not None:
            self._fp_thread.join()
        return self._fingerprint()

    def _fingerprint(self) -> str:
        if self._fp is None:
            h = hashlib.sha256(self._fp_extra.encode())
            for f in self.files:
                if self.hash_content:
                    h.update(f"{self._kind(f)}\0{sha256_file(Path(f))}\0".encode())
                else:
                    h.update(f"{Path(str(f)).name}\0{self._size(f)}\0".encode())
            h.update(repr(self.split_on).encode())
            self._fp = h.hexdigest()
        return self._fp

    def sample(self, budget: int) -> dict[str, tuple[list[str], int]]:
        out: dict[str, tuple[list[str], int]] = {}
        kinds = sorted({self._kind(f) for f in self.files})
        for kind in kinds:
            files = [f for f in self.files if self._kind(f) == kind]
            step = max(1, len(files) // SAMPLE_FILES)
            picked = files[::step][:SAMPLE_FILES]
            docs: list[str] = []
            nbytes = 0
            for f in picked:
                d, b = self._sample_file(f, kind, max(1, budget // (len(kinds) * len(picked))))
                docs += d
                nbytes += b
            out[kind] = (docs, nbytes)
        return out

    def _sample_file(self, f, kind: str, budget: int) -> tuple[list[str], int]:
        """Documents from ``SAMPLE_SPOTS`` places of one file, about ``budget`` basis bytes in all."""
        docs: list[str] = []
        nbytes = 0
        per = max(1, budget // SAMPLE_SPOTS)
        if kind == "parquet":       # basis: the sampled rows' share of their row group's metadata bytes
            pf = _open_parquet(str(f), self.fs)
            rows, meta = self._rg_bytes(f)
            n = len(rows)
            for r in sorted({n * i // SAMPLE_SPOTS for i in range(SAMPLE_SPOTS)} & set(range(n))):
                got = took = 0
                for rb in pf.iter_batches(batch_size=64, row_groups=[r], columns=[TEXT_COLUMN], use_threads=False):
                    for t in rb.column(0).to_pylist():
                        docs.append(t or "")
                        got += len(t.encode("utf-8", "surrogatepass")) if t else 0
                        took += 1
                    if got >= per:
                        break
                nbytes += int(meta[r] * took / max(1, rows[r]))
            return docs, nbytes
        size = self._size(f)
        with self._open(f) as fh:
            for off in sorted({size * i // SAMPLE_SPOTS for i in range(SAMPLE_SPOTS)}):
                fh.seek(off)
                if kind == "txt":
                    chunk = fh.read(per)
                    nbytes += len(chunk)
                    text = chunk.decode("utf-8", "ignore")
                    docs += split_like_llmc(text, self.split_on) if self.split_on else [text]
                    continue
                if off:
                    fh.readline()                  # the rest of a line cut by the seek
                got = 0
                while got < per and (line := fh.readline()):
                    got += len(line)
                    try:
                        obj = json.loads(line)
                        docs.append(str(obj.get(TEXT_COLUMN) or ""))
                    except (ValueError, AttributeError, RecursionError):   # blank or bad lines: the run itself names them
                        continue
                nbytes += got
        return docs, nbytes

    def iter_batches(self, start_doc: int = 0, batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
        left = [start_doc]          # documents still to skip, shared with the per-file readers
        for f in self.files:
            kind = self._kind(f)
            reader = {"parquet": self._parquet, "jsonl": self._jsonl, "txt": self._txt}[kind]
            yield from reader(f, left, batch_rows)

    def _parquet(self, f, left: list, batch_rows: int):
        pf = _open_parquet(str(f), self.fs)
        _text_col_index(pf, f)
        rows = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
        first = 0   # skip whole row groups from the metadata alone
        while first < len(rows) and left[0] >= rows[first]:
            left[0] -= rows[first]
            first += 1
        if first == len(rows):
            return
        try:
            for rb in pf.iter_batches(batch_size=batch_rows, row_groups=list(range(first, len(rows))),
                                      columns=[TEXT_COLUMN], use_threads=False):
                arr = rb.column(0)
                if left[0]:
                    if left[0] >= len(arr):
                        left[0] -= len(arr)
                        continue
                    arr, left[0] = arr.slice(left[0]), 0
                yield arr
        except KitError:
            raise
        except Exception as e:
            raise ConfigError(f"cannot read {f}: {error_text(e)}",
                              "the file is damaged; re-download it or remove it from the input") from None

    def _jsonl(self, f, left: list, batch_rows: int):
        batch: list[str] = []
        with self._open(f) as fh:
            lineno = 0
            while line := fh.readline(MAX_JSONL_LINE + 1):
                lineno += 1
                if len(line) > MAX_JSONL_LINE:
                    raise ConfigError(f"{f}:{lineno}: a line longer than {MAX_JSONL_LINE >> 20} MiB: not a jsonl document",
                                      "jsonl inputs hold one JSON object per line")
                if not line.strip():
                    continue
                if left[0]:
                    left[0] -= 1
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{f}:{lineno}: not valid JSON ({e.msg})",
                                      "jsonl inputs hold one JSON object per line") from None
                except RecursionError:
                    raise ConfigError(f"{f}:{lineno}: JSON nested too deep to read (a document is an object with "
                                      f"a '{TEXT_COLUMN}' string)", "jsonl inputs hold one JSON object per line") from None
                if not isinstance(obj, dict) or TEXT_COLUMN not in obj:
                    keys = ", ".join(obj) if isinstance(obj, dict) else type(obj).__name__
                    raise ConfigError(f"{f}:{lineno}: no '{TEXT_COLUMN}' field (has: {keys})",
                                      "documents are read from a field named 'text'")
                batch.append(obj[TEXT_COLUMN] or "")
                if len(batch) >= batch_rows:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _txt(self, f, left: list, batch_rows: int):
        with self._open(f) as fh:
            if self.fs is None and (size := os.fstat(fh.fileno()).st_size) > MAX_TXT_BYTES:
                raise too_large(Path(f), "text input", size, MAX_TXT_BYTES,
                                "a .txt input is one document held in memory; split it, or give it as .jsonl")
            raw = fh.read(MAX_TXT_BYTES + 1)
        if len(raw) > MAX_TXT_BYTES:
            raise too_large(Path(f), "text input", len(raw), MAX_TXT_BYTES,
                            "a .txt input is one document held in memory; split it, or give it as .jsonl")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{f} is not UTF-8 text (byte {e.start})", "convert it to UTF-8 first") from None
        docs = [text] if self.split_on is None else split_like_llmc(text, self.split_on)
        skip = min(left[0], len(docs))
        left[0] -= skip
        docs = docs[skip:]
        for i in range(0, len(docs), batch_rows):
            yield docs[i:i + batch_rows]


def split_like_llmc(text: str, sep: str) -> list[str]:
    """llm.c's tinyshakespeare.py documents: split on ``sep`` and put ``sep`` back at the end of every
    section but the last (its "mild bug" kept for backwards compatibility), so the token stream matches."""
    sections = text.split(sep)
    return [s + sep if i != len(sections) - 1 else s for i, s in enumerate(sections)]


class MemorySource(Source):
    """Documents held in memory (tests, benchmarks)."""

    def __init__(self, docs: Sequence[str], description: str = "memory"):
        self.docs = list(docs)
        self.description = description

    def iter_batches(self, start_doc: int = 0, batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
        for i in range(start_doc, len(self.docs), batch_rows):
            yield self.docs[i:i + batch_rows]

    def basis_bytes(self) -> dict[str, int]:
        return {"memory": sum(len(d.encode("utf-8", "surrogatepass")) for d in self.docs)}

    def sample(self, budget: int) -> dict[str, tuple[list[str], int]]:
        return {"memory": (self.docs, self.basis_bytes()["memory"])}

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for d in self.docs:
            h.update(d.encode("utf-8", "surrogatepass") + b"\0")
        return h.hexdigest()


