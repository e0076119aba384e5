"""Training presets (``presets.yaml``): llm.c's published GPT-2 recipes as typed, shipped data.

Each preset is the train_gpt2cu flag set of its source minus what the kit decides per machine (B, recompute,
data paths, output, resume). The file is validated with ``extra="forbid"``: a misspelled key is an error naming
it, never a silently ignored setting.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

from pydantic import ConfigDict

from kitctl.core import resources
from kitctl.core.errors import ConfigError
from kitctl.core.records import UserData, load_model, read_yaml_file

PRESETS_FILE = resources.package_dir() / "train" / "presets.yaml"


class Preset(UserData):
    """One recipe. ``name`` is its key in the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: str
    descriptor: str                      # -e: d12, d24, d36, d48
    channels: int
    heads: int
    data: str                            # the dataset folder under the data root
    seq_len: int                         # -t
    total_batch: int                     # -d, tokens per optimizer step
    learning_rate: float                 # -l
    warmup: int                          # -u
    final_lr_frac: float                 # -q
    weight_decay: float                  # -c
    zero_stage: int                      # -z
    recompute: int                       # -r (the source's choice; the planner may pick a faster one)
    checkpoint_every: int                # -n
    val_every: int                       # -v
    sample_every: int                    # -s
    hellaswag: int                       # -h
    steps: int                           # -x; -1 = one epoch of the train shards
    extra: tuple[str, ...] = ()          # further flags of the source, verbatim
    micro_batch_published: Optional[int] = None   # what the source ran on 8x A100/H100 80GB (reference only)


def parse_presets(raw: object, source: str) -> dict[str, Preset]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{source}: expected a mapping of preset name -> settings", "see the file's header")
    out = {}
    for name, body in raw.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: preset {name!r} is not a mapping", "see the file's header")
        if "name" in body:
            raise ConfigError(f"{source}: preset {name!r} sets 'name'", "the key of the entry is its name")
        out[str(name)] = load_model(Preset, {"name": str(name), **body}, f"{source} [{name}]")
    return out


@functools.lru_cache(maxsize=4)
def load_presets(path: Path = PRESETS_FILE) -> dict[str, Preset]:
    return parse_presets(read_yaml_file(path, "presets file"), str(path))


def get_preset(name: str) -> Preset:
    presets = load_presets()
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}", f"use one of: {', '.join(presets)}")
    return presets[name]
