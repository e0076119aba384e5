"""The one process runner: start a command in its own process group, stream its lines, stop it cleanly.

Used by every verb that runs something long (train, tune, data in docker, export, tensorboard, native builds).
What it promises:

- the child runs in a new session (its own process group), so stopping it stops everything it started
  (mpirun and every rank, docker run and its container's attach);
- while it runs, SIGTERM and SIGHUP to kitctl act like Ctrl-C (main thread only);
- on Ctrl-C the group gets SIGTERM, then SIGKILL after ``grace_s`` (at once on a second Ctrl-C), and the caller
  gets ``Finished(interrupted=True)`` instead of an orphaned child;
- a command that cannot start is a :class:`KitError` naming it, never a traceback.
"""
from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Callable, Mapping, Optional, Sequence

from kitctl.core.errors import KitError

DEFAULT_GRACE_S = 30.0


@dataclass
class Finished:
    """How a streamed command ended."""

    returncode: int
    interrupted: bool = False
    tail: list[str] = field(default_factory=list)   # its last lines, for error messages

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.interrupted


class TerminationAsInterrupt:
    """Context manager: while active, SIGTERM and SIGHUP raise KeyboardInterrupt (main thread only)."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __enter__(self) -> TerminationAsInterrupt:
        self.old: dict[int, object] = {}
        try:
            for sig in self.SIGNALS:
                self.old[sig] = signal.signal(sig, self._raise)
        except ValueError:   # not the main thread: leave the handlers alone
            self.old = {}
        return self

    @staticmethod
    def _raise(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def start(argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None, cwd: Optional[Path] = None,
          stdout: Optional[IO[str]] = None, merge_stderr: bool = True) -> subprocess.Popen[str]:
    """Start ``argv`` in a new process group. ``stdout=None`` pipes text lines back (for :func:`stream`);
    a file object sends them there. ``env`` is added to this process's environment."""
    full_env = {**os.environ, **(env or {})}
    try:
        return subprocess.Popen(
            list(argv), env=full_env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.STDOUT if merge_stderr else None,
            text=True, bufsize=1, errors="replace", start_new_session=True)
    except FileNotFoundError:
        raise KitError(f"cannot run {argv[0]}: not found", f"install {Path(argv[0]).name} or put it on PATH") from None
    except PermissionError:
        raise KitError(f"cannot run {argv[0]}: permission denied", f"make it executable: chmod +x {argv[0]}") from None
    except OSError as e:
        raise KitError(f"cannot start {argv[0]}: {e}", "check the path and that it is a program for this machine") from None


def stop(proc: subprocess.Popen[str], grace_s: float = DEFAULT_GRACE_S) -> int:
    """SIGTERM the process group, SIGKILL what is left after ``grace_s`` (or at once on another Ctrl-C);
    returns the exit code (130 when it never reported one)."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout=wait)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):   # too slow, or an impatient second Ctrl-C
            continue
        break
    try:   # the leader is gone; make sure nothing it started outlived it
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return proc.returncode if proc.returncode is not None else 130


def stream(argv: Sequence[str], on_line: Callable[[str], None] = print, *, env: Optional[Mapping[str, str]] = None,
           cwd: Optional[Path] = None, grace_s: float = DEFAULT_GRACE_S, tail_lines: int = 40) -> Finished:
    """Run ``argv`` to the end, calling ``on_line`` for each line of its stdout+stderr.

    Ctrl-C (or SIGTERM/SIGHUP to kitctl) stops the whole group and returns ``interrupted=True``.
    """
    tail: list[str] = []
    with TerminationAsInterrupt():
        proc = start(argv, env=env, cwd=cwd)
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                if len(tail) > tail_lines:
                    del tail[0]
                on_line(line)
            return Finished(proc.wait(), False, tail)
        except KeyboardInterrupt:
            return Finished(stop(proc, grace_s), True, tail)
        except BaseException:
            stop(proc, grace_s)
            raise


def check(argv: Sequence[str], on_line: Callable[[str], None] = print, *, what: Optional[str] = None,
          hint: str = "read the lines above", **kw: object) -> Finished:
    """:func:`stream`, then a :class:`KitError` (with the last lines) unless it exited 0.
    Ctrl-C re-raises KeyboardInterrupt after the group is stopped."""
    res = stream(argv, on_line, **kw)  # type: ignore[arg-type]
    if res.interrupted:
        raise KeyboardInterrupt
    if res.returncode != 0:
        label = what or " ".join(list(argv)[:2])
        raise KitError(f"{label} failed (exit {res.returncode}):\n" + "\n".join(res.tail[-20:]), hint)
    return res
