"""Is a run's training alive? Decided from run.json's session, then the machine (pids, containers, /proc).

In order: the session in run.json (interrupted, or an exit status: finished / failed; an end time: stopped); a
``pid`` recorded for this host; a container name (recorded, or the ``--name`` of the recorded ``docker run``
line; asked of ``docker inspect``); a ``train_gpt2cu`` process on this host whose ``-o`` is this folder (from
/proc; finds native runs and llm.c started by hand); the final step's ``DONE_`` file; else "unknown", with how
long ago the logs were last written (and, for a Slurm run, the job to ask ``squeue`` about).
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.pipeline_state import FILENAME as PIPELINE_FILENAME
from kitctl.core.proc import pid_alive
from kitctl.core.run_folder import RunFolder, container_running, find_llmc_process
from kitctl.core.progress import format_duration
from kitctl.core.run_record import RunRecord, session_of


@dataclass
class Liveness:
    state: str          # running | finished | failed | stopped | unknown
    detail: str




def resume_command(run_dir: Path) -> str:
    """What continues this run: the reproduce command for a `kitctl reproduce` run (its stage record is there:
    a bare `kitctl train` would skip its stages and its options), else `kitctl train`."""
    if (run_dir / PIPELINE_FILENAME).is_file():
        return "re-run the same `kitctl reproduce` command"
    return "re-run `kitctl train`"


def liveness(meta: Optional[RunRecord], run_dir: Path, log_age_s: Optional[float], finished_by_files: bool,
             proc: Path = Path("/proc")) -> Liveness:
    age = f"; logs written {format_duration(log_age_s)} ago" if log_age_s is not None else ""
    session = session_of(meta)
    rerun = resume_command(run_dir)
    if session.status == "interrupted":
        nxt = session.next_resume_step
        # the same words as the stop message (kitctl.train.session): where the next run resumes
        return Liveness("stopped", "interrupted; " + (f"the next run resumes from the checkpoint at step {nxt} "
                                                      f"({rerun})" if nxt is not None else
                                                      f"no checkpoint was written yet: the next run starts over "
                                                      f"({rerun})"))
    code = session.exit_status
    if session.status == "failed" and code == 0:
        return Liveness("failed", f"exited with status 0 before the last step; see {RunFolder(run_dir).stdout_log}")
    if code is not None:
        return (Liveness("finished", "exited with status 0") if code == 0
                else Liveness("failed", f"exited with status {code}; see {RunFolder(run_dir).stdout_log}"))
    if session.end is not None:
        return Liveness("stopped", "run.json records an end time")
    pid, host = session.pid, session.host
    gone = None      # the recorded kitctl is gone: what it left running (its container, its ranks) still counts
    if pid is not None:
        if host and host != socket.gethostname():
            return Liveness("unknown", f"pid {pid} runs on host {host}, not this one{age}")
        # the recorded start time tells the run's kitctl from a later process that reused its pid
        if pid_alive(pid, session.pid_start):
            return Liveness("running", f"pid {pid} is alive{age}")
        gone = Liveness("finished" if finished_by_files else "stopped",
                        f"pid {pid} is gone{age}" + ("" if finished_by_files else
                                                     f"; {rerun} resumes from the last checkpoint"))
    container = meta.container_name() if meta else None
    if container:
        running = container_running(container)
        if running:
            return Liveness("running", f"container {container} is running{age}")
        if running is False and gone is None:
            return Liveness("finished" if finished_by_files else "stopped", f"container {container} is not running{age}")
    found = find_llmc_process(run_dir, proc)
    if found is not None:
        return Liveness("running", f"train_gpt2cu pid {found} writes here{age}")
    if gone is not None:
        return gone
    if finished_by_files:
        return Liveness("finished", f"the final step's DONE file is there{age}")
    if session.launcher == "slurm" and session.job_id:
        return Liveness("unknown", f"Slurm job {session.job_id}: ask `squeue -j {session.job_id}`{age}")
    return Liveness("unknown", f"no live train_gpt2cu found for this folder on this host{age}")


def is_live(run_dir: Path, proc: Path = Path("/proc")) -> bool:
    """Is a training writing ``run_dir`` now, seen from this machine (a live pid, a running container, a
    train_gpt2cu whose -o is this folder)? What ``kitctl tensorboard --no-serve`` follows; a finished, failed,
    stopped or unknown run is converted once and left. A damaged run.json counts as no record."""
    try:
        meta = RunFolder(run_dir).read()
    except ConfigError:
        raise
    except KitError:
        meta = None
    return liveness(meta, run_dir, None, False, proc).state == "running"
