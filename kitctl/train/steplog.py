"""Parse train_gpt2cu's stdout (llm.c f1e2ace, train_gpt2.cu) line by line: steps, evals, failures.

The step line is printed by rank 0 as

    step %4d/%d | loss %7.6f (%+.2fz)| norm %6.4f (%+.2fz)| lr %.2e | %.2f ms | %.1f%% bf16 MFU | %.0f tok/s

where the step is 1-based (step + 1), ``ms`` is that optimizer step's time, ``tok/s`` a bias-corrected EMA
that counts step 1 (cuBLAS/cuDNN warm-up) as a normal sample, and MFU is -100% when llm.c's table lacks the GPU.
For throughput the kit uses total_batch / ms per step instead of the EMA, with warm-up steps left out.
"""
from __future__ import annotations

import argparse
import re
import statistics
from dataclasses import dataclass
from typing import Optional

_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf|-nan|-inf)"
STEP_RE = re.compile(
    rf"^step\s+(?P<step>\d+)/(?P<total>\d+) \| loss (?P<loss>{_NUM}) \((?P<lossz>{_NUM})z\)\| "
    rf"norm (?P<norm>{_NUM}) \((?P<normz>{_NUM})z\)\| lr (?P<lr>{_NUM}) \| (?P<ms>{_NUM}) ms \| "
    rf"(?P<mfu>{_NUM})% bf16 MFU \| (?P<toks>{_NUM}) tok/s")
VAL_RE = re.compile(rf"^val loss (?P<val>{_NUM})")
HELLA_RE = re.compile(rf"^HellaSwag: (?P<ok>\d+)/(?P<n>\d+) = (?P<acc>{_NUM})")
CKPT_RE = re.compile(r"^Writing checkpoint at step (?P<step>\d+)")
OOM_MARKERS = ("out of memory", "cudaErrorMemoryAllocation", "CUBLAS_STATUS_ALLOC_FAILED",
               "CUDNN_STATUS_ALLOC_FAILED", "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE")
MANAGED_FALLBACK = "Fell back to cudaMallocManaged"


@dataclass(frozen=True)
class Step:
    step: int          # 1-based, as printed
    total: int
    loss: float
    norm: float
    lr: float
    ms: float
    mfu: Optional[float]   # percent; None when llm.c does not know the GPU (it prints -100%)
    tok_s: float


def parse_step(line: str) -> Optional[Step]:
    m = STEP_RE.match(line.strip())
    if not m:
        return None
    mfu = float(m["mfu"])
    return Step(int(m["step"]), int(m["total"]), float(m["loss"]), float(m["norm"]), float(m["lr"]),
                float(m["ms"]), None if mfu < 0 else mfu, float(m["toks"]))


def is_oom(line: str) -> bool:
    return any(mark in line for mark in OOM_MARKERS)


def throughput(steps: list[Step], total_batch: int, warmup: int = 3) -> Optional[float]:
    """Tokens/s from the median step time, leaving out the first ``warmup`` steps of this launch (a resumed
    run warms up again, whatever its step number); None if no step is left."""
    timed = [s.ms for s in steps[warmup:] if s.ms > 0]
    if not timed:
        return None
    return total_batch / (statistics.median(timed) / 1000.0)


def fmt_mfu(mfu: Optional[float]) -> str:
    return "N/A" if mfu is None else f"{mfu:.1f}%"


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m kitctl.train.steplog LOG [--total-batch D] [--warmup W]``: tokens/s of a train_gpt2cu log, the
    same way kitctl measures it (to compare a bare mpirun run with a kit-launched one). One launch per log:
    the first W step lines are warm-up."""
    ap = argparse.ArgumentParser(prog="python -m kitctl.train.steplog")
    ap.add_argument("log")
    ap.add_argument("--total-batch", type=int, default=524288)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args(argv)
    with open(a.log, errors="replace") as f:
        steps = [s for s in (parse_step(line) for line in f) if s is not None]
    tok = throughput(steps, a.total_batch, a.warmup)
    timed = [s.ms for s in steps[a.warmup:]]
    print(f"steps {len(steps)} (timed {len(timed)}), median {statistics.median(timed) if timed else float('nan'):.2f} "
          f"ms/step, {tok or float('nan'):,.0f} tok/s, last EMA {steps[-1].tok_s if steps else float('nan'):,.0f} tok/s")
    return 0 if tok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
