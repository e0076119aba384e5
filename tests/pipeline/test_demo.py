"""`kitctl demo` (the README's first command) runs end to end here and says what it skipped."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

import kitctl_proc


@pytest.mark.slow
def test_demo_runs_and_reports_what_it_skipped(tmp_path):
    root = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "kitctl", "demo", "--data-root", str(root)],
                       capture_output=True, text=True, timeout=600, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin",
                                                                          "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "demo summary" in r.stdout and "failed" not in r.stdout.split("demo summary")[1]
    assert "\u2026" not in r.stdout.split("demo summary")[1]      # whole paths, never cut with "..."
    # real shards, in llm.c's format, from the embedded corpus and tokenizer
    val = np.fromfile(root / "tinyshakespeare" / "tinyshakespeare_val_000000.bin", dtype=np.int32, count=3)
    assert list(val) == [20240520, 1, 32768]
    assert (root / "gpt2_tokenizer.bin").exists() and (root / "report.png").stat().st_size > 10_000
    assert list((root / "runs" / "h100-tinyshakespeare-150" / "tb").glob("events.out.tfevents.*"))
    if shutil.which("nvidia-smi") is None:
        assert "no NVIDIA GPU here" in r.stdout        # training is skipped, and the demo says why


@pytest.mark.slow
def test_demo_dry_run_writes_nothing_and_build_advice_matches_the_provider(tmp_path):
    from kitctl.pipeline.costs import costs
    from kitctl.pipeline.demo import build_advice

    r = kitctl_proc.run(["demo", "--dry-run", "--data-root", tmp_path / "d"], timeout=120,
                        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 0 and "would write under" in r.stdout and not (tmp_path / "d").exists(), r.stderr
    for provider in ("nvidia", "wheels"):
        advice = build_advice(provider)
        assert f"provider {provider}" in advice
        assert f"~{costs().build[provider].download_bytes / 1e9:.1f} GB" in advice
    assert "1.3 GB" not in build_advice("nvidia") and "--provider wheels" in build_advice("nvidia")
