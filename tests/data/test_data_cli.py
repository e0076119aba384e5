"""`kitctl data` end to end in a subprocess (real tiktoken, pyarrow; no network): recipes, local inputs,
verify, dry-run, bad inputs with their messages, refusal of a mismatched folder, kill + resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import kitctl_proc

from data_ref import EDGE_DOCS, read_dir, reference_files
from kitctl.core.data_folder import DataFolder, read_header



pytestmark = pytest.mark.usefixtures("restore_environ")   # plan.execute sets HF_HOME, TIKTOKEN_CACHE_DIR, ...



def kitctl(env, *args, cwd=None, timeout=300):
    return kitctl_proc.run(["data", *args], env=env, cwd=cwd, timeout=timeout)


@pytest.mark.slow
def test_tinyshakespeare_recipe_then_verify(env, tmp_path, tinyshakespeare):
    r = kitctl(env, "tinyshakespeare", "--source", tinyshakespeare)
    assert r.returncode == 0, r.stderr
    root = tmp_path / "root"
    out = root / "tinyshakespeare"
    assert "done: 338,028 tokens, 2 shards" in r.stdout
    # the llm.c split: 32,768 val tokens, the rest in one train shard
    assert read_header(out / "tinyshakespeare_val_000000.bin") == 32768
    assert read_header(out / "tinyshakespeare_train_000001.bin") == 305260
    assert (root / "gpt2_tokenizer.bin").is_file()
    m = DataFolder(out).manifest()
    assert m.complete and m.run.first_shard_size == 32768
    assert m.run.tokenizer["vocab.bpe"] == "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
    # no HF / tiktoken cache outside the data root
    assert (root / "tiktoken").is_dir()
    r = kitctl(env, "verify", out)
    assert r.returncode == 0 and "ok:" in r.stdout and "338,028 tokens" in r.stdout
    assert "encoder: gigatoken 0.10.0 (identical to tiktoken on the run's first 256 documents" in r.stdout
    r = kitctl(env, "tinyshakespeare", "--source", tinyshakespeare)
    assert r.returncode == 0 and "already complete" in r.stdout
    p = out / "tinyshakespeare_train_000001.bin"
    b = bytearray(p.read_bytes())
    b[5000] ^= 0xFF
    p.write_bytes(bytes(b))
    r = kitctl(env, "verify", out)
    assert r.returncode == 1 and "sha256" in r.stdout and "1 problem(s)" in r.stderr
    assert "re-run the same `kitctl data` command" in r.stderr
    r = kitctl(env, "tinyshakespeare", "--source", tinyshakespeare)      # ... as the hint says, repairs it
    assert r.returncode == 0, r.stderr
    assert "tinyshakespeare_train_000001.bin: sha256 differs from the manifest" in r.stdout
    assert "resumed at shard 1" in r.stdout
    assert kitctl(env, "verify", out).returncode == 0


@pytest.mark.slow
def test_local_files_folder_glob_and_order(env, tmp_path, tiktoken_cache):
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    d = tmp_path / "in"
    d.mkdir()
    docs_a, docs_b = EDGE_DOCS[:6] * 3, EDGE_DOCS[6:] * 3
    # several row groups, read in file order then sorted file names
    pq.write_table(pa.table({"id": list(range(len(docs_a))), "text": docs_a}), d / "a.parquet", row_group_size=2)
    (d / "b.jsonl").write_text("".join(json.dumps({"text": t, "x": 1}) + "\n" for t in docs_b))
    (d / "c.txt").write_text("a whole\n\nfile is one document")
    r = kitctl(env, d, "--out", tmp_path / "o1", "--name", "mine", "--shard-size", 1025, "--workers", 2)
    assert r.returncode == 0, r.stderr
    want = reference_files(enc, docs_a + docs_b + ["a whole\n\nfile is one document"], "mine", 1025)
    assert len(want) >= 3 and read_dir(tmp_path / "o1", "mine") == want
    r = kitctl(env, str(d / "*.parquet"), "--out", tmp_path / "o2", "--shard-size", 1025)
    assert r.returncode == 0, r.stderr
    want = reference_files(enc, docs_a, "in", 1025)                                    # prefix: the folder name
    assert len(want) >= 2 and read_dir(tmp_path / "o2", "in") == want


@pytest.mark.slow
def test_dry_run_prints_plan_and_docker_command(env, tmp_path, tinyshakespeare):
    r = kitctl(env, "tinyshakespeare", "--source", tinyshakespeare, "--dry-run", "--runtime", "docker")
    assert r.returncode == 0, r.stderr
    root = tmp_path / "root"
    out = r.stdout
    assert "docker run --rm" in out and f"--user {os.getuid()}:{os.getgid()}" in out
    assert f"-v {root}:/data:rw" in out and "HF_HOME=/data/hf" in out
    assert f"-v {tinyshakespeare.parent}:/source:ro" in out and f"--source /source/{tinyshakespeare.name}" in out
    assert "kitctl data tinyshakespeare --out /data/tinyshakespeare" in out and "--runtime native" in out
    assert not (root / "tinyshakespeare").exists()           # a dry run writes nothing
    r = kitctl(env, "fineweb10B", "--dry-run", "--runtime", "native")
    assert r.returncode == 0 and "HuggingFaceFW/fineweb@9767af12bf8f0f7d3c91e0345b89bc6b9cbe1a94" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing", "no_text_parquet", "no_text_jsonl", "bad_parquet", "unknown"])
def test_bad_inputs_have_clear_errors(env, tmp_path, case):
    if case == "missing":
        arg, want = tmp_path / "nope.parquet", "does not exist"
    elif case == "no_text_parquet":
        arg = tmp_path / "x.parquet"
        pq.write_table(pa.table({"content": ["a", "b"]}), arg)
        want = "has no 'text' column (columns: content)"
    elif case == "no_text_jsonl":
        arg = tmp_path / "x.jsonl"
        arg.write_text('{"body": "a"}\n')
        want = "x.jsonl:1: no 'text' field (has: body)"
    elif case == "bad_parquet":
        arg = tmp_path / "x.parquet"
        arg.write_bytes(b"this is not parquet at all" * 10)
        want = "cannot read"
    else:
        arg, want = "fineweb7B", "unknown dataset 'fineweb7B'"
    r = kitctl(env, arg, "--out", tmp_path / "o")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert want in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_mismatched_folder_refused(env, tmp_path, tinyshakespeare):
    out = tmp_path / "o"
    assert kitctl(env, tinyshakespeare, "--out", out, "--shard-size", 50000).returncode == 0
    r = kitctl(env, tinyshakespeare, "--out", out, "--shard-size", 60000)
    assert r.returncode == 2
    assert "different config" in r.stderr and "shard_size: folder has 50000, this run wants 60000" in r.stderr


@pytest.mark.slow
def test_disk_too_small_refused(tmp_path, tinyshakespeare, gpt2_bpe_dir, monkeypatch):
    from kitctl.core.config import KitConfig
    from kitctl.data.execute import execute
    from kitctl.data.plan import make_plan
    from kitctl.core.errors import KitError

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tk"))
    cfg = KitConfig(data_root=tmp_path / "root", tokenizer_dir=gpt2_bpe_dir)
    plan = make_plan(cfg, str(tinyshakespeare), workers=0)
    assert 676_000 < plan.need[plan.out_dir] < 800_000          # ~1.1 MB text / 3 * 2 bytes (real: 676,050)
    assert plan.need[cfg.data_root.absolute()] > 2_500_000     # + gpt2_tokenizer.bin and the tiktoken cache
    with pytest.raises(KitError) as e:
        execute(plan, free_fn=lambda p: 100_000, log=lambda s: None)
    assert "not enough disk space" in e.value.message and "100.0 KB" not in e.value.message
    assert not list((tmp_path / "root").rglob("*_val_*.bin"))
    # the HF cache counts too when not streaming
    plan = make_plan(cfg, "fineweb10B")
    assert plan.need[cfg.hf_cache.absolute()] > 10**10
    assert cfg.hf_cache.absolute() not in make_plan(cfg, "fineweb10B", stream=True).need
    execute(make_plan(cfg, str(tinyshakespeare), workers=0), free_fn=lambda p: 10**9, log=lambda s: None)


def _big_corpus(path: Path, n_docs: int = 10000) -> list[str]:
    docs = [f"document {i}: " + " ".join(EDGE_DOCS[i % len(EDGE_DOCS)].split()[:30]) * (1 + i % 5)
            for i in range(n_docs)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return docs


def leftover_temps(folder: Path) -> list[Path]:
    """Temp files of the kit's atomic writer (kitctl.core.files) and of older kits."""
    return [*folder.glob(".tmp-*"), *folder.glob(".*.tmp")]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_resumes_byte_identical(env, tmp_path, tiktoken_cache, sig):
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    src = tmp_path / "docs.jsonl"
    docs = _big_corpus(src)
    out = tmp_path / "o"
    shard = 1025         # many small shards (each fsync'd) so the run lasts long enough to interrupt
    proc = subprocess.Popen([sys.executable, "-m", "kitctl", "data", str(src), "--out", str(out), "--name", "k",
                             "--shard-size", str(shard), "--workers", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if DataFolder(out).has_manifest() and len(DataFolder(out).manifest().shards) >= 5:
            break
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    m = DataFolder(out).manifest()
    assert not m.complete, "the run finished before it could be interrupted"
    if sig != signal.SIGKILL:
        assert proc.returncode == 130 and "interrupted" in err and "re-run the same command" in err
        assert "Traceback" not in err
        # a stopped run records every shard it finished (saved on the way out, not only in batches)
        assert {s.file for s in m.shards} == {p.name for p in out.glob("k_*.bin")} and len(m.shards) >= 5
    else:
        assert proc.returncode == -9
    # nothing partial under a final name
    for p in out.glob("k_*.bin"):
        read_header(p)
    r = kitctl(env, src, "--out", out, "--name", "k", "--shard-size", shard, "--workers", 2)
    assert r.returncode == 0, r.stderr
    assert "resumed at shard" in r.stdout
    assert read_dir(out, "k") == reference_files(enc, docs, "k", shard)
    assert not leftover_temps(out)
    assert kitctl(env, "verify", out).returncode == 0


@pytest.mark.slow
def test_data_verify_and_tinyshakespeare_both_parse(env, tmp_path):
    r = kitctl(env, "verify", tmp_path / "nothing")
    assert r.returncode == 2 and "has no manifest.json" in r.stderr
    r = kitctl(env, "--help")
    assert r.returncode == 0 and "verify" in r.stdout


def test_space_already_used_by_a_resumed_run_is_not_counted_twice(tmp_path):
    from kitctl.core.config import KitConfig
    from kitctl.data.execute import _remaining_need
    from kitctl.data.plan import make_plan

    cfg = KitConfig(data_root=tmp_path)
    plan = make_plan(cfg, "fineweb10B")
    blob = cfg.hf_cache / "hub" / "datasets--HuggingFaceFW--fineweb" / "blobs" / "abc"
    blob.parent.mkdir(parents=True)
    with open(blob, "wb") as f:
        f.truncate(10**9)                      # sparse: 1 GB of "downloaded" parquet
    (plan.out_dir).mkdir(parents=True)
    with open(plan.out_dir / "fineweb_val_000000.bin", "wb") as f:
        f.truncate(2 * 10**8)
    left = _remaining_need(plan)
    assert left[cfg.hf_cache.absolute()] == plan.need[cfg.hf_cache.absolute()] - 10**9
    assert left[plan.out_dir] == plan.need[plan.out_dir] - 2 * 10**8


def _children(pid: int) -> list[int]:
    kids = []
    for t in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(x) for x in (t / "children").read_text().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_kill9_leaves_no_worker_holding_the_folder(env, tmp_path):
    """kill -9 of `kitctl data`: its tokenizer workers die with it and never hold the folder lock, so the
    same command re-run right away continues the folder (byte-identical to a clean run)."""
    import fcntl

    src = tmp_path / "docs.parquet"
    docs = [f"document {i}: " + " ".join(EDGE_DOCS[i % len(EDGE_DOCS)].split()[:30]) * (1 + i % 5)
            for i in range(10000)]
    pq.write_table(pa.table({"text": docs}), src, row_group_size=200)
    out = tmp_path / "o"
    args = [src, "--out", out, "--name", "k", "--shard-size", 1025, "--workers", 2, "--runtime", "native"]
    proc = subprocess.Popen([sys.executable, "-m", "kitctl", "data", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (DataFolder(out).has_manifest() and len(DataFolder(out).manifest().shards) >= 5):
        time.sleep(0.01)
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    proc.kill()
    proc.wait(timeout=60)
    assert not DataFolder(out).manifest().complete, "the run finished before it could be killed"
    with open(out / ".kitctl-data.lock") as f:      # free as soon as the main process is gone
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(f, fcntl.LOCK_UN)
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.01)
    assert not any(_alive(w) for w in workers), "tokenizer workers outlived the killed kitctl data"
    r = kitctl(env, *args)
    assert r.returncode == 0, r.stderr
    assert "resumed at shard" in r.stdout
    clean = tmp_path / "clean"
    assert kitctl(env, *args[:2], clean, *args[3:]).returncode == 0
    assert read_dir(out, "k") == read_dir(clean, "k")
    assert kitctl(env, "verify", out).returncode == 0


@pytest.mark.slow
def test_bad_shard_size_workers_and_empty_input_refused(env, tmp_path, tinyshakespeare):
    out = tmp_path / "o"
    assert kitctl(env, tinyshakespeare, "--out", out, "--workers", 0).returncode == 0   # 0 = in the main thread
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_text('{"text": ""}\n{"text": ""}\n')
    most = max(4, 2 * (os.cpu_count() or 1))          # kitctl.core.validate.workers
    for args, want in [(("--shard-size", 0), "--shard-size 0: must be between 1,025 and 2^31-1 tokens"),
                       (("--shard-size", -5), "--shard-size -5: must be between 1,025"),
                       (("--shard-size", 1024), "--shard-size 1024: must be between 1,025"),
                       (("--shard-size", 2**31), f"--shard-size {2**31}: must be between"),
                       (("--workers", -1), "--workers -1: must be >= 0"),
                       (("--workers", 1000), f"--workers 1000: must be between 0 and {most}"),
                       (("--workers", most + 1), f"--workers {most + 1}: must be between 0 and {most}")]:
        r = kitctl(env, tinyshakespeare, "--out", out, *args)
        assert r.returncode == 2 and want in r.stderr, (args, r.stdout, r.stderr)
        assert "already complete" not in r.stdout and "internal error" not in r.stderr
    for bad, want in [(tmp_path / "empty.txt", "holds no text (1 document(s), 0 bytes, all empty)"),
                      (tmp_path / "blank.jsonl", "holds no text (2 document(s)")]:
        r = kitctl(env, bad, "--out", tmp_path / "o-empty")
        assert r.returncode == 2 and want in r.stderr and "hint:" in r.stderr, (r.stdout, r.stderr)
        assert not (tmp_path / "o-empty").exists()                          # refused before writing anything
    r = kitctl(env, tinyshakespeare, "--out", out, "--shard-size", 12345)
    assert r.returncode == 2 and "shard_size: folder has 20000, this run wants 12345"   # the size the kit picked for ~338K tokens in r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before    # old data intact


@pytest.mark.slow
def test_disk_estimate_counts_repeated_parquet_text_and_is_refused_before_writing(tmp_path, gpt2_bpe_dir,
                                                                                   monkeypatch):
    """Dictionary-encoded (repeated) parquet text is far bigger than the parquet metadata says: a disk that
    fits that old estimate but not the real output is refused up front, before any file is written."""
    from kitctl.core.config import KitConfig
    from kitctl.data.execute import execute
    from kitctl.data.plan import make_plan
    from kitctl.core.errors import KitError

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "root" / "tiktoken"))
    src = tmp_path / "rep.parquet"
    docs = [f"doc {i % 40}: " + EDGE_DOCS[i % len(EDGE_DOCS)] * 3 for i in range(4000)]
    pq.write_table(pa.table({"text": docs}), src, row_group_size=1000)
    md = pq.ParquetFile(src).metadata
    old_estimate = 2 * sum(md.row_group(r).column(0).total_uncompressed_size for r in range(md.num_row_groups)) / 4.5
    cfg = KitConfig(data_root=tmp_path / "root", tokenizer_dir=gpt2_bpe_dir)
    plan = make_plan(cfg, str(src), shard_size=10**6, workers=0)
    free = 1_000_000
    assert old_estimate + 1024 < free                                   # the old estimate fit
    with pytest.raises(KitError) as e:
        execute(plan, free_fn=lambda p: free, log=lambda s: None)
    assert "not enough disk space" in e.value.message
    assert not [p for p in (tmp_path / "root").rglob("*") if p.is_file()]   # nothing written, no temp files
    s = execute(make_plan(cfg, str(src), shard_size=10**6, workers=0), free_fn=lambda p: 10**12,
                log=lambda s: None)
    written = sum(p.stat().st_size for p in plan.out_dir.glob("rep_*.bin"))
    assert written > free and plan.est_tokens >= s.total_tokens and plan.need[plan.out_dir] >= written


def _small_parquet(path: Path, reps: int = 7) -> Path:
    """~2.3M tokens of the shipped tinyshakespeare as a parquet of documents (the first user's small dataset)."""
    from kitctl.core import resources
    paras = [p for p in resources.share("datasets", "files", "tinyshakespeare.txt").read_text().split("\n\n")
             if p.strip()]
    docs = ["\n\n".join(paras[i:i + 20]) + f" [{r}]" for r in range(reps) for i in range(0, len(paras), 20)]
    pq.write_table(pa.table({"text": docs}), path)
    return path


@pytest.mark.slow
def test_small_dataset_gets_a_val_and_training_shards(env, tmp_path):
    """~2.3M tokens with the default 100M-token shards would be one val shard and no training data: the kit picks
    a shard size (said, and recorded as the run's shard_size in the manifest); another size on that folder says
    what differs and offers --fresh, which moves the old folder aside (nothing deleted)."""
    src = _small_parquet(tmp_path / "small.parquet")
    out = tmp_path / "o"
    r = kitctl(env, src, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "shard size 200,000 tokens: picked for ~" in r.stdout and "training shards" in r.stdout
    m = DataFolder(out).manifest()
    assert m.complete and m.run.shard_size == 200_000 and m.run.first_shard_size == 200_000
    assert len(m.val_files) == 1 and len(m.train_files) >= 10 and read_header(m.val_files[0]) == 200_000
    # another size on the same folder: what differs, and --fresh
    r = kitctl(env, src, "--out", out, "--shard-size", 300_000)
    assert r.returncode == 2 and "shard_size: folder has 200000, this run wants 300000" in r.stderr
    assert "--fresh" in " ".join(r.stderr.split())
    r = kitctl(env, src, "--out", out, "--shard-size", 300_000, "--fresh", "--dry-run")
    assert r.returncode == 0 and "would move to" in r.stdout and DataFolder(out).manifest().run.shard_size == 200_000
    r = kitctl(env, src, "--out", out, "--shard-size", 300_000, "--fresh")
    assert r.returncode == 0, r.stderr
    old = [p for p in tmp_path.iterdir() if p.name.startswith("o.old-")]
    assert len(old) == 1 and f"moved {out} aside to {old[0]}" in r.stdout
    assert DataFolder(old[0]).manifest().run.shard_size == 200_000 and not DataFolder(old[0]).verify()[1]      # kept whole
    assert DataFolder(out).manifest().run.shard_size == 300_000 and DataFolder(out).manifest().train_files


@pytest.mark.slow
def test_shard_size_that_leaves_no_training_data_is_refused_up_front(env, tmp_path, tinyshakespeare):
    """The shipped tinyshakespeare (~338K tokens) as a local file: --shard-size 1,000,000 would fill only the val
    shard: refused before anything is written, with the exact --shard-size; without it the kit picks one."""
    out = tmp_path / "o"
    r = kitctl(env, tinyshakespeare, "--out", out, "--shard-size", 1_000_000)
    assert r.returncode == 2 and not out.exists()
    err = " ".join(r.stderr.split())
    assert "no training shard would be left" in err and "pass --shard-size 20000" in err
    r = kitctl(env, tinyshakespeare, "--out", out)
    assert r.returncode == 0, r.stderr
    m = DataFolder(out).manifest()
    assert m.run.shard_size == 20_000 and len(m.train_files) >= 15


@pytest.mark.slow
def test_a_finished_folder_without_training_shards_is_not_done(env, tmp_path, monkeypatch):
    """A folder that ended with only a val shard (made by an older kit, or an estimate far too high) is a
    failure with the fix, never "done"."""
    from kitctl.core.config import load_config
    from kitctl.core.errors import KitError
    from kitctl.data.execute import execute
    from kitctl.data.plan import make_plan

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    src = _small_parquet(tmp_path / "small.parquet", reps=1)
    plan = make_plan(load_config(None), str(src), out=tmp_path / "o", workers=0)
    plan.shard_size = plan.first_shard_size = 100_000_000        # what the kit did before it picked sizes
    with pytest.raises(KitError) as e:
        execute(plan, log=lambda s: None)
    assert e.value.exit_code == 1 and "made no training shard" in e.value.message
    assert "--shard-size 20000 --fresh" in e.value.hint and "deletes nothing" in e.value.hint
    assert DataFolder(tmp_path / "o").manifest().complete and not DataFolder(tmp_path / "o").manifest().train_files


def _offline() -> list[str]:
    import shutil as _sh
    if _sh.which("unshare") is None or subprocess.run(["unshare", "-n", "true"]).returncode != 0:
        pytest.skip("unshare -n (a network namespace) is not available here")
    return ["unshare", "-n"]


@pytest.mark.slow
def test_failed_downloads_leave_no_empty_folders(env, tmp_path):
    """No network: `kitctl data hellaswag` and `kitctl build --runtime native` (llm.c's tarball) fail with the fix,
    and leave no empty hellaswag/ or native/llm.c/ behind on the data root."""
    root = tmp_path / "root"
    r = subprocess.run([*_offline(), sys.executable, "-m", "kitctl", "data", "hellaswag"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "--source" in r.stderr, r.stderr
    assert not (root / "hellaswag").exists()
    r = subprocess.run([*_offline(), sys.executable, "-m", "kitctl", "build", "--runtime", "native", "--arch", "75"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "--llmc-src" in r.stderr, r.stderr
    assert not (root / "native").exists()


def test_a_first_data_run_that_fails_leaves_no_lock_file(tmp_path, tiktoken_cache):
    from kitctl.data.sources import MemorySource
    from kitctl.data.tokenize import make_shards

    class Broken(MemorySource):
        def iter_batches(self, start_doc=0, batch_rows=64):
            raise OSError("the input went away")

    out = tmp_path / "new"
    with pytest.raises(Exception, match="went away"):
        make_shards(Broken(["a b c"] * 10), out, "x", {"shard_size": 4096, "source_fingerprint": "f"}, workers=0)
    assert not out.exists()


@pytest.mark.slow
def test_fresh_moves_only_a_data_folder(env, tmp_path, tinyshakespeare):
    """--fresh never moves a folder that `kitctl data` did not make (the data root itself, a folder of runs)."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = kitctl(env, tinyshakespeare, "--out", out, "--fresh")
    assert r.returncode == 2 and "is not one" in " ".join(r.stderr.split())
    assert (out / "notes.txt").read_text() == "mine" and not list(tmp_path.glob("mine.old-*"))
