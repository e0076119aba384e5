"""Read llm.c's model checkpoint ``model_%08d.bin`` with numpy (no PyTorch).

The format, as llm.c at f1e2ace writes it (``train_gpt2.cu``: ``gpt2_write_to_checkpoint`` writes the header and
then ``params_memory`` in one piece; ``fill_in_parameter_sizes`` gives the order and sizes):

* a header of 256 little-endian int32: [0] magic 20240326, [1] version (3: fp32, 5: bf16), [2] max_seq_len T,
  [3] vocab_size V (50257), [4] num_layers L, [5] num_heads, [6] channels C, [7] padded_vocab_size Vp (50304);
* then the 16 parameter tensors back to back, in the order of ``CheckpointHeader.shapes``, each ``float32`` (version 3) or raw bf16
  (version 5: the upper 16 bits of a float32, layernorms included). Matrices are (out, in), row-major.

Nothing else follows: a file longer or shorter than the header says is refused, as is a wrong magic or version.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import open_regular

from kitctl.core.llmc_files import (
    CHECKPOINT_MAGIC as MAGIC, CHECKPOINT_VERSIONS as VERSIONS, CheckpointHeader, HEADER_BYTES, MODEL_RE, SHARD_MAGIC,
    STATE_MAGIC, HeaderError, unpack_checkpoint_header)

@dataclass(frozen=True)
class Checkpoint:
    """An opened checkpoint: the header and each parameter as a read-only array view of the file.

    ``params`` hold float32 (version 3) or uint16 raw bf16 bits (version 5), in llm.c's shapes (padded vocab
    rows included)."""

    path: Path
    version: int
    config: CheckpointHeader
    params: dict[str, np.ndarray]

    @property
    def dtype(self) -> str:
        return VERSIONS[self.version]

    @property
    def step(self) -> Optional[int]:
        m = MODEL_RE.match(self.path.name)
        return int(m[1]) if m else None

    def float32(self, name: str) -> np.ndarray:
        """One parameter as float32 (bf16 widened exactly)."""
        a = self.params[name]
        return bf16_to_f32(a) if self.version == 5 else np.asarray(a, dtype=np.float32)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Raw bf16 (uint16 / int16) -> float32: bf16 is the top half of a float32, so this is exact."""
    return (np.asarray(bits).view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> raw bf16 bits (uint16), rounding to nearest even like PyTorch's ``.to(torch.bfloat16)``;
    NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | np.uint32(0x0040)).astype(np.uint16)
    return rounded


def _bad(path: Path, what: str, fix: str) -> KitError:
    return ConfigError(f"{path} is not a usable llm.c model checkpoint: {what}", fix)


FIX_FILE = ("pass a model_NNNNNNNN.bin that train_gpt2cu wrote (in the run's output folder, -o), or a run folder; "
            "list them with `ls <run>/model_*.bin`")


def read_header(path: Path) -> tuple[int, CheckpointHeader]:
    """(version, config) of a checkpoint; KitError (exit 2) for a file that is not one."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a checkpoint file", FIX_FILE)
    try:         # a device, FIFO or socket: exit 2 naming it (never a hang on a read that does not end)
        with open_regular(path, "checkpoint", FIX_FILE) as f:
            head = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"no checkpoint at {path}", FIX_FILE) from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}", "check the path and its permissions") from None
    if len(head) < HEADER_BYTES:
        raise _bad(path, f"{len(head)} bytes, shorter than the {HEADER_BYTES}-byte header", FIX_FILE)
    try:
        h = unpack_checkpoint_header(head)
    except HeaderError as e:
        magic = int.from_bytes(head[:4], "little", signed=True)
        hint = FIX_FILE
        if magic == SHARD_MAGIC:
            hint = f"that is a token shard (magic {SHARD_MAGIC}), not a model; " + FIX_FILE
        elif magic == STATE_MAGIC:
            hint = "that is an optimizer state file (state_*.bin); pass the model_*.bin beside it"
        elif magic == MAGIC:
            hint = ("re-write the checkpoint with train_gpt2cu (PRECISION=BF16 or FP32); fp16 checkpoints are not "
                    "written by llm.c")
        raise _bad(path, str(e), hint) from None
    version, cfg = h.version, h
    if min(cfg.dims.values()) <= 0 or cfg.padded_vocab_size < cfg.vocab_size \
            or cfg.channels % cfg.num_heads:
        raise _bad(path, f"header values do not describe a GPT-2 ({cfg})", FIX_FILE)
    return version, cfg


def open_checkpoint(path: Path) -> Checkpoint:
    """Open and check a checkpoint (header + exact size); parameters are memory-mapped, not read."""
    path = Path(path)
    version, cfg = read_header(path)
    itemsize = 4 if version == 3 else 2
    want = HEADER_BYTES + cfg.num_parameters * itemsize
    size = path.stat().st_size
    if size != want:
        what = "truncated" if size < want else "longer than its header says"
        raise _bad(path, f"{what}: {size:,} bytes, the header ({cfg.num_layers} layers, C={cfg.channels}, "
                         f"Vp={cfg.padded_vocab_size}, T={cfg.max_seq_len}, {VERSIONS[version]}) needs {want:,}",
                   "an interrupted copy or a checkpoint still being written? copy it again, or pick a step whose "
                   "DONE_NNNNNNNN file exists (--step)")
    dtype = np.dtype("<f4") if version == 3 else np.dtype("<u2")
    flat = np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(cfg.num_parameters,))
    params, off = {}, 0
    for name, shape in cfg.shapes().items():
        n = int(np.prod(shape))
        params[name] = flat[off:off + n].reshape(shape)
        off += n
    return Checkpoint(path, version, cfg, params)


GPT2_VOCAB = 50257          # the GPT-2 BPE the export writes beside the weights (encoder.json: 50257 tokens)
MAX_CONTEXT = 1 << 16       # llm.c's positional table; a header claiming more is not a model it wrote
FINITE_CHUNK = 1 << 22      # values checked at a time (16 MiB of fp32): memory stays flat for any model size


def check_fits_tokenizer(ck: Checkpoint) -> None:
    """The header's vocab and context against the GPT-2 tokenizer an export writes beside the weights: the vocab
    must be GPT-2's 50257 tokens (else token ids and rows disagree: wrong text, or ids past the table), the context a
    size llm.c trains. KitError (exit 2) naming the checkpoint otherwise."""
    c = ck.config
    if c.vocab_size != GPT2_VOCAB:
        raise _bad(ck.path, f"its vocab is {c.vocab_size:,} tokens, the GPT-2 tokenizer written beside the export has "
                            f"{GPT2_VOCAB:,}", "export-model writes GPT-2's tokenizer: only checkpoints of a GPT-2 "
                            "vocab (llm.c's -e d12 / gpt2 models, vocab 50257) can be exported")
    if not 1 <= c.max_seq_len <= MAX_CONTEXT:
        raise _bad(ck.path, f"its context (max_seq_len) is {c.max_seq_len:,}, more than the {MAX_CONTEXT:,} a GPT-2 "
                            "export can describe", FIX_FILE)


def check_finite(ck: Checkpoint) -> None:
    """Every weight is a finite number: a NaN or Inf (a diverged run, a damaged copy) is refused before anything is
    written, naming the tensor, the count and an earlier step to try. Read in chunks from the memory map."""
    bad: list[str] = []
    for name, a in ck.params.items():
        flat = a.reshape(-1)
        n = 0
        for i in range(0, flat.size, FINITE_CHUNK):
            part = np.asarray(flat[i:i + FINITE_CHUNK])
            if ck.version == 5:       # bf16: exponent bits all ones = Inf or NaN
                n += int(np.count_nonzero((part.view(np.uint16) & 0x7F80) == 0x7F80))
            else:
                n += int(part.size - np.count_nonzero(np.isfinite(part)))
        if n:
            bad.append(f"{name}: {n:,}")
    if bad:
        step = f" (step {ck.step})" if ck.step is not None else ""
        raise _bad(ck.path, f"weights that are NaN or Inf{step}: {', '.join(bad[:6])}"
                   + (f" and {len(bad) - 6} more tensors" if len(bad) > 6 else ""),
                   "the run diverged or the file is damaged: export an earlier checkpoint (--step N; "
                   "`ls <run>/model_*.bin` lists them), or lower the learning rate and train again")
