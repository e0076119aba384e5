"""Offline tokenizer seeding, llm.c's gpt2_tokenizer.bin, the HellaSwag eval file, HF recipe plumbing
(with the hub replaced by local functions), pre-tokenized shards, and environment set-up."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import kitctl_proc

from data_ref import read_dir, read_eval_file, reference_files
from kitctl.data import hellaswag as hs
from kitctl.data import tokenizer as tk
from kitctl.data.hf import hf_source
from kitctl.data.recipes import load_recipe
from kitctl.data.sources import FilesSource
from kitctl.core.errors import KitError



pytestmark = pytest.mark.usefixtures("restore_environ")   # plan.execute sets HF_HOME, TIKTOKEN_CACHE_DIR, ...

def test_seed_cache_uses_tiktoken_names_and_checks_sha(gpt2_bpe_dir, tmp_path):
    sums = tk.seed_cache(gpt2_bpe_dir, tmp_path / "c")
    assert sums == tk.FILES
    url = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
    assert (tmp_path / "c" / hashlib.sha1(url.encode()).hexdigest()).read_bytes() == \
        (gpt2_bpe_dir / "vocab.bpe").read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(gpt2_bpe_dir / "encoder.json", bad / "encoder.json")
    (bad / "vocab.bpe").write_text("#version: 0.2\nnot it\n")
    with pytest.raises(KitError, match="is not GPT-2's vocab.bpe"):
        tk.seed_cache(bad, tmp_path / "c2")
    (bad / "vocab.bpe").unlink()
    with pytest.raises(KitError, match="vocab.bpe is missing"):
        tk.check_tokenizer_dir(bad)


@pytest.mark.slow
def test_tiktoken_loads_offline_from_seeded_cache(gpt2_bpe_dir, tmp_path):
    code = ("import os, tiktoken, requests\n"
            "requests.get = None  # any network use would crash\n"
            "e = tiktoken.get_encoding('gpt2'); print(e.encode_ordinary('hello world'))")
    tk.seed_cache(gpt2_bpe_dir, tmp_path / "c")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "c")},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[31373, 995]"


def test_gpt2_tokenizer_bin_matches_llmc_format(tiktoken_cache, tmp_path):
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    p = tmp_path / "gpt2_tokenizer.bin"
    assert tk.write_tokenizer_bin(p, enc) is True
    assert tk.write_tokenizer_bin(p, enc) is False          # kept when present
    raw = p.read_bytes()
    assert np.frombuffer(raw[:16], "<i4").tolist() == [20240328, 2, 50257, 50256]
    info, toks = tk.read_tokenizer_bin(p)
    assert info["vocab_size"] == 50257 and len(toks) == 50257
    assert toks[31373] == b"hello" and toks[995] == b" world" and toks[50256] == b"<|endoftext|>"
    assert all(toks[i] == enc.decode_single_token_bytes(i) for i in range(0, 50257, 97))
    assert len(raw) == 1024 + sum(1 + len(t) for t in toks)


def _hellaswag_jsonl(path):
    exs = [{"ctx": "A man is sitting on a roof. he", "label": 3, "split": "val",
            "endings": ["is using wrap.", "is ripping tiles off.", "holds a cube.", "starts pulling up roofing."]},
           {"ctx": "Ünïcode café", "label": 1, "endings": ["a", "b c", "🙂", "d"]}]
    path.write_text("".join(json.dumps(e) + "\n" for e in exs))
    return exs


def test_hellaswag_eval_file(tiktoken_cache, tmp_path):
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    exs = _hellaswag_jsonl(tmp_path / "hs.jsonl")
    assert hs.build(tmp_path / "hs.jsonl", tmp_path / "out.bin", enc) == 2
    raw = (tmp_path / "out.bin").read_bytes()
    head = np.frombuffer(raw[:16], "<i4").tolist()
    assert head[:3] == [20240522, 1, 2]
    stream = np.frombuffer(raw[1024:], "<u2")
    # example 0 by hand: START, bytes, index, label, 4, n_ctx, ctx...
    ctx = enc.encode(exs[0]["ctx"])
    assert stream[:6].tolist() == [65535, stream[1], 0, 3, 4, len(ctx)]
    assert stream[6:6 + len(ctx)].tolist() == ctx
    ends = [enc.encode(" " + e) for e in exs[0]["endings"]]
    assert stream[1] == 2 * (6 + len(ctx) + sum(1 + len(e) for e in ends))
    assert head[3] == max(stream[1], stream[stream[1] // 2 + 1])
    info, parsed = read_eval_file(tmp_path / "out.bin")
    assert parsed[1]["label"] == 1 and parsed[1]["ending_tokens"][2] == enc.encode(" 🙂")
    (tmp_path / "bad.jsonl").write_text('{"ctx": "x"}\n')
    with pytest.raises(KitError, match="bad.jsonl:1: not a HellaSwag example"):
        hs.build(tmp_path / "bad.jsonl", tmp_path / "o2.bin", enc)


@pytest.mark.slow
def test_hellaswag_recipe_cli_writes_where_train_expects(tmp_path, gpt2_bpe_dir):
    _hellaswag_jsonl(tmp_path / "hs.jsonl")
    env = {**os.environ, "KIT_DATA_ROOT": str(tmp_path / "root"), "KIT_RUNTIME": "native",
           "KIT_TOKENIZER_DIR": str(gpt2_bpe_dir)}
    r = kitctl_proc.run(["data", "hellaswag", "--source", str(tmp_path / "hs.jsonl")], env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert read_eval_file(tmp_path / "root" / "hellaswag" / "hellaswag_val.bin")[0]["n"] == 2
    assert (tmp_path / "root" / "gpt2_tokenizer.bin").is_file()


def test_hf_recipe_lists_pinned_files_sorted_and_reads_them(tiktoken_cache, tmp_path):
    """The hub is replaced by two local functions; everything else (pattern, order, reading) is real."""
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    r = load_recipe("fineweb10B")
    assert r.revision() == "9767af12bf8f0f7d3c91e0345b89bc6b9cbe1a94" and r.prefix == "fineweb"
    snap = tmp_path / "snap"
    texts = {}
    for name in ["sample/10BT/001_00000.parquet", "sample/10BT/000_00000.parquet", "sample/100BT/000.parquet"]:
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        texts[name] = [f"{name} doc {i}" for i in range(5)]
        pq.write_table(pa.table({"text": texts[name], "id": list(range(5))}), snap / name, row_group_size=2)
    calls = []

    def list_files(repo, revision):
        calls.append(("list", repo, revision))
        return [str(p.relative_to(snap)) for p in snap.rglob("*")] + ["README.md"]

    def download(repo, revision, patterns):
        calls.append(("download", repo, revision, tuple(patterns)))
        return str(snap)

    src = hf_source(r, stream=False, list_files=list_files, download=download)
    assert calls == [("list", "HuggingFaceFW/fineweb", r.revision()),
                     ("download", "HuggingFaceFW/fineweb", r.revision(), ("sample/10BT/*.parquet",))]
    docs = texts["sample/10BT/000_00000.parquet"] + texts["sample/10BT/001_00000.parquet"]
    from kitctl.data.tokenize import make_shards

    run = {"shard_size": 40, "first_shard_size": 40, "source_fingerprint": src.fingerprint()}
    make_shards(src, tmp_path / "out", "fineweb", run, workers=0)
    assert read_dir(tmp_path / "out", "fineweb") == reference_files(enc, docs, "fineweb", 40)
    # resume inside a row group of the second file: skipping uses parquet metadata, same documents
    batches = list(src.iter_batches(start_doc=7, batch_rows=2))
    assert [t for b in batches for t in b.to_pylist()] == docs[7:]


def test_pretokenized_from_local_folder(tiktoken_cache, tmp_path, gpt2_bpe_dir):
    from kitctl.core.config import KitConfig
    from kitctl.core.data_folder import DataFolder
    from kitctl.data.execute import execute
    from kitctl.data.plan import make_plan
    from data_ref import write_shard

    srcdir = tmp_path / "cache"
    srcdir.mkdir()
    for i in range(3):
        write_shard(srcdir / ("fineweb_val_000000.bin" if i == 0 else f"fineweb_train_{i:06d}.bin"),
                    np.arange(100 + i, dtype=np.uint16))
    cfg = KitConfig(data_root=tmp_path / "root", tokenizer_dir=gpt2_bpe_dir)
    plan = make_plan(cfg, "fineweb10B-pretokenized", source=str(srcdir), train_shards=2)
    m = execute(plan, log=lambda s: None, free_fn=lambda p: 10**12)
    assert [s.tokens for s in m.shards] == [100, 101, 102] and m.complete
    assert DataFolder(plan.out_dir).verify()[1] == []
    plan = make_plan(cfg, "fineweb10B-pretokenized", source=str(srcdir), train_shards=5)
    with pytest.raises(KitError, match="lacks 3 of the 6 shards"):
        execute(plan, log=lambda s: None, free_fn=lambda p: 10**12)
    (srcdir / "fineweb_train_000002.bin").write_bytes(b"\0" * 2000)
    plan = make_plan(cfg, "fineweb10B-pretokenized", source=str(srcdir), train_shards=2, out=tmp_path / "o2")
    with pytest.raises(KitError, match="header magic"):
        execute(plan, log=lambda s: None, free_fn=lambda p: 10**12)


def test_prepare_env_points_caches_at_data_root(tmp_path, monkeypatch):
    from kitctl.core.config import KitConfig, Mirrors
    from kitctl.data.execute import prepare_env
    from kitctl.data.plan import make_plan

    for k in ("HF_HOME", "HF_DATASETS_CACHE", "HF_HUB_CACHE", "HF_ENDPOINT", "TIKTOKEN_CACHE_DIR"):
        monkeypatch.delenv(k, raising=False)
    cfg = KitConfig(data_root=tmp_path, mirrors=Mirrors(hf_endpoint="https://hf-mirror.example"))
    prepare_env(make_plan(cfg, "fineweb10B", stream=True))
    assert os.environ["HF_HOME"] == str(tmp_path / "hf")
    assert os.environ["HF_DATASETS_CACHE"].startswith(str(tmp_path))
    assert os.environ["HF_ENDPOINT"] == "https://hf-mirror.example"
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "tiktoken")


@pytest.mark.slow
def test_fast_encoding_cache_is_the_same_encoding(gpt2_bpe_dir, tmp_path):
    """Second start builds the Encoding from kitctl's JSON rank cache: it must encode exactly like tiktoken."""
    code = ("import sys, tiktoken; from kitctl.data import tokenizer as tk\n"
            "e = tk.get_encoding(); ref = tiktoken.get_encoding('gpt2')\n"
            "texts = ['hello world', 'naïve 日本 🙂 <|endoftext|>', 'x' * 999, \"it's 12,345.6 \\n\\n\\t ok\"]\n"
            "assert all(e.encode_ordinary(t) == ref.encode_ordinary(t) for t in texts)\n"
            "assert e.eot_token == 50256 and e.n_vocab == 50257 and e.decode_single_token_bytes(31373) == b'hello'\n"
            "print('ok')")
    tk.seed_cache(gpt2_bpe_dir, tmp_path / "c")
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "c")}
    for _ in range(2):   # first run writes the cache, second reads it
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    assert list((tmp_path / "c").glob("kitctl-gpt2-ranks-*.json"))


@pytest.mark.slow
def test_stream_mode_reads_through_a_filesystem(tiktoken_cache, tmp_path):
    """--stream: files are opened through an fsspec filesystem (HfFileSystem for the hub; a local one here),
    never copied into a cache; the hub paths name the pinned revision."""
    import fsspec
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    r = load_recipe("edu_fineweb10B")
    files = ["sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet"]
    src = hf_source(r, stream=True, list_files=lambda repo, rev: files + ["sample/100BT/x.parquet"],
                    revision="0" * 40)
    assert src.files == [f"datasets/HuggingFaceFW/fineweb-edu@{'0' * 40}/{f}" for f in files]
    assert type(src.fs).__name__ == "HfFileSystem"
    docs = [f"doc {i} ünï" for i in range(9)]
    pq.write_table(pa.table({"text": docs[:4]}), tmp_path / "a.parquet", row_group_size=3)
    pq.write_table(pa.table({"text": docs[4:]}), tmp_path / "b.parquet", row_group_size=3)
    local = FilesSource([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")],
                        filesystem=fsspec.filesystem("file"))
    local.check()
    from kitctl.data.tokenize import make_shards

    run = {"shard_size": 10, "first_shard_size": 10, "source_fingerprint": local.fingerprint()}
    make_shards(local, tmp_path / "out", "s", run, workers=2)
    assert read_dir(tmp_path / "out", "s") == reference_files(enc, docs, "s", 10)


@pytest.mark.slow
def test_embedded_bpe_files_make_tiktoken_work_offline(tmp_path):
    """No tokenizer_dir configured: the kit seeds tiktoken's cache from its own copy (kitctl/assets/gpt2-bpe),
    so a fresh process with no network and an empty cache still gets the real GPT-2 encoding."""
    cache = tmp_path / "tiktoken"
    code = ("import socket\n"
            "def no_net(*a, **k): raise OSError('network disabled in this test')\n"
            "socket.socket.connect = no_net\n"
            "from pathlib import Path\n"
            "from kitctl.data import tokenizer as tk\n"
            f"sums = tk.setup_tiktoken(None, Path({str(cache)!r}))\n"
            "e = tk.get_encoding()\n"
            "print(sums['vocab.bpe'][:12], e.encode_ordinary('hello world<|endoftext|>'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "TIKTOKEN_CACHE_DIR": ""})
    assert r.returncode == 0, r.stderr
    assert "1ce1664773c5" in r.stdout
    assert "[31373, 995, 27, 91, 437, 1659, 5239, 91, 29]" in r.stdout   # GPT-2 ids; <|endoftext|> as text
    assert len(list(cache.iterdir())) >= 2                                 # the two files, under tiktoken's names


def _kitctl_env(tmp_path, gpt2_bpe_dir):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "HF_", "TIKTOKEN"))}
    return {**e, "KIT_DATA_ROOT": str(tmp_path / "root"), "KIT_RUNTIME": "native",
            "KIT_TOKENIZER_DIR": str(gpt2_bpe_dir), "COLUMNS": "200"}


@pytest.mark.slow
def test_hellaswag_out_honoured_and_different_file_refused_without_force(tmp_path, gpt2_bpe_dir):
    exs = _hellaswag_jsonl(tmp_path / "hs.jsonl")
    env = _kitctl_env(tmp_path, gpt2_bpe_dir)

    def run(*args):
        return kitctl_proc.run(["data", "hellaswag", "--source", tmp_path / "hs.jsonl", *args], env=env, timeout=120)

    out = tmp_path / "evals"
    r = run("--out", out, "--dry-run")
    assert r.returncode == 0 and f"output       {out / 'hellaswag_val.bin'}" in r.stdout, r.stdout
    assert not out.exists()
    r = run("--out", out)
    assert r.returncode == 0, r.stderr
    assert read_eval_file(out / "hellaswag_val.bin")[0]["n"] == 2
    assert not (tmp_path / "root" / "hellaswag").exists()          # not the default place
    first = (out / "hellaswag_val.bin").read_bytes()
    r = run("--out", out)                                           # same content: fine, untouched
    assert r.returncode == 0 and "already up to date" in r.stdout
    (tmp_path / "hs.jsonl").write_text(json.dumps(exs[0]) + "\n")   # now one example: a different file
    r = run("--out", out)
    assert r.returncode == 2 and "already exists and differs" in r.stderr and "--force" in r.stderr
    assert (out / "hellaswag_val.bin").read_bytes() == first
    r = run("--out", out, "--force")
    assert r.returncode == 0 and "replaced" in r.stdout, r.stderr
    assert read_eval_file(out / "hellaswag_val.bin")[0]["n"] == 1


@pytest.mark.parametrize("case", ["label", "parquet", "special", "endings"])
def test_hellaswag_bad_input_clear_errors(tiktoken_cache, tmp_path, case):
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    good = {"ctx": "A man", "label": 0, "endings": ["a", "b", "c", "d"]}
    src = tmp_path / "hs.jsonl"
    if case == "parquet":
        src = tmp_path / "hs.parquet"
        pq.write_table(pa.table({"ctx": ["x" * 50] * 100, "n": list(range(100))}), src)
        want = "is not a HellaSwag jsonl"
    else:
        bad = {"label": dict(good, label=4), "special": dict(good, endings=["a", "b <|endoftext|>", "c", "d"]),
               "endings": dict(good, endings=["a", "b"])}[case]
        src.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
        want = {"label": "hs.jsonl:3: label 4 is not 0, 1, 2 or 3",
                "special": "hs.jsonl:3: cannot tokenize this example as llm.c's hellaswag.py does",
                "endings": "hs.jsonl:3: ctx must be a string and endings a list of 4 strings"}[case]
    with pytest.raises(KitError) as e:
        hs.build(src, tmp_path / "o.bin", enc)
    assert want in e.value.message and e.value.exit_code == 2 and e.value.hint
    assert not (tmp_path / "o.bin").exists() and not list(tmp_path.glob(".*tmp"))


def test_tokenizer_bin_temp_file_removed_when_writing_fails(tiktoken_cache, tmp_path, monkeypatch):
    import tiktoken

    def disk_full(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tk.os, "replace", disk_full)
    with pytest.raises(OSError):
        tk.write_tokenizer_bin(tmp_path / "gpt2_tokenizer.bin", tiktoken.get_encoding("gpt2"))
    assert list(tmp_path.iterdir()) == []


def test_hellaswag_pin_is_the_upstream_git_blob(tmp_path, monkeypatch):
    """No sha256 of hellaswag_val.jsonl is published; its git blob id in rowanz/hellaswag is the content pin
    (datasets/hellaswag.yaml). A file with the right count but other bytes is named as not the pinned one."""
    import subprocess

    from kitctl.data import hellaswag as hs
    from kitctl.data.recipes import load_recipe

    f = tmp_path / "hellaswag_val.jsonl"
    f.write_text("".join(json.dumps({"ctx": f"c{i}", "endings": ["a", "b", "c", "d"], "label": 0}) + "\n"
                         for i in range(10042)))
    blob = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
    assert hs.git_blob_id(f) == blob                                   # the same id git computes
    recipe = load_recipe("hellaswag")
    assert recipe.git_blob == "0f5ee25d72216f12317d5d8a7b92deafa423d81e" and recipe.examples == 10042
    warning = hs.pin_warning(f, 10042)
    assert warning and "git blob" in warning and blob[:12] in warning and recipe.url in warning
    monkeypatch.setattr(hs, "load_recipe", lambda name: recipe.model_copy(update={"git_blob": blob}))
    assert hs.pin_warning(f, 10042) is None
