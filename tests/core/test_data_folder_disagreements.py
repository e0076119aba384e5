"""DataFolder's check, the messages each disagreement gives (the values tests/hostile/test_shard_contract.py's CLI
cases asserted, one `kitctl train/tune/data` run per disagreement before; each reader keeps one CLI case there).

The manifest is written here as JSON (as `kitctl data` leaves it), not through the kit's writer, so that these
tests read the folder exactly as a reader does; the rest of DataFolder's tests are beside this file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from kitctl.core.errors import ConfigError
from kitctl.core.llmc_files import pack_shard_header, shard_filename

from kitctl.core.data_folder import DataFolder


def _folder(d: Path, n: int, listed: int | None = None, tokens: int = 100) -> None:
    """``n`` shards (a val shard, then training shards) and a complete manifest listing the first ``listed``."""
    d.mkdir(parents=True)
    entries = []
    for i in range(n):
        p = d / shard_filename("ds", i)
        p.write_bytes(pack_shard_header(tokens) + bytes(2 * tokens))
        st = p.stat()
        entries.append({"index": i, "file": p.name, "split": "val" if i == 0 else "train", "tokens": tokens,
                        "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns})
    (d / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "format": "llmc-kit/data", "dataset": "local", "complete": True, "name": "ds",
        "run": {"source": "test", "source_fingerprint": "test"}, "shards": entries[:listed]}))


def _refusal(d: Path) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        DataFolder(d).require_consistent()
    assert e.value.exit_code == 2
    return e.value


def test_each_disagreement_names_the_file_what_is_wrong_and_the_fix(tmp_path):
    d = tmp_path / "d"
    _folder(d, 6)
    (d / "ds_train_000001.bin").unlink()                                             # missing
    with open(d / "ds_train_000003.bin", "ab") as f:                                  # size
        f.write(b"xx")
    t = (d / "ds_train_000004.bin").stat().st_mtime_ns + 10**9
    os.utime(d / "ds_train_000004.bin", ns=(t, t))                                   # mtime
    (d / "ds_train_000005.bin").unlink()
    os.mkfifo(d / "ds_train_000005.bin")                                             # a listed shard is a FIFO
    os.mkfifo(d / "ds_train_000007.bin")                                             # a FIFO named like a shard
    e = _refusal(d)
    lines = {ln.strip().split(":", 1)[0]: ln.strip() for ln in e.message.splitlines()[1:]}
    assert "listed in the manifest but missing" in lines["ds_train_000001.bin"]
    assert "1,226 bytes, the manifest recorded 1,224" in lines["ds_train_000003.bin"]
    assert "modified after `kitctl data` wrote it" in lines["ds_train_000004.bin"]
    assert "a FIFO, not a regular file" in lines["ds_train_000005.bin"]
    assert "does not list (a FIFO" in lines["ds_train_000007.bin"]
    assert all(s in (e.hint or "") for s in ("move the stray", "re-run the `kitctl data`", "kitctl data verify"))


def test_a_manifest_listing_fewer_shards_than_the_folder_holds(tmp_path):
    d = tmp_path / "d"
    _folder(d, 3, listed=2)
    assert [(p.file, p.kind) for p in DataFolder(d).check().problems] == [("ds_train_000002.bin", "stray")]
    assert "ds_train_000002.bin: a shard file the manifest does not list" in _refusal(d).message
    assert "llm.c would read it" in _refusal(d).message


def test_facts_without_a_manifest_refuse_a_fifo_named_like_a_shard(tmp_path):
    """Never opened (a FIFO would block the header read): exit 2 naming it."""
    (tmp_path / shard_filename("ds", 0)).write_bytes(pack_shard_header(10) + bytes(20))
    os.mkfifo(tmp_path / shard_filename("ds", 1))
    with pytest.raises(ConfigError) as e:
        DataFolder(tmp_path).facts()
    assert e.value.exit_code == 2 and "ds_train_000001.bin" in e.value.message
    assert "not a regular file" in e.value.message
