"""Measured tokens/s of train_gpt2cu (``throughput.yaml``) and the estimate for any planned configuration.

Without a tune cache the planner ranks every (B, recompute) that fits memory by :meth:`ThroughputTable.estimate`
and takes the fastest; the plan's "estimated tokens/s" is the estimate of the picked one. The rules (the
reference series, interpolation over B, a recompute the series lacks, scaling to another GPU model / depth / T /
rank count) are documented in the YAML's header. Every config of one plan shares the reference series and the
scale factors, so their ranking is the measured shape (``Estimate.score``) whatever the scaling.

Pure: no GPU, no I/O except reading the YAML file.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator

from kitctl.core import resources
from kitctl.core.errors import ConfigError
from kitctl.core.records import UserData, load_yaml
from kitctl.host.gpus import GPU
from kitctl.train.memory import dims_for
from kitctl.train.peaks import build_tflops, model_name, peak_named, peak_tflops

TABLE_FILE = resources.package_dir() / "train" / "throughput.yaml"


class ThroughputSeries(UserData):
    gpu: str                               # a gpu_peaks.yaml name
    kind: Literal["measured", "quoted"] = "measured"   # quoted: a published figure the kit has not measured
    compute_cap: int
    device: str
    source: str
    precision: Literal["bf16", "fp32"]
    cudnn: bool
    descriptor: str
    seq_len: int
    total_batch: Optional[int] = None      # None: -d = B x T x ranks
    ranks: int = Field(ge=1)
    tok_s: dict[int, dict[int, float]]     # {recompute: {B: tokens/s of the whole job}}

    @field_validator("tok_s")
    @classmethod
    def _points(cls, v: dict[int, dict[int, float]]) -> dict[int, dict[int, float]]:
        if not v:
            raise ValueError("no measurements")
        for r, pts in v.items():
            if r not in (0, 1, 2):
                raise ValueError(f"recompute {r}: llm.c's -r is 0, 1 or 2")
            if not pts or any(b < 1 or t <= 0 for b, t in pts.items()):
                raise ValueError(f"recompute {r}: every B and tokens/s must be positive")
        return v

    @property
    def label(self) -> str:
        return f"{self.ranks}x {self.gpu} {self.precision} {self.descriptor} T={self.seq_len}"

    @property
    def short_source(self) -> str:
        short = self.source.split(" (")[0].split(":")[0]
        return f"quoted: {short}" if self.kind == "quoted" else short


class ThroughputFile(UserData):
    series: list[ThroughputSeries]
    multi_rank_efficiency: float = Field(gt=0, le=1)
    recompute_tie: float = Field(0.0, ge=0, lt=0.5)


@dataclass(frozen=True)
class Estimate:
    tok_s: Optional[float]   # the whole job; None when a GPU has no published peak to scale by
    score: float             # per-rank rate on the reference GPU: ranks the configs of one plan
    quality: int             # 2: a measured B, 1: between measured Bs / derived -r, 0: outside the measured Bs
    measured: bool           # this very (GPU model, depth, T, ranks, B, -r) is in the table
    basis: str               # how the number was made, for the plan


def _curve(points: dict[int, float], micro: int) -> tuple[float, int]:
    """Tokens/s at B: measured, log-linear between measured Bs, or the nearest end outside them."""
    if micro in points:
        return points[micro], 2
    bs = sorted(points)
    if micro < bs[0]:
        return points[bs[0]], 0
    if micro > bs[-1]:
        return points[bs[-1]], 0
    lo = max(b for b in bs if b < micro)
    hi = min(b for b in bs if b > micro)
    t = (math.log2(micro) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
    return points[lo] + t * (points[hi] - points[lo]), 1


def _flops(descriptor: str, T: int) -> int:
    return dims_for(descriptor).flops_per_token(T)


class ThroughputTable:
    def __init__(self, data: ThroughputFile):
        self.series = tuple(data.series)
        self.efficiency = data.multi_rank_efficiency
        self.recompute_tie = data.recompute_tie

    def _eff(self, ranks: int) -> float:
        return 1.0 if ranks <= 1 else self.efficiency

    def unmeasured(self, gpus: list[GPU], precision: str) -> list[str]:
        """Names of the GPUs whose model has no measured series of this precision (their estimates are scaled
        from another GPU, or come from a quoted figure)."""
        have = {s.gpu for s in self.series if s.precision == precision and s.kind == "measured"}
        return sorted({g.name for g in gpus if model_name(g) not in have})

    def reference(self, gpus: list[GPU], precision: str, descriptor: str, T: int) -> Optional[ThroughputSeries]:
        """The series the estimate scales from. BF16 series without cuDNN are not references (they hold a point
        or two: the shape over B and -r comes from a full cuDNN series), only the ratio in :meth:`cudnn_ratio`."""
        models = {model_name(g) for g in gpus}
        n = len(gpus)
        cands = [s for s in self.series if s.precision == precision and (s.cudnn or precision != "bf16")]
        if not cands:
            return None

        def pref(s: ThroughputSeries) -> tuple:
            return (models == {s.gpu}, s.gpu in models, s.descriptor == descriptor, s.seq_len == T,
                    s.kind == "measured", -abs(math.log(s.ranks) - math.log(max(n, 1))))
        return max(cands, key=pref)

    def _rate(self, s: ThroughputSeries, B: int, r: int) -> tuple[float, int, str]:
        if r in s.tok_s:
            v, q = _curve(s.tok_s[r], B)
            return v, q, ""
        have = sorted(s.tok_s, key=lambda x: (abs(x - r), x))
        donors = [d for d in self.series if r in d.tok_s and any(h in d.tok_s for h in have)]
        if not donors:
            v, q = _curve(s.tok_s[have[0]], B)
            return v, 0, f"; -r {r} assumed as fast as -r {have[0]} (nothing measured -r {r})"
        d = max(donors, key=lambda d: (d.precision == s.precision, d.gpu == s.gpu, d.descriptor == s.descriptor))
        h = next(h for h in have if h in d.tok_s)
        ratio = _curve(d.tok_s[r], B)[0] / _curve(d.tok_s[h], B)[0]
        v, q = _curve(s.tok_s[h], B)
        return v * ratio, min(q, 1), f"; -r {r} = -r {h} x {ratio:.3f} (as measured on {d.label})"

    def cudnn_ratio(self, gpus: list[GPU]) -> Optional[tuple[float, str]]:
        """Tokens/s of a BF16 build without cuDNN over one with, from the points measured both ways on one setup
        (same GPU model, depth, T and ranks; a setup of these GPUs' model first), and where it was measured."""
        models = {model_name(g) for g in gpus}
        pairs = []
        for nc in self.series:
            if nc.precision != "bf16" or nc.cudnn:
                continue
            for c in self.series:
                if not (c.precision == "bf16" and c.cudnn and (c.gpu, c.descriptor, c.seq_len, c.ranks)
                        == (nc.gpu, nc.descriptor, nc.seq_len, nc.ranks)):
                    continue
                pts = [(r, b, nc.tok_s[r][b] / c.tok_s[r][b]) for r in nc.tok_s for b in nc.tok_s[r]
                       if b in c.tok_s.get(r, {})]
                if pts:
                    where = ", ".join(f"B={b} -r {r}" for r, b, _ in pts)
                    pairs.append((nc.gpu in models, sum(x for *_, x in pts) / len(pts), f"{nc.label} {where}"))
        if not pairs:
            return None
        _, ratio, where = max(pairs, key=lambda p: p[0])
        return ratio, where

    def estimate(self, gpus: list[GPU], precision: str, descriptor: str, T: int, B: int, r: int,
                 cudnn: bool = True) -> Optional[Estimate]:
        """Tokens/s of (B, -r) on ``gpus``; ``cudnn`` False: the BF16 binary has no cuDNN attention (scaled by
        the measured ratio, :meth:`cudnn_ratio`)."""
        s = self.reference(gpus, precision, descriptor, T)
        if s is None or not gpus:
            return None
        v, q, r_note = self._rate(s, B, r)
        if precision == "bf16" and not cudnn and s.cudnn:
            got = self.cudnn_ratio(gpus)
            if got is None:
                r_note += "; no cuDNN in this build: nothing measured without it, estimated as the cuDNN build"
                q = 0
            else:
                v *= got[0]
                r_note += f"; x {got[0]:.3f} without cuDNN (as measured on {got[1]})"
        n = len(gpus)
        per_rank = v / s.ranks / self._eff(s.ranks)
        bs = sorted(s.tok_s.get(r) or next(iter(s.tok_s.values())))
        how = {2: "measured", 1: "between measured Bs", 0: f"outside the measured B={bs[0]}..{bs[-1]}"}[q]
        parts = [f"{s.ranks}x {s.gpu} B={B} -r {r}: {v:,.0f} tok/s ({how}{r_note}; {s.short_source})"]
        ref_peak = peak_named(s.gpu)
        ratios = []
        for g in gpus:
            if model_name(g) == s.gpu:
                ratios.append((1.0, g.name))
                continue
            mine = peak_tflops(g, precision)
            theirs = build_tflops(ref_peak, precision, s.compute_cap) if ref_peak else None
            ratios.append((mine / theirs if mine and theirs else None, g.name))   # type: ignore[arg-type]
        known = [x for x in ratios if x[0] is not None]
        gpu_ratio = min(known)[0] if len(known) == len(ratios) else None
        if gpu_ratio is not None and gpu_ratio != 1.0:
            slow = min(known)[1]
            parts.append(f"x {gpu_ratio:.4f} ({slow} / {s.gpu} {precision} peak, gpu_peaks.yaml"
                         + ("; ranks run in lock-step at the slowest GPU" if len(set(r[1] for r in ratios)) > 1
                            else "") + ")")
        elif gpu_ratio is None:
            missing = sorted({name for x, name in ratios if x is None})
            parts.append(f"no published peak for {', '.join(missing)}: no absolute estimate")
        flops = _flops(s.descriptor, s.seq_len) / _flops(descriptor, T)
        if flops != 1.0:
            parts.append(f"x {flops:.3f} (flops per token {s.descriptor} T={s.seq_len} / {descriptor} T={T})")
        if n != s.ranks:
            parts.append(f"per rank x {n} rank(s)" + (f" x {self.efficiency} multi-rank efficiency" if n > 1 else ""))
        tok = per_rank * gpu_ratio * flops * n * self._eff(n) if gpu_ratio is not None else None
        measured = (s.kind == "measured" and q == 2 and not r_note and gpu_ratio == 1.0 and flops == 1.0 and n == s.ranks
                    and {model_name(g) for g in gpus} == {s.gpu})
        return Estimate(tok, per_rank, q, measured, " ".join(parts))


def parse_table(data: ThroughputFile, source: str) -> ThroughputTable:
    for s in data.series:
        if peak_named(s.gpu) is None:
            raise ConfigError(f"{source}: series gpu {s.gpu!r} is not a name in gpu_peaks.yaml",
                              "use the `name` of the GPU's gpu_peaks.yaml entry (add one if it is missing)")
        dims_for(s.descriptor)
    return ThroughputTable(data)


@functools.lru_cache(maxsize=4)
def load_table(path: Path = TABLE_FILE) -> ThroughputTable:
    return parse_table(load_yaml(ThroughputFile, path, "throughput table"), str(path))
