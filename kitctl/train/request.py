"""The planner's inputs: what the user asked for (:class:`TrainRequest`) and what the machine is (:class:`Facts`).

Both are frozen. ``kitctl.train.gather`` reads the facts of this machine; tests write them by hand.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from kitctl.core.errors import KitError
from kitctl.core.validate import LLMC_INT_MAX
from kitctl.host.gpus import GPU
from kitctl.train.facts import DataInfo, HostFacts, OutState
from kitctl.train.tune_cache import CachedTune

# train_gpt2cu flags the kit sets itself; a pass-through after `--` may not set them
_MANAGED = {"-i": "use --data instead", "-j": "use --data instead", "-o": "use --out or --name instead",
            "-y": "leave it out: the kit decides resume itself (use --fresh to start over)",
            "-e": "use --preset instead"}
# pass-through flags that the planner must know (they change B, T, total batch, recompute or steps)
_ABSORBED = {"-b": "micro_batch", "-t": "seq_len", "-d": "total_batch", "-r": "recompute", "-x": "steps"}


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
    passthrough: Sequence[str] = ()     # kept as a tuple
    # set by the runner when it re-plans after an out-of-memory start
    oom_retry_from: Optional[int] = None
    # a short measuring run (kitctl tune passes its flags: no eval, sampling or checkpoints)
    bench_flags: Sequence[str] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "passthrough", tuple(self.passthrough))
        object.__setattr__(self, "bench_flags", tuple(self.bench_flags))

    @property
    def bench(self) -> bool:
        return bool(self.bench_flags)


@dataclass(frozen=True)
class Facts:
    """Everything the planner knows about the machine (read by kitctl.train.gather)."""

    gpus: list[GPU]
    data: DataInfo
    out: OutState
    data_root: Path
    host: HostFacts = field(default_factory=HostFacts)
    image: str = "llmc-kit:latest"
    native_bin_dir: Optional[Path] = None        # <data_root>/native/bin
    nccl_env: dict = field(default_factory=dict)  # from kit.yaml's nccl section
    hellaswag: Optional[Path] = None             # <data_root>/hellaswag/hellaswag_val.bin when present
    tokenizer: Optional[Path] = None             # <data_root>/gpt2_tokenizer.bin when present
    runtime_ids: dict = field(default_factory=dict)   # precision -> image id / binary sha256 (tune cache key)
    tune_records: tuple[CachedTune, ...] = ()    # <data_root>/tune/*.json
    run_token: str = "0"                         # makes the container name unique


def absorb_passthrough(req: TrainRequest) -> TrainRequest:
    """Move -b/-t/-d/-r/-x of a raw pass-through into the request; refuse flags the kit manages."""
    rest: list[str] = []
    updates: dict = {}
    args = list(req.passthrough)
    i = 0
    while i < len(args):
        flag = args[i]
        if flag in _MANAGED:
            raise KitError(f"pass-through {flag} is set by the kit", _MANAGED[flag], exit_code=2)
        # train_gpt2cu reads its argv as pairs: every flag (-x or -xy) takes exactly one value
        if not (flag.startswith("-") and len(flag) in (2, 3)):
            raise KitError(f"pass-through {flag!r} is not a train_gpt2cu flag (-x or -xy)",
                           "write flag/value pairs after `--`, e.g. `-- -lg 100`", exit_code=2)
        if i + 1 >= len(args):
            raise KitError(f"pass-through {flag} has no value (every train_gpt2cu flag takes one)",
                           f"write it as `-- {flag} VALUE`", exit_code=2)
        if flag in _ABSORBED:
            try:
                updates[_ABSORBED[flag]] = int(args[i + 1])
            except ValueError:
                raise KitError(f"pass-through {flag} {args[i + 1]!r} is not an integer", None, exit_code=2) from None
            i += 2
            continue
        value = args[i + 1]
        if re.fullmatch(r"[+-]?[0-9]+", value.strip()) and abs(int(value)) > LLMC_INT_MAX:
            raise KitError(f"pass-through {flag} {value}: llm.c reads it into a 32-bit int (at most {LLMC_INT_MAX:,})",
                           f"pass a smaller value after `-- {flag}`", exit_code=2)
        rest += [flag, value]
        i += 2
    for k, v in updates.items():
        current = getattr(req, k)
        if current is not None and current != v:
            raise KitError(f"pass-through {k.replace('_', '-')} {v} contradicts the option value {current}",
                           "give it once", exit_code=2)
    return dataclasses.replace(req, passthrough=tuple(rest), **updates)


def gpu_spec(gpus: list[GPU]) -> str:
    """--gpus value naming exactly these GPUs (a bare "1" would mean "the first GPU", so one index gets a comma)."""
    return ",".join(str(g.index) for g in gpus) + ("," if len(gpus) == 1 else "")
