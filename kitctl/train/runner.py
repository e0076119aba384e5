"""Execute one Plan: prepare the run folder, launch (docker or native mpirun), parse its lines, record run.json.

- ``<out>/stdout.log``: every line train_gpt2cu (all ranks) printed, appended across sessions (the session loop
  in ``kitctl.train.session`` writes it).
- ``<out>/run.json``: :class:`kitctl.core.run_record.RunRecord`, built here from the plan and written by
  :meth:`kitctl.core.run_folder.RunFolder.write_session` (atomic, locked) at start and end of a session; earlier
  sessions are kept under ``history``.
- Ctrl-C (or SIGTERM/SIGHUP to kitctl): every rank is stopped. Native: the one process runner
  (``kitctl.core.proc``) SIGTERMs mpirun's whole process group, SIGKILL after a grace period; docker:
  ``docker stop`` of the named container.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from kitctl import __version__
from kitctl.core import proc
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.validate import build_arch
from kitctl.core.files import sha256_file
from kitctl.host import built_archs
from kitctl.host.gpus import distinct_archs
from kitctl.host.runtimes import DockerRuntime
from kitctl.train import facts
from kitctl.train.facts import inspect_out
from kitctl.train.plan import Plan
from kitctl.core.run_folder import OtherWriter, RunFolder, Step, container_running, parse_step
from kitctl.core.run_record import DataRecord, GpuRecord, RunRecord, RuntimeRecord, SessionRecord
from kitctl.train.steplog import MANAGED_FALLBACK, is_oom

STOP_GRACE_S = 30


@dataclass
class Outcome:
    rc: int
    steps: list[Step] = field(default_factory=list)
    oom_before_first_step: bool = False
    managed_fallback: bool = False
    interrupted: bool = False
    tail: list[str] = field(default_factory=list)

    @property
    def last_step(self) -> Optional[int]:
        return self.steps[-1].step if self.steps else None


def preflight(plan: Plan) -> None:
    """What must exist before launching (not needed for --dry-run)."""
    if plan.decisions.runtime == "native":
        b = Path(plan.launch.binary)
        if not (b.is_file() and os.access(b, os.X_OK)):
            raise KitError(f"no train_gpt2cu binary at {b}",
                           "build it with `kitctl build --runtime native` or pass --binary PATH")
        exe = plan.launch.argv[0]
        if exe == "mpirun" or (os.path.sep in exe and not os.access(exe, os.X_OK)):
            raise KitError(f"no mpirun at {exe}: {plan.decisions.ranks} ranks need Open MPI on this host",
                           "install it (apt install openmpi-bin) or pass --mpirun PATH")
    check_archs(plan)


def check_archs(plan: Plan) -> None:
    """Refuse (exit 2) binaries with no code for a chosen GPU, when their build record (native) or the image's
    ``org.llmc-kit.archs`` label (docker) says what they were built for: every arch built newer than the GPU, llm.c
    would stop at its first kernel with CUDA's "no kernel image is available" (host.built_archs.Coverage). A GPU
    newer than a built arch runs its PTX and is let through. Nothing recorded: nothing to judge, the run decides."""
    d, container = plan.decisions, plan.launch.container
    if d.runtime == "native":
        built = built_archs.native(Path(plan.launch.binary).parent)
    elif container is not None:
        built = built_archs.image(container.image, engine=True)
    else:
        return
    if built.archs is None:
        return
    gpu_archs = distinct_archs(d.hardware.gpus)
    missing = built_archs.coverage(gpu_archs, built.archs).missing
    if not missing:
        return
    gpus = ", ".join(f"{g.index}:{g.name} (sm_{g.compute_cap})" for g in d.hardware.gpus
                    if build_arch(g.compute_cap) in missing)
    union = ",".join(map(str, sorted(set(built.archs) | set(gpu_archs))))
    build = "kitctl build --runtime native" if d.runtime == "native" else "kitctl build"
    raise ConfigError(f"{built.source}: built for {built.archs}, which has no code for GPU {gpus}: llm.c would stop "
                      "at its first kernel with CUDA's 'no kernel image is available' (every arch built is newer)",
                      f"rebuild with `{build} --arch {union}`, or leave those GPUs out (--gpus)")


def prepare_out(plan: Plan) -> Optional[Path]:
    """Create the run folder (recursively, as the calling user); archive old checkpoints on --fresh;
    native: llm.c's working directory with links to the eval files it opens relative to its cwd."""
    out_dir, launch = plan.decisions.out_dir, plan.launch
    out_dir.mkdir(parents=True, exist_ok=True)
    archived = None
    if plan.decisions.resumption.archive_existing:
        archived = RunFolder(out_dir).archive(out_dir / time.strftime("archive-%Y%m%dT%H%M%SZ", time.gmtime()))
    if launch.cwd is not None:
        launch.cwd.mkdir(parents=True, exist_ok=True)
        for link, target in launch.links:
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
    return archived


def _run_docker(plan: Plan, on_line: Callable[[str], None], client: Any = None) -> tuple[int, bool]:
    """The container through python-on-whales; on Ctrl-C `docker stop` (then kill) of its name."""
    container = plan.launch.container
    assert container is not None
    rt = DockerRuntime(client)
    try:
        with proc.TerminationAsInterrupt():
            return rt.run(container, on_line), False
    except KeyboardInterrupt:
        name = container.name
        try:
            rt.docker.container.stop(name, time=STOP_GRACE_S)
        except Exception:   # already gone, or no engine: the kill below is the last word
            pass
        try:
            if rt.docker.container.exists(name):
                rt.docker.container.kill(name)
        except Exception:   # gone
            pass
        return 130, True


def launch(plan: Plan, on_line: Callable[[str], None], docker_client: Any = None) -> Outcome:
    out = Outcome(rc=0)

    def line(s: str) -> None:
        st = parse_step(s)
        if st is not None:
            out.steps.append(st)
        elif is_oom(s) and not out.steps:
            out.oom_before_first_step = True
        elif MANAGED_FALLBACK in s:
            out.managed_fallback = True
        out.tail.append(s)
        del out.tail[:-40]
        on_line(s)

    if plan.decisions.runtime == "docker":
        out.rc, out.interrupted = _run_docker(plan, line, docker_client)
    else:
        lc = plan.launch
        done = proc.stream(lc.argv, line, env=lc.env, cwd=lc.cwd, grace_s=STOP_GRACE_S)
        out.rc, out.interrupted = done.returncode, done.interrupted
    return out


# ------------------------------------------------------------------------------------------------- records
def runtime_record(plan: Plan) -> RuntimeRecord:
    lc = plan.launch
    if lc.container is not None:
        return facts.inspect_image(lc.container.image)
    b = Path(lc.binary)
    return RuntimeRecord(kind="native", binary=str(b), sha256=sha256_file(b) if b.is_file() else None,
                         mpirun=lc.argv[0] if "mpirun" in Path(lc.argv[0]).name else None)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_session(plan: Plan, **fields: Any) -> SessionRecord:
    d = plan.decisions
    return SessionRecord(pid=os.getpid(), pid_start=proc.start_ticks(os.getpid()), host=socket.gethostname(),
                         start=now(), resumed_from=d.resumption.resume_step, micro_batch=d.batch.micro_batch,
                         recompute=d.batch.recompute, **fields)


def write_run_json(plan: Plan, session: Union[SessionRecord, Mapping[str, Any]],
                   runtime: Optional[RuntimeRecord] = None) -> Path:
    """Write <out>/run.json for this plan and session (atomic); the previous session, if another, moves to
    ``history``. ``session`` may be a mapping with a ``runtime`` entry (the Slurm launcher's)."""
    if isinstance(session, Mapping):
        raw = dict(session)
        rt = raw.pop("runtime", None)
        runtime = runtime or (RuntimeRecord.model_validate(rt) if rt else None)
        session = SessionRecord.model_validate(raw)
    d, lc = plan.decisions, plan.launch
    rec = RunRecord(
        kit_version=__version__, plan=plan.record(), argv=lc.argv, command=lc.command_line(), runtime=runtime,
        gpus=[GpuRecord(**g.as_dict()) for g in d.hardware.gpus],
        data=DataRecord(dir=str(d.data.dir), prefix=d.data.prefix,
                        train_pattern=_flag(lc.llmc_args, "-i"), val_pattern=_flag(lc.llmc_args, "-j"),
                        manifest_sha256=d.data.manifest_sha256, fingerprint=d.data.fingerprint,
                        train_tokens=d.data.train_tokens),
        session=session)
    return RunFolder(d.out_dir).write_session(rec)


def _flag(args: Sequence[str], name: str) -> Optional[str]:
    """The value llm.c's ``name`` gets (the last of a repeated flag wins, as in llm.c)."""
    values = [args[i + 1] for i in range(len(args) - 1) if args[i] == name]
    return values[-1] if values else None


def _recorded_container(out_dir: Path) -> OtherWriter:
    """The container an earlier session recorded, when it still runs (its kitctl was killed; llm.c goes on)."""
    def check() -> Optional[tuple[str, str]]:
        rec, _ = RunFolder(out_dir).load()
        name = rec.container_name() if rec else None
        if name and container_running(name):
            return f"the container {name} (an earlier session's; its kitctl is gone)", f"docker stop {name}"
        return None
    return check


def writer_lock(out_dir: Path, command: str) -> contextlib.AbstractContextManager[None]:
    """The run folder's one-writer lock (kitctl.core.run_folder) for a session that makes llm.c write
    checkpoints there; also refused while the recorded container or a train_gpt2cu -o here still runs."""
    return RunFolder(out_dir).writer(command, others=_recorded_container(out_dir))


def next_resume_step(out_dir: Path) -> Optional[int]:
    return inspect_out(out_dir).last_done
