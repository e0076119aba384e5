"""The reading side of ``<run>/run.json`` for ``kitctl status``: the file is read with the same typed record its
writer uses (:class:`kitctl.train.record.RunRecord`), and the few facts status needs that are not fields of their
own are derived here: llm.c's flags from the launch line, the total steps, the container's name, GPU labels.

Every field of the record is optional and unknown keys are ignored, so a run.json of an older or newer kit, or one
a person trimmed by hand, still reads; a file that is not JSON, not an object, or whose known keys have the wrong
types is a :class:`~kitctl.core.errors.KitError` naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from kitctl.core.llmc_files import RUN_JSON
from kitctl.train.record import GpuRecord, RunRecord, SessionRecord

__all__ = ["RunRecord", "read_run_meta", "launch_flag", "total_steps", "container_name", "gpu_label", "session_of"]


def read_run_meta(run_dir: Path) -> Optional[RunRecord]:
    """``run_dir/run.json``, or None when there is none; a KitError when it is damaged."""
    path = run_dir / RUN_JSON
    if not path.exists():
        return None
    return RunRecord.read(path, hint=f"it is rewritten by the next `kitctl train` of this run; to read the logs "
                                     f"only, move it away (mv {path} {path}.bad)")


def session_of(rec: Optional[RunRecord]) -> SessionRecord:
    """The record's current session, or an empty one."""
    return (rec.session if rec else None) or SessionRecord()


def launch_flag(rec: RunRecord, name: str) -> Optional[str]:
    """The value of ``name`` (``-x``, ``--name``) in the launch line, then in llm.c's own arguments."""
    for words in (rec.argv, rec.plan.llmc_args if rec.plan else []):
        for i, w in enumerate(words[:-1]):
            if w == name:
                return words[i + 1]
            if w.startswith(name + "="):
                return w.split("=", 1)[1]
    return None


def total_steps(rec: RunRecord) -> Optional[int]:
    """llm.c's ``-x`` from the launch line, else the plan's steps."""
    x = launch_flag(rec, "-x")
    try:
        n = int(x) if x is not None else None
    except ValueError:
        n = None
    if n is not None and n > 0:
        return n
    steps = rec.plan.steps if rec.plan else None
    return steps if steps and steps > 0 else None


def container_name(rec: RunRecord) -> Optional[str]:
    """The container the run was started in: recorded in the session, else the ``--name`` of the ``docker run``."""
    return rec.container_name()


def gpu_label(g: GpuRecord) -> str:
    return (f"{g.index}: " if g.index is not None else "") + (g.name or "?")
