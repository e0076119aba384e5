"""The export against llm.c's own code: llm.c's CPU reference trainer (train_gpt2.c, fp32) reads our random
checkpoint, prints its step-0 val loss on a shard, and kitctl.model.valloss (transformers on the export, llm.c's
val batching) must print the same loss. Needs the pinned llm.c source (.llmc-src, absent in CI) and gcc."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import llmc_ref
from conftest import needs_transformers
from kitctl.model import export
from kitctl.model.checkpoint import open_checkpoint


def shard(path, tokens):
    h = np.zeros(256, "<i4")
    h[:3] = (20240520, 1, len(tokens))
    path.write_bytes(h.tobytes() + np.asarray(tokens, "<u2").tobytes())


@pytest.mark.slow
@needs_transformers
@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")
def test_valloss_matches_llmc_cpu_reference(llmc_src, tmp_path):
    work = tmp_path / "llmc"
    (work / "dev" / "data" / "tinyshakespeare").mkdir(parents=True)
    shutil.copytree(llmc_src / "llmc", work / "llmc")
    shutil.copy(llmc_src / "train_gpt2.c", work)
    b = subprocess.run(["gcc", "-O2", "-o", "train_gpt2", "train_gpt2.c", "-lm"], cwd=work, capture_output=True,
                       text=True, timeout=300)
    assert b.returncode == 0, b.stderr[-2000:]
    p, dims = llmc_ref.random_params(L=2, C=64, H=4, T=64, seed=11, scale=0.1)    # train_gpt2.c uses T=64
    run = tmp_path / "run"
    run.mkdir()
    llmc_ref.write_checkpoint(run / "model_00000000.bin", p, dims, version=3)
    shutil.copy(run / "model_00000000.bin", work / "gpt2_124M.bin")
    rng = np.random.default_rng(5)
    val = rng.integers(0, 50257, 4 * 64 * 5 + 1000)                 # 5 val batches of B=4 x T=64, and more
    shard(work / "dev/data/tinyshakespeare/tiny_shakespeare_val.bin", val)
    shard(work / "dev/data/tinyshakespeare/tiny_shakespeare_train.bin", rng.integers(0, 50257, 20000))
    proc = subprocess.Popen(["stdbuf", "-oL", "./train_gpt2"] if shutil.which("stdbuf") else ["./train_gpt2"],
                            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = None
    try:
        for line in proc.stdout:
            if m := re.match(r"val loss ([0-9.]+)", line):
                first = float(m.group(1))           # step 0: the checkpoint's own weights, before any update
                break
    finally:
        proc.kill()
        proc.wait()
    assert first is not None
    out = export.write_export(open_checkpoint(run / "model_00000000.bin"), run / "hf").out
    (run / "main.log").write_text(f"s:0 tel:{first:.4f}\n")
    # what a kit run folder says about B, T, processes and val batches (llm.c's stdout table) and the data
    (run / "stdout.log").write_text("| micro batch size B    | 4      |\n| sequence length T     | 64     |\n"
                                    "| val_num_batches       | 5      |\n| num_processes         | 1      |\n")
    (tmp_path / "data").mkdir()
    shard(tmp_path / "data" / "tiny_val_000000.bin", val)
    (run / "run.json").write_text(json.dumps({"data": {"dir": str(tmp_path / "data"), "prefix": "tiny"}}))
    res = tmp_path / "valloss.json"
    r = subprocess.run([sys.executable, "-m", "kitctl.model.valloss", out, "--device", "cpu", "--tol", "0.001",
                        "--json", res], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(res.read_text())
    assert got["llmc_loss"] == round(first, 4) and got["step"] == 0 and got["tokens"] == 5 * 4 * 64
    assert (got["B"], got["T"], got["P"], got["batches"]) == (4, 64, 1, 5)
    assert got["shard"].endswith("tiny_val_000000.bin")
    assert abs(got["transformers_loss"] - first) < 1e-3, got         # fp32 vs fp32: same loss
    assert "OK" in r.stdout
    # and a wrong batching (T=32 rows) would not match: the check can fail
    r = subprocess.run([sys.executable, "-m", "kitctl.model.valloss", out, "--shard", tmp_path / "data" /
                        "tiny_val_000000.bin", "-B", "8", "-T", "32", "--batches", "5", "--device", "cpu", "--tol", "0.001"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "MISMATCH" in r.stdout
