"""Start-up cost of kitctl: how many modules a command loads and how long its imports take.

    .venv/bin/python bench/import_stats.py [--runs N]

Runs each command N times (default 5) under ``python -X importtime`` and reports the count of kitctl modules and of
all modules imported, the best cumulative import time of the top kitctl module, and the best wall and CPU time of
the whole process. The ``kitctl data`` rows run against a throw-away kit.yaml (``kitctl init --runtime docker`` in a
temp folder: the data dry run asks Docker whether the data image is there, as a default kit.yaml does).
"""
from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def commands(config: Path) -> dict[str, list[str]]:
    kit = ["-m", "kitctl", "--config", str(config)]
    return {"import kitctl.cli": ["-c", "import kitctl.cli"], "kitctl --help": ["-m", "kitctl", "--help"],
            "kitctl data --help": [*kit, "data", "--help"],
            "kitctl data tinyshakespeare --dry-run": [*kit, "data", "tinyshakespeare", "--dry-run"],
            "kitctl train --help": [*kit, "train", "--help"], "kitctl status": [*kit, "status"]}


def measure(args: list[str], runs: int) -> tuple[int, int, float, float, float]:
    best_import, best_wall, best_cpu, mods, everything = float("inf"), float("inf"), float("inf"), 0, 0
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode:
            raise SystemExit(f"{args}: exit {done.returncode}\n{done.stderr[-2000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        rows = [m.groups() for m in map(LINE.match, done.stderr.splitlines()) if m]
        ours = [r for r in rows if r[3] == "kitctl" or r[3].startswith("kitctl.")]
        mods, everything = len(ours), len(rows)
        # the cumulative time of the kitctl modules imported at the top level (one space of nesting)
        top = sum(int(r[1]) for r in ours if len(r[2]) == 1)
        best_import = min(best_import, top / 1e6)
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    return mods, everything, best_import, best_wall, best_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    total = sum(1 for _ in (ROOT / "kitctl").rglob("*.py"))
    with tempfile.TemporaryDirectory(prefix="import-stats-") as tmp:
        config = Path(tmp) / "kit.yaml"
        subprocess.run([sys.executable, "-m", "kitctl", "init", str(config), "--data-root", str(Path(tmp) / "data"),
                        "--runtime", "docker", "--arch", "86"], cwd=ROOT, check=True, capture_output=True)
        for name, args in commands(config).items():
            mods, everything, imp, wall, cpu = measure(args, runs)
            print(f"{name:38} {mods:3} of {total} kitctl modules, {everything:4} modules in all; kitctl imports "
                  f"{imp:.2f} s; process {wall:.2f} s wall, {cpu:.2f} s CPU (best of {runs})", flush=True)


if __name__ == "__main__":
    main()
