"""Test helpers, written from llm.c's own code and independent of kitctl.model: a checkpoint writer in llm.c's
format (train_gpt2.cu gpt2_write_to_checkpoint: 256 x int32 header, then the 16 tensors of
fill_in_parameter_sizes in order) and a numpy GPT-2 forward over llm.c's (out, in) weights (train_gpt2.c's
layernorm / matmul / attention / gelu / residual forward passes)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

ORDER = ("wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
         "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb")


def shapes(Vp, T, L, C):
    return {"wte": (Vp, C), "wpe": (T, C), "ln1w": (L, C), "ln1b": (L, C), "qkvw": (L, 3 * C, C),
            "qkvb": (L, 3 * C), "attprojw": (L, C, C), "attprojb": (L, C), "ln2w": (L, C), "ln2b": (L, C),
            "fcw": (L, 4 * C, C), "fcb": (L, 4 * C), "fcprojw": (L, C, 4 * C), "fcprojb": (L, C),
            "lnfw": (C,), "lnfb": (C,)}


def random_params(L=2, C=64, H=4, T=32, V=50257, Vp=50304, seed=0, scale=0.2):
    """Random float32 weights; layernorm weights around 1. The padded vocab rows get random values too
    (an export must drop them, so they must not be zero)."""
    rng = np.random.default_rng(seed)
    p = {}
    for k, s in shapes(Vp, T, L, C).items():
        a = rng.standard_normal(s).astype(np.float32) * scale
        if k in ("ln1w", "ln2w", "lnfw"):
            a = 1.0 + 0.1 * a
        p[k] = a
    return p, dict(T=T, V=V, L=L, H=H, C=C, Vp=Vp)


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits, round to nearest even (what the GPU's __float2bfloat16 does)."""
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def bf16_round(p: dict) -> dict:
    return {k: from_bf16_bits(to_bf16_bits(v)) for k, v in p.items()}


def write_checkpoint(path: Path, params: dict, dims: dict, version: int = 3) -> Path:
    header = np.zeros(256, dtype="<i4")
    header[:8] = [20240326, version, dims["T"], dims["V"], dims["L"], dims["H"], dims["C"], dims["Vp"]]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for k in ORDER:
            a = params[k]
            f.write((a.astype("<f4") if version == 3 else to_bf16_bits(a).astype("<u2")).tobytes())
    return path


def _ln(x, w, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + 1e-5) * w + b


def forward(params: dict, dims: dict, tokens) -> np.ndarray:
    """Logits (t, V) for one sequence, in float64, straight from llm.c's tensors (matmul: out = inp @ W.T + b)."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    L, C, H, V = dims["L"], dims["C"], dims["H"], dims["V"]
    t = len(tokens)
    hs = C // H
    x = p["wte"][tokens] + p["wpe"][:t]
    for layer in range(L):
        h = _ln(x, p["ln1w"][layer], p["ln1b"][layer])
        qkv = h @ p["qkvw"][layer].T + p["qkvb"][layer]
        q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
        y = np.zeros((t, C))
        for head in range(H):
            s = slice(head * hs, (head + 1) * hs)
            att = q[:, s] @ k[:, s].T / math.sqrt(hs)
            att[np.triu_indices(t, 1)] = -np.inf
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            y[:, s] = att @ v[:, s]
        x = x + y @ p["attprojw"][layer].T + p["attprojb"][layer]
        h = _ln(x, p["ln2w"][layer], p["ln2b"][layer])
        h = h @ p["fcw"][layer].T + p["fcb"][layer]
        h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
        x = x + h @ p["fcprojw"][layer].T + p["fcprojb"][layer]
    x = _ln(x, p["lnfw"], p["lnfb"])
    return (x @ p["wte"].T)[:, :V]        # llm.c computes Vp logits; only the first V are real
