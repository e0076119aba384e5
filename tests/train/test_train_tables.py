"""The shipped data of the planner (presets, memory model, GPU peaks, throughput table: typed, unknown keys
refused) and the tune the planner puts first on GPUs without throughput measurements (bounded, shown, skipped
with --no-tune)."""
from __future__ import annotations

from pathlib import Path

import pytest

from kitctl.core.errors import ConfigError
from kitctl.host.gpus import parse_csv
from kitctl.train.facts import DataInfo, HostFacts, OutState, Shard
from kitctl.train.memory import MemoryModel
from kitctl.train.peaks import PeaksFile
from kitctl.train import Facts, TrainRequest, build_plan
from kitctl.train.presets import load_presets, parse_presets
from kitctl.train.throughput import ThroughputFile, load_table, parse_table
from kitctl.train.tune_first import BUDGET_FRAC, LAUNCH_OVERHEAD_S
from kitctl.core.records import load_model, read_yaml_file
from kitctl.core import resources

TRAIN = resources.package_dir() / "train"
GPU_4090 = "0, NVIDIA GeForce RTX 4090, 8.9, 24564 MiB, 570.86.10"
GPU_L40S = "0, NVIDIA L40S, 8.9, 46068 MiB, 570.86.10"
MIXED = "0, NVIDIA GeForce RTX 2080 Ti, 7.5, 11264 MiB, 570.86.10\n1, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 570.86.10"
H200 = "0, NVIDIA H200, 9.0, 143771 MiB, 580.159.04"
FINEWEB = DataInfo(Path("/big/fineweb10B"), "fineweb",
                   tuple(Shard(f"fineweb_train_{i:06d}.bin", 100_000_000) for i in range(1, 100)),
                   (Shard("fineweb_val_000000.bin", 100_000_000),), "ab" * 32)
TINY = DataInfo(Path("/big/tinyshakespeare"), "tinyshakespeare",
                (Shard("tinyshakespeare_train_000001.bin", 305_260),), (Shard("tinyshakespeare_val_000000.bin", 32_768),))


def facts(inv: str, data: DataInfo = FINEWEB, **kw) -> Facts:
    base = dict(gpus=parse_csv(inv), data=data, out=OutState(Path("/big/runs/gpt2-124m")), data_root=Path("/big"),
                host=HostFacts(uid=1000, gid=1000, mpirun="/usr/bin/mpirun"),
                hellaswag=Path("/big/hellaswag/hellaswag_val.bin"), tokenizer=Path("/big/gpt2_tokenizer.bin"),
                runtime_ids={"bf16": "sha256:img", "fp32": "sha256:img"})
    base.update(kw)
    return Facts(**base)


# ------------------------------------------------------------------------------------------ shipped data
@pytest.mark.parametrize("name,model", [("gpu_peaks.yaml", PeaksFile), ("throughput.yaml", ThroughputFile)])
def test_shipped_yaml_refuses_unknown_keys(name, model):
    raw = read_yaml_file(TRAIN / name)
    load_model(model, raw, name)                       # the shipped file is valid
    first = raw["series" if "series" in raw else "gpus"][0]
    first["tok_per_s" if name == "throughput.yaml" else "bf61"] = 1
    with pytest.raises(ConfigError) as e:
        load_model(model, raw, name)
    assert "unknown key (a typo?)" in e.value.message


def test_presets_and_memory_model_are_typed():
    assert load_presets()["gpt2-124m"].micro_batch_published == 64
    raw = read_yaml_file(TRAIN / "presets.yaml")
    raw["gpt2-124m"]["recompte"] = 0
    with pytest.raises(ConfigError) as e:
        parse_presets(raw, "presets.yaml")
    assert "gpt2-124m" in e.value.message and "recompte" in e.value.message and "unknown key" in e.value.message
    mm = read_yaml_file(TRAIN / "memory_model.yaml")
    MemoryModel.from_dict(mm)
    mm["series"][0]["ponts_mib"] = {8: 1}
    with pytest.raises(ConfigError) as e:
        MemoryModel.from_dict(mm, "memory_model.yaml")
    assert "series.0.ponts_mib" in e.value.message


def test_throughput_rows_must_name_a_gpu_peaks_entry():
    raw = read_yaml_file(TRAIN / "throughput.yaml")
    raw["series"][0]["gpu"] = "NVIDIA H200"           # the nvidia-smi name, not the gpu_peaks.yaml name
    with pytest.raises(ConfigError) as e:
        parse_table(load_model(ThroughputFile, raw, "t"), "t")
    assert "not a name in gpu_peaks.yaml" in e.value.message


# ------------------------------------------------------------------------------------- unmeasured GPUs
def test_unmeasured_gpu_plans_a_bounded_tune_first():
    plan = build_plan(TrainRequest(tune_first=True), facts(GPU_4090))
    t = plan.decisions.tune_first
    assert t is not None and 2 <= len(t.configs) <= 4
    assert t.configs[0] == (plan.decisions.batch.micro_batch, plan.decisions.batch.recompute) == (16, 0)   # the best-ranked config first
    # the bound: the tune's forecast fits 2% of the run's forecast (one epoch of FineWeb at the estimate)
    forecast = plan.decisions.schedule.steps * plan.decisions.total_batch / plan.decisions.batch.est_tok_s
    assert t.forecast_s == pytest.approx(forecast) and t.budget_s == pytest.approx(BUDGET_FRAC * forecast)
    assert t.cost_s <= t.budget_s and t.cost_s > len(t.configs) * LAUNCH_OVERHEAD_S
    rows = dict(plan.describe())
    assert "within 2% of the run's" in rows["tune first"] and "--no-tune skips it" in rows["tune first"]
    assert "estimated time" in rows
    assert any("no throughput measurements for NVIDIA GeForce RTX 4090" in n for n in plan.notes)


def test_no_tune_skips_the_tune_first():
    plan = build_plan(TrainRequest(tune_first=False, no_tune=True), facts(GPU_4090))
    assert plan.decisions.tune_first is None and "tune first" not in dict(plan.describe())
    assert any("--no-tune" in n and "scaled from another GPU" in n for n in plan.notes)
    assert (plan.decisions.batch.micro_batch, plan.decisions.batch.recompute) == (16, 0)


def test_measured_gpu_and_short_runs_do_not_tune_first():
    assert build_plan(TrainRequest(tune_first=True), facts(H200)).decisions.tune_first is None
    short = build_plan(TrainRequest(tune_first=True, steps=60), facts(GPU_4090, data=TINY))
    assert short.decisions.tune_first is None
    assert any("too short to tune first" in n and "2% of its" in n for n in short.notes)
    no_id = build_plan(TrainRequest(tune_first=True), facts(GPU_4090, runtime_ids={}))
    assert no_id.decisions.tune_first is None and any("build it first" in n for n in no_id.notes)


def test_mixed_box_tunes_its_bf16_pick_first():
    plan = build_plan(TrainRequest(tune_first=True), facts(MIXED))
    assert plan.decisions.hardware.precision == "bf16" and plan.decisions.tune_first is not None
    assert plan.decisions.batch.est_tok_s == pytest.approx(537764 * 71.0 / 989.4)


def test_gpu_without_published_peak_bounds_the_tune_by_steps():
    plan = build_plan(TrainRequest(tune_first=True), facts(GPU_L40S))
    assert plan.decisions.batch.est_tok_s is None and plan.decisions.tune_first is not None
    t = plan.decisions.tune_first
    assert t.cost_s is None and len(t.configs) * t.steps <= BUDGET_FRAC * plan.decisions.schedule.steps
    assert "no time forecast" in t.bound
    assert (plan.decisions.batch.micro_batch, plan.decisions.batch.recompute) == (16, 0)      # the measured shape still ranks the configs


def test_table_estimate_for_another_depth_scales_by_flops():
    gpus = parse_csv("0, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 580.159.04")
    table = load_table()
    d24 = table.estimate(gpus, "bf16", "d24", 1024, 16, 1)
    assert d24.measured and d24.tok_s == pytest.approx(189761)              # H100 d24 row (section 4)
    d36 = table.estimate(gpus, "bf16", "d36", 1024, 16, 1)
    assert not d36.measured and "flops per token" in d36.basis and d36.tok_s < d24.tok_s


def test_quoted_series_is_the_reference_for_its_gpu_but_never_a_measurement():
    """The A100 series is llm.c's published figure (kind quoted): it is the reference for 8x A100 (no scaling
    from the H200 by peak), its estimates say so, and the A100 still counts as unmeasured (tune first)."""
    table = load_table()
    gpus = parse_csv("".join(f"{i}, NVIDIA A100-SXM4-80GB, 8.0, 81920 MiB, 570.124.06\n" for i in range(8)))
    quoted = [s for s in table.series if s.kind == "quoted"]
    assert [s.gpu for s in quoted] == ["A100"] and "run_gpt2_124M.sh" in quoted[0].source
    e = table.estimate(gpus, "bf16", "d12", 1024, 64, 0)
    assert e.tok_s == pytest.approx(524288 / 0.300, rel=1e-5) and not e.measured
    assert "quoted: llm.c scripts/run_gpt2_124M.sh" in e.basis and "peak" not in e.basis
    assert table.unmeasured(gpus, "bf16") == ["NVIDIA A100-SXM4-80GB"]
    # a GPU with no series of its own is still scaled from a *measured* series, not from the quote
    other = table.estimate(parse_csv("0, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 570.86.10"), "bf16", "d12",
                           1024, 16, 0)
    assert "quoted" not in other.basis and "H200" in other.basis
