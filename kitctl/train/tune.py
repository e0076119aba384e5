"""``kitctl tune``: measure tokens/s of micro-batch x recompute on the GPUs themselves, cache the result.

tokens/s is not monotonic in B (1x H200, d12: B=16 -r 0 538K tok/s, B=32 -r 1 479K, B=64 -r 1 479K), so the
biggest B that fits is not the fastest. Tune runs train_gpt2cu for a few optimizer steps per configuration on
the same GPUs, data and binary as the training run (same ranks, through mpirun for ranks > 1, so the
all-reduce is in the measurement), with eval, sampling and checkpoints off (the schedule's ``bench`` mode,
``kitctl.train.schedule``) and a throw-away output folder:

    -x STEPS -v 1000000000 -m 1 -s 0 -h 0 -n 0 -y 0      (-v 0 would divide by zero in llm.c)

tokens/s = total_batch / median(step ms) over the steps after the warm-up ones. A configuration that runs
out of memory is recorded as ``oom``. The record is cached (``kitctl.train.tune_cache``); the planner uses the
fastest ``ok`` entry that is allowed for the run. :func:`tune_first` is the short, bounded tune ``kitctl train``
runs before training on GPUs without throughput measurements.
"""
from __future__ import annotations

import dataclasses
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import yaml
from rich.console import Console

from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.progress import format_duration
from kitctl.host.gpus import GPU
from kitctl.train.facts import Facts, OutState, gather_facts
from kitctl.train.gpu_sampler import MemorySampler
from kitctl.train.memory import SeriesData, default_model
from kitctl.train.plan import Plan
from kitctl.train.batch import MICRO_BATCHES
from kitctl.train.planner import build_plan
from kitctl.train.request import TrainRequest, gpu_spec
from kitctl.train.runner import launch, preflight, prepare_out
from kitctl.train.steplog import throughput
from kitctl.train.tune_cache import CachedTune, TuneKey, TuneResult, cache_key, write_record

DEFAULT_STEPS = 20
DEFAULT_WARMUP = 5


def sweep_configs(allowed_b: list[int], fits: Callable[[int, int], bool], recomputes: tuple[int, ...] = (0, 1),
                  min_b: int = 8) -> list[tuple[int, int]]:
    """(B, recompute) pairs to measure, largest B first: every allowed B >= min_b whose predicted peak fits
    the GPU (``fits(B, r)`` without the planner's headroom: a measurement settles the borderline ones); if
    none >= min_b fits, the largest that does."""
    out = []
    for r in recomputes:
        cands = [b for b in allowed_b if fits(b, r)]
        big = [b for b in cands if b >= min_b]
        out += [(b, r) for b in (big or cands[:1])]
    return sorted(out, key=lambda br: (-br[0], br[1]))


@dataclass(frozen=True)
class Sweep:
    """What one tune measures, planned (starts nothing)."""

    base: Plan
    base_req: TrainRequest
    facts: Facts
    configs: tuple[tuple[int, int], ...]
    key: TuneKey
    runtime_id: Optional[str]
    scratch: Path
    tune_dir: Path
    steps: int
    warmup: int
    full: bool = False

    @property
    def gpus(self) -> list[GPU]:
        return list(self.base.decisions.hardware.gpus)

    def plan(self, b: int, r: int) -> Plan:
        req = dataclasses.replace(self.base_req, micro_batch=b, recompute=r, gpus=gpu_spec(self.gpus),
                                  precision=self.base.decisions.hardware.precision, force_memory=True)
        return build_plan(req, self.facts)


def plan_sweep(cfg: KitConfig, req: TrainRequest, inventory: Optional[Path] = None, mpirun: str = "/usr/bin/mpirun",
               steps: int = DEFAULT_STEPS, warmup: int = DEFAULT_WARMUP, min_b: int = 8, full: bool = False,
               configs: Optional[tuple[tuple[int, int], ...]] = None) -> Sweep:
    """``full``: every B >= ``min_b`` allowed by the divisibility / shard rules and recompute 0, 1, 2, whatever
    the memory model says (the reference sweep); ``configs``: exactly these (kitctl train's short tune)."""
    if steps <= warmup + 2:
        raise ConfigError(f"--steps {steps} leaves fewer than 3 timed steps after {warmup} warm-up steps",
                          "use more --steps or fewer --warmup")
    tune_dir = cfg.layout.tune_cache
    scratch = tune_dir / f"scratch-{uuid.uuid4().hex[:8]}"
    base_req = dataclasses.replace(req, steps=steps, mode="bench", no_tune=True, tune_first=False,
                                   fresh=False, out=scratch, micro_batch=None, recompute=None)
    facts = gather_facts(cfg, base_req, inventory, mpirun)
    facts = dataclasses.replace(facts, out=OutState(scratch), tune_records=())
    base = build_plan(base_req, facts)
    d = base.decisions
    gpus, precision = list(d.hardware.gpus), d.hardware.precision
    rid = facts.runtime_ids.get(precision)
    key = cache_key(gpus, precision, d.preset.name, rid or "unknown", d.seq_len, d.total_batch)
    chosen = configs if configs is not None else sweep_configs_for(base_req, facts, base, min_b, full)
    return Sweep(base, base_req, facts, tuple(chosen), key, rid, scratch, tune_dir, steps, warmup, full)


def sweep_configs_for(req: TrainRequest, facts: Facts, base: Plan, min_b: int = 8, full: bool = False
                      ) -> tuple[tuple[int, int], ...]:
    """The (B, -r) a tune on ``base``'s GPUs and precision measures (pure: it only plans). ``full``: every B >=
    ``min_b`` allowed by the divisibility / shard rules x recompute 0, 1, 2; else :func:`sweep_configs` over the
    allowed B with the memory model (no headroom)."""
    d = base.decisions
    gpus, precision = d.hardware.gpus, d.hardware.precision

    def allowed(b: int) -> bool:
        try:
            build_plan(dataclasses.replace(req, micro_batch=b, recompute=d.batch.recompute, gpus=gpu_spec(gpus),
                                           precision=precision, force_memory=True), facts)
            return True
        except KitError:
            return False

    allowed_b = [b for b in MICRO_BATCHES if allowed(b)]
    if full:
        return tuple((b, r) for b in allowed_b if b >= min_b for r in (0, 1, 2))
    mem = default_model()
    min_gpu = min(g.memory_gb for g in gpus)

    def fits(b: int, r: int) -> bool:
        return mem.predict(d.preset.descriptor, b, d.seq_len, r, precision, len(gpus), d.zero_stage,
                           precision == "bf16").peak_gb <= min_gpu

    return tuple(sweep_configs(allowed_b, fits, min_b=min_b))


def measure(sweep: Sweep, console: Console, auto: bool = False) -> CachedTune:
    """Run every config of the sweep, write the cache record, print the fastest; KitError if none ran."""
    if sweep.runtime_id is None:
        raise KitError("cannot identify the runtime for the tune cache key (no image id / no native binary)",
                       "build the image or native binary first (kitctl build)")
    results: list[TuneResult] = []
    last_plan = sweep.base
    gpus = sweep.gpus
    started = time.monotonic()
    try:
        for b, r in sweep.configs:
            plan = sweep.plan(b, r)
            preflight(plan)
            shutil.rmtree(sweep.scratch, ignore_errors=True)
            prepare_out(plan)
            with MemorySampler([g.index for g in gpus]) as sampler:
                out = launch(plan, lambda s: None)
            if out.interrupted:
                raise KitError("tune interrupted: all ranks stopped; nothing was cached", exit_code=130)
            tok_s = throughput(out.steps, plan.decisions.total_batch, sweep.warmup)
            if out.rc == 0 and tok_s:
                res = TuneResult(micro_batch=b, recompute=r, status="ok", tok_s=round(tok_s),
                                 ms_median=round(plan.decisions.total_batch / tok_s * 1000, 2), steps=len(out.steps))
            elif out.oom_before_first_step or any("out of memory" in t for t in out.tail):
                res = TuneResult(micro_batch=b, recompute=r, status="oom")
            else:
                res = TuneResult(micro_batch=b, recompute=r, status="failed", rc=out.rc, tail=out.tail[-8:])
            res = res.model_copy(update={"peak_mib": sampler.peak_mib})
            results.append(res)
            console.print(f"  B={b:<3} -r {r}: " + (f"{res.tok_s:>12,} tok/s" if res.status == "ok" else res.status)
                          + (f", peak {res.peak_mib:,} MiB" if res.peak_mib is not None else ""), highlight=False)
            last_plan = plan
    finally:
        shutil.rmtree(sweep.scratch, ignore_errors=True)
    series = memory_series(results, gpus, sweep.base, last_plan)
    cached = write_record(sweep.tune_dir, sweep.key, results, sweep.steps, sweep.warmup,
                          gpu_indices=[g.index for g in gpus], full=sweep.full, auto=auto, memory_series=series)
    if series and not auto:
        console.print("memory measured (peak nvidia-smi memory.used of the picked GPUs, other processes "
                      "included) as series for kitctl/train/memory_model.yaml:", style="bold")
        sys.stdout.write(yaml.safe_dump([s.model_dump(exclude={"points"}) for s in series], sort_keys=False,
                                        width=200))
        sys.stdout.flush()
    best = cached.record.best
    if best is None:
        raise KitError(f"no configuration ran (results in {cached.path})", "see the failures recorded there")
    console.print(f"fastest: B={best.micro_batch} -r {best.recompute} at {best.tok_s:,} tok/s "
                  f"(measured in {format_duration(time.monotonic() - started)}); cached in {cached.path}"
                  + ("" if auto else " (kitctl train uses it unless --no-tune)"))
    return cached


def run_tune(cfg: KitConfig, req: TrainRequest, console: Console, inventory: Optional[Path] = None,
             mpirun: str = "/usr/bin/mpirun", steps: int = DEFAULT_STEPS, warmup: int = DEFAULT_WARMUP,
             min_b: int = 8, full: bool = False, dry_run: bool = False) -> Optional[CachedTune]:
    """``kitctl tune``: plan the sweep, print it, measure it (not with ``dry_run``: the first command instead).
    While each configuration runs, nvidia-smi samples memory.used of the picked GPUs; the peaks are stored
    per result (``peak_mib``) and printed as a series ready for kitctl/train/memory_model.yaml."""
    sweep = plan_sweep(cfg, req, inventory, mpirun, steps, warmup, min_b, full)
    gpus = sweep.gpus
    console.print(f"tune: {len(sweep.configs)} configs x {steps} steps ({warmup} warm-up) on "
                  f"{len(gpus)}x {gpus[0].name} ({sweep.base.decisions.hardware.precision}): "
                  + ", ".join(f"B={b} -r {r}" for b, r in sweep.configs))
    if dry_run:
        console.print("first config:", style="bold")
        sys.stdout.write(sweep.plan(*sweep.configs[0]).launch.command_line() + "\n")
        sys.stdout.flush()
        return None
    return measure(sweep, console)


def tune_first(cfg: KitConfig, plan: Plan, console: Console, inventory: Optional[Path] = None,
               mpirun: str = "/usr/bin/mpirun") -> Optional[CachedTune]:
    """The short tune ``kitctl train`` runs first (``plan.tune_first``); None (with a warning) when it measured
    nothing usable, so training goes on with the estimate. Ctrl-C stops it like a training run."""
    d = plan.decisions
    t = d.tune_first
    if t is None:
        return None
    req = dataclasses.replace(d.request, gpus=gpu_spec(d.hardware.gpus), precision=d.hardware.precision)
    console.print(f"tune first: {t.describe()}", highlight=False)
    sweep = plan_sweep(cfg, req, inventory, mpirun, t.steps, t.warmup, configs=t.configs)
    try:
        return measure(sweep, console, auto=True)
    except KitError as e:
        if e.exit_code == 130:
            raise
        console.print(f"[yellow]warning:[/] the short tune measured nothing usable ({e.message.splitlines()[0]}); "
                      "training with the estimated config", highlight=False)
        return None


def memory_series(results: list[TuneResult], gpus: list[GPU], base: Plan, plan: Plan) -> list[SeriesData]:
    """memory_model.yaml series (one per recompute) from the peaks of the ``ok`` results."""
    by_r: dict[int, dict[int, int]] = {}
    for res in results:
        if res.status == "ok" and res.peak_mib:
            by_r.setdefault(res.recompute, {})[res.micro_batch] = res.peak_mib
    g, d, binary = gpus[0], base.decisions, Path(plan.launch.binary).name
    out = []
    for r, pts in sorted(by_r.items()):
        args = list(plan.launch.llmc_args)
        args[args.index("-b") + 1] = "B"
        args[args.index("-r") + 1] = str(r)
        out.append(SeriesData(
            device=f"{len(gpus)}x {g.name} ({g.memory_mib} MiB), driver {g.driver}",
            source=f"kitctl tune {time.strftime('%Y-%m-%d', time.gmtime())} ({binary})",
            precision=d.hardware.precision, cudnn=d.hardware.precision == "bf16",   # type: ignore[arg-type]
            descriptor=d.preset.descriptor, seq_len=d.seq_len, ranks=len(gpus),
            zero_stage=d.zero_stage, recompute=r, command=" ".join([binary, *args]),
            points_mib=dict(sorted(pts.items()))))
    return out
