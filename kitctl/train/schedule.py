"""Decision 3 of a plan: how many optimizer steps (-x), and when llm.c evaluates, samples and checkpoints
(-v -m -s -h -n -nk), as values the launch turns into flags.

Two modes: ``train`` (the preset's settings, each replaced by the user's pass-through value) and ``bench`` (a
short measuring run of ``kitctl tune``: no eval, sampling or checkpoints, whatever the pass-through says).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from kitctl.core.errors import ConfigError
from kitctl.core.layout import DataLayout
from kitctl.train.facts import DataInfo
from kitctl.train.presets import Preset
from kitctl.core.run_record import PlanRecord
from kitctl.train.request import TrainRequest

HELLASWAG_MIN_B = 4        # llm.c's EvalLoader packs 4 completions per example into a batch row group
BENCH_VAL_EVERY = 1_000_000_000   # "never" (-v 0 would divide by zero in llm.c)

Mode = Literal["train", "bench"]


@dataclass(frozen=True)
class Schedule:
    steps: int                          # -x
    hellaswag: int                      # -h: 1 = HellaSwag eval at each val step
    val_every: int                      # -v
    sample_every: int                   # -s (0 = never)
    checkpoint_every: int               # -n (0 = never)
    val_batches: Optional[int] = None   # -m (None: llm.c's default)
    checkpoints_keep: Optional[int] = None   # -nk (None: llm.c's default, keep every one)
    mode: Mode = "train"
    notes: tuple[str, ...] = ()


def _steps(preset: Preset, req: TrainRequest, data: DataInfo, D: int, stored: Optional[PlanRecord],
           notes: list[str]) -> int:
    """Resuming keeps the run's own steps (so its LR schedule stays) unless the request gives them."""
    n = req.steps if req.steps is not None else preset.steps
    if req.steps is None and stored is not None and stored.steps:
        n = int(stored.steps)
        notes.append(f"steps {n}: kept from the run's run.json (pass --steps N to change it)")
    if n == -1:
        n = data.train_tokens // D
        if n < 1:
            raise ConfigError(f"{data.dir} has {data.train_tokens:,} training tokens, less than one optimizer step "
                              f"of {D:,} tokens (llm.c's default of one epoch would be 0 steps)",
                              "pass --steps N (llm.c loops over the shards), or use a bigger dataset")
        notes.append(f"steps: one epoch of the train shards = {data.train_tokens:,} // {D:,} = {n}")
    elif n < 1:
        raise ConfigError(f"--steps {n}", "use a positive number of steps (or leave it to the preset)")
    return n


def _pick(asked: Optional[int], preset_value: int) -> int:
    return asked if asked is not None else preset_value


# what llm.c can run with each pass-through value: (flag, request field, smallest, largest, why)
_LIMITS = (("-v", "val_every", 1, None, "llm.c takes the step modulo -v: 0 divides by zero"),
           ("-m", "val_batches", 1, None, "the number of val batches each eval runs"),
           ("-s", "sample_every", 0, None, "0 = never"),
           ("-h", "hellaswag", 0, 1, "0 = off, 1 = on"),
           ("-n", "checkpoint_every", 0, None, "0 = never"),
           ("-nk", "checkpoints_keep", 0, None, "0 = keep every checkpoint"))


def _check(req: TrainRequest) -> None:
    """A pass-through schedule value train_gpt2cu cannot run with: exit 2 before anything starts."""
    for flag, name, lo, hi, why in _LIMITS:
        v = getattr(req, name)
        if v is not None and (v < lo or (hi is not None and v > hi)):
            span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise ConfigError(f"pass-through {flag} {v}: train_gpt2cu needs {span} ({why})",
                              f"write `-- {flag} N` with N {span}, or leave {flag} out (the preset's value)")


def choose_schedule(preset: Preset, req: TrainRequest, data: DataInfo, total_batch: int, micro_batch: int, *,
                    stored: Optional[PlanRecord], hellaswag_file: Optional[Path], data_root: Path) -> Schedule:
    _check(req)
    notes: list[str] = []
    steps = _steps(preset, req, data, total_batch, stored, notes)
    if req.mode == "bench":
        return Schedule(steps, hellaswag=0, val_every=BENCH_VAL_EVERY, sample_every=0, checkpoint_every=0,
                        val_batches=1, checkpoints_keep=req.checkpoints_keep, mode="bench")
    hellaswag = _pick(req.hellaswag, preset.hellaswag)
    if hellaswag and micro_batch < HELLASWAG_MIN_B:
        hellaswag = 0
        notes.append(f"HellaSwag off (-h 0): llm.c's eval needs B >= {HELLASWAG_MIN_B}, this run has B={micro_batch}")
    elif hellaswag and hellaswag_file is None:
        notes.append(f"HellaSwag file not found at {DataLayout(data_root).hellaswag_bin}: llm.c skips the "
                     "eval (make it with `kitctl data hellaswag`)")
    return Schedule(steps, hellaswag, val_every=_pick(req.val_every, preset.val_every),
                    sample_every=_pick(req.sample_every, preset.sample_every),
                    checkpoint_every=_pick(req.checkpoint_every, preset.checkpoint_every),
                    val_batches=req.val_batches, checkpoints_keep=req.checkpoints_keep, notes=tuple(notes))
