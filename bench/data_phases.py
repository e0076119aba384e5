#!/usr/bin/env python3
"""Where the time of `kitctl data` goes, phase by phase (issue 31; the table in docs/data.md).

Each round runs a fresh process that does what `kitctl data FILE.parquet` does with the fast encoder, with a
timer on each phase: the imports, gigatoken's load, the plan's token estimate, the input's content hash, the
identity gate's two sides (serial here; a run overlaps tiktoken's with the first batches), then the token stream
into shards (kitctl.data.pool.iter_tokens and DataFolder's ShardWriter, as make_shards drives them) with the CPU
time of each thread's part (the encode threads' rows add up over the threads). The CPU
seconds are the figures to compare on a shared box (wall time there is mostly other people's); the best of
--rounds is kept per phase.

    .venv/bin/python bench/data_phases.py FILE.parquet [--rounds 3] [--workers N]
"""
from __future__ import annotations

import sys  # noqa: E402

if sys.path and sys.path[0] and __import__("os").path.samefile(sys.path[0], __import__("os").path.dirname(__file__)):
    sys.path.pop(0)         # a file of this folder is named like the stdlib `tokenize`

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KIT_SHARED", REPO.parent / "shared"))


def child(corpus: Path, work: Path, workers: int | None) -> dict:
    """One run with timers; returns {phase: [cpu_s, wall_s]}."""
    out: dict[str, list[float]] = {}
    lock = threading.Lock()

    def add(k: str, cpu: float, wall: float = 0.0) -> None:
        with lock:
            c, w = out.get(k, [0.0, 0.0])
            out[k] = [c + cpu, w + wall]

    class timed:
        def __init__(self, k: str):
            self.k = k

        def __enter__(self):
            self.c, self.w = time.thread_time(), time.perf_counter()

        def __exit__(self, *a):
            add(self.k, time.thread_time() - self.c, time.perf_counter() - self.w)

    t_all = time.perf_counter()
    with timed("import: kitctl's CLI + `kitctl data` (kitctl.cli, kitctl.data.cli)"):
        import kitctl.cli as kcli
        kcli._data()                  # what `kitctl data` imports (numpy with one BLAS thread)
    with timed("import: pyarrow.parquet"):
        import pyarrow.parquet  # noqa: F401
    from kitctl.core.data_folder import DataFolder
    from kitctl.data import encoders, pool, space, tokenizer
    from kitctl.data.sources import FilesSource

    cache = Path(os.environ["KIT_PHASES_TIKTOKEN"])
    tokenizer.setup_tiktoken(SHARED / "data/gpt2-bpe", cache)
    src = FilesSource([corpus])
    src.prefetch_fingerprint()
    with timed("gigatoken: import and load (the cached rank file)"):
        fast = encoders.load(encoders.FAST, encoders.ready_rank_file(cache))
    with timed("plan: token estimate (sample read + gigatoken; 1st call imports awkward)"):
        space.estimate_tokens(src, encoder=fast)
    with timed("input's sha256 (thread; wall = waiting for it)"):
        src.fingerprint()
    first = next(src.iter_batches())
    with timed("identity gate: gigatoken's side (before the stream)"):
        pending = encoders.start_gate(encoders.FAST, first.slice(0, encoders.GATE_DOCS).to_pylist())
    with timed("identity gate: tiktoken's load + side (beside the stream's first batches)"):
        g = encoders.finish_gate(pending)
    assert g.mismatch is None, g.mismatch

    # the stream: each thread's part timed where it runs
    real_with_eot, real_batches = encoders.with_eot, src.iter_batches
    real_tb = pool.tokenize_batch

    def with_eot(flat, offsets):
        with timed("stream: EOT insertion (encode threads)"):
            return real_with_eot(flat, offsets)

    def tokenize_batch(texts, encoder=None):
        c, w = time.thread_time(), time.perf_counter()
        r = real_tb(texts, encoder)
        add("stream: encode incl. EOTs (encode threads)", time.thread_time() - c, time.perf_counter() - w)
        return r

    def batches():
        it = real_batches()
        while True:
            with timed("stream: parquet read + decode (reader thread)"):
                b = next(it, None)
            if b is None:
                return
            yield b

    encoders.with_eot, pool.tokenize_batch = with_eot, tokenize_batch   # type: ignore[assignment]
    shards = work / "out"
    folder = DataFolder(shards)
    m = folder.resume_or_start("fineweb", "local", {"shard_size": 10**7, "source_fingerprint": src.fingerprint()})
    w = folder.writer(m, 10**7)
    real_finish = w._finish

    def finish(reread: bool = False) -> None:
        with timed("stream: fsync + rename per shard (main)"):
            real_finish(reread)

    w._finish = finish  # type: ignore[method-assign]
    n = pool.default_workers(encoders.FAST) if workers is None else workers
    t0 = time.perf_counter()
    for toks, _ in pool.iter_tokens(batches(), n, encoders.FAST):
        with timed("stream: shard writes + sha256 (main)"):
            w.add(toks)
    w.close()
    add("stream: wall, first batch to last shard", 0.0, time.perf_counter() - t0)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    if ru.ru_utime + ru.ru_stime:
        add("stream: worker processes (all their CPU)", ru.ru_utime + ru.ru_stime)
    add("total, this process (all its threads; the gate's two sides serial here)", time.process_time(),
        time.perf_counter() - t_all)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: kitctl's, 0 with gigatoken); "
                    "with processes the encode rows stay empty and their CPU is one line")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory(prefix="kit-phases-") as work:
            print(json.dumps(child(args.corpus, Path(work), args.workers)))
        return
    best: dict[str, list[float]] = {}
    tk_cache = Path(tempfile.mkdtemp(prefix="kit-phases-tiktoken-"))
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from kitctl.data import tokenizer as t; "
                    "t.setup_tiktoken(Path(sys.argv[1]), Path(sys.argv[2])); t.get_encoding()",
                    str(SHARED / "data/gpt2-bpe"), str(tk_cache)], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        for _ in range(args.rounds):
            _round(args, tk_cache, best)
    finally:
        shutil.rmtree(tk_cache, ignore_errors=True)
    print(f"{args.corpus} ({args.corpus.stat().st_size / 1e6:.0f} MB parquet), best of {args.rounds}, "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  {'phase':56s} {'CPU-s':>6s} {'wall-s':>6s}")
    for k, (c, w) in best.items():
        print(f"  {k:56s} {c:6.3f} {w:6.3f}")


def _round(args: argparse.Namespace, tk_cache: Path, best: dict[str, list[float]]) -> None:
    """One fresh process; keeps the best CPU and the best wall of each phase."""
    cmd = [sys.executable, __file__, str(args.corpus), "--child"]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    r = subprocess.run(cmd, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO), "KIT_PHASES_TIKTOKEN": str(tk_cache)})
    if r.returncode:
        sys.exit(r.stderr[-3000:])
    for k, (c, w) in json.loads(r.stdout.splitlines()[-1]).items():
        b = best.setdefault(k, [c, w])
        best[k] = [min(b[0], c), min(b[1], w)]

if __name__ == "__main__":
    main()
