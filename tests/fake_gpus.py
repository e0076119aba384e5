"""A stand-in ``nvidia-smi`` on PATH, for tests that *run* on a described box: ``--inventory`` only plans (a run
with it is refused), so a CPU test that trains with the stand-in train_gpt2cu describes its GPUs this way."""
from __future__ import annotations

from pathlib import Path


def fake_nvidia_smi(bin_dir: Path, csv_text: str) -> Path:
    """Write ``bin_dir/nvidia-smi``: the inventory query prints ``csv_text`` (nvidia-smi's own format); the
    memory sampler's query (``memory.used -lms``) prints 1000 MiB used per GPU until stopped. Returns ``bin_dir``
    (put it first on PATH)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    idx = [line.split(",")[0].strip() for line in csv_text.splitlines() if line.strip()]
    used = "; ".join(f"echo '{i}, 1000'" for i in idx)
    exe = bin_dir / "nvidia-smi"
    exe.write_text("#!/bin/sh\n"
                   'case "$*" in\n'
                   f"  *memory.used*) while :; do {used}; sleep 0.1; done ;;\n"
                   f"  *) cat <<'EOF'\n{csv_text.rstrip()}\nEOF\n  ;;\n"
                   "esac\n")
    exe.chmod(0o755)
    return bin_dir
