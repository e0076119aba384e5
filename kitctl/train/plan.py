"""A :class:`Plan`: every decision of a ``kitctl train`` run and why, frozen, plus the launch built from them.

``kitctl.train.planner.build_plan`` makes the :class:`Decisions` (pure), ``kitctl.train.launch.build_launch`` turns
them into a :class:`Launch`, and the Plan is the two together; ``kitctl.train.runner`` executes it; ``--dry-run``
prints :meth:`Plan.describe` and :meth:`Plan.command_line`; ``run.json`` stores :meth:`Plan.record`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from kitctl.core.progress import format_duration
from kitctl.host.gpus import GPU
from kitctl.host.runtimes import ContainerSpec, shell_line
from kitctl.train.batch import BatchChoice
from kitctl.train.facts import DataInfo
from kitctl.train.gpu_choice import GpuChoice, Option
from kitctl.train.memory import Prediction
from kitctl.train.presets import Preset
from kitctl.core.run_record import GpuRecord, PlanRecord
from kitctl.train.request import TrainRequest
from kitctl.train.resume import ResumeChoice
from kitctl.train.schedule import Schedule
from kitctl.train.tune_first import TuneFirst


def _every(n: int, what: str, flag: str) -> str:
    return f"{what} every {n} ({flag})" if n else f"no {what} ({flag})"


@dataclass(frozen=True)
class Launch:
    binary: str                          # in the runtime's view (container path or host path)
    llmc_args: tuple[str, ...]
    argv: tuple[str, ...]                # what runs: `docker run ...` (display) or `mpirun ...` / the binary
    container: Optional[ContainerSpec] = None
    env: dict = field(default_factory=dict)          # native: extra env of the launch
    cwd: Optional[Path] = None                       # native: llm.c's working directory
    links: tuple[tuple[Path, Path], ...] = ()        # native: (link, target) pairs llm.c looks for in cwd
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decisions:
    """What the planner decided, each part with its reasons; the launch is built from these alone."""

    preset: Preset
    request: TrainRequest
    runtime: str
    seq_len: int
    total_batch: int
    zero_stage: int
    data: DataInfo
    out_dir: Path
    hardware: GpuChoice
    batch: BatchChoice
    schedule: Schedule
    resumption: ResumeChoice
    tune_first: Optional[TuneFirst] = None
    extra_notes: tuple[str, ...] = ()

    # --- the decisions, by name
    @property
    def gpus(self) -> list[GPU]:
        return list(self.hardware.gpus)

    @property
    def precision(self) -> str:
        return self.hardware.precision

    @property
    def options(self) -> list[Option]:
        return list(self.hardware.options)

    @property
    def micro_batch(self) -> int:
        return self.batch.micro_batch

    @property
    def recompute(self) -> int:
        return self.batch.recompute

    @property
    def memory(self) -> Prediction:
        return self.batch.memory

    @property
    def choice(self) -> str:
        return self.batch.choice

    @property
    def est_tok_s(self) -> Optional[float]:
        return self.batch.estimate.tok_s if self.batch.estimate else None

    @property
    def tune_file(self) -> Optional[str]:
        return self.batch.tune_file

    @property
    def steps(self) -> int:
        return self.schedule.steps

    @property
    def hellaswag(self) -> int:
        return self.schedule.hellaswag

    @property
    def resume(self) -> bool:
        return self.resumption.resume

    @property
    def resume_step(self) -> Optional[int]:
        return self.resumption.resume_step

    @property
    def complete(self) -> bool:
        return self.resumption.complete

    @property
    def archive_existing(self) -> bool:
        return self.resumption.archive_existing

    @property
    def ranks(self) -> int:
        return len(self.hardware.gpus)

    @property
    def grad_accum(self) -> int:
        return self.total_batch // (self.micro_batch * self.seq_len * self.ranks)


@dataclass(frozen=True)
class Plan(Decisions):
    """The decisions and the launch built from them (``kitctl.train.launch.build_launch``)."""

    launch: Launch = field(kw_only=True)

    @classmethod
    def of(cls, decisions: Decisions, launch: Launch) -> Plan:
        return cls(**{f.name: getattr(decisions, f.name) for f in dataclasses.fields(Decisions)}, launch=launch)

    @property
    def binary(self) -> str:
        return self.launch.binary

    @property
    def llmc_args(self) -> list[str]:
        return list(self.launch.llmc_args)

    @property
    def argv(self) -> list[str]:
        return list(self.launch.argv)

    @property
    def container(self) -> Optional[ContainerSpec]:
        return self.launch.container

    @property
    def env(self) -> dict:
        return dict(self.launch.env)

    @property
    def cwd(self) -> Optional[Path]:
        return self.launch.cwd

    @property
    def links(self) -> list[tuple[Path, Path]]:
        return list(self.launch.links)

    @property
    def notes(self) -> list[str]:
        return [*self.hardware.notes, *self.batch.notes, *self.extra_notes, *self.schedule.notes,
                *self.resumption.notes, *self.launch.notes]

    @property
    def resume_key(self) -> dict[str, object]:
        """What must match for llm.c's -y 1 to continue this run correctly."""
        return self.record().resume_key()

    @property
    def forecast_s(self) -> Optional[float]:
        """The run's duration at the estimate (from the resumed step on)."""
        if not self.est_tok_s:
            return None
        return max(0, self.steps - (self.resume_step or 0)) * self.total_batch / self.est_tok_s

    def command_line(self) -> str:
        """The exact command, copy-pasteable (native: with its cd and env)."""
        if self.container is not None:
            return shell_line(self.argv)
        env = " ".join(f"{k}={shell_line([v])}" for k, v in sorted(self.env.items()))
        return f"cd {shell_line([str(self.cwd)])} && {env} {shell_line(self.argv)}".replace("  ", " ")

    def record(self) -> PlanRecord:
        e = self.batch.estimate
        return PlanRecord(
            preset=self.preset.name, runtime=self.runtime, precision=self.precision,
            gpus=[GpuRecord(**g.as_dict()) for g in self.gpus], ranks=self.ranks, micro_batch=self.micro_batch,
            recompute=self.recompute, seq_len=self.seq_len, total_batch=self.total_batch,
            grad_accum=self.grad_accum, steps=self.steps, descriptor=self.preset.descriptor,
            data=self.data.fingerprint, data_dir=str(self.data.dir), out_dir=str(self.out_dir), binary=self.binary,
            llmc_args=self.llmc_args, argv=self.argv, choice=self.choice, memory_peak_gb=self.memory.peak_gb,
            memory_need_gb=self.memory.need_gb, memory_basis=self.memory.basis, resume=self.resume,
            resume_step=self.resume_step, notes=self.notes, est_tok_s=self.est_tok_s,
            est_basis=e.basis if e else None, tune_file=self.tune_file)

    def as_dict(self) -> dict:
        return self.record().model_dump(mode="json")

    def _schedule_row(self) -> str:
        s = self.schedule
        if s.mode == "bench":
            return "none (a measuring run: -v -s -h -n off)"
        val = f"val loss every {s.val_every} (-v)" + (f" over {s.val_batches} batches" if s.val_batches else "")
        keep = f", keeping {s.checkpoints_keep}" if s.checkpoints_keep else ""
        return ", ".join([val, f"HellaSwag {'on' if s.hellaswag else 'off'} (-h)", _every(s.sample_every, "sample", "-s"),
                          _every(s.checkpoint_every, "checkpoint", "-n") + keep])

    def describe(self) -> list[tuple[str, str]]:
        """(setting, value) rows for the --dry-run table."""
        gpus = ", ".join(f"{g.index}: {g.name} (sm_{g.compute_cap}, {g.memory_mib} MiB)" for g in self.gpus)
        pre = self.preset
        r_why = "" if self.recompute == pre.recompute else f"  (preset: {pre.recompute}; see notes)"
        rows = [
            ("preset", f"{pre.name} ({pre.descriptor}, {pre.source})"),
            ("GPUs (ranks)", f"{self.ranks} -> {gpus}"),
            ("precision / binary", f"{self.precision} -> {self.binary}"),
            ("micro-batch B", f"{self.micro_batch}  ({self.choice})"),
            ("recompute -r", f"{self.recompute}{r_why}"),
            ("T, total batch -d", f"{self.seq_len}, {self.total_batch} tokens"),
            ("grad accumulation", f"{self.grad_accum} = {self.total_batch} / ({self.micro_batch} x "
                                  f"{self.seq_len} x {self.ranks})"),
            ("steps -x", str(self.steps)),
            ("evals, checkpoints", self._schedule_row()),
            ("memory (per GPU)", f"~{self.memory.peak_mib} MiB peak, {self.memory.need_mib} MiB with headroom "
                                 f"[{self.memory.basis}]; smallest GPU {min(g.memory_mib for g in self.gpus)} MiB"),
            ("data", f"{self.data.dir} ({self.data.prefix}: {len(self.data.train)} train shards, "
                     f"{self.data.train_tokens:,} tokens)"),
            ("output", str(self.out_dir)),
            ("resume", (f"yes, from step {self.resume_step} (-y 1)" if self.resume else "no, fresh start (-y 0)")
             + (" — already complete" if self.complete else "")
             + (" — old checkpoints are moved to archive-*/" if self.archive_existing else "")),
        ]
        e = self.batch.estimate
        if e is not None:
            rows.append(("estimated tokens/s", (f"~{e.tok_s:,.0f}" if e.tok_s else "n/a") + f"  [{e.basis}]"))
        if self.forecast_s is not None:
            rows.append(("estimated time", f"~{format_duration(self.forecast_s)} for "
                                           f"{self.steps - (self.resume_step or 0)} steps at that rate"))
        if self.tune_first is not None:
            rows.append(("tune first", self.tune_first.describe() + "; then planned from the measurement "
                                                                    "(--no-tune skips it)"))
        return rows
