"""The registry and the image lock you can trust (issue 26): no hang, no unbounded read, no silent choice.

* a registry on loopback that accepts the connection and never answers (a Python socket server in a thread):
  the probe says so within its timeout, naming the registry; a command that prints nothing is stopped;
* ``--push`` / ``--image`` validated before anything is built (``--push ''`` included), naming the rule;
* pushed.json and the lock read through the kit's bounded regular-file reader: FIFO, /dev/zero, a sparse 8 GiB
  file, a folder, 100,000-deep JSON: exit 2 naming the path, never a hang or a RecursionError;
* a key written twice in a lock section: exit 2 naming both lines;
* `kitctl lock` writes beside the kit.yaml in use; builds read it from there; the kit's own docker/ is never written.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kitctl.core import proc
from kitctl.core.errors import ConfigError, KitError
from kitctl.host import registry
from kitctl.images import lock as lk

sys.path.insert(0, str(Path(__file__).parent))
from harness import CaseTimeout, make_special, make_world, run_kitctl  # noqa: E402, F401

D1 = "sha256:" + "1" * 64


class Silent:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte (a stuck registry)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.held.append(conn)          # read nothing, answer nothing, close nothing
            except OSError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for c in self.held:
            c.close()
        self.sock.close()


@pytest.fixture
def silent():
    s = Silent()
    yield s
    s.close()


def test_a_registry_that_accepts_and_never_answers_is_named_within_the_timeout(silent):
    t = time.monotonic()
    with pytest.raises(KitError) as e:
        registry.probe(f"127.0.0.1:{silent.port}", timeout=0.3)
    took = time.monotonic() - t
    assert took < 2, took
    assert f"the registry 127.0.0.1:{silent.port} accepted a connection" in e.value.message
    assert "did not answer GET /v2/ within 0.3 s" in e.value.message and silent.held


def test_a_registry_that_answers_passes_the_probe():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def answer() -> None:
        c, _ = srv.accept()
        c.recv(1024)
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        c.close()

    th = threading.Thread(target=answer, daemon=True)
    th.start()
    try:
        registry.probe(f"127.0.0.1:{srv.getsockname()[1]}", timeout=5)
    finally:
        th.join(5)
        srv.close()


def test_a_registry_nobody_listens_on_is_left_to_docker():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                # nothing listens there now: the engine's own error will say it
    registry.probe(f"127.0.0.1:{port}", timeout=0.3)


def test_push_to_a_silent_registry_fails_naming_it_before_docker_runs(silent, tmp_path, monkeypatch):
    ran = tmp_path / "docker-ran"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f"#!/bin/sh\ntouch {ran}\nsleep 60\n")
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("KIT_REGISTRY_ANSWER_S", "0.3")
    with pytest.raises(KitError, match=f"127.0.0.1:{silent.port} accepted a connection"):
        registry.push(f"127.0.0.1:{silent.port}/llmc-kit:latest", lambda s: None)
    assert not ran.exists()


@pytest.mark.slow
def test_a_command_that_goes_quiet_is_stopped_and_said():
    t = time.monotonic()
    res = proc.stream(["sh", "-c", "echo pushing; exec sleep 60"], lambda s: None, idle_s=0.3, grace_s=1)
    assert res.idle and not res.interrupted and res.tail == ["pushing"] and time.monotonic() - t < 10
    busy = proc.stream(["sh", "-c", "for i in 1 2 3 4 5; do echo $i; sleep 0.1; done"], lambda s: None, idle_s=0.3)
    assert busy.returncode == 0 and not busy.idle          # lines keep it alive


# ------------------------------------------------------------------------------------------ --push / --image
@pytest.mark.parametrize("value, says", [
    ("", "an empty repository"), ("   ", "an empty repository"),
    ("127.0.0.1:5000/llmc-kit:v1", "without a tag"), ("127.0.0.1:5000/llmc-kit@sha256:" + "a" * 64, "without a tag"),
    ("--all-tags", "not a Docker image reference"), ("Registry/UPPER", "not a Docker image reference"),
    ("host:5000/a b", "not a Docker image reference"), ("host/x\nRUN id", "control character"),
])
def test_push_repositories_are_checked_naming_the_rule(value, says):
    with pytest.raises(ConfigError, match=says) as e:
        registry.check_push_repo(value)
    assert e.value.exit_code == 2


@pytest.mark.parametrize("argv, says", [
    (["build", "--push", "", "--dry-run"], "--push '': an empty repository"),
    (["build", "--push", "127.0.0.1:5000/x:tag", "--dry-run"], "without a tag"),
    (["build", "--image", "-x", "--dry-run"], "--image '-x' is not a Docker image reference"),
    (["data", "--image", "bad ref", "--dry-run"], "is not a Docker image reference"),
])
def test_cli_push_and_image_are_refused_before_anything_runs(tmp_path, capsys, monkeypatch, argv, says):
    cwd = make_world(tmp_path)
    r = run_kitctl(argv, cwd, capsys, monkeypatch)
    assert r.code == 2 and says in r.out + r.err, r.out + r.err
    assert not (cwd / ".kit").exists()                      # nothing rendered, built or pulled


# ------------------------------------------------------------------------------------------ pushed.json
def _special(tmp_path: Path, kind: str) -> Path:
    p = tmp_path / "pushed.json"
    if kind in ("fifo", "zero", "folder", "sparse"):
        make_special(p, kind)
    elif kind == "nested":
        p.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif kind == "damaged":
        p.write_text('{"images": [1, 2')
    return p


@pytest.mark.parametrize("kind, says", [("fifo", "FIFO"), ("zero", "character device"), ("folder", "folder"),
                                        ("sparse", "too large"), ("nested", "levels deep"),
                                        ("damaged", "not a readable")])
def test_pushed_json_is_read_bounded_and_checked_before_any_push(tmp_path, kind, says):
    p = _special(tmp_path, kind)
    t = time.monotonic()
    with pytest.raises(ConfigError, match=says) as e:
        registry.read_pushed(p)
    assert time.monotonic() - t < 5 and e.value.exit_code == 2
    if kind in ("nested", "damaged"):
        assert "mv " in (e.value.hint or "")


# ------------------------------------------------------------------------------------------ the lock
@pytest.mark.parametrize("kind, says", [("fifo", "FIFO"), ("zero", "character device"), ("folder", "folder"),
                                        ("sparse", "too large")])
def test_a_lock_that_is_not_a_small_regular_file_is_refused_at_once(tmp_path, kind, says):
    p = _special(tmp_path, kind).rename(tmp_path / "images.lock")
    t = time.monotonic()
    with pytest.raises(ConfigError, match=says):
        lk.load(p)
    assert time.monotonic() - t < 5


def test_cli_render_with_a_fifo_lock_is_exit_2_not_a_hang(tmp_path, capsys, monkeypatch):
    cwd = make_world(tmp_path)
    os.mkfifo(cwd / "images.lock")                          # beside kit.yaml: the default lock
    r = run_kitctl(["render", "--stdout"], cwd, capsys, monkeypatch)
    assert r.code == 2 and "image lock" in r.out + r.err and "FIFO" in r.out + r.err, r.out + r.err


@pytest.mark.parametrize("line, again", [
    ("digest = " + "sha256:" + "2" * 64, "digest twice in [data] (line 4 and line 7)"),
    ("base = debian:trixie", "base twice in [data] (line 3 and line 7)"),
    ("source = local", "source twice in [data] (line 5 and line 7)"),
    ("python3=3.11.9", "python3 twice in [data] (line 6 and line 7)"),
])
def test_a_key_twice_in_a_lock_section_names_both_lines(line, again):
    text = f"# lock\n[data]\nbase = debian:bookworm\ndigest = {D1}\nsource = registry\npython3=3.11.2\n{line}\n"
    with pytest.raises(ConfigError) as e:
        lk.parse(text, "images.lock")
    assert again in e.value.message and e.value.exit_code == 2


LOCK_PATHS = """
import sys
from kitctl.core.errors import KitError
from kitctl.images import lock as lk
try:
    print("WRITE", lk.write_path(None))
except KitError as e:
    print("REFUSED", e.message)
print("READ", lk.default_path())
print("SHIPPED", lk.shipped_path())
"""


def _lock_paths(cwd: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["HOME"] = str(home)
    out = subprocess.run([sys.executable, "-c", LOCK_PATHS], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in out.stdout.splitlines()}


@pytest.mark.slow
def test_the_lock_lives_beside_the_kit_yaml_in_use(tmp_path):
    cwd = make_world(tmp_path)
    sub = cwd / "deeper"
    sub.mkdir()
    got = _lock_paths(sub, tmp_path / "home")                # kit.yaml found in a parent folder
    assert got["WRITE"] == str(cwd / "images.lock")
    assert got["READ"] == got["SHIPPED"] and "images.lock" in got["SHIPPED"]   # none written yet: the kit's own
    (cwd / "images.lock").write_text(f"[data]\nbase = debian:bookworm\ndigest = {D1}\nsource = registry\n")
    assert _lock_paths(sub, tmp_path / "home")["READ"] == str(cwd / "images.lock")
    bare = tmp_path / "bare"
    bare.mkdir()
    got = _lock_paths(bare, tmp_path / "home")
    assert got["REFUSED"].startswith("no kit.yaml in use") and not got["SHIPPED"].startswith(str(bare))


@pytest.mark.slow
@pytest.mark.docker
def test_doctor_reports_a_fifo_lock_as_a_failed_row_and_goes_on(tmp_path):
    cwd = make_world(tmp_path)
    os.mkfifo(cwd / "images.lock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["HOME"] = str(tmp_path / "home")
    r = subprocess.run([sys.executable, "-m", "kitctl", "doctor", "--json"], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=120)
    rows = {f["check"]: f for f in __import__("json").loads(r.stdout)["findings"]}
    assert rows["image lock"]["status"] == "fail" and "is a FIFO (named pipe)" in rows["image lock"]["detail"]
    assert len(rows) > 3                                    # the rest of the report is there
