"""A run folder (llm.c's ``-o``): who may write it, and who is writing it now.

The seed of the run-folder class issue 30 grows (run.json, checkpoint names, main.log reader): here are the
facts every writer and reader of a run folder shares about the processes behind it.

- :meth:`RunFolder.writer`: one writer per run folder. ``kitctl train``, the train stage of ``kitctl reproduce``
  and anything else that makes llm.c write checkpoints hold ``<run>/.kitctl-writer.lock`` (flock) for the whole
  session; a second one is refused (exit 1) with the holder's pid, command and how to stop it. The kernel drops
  the lock when the holder dies (kill -9 included), so a stale lock never blocks. The lock is re-entrant within a
  process (reproduce holds it, its train stage takes it again). Writers the lock cannot see are asked for too:
  a ``train_gpt2cu`` whose ``-o`` is this folder (started by hand, or left by a killed kitctl) and what the
  caller knows (the recorded container, still running after its kitctl died).
- :func:`find_llmc_process`, :func:`container_running`: what liveness (``kitctl status``) and the writer check
  both ask of this machine.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Optional

from kitctl.core.errors import KitError
from kitctl.core.proc import start_ticks

LOCK_FILE = ".kitctl-writer.lock"



@dataclass
class _Held:
    file: IO[str]
    depth: int


# run folders this process holds the writer lock of: resolved path -> the open lock file and how deep
_HELD: dict[str, _Held] = {}

OtherWriter = Callable[[], Optional[tuple[str, str]]]   # -> (who writes, how to stop it), or None


def container_running(name: str) -> Optional[bool]:
    """Is the docker container ``name`` running? None when it cannot be told (no docker, no engine)."""
    if shutil.which("docker") is None:
        return None
    try:
        r = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return False if "No such" in (r.stderr + r.stdout) else None
    return r.stdout.strip() == "true"


def find_llmc_process(run_dir: Path, proc: Path = Path("/proc")) -> Optional[int]:
    """A train_gpt2cu process on this host writing to run_dir (its ``-o``), or None. Linux /proc only.

    Finds native runs, including llm.c started by hand, that no run.json describes."""
    try:
        target = run_dir.resolve()
        entries = list(proc.iterdir())
    except OSError:
        return None
    for e in entries:
        if not e.name.isdigit():
            continue
        try:
            args = (e / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = Path(os.readlink(e / "cwd"))
        except OSError:
            continue
        if not any(Path(a).name.startswith("train_gpt2") for a in args[:3]):
            continue
        for i, a in enumerate(args[:-1]):
            if a == "-o":
                try:
                    if (cwd / args[i + 1]).resolve() == target:
                        return int(e.name)
                except (OSError, ValueError):
                    pass
    return None


def _holder(lock: Path) -> str:
    """Who holds the lock, from what its holder wrote in it: 'pid N on HOST (`command`)'."""
    try:
        words = lock.read_text(errors="replace").splitlines()
    except OSError:
        words = []
    fields = dict(w.split("=", 1) for w in words if "=" in w)
    pid = fields.get("pid", "?")
    where = f" on {fields['host']}" if fields.get("host") and fields["host"] != socket.gethostname() else ""
    what = f" ({fields['command']})" if fields.get("command") else ""
    return f"pid {pid}{where}{what}"


class RunFolder:
    """One run folder: ``RunFolder(path).writer("kitctl train ...")`` is the one-writer lock."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    @contextlib.contextmanager
    def writer(self, command: str, others: Optional[OtherWriter] = None,
               proc: Path = Path("/proc")) -> Iterator[None]:
        """Hold the folder's writer lock for the block; refuse (KitError, exit 1) while another kitctl holds it
        or another writer (``train_gpt2cu -o`` here, ``others()``) is live. Re-entrant within this process."""
        self.path.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        held = _HELD.get(key)
        if held is not None:
            held.depth += 1
            try:
                yield
            finally:
                held.depth -= 1
            return
        f = self._acquire(command)
        _HELD[key] = _Held(f, 1)
        try:
            self._refuse_unlocked_writers(others, proc)
            yield
        finally:
            del _HELD[key]
            f.close()

    def _acquire(self, command: str) -> IO[str]:
        lock = self.lock_path
        f = open(lock, "a+")   # noqa: SIM115 - held for the session; writer() closes it
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            who = _holder(lock)
            pid = who.split()[1] if who.startswith("pid ") else "PID"
            raise KitError(f"another kitctl is writing checkpoints to {self.path}: {who}",
                           f"wait for it to finish, or stop it (Ctrl-C in its terminal, or kill -INT {pid}); "
                           f"`kitctl status {self.path}` shows where it is. Two trainers in one run folder "
                           "would write over each other's checkpoints") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid={os.getpid()}\nstart={start_ticks(os.getpid())}\nhost={socket.gethostname()}\n"
                f"command={command}\n")
        f.flush()
        return f

    def _refuse_unlocked_writers(self, others: Optional[OtherWriter], proc: Path) -> None:
        pid = find_llmc_process(self.path, proc)
        if pid is not None:
            raise KitError(f"a train_gpt2cu (pid {pid}) is writing to {self.path} without kitctl (started by hand, "
                           "or left running by a kitctl that was killed)",
                           f"wait for it to finish, or stop it with `kill -INT {pid}`; then re-run this command "
                           "(it resumes from the newest complete checkpoint)")
        other = others() if others is not None else None
        if other is not None:
            who, stop = other
            raise KitError(f"{who} is writing to {self.path}",
                           f"wait for it to finish, or stop it with `{stop}`; then re-run this command "
                           "(it resumes from the newest complete checkpoint)")
