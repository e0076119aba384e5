"""RUN_OR_FILE -> the checkpoint (or export) a model command works on.

A target is, in order: an existing file (a ``model_NNNNNNNN.bin``), an existing folder (a run folder holding
llm.c's checkpoints, or an export folder made by ``kitctl export-model``), or a run name under
``<data_root>/runs``. A run folder's checkpoint is its newest complete one: llm.c writes ``model_N.bin``,
then the ``state_N_*.bin`` files, then ``DONE_N``, so a model file without its DONE file may still be being
written and is passed over (used only when no step has a DONE file, e.g. checkpoints copied by hand). Which steps
have which files is the run folder's (kitctl.core.run_folder.RunFolder.checkpoints).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kitctl.core.errors import ConfigError
from kitctl.core.files import check_regular
from kitctl.core.llmc_files import done_filename, model_filename, parse_model_filename
from kitctl.core.run_folder import Checkpoints, RunFolder
from kitctl.model.checkpoint import FIX_FILE
EXPORT_FILES = ("config.json", "model.safetensors")


@dataclass(frozen=True)
class Target:
    """What a RUN_OR_FILE argument named."""

    checkpoint: Optional[Path]     # the model_*.bin (None for an export folder given directly)
    run_dir: Optional[Path]        # where run.json lives (the checkpoint's folder), if known
    export_dir: Optional[Path]     # an export folder given directly
    note: str = ""                 # e.g. "step 200 has no DONE_00000200 yet: used step 100"

    @property
    def step(self) -> Optional[int]:
        return parse_model_filename(self.checkpoint.name) if self.checkpoint else None


def is_export_dir(p: Path) -> bool:
    return p.is_dir() and all((p / f).is_file() for f in EXPORT_FILES)


def _checkpoints(run_dir: Path) -> Checkpoints:
    """The run folder's checkpoint files; none when it cannot be listed."""
    try:
        return RunFolder(run_dir).checkpoints()
    except OSError:
        return Checkpoints()


def _runs_list(runs_dir: Path) -> str:
    try:
        names = sorted(p.name for p in runs_dir.iterdir() if p.is_dir())
    except OSError:
        names = []
    return ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") if names else "none"


def resolve(target: str, runs_dir: Path, step: Optional[int] = None, allow_export: bool = False) -> Target:
    """Find what ``target`` names; KitError (exit 2) with the choices when it names nothing usable."""
    p = Path(target).expanduser()
    cands = [p] if p.is_absolute() or p.exists() else [p, runs_dir / target]
    found = next((c for c in cands if c.exists()), None)
    if found is None:
        raise ConfigError(f"{target!r} is neither a checkpoint file, a folder, nor a run under {runs_dir}",
                          f"pass a run name (runs under {runs_dir}: {_runs_list(runs_dir)}), a run folder, or a "
                          "model_NNNNNNNN.bin file")
    found = found.absolute()
    if not found.is_dir():
        check_regular(found, "checkpoint", FIX_FILE)     # a device, FIFO or socket: exit 2 naming it
    if found.is_file():
        if step is not None:
            raise ConfigError(f"--step {step} was given with a checkpoint file ({found.name})",
                              "--step picks a checkpoint in a run folder; pass the run folder, or drop --step")
        return Target(found, found.parent, None)
    if allow_export and is_export_dir(found):
        if step is not None:
            raise ConfigError(f"--step {step} was given with an export folder ({found})",
                              "an export holds one checkpoint; pass the run instead to pick a step")
        return Target(None, None, found)
    return pick(found, step)


def pick(run_dir: Path, step: Optional[int] = None) -> Target:
    """The checkpoint of ``run_dir`` at ``step``, or its newest complete one."""
    found = _checkpoints(run_dir)
    ckpts = {step: run_dir / name for step, name in found.models.items()}
    done = set(found.done)
    if not ckpts:
        raise ConfigError(f"{run_dir} holds no llm.c checkpoint (model_NNNNNNNN.bin)",
                          "llm.c writes one every -n steps (checkpoint_every) and at the last step, into its output "
                          "folder (-o): train longer, or pass the folder (or file) that holds them")
    have = ", ".join(str(s) for s in sorted(ckpts))
    if step is not None:
        if step not in ckpts:
            raise ConfigError(f"{run_dir} has no checkpoint for step {step} ({model_filename(step)})",
                              f"steps with a checkpoint: {have}")
        note = "" if step in done or not done else \
            f"step {step} has no {done_filename(step)}: llm.c may still be writing it or was stopped while it did"
        return Target(ckpts[step], run_dir, None, note)
    complete = sorted(s for s in ckpts if s in done)
    if complete:
        s = complete[-1]
        newer = [n for n in ckpts if n > s]
        note = (f"newer model file(s) without a DONE file passed over (still being written?): "
                f"{', '.join(str(n) for n in sorted(newer))}") if newer else ""
        return Target(ckpts[s], run_dir, None, note)
    s = max(ckpts)
    return Target(ckpts[s], run_dir, None,
                  "no DONE_NNNNNNNN file in this folder: used the newest model file (checked for size)")
