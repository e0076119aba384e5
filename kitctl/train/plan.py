"""A :class:`Plan`: every decision of a ``kitctl train`` run and why, frozen, plus the launch built from them.

``kitctl.train.planner.build_plan`` makes the :class:`Decisions` (pure), ``kitctl.train.launch.build_launch`` turns
them into a :class:`Launch`, and the Plan is the two together (``plan.decisions.batch.micro_batch``,
``plan.launch.argv``: each value has one home, its record); ``kitctl.train.runner`` executes it; ``--dry-run``
prints :meth:`Plan.describe` and :meth:`Launch.command_line`; ``run.json`` stores :meth:`Plan.record`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from kitctl.core.progress import format_duration
from kitctl.host.runtimes import ContainerSpec, shell_line
from kitctl.train.batch import BatchChoice
from kitctl.train.facts import DataInfo
from kitctl.train.gpu_choice import GpuChoice
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
    """What runs (lists and dict as in :class:`ContainerSpec`: read them, never change them)."""

    binary: str                          # in the runtime's view (container path or host path)
    llmc_args: list[str]
    argv: list[str]                      # what runs: `docker run ...` (display) or `mpirun ...` / the binary
    container: Optional[ContainerSpec] = None
    env: dict[str, str] = field(default_factory=dict)             # native: extra env of the launch
    cwd: Optional[Path] = None                                    # native: llm.c's working directory
    links: list[tuple[Path, Path]] = field(default_factory=list)  # native: (link, target) pairs llm.c looks for in cwd
    notes: tuple[str, ...] = ()

    def command_line(self) -> str:
        """The exact command, copy-pasteable (native: with its cd and env)."""
        if self.container is not None:
            return shell_line(self.argv)
        env = " ".join(f"{k}={shell_line([v])}" for k, v in sorted(self.env.items()))
        return f"cd {shell_line([str(self.cwd)])} && {env} {shell_line(self.argv)}".replace("  ", " ")


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

    @property
    def ranks(self) -> int:
        return len(self.hardware.gpus)

    @property
    def grad_accum(self) -> int:
        return self.total_batch // (self.batch.micro_batch * self.seq_len * self.ranks)

    @property
    def forecast_s(self) -> Optional[float]:
        """The run's duration at the estimate (from the resumed step on)."""
        tok_s = self.batch.est_tok_s
        if not tok_s:
            return None
        return max(0, self.schedule.steps - (self.resumption.resume_step or 0)) * self.total_batch / tok_s


@dataclass(frozen=True)
class Plan:
    """The decisions and the launch built from them (``kitctl.train.launch.build_launch``)."""

    decisions: Decisions
    launch: Launch

    @property
    def notes(self) -> list[str]:
        d = self.decisions
        return [*d.hardware.notes, *d.batch.notes, *d.extra_notes, *d.schedule.notes, *d.resumption.notes,
                *self.launch.notes]

    @property
    def resume_key(self) -> dict[str, object]:
        """What must match for llm.c's -y 1 to continue this run correctly."""
        return self.record().resume_key()

    def record(self) -> PlanRecord:
        d, b, launch = self.decisions, self.decisions.batch, self.launch
        e = b.estimate
        return PlanRecord(
            preset=d.preset.name, runtime=d.runtime, precision=d.hardware.precision,
            gpus=[GpuRecord(**g.as_dict()) for g in d.hardware.gpus], ranks=d.ranks, micro_batch=b.micro_batch,
            recompute=b.recompute, seq_len=d.seq_len, total_batch=d.total_batch,
            grad_accum=d.grad_accum, steps=d.schedule.steps, descriptor=d.preset.descriptor,
            data=d.data.fingerprint, data_dir=str(d.data.dir), out_dir=str(d.out_dir), binary=launch.binary,
            llmc_args=launch.llmc_args, argv=launch.argv, choice=b.choice,
            memory_peak_gb=b.memory.peak_gb, memory_need_gb=b.memory.need_gb, memory_basis=b.memory.basis,
            resume=d.resumption.resume, resume_step=d.resumption.resume_step, notes=self.notes,
            est_tok_s=b.est_tok_s, est_basis=e.basis if e else None, tune_file=b.tune_file)

    def as_dict(self) -> dict:
        return self.record().model_dump(mode="json")

    def describe(self) -> list[tuple[str, str]]:
        """(setting, value) rows for the --dry-run table."""
        d, b, r = self.decisions, self.decisions.batch, self.decisions.resumption
        gpus = ", ".join(f"{g.index}: {g.name} (sm_{g.compute_cap}, {g.memory_mib} MiB)" for g in d.hardware.gpus)
        pre, mem = d.preset, b.memory
        r_why = "" if b.recompute == pre.recompute else f"  (preset: {pre.recompute}; see notes)"
        rows = [
            ("preset", f"{pre.name} ({pre.descriptor}, {pre.source})"),
            ("GPUs (ranks)", f"{d.ranks} -> {gpus}"),
            ("precision / binary", f"{d.hardware.precision} -> {self.launch.binary}"),
            ("micro-batch B", f"{b.micro_batch}  ({b.choice})"),
            ("recompute -r", f"{b.recompute}{r_why}"),
            ("T, total batch -d", f"{d.seq_len}, {d.total_batch} tokens"),
            ("grad accumulation", f"{d.grad_accum} = {d.total_batch} / ({b.micro_batch} x "
                                  f"{d.seq_len} x {d.ranks})"),
            ("steps -x", str(d.schedule.steps)),
            ("evals, checkpoints", _schedule_row(d.schedule)),
            ("memory (per GPU)", f"~{mem.peak_mib} MiB peak, {mem.need_mib} MiB with headroom [{mem.basis}]; "
                                 f"smallest GPU {min(g.memory_mib for g in d.hardware.gpus)} MiB"),
            ("data", f"{d.data.dir} ({d.data.prefix}: {len(d.data.train)} train shards, "
                     f"{d.data.train_tokens:,} tokens)"),
            ("output", str(d.out_dir)),
            ("resume", (f"yes, from step {r.resume_step} (-y 1)" if r.resume else "no, fresh start (-y 0)")
             + (" — already complete" if r.complete else "")
             + (" — old checkpoints are moved to archive-*/" if r.archive_existing else "")),
        ]
        e = b.estimate
        if e is not None:
            rows.append(("estimated tokens/s", (f"~{e.tok_s:,.0f}" if e.tok_s else "n/a") + f"  [{e.basis}]"))
        if d.forecast_s is not None:
            rows.append(("estimated time", f"~{format_duration(d.forecast_s)} for "
                                           f"{d.schedule.steps - (r.resume_step or 0)} steps at that rate"))
        if d.tune_first is not None:
            rows.append(("tune first", d.tune_first.describe() + "; then planned from the measurement "
                                                                 "(--no-tune skips it)"))
        return rows


def _schedule_row(s: Schedule) -> str:
    if s.mode == "bench":
        return "none (a measuring run: -v -s -h -n off)"
    val = f"val loss every {s.val_every} (-v)" + (f" over {s.val_batches} batches" if s.val_batches else "")
    keep = f", keeping {s.checkpoints_keep}" if s.checkpoints_keep else ""
    return ", ".join([val, f"HellaSwag {'on' if s.hellaswag else 'off'} (-h)", _every(s.sample_every, "sample", "-s"),
                      _every(s.checkpoint_every, "checkpoint", "-n") + keep])
