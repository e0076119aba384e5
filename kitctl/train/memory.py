"""GPU memory model of train_gpt2cu: how much a (model, B, T, recompute, precision, ranks) run needs.

    peak_GB = overhead_GB + state_GB + k * activations_GB(B)

``state_GB`` (parameters, gradients, AdamW m and v, FP32 master weights; m/v/master sharded over ranks with
ZeRO >= 1) and ``activations_GB`` (the activation tensors train_gpt2cu allocates for B x T) are computed from
the model's shape the way llm.c sizes its buffers; ``overhead_GB`` (CUDA context, cuBLAS/cuDNN workspaces) and
``k`` (allocator and transient slack) are fitted by least squares on the measured series in
``memory_model.yaml``. On the H200 series the fit is within ~0.2 GB of every point. Predictions for a depth,
sequence length or precision that no measured series has are labelled ``extrapolated``.

The YAML is typed (``MemoryModelFile``, ``extra="forbid"``); ``kitctl tune`` prints new series in that shape.
Pure: no GPU, no I/O except reading the YAML file.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field

from kitctl.core import resources
from kitctl.core.errors import ConfigError
from kitctl.core.records import UserData, load_model, load_yaml

MODEL_FILE = resources.package_dir() / "train" / "memory_model.yaml"
GB = 1e9
MIB = 1 << 20
VOCAB_PADDED = 50304      # GPT-2 vocab 50257 padded to a multiple of 128 (llm.c)
MAX_SEQ = 1024


@dataclass(frozen=True)
class ModelDims:
    """A GPT-2 shape as llm.c's ``dNN`` descriptors build it."""

    layers: int
    channels: int
    heads: int
    vocab_padded: int = VOCAB_PADDED
    max_seq: int = MAX_SEQ

    @property
    def params(self) -> int:
        L, C = self.layers, self.channels
        return self.vocab_padded * C + self.max_seq * C + L * (12 * C * C + 13 * C) + 2 * C

    def flops_per_token(self, T: int) -> int:
        """llm.c's MFU numerator: 6N + 6LCT."""
        return 6 * self.params + 6 * self.layers * self.channels * T


_DEPTHS = {12: (768, 12), 24: (1024, 16), 36: (1280, 20), 48: (1600, 25)}


def dims_for(descriptor: str) -> ModelDims:
    """``d12`` -> GPT-2 124M shape (llm.c's descriptor table: d12, d24, d36, d48)."""
    try:
        depth = int(descriptor.lstrip("d"))
        C, NH = _DEPTHS[depth]
    except (ValueError, KeyError):
        raise ConfigError(f"unknown model descriptor {descriptor!r}", "use one of d12, d24, d36, d48") from None
    return ModelDims(depth, C, NH)


def _dtype_bytes(precision: str) -> int:
    return 2 if precision == "bf16" else 4


def activation_bytes(d: ModelDims, B: int, T: int, recompute: int, precision: str, cudnn: bool) -> int:
    """Bytes of train_gpt2cu's activation buffers (its fill_in_activation_sizes, re-derived)."""
    L, C, NH, Vp = d.layers, d.channels, d.heads, d.vocab_padded
    BT = B * T
    x = _dtype_bytes(precision)       # floatX
    f = 4                             # float tensors (layernorm stats, losses, cuDNN softmax stats)
    n = 0
    n += BT * C * x                                   # encoded
    n += (L * BT * C * x if recompute < 2 else 0) * 2  # ln1, ln2
    n += L * BT * f * 4                               # ln1/ln2 mean + rstd
    n += L * BT * C * x * 3                           # atty, residual2, residual3
    n += (L * B * NH * T * f) if cudnn else (L * B * NH * T * T * x)   # att (stats with cuDNN, full without)
    n += L * BT * 4 * C * x                           # fch
    n += (L * BT * 4 * C if recompute < 1 else BT * 4 * C) * x       # fch_gelu
    n += BT * C * x + BT * f * 3                      # lnf, lnf mean/rstd, losses
    n += L * BT * 3 * C * x                           # qkvr
    n += BT * max(3 * C, NH * T, Vp) * x              # output (logits)
    n += BT * 4 * C * x + BT * C * x                  # scratch_bt4c, scratch_btc
    return n


def state_bytes(d: ModelDims, ranks: int, zero_stage: int, precision: str) -> int:
    """Parameters + gradients (floatX, whole) + AdamW m, v and FP32 master weights (sharded with ZeRO >= 1)."""
    N = d.params
    x = _dtype_bytes(precision)
    shard = ranks if zero_stage >= 1 else 1
    return N * x * 2 + (N * 4 * 3) // shard


class SeriesData(UserData):
    """One measured series as written in memory_model.yaml (and printed by ``kitctl tune``)."""

    device: str
    source: str = ""
    precision: Literal["bf16", "fp32"] = "bf16"
    cudnn: bool = True
    descriptor: str
    seq_len: int
    ranks: int = 1
    zero_stage: int = 0
    recompute: int
    command: str = ""
    points: dict[int, float] = Field(default_factory=dict)       # {B: peak GB}
    points_mib: dict[int, int] = Field(default_factory=dict)     # {B: peak MiB} (what nvidia-smi prints)


class MemoryModelFile(UserData):
    series: list[SeriesData] = Field(default_factory=list)
    headroom_frac: float = 0.10
    headroom_gb: float = 1.0
    nccl_overhead_gb: float = 0.5


@dataclass(frozen=True)
class Series:
    device: str
    precision: str
    cudnn: bool
    descriptor: str
    seq_len: int
    ranks: int
    zero_stage: int
    recompute: int
    points: tuple[tuple[int, float], ...]   # (B, peak GB)
    command: str = ""

    @classmethod
    def of(cls, d: SeriesData) -> Series:
        pts = sorted([(b, gb) for b, gb in d.points.items()] + [(b, mib * MIB / GB) for b, mib in d.points_mib.items()])
        return cls(d.device, d.precision, d.cudnn, d.descriptor, d.seq_len, d.ranks, d.zero_stage, d.recompute,
                   tuple(pts), d.command)

    def same_config(self, descriptor: str, T: int, recompute: int, precision: str) -> bool:
        return (self.descriptor, self.seq_len, self.recompute, self.precision) == (descriptor, T, recompute, precision)


@dataclass(frozen=True)
class Prediction:
    peak_gb: float
    need_gb: float          # with headroom
    basis: str              # "measured" (fit within a measured series' B range) | "extrapolated (...)"

    def fits(self, memory_gb: float) -> bool:
        return self.need_gb <= memory_gb

    @property
    def need_mib(self) -> int:
        """The need as nvidia-smi counts memory (MiB): the unit every GPU memory figure of the kit is shown in."""
        return round(self.need_gb * GB / MIB)

    @property
    def peak_mib(self) -> int:
        return round(self.peak_gb * GB / MIB)


@dataclass(frozen=True)
class MemoryModel:
    overhead_gb: float
    k: float
    headroom_frac: float
    headroom_gb: float
    nccl_overhead_gb: float
    series: tuple[Series, ...]

    @classmethod
    def of(cls, data: MemoryModelFile) -> MemoryModel:
        series = [Series.of(d) for d in data.series]
        overhead, k = fit(series, data.nccl_overhead_gb)
        return cls(overhead, k, data.headroom_frac, data.headroom_gb, data.nccl_overhead_gb, tuple(series))

    @classmethod
    def from_dict(cls, data: Any, source: str = "memory model") -> MemoryModel:
        """From parsed YAML/JSON (e.g. ``{"series": tune_record.memory_series}``); ConfigError naming bad keys."""
        return cls.of(load_model(MemoryModelFile, data, source))

    @classmethod
    def load(cls, path: Optional[Path] = None) -> MemoryModel:
        return cls.of(load_yaml(MemoryModelFile, path or MODEL_FILE, "memory model"))

    def predict(self, descriptor: str, B: int, T: int, recompute: int, precision: str, ranks: int,
                zero_stage: int, cudnn: bool) -> Prediction:
        d = dims_for(descriptor)
        peak = (self.overhead_gb + state_bytes(d, ranks, zero_stage, precision) / GB
                + self.k * activation_bytes(d, B, T, recompute, precision, cudnn) / GB
                + (self.nccl_overhead_gb if ranks > 1 else 0.0))
        need = peak * (1 + self.headroom_frac) + self.headroom_gb
        basis = self._basis(descriptor, B, T, recompute, precision, cudnn)
        if ranks > 1 and not any(s.ranks > 1 for s in self.series):
            basis += f" + {self.nccl_overhead_gb} GB NCCL estimate (no ranks > 1 series yet)"
        return Prediction(round(peak, 2), round(need, 2), basis)

    def _basis(self, descriptor: str, B: int, T: int, recompute: int, precision: str, cudnn: bool) -> str:
        same = [s for s in self.series if s.same_config(descriptor, T, recompute, precision) and s.cudnn == cudnn]
        if any(s.points and s.points[0][0] <= B <= s.points[-1][0] for s in same):
            return "measured"
        if same:
            return "extrapolated (B outside the measured range)"
        have = sorted({f"{s.descriptor} T={s.seq_len} {s.precision}{'' if s.cudnn or s.precision != 'bf16' else ' no cuDNN'}"
                       f" -r {s.recompute}" for s in self.series})
        return "extrapolated (from " + ", ".join(have) + ")" if have else "extrapolated (no measurements)"


def fit(series: list[Series], nccl_overhead_gb: float = 0.0) -> tuple[float, float]:
    """Least squares of (peak - state - NCCL) = overhead + k * activations over all points; (1.0 GB, 1.0) if none.

    A series with ranks > 1 also holds NCCL's per-rank buffers (``nccl_overhead_gb``), taken out before the fit.
    """
    xs, ys = [], []
    for s in series:
        d = dims_for(s.descriptor)
        st = state_bytes(d, s.ranks, s.zero_stage, s.precision) / GB + (nccl_overhead_gb if s.ranks > 1 else 0.0)
        for B, peak in s.points:
            xs.append(activation_bytes(d, B, s.seq_len, s.recompute, s.precision, s.cudnn) / GB)
            ys.append(peak - st)
    if len(xs) < 2:
        return (ys[0] - xs[0], 1.0) if xs else (1.0, 1.0)
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return my - mx, 1.0
    k = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - k * mx, k


@functools.lru_cache(maxsize=1)
def default_model() -> MemoryModel:
    return MemoryModel.load()
