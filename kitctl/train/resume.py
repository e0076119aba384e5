"""Decision 3 of a plan: continue the checkpoints in the run folder (llm.c's -y 1), start over, or refuse.

llm.c resumes correctly only with the same rank count, B, T, total batch, model, precision and data; the plan
that wrote the checkpoints is in ``run.json`` (:class:`kitctl.core.run_record.PlanRecord`). A mismatch is refused
with the option that restores each setting, or ``--fresh`` (old checkpoints move to archive-<time>/).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from kitctl.core.llmc_files import MAIN_LOG
from kitctl.core.errors import ConfigError
from kitctl.train.facts import OutState
from kitctl.core.run_record import PlanRecord

_HINT = {
    "ranks": "llm.c resumes only with the same GPU count: pass --gpus with {old} GPU(s)",
    "micro_batch": "pass --micro-batch {old}",
    "seq_len": "pass -- -t {old}",
    "total_batch": "pass --total-batch {old}",
    "descriptor": "use the preset with model {old}",
    "precision": "pass --precision {old}",
    "data": "pass --data {data_dir} (the shards the checkpoint was trained on, unchanged)",
    "data_dir": "pass --data {old}",
}


@dataclass(frozen=True)
class ResumeChoice:
    resume: bool = False
    resume_step: Optional[int] = None
    complete: bool = False
    archive_existing: bool = False
    notes: tuple[str, ...] = ()


def refuse_resume(out: OutState, diffs: list[tuple[str, object, object]], old: Optional[PlanRecord]) -> None:
    lines = [f"{k}: checkpoint {o!r}, this plan {n!r}" for k, o, n in diffs]
    data_dir = (old.data_dir if old else None) or "?"
    hints = list(dict.fromkeys(_HINT[k].format(old=o, data_dir=data_dir) for k, o, _ in diffs))
    raise ConfigError(f"{out.dir} holds a checkpoint at step {out.last_done} that this plan cannot resume:\n  "
                      + "\n  ".join(lines),
                      "; ".join(hints) + "; or start over in this folder with --fresh (the old checkpoints move "
                      "to archive-<time>/), or pick a new --name")


def resumable(out: OutState, fresh: bool, ranks: int) -> Optional[PlanRecord]:
    """Before B is chosen: the checkpoint's plan when this run will resume it (None: a fresh start).
    A damaged run.json, or another GPU count (before any B: with another count the checkpoint's B may break
    the shard rules, a misleading refusal), are refused here."""
    if out.last_done is None or fresh:
        return None
    if out.run_json_error:
        raise ConfigError(f"run.json is damaged: {out.run_json_error}; the kit cannot check whether the "
                          f"checkpoint at step {out.last_done} can be resumed",
                          "start over in this folder with --fresh (the old checkpoints move to archive-<time>/), or "
                          "pick a new --name")
    old_ranks = out.run_plan.ranks if out.run_plan is not None else out.state_ranks
    if old_ranks and old_ranks != ranks:
        refuse_resume(out, [("ranks", old_ranks, ranks)], out.run_plan)
    return out.run_plan or PlanRecord()


def choose_resume(out: OutState, fresh: bool, key: dict[str, object], steps: int) -> ResumeChoice:
    """After every other decision: resume, or not, with what the plan's ``key`` (PlanRecord.RESUME_KEY) says."""
    last = out.last_done
    if last is None:
        return ResumeChoice(notes=(f"{out.dir} has a {MAIN_LOG} but no checkpoint (DONE_*): starting over (-y 0)",)
                            if out.has_main_log else ())
    if fresh:
        return ResumeChoice(archive_existing=True,
                            notes=(f"--fresh: the checkpoints up to step {last} move to {out.dir}/archive-<time>/",))
    old = out.run_plan
    diffs: list[tuple[str, object, object]] = []
    notes = []
    if old is None:
        if out.state_ranks and out.state_ranks != key["ranks"]:
            diffs.append(("ranks", out.state_ranks, key["ranks"]))
        notes.append(f"{out.dir} has checkpoints but no run.json: only the rank count could be checked "
                     f"({out.state_ranks}); B, T and data are assumed to match")
    else:
        stored = old.resume_key()
        for k, v in key.items():
            if k == "data_dir" and stored.get("data") == key["data"]:
                continue    # same shards, moved: fine
            if stored.get(k) is not None and stored[k] != v:
                diffs.append((k, stored[k], v))
    if diffs:
        refuse_resume(out, diffs, old)
    if old is not None and old.steps not in (None, steps):
        notes.append(f"steps {old.steps} -> {steps}: llm.c recomputes its LR schedule (warm-up + cosine decay) "
                     "for the new total from the resumed step on")
    return ResumeChoice(True, last, last >= steps, False, tuple(notes))
