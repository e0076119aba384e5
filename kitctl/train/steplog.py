"""train_gpt2cu's stdout as ``kitctl train`` watches it: out-of-memory markers, throughput, and the script below.

The step line itself (``step %4d/%d | loss ... | %.2f ms | %.1f%% bf16 MFU | %.0f tok/s``) is parsed by the run
folder's one parser of it, :func:`kitctl.core.run_folder.parse_step` (observe reads stdout.log with it too). The step
is 1-based (step + 1), ``ms`` is that optimizer step's time, ``tok/s`` a bias-corrected EMA that counts step 1
(cuBLAS/cuDNN warm-up) as a normal sample, and MFU is -100% when llm.c's table lacks the GPU. For throughput the kit
uses total_batch / ms per step instead of the EMA, with warm-up steps left out.
"""
from __future__ import annotations

import argparse
import statistics
from typing import Optional

from kitctl.core.run_folder import Step, parse_step

OOM_MARKERS = ("out of memory", "cudaErrorMemoryAllocation", "CUBLAS_STATUS_ALLOC_FAILED",
               "CUDNN_STATUS_ALLOC_FAILED", "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE")
MANAGED_FALLBACK = "Fell back to cudaMallocManaged"


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
