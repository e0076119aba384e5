"""Test helpers for kitctl data: an independent, spec-level reference shard writer (pure Python: struct,
no numpy, no kitctl code) and corpora with the edge cases that matter."""
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
