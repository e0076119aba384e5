"""HellaSwag -> ``hellaswag_val.bin``, the eval file llm.c's ``train_gpt2cu`` reads (``llmc/dataloader.h``
EvalLoader), tokenized as llm.c's ``dev/data/hellaswag.py`` does (``enc.encode(ctx)`` and
``enc.encode(" " + ending)``).

Format (magic 20240522, version 1): a header of 256 int32 ``[magic, version, n_examples,
longest_example_bytes, 0...]``, then per example a stream of uint16::

    65535 (START_EXAMPLE), example_bytes (of this whole example, header included), index, label,
    n_completions (4), n_ctx, ctx tokens..., then per completion: n, tokens...
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from kitctl.errors import KitError

MAGIC = 20240522
VERSION = 1
START = 65535
FILENAME = "hellaswag_val.bin"


def render(example: dict[str, Any], enc) -> dict[str, Any]:
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
    header = np.zeros(256, dtype="<i4")
    header[:4] = (MAGIC, VERSION, len(datas), longest)
    return header.tobytes() + np.concatenate(chunks).tobytes()


def read_examples(path: Path) -> Iterable[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise KitError(f"HellaSwag file {path} does not exist", "give hellaswag_val.jsonl with --source", exit_code=2)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ex = json.loads(line)
                ex["ctx"], ex["endings"], ex["label"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise KitError(f"{path}:{lineno}: not a HellaSwag example ({type(e).__name__}: {e})",
                               "each line must be a JSON object with ctx, endings and label", exit_code=2) from None
            yield ex


def build(jsonl: Path, out: Path, enc=None) -> int:
    """Tokenize a HellaSwag jsonl into llm.c's eval file at ``out`` (atomic). Returns the example count."""
    if enc is None:
        from kitctl.data.tokenizer import get_encoding

        enc = get_encoding()
    datas = [render(ex, enc) for ex in read_examples(jsonl)]
    data = eval_file_bytes(datas)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return len(datas)


def read_eval_file(path: Path) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Parse an eval file the way llm.c's EvalLoader walks it (checks every delimiter and count)."""
    raw = Path(path).read_bytes()
    h = np.frombuffer(raw[:1024], dtype="<i4")
    if h[0] != MAGIC or h[1] != VERSION:
        raise KitError(f"{path}: bad eval header {h[0]}/{h[1]}")
    info = {"n": int(h[2]), "longest_example_bytes": int(h[3])}
    s = np.frombuffer(raw[1024:], dtype="<u2")
    pos, out = 0, []
    for i in range(info["n"]):
        if s[pos] != START or s[pos + 2] != i:
            raise KitError(f"{path}: example {i} is malformed")
        nbytes, label, nc = int(s[pos + 1]), int(s[pos + 3]), int(s[pos + 4])
        if nbytes > info["longest_example_bytes"]:
            raise KitError(f"{path}: example {i} longer than the header's longest")
        p = pos + 5
        nctx = int(s[p]); ctx = s[p + 1:p + 1 + nctx].tolist(); p += 1 + nctx
        ends = []
        for _ in range(nc):
            ne = int(s[p]); ends.append(s[p + 1:p + 1 + ne].tolist()); p += 1 + ne
        if 2 * (p - pos) != nbytes:
            raise KitError(f"{path}: example {i} byte count mismatch")
        out.append({"label": label, "ctx_tokens": ctx, "ending_tokens": ends})
        pos = p
    if pos != len(s):
        raise KitError(f"{path}: trailing data after {info['n']} examples")
    return info, out


def download(url: str, dest: Path, endpoint_env: Optional[dict] = None) -> Path:
    """Fetch a file over HTTP to ``dest`` (atomic)."""
    import requests

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with requests.get(url, stream=True, timeout=60) as r:
            r.raise_for_status()
            with open(tmp, "wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise KitError(f"download of {url} failed: {type(e).__name__}: {str(e)[:200]}",
                       "offline? download it elsewhere and pass the file with --source") from None
    os.replace(tmp, dest)
    return dest
