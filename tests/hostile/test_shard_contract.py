"""The shard-folder contract (issue 17): manifest.json is the truth, and every reader compares the folder with it.

A folder that disagrees with its manifest (a stray shard, a missing one, a symlink or a FIFO under a shard's name,
a shard whose size or mtime changed, a listed path outside the folder, a manifest listing fewer shards than the
folder holds) is exit 2 naming the file and the fix, for ``kitctl train --dry-run`` (planning from an inventory),
``kitctl tune --dry-run`` and ``kitctl data``'s own "already complete" check. Nothing is changed on the way.
A folder without a manifest is still accepted, with a note. Same harness as test_hostile.py.

Each reader keeps one CLI case per kind of disagreement it acts on (train, tune: a stray shard; train: a FIFO shard
in a folder without a manifest; data, whose own check refuses strays, special files and outside names: one of each);
every disagreement's message, value by value, is a unit test of DataFolder: tests/core/test_data_folder_disagreements.py
(each message and hint these cases asserted) and DataFolder's own tests (test_each_disagreement_is_named,
test_a_listed_name_that_is_not_the_shard_at_its_position_is_refused).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import (Case, Result, make_world, play, run_kitctl, write_shard)

TRAIN = ["train", "--inventory", "two.csv", "--mpirun", "/bin/true", "--data", "data/shards", "--steps", "10",
         "--dry-run"]
TUNE = ["tune", "--inventory", "two.csv", "--mpirun", "/bin/true", "--data", "data/shards", "--dry-run"]
REPRO = ["reproduce", "--inventory", "two.csv", "--mpirun", "/bin/true", "--dataset", "input.txt", "--steps", "10",
         "--dry-run"]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def with_manifest(cwd: Path, listed: int = 3, folder: str = "shards", name: str = "tiny") -> Path:
    """The world's shard folder as `kitctl data` leaves it: val + two train shards and a manifest.json that lists
    the first ``listed`` of them with their sizes and mtimes (written as JSON, not through the kit's own code)."""
    shards = cwd / "data" / folder
    shards.mkdir(parents=True, exist_ok=True)
    if name != "tiny":
        for p in sorted((cwd / "data" / "shards").glob("tiny_*.bin")):
            (shards / p.name.replace("tiny", name)).write_bytes(p.read_bytes())
    write_shard(shards / f"{name}_train_000002.bin", 65536)
    entries = []
    for i, file in enumerate([f"{name}_val_000000.bin", f"{name}_train_000001.bin",
                              f"{name}_train_000002.bin"][:listed]):
        p = shards / file
        st = p.stat()
        entries.append({"index": i, "file": file, "split": "val" if i == 0 else "train",
                        "tokens": (st.st_size - 1024) // 2, "sha256": _sha(p), "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns})
    manifest = {"schema_version": 1, "format": "llmc-kit/data", "dataset": "local", "complete": True,
                "name": name, "run": {"source": "test", "source_fingerprint": "test"}, "shards": entries}
    (shards / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return shards


def _then(change: Callable[[Path], None], listed: int = 3) -> Callable[[Path], None]:
    def setup(cwd: Path) -> None:
        change(with_manifest(cwd, listed))
    return setup


def _stray(d: Path) -> None:
    write_shard(d / "tiny_train_000003.bin", 4096)


def _touched(d: Path) -> None:
    p = d / "tiny_train_000002.bin"
    t = p.stat().st_mtime_ns + 5 * 10**9
    os.utime(p, ns=(t, t))


def _nothing(d: Path) -> None:
    pass


def _no_manifest(cwd: Path) -> None:
    pass


def C(id: str, argv: list[str], setup: Callable[[Path], None], code: int = 2, says=(), check=None) -> Case:
    return Case(id, argv, code=code, says=tuple(says), setup=setup, check=check)


def _planned(r: Result) -> None:
    assert "train_gpt2cu" in r.text, r.out[-800:]


CASES = [
    C("train-manifest-agrees", TRAIN, _then(_nothing), code=0, check=_planned),
    C("train-no-manifest-note", TRAIN, _no_manifest, code=0, says=["no manifest.json", "unchecked"], check=_planned),
    C("train-stray-shard", TRAIN, _then(_stray), says=["tiny_train_000003.bin", "does not list", "move the stray"]),
    C("train-no-manifest-fifo-shard", TRAIN, lambda cwd: os.mkfifo(cwd / "data" / "shards" / "tiny_train_000002.bin"),
      says=["tiny_train_000002.bin", "not a regular file"]),
    C("tune-stray-shard", TUNE, _then(_stray), says=["tiny_train_000003.bin", "does not list"]),
    C("reproduce-complete-data-with-stray", REPRO, lambda cwd: write_shard(
        with_manifest(cwd, folder="input", name="input") / "input_train_000003.bin", 4096),
      says=["input_train_000003.bin", "does not list"]),
    C("reproduce-complete-data-agrees", REPRO, lambda cwd: with_manifest(cwd, folder="input", name="input"), code=0,
      says=["smallest shard has 4,096 tokens"]),   # planned on the folder itself, not on an estimate
]


def _run_case(case: Case, tmp_path: Path, capsys, monkeypatch, before_run: Optional[Callable[[Path], None]] = None,
              may_change: tuple[str, ...] = ()) -> Result:
    return play(case, tmp_path, capsys, monkeypatch, before_run=before_run, may_change=may_change)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_readers_refuse_a_folder_that_disagrees_with_its_manifest(case, tmp_path, capsys, monkeypatch):
    _run_case(case, tmp_path, capsys, monkeypatch)


# ------------------------------------------------------------------------------------ kitctl data's own check
BIG = "".join(f"Line {i}: Before we proceed any further, hear me speak of {i * 7} things.\n" for i in range(600))
DATA = ["data", "big.txt", "--runtime", "native", "--workers", "0", "--shard-size", "2048"]
TOKENIZER = ("cwd/data/tiktoken*", "cwd/data/gpt2_tokenizer.bin")


@pytest.fixture(scope="module")
def made_folder(tmp_path_factory) -> Path:
    """One real `kitctl data big.txt` output (with its tokenizer caches), copied into each case's world."""
    from _pytest.monkeypatch import MonkeyPatch

    root = tmp_path_factory.mktemp("made")
    cwd = make_world(root)
    (cwd / "big.txt").write_text(BIG)
    mp = MonkeyPatch()

    class _Cap:          # run_kitctl wants capsys's readouterr; output is not checked here
        def readouterr(self):
            class R:
                out = err = ""
            return R()
    try:
        r = run_kitctl(DATA, cwd, _Cap(), mp)
    finally:
        mp.undo()
    assert r.code == 0, r
    m = json.loads((cwd / "data" / "big" / "manifest.json").read_text())
    assert m["complete"] and len(m["shards"]) >= 4 and all("mtime_ns" in s and "size" in s for s in m["shards"])
    return cwd / "data"


def _copy_made(made: Path) -> Callable[[Path], None]:
    import shutil

    def put(cwd: Path) -> None:
        (cwd / "big.txt").write_text(BIG)
        for name in ("big", "tiktoken"):
            shutil.copytree(made / name, cwd / "data" / name, symlinks=True, copy_function=shutil.copy2)
        shutil.copy2(made / "gpt2_tokenizer.bin", cwd / "data" / "gpt2_tokenizer.bin")
    return put


def _big(change: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda cwd: change(cwd / "data" / "big")


def _big_stray(d: Path) -> None:
    write_shard(d / "big_train_000099.bin", 4096)


def _big_outside(d: Path) -> None:
    m = json.loads((d / "manifest.json").read_text())
    last = m["shards"][-1]["file"]
    (d / last).rename(d.parent / last)
    m["shards"][-1]["file"] = "../" + last
    (d / "manifest.json").write_text(json.dumps(m))


def _big_symlink(d: Path) -> None:
    (d / "big_train_000002.bin").unlink()
    (d / "big_train_000002.bin").symlink_to("big_train_000001.bin")


DATA_CASES = [
    C("data-complete-with-stray-shard", DATA, _big(_big_stray), says=["big_train_000099.bin", "does not list",
                                                                      "move the stray"]),
    C("data-complete-lists-outside-path", DATA, _big(_big_outside), says=["outside the folder", "../big_train_"]),
    C("data-complete-shard-is-symlink", DATA, _big(_big_symlink), says=["big_train_000002.bin", "symlink"]),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in DATA_CASES])
def test_data_does_not_call_a_disagreeing_folder_complete(case, made_folder, tmp_path, capsys, monkeypatch):
    _run_case(case, tmp_path, capsys, monkeypatch, before_run=_copy_made(made_folder), may_change=TOKENIZER)


def test_data_rechecks_a_touched_shard_and_records_its_mtime(made_folder, tmp_path, capsys, monkeypatch):
    """A shard whose mtime changed but whose bytes did not (a copy without -p): `kitctl data` checks its sha256,
    says the folder is complete and records the new mtime; then train trusts the folder again."""
    touch = Case("data-touched", DATA, code=0, setup=_big(_touched_big))
    r = _run_case(touch, tmp_path, capsys, monkeypatch, before_run=_copy_made(made_folder),
                  may_change=(*TOKENIZER, "cwd/data/big/manifest.json"))
    assert "recorded" in r.text
    d = tmp_path / "cwd" / "data" / "big"
    m = json.loads((d / "manifest.json").read_text())
    assert all(s["mtime_ns"] == (d / s["file"]).stat().st_mtime_ns for s in m["shards"])


def _touched_big(d: Path) -> None:
    p = d / "big_train_000001.bin"
    t = p.stat().st_mtime_ns + 5 * 10**9
    os.utime(p, ns=(t, t))


def test_verify_records_new_mtimes_then_train_accepts(tmp_path, capsys, monkeypatch):
    """The fix train names for a changed mtime works: `kitctl data verify` checks the bytes and records the mtime."""
    cwd = make_world(tmp_path)
    _then(_touched)(cwd)
    refused = run_kitctl(TRAIN, cwd, capsys, monkeypatch)
    assert refused.code == 2 and "kitctl data verify" in refused.text
    verified = run_kitctl(["data", "verify", "data/shards"], cwd, capsys, monkeypatch)
    assert verified.code == 0 and "new mtimes are recorded" in verified.text, verified.text
    planned = run_kitctl(TRAIN, cwd, capsys, monkeypatch)
    assert planned.code == 0 and "train_gpt2cu" in planned.text, planned.text[-800:]


@pytest.mark.parametrize("change, note", [(_stray, "tiny_train_000003.bin: a shard file the manifest does not list"),
                                          (_nothing, None)])
def test_status_notes_a_data_folder_that_no_longer_matches(tmp_path, capsys, monkeypatch, change, note):
    """`kitctl status` reads the run's data folder (run.json data.dir) through the same check: a note, never a
    failure of status itself."""
    cwd = make_world(tmp_path)
    shards = with_manifest(cwd)
    change(shards)
    (cwd / "data" / "runs" / "r1" / "run.json").write_text(json.dumps({"schema_version": 1, "data": {
        "dir": str(shards), "prefix": "tiny"}}))
    r = run_kitctl(["status", "r1"], cwd, capsys, monkeypatch)
    assert r.code == 0, r.text
    if note:
        assert note.lower() in r.text and "kitctl train` refuses it" in r.text
    else:
        assert "does not match" not in r.text


def test_verify_does_not_bless_changed_bytes(tmp_path, capsys, monkeypatch):
    """...but only when the bytes match: a shard with other bytes of the same size stays refused."""
    cwd = make_world(tmp_path)
    shards = with_manifest(cwd)
    p = shards / "tiny_train_000002.bin"
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 1
    p.write_bytes(bytes(raw))
    verified = run_kitctl(["data", "verify", "data/shards"], cwd, capsys, monkeypatch)
    assert verified.code != 0 and "sha256" in verified.text
    assert run_kitctl(TRAIN, cwd, capsys, monkeypatch).code == 2
