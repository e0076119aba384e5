"""One ``kitctl train`` on this machine: plan it, run it (once more with B/2 after an out-of-memory start),
record each session in run.json and say how it ended.

Out of memory before the first step (llm.c prints "out of memory" from cudaCheck): re-plan once with B/2 and
say so (not when resuming: llm.c resumes only with the same B). Ctrl-C: the launch stops every rank, the
session is recorded as interrupted and the step the next run resumes from is printed.
"""
from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from rich.console import Console
from rich.markup import escape

from kitctl.core.config import KitConfig
from kitctl.core.errors import KitError
from kitctl.core.run_folder import RunFolder, Step, parse_step
from kitctl.train.display import Display
from kitctl.train.facts import DataInfo, Facts, gather_facts, inspect_out
from kitctl.train.plan import Plan
from kitctl.train.planner import build_plan
from kitctl.core.run_record import Attempt, SessionRecord
from kitctl.train.request import TrainRequest
from kitctl.train.runner import (Outcome, launch, new_session, next_resume_step, now, preflight, prepare_out, runtime_record,
                                 write_run_json, writer_lock)
from kitctl.train.steplog import throughput

# docker's own messages when the NVIDIA container runtime is missing or broken (`docker run --gpus` exits 125)
DOCKER_GPU_ERRORS = ("could not select device driver", "nvidia-container-cli", "unknown or invalid runtime name")

Replan = Callable[[TrainRequest], Plan]


def plan_for(cfg: KitConfig, req: TrainRequest, inventory: Optional[Path] = None, mpirun: str = "/usr/bin/mpirun",
             data: Optional[DataInfo] = None) -> tuple[Plan, Facts, Replan]:
    """Read this machine, plan; ``replan(request)`` plans again over the run folder as it is now. ``data``: the
    shards as planned (a dry run before `kitctl data` wrote them), instead of the folder's."""
    facts = gather_facts(cfg, req, inventory, mpirun, data=data)

    def replan(r: TrainRequest) -> Plan:
        return build_plan(r, dataclasses.replace(facts, out=inspect_out(facts.out.dir)))

    return build_plan(req, facts), facts, replan


def run_training(plan: Plan, facts: Facts, console: Console, replan: Optional[Replan] = None,
                 docker_client: Any = None, quiet: bool = False, tuned: Optional[str] = None) -> SessionRecord:
    """Execute a plan (with one B/2 retry on an out-of-memory start). Returns the session record.
    ``tuned``: the tune record measured first for this run (kept in the session). The run folder's writer lock
    is held throughout (another live writer there: KitError, exit 1, before anything is written)."""
    with writer_lock(plan.decisions.out_dir, "kitctl train"):
        return _run_training(plan, facts, console, replan, docker_client, quiet, tuned)


def _run_training(plan: Plan, facts: Facts, console: Console, replan: Optional[Replan],
                  docker_client: Any, quiet: bool, tuned: Optional[str]) -> SessionRecord:
    d = plan.decisions
    if d.resumption.complete:
        console.print(f"{escape(str(d.out_dir))}: already complete (checkpoint at step {d.resumption.resume_step} "
                      f"of {d.schedule.steps}); nothing to do. Use --steps N to train further, or --fresh to start "
                      "over.")
        return SessionRecord(status="ok", exit_status=0, last_step=d.resumption.resume_step)
    preflight(plan)
    attempts: list[Attempt] = []
    while True:
        d = plan.decisions
        archived = prepare_out(plan)
        if archived is not None:
            console.print(f"--fresh: moved the old checkpoints to {archived}", markup=False, highlight=False)
        runtime = runtime_record(plan)
        session = new_session(plan, id=uuid.uuid4().hex[:12], attempts=list(attempts), tuned=tuned)
        write_run_json(plan, session, runtime)
        out = _launch_logged(plan, console, quiet, docker_client)
        tok_s = throughput(out.steps, d.total_batch)
        session = session.model_copy(update=dict(
            end=now(), exit_status=out.rc, first_step=out.steps[0].step if out.steps else None,
            last_step=out.last_step, tok_s_median=tok_s, mfu_last=out.steps[-1].mfu if out.steps else None))
        if out.managed_fallback:
            console.print("[yellow]warning:[/] llm.c fell back to host (managed) memory for the optimizer state: "
                          "it runs, but slowly; use a smaller --micro-batch or more GPUs")
        if out.interrupted:
            nxt = next_resume_step(d.out_dir)
            write_run_json(plan, session.model_copy(update=dict(status="interrupted", next_resume_step=nxt)), runtime)
            where = (f"the next run resumes from the checkpoint at step {nxt}" if nxt is not None else
                     "no checkpoint was written yet: the next run starts over")
            raise KitError(f"stopped at step {out.last_step or 0}: all ranks are stopped; {where}",
                           "re-run the same command to continue", exit_code=130)
        b = d.batch.micro_batch
        if out.rc != 0 and out.oom_before_first_step and not d.resumption.resume and not attempts \
                and b > 1 and replan is not None:
            half = b // 2
            attempts.append(Attempt(micro_batch=b, status="out of memory before the first step"))
            write_run_json(plan, session.model_copy(update=dict(status="oom-retry")), runtime)
            console.print(f"[yellow]train_gpt2cu ran out of GPU memory at start with B={b}: "
                          f"retrying once with B={half}[/]")
            plan = replan(dataclasses.replace(d.request, micro_batch=half, oom_retry_from=b))
            continue
        short_of = out.rc == 0 and not reached_last_step(plan, out)
        session = session.model_copy(update=dict(status="ok" if out.rc == 0 and not short_of else "failed"))
        write_run_json(plan, session, runtime)
        if out.rc != 0:
            _fail(plan, out)
        if short_of:
            # exit 0 is not "done": llm.c prints `step N/N` for its last step and checkpoints there (-n > 0)
            tail = "\n".join(out.tail[-15:])
            last = out.last_step if out.last_step is not None else "none"
            raise KitError(f"train_gpt2cu exited with status 0 but did not reach the last step "
                           f"(last step {last} of {d.schedule.steps}):"
                           f"\n{tail}",
                           f"the full output is in {RunFolder(d.out_dir).stdout_log}; re-run the same command to "
                           "continue from the newest checkpoint")
        if not quiet:
            msg = f"done: step {out.last_step}/{d.schedule.steps}"
            if tok_s:
                msg += f", {tok_s:,.0f} tok/s (median step, warm-up excluded)"
                est = d.batch.est_tok_s
                if est:
                    msg += f"; the plan estimated ~{est:,.0f} ({tok_s / est - 1:+.1%})"
            console.print(msg + f"; run folder {d.out_dir}", markup=False, highlight=False)
        return session


def reached_last_step(plan: Plan, out: Outcome) -> bool:
    """The run's own check that training finished: llm.c printed its last step (``step N/N``), or wrote the
    checkpoint of the last step (DONE_<steps>, when it checkpoints)."""
    d = plan.decisions
    if out.last_step is not None and out.last_step >= d.schedule.steps:
        return True
    return RunFolder(d.out_dir).done_path(d.schedule.steps).is_file()


def _launch_logged(plan: Plan, console: Console, quiet: bool, docker_client: Any) -> Outcome:
    """One launch: every line appended to <out>/stdout.log (headed by the command), step lines to the display."""
    steps_seen: list[Step] = []
    with RunFolder(plan.decisions.out_dir).stdout_log.open("a", buffering=1) as log, \
            Display(console, plan, quiet) as disp:
        log.write(f"# kitctl {now()} {plan.launch.command_line()}\n")

        def on_line(s: str) -> None:
            log.write(s + "\n")
            st = parse_step(s)
            if st is not None:
                steps_seen.append(st)
            disp.line(s, steps_seen)
        return launch(plan, on_line, docker_client)


def _fail(plan: Plan, out: Outcome) -> None:
    tail = "\n".join(out.tail[-15:])
    d = plan.decisions
    hint = f"the full output is in {RunFolder(d.out_dir).stdout_log}"
    no_gpu = any(m in ln for ln in out.tail for m in DOCKER_GPU_ERRORS)
    if d.runtime == "docker" and not out.steps and (out.rc == 125 or no_gpu):
        # docker's own failure (exit 125): train_gpt2cu never ran
        raise KitError(f"the container could not start (docker run exited with status {out.rc}):\n{tail}",
                       ("Docker cannot give the container GPUs: install nvidia-container-toolkit "
                        "(then `sudo nvidia-ctk runtime configure --runtime=docker`) and restart Docker; "
                        if no_gpu else "see Docker's message above; ")
                       + "`kitctl doctor` checks the engine and the GPU runtime")
    if out.oom_before_first_step:
        hint = ("out of GPU memory: " + ("resuming needs the checkpoint's B; free the GPU or start over "
                                         "with --fresh and a smaller --micro-batch" if d.resumption.resume else
                                         "pass a smaller --micro-batch") + "; " + hint)
    raise KitError(f"train_gpt2cu exited with status {out.rc} (last step {out.last_step}):\n{tail}", hint)
