"""GPT-2 tokenizer without the network: seed tiktoken's cache from a local folder, and write llm.c's
``gpt2_tokenizer.bin`` (the decoder file train_gpt2cu reads to print samples) without PyTorch.

tiktoken's ``gpt2`` encoding downloads ``vocab.bpe`` and ``encoder.json`` and caches each under
``$TIKTOKEN_CACHE_DIR/<sha1 of its URL>``, checking their sha256. We put verified copies there, so
``tiktoken.get_encoding("gpt2")`` never reaches the network.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import struct
from pathlib import Path
from typing import Optional

import numpy as np

from kitctl.core.files import sha256_file, write_atomic
from kitctl.core.errors import KitError
from kitctl.core import resources

BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
FILES = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
EOT = 50256
VOCAB_SIZE = 50257
TOKENIZER_MAGIC = 20240328
TOKENIZER_VERSION = 2
TOKENIZER_BIN = "gpt2_tokenizer.bin"


def cache_key(name: str) -> str:
    """tiktoken's cache file name for one of the GPT-2 files: sha1 of its URL."""
    return hashlib.sha1((BASE_URL + name).encode()).hexdigest()


def check_tokenizer_dir(tokenizer_dir: Path) -> dict[str, str]:
    """Verify vocab.bpe + encoder.json in a folder against their known sha256; return {name: sha256}."""
    tokenizer_dir = Path(tokenizer_dir)
    if not tokenizer_dir.is_dir():
        raise KitError(f"tokenizer folder {tokenizer_dir} does not exist",
                       "set tokenizer_dir in kit.yaml (or --tokenizer-dir) to a folder holding GPT-2's "
                       "vocab.bpe and encoder.json", exit_code=2)
    out = {}
    for name, want in FILES.items():
        p = tokenizer_dir / name
        if not p.is_file():
            raise KitError(f"{p} is missing", f"put GPT-2's {name} (sha256 {want}) in {tokenizer_dir}",
                           exit_code=2)
        got = sha256_file(p)
        if got != want:
            raise KitError(f"{p} is not GPT-2's {name}: sha256 {got}, expected {want}",
                           "use the exact files tiktoken downloads for its `gpt2` encoding", exit_code=2)
        out[name] = got
    return out


def seed_cache(tokenizer_dir: Path, cache_dir: Path) -> dict[str, str]:
    """Copy the verified files into ``cache_dir`` under tiktoken's names. Returns their sha256."""
    sums = check_tokenizer_dir(tokenizer_dir)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        dst = cache_dir / cache_key(name)
        if dst.exists() and sha256_file(dst) == FILES[name]:
            continue
        tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
        try:
            shutil.copyfile(Path(tokenizer_dir) / name, tmp)
            os.replace(tmp, dst)
        except BaseException:   # disk full, Ctrl-C: no temp file left behind
            tmp.unlink(missing_ok=True)
            raise
    return sums


# GPT-2's vocab.bpe + encoder.json, shipped with the kit (kitctl/assets/gpt2-bpe/README.md), checked like any folder.
EMBEDDED_DIR = resources.package_dir() / "assets" / "gpt2-bpe"


def setup_tiktoken(tokenizer_dir: Optional[Path], cache_dir: Path) -> dict[str, str]:
    """Point TIKTOKEN_CACHE_DIR at ``cache_dir`` (on the data root) and seed it from ``tokenizer_dir`` if
    given. Returns the sha256 of the two files that will be used (known values: tiktoken checks them too).
    Must run before the first ``tiktoken.get_encoding`` in this process (workers inherit the env)."""
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    if tokenizer_dir is None and EMBEDDED_DIR.is_dir():
        tokenizer_dir = EMBEDDED_DIR    # the kit ships GPT-2's two BPE files: no download, ever
    if tokenizer_dir is not None:
        return seed_cache(tokenizer_dir, cache_dir)
    return dict(FILES)


_ENCODING = None
RANKS_CACHE = "kitctl-gpt2-ranks-{}.json"


def get_encoding():
    """tiktoken's gpt2 encoding, with a clear error when it cannot be fetched (offline, no tokenizer_dir).

    tiktoken parses vocab.bpe + encoder.json on every start (~0.4 s); we keep its parsed constructor
    arguments (pattern, special tokens, the 50,256 ranks in order) as JSON next to tiktoken's cache, named by
    the two files' sha256, and build the same ``tiktoken.Encoding`` from it in ~0.04 s on later starts."""
    global _ENCODING
    if _ENCODING is not None:
        return _ENCODING
    import json

    import tiktoken

    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    cached = Path(cache_dir) / RANKS_CACHE.format(FILES["vocab.bpe"][:16] + FILES["encoder.json"][:16]) \
        if cache_dir else None
    if cached is not None and cached.is_file():
        try:
            d = json.loads(cached.read_text())
            ranks = {bytes.fromhex(h): i for i, h in enumerate(d["ranks"])}
            _ENCODING = tiktoken.Encoding(name="gpt2", pat_str=d["pat_str"], mergeable_ranks=ranks,
                                          special_tokens=d["special_tokens"], explicit_n_vocab=d["explicit_n_vocab"])
            return _ENCODING
        except Exception:   # a damaged cache file: fall through to tiktoken's own loading
            pass
    try:
        from tiktoken_ext import openai_public

        args = openai_public.gpt2()
        _ENCODING = tiktoken.Encoding(**args)
    except Exception as e:  # requests errors, hash mismatch, ...
        raise KitError(f"cannot load tiktoken's GPT-2 encoding: {type(e).__name__}: {str(e)[:300]}",
                       "offline? put vocab.bpe + encoder.json in a folder and pass --tokenizer-dir "
                       "(or set tokenizer_dir in kit.yaml)") from None
    ranks = args["mergeable_ranks"]
    if cached is not None and sorted(ranks.values()) == list(range(len(ranks))):
        try:
            order = sorted(ranks, key=ranks.__getitem__)
            tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"pat_str": args["pat_str"], "special_tokens": args["special_tokens"],
                                       "explicit_n_vocab": args.get("explicit_n_vocab"),
                                       "ranks": [b.hex() for b in order]}))
            os.replace(tmp, cached)
        except OSError:       # only a cache: go on without it
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
    return _ENCODING


def tokenizer_bin_bytes(enc) -> bytes:
    """llm.c's decoder file (train_gpt2.py write_tokenizer, llmc/tokenizer.h): a 256 x int32 header
    (magic 20240328, version 2, vocab size, EOT id), then per token one length byte and its bytes."""
    n = enc.max_token_value + 1
    header = np.zeros(256, dtype=np.int32)
    header[:4] = (TOKENIZER_MAGIC, TOKENIZER_VERSION, n, enc.eot_token)
    parts = [header.tobytes()]
    for i in range(n):
        b = enc.decode_single_token_bytes(i)
        if not 0 < len(b) < 256:
            raise KitError(f"token {i} is {len(b)} bytes; llm.c's tokenizer file allows 1..255")
        parts.append(struct.pack("<B", len(b)))
        parts.append(b)
    return b"".join(parts)


def write_tokenizer_bin(path: Path, enc=None, force: bool = False) -> bool:
    """Write ``gpt2_tokenizer.bin`` at ``path`` (atomically) unless it exists. True if written."""
    path = Path(path)
    if path.exists() and not force:
        return False
    enc = enc or get_encoding()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, tokenizer_bin_bytes(enc), path.with_name(f".{path.name}.tmp{os.getpid()}"))
    return True


def read_tokenizer_bin(path: Path) -> tuple[dict[str, int], list[bytes]]:
    """Parse a gpt2_tokenizer.bin as llm.c does: (header fields, token byte strings)."""
    data = Path(path).read_bytes()
    h = np.frombuffer(data[:1024], dtype=np.int32)
    if h[0] != TOKENIZER_MAGIC:
        raise KitError(f"{path}: bad magic {h[0]} (expected {TOKENIZER_MAGIC})")
    info = {"magic": int(h[0]), "version": int(h[1]), "vocab_size": int(h[2]), "eot": int(h[3])}
    toks, pos = [], 1024
    for _ in range(info["vocab_size"]):
        n = data[pos]
        toks.append(data[pos + 1:pos + 1 + n])
        pos += 1 + n
    if pos != len(data):
        raise KitError(f"{path}: {len(data) - pos} trailing bytes after {info['vocab_size']} tokens")
    return info, toks
