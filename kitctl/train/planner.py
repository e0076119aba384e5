"""The training planner: preset + GPUs + data + run folder + request -> a Plan. Pure: no processes, no writes.

A ``Plan`` holds every decision of a ``kitctl train`` run and why it was made: which GPUs (ranks), which
precision/binary, micro-batch B and recompute (from the tune cache, else the memory model, else the user's
flags), gradient accumulation, the exact train_gpt2cu argv, the container spec (docker) or mpirun argv, env and
working directory (native), and the resume decision. ``kitctl.train.runner`` executes it; ``--dry-run`` prints it.

Facts the planner needs (GPU inventory, shard headers, the run folder, host mpirun, tune records) are read by
``kitctl.train.facts`` and passed in as a ``Facts`` record, so tests plan for any machine without one.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from kitctl.core.errors import KitError
from kitctl.host.gpus import GPU, select
from kitctl.train.memory import MemoryModel, Prediction, default_model, dims_for
from kitctl.host.runtimes import ContainerSpec, Mount, docker_run_argv, shell_line
from kitctl.train.facts import DataInfo, HostFacts, OutState
from kitctl.core import resources

PRESETS_FILE = resources.package_dir() / "train" / "presets.yaml"
PEAKS_FILE = resources.package_dir() / "train" / "gpu_peaks.yaml"
MICRO_BATCHES = (64, 32, 16, 8, 4, 2, 1)
BINARIES = {"bf16": "train_gpt2cu", "fp32": "train_gpt2cu_fp32"}
IMAGE_BIN = "/opt/llmc/bin"
WORKDIR = "/workspace"
HELLASWAG_MIN_B = 4        # llm.c's EvalLoader packs 4 completions per example into a batch row group
# train_gpt2cu flags the kit sets itself; a pass-through after `--` may not set them
_MANAGED = {"-i": "use --data instead", "-j": "use --data instead", "-o": "use --out or --name instead",
            "-y": "leave it out: the kit decides resume itself (use --fresh to start over)",
            "-e": "use --preset instead"}
# pass-through flags that the planner must know (they change B, T, total batch, recompute or steps)
_ABSORBED = {"-b": "micro_batch", "-t": "seq_len", "-d": "total_batch", "-r": "recompute", "-x": "steps"}


# ----------------------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    name: str
    source: str
    descriptor: str
    channels: int
    heads: int
    data: str
    seq_len: int
    total_batch: int
    learning_rate: float
    warmup: int
    final_lr_frac: float
    weight_decay: float
    zero_stage: int
    recompute: int
    checkpoint_every: int
    val_every: int
    sample_every: int
    hellaswag: int
    steps: int
    extra: tuple[str, ...] = ()
    micro_batch_published: Optional[int] = None


@functools.lru_cache(maxsize=1)
def load_presets() -> dict[str, Preset]:
    raw = yaml.safe_load(PRESETS_FILE.read_text())
    fields = {f.name for f in dataclasses.fields(Preset)}
    return {name: Preset(name=name, **{k: (tuple(v) if k == "extra" else v) for k, v in d.items() if k in fields})
            for name, d in raw.items()}


def get_preset(name: str) -> Preset:
    presets = load_presets()
    if name not in presets:
        raise KitError(f"unknown preset {name!r}", f"use one of: {', '.join(presets)}", exit_code=2)
    return presets[name]


# ------------------------------------------------------------------------------------------- GPU peaks
@dataclass(frozen=True)
class Peak:
    name: str
    fp32: float
    tf32: Optional[float]
    bf16: Optional[float]
    llmc_mfu: bool
    source: str


@functools.lru_cache(maxsize=1)
def _peaks() -> tuple[list[tuple[str, Peak]], float]:
    raw = yaml.safe_load(PEAKS_FILE.read_text())
    out = []
    for g in raw["gpus"]:
        p = Peak(g["name"], g["fp32"], g.get("tf32"), g.get("bf16"), bool(g.get("llmc_mfu")), g.get("source", ""))
        out += [(m, p) for m in g["match"]]
    out.sort(key=lambda mp: -len(mp[0]))
    return out, float(raw.get("assumed_utilization", 0.4))


def peak_for(gpu_name: str) -> Optional[Peak]:
    for m, p in _peaks()[0]:
        if m.lower() in gpu_name.lower():
            return p
    return None


def peak_tflops(gpu: GPU, precision: str) -> Optional[float]:
    p = peak_for(gpu.name)
    if p is None:
        return None
    if precision == "bf16":
        return p.bf16
    return p.tf32 if (gpu.compute_cap >= 80 and p.tf32) else p.fp32


def estimate_tok_s(gpus: list[GPU], precision: str, descriptor: str, T: int) -> Optional[float]:
    """Ranks run in lock-step (every step waits for the all-reduce), so a job runs at ranks x the slowest GPU."""
    peaks = [peak_tflops(g, precision) for g in gpus]
    if not peaks or any(p is None for p in peaks):
        return None
    util = _peaks()[1]
    return len(gpus) * min(peaks) * 1e12 * util / dims_for(descriptor).flops_per_token(T)  # type: ignore[type-var]


# ------------------------------------------------------------------------------------------ request/facts
@dataclass
class TrainRequest:
    """What the user asked for (CLI options). None = let the planner decide."""

    preset: str = "gpt2-124m"
    gpus: str = "all"
    micro_batch: Optional[int] = None
    recompute: Optional[int] = None
    precision: Optional[str] = None
    steps: Optional[int] = None
    total_batch: Optional[int] = None
    seq_len: Optional[int] = None
    name: Optional[str] = None
    out: Optional[Path] = None
    data: Optional[Path] = None
    runtime: str = "docker"
    binary: Optional[Path] = None
    fresh: bool = False
    no_tune: bool = False
    passthrough: list[str] = field(default_factory=list)
    # set by the runner when it re-plans after an out-of-memory start
    oom_retry_from: Optional[int] = None
    # a short measuring run (kitctl tune): no eval, sampling or checkpoints, fresh start
    bench: bool = False


@dataclass(frozen=True)
class Facts:
    """Everything the planner knows about the machine (read by kitctl.train.facts / the CLI)."""

    gpus: list[GPU]
    data: DataInfo
    out: OutState
    data_root: Path
    host: HostFacts = field(default_factory=HostFacts)
    image: str = "llmc-kit:latest"
    native_bin_dir: Optional[Path] = None        # <data_root>/native/bin
    nccl_env: dict = field(default_factory=dict)  # from kit.yaml's nccl section
    hellaswag: Optional[Path] = None             # <data_root>/hellaswag/hellaswag_val.bin when present
    tokenizer: Optional[Path] = None             # <data_root>/gpt2_tokenizer.bin when present
    runtime_ids: dict = field(default_factory=dict)   # precision -> image id / binary sha256 (tune cache key)
    tune_records: tuple = ()                     # parsed <data_root>/tune/*.json
    run_token: str = "0"                         # makes the container name unique


@dataclass(frozen=True)
class Option:
    """One way to use a mixed set of GPUs (shown to the user, the chosen one marked)."""

    label: str
    gpus: tuple[GPU, ...]
    precision: str
    est_tok_s: Optional[float]
    chosen: bool = False


@dataclass
class Plan:
    preset: Preset
    request: TrainRequest
    runtime: str
    gpus: list[GPU]
    precision: str
    micro_batch: int
    recompute: int
    seq_len: int
    total_batch: int
    steps: int
    hellaswag: int
    out_dir: Path
    data: DataInfo
    binary: str                       # in the runtime's view (container path or host path)
    llmc_args: list[str]
    argv: list[str]                   # what runs: `docker run ...` (display) or `mpirun ...` / the binary
    memory: Prediction
    choice: str                       # where B / recompute came from
    resume: bool = False
    resume_step: Optional[int] = None
    complete: bool = False
    archive_existing: bool = False
    container: Optional[ContainerSpec] = None
    env: dict = field(default_factory=dict)       # native: extra env of the launch
    cwd: Optional[Path] = None                    # native: llm.c's working directory
    links: list = field(default_factory=list)     # native: (link, target) pairs llm.c looks for in cwd
    notes: list[str] = field(default_factory=list)
    options: list[Option] = field(default_factory=list)
    est_tok_s: Optional[float] = None
    tune_file: Optional[str] = None

    @property
    def ranks(self) -> int:
        return len(self.gpus)

    @property
    def grad_accum(self) -> int:
        return self.total_batch // (self.micro_batch * self.seq_len * self.ranks)

    @property
    def resume_key(self) -> dict:
        """What must match for llm.c's -y 1 to continue this run correctly."""
        return {"ranks": self.ranks, "micro_batch": self.micro_batch, "seq_len": self.seq_len,
                "total_batch": self.total_batch, "descriptor": self.preset.descriptor,
                "precision": self.precision, "data": self.data.fingerprint, "data_dir": str(self.data.dir)}

    def command_line(self) -> str:
        """The exact command, copy-pasteable (native: with its cd and env)."""
        if self.container is not None:
            return shell_line(self.argv)
        env = " ".join(f"{k}={shell_line([v])}" for k, v in sorted(self.env.items()))
        return f"cd {shell_line([str(self.cwd)])} && {env} {shell_line(self.argv)}".replace("  ", " ")

    def as_dict(self) -> dict:
        return {
            "preset": self.preset.name, "runtime": self.runtime, "precision": self.precision,
            "gpus": [g.as_dict() for g in self.gpus], "ranks": self.ranks, "micro_batch": self.micro_batch,
            "recompute": self.recompute, "seq_len": self.seq_len, "total_batch": self.total_batch,
            "grad_accum": self.grad_accum, "steps": self.steps, "descriptor": self.preset.descriptor,
            "data": self.data.fingerprint, "data_dir": str(self.data.dir), "out_dir": str(self.out_dir),
            "binary": self.binary, "llmc_args": self.llmc_args, "argv": self.argv, "choice": self.choice,
            "memory_peak_gb": self.memory.peak_gb, "memory_need_gb": self.memory.need_gb,
            "memory_basis": self.memory.basis, "resume": self.resume, "resume_step": self.resume_step,
            "notes": self.notes, "est_tok_s": self.est_tok_s, "tune_file": self.tune_file,
        }

    def describe(self) -> list[tuple[str, str]]:
        """(setting, value) rows for the --dry-run table."""
        gpus = ", ".join(f"{g.index}: {g.name} (sm_{g.compute_cap}, {g.memory_mib} MiB)" for g in self.gpus)
        rows = [
            ("preset", f"{self.preset.name} ({self.preset.descriptor}, {self.preset.source})"),
            ("GPUs (ranks)", f"{self.ranks} -> {gpus}"),
            ("precision / binary", f"{self.precision} -> {self.binary}"),
            ("micro-batch B", f"{self.micro_batch}  ({self.choice})"),
            ("recompute -r", str(self.recompute)),
            ("T, total batch -d", f"{self.seq_len}, {self.total_batch} tokens"),
            ("grad accumulation", f"{self.grad_accum} = {self.total_batch} / ({self.micro_batch} x "
                                  f"{self.seq_len} x {self.ranks})"),
            ("steps -x", str(self.steps)),
            ("memory (per GPU)", f"~{self.memory.peak_gb} GB peak, {self.memory.need_gb} GB with headroom "
                                 f"[{self.memory.basis}]; smallest GPU {min(g.memory_gb for g in self.gpus):.1f} GB"),
            ("data", f"{self.data.dir} ({self.data.prefix}: {len(self.data.train)} train shards, "
                     f"{self.data.train_tokens:,} tokens)"),
            ("output", str(self.out_dir)),
            ("resume", (f"yes, from step {self.resume_step} (-y 1)" if self.resume else "no, fresh start (-y 0)")
             + (" — already complete" if self.complete else "")
             + (" — old checkpoints are moved to archive-*/" if self.archive_existing else "")),
        ]
        if self.est_tok_s:
            rows.append(("estimated tokens/s", f"~{self.est_tok_s:,.0f} (from published peaks; a rough guide)"))
        return rows


# ------------------------------------------------------------------------------------------------ planner
def absorb_passthrough(req: TrainRequest) -> TrainRequest:
    """Move -b/-t/-d/-r/-x of a raw pass-through into the request; refuse flags the kit manages."""
    rest: list[str] = []
    updates: dict = {}
    args = list(req.passthrough)
    i = 0
    while i < len(args):
        flag = args[i]
        if flag in _MANAGED:
            raise KitError(f"pass-through {flag} is set by the kit", _MANAGED[flag], exit_code=2)
        # train_gpt2cu reads its argv as pairs: every flag (-x or -xy) takes exactly one value
        if not (flag.startswith("-") and len(flag) in (2, 3)):
            raise KitError(f"pass-through {flag!r} is not a train_gpt2cu flag (-x or -xy)",
                           "write flag/value pairs after `--`, e.g. `-- -lg 100`", exit_code=2)
        if i + 1 >= len(args):
            raise KitError(f"pass-through {flag} has no value (every train_gpt2cu flag takes one)",
                           f"write it as `-- {flag} VALUE`", exit_code=2)
        if flag in _ABSORBED:
            try:
                updates[_ABSORBED[flag]] = int(args[i + 1])
            except ValueError:
                raise KitError(f"pass-through {flag} {args[i + 1]!r} is not an integer", None, exit_code=2) from None
            i += 2
            continue
        rest += [flag, args[i + 1]]
        i += 2
    for k, v in updates.items():
        current = getattr(req, k)
        if current is not None and current != v:
            raise KitError(f"pass-through {k.replace('_', '-')} {v} contradicts the option value {current}",
                           "give it once", exit_code=2)
    return dataclasses.replace(req, passthrough=rest, **updates)


def gpu_spec(gpus: list[GPU]) -> str:
    """--gpus value naming exactly these GPUs (a bare "1" would mean "the first GPU", so one index gets a comma)."""
    return ",".join(str(g.index) for g in gpus) + ("," if len(gpus) == 1 else "")


def _pick_gpus(req: TrainRequest, facts: Facts, preset: Preset, T: int) -> tuple[list[GPU], str, list[Option], list[str]]:
    notes: list[str] = []
    picked = select(facts.gpus, req.gpus)
    no_bf16 = [g for g in picked if not g.has_bf16]
    if req.precision not in (None, "bf16", "fp32"):
        raise KitError(f"--precision {req.precision!r}", "use bf16 or fp32", exit_code=2)
    if req.precision == "bf16" and no_bf16:
        names = ", ".join(f"{g.index} ({g.name}, sm_{g.compute_cap})" for g in no_bf16)
        capable = [g for g in picked if g.has_bf16]
        if req.gpus.strip() == "all" and capable:
            notes.append(f"--precision bf16: GPU {names} has no BF16 tensor cores (sm_80+), so it sits out; "
                         f"running on GPU(s) {gpu_spec(capable).rstrip(',')} (use --precision fp32 to run all)")
            return capable, "bf16", [], notes
        raise KitError(f"--precision bf16: GPU {names} has no BF16 tensor cores (BF16 needs sm_80+)",
                       "use --precision fp32 to run all of them, or leave that GPU out with --gpus", exit_code=2)
    if req.precision:
        return picked, req.precision, [], notes
    if not no_bf16:
        return picked, "bf16", [], notes
    bf16_subset = [g for g in picked if g.has_bf16]
    if not bf16_subset:
        notes.append("no picked GPU has BF16 tensor cores (sm_80+): using the FP32 build")
        return picked, "fp32", [], notes
    # mixed: all GPUs in FP32 vs the BF16-capable ones alone in BF16
    all_fp32 = Option(f"all {len(picked)} GPUs, FP32 build", tuple(picked), "fp32",
                      estimate_tok_s(picked, "fp32", preset.descriptor, T))
    sub_bf16 = Option(f"{len(bf16_subset)} BF16-capable GPU(s) alone, BF16 build", tuple(bf16_subset), "bf16",
                      estimate_tok_s(bf16_subset, "bf16", preset.descriptor, T))
    slow = ", ".join(f"{g.name} (sm_{g.compute_cap})" for g in no_bf16)
    notes.append(f"{slow}: no BF16 tensor cores and no cuDNN attention, so a job over all GPUs needs the FP32 "
                 "build; ranks run in lock-step (each step waits for the all-reduce), so the job runs at "
                 "ranks x the slowest GPU")
    if req.gpus.strip() != "all":
        choice = all_fp32
        notes.append("you named the GPUs with --gpus, so all of them run (FP32); see the options for the alternative")
    elif all_fp32.est_tok_s is None or sub_bf16.est_tok_s is None:
        choice = all_fp32
        notes.append("no published peak for one of these GPUs: cannot compare; using all GPUs in FP32 "
                     "(try `--precision bf16 --gpus <the sm_80+ ones>` and compare tokens/s)")
    else:
        choice = sub_bf16 if sub_bf16.est_tok_s > all_fp32.est_tok_s else all_fp32
        notes.append(f"picked '{choice.label}' as the faster estimate "
                     f"({choice.est_tok_s:,.0f} vs {(all_fp32 if choice is sub_bf16 else sub_bf16).est_tok_s:,.0f} "
                     f"tok/s); override with --precision fp32 (all GPUs) or --gpus {gpu_spec(bf16_subset)} "
                     "(those alone)")
    options = [dataclasses.replace(o, chosen=o is choice) for o in (all_fp32, sub_bf16)]
    return list(choice.gpus), choice.precision, options, notes


def _find_tune(facts: Facts, gpus: list[GPU], precision: str, preset: Preset, T: int, D: int) -> Optional[dict]:
    from kitctl.train.tune import cache_key

    rid = facts.runtime_ids.get(precision)
    if rid is None:
        return None
    key = cache_key(gpus, precision, preset.name, rid, T, D)
    for rec in facts.tune_records:
        if rec.get("key") == key:
            return rec
    return None


def build_plan(req: TrainRequest, facts: Facts, mem: Optional[MemoryModel] = None) -> Plan:
    """Decide everything about a training run; raise KitError (exit 2) on input that cannot work."""
    mem = mem or default_model()
    req = absorb_passthrough(req)
    preset = get_preset(req.preset)
    if req.runtime not in ("docker", "native"):
        raise KitError(f"--runtime {req.runtime!r}", "use docker or native", exit_code=2)
    if req.total_batch is not None and req.total_batch < 1:
        # llm.c's -d -1 means B x T x ranks (no accumulation); the kit does not support it: the total batch is
        # the run's optimizer setting and must not change with B or the GPU count
        raise KitError(f"total batch -d {req.total_batch}: it must be a positive number of tokens per optimizer step"
                       + (" (llm.c's -d -1 = B x T x ranks is not supported)" if req.total_batch == -1 else ""),
                       f"pass --total-batch N with N a multiple of B x T x ranks, or leave it to the preset "
                       f"({preset.total_batch})", exit_code=2)
    if req.seq_len is not None and req.seq_len < 1:
        raise KitError(f"sequence length {req.seq_len}", "use -t between 1 and 1024", exit_code=2)
    T = req.seq_len or preset.seq_len
    D = req.total_batch or preset.total_batch
    if T < 1 or T > 1024:
        raise KitError(f"sequence length {T}: GPT-2 has 1024 positions", "use -t between 1 and 1024", exit_code=2)
    gpus, precision, options, notes = _pick_gpus(req, facts, preset, T)
    ranks = len(gpus)
    data = facts.data
    out = facts.out
    min_gpu = min(gpus, key=lambda g: g.memory_mib)
    cudnn = precision == "bf16"

    def predict(B: int, r: int) -> Prediction:
        return mem.predict(preset.descriptor, B, T, r, precision, ranks, preset.zero_stage, cudnn)

    def why_not(B: int) -> Optional[str]:
        if D % (B * T * ranks):
            return (f"total batch -d {D} is not a multiple of B x T x ranks = {B} x {T} x {ranks} = {B * T * ranks}"
                    " (llm.c asserts it: every optimizer step is a whole number of micro-batches on every rank)")
        if ranks * B * T + 1 > data.min_shard_tokens:
            return (f"the smallest shard has {data.min_shard_tokens:,} tokens, fewer than ranks x B x T + 1 = "
                    f"{ranks * B * T + 1:,} (llm.c asserts every shard holds one micro-batch of every rank)")
        return None

    # --- resume: adopt the checkpoint's micro-batch when the user did not choose one
    resumable = out.last_done is not None and not req.fresh
    if resumable and out.run_json_error:
        raise KitError(f"{out.dir}/run.json is damaged ({out.run_json_error}): the kit cannot check whether the "
                       f"checkpoint at step {out.last_done} can be resumed",
                       "start over in this folder with --fresh (the old checkpoints move to archive-<time>/), or "
                       "pick a new --name", exit_code=2)
    stored = out.run_plan or {}
    # the GPU count first: with another one the checkpoint's B may break the shard rules, a misleading refusal
    old_ranks = stored.get("ranks") if out.run_plan is not None else out.state_ranks
    if resumable and old_ranks and old_ranks != ranks:
        _refuse_resume(out, [("ranks", old_ranks, ranks)], stored)
    micro, recompute, choice, tune_file = req.micro_batch, req.recompute, "", None
    if micro is None and resumable and stored.get("micro_batch"):
        micro = int(stored["micro_batch"])
        choice = f"kept from the checkpoint at step {out.last_done} (llm.c resumes only with the same B)"
    if req.oom_retry_from is not None:
        choice = (f"halved from {req.oom_retry_from}: train_gpt2cu ran out of GPU memory before its first "
                  f"step with B={req.oom_retry_from}")

    if micro is not None:
        if micro < 1:
            raise KitError(f"--micro-batch {micro}", "use a positive micro-batch", exit_code=2)
        reason = why_not(micro)
        ok = [b for b in MICRO_BATCHES if why_not(b) is None]
        if reason and ok:
            raise KitError(f"micro-batch {micro} cannot run: {reason}",
                           f"use --micro-batch {' / '.join(map(str, ok))}, or --total-batch N", exit_code=2)
        if reason:
            _refuse_batch(f"micro-batch {micro} cannot run: {reason}", micro, T, D, ranks)
        choice = choice or "your --micro-batch"
    allowed = [b for b in MICRO_BATCHES if why_not(b) is None]
    if not allowed:
        # the B this run would use if -d allowed it (shard rule and memory), so the hint shows real numbers
        r = req.recompute if req.recompute is not None else preset.recompute
        B = next((b for b in MICRO_BATCHES if ranks * b * T + 1 <= data.min_shard_tokens
                  and predict(b, r).fits(min_gpu.memory_gb)), 1)
        _refuse_batch(f"no micro-batch in {list(MICRO_BATCHES)} works with {ranks} rank(s): {why_not(B)}",
                      B, T, D, ranks)

    tune = None if req.no_tune else _find_tune(facts, gpus, precision, preset, T, D)
    if tune is not None:
        cands = [r for r in tune.get("results", []) if r.get("status") == "ok" and r.get("tok_s")
                 and r["micro_batch"] in allowed and (micro is None or r["micro_batch"] == micro)
                 and (recompute is None or r["recompute"] == recompute)]
        if cands:
            best = max(cands, key=lambda r: r["tok_s"])
            tune_file = tune.get("_path")
            if micro is None:
                choice = f"tune cache: fastest measured, {best['tok_s']:,.0f} tok/s"
            micro = best["micro_batch"]
            if recompute is None:
                recompute = best["recompute"]
                if recompute != preset.recompute:
                    same = [r for r in cands if r["recompute"] == preset.recompute]
                    alt = f" (best with -r {preset.recompute}: {max(r['tok_s'] for r in same):,.0f})" if same else ""
                    notes.append(f"recompute -r {recompute} instead of the preset's {preset.recompute}: the tune "
                                 f"cache measured it faster here, {best['tok_s']:,.0f} tok/s{alt}")
    if recompute is None:
        recompute = preset.recompute
    if recompute not in (0, 1, 2):
        raise KitError(f"--recompute {recompute}", "use 0 (none), 1 (GELU) or 2 (GELU + layernorm)", exit_code=2)
    if micro is None:
        fitting = [b for b in allowed if predict(b, recompute).fits(min_gpu.memory_gb)]
        if not fitting:
            p = predict(allowed[-1], recompute)
            raise KitError(f"{preset.name} does not fit {min_gpu.name} ({min_gpu.memory_gb:.1f} GB) even at "
                           f"B={allowed[-1]}: needs ~{p.need_gb} GB with headroom [{p.basis}]",
                           "use a smaller preset, --recompute 2, more GPUs (ZeRO-1 shards the optimizer), "
                           "or --micro-batch N to try anyway", exit_code=2)
        micro = fitting[0]
        bigger = [b for b in MICRO_BATCHES if b > micro and why_not(b) is None]
        if bigger:
            choice = choice or (f"memory model: largest B that fits {min_gpu.memory_gb:.1f} GB with headroom "
                                f"(B={bigger[-1]} would need ~{predict(bigger[-1], recompute).need_gb} GB)")
        else:
            choice = choice or (f"largest B the batch/shard rules allow (see notes); fits {min_gpu.memory_gb:.1f} "
                                "GB with headroom (memory model)")
        skipped = [b for b in MICRO_BATCHES if b > micro and why_not(b) is not None]
        if skipped and not bigger:
            notes.append(f"B={skipped[-1]} and above are ruled out: {why_not(skipped[-1])}")
    memory = predict(micro, recompute)
    if not memory.fits(min_gpu.memory_gb):
        notes.append(f"warning: B={micro} -r {recompute} is predicted to need ~{memory.need_gb} GB with headroom, "
                     f"more than {min_gpu.name}'s {min_gpu.memory_gb:.1f} GB [{memory.basis}]; running as asked "
                     "(if train_gpt2cu cannot allocate at start the kit retries once with B/2)")
    if memory.basis != "measured":
        notes.append(f"memory estimate: {memory.basis}; measured series go in kitctl/memory_model.yaml")

    if data.complete is False:
        notes.append(f"{data.dir}/manifest.json says the data is not complete (kitctl data still running or "
                     "interrupted): training uses the shards there now")

    # --- steps (resuming: the run's own steps unless the user gives --steps, so its LR schedule stays)
    steps = req.steps if req.steps is not None else preset.steps
    if req.steps is None and resumable and stored.get("steps"):
        steps = int(stored["steps"])
        notes.append(f"steps {steps}: kept from {out.dir}/run.json (pass --steps N to change it)")
    if steps == -1:
        steps = data.train_tokens // D
        if steps < 1:
            raise KitError(f"{data.dir} has {data.train_tokens:,} training tokens, less than one optimizer step "
                           f"of {D:,} tokens (llm.c's default of one epoch would be 0 steps)",
                           "pass --steps N (llm.c loops over the shards), or use a bigger dataset", exit_code=2)
        notes.append(f"steps: one epoch of the train shards = {data.train_tokens:,} // {D:,} = {steps}")
    elif steps < 1:
        raise KitError(f"--steps {steps}", "use a positive number of steps (or leave it to the preset)", exit_code=2)

    # --- eval files
    hellaswag = 0 if req.bench else preset.hellaswag
    if hellaswag and micro < HELLASWAG_MIN_B:
        hellaswag = 0
        notes.append(f"HellaSwag off (-h 0): llm.c's eval needs B >= {HELLASWAG_MIN_B}, this run has B={micro}")
    elif hellaswag and facts.hellaswag is None:
        notes.append(f"HellaSwag file not found at {facts.data_root}/hellaswag/hellaswag_val.bin: llm.c skips the "
                     "eval (make it with `kitctl data hellaswag`)")
    if facts.tokenizer is None:
        notes.append(f"no {facts.data_root}/gpt2_tokenizer.bin: llm.c prints samples as token ids")
    unknown = sorted({g.name for g in gpus if not (peak_for(g.name) and peak_for(g.name).llmc_mfu)})  # type: ignore[union-attr]
    if unknown:
        notes.append(f"llm.c's MFU table lacks {', '.join(unknown)}: its step lines print -100% MFU (shown as N/A)")

    # --- resume decision
    out_dir = out.dir
    plan = Plan(preset=preset, request=req, runtime=req.runtime, gpus=gpus, precision=precision, micro_batch=micro,
                recompute=recompute, seq_len=T, total_batch=D, steps=steps, hellaswag=hellaswag, out_dir=out_dir,
                data=data, binary="", llmc_args=[], argv=[], memory=memory, choice=choice, notes=notes,
                options=options, est_tok_s=estimate_tok_s(gpus, precision, preset.descriptor, T),
                tune_file=tune_file)
    _decide_resume(plan, out)
    _launch(plan, facts)
    return plan


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


def _refuse_resume(out: OutState, diffs: list, old: dict) -> None:
    lines = [f"{k}: checkpoint {o!r}, this plan {n!r}" for k, o, n in diffs]
    hints = [_HINT[k].format(old=o, data_dir=old.get("data_dir", "?")) for k, o, _ in diffs]
    hints = list(dict.fromkeys(hints))
    raise KitError(f"{out.dir} holds a checkpoint at step {out.last_done} that this plan cannot resume:\n  "
                   + "\n  ".join(lines),
                   "; ".join(hints) + "; or start over in this folder with --fresh (the old checkpoints move "
                   "to archive-<time>/), or pick a new --name", exit_code=2)


def _refuse_batch(message: str, B: int, T: int, D: int, ranks: int) -> None:
    """No micro-batch works: suggest what does (valid -d values near the requested one, or fewer ranks)."""
    unit = B * T * ranks
    if D % unit:
        near = [d for d in ((D // unit) * unit, (D // unit + 1) * unit) if d > 0]
        hint = (f"pass --total-batch {' or '.join(map(str, near))} (multiples of B x T x ranks = {B} x {T} x "
                f"{ranks} = {unit} near {D}), or another --gpus count")
    else:   # the shard rule: one micro-batch of every rank must fit the smallest shard
        hint = "use fewer GPUs (--gpus N), a shorter sequence (-- -t N), or a dataset with bigger shards"
    raise KitError(message, hint, exit_code=2)


def _decide_resume(plan: Plan, out: OutState) -> None:
    last = out.last_done
    if last is None:
        if out.has_main_log:
            plan.notes.append(f"{out.dir} has a main.log but no checkpoint (DONE_*): starting over (-y 0)")
        return
    if plan.request.fresh:
        plan.archive_existing = True
        plan.notes.append(f"--fresh: the checkpoints up to step {last} move to {out.dir}/archive-<time>/")
        return
    old = out.run_plan
    diffs = []
    if old is None:
        if out.state_ranks and out.state_ranks != plan.ranks:
            diffs.append(("ranks", out.state_ranks, plan.ranks))
        plan.notes.append(f"{out.dir} has checkpoints but no run.json: only the rank count could be checked "
                          f"({out.state_ranks}); B, T and data are assumed to match")
    else:
        for k, v in plan.resume_key.items():
            if k == "data_dir" and old.get("data") == plan.resume_key["data"]:
                continue    # same shards, moved: fine
            if k in old and old[k] != v:
                diffs.append((k, old[k], v))
    if diffs:
        _refuse_resume(out, diffs, old or {})
    plan.resume, plan.resume_step = True, last
    if old and old.get("steps") not in (None, plan.steps):
        plan.notes.append(f"steps {old['steps']} -> {plan.steps}: llm.c recomputes its LR schedule (warm-up + "
                          "cosine decay) for the new total from the resumed step on")
    if last >= plan.steps:
        plan.complete = True


def _nccl_env(facts: Facts) -> dict[str, str]:
    env = dict(facts.host.environ_nccl)
    env.update({k: str(v) for k, v in facts.nccl_env.items()})
    return env


def llmc_args(plan: Plan, data_root: str, out: str) -> list[str]:
    p, pre = plan, plan.preset
    args = ["-i", p.data.train_glob(data_root), "-j", p.data.val_glob(data_root), "-o", out,
            "-e", pre.descriptor, "-b", str(p.micro_batch), "-t", str(p.seq_len), "-d", str(p.total_batch),
            "-r", str(p.recompute), "-z", str(pre.zero_stage), "-c", f"{pre.weight_decay:g}",
            "-l", f"{pre.learning_rate:g}", "-q", f"{pre.final_lr_frac:g}", "-u", str(pre.warmup),
            "-n", str(pre.checkpoint_every), "-v", str(pre.val_every), "-s", str(pre.sample_every),
            "-h", str(p.hellaswag), "-x", str(p.steps), "-y", "1" if p.resume else "0",
            *pre.extra, *p.request.passthrough]
    if p.request.bench:   # kitctl tune: eval only at step 0 and the last step, one batch; no sampling/checkpoints
        from kitctl.train.tune import BENCH_FLAGS
        for k, v in zip(BENCH_FLAGS[::2], BENCH_FLAGS[1::2]):
            if k in args:
                args[args.index(k) + 1] = v
            else:
                args += [k, v]
    return args


def _root_env(facts: Facts) -> dict[str, str]:
    """Open MPI refuses to run as root without these two (docker and native alike)."""
    return {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"} if facts.host.is_root else {}


def _mpi_prefix(mpirun: str, ranks: int, root: bool, env_names: list[str]) -> list[str]:
    a = [mpirun, "-np", str(ranks), "--bind-to", "none"]
    if root:
        a.append("--allow-run-as-root")
    for name in env_names:
        a += ["-x", name]
    return a


def _launch(plan: Plan, facts: Facts) -> None:
    nccl = _nccl_env(facts)
    name = plan.request.name or plan.preset.name
    if plan.runtime == "docker":
        plan.binary = f"{IMAGE_BIN}/{BINARIES[plan.precision]}"
        plan.llmc_args = llmc_args(plan, f"{WORKDIR}/data", f"{WORKDIR}/out")
        mounts = [Mount(plan.data.dir, f"{WORKDIR}/data", read_only=True), Mount(plan.out_dir, f"{WORKDIR}/out")]
        if facts.hellaswag is not None:
            mounts.append(Mount(facts.hellaswag.parent, f"{WORKDIR}/dev/data/hellaswag", read_only=True))
        if facts.tokenizer is not None:
            mounts.append(Mount(facts.tokenizer, f"{WORKDIR}/gpt2_tokenizer.bin", read_only=True))
        env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "HOME": "/tmp", **nccl, **_root_env(facts)}
        inner = [*_mpi_prefix("mpirun", plan.ranks, facts.host.is_root, sorted(nccl)), plan.binary,
                 *plan.llmc_args]
        safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name)
        plan.container = ContainerSpec(
            image=facts.image, argv=inner, mounts=mounts, env=env, workdir=WORKDIR,
            user=f"{facts.host.uid}:{facts.host.gid}", gpus=[g.index for g in plan.gpus],
            shm_size=f"{max(1, plan.ranks)}g", ulimits=["memlock=-1", "stack=67108864"],
            name=f"kitctl-train-{safe}-{facts.run_token}")
        plan.argv = docker_run_argv(plan.container)
        return
    # native: host mpirun, binary from `kitctl build --runtime native` (or --binary); llm.c's cwd-relative
    # eval files come from symlinks in a per-run working directory (no mounts on the host)
    if plan.request.binary is not None:
        binary = Path(plan.request.binary)
    else:
        binary = (facts.native_bin_dir or facts.data_root / "native" / "bin") / BINARIES[plan.precision]
    plan.binary = str(binary)
    plan.llmc_args = llmc_args(plan, str(plan.data.dir), str(plan.out_dir))
    if len(str(plan.out_dir)) >= 400:
        raise KitError(f"output path is {len(str(plan.out_dir))} characters; llm.c allows under 400",
                       "use a shorter --out", exit_code=2)
    plan.cwd = plan.out_dir / ".llmc-cwd"
    if facts.hellaswag is not None:
        plan.links.append((plan.cwd / "dev" / "data" / "hellaswag" / "hellaswag_val.bin", facts.hellaswag))
    if facts.tokenizer is not None:
        plan.links.append((plan.cwd / "gpt2_tokenizer.bin", facts.tokenizer))
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(str(g.index) for g in plan.gpus),
           **nccl, **_root_env(facts)}
    plan.env = env
    if facts.host.mpirun is None and plan.ranks <= 1:
        plan.notes.append("no host mpirun found: running the single rank directly (MPI singleton)")
        plan.argv = [plan.binary, *plan.llmc_args]
        return
    mpirun = facts.host.mpirun
    if mpirun is None:
        plan.notes.append("no host mpirun found: install Open MPI (apt install openmpi-bin) or pass --mpirun PATH")
        mpirun = "mpirun"
    plan.argv = [*_mpi_prefix(mpirun, plan.ranks, facts.host.is_root,
                              sorted(k for k in env if not k.startswith("OMPI_"))), plan.binary, *plan.llmc_args]
