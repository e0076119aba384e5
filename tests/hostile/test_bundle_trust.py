"""Bundles you can trust (issue 26): a bundle is data to check, never instructions to follow.

Crafted with Python's tarfile: members that are absolute, ``../``, links, devices, FIFOs, listed twice or both a
file and a folder; a manifest whose ``contents`` points outside the bundle, whose image reference looks like an
option, that is oversize or nested 100,000 deep. FIFOs, /dev/zero, folders and sockets given as the bundle. An
unpacked bundle edited, touched, deleted from or added to after its unpack; two processes unpacking at once; a
SIGTERM and a SIGKILL mid-unpack (real processes). Packing: symlinks left out, ``--out`` that is an input or a file
that is not a bundle. ``--dry-run`` writes nothing. A bundle packed for another preset is refused.

Table-driven at the library level (milliseconds each); one in-process CLI run per wiring; the real-process cases
are marked slow.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path
from typing import Optional

import pytest

from kitctl.core import bundle as bf
from kitctl.core.errors import ConfigError
from kitctl.data.tokenizer import EMBEDDED_DIR
from kitctl.pipeline import bundle as pack
from kitctl.pipeline.inputs import ReproduceOptions, apply_bundle

sys.path.insert(0, str(Path(__file__).parent))
from harness import make_special, make_world, run_kitctl  # noqa: E402

CORPUS = b"First Citizen: before we proceed any further, hear me speak.\n" * 50
HS = b'{"ctx": "a", "label": 0, "endings": ["b", "c", "d", "e"]}\n'


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def good_contents() -> dict:
    return {"preset": "gpt2-124m", "dataset": "in.txt", "dataset_kind": "local", "dataset_path": "dataset/in.txt",
            "hellaswag_path": bf.HELLASWAG, "llmc": "llmc/llm.c", "cudnn_frontend": "cudnn-frontend/include"}


def good_files() -> dict[str, bytes]:
    return {"dataset/in.txt": CORPUS, bf.HELLASWAG: HS, "llmc/llm.c/train_gpt2.cu": b"int main() {}\n",
            "cudnn-frontend/include/cudnn_frontend.h": b"#pragma once\n",
            **{f"tokenizer/{n}": (Path(EMBEDDED_DIR) / n).read_bytes()[:64] for n in bf.TOKENIZER_FILES}}


def craft(out: Path, files: Optional[dict[str, bytes]] = None, contents: Optional[dict] = None,
          extra: tuple[tarfile.TarInfo, ...] = (), listed: Optional[list[dict]] = None,
          raw_manifest: Optional[bytes] = None, first: Optional[tarfile.TarInfo] = None) -> Path:
    """A bundle written member by member with tarfile: ``files`` (name -> bytes, listed with their sha256),
    ``extra`` tar members (links, devices...; listed as 0-byte members), ``listed`` replacing the manifest's
    member list, ``raw_manifest`` its bytes."""
    files = good_files() if files is None else files
    members = [{"name": n, "bytes": len(d), "sha256": _sha(d)} for n, d in files.items()]
    members += [{"name": ti.name, "bytes": ti.size, "sha256": "0" * 64} for ti in extra]
    manifest = {"schema_version": 1, "format": bf.FORMAT, "members": listed if listed is not None else members,
                "contents": good_contents() if contents is None else contents}
    raw = raw_manifest if raw_manifest is not None else json.dumps(manifest).encode()
    with tarfile.open(out, "w:", format=tarfile.PAX_FORMAT) as tf:
        if first is not None:
            tf.addfile(first, io.BytesIO(b"x" * first.size))
        ti = tarfile.TarInfo(bf.MANIFEST)
        ti.size = len(raw)
        tf.addfile(ti, io.BytesIO(raw))
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for ti in extra:
            tf.addfile(ti)
    return out


def member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = kind, linkname
    return ti


# ------------------------------------------------------------------------------------------ members
MEMBER_CASES = [
    ("absolute", {"/etc/passwd": b"x"}, (), "not a plain relative path"),
    ("dotdot", {"../evil.txt": b"x"}, (), "not a plain relative path"),
    ("dotdot-deep", {"dataset/../../evil.txt": b"x"}, (), "not a plain relative path"),
    ("dot-part", {"dataset/./in2.txt": b"x"}, (), "not a plain relative path"),
    ("backslash", {"dataset\\..\\evil": b"x"}, (), "not a plain relative path"),
    ("control-char", {"dataset/a\nb": b"x"}, (), "not a plain relative path"),
    ("reserved-stamp", {bf.STAMP: b"{}"}, (), "not a plain relative path"),
    ("symlink", {}, (member("dataset/link", tarfile.SYMTYPE, "/etc/passwd"),), "is a symlink"),
    ("hardlink", {}, (member("dataset/hard", tarfile.LNKTYPE, "/etc/passwd"),), "is a hard link"),
    ("char-device", {}, (member("dataset/zero", tarfile.CHRTYPE),), "is a device"),
    ("block-device", {}, (member("dataset/sda", tarfile.BLKTYPE),), "is a device"),
    ("fifo", {}, (member("dataset/pipe", tarfile.FIFOTYPE),), "is a FIFO"),
    ("folder", {}, (member("dataset/dir", tarfile.DIRTYPE),), "is a folder"),
    ("file-and-folder", {"dataset/in.txt/x": b"x"}, (), "also the folder"),
]


@pytest.mark.parametrize("extra_files, extra, says", [c[1:] for c in MEMBER_CASES], ids=[c[0] for c in MEMBER_CASES])
def test_a_crafted_member_is_refused_naming_what_it_is(tmp_path, extra_files, extra, says):
    b = craft(tmp_path / "b.tar", {**good_files(), **extra_files}, extra=extra)
    with pytest.raises(ConfigError, match=says) as e:
        bf.open_bundle(b)
    assert e.value.exit_code == 2 and str(b) in e.value.message


def test_a_member_not_listed_or_listed_twice_is_refused(tmp_path):
    files = good_files()
    listed = [{"name": n, "bytes": len(d), "sha256": _sha(d)} for n, d in files.items()]
    with pytest.raises(ConfigError, match="not in its manifest"):
        bf.open_bundle(craft(tmp_path / "a.tar", files, listed=listed[1:]))
    with pytest.raises(ConfigError, match="listed twice"):
        bf.open_bundle(craft(tmp_path / "b.tar", files, listed=listed + listed[:1]))


# ------------------------------------------------------------------------------------------ contents
CONTENT_CASES = [
    ("dataset-absolute", {"dataset_path": "/etc/passwd"}, "contents.dataset_path"),
    ("dataset-dotdot", {"dataset_path": "../../../../etc/passwd"}, "contents.dataset_path"),
    ("dataset-inner-dotdot", {"dataset_path": "dataset/../../x"}, "contents.dataset_path"),
    ("dataset-not-a-member", {"dataset_path": "dataset/other.txt"}, "names no member or folder"),
    ("hellaswag-absolute", {"hellaswag_path": "/etc/shadow"}, "contents.hellaswag_path"),
    ("hellaswag-a-folder", {"hellaswag_path": "hellaswag"}, "names no member of"),
    ("llmc-outside", {"llmc": "/usr/src/linux"}, "contents.llmc"),
    ("llmc-dotdot", {"llmc": "../llm.c"}, "contents.llmc"),
    ("cudnn-outside", {"cudnn_frontend": "/usr/include"}, "contents.cudnn_frontend"),
    ("cudnn-a-file", {"cudnn_frontend": "dataset/in.txt"}, "names no folder"),
    ("path-not-a-string", {"dataset_path": ["dataset/in.txt"]}, "contents.dataset_path"),
    ("image-ref-option", {"images": {"runtime": {"ref": "--help"}}}, "not a Docker image reference"),
    ("image-ref-space", {"images": {"runtime": {"ref": "llmc-kit:latest other:tag"}}}, "not a Docker image reference"),
    ("image-ref-missing", {"images": {"data": {"id": "sha256:00"}}}, "not a Docker image reference"),
    ("images-not-a-table", {"images": ["llmc-kit:latest"]}, "not a table of images"),
    ("preset-not-a-string", {"preset": {"x": 1}}, "contents.preset is not a string"),
]


@pytest.mark.parametrize("change, says", [c[1:] for c in CONTENT_CASES], ids=[c[0] for c in CONTENT_CASES])
def test_manifest_contents_pointing_outside_the_bundle_are_refused(tmp_path, change, says):
    b = craft(tmp_path / "b.tar", contents={**good_contents(), **change})
    with pytest.raises(ConfigError, match=says) as e:
        bf.open_bundle(b)
    assert e.value.exit_code == 2


def test_contents_naming_members_and_folders_of_members_are_accepted(tmp_path):
    b = bf.open_bundle(craft(tmp_path / "b.tar", contents={**good_contents(), "dataset_path": "dataset",
                                                            "images": {"runtime": {"ref": "llmc-kit:latest"}}}))
    ub = bf.Unpacked(tmp_path / "u", b.manifest, b.path)
    for p in (ub.hellaswag, ub.cudnn_frontend, Path(ub.llmc_src or ""), ub.dataset[0] and Path(ub.dataset[0])):
        assert str(p).startswith(str(tmp_path / "u") + "/")


# ------------------------------------------------------------------------------------------ the manifest itself
def test_an_oversize_manifest_says_its_size_not_that_it_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(bf, "MAX_MANIFEST_BYTES", 1000)
    b = craft(tmp_path / "b.tar", raw_manifest=b" " * 1001)
    with pytest.raises(ConfigError) as e:
        bf.open_bundle(b)
    assert "is 1,001 bytes, more than the" in e.value.message and "not manifest.json" not in e.value.message


@pytest.mark.parametrize("raw", [b'{"members": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                                 b'{"contents": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001,
                                 b"[" * 200_000], ids=["list-100k-deep", "object-50k-deep", "open-200k"])
def test_a_deeply_nested_manifest_is_a_message_not_a_recursion_error(tmp_path, raw):
    with pytest.raises(ConfigError, match="levels deep"):
        bf.open_bundle(craft(tmp_path / "b.tar", raw_manifest=raw))


def test_an_edited_manifest_is_caught_by_the_member_hashes(tmp_path):
    files = good_files()
    listed = [{"name": n, "bytes": len(d), "sha256": _sha(d)} for n, d in files.items()]
    listed[0]["sha256"] = _sha(b"something else")               # same size, another hash
    b = bf.open_bundle(craft(tmp_path / "b.tar", files, listed=listed))
    with pytest.raises(ConfigError, match=f"member {listed[0]['name']} is damaged"):
        bf.use_bundle(b.path, tmp_path / "data", say=lambda s: None)
    assert not [p for p in (tmp_path / "data" / "bundles").iterdir() if not p.name.startswith(".lock-")]


def test_a_first_member_that_is_not_the_manifest_is_named(tmp_path):
    first = tarfile.TarInfo("evil.sh")
    first.size = 4
    with pytest.raises(ConfigError, match="its first member is 'evil.sh', not manifest.json"):
        bf.open_bundle(craft(tmp_path / "b.tar", first=first))


# ------------------------------------------------------------------------------------------ the file given
@pytest.mark.parametrize("kind, says", [("fifo", "is a FIFO"), ("zero", "is a character device"),
                                        ("folder", "is a folder, not a --bundle"), ("socket", "is a socket"),
                                        ("missing", "no such file")])
def test_a_bundle_that_is_not_a_regular_file_is_named_for_what_it_is(tmp_path, kind, says):
    p = tmp_path / "b.tar"
    keep = make_special(p, kind)
    try:
        with pytest.raises(ConfigError, match=says) as e:
            bf.open_bundle(p)
        assert e.value.exit_code == 2
    finally:
        if keep is not None:
            keep.close()


def test_cli_a_fifo_as_bundle_is_exit_2_naming_it(tmp_path, capsys, monkeypatch):
    cwd = make_world(tmp_path)
    os.mkfifo(cwd / "b.tar")
    r = run_kitctl(["data", "--bundle", "b.tar", "--dry-run"], cwd, capsys, monkeypatch)
    assert r.code == 2 and "is a FIFO (named pipe), not a regular file" in r.out + r.err, r.out + r.err


# ------------------------------------------------------------------------------------------ unpacked, then used
@pytest.fixture
def unpacked(tmp_path):
    b = craft(tmp_path / "b.tar")
    said: list[str] = []
    ub = bf.use_bundle(b, tmp_path / "data", say=said.append)
    return b, ub, said


def _again(b: Path, tmp_path: Path) -> tuple[bf.Unpacked, list[str]]:
    said: list[str] = []
    return bf.use_bundle(b, tmp_path / "data", say=said.append), said


def test_a_sound_unpack_is_reused_silently(tmp_path, unpacked):
    b, ub, _ = unpacked
    again, said = _again(b, tmp_path)
    assert again.root == ub.root and said == []


@pytest.mark.parametrize("how, says", [
    ("edit", "was changed in"), ("delete", "was deleted in"), ("truncate", "was changed in"),
    ("replace-by-link", "was changed in"),
])
def test_a_member_changed_after_the_unpack_is_extracted_again_saying_which(tmp_path, unpacked, how, says):
    b, ub, _ = unpacked
    p = ub.root / "dataset" / "in.txt"
    if how == "edit":
        p.write_bytes(b"poisoned " + CORPUS[9:])        # same size, new bytes
    elif how == "delete":
        p.unlink()
    elif how == "truncate":
        p.write_bytes(b"")
    else:
        p.unlink()
        p.symlink_to("/etc/passwd")
    again, said = _again(b, tmp_path)
    assert any("dataset/in.txt" in s and says in s for s in said), said
    assert p.read_bytes() == CORPUS and not p.is_symlink()
    assert _again(b, tmp_path)[1] == []                  # repaired: the next use is quiet again


def test_a_member_only_touched_is_rehashed_and_kept(tmp_path, unpacked):
    b, ub, _ = unpacked
    p = ub.root / bf.HELLASWAG
    os.utime(p, ns=(1, 1))
    _, said = _again(b, tmp_path)
    assert said == [f"bundle member {bf.HELLASWAG} was touched since it was unpacked: sha256 re-checked, unchanged"]
    assert _again(b, tmp_path)[1] == []


def test_a_file_added_to_the_unpack_is_removed(tmp_path, unpacked):
    b, ub, _ = unpacked
    (ub.root / "llmc" / "llm.c" / "evil.cu").write_text("// added\n")
    _, said = _again(b, tmp_path)
    assert any("evil.cu" in s and "not one of the bundle's members" in s for s in said)
    assert not (ub.root / "llmc" / "llm.c" / "evil.cu").exists()


def test_a_folder_of_the_unpack_replaced_by_a_link_unpacks_again(tmp_path, unpacked):
    b, ub, _ = unpacked
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "in.txt").write_bytes(CORPUS)
    os.utime(outside / "in.txt", ns=(0, 0))
    import shutil
    shutil.rmtree(ub.root / "dataset")
    (ub.root / "dataset").symlink_to(outside)
    again, said = _again(b, tmp_path)
    assert any("unpacking the bundle again" in s for s in said), said
    assert not (ub.root / "dataset").is_symlink() and (ub.root / "dataset" / "in.txt").read_bytes() == CORPUS
    assert (outside / "in.txt").exists()                  # what the link pointed at is left alone


def test_a_damaged_stamp_rehashes_every_member(tmp_path, unpacked):
    b, ub, _ = unpacked
    (ub.root / bf.STAMP).write_text("[" * 100_000)
    (ub.root / bf.HELLASWAG).write_bytes(HS.upper())
    _, said = _again(b, tmp_path)
    assert said[0].startswith(f"the unpacked bundle {ub.root} has no sound record") and len(said) == 2, said
    assert f"bundle member {bf.HELLASWAG} was changed" in said[1]      # the one that differs is named, only it
    assert (ub.root / bf.HELLASWAG).read_bytes() == HS and _again(b, tmp_path)[1] == []


def test_leftovers_of_a_killed_unpack_are_removed_and_said(tmp_path, unpacked):
    b, ub, _ = unpacked
    left = ub.root.parent / f".tmp-{ub.root.name}.99999999"
    (left / "dataset").mkdir(parents=True)
    (left / "dataset" / "half.txt").write_bytes(b"x" * 1000)
    other = ub.root.parent / ".tmp-0123456789ab.4242"      # another bundle's, nobody holds its lock
    other.mkdir()
    _, said = _again(b, tmp_path)
    assert not left.exists() and not other.exists()
    assert sum("left by an unpack that was killed" in s for s in said) == 2
    assert not any(".tmp-" in s and "/" in s.split(".tmp-")[0][-1:] for s in said)


def test_a_leftover_whose_lock_is_held_is_left_alone(tmp_path, unpacked):
    b, ub, _ = unpacked
    busy = ub.root.parent / ".tmp-fedcba987654.1"
    busy.mkdir()
    fd = os.open(ub.root.parent / ".lock-fedcba987654", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _again(b, tmp_path)
        assert busy.exists()                               # being unpacked by someone else right now
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------ dry run
def test_dry_run_verifies_and_writes_nothing(tmp_path):
    b = craft(tmp_path / "b.tar")
    ub = bf.use_bundle(b, tmp_path / "data", dry_run=True, say=lambda s: None)
    assert ub.pending and not (tmp_path / "data").exists()
    files = good_files()
    listed = [{"name": n, "bytes": len(d), "sha256": _sha(d)} for n, d in files.items()]
    listed[-1]["sha256"] = "f" * 64
    with pytest.raises(ConfigError, match="is damaged"):
        bf.use_bundle(craft(tmp_path / "bad.tar", files, listed=listed), tmp_path / "data", dry_run=True)
    assert not (tmp_path / "data").exists()


def test_dry_run_plans_from_a_sound_unpack(tmp_path, unpacked):
    b, ub, _ = unpacked
    before = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "data").rglob("*"))
    again = bf.use_bundle(b, tmp_path / "data", dry_run=True, say=lambda s: None)
    assert not again.pending and again.root == ub.root
    (ub.root / "dataset" / "in.txt").write_bytes(b"x")
    assert bf.use_bundle(b, tmp_path / "data", dry_run=True, say=lambda s: None).pending    # differs: no repair
    assert (ub.root / "dataset" / "in.txt").read_bytes() == b"x"
    assert len(before) == len(list((tmp_path / "data").rglob("*")))


def test_cli_data_dry_run_with_a_bundle_writes_nothing(tmp_path, capsys, monkeypatch):
    cwd = make_world(tmp_path)
    craft(cwd / "b.tar")
    r = run_kitctl(["data", "--bundle", "b.tar", "--dry-run"], cwd, capsys, monkeypatch)
    assert r.code == 0 and "Nothing was written" in r.out + r.err, r.out + r.err
    assert not (cwd / "data" / "bundles").exists()


# ------------------------------------------------------------------------------------------ preset
def test_a_bundle_packed_for_another_preset_is_refused(tmp_path):
    b = bf.open_bundle(craft(tmp_path / "b.tar"))
    ub = bf.Unpacked(tmp_path / "u", b.manifest, b.path)
    with pytest.raises(ConfigError, match="packed for preset gpt2-124m") as e:
        apply_bundle(ReproduceOptions(preset="gpt2-350m"), ub)
    assert "gpt2-350m" in e.value.message
    assert apply_bundle(ReproduceOptions(preset="gpt2-124m"), ub).dataset == str(tmp_path / "u" / "dataset/in.txt")
    assert apply_bundle(ReproduceOptions(preset="gpt2-350m", dataset="in.txt"), ub).preset == "gpt2-350m"


# ------------------------------------------------------------------------------------------ packing
def test_packing_leaves_symlinks_out_of_a_dataset_folder_saying_so(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(CORPUS)
    (folder / "sub" / "b.txt").write_bytes(CORPUS)
    (folder / "passwd.txt").symlink_to("/etc/passwd")
    (folder / "sub" / "loop.txt").symlink_to(folder / "a.txt")      # a link inside the folder: left out too
    (folder / "linked").symlink_to("/etc", target_is_directory=True)
    said: list[str] = []
    files, contents = pack._dataset(pack.PackOptions(out=tmp_path / "o.tar", dataset=str(folder)), tmp_path / "w",
                                    said.append)
    assert sorted(n for n, _ in files) == ["dataset/corpus/a.txt", "dataset/corpus/sub/b.txt"]
    assert any("2 symlink(s) left out" in s and "passwd.txt" in s for s in said), said
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.parquet").write_bytes(b"PAR1")
    (src / "evil.parquet").symlink_to("/etc/passwd")
    assert [f.name for f in pack._files_under(src, "--source", said.append)] == ["x.parquet"]


def test_packing_refuses_only_links_as_a_dataset(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "passwd.txt").symlink_to("/etc/passwd")
    with pytest.raises(ConfigError, match="every input file is a symlink"):
        pack._dataset(pack.PackOptions(out=tmp_path / "o.tar", dataset=str(folder)), tmp_path / "w", lambda s: None)


@pytest.mark.parametrize("setup, args, says", [
    ("input", ["--dataset", "input.txt"], "one of the bundle's inputs"),
    ("input", ["--dataset", "input.txt", "--dry-run"], "one of the bundle's inputs"),
    ("hellaswag", ["--dataset", "input.txt", "--hellaswag-source", "out.tar"], "one of the bundle's inputs"),
    ("other", ["--dataset", "input.txt"], "exists and is not a kitctl bundle"),
    ("fifo", ["--dataset", "input.txt"], "is a FIFO"),
])
def test_cli_bundle_out_never_destroys_a_file(tmp_path, capsys, monkeypatch, setup, args, says):
    cwd = make_world(tmp_path)
    out = cwd / ("input.txt" if setup == "input" else "out.tar")
    if setup == "fifo":
        os.mkfifo(out)
    elif setup != "input":
        out.write_text("my thesis\n")
    before = out.read_bytes() if setup != "fifo" else None
    r = run_kitctl(["bundle", "--out", out.name, *args, "--no-images"], cwd, capsys, monkeypatch)
    assert r.code == 2 and says in r.out + r.err, r.out + r.err
    if before is not None:
        assert out.read_bytes() == before


def test_bundle_out_replaces_a_bundle_and_other_files_only_with_force(tmp_path):
    old = craft(tmp_path / "old.tar")
    pack.check_out(old, pack.PackOptions(out=old))                # a bundle: replaced, no --force needed
    other = tmp_path / "notes.tar"
    other.write_text("notes\n")
    with pytest.raises(ConfigError, match="--force"):
        pack.check_out(other, pack.PackOptions(out=other))
    pack.check_out(other, pack.PackOptions(out=other, force=True))
    with pytest.raises(ConfigError, match="one of the bundle's inputs"):
        pack.check_out(other, pack.PackOptions(out=other, force=True, hellaswag_source=other))


# ------------------------------------------------------------------------------------------ the image adopted
def _fake_docker(tmp_path: Path, monkeypatch, loaded: list[str]) -> Path:
    """A stand-in `docker` on PATH that says what `docker load` says (the engine is not what is tested here: the
    kit's reading of what it reports is)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    lines = "".join(f"echo 'Loaded image: {ref}'\n" for ref in loaded)
    (bin_dir / "docker").write_text(f"#!/bin/sh\n[ \"$1\" = load ] || exit 1\n{lines}")
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


@pytest.mark.parametrize("loaded, want, says", [
    (["other/image:latest"], "llmc-kit:latest", "docker load reported other/image:latest"),
    ([], "llmc-kit:latest", "no tagged image"),
    (["--format=x"], "llmc-kit:latest", "not a Docker image reference"),
    (["llmc-kit:latest"], "--help", "not a Docker image reference"),
    (["llmc-kit:latest"], None, "names no image reference"),
])
def test_the_image_adopted_is_the_one_docker_load_reported(tmp_path, monkeypatch, loaded, want, says):
    from kitctl.host import registry
    _fake_docker(tmp_path, monkeypatch, loaded)
    with pytest.raises(ConfigError, match=says):
        registry.load_expected(tmp_path / "x.tar", want, "the bundle's runtime image", lambda s: None)


def test_a_loaded_image_equal_to_the_manifest_is_adopted(tmp_path, monkeypatch):
    from kitctl.host import registry
    _fake_docker(tmp_path, monkeypatch, ["docker.io/library/llmc-kit:latest"])
    assert registry.load_expected(tmp_path / "x.tar", "llmc-kit:latest", "img", lambda s: None) == "llmc-kit:latest"


# ------------------------------------------------------------------------------------------ real processes
UNPACK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from kitctl.core import bundle as bf
    from kitctl.core.errors import KitError
    b = bf.open_bundle(Path(sys.argv[1]))
    delay = float(sys.argv[3])

    class Bar:
        started = False
        def __enter__(self): return self
        def __exit__(self, *a): return False
        def advance(self, n):
            if not self.started:
                print("STARTED", flush=True)
                self.started = True
            time.sleep(delay)

    try:
        root = bf.ensure_unpacked(b, Path(sys.argv[2]), Bar, lambda s: print(s, flush=True))
        print("DONE", root, flush=True)
    except KitError as e:
        print("ERROR", e.message, flush=True)
        sys.exit(e.exit_code)
""")


def _big_bundle(tmp_path: Path, mb: int = 8) -> Path:
    files = {**good_files(), "dataset/big.bin": os.urandom(mb << 20)}
    return craft(tmp_path / "big.tar", files)


def _start(b: Path, root: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", UNPACK, str(b), str(root), str(delay)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_processes_unpacking_one_bundle_at_once_both_get_it_whole(tmp_path):
    b = _big_bundle(tmp_path)
    root = tmp_path / "bundles"
    procs = [_start(b, root, 0.02), _start(b, root, 0.02)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("waiting for it" in o for o in outs) >= 1 or sum("STARTED" in o for o in outs) == 1, outs
    key = bf.open_bundle(b).key
    assert sorted(p.name for p in root.iterdir()) == [f".lock-{key}", key]
    assert (root / key / "dataset" / "big.bin").stat().st_size == 8 << 20


@pytest.mark.slow
def test_a_second_process_waits_for_the_lock_then_reuses_the_unpack(tmp_path):
    b = craft(tmp_path / "b.tar")
    root = tmp_path / "bundles"
    root.mkdir()
    key = bf.open_bundle(b).key
    fd = os.open(root / f".lock-{key}", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    p = _start(b, root, 0)
    try:
        assert p.stdout is not None
        assert "waiting for it" in p.stdout.readline()
        bf.unpack(bf.open_bundle(b), root)                  # "the first process" finishes meanwhile
    finally:
        os.close(fd)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 0 and "STARTED" not in out and f"DONE {root / key}" in out, out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_unpack_removes_the_partial_folder_and_says_so(tmp_path, sig):
    b = _big_bundle(tmp_path)
    root = tmp_path / "bundles"
    p = _start(b, root, 0.05)
    assert p.stdout is not None and p.stdout.readline().strip() == "STARTED"
    p.send_signal(sig)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 130, out
    assert "interrupted while unpacking" in out and "partial unpack was removed" in out and ".tmp-" not in out
    assert [x.name for x in root.iterdir()] == [f".lock-{bf.open_bundle(b).key}"]


@pytest.mark.slow
def test_a_killed_unpack_leaves_a_temp_folder_the_next_run_removes(tmp_path):
    b = _big_bundle(tmp_path)
    root = tmp_path / "bundles"
    p = _start(b, root, 0.05)
    assert p.stdout is not None and p.stdout.readline().strip() == "STARTED"
    p.kill()
    p.wait(timeout=30)
    time.sleep(0.05)
    assert [x for x in root.iterdir() if x.name.startswith(".tmp-")]
    said: list[str] = []
    dest = bf.ensure_unpacked(bf.open_bundle(b), root, lambda: _NoBar(), said.append)
    assert any("left by an unpack that was killed" in s for s in said), said
    assert not [x for x in root.iterdir() if x.name.startswith(".tmp-")] and (dest / "dataset" / "big.bin").is_file()


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def advance(self, n):
        pass


def test_unpack_errors_name_no_temp_path(tmp_path):
    b = bf.open_bundle(craft(tmp_path / "b.tar"))
    root = tmp_path / "bundles"
    root.mkdir()
    (root / f".tmp-{b.key}.{os.getpid()}").write_text("in the way\n")      # the temp folder cannot be made
    with pytest.raises(ConfigError) as e:
        bf.unpack(b, root)
    assert e.value.message.startswith(f"cannot unpack {b.path} under {root}:") and ".tmp-" not in e.value.message


def test_reproduce_dry_run_plans_from_a_temporary_copy_outside_the_data_root(tmp_path):
    files = {**good_files(), bf.IMAGE_RUNTIME: b"a docker save tar"}
    b = craft(tmp_path / "b.tar", files, contents={**good_contents(), "images": {"runtime": {"ref": "llmc-kit:x"}}})
    ub = bf.use_bundle(b, tmp_path / "data", dry_run=True, say=lambda s: None)
    view = bf.dry_run_view(ub)
    try:
        assert not (tmp_path / "data").exists() and not str(view.root).startswith(str(tmp_path))
        assert view.hellaswag is not None and view.hellaswag.read_bytes() == HS
        assert not (view.root / bf.IMAGE_RUNTIME).exists() and view.image("runtime") is not None   # named, not copied
    finally:
        import shutil
        shutil.rmtree(view.root)


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_a_header_declaring_gigabytes_is_refused_before_it_is_read(tmp_path, kind):
    ti = tarfile.TarInfo("././@LongHeader")
    ti.type, ti.size = kind, 4 << 30
    buf = ti.tobuf(tarfile.USTAR_FORMAT)
    p = tmp_path / "b.tar"
    with open(p, "wb") as f:                      # sparse: 4 GiB of zeros that tarfile would read into memory
        f.write(buf)
        f.truncate(len(buf) + (4 << 30) + 10240)
    t = time.monotonic()
    with pytest.raises(ConfigError, match="header of 4,294,967,296 bytes"):
        bf.open_bundle(p)
    assert time.monotonic() - t < 2
