"""The tune cache: ``<data_root>/tune/*.json``, one typed :class:`TuneRecord` per (GPUs, runtime, preset, T, -d).

``kitctl tune`` (and the short tune ``kitctl train`` runs first on unmeasured GPUs) writes it; the planner reads
it back and uses the fastest ``ok`` result the run allows. The key names what the measurement depends on: GPU
model(s), rank count, driver, runtime (image id or native binary sha256), preset, precision, T and total batch.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, Field

from kitctl.core.errors import KitError
from kitctl.core.records import Record
from kitctl.host.gpus import GPU
from kitctl.train.memory import SeriesData


class TuneKey(BaseModel):
    gpus: list[str]            # sorted distinct GPU names
    ranks: int
    driver: list[str]
    runtime_id: str
    preset: str
    precision: str
    seq_len: int
    total_batch: int


class TuneResult(BaseModel):
    micro_batch: int
    recompute: int
    status: Literal["ok", "oom", "failed"]
    tok_s: Optional[int] = None
    ms_median: Optional[float] = None
    steps: Optional[int] = None
    rc: Optional[int] = None
    tail: list[str] = Field(default_factory=list)
    peak_mib: Optional[int] = None


class TuneRecord(Record):
    SCHEMA = 1
    KIND = "tune cache record"
    key: TuneKey
    created: str = ""
    steps: int = 0
    warmup: int = 0
    results: list[TuneResult] = Field(default_factory=list)
    best: Optional[TuneResult] = None
    gpu_indices: list[int] = Field(default_factory=list)
    full: bool = False
    auto: bool = False                 # made by `kitctl train`'s short tune (bounded), not `kitctl tune`
    memory_series: list[SeriesData] = Field(default_factory=list)

    def ok(self) -> list[TuneResult]:
        return [r for r in self.results if r.status == "ok" and r.tok_s]


@dataclass(frozen=True)
class CachedTune:
    path: Path
    record: TuneRecord


def cache_key(gpus: list[GPU], precision: str, preset: str, runtime_id: str, T: int, total_batch: int) -> TuneKey:
    return TuneKey(gpus=sorted({g.name for g in gpus}), ranks=len(gpus), driver=sorted({g.driver for g in gpus}),
                   runtime_id=runtime_id, preset=preset, precision=precision, seq_len=T, total_batch=total_batch)


def cache_path(tune_dir: Path, key: TuneKey) -> Path:
    digest = hashlib.sha256(json.dumps(key.model_dump(), sort_keys=True).encode()).hexdigest()[:12]
    gpu = "+".join(key.gpus).replace("NVIDIA ", "").replace(" ", "_").replace("/", "_")
    return tune_dir / f"{key.preset}-{gpu}-x{key.ranks}-{key.precision}-{digest}.json"


def load_records(tune_dir: Path) -> tuple[CachedTune, ...]:
    """Every readable record in ``tune_dir`` (a damaged or newer-kit file is skipped: it is only a cache)."""
    out = []
    if tune_dir.is_dir():
        for p in sorted(tune_dir.glob("*.json")):
            try:
                out.append(CachedTune(p, TuneRecord.read(p)))
            except KitError:
                continue
    return tuple(out)


def find(records: tuple[CachedTune, ...], key: TuneKey) -> Optional[CachedTune]:
    return next((c for c in records if c.record.key == key), None)


def write_record(tune_dir: Path, key: TuneKey, results: list[TuneResult], steps: int, warmup: int,
                 **extra: object) -> CachedTune:
    tune_dir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in results if r.status == "ok" and r.tok_s]
    rec = TuneRecord(key=key, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), steps=steps,
                     warmup=warmup, results=results, best=max(ok, key=lambda r: r.tok_s or 0) if ok else None,
                     **extra)   # type: ignore[arg-type]
    path = rec.write(cache_path(tune_dir, key))
    return CachedTune(path, rec)
