"""GPT-2 tokenizer without the network: the ``tiktoken.Encoding`` from local, sha256-checked files, tiktoken's
cache seeded with them, and llm.c's ``gpt2_tokenizer.bin`` (the decoder file train_gpt2cu reads to print
samples) written without PyTorch.

tiktoken's ``gpt2`` encoding downloads ``vocab.bpe`` and ``encoder.json`` and caches each under
``$TIKTOKEN_CACHE_DIR/<sha1 of its URL>``, checking their sha256. We put verified copies there, so
``tiktoken.get_encoding("gpt2")`` (and llm.c's own scripts) never reach the network; kitctl itself builds the
Encoding from the files (or its checksummed table of parsed ranks), see :func:`get_encoding`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Callable, ClassVar, Optional


from kitctl.core import resources
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import atomic_output, sha256_file, write_atomic
from kitctl.core.llmc_files import (  # noqa: F401 (re-exported: llm.c's tokenizer table for data's callers)
    EOT, HEADER_BYTES, TOKENIZER_MAGIC, HeaderError, pack_tokenizer_header,
    unpack_tokenizer_header)
from kitctl.core.records import Record, error_text

BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
FILES = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
VOCAB_SIZE = 50257
# what tokenizer_bin_bytes gives for GPT-2's files (tested): an existing file is kept only if it matches
TOKENIZER_BIN_SIZE = 372_108
TOKENIZER_BIN_SHA256 = "6f3abc21e444e4e8300e225f4e03da48ea121cf17e30f67009b8dad7a66c2f13"


def cache_key(name: str) -> str:
    """tiktoken's cache file name for one of the GPT-2 files: sha1 of its URL."""
    return hashlib.sha1((BASE_URL + name).encode()).hexdigest()


def check_tokenizer_dir(tokenizer_dir: Path) -> dict[str, str]:
    """Verify vocab.bpe + encoder.json in a folder against their known sha256; return {name: sha256}."""
    tokenizer_dir = Path(tokenizer_dir)
    if not tokenizer_dir.is_dir():
        raise ConfigError(f"tokenizer folder {tokenizer_dir} does not exist",
                          "set tokenizer_dir in kit.yaml (or --tokenizer-dir) to a folder holding GPT-2's "
                          "vocab.bpe and encoder.json")
    out = {}
    for name, want in FILES.items():
        p = tokenizer_dir / name
        if not p.is_file():
            raise ConfigError(f"{p} is missing", f"put GPT-2's {name} (sha256 {want}) in {tokenizer_dir}")
        got = sha256_file(p)
        if got != want:
            raise ConfigError(f"{p} is not GPT-2's {name}: sha256 {got}, expected {want}",
                              "use the exact files tiktoken downloads for its `gpt2` encoding")
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
        with open(Path(tokenizer_dir) / name, "rb") as src, atomic_output(dst) as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return sums


# GPT-2's vocab.bpe + encoder.json, shipped with the kit (kitctl/assets/gpt2-bpe/README.md), checked like any folder.
EMBEDDED_DIR = resources.package_dir() / "assets" / "gpt2-bpe"


def setup_tiktoken(tokenizer_dir: Optional[Path], cache_dir: Path) -> dict[str, str]:
    """Point TIKTOKEN_CACHE_DIR at ``cache_dir`` (on the data root) and seed it from ``tokenizer_dir`` (default:
    the embedded files), so tiktoken itself (and llm.c's scripts) work offline there too. Returns the sha256 of
    the two files that will be used (known values: tiktoken checks them too)."""
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    global _FILES_DIR
    if tokenizer_dir is None and EMBEDDED_DIR.is_dir():
        tokenizer_dir = EMBEDDED_DIR    # the kit ships GPT-2's two BPE files: no download, ever
    if tokenizer_dir is not None:
        sums = seed_cache(tokenizer_dir, cache_dir)
        _FILES_DIR = Path(tokenizer_dir)
        return sums
    return dict(FILES)


# ------------------------------------------------------------------------------------ the Encoding, fast
RANKS_CACHE = "kitctl-gpt2-ranks-{}.json"
_ENCODING = None
_ARGS: Optional[dict] = None          # constructor arguments parsed from the files, until written as a table
_FILES_DIR: Optional[Path] = None     # the verified folder setup_tiktoken used


class RanksTable(Record):
    """tiktoken's parsed GPT-2 constructor arguments (the 50,256 ranks in order), kept next to tiktoken's cache:
    building the Encoding from it takes ~0.05 s instead of ~0.4 s. ``checksum`` covers everything else, so a
    damaged table (edited, truncated into valid JSON, bit rot) is detected and rebuilt, never used."""

    KIND: ClassVar[str] = "GPT-2 tokenizer table"
    pat_str: str
    special_tokens: dict[str, int]
    explicit_n_vocab: Optional[int] = None
    ranks: list[str]
    checksum: str = ""

    def digest(self) -> str:
        h = hashlib.sha256(json.dumps([self.pat_str, self.special_tokens, self.explicit_n_vocab]).encode())
        h.update("\n".join(self.ranks).encode())
        return h.hexdigest()


def ranks_table_path(cache_dir: Path) -> Path:
    return Path(cache_dir) / RANKS_CACHE.format(FILES["vocab.bpe"][:16] + FILES["encoder.json"][:16])


def _from_table(path: Path):
    """The Encoding from a table file, or None when it is missing or damaged (checksum, shape, ranks)."""
    import tiktoken     # imported on first use, with its Rust extension: only commands that tokenize pay it

    try:
        t = RanksTable.read(path)
        if t.checksum != t.digest() or len(t.ranks) != EOT:
            return None
        ranks = {bytes.fromhex(h): i for i, h in enumerate(t.ranks)}
        if len(ranks) != len(t.ranks):
            return None
        return tiktoken.Encoding(name="gpt2", pat_str=t.pat_str, mergeable_ranks=ranks,
                                 special_tokens=t.special_tokens, explicit_n_vocab=t.explicit_n_vocab)
    except (KitError, ValueError, TypeError):
        return None


def _args_from_files(folder: Path) -> dict:
    """tiktoken's gpt2() constructor arguments, parsed by tiktoken from a verified local folder, with
    tiktoken's own file cache switched off (it would write a copy keyed by the local path, or into /tmp)."""
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks     # ~0.15 s (its HTTP stack): only here
    from tiktoken_ext import openai_public

    check_tokenizer_dir(folder)
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""          # "" = no caching, read the files as they are
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(str(folder / "vocab.bpe"), str(folder / "encoder.json"),
                                                FILES["vocab.bpe"], FILES["encoder.json"])
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old
    return {"name": "gpt2", "explicit_n_vocab": VOCAB_SIZE, "pat_str": openai_public.r50k_pat_str,
            "mergeable_ranks": ranks, "special_tokens": {openai_public.ENDOFTEXT: EOT}}


def _write_table(path: Path, args: dict) -> None:
    ranks = args["mergeable_ranks"]
    if sorted(ranks.values()) != list(range(len(ranks))):
        return
    order = sorted(ranks, key=ranks.__getitem__)
    t = RanksTable(pat_str=args["pat_str"], special_tokens=args["special_tokens"],
                   explicit_n_vocab=args.get("explicit_n_vocab"), ranks=[b.hex() for b in order])
    t.checksum = t.digest()
    try:
        t.write(path)
    except OSError:       # only a cache: go on without it
        pass


def get_encoding(tokenizer_dir: Optional[Path] = None, cache_dir: Optional[Path] = None, write_cache: bool = True):
    """The GPT-2 ``tiktoken.Encoding``, loaded once per process, without the network when the files are local.

    In order: kitctl's checksummed ranks table in ``cache_dir`` (default ``$TIKTOKEN_CACHE_DIR``); the two
    files of ``tokenizer_dir`` (default: the folder :func:`setup_tiktoken` seeded from, else the embedded
    copy), sha256-checked; else tiktoken's own loading (download, or its cache). The table is (re)written
    when it was missing or damaged, unless ``write_cache`` is false (``--dry-run`` writes nothing)."""
    global _ENCODING, _ARGS
    import tiktoken     # imported on first use, with its Rust extension: only commands that tokenize pay it

    cache = cache_dir if cache_dir is not None else (os.environ.get("TIKTOKEN_CACHE_DIR") or None)
    table = ranks_table_path(Path(cache)) if cache else None
    if _ENCODING is None and table is not None and table.is_file():
        _ENCODING = _from_table(table)
    if _ENCODING is None:
        folder = tokenizer_dir or _FILES_DIR or (EMBEDDED_DIR if EMBEDDED_DIR.is_dir() else None)
        try:
            _ARGS = _args_from_files(Path(folder)) if folder is not None else _tiktoken_args()
            _ENCODING = tiktoken.Encoding(**_ARGS)
        except KitError:
            raise
        except Exception as e:  # requests errors, hash mismatch, ...
            raise KitError(f"cannot load tiktoken's GPT-2 encoding: {error_text(e)}",
                           "offline? put vocab.bpe + encoder.json in a folder and pass --tokenizer-dir "
                           "(or set tokenizer_dir in kit.yaml)") from None
    if _ARGS is not None and table is not None and write_cache and table.parent.is_dir():
        _write_table(table, _ARGS)      # built from the files (no table, or a damaged one): keep it for next time
        _ARGS = None
    return _ENCODING


def _tiktoken_args() -> dict:
    from tiktoken_ext import openai_public

    return openai_public.gpt2()


def tokenizer_bin_bytes(enc) -> bytes:
    """llm.c's decoder file (train_gpt2.py write_tokenizer, llmc/tokenizer.h): a 256 x int32 header
    (magic 20240328, version 2, vocab size, EOT id), then per token one length byte and its bytes."""
    n = enc.max_token_value + 1
    parts = [pack_tokenizer_header(n, enc.eot_token)]
    for i in range(n):
        b = enc.decode_single_token_bytes(i)
        if not 0 < len(b) < 256:
            raise KitError(f"token {i} is {len(b)} bytes; llm.c's tokenizer file allows 1..255")
        parts.append(struct.pack("<B", len(b)))
        parts.append(b)
    return b"".join(parts)


def write_tokenizer_bin(path: Path, enc=None, force: bool = False,
                        log: Optional[Callable[[str], None]] = None) -> bool:
    """Make ``path`` hold llm.c's ``gpt2_tokenizer.bin`` (atomically). A file that already holds exactly those
    bytes (size and sha256 checked) is kept; anything else there (0 bytes, truncated, damaged) is replaced.
    True if written."""
    path = Path(path)
    if path.is_file() and not force:
        try:
            size = path.stat().st_size
            ok = size == TOKENIZER_BIN_SIZE and sha256_file(path) == TOKENIZER_BIN_SHA256
        except OSError:
            size, ok = -1, False
        if ok:
            return False
        if log:
            log(f"{path} is damaged ({size:,} bytes, not llm.c's {TOKENIZER_BIN_SIZE:,}-byte file): rewriting it")
    data = tokenizer_bin_bytes(enc or get_encoding())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return True


def read_tokenizer_bin(path: Path) -> tuple[dict[str, int], list[bytes]]:
    """Parse a gpt2_tokenizer.bin as llm.c does: (header fields, token byte strings)."""
    data = Path(path).read_bytes()
    try:
        h = unpack_tokenizer_header(data)
    except HeaderError as e:
        raise KitError(f"{path}: {e}") from None
    info = {"magic": TOKENIZER_MAGIC, "version": h.version, "vocab_size": h.vocab_size, "eot": h.eot}
    toks, pos = [], HEADER_BYTES
    for _ in range(info["vocab_size"]):
        n = data[pos]
        toks.append(data[pos + 1:pos + 1 + n])
        pos += 1 + n
    if pos != len(data):
        raise KitError(f"{path}: {len(data) - pos} trailing bytes after {info['vocab_size']} tokens")
    return info, toks
