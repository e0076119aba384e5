"""The reference plan every quoted disk figure comes from: ``kitctl reproduce gpt2-124m`` (FineWeb10B, #481's
flags) on the seed box of docs/inventories/2080ti-3090.csv, planned on an empty data root. Read-only.

doctor's disk rows, kit.yaml's comment on the HF cache, README and docs/reproduce.md quote :func:`disk_model`;
tests/pipeline/test_disk_model.py fails when one of them disagrees with the planner.
"""
from __future__ import annotations

import functools
from pathlib import Path

from kitctl.core.config import KitConfig
from kitctl.host.doctor import DiskNeed
from kitctl.host.gpus import parse_csv
from kitctl.pipeline import forecast as fc
from kitctl.pipeline.inputs import ReproduceOptions, gather

# docs/inventories/2080ti-3090.csv (the first user's box); the planner trains on the 3090 alone, in BF16
SEED_BOX = ("0, NVIDIA GeForce RTX 2080 Ti, 7.5, 11264 MiB, 570.86.10\n"
            "1, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 570.86.10\n")
EMPTY_ROOT = Path("/nonexistent/llmc-kit-reference-plan")   # never created: the plan of a fresh box


@functools.lru_cache(maxsize=1)
def disk_model() -> fc.DiskModel:
    """The reference plan's disk figures (computed by the planner, never typed in)."""
    cfg = KitConfig.model_validate({"data_root": EMPTY_ROOT, "image": "llmc-kit-reference-plan", "arch": [75, 86]})
    g = gather(cfg, ReproduceOptions(preset="gpt2-124m", runtime="docker", tune="off"), gpus=parse_csv(SEED_BOX))
    return fc.disk_model(g.inputs, fc.plan_stages(g.inputs))


def disk_need(cfg: KitConfig) -> DiskNeed:
    """What doctor compares free space with: the reference plan's data root and Docker's storage for this
    config's provider."""
    m = disk_model()
    return DiskNeed(data_root_bytes=m.data_root_bytes, docker_bytes=m.docker_bytes[cfg.provider],
                    what=f"FineWeb10B + GPT-2 124M needs {m.summary()}",
                    wheels_docker_bytes=m.docker_bytes["wheels"], hf_cache_bytes=m.hf_cache_bytes)
