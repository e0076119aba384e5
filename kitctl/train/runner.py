"""Run a training Plan: prepare the run folder, launch (docker or native mpirun), show progress, record.

- ``<out>/stdout.log``: every line train_gpt2cu (all ranks) printed, appended across sessions.
- ``<out>/run.json``: the plan (what the checkpoints were written with: the resume check reads it), the
  runtime (image reference, id, digests and labels, or native binary path + sha256), argv, GPUs, data
  (folder, manifest sha256, shard fingerprint), start/end, exit status, steps seen, tokens/s; earlier
  sessions are kept under ``history``.
- Out of memory before the first step (llm.c prints "out of memory" from cudaCheck): re-plan once with B/2
  and say so (not when resuming: llm.c resumes only with the same B).
- Ctrl-C: every rank is stopped (native: SIGTERM to mpirun's whole process group, SIGKILL after a grace
  period; docker: ``docker stop`` of the named container) and the step the next run resumes from is printed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from kitctl.core.config import KitConfig, nccl_env
from kitctl.core.errors import KitError
from kitctl.host.gpus import load_inventory
from kitctl.train.steplog import MANAGED_FALLBACK, Step, fmt_mfu, is_oom, parse_step, throughput
from kitctl.train.planner import Facts, Plan, TrainRequest, build_plan, get_preset
from kitctl.core.files import sha256_file
from kitctl.train.facts import host_facts, inspect_data, inspect_out

STOP_GRACE_S = 30
# docker's own messages when the NVIDIA container runtime is missing or broken (`docker run --gpus` exits 125)
DOCKER_GPU_ERRORS = ("could not select device driver", "nvidia-container-cli", "unknown or invalid runtime name")
ARCHIVE_GLOBS = ("DONE_*", "model_*.bin", "state_*.bin", "main.log", "stdout.log", "run.json")


# -------------------------------------------------------------------------------------------------- facts
def image_ref(cfg: KitConfig) -> str:
    try:
        from kitctl.images.render import runtime_ref
        return runtime_ref(cfg)
    except ImportError:   # pragma: no cover - images area not present
        return f"{cfg.image}:latest"


def inspect_image(ref: str) -> dict:
    """Image id, digests and labels through python-on-whales; {} when there is no engine or no image."""
    try:
        from python_on_whales import docker
        img = docker.image.inspect(ref)
        return {"id": img.id, "repo_digests": list(img.repo_digests or []),
                "labels": dict(getattr(img.config, "labels", None) or {})}
    except Exception:   # no docker CLI / engine / image: recorded as unknown, the run itself will say why
        return {}


def gather_facts(cfg: KitConfig, req: TrainRequest, inventory: Optional[Path] = None,
                 mpirun: str = "/usr/bin/mpirun", environ: Optional[dict[str, str]] = None) -> Facts:
    """Read everything the planner needs from this machine (nvidia-smi or --inventory, shards, run folder)."""
    from kitctl.train.tune import load_records

    preset = get_preset(req.preset)
    data_dir = Path(req.data) if req.data else cfg.data_root / preset.data
    out_dir = Path(req.out) if req.out else cfg.runs_dir / (req.name or preset.name)
    gpus = load_inventory(inventory)
    data = inspect_data(data_dir)
    hs = cfg.data_root / "hellaswag" / "hellaswag_val.bin"
    tok = cfg.data_root / "gpt2_tokenizer.bin"
    image = image_ref(cfg)
    bin_dir = cfg.data_root / "native" / "bin"
    runtime_ids: dict[str, str] = {}
    if req.runtime == "native":
        for prec, name in (("bf16", "train_gpt2cu"), ("fp32", "train_gpt2cu_fp32")):
            b = Path(req.binary) if req.binary else bin_dir / name
            if b.is_file():
                runtime_ids[prec] = "sha256:" + sha256_file(b)
    else:
        iid = inspect_image(image).get("id")
        if iid:
            runtime_ids = {"bf16": iid, "fp32": iid}
    return Facts(gpus=gpus, data=data, out=inspect_out(out_dir.absolute()), data_root=cfg.data_root,
                 host=host_facts(mpirun, environ), image=image, native_bin_dir=bin_dir, nccl_env=nccl_env(cfg.nccl),
                 hellaswag=hs if hs.is_file() else None, tokenizer=tok if tok.is_file() else None,
                 runtime_ids=runtime_ids, tune_records=load_records(cfg.data_root / "tune"),
                 run_token=uuid.uuid4().hex[:8])


# ---------------------------------------------------------------------------------------------- execution
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
    if plan.runtime == "native":
        b = Path(plan.binary)
        if not (b.is_file() and os.access(b, os.X_OK)):
            raise KitError(f"no train_gpt2cu binary at {b}",
                           "build it with `kitctl build --runtime native` or pass --binary PATH")
        exe = plan.argv[0]
        if exe == "mpirun" or (os.path.sep in exe and not os.access(exe, os.X_OK)):
            raise KitError(f"no mpirun at {exe}: {plan.ranks} ranks need Open MPI on this host",
                           "install it (apt install openmpi-bin) or pass --mpirun PATH")


def prepare_out(plan: Plan) -> Optional[Path]:
    """Create the run folder (recursively, as the calling user); archive old checkpoints on --fresh;
    native: llm.c's working directory with links to the eval files it opens relative to its cwd."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    archived = None
    if plan.archive_existing:
        archived = plan.out_dir / time.strftime("archive-%Y%m%dT%H%M%SZ", time.gmtime())
        archived.mkdir()
        for pattern in ARCHIVE_GLOBS:
            for p in plan.out_dir.glob(pattern):
                p.rename(archived / p.name)
    if plan.cwd is not None:
        plan.cwd.mkdir(parents=True, exist_ok=True)
        for link, target in plan.links:
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
    return archived


def _run_native(plan: Plan, on_line: Callable[[str], None]) -> tuple[int, bool]:
    """Run the argv in its own process group; Ctrl-C stops the whole group (mpirun and every rank)."""
    env = {**os.environ, **plan.env}
    try:
        proc = subprocess.Popen(plan.argv, env=env, cwd=plan.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, errors="replace", start_new_session=True)
    except OSError as e:
        raise KitError(f"cannot start {plan.argv[0]}: {e}", "check --binary / --mpirun") from None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            on_line(line.rstrip("\n"))
        return proc.wait(), False
    except KeyboardInterrupt:
        _stop_group(proc)
        return proc.returncode if proc.returncode is not None else 130, True


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the launch's process group (mpirun forwards it to every rank), SIGKILL what is left after the
    grace period — or at once on a second Ctrl-C."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:   # impatient second Ctrl-C: kill now
            continue
        break
    try:   # mpirun is gone; make sure no rank outlived it
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


class _TerminationAsInterrupt:
    """While a launch runs, SIGTERM and SIGHUP to kitctl act like Ctrl-C, so the ranks (in their own process
    group / container) are stopped instead of orphaned."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __enter__(self):
        self.old = {}
        try:
            for sig in self.SIGNALS:
                self.old[sig] = signal.signal(sig, self._raise)
        except ValueError:   # not the main thread: leave the handlers alone
            self.old = {}
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def _run_docker(plan: Plan, on_line: Callable[[str], None], client=None) -> tuple[int, bool]:
    from kitctl.host.runtimes import DockerRuntime

    rt = DockerRuntime(client)
    try:
        return rt.run(plan.container, on_line), False
    except KeyboardInterrupt:
        name = plan.container.name
        try:
            rt.docker.container.stop(name, time=STOP_GRACE_S)
        except Exception:
            pass
        try:
            if rt.docker.container.exists(name):
                rt.docker.container.kill(name)
        except Exception:
            pass
        return 130, True


def launch(plan: Plan, on_line: Callable[[str], None], docker_client=None) -> Outcome:
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

    with _TerminationAsInterrupt():
        if plan.runtime == "docker":
            out.rc, out.interrupted = _run_docker(plan, line, docker_client)
        else:
            out.rc, out.interrupted = _run_native(plan, line)
    return out


# ------------------------------------------------------------------------------------------------- records
def runtime_record(plan: Plan) -> dict:
    if plan.runtime == "docker":
        return {"kind": "docker", "image": plan.container.image, **inspect_image(plan.container.image)}
    b = Path(plan.binary)
    return {"kind": "native", "binary": str(b), "sha256": sha256_file(b) if b.is_file() else None,
            "mpirun": plan.argv[0] if "mpirun" in Path(plan.argv[0]).name else None}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_run_json(plan: Plan, session: dict) -> Path:
    path = plan.out_dir / "run.json"
    history: list = []
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            history = old.get("history", [])
            if old.get("session") and old["session"].get("id") != session.get("id"):
                history.append(old["session"])
        except (OSError, ValueError):
            history = []
    from kitctl import __version__

    rec = {
        "kit_version": __version__,
        "plan": plan.as_dict(),
        "argv": plan.argv,
        "command": plan.command_line(),
        "runtime": session.get("runtime"),
        "gpus": [g.as_dict() for g in plan.gpus],
        "data": {"dir": str(plan.data.dir), "prefix": plan.data.prefix, "manifest_sha256": plan.data.manifest_sha256,
                 "fingerprint": plan.data.fingerprint, "train_tokens": plan.data.train_tokens},
        "session": {k: v for k, v in session.items() if k != "runtime"},
        "history": history[-50:],
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def next_resume_step(out_dir: Path) -> Optional[int]:
    return inspect_out(out_dir).last_done


# --------------------------------------------------------------------------------------------------- train
class Display:
    """A rich progress bar fed by step lines; other notable lines are printed above it."""

    NOTABLE = ("val loss", "HellaSwag", "Writing checkpoint", "WARNING", "Error", "ERROR", "error", "out of memory",
               "generating", "Fell back")

    def __init__(self, console, plan: Plan, quiet: bool = False):
        self.console, self.plan, self.quiet = console, plan, quiet
        self.progress = None
        self.task = None
        self.n = 0

    def __enter__(self):
        if self.quiet:
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), console=self.console, transient=False,
                                 disable=not self.console.is_terminal)
        self.progress.__enter__()
        start = self.plan.resume_step or 0
        self.task = self.progress.add_task("train", total=self.plan.steps, completed=start, info="starting…")
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def info(self, steps: list[Step]) -> str:
        s = steps[-1]
        recent = [x.ms for x in steps[-20:] if x.step > 1] or [s.ms]
        ms = statistics.median(recent)
        tok_s = self.plan.total_batch / (ms / 1000) if ms > 0 else 0.0
        eta = max(0, s.total - s.step) * ms / 1000
        h, rem = divmod(int(eta), 3600)
        return (f"loss {s.loss:.4f} | {tok_s:,.0f} tok/s | MFU {fmt_mfu(s.mfu)} | "
                f"{ms:.0f} ms/step | ETA {h}:{rem // 60:02d}:{rem % 60:02d}")

    def line(self, text: str, steps: list[Step]) -> None:
        if self.quiet:
            return
        st = parse_step(text)
        if st is not None:
            self.n += 1
            info = self.info(steps)
            if self.progress is not None and self.console.is_terminal:
                self.progress.update(self.task, completed=st.step, info=info)
            elif self.n == 1 or st.step % 10 == 0 or st.step == st.total:
                self.console.print(f"step {st.step}/{st.total} | {info}", highlight=False)
            return
        if any(k in text for k in self.NOTABLE):
            self.console.print(text, markup=False, highlight=False)


def run_training(plan: Plan, facts: Facts, console, replan: Optional[Callable[[TrainRequest], Plan]] = None,
                 docker_client=None, quiet: bool = False) -> dict:
    """Execute a plan (with one B/2 retry on an out-of-memory start). Returns the session record."""
    if plan.complete:
        console.print(f"{plan.out_dir}: already complete (checkpoint at step {plan.resume_step} of {plan.steps}); "
                      "nothing to do. Use --steps N to train further, or --fresh to start over.")
        return {"status": "complete", "exit_status": 0}
    preflight(plan)
    attempts: list[dict] = []
    while True:
        archived = prepare_out(plan)
        if archived is not None:
            console.print(f"--fresh: moved the old checkpoints to {archived}")
        session = {"id": uuid.uuid4().hex[:12], "start": _now(), "runtime": runtime_record(plan), "resumed_from": plan.resume_step,
                   "micro_batch": plan.micro_batch, "recompute": plan.recompute, "attempts": attempts}
        write_run_json(plan, session)
        log = (plan.out_dir / "stdout.log").open("a", buffering=1)
        log.write(f"# kitctl {_now()} {plan.command_line()}\n")
        steps_ref: list[Step] = []
        with Display(console, plan, quiet) as disp:
            def on_line(s: str) -> None:
                log.write(s + "\n")
                st = parse_step(s)
                if st is not None:
                    steps_ref.append(st)
                disp.line(s, steps_ref)
            try:
                out = launch(plan, on_line, docker_client)
            finally:
                log.close()
        tok_s = throughput(out.steps, plan.total_batch)
        session.update(end=_now(), exit_status=out.rc, first_step=out.steps[0].step if out.steps else None,
                       last_step=out.last_step, tok_s_median=tok_s,
                       mfu_last=(out.steps[-1].mfu if out.steps else None))
        if out.managed_fallback:
            console.print("[yellow]warning:[/] llm.c fell back to host (managed) memory for the optimizer state: "
                          "it runs, but slowly; use a smaller --micro-batch or more GPUs")
        if out.interrupted:
            nxt = next_resume_step(plan.out_dir)
            session["status"] = "interrupted"
            session["next_resume_step"] = nxt
            write_run_json(plan, session)
            where = (f"the next run resumes from the checkpoint at step {nxt}" if nxt is not None else
                     "no checkpoint was written yet: the next run starts over")
            raise KitError(f"stopped at step {out.last_step or 0}: all ranks are stopped; {where}",
                           "re-run the same command to continue", exit_code=130)
        if out.rc != 0 and out.oom_before_first_step and not plan.resume and not attempts \
                and plan.micro_batch > 1 and replan is not None:
            half = plan.micro_batch // 2
            attempts.append({"micro_batch": plan.micro_batch, "status": "out of memory before the first step"})
            session["status"] = "oom-retry"
            write_run_json(plan, session)
            console.print(f"[yellow]train_gpt2cu ran out of GPU memory at start with B={plan.micro_batch}: "
                          f"retrying once with B={half}[/]")
            req = dataclasses.replace(plan.request, micro_batch=half, oom_retry_from=plan.micro_batch)
            plan = replan(req)
            continue
        session["status"] = "ok" if out.rc == 0 else "failed"
        write_run_json(plan, session)
        if out.rc != 0:
            tail = "\n".join(out.tail[-15:])
            hint = f"the full output is in {plan.out_dir / 'stdout.log'}"
            no_gpu = any(m in ln for ln in out.tail for m in DOCKER_GPU_ERRORS)
            if plan.runtime == "docker" and not out.steps and (out.rc == 125 or no_gpu):
                # docker's own failure (exit 125): train_gpt2cu never ran
                raise KitError(f"the container could not start (docker run exited with status {out.rc}):\n{tail}",
                               ("Docker cannot give the container GPUs: install nvidia-container-toolkit "
                                "(then `sudo nvidia-ctk runtime configure --runtime=docker`) and restart Docker; "
                                if no_gpu else "see Docker's message above; ")
                               + "`kitctl doctor` checks the engine and the GPU runtime")
            if out.oom_before_first_step:
                hint = ("out of GPU memory: " + ("resuming needs the checkpoint's B; free the GPU or start over "
                                                 "with --fresh and a smaller --micro-batch" if plan.resume else
                                                 "pass a smaller --micro-batch") + "; " + hint)
            raise KitError(f"train_gpt2cu exited with status {out.rc} (last step {out.last_step}):\n{tail}", hint)
        if not quiet:
            msg = f"done: step {out.last_step}/{plan.steps}"
            if tok_s:
                msg += f", {tok_s:,.0f} tok/s (median step, warm-up excluded)"
            console.print(msg + f"; run folder {plan.out_dir}")
        return session


def plan_for(cfg: KitConfig, req: TrainRequest, inventory: Optional[Path] = None, mpirun: str = "/usr/bin/mpirun"
             ) -> tuple[Plan, Facts, Callable[[TrainRequest], Plan]]:
    facts = gather_facts(cfg, req, inventory, mpirun)

    def replan(r: TrainRequest) -> Plan:
        return build_plan(r, dataclasses.replace(facts, out=inspect_out(facts.out.dir)))

    return build_plan(req, facts), facts, replan


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
