"""The training planner: preset + GPUs + data + run folder + request -> a frozen Plan. Pure: no processes, no writes.

The decisions are made first, each a frozen record with its reasons, in this order:

1. GPUs and precision (``kitctl.train.gpu_choice``): which ranks, BF16 or FP32 build, options on mixed boxes;
2. micro-batch B and recompute (``kitctl.train.batch``): user, checkpoint, tune cache, else the fastest config
   that fits by the throughput table and memory model;
3. steps and evals (``kitctl.train.schedule``);
4. resume (``kitctl.train.resume``): -y 1 when the checkpoints match, else refuse or --fresh;
5. tune first (``kitctl.train.tune_first``): a bounded short tune for GPUs with no measurements;

then the launch is built from them (``kitctl.train.launch``) and the Plan (``kitctl.train.plan``) assembled once.
Facts the planner needs (GPU inventory, shard headers, the run folder, host mpirun, tune records) are read by
``kitctl.train.facts.gather_facts`` and passed in as ``Facts``, so tests plan for any machine without one.

Other areas reach it through the area's face, ``kitctl.train`` (``build_plan``, ``TrainRequest``, ``Facts``,
``Plan``, ...).
"""
from __future__ import annotations

from typing import Optional

from kitctl.core.layout import DataLayout
from kitctl.core import validate
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.pins import mm
from kitctl.host.gpus import GPU, max_cuda_for_driver
from kitctl.train.batch import BatchChoice, BatchInputs, choose_batch
from kitctl.train.gpu_choice import choose_gpus
from kitctl.train.launch import build_launch
from kitctl.train.memory import MemoryModel, default_model
from kitctl.train.peaks import knows_mfu
from kitctl.train.plan import Decisions, Plan
from kitctl.train.presets import Preset, get_preset
from kitctl.core.run_record import PlanRecord
from kitctl.train.facts import Facts
from kitctl.train.request import TrainRequest, absorb_passthrough
from kitctl.train.resume import choose_resume, resumable
from kitctl.train.schedule import choose_schedule
from kitctl.train.throughput import ThroughputTable, load_table
from kitctl.train.tune_cache import CachedTune, cache_key, find
from kitctl.train.tune_first import choose_tune_first

RUNTIMES = ("docker", "native")


def _check_request(req: TrainRequest, preset: Preset) -> tuple[int, int]:
    """(T, D) of the run; KitError (exit 2) for values that cannot work."""
    if req.runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {req.runtime!r}", "use docker or native")
    # every number below reaches llm.c's argv, which reads it with atoi() into an int: one bound for all of them,
    # whichever way they came (an option, a pass-through after `--`, reproduce, a launcher)
    if req.steps is not None:
        validate.steps_or_epoch(req.steps, "--steps")
    for value, option in ((req.micro_batch, "--micro-batch"), (req.total_batch, "--total-batch"),
                          (req.seq_len, "-t")):
        if value is not None and value > validate.LLMC_INT_MAX:
            validate.llmc_int(value, option)
    if req.total_batch is not None and req.total_batch < 1:
        # llm.c's -d -1 means B x T x ranks (no accumulation); the kit does not support it: the total batch is
        # the run's optimizer setting and must not change with B or the GPU count
        raise ConfigError(f"total batch -d {req.total_batch}: it must be a positive number of tokens per optimizer step"
                          + (" (llm.c's -d -1 = B x T x ranks is not supported)" if req.total_batch == -1 else ""),
                          f"pass --total-batch N with N a multiple of B x T x ranks, or leave it to the preset "
                          f"({preset.total_batch})")
    T = req.seq_len if req.seq_len is not None else preset.seq_len
    if T < 1 or T > 1024:
        raise ConfigError(f"sequence length {T}: GPT-2 has 1024 positions", "use -t between 1 and 1024")
    return T, req.total_batch or preset.total_batch


def _tune_record(req: TrainRequest, facts: Facts, gpus: list[GPU], precision: str, preset: Preset, T: int, D: int
                 ) -> Optional[CachedTune]:
    rid = facts.runtime_ids.get(precision)
    if req.no_tune or rid is None:
        return None
    return find(facts.tune_records, cache_key(gpus, precision, preset.name, rid, T, D))


def build_plan(req: TrainRequest, facts: Facts, mem: Optional[MemoryModel] = None,
               table: Optional[ThroughputTable] = None) -> Plan:
    """Decide everything about a training run; raise KitError (exit 2) on input that cannot work."""
    mem = mem or default_model()
    table = table or load_table()
    req = absorb_passthrough(req)
    preset = get_preset(req.preset)
    T, D = _check_request(req, preset)
    Z = req.zero_stage if req.zero_stage is not None else preset.zero_stage

    def batch_for(gpus: list[GPU], precision: str, stored=None) -> BatchChoice:
        return choose_batch(BatchInputs(
            preset, tuple(gpus), precision, T, D, facts.data, req.micro_batch, req.recompute, stored,
            facts.out.last_done, req.oom_retry_from, _tune_record(req, facts, gpus, precision, preset, T, D), Z,
            facts.cudnn, req.force_memory), mem, table)

    def option_estimate(gpus: list[GPU], precision: str) -> Optional[float]:
        try:
            e = batch_for(gpus, precision).estimate
        except KitError:        # nothing fits / no B works that way: not an option to pick
            return None
        return e.tok_s if e else None

    # 1. GPUs and precision; 2. B and recompute
    hw = choose_gpus(req, facts.gpus, option_estimate)
    gpus = list(hw.gpus)
    if req.runtime == "docker":
        check_driver(gpus, facts.image_cuda)
    stored = resumable(facts.out, req.fresh, len(gpus))
    batch = batch_for(gpus, hw.precision, stored)
    # 3. steps and evals
    schedule = choose_schedule(preset, req, facts.data, D, batch.micro_batch, stored=stored,
                               hellaswag_file=facts.hellaswag, data_root=facts.data_root)
    notes = list(facts.data.notes)
    if hw.precision == "bf16" and facts.cudnn is False:
        notes.append("the BF16 binary was built without cuDNN (its build record or image label): llm.c keeps the "
                     "whole T x T attention (more memory: planned so) and runs slower (the estimate is scaled by "
                     "what was measured without it); `kitctl build` with cuDNN (cudnn-frontend headers) for speed")
    if facts.data.complete is False:
        notes.append(f"{facts.data.dir}/manifest.json says the data is not complete (kitctl data still running or "
                     "interrupted): training uses the shards there now")
    if facts.tokenizer is None:
        notes.append(f"no {DataLayout(facts.data_root).tokenizer_bin}: llm.c prints samples as token ids")
    unknown = sorted({g.name for g in gpus if not knows_mfu(g)})
    if unknown:
        notes.append(f"llm.c's MFU table lacks {', '.join(unknown)}: its step lines print -100% MFU (shown as N/A)")
    # 4. resume
    key = PlanRecord(ranks=len(gpus), micro_batch=batch.micro_batch, seq_len=T, total_batch=D,
                     descriptor=preset.descriptor, precision=hw.precision, data=facts.data.fingerprint,
                     data_dir=str(facts.data.dir)).resume_key()
    resumption = choose_resume(facts.out, req.fresh, key, schedule.steps)
    # 5. tune first (GPUs without throughput measurements)
    tune_first, note = choose_tune_first(
        batch, table.unmeasured(gpus, hw.precision), run_steps=schedule.steps, total_batch=D,
        wanted=req.tune_first and not req.bench and not resumption.resume, no_tune=req.no_tune,
        runtime_known=hw.precision in facts.runtime_ids)
    if note:
        notes.append(note)
    # the launch, from the decisions
    decisions = Decisions(preset, req, req.runtime, T, D, Z, facts.data, facts.out.dir, hw, batch, schedule,
                          resumption, tune_first, tuple(notes))
    return Plan(decisions, build_launch(decisions, facts))


def check_driver(gpus: list[GPU], image_cuda: Optional[str]) -> None:
    """A driver older than the image's CUDA cannot run it (CUDA's "driver version is insufficient" at the first
    call): a plan error naming the CUDA the driver runs, not a plan that fails on the machine."""
    if not image_cuda:
        return
    try:
        need = mm(image_cuda)
    except (ValueError, IndexError):
        return
    for g in gpus:
        runs = max_cuda_for_driver(g.driver)
        known = g.driver.split(".")[0].isdigit()
        if known and (runs is None or mm(runs) < need):
            has = f"runs CUDA up to {runs}" if runs else "runs no CUDA 11 or newer"
            raise ConfigError(f"GPU {g.index} ({g.name}): driver {g.driver} {has}; the image is built for CUDA "
                              f"{image_cuda}, which it cannot run",
                              f"update the driver on that machine, or build an image for CUDA {runs or '11.x'} or "
                              "older (`kitctl build --cuda X.Y.Z`)")
