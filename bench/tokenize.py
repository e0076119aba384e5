#!/usr/bin/env python3
"""Benchmark `kitctl data` tokenization, in ONE run, on the same corpus and cores (issue 31):

  (a)  llm.c's dev/data/fineweb.py end to end (when --llmc points at a checkout): its own script, run unmodified
       from a temp copy, with load_dataset returning our corpus (prepared before the clock starts, so its HF
       download/Arrow conversion is NOT counted against it) and `transformers` stubbed; its Pool(cpu_count-2)
       and list-based shard writes included.
  (b)  `kitctl data CORPUS --runtime native --encoder E` end to end, for each encoder (a subprocess: start-up,
       the plan with its token sample and content hash, parquet, tokenizing on all cores, shards, sha256,
       manifest, the encoder's identity gate).
  (c)  each encoder's raw rate: single-process `encode_docs` (the batch call the workers make) on the documents
       in memory, x cores; and tiktoken's `encode_ordinary` per document (the call llm.c makes).
  (f)  the floor: a plain read-and-write (a subprocess: python + pyarrow start-up, the parquet's text column read
       batch by batch, the same UTF-8 bytes written to one file and fsync'd; no tokenizing).

It prints tokens/s of each, b/a (goal >= 8x), b/f (goal: within 2x of the floor, i.e. f/b >= 50%), and checks that
(a) and every (b) wrote identical bytes. Corpora (--corpora): `synthetic` (web-like documents built from
tinyshakespeare paragraphs, 0.2-8 KB), `varied` (real text of this box: Debian docs, man pages, C headers, Perl
and Python sources; no document repeated), or --corpus FILE.parquet. No network is used.

    .venv/bin/python bench/tokenize.py --llmc /path/to/llm.c --mb 200 --repeat 3
"""
from __future__ import annotations

import sys  # noqa: E402  (first: this file is named like the stdlib `tokenize`; drop its folder from the path)

if sys.path and sys.path[0] and __import__("os").path.samefile(sys.path[0], __import__("os").path.dirname(__file__)):
    sys.path.pop(0)

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RUNNER = r'''
import multiprocessing as mp, runpy, sys, time, types
mp.set_start_method("fork", force=True)
import datasets
ds = datasets.load_dataset("parquet", data_files=sys.argv[1], split="train", cache_dir=sys.argv[2])
datasets.load_dataset = lambda *a, **k: ds
fake = types.ModuleType("transformers"); fake.AutoTokenizer = None
fake.PreTrainedTokenizerBase = type("PreTrainedTokenizerBase", (), {})
sys.modules["transformers"] = fake
script = sys.argv[3]
sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
sys.argv = [script] + sys.argv[4:]
t0 = time.perf_counter()
runpy.run_path(script, run_name="__main__")
print("BENCH_SECONDS", time.perf_counter() - t0, file=sys.stderr)
'''


FLOOR = r'''
import os, sys, time
t0 = time.perf_counter()
import pyarrow.parquet as pq
pf = pq.ParquetFile(sys.argv[1])
with open(sys.argv[2], "wb") as f:
    for rb in pf.iter_batches(batch_size=512, columns=["text"], use_threads=False):
        a = rb.column(0)
        offs, data = a.buffers()[1], a.buffers()[2]
        import numpy as np
        o = np.frombuffer(offs, np.int32 if str(a.type) == "string" else np.int64, count=len(a) + 1, offset=a.offset * (4 if str(a.type) == "string" else 8))
        f.write(memoryview(data)[int(o[0]):int(o[-1])])
    f.flush()
    os.fsync(f.fileno())
'''


def make_corpus(path: Path, mb: float, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    shakespeare = Path(os.environ.get("KIT_SHARED", REPO.parent / "shared")) / "data/tinyshakespeare/input.txt"
    paras = shakespeare.read_text().split("\n\n")
    rnd = random.Random(seed)
    docs, size = [], 0
    while size < mb * 1e6:
        k = rnd.randint(1, 30)
        s = rnd.randrange(len(paras))
        d = "\n\n".join(paras[s:s + k])
        docs.append(d)
        size += len(d.encode())
    pq.write_table(pa.table({"text": docs}), path, row_group_size=10_000)


VARIED_ROOTS = ("/usr/share/doc", "/usr/share/man", "/usr/include", "/usr/share/perl", "/usr/lib/python3")


def make_varied_corpus(path: Path, mb: float, roots=VARIED_ROOTS, doc_chars: int = 12_000) -> int:
    """Real, varied text of this box (Debian docs and changelogs, man pages' roff, C headers, Perl and Python
    sources), each file read once (gzip opened), valid UTF-8 only, cut at blank lines into documents of at most
    ``doc_chars`` characters (FineWeb-like sizes). No document is repeated: a BPE with a word cache gets no free
    hits. Returns the bytes written (less than ``mb`` if the roots hold less text)."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    docs, size = [], 0
    for root in roots:
        for dirpath, _, names in sorted(os.walk(root)):
            for n in sorted(names):
                f = Path(dirpath) / n
                try:
                    if f.is_symlink() or not f.is_file() or f.stat().st_size > 50e6:
                        continue
                    raw = gzip.decompress(f.read_bytes()) if n.endswith(".gz") else f.read_bytes()
                    text = raw.decode("utf-8")
                except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
                    continue
                if "\x00" in text or not text.strip():
                    continue
                cur = []
                for para in text.split("\n\n"):
                    cur.append(para)
                    if sum(map(len, cur)) >= doc_chars:
                        docs.append("\n\n".join(cur))
                        cur = []
                if cur:
                    docs.append("\n\n".join(cur))
                size += len(raw)
                if size >= mb * 1e6:
                    break
            if size >= mb * 1e6:
                break
        if size >= mb * 1e6:
            break
    pq.write_table(pa.table({"text": docs}), path, row_group_size=10_000)
    return sum(len(d.encode()) for d in docs)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmc", type=Path, help="llm.c checkout (for (a))")
    ap.add_argument("--corpus", type=Path, help="a parquet file with a text column (instead of --corpora)")
    ap.add_argument("--corpora", default="synthetic,varied", help="synthetic, varied or both (comma-separated)")
    ap.add_argument("--mb", type=float, default=200, help="corpus size in MB (the goal is set on 200)")
    ap.add_argument("--shard-size", type=int, default=10**7)
    ap.add_argument("--workers", type=int, default=None, help="kitctl workers (default: all cores)")
    ap.add_argument("--encoders", default="gigatoken,tiktoken", help="kitctl data --encoder values to run")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the best of each is reported")
    ap.add_argument("--compare", type=Path, help="another kitctl source tree (e.g. `git archive` of an older commit): "
                                                 "its `kitctl data` is run too, as (b0), in the same rounds")
    ap.add_argument("--tokenizer-dir", type=Path,
                    default=Path(os.environ.get("KIT_SHARED", REPO.parent / "shared")) / "data/gpt2-bpe")
    return ap.parse_args()


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Bench:
    """The measurements on one corpus; each returns its seconds and records its CPU time."""

    def __init__(self, args: argparse.Namespace, work: Path, corpus: Path, docs: list, cores: int, tk_cache: Path):
        self.args, self.work, self.corpus, self.docs, self.cores = args, work, corpus, docs, cores
        self.env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tk_cache), "HF_HUB_OFFLINE": "1",
                    "HF_DATASETS_OFFLINE": "1", "KIT_DATA_ROOT": str(work / "root"), "KIT_RUNTIME": "native"}
        self.ntok = 0
        self.up = work / "up"
        self.cpu: dict[str, list[float]] = {}
        self.best: dict[str, list[float]] = {}
        if args.llmc:
            self.up.mkdir()
            for f in ("fineweb.py", "data_common.py"):
                shutil.copy(args.llmc / "dev" / "data" / f, self.up / f)
            (self.up / "runner.py").write_text(RUNNER)
        (work / "floor.py").write_text(FLOOR)

    def out(self, key: str) -> Path:
        return self.work / f"out-{key}"

    def _record(self, key: str, seconds: float, cpu: float) -> None:
        self.best.setdefault(key, []).append(seconds)
        self.cpu.setdefault(key, []).append(cpu)

    def raw(self, name: str) -> None:
        """Single-process rate of an encoder's batch call (512 documents a batch, as the workers get them)."""
        from kitctl.data import encoders

        enc = encoders.load(name)
        t0, p0 = time.perf_counter(), time.process_time()
        n = 0
        for i in range(0, len(self.docs), 512):
            n += len(enc.encode_docs(self.docs[i:i + 512])[0])
        self._record(f"c-{name}", time.perf_counter() - t0, time.process_time() - p0)
        self.ntok = n

    def raw_llmc_call(self) -> None:
        """tiktoken's encode_ordinary per document: the call llm.c's fineweb.py makes."""
        from kitctl.data import encoders

        enc = encoders.load(encoders.REFERENCE).enc
        t0, p0 = time.perf_counter(), time.process_time()
        for d in self.docs:
            enc.encode_ordinary(d)
        self._record("c-encode_ordinary", time.perf_counter() - t0, time.process_time() - p0)

    def floor(self) -> None:
        c0, t0 = _children_cpu(), time.perf_counter()
        r = subprocess.run([sys.executable, str(self.work / "floor.py"), str(self.corpus), str(self.work / "floor.out")],
                           capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if r.returncode:
            sys.exit(f"the floor script failed:\n{r.stderr[-2000:]}")
        self._record("f", dt, _children_cpu() - c0)
        (self.work / "floor.out").unlink()

    def llmc(self) -> None:
        shutil.rmtree(self.up / "fineweb10B", ignore_errors=True)
        c0 = _children_cpu()
        r = subprocess.run([sys.executable, str(self.up / "runner.py"), str(self.corpus), str(self.work / "hf"),
                            str(self.up / "fineweb.py"), "-s", str(self.args.shard_size)], env=self.env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"llm.c's fineweb.py failed:\n{r.stderr[-2000:]}")
        self._record("a", float(r.stderr.split("BENCH_SECONDS")[1].split()[0]), _children_cpu() - c0)

    def kit(self, encoder: str, tree: Path | None = None) -> None:
        key = f"b-{encoder}" if tree is None else "b0"
        out = self.out(key)
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "kitctl", "data", str(self.corpus), "--out", str(out), "--name", "fineweb",
               "--shard-size", str(self.args.shard_size), "--runtime", "native", "--tokenizer-dir",
               str(self.args.tokenizer_dir)]
        if tree is None:
            cmd += ["--encoder", encoder]
        if self.args.workers is not None:
            cmd += ["--workers", str(self.args.workers)]
        # PYTHONPATH names the tree, and the run starts outside any tree: `python -m` puts its working folder
        # first on sys.path, so from this repository's root the --compare tree was never imported (b0 was b)
        env = {**self.env, "PYTHONPATH": str((tree or REPO).resolve())}
        where = subprocess.run([sys.executable, "-c", "import kitctl; print(kitctl.__file__)"], env=env, cwd=self.work,
                               capture_output=True, text=True).stdout.strip()
        if not Path(where).resolve().is_relative_to((tree or REPO).resolve()):
            sys.exit(f"kitctl data ({key}) would import {where}, not the tree {tree or REPO}")
        c0, t0 = _children_cpu(), time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=self.work)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            sys.exit(f"kitctl data ({key}) failed:\n{r.stderr[-2000:]}")
        self._record(key, dt, _children_cpu() - c0)
        if tree is None:
            enc = json.loads((out / "manifest.json").read_text())["run"].get("encoder") or {}
            if enc.get("name") != encoder:
                sys.exit(f"kitctl data --encoder {encoder} ran with {enc}: its identity gate failed")

    def rounds(self, encoders_: list[str]) -> None:
        """Interleaved rounds, best of each: the machine may be shared; the best round is the least disturbed."""
        for i in range(self.args.repeat):
            for e in encoders_:
                self.raw(e)
            if i == 0:
                self.raw_llmc_call()
            self.floor()
            if self.args.llmc:
                self.llmc()
            kits = [lambda e=e: self.kit(e) for e in encoders_]
            if self.args.compare:            # the other tree first in every other round: neither always follows (a)
                kits.insert(len(kits) if i % 2 == 0 else 0, lambda: self.kit("", self.args.compare))
            for k in kits:
                k()
            print(f"  round {i + 1} (load {os.getloadavg()[0]:.1f}): " +
                  ", ".join(f"{k} {min(v):.2f}s" for k, v in self.best.items()), flush=True)


def _same(a: Path, b: Path) -> bool:
    fa, fb = sorted(a.glob("*.bin")), sorted(b.glob("*.bin"))
    return bool(fa) and [p.name for p in fa] == [p.name for p in fb] and \
        all(x.read_bytes() == y.read_bytes() for x, y in zip(fa, fb, strict=True))


def _report(bench: Bench, label: str, encoders_: list[str]) -> dict:
    ntok, cores, best, cpu = bench.ntok, bench.cores, bench.best, bench.cpu
    rate = {k: ntok / min(v) for k, v in best.items()}
    print(f"\n{label}: {ntok:,} tokens, {cores} cores, best of {bench.args.repeat}")
    print(f"  {'':34s} {'M tok/s':>8s} {'seconds':>8s} {'CPU-s':>7s}")

    def line(key: str, what: str, r: float, sec: float) -> None:
        print(f"  {what:34s} {r / 1e6:8.2f} {sec:8.2f} {min(cpu[key]):7.2f}")

    if "a" in rate:
        line("a", "(a) llm.c fineweb.py", rate["a"], min(best["a"]))
    for e in encoders_:
        line(f"b-{e}", f"(b) kitctl data --encoder {e}", rate[f"b-{e}"], min(best[f"b-{e}"]))
    if "b0" in rate:
        line("b0", "(b0) --compare tree", rate["b0"], min(best["b0"]))
    for e in encoders_:
        single = rate[f"c-{e}"]
        print(f"  {'(c) ' + e + ' raw x ' + str(cores):34s} {single * cores / 1e6:8.2f} {'':8s} {'':7s}"
              f" ({single / 1e6:.2f} M tok/s single-process)")
    print(f"  {'(c) tiktoken encode_ordinary x ' + str(cores):34s} {rate['c-encode_ordinary'] * cores / 1e6:8.2f}"
          f" {'':16s} ({rate['c-encode_ordinary'] / 1e6:.2f} single-process, per document)")
    line("f", "(f) read-and-write floor", rate["f"], min(best["f"]))
    for k in ["f", *(f"b-{e}" for e in encoders_), *(["b0"] if "b0" in best else [])]:
        print(f"  {k:5s} every round (s): " + " ".join(f"{x:.2f}" for x in best[k]))
    out = {"corpus": label, "tokens": ntok, "cores": cores, "best_of": bench.args.repeat,
           "seconds": {k: round(min(v), 3) for k, v in best.items()}, "cpu_s": {k: round(min(v), 3) for k, v in cpu.items()},
           "rounds_seconds": {k: [round(x, 3) for x in v] for k, v in best.items()},
           "rounds_cpu_s": {k: [round(x, 3) for x in v] for k, v in cpu.items()}}
    for e in encoders_:
        b = rate[f"b-{e}"]
        extra = f"b/a = {b / rate['a']:.1f}x (goal >= 8x), " if "a" in rate else ""
        same = _same(bench.up / "fineweb10B", bench.out(f"b-{e}")) if "a" in rate else None
        print(f"  {e}: {extra}b takes {min(best[f'b-{e}']) / min(best['f']):.2f}x the floor's time (goal <= 2x); "
              f"b/c = {100 * b / (rate[f'c-{e}'] * cores):.0f}%"
              + (f"; byte-identical to llm.c: {same}" if same is not None else ""))
        out[e] = {"b_over_a": b / rate["a"] if "a" in rate else None, "time_over_floor": min(best[f"b-{e}"]) / min(best["f"]),
                  "identical_to_llmc": same}
    if len(encoders_) > 1:
        print(f"  encoders' outputs byte-identical: {_same(bench.out('b-' + encoders_[0]), bench.out('b-' + encoders_[1]))}")
    print(f"  load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return out


def main() -> None:
    args = _args()
    from kitctl.data.pool import default_workers
    from kitctl.data.tokenizer import setup_tiktoken

    cores = default_workers()
    encoders_ = [e for e in args.encoders.split(",") if e]
    results = []
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    corpora = [("file", args.corpus)] if args.corpus else [(c, None) for c in args.corpora.split(",")]
    for kind, given in corpora:
        work = Path(tempfile.mkdtemp(prefix="kit-bench-"))
        try:
            tk_cache = work / "tiktoken"
            setup_tiktoken(args.tokenizer_dir, tk_cache)
            corpus = given or work / "corpus.parquet"
            if kind == "synthetic":
                make_corpus(corpus, args.mb)
            elif kind == "varied":
                make_varied_corpus(corpus, args.mb)
            import pyarrow.parquet as pq

            docs = pq.read_table(corpus, columns=["text"]).column(0).to_pylist()
            nbytes = sum(len(d.encode()) for d in docs)
            label = f"{kind} corpus {nbytes / 1e6:.0f} MB, {len(docs):,} documents"
            print(f"{label}:", flush=True)
            bench = Bench(args, work, corpus, docs, cores, tk_cache)
            bench.rounds(encoders_)
            results.append(_report(bench, label, encoders_))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
