"""``kitctl tune``: measure tokens/s of micro-batch x recompute on the GPUs themselves, cache the result.

tokens/s is not monotonic in B (1x H200, d12: B=16 -r 0 538K tok/s, B=32 -r 1 472K, B=64 -r 1 481K), so the
biggest B that fits is not the fastest. Tune runs train_gpt2cu for a few optimizer steps per configuration on
the same GPUs, data and binary as the training run (same ranks, through mpirun for ranks > 1, so the
all-reduce is in the measurement), with eval, sampling and checkpoints off and a throw-away output folder:

    -x STEPS -v 1000000000 -m 1 -s 0 -h 0 -n 0 -y 0      (-v 0 would divide by zero in llm.c)

tokens/s = total_batch / median(step ms) over the steps after the warm-up ones. A configuration that runs
out of memory is recorded as ``oom``. The record is cached in ``<data_root>/tune/*.json`` per GPU model, rank
count, driver, runtime (image id or native binary sha256), preset, precision, T and total batch; the planner
uses the fastest ``ok`` entry that is allowed for the run, else the memory model.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Optional

from kitctl.gpus import GPU

DEFAULT_STEPS = 20
DEFAULT_WARMUP = 5
BENCH_FLAGS = ["-v", "1000000000", "-m", "1", "-s", "0", "-h", "0", "-n", "0"]


def cache_key(gpus: list[GPU], precision: str, preset: str, runtime_id: str, T: int, total_batch: int) -> dict:
    return {"gpus": sorted({g.name for g in gpus}), "ranks": len(gpus), "driver": sorted({g.driver for g in gpus}),
            "runtime_id": runtime_id, "preset": preset, "precision": precision, "seq_len": T,
            "total_batch": total_batch}


def cache_path(tune_dir: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    gpu = "+".join(key["gpus"]).replace("NVIDIA ", "").replace(" ", "_").replace("/", "_")
    return tune_dir / f"{key['preset']}-{gpu}-x{key['ranks']}-{key['precision']}-{digest}.json"


def load_records(tune_dir: Path) -> tuple[dict, ...]:
    out = []
    if tune_dir.is_dir():
        for p in sorted(tune_dir.glob("*.json")):
            try:
                rec = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(rec, dict) and "key" in rec:
                rec["_path"] = str(p)
                out.append(rec)
    return tuple(out)


def write_record(tune_dir: Path, key: dict, results: list[dict], steps: int, warmup: int,
                 extra: Optional[dict] = None) -> Path:
    tune_dir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in results if r.get("status") == "ok"]
    rec = {"key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": steps,
           "warmup": warmup, "results": results,
           "best": max(ok, key=lambda r: r["tok_s"]) if ok else None, **(extra or {})}
    path = cache_path(tune_dir, key)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=2) + "\n")
    tmp.replace(path)
    return path


def sweep_configs(allowed_b: list[int], fits, recomputes=(0, 1), min_b: int = 8) -> list[tuple[int, int]]:
    """(B, recompute) pairs to measure, largest B first: every allowed B >= min_b whose predicted peak fits
    the GPU (``fits(B, r)`` without the planner's headroom: a measurement settles the borderline ones); if
    none >= min_b fits, the largest that does."""
    out = []
    for r in recomputes:
        cands = [b for b in allowed_b if fits(b, r)]
        big = [b for b in cands if b >= min_b]
        out += [(b, r) for b in (big or cands[:1])]
    return sorted(out, key=lambda br: (-br[0], br[1]))
