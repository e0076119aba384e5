"""What the user asked for (:class:`TrainRequest`), frozen: the planner's other input is the machine's
:class:`~kitctl.train.facts.Facts`.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

from kitctl.core.errors import ConfigError
from kitctl.core.validate import LLMC_INT_MAX
from kitctl.host.gpus import GPU

# train_gpt2cu flags the kit sets itself; a pass-through after `--` may not set them
_MANAGED = {"-i": "use --data instead", "-j": "use --data instead", "-o": "use --out or --name instead",
            "-y": "leave it out: the kit decides resume itself (use --fresh to start over)",
            "-e": "use --preset instead"}
# pass-through flags that the planner must know: they change B, T, total batch, recompute, ZeRO or the schedule
# (steps, evals, samples, checkpoints), which the plan holds as values; the launch writes each flag once
_ABSORBED = {"-b": "micro_batch", "-t": "seq_len", "-d": "total_batch", "-r": "recompute", "-x": "steps",
             "-z": "zero_stage", "-v": "val_every", "-m": "val_batches", "-s": "sample_every", "-h": "hellaswag",
             "-n": "checkpoint_every", "-nk": "checkpoints_keep"}
# the kitctl option that sets the same value as an absorbed pass-through flag (messages name both)
_OPTION_OF = {"steps": "--steps", "micro_batch": "--micro-batch", "total_batch": "--total-batch",
              "recompute": "--recompute"}


@dataclass(frozen=True)
class TrainRequest:
    """What the user asked for (CLI options). None = let the planner decide."""

    preset: str = "gpt2-124m"
    gpus: str = "all"
    micro_batch: Optional[int] = None
    recompute: Optional[int] = None
    precision: Optional[str] = None
    steps: Optional[int] = None
    total_batch: Optional[int] = None
    seq_len: Optional[int] = None
    name: Optional[str] = None
    out: Optional[Path] = None
    data: Optional[Path] = None
    runtime: str = "docker"
    binary: Optional[Path] = None
    fresh: bool = False
    no_tune: bool = False               # ignore the tune cache and never tune first
    tune_first: bool = False            # may plan a short, bounded tune before training (kitctl train, local)
    force_memory: bool = False          # --force-memory: run a B the memory model says cannot fit
    passthrough: Sequence[str] = ()     # kept as a tuple
    # set by the runner when it re-plans after an out-of-memory start
    oom_retry_from: Optional[int] = None
    # the schedule's mode: "bench" is kitctl tune's short measuring run (no eval, sampling or checkpoints)
    mode: Literal["train", "bench"] = "train"
    # llm.c settings only a pass-through sets (absorbed from it; None = the preset's)
    zero_stage: Optional[int] = None        # -z
    val_every: Optional[int] = None         # -v
    val_batches: Optional[int] = None       # -m
    sample_every: Optional[int] = None      # -s
    hellaswag: Optional[int] = None         # -h
    checkpoint_every: Optional[int] = None  # -n
    checkpoints_keep: Optional[int] = None  # -nk

    def __post_init__(self) -> None:
        object.__setattr__(self, "passthrough", tuple(self.passthrough))

    @property
    def bench(self) -> bool:
        return self.mode == "bench"


def absorb_passthrough(req: TrainRequest) -> TrainRequest:
    """Move the flags the plan holds as values (-b -t -d -r -x -z -v -m -s -h -n -nk) out of a raw pass-through
    into the request (the last of a repeated flag wins, as in llm.c); refuse flags the kit manages."""
    rest: list[str] = []
    updates: dict = {}
    args = list(req.passthrough)
    i = 0
    while i < len(args):
        flag = args[i]
        if flag in _MANAGED:
            raise ConfigError(f"pass-through {flag} is set by the kit", _MANAGED[flag])
        # train_gpt2cu reads its argv as pairs: every flag (-x or -xy) takes exactly one value
        if not (flag.startswith("-") and len(flag) in (2, 3)):
            raise ConfigError(f"pass-through {flag!r} is not a train_gpt2cu flag (-x or -xy)",
                              "write flag/value pairs after `--`, e.g. `-- -lg 100`")
        if i + 1 >= len(args):
            raise ConfigError(f"pass-through {flag} has no value (every train_gpt2cu flag takes one)",
                              f"write it as `-- {flag} VALUE`")
        value = args[i + 1]
        if re.fullmatch(r"[+-]?[0-9]+", value.strip()) and abs(int(value)) > LLMC_INT_MAX:
            option = _OPTION_OF.get(_ABSORBED.get(flag, ""))
            raise ConfigError(f"pass-through {flag} {value}: llm.c reads it into a 32-bit int (at most {LLMC_INT_MAX:,})",
                              f"pass a smaller value after `-- {flag}`" + (f" (or with {option})" if option else ""))
        if flag in _ABSORBED:
            try:
                updates[_ABSORBED[flag]] = int(value)
            except ValueError:
                raise ConfigError(f"pass-through {flag} {value!r} is not an integer", None) from None
            i += 2
            continue
        rest += [flag, value]
        i += 2
    for k, v in updates.items():
        current = getattr(req, k)
        if current is not None and current != v:
            raise ConfigError(f"pass-through {k.replace('_', '-')} {v} contradicts the option value {current}",
                              "give it once")
    return dataclasses.replace(req, passthrough=tuple(rest), **updates)


def gpu_spec(gpus: Sequence[GPU]) -> str:
    """--gpus value naming exactly these GPUs (a bare "1" would mean "the first GPU", so one index gets a comma)."""
    return ",".join(str(g.index) for g in gpus) + ("," if len(gpus) == 1 else "")
