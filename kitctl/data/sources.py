"""Where documents come from: recipes (``datasets/*.yaml``) and local files -> ordered document batches.

A ``Source`` yields batches of document texts (a pyarrow string array or a list of str) in a fixed,
documented order, and can start at any document index cheaply (resume). Orders:

- parquet files: files sorted by path, rows in file order (what HuggingFace ``load_dataset`` gives for
  the same files); only the ``text`` column is read, one row group at a time, in record batches.
- jsonl: one JSON object per line, its ``text`` field.
- txt: the whole file is one document (a recipe may split it, e.g. tinyshakespeare on blank lines).
- HuggingFace datasets (fineweb, fineweb-edu): the parquet files of the recipe's config at the pinned
  revision, sorted -- downloaded into the HF cache on the data root, or with ``--stream`` read in place
  over HTTP (``hf://``) without materializing any cache.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import yaml

from kitctl.core.errors import KitError
from kitctl.core import resources

RECIPES_DIR = Path(os.environ.get("KIT_RECIPES_DIR", resources.share("datasets")))
TEXT_COLUMN = "text"
BATCH_ROWS = 1024
# for disk-space estimates only, so on the safe side: measured ~4.3 bytes a GPT-2 token on English web text,
# 3.3 on tinyshakespeare; fewer on code or non-English text
BYTES_PER_TOKEN = 3.0

Batch = Union[Sequence[str], Any]   # list[str] or a pyarrow (Large)StringArray


# ----------------------------------------------------------------------------------------------- recipes
@dataclass
class Recipe:
    name: str
    kind: str                      # hf_parquet | text | hellaswag | pretokenized
    prefix: str                    # output file prefix (llm.c's `name`)
    description: str = ""
    repo: Optional[str] = None
    pin: Optional[str] = None      # key under `datasets:` in docker/versions.yaml
    config: Optional[str] = None   # HF config name, e.g. sample-10BT
    data_files: Optional[str] = None   # glob of the config's parquet files inside the repo
    url: Optional[str] = None
    split_on: Optional[str] = None     # txt: split into documents on this separator (llm.c quirk kept)
    first_shard_tokens: Optional[int] = None
    shard_size: Optional[int] = None
    approx_tokens: Optional[int] = None
    approx_download_bytes: Optional[int] = None
    allow_patterns: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def revision(self) -> Optional[str]:
        if not self.pin:
            return None
        from kitctl.core.pins import pins

        return pins()["datasets"][self.pin]["revision"]


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name: str) -> Recipe:
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise KitError(f"unknown dataset '{name}': no recipe {path.name} and no such file or folder",
                       f"recipes: {', '.join(recipe_names())}; or give a parquet/jsonl/txt file, a folder "
                       "or a glob", exit_code=2)
    data = yaml.safe_load(path.read_text()) or {}
    known = set(Recipe.__dataclass_fields__) - {"name", "extra"}
    extra = {k: v for k, v in data.items() if k not in known}
    return Recipe(name=name, extra=extra, **{k: v for k, v in data.items() if k in known})


# ------------------------------------------------------------------------------------------ local files
SUFFIXES = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".txt": "txt",
            ".text": "txt", ".md": "txt"}


def is_local_spec(spec: str) -> bool:
    return any(c in spec for c in "*?[") or os.sep in spec or Path(spec).exists() or \
        Path(spec).suffix.lower() in SUFFIXES


def resolve_local(spec: str) -> list[Path]:
    """A file, a folder (its parquet/jsonl/txt files, recursively) or a glob -> sorted files."""
    p = Path(os.path.expanduser(spec))
    if any(c in spec for c in "*?["):
        files = [Path(f) for f in glob.glob(os.path.expanduser(spec), recursive=True) if Path(f).is_file()]
        if not files:
            raise KitError(f"no files match {spec}", "check the pattern (quote it so the shell leaves it alone)",
                           exit_code=2)
    elif p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES]
        if not files:
            raise KitError(f"folder {p} holds no .parquet, .jsonl or .txt files", exit_code=2)
    elif p.is_file():
        files = [p]
    else:
        raise KitError(f"input {spec} does not exist", "give an existing file, folder or glob, or a recipe name "
                       f"({', '.join(recipe_names())})", exit_code=2)
    bad = [f for f in files if f.suffix.lower() not in SUFFIXES]
    if bad:
        raise KitError(f"cannot read {bad[0]}: unknown file type '{bad[0].suffix}'",
                       "inputs are .parquet, .jsonl (one JSON object a line) or .txt (one document)", exit_code=2)
    return sorted(files, key=lambda f: str(f))


# -------------------------------------------------------------------------------------------- sources
class Source:
    """Ordered documents. Subclasses implement ``_files`` handling; see module docstring."""

    description: str = ""

    def iter_batches(self, start_doc: int = 0, batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
        raise NotImplementedError

    def approx_text_bytes(self) -> Optional[int]:
        return None

    def approx_tokens(self) -> Optional[int]:
        b = self.approx_text_bytes()
        return int(b / BYTES_PER_TOKEN) if b else None

    def fingerprint(self) -> str:
        raise NotImplementedError

    def check(self) -> None:
        """Open every input once and fail early with a clear message (missing column, unreadable file)."""


def _open_parquet(path, filesystem=None):
    import pyarrow.parquet as pq

    try:
        if filesystem is not None:
            return pq.ParquetFile(filesystem.open(path, "rb"))
        return pq.ParquetFile(path)
    except FileNotFoundError:
        raise KitError(f"input {path} does not exist", exit_code=2) from None
    except Exception as e:
        raise KitError(f"cannot read {path} as parquet: {type(e).__name__}: {str(e)[:200]}",
                       "the file is damaged or not parquet; re-download it or remove it from the input",
                       exit_code=2) from None


def _text_col_index(pf, path) -> int:
    names = pf.schema_arrow.names
    if TEXT_COLUMN not in names:
        raise KitError(f"{path} has no '{TEXT_COLUMN}' column (columns: {', '.join(names) or 'none'})",
                       "documents are read from a column named 'text'; rename the column", exit_code=2)
    return names.index(TEXT_COLUMN)


class FilesSource(Source):
    """Local parquet / jsonl / txt files, in the given order (or hf:// paths through a filesystem)."""

    def __init__(self, files: Sequence[Union[Path, str]], split_on: Optional[str] = None, filesystem=None,
                 description: str = "", fingerprint_extra: str = ""):
        self.files = list(files)
        self.split_on = split_on
        self.fs = filesystem
        self.description = description or ", ".join(str(f) for f in self.files[:3]) + \
            (f" (+{len(self.files) - 3} more)" if len(self.files) > 3 else "")
        self._fp_extra = fingerprint_extra
        self._rows: dict[str, list[int]] = {}

    def _kind(self, f) -> str:
        return SUFFIXES.get(Path(str(f)).suffix.lower(), "parquet")

    def _size(self, f) -> int:
        if self.fs is not None:
            return int(self.fs.info(str(f))["size"])
        try:
            return Path(f).stat().st_size
        except FileNotFoundError:
            raise KitError(f"input {f} does not exist", exit_code=2) from None

    def check(self) -> None:
        for f in self.files:
            if self._kind(f) == "parquet":
                pf = _open_parquet(str(f), self.fs)
                _text_col_index(pf, f)
                self._rows[str(f)] = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
            elif not (self.fs or Path(f).is_file()):
                raise KitError(f"input {f} does not exist", exit_code=2)

    def approx_text_bytes(self) -> Optional[int]:
        total = 0
        for f in self.files:
            if self._kind(f) == "parquet":
                pf = _open_parquet(str(f), self.fs)
                i = _text_col_index(pf, f)
                md = pf.metadata
                sizes = [md.row_group(r).column(i).total_uncompressed_size for r in range(md.num_row_groups)]
                total += int(sum(sizes) * self._text_ratio(pf, i, sizes[0])) if sizes else 0
            else:
                total += self._size(f)
        return total

    def _text_ratio(self, pf, col: int, meta_bytes: int) -> float:
        """Text bytes per byte of the parquet metadata's uncompressed size, from the first row group: repeated
        (dictionary-encoded) text is far bigger as text than the metadata says. Local files only."""
        if self.fs is not None or meta_bytes <= 0:
            return 1.0
        import pyarrow.compute as pc

        try:
            text = pf.read_row_group(0, columns=[pf.schema_arrow.names[col]]).column(0)
            real = pc.sum(pc.binary_length(text)).as_py() or 0
        except Exception:   # unreadable: check() says so with a clear message
            return 1.0
        return max(1.0, real / meta_bytes)

    def fingerprint(self) -> str:
        h = hashlib.sha256(self._fp_extra.encode())
        for f in self.files:
            h.update(f"{Path(str(f)).name}\0{self._size(f)}\0".encode())
        h.update(repr(self.split_on).encode())
        return h.hexdigest()

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
            raise KitError(f"cannot read {f}: {type(e).__name__}: {str(e)[:200]}",
                           "the file is damaged; re-download it or remove it from the input",
                           exit_code=2) from None

    def _jsonl(self, f, left: list, batch_rows: int):
        batch: list[str] = []
        opener = self.fs.open if self.fs is not None else open
        with opener(str(f), "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if left[0]:
                    left[0] -= 1
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise KitError(f"{f}:{lineno}: not valid JSON ({e.msg})",
                                   "jsonl inputs hold one JSON object per line", exit_code=2) from None
                if not isinstance(obj, dict) or TEXT_COLUMN not in obj:
                    keys = ", ".join(obj) if isinstance(obj, dict) else type(obj).__name__
                    raise KitError(f"{f}:{lineno}: no '{TEXT_COLUMN}' field (has: {keys})",
                                   "documents are read from a field named 'text'", exit_code=2)
                batch.append(obj[TEXT_COLUMN] or "")
                if len(batch) >= batch_rows:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _txt(self, f, left: list, batch_rows: int):
        opener = self.fs.open if self.fs is not None else open
        with opener(str(f), "rb") as fh:
            raw = fh.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise KitError(f"{f} is not UTF-8 text (byte {e.start})", "convert it to UTF-8 first",
                           exit_code=2) from None
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

    def approx_text_bytes(self) -> Optional[int]:
        return sum(len(d.encode("utf-8", "surrogatepass")) for d in self.docs)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for d in self.docs:
            h.update(d.encode("utf-8", "surrogatepass") + b"\0")
        return h.hexdigest()


# ------------------------------------------------------------------------------------ HuggingFace repos
def hf_parquet_files(repo: str, revision: str, pattern: str, list_files=None) -> list[str]:
    """The parquet files of one dataset config at a revision (repo-relative paths, sorted)."""
    import fnmatch

    if list_files is None:
        from huggingface_hub import HfApi

        def list_files(repo, revision):
            return HfApi().list_repo_files(repo, repo_type="dataset", revision=revision)
    try:
        names = list_files(repo, revision)
    except Exception as e:
        raise KitError(f"cannot list {repo}@{revision[:12]} on the HuggingFace hub: {type(e).__name__}: "
                       f"{str(e)[:200]}",
                       "check the network, or set mirrors.hf_endpoint in kit.yaml (e.g. https://hf-mirror.com); "
                       "offline, give the downloaded parquet files as DATASET") from None
    files = sorted(n for n in names if fnmatch.fnmatch(n, pattern) and n.endswith(".parquet"))
    if not files:
        raise KitError(f"{repo}@{revision[:12]} has no parquet files matching {pattern}")
    return files


def hf_source(recipe: Recipe, stream: bool, list_files=None, download=None,
              revision: Optional[str] = None) -> FilesSource:
    """FineWeb-style recipes: download the config's parquet files into the HF cache (HF_HOME, on the data
    root) at the pinned revision (or ``revision``, e.g. a resolved commit), or with ``stream`` read them over
    HTTP without any cache."""
    rev = revision or recipe.revision() or "main"
    files = hf_parquet_files(recipe.repo, rev, recipe.data_files, list_files)
    fp = f"{recipe.repo}@{rev}:{recipe.data_files}"
    desc = f"{recipe.repo}@{rev[:12]} {recipe.config} ({len(files)} parquet files" + \
        (", streamed)" if stream else ")")
    if stream:
        from huggingface_hub import HfFileSystem

        fs = HfFileSystem()
        paths = [f"datasets/{recipe.repo}@{rev}/{f}" for f in files]
        return FilesSource(paths, filesystem=fs, description=desc, fingerprint_extra=fp)
    if download is None:
        from huggingface_hub import snapshot_download

        def download(repo, revision, patterns):
            return snapshot_download(repo, repo_type="dataset", revision=revision, allow_patterns=patterns)
    try:
        root = Path(download(recipe.repo, rev, [recipe.data_files]))
    except Exception as e:
        raise KitError(f"download of {recipe.repo}@{rev[:12]} failed: {type(e).__name__}: {str(e)[:300]}",
                       "re-run the same command to continue the download; or set mirrors.hf_endpoint") from None
    return FilesSource([root / f for f in files], description=desc, fingerprint_extra=fp)
