"""``kitctl demo``: the whole kit on embedded inputs, as far as this machine allows, saying what it skipped.

Each step runs the real ``kitctl`` command in a subprocess (the same thing a user types), against a demo data
root, so the demo exercises exactly the code paths of the quickstart:

    data      embedded tinyshakespeare + GPT-2 BPE -> llm.c shards (offline), then `kitctl data verify`
    plan      `kitctl train --dry-run` for the first user's box (RTX 2080 Ti + RTX 3090, a described inventory)
              and, if this machine has NVIDIA GPUs, for this machine
    train     a 20-step run on this machine's GPUs, if it has GPUs and a train_gpt2cu (native build or image)
    observe   a real llm.c main.log (150 steps on an H100, docs/validation/) -> TensorBoard event files,
              `kitctl status`, `kitctl report`
    images    `kitctl build --dry-run` (the exact docker build line); `kitctl doctor`
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kitctl.core import resources
from kitctl.core.progress import format_duration
from kitctl.host import gpus
from kitctl.core.layout import DataLayout
from kitctl.core.llmc_files import BINARIES, MANIFEST_JSON, TOKENIZER_BIN
from kitctl.core.run_folder import RunFolder
from kitctl.pipeline.costs import costs

REAL_LOG_DIR = resources.demo_run_dir()
# The first user's box, as `nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version
# --format=csv,noheader` prints it.
FIRST_USER_INVENTORY = ("0, NVIDIA GeForce RTX 2080 Ti, 7.5, 11264 MiB, 570.86.10\n"
                        "1, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 570.86.10\n")


DEMO_STEPS = ("data tinyshakespeare + data verify; train --dry-run for a 2080 Ti + 3090 box (and for this machine's "
              "GPUs, then a short train, where it has them); tensorboard --no-serve, status and report on a real "
              "H100 log; build --dry-run; doctor")


@dataclass
class Step:
    name: str
    status: str      # done | skipped | failed
    detail: str


def kitctl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "kitctl", *args]


def run_step(argv: list[str], env: dict[str, str], echo: Callable[[str], None]) -> int:
    echo("$ kitctl " + " ".join(argv[3:]))
    return subprocess.run(argv, env=env).returncode


def docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def build_advice(provider: str) -> str:
    """What `kitctl build --arch 75,86` costs with the provider it will use (kit.yaml's), from costs.yaml."""
    b = costs().build[provider]
    lo, hi = b.seconds
    return (f"run `kitctl build --arch 75,86` yourself: provider {provider} (kit.yaml), a cold build downloads "
            f"~{b.download_bytes / 1e9:.1f} GB and takes ~{format_duration(lo)} - {format_duration(hi)}"
            + ("; `--provider wheels` is the smaller one" if provider != "wheels" else ""))


def run_demo(root: Path, echo: Callable[[str], None], train_steps: int = 20, provider: str = "nvidia") -> list[Step]:
    root = root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KIT_DATA_ROOT": str(root), "KIT_RUNTIME": "native", "COLUMNS": os.environ.get("COLUMNS", "100")}
    steps: list[Step] = []

    def step(name: str, args: list[str], ok: str) -> bool:
        echo(f"\n[bold]== {name}[/]")
        rc = run_step(kitctl_argv(*args), env, echo)
        steps.append(Step(name, "done" if rc == 0 else "failed", ok if rc == 0 else f"exit {rc}"))
        return rc == 0

    # 1. data (offline: embedded corpus and tokenizer)
    where = DataLayout(root)
    shards = where.shards("tinyshakespeare")
    if step("data", ["data", "make", "tinyshakespeare", "--runtime", "native"],
            f"tinyshakespeare -> {shards} (llm.c shards + {MANIFEST_JSON}, {TOKENIZER_BIN})"):
        step("data verify", ["data", "verify", str(shards)], "headers, token counts and sha256 match the manifest")

    # 2. plans
    inv = root / "first-user-2080ti-3090.csv"
    inv.write_text(FIRST_USER_INVENTORY)
    step("plan: RTX 2080 Ti + RTX 3090", ["train", "--dry-run", "--gpus", "all", "--inventory", str(inv),
                                          "--data", str(shards), "--name", "first-user", "--steps", "100"],
         "mixed sm_75 + sm_86: FP32 on both vs BF16 on the 3090 alone, the faster picked")
    here = gpus.query()
    binary = where.native_bin / BINARIES["bf16"]
    if not here:
        steps.append(Step("plan: this machine", "skipped", "no NVIDIA GPU here (nvidia-smi lists none)"))
        steps.append(Step("train", "skipped", "no NVIDIA GPU here: training needs one (see the plan above for "
                                              "what would run); real runs are in docs/validation.md"))
    else:
        step("plan: this machine", ["train", "--dry-run", "--gpus", "all", "--data", str(shards), "--name", "demo",
                                           "--steps", str(train_steps)],
             f"{len(here)} GPU(s): {', '.join(sorted({g.name for g in here}))}")
        if not binary.exists():
            steps.append(Step("train", "skipped", f"no {binary}: build it with `kitctl build --runtime native`"
                                                  " (or use the image: runtime docker)"))
        else:
            step("train", ["train", "--gpus", "all", "--data", str(shards), "--name", "demo", "--steps",
                           str(train_steps), "--no-tune"], f"{train_steps} steps on this machine's GPUs")

    # 3. observe a real run's log
    real = where.run("h100-tinyshakespeare-150")
    real.mkdir(parents=True, exist_ok=True)
    real_run = RunFolder(real)
    for src, dst in (("ts150_main.log", real_run.main_log), ("ts150_stdout.log", real_run.stdout_log)):
        if (REAL_LOG_DIR / src).exists():
            shutil.copyfile(REAL_LOG_DIR / src, dst)
    if real_run.main_log.exists():
        step("tensorboard (convert)", ["tensorboard", str(real), "--no-serve", "--no-follow"],
             f"event files in {real / 'tb'} (serve with `kitctl tensorboard`)")
        step("status", ["status", str(real)], "one screen about the run")
        step("report", ["report", str(real), "--out", str(root / "report.png"),
                        "--label", "124M preset, tinyshakespeare, 1x H100"], f"{root / 'report.png'}")
    else:
        steps.append(Step("observe", "skipped", f"no real log at {REAL_LOG_DIR}"))

    # 4. images
    step("build (dry run)", ["build", "--dry-run", "--runtime", "docker", "--provider", "wheels", "--arch", "75,86",
                             "--build-dir", str(root / "build")],
         "the exact docker buildx command for sm_75 + sm_86 images")
    if docker_ready():
        steps.append(Step("build", "skipped", f"a Docker engine is here: {build_advice(provider)}"))
    else:
        steps.append(Step("build", "skipped", "no Docker engine here: images need one (docs/images.md)"))
    echo("\n[bold]== doctor[/] (informational: a box without GPUs is 'not ready' for training)")
    rc = run_step(kitctl_argv("doctor"), env, echo)
    steps.append(Step("doctor", "done", "ready" if rc == 0 else "not ready for training here (see its table)"))
    return steps
