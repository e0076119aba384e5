"""``costs.yaml``, typed: what the reproduce planner assumes where the kit has no measurement for a box."""
from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field

from kitctl.core.records import UserData, load_yaml

COSTS_FILE = Path(__file__).with_name("costs.yaml")


class _BuildCost(UserData):
    seconds: tuple[float, float]
    download_bytes: int
    disk_bytes: int
    source: str
    pull_bytes: int = 0          # the runtime image pulled from a registry instead (`kitctl build --push` elsewhere)


class _DataCost(UserData):
    tokenize_tok_s_per_cpu: tuple[float, float]
    # issue 31: the fast encoder's per-CPU rate, and the cap of the one main process (reading parquet, writing
    # and hashing shards) that holds for every encoder once the CPUs are many
    fast_tok_s_per_cpu: tuple[float, float] = (10_000_000, 30_000_000)
    tokenize_tok_s_max: tuple[float, float] = (50_000_000, 120_000_000)
    download_efficiency: tuple[float, float]
    shard_header_bytes: int
    pretokenized_shard_bytes: int
    source: str


class _HellaswagCost(UserData):
    examples: int
    jsonl_bytes: int
    bin_bytes_per_example: int
    seconds: tuple[float, float]


class _TuneCost(UserData):
    share: float = Field(gt=0, le=1)
    steps: tuple[int, int]
    warmup: tuple[int, int]
    startup_seconds: float


class _TokSRange(UserData):
    measured: tuple[float, float]
    bf16: tuple[float, float]
    fp32: tuple[float, float]


class _TrainCost(UserData):
    startup_seconds: tuple[float, float]
    eval_forward_speedup: tuple[float, float]
    val_batches: int
    checkpoint_write_bytes_per_s: float
    log_bytes: int
    tok_s_range: _TokSRange


class _ReportCost(UserData):
    seconds: tuple[float, float]
    disk_bytes: int


class Costs(UserData):
    preflight_seconds: tuple[float, float]
    bundle_load_seconds: tuple[float, float] = (20, 180)
    build: dict[str, _BuildCost]
    data: _DataCost
    hellaswag: _HellaswagCost
    tune: _TuneCost
    train: _TrainCost
    report: _ReportCost


@functools.lru_cache(maxsize=1)
def costs() -> Costs:
    return load_yaml(Costs, COSTS_FILE, "reproduce cost table")
