"""Decision 1 of a plan: which GPUs run (one rank each) and which llm.c build (BF16 or FP32).

BF16 (``train_gpt2cu``, cuDNN attention) needs sm_80+. On a mixed box (e.g. RTX 2080 Ti + RTX 3090) a job over
every GPU must use the FP32 build, and MPI ranks run in lock-step (every optimizer step ends with an all-reduce
that waits for the slowest rank), so the kit compares "all GPUs in FP32" with "the BF16-capable GPUs alone in
BF16" by their estimated tokens/s at their fastest fitting config, shows both and takes the faster.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

from kitctl.core.errors import ConfigError
from kitctl.host.gpus import GPU, MIN_COMPUTE_CAP, select, unsupported, unsupported_reason
from kitctl.train.request import TrainRequest, gpu_spec

PRECISIONS = ("bf16", "fp32")


@dataclass(frozen=True)
class Option:
    """One way to use a mixed set of GPUs (shown to the user, the chosen one marked)."""

    label: str
    gpus: tuple[GPU, ...]
    precision: str
    est_tok_s: Optional[float]
    chosen: bool = False


@dataclass(frozen=True)
class GpuChoice:
    gpus: tuple[GPU, ...]
    precision: str
    options: tuple[Option, ...] = ()
    notes: tuple[str, ...] = ()


# (GPUs, precision) -> estimated tokens/s of the fastest config that fits them (None: cannot tell / nothing fits)
Estimator = Callable[[list[GPU], str], Optional[float]]


def choose_gpus(req: TrainRequest, all_gpus: list[GPU], estimate: Estimator) -> GpuChoice:
    picked = select(all_gpus, req.gpus)
    too_old = unsupported(picked)
    floor_note: tuple[str, ...] = ()
    if too_old:
        rest = [g for g in picked if g not in too_old]
        if req.gpus.strip() != "all" or not rest:
            raise ConfigError(unsupported_reason(too_old),
                              ("leave it out with --gpus " + gpu_spec(rest).rstrip(",")) if rest else
                              f"train on a GPU of compute capability {MIN_COMPUTE_CAP / 10:.1f} or newer (`nvidia-smi "
                              "--query-gpu=name,compute_cap --format=csv` shows it), or plan for another box with "
                              "--inventory FILE")
        floor_note = (unsupported_reason(too_old) + f"; it sits out (running on GPU(s) "
                      f"{gpu_spec(rest).rstrip(',')})",)
        picked = rest
    choice = _choose(req, picked, estimate)
    return dataclasses.replace(choice, notes=floor_note + choice.notes) if floor_note else choice


def _choose(req: TrainRequest, picked: list[GPU], estimate: Estimator) -> GpuChoice:
    no_bf16 = [g for g in picked if not g.has_bf16]
    if req.precision not in (None, *PRECISIONS):
        raise ConfigError(f"--precision {req.precision!r}", "use bf16 or fp32")
    if req.precision == "bf16" and no_bf16:
        names = ", ".join(f"{g.index} ({g.name}, sm_{g.compute_cap})" for g in no_bf16)
        capable = [g for g in picked if g.has_bf16]
        if req.gpus.strip() == "all" and capable:
            return GpuChoice(tuple(capable), "bf16", notes=(
                f"--precision bf16: GPU {names} has no BF16 tensor cores (sm_80+), so it sits out; running on "
                f"GPU(s) {gpu_spec(capable).rstrip(',')} (use --precision fp32 to run all)",))
        raise ConfigError(f"--precision bf16: GPU {names} has no BF16 tensor cores (BF16 needs sm_80+)",
                          "use --precision fp32 to run all of them, or leave that GPU out with --gpus")
    if req.precision:
        return GpuChoice(tuple(picked), req.precision)
    if not no_bf16:
        return GpuChoice(tuple(picked), "bf16")
    bf16_subset = [g for g in picked if g.has_bf16]
    if not bf16_subset:
        return GpuChoice(tuple(picked), "fp32",
                         notes=("no picked GPU has BF16 tensor cores (sm_80+): using the FP32 build",))
    # mixed: all GPUs in FP32 vs the BF16-capable ones alone in BF16
    all_fp32 = Option(f"all {len(picked)} GPUs, FP32 build", tuple(picked), "fp32", estimate(picked, "fp32"))
    sub_bf16 = Option(f"{len(bf16_subset)} BF16-capable GPU(s) alone, BF16 build", tuple(bf16_subset), "bf16",
                      estimate(bf16_subset, "bf16"))
    slow = ", ".join(f"{g.name} (sm_{g.compute_cap})" for g in no_bf16)
    notes = [f"{slow}: no BF16 tensor cores and no cuDNN attention, so a job over all GPUs needs the FP32 "
             "build; ranks run in lock-step (each step waits for the all-reduce), so the job runs at "
             "ranks x the slowest GPU"]
    if req.gpus.strip() != "all":
        choice = all_fp32
        notes.append("you named the GPUs with --gpus, so all of them run (FP32); see the options for the alternative")
    elif all_fp32.est_tok_s is None or sub_bf16.est_tok_s is None:
        choice = all_fp32
        notes.append("no tokens/s estimate for one of these options (a GPU without a published peak, or "
                     "nothing fits): cannot compare; using all GPUs in FP32 (try `--precision bf16 --gpus "
                     "<the sm_80+ ones>` and compare tokens/s)")
    else:
        choice = sub_bf16 if sub_bf16.est_tok_s > all_fp32.est_tok_s else all_fp32
        other = all_fp32 if choice is sub_bf16 else sub_bf16
        notes.append(f"picked '{choice.label}' as the faster estimate ({choice.est_tok_s:,.0f} vs "
                     f"{other.est_tok_s:,.0f} tok/s, throughput table); override with --precision fp32 (all GPUs) "
                     f"or --gpus {gpu_spec(bf16_subset)} (those alone)")
    options = tuple(Option(o.label, o.gpus, o.precision, o.est_tok_s, o is choice) for o in (all_fp32, sub_bf16))
    return GpuChoice(choice.gpus, choice.precision, options, tuple(notes))
