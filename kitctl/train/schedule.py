"""Decision 4 of a plan: how many optimizer steps (-x), and which evals run (-h)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kitctl.core.errors import KitError
from kitctl.core.layout import DataLayout
from kitctl.train.facts import DataInfo
from kitctl.train.presets import Preset
from kitctl.train.record import PlanRecord

HELLASWAG_MIN_B = 4        # llm.c's EvalLoader packs 4 completions per example into a batch row group


@dataclass(frozen=True)
class Schedule:
    steps: int
    hellaswag: int
    notes: tuple[str, ...] = ()


def choose_schedule(preset: Preset, data: DataInfo, total_batch: int, micro_batch: int, *, steps: Optional[int],
                    stored: Optional[PlanRecord], bench: bool, hellaswag_file: Optional[Path], data_root: Path
                    ) -> Schedule:
    """Resuming keeps the run's own steps (so its LR schedule stays) unless ``steps`` is given."""
    notes = []
    D = total_batch
    n = steps if steps is not None else preset.steps
    if steps is None and stored is not None and stored.steps:
        n = int(stored.steps)
        notes.append(f"steps {n}: kept from the run's run.json (pass --steps N to change it)")
    if n == -1:
        n = data.train_tokens // D
        if n < 1:
            raise KitError(f"{data.dir} has {data.train_tokens:,} training tokens, less than one optimizer step "
                           f"of {D:,} tokens (llm.c's default of one epoch would be 0 steps)",
                           "pass --steps N (llm.c loops over the shards), or use a bigger dataset", exit_code=2)
        notes.append(f"steps: one epoch of the train shards = {data.train_tokens:,} // {D:,} = {n}")
    elif n < 1:
        raise KitError(f"--steps {n}", "use a positive number of steps (or leave it to the preset)", exit_code=2)
    hellaswag = 0 if bench else preset.hellaswag
    if hellaswag and micro_batch < HELLASWAG_MIN_B:
        hellaswag = 0
        notes.append(f"HellaSwag off (-h 0): llm.c's eval needs B >= {HELLASWAG_MIN_B}, this run has B={micro_batch}")
    elif hellaswag and hellaswag_file is None:
        notes.append(f"HellaSwag file not found at {DataLayout(data_root).hellaswag_bin}: llm.c skips the "
                     "eval (make it with `kitctl data hellaswag`)")
    return Schedule(n, hellaswag, tuple(notes))
