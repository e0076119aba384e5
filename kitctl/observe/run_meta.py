"""The reading side of ``<run>/run.json`` (written by ``kitctl train``, kitctl.train.runner.write_run_json).

A read-only model of the keys the file has, so ``kitctl status`` reads named fields instead of guessing at
keys. Every field is optional and unknown keys are ignored (``Record``: ``extra="ignore"``), so a run.json of
an older or newer kit, or one a person trimmed by hand, still reads; a file that is not JSON, not an object, or
whose known keys have the wrong types is a :class:`~kitctl.core.errors.KitError` naming the file.

What it holds (``write_run_json``): ``kit_version``, ``plan`` (Plan.as_dict: steps, preset, ranks, out_dir,
llmc_args...), ``argv`` (the launch line: ``docker run ... --name NAME ...`` or ``mpirun ...``), ``command``,
``runtime``, ``gpus`` (GPU.as_dict), ``data``, ``session`` (this launch: id, start, end, status, exit_status,
next_resume_step; the Slurm launcher adds launcher, job_id, script, nodes) and ``history`` (earlier sessions).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from kitctl.core.records import Record

RUN_JSON = "run.json"


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GpuMeta(_Part):
    index: Optional[int] = None
    name: str = "?"

    def label(self) -> str:
        return (f"{self.index}: " if self.index is not None else "") + self.name


class PlanMeta(_Part):
    preset: Optional[str] = None
    steps: Optional[int] = None
    ranks: Optional[int] = None
    out_dir: Optional[str] = None
    llmc_args: list[str] = Field(default_factory=list)


class SessionMeta(_Part):
    id: Optional[str] = None
    start: Optional[str] = None
    end: Optional[str] = None
    status: Optional[str] = None             # ok | failed | interrupted | oom-retry
    exit_status: Optional[int] = None
    next_resume_step: Optional[int] = None
    pid: Optional[int] = None                # the launching process, when recorded, and its host
    host: Optional[str] = None
    container: Optional[str] = None          # the container's name, when recorded
    launcher: Optional[str] = None           # slurm
    job_id: Optional[str] = None


class RunMeta(Record):
    """``run.json`` as ``kitctl status`` reads it."""

    KIND = "run record"
    kit_version: Optional[str] = None
    plan: PlanMeta = Field(default_factory=PlanMeta)
    argv: list[str] = Field(default_factory=list)
    command: Optional[str] = None
    runtime: Optional[dict[str, Any]] = None
    gpus: list[GpuMeta] = Field(default_factory=list)
    session: SessionMeta = Field(default_factory=SessionMeta)

    def flag(self, name: str) -> Optional[str]:
        """The value of ``name`` (``-x``, ``--name``) in the launch line, then in llm.c's own arguments."""
        for words in (self.argv, self.plan.llmc_args):
            for i, w in enumerate(words[:-1]):
                if w == name:
                    return words[i + 1]
                if w.startswith(name + "="):
                    return w.split("=", 1)[1]
        return None

    @property
    def total_steps(self) -> Optional[int]:
        """llm.c's ``-x`` from the launch line, else the plan's steps."""
        x = self.flag("-x")
        try:
            n = int(x) if x is not None else None
        except ValueError:
            n = None
        if n is not None and n > 0:
            return n
        return self.plan.steps if self.plan.steps and self.plan.steps > 0 else None

    @property
    def container_name(self) -> Optional[str]:
        if self.session.container:
            return self.session.container
        if "docker" in self.argv[:2]:
            return self.flag("--name")              # the docker run line kitctl train recorded
        return None


def read_run_meta(run_dir: Path) -> Optional[RunMeta]:
    """``run_dir/run.json``, or None when there is none; a KitError when it is damaged."""
    path = run_dir / RUN_JSON
    if not path.exists():
        return None
    return RunMeta.read(path, hint=f"it is rewritten by the next `kitctl train` of this run; to read the logs "
                                   f"only, move it away (mv {path} {path}.bad)")
