"""Byte identity against llm.c's own scripts (dev/data/fineweb.py, tinyshakespeare.py, hellaswag.py) from the
pinned checkout. Skips without the checkout (CI: GitHub unreachable). Nothing of llm.c is committed here:
at test time the scripts are copied into a temp folder and run unmodified, with the two imports that need
the network replaced -- `transformers` (imported but unused for GPT-2) by an empty module, and
`datasets.load_dataset` by an in-memory `datasets.Dataset` of our documents -- and tiktoken's cache seeded.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from data_ref import EDGE_DOCS, read_dir
from kitctl.data import encoders
from kitctl.data import hellaswag as hs
from kitctl.core.data_folder import DataFolder
from kitctl.data.sources import FilesSource, MemorySource
from kitctl.data.tokenize import make_shards

RUNNER = r'''
import json, multiprocessing as mp, runpy, sys, types
mp.set_start_method("fork", force=True)      # fineweb.py's Pool pickles functions of __main__
import datasets
docs = json.load(open(sys.argv[1]))
ds = datasets.Dataset.from_list([{"text": t} for t in docs])
datasets.load_dataset = lambda *a, **k: ds
fake = types.ModuleType("transformers")     # imported by the scripts, used only for llama-3
fake.AutoTokenizer = None
fake.PreTrainedTokenizerBase = type("PreTrainedTokenizerBase", (), {})
sys.modules["transformers"] = fake
script = sys.argv[2]
sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
sys.argv = [script] + sys.argv[3:]
runpy.run_path(script, run_name="__main__")
'''


def run_upstream_fineweb(llmc_src: Path, work: Path, docs: list[str], shard_size: int) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    for f in ("fineweb.py", "data_common.py"):
        shutil.copy(llmc_src / "dev" / "data" / f, work / f)
    (work / "runner.py").write_text(RUNNER)
    (work / "docs.json").write_text(json.dumps(docs))
    env = {**os.environ, "HF_HOME": str(work / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, str(work / "runner.py"), str(work / "docs.json"), str(work / "fineweb.py"),
                        "-s", str(shard_size)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return work / "fineweb10B"


def corpora(enc):
    lens = lambda ds: [1 + len(enc.encode_ordinary(d)) for d in ds]   # noqa: E731
    edge = EDGE_DOCS * 3
    # upstream can't start a shard with a doc that does not fit, so shard > 2x the longest doc
    yield "edge", edge, 2 * max(lens(edge)) + 13
    exact = ["alpha beta", "gamma", "delta epsilon zeta", "eta", "theta iota"] * 3
    yield "doc-exactly-fills-shard", exact, sum(lens(exact[:5]))          # docs 4, 9, 14 end on boundaries
    yield "stream-ends-on-boundary", exact[:5], sum(lens(exact[:5]))      # a single full val shard
    rnd = np.random.default_rng(3)
    words = ["web", "text", "ünïcödé", "中文", "🙂", "\n", "<|endoftext|>", "the", " ", "1999"]
    rand = [" ".join(rnd.choice(words, size=rnd.integers(0, 60))) for _ in range(300)]
    yield "random", rand, 2 * max(lens(rand)) + 1


@pytest.mark.slow
@pytest.mark.parametrize("encoder", encoders.NAMES)
def test_fineweb_py_identical(llmc_src, tiktoken_cache, tmp_path, encoder):
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    for label, docs, shard in corpora(enc):
        up = run_upstream_fineweb(llmc_src, tmp_path / label / "up", docs, shard)
        expected = read_dir(up, "fineweb")
        assert expected, label
        ours = tmp_path / label / "ours"
        run = {"shard_size": shard, "first_shard_size": shard, "source_fingerprint": label}
        make_shards(MemorySource(docs), ours, "fineweb", run, workers=2, batch_rows=5, encoder=encoder)
        assert read_dir(ours, "fineweb") == expected, label
        assert DataFolder(ours).manifest().run.encoder.name == encoder, label     # the gate passed: no fallback to tiktoken
        # the same documents from a jsonl file through the file reader
        jl = tmp_path / label / "docs.jsonl"
        jl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        make_shards(FilesSource([jl]), tmp_path / label / "jsonl", "fineweb", run, workers=2, encoder=encoder)
        assert read_dir(tmp_path / label / "jsonl", "fineweb") == expected, label


@pytest.mark.slow
def test_fineweb_py_crashes_where_we_spill(llmc_src, tiktoken_cache, tmp_path):
    """Upstream fails on a document longer than a shard; we split it over as many shards as needed."""
    docs = ["short", "word " * 300]
    with pytest.raises(AssertionError):
        run_upstream_fineweb(llmc_src, tmp_path / "up", docs, 64)
    run = {"shard_size": 64, "first_shard_size": 64, "source_fingerprint": "x"}
    s = make_shards(MemorySource(docs), tmp_path / "ours", "fineweb", run, workers=0)
    assert s.total_shards > 4


@pytest.mark.slow
@pytest.mark.parametrize("encoder", encoders.NAMES)
def test_tinyshakespeare_py_same_tokens(llmc_src, tiktoken_cache, tinyshakespeare, tmp_path, encoder):
    work = tmp_path / "up"
    (work / "tinyshakespeare").mkdir(parents=True)
    for f in ("tinyshakespeare.py", "data_common.py"):
        shutil.copy(llmc_src / "dev" / "data" / f, work / f)
    shutil.copy(tinyshakespeare, work / "tinyshakespeare" / "tiny_shakespeare.txt")
    (work / "runner.py").write_text(RUNNER)
    (work / "docs.json").write_text("[]")
    r = subprocess.run([sys.executable, str(work / "runner.py"), str(work / "docs.json"),
                        str(work / "tinyshakespeare.py")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    run = {"shard_size": 10**8, "first_shard_size": 32768, "source_fingerprint": "ts"}
    make_shards(FilesSource([tinyshakespeare], split_on="\n\n"), tmp_path / "ours", "tinyshakespeare", run, workers=2,
                encoder=encoder)
    assert DataFolder(tmp_path / "ours").manifest().run.encoder.name == encoder
    up = work / "tinyshakespeare"
    assert (tmp_path / "ours" / "tinyshakespeare_val_000000.bin").read_bytes() == \
        (up / "tiny_shakespeare_val.bin").read_bytes()
    assert (tmp_path / "ours" / "tinyshakespeare_train_000001.bin").read_bytes() == \
        (up / "tiny_shakespeare_train.bin").read_bytes()


def _fake_torch():
    t = types.SimpleNamespace(long=np.int64)
    t.zeros = lambda shape, dtype=None: np.zeros(shape, dtype=dtype)
    t.tensor = lambda x: np.asarray(x)
    return t


def test_hellaswag_py_identical(llmc_src, tiktoken_cache, tmp_path):
    """llm.c's render_example (its own source, torch replaced by numpy) + its write_evalfile vs ours."""
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    src = (llmc_src / "dev" / "data" / "hellaswag.py").read_text()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "render_example")
    ns = {"enc": enc, "torch": _fake_torch()}
    exec(compile(ast.Module([fn], []), "hellaswag.py", "exec"), ns)
    sys.path.insert(0, str(llmc_src / "dev" / "data"))
    try:
        import data_common
    finally:
        sys.path.pop(0)
    examples = [{"ctx": "A man is sitting on a roof. he", "label": 3,
                 "endings": ["is using wrap.", "is ripping tiles off.", "holds a cube.", "starts pulling up roofing."]},
                {"ctx": "Ünïcode café 日本", "label": 0, "endings": ["a", "bb ccc", "🙂", "d e f g"]}]
    jl = tmp_path / "hs.jsonl"
    jl.write_text("".join(json.dumps(e) + "\n" for e in examples))
    data_common.write_evalfile(str(tmp_path / "up.bin"), [ns["render_example"](e)[0] for e in examples])
    hs.build(jl, tmp_path / "ours.bin", enc)
    assert (tmp_path / "ours.bin").read_bytes() == (tmp_path / "up.bin").read_bytes()
