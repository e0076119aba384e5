"""Disk preflight: how many tokens an input will give (measured on a sample of it), what that takes on disk,
and a refusal before anything is written when the disk is smaller.

Tokens per byte vary by a factor of ~3 with the text: ~0.23 on English web text, ~0.3 on tinyshakespeare, ~0.7
on CJK text (a character is 3 UTF-8 bytes and often 1-2 tokens; 0.58 in tests/data/test_data_hardening.py). So the estimate is not a fixed ratio: inputs
up to ``EXACT_BYTES`` are tokenized whole (exact), larger ones on a sample spread over their files and places
(``Source.sample``), scaled to the input's bytes, plus ``MARGIN``. The disk need counts every shard's
1,024-byte header and the manifest's line per shard, not just 2 bytes a token.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import existing_parent, free_bytes
from kitctl.data.encoders import Encoder
from kitctl.data.pool import tokenize_batch
from kitctl.core.llmc_files import HEADER_BYTES
from kitctl.data.sources import Source

EXACT_BYTES = 2 << 20           # inputs up to 2 MiB are counted exactly ...
SAMPLE_BYTES = 512 << 10         # ... larger ones from a 512 KiB sample
MARGIN = 0.10                   # a sample's tokens per byte, +10%
MANIFEST_BYTES_PER_SHARD = 448  # one shard's entry in manifest.json (indented JSON, with size, mtime_ns, ino, ctime_ns)


@dataclass(frozen=True)
class TokenEstimate:
    tokens: int
    exact: bool                 # every document was tokenized (small input)
    sample_bytes: int           # bytes the figure was measured on
    tokens_per_byte: float

    def describe(self) -> str:
        how = "counted exactly" if self.exact else \
            f"{self.tokens_per_byte:.3f} tokens/byte measured on a {self.sample_bytes / 1e6:.1f} MB sample, +{MARGIN:.0%}"
        return f"~{self.tokens:,} tokens ({how})"


def _count(docs: Any, encoder: Optional[Encoder] = None) -> tuple[int, int]:
    """(tokens incl. one EOT per document, documents)."""
    if not len(docs):
        return 0, 0
    _, lens = tokenize_batch(docs, encoder)
    return int(lens.sum()), len(lens)


def estimate_tokens(source: Source, budget: int = SAMPLE_BYTES, what: str = "the input",
                    exact_up_to: int = EXACT_BYTES, encoder: Optional[Encoder] = None) -> TokenEstimate:
    """Tokens ``source`` will give, counted with ``encoder`` (default tiktoken; the run's fast encoder gives the
    same tokens ~20x faster: the plan passes it when it is loaded without writing anything). Refuses (exit 2) an
    input with no text at all: an empty file would make a dataset of EOT tokens only, which llm.c cannot train
    on."""
    basis = source.basis_bytes()
    total = sum(basis.values())
    exact = total <= exact_up_to
    if exact:
        tokens = docs = 0
        for b in source.iter_batches():
            t, d = _count(b, encoder)
            tokens, docs = tokens + t, docs + d
            if tokens - docs > exact_up_to:  # far more text than the metadata said (repeated parquet text)
                exact = False
                break
    if exact:
        if tokens <= docs:
            raise ConfigError(f"{what} holds no text ({docs} document(s), {total:,} bytes, all empty): it would make "
                              f"a dataset of {tokens} end-of-text token(s) only",
                              "check the input (an empty file? the wrong column or field?)")
        return TokenEstimate(tokens, True, total, tokens / max(1, total))
    tokens_f, sampled, sampled_tokens = 0.0, 0, 0
    for kind, (docs_sample, nbytes) in source.sample(budget).items():
        t, _ = _count(docs_sample, encoder)
        ratio = t / nbytes if nbytes else 1.0          # nothing readable sampled: 1 token a byte, the safe side
        tokens_f += ratio * basis.get(kind, 0)
        sampled, sampled_tokens = sampled + nbytes, sampled_tokens + t
    tokens = int(math.ceil(tokens_f * (1 + MARGIN)))
    return TokenEstimate(tokens, False, sampled, sampled_tokens / max(1, sampled))


def n_shards(tokens: int, shard_size: int, first_shard_size: Optional[int] = None) -> int:
    first = first_shard_size or shard_size
    if tokens <= 0:
        return 0
    if tokens <= first:
        return 1
    return 1 + math.ceil((tokens - first) / shard_size)


def shard_bytes(tokens: int, shard_size: int, first_shard_size: Optional[int] = None) -> int:
    """Disk for ``tokens`` cut into shards: 2 bytes a token, a 1,024-byte header and a manifest line per shard."""
    n = n_shards(tokens, shard_size, first_shard_size)
    return 2 * tokens + n * (HEADER_BYTES + MANIFEST_BYTES_PER_SHARD) + 4096


def check_space(need: dict[Path, int], free_fn: Optional[Callable[[Path], int]] = None) -> None:
    """``need``: {folder: bytes}. Folders on the same filesystem are summed. Raises KitError when short."""
    free_fn = free_fn or free_bytes
    by_dev: dict[Any, list] = {}
    for folder, nbytes in need.items():
        probe = existing_parent(Path(folder))
        try:
            dev: Any = os.stat(probe).st_dev
        except OSError:
            dev = str(probe)
        entry = by_dev.setdefault(dev, [probe, 0, []])
        entry[1] += nbytes
        entry[2].append(f"{folder} {gb(nbytes)}")
    for probe, nbytes, parts in by_dev.values():
        free = free_fn(probe)
        if nbytes > free:
            raise KitError(
                f"not enough disk space: need about {gb(nbytes)} on {probe} ({'; '.join(parts)}), "
                f"{gb(free)} free",
                "point data_root (kit.yaml) or --out at a bigger disk; --stream avoids the HF cache; "
                "a smaller dataset (e.g. fineweb10B) needs less")


def gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
