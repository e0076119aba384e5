"""The seven stages of ``kitctl reproduce``, each one call of its area's public entry point.

The pipeline's execution adapter (kitctl/pipeline/inputs.py is its planning one): when an area moves, only
these two files change. Touch points:

    preflight   kitctl.host.doctor.gather / evaluate (+ this plan's own disk check instead of doctor's fixed one)
    build       native: kitctl.images.llmc_source.fetch, native_build.discover / plan, run by kitctl.core.proc;
                docker: kitctl.images.request.BuildRequest, context.prepare_context, build.tags / build (runtime image)
    data        kitctl.data.execute.execute (in this process: the kit's own Python has every data package)
    hellaswag   kitctl.data.execute.execute of the hellaswag recipe
    tune        kitctl.train.run_tune
    train       kitctl.train.plan_for / run_training (resumes from the newest checkpoint by itself)
    report      kitctl.observe.report.write_report

Each stage returns a :class:`Result` (done or skipped, and one line saying what it made or why it skipped) or
raises: KitError (the message says what failed), KeyboardInterrupt (Ctrl-C / SIGTERM; the orchestrator records
it and a re-run continues). Every stage writes its own log in ``<run>/logs/<stage>.log``.
"""
from __future__ import annotations

import dataclasses
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Optional, cast

from rich.console import Console

from kitctl.core import proc
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.run_folder import RunFolder
from kitctl.core.records import short
from kitctl.core.data_folder import DataFolder
from kitctl.core.progress import format_duration
from kitctl.data import hf
from kitctl.data.execute import execute, prepare_env
from kitctl.data.plan import DataPlan
from kitctl.host import disks, doctor, docker_disk
from kitctl.images import llmc_source, native_build
from kitctl.images import build as image_build
from kitctl.images import move as images_move
from kitctl.images import lock as images_lock
from kitctl.images import lock_resolve
from kitctl.images.context import prepare_context
from kitctl.images.request import BuildRequest
from kitctl.observe.report import write_report
from kitctl.pipeline import forecast as fc
from kitctl.pipeline.inputs import Gathered, ReproduceOptions, places
from kitctl.train import inspect_image, plan_for, run_tune, run_training

REPORT_NAME = "report.html"


@dataclass
class Result:
    status: str        # done | skipped
    detail: str


class _Tee(io.TextIOBase):
    """A text stream writing to the stage log and the user's terminal stream."""

    def __init__(self, *streams: IO[str]):
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


class StageLog:
    """``<run>/logs/<stage>.log``, appended by every session; ``say`` also prints to the user's console."""

    def __init__(self, path: Path, console: Console):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.console = path, console
        self.file = path.open("a", buffering=1, encoding="utf-8", errors="replace")

    def say(self, msg: str) -> None:
        self.console.print(msg, markup=False, highlight=False, soft_wrap=True)
        self.file.write(msg + "\n")

    def line(self, msg: str) -> None:
        """Into the log only (chatty output: compiler lines, docker build steps)."""
        self.file.write(msg + "\n")

    def tee_console(self) -> Console:
        """A console for an area function that prints: plain lines into the log and onto the terminal."""
        return Console(file=cast(IO[str], _Tee(self.file, self.console.file)), force_terminal=False, highlight=False,
                       width=max(100, self.console.width), soft_wrap=True, emoji=False)

    def close(self) -> None:
        self.file.close()


@dataclass
class StageContext:
    cfg: KitConfig
    opts: ReproduceOptions
    gathered: Gathered
    forecast: fc.Forecast
    console: Console
    log: StageLog
    progress: Callable[[Optional[float], str], None]


# --------------------------------------------------------------------------------------------- preflight
def preflight(ctx: StageContext, data_done_bytes: int) -> Result:
    """kitctl doctor's checks that matter for this run, and free space against what this plan still needs."""
    opts = ctx.opts
    cfg = ctx.cfg.model_copy(update={"runtime": opts.runtime})   # judge the runtime this run uses
    facts = doctor.gather(cfg, opts.inventory)
    # the arch list is this box's GPUs (the build stage adds them); doctor's disk rules (data root, Docker's
    # storage) are replaced by this plan's needs; natively the provider's CUDA pin does not apply (the host toolkit builds)
    drop = {"data root space", "docker storage", "arch list"} | ({"driver"} if opts.runtime == "native" else set())
    findings = [f for f in doctor.evaluate(facts, cfg) if f.check not in drop]
    need = fc.remaining_disk(ctx.forecast, data_done_bytes)
    if facts.free_bytes is not None:
        ok = facts.free_bytes >= need
        findings.append(doctor.Finding(
            "disk for this run", "ok" if ok else "fail",
            f"{facts.free_bytes / 1e9:.1f} GB free at {cfg.data_root}; the stages still to run need "
            f"{need / 1e9:.1f} GB", "" if ok else "point data_root in kit.yaml at a bigger disk (`kitctl init "
            "--data-root /big/disk`), or free space; --stream skips the HF cache"))
    docker_need = fc.remaining_docker(ctx.forecast)
    dk = docker_disk.query() if opts.runtime == "docker" else docker_disk.DockerStorage()
    if docker_need and opts.runtime == "docker":
        findings.append(doctor.docker_space(dk, docker_need, cfg, fc.build_docker_bytes("wheels")))
    findings += shared_disks(ctx, dk, data_done_bytes)
    for f in findings:
        ctx.log.say(f"{f.status:5} {f.check}: {f.detail}" + (f" -- {f.meaning}" if f.meaning and f.status != "ok" else ""))
    fails = [f.check for f in findings if f.status == "fail"]
    if fails:
        raise KitError(f"preflight: {', '.join(fails)} failed (see the lines above)",
                       "fix those (kitctl doctor explains each check), then re-run the same command")
    warns = sum(f.status == "warn" for f in findings)
    return Result("done", f"ready ({warns} warning(s)); {need / 1e9:.1f} GB still needed on the data root"
                  + (f", {docker_need / 1e9:.1f} GB in Docker's storage" if docker_need else ""))


def shared_disks(ctx: StageContext, dk: docker_disk.DockerStorage, data_done_bytes: int) -> list[doctor.Finding]:
    """One finding per filesystem that holds several of this run's places (data root, HF cache, Docker's
    storage): the sum they still need against its free space, counted once."""
    f = dataclasses.replace(ctx.forecast, box=dataclasses.replace(ctx.forecast.box, places=places(ctx.cfg, dk)))
    out = []
    for fs in fc.filesystems(f, data_done_bytes):
        if fs.shared and sum(1 for n in fs.needs.values() if n) > 1:
            status, detail, meaning = disks.verdict(fs, ctx.cfg.provider)
            out.append(doctor.Finding(f"one disk ({fs.mount})", status, detail, meaning))
    return out


# ------------------------------------------------------------------------------------------------- build
def build(ctx: StageContext) -> Result:
    cfg, opts, archs = ctx.cfg, ctx.opts, ctx.gathered.archs
    if opts.runtime == "native":
        dest = cfg.layout.native_bin
        tplan = ctx.gathered.train_plan
        assert tplan is not None        # a run plans on GPUs (gather refuses without)
        want = Path(tplan.launch.binary)     # --binary, else the one this build makes in dest
        if want.is_file():
            return Result("skipped", f"{want} exists" + (" (--binary)" if opts.binary else ""))
        spec = opts.llmc_src or cfg.mirrors.llmc_src
        src = Path(spec).expanduser() if spec and Path(spec).expanduser().is_dir() else None
        if src is None:
            src = cfg.layout.native_src
            got = llmc_source.fetch(spec, src, cfg.ca_cert)
            ctx.log.say(f"llm.c source: {got.label()} -> {src}")
        tc = native_build.discover(cudnn_frontend=opts.cudnn_frontend, src=src)
        for note in tc.notes:
            ctx.log.say(f"note: {note}")
        for argv in native_build.plan(src, dest, archs, tc, None, strict=True):
            ctx.log.say("$ " + " ".join(argv))
            proc.check(argv, ctx.log.line, what=f"native build of {argv[-1]}",
                       hint=f"the compiler output is in {ctx.log.path}; docs/images.md")
        return Result("done", f"built {', '.join(native_build.BINARIES)} for sm {','.join(map(str, archs))} in {dest}")
    req = BuildRequest.from_config(cfg, archs=archs, target="runtime", llmc_src=opts.llmc_src)
    req.lock = images_lock.load()          # docker/images.lock when present, as `kitctl build` uses it
    pulling = bool(cfg.pull_image) and not (opts.bundle and opts.bundle.image("runtime"))
    bctx = prepare_context(req, fetch_source=False if pulling and not (opts.llmc_src or cfg.mirrors.llmc_src)
                           else None)      # a pull needs no llm.c source (nor GitHub)
    tag = image_build.tags(req, bctx, "runtime")[0]
    if inspect_image(tag).id:
        return Result("skipped", f"image {tag} exists (same recipe hash)")
    packed = opts.bundle.image("runtime") if opts.bundle is not None else None
    if packed is not None:
        return _load_bundled(ctx, packed[0], tag, req, bctx)
    if pulling:
        assert cfg.pull_image
        said = images_move.pull_checked(req, bctx, "runtime", cfg.pull_image, on_line=ctx.log.line)
        ctx.log.say(said)
        return Result("done", said)
    ctx.log.say("$ " + " ".join(image_build.build_argv(req, bctx, "runtime")))
    tags = lock_resolve.build_locked(req, bctx, "runtime", on_line=ctx.log.line)
    return Result("done", f"built {' '.join(tags)}")


def _load_bundled(ctx: StageContext, tar: Path, tag: str, req: BuildRequest, bctx) -> Result:
    """docker load the bundle's runtime image; it must be this plan's recipe (else what differs is said)."""
    assert ctx.opts.bundle is not None
    ctx.log.say(f"$ docker load -i {tar}")
    ctx.log.say(images_move.load_checked(req, bctx, "runtime", ctx.opts.bundle, on_line=ctx.log.line))
    if not inspect_image(tag).id:
        raise ConfigError(f"the bundle's image is not {tag}, the image this plan needs",
                          "pack the bundle again with this kitctl after `kitctl build` for these GPUs (--arch)")
    return Result("done", f"loaded {tag} from the bundle")


# -------------------------------------------------------------------------------------------------- data
class Prefetch:
    """The dataset's HuggingFace download, run in a thread while the image builds (they share nothing; the
    forecast counts the overlap). The data stage waits for it, then finds the files in the HF cache; a failed
    download is only said: the data stage downloads again and reports its own error."""

    def __init__(self, plan: DataPlan, list_files: Any = None, download: Any = None):
        self.plan, self.list_files, self.download = plan, list_files, download
        self.thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None

    def wanted(self) -> bool:
        p, r = self.plan, self.plan.recipe
        return r is not None and r.kind == "hf_parquet" and not p.stream and p.source is None and p.files is None

    def start(self, say: Callable[[str], None]) -> None:
        if not self.wanted() or self.thread is not None:
            return
        p, r = self.plan, self.plan.recipe
        assert r is not None and r.repo      # wanted(): an HF parquet recipe
        repo = r.repo
        prepare_env(p)

        def run() -> None:
            try:
                rev = hf.resolve_revision(repo, r.revision() or "main") if self.list_files is None else None
                hf.hf_source(r, False, list_files=self.list_files, download=self.download, revision=rev)
            except BaseException as e:       # the data stage tries again and says what is wrong
                self.error = e

        self.thread = threading.Thread(target=run, name="kitctl-prefetch", daemon=True)
        self.thread.start()
        say(f"downloading {r.repo} ({r.config}) into {p.hf_home} while the image builds")

    def wait(self, say: Callable[[str], None]) -> None:
        if self.thread is None:
            return
        if self.thread.is_alive():
            say("waiting for the dataset download started during the build")
        self.thread.join()
        if self.error is not None:
            say(f"the download started during the build stopped ({type(self.error).__name__}: {self.error}); "
                "the data stage downloads again")


def data(ctx: StageContext) -> Result:
    plan = ctx.gathered.data_plan
    total = ctx.gathered.inputs.data.tokens or None
    done = {"tokens": ctx.gathered.inputs.data.done_tokens, "shard": -1}

    def progress(n: int, shard: int) -> None:
        done["tokens"] += n
        if shard != done["shard"]:
            done["shard"] = shard
            ctx.log.say(f"shard {shard}: {done['tokens']:,} tokens")
        frac = min(1.0, done["tokens"] / total) if total else None
        ctx.progress(frac, f"shard {shard}, {done['tokens']:,} tokens")

    summary = execute(plan, progress=progress, log=ctx.log.say)   # a Summary (tokenized) or a manifest (ready)
    tokens = int(getattr(summary, "total_tokens", 0) or 0)
    if getattr(summary, "already_complete", False):
        return Result("skipped", f"{plan.out_dir} is complete: {tokens:,} tokens")
    _verify_once(plan.out_dir, ctx.log.say)
    return Result("done", f"{plan.out_dir}: {tokens:,} tokens, every shard's sha256 checked")


def _verify_once(out_dir: Path, say: Callable[[str], None]) -> None:
    """The full check (`kitctl data verify`: headers, token counts, sha256 of every shard against manifest.json),
    once, right after the stage wrote the folder; later readers (train, status) compare only sizes and mtimes."""
    written, problems = DataFolder(out_dir).verify()
    if problems:
        raise KitError(f"{out_dir} does not check out against its manifest.json right after the data stage "
                       f"wrote it:\n    " + "\n    ".join(problems[:10])
                       + (f"\n    ... and {len(problems) - 10} more" if len(problems) > 10 else ""),
                       f"re-run the same command (the data stage rewrites damaged shards from the first bad one); "
                       f"if it fails again, check the disk under {out_dir} (dmesg, smartctl)")
    say(f"verified {out_dir}: {len(written.shards)} shards, {written.total_tokens:,} tokens, headers and "
        "sha256 match manifest.json")


def hellaswag(ctx: StageContext) -> Result:
    plan = ctx.gathered.hellaswag_plan
    if plan.hellaswag_bin.is_file():
        return Result("skipped", f"{plan.hellaswag_bin} exists")
    n = execute(plan, log=ctx.log.say)
    return Result("done", f"{plan.hellaswag_bin}: {n:,} examples" if isinstance(n, int) else str(plan.hellaswag_bin))


# -------------------------------------------------------------------------------------------------- tune
def tune(ctx: StageContext) -> Result:
    st = ctx.forecast.stage("tune")
    if st.status != "to do" or ctx.forecast.tune_steps is None:
        return Result("skipped", st.detail)
    steps, warmup = ctx.forecast.tune_steps
    ctx.log.say(f"tune: {st.detail}, forecast ~{format_duration(st.seconds)}")
    # the tune's schedule is the bench mode: a pass-through such as `-n 1000` is the training's, not the tune's
    req = ctx.gathered.train_request
    try:
        rec = run_tune(ctx.cfg, req, ctx.log.tee_console(), ctx.opts.inventory, ctx.opts.mpirun, steps=steps,
                       warmup=warmup)
    except KitError as e:
        if e.exit_code == 130:
            raise
        ctx.log.say(f"tune failed: {e.message}")
        return Result("skipped", f"tune failed ({short(e.message.splitlines()[0], 160)}): training sizes B from its models")
    best = rec.record.best if rec is not None else None
    if best is None:
        return Result("skipped", "tune measured nothing usable: training sizes B from its models")
    return Result("done", f"fastest B={best.micro_batch} -r {best.recompute} at {best.tok_s or 0:,} tok/s "
                          "(cached for training)")


# ------------------------------------------------------------------------------------------------- train
def train(ctx: StageContext) -> Result:
    plan, facts, replan = plan_for(ctx.cfg, ctx.gathered.train_request, ctx.opts.inventory, ctx.opts.mpirun)
    for k, v in plan.describe():
        ctx.log.line(f"{k}: {v}")
    for n in plan.notes:
        ctx.log.line(f"note: {n}")
    d, r = plan.decisions, plan.decisions.resumption
    ctx.log.line(f"command: {plan.launch.command_line()}")
    ctx.log.line(f"llm.c's own output: {RunFolder(d.out_dir).stdout_log}")
    if r.complete:
        return Result("skipped", f"complete: checkpoint at step {r.resume_step} of {d.schedule.steps}")
    ctx.log.say(f"train: {d.schedule.steps} steps, B={d.batch.micro_batch} -r {d.batch.recompute}, "
                f"{d.hardware.precision}, {d.ranks} GPU(s)"
                + (f", resuming from step {r.resume_step}" if r.resume else ""))
    session = run_training(plan, facts, ctx.console, replan)
    tok_s = session.tok_s_median
    ctx.log.line(f"session: {session.model_dump_json(exclude_none=True)}")
    return Result("done", f"step {session.last_step}/{d.schedule.steps}" + (f", {tok_s:,.0f} tok/s" if tok_s else ""))


def train_progress(run_dir: Path, total: int) -> tuple[Optional[float], str]:
    """The last logged train step of main.log (llm.c writes ``s:N trl:...``; read from its last 4 KiB by the run
    folder's main.log reader), as (fraction, text)."""
    last = RunFolder(run_dir).last_train_step()
    if last is None:
        return None, "starting"
    step = last + 1
    return (min(1.0, step / total) if total else None), f"step {step}/{total}"


# ------------------------------------------------------------------------------------------------ report
def report(ctx: StageContext) -> Result:
    run_dir = ctx.gathered.run_dir
    out = run_dir / REPORT_NAME
    label = f"{ctx.opts.preset}, {ctx.gathered.data_plan.dataset}, {ctx.gathered.inputs.train.gpus_label}"
    write_report([run_dir], out, [label])
    return Result("done", str(out))
