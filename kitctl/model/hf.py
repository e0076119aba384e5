"""llm.c checkpoint -> HuggingFace ``GPT2LMHeadModel`` files, with numpy only (no PyTorch).

The mapping is the one llm.c's own ``dev/eval/export_hf.py`` (f1e2ace) uses:

* ``transformer.wte.weight`` = wte without its padded rows (Vp -> V = 50257); ``lm_head`` is tied to it, so it is
  not stored (``tie_word_embeddings: true``), as ``save_pretrained`` does;
* HF's GPT-2 uses ``Conv1D`` (``x @ W + b``, W is (in, out)) where llm.c stores (out, in): the four matrices of a
  block (qkvw, attprojw, fcw, fcprojw) are transposed; the q, k, v thirds of qkvw are already in HF's order;
* ``activation_function: gelu_new`` (llm.c's tanh GELU), ``layer_norm_epsilon: 1e-5``, ``n_positions`` = the
  checkpoint's max_seq_len T.

Tensors are written with the ``safetensors`` package (``serialize_file``: float32 or bfloat16 straight from numpy
buffers; numpy has no bf16 type, so bf16 goes in as its raw 16-bit words). The tokenizer files are the kit's own
GPT-2 BPE assets: ``vocab.bpe`` is HF's ``merges.txt``, ``encoder.json`` HF's ``vocab.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
from safetensors import TensorSpec, serialize_file

from kitctl.core.errors import ConfigError
from kitctl.core.llmc_files import EOT, CheckpointHeader
from kitctl.data import tokenizer as gpt2_bpe
from kitctl.model.checkpoint import Checkpoint, bf16_to_f32, f32_to_bf16

DTYPES = ("float32", "bfloat16")
# llm.c name -> HF name inside transformer.h.{i}., and whether it is a (out, in) matrix to transpose
BLOCK_MAP = (
    ("ln1w", "ln_1.weight", False), ("ln1b", "ln_1.bias", False),
    ("qkvw", "attn.c_attn.weight", True), ("qkvb", "attn.c_attn.bias", False),
    ("attprojw", "attn.c_proj.weight", True), ("attprojb", "attn.c_proj.bias", False),
    ("ln2w", "ln_2.weight", False), ("ln2b", "ln_2.bias", False),
    ("fcw", "mlp.c_fc.weight", True), ("fcb", "mlp.c_fc.bias", False),
    ("fcprojw", "mlp.c_proj.weight", True), ("fcprojb", "mlp.c_proj.bias", False),
)
TOKENIZER_COPIES = {"vocab.json": "encoder.json", "merges.txt": "vocab.bpe"}


def hf_tensors(ck: Checkpoint, dtype: str) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, contiguous array) in file order: float32 arrays, or uint16 raw bf16 words for ``bfloat16``."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype}: not one of {', '.join(DTYPES)}", "use float32 or bfloat16")
    V = ck.config.vocab_size

    def conv(a: np.ndarray) -> np.ndarray:
        if ck.version == 5:        # raw bf16 words
            out = a if dtype == "bfloat16" else bf16_to_f32(a)
        else:
            out = f32_to_bf16(a) if dtype == "bfloat16" else a
        return np.ascontiguousarray(out)

    yield "transformer.wte.weight", conv(ck.params["wte"][:V])
    yield "transformer.wpe.weight", conv(ck.params["wpe"])
    for i in range(ck.config.num_layers):
        for src, hf, transpose in BLOCK_MAP:
            a = ck.params[src][i]
            yield f"transformer.h.{i}.{hf}", conv(a.T if transpose else a)
    yield "transformer.ln_f.weight", conv(ck.params["lnfw"])
    yield "transformer.ln_f.bias", conv(ck.params["lnfb"])


def write_safetensors(ck: Checkpoint, path: Path, dtype: str) -> int:
    """Write ``model.safetensors``; returns the number of tensors. Holds one converted copy of the weights."""
    arrays = dict(hf_tensors(ck, dtype))       # keep every buffer alive while serialize_file reads the pointers
    st = "bfloat16" if dtype == "bfloat16" else "float32"
    specs = {k: TensorSpec(dtype=st, shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes)
             for k, a in arrays.items()}
    serialize_file(specs, str(path), metadata={"format": "pt"})
    return len(specs)


def export_bytes(cfg: CheckpointHeader, dtype: str) -> int:
    """Size of ``model.safetensors`` (tensor data; the header is a few KB)."""
    C, L = cfg.channels, cfg.num_layers
    n = (cfg.vocab_size + cfg.max_seq_len) * C + L * (12 * C * C + 13 * C) + 2 * C
    return n * (2 if dtype == "bfloat16" else 4)


def config_json(cfg: CheckpointHeader, dtype: str) -> dict:
    """``config.json`` of a ``GPT2LMHeadModel`` with the checkpoint's shape (GPT2Config's defaults otherwise)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.max_seq_len,
        "n_ctx": cfg.max_seq_len,
        "n_embd": cfg.channels,
        "n_layer": cfg.num_layers,
        "n_head": cfg.num_heads,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "summary_type": "cls_index", "summary_use_proj": True, "summary_activation": None,
        "summary_proj_to_labels": True, "summary_first_dropout": 0.1,
        "use_cache": True,
        "bos_token_id": EOT,
        "eos_token_id": EOT,
        "tie_word_embeddings": True,
        "torch_dtype": dtype,
    }


def generation_config_json() -> dict:
    return {"bos_token_id": EOT, "eos_token_id": EOT, "pad_token_id": EOT}


def tokenizer_jsons(cfg: CheckpointHeader) -> dict[str, dict]:
    """``tokenizer_config.json`` + ``special_tokens_map.json`` for ``GPT2Tokenizer`` (no BOS added, like GPT-2)."""
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    return {
        "tokenizer_config.json": {"tokenizer_class": "GPT2Tokenizer", "model_max_length": cfg.max_seq_len,
                                  "add_prefix_space": False, "add_bos_token": False, "errors": "replace",
                                  "clean_up_tokenization_spaces": False, **special},
        "special_tokens_map.json": special,
    }


def tokenizer_sources() -> dict[str, Path]:
    """HF file name -> the kit's verified GPT-2 BPE asset it is a copy of."""
    src = gpt2_bpe.EMBEDDED_DIR
    gpt2_bpe.check_tokenizer_dir(src)          # sha256 of both files: exactly GPT-2's
    return {hf: src / ours for hf, ours in TOKENIZER_COPIES.items()}


def model_card(ck: Checkpoint, dtype: str, step_note: str) -> str:
    c = ck.config
    return f"""---
library_name: transformers
tags: [gpt2, llm.c, llmc-kit]
---
# GPT-2 trained with llm.c

Exported by `kitctl export-model` (llmc-kit) from llm.c checkpoint `{ck.path.name}`{step_note}.

- {c.num_layers} layers, {c.num_heads} heads, {c.channels} channels, context {c.max_seq_len}, vocab {c.vocab_size}
- weights: {dtype} (checkpoint: {ck.dtype})
- tokenizer: GPT-2 BPE

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO")
tok = AutoTokenizer.from_pretrained("PATH_OR_REPO")
```
"""


def dumps(obj: dict) -> str:
    return json.dumps(obj, indent=2) + "\n"
