"""`kitctl data` against bad input and bad luck (issue 11's data classes, issue 12's missing image): each case
asserts the exit code, a message with what/why/fix (never "internal error"), and the files after (no partial
file under a final name, old data intact). Real tiktoken, pyarrow, real OS limits; no network."""
from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import kitctl_proc

from data_ref import EDGE_DOCS, read_dir, reference_files
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.data_folder import DataFolder, read_header
from kitctl.core.data_manifest import MANIFEST, DataManifest, RunInfo, start_over_hint
from kitctl.data import recipes
from kitctl.data import tokenizer as tk
from kitctl.data import tokenize as tz
from kitctl.data.container import choose_runtime
from kitctl.data.execute import execute
from kitctl.data.plan import make_plan
from kitctl.core.llmc_files import HEADER_BYTES
from kitctl.data.sources import MemorySource

pytestmark = pytest.mark.usefixtures("restore_environ")   # plan.execute sets HF_HOME, TIKTOKEN_CACHE_DIR, ...




def kitctl(env, *args, preexec_fn=None, timeout=300):
    if preexec_fn is None:
        return kitctl_proc.run(["data", *args], env=env, timeout=timeout)
    return subprocess.run([sys.executable, "-m", "kitctl", "data", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec_fn)


def bad_input(r, want: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert want in r.stderr and "hint:" in r.stderr, r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr


def temps(folder: Path) -> list[Path]:
    return [*folder.glob(".tmp-*"), *folder.glob(".*.tmp")]


def docs_file(path: Path, n: int = 400) -> list[str]:
    docs = [f"doc {i}: " + EDGE_DOCS[i % len(EDGE_DOCS)] for i in range(n)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return docs


def run_for(shard_size, fingerprint="t"):
    return {"shard_size": shard_size, "first_shard_size": shard_size, "source_fingerprint": fingerprint}


# ------------------------------------------------------------------------------ resume identity by content
@pytest.mark.slow
def test_changed_input_with_the_same_name_size_and_mtime_is_not_resumed(env, tmp_path):
    src = tmp_path / "in.jsonl"
    docs_file(src)
    out = tmp_path / "o"
    assert kitctl(env, src, "--out", out, "--shard-size", 2000).returncode == 0
    before = read_dir(out, "in")
    st = src.stat()
    raw = bytearray(src.read_bytes())
    raw[raw.index(b"Hello")] = ord("J")                  # same size, same name ...
    src.write_bytes(bytes(raw))
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))   # ... same mtime
    r = kitctl(env, src, "--out", out, "--shard-size", 2000)
    bad_input(r, "already holds shards made with a different config")
    assert "source_fingerprint" in r.stderr and "already complete" not in r.stdout
    assert read_dir(out, "in") == before


# ------------------------------------------------------------------------------------- tokenizer files
@pytest.mark.slow
def test_damaged_tokenizer_table_is_detected_and_rebuilt(gpt2_bpe_dir, tmp_path):
    cache = tmp_path / "c"
    code = ("import json, tiktoken; from pathlib import Path; from kitctl.data import tokenizer as tk\n"
            f"tk.setup_tiktoken(Path({str(gpt2_bpe_dir)!r}), Path({str(cache)!r}))\n"
            "e = tk.get_encoding(); ref = tiktoken.get_encoding('gpt2')\n"
            "t = 'hello world, naïve 日本 🙂 <|endoftext|> ' * 3\n"
            "print(e.encode_ordinary(t) == ref.encode_ordinary(t))")

    def run():
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "TIKTOKEN_CACHE_DIR": str(cache)})
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    assert run() == "True"
    table = tk.ranks_table_path(cache)
    good = table.read_text()
    d = json.loads(good)
    d["ranks"][100], d["ranks"][200] = d["ranks"][200], d["ranks"][100]   # valid JSON, wrong tokens
    for damaged in (json.dumps(d), good[: len(good) // 2], ""):
        table.write_text(damaged)
        assert run() == "True"                   # not used: the encoding is rebuilt from the files ...
        assert table.read_text() == good         # ... and the table rewritten, checksum and all


@pytest.mark.slow
def test_zero_byte_or_damaged_gpt2_tokenizer_bin_is_replaced(env, tmp_path, tinyshakespeare):
    root = tmp_path / "root"
    root.mkdir()
    tb = root / "gpt2_tokenizer.bin"
    for damaged in (b"", b"\0" * tk.TOKENIZER_BIN_SIZE):
        tb.write_bytes(damaged)
        r = kitctl(env, tinyshakespeare, "--out", tmp_path / "o", "--workers", 0)
        assert r.returncode == 0, r.stderr
        assert "is damaged" in r.stdout and f"wrote {tb}" in r.stdout
        assert hashlib.sha256(tb.read_bytes()).hexdigest() == tk.TOKENIZER_BIN_SHA256
        tk.read_tokenizer_bin(tb)
    r = kitctl(env, tinyshakespeare, "--out", tmp_path / "o")
    assert r.returncode == 0 and "gpt2_tokenizer.bin" not in r.stdout    # a good one is kept, silently


def test_tokenizer_bin_constant_matches_what_is_written(tiktoken_cache, tmp_path):
    import tiktoken

    data = tk.tokenizer_bin_bytes(tiktoken.get_encoding("gpt2"))
    assert len(data) == tk.TOKENIZER_BIN_SIZE and hashlib.sha256(data).hexdigest() == tk.TOKENIZER_BIN_SHA256


# ------------------------------------------------------------------------------------ folders and inputs
@pytest.mark.slow
def test_output_folder_inside_the_input_folder(env, tmp_path, tiktoken_cache):
    d = tmp_path / "corpus"
    d.mkdir()
    docs = docs_file(d / "a.jsonl")
    bad_input(kitctl(env, d, "--out", d / "shards"), "is inside the input folder")
    assert not (d / "shards").exists()
    # a glob may point at the same tree: the output folder's own files (manifest.json, ...) are left out
    pattern = str(d / "**" / "*.json*")
    for _ in range(2):
        r = kitctl(env, pattern, "--out", d / "shards", "--name", "g", "--shard-size", 2000)
        assert r.returncode == 0, r.stderr
    assert "already complete" in r.stdout
    import tiktoken

    assert read_dir(d / "shards", "g") == reference_files(tiktoken.get_encoding("gpt2"), docs, "g", 2000)


@pytest.mark.slow
def test_damaged_manifest_gives_one_hint_everywhere(env, tmp_path, tinyshakespeare):
    out = tmp_path / "o"
    assert kitctl(env, tinyshakespeare, "--out", out, "--shard-size", 50000).returncode == 0
    hint = start_over_hint(out)
    shards = read_dir(out, "input")
    for damage in ("{not json", '{"format": "llmc-kit/data", "schema_version": 1, "name": 5}', "[]"):
        (out / MANIFEST).write_text(damage)
        for args in ((tinyshakespeare, "--out", out, "--shard-size", 50000), ("verify", out)):
            r = kitctl(env, *args)        # exit 1: not a bad option, a damaged folder (the hint says what to do)
            assert r.returncode == 1 and str(out / MANIFEST) in r.stderr, r.stderr
            assert hint in " ".join(r.stderr.split()) and "internal error" not in r.stderr, r.stderr
    (out / MANIFEST).unlink()                        # and with the manifest gone, the same fix
    r = kitctl(env, tinyshakespeare, "--out", out, "--shard-size", 50000)
    assert r.returncode == 1 and "but no manifest.json" in r.stderr and hint in " ".join(r.stderr.split())
    assert read_dir(out, "input") == shards             # nothing was overwritten
    (out / MANIFEST).write_text('{"format": "llmc-kit/data", "schema_version": 99, "name": "x", "run": {}}')
    with pytest.raises(KitError, match="newer kitctl"):
        DataFolder(out).manifest()


def test_recipe_typo_and_yaml_bomb_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(recipes, "RECIPES_DIR", tmp_path)
    (tmp_path / "mine.yaml").write_text("kind: text\nprefix: mine\nurl: https://x\nsplit_onn: '\\n'\n")
    with pytest.raises(ConfigError) as e:
        recipes.load_recipe("mine")
    assert "split_onn: unknown key" in e.value.message
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    (tmp_path / "bomb.yaml").write_text(bomb)
    with pytest.raises(ConfigError, match="YAML bomb"):
        recipes.load_recipe("bomb")


# -------------------------------------------------------------------------------- manifest writes, retries
@pytest.mark.slow
def test_manifest_is_saved_in_batches_not_after_every_shard(tmp_path, tiktoken_cache, monkeypatch):
    saves = []
    real = DataFolder.save_manifest
    monkeypatch.setattr(DataFolder, "save_manifest", lambda self, m: (saves.append(len(m.shards)), real(self, m))[1])
    docs = [f"d{i} " + "word " * (i % 50) for i in range(3000)]
    s = tz.make_shards(MemorySource(docs), tmp_path, "x", run_for(40), workers=2, batch_rows=64)
    assert s.total_shards > 1500
    assert len(saves) < s.total_shards / 5, f"{len(saves)} manifest writes for {s.total_shards} shards"
    written = sum(saves)                  # shard entries serialized in all: linear, not quadratic
    assert written < 40 * s.total_shards
    m = DataFolder(tmp_path).manifest()
    assert m.complete and len(m.shards) == s.total_shards and DataFolder(tmp_path).verify()[1] == []
    import tiktoken

    assert read_dir(tmp_path, "x") == reference_files(tiktoken.get_encoding("gpt2"), docs, "x", 40)


class _Boom(MemorySource):
    """A source that fails after ``after`` batches (a bad line, a dying disk)."""

    def __init__(self, docs, after):
        super().__init__(docs)
        self.after = after

    def iter_batches(self, start_doc=0, batch_rows=64):
        for i, b in enumerate(super().iter_batches(start_doc, batch_rows)):
            if i == self.after:
                raise KitError("line 4711 is not valid JSON", exit_code=2)
            yield b


@pytest.mark.slow
def test_failed_run_records_its_shards_and_does_not_block_the_retry(tmp_path, tiktoken_cache):
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    docs = [f"d{i} " + "word " * (i % 50) for i in range(2000)]
    with pytest.raises(KitError, match="line 4711"):
        tz.make_shards(_Boom(docs, after=10), tmp_path, "x", run_for(300, "v1"), workers=2, batch_rows=64)
    m = DataFolder(tmp_path).manifest()
    assert not m.complete and m.run.failed and "line 4711" in m.run.failed
    assert {s.file for s in m.shards} == {p.name for p in tmp_path.glob("x_*.bin")} and len(m.shards) > 3
    assert not temps(tmp_path)
    # the same input again: continues where it failed
    s = tz.make_shards(MemorySource(docs), tmp_path, "x", run_for(300, "v1"), workers=2, batch_rows=64)
    assert s.resumed_from == len(m.shards) and read_dir(tmp_path, "x") == reference_files(enc, docs, "x", 300)
    # the input fixed (a different fingerprint) after a failure: starts over instead of refusing
    with pytest.raises(KitError):
        tz.make_shards(_Boom(docs, after=5), tmp_path / "b", "x", run_for(300, "v1"), workers=0, batch_rows=64)
    said = []
    fixed = docs[:1000]
    s = tz.make_shards(MemorySource(fixed), tmp_path / "b", "x", run_for(300, "v2"), workers=0, log=said.append)
    assert s.resumed_from == 0 and any("starts over" in x for x in said)
    assert read_dir(tmp_path / "b", "x") == reference_files(enc, fixed, "x", 300)
    # a run stopped before its first shard binds nothing either
    (tmp_path / "c").mkdir()
    DataFolder(tmp_path / "c").save_manifest(DataManifest(dir=tmp_path / "c", name="x", run=RunInfo(**run_for(300, "v1"))))
    tz.make_shards(MemorySource(fixed), tmp_path / "c", "x", run_for(500, "v2"), workers=0)
    assert read_dir(tmp_path / "c", "x") == reference_files(enc, fixed, "x", 500)
    # but a folder whose run did not fail is not thrown away for a different config
    with pytest.raises(KitError, match="different config") as e:
        tz.make_shards(MemorySource(fixed), tmp_path / "c", "x", run_for(700, "v2"), workers=0)
    assert e.value.exit_code == 2


# ------------------------------------------------------------------------------------- disk preflight
def _cjk_docs(n: int) -> list[str]:
    base = "日本語の文章は一文字が三バイトで、トークンも多い。中文的句子也是这样，每个字都很贵。한국어 문장도 마찬가지입니다。"
    return [f"{i}: " + base * (1 + i % 7) for i in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_disk_estimate_from_a_sample_holds_for_cjk_text(tmp_path, gpt2_bpe_dir, monkeypatch, fmt):
    """CJK text gives ~0.6 tokens a byte, twice the old fixed 1/3: the sample-based estimate still covers what
    is written (and refuses a disk that the old estimate would have passed)."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "root" / "tiktoken"))
    docs = _cjk_docs(12000)
    src = tmp_path / f"cjk.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.table({"text": docs}), src, row_group_size=1500)
    else:
        src.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs))
    text_bytes = sum(len(d.encode()) for d in docs)
    assert text_bytes > 4 << 20                                  # big enough to be sampled, not counted
    cfg = KitConfig(data_root=tmp_path / "root", tokenizer_dir=gpt2_bpe_dir)
    plan = make_plan(cfg, str(src), shard_size=10**6, workers=2)
    assert plan.estimate is not None and not plan.estimate.exact
    old_need = 2 * text_bytes / 3 + HEADER_BYTES
    free = int(old_need * 1.3)                                    # the old estimate fit this disk
    with pytest.raises(KitError, match="not enough disk space"):
        execute(plan, free_fn=lambda p: free, log=lambda s: None)
    assert not list((tmp_path / "root").rglob("*.bin"))
    s = execute(make_plan(cfg, str(src), shard_size=10**6, workers=2), free_fn=lambda p: 10**12, log=lambda s: None)
    written = sum(p.stat().st_size for p in plan.out_dir.glob("cjk_*.bin")) + (plan.out_dir / MANIFEST).stat().st_size
    assert s.total_tokens > 0.5 * text_bytes                      # really ~0.6 tokens a byte
    assert plan.est_tokens >= s.total_tokens and plan.need[plan.out_dir] >= written > free
    assert plan.est_tokens < 1.3 * s.total_tokens                 # honest, not just huge


@pytest.mark.slow
def test_disk_estimate_counts_shard_headers_and_manifest(tmp_path, gpt2_bpe_dir, tinyshakespeare, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "root" / "tiktoken"))
    cfg = KitConfig(data_root=tmp_path / "root", tokenizer_dir=gpt2_bpe_dir)
    plan = make_plan(cfg, str(tinyshakespeare), shard_size=1025, workers=0)
    assert plan.estimate.exact                                        # a small input is counted, not guessed
    s = execute(plan, free_fn=lambda p: 10**12, log=lambda s: None)
    assert plan.est_tokens == s.total_tokens and s.total_shards == -(-s.total_tokens // 1025) > 300
    written = sum(p.stat().st_size for p in plan.out_dir.iterdir() if p.is_file())
    assert written > 2 * s.total_tokens + 300 * HEADER_BYTES           # headers are a third of it here
    assert plan.need[plan.out_dir] >= written


@pytest.mark.slow
def test_full_disk_leaves_no_partial_file_and_resumes(env, tmp_path, tinyshakespeare):
    """A real OS write limit (RLIMIT_FSIZE: the write fails like ENOSPC, mid-file): exit 1 with what/why/fix,
    no partial file under a final name, no temp file, every finished shard kept, and the same command resumes."""
    out = tmp_path / "o"
    args = [tinyshakespeare, "--out", out, "--shard-size", 120_000, "--workers", 2]

    def limit():   # no file may grow past 200 KB: a shard is 241,024 bytes, the manifest a few hundred
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    # the tokenizer files on the data root (up to 1 MB) are made first, without the limit
    assert kitctl(env, "tinyshakespeare", "--source", tinyshakespeare, "--out", tmp_path / "seed").returncode == 0
    r = kitctl(env, *args, preexec_fn=limit)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "failed: File too large" in r.stderr and "re-run the same command" in r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    # the first shard could not be written: a first run that made no shard leaves nothing at all (no partial
    # file, no temp file, no lock file, no manifest of nothing: issue 20), so the re-run starts clean
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    r = kitctl(env, *args)
    assert r.returncode == 0, r.stderr
    for p in out.glob("*.bin"):
        read_header(p)
    assert kitctl(env, "verify", out).returncode == 0


# --------------------------------------------------------------------------- where it runs (issue 12)
@pytest.mark.slow
def test_default_docker_runtime_falls_back_to_native_without_the_image(env, tmp_path, tinyshakespeare):
    cfg = KitConfig(image="llmc-kit-no-such-image")
    assert choose_runtime(cfg, None, present=lambda ref: True) == ("docker", None)
    rt, note = choose_runtime(cfg, None, present=lambda ref: False)
    assert rt == "native" and "no llmc-kit-no-such-image:data image" in note and "kitctl build --target data" in note
    rt, note = choose_runtime(cfg, None, present=lambda ref: None)
    assert rt == "native" and "Docker is not usable" in note
    with pytest.raises(ConfigError) as e:
        choose_runtime(cfg, "docker", present=lambda ref: False)
    assert "kitctl build --target data" in e.value.hint and "--runtime native" in e.value.hint
    assert choose_runtime(cfg, "docker", dry_run=True, present=lambda ref: False)[0] == "docker"
    assert choose_runtime(cfg, "native", present=lambda ref: 1 / 0) == ("native", None)   # Docker never asked
    # end to end: the default runtime, an image that does not exist -> tokenized natively, said in one line
    e2 = {k: v for k, v in env.items() if k != "KIT_RUNTIME"}
    e2["KIT_IMAGE"] = "llmc-kit-no-such-image"
    r = kitctl(e2, "tinyshakespeare", "--source", tinyshakespeare)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("tokenizing natively") == 1 and "Unable to find image" not in r.stdout + r.stderr
    assert "done: 338,028 tokens, 2 shards" in r.stdout
    bad_input(kitctl(e2, "tinyshakespeare", "--source", tinyshakespeare, "--runtime", "docker"),
              "kitctl build --target data")
