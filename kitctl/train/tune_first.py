"""Decision 5 of a plan: measure a few configs first, when the GPUs have no throughput measurements.

A GPU model with no row in ``throughput.yaml`` gets estimates scaled from another GPU; ``kitctl train`` (local
launcher, not --no-tune, no tune cache, B and -r not both given, not resuming) then runs a short ``kitctl tune``
of the best-ranked configs that fit, bounded to :data:`BUDGET_FRAC` of the run's forecast time, caches it and
plans again from the measurement. A run too short for even two configs inside the bound skips it (and says so).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from kitctl.core.progress import format_duration
from kitctl.train.batch import BatchChoice, Candidate

BUDGET_FRAC = 0.02          # of the planned run's forecast time
MAX_CONFIGS = 4             # the best-ranked configs that fit
STEPS, WARMUP = 14, 4       # per config, as the validated `kitctl tune --steps 14 --warmup 4` (docs/validation.md §3)
MIN_STEPS, MIN_WARMUP = 8, 3
# start-up of one measuring launch (CUDA context, cuBLAS/cuDNN init, allocation, data loader): 2x H200 tune of
# 8 configs x 14 steps took 103 s, 58 s of it in steps (docs/validation.md section 3): ~6 s a launch
LAUNCH_OVERHEAD_S = 6.0


@dataclass(frozen=True)
class TuneFirst:
    configs: tuple[tuple[int, int], ...]     # (B, recompute), best-ranked first
    steps: int
    warmup: int
    cost_s: Optional[float]                  # forecast of the tune (None: no absolute estimate)
    budget_s: Optional[float]                # BUDGET_FRAC of the run's forecast
    forecast_s: Optional[float]              # the planned run at the picked config's estimate
    bound: str                               # how it was bounded, for the plan

    def describe(self) -> str:
        cfgs = ", ".join(f"B={b} -r {r}" for b, r in self.configs)
        return f"{len(self.configs)} configs x {self.steps} steps ({self.warmup} warm-up): {cfgs}; {self.bound}"


def _cost(c: Candidate, steps: int, total_batch: int) -> Optional[float]:
    tok = c.estimate.tok_s if c.estimate else None
    return LAUNCH_OVERHEAD_S + steps * total_batch / tok if tok else None


def choose_tune_first(batch: BatchChoice, unmeasured: list[str], *, run_steps: int, total_batch: int, wanted: bool,
                      no_tune: bool, runtime_known: bool) -> tuple[Optional[TuneFirst], Optional[str]]:
    """Whether to tune first, and a note saying why (not), for a plan whose B/-r came from the throughput table
    on GPUs without measurements (``unmeasured``). ``wanted``: `kitctl train`, local, not resuming."""
    if not unmeasured or batch.source != "table":
        return None, None
    names = ", ".join(unmeasured)
    if no_tune:
        return None, (f"no throughput measurements for {names}: --no-tune, so B and -r come from estimates scaled "
                      "from another GPU")
    if not wanted:
        return None, (f"no throughput measurements for {names}: B and -r come from estimates scaled from another "
                      "GPU or quoted from a published figure; `kitctl tune` on them measures")
    if not runtime_known:
        return None, (f"no throughput measurements for {names}, and no image id / native binary to key a tune "
                      "cache: build it first (kitctl build), then a short tune runs first")
    return _bounded(batch, run_steps, total_batch, names)


def _bounded(batch: BatchChoice, run_steps: int, total_batch: int, names: str) -> tuple[Optional[TuneFirst], str]:
    """The bounded tune: the best-ranked configs that fit within BUDGET_FRAC of the run's forecast."""
    cands = list(batch.ranked[:MAX_CONFIGS])
    if len(cands) < 2:
        return None, f"no throughput measurements for {names}, but only one config fits: nothing to tune"
    est = batch.estimate.tok_s if batch.estimate else None
    if est:
        forecast = run_steps * total_batch / est
        budget = BUDGET_FRAC * forecast
        for n in range(len(cands), 1, -1):       # more configs first, then more steps each
            for steps, warmup in ((STEPS, WARMUP), (MIN_STEPS, MIN_WARMUP)):
                cost = sum(_cost(c, steps, total_batch) or 0.0 for c in cands[:n])
                if cost <= budget:
                    bound = (f"~{format_duration(cost)}, within {BUDGET_FRAC:.0%} of the run's ~"
                             f"{format_duration(forecast)} forecast ({format_duration(budget)})")
                    return (TuneFirst(tuple((c.micro_batch, c.recompute) for c in cands[:n]), steps, warmup, cost,
                                      budget, forecast, bound),
                            f"no throughput measurements for {names}: `kitctl train` measures the best-ranked "
                            "configs first (kitctl tune, cached), then plans from the measurement; --no-tune skips it")
        two = sum(_cost(c, MIN_STEPS, total_batch) or 0.0 for c in cands[:2])
        return None, (f"no throughput measurements for {names}, but this run is too short to tune first: "
                      f"{BUDGET_FRAC:.0%} of its ~{format_duration(forecast)} forecast is "
                      f"{format_duration(budget)}, two configs take ~{format_duration(two)}; the estimates are "
                      "scaled from another GPU (run `kitctl tune` to measure)")
    # no absolute estimate (a GPU without a published peak): bound the tune's steps by the run's instead
    for n in range(len(cands), 1, -1):
        for steps, warmup in ((STEPS, WARMUP), (MIN_STEPS, MIN_WARMUP)):
            if n * steps <= BUDGET_FRAC * run_steps:
                return (TuneFirst(tuple((c.micro_batch, c.recompute) for c in cands[:n]), steps, warmup, None, None,
                                  None, f"{n * steps} tune steps, within {BUDGET_FRAC:.0%} of the run's {run_steps} "
                                        "(no time forecast: no published peak for these GPUs; launch start-up "
                                        "not counted)"),
                        f"no throughput measurements for {names}: `kitctl train` measures the best-ranked configs "
                        "first (kitctl tune, cached); --no-tune skips it")
    return None, (f"no throughput measurements for {names}, but this run ({run_steps} steps) is too short to tune "
                  f"first within {BUDGET_FRAC:.0%} of its steps; run `kitctl tune` to measure")
