"""The one atomic writer and the one limited YAML reader: the promises docs/reliability.md makes about them."""
from __future__ import annotations

import errno
import subprocess
import time

import pytest
from mounts import mount_tmpfs, unmount

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import atomic_output, replace_atomic, temp_path, write_atomic
from kitctl.core.records import MAX_ERROR_CHARS, Record, parse_yaml, read_yaml_file, short


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device"),
                                 RuntimeError("producer crashed")])
def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, exc):
    target = tmp_path / "manifest.json"
    write_atomic(target, "old complete\n")
    with pytest.raises(type(exc)), atomic_output(target, "w") as f:
        f.write("new but half")
        raise exc
    assert target.read_text() == "old complete\n"
    assert leftovers(tmp_path) == []


def test_failed_first_write_leaves_no_final_name(tmp_path):
    target = tmp_path / "report.png"
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as f:
        f.write(b"\x89PNG half")
        raise KeyboardInterrupt
    assert not target.exists() and leftovers(tmp_path) == []


def test_replace_atomic_removes_the_temp_when_the_rename_fails(tmp_path):
    tmp = temp_path(tmp_path / "x.bin")
    tmp.write_bytes(b"done")
    with pytest.raises(OSError):
        replace_atomic(tmp, tmp_path / "missing-folder" / "x.bin")
    assert not tmp.exists()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs: a real ENOSPC (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    mount_tmpfs(mnt, "256k")
    yield mnt
    unmount(mnt)


def test_real_disk_full_keeps_the_old_file_and_no_temp(tiny_disk):
    target = tiny_disk / "report.html"
    write_atomic(target, "<html>old</html>\n")
    with pytest.raises(OSError) as e:
        write_atomic(target, b"x" * (1 << 20))
    assert e.value.errno == errno.ENOSPC
    assert target.read_text() == "<html>old</html>\n"
    assert leftovers(tiny_disk) == []


@pytest.mark.slow
def test_cli_says_disk_full_on_a_real_enospc(tiny_disk, tmp_path):
    """`kitctl init` onto a full disk: exit 1, "the disk is full", the old kit.yaml untouched."""
    import sys

    cfg = tiny_disk / "kit.yaml"
    cfg.write_text("data_root: ./data\n")
    with open(tiny_disk / "filler", "wb", buffering=0) as f, pytest.raises(OSError):   # fill it to the last block
        while True:
            f.write(b"\0" * 4096)
    r = subprocess.run([sys.executable, "-m", "kitctl", "init", str(cfg), "--force"], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "disk is full" in r.stderr and "Traceback" not in r.stderr
    assert cfg.read_text() == "data_root: ./data\n" and leftovers(tiny_disk) == []


def test_yaml_alias_bomb_is_refused_fast(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        parse_yaml(bomb, "bomb.yaml")
    took = time.perf_counter() - t0
    assert "aliases" in e.value.message and len(e.value.message) <= MAX_ERROR_CHARS + 40
    print(f"alias bomb refused in {took * 1e3:.2f} ms")


def test_yaml_file_refusals(tmp_path):
    cases = {"bin.yaml": b"a: 1\n\0\0", "l1.yaml": "a: caf\xe9\n".encode("latin-1"),
             "big.yaml": b"#" * (2 << 20)}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    for name, needle in (("bin.yaml", "binary"), ("l1.yaml", "UTF-8"), ("big.yaml", "too large"),
                         ("nope.yaml", "no kit.yaml"), (".", "is a folder")):
        with pytest.raises(ConfigError) as e:
            read_yaml_file(tmp_path / name, "kit.yaml")
        assert needle in e.value.message and e.value.hint, (name, e.value.message)
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    with pytest.raises(ConfigError):
        read_yaml_file(tmp_path / "loop.yaml")


@pytest.mark.slow
def test_yaml_syntax_error_is_short(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_yaml("k: [" + "x, " * 20_000, "long.yaml")
    assert len(e.value.message) < 2 * MAX_ERROR_CHARS


def test_short():
    assert short("abc") == "abc"
    s = short("x" * 10_000)
    assert len(s) <= MAX_ERROR_CHARS and s.endswith("(10,000 chars)")


class Thing(Record):
    KIND = "thing"
    SCHEMA = 2
    n: int = 0


def test_record_read_errors_name_the_file(tmp_path):
    p = tmp_path / "thing.json"
    Thing(n=3).write(p)
    assert Thing.read(p).n == 3
    for content, needle in ((b"\0\xff", "not a readable thing"), (b"[1]", "not a thing"),
                            (b'{"schema_version": 9}', "newer kitctl"), (b'{"n": "x"}', "damaged thing"),
                            (b'{"n": "' + b"x" * 100_000 + b'"}', "damaged thing")):
        p.write_bytes(content)
        with pytest.raises(KitError) as e:
            Thing.read(p)
        assert needle in e.value.message and str(p) in e.value.message and len(e.value.message) < 1000


def test_tidy_on_failure_removes_only_the_empty_folders_it_saw_missing(tmp_path):
    from kitctl.core.files import tidy_on_failure

    deep = tmp_path / "native" / "llm.c"
    with pytest.raises(RuntimeError), tidy_on_failure(deep):
        deep.mkdir(parents=True)
        raise RuntimeError("no network")
    assert not (tmp_path / "native").exists() and tmp_path.exists()
    # what the body wrote stays (a resume needs it), with the folders that hold it
    with pytest.raises(RuntimeError), tidy_on_failure(deep):
        deep.mkdir(parents=True)
        (tmp_path / "native" / "kept").write_text("x")
        raise RuntimeError("later")
    assert (tmp_path / "native" / "kept").exists() and not deep.exists()
    with tidy_on_failure(tmp_path / "ok"):         # success: nothing is touched
        (tmp_path / "ok").mkdir()
    assert (tmp_path / "ok").is_dir()


def test_yaml_refuses_leading_zero_ints_and_deep_nesting_but_reads_plain_ones():
    assert parse_yaml("a: [0, 10, -3, 0x1F, 1_000, '075']") == {"a": [0, 10, -3, 31, 1000, "075"]}
    with pytest.raises(ConfigError, match="075 is read as octal 61 by YAML"):
        parse_yaml("arch: [075]")
    with pytest.raises(ConfigError, match="more than 64 levels"):
        parse_yaml("a: " + "[" * 65 + "]" * 65)
    assert parse_yaml("a: " + "[" * 63 + "]" * 63)["a"] is not None


def test_a_record_nested_past_the_limit_is_exit_2_not_recursion(tmp_path):
    class R(Record):
        KIND = "test record"

    p = tmp_path / "r.json"
    for text in ('{"x": ' + "[" * 65 + "]" * 65 + "}", '{"x": ' + "[" * 200_000 + "]" * 200_000 + "}"):
        p.write_text(text)
        with pytest.raises(ConfigError, match="levels deep"):
            R.read(p)
    p.write_text('{"x": ' + "[" * 10 + "]" * 10 + "}")
    assert R.read(p).schema_version == 1
