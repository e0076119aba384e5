"""Test helpers for kitctl data: an independent, spec-level reference shard writer (pure Python: struct,
no numpy, no kitctl code), a reader of llm.c's HellaSwag eval file, and corpora with the edge cases that matter."""
from __future__ import annotations

import struct

EOT = 50256


def token_stream(enc, docs):
    out = []
    for d in docs:
        out.append(EOT)
        out.extend(enc.encode_ordinary(d))
    return out


def reference_files(enc, docs, name, shard_size, first_shard_size=None):
    """{filename: bytes} as the llm.c spec says: the stream of [EOT]+encode_ordinary(doc) cut into
    consecutive shards of shard_size tokens (shard 0 may have its own size), last partial shard kept."""
    stream = token_stream(enc, docs)
    files, i, idx = {}, 0, 0
    while i < len(stream):
        size = first_shard_size if (idx == 0 and first_shard_size) else shard_size
        chunk = stream[i:i + size]
        header = struct.pack("<256i", 20240520, 1, len(chunk), *([0] * 253))
        split = "val" if idx == 0 else "train"
        files[f"{name}_{split}_{idx:06d}.bin"] = header + struct.pack(f"<{len(chunk)}H", *chunk)
        i += size
        idx += 1
    return files


def read_dir(path, name):
    return {p.name: p.read_bytes() for p in sorted(path.glob(f"{name}_*.bin"))}


EDGE_DOCS = [
    "Hello world.",
    "",                                              # empty document: just the EOT
    "   \n\t ",                                      # whitespace only
    "naïve café — 日本語のテキスト 🙂🚀 ﬁ Ω≈ç√",          # non-ASCII, multi-byte, emoji
    "literal <|endoftext|> inside text is plain text",
    "x" * 3000,                                      # one long run
    "The quick brown fox jumps over the lazy dog. " * 40,
    "",
    "\u0301combining at start and Z\u0351\u0352 zalgo",
    "numbers 1234567890 3.14159 and code: def f(x): return x**2\n",
]


def read_eval_file(path):
    """Parse a HellaSwag eval file the way llm.c's EvalLoader walks it (checks every delimiter and count):
    ({"n", "longest_example_bytes"}, [{"label", "ctx_tokens", "ending_tokens"}, ...]), or a KitError."""
    from pathlib import Path

    import numpy as np

    from kitctl.core.errors import KitError
    from kitctl.core.llmc_files import HEADER_BYTES, HELLASWAG_START, HeaderError, unpack_hellaswag_header

    raw = Path(path).read_bytes()
    try:
        h = unpack_hellaswag_header(raw)
    except HeaderError as e:
        raise KitError(f"{path}: {e}") from None
    info = {"n": h.examples, "longest_example_bytes": h.longest_example_bytes}
    s = np.frombuffer(raw[HEADER_BYTES:], dtype="<u2")
    pos, out = 0, []
    for i in range(info["n"]):
        if s[pos] != HELLASWAG_START or s[pos + 2] != i:
            raise KitError(f"{path}: example {i} is malformed")
        nbytes, label, nc = int(s[pos + 1]), int(s[pos + 3]), int(s[pos + 4])
        if nbytes > info["longest_example_bytes"]:
            raise KitError(f"{path}: example {i} longer than the header's longest")
        p = pos + 5
        nctx = int(s[p])
        ctx = s[p + 1:p + 1 + nctx].tolist()
        p += 1 + nctx
        ends = []
        for _ in range(nc):
            ne = int(s[p])
            ends.append(s[p + 1:p + 1 + ne].tolist())
            p += 1 + ne
        if 2 * (p - pos) != nbytes:
            raise KitError(f"{path}: example {i} byte count mismatch")
        out.append({"label": label, "ctx_tokens": ctx, "ending_tokens": ends})
        pos = p
    if pos != len(s):
        raise KitError(f"{path}: trailing data after {info['n']} examples")
    return info, out


def write_shard(path, tokens):
    """A shard file in llm.c's layout, made without the kit (shards "made elsewhere"): header, then uint16 tokens."""
    tokens = [int(t) for t in tokens]
    header = struct.pack("<256i", 20240520, 1, len(tokens), *([0] * 253))
    path.write_bytes(header + struct.pack(f"<{len(tokens)}H", *tokens))
