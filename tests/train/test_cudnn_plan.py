"""The planner knows whether the BF16 binary has cuDNN attention (its native build record or the image's
``org.llmc-kit.cudnn`` label): without it llm.c keeps the whole T x T attention (more memory) and runs slower
(measured on 1x H100: 326,212 vs 502,076-507,977 tok/s at d12 B=16 -r 1; docs/validation.md sections 12 and 14). Unknown:
planned as the cuDNN build the kit makes by default."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from kitctl.core.config import KitConfig
from kitctl.core.files import sha256_file
from kitctl.core.native_build_record import NativeBuild, record_path
from kitctl.host.gpus import parse_csv
from kitctl.train import TrainRequest, build_plan
from kitctl.train.facts import built_cudnn
from kitctl.core.run_record import RuntimeRecord
from kitctl.train.throughput import ThroughputFile, ThroughputTable, load_table
from tests.train.test_train_plan import GPU_3090, TINY, facts

H100 = "0, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.124.06"


def test_estimate_without_cudnn_is_scaled_by_the_measured_ratio():
    table = load_table()
    gpus = parse_csv(H100)
    on = table.estimate(gpus, "bf16", "d12", 1024, 16, 1)
    off = table.estimate(gpus, "bf16", "d12", 1024, 16, 1, cudnn=False)
    assert on is not None and off is not None and on.measured and not off.measured
    assert on.tok_s == pytest.approx(507977) and off.tok_s == pytest.approx(326212, rel=1e-4)
    assert "x 0.642 without cuDNN (as measured on 1x H100 SXM (80GB HBM3) bf16 d12 T=1024 B=16 -r 1)" in off.basis
    # every config of the plan is scaled alike: the measured shape over B and -r still ranks them
    on64, off64 = (table.estimate(gpus, "bf16", "d12", 1024, 64, 0, cudnn=c) for c in (True, False))
    assert off64.score / off.score == pytest.approx(on64.score / on.score)
    # another GPU model: the H100's ratio, said so; FP32 never has cuDNN and is untouched
    e3090 = table.estimate(parse_csv(GPU_3090), "bf16", "d12", 1024, 16, 0, cudnn=False)
    assert "without cuDNN (as measured on 1x H100" in e3090.basis
    fp32 = parse_csv(GPU_3090)
    assert table.estimate(fp32, "fp32", "d12", 1024, 8, 1, cudnn=False) == table.estimate(fp32, "fp32", "d12", 1024, 8, 1)


def test_no_measurement_without_cudnn_says_so():
    only_cudnn = ThroughputTable(ThroughputFile.model_validate({"multi_rank_efficiency": 0.98, "series": [{
        "gpu": "H200", "compute_cap": 90, "device": "x", "source": "test", "precision": "bf16", "cudnn": True,
        "descriptor": "d12", "seq_len": 1024, "total_batch": 524288, "ranks": 1, "tok_s": {1: {16: 500000}}}]}))
    e = only_cudnn.estimate(parse_csv(H100.replace("H100 80GB HBM3", "H200")), "bf16", "d12", 1024, 16, 1, cudnn=False)
    assert e.tok_s == 500000 and "nothing measured without it" in e.basis and e.quality == 0


def test_plan_without_cudnn_needs_more_memory_runs_slower_and_says_why():
    on = build_plan(TrainRequest(micro_batch=16, recompute=1), facts(H100))
    off = build_plan(TrainRequest(micro_batch=16, recompute=1), facts(H100, cudnn=False))
    assert off.decisions.batch.memory.need_mib > on.decisions.batch.memory.need_mib                   # the whole T x T attention is kept
    assert on.decisions.batch.memory.basis == "measured" and off.decisions.batch.memory.basis.startswith("extrapolated (from ")   # no such series
    assert off.decisions.batch.estimate.tok_s == pytest.approx(on.decisions.batch.estimate.tok_s * 326212 / 507977, rel=1e-4)
    assert any("built without cuDNN" in n for n in off.notes) and not any("without cuDNN" in n for n in on.notes)
    # unknown (no record, no label): as the cuDNN build
    assert build_plan(TrainRequest(micro_batch=16, recompute=1), facts(H100, cudnn=None)).decisions.batch.memory == on.decisions.batch.memory


def test_a_24gb_card_without_cudnn_is_planned_within_its_memory():
    """The 3090 (24 GB): without cuDNN the attention of B=16 alone is ~4.8 GB more; the plan still fits."""
    on = build_plan(TrainRequest(), facts(GPU_3090))
    off = build_plan(TrainRequest(), facts(GPU_3090, cudnn=False))
    assert off.decisions.batch.memory.fits(24576 / 1024) and off.decisions.batch.memory.need_mib > on.decisions.batch.memory.need_mib
    assert off.decisions.batch.micro_batch <= on.decisions.batch.micro_batch


def test_built_cudnn_reads_the_record_or_the_label(tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    for name in ("train_gpt2cu", "train_gpt2cu_fp32"):
        (d / name).write_text(f"#!{sys.executable}\n")
    native = TrainRequest(runtime="native")
    assert built_cudnn(native, None, d) is None                                        # no record
    sums = {n: sha256_file(d / n) for n in ("train_gpt2cu", "train_gpt2cu_fp32")}
    NativeBuild(archs=[90], binaries={"bf16": "train_gpt2cu"}, cudnn=False, sha256=sums).write(record_path(d))
    assert built_cudnn(native, None, d) is False
    (d / "train_gpt2cu").write_text("another build")                                  # no longer describes it
    assert built_cudnn(native, None, d) is None
    record_path(d).write_text("{ damaged")
    assert built_cudnn(native, None, d) is None
    other = tmp_path / "elsewhere"                                                     # --binary: its own folder
    other.mkdir()
    (other / "train_gpt2cu").write_text("x")
    NativeBuild(archs=[90], binaries={"bf16": "train_gpt2cu"}, cudnn=True).write(record_path(other))
    assert built_cudnn(dataclasses.replace(native, binary=str(other / "train_gpt2cu")), None, d) is True
    docker = TrainRequest(runtime="docker")
    for label, want in (("off", False), ("on", True), (None, None), ("maybe", None)):
        labels = {"org.llmc-kit.cudnn": label} if label else {}
        assert built_cudnn(docker, RuntimeRecord(kind="docker", image="x", labels=labels), Path("/nope")) is want
    assert built_cudnn(docker, None, Path("/nope")) is None


def test_gather_facts_carries_the_records_cudnn_into_the_plan(tmp_path):
    from kitctl.train.facts import gather_facts

    root = tmp_path / "data"
    d = root / "native" / "bin"
    d.mkdir(parents=True)
    for name in ("train_gpt2cu", "train_gpt2cu_fp32"):
        (d / name).write_text("x")
    NativeBuild(archs=[90], binaries={"bf16": "train_gpt2cu"}, cudnn=False).write(record_path(d))
    (tmp_path / "one.csv").write_text(H100 + "\n")
    f = gather_facts(KitConfig(data_root=root, runtime="native"), TrainRequest(runtime="native"), tmp_path / "one.csv",
                     data=TINY)
    assert f.cudnn is False
    assert any("built without cuDNN" in n for n in build_plan(TrainRequest(runtime="native", steps=10), f).notes)
