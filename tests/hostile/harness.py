"""Run kitctl in-process on a throw-away "world" and record what it did: exit code, output, the file system.

The world (under pytest's tmp_path)::

    cwd/                 kitctl's working directory
    cwd/kit.yaml         data_root: ./data, runtime: native (unless a case writes its own)
    cwd/data/            the data root: shards/ (a tiny valid shard folder), runs/r1 (a run with main.log)
    cwd/two.csv          an inventory of two RTX 3090s (plans without GPUs)
    cwd/input.txt        a small text file
    home/                $HOME (nothing may land in the real one)

Every path in the world is snapshotted (type, size, sha256, mode) before and after a case: a hostile case must
leave exactly what was there (nothing new, nothing changed, nothing removed) unless the case says otherwise.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Optional, Union

import numpy as np

CASE_SECONDS = 30          # a case that runs longer is stuck (e.g. a server that should have been refused)
MAX_ERROR_OUTPUT = 4000    # a refusal is a few lines, never megabytes

TWO_3090 = ("0, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 570.86.10\n"
            "1, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 570.86.10\n")
MAIN_LOG = "".join(f"s:{s} trl:{10 - s * 0.1:.4f} lr:0.000600 norm:1.00\n" for s in range(10)) + "s:9 tel:9.0000\n"


@dataclass
class Result:
    code: int
    out: str
    err: str
    world: Path
    cwd: Path
    last_resort: list[str] = field(default_factory=list)   # what reached cli._unexpected / cli._os_error

    @property
    def text(self) -> str:
        """stdout + stderr, whitespace-normalised (rich wraps long lines) and lower-cased."""
        return " ".join((self.out + "\n" + self.err).split()).lower()


@dataclass
class Case:
    """One hostile input: argv, what to set up, what must come out."""

    id: str
    argv: list[str]
    code: int = 2
    says: tuple[str, ...] = ()            # substrings of the (whitespace-normalised, lower-cased) output
    files: dict[str, Union[str, bytes]] = field(default_factory=dict)   # written under cwd/ before the run
    env: dict[str, str] = field(default_factory=dict)
    setup: Optional[Callable[[Path], None]] = None                     # called with cwd/ after files
    may_change: tuple[str, ...] = ()      # globs (relative to the world root) a case may create or change
    area: Optional[str] = None            # root fix lives in another area: xfail(strict) until it is merged
    hint: bool = True                     # a refusal must say how to fix it
    check: Optional[Callable[[Result], None]] = None                   # extra assertions


class CaseTimeout(BaseException):
    """Raised by the alarm in the middle of a case that hangs (BaseException: no `except Exception` eats it)."""


def write_shard(path: Path, n_tokens: int) -> None:
    header = np.zeros(256, dtype="<i4")
    header[:3] = (20240520, 1, n_tokens)
    path.write_bytes(header.tobytes() + (np.arange(n_tokens) % 50257).astype("<u2").tobytes())


def make_world(root: Path) -> Path:
    cwd = root / "cwd"
    (root / "home").mkdir(parents=True)
    data = cwd / "data"
    shards = data / "shards"
    shards.mkdir(parents=True)
    write_shard(shards / "tiny_val_000000.bin", 4096)
    write_shard(shards / "tiny_train_000001.bin", 65536)
    run = data / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "main.log").write_text(MAIN_LOG)
    (cwd / "kit.yaml").write_text("data_root: ./data\nruntime: native\n")
    (cwd / "two.csv").write_text(TWO_3090)
    (cwd / "input.txt").write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 200)   # ~3,000 tokens: a val shard and a training shard (llm.c needs 1,025 tokens in each)
    return cwd


def snapshot(root: Path) -> dict[str, tuple]:
    """path (relative to root) -> (kind, size, sha256 or link target, mode) for everything under root."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(p), 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", 0, "", stat.S_IMODE(st.st_mode))
            elif not stat.S_ISREG(st.st_mode):          # a FIFO, socket or device: never opened (it may block)
                out[rel] = ("special", 0, stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode))
            else:
                try:
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                except PermissionError:
                    digest = "unreadable"
                out[rel] = ("file", st.st_size, digest, stat.S_IMODE(st.st_mode))
    return out


def diff(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    lines = [f"new: {p}" for p in sorted(set(after) - set(before))]
    lines += [f"removed: {p}" for p in sorted(set(before) - set(after))]
    lines += [f"changed: {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
    return lines


def _matches(path: str, globs: tuple[str, ...]) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(path, g) or path.startswith(g.rstrip("*").rstrip("/") + "/") for g in globs)


@contextlib.contextmanager
def _alarm(seconds: int):
    def ring(signum, frame):
        raise CaseTimeout(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_kitctl(argv: list[str], cwd: Path, capsys, monkeypatch, env: Optional[dict[str, str]] = None) -> Result:
    """``kitctl ARGV`` in this process (cli.main with sys.argv patched); SystemExit -> the exit code."""
    import cli_once
    from kitctl import cli

    cli_once.install()         # the click command built once per process, as a real run does (tests/cli_once.py)

    for key in list(os.environ):
        if key.startswith("KIT_") or key in ("KITCTL_DEBUG", "TIKTOKEN_CACHE_DIR", "HF_HOME"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(cwd.parent / "home"))
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v.replace("{cwd}", str(cwd)))
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["kitctl", *(a.replace("{cwd}", str(cwd)) for a in argv)])
    for c in (cli.console, cli.err_console):        # wide consoles: no folded paths in the messages
        monkeypatch.setattr(c, "_width", 400)
    last_resort: list[str] = []

    def spy(real):
        def wrapped(e):
            last_resort.append(f"{real.__name__}({type(e).__name__}: {e})")
            return real(e)
        return wrapped

    monkeypatch.setattr(cli, "_unexpected", spy(cli._unexpected))
    monkeypatch.setattr(cli, "_os_error", spy(cli._os_error))
    capsys.readouterr()
    code = 0
    environ = dict(os.environ)          # commands may set variables themselves (TIKTOKEN_CACHE_DIR ...)
    try:
        with _alarm(CASE_SECONDS):
            try:
                cli.main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.environ.clear()
        os.environ.update(environ)
    cap = capsys.readouterr()
    return Result(code, cap.out, cap.err, cwd.parent, cwd, last_resort)


def check_refusal(case: Case, r: Result) -> None:
    """The promises for bad input: the exit code, one clear message with a hint, nothing else."""
    where = f"argv={case.argv}\nexit={r.code}\nstdout={r.out[-1500:]}\nstderr={r.err[-1500:]}"
    assert r.code == case.code, where
    assert "traceback" not in r.text, where
    assert "internal error" not in r.text, where
    assert not r.last_resort, f"reached the last-resort error path: {r.last_resort}\n{where}"
    if case.code != 0:
        assert len(r.err) < MAX_ERROR_OUTPUT, f"{len(r.err)} chars of error output\n{where}"
        assert re.search(r"^(error|usage):", r.err.strip().lower(), re.M), where
        if case.hint:
            assert "hint:" in r.err.lower(), where
    for s in case.says:
        assert s.lower() in r.text, f"missing {s!r}\n{where}"


# ------------------------------------------------------------------------------------------ read-only folders

_MOUNTS: list[Path] = []


def make_readonly(folder: Path) -> None:
    """Make ``folder`` (created if missing) read-only for this process: chmod for a normal user; root ignores
    modes, so there a read-only bind mount (skips the case where mounting is not allowed)."""
    import subprocess

    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    r = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"running as root and cannot make a read-only bind mount: {r.stderr.strip()}")
    _MOUNTS.append(folder)


def make_full_disk(folder: Path, keep: Optional[dict[str, str]] = None) -> None:
    """Mount a 128 KiB tmpfs on ``folder`` (files ``keep`` written first) and fill it: the next write is ENOSPC.
    Root only (skips the case elsewhere)."""
    from mounts import mount_tmpfs

    folder.mkdir(parents=True, exist_ok=True)
    mount_tmpfs(folder, "128k")
    _MOUNTS.append(folder)
    for rel, text in (keep or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    with open(folder / ".filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def undo_mounts() -> None:
    import subprocess

    while _MOUNTS:
        subprocess.run(["umount", str(_MOUNTS.pop())], capture_output=True)


def play(case: Case, tmp_path: Path, capsys, monkeypatch, *, guard: Callable[[], ContextManager] = contextlib.nullcontext,
         before_run: Optional[Callable[[Path], None]] = None, may_change: Optional[tuple[str, ...]] = None) -> Result:
    """One hostile case, played as every table in tests/hostile plays it: build the world (the case's files, then
    ``before_run`` and the case's setup), snapshot it, run kitctl (inside ``guard``), check the exit code and the
    message, check that nothing but ``may_change`` (default: the case's) changed on disk, then the case's own check.
    The caller undoes mounts / closes sockets it made, after this returns or raises."""
    cwd = make_world(tmp_path)
    for rel, content in case.files.items():
        p = cwd / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    if before_run:
        before_run(cwd)
    if case.setup:
        case.setup(cwd)
    before = snapshot(tmp_path)
    with guard():
        r = run_kitctl(case.argv, cwd, capsys, monkeypatch, case.env)
    after = snapshot(tmp_path)
    check_refusal(case, r)
    allowed = case.may_change if may_change is None else may_change
    changes = [c for c in diff(before, after) if not _matches(c.split(": ", 1)[1], allowed)]
    assert not changes, "the file system changed:\n" + "\n".join(changes[:30])
    if case.check:
        case.check(r)
    return r


def make_special(path: Path, kind: str) -> Optional[socket.socket]:
    """``path`` made into what a hostile user hands the kit instead of a file: "fifo", "zero" (a link to
    /dev/zero), "folder", "sparse" (an 8 GiB hole) or "socket" (listening; returned, for the caller to close);
    "missing" leaves it absent."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    elif kind == "sparse":
        with open(path, "wb") as f:
            f.truncate(8 << 30)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        old = os.getcwd()
        os.chdir(path.parent)        # a short relative name: AF_UNIX paths are limited to ~108 bytes
        try:
            s.bind(path.name)
        finally:
            os.chdir(old)
        s.listen(1)
        return s
    elif kind != "missing":
        raise ValueError(f"make_special: unknown kind {kind!r}")
    return None
