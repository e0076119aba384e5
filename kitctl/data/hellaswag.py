"""HellaSwag -> ``hellaswag_val.bin``, the eval file llm.c's ``train_gpt2cu`` reads (``llmc/dataloader.h``
EvalLoader), tokenized as llm.c's ``dev/data/hellaswag.py`` does (``enc.encode(ctx)`` and
``enc.encode(" " + ending)``).

Format (magic 20240522, version 1): a header of 256 int32 ``[magic, version, n_examples,
longest_example_bytes, 0...]``, then per example a stream of uint16::

    65535 (START_EXAMPLE), example_bytes (of this whole example, header included), index, label,
    n_completions (4), n_ctx, ctx tokens..., then per completion: n, tokens...
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import atomic_output, open_regular, sha256_file, tidy_on_failure, too_large, write_atomic
from kitctl.core.records import error_text
from kitctl.core.llmc_files import pack_hellaswag_header
from kitctl.core.llmc_files import HELLASWAG_START as START
from kitctl.data.recipes import load_recipe
from kitctl.data.tokenizer import get_encoding


def render(example: dict[str, Any], enc) -> dict[str, Any]:
    # enc.encode as llm.c: a literal "<|endoftext|>" raises ValueError (read_examples' caller names the line)
    ctx_tokens = enc.encode(example["ctx"])
    endings = [enc.encode(" " + e) for e in example["endings"]]
    return {"label": int(example["label"]), "ctx_tokens": ctx_tokens, "ending_tokens": endings}


def eval_file_bytes(datas: list[dict[str, Any]]) -> bytes:
    if not datas:
        raise KitError("no HellaSwag examples to write")
    if len(datas) >= 2**16:
        raise KitError(f"{len(datas)} examples: llm.c's eval format holds fewer than 65,536")
    chunks, longest = [], 0
    for idx, d in enumerate(datas):
        ends = d["ending_tokens"]
        if len(ends) != 4:
            raise KitError(f"example {idx}: {len(ends)} endings; llm.c's evaluator expects 4")
        body = [len(ends), len(d["ctx_tokens"]), *d["ctx_tokens"]]
        for e in ends:
            body += [len(e), *e]
        ex = [START, 0, idx, d["label"], *body]
        if any(not 0 <= t < START for t in ex[2:]):
            raise KitError(f"example {idx}: a value does not fit below 65535")
        nbytes = 2 * len(ex)
        if nbytes >= 2**16:
            raise KitError(f"example {idx} is {nbytes} bytes; llm.c's format allows < 65536")
        ex[1] = nbytes
        longest = max(longest, nbytes)
        chunks.append(np.asarray(ex, dtype="<u2"))
    return pack_hellaswag_header(len(datas), longest) + np.concatenate(chunks).tobytes()


MAX_SOURCE_BYTES = 1 << 30      # llm.c's hellaswag_val.jsonl is 11 MB; its train split 47 MB
NOT_JSONL_HINT = "give llm.c's hellaswag_val.jsonl: one JSON object a line with ctx, endings (4) and label (0-3)"


def read_examples(path: Path, source_flag: str = "--source") -> Iterable[tuple[int, dict[str, Any]]]:
    """(line number, example) for each example of a HellaSwag jsonl, checked as llm.c's evaluator needs."""
    path = Path(path)
    try:        # a folder, device, FIFO or socket: exit 2 naming it, never a read that does not end
        raw = open_regular(path, "HellaSwag file", NOT_JSONL_HINT)
    except FileNotFoundError:
        raise ConfigError(f"HellaSwag file {path} does not exist", f"give hellaswag_val.jsonl with {source_flag}") from None
    except OSError as e:
        raise ConfigError(f"cannot read HellaSwag file {path}: {e.strerror or e}", "check the path and its permissions") from None
    size = os.fstat(raw.fileno()).st_size
    if size > MAX_SOURCE_BYTES:
        raw.close()
        raise too_large(path, "HellaSwag jsonl", size, MAX_SOURCE_BYTES, NOT_JSONL_HINT)
    with io.TextIOWrapper(raw, encoding="utf-8") as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                yield lineno, _check_example(path, lineno, line)
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path} is not a HellaSwag jsonl: it is not UTF-8 text"
                              + (f" after line {lineno}" if lineno else "")
                              + f" (byte 0x{e.object[e.start]:02x}; a parquet or other binary file?)",
                              NOT_JSONL_HINT) from None


def check_source(path: Path, source_flag: str = "--source") -> int:
    """Read every example once (what ``build`` will read) and refuse an empty file; returns the example count.
    The plan calls it, so bad input is refused before any tokenizer file is written."""
    n = sum(1 for _ in read_examples(path, source_flag))
    if not n:
        raise ConfigError(f"{path} is empty: it holds no HellaSwag examples", NOT_JSONL_HINT)
    return n


def _check_example(path: Path, lineno: int, line: str) -> dict[str, Any]:
    where = f"{path}:{lineno}"
    try:
        ex = json.loads(line)
        ex["ctx"], ex["endings"], ex["label"]
    except (json.JSONDecodeError, KeyError, TypeError, IndexError, RecursionError) as e:
        raise ConfigError(f"{where}: not a HellaSwag example ({type(e).__name__}: {e})",
                          "each line must be a JSON object with ctx, endings and label") from None
    ends = ex["endings"]
    if not isinstance(ex["ctx"], str) or not isinstance(ends, list) or len(ends) != 4 \
            or not all(isinstance(e, str) for e in ends):
        raise ConfigError(f"{where}: ctx must be a string and endings a list of 4 strings",
                          NOT_JSONL_HINT)
    label = ex["label"]
    if isinstance(label, str) and label.strip().isdigit():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= 3:
        raise ConfigError(f"{where}: label {ex['label']!r} is not 0, 1, 2 or 3 (the index of the right ending)",
                          "fix or drop that example")
    ex["label"] = label
    return ex


def build(jsonl: Path, out: Path, enc=None, force: bool = False, log=None) -> int:
    """Tokenize a HellaSwag jsonl into llm.c's eval file at ``out`` (atomic). Returns the example count.

    An existing ``out`` with the same bytes is left as is; with different bytes it is refused unless
    ``force`` (like a data folder made with another config). ``log`` hears what was done."""
    if enc is None:
        enc = get_encoding()
    datas = []
    for lineno, ex in read_examples(jsonl):
        try:
            datas.append(render(ex, enc))
        except ValueError as e:    # "<|endoftext|>" in the text: tiktoken's encode (as llm.c uses it) refuses
            raise ConfigError(f"{jsonl}:{lineno}: cannot tokenize this example as llm.c's hellaswag.py does "
                              f"(enc.encode): {str(e).splitlines()[0]}",
                              "remove the special token (e.g. <|endoftext|>) from its ctx/endings, or drop the "
                              "example; llm.c's own script fails on it too") from None
    if not datas:
        raise ConfigError(f"{jsonl} is empty: it holds no HellaSwag examples", NOT_JSONL_HINT)
    data = eval_file_bytes(datas)
    out = Path(out)
    say = log or (lambda s: None)
    if out.is_file():
        if out.read_bytes() == data:
            say(f"{out} is already up to date: {len(datas):,} examples")
            return len(datas)
        if not force:
            raise ConfigError(f"{out} already exists and differs from what {jsonl} gives",
                              "pass --force to replace it, or pick another --out folder")
    replaced = out.is_file()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, data)
    say(f"{'replaced' if replaced else 'wrote'} {out}: {len(datas):,} examples"
        + (" (it held different content)" if replaced else ""))
    return len(datas)


def git_blob_id(path: Path) -> str:
    """The file's git blob id (``git hash-object``: sha1 of ``blob <size>\\0`` and the bytes), read in blocks."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pin_warning(path: Path, n: int) -> Optional[str]:
    """A warning naming both files when ``path`` is not the recipe's pinned HellaSwag val set (its sha256 and
    example count, datasets/hellaswag.yaml); None when it is."""
    r = load_recipe("hellaswag")
    diffs = []
    if r.examples and n != r.examples:
        diffs.append(f"{n:,} example{'' if n == 1 else 's'}, the pinned file has {r.examples:,}")
    if r.sha256:
        got = sha256_file(Path(path))
        if got != r.sha256:
            diffs.append(f"sha256 {got[:16]}..., the pinned file's is {r.sha256[:16]}...")
    if r.git_blob:
        got = git_blob_id(Path(path))
        if got != r.git_blob:
            diffs.append(f"git blob {got[:12]}, the pinned file's is {r.git_blob[:12]}")
    if not diffs:
        return None
    return (f"{path} is not the pinned HellaSwag validation set ({r.url}): " + "; ".join(diffs)
            + ". It is used as given, but its scores do not compare with GPT-2's published HellaSwag accuracy")


def download(url: str, dest: Path, offline_hint: str = "--source") -> Path:
    """Fetch a file over HTTP to ``dest`` (atomically: a failed or stopped download leaves nothing there).
    ``offline_hint``: the flag of the command being run that gives the file locally."""
    import requests     # ~0.2 s to import: paid only by a download

    dest = Path(dest)
    with tidy_on_failure(dest.parent):         # a failed download leaves no empty folder either
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with requests.get(url, stream=True, timeout=60) as r:
                r.raise_for_status()
                with atomic_output(dest) as f:
                    for chunk in r.iter_content(1 << 20):
                        f.write(chunk)
        except requests.RequestException as e:
            raise KitError(f"download of {url} failed: {error_text(e)}",
                           f"offline? download {url} on a box with network and pass the file with {offline_hint}, "
                           "or bring everything with `kitctl bundle --out FILE` and use --bundle FILE") from None
    return dest
