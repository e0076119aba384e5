"""Decision 2 of a plan: micro-batch B and recompute -r (and so gradient accumulation and memory).

In order: the user's --micro-batch / --recompute; the checkpoint's B when resuming (llm.c resumes only with the
same B); the tune cache's fastest measured config; else the FASTEST config that fits memory according to the
throughput table (``kitctl.train.throughput``); else (no table series for this build) the largest B that fits.
"Fits" is the memory model's prediction with headroom (``kitctl.train.memory``). llm.c's rules bound B first:
-d must be a multiple of B x T x ranks, and every shard must hold ranks x B x T + 1 tokens.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

from kitctl.core.errors import ConfigError
from kitctl.core.llmc_files import grad_accum_steps
from kitctl.host.gpus import GPU
from kitctl.train.facts import DataInfo
from kitctl.train.memory import MemoryModel, Prediction
from kitctl.train.presets import Preset
from kitctl.core.run_record import PlanRecord
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

    @property
    def est_tok_s(self) -> Optional[float]:
        """The estimate's tokens/s (None: no estimate, or one without a rate)."""
        return self.estimate.tok_s if self.estimate else None


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
    zero_stage: Optional[int] = None      # -z (None: the preset's)
    cudnn: Optional[bool] = None          # the BF16 binary has cuDNN attention (its build record / image label;
                                          # None: not known, assumed on, as the kit builds it by default)
    force_memory: bool = False            # --force-memory: run a B the memory model says cannot fit (no refusal)

    @property
    def ranks(self) -> int:
        return len(self.gpus)

    @property
    def min_gpu(self) -> GPU:
        return min(self.gpus, key=lambda g: g.memory_mib)

    @property
    def uses_cudnn(self) -> bool:
        """Whether the binary this precision runs has cuDNN attention (the FP32 one never has)."""
        return self.precision == "bf16" and self.cudnn is not False


class _Rules:
    """llm.c's batch rules and the memory model for one (GPUs, precision, T, -d)."""

    def __init__(self, x: BatchInputs, mem: MemoryModel, table: ThroughputTable):
        self.x, self.mem, self.table = x, mem, table

    def why_not(self, B: int) -> Optional[str]:
        x, T, D, ranks = self.x, self.x.seq_len, self.x.total_batch, self.x.ranks
        if grad_accum_steps(D, B, T, ranks) is None:
            return (f"total batch -d {D} is not a multiple of B x T x ranks = {B} x {T} x {ranks} = {B * T * ranks}"
                    " (llm.c asserts it: every optimizer step is a whole number of micro-batches on every rank)")
        if ranks * B * T + 1 > x.data.min_shard_tokens:
            return (f"the smallest shard has {x.data.min_shard_tokens:,} tokens, fewer than ranks x B x T + 1 = "
                    f"{ranks * B * T + 1:,} (llm.c asserts every shard holds one micro-batch of every rank)")
        return None

    def predict(self, B: int, r: int) -> Prediction:
        x = self.x
        zero = x.zero_stage if x.zero_stage is not None else x.preset.zero_stage
        return self.mem.predict(x.preset.descriptor, B, x.seq_len, r, x.precision, x.ranks, zero, x.uses_cudnn)

    def fits(self, B: int, r: int) -> bool:
        return self.predict(B, r).fits(self.x.min_gpu.memory_gb)

    def candidate(self, B: int, r: int) -> Candidate:
        x = self.x
        return Candidate(B, r, self.predict(B, r),
                         self.table.estimate(list(x.gpus), x.precision, x.preset.descriptor, x.seq_len, B, r,
                                             cudnn=x.uses_cudnn))


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
    raise ConfigError(message, hint)


def _tok(e: Optional[Estimate]) -> str:
    return f"~{e.tok_s:,.0f} tok/s" if e is not None and e.tok_s else "n/a"


@dataclass(frozen=True)
class _Pick:
    """B and -r as far as they are decided (None: not yet), and where they came from."""

    micro: Optional[int]
    recompute: Optional[int]
    choice: str = ""
    source: Source = "user"


def _asked(x: BatchInputs) -> _Pick:
    """Step 1: the user's B and -r, else the checkpoint's when resuming (llm.c resumes only with the same B); an
    out-of-memory retry says so."""
    if x.recompute is not None and x.recompute not in RECOMPUTES:
        raise ConfigError(f"--recompute {x.recompute}", "use 0 (none), 1 (GELU) or 2 (GELU + layernorm)")
    pick = _Pick(x.micro_batch, x.recompute)
    if pick.micro is None and x.stored is not None and x.stored.micro_batch:
        r = x.stored.recompute if pick.recompute is None and x.stored.recompute in RECOMPUTES else pick.recompute
        pick = _Pick(int(x.stored.micro_batch), r, f"kept from the checkpoint at step {x.resume_step} (llm.c "
                     "resumes only with the same B)", "checkpoint")
    if x.oom_retry_from is not None:
        pick = dataclasses.replace(pick, source="oom-retry", choice=(
            f"halved from {x.oom_retry_from}: train_gpt2cu ran out of GPU memory before its first step with "
            f"B={x.oom_retry_from}"))
    return pick


def _check_given(rules: _Rules, pick: _Pick) -> _Pick:
    """Step 2: a B given (or kept) must satisfy llm.c's rules; say which B would."""
    micro = pick.micro
    if micro is None:
        return pick
    if micro < 1:
        raise ConfigError(f"--micro-batch {micro}", "use a positive micro-batch")
    reason = rules.why_not(micro)
    ok = [b for b in MICRO_BATCHES if rules.why_not(b) is None]
    if reason and ok:
        raise ConfigError(f"micro-batch {micro} cannot run: {reason}",
                          f"use --micro-batch {' / '.join(map(str, ok))}, or --total-batch N")
    if reason:
        x = rules.x
        refuse_batch(f"micro-batch {micro} cannot run: {reason}", micro, x.seq_len, x.total_batch, x.ranks)
    return dataclasses.replace(pick, choice=pick.choice or "your --micro-batch")


def _allowed(rules: _Rules, pick: _Pick) -> list[int]:
    """Step 3: the B values llm.c's rules allow; refuse (with the numbers of the B this run would use) if none."""
    allowed = [b for b in MICRO_BATCHES if rules.why_not(b) is None]
    if not allowed:
        x = rules.x
        r = pick.recompute if pick.recompute is not None else x.preset.recompute
        B = next((b for b in MICRO_BATCHES
                  if x.ranks * b * x.seq_len + 1 <= x.data.min_shard_tokens and rules.fits(b, r)), 1)
        refuse_batch(f"no micro-batch in {list(MICRO_BATCHES)} works with {x.ranks} rank(s): {rules.why_not(B)}",
                     B, x.seq_len, x.total_batch, x.ranks)
    return allowed


def _from_tune(x: BatchInputs, pick: _Pick, allowed: list[int], notes: list[str]) -> tuple[_Pick, Optional[str]]:
    """Step 4: the tune cache's fastest measured config that this run allows (and the cache file)."""
    if x.tune is None:
        return pick, None
    cands = [r for r in x.tune.record.ok() if r.micro_batch in allowed and pick.micro in (None, r.micro_batch)
             and pick.recompute in (None, r.recompute)]
    if not cands:
        return pick, None
    best = max(cands, key=lambda r: r.tok_s or 0)
    if pick.micro is None:
        pick = dataclasses.replace(pick, choice=f"tune cache: fastest measured, {best.tok_s:,.0f} tok/s", source="tune")
    pick = dataclasses.replace(pick, micro=best.micro_batch)
    if pick.recompute is None:
        pick = dataclasses.replace(pick, recompute=best.recompute)
        preset_r = x.preset.recompute
        if best.recompute != preset_r:
            same = [r.tok_s or 0 for r in cands if r.recompute == preset_r]
            alt = f" (best with -r {preset_r}: {max(same):,.0f})" if same else ""
            notes.append(f"recompute -r {best.recompute} instead of the preset's {preset_r}: the tune cache "
                         f"measured it faster here, {best.tok_s:,.0f} tok/s{alt}")
    return pick, str(x.tune.path)


def _from_table(rules: _Rules, pick: _Pick, allowed: list[int], notes: list[str]
                ) -> tuple[_Pick, tuple[Candidate, ...]]:
    """Step 5: the throughput table's fastest config that fits (or, without a series for this build, the
    largest B that fits); -r for a given B. Also the configs that fit, fastest first."""
    x, table, preset, min_gpu = rules.x, rules.table, rules.x.preset, rules.x.min_gpu
    recs = (pick.recompute,) if pick.recompute is not None else RECOMPUTES
    bs = (pick.micro,) if pick.micro is not None else tuple(allowed)
    fitting = [rules.candidate(b, r) for b in bs for r in recs if rules.fits(b, r)]
    has_table = table.reference(list(x.gpus), x.precision, preset.descriptor, x.seq_len) is not None
    ranked = tuple(sorted(fitting, key=lambda c: _rank_key(c, preset.recompute), reverse=True)) if has_table else ()
    if pick.micro is not None:
        if pick.recompute is None:
            mine = [c for c in ranked if c.micro_batch == pick.micro]
            tie = _least_recompute(mine[0], ranked, table.recompute_tie) if mine else None
            if tie is not None:
                mine = [tie[0]]
                notes.append(tie[1])
            pick = dataclasses.replace(pick, recompute=mine[0].recompute if mine else preset.recompute)
            if mine and pick.recompute != preset.recompute and tie is None:
                notes.append(f"recompute -r {pick.recompute} instead of the preset's {preset.recompute} at your "
                             f"B={pick.micro}: faster per the throughput table ({_tok(mine[0].estimate)})")
        return pick, ranked
    if not fitting:
        least = max(recs)
        p = rules.predict(allowed[-1], least)
        raise ConfigError(f"{preset.name} does not fit {min_gpu.name} ({min_gpu.memory_label}) even at "
                          f"B={allowed[-1]} -r {least}: needs ~{p.need_mib} MiB with headroom [{p.basis}]",
                          "use a smaller preset, more GPUs (ZeRO-1 shards the optimizer), or --micro-batch N to "
                          "try anyway")
    if ranked:
        best = ranked[0]
        tie = _least_recompute(best, ranked, table.recompute_tie)
        if tie is not None:
            best = tie[0]
            ranked = (best, *(c for c in ranked if c is not best))
        notes += _table_notes(best, ranked, rules, preset, tie[1] if tie else None)
        return _Pick(best.micro_batch, best.recompute, f"throughput table: fastest config"
                     f"{' (within its error)' if tie else ''} that fits "
                     f"{min_gpu.memory_label} with headroom, {_tok(best.estimate)}", "table"), ranked
    r = pick.recompute if pick.recompute is not None else preset.recompute
    micro = ([b for b in allowed if rules.fits(b, r)] or [allowed[-1]])[0]
    bigger = [b for b in MICRO_BATCHES if b > micro and rules.why_not(b) is None]
    return _Pick(micro, r, f"memory model: largest B that fits {min_gpu.memory_label} with headroom (no "
                 f"throughput table series for {x.precision})"
                 + (f"; B={bigger[-1]} would need ~{rules.predict(bigger[-1], r).need_mib} MiB" if bigger else ""),
                 "memory"), ranked


def choose_batch(x: BatchInputs, mem: MemoryModel, table: ThroughputTable) -> BatchChoice:
    rules = _Rules(x, mem, table)
    notes: list[str] = []
    pick = _check_given(rules, _asked(x))
    allowed = _allowed(rules, pick)
    pick, tune_file = _from_tune(x, pick, allowed, notes)
    pick, ranked = _from_table(rules, pick, allowed, notes)
    micro, recompute, min_gpu = pick.micro, pick.recompute, x.min_gpu
    assert micro is not None and recompute is not None     # step 5 decides both
    skipped = [b for b in MICRO_BATCHES if b > micro and rules.why_not(b) is not None]
    if skipped and micro == allowed[0] and pick.source in ("table", "memory"):
        notes.append(f"B={skipped[-1]} and above are ruled out: {rules.why_not(skipped[-1])}")
    memory = rules.predict(micro, recompute)
    if memory.peak_gb > min_gpu.memory_gb and pick.source == "user" and not x.force_memory:
        _refuse_memory(rules, micro, recompute, memory, allowed, x.recompute)
    if not memory.fits(min_gpu.memory_gb):
        notes.append(f"warning: B={micro} -r {recompute} is predicted to need ~{memory.need_mib} MiB with headroom, "
                     f"more than {min_gpu.name}'s {min_gpu.memory_label} [{memory.basis}]; running as asked "
                     "(if train_gpt2cu cannot allocate at start the kit retries once with B/2)")
    if memory.basis != "measured":
        notes.append(f"memory estimate: {memory.basis}; measured series go in kitctl/train/memory_model.yaml")
    estimate = rules.candidate(micro, recompute).estimate
    return BatchChoice(micro, recompute, memory, pick.choice, pick.source, estimate, tune_file, ranked, tuple(notes))


def largest_fit(rules: _Rules, allowed: list[int], recompute: Optional[int]) -> Optional[tuple[int, int]]:
    """The largest allowed B that fits with headroom, with the least recompute that makes it fit (``recompute``
    given: only that one)."""
    for b in allowed:
        for r in ((recompute,) if recompute is not None else RECOMPUTES):
            if rules.fits(b, r):
                return b, r
    return None


def _refuse_memory(rules: _Rules, micro: int, recompute: int, memory: Prediction, allowed: list[int],
                   asked_r: Optional[int]) -> None:
    """The given B's predicted peak alone exceeds the card: llm.c would fail to allocate, and the one retry at
    B/2 the kit makes would not save it. Name the largest B (and -r) that fits; --force-memory runs it anyway."""
    g = rules.x.min_gpu
    fit = largest_fit(rules, allowed, asked_r)
    if fit is None and asked_r is not None:
        fit = largest_fit(rules, allowed, None)
    way = (f"use -b {fit[0]} -r {fit[1]} (--micro-batch {fit[0]} --recompute {fit[1]}): the largest B that fits "
           f"{g.memory_label} with headroom (~{rules.predict(*fit).need_mib} MiB)" if fit else
           "no B fits this card: use a smaller preset or more GPUs (ZeRO-1 shards the optimizer)")
    half = max(1, micro // 2)
    retry = (f", and so would the kit's one retry at B={half}" if rules.predict(half, recompute).peak_gb > g.memory_gb
             else "")
    raise ConfigError(f"B={micro} -r {recompute} cannot fit {g.name} ({g.memory_label}): its predicted peak is "
                      f"~{memory.peak_mib:,} MiB [{memory.basis}]; llm.c would stop out of memory{retry}",
                      f"{way}; or --force-memory to run it anyway (the memory model may be wrong for your build)")


def _least_recompute(best: Candidate, ranked: tuple[Candidate, ...], margin: float
                     ) -> Optional[tuple[Candidate, str]]:
    """Where another -r at the pick's B is within the table's error (``margin``) of the pick, the table cannot
    tell them apart: the least recompute instead (no extra backward work), and the sentence that says so. None
    when the table can tell (or nothing else fits at that B)."""
    if best.estimate is None or margin <= 0:
        return None
    near = [c for c in ranked if c.micro_batch == best.micro_batch and c.recompute != best.recompute
            and c.estimate is not None and c.estimate.score >= best.estimate.score * (1 - margin)]
    if not near:
        return None
    least = min([best, *near], key=lambda c: c.recompute)
    others = sorted({c.recompute for c in [best, *near]} - {least.recompute})
    vs = ", ".join(f"-r {c.recompute} {_tok(c.estimate)}" for c in sorted([best, *near], key=lambda c: c.recompute))
    return least, (f"the throughput table cannot tell -r {least.recompute} from -r {'/'.join(map(str, others))} at "
                   f"B={best.micro_batch} within its error (±{margin:.0%}: {vs}): -r {least.recompute}, the least "
                   "recompute (no extra backward work); `kitctl tune` measures them on this box")


def _table_notes(best: Candidate, ranked: tuple[Candidate, ...], rules: _Rules, preset: Preset,
                 tie: Optional[str] = None) -> list[str]:
    """Say why the table's pick differs from the preset (its -r, and the B its source ran)."""
    notes = [tie] if tie else []
    if best.recompute != preset.recompute and not tie:
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
