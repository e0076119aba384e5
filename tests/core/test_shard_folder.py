"""kitctl.core.shard_folder: the manifest is the truth; the folder is compared with it on metadata alone."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from kitctl.core import shard_folder as sf
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.llmc_files import pack_shard_header, shard_filename


def _folder(d: Path, n: int = 3, tokens: int = 100) -> sf.DataManifest:
    d.mkdir(parents=True, exist_ok=True)
    shards = []
    for i in range(n):
        p = d / shard_filename("ds", i)
        p.write_bytes(pack_shard_header(tokens) + bytes(2 * tokens))
        shards.append(sf.Shard(index=i, file=p.name, split="val" if i == 0 else "train", tokens=tokens,
                               sha256=hashlib.sha256(p.read_bytes()).hexdigest()).stamp(p))
    m = sf.DataManifest(dir=d, name="ds", complete=True, run=sf.RunInfo(source_fingerprint="x"), shards=shards)
    m.save()
    return m


def _kinds(d: Path) -> list[tuple[str, str]]:
    return [(p.file, p.kind) for p in sf.DataFolder(d).check().problems]


def test_a_folder_as_written_agrees_and_the_record_round_trips(tmp_path):
    m = _folder(tmp_path / "d")
    c = sf.DataFolder(tmp_path / "d").require_consistent()
    assert c.ok and c.manifest is not None and c.manifest.shards == m.shards
    assert all(s.size == 1024 + 200 and s.mtime_ns for s in c.manifest.shards)
    assert c.manifest.train_pattern == "ds_train_*.bin" and c.manifest.total_tokens == 300


def test_no_manifest_is_accepted_with_a_note(tmp_path):
    (tmp_path / "x_val_000000.bin").write_bytes(pack_shard_header(0))
    c = sf.DataFolder(tmp_path).require_consistent()
    assert c.ok and c.manifest is None and "no manifest.json" in c.notes[0]


def test_each_disagreement_is_named(tmp_path):
    d = tmp_path / "d"
    _folder(d, 5)
    (d / "ds_train_000001.bin").unlink()                                             # missing
    (d / "ds_train_000002.bin").unlink()
    (d / "ds_train_000002.bin").symlink_to("ds_train_000003.bin")                    # symlink
    with open(d / "ds_train_000003.bin", "ab") as f:                                  # size
        f.write(b"xx")
    t = (d / "ds_train_000004.bin").stat().st_mtime_ns + 10**9
    os.utime(d / "ds_train_000004.bin", ns=(t, t))                                   # mtime
    (d / "ds_train_000005.bin").write_bytes(pack_shard_header(0))                    # stray, llm.c's name
    (d / "ds_train_extra.bin").write_bytes(b"")                                      # stray, matches llm.c's glob
    os.mkfifo(d / "other_val_000000.bin")                                            # stray FIFO of another prefix
    (d / ".tmp-ds_train_000009.bin.abc").write_bytes(b"")                            # a writer's temp: not a shard
    (d / "gpt2_tokenizer.bin").write_bytes(b"")                                      # not a shard
    (d / "notes.txt").write_text("mine")
    assert sorted(_kinds(d)) == [("ds_train_000001.bin", "missing"), ("ds_train_000002.bin", "special"),
                                 ("ds_train_000003.bin", "size"), ("ds_train_000004.bin", "mtime"),
                                 ("ds_train_000005.bin", "stray"), ("ds_train_extra.bin", "stray"),
                                 ("other_val_000000.bin", "stray")]
    with pytest.raises(ConfigError) as e:
        sf.DataFolder(d).require_consistent()
    assert e.value.exit_code == 2
    for s in ("ds_train_000002.bin: a symlink (to ds_train_000003.bin)", "a FIFO", "llm.c would read it",
              "another dataset's name"):
        assert s in e.value.message
    for s in ("move the stray", "kitctl data verify", "re-run the `kitctl data`"):
        assert s in (e.value.hint or "")


@pytest.mark.parametrize("file", ["../ds_train_000001.bin", "/etc/passwd", "ds_train_000007.bin", "."])
def test_a_listed_name_that_is_not_the_shard_at_its_position_is_refused(tmp_path, file):
    d = tmp_path / "d"
    m = _folder(d)
    m.shards[1].file = file
    m.save()
    kinds = _kinds(d)
    assert (file, "name") in kinds
    if file.startswith(("..", "/")):
        assert "outside the folder" in str(sf.DataFolder(d).check().problems[0])


def test_older_manifests_without_size_and_mtime_are_checked_by_token_count(tmp_path):
    d = tmp_path / "d"
    m = _folder(d)
    for s in m.shards:
        s.size = s.mtime_ns = s.ino = s.ctime_ns = None     # an older manifest records none of them
    m.save()
    os.utime(d / "ds_train_000001.bin", ns=(1, 1))
    assert sf.DataFolder(d).check().ok
    with open(d / "ds_train_000001.bin", "ab") as f:
        f.write(b"xx")
    assert _kinds(d) == [("ds_train_000001.bin", "size")]


def test_an_incomplete_folder_says_to_finish_the_data_run(tmp_path):
    d = tmp_path / "d"
    m = _folder(d)
    m.complete = False
    m.save()
    (d / "ds_train_000003.bin").write_bytes(pack_shard_header(0))
    with pytest.raises(ConfigError, match="ds_train_000003.bin") as e:
        sf.DataFolder(d).require_consistent()
    assert "has not finished" in (e.value.hint or "")


def test_a_long_list_is_cut(tmp_path):
    d = tmp_path / "d"
    _folder(d)
    for i in range(4, 15):
        (d / shard_filename("ds", i)).write_bytes(b"")
    with pytest.raises(ConfigError, match="and 3 more"):
        sf.DataFolder(d).require_consistent()


def test_a_manifest_that_is_not_a_regular_file_or_damaged(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    os.mkfifo(d / "manifest.json")
    with pytest.raises(ConfigError, match="not a regular file"):       # never opened: a FIFO would block
        sf.DataFolder(d).check()
    (d / "manifest.json").unlink()
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(KitError, match="not a readable"):
        sf.DataFolder(d).check()


# ------------------------------------------------------------------------- what train reads: DataFolder.facts
def test_facts_come_from_the_manifest_once_the_folder_agrees(tmp_path):
    """Train plans from the manifest's list and token counts: a shard's bytes are not opened again (one whose header
    was overwritten in place, stamps recorded since, still plans: `kitctl data verify` is the check of bytes)."""
    m = _folder(tmp_path / "d", n=3, tokens=100)
    p = tmp_path / "d" / "ds_train_000002.bin"
    p.write_bytes(b"\0" * p.stat().st_size)
    m.shards[2].stamp(p)
    m.save()
    info = sf.DataFolder(tmp_path / "d").facts()
    assert info.prefix == "ds" and [s.name for s in info.val] == ["ds_val_000000.bin"]
    assert [(s.name, s.tokens) for s in info.train] == [("ds_train_000001.bin", 100), ("ds_train_000002.bin", 100)]
    assert info.complete is True and info.manifest_sha256 == hashlib.sha256(
        (tmp_path / "d" / "manifest.json").read_bytes()).hexdigest()
    assert "not an llm.c token shard" in sf.DataFolder(tmp_path / "d").verify()[1][0]


def test_facts_refuse_a_manifest_whose_tokens_and_sizes_disagree(tmp_path):
    m = _folder(tmp_path / "d", n=2, tokens=100)
    m.shards[1].tokens = 99                                   # size recorded 1,224 bytes: 100 tokens, not 99
    m.save()
    with pytest.raises(ConfigError) as e:
        sf.DataFolder(tmp_path / "d").facts()
    assert "ds_train_000001.bin with 99 tokens in 1224 bytes" in e.value.message and "kitctl data" in e.value.hint


def test_facts_without_a_manifest_read_the_headers(tmp_path):
    for i, n in enumerate((10, 20)):
        (tmp_path / shard_filename("ds", i)).write_bytes(pack_shard_header(n) + bytes(2 * n))
    info = sf.DataFolder(tmp_path).facts()
    assert info.manifest_sha256 is None and info.complete is None and "no manifest.json" in info.notes[0]
    assert (info.min_shard_tokens, info.train_tokens) == (10, 20)
    (tmp_path / shard_filename("ds", 1)).write_bytes(pack_shard_header(20) + bytes(2 * 19))
    with pytest.raises(ConfigError, match="1062 bytes but the header says 20 tokens"):
        sf.DataFolder(tmp_path).facts()
