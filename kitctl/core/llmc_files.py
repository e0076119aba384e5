"""llm.c's file contracts: every magic number, header layout and file name the kit shares with llm.c (f1e2ace).

The one home of these facts (issue 19): data writes shards, HellaSwag and the tokenizer table; train, model,
observe and pipeline read them and the run folder llm.c writes. Standard library only, so that the device
check (``kitctl.model.valloss``) can import it without numpy or pydantic.

Headers are 256 little-endian int32 (1,024 bytes):

    token shard    [20240520, 1, n_tokens, 0...]                       then n_tokens uint16 (dev/data/data_common.py)
    HellaSwag      [20240522, 1, n_examples, longest_example_bytes]    then the examples (llmc/dataloader.h EvalLoader)
    checkpoint     [20240326, 3 (fp32) | 5 (bf16), maxT, V, L, NH, C, Vp]   then the parameters (train_gpt2.cu)
    tokenizer      [20240328, 2, vocab_size, eot]                      then per token a length byte + bytes

``unpack_*`` raise :class:`HeaderError` (a ValueError) with the reason; the caller names the file and the fix.

Run folder (``-o``): ``model_%08d.bin``, ``state_%08d_%05d.bin`` (one per rank), ``DONE_%08d`` (written last),
``main.log`` (llm.c's ``s:<step> trl:<loss>`` lines); the kit adds ``stdout.log`` and ``run.json``. These are the
names; reading and writing a run folder is :class:`kitctl.core.run_folder.RunFolder`'s.
"""
from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import Optional

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4

# --- token shards
SHARD_MAGIC = 20240520
SHARD_VERSION = 1
TOKEN_DTYPE = "<u2"           # numpy dtype string of a shard's tokens
TOKEN_BYTES = 2
EOT = 50256                   # GPT-2's <|endoftext|>, the first token of every document
SHARD_RE = re.compile(r"^(?P<prefix>.+)_(?P<split>val|train)_(?P<index>\d{6})\.bin$")

# --- HellaSwag eval file
HELLASWAG_MAGIC = 20240522
HELLASWAG_VERSION = 1
HELLASWAG_START = 65535       # the uint16 that opens every example

# --- model checkpoint
CHECKPOINT_MAGIC = 20240326
CHECKPOINT_VERSIONS = {3: "float32", 5: "bfloat16"}
STATE_MAGIC = 20240527        # optimizer state files (state_*.bin)

# --- llm.c's tokenizer table
TOKENIZER_MAGIC = 20240328
TOKENIZER_VERSION = 2
TOKENIZER_BIN = "gpt2_tokenizer.bin"

# --- file names
MANIFEST_JSON = "manifest.json"      # kitctl data's record of a shard folder (kitctl.core.data_manifest)
HELLASWAG_BIN = "hellaswag_val.bin"
HELLASWAG_JSONL = "hellaswag_val.jsonl"
# the binaries llm.c's Makefile builds, per precision (-DENABLE_BF16 / -DENABLE_FP32)
BINARIES = {"bf16": "train_gpt2cu", "fp32": "train_gpt2cu_fp32"}

MAIN_LOG = "main.log"
STDOUT_LOG = "stdout.log"
RUN_JSON = "run.json"
MODEL_RE = re.compile(r"^model_(\d{8})\.bin$")
STATE_RE = re.compile(r"^state_(\d{8})_(\d{5})\.bin$")
DONE_RE = re.compile(r"^DONE_(\d{8})$")
# every file llm.c and the kit write into a run folder (what an archived earlier run takes along)
RUN_FILE_GLOBS = ("DONE_*", "model_*.bin", "state_*.bin", MAIN_LOG, STDOUT_LOG, RUN_JSON)


class HeaderError(ValueError):
    """A header that is not the one expected; ``str(e)`` says why (without the file's name)."""


def _ints(raw: bytes, what: str) -> tuple[int, ...]:
    if len(raw) < HEADER_BYTES:
        raise HeaderError(f"{len(raw)} bytes, shorter than llm.c's {HEADER_BYTES}-byte {what} header")
    return struct.unpack(f"<{HEADER_INTS}i", raw[:HEADER_BYTES])


def _pack(*fields: int) -> bytes:
    return struct.pack(f"<{HEADER_INTS}i", *fields, *([0] * (HEADER_INTS - len(fields))))


# ------------------------------------------------------------------------------------------- token shards
def shard_filename(name: str, index: int) -> str:
    """``<name>_val_000000.bin`` for shard 0, ``<name>_train_%06d.bin`` for every later one."""
    if not 0 <= index < 1_000_000:
        raise ValueError(f"shard index {index} does not fit llm.c's 6 digits")
    return f"{name}_{'val' if index == 0 else 'train'}_{index:06d}.bin"


@dataclass(frozen=True)
class ShardName:
    prefix: str
    split: str         # "val" | "train"
    index: int


def parse_shard_filename(filename: str) -> Optional[ShardName]:
    """``fineweb_train_000003.bin`` -> ShardName("fineweb", "train", 3); None for anything else."""
    m = SHARD_RE.match(filename)
    return ShardName(m["prefix"], m["split"], int(m["index"])) if m else None


def shard_patterns(prefix: str) -> tuple[str, str]:
    """(val, train) globs of a dataset, as llm.c's -j / -i take them (the prefix as a literal: glob_escape)."""
    p = glob_escape(prefix)
    return f"{p}_val_*.bin", f"{p}_train_*.bin"


# glob(3)'s special characters: llm.c expands -i / -j with glob(pattern, 0, ...) (llmc/dataloader.h), so a folder
# named "g[1]" would match "g1". Each is written as a one-character bracket expression, which glob(3) and Python's
# glob both read as that character. A backslash is glob(3)'s escape but a plain character to Python's glob: the
# kit refuses it in a data folder instead of guessing (GLOB_UNSAFE).
GLOB_SPECIAL = "[*?"
GLOB_UNSAFE = "\\"


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a glob(3) pattern: ``[`` -> ``[[]``, ``*`` -> ``[*]``, ``?`` -> ``[?]``."""
    return "".join(f"[{c}]" if c in GLOB_SPECIAL else c for c in text)


def shard_globs(folder: str, prefix: str) -> tuple[str, str]:
    """(val, train) patterns for llm.c's -j / -i: ``<folder>/<prefix>_<split>_*.bin`` with the folder and the prefix
    escaped, so that they match that folder's shards and nothing else."""
    val, train = shard_patterns(prefix)
    d = glob_escape(folder)
    return f"{d}/{val}", f"{d}/{train}"


def shard_size(n_tokens: int) -> int:
    """Bytes of a shard holding ``n_tokens``."""
    return HEADER_BYTES + TOKEN_BYTES * n_tokens


def pack_shard_header(n_tokens: int) -> bytes:
    if not 0 <= n_tokens < 2**31:
        raise ValueError(f"token count {n_tokens} does not fit llm.c's int32 header")
    return _pack(SHARD_MAGIC, SHARD_VERSION, n_tokens)


def unpack_shard_header(raw: bytes) -> int:
    """The token count of a shard header; HeaderError when it is not llm.c's uint16 GPT-2 shard."""
    h = _ints(raw, "shard")
    if h[0] != SHARD_MAGIC or h[1] != SHARD_VERSION:
        raise HeaderError(f"header magic/version {h[0]}/{h[1]}, expected {SHARD_MAGIC}/{SHARD_VERSION} "
                          "(llm.c GPT-2 token shard)")
    if h[2] < 0:
        raise HeaderError(f"header says {h[2]} tokens")
    return h[2]


# ----------------------------------------------------------------------------------------------- HellaSwag
@dataclass(frozen=True)
class HellaswagHeader:
    examples: int
    longest_example_bytes: int


def pack_hellaswag_header(examples: int, longest_example_bytes: int) -> bytes:
    if not 0 < examples < 2**16 or not 0 < longest_example_bytes < 2**16:
        raise ValueError(f"{examples} examples, longest {longest_example_bytes} bytes: outside llm.c's eval format")
    return _pack(HELLASWAG_MAGIC, HELLASWAG_VERSION, examples, longest_example_bytes)


def unpack_hellaswag_header(raw: bytes) -> HellaswagHeader:
    h = _ints(raw, "eval file")
    if h[0] != HELLASWAG_MAGIC or h[1] != HELLASWAG_VERSION:
        raise HeaderError(f"bad eval header {h[0]}/{h[1]}, expected {HELLASWAG_MAGIC}/{HELLASWAG_VERSION}")
    if h[2] < 0 or h[3] < 0:
        raise HeaderError(f"bad eval header: {h[2]} examples, longest {h[3]} bytes")
    return HellaswagHeader(h[2], h[3])


# ------------------------------------------------------------------------------------------------ checkpoint
@dataclass(frozen=True)
class CheckpointHeader:
    """A model checkpoint's header: precision version and the GPT-2 dimensions."""

    version: int            # 3: fp32, 5: bf16
    max_seq_len: int
    vocab_size: int
    num_layers: int
    num_heads: int
    channels: int
    padded_vocab_size: int

    @property
    def dtype(self) -> str:
        return CHECKPOINT_VERSIONS[self.version]

    @property
    def itemsize(self) -> int:
        return 4 if self.version == 3 else 2

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each parameter tensor's shape, in file order (llm.c's ``fill_in_parameter_sizes``; matrices (out, in))."""
        Vp, T, L, C = self.padded_vocab_size, self.max_seq_len, self.num_layers, self.channels
        return {
            "wte": (Vp, C), "wpe": (T, C),
            "ln1w": (L, C), "ln1b": (L, C),
            "qkvw": (L, 3 * C, C), "qkvb": (L, 3 * C),
            "attprojw": (L, C, C), "attprojb": (L, C),
            "ln2w": (L, C), "ln2b": (L, C),
            "fcw": (L, 4 * C, C), "fcb": (L, 4 * C),
            "fcprojw": (L, C, 4 * C), "fcprojb": (L, C),
            "lnfw": (C,), "lnfb": (C,),
        }

    @property
    def num_parameters(self) -> int:
        return sum(math.prod(s) for s in self.shapes().values())

    @property
    def dims(self) -> dict[str, int]:
        """The model's dimensions (every field but the precision version)."""
        return {k: v for k, v in self.__dict__.items() if k != "version"}


def pack_checkpoint_header(h: CheckpointHeader) -> bytes:
    if h.version not in CHECKPOINT_VERSIONS:
        raise ValueError(f"checkpoint version {h.version}; llm.c writes 3 (fp32) and 5 (bf16)")
    return _pack(CHECKPOINT_MAGIC, h.version, h.max_seq_len, h.vocab_size, h.num_layers, h.num_heads, h.channels,
                 h.padded_vocab_size)


def unpack_checkpoint_header(raw: bytes) -> CheckpointHeader:
    """A checkpoint header; HeaderError names what the file is instead when it can (a shard, a state file)."""
    h = _ints(raw, "checkpoint")
    if h[0] != CHECKPOINT_MAGIC:
        what = {SHARD_MAGIC: " (a token shard, not a model)", STATE_MAGIC: " (an optimizer state file, state_*.bin)",
                HELLASWAG_MAGIC: " (a HellaSwag eval file)", TOKENIZER_MAGIC: " (llm.c's tokenizer table)"}
        raise HeaderError(f"magic {h[0]}, expected {CHECKPOINT_MAGIC}{what.get(h[0], '')}")
    if h[1] not in CHECKPOINT_VERSIONS:
        raise HeaderError(f"version {h[1]}; this kit reads 3 (fp32) and 5 (bf16), what llm.c at f1e2ace writes")
    return CheckpointHeader(*h[1:8])


# -------------------------------------------------------------------------------------------- tokenizer table
@dataclass(frozen=True)
class TokenizerHeader:
    version: int
    vocab_size: int
    eot: int


def pack_tokenizer_header(vocab_size: int, eot: int) -> bytes:
    return _pack(TOKENIZER_MAGIC, TOKENIZER_VERSION, vocab_size, eot)


def unpack_tokenizer_header(raw: bytes) -> TokenizerHeader:
    h = _ints(raw, "tokenizer")
    if h[0] != TOKENIZER_MAGIC:
        raise HeaderError(f"bad magic {h[0]} (expected {TOKENIZER_MAGIC})")
    if h[1] not in (1, 2) or h[2] <= 0:
        raise HeaderError(f"version {h[1]}, vocab size {h[2]}: not llm.c's tokenizer table")
    return TokenizerHeader(h[1], h[2], h[3] if h[1] == 2 else EOT)


# -------------------------------------------------------------------------------------------- batch rule
def grad_accum_steps(total_batch: int, micro_batch: int, seq_len: int, ranks: int) -> Optional[int]:
    """llm.c's batch rule (train_gpt2.cu asserts ``total_batch_size % (B * T * num_processes) == 0``): the
    micro-batches each rank accumulates per optimizer step, or None when -d is not a whole number of them.
    ``total_batch <= 0`` is llm.c's default -d (one micro-batch per rank): 1."""
    if total_batch <= 0:
        return 1
    per_step = micro_batch * seq_len * ranks
    return total_batch // per_step if total_batch % per_step == 0 else None


# ------------------------------------------------------------------------------------------------ run folder
def model_filename(step: int) -> str:
    return f"model_{step:08d}.bin"


def state_filename(step: int, rank: int) -> str:
    return f"state_{step:08d}_{rank:05d}.bin"


def done_filename(step: int) -> str:
    return f"DONE_{step:08d}"


def parse_model_filename(filename: str) -> Optional[int]:
    """The step of ``model_%08d.bin``; None for anything else."""
    m = MODEL_RE.match(filename)
    return int(m[1]) if m else None


def parse_state_filename(filename: str) -> Optional[tuple[int, int]]:
    """(step, rank) of ``state_%08d_%05d.bin``; None for anything else."""
    m = STATE_RE.match(filename)
    return (int(m[1]), int(m[2])) if m else None


def parse_done_filename(filename: str) -> Optional[int]:
    """The step of ``DONE_%08d``; None for anything else."""
    m = DONE_RE.match(filename)
    return int(m[1]) if m else None
