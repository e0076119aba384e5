"""`kitctl reproduce` end to end on CPU: every stage, interrupted in two different stages (SIGTERM while the data
stage tokenizes, SIGINT while training runs) and resumed by the same command, ending with report.html.

Inputs are offline: a corpus made from the embedded tinyshakespeare (as a local jsonl, big enough to take a few
seconds to tokenize), a tiny HellaSwag jsonl written here, and the stand-in train program
(tests/fake_train_gpt2cu.py) as --binary, on a described 1x H100 box (a stand-in nvidia-smi on PATH:
tests/fake_gpus.py; --inventory only plans).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kitctl_proc

from kitctl.core import resources
from kitctl.core.pipeline_state import PipelineState
from kitctl.core.data_folder import DataFolder
from kitctl.core.data_folder import read_header as read_shard_header

from fake_gpus import fake_nvidia_smi

REPO = Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "fake_train_gpt2cu.py"
H100 = "0, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.124.06\n"
ENDINGS = ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.",
           "starts pulling up roofing on a roof."]


def write_inputs(tmp: Path) -> dict[str, Path]:
    text = resources.share("datasets", "files", "tinyshakespeare.txt").read_text()
    paras = [p for p in text.split("\n\n") if p.strip()]
    corpus = tmp / "corpus.jsonl"
    with corpus.open("w") as f:           # ~35 MB, ~10 M tokens: ~78 shards of 131,072 tokens
        for rep in range(30):
            for i in range(0, len(paras), 20):
                f.write(json.dumps({"text": "\n\n".join(paras[i:i + 20]) + f" [{rep}]"}) + "\n")
    hs = tmp / "hellaswag_val.jsonl"
    with hs.open("w") as f:
        for i in range(12):
            f.write(json.dumps({"ctx": f"A man is sitting on a roof number {i}. He", "endings": ENDINGS,
                                "label": i % 4}) + "\n")
    binary = tmp / "train_gpt2cu"
    binary.write_text(f"#!{sys.executable}\n" + FAKE.read_text())
    binary.chmod(0o755)
    inv = tmp / "h100.csv"
    inv.write_text(H100)
    return {"corpus": corpus, "hellaswag": hs, "binary": binary, "inventory": inv}


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    gpus = fake_nvidia_smi(tmp / "fake-bin", H100)
    return {"PATH": f"{gpus}:/usr/bin:/bin", "HOME": str(tmp), "COLUMNS": "200", "KIT_DATA_ROOT": str(tmp / "data"),
            **extra}


def _argv(p: dict[str, Path]) -> list[str]:
    return [sys.executable, "-m", "kitctl", "reproduce", "gpt2-124m", "--dataset", str(p["corpus"]),
            "--hellaswag-source", str(p["hellaswag"]), "--runtime", "native", "--binary", str(p["binary"]),
            "--shard-size", "131072", "--steps", "12", "--tune",
            "--", "-n", "4"]


def _run_until(argv, env, ready, sig, timeout=180) -> tuple[int, str]:
    """Start the command, send ``sig`` to kitctl once ``ready()`` holds; its exit code and output."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.monotonic()
    try:
        while not ready():
            assert proc.poll() is None, "finished before it could be interrupted:\n" + proc.stdout.read()[-3000:]
            assert time.monotonic() - t0 < timeout, "never got there"
            time.sleep(0.02)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out


def _state(run: Path) -> PipelineState:
    return PipelineState.read(run / "reproduce.json")


@pytest.mark.slow
def test_reproduce_whole_pipeline_interrupted_twice_and_resumed(tmp_path):
    p = write_inputs(tmp_path)
    data_dir = tmp_path / "data" / "corpus"
    run = tmp_path / "data" / "runs" / "gpt2-124m"
    argv = _argv(p)

    # 1. SIGTERM while the data stage tokenizes (after its second train shard)
    rc, out = _run_until(argv, _env(tmp_path), lambda: (data_dir / "corpus_train_000002.bin").exists(),
                         signal.SIGTERM)
    assert rc == 130, out[-3000:]
    assert "the plan" in out and "interrupted during data" in out
    st = _state(run)
    assert [(s.name, s.status) for s in st.stages][:3] == [("preflight", "done"), ("build", "skipped"),
                                                           ("data", "interrupted")]
    assert all(s.status == "pending" for s in st.stages[3:])
    assert json.loads((data_dir / "manifest.json").read_text())["complete"] is False
    shards = sorted(data_dir.glob("corpus_*.bin"))
    assert shards and all(read_shard_header(s) > 0 for s in shards)      # complete files only
    assert not [f for f in data_dir.iterdir() if f.name.startswith(".tmp-")]
    assert (run / "logs" / "data.log").read_text().count("interrupted") == 1

    # 2. the same command: data continues, hellaswag, tune (the stand-in measures B=16 -r 0 fastest), then SIGINT
    #    while training runs, after its checkpoint at step 4
    env = _env(tmp_path, FAKE_TRAIN_STEP_SLEEP="0.3", FAKE_RATES="16:0:300000")
    rc, out = _run_until(argv, env, lambda: (run / "DONE_00000004").exists(), signal.SIGINT)
    assert rc == 130, out[-3000:]
    assert "preflight: done earlier" in out and "build: skipped earlier" in out
    st = _state(run)
    status = {s.name: s for s in st.stages}
    assert status["data"].status == "done" and status["data"].sessions == 2
    assert "every shard's sha256 checked" in status["data"].detail          # the full verify, once, after the stage
    assert "headers and sha256 match manifest.json" in (run / "logs" / "data.log").read_text()
    assert status["hellaswag"].status == "done" and "12 examples" in status["hellaswag"].detail
    assert status["tune"].status == "done" and "B=16 -r 0" in status["tune"].detail
    assert status["train"].status == "interrupted" and status["report"].status == "pending"
    ok = DataFolder(data_dir).verify()
    assert not ok[1] and ok[0].total_tokens > 5_000_000        # the resumed data checks out against its manifest
    run_json = json.loads((run / "run.json").read_text())
    assert run_json["plan"]["micro_batch"] == 16 and run_json["plan"]["recompute"] == 0   # from the tune cache
    args = run_json["plan"]["llmc_args"]
    assert args[len(args) - 1 - args[::-1].index("-h") + 1] == "1"                    # llm.c's -h 1: HellaSwag on
    assert (run / ".llmc-cwd" / "dev" / "data" / "hellaswag" / "hellaswag_val.bin").exists()
    status_out = kitctl_proc.run(["status", str(run)], env=_env(tmp_path), timeout=120).stdout
    assert "stage 6/7 train: interrupted" in status_out

    # 3. the same command again: training resumes from step 4 and finishes; the report is written
    r = kitctl_proc.run_argv(argv, env=_env(tmp_path), timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    st = _state(run)
    assert st.complete and {s.name: s.status for s in st.stages}["train"] == "done"
    assert st.stage("train").sessions == 2 and st.stage("train").forecast_seconds > 0
    launches = [ln for ln in (run / "stdout.log").read_text().splitlines() if ln.startswith("# kitctl")]
    assert "-y 0" in launches[0] and "-y 1" in launches[-1]
    steps = [int(ln.split()[0][2:]) for ln in (run / "main.log").read_text().splitlines() if " trl:" in ln]
    assert steps[-1] == 11 and (run / "DONE_00000012").exists()
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and len(html) > 20_000
    for stage in ("preflight", "data", "hellaswag", "tune", "train", "report"):
        assert (run / "logs" / f"{stage}.log").stat().st_size > 0, stage

    # 4. and once more: nothing left to do
    r = kitctl_proc.run_argv(argv, env=_env(tmp_path), timeout=120)
    assert r.returncode == 0 and r.stdout.count("earlier") == 7, r.stdout[-2000:]


@pytest.mark.slow
def test_reproduce_refuses_other_options_for_the_same_run(tmp_path):
    p = write_inputs(tmp_path)
    run = tmp_path / "data" / "runs" / "gpt2-124m"
    run.mkdir(parents=True)
    PipelineState(preset="gpt2-124m", run_dir=str(run), key={"preset": "gpt2-124m", "steps": 99}).write(
        run / "reproduce.json")
    r = kitctl_proc.run_argv(_argv(p), env=_env(tmp_path), timeout=120)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "started with other options" in r.stderr and "steps: this run was started with 99, now 12" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["gpt2-9000m"], "unknown preset 'gpt2-9000m'"),
    (["--price-per-gpu-hour", "-1"], "a price cannot be negative"),
    (["--inventory", "{small}"], "cannot train gpt2-124m on the box in"),
    (["--inventory", "{empty}"], "lists no GPU (it is empty"),
])
def test_reproduce_bad_input_exits_2_with_what_and_fix(tmp_path, args, message):
    (tmp_path / "small.csv").write_text("0, NVIDIA GeForce GTX 1050, 6.1, 2048 MiB, 570.86.10\n")
    (tmp_path / "empty.csv").write_text("")
    args = [a.format(small=tmp_path / "small.csv", empty=tmp_path / "empty.csv") for a in args]
    if "--inventory" not in args:
        args += ["--inventory", str(tmp_path / "small.csv")]
    r = kitctl_proc.run(["reproduce", *args, "--dry-run"], env=_env(tmp_path), timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    err = " ".join(r.stderr.split())
    assert message in err and "hint:" in err
    assert not (tmp_path / "data").exists()          # refused before anything was written


@pytest.mark.slow
def test_crash_leaves_a_running_stage_that_the_same_command_continues(tmp_path):
    """SIGKILL (a crash, a reboot): nothing is recorded by kitctl itself; the stage stays `running` with a dead
    pid, `kitctl status` says so, and the same command runs that stage again (training from its checkpoint)."""
    p = write_inputs(tmp_path)
    run = tmp_path / "data" / "runs" / "gpt2-124m"
    pids = tmp_path / "pids"
    argv = [sys.executable, "-m", "kitctl", "reproduce", "gpt2-124m", "--dataset", "tinyshakespeare",
            "--hellaswag-source", str(p["hellaswag"]), "--runtime", "native", "--binary", str(p["binary"]),
            "--steps", "8", "--no-tune", "--", "-n", "2"]
    env = _env(tmp_path, FAKE_TRAIN_STEP_SLEEP="0.3", FAKE_PIDFILE=str(pids))
    rc, _ = _run_until(argv, env, lambda: (run / "DONE_00000002").exists(), signal.SIGKILL)
    assert rc == -signal.SIGKILL
    for pid in pids.read_text().split():          # the reboot takes the stand-in down too
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    st = _state(run)
    assert st.stage("train").status == "running" and st.stage("tune").status == "skipped"
    out = kitctl_proc.run(["status", str(run)], env=_env(tmp_path), timeout=120).stdout
    assert "no kitctl running: re-run the same command to continue" in " ".join(out.split())
    r = kitctl_proc.run_argv(argv, env=_env(tmp_path), timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    st = _state(run)
    assert st.complete and st.stage("train").sessions == 2 and (run / "report.html").is_file()
    launches = [ln for ln in (run / "stdout.log").read_text().splitlines() if ln.startswith("# kitctl")]
    assert "-y 1" in launches[-1]


def _no_gpu_env(tmp: Path) -> dict[str, str]:
    """This machine as a laptop: no nvidia-smi anywhere on PATH."""
    bin_dir = tmp / "no-gpu-bin"
    bin_dir.mkdir(exist_ok=True)
    return {**_env(tmp), "PATH": f"{bin_dir}:{Path(sys.executable).parent}"}


@pytest.mark.slow
def test_dry_run_plans_on_a_machine_without_gpus(tmp_path):
    """README step 4 on a laptop: every GPU-free stage planned; the train stage says how to plan it."""
    env = _no_gpu_env(tmp_path)
    base = [sys.executable, "-m", "kitctl", "reproduce", "--dry-run"]
    r = kitctl_proc.run_argv(base, env=env, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = " ".join(r.stdout.split())
    assert "not planned: no NVIDIA GPU on this machine" in out and "--inventory FILE" in out
    assert "docs/inventories/2080ti-3090.csv" in out and "+ train" in out
    r = kitctl_proc.run_argv([*base, "--json"], env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    plan = json.loads(r.stdout)                         # valid JSON: no NaN
    st = {s["name"]: s for s in plan["stages"]}
    assert list(st) == ["preflight", "build", "data", "hellaswag", "tune", "train", "report"]
    assert st["train"]["seconds"] is None and st["train"]["seconds_low"] is None
    assert "--inventory" in st["train"]["reason"] and st["train"]["disk_bytes"] > 6e9     # 4 checkpoints of 124M
    assert st["tune"]["status"] == "skipped" and st["data"]["seconds"] > 0 and st["data"]["download_bytes"] > 0
    assert plan["total"]["seconds"] is None and plan["total"]["disk_bytes"] == sum(s["disk_bytes"] for s in st.values())
    assert not (tmp_path / "data").exists()             # a plan writes nothing
    # the same dry run with an inventory plans the train stage's time
    r = kitctl_proc.run_argv([*base, "--json", "--inventory", str(REPO / "docs" / "inventories" / "2080ti-3090.csv")],
                             env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    train = {s["name"]: s for s in json.loads(r.stdout)["stages"]}["train"]
    assert train["seconds"] > 3600 and "reason" not in train


@pytest.mark.slow
def test_inventory_only_plans(tmp_path):
    """--inventory describes another box: without --dry-run reproduce, train and tune refuse (exit 2), and
    nothing is written."""
    inv = REPO / "docs" / "inventories" / "8xh100.csv"
    env = _no_gpu_env(tmp_path)
    for argv in (["reproduce", "--inventory", str(inv)],
                 ["train", "--inventory", str(inv), "--runtime", "native", "--binary", sys.executable,
                  "--data", str(tmp_path / "shards"), "--steps", "10"],
                 ["tune", "--inventory", str(inv)]):
        if argv[0] == "train":
            _shards(tmp_path / "shards")
        r = kitctl_proc.run(argv, env=env, timeout=120)
        err = " ".join(r.stderr.split())
        assert r.returncode == 2, (argv, r.stdout[-2000:], r.stderr[-2000:])
        assert "--inventory" in err and "add --dry-run" in err, err
        assert not (tmp_path / "data").exists()


def _shards(d: Path) -> None:
    """A val shard and a train shard of llm.c's format (what `kitctl train --data` plans on)."""
    import numpy as np
    d.mkdir(parents=True, exist_ok=True)
    for name in ("s_val_000000.bin", "s_train_000001.bin"):
        head = np.zeros(256, np.int32)
        head[:3] = (20240520, 1, 200_000)
        with (d / name).open("wb") as f:
            f.write(head.tobytes() + np.zeros(200_000, np.uint16).tobytes())
