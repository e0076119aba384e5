"""Shard layout and byte identity against an independent reference writer (always runs, also in CI)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from data_ref import EDGE_DOCS, read_dir, reference_files, token_stream
from kitctl.core.data_folder import DataFolder, read_header
from kitctl.core.data_manifest import DataManifest, RunInfo
from kitctl.core.llmc_files import shard_filename
from kitctl.data.sources import MemorySource
from kitctl.data.pool import tokenize_batch
from kitctl.data.tokenize import make_shards
from kitctl.core.errors import KitError
from kitctl.core.files import sha256_file


@pytest.fixture(scope="module")
def enc(tiktoken_cache):
    import tiktoken

    return tiktoken.get_encoding("gpt2")


def run_for(shard_size, first=None):
    return {"shard_size": shard_size, "first_shard_size": first or shard_size, "source_fingerprint": "t",
            "revision": None, "tokenizer": {"encoding": "gpt2"}}


def test_tokenize_batch_matches_encode_ordinary(enc):
    docs = EDGE_DOCS + ["lone surrogate \ud800 here"]
    toks, lens = tokenize_batch(docs)
    assert toks.dtype == np.uint16
    assert toks.tolist() == token_stream(enc, docs)
    assert lens.tolist() == [1 + len(enc.encode_ordinary(d)) for d in docs]
    # a literal <|endoftext|> is text, not the special token
    assert toks.tolist().count(50256) == len(docs)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("shard_size", [7, 64, 1000, 10**8])
def test_byte_identical_to_reference(tmp_path, enc, workers, shard_size):
    docs = EDGE_DOCS * 3
    s = make_shards(MemorySource(docs), tmp_path, "fw", run_for(shard_size), workers=workers, batch_rows=4)
    ref = reference_files(enc, docs, "fw", shard_size)
    got = read_dir(tmp_path, "fw")
    assert sorted(got) == sorted(ref)
    assert got == ref
    assert s.total_tokens == len(token_stream(enc, docs))


def test_doc_exactly_filling_a_shard_and_stream_ending_on_a_boundary(tmp_path, enc):
    docs = ["alpha beta", "gamma", "delta epsilon zeta", "eta"]
    lens = [1 + len(enc.encode_ordinary(d)) for d in docs]
    shard = lens[0] + lens[1]                      # doc 1 ends exactly at the end of shard 0
    make_shards(MemorySource(docs), tmp_path / "a", "x", run_for(shard), workers=0)
    got = read_dir(tmp_path / "a", "x")
    assert got == reference_files(enc, docs, "x", shard)
    assert np.frombuffer(got["x_val_000000.bin"][1024:], "<u2").tolist() == token_stream(enc, docs[:2])
    # the whole stream exactly one shard: no empty trailing file
    total = sum(lens)
    make_shards(MemorySource(docs), tmp_path / "b", "x", run_for(total), workers=0)
    assert list(read_dir(tmp_path / "b", "x")) == ["x_val_000000.bin"]


def test_oversized_document_spills_over_many_shards(tmp_path, enc):
    docs = ["short", "word " * 500, "tail"]        # ~500 tokens with shard size 64: ~8 shards
    make_shards(MemorySource(docs), tmp_path, "x", run_for(64), workers=2)
    got = read_dir(tmp_path, "x")
    assert len(got) > 7
    assert got == reference_files(enc, docs, "x", 64)
    names = sorted(got, key=lambda n: n[-10:])
    assert all(read_header(tmp_path / n) == 64 for n in names[:-1])


def test_first_shard_size(tmp_path, enc):
    docs = EDGE_DOCS
    make_shards(MemorySource(docs), tmp_path, "ts", run_for(100, first=37), workers=0)
    assert read_dir(tmp_path, "ts") == reference_files(enc, docs, "ts", 100, first_shard_size=37)


def test_random_corpus_many_batches(tmp_path, enc):
    rnd = random.Random(7)
    words = ["the", "data", "Ωmega", "日本", "🙂", "\n\n", "llm.c", "<|endoftext|>", "  ", "token"]
    docs = [" ".join(rnd.choice(words) for _ in range(rnd.randint(0, 80))) for _ in range(400)]
    make_shards(MemorySource(docs), tmp_path, "r", run_for(997), workers=2, batch_rows=7)
    assert read_dir(tmp_path, "r") == reference_files(enc, docs, "r", 997)


@pytest.mark.slow
def test_resume_from_every_shard_boundary_is_byte_identical(tmp_path, enc):
    docs = EDGE_DOCS * 2
    ref = reference_files(enc, docs, "x", 50)
    full = tmp_path / "full"
    make_shards(MemorySource(docs), full, "x", run_for(50), workers=0)
    m = DataFolder(full).manifest()
    for cut in (1, 3, len(m.shards) - 1):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        part = DataFolder(full).manifest()
        part.dir, part.shards, part.complete = d, part.shards[:cut], False
        for s in part.shards:
            (d / s.file).write_bytes((full / s.file).read_bytes())
        DataFolder(d).save_manifest(part)
        (d / ".x_train_000099.bin.tmp").write_bytes(b"partial")        # a leftover temp file
        s = make_shards(MemorySource(docs), d, "x", run_for(50), workers=2, batch_rows=3)
        assert s.resumed_from == cut
        assert read_dir(d, "x") == ref
        assert not list(d.glob(".*.tmp"))
        assert DataFolder(d).manifest().complete


def test_manifest_schema_and_load(tmp_path, enc):
    make_shards(MemorySource(EDGE_DOCS), tmp_path, "fineweb", run_for(100), dataset="fineweb10B", workers=0)
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["format"] == "llmc-kit/data" and raw["schema_version"] == 1 and raw["complete"] is True
    assert raw["shards"][0]["file"] == "fineweb_val_000000.bin" and raw["shards"][0]["split"] == "val"
    m = DataFolder(tmp_path).manifest()
    assert m.val_files == [tmp_path / "fineweb_val_000000.bin"]
    assert m.train_files[0].name == "fineweb_train_000001.bin"
    assert m.total_tokens == raw["total_tokens"] == sum(read_header(p) for p in m.val_files + m.train_files)
    assert m.llmc_args("/d") == ["-i", "/d/fineweb_train_*.bin", "-j", "/d/fineweb_val_*.bin"]
    _, problems = DataFolder(tmp_path).verify()
    assert problems == []


def test_verify_finds_corruption(tmp_path, enc):
    make_shards(MemorySource(EDGE_DOCS), tmp_path, "x", run_for(100), workers=0)
    p = tmp_path / "x_train_000001.bin"
    data = bytearray(p.read_bytes())
    data[1100] ^= 1
    p.write_bytes(bytes(data))
    (tmp_path / "x_train_000099.bin").write_bytes(b"")
    _, problems = DataFolder(tmp_path).verify()
    assert any("x_train_000001.bin: sha256" in q for q in problems)
    assert any("x_train_000099.bin" in q for q in problems)
    (tmp_path / "x_val_000000.bin").write_bytes(b"\0" * 100)
    _, problems = DataFolder(tmp_path).verify()
    assert any("shorter than llm.c's 1024-byte header" in q for q in problems)


def test_mismatched_folder_is_refused(tmp_path, enc):
    make_shards(MemorySource(EDGE_DOCS), tmp_path, "x", run_for(100), workers=0)
    with pytest.raises(KitError) as e:
        make_shards(MemorySource(EDGE_DOCS), tmp_path, "x", run_for(200), workers=0)
    assert "different config" in e.value.message and "shard_size: folder has 100, this run wants 200" in e.value.message
    with pytest.raises(KitError) as e:
        make_shards(MemorySource(EDGE_DOCS[:3]), tmp_path, "x", run_for(100) | {"source_fingerprint": "other"},
                    workers=0)
    assert "source_fingerprint" in e.value.message
    with pytest.raises(KitError) as e:
        make_shards(MemorySource(EDGE_DOCS), tmp_path, "y", run_for(100), workers=0)
    assert "name: folder has 'x'" in e.value.message
    # shards without a manifest: not ours, refuse rather than overwrite
    other = tmp_path / "other"
    other.mkdir()
    (other / "fineweb_train_000001.bin").write_bytes(b"x")
    with pytest.raises(KitError, match="no manifest.json"):
        make_shards(MemorySource(EDGE_DOCS), other, "fineweb", run_for(100), workers=0)


def test_shard_writer_is_atomic_and_header_exact(tmp_path):
    toks = np.arange(10, dtype=np.uint16)
    folder = DataFolder(tmp_path)
    m = DataManifest(dir=tmp_path, name="a", run=RunInfo(source_fingerprint="t"))
    w = folder.writer(m, 10)
    w.add(toks[:4])
    assert not (tmp_path / "a_val_000000.bin").exists()          # the shard in progress is a temp file
    w.add(toks[4:])
    w.close()                                                     # its fsync done, renamed and recorded
    raw = (tmp_path / "a_val_000000.bin").read_bytes()
    assert raw[:12] == np.array([20240520, 1, 10], "<i4").tobytes() and raw[12:1024] == b"\0" * 1012
    assert raw[1024:] == toks.astype("<u2").tobytes()
    assert [(s.file, s.tokens, s.sha256) for s in m.shards] == [("a_val_000000.bin", 10, sha256_file(tmp_path / "a_val_000000.bin"))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_val_000000.bin", "manifest.json"]    # no temp left
    assert shard_filename("fw", 0) == "fw_val_000000.bin" and shard_filename("fw", 12) == "fw_train_000012.bin"
    with pytest.raises(ValueError):
        folder.writer(m, 0)
    with pytest.raises(TypeError, match="uint16"):
        folder.writer(m, 10).add(np.arange(3, dtype=np.int64))    # not silently cut to 16 bits


def test_second_writer_on_the_same_folder_is_refused(tmp_path, enc):
    import fcntl

    tmp_path.joinpath(".kitctl-data.lock").touch()
    with open(tmp_path / ".kitctl-data.lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(KitError, match="another `kitctl data` is writing"):
            make_shards(MemorySource(EDGE_DOCS), tmp_path, "x", run_for(100), workers=0)
    make_shards(MemorySource(EDGE_DOCS), tmp_path, "x", run_for(100), workers=0)   # free again: works
    assert DataFolder(tmp_path).manifest().complete


@pytest.mark.parametrize("damage", ["sha256", "header", "missing"])
def test_rerun_rewrites_from_the_first_damaged_shard(tmp_path, enc, damage):
    docs = EDGE_DOCS * 2
    make_shards(MemorySource(docs), tmp_path, "x", run_for(50), workers=0)
    n = len(DataFolder(tmp_path).manifest().shards)
    p = tmp_path / shard_filename("x", 3)
    data = bytearray(p.read_bytes())
    if damage == "sha256":
        data[1030] ^= 1
    elif damage == "header":
        data[4] = 7                                    # version 7: same size, not an llm.c shard
    p.write_bytes(bytes(data))
    if damage == "missing":
        p.unlink()
    later = tmp_path / shard_filename("x", 5)
    later.write_bytes(b"junk")                         # later shards are rewritten too
    assert DataFolder(tmp_path).verify()[1]
    said = []
    s = make_shards(MemorySource(docs), tmp_path, "x", run_for(50), workers=0, log=said.append)
    assert not s.already_complete and s.resumed_from == 3 and s.shards == n - 3
    assert len(said) == 1 and said[0].startswith("x_train_000003.bin: ") and "rewriting from shard 3" in said[0]
    assert read_dir(tmp_path, "x") == reference_files(enc, docs, "x", 50)
    assert DataFolder(tmp_path).verify()[1] == []


@pytest.mark.slow
def test_shared_memory_slots_carry_arrow_batches_exactly(tmp_path, enc):
    """Parquet batches reach the workers through shared-memory slots (kitctl.data.slots): sliced arrays (a
    resume inside a record batch), large_string, nulls and batches too big for a slot (both fall back to the
    queue) all give the reference bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kitctl.data import slots
    from kitctl.data.sources import FilesSource

    docs = [f"{i} " + EDGE_DOCS[i % len(EDGE_DOCS)] * (1 + i % 3) for i in range(600)]
    big = "Ω" * (slots.IN_SLOT_BYTES // 2 + 10)                 # one document larger than a slot
    pq.write_table(pa.table({"text": docs}), tmp_path / "a.parquet", row_group_size=100)
    pq.write_table(pa.table({"text": pa.array(docs[:50] + [big] + docs[50:100], pa.large_string())}),
                   tmp_path / "b.parquet")
    pq.write_table(pa.table({"text": pa.array(docs[:20] + [None] + docs[20:40])}), tmp_path / "c.parquet")
    src = FilesSource([tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"])
    all_docs = docs + docs[:50] + [big] + docs[50:100] + docs[:20] + [""] + docs[20:40]
    ref = reference_files(enc, all_docs, "s", 5000)
    make_shards(src, tmp_path / "o", "s", run_for(5000), workers=2, batch_rows=64)
    assert read_dir(tmp_path / "o", "s") == ref
    # resumed in the middle of a record batch: the first batch is a slice of an arrow array
    m = DataFolder(tmp_path / "o").manifest()
    part = tmp_path / "p"
    part.mkdir()
    m.dir, m.shards, m.complete = part, m.shards[:3], False
    for s in m.shards:
        (part / s.file).write_bytes((tmp_path / "o" / s.file).read_bytes())
    DataFolder(part).save_manifest(m)
    assert m.shards[-1].end.offset > 0
    make_shards(src, part, "s", run_for(5000), workers=2, batch_rows=64)
    assert read_dir(part, "s") == ref
