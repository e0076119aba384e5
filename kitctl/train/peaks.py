"""Published peak throughput per GPU model (``gpu_peaks.yaml``, typed shipped data).

Used to scale measured tokens/s (``throughput.yaml``) from the GPU they were measured on to another one, and to
say whether llm.c's MFU table knows the GPU (else llm.c prints -100% MFU; the kit shows N/A).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

from pydantic import ConfigDict

from kitctl.core import resources
from kitctl.core.records import UserData, load_yaml
from kitctl.host.gpus import GPU

PEAKS_FILE = resources.package_dir() / "train" / "gpu_peaks.yaml"


class Peak(UserData):
    """One GPU model: dense TFLOPS (no sparsity) per number format; None = not supported."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    match: tuple[str, ...]               # substrings of nvidia-smi's name (longest match wins)
    fp32: float                          # CUDA cores
    tf32: Optional[float] = None         # TF32 tensor cores (llm.c's FP32 build on sm_80+)
    bf16: Optional[float] = None         # BF16 tensor cores, FP32 accumulate (llm.c's BF16 build)
    llmc_mfu: bool = False               # the name is in llm.c's llmc/mfu.h table at f1e2ace
    source: str = ""


class PeaksFile(UserData):
    gpus: list[Peak]


@functools.lru_cache(maxsize=4)
def load_peaks(path: Path = PEAKS_FILE) -> tuple[tuple[str, Peak], ...]:
    """(match substring, peak) pairs, longest substring first."""
    data = load_yaml(PeaksFile, path, "GPU peaks file")
    pairs = [(m, p) for p in data.gpus for m in p.match]
    return tuple(sorted(pairs, key=lambda mp: -len(mp[0])))


def peak_for(gpu_name: str) -> Optional[Peak]:
    for m, p in load_peaks():
        if m.lower() in gpu_name.lower():
            return p
    return None


def model_name(gpu: GPU) -> Optional[str]:
    """The gpu_peaks.yaml name of this GPU's model (what throughput.yaml rows refer to), None if unknown."""
    p = peak_for(gpu.name)
    return p.name if p else None


def peak_named(name: str) -> Optional[Peak]:
    return next((p for _, p in load_peaks() if p.name == name), None)


def build_tflops(peak: Peak, precision: str, compute_cap: int) -> Optional[float]:
    """The peak the given llm.c build runs on: BF16 tensor for bf16; TF32 tensor on sm_80+ else FP32 for fp32."""
    if precision == "bf16":
        return peak.bf16
    return peak.tf32 if (compute_cap >= 80 and peak.tf32) else peak.fp32


def peak_tflops(gpu: GPU, precision: str) -> Optional[float]:
    p = peak_for(gpu.name)
    return None if p is None else build_tflops(p, precision, gpu.compute_cap)


def knows_mfu(gpu: GPU) -> bool:
    p = peak_for(gpu.name)
    return bool(p and p.llmc_mfu)
