"""The plan of ``kitctl reproduce``, before anything runs: per stage disk, download and time. Pure.

    inputs (what each area says about this run: kitctl/pipeline/inputs.py) + costs.yaml -> Forecast

Nothing here reads the machine or starts a process: tests build the inputs by hand for any box. Times are a
point value and a range ``[low, high]``; training dominates and comes from the tune cache (measured on this box)
or the train planner's tokens/s estimate, plus llm.c's evaluations (val loss and HellaSwag every ``-v`` steps,
forward-only), checkpoint writes and start-up. Disk is what the run leaves on disk at its real size: the HF cache
(parquet), the shards (2 bytes a token + a 1 KB header each), the HellaSwag files, the build, and the
checkpoints llm.c keeps (``model_%08d.bin`` + one ``state_%08d_%05d.bin`` per rank, every ``-n`` steps and at the
last step, all of them unless ``-nk``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from kitctl.core.llmc_files import HEADER_BYTES      # llm.c model / state / shard headers: 256 x int32
from kitctl.core.progress import format_duration
from kitctl.host import disks
from kitctl.pipeline.costs import costs

HELLASWAG_ROWS = 4           # llm.c's EvalLoader: 4 completions (batch rows) per example


# ----------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Box:
    gpus: int                       # GPUs in the box (what a per-GPU-hour price is paid for)
    cpus: int                       # tokenizer processes
    net_bytes_per_s: float          # the download speed assumed (--net-mbps)
    free_bytes: Optional[int] = None   # free space on the data root (None: another box, unknown)
    label: str = ""
    docker_root: str = ""              # Docker's root dir (images, build cache), when known
    docker_free_bytes: Optional[int] = None   # free space there (None: another box, unknown)
    places: tuple[disks.Place, ...] = ()      # where each purpose writes, by filesystem (empty: another box)


@dataclass(frozen=True)
class BuildInput:
    kind: str                       # native | wheels | nvidia (costs.yaml build.*)
    exists: bool                    # a matching build is there already
    detail: str
    local_source: bool = False      # llm.c's source is a local checkout / tarball (nothing to download for it)
    bundled: bool = False           # the image comes from an offline bundle (docker load: no download)
    pulled: bool = False            # the image is pulled from a registry (pull_image / --image) instead of built


@dataclass(frozen=True)
class DataInput:
    kind: str                       # tokenize | pretokenized
    description: str
    tokens: int                     # tokens in the folder once complete
    shards: int
    download_bytes: int             # still to download (0 for local inputs)
    hf_cache_bytes: int             # parquet the HF cache keeps (0 streamed / local)
    done_tokens: int = 0            # already tokenized (a resumed run)
    complete: bool = False
    encoder: str = "gigatoken"      # kitctl.data.encoders: the data image pins the fast one; tiktoken's rates else


@dataclass(frozen=True)
class HellaswagInput:
    examples: int
    exists: bool
    download_bytes: int             # 0 with a local jsonl


@dataclass(frozen=True)
class TrainInput:
    gpus_label: str
    ranks: int
    precision: str
    micro_batch: int
    seq_len: int
    total_batch: int
    steps: int
    params: int                     # parameters as llm.c stores them (padded vocab)
    zero_stage: int
    tok_s: Optional[float]          # None: no estimate for these GPUs
    tok_s_basis: str                # "measured" (tune cache) | "quoted" (a published figure) | "estimate"
    hellaswag_examples: int = 0     # 0: no HellaSwag eval (-h 0, or B < 4)
    val_every: int = 250
    val_batches: int = 20
    checkpoint_every: int = 0
    checkpoints_keep: int = 0       # -nk; 0 keeps all
    done_step: Optional[int] = None  # newest checkpoint (resume from it)
    unplanned: Optional[str] = None  # why the GPUs (and so the time) are not known: a dry run without GPUs


@dataclass(frozen=True)
class TuneInput:
    mode: str                       # auto | on | off
    configs: int                    # (B, -r) pairs the default sweep measures
    cached: Optional[str] = None    # the tune record the train plan uses (then no tune)
    resuming: bool = False          # llm.c resumes only with the checkpoint's B: tuning is moot


@dataclass(frozen=True)
class Inputs:
    box: Box
    build: BuildInput
    data: DataInput
    hellaswag: HellaswagInput
    tune: TuneInput
    train: TrainInput
    report_exists: bool = False
    price_per_gpu_hour: Optional[float] = None


# ---------------------------------------------------------------------------------------------- outputs
@dataclass
class StageForecast:
    name: str
    status: str                     # to do | done | skipped | resume
    disk_bytes: int                 # what the stage leaves on the data root (its real size; done stages too)
    download_bytes: int             # still to download
    seconds: float                  # still to run (point)
    low: float
    high: float
    detail: str
    docker_bytes: int = 0           # what it leaves in Docker's own storage (images, build cache), apart
    cost: Optional[float] = None
    sources: list[tuple[str, str]] = field(default_factory=list)   # (what, where) it downloads from, after mirrors

    @property
    def on_data_root(self) -> bool:
        return not self.docker_bytes

    def as_json(self) -> dict:
        """Seconds not known (a train stage without GPUs to plan on) are null, with the ``reason``."""
        d = {"name": self.name, "disk_bytes": int(self.disk_bytes), "docker_bytes": int(self.docker_bytes),
             "download_bytes": int(self.download_bytes),
             "seconds": _secs(self.seconds), "seconds_low": _secs(self.low),
             "seconds_high": _secs(self.high), "status": self.status, "detail": self.detail,
             "sources": [{"what": what, "from": where} for what, where in self.sources]}
        if not math.isfinite(self.seconds):
            d["reason"] = self.detail
        if self.cost is not None:
            d["cost"] = round(self.cost, 2)
        return d


@dataclass
class Forecast:
    stages: list[StageForecast]
    box: Box
    price_per_gpu_hour: Optional[float] = None
    tune_steps: Optional[tuple[int, int]] = None     # (steps, warmup) when the tune stage runs
    notes: list[str] = field(default_factory=list)
    overlap: tuple[float, float, float] = (0.0, 0.0, 0.0)   # the dataset download running while the image builds
    hf_cache_bytes: int = 0         # of the data stage's disk still to land: the HF cache's parquet (hf_home)
    decisions: dict = field(default_factory=dict)   # the train plan's choices, each with reason and source
    build_kind: str = ""            # native | nvidia | wheels: what the ways out of a full disk may suggest

    def stage(self, name: str) -> StageForecast:
        return next(s for s in self.stages if s.name == name)

    @property
    def disk_bytes(self) -> int:
        """On the data root."""
        return sum(s.disk_bytes for s in self.stages)

    @property
    def docker_bytes(self) -> int:
        """In Docker's storage (its root dir: images, build cache)."""
        return sum(s.docker_bytes for s in self.stages)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def low(self) -> float:
        return sum(s.low for s in self.stages)

    @property
    def high(self) -> float:
        return sum(s.high for s in self.stages)

    @property
    def first_step_seconds(self) -> float:
        """Until training's first step: every stage before train (the data stage already less the overlap)."""
        i = [s.name for s in self.stages].index("train")
        return sum(s.seconds for s in self.stages[:i])

    @property
    def download_bytes(self) -> int:
        return sum(s.download_bytes for s in self.stages)

    @property
    def cost(self) -> Optional[float]:
        return None if self.price_per_gpu_hour is None else sum(s.cost or 0.0 for s in self.stages)

    def as_json(self) -> dict:
        """``{"stages": [{"name", "disk_bytes", "docker_bytes", "download_bytes", "seconds", ...}], "total":
        {"disk_bytes", "docker_bytes", "seconds", "download_bytes", "first_step_seconds"}, "filesystems": [...],
        "decisions": {...}}`` (the stages carry a few more keys: range, status, detail, cost; the data stage
        ``overlap_seconds``: its download time that runs during the build). ``disk_bytes`` is the data root's,
        ``docker_bytes`` Docker's storage (its own disk, often another); ``filesystems`` each filesystem of this
        box with the sum it must hold (docs/reproduce.md); ``decisions`` the train plan's GPUs, precision, B,
        recompute and gradient accumulation, each ``{"value", "reason", "source"}``."""
        stages = [s.as_json() for s in self.stages]
        if self.overlap[0]:
            next(s for s in stages if s["name"] == "data")["overlap_seconds"] = round(self.overlap[0], 1)
        return {"stages": stages,
                "total": {"disk_bytes": int(self.disk_bytes), "docker_bytes": int(self.docker_bytes),
                          "seconds": _secs(self.seconds), "download_bytes": int(self.download_bytes),
                          "first_step_seconds": _secs(self.first_step_seconds)},
                "filesystems": [f.as_json() for f in filesystems(self)],
                "decisions": self.decisions}


def _secs(x: float) -> Optional[float]:
    """JSON has no NaN: a time not known is null."""
    return round(x, 1) if math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------- planner
def _stage(name: str, status: str, disk: float, download: float, t: tuple[float, float, float], detail: str,
           on_data_root: bool = True) -> StageForecast:
    """``disk`` lands on the data root, or in Docker's storage when not ``on_data_root``."""
    return StageForecast(name, status, int(disk) if on_data_root else 0, int(download), t[0], t[1], t[2], detail,
                         0 if on_data_root else int(disk))


def _mid(lo: float, hi: float) -> tuple[float, float, float]:
    return (math.sqrt(lo * hi) if lo > 0 else (lo + hi) / 2), lo, hi


def checkpoint_steps(steps: int, every: int, start: int = 0) -> list[int]:
    """Steps in (start, steps] at which llm.c writes a checkpoint: every ``-n`` steps and the last step."""
    if every <= 0:
        return []
    out = list(range((start // every + 1) * every, steps + 1, every))
    return out if steps in out or steps <= start else [*out, steps]


def eval_steps(steps: int, every: int, start: int = 0) -> int:
    """How many evaluations llm.c runs from ``start`` on: at every multiple of ``-v`` and at the last step."""
    every = max(1, every)
    n = steps // every - start // every + (1 if start % every == 0 else 0)
    return n + (0 if steps % every == 0 else 1)


def checkpoint_bytes(t: TrainInput) -> int:
    """One checkpoint: ``model_*.bin`` (the parameters in the build's precision) + a ``state_*.bin`` per rank
    (AdamW m, v and FP32 master weights, sharded over ranks with ZeRO-1)."""
    model = HEADER_BYTES + t.params * (2 if t.precision == "bf16" else 4)
    shard = math.ceil(t.params / t.ranks) if t.zero_stage >= 1 else t.params
    return model + t.ranks * (HEADER_BYTES + 3 * 4 * shard)


def train_forecast(t: TrainInput) -> tuple[StageForecast, float]:
    """The train stage and its seconds per optimizer step (point)."""
    c = costs().train
    kept = checkpoint_steps(t.steps, t.checkpoint_every)
    n_kept = min(len(kept), t.checkpoints_keep) if t.checkpoints_keep > 0 else len(kept)
    disk = n_kept * checkpoint_bytes(t) + c.log_bytes
    start = t.done_step or 0
    if start >= t.steps:
        return _stage("train", "done", disk, 0, (0, 0, 0), f"complete: checkpoint at step {start} of {t.steps}"), 0
    if t.unplanned:
        return (_stage("train", "to do", disk, 0, (math.nan,) * 3,
                       f"not planned: {t.unplanned}; ~{t.steps:,} steps x {t.total_batch:,} tokens, "
                       f"{n_kept} checkpoint(s) of {checkpoint_bytes(t) / 1e9:.2f} GB kept"), math.nan)
    if not t.tok_s:
        return (_stage("train", "to do", disk, 0, (math.nan,) * 3,
                       f"{t.steps - start:,} steps on {t.gpus_label}: no tokens/s estimate for these GPUs "
                       "(run `kitctl tune` on the box for a measured one)"), math.nan)
    rng = getattr(c.tok_s_range, "measured" if t.tok_s_basis == "measured" else t.precision)
    per_rank_rows = t.micro_batch * t.seq_len
    evals = eval_steps(t.steps, t.val_every, start)
    eval_tokens = evals * t.val_batches * per_rank_rows * t.ranks       # val loss: at step 0 too
    if t.hellaswag_examples and t.micro_batch >= HELLASWAG_ROWS:     # HellaSwag: from step 1 on (llm.c)
        batches = math.ceil(math.ceil(t.hellaswag_examples / t.ranks) / (t.micro_batch // HELLASWAG_ROWS))
        eval_tokens += (evals - (1 if start == 0 else 0)) * batches * per_rank_rows * t.ranks
    ckpts = len(checkpoint_steps(t.steps, t.checkpoint_every, start))
    ckpt_s = ckpts * checkpoint_bytes(t) / c.checkpoint_write_bytes_per_s

    def secs(tok_s: float, speedup: float, startup: float) -> float:
        return startup + (t.steps - start) * t.total_batch / tok_s + eval_tokens / (tok_s * speedup) + ckpt_s

    point = secs(t.tok_s, sum(c.eval_forward_speedup) / 2, sum(c.startup_seconds) / 2)
    low = secs(t.tok_s * rng[1], c.eval_forward_speedup[1], c.startup_seconds[0])
    high = secs(t.tok_s * rng[0], c.eval_forward_speedup[0], c.startup_seconds[1])
    evals_s = eval_tokens / (t.tok_s * sum(c.eval_forward_speedup) / 2)
    detail = (f"{t.steps - start:,} steps x {t.total_batch:,} tokens on {t.gpus_label} ({t.precision}, B={t.micro_batch})"
              f" at {'measured' if t.tok_s_basis == 'measured' else '~'}{t.tok_s:,.0f} tok/s"
              f" ({_BASIS.get(t.tok_s_basis, 'estimate')}); {evals} evals "
              f"{'(val + HellaSwag) ' if t.hellaswag_examples else '(val) '}~{format_duration(evals_s)}; "
              f"{n_kept} checkpoint(s) of {checkpoint_bytes(t) / 1e9:.2f} GB kept")
    if start:
        detail = f"resume from step {start}: " + detail
    return (_stage("train", "resume" if start else "to do", disk, 0, (point, low, high), detail),
            t.total_batch / t.tok_s)


_BASIS = {"measured": "tune cache", "quoted": "from a published llm.c figure, see throughput.yaml",
          "estimate": "estimate"}


def tune_forecast(tu: TuneInput, train: StageForecast, step_s: float) -> tuple[StageForecast, Optional[tuple[int, int]]]:
    c = costs().tune
    skip = None
    if train.detail.startswith("not planned"):
        skip = "training is not planned (no GPUs known): --inventory FILE plans both"
    elif tu.mode == "off":
        skip = "--no-tune: the train planner sizes B from its models"
    elif tu.cached:
        skip = f"tune cache for this plan: {Path(tu.cached).name}"
    elif tu.resuming:
        skip = "resuming a checkpoint: llm.c continues only with the checkpoint's B"
    elif tu.configs == 0:
        skip = "no (B, -r) to compare"
    elif train.status == "done":
        skip = "training is complete"
    elif not math.isfinite(step_s):
        skip = "no tokens/s estimate to bound it by (run `kitctl tune` yourself)"
    if skip:
        return _stage("tune", "skipped", 0, 0, (0, 0, 0), skip), None
    budget = c.share * train.seconds
    for steps, warmup in zip(c.steps, c.warmup, strict=True):
        s = tu.configs * (c.startup_seconds + steps * step_s)
        if tu.mode == "on" or s <= budget:
            why = "--tune" if tu.mode == "on" and s > budget else f"within {c.share:.0%} of the training forecast"
            return (_stage("tune", "to do", 0, 0, (s, 0.7 * s, 1.5 * s),
                           f"{tu.configs} (B, -r) configs x {steps} steps ({warmup} warm-up), {why}"), (steps, warmup))
    s = tu.configs * (c.startup_seconds + c.steps[-1] * step_s)
    return (_stage("tune", "skipped", 0, 0, (0, 0, 0),
                   f"bounded: {tu.configs} configs x {c.steps[-1]} steps would take ~{format_duration(s)}, more than "
                   f"{c.share:.0%} of training's ~{format_duration(train.seconds)} (--tune runs it anyway)"), None)


def data_forecast(d: DataInput, box: Box) -> StageForecast:
    c = costs().data
    disk = d.hf_cache_bytes + 2 * d.tokens + d.shards * c.shard_header_bytes
    if d.complete:
        return _stage("data", "done", disk, 0, (0, 0, 0), f"{d.description}: complete, {d.tokens:,} tokens")
    net = [box.net_bytes_per_s * e for e in c.download_efficiency]
    dl = (d.download_bytes / net[1], d.download_bytes / net[0])
    if d.kind == "pretokenized":
        tok = (0.0, 0.0)
        what = f"fetch {d.shards} ready shards"
    else:
        left = max(0, d.tokens - d.done_tokens)
        per_cpu = c.fast_tok_s_per_cpu if d.encoder == "gigatoken" else c.tokenize_tok_s_per_cpu
        rate = [min(box.cpus * per_cpu[i], c.tokenize_tok_s_max[i]) for i in (0, 1)]
        tok = (left / rate[1], left / rate[0])
        what = f"tokenize ~{left:,} tokens on {box.cpus} CPUs ({d.encoder})"
    lo, hi = dl[0] + tok[0], dl[1] + tok[1]
    parts = []
    if d.download_bytes:
        parts.append(f"download {d.download_bytes / 1e9:.1f} GB at {box.net_bytes_per_s * 8 / 1e6:.0f} Mbit/s")
    parts.append(what)
    if d.hf_cache_bytes:
        parts.append(f"HF cache {d.hf_cache_bytes / 1e9:.1f} GB + shards {(disk - d.hf_cache_bytes) / 1e9:.1f} GB")
    status = "resume" if d.done_tokens else "to do"
    return _stage("data", status, disk, d.download_bytes, _mid(lo, hi), f"{d.description}: " + "; ".join(parts))


def _download_seconds(nbytes: int, box: Box) -> tuple[float, float, float]:
    net = [box.net_bytes_per_s * e for e in costs().data.download_efficiency]
    return _mid(nbytes / net[1], nbytes / net[0])


def _pull_instead(inp: Inputs, build: StageForecast) -> str:
    """What building costs on this (GPU) box, and what pulling a pushed image would take instead."""
    pull = costs().build[inp.build.kind].pull_bytes
    pull_s = _download_seconds(pull, inp.box)[0]
    idle = f"builds here with {inp.box.gpus} GPU(s) idle for ~{format_duration(build.seconds)}"
    if inp.price_per_gpu_hour is not None:
        idle += f" (${build.seconds / 3600 * inp.box.gpus * inp.price_per_gpu_hour:,.2f})"
    saved = max(0.0, build.seconds - pull_s)
    return (f"{idle}; pulling an image pushed from a CPU box (`kitctl build --push REGISTRY/REPO` there, --image "
            f"here) takes ~{format_duration(pull_s)} for ~{pull / 1e9:.1f} GB, ~{format_duration(saved)} sooner")


def _overlap(inp: Inputs, build: StageForecast, data: StageForecast) -> tuple[tuple[float, float, float], list[str]]:
    """The dataset download runs while the image builds (they share nothing): the shorter of the two is hidden."""
    if build.status != "to do" or not data.download_bytes or inp.build.bundled or inp.build.pulled \
            or inp.build.kind == "native":
        return (0.0, 0.0, 0.0), []
    dl = _download_seconds(data.download_bytes, inp.box)
    ov = (min(build.seconds, dl[0], data.seconds), min(build.low, dl[1], data.low), min(build.high, dl[2], data.high))
    return ov, [f"the dataset download (~{format_duration(dl[0])}) runs while the image builds "
                f"(~{format_duration(build.seconds)}; they share nothing): ~{format_duration(ov[0])} of overlap, "
                "counted once in the total and in the time to the first step"]


def plan_stages(inp: Inputs) -> Forecast:
    """Every stage of the pipeline with its disk, download and time (see the module docstring)."""
    c = costs()
    stages = [_stage("preflight", "to do", 0, 0, _mid(*c.preflight_seconds), "kitctl doctor + the disk this plan needs")]
    b = c.build[inp.build.kind]
    if inp.build.pulled and not inp.build.exists:
        stages.append(_stage("build", "to do", b.disk_bytes, b.pull_bytes, _download_seconds(b.pull_bytes, inp.box),
                             inp.build.detail, on_data_root=False))
    else:
        stages.append(_stage("build", "done" if inp.build.exists else "to do", b.disk_bytes,
                             0 if inp.build.exists or inp.build.bundled
                             or (inp.build.local_source and inp.build.kind == "native") else b.download_bytes,
                             (0, 0, 0) if inp.build.exists
                             else _mid(*(c.bundle_load_seconds if inp.build.bundled else b.seconds)),
                             inp.build.detail, on_data_root=inp.build.kind == "native"))
    build = stages[-1]
    stages.append(data_forecast(inp.data, inp.box))
    overlap, notes = _overlap(inp, build, stages[-1])
    if overlap[0]:      # the data stage starts with that much of its download done
        d = stages[-1]
        left = (d.seconds - overlap[0], d.low - overlap[1], d.high - overlap[2])
        # the overlap is smallest where the build is quick and largest where it is slow, so what is left of the
        # data stage need not keep the order low <= point <= high: the range is the span of the three
        d.seconds, d.low, d.high = left[0], min(left), max(left)
        d.detail += f"; ~{format_duration(overlap[0])} of the download runs during the build"
    if build.status == "to do" and inp.build.kind != "native" and not (inp.build.bundled or inp.build.pulled):
        build.detail += "; " + _pull_instead(inp, build)
    h = inp.hellaswag
    hs_disk = (c.hellaswag.jsonl_bytes if h.download_bytes else 0) + h.examples * c.hellaswag.bin_bytes_per_example
    stages.append(_stage("hellaswag", "done" if h.exists else "to do", hs_disk, 0 if h.exists else h.download_bytes,
                         (0, 0, 0) if h.exists else _mid(*c.hellaswag.seconds),
                         f"llm.c's eval file, {h.examples:,} examples" + (" (there already)" if h.exists else "")))
    train, step_s = train_forecast(inp.train)
    tune, tune_steps = tune_forecast(inp.tune, train, step_s)
    stages += [tune, train]
    stages.append(_stage("report", "done" if inp.report_exists else "to do", c.report.disk_bytes, 0,
                         (0, 0, 0) if inp.report_exists else _mid(*c.report.seconds),
                         "report.html: loss + HellaSwag curves vs GPT-2 124M"))
    fc = Forecast(stages, inp.box, inp.price_per_gpu_hour, tune_steps, notes, overlap,
                  hf_cache_bytes=inp.data.hf_cache_bytes if next(s for s in stages if s.name == "data").status
                  not in ("done", "skipped") else 0, build_kind=inp.build.kind)
    if inp.price_per_gpu_hour is not None:
        for s in stages:
            s.cost = (s.seconds if math.isfinite(s.seconds) else 0.0) / 3600 * inp.box.gpus * inp.price_per_gpu_hour
    return fc


def remaining_disk(fc: Forecast, data_done_bytes: int = 0) -> int:
    """Bytes the stages still to run will add to the data root (what must be free now)."""
    need = sum(s.disk_bytes for s in fc.stages if s.status not in ("done", "skipped"))
    return max(0, need - data_done_bytes)


def needs_by_purpose(fc: Forecast, data_done_bytes: int = 0) -> dict[str, int]:
    """Bytes the stages still to run put in each place: the data root (less the HF cache), the HF cache (hf_home,
    inside the data root by default) and Docker's storage."""
    rest = remaining_disk(fc, data_done_bytes)
    hf = min(rest, fc.hf_cache_bytes)
    return {disks.DATA_ROOT: rest - hf, disks.HF_CACHE: hf, disks.DOCKER: remaining_docker(fc)}


def filesystems(fc: Forecast, data_done_bytes: int = 0) -> list[disks.Filesystem]:
    """The box's filesystems with the sum this plan still puts on each (empty when the box is another one)."""
    return disks.group(fc.box.places, needs_by_purpose(fc, data_done_bytes))


def remaining_docker(fc: Forecast) -> int:
    """Bytes the stages still to run will add to Docker's storage (its root dir)."""
    return sum(s.docker_bytes for s in fc.stages if s.status not in ("done", "skipped"))


def build_docker_bytes(kind: str) -> int:
    """What a build of this provider leaves in Docker's storage (0 for the native build)."""
    return 0 if kind == "native" else costs().build[kind].disk_bytes


# ------------------------------------------------------------------------------------------- disk model
@dataclass(frozen=True)
class DiskModel:
    """Where a plan's bytes land, in the figures doctor, kit.yaml's comments, README and docs quote (one source:
    this planner; tests/pipeline/test_disk_model.py checks every quote against it)."""

    hf_cache_bytes: int             # the HF cache's parquet (data root; deletable after the data stage)
    shard_bytes: int                # llm.c's token shards
    checkpoint_bytes: int           # one checkpoint (model + every rank's state)
    checkpoints: int                # how many llm.c keeps
    data_root_bytes: int            # everything on the data root (the plan's total disk_bytes)
    docker_bytes: dict[str, int]    # per provider / build kind: what lands in Docker's storage

    def gb(self, n: int) -> str:
        return f"{n / 1e9:.0f} GB" if n >= 10e9 else f"{n / 1e9:.1f} GB"

    def summary(self) -> str:
        """One sentence: the data root's total and its parts, then Docker's storage."""
        return (f"~{self.gb(self.data_root_bytes)} on the data root ({self.gb(self.hf_cache_bytes)} HF cache of "
                f"parquet, {self.gb(self.shard_bytes)} of shards, {self.checkpoints} checkpoints of "
                f"{self.checkpoint_bytes / 1e9:.2f} GB, the rest small) + ~{self.gb(self.docker_bytes['nvidia'])} "
                f"of images and build cache in Docker's storage (nvidia provider; wheels: "
                f"~{self.gb(self.docker_bytes['wheels'])})")


def disk_model(inp: Inputs, f: Forecast) -> DiskModel:
    """The disk figures of a plan (pure)."""
    t = inp.train
    kept = checkpoint_steps(t.steps, t.checkpoint_every)
    n_kept = min(len(kept), t.checkpoints_keep) if t.checkpoints_keep > 0 else len(kept)
    shards = f.stage("data").disk_bytes - inp.data.hf_cache_bytes
    return DiskModel(inp.data.hf_cache_bytes, shards, checkpoint_bytes(t), n_kept, f.disk_bytes,
                     {k: build_docker_bytes(k) for k in costs().build if k != "native"})
