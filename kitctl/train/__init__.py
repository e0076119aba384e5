"""train: the planner and the runner of llm.c's ``train_gpt2cu`` (``kitctl train``, ``kitctl tune``).

This is the area's face: other packages import these names from ``kitctl.train`` and nothing else of it, except
``kitctl.train.cli`` (the launcher hook, :func:`~kitctl.train.cli.add_launcher`). run.json, which status, reports
and exports read, is not train's: it is ``kitctl.core.run_folder.RunFolder``'s. The import-linter contract "train's
face" in pyproject.toml holds them to it; the modules behind the face may change freely.

    plan      TrainRequest + gather_facts(...) -> Facts -> build_plan(...) -> Plan (pure, frozen; --dry-run prints it)
    run       plan_for (gather + plan + a re-planner), run_training, and for other launchers prepare_out and
              write_run_json (the run folder and run.json, as `kitctl train` writes them)
    tune      run_tune (`kitctl tune`), sweep_configs_for (which configs a tune measures, planned)
    models    default_model (the memory model), dims_for (a descriptor's sizes), load_presets / get_preset

Each name is imported from its module on first use (PEP 562): importing ``kitctl.train`` does not load the
planner, and ``python -m kitctl.train.steplog`` runs without the package having imported
it first (plain imports would: session, runner and tune import steplog, and runpy then warns). Since ``kitctl`` loads
an area only when one of its commands runs (kitctl/cli.py), this is what keeps train's planner out of the commands
that only read runs: measured with plain imports here instead, ``kitctl.observe.cli`` loads 56 kitctl modules (30
with this face) and ``kitctl.model.cli`` 60 (29); `kitctl status` takes 0.47 s of CPU, not 0.36, `kitctl
export-model --help` 0.61, not 0.52 (best of 6). So the face stays lazy.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# name -> the module behind the face that defines it. __all__ (spelled out: ruff and mypy read it to accept the
# TYPE_CHECKING imports as the face's) and the TYPE_CHECKING imports say the same: tests/train/test_train_face.py
_HOMES = {
    # plan
    "TrainRequest": "request", "gpu_spec": "request", "absorb_passthrough": "request", "BINARIES": "facts", "Facts": "facts", "DataInfo": "facts", "Shard": "facts",
    "OutState": "facts", "gather_facts": "facts", "inspect_data": "facts", "inspect_image": "facts",
    "build_plan": "planner", "Plan": "plan", "Preset": "presets", "get_preset": "presets",
    "load_presets": "presets", "MICRO_BATCHES": "batch",
    # run
    "plan_for": "session", "run_training": "session", "prepare_out": "runner", "write_run_json": "runner", "writer_lock": "runner",
    # tune
    "run_tune": "tune", "sweep_configs_for": "tune",
    # models
    "default_model": "memory", "dims_for": "memory",
}

__all__ = [
    # plan
    "TrainRequest", "gpu_spec", "absorb_passthrough", "BINARIES", "Facts", "DataInfo", "Shard", "OutState", "gather_facts", "inspect_data",
    "inspect_image", "build_plan", "Plan", "Preset", "get_preset", "load_presets", "MICRO_BATCHES",
    # run
    "plan_for", "run_training", "prepare_out", "write_run_json", "writer_lock",
    # tune
    "run_tune", "sweep_configs_for",
    # models
    "default_model", "dims_for",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:   # what type checkers (and import-linter's graph) see: the same names from the same modules
    from kitctl.train.batch import MICRO_BATCHES
    from kitctl.train.facts import (BINARIES, DataInfo, Facts, OutState, Shard, gather_facts, inspect_data,
                                    inspect_image)
    from kitctl.train.memory import default_model, dims_for
    from kitctl.train.plan import Plan
    from kitctl.train.planner import build_plan
    from kitctl.train.presets import Preset, get_preset, load_presets
    from kitctl.train.request import TrainRequest, absorb_passthrough, gpu_spec
    from kitctl.train.runner import prepare_out, write_run_json, writer_lock
    from kitctl.train.session import plan_for, run_training
    from kitctl.train.tune import run_tune, sweep_configs_for
