"""Decision 2 of a plan: micro-batch B and recompute -r (and so gradient accumulation and memory).

In order: the user's --micro-batch / --recompute; the checkpoint's B when resuming (llm.c resumes only with the
same B); the tune cache's fastest measured config; else the FASTEST config that fits memory according to the
throughput table (``kitctl.train.throughput``); else (no table series for this build) the largest B that fits.
"Fits" is the memory model's prediction with headroom (``kitctl.train.memory``). llm.c's rules bound B first:
-d must be a multiple of B x T x ranks, and every shard must hold ranks x B x T + 1 tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from kitctl.core.errors import KitError
from kitctl.host.gpus import GPU
from kitctl.train.facts import DataInfo
from kitctl.train.memory import MemoryModel, Prediction
from kitctl.train.presets import Preset
from kitctl.train.record import PlanRecord
from kitctl.train.throughput import Estimate, ThroughputTable
from kitctl.train.tune_cache import CachedTune

MICRO_BATCHES = (64, 32, 16, 8, 4, 2, 1)
RECOMPUTES = (0, 1, 2)

Source = Literal["user", "checkpoint", "oom-retry", "tune", "table", "memory"]


@dataclass(frozen=True)
class Candidate:
    micro_batch: int
    recompute: int
    memory: Prediction
    estimate: Optional[Estimate]

    @property
    def label(self) -> str:
        return f"B={self.micro_batch} -r {self.recompute}"


@dataclass(frozen=True)
class BatchChoice:
    micro_batch: int
    recompute: int
    memory: Prediction
    choice: str                          # where B came from (shown beside it)
    source: Source
    estimate: Optional[Estimate]         # tokens/s of this config (throughput table)
    tune_file: Optional[str] = None
    ranked: tuple[Candidate, ...] = ()   # the configs that fit, fastest first (what a short tune measures)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchInputs:
    preset: Preset
    gpus: tuple[GPU, ...]
    precision: str
    seq_len: int
    total_batch: int
    data: DataInfo
    micro_batch: Optional[int] = None     # the user's
    recompute: Optional[int] = None       # the user's
    stored: Optional[PlanRecord] = None   # the checkpoint's plan, when this run resumes
    resume_step: Optional[int] = None
    oom_retry_from: Optional[int] = None
    tune: Optional[CachedTune] = None

    @property
    def ranks(self) -> int:
        return len(self.gpus)

    @property
    def min_gpu(self) -> GPU:
        return min(self.gpus, key=lambda g: g.memory_mib)


class _Rules:
    """llm.c's batch rules and the memory model for one (GPUs, precision, T, -d)."""

    def __init__(self, x: BatchInputs, mem: MemoryModel, table: ThroughputTable):
        self.x, self.mem, self.table = x, mem, table

    def why_not(self, B: int) -> Optional[str]:
        x, T, D, ranks = self.x, self.x.seq_len, self.x.total_batch, self.x.ranks
        if D % (B * T * ranks):
            return (f"total batch -d {D} is not a multiple of B x T x ranks = {B} x {T} x {ranks} = {B * T * ranks}"
                    " (llm.c asserts it: every optimizer step is a whole number of micro-batches on every rank)")
        if ranks * B * T + 1 > x.data.min_shard_tokens:
            return (f"the smallest shard has {x.data.min_shard_tokens:,} tokens, fewer than ranks x B x T + 1 = "
                    f"{ranks * B * T + 1:,} (llm.c asserts every shard holds one micro-batch of every rank)")
        return None

    def predict(self, B: int, r: int) -> Prediction:
        x = self.x
        return self.mem.predict(x.preset.descriptor, B, x.seq_len, r, x.precision, x.ranks, x.preset.zero_stage,
                                x.precision == "bf16")

    def fits(self, B: int, r: int) -> bool:
        return self.predict(B, r).fits(self.x.min_gpu.memory_gb)

    def candidate(self, B: int, r: int) -> Candidate:
        x = self.x
        return Candidate(B, r, self.predict(B, r),
                         self.table.estimate(list(x.gpus), x.precision, x.preset.descriptor, x.seq_len, B, r))


def _rank_key(c: Candidate, preset_r: int) -> tuple:
    """Fastest first; a B outside the measured range (its estimate is the nearest measured B's, not an
    extrapolation) only after every config inside it; ties: the bigger B, then the preset's -r."""
    e = c.estimate
    if e is None:
        return (False, 0.0, 0, c.micro_batch, c.recompute == preset_r)
    return (e.quality > 0, e.score, e.quality, c.micro_batch, c.recompute == preset_r)


def refuse_batch(message: str, B: int, T: int, D: int, ranks: int) -> None:
    """No micro-batch works: suggest what does (valid -d values near the requested one, or fewer ranks)."""
    unit = B * T * ranks
    if D % unit:
        near = [d for d in ((D // unit) * unit, (D // unit + 1) * unit) if d > 0]
        hint = (f"pass --total-batch {' or '.join(map(str, near))} (multiples of B x T x ranks = {B} x {T} x "
                f"{ranks} = {unit} near {D}), or another --gpus count")
    else:   # the shard rule: one micro-batch of every rank must fit the smallest shard
        hint = "use fewer GPUs (--gpus N), a shorter sequence (-- -t N), or a dataset with bigger shards"
    raise KitError(message, hint, exit_code=2)


def _tok(e: Optional[Estimate]) -> str:
    return f"~{e.tok_s:,.0f} tok/s" if e is not None and e.tok_s else "n/a"


def choose_batch(x: BatchInputs, mem: MemoryModel, table: ThroughputTable) -> BatchChoice:
    rules = _Rules(x, mem, table)
    preset, T, D, ranks, min_gpu = x.preset, x.seq_len, x.total_batch, x.ranks, x.min_gpu
    if x.recompute is not None and x.recompute not in RECOMPUTES:
        raise KitError(f"--recompute {x.recompute}", "use 0 (none), 1 (GELU) or 2 (GELU + layernorm)", exit_code=2)
    notes: list[str] = []
    micro, recompute, choice = x.micro_batch, x.recompute, ""
    source: Source = "user"
    if micro is None and x.stored is not None and x.stored.micro_batch:
        micro, source = int(x.stored.micro_batch), "checkpoint"
        choice = f"kept from the checkpoint at step {x.resume_step} (llm.c resumes only with the same B)"
        if recompute is None and x.stored.recompute in RECOMPUTES:
            recompute = x.stored.recompute
    if x.oom_retry_from is not None:
        source = "oom-retry"
        choice = (f"halved from {x.oom_retry_from}: train_gpt2cu ran out of GPU memory before its first "
                  f"step with B={x.oom_retry_from}")
    if micro is not None:
        if micro < 1:
            raise KitError(f"--micro-batch {micro}", "use a positive micro-batch", exit_code=2)
        reason = rules.why_not(micro)
        ok = [b for b in MICRO_BATCHES if rules.why_not(b) is None]
        if reason and ok:
            raise KitError(f"micro-batch {micro} cannot run: {reason}",
                           f"use --micro-batch {' / '.join(map(str, ok))}, or --total-batch N", exit_code=2)
        if reason:
            refuse_batch(f"micro-batch {micro} cannot run: {reason}", micro, T, D, ranks)
        choice = choice or "your --micro-batch"
    allowed = [b for b in MICRO_BATCHES if rules.why_not(b) is None]
    if not allowed:
        # the B this run would use if -d allowed it (shard rule and memory), so the hint shows real numbers
        r = recompute if recompute is not None else preset.recompute
        B = next((b for b in MICRO_BATCHES if ranks * b * T + 1 <= x.data.min_shard_tokens and rules.fits(b, r)), 1)
        refuse_batch(f"no micro-batch in {list(MICRO_BATCHES)} works with {ranks} rank(s): {rules.why_not(B)}",
                     B, T, D, ranks)

    # --- the tune cache: the fastest measured config this run allows
    tune_file = None
    if x.tune is not None:
        cands = [r for r in x.tune.record.ok() if r.micro_batch in allowed
                 and (micro is None or r.micro_batch == micro) and (recompute is None or r.recompute == recompute)]
        if cands:
            best = max(cands, key=lambda r: r.tok_s or 0)
            tune_file = str(x.tune.path)
            if micro is None:
                choice, source = f"tune cache: fastest measured, {best.tok_s:,.0f} tok/s", "tune"
            micro = best.micro_batch
            if recompute is None:
                recompute = best.recompute
                if recompute != preset.recompute:
                    same = [r.tok_s or 0 for r in cands if r.recompute == preset.recompute]
                    alt = f" (best with -r {preset.recompute}: {max(same):,.0f})" if same else ""
                    notes.append(f"recompute -r {recompute} instead of the preset's {preset.recompute}: the tune "
                                 f"cache measured it faster here, {best.tok_s:,.0f} tok/s{alt}")

    # --- the throughput table: the fastest config that fits (or the largest B, without a series for this build)
    recs = (recompute,) if recompute is not None else RECOMPUTES
    bs = (micro,) if micro is not None else tuple(allowed)
    fitting = [rules.candidate(b, r) for b in bs for r in recs if rules.fits(b, r)]
    has_table = table.reference(list(x.gpus), x.precision, preset.descriptor, T) is not None
    ranked = tuple(sorted(fitting, key=lambda c: _rank_key(c, preset.recompute), reverse=True)) if has_table else ()
    if micro is None:
        if not fitting:
            least = max(recs)
            p = rules.predict(allowed[-1], least)
            raise KitError(f"{preset.name} does not fit {min_gpu.name} ({min_gpu.memory_label}) even at "
                           f"B={allowed[-1]} -r {least}: needs ~{p.need_mib} MiB with headroom [{p.basis}]",
                           "use a smaller preset, more GPUs (ZeRO-1 shards the optimizer), or --micro-batch N to "
                           "try anyway", exit_code=2)
        if ranked:
            best_c = ranked[0]
            micro, recompute, source = best_c.micro_batch, best_c.recompute, "table"
            choice = (f"throughput table: fastest config that fits {min_gpu.memory_label} with headroom, "
                      f"{_tok(best_c.estimate)}")
            notes += _table_notes(best_c, ranked, rules, preset)
        else:
            r = recompute if recompute is not None else preset.recompute
            fit_b = [b for b in allowed if rules.fits(b, r)] or [allowed[-1]]
            micro, recompute, source = fit_b[0], r, "memory"
            bigger = [b for b in MICRO_BATCHES if b > micro and rules.why_not(b) is None]
            choice = (f"memory model: largest B that fits {min_gpu.memory_label} with headroom (no throughput "
                      f"table series for {x.precision})"
                      + (f"; B={bigger[-1]} would need ~{rules.predict(bigger[-1], r).need_mib} MiB" if bigger else ""))
    elif recompute is None:
        mine = [c for c in ranked if c.micro_batch == micro]
        recompute = mine[0].recompute if mine else preset.recompute
        if mine and recompute != preset.recompute:
            notes.append(f"recompute -r {recompute} instead of the preset's {preset.recompute} at your B={micro}: "
                         f"faster per the throughput table ({_tok(mine[0].estimate)})")
    skipped = [b for b in MICRO_BATCHES if b > micro and rules.why_not(b) is not None]
    if skipped and micro == allowed[0] and source in ("table", "memory"):
        notes.append(f"B={skipped[-1]} and above are ruled out: {rules.why_not(skipped[-1])}")

    memory = rules.predict(micro, recompute)
    if not memory.fits(min_gpu.memory_gb):
        notes.append(f"warning: B={micro} -r {recompute} is predicted to need ~{memory.need_mib} MiB with headroom, "
                     f"more than {min_gpu.name}'s {min_gpu.memory_label} [{memory.basis}]; running as asked "
                     "(if train_gpt2cu cannot allocate at start the kit retries once with B/2)")
    if memory.basis != "measured":
        notes.append(f"memory estimate: {memory.basis}; measured series go in kitctl/train/memory_model.yaml")
    estimate = rules.candidate(micro, recompute).estimate
    return BatchChoice(micro, recompute, memory, choice, source, estimate, tune_file, ranked, tuple(notes))


def _table_notes(best: Candidate, ranked: tuple[Candidate, ...], rules: _Rules, preset: Preset) -> list[str]:
    """Say why the table's pick differs from the preset (its -r, and the B its source ran)."""
    notes = []
    if best.recompute != preset.recompute:
        same = [c for c in ranked if c.recompute == preset.recompute]
        alt = f"; best with -r {preset.recompute}: {same[0].label}, {_tok(same[0].estimate)}" if same else ""
        notes.append(f"recompute -r {best.recompute} instead of the preset's {preset.recompute}: faster per the "
                     f"throughput table ({best.label}, {_tok(best.estimate)}{alt})")
    pub = preset.micro_batch_published
    if pub and pub != best.micro_batch:
        why = rules.why_not(pub)
        if why is None and not rules.fits(pub, best.recompute):
            why = (f"B={pub} -r {best.recompute} would need ~{rules.predict(pub, best.recompute).need_mib} MiB with "
                   f"headroom, more than {rules.x.min_gpu.memory_label}")
        elif why is None:
            why = f"B={pub} -r {best.recompute} is slower ({_tok(rules.candidate(pub, best.recompute).estimate)})"
        notes.append(f"B={best.micro_batch}, not the B={pub} of {preset.source}: {why}")
    return notes
