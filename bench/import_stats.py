"""Start-up cost of kitctl: how many of kitctl's modules a command loads and how long its imports take.

    .venv/bin/python bench/import_stats.py

Runs each command 5 times under ``python -X importtime`` and reports the best cumulative import time of the top
kitctl module, the count of kitctl modules imported, and the wall and CPU time of the whole process.
"""
from __future__ import annotations

import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {"import kitctl.cli": ["-c", "import kitctl.cli"], "kitctl --help": ["-m", "kitctl", "--help"],
            "kitctl train --help": ["-m", "kitctl", "train", "--help"]}
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def measure(args: list[str], runs: int = 5) -> tuple[int, float, float, float]:
    best_import, best_wall, best_cpu, mods = float("inf"), float("inf"), float("inf"), 0
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        err = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=ROOT, capture_output=True,
                             text=True).stderr
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        rows = [m.groups() for m in map(LINE.match, err.splitlines()) if m]
        ours = [r for r in rows if r[3] == "kitctl" or r[3].startswith("kitctl.")]
        mods = len(ours)
        # the cumulative time of the kitctl modules imported at the top level (one space of nesting)
        top = sum(int(r[1]) for r in ours if len(r[2]) == 1)
        best_import = min(best_import, top / 1e6)
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    return mods, best_import, best_wall, best_cpu


def main() -> None:
    total = sum(1 for _ in (ROOT / "kitctl").rglob("*.py"))
    for name, args in COMMANDS.items():
        mods, imp, wall, cpu = measure(args)
        print(f"{name:22} {mods:3} of {total} kitctl modules; kitctl imports {imp:.2f} s; process {wall:.2f} s wall, "
              f"{cpu:.2f} s CPU (best of 5)")


if __name__ == "__main__":
    main()
