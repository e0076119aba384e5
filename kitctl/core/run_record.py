"""``<run>/run.json``'s schema: the typed record of a training run (:class:`RunRecord`) and the few facts read from it
that are not fields of their own (:func:`launch_flag`, :func:`total_steps`, :func:`session_of`, :func:`gpu_label`).

Reading and writing the file is :class:`kitctl.core.run_folder.RunFolder`'s (``load``, ``read``, ``update``,
``write_session``: the bounded reader, the lock, the one atomic writer); its writers are ``kitctl train`` (and the
Slurm launcher, through train's ``write_run_json``) and ``kitctl eval``; its readers the resume check in
``kitctl.train.facts``, ``kitctl status``, liveness, reports and the model commands.

Shape (schema 1; files written before the schema field existed read as schema 1)::

    kit_version, schema_version
    plan      what the checkpoints are written with and why (PlanRecord: ranks, micro_batch, seq_len,
              total_batch, descriptor, precision, data fingerprint, data_dir: the resume key; the choices
              and notes; the tokens/s estimate and its basis)
    argv, command       what runs (argv list; the copy-pasteable line)
    runtime   image reference + id, digests, labels, images_lock (docker/images.lock hash) | native binary + sha256 + mpirun | slurm container
    gpus      the ranks' GPUs; data: folder, prefix, manifest sha256, shard fingerprint, train tokens
    session   this launch: id, launcher, pid + host (of kitctl), start/end, exit status, first/last step,
              median tokens/s, last MFU, status, OOM retries, next resume step (slurm: job id, script)
    history   earlier sessions, newest last (at most 50)
    evals     results of ``kitctl eval`` (kitctl/model/record.py appends them)

Every field is optional when read, so a partial or hand-made run.json still gives what it has; keys this kit does
not know (a newer kit's) are kept when the record is written back.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from kitctl.core.records import Record

MAX_HISTORY = 50


class GpuRecord(BaseModel):
    index: Optional[int] = None
    name: str = ""
    compute_cap: Optional[int] = None
    memory_mib: Optional[int] = None
    driver: Optional[str] = None


class PlanRecord(BaseModel):
    preset: Optional[str] = None
    runtime: Optional[str] = None
    precision: Optional[str] = None
    gpus: list[GpuRecord] = Field(default_factory=list)
    ranks: Optional[int] = None
    micro_batch: Optional[int] = None
    recompute: Optional[int] = None
    seq_len: Optional[int] = None
    total_batch: Optional[int] = None
    grad_accum: Optional[int] = None
    steps: Optional[int] = None
    descriptor: Optional[str] = None
    data: Optional[str] = None               # the shard fingerprint
    data_dir: Optional[str] = None
    out_dir: Optional[str] = None
    binary: Optional[str] = None
    llmc_args: list[str] = Field(default_factory=list)
    argv: list[str] = Field(default_factory=list)
    choice: Optional[str] = None             # where B / -r came from
    memory_peak_gb: Optional[float] = None
    memory_need_gb: Optional[float] = None
    memory_basis: Optional[str] = None
    resume: Optional[bool] = None
    resume_step: Optional[int] = None
    notes: list[str] = Field(default_factory=list)
    est_tok_s: Optional[float] = None
    est_basis: Optional[str] = None
    tune_file: Optional[str] = None

    # what must match for llm.c's -y 1 to continue this run correctly
    RESUME_KEY: ClassVar[tuple[str, ...]] = ("ranks", "micro_batch", "seq_len", "total_batch", "descriptor", "precision",
                                   "data", "data_dir")

    def resume_key(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.RESUME_KEY}


class RuntimeRecord(BaseModel):
    kind: str = ""                           # docker | native | pyxis | apptainer | none
    image: Optional[str] = None
    id: Optional[str] = None
    repo_digests: Optional[list[str]] = None
    labels: Optional[dict[str, str]] = None
    images_lock: Optional[str] = None        # the image's docker/images.lock hash (label org.llmc-kit.images-lock)
    binary: Optional[str] = None
    sha256: Optional[str] = None
    mpirun: Optional[str] = None
    sif: Optional[str] = None


class DataRecord(BaseModel):
    dir: Optional[str] = None
    prefix: Optional[str] = None
    train_pattern: Optional[str] = None      # exactly what llm.c's -i / -j got (glob(3) patterns, folder escaped)
    val_pattern: Optional[str] = None
    manifest_sha256: Optional[str] = None
    fingerprint: Optional[str] = None
    train_tokens: Optional[int] = None


class Attempt(BaseModel):
    micro_batch: int
    status: str


SessionStatus = Literal["ok", "failed", "interrupted", "oom-retry"]


class SessionRecord(BaseModel):
    id: Optional[str] = None
    launcher: str = "local"
    pid: Optional[int] = None                # kitctl's process (local launcher)
    pid_start: Optional[int] = None          # its start time (clock ticks after boot, /proc/PID/stat): a reused pid is not it
    host: Optional[str] = None
    container: Optional[str] = None          # the container's name, when recorded
    start: Optional[str] = None
    end: Optional[str] = None
    resumed_from: Optional[int] = None
    micro_batch: Optional[int] = None
    recompute: Optional[int] = None
    attempts: list[Attempt] = Field(default_factory=list)
    exit_status: Optional[int] = None
    first_step: Optional[int] = None
    last_step: Optional[int] = None
    tok_s_median: Optional[float] = None
    mfu_last: Optional[float] = None
    status: Optional[SessionStatus] = None   # None while it runs (or when kitctl was killed)
    next_resume_step: Optional[int] = None
    tuned: Optional[str] = None              # the tune record `kitctl train` measured first
    # slurm launcher
    submitted: Optional[str] = None
    job_id: Optional[str] = None
    script: Optional[str] = None
    nodes: Optional[int] = None
    gpus_per_node: Optional[int] = None


class RunRecord(Record):
    model_config = ConfigDict(extra="allow")     # a newer kit's keys survive a read-modify-write by this one
    SCHEMA = 1
    KIND = "run record"
    kit_version: Optional[str] = None
    plan: Optional[PlanRecord] = None
    argv: list[str] = Field(default_factory=list)
    command: Optional[str] = None
    runtime: Optional[RuntimeRecord] = None
    gpus: list[GpuRecord] = Field(default_factory=list)
    data: Optional[DataRecord] = None
    session: Optional[SessionRecord] = None
    history: list[SessionRecord] = Field(default_factory=list)
    # results of `kitctl eval` (kitctl/model/record.py appends them); kept as they are across training sessions
    evals: list[dict[str, Any]] = Field(default_factory=list)

    def container_name(self) -> Optional[str]:
        """The container the run was started in: recorded in the session, else the ``--name`` of the ``docker run``."""
        if self.session and self.session.container:
            return self.session.container
        if "docker" in self.argv[:2]:
            for i, w in enumerate(self.argv[:-1]):
                if w == "--name":
                    return self.argv[i + 1]
                if w.startswith("--name="):
                    return w.split("=", 1)[1]
        return None


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


def gpu_label(g: GpuRecord) -> str:
    return (f"{g.index}: " if g.index is not None else "") + (g.name or "?")
