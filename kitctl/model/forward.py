"""A numpy GPT-2 forward pass over an export folder (HF ``GPT2LMHeadModel`` layout), with a KV cache.

What ``kitctl sample`` runs when transformers is not installed. It computes in float32 (bf16 weights widened
exactly) and follows HF's GPT-2: ``Conv1D`` (``x @ W + b``), pre-LayerNorm blocks (eps 1e-5), causal attention
scaled by 1/sqrt(head size), ``gelu_new`` (tanh GELU), final LayerNorm, logits tied to ``wte``.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from kitctl.core.errors import ConfigError
from kitctl.model.checkpoint import bf16_to_f32

_ST_DTYPES: dict[str, np.dtype] = {"F32": np.dtype("<f4"), "BF16": np.dtype("<u2")}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as float32 arrays (F32 memory-mapped, BF16 widened).

    The file format is an 8-byte little-endian header length, a JSON header (name -> dtype, shape, byte
    offsets), then the data. Read here directly because numpy (and so ``safetensors.numpy``) has no bf16."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if n > 100 << 20:
                raise ValueError(f"header of {n} bytes")
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as e:
        raise ConfigError(f"{path} is not a readable safetensors file ({e})",
                          "re-export the model with `kitctl export-model ... --force`") from None
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = _ST_DTYPES.get(info["dtype"])
        if dt is None:
            raise ConfigError(f"{path}: tensor {name} is {info['dtype']}; this reader handles F32 and BF16",
                              "re-export with `kitctl export-model --dtype float32`")
        start, end = info["data_offsets"]
        a = np.memmap(path, dtype=dt, mode="r", offset=base + start, shape=((end - start) // dt.itemsize,))
        a = a.reshape(info["shape"])
        out[name] = bf16_to_f32(a) if info["dtype"] == "BF16" else a
    return out


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu_new(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


@dataclass
class NumpyGPT2:
    """GPT-2 in numpy. ``forward(tokens, cache)`` -> (logits of each new position, the extended cache)."""

    w: dict[str, np.ndarray]
    n_layer: int
    n_head: int
    n_positions: int
    vocab_size: int

    @classmethod
    def from_export(cls, folder: Path) -> NumpyGPT2:
        folder = Path(folder)
        try:
            cfg = json.loads((folder / "config.json").read_text())
            dims = (int(cfg["n_layer"]), int(cfg["n_head"]), int(cfg["n_positions"]), int(cfg["vocab_size"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{folder}/config.json is not a GPT-2 config ({e})",
                              "re-export the model with `kitctl export-model ... --force`") from None
        w = read_safetensors(folder / "model.safetensors")
        w = {k.removeprefix("transformer."): v for k, v in w.items()}
        return cls(w, *dims)

    def forward(self, tokens: np.ndarray, cache: Optional[list] = None) -> tuple[np.ndarray, list]:
        tokens = np.asarray(tokens, dtype=np.int64)
        past = 0 if not cache else cache[0][0].shape[1]
        t = len(tokens)
        if past + t > self.n_positions:
            raise ConfigError(f"{past + t} tokens exceed the model's context of {self.n_positions}",
                              "use a shorter --prompt or fewer tokens (-n)")
        w = self.w
        x = w["wte.weight"][tokens] + w["wpe.weight"][past:past + t]
        C = x.shape[-1]
        H, hs = self.n_head, C // self.n_head
        mask = np.triu(np.full((t, past + t), -np.inf, dtype=np.float32), k=past + 1)
        new_cache = []
        for i in range(self.n_layer):
            p = f"h.{i}."
            h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
            qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
            q, k, v = (a.reshape(t, H, hs).transpose(1, 0, 2) for a in np.split(qkv, 3, axis=-1))
            if cache:
                k = np.concatenate([cache[i][0], k], axis=1)
                v = np.concatenate([cache[i][1], v], axis=1)
            new_cache.append((k, v))
            att = q @ k.transpose(0, 2, 1) / math.sqrt(hs) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            y = (att @ v).transpose(1, 0, 2).reshape(t, C)
            x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
            h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
            h = gelu_new(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
            x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"])
        return x @ w["wte.weight"].T, new_cache

    def generate(self, prompt: list[int], n: int, *, top_k: int = 0, temperature: float = 1.0,
                 seed: int = 1337) -> list[int]:
        """``n`` new tokens after ``prompt``: greedy when ``top_k`` is 0, else top-k sampling (numpy RNG)."""
        rng = np.random.default_rng(seed)
        out: list[int] = []
        logits, cache = self.forward(np.asarray(prompt))
        for j in range(n):
            last = logits[-1].astype(np.float64)
            if not np.isfinite(last).all():
                raise FloatingPointError(f"its outputs are not finite at generated token {j + 1} (NaN or infinite "
                                         "logits)")
            if top_k <= 0:
                tok = int(np.argmax(last))
            else:
                k = min(top_k, last.size)
                idx = np.argpartition(-last, k - 1)[:k]
                z = last[idx] / max(temperature, 1e-6)
                p = np.exp(z - z.max())
                tok = int(idx[rng.choice(k, p=p / p.sum())])
            out.append(tok)
            if j + 1 < n:
                logits, cache = self.forward(np.asarray([tok]), cache)
        return out
