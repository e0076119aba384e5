#!/usr/bin/env python3
"""What the fsyncs of `kitctl data` cost (issue 30): one corpus, `kitctl data` end to end, each run with the real
``os.fsync`` ("fsync") and with ``os.fsync`` a no-op ("none": the bound of what any fsync scheme could save),
interleaved. Every call of ``os.fsync`` in kitctl's main process is counted and timed (the tokenizer workers
never fsync), so a line reads: wall seconds, fsync calls, seconds spent inside fsync in the main thread (the
writer: they hold up the token stream) and on other threads (overlapping the tokenizing).

    .venv/bin/python bench/data_fsync.py --mb 200 --shard-size 10000000,1000000 --repeat 2
    .venv/bin/python bench/data_fsync.py --tree /tmp/old --tree .    # source trees (`git archive` of a commit), in turn
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KIT_SHARED", REPO.parent / "shared"))

# the wrapper: kitctl's main with os.fsync counted and timed (mode "fsync") or counted only (mode "none")
WRAP = r'''
import atexit, os, sys, threading, time
real, mode, seen = os.fsync, os.environ["BENCH_FSYNC"], [0, 0.0, 0.0]
def fsync(fd):
    t = time.perf_counter()
    if mode == "fsync":
        real(fd)
    seen[0] += 1
    seen[1 if threading.current_thread() is threading.main_thread() else 2] += time.perf_counter() - t
os.fsync = fsync
atexit.register(lambda: sys.stderr.write(f"BENCH-FSYNC {seen[0]} {seen[1]:.4f} {seen[2]:.4f}\n"))
sys.argv = ["kitctl", *sys.argv[1:]]
from kitctl.__main__ import run
run()
'''


def make_corpus(path: Path, mb: float, seed: int = 0) -> None:
    """Web-like documents from tinyshakespeare paragraphs (as bench/tokenize.py's synthetic corpus)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paras = (SHARED / "data/tinyshakespeare/input.txt").read_text().split("\n\n")
    rnd = random.Random(seed)
    docs, size = [], 0
    while size < mb * 1e6:
        k, s = rnd.randint(1, 30), rnd.randrange(len(paras))
        d = "\n\n".join(paras[s:s + k])
        docs.append(d)
        size += len(d.encode())
    pq.write_table(pa.table({"text": docs}), path, row_group_size=10_000)


def one(work: Path, env: dict, corpus: Path, shard_size: int, mode: str, tree: Path | None) -> dict:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(["sync"], check=False)           # each run starts with no dirty pages of the last one
    cmd = [sys.executable, str(work / "wrap.py"), "data", str(corpus), "--out", str(out), "--name", "fineweb",
           "--shard-size", str(shard_size), "--runtime", "native", "--tokenizer-dir", str(SHARED / "data/gpt2-bpe")]
    e = {**env, "BENCH_FSYNC": mode, **({"PYTHONPATH": str(tree.resolve())} if tree else {})}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=e, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"kitctl data failed:\n{r.stderr[-2000:]}")
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("BENCH-FSYNC ")][-1].split()
    m = json.loads((out / "manifest.json").read_text())
    return {"mode": mode, "shard_size": shard_size, "wall_s": round(dt, 2), "fsyncs": int(line[1]),
            "fsync_main_s": float(line[2]), "fsync_thread_s": float(line[3]), "shards": len(m["shards"]),
            "tokens": m["total_tokens"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200)
    ap.add_argument("--shard-size", default="10000000,1000000", help="comma-separated shard sizes (tokens)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--tree", type=Path, action="append",
                    help="a kitctl source tree to run (repeat to compare trees, interleaved; default: the checkout)")
    args = ap.parse_args()
    from kitctl.data.tokenizer import setup_tiktoken

    work = Path(tempfile.mkdtemp(prefix="kit-fsync-", dir=os.environ.get("BENCH_DIR")))
    try:
        (work / "wrap.py").write_text(WRAP)
        setup_tiktoken(SHARED / "data/gpt2-bpe", work / "tiktoken")
        env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(work / "tiktoken"), "HF_HUB_OFFLINE": "1",
               "KIT_DATA_ROOT": str(work / "root"), "KIT_RUNTIME": "native"}
        corpus = work / "corpus.parquet"
        make_corpus(corpus, args.mb)
        print(f"corpus {corpus.stat().st_size / 1e6:.0f} MB parquet ({args.mb:g} MB of text); "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
        rows = []
        for size in (int(s) for s in args.shard_size.split(",")):
            for _ in range(args.repeat):
                for tree in args.tree or [None]:
                    for mode in ("fsync", "none"):
                        r = one(work, env, corpus, size, mode, tree) | {"tree": str(tree or REPO)}
                        rows.append(r)
                        print(f"  {str(tree or REPO)[-24:]:>24} shard_size {size:>11,} {mode:>5}: {r['wall_s']:6.2f} s "
                              f"wall, {r['fsyncs']:4} fsyncs taking {r['fsync_main_s']:.3f} s in the main thread, "
                              f"{r['fsync_thread_s']:.3f} s on others, {r['shards']} shards, "
                              f"{r['tokens']:,} tokens", flush=True)
        print(json.dumps(rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
