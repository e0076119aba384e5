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

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Callable, Iterator, Mapping, Optional, Sequence

from kitctl.core.errors import KitError

DEFAULT_GRACE_S = 30.0


@dataclass
class Finished:
    """How a streamed command ended."""

    returncode: int
    interrupted: bool = False
    tail: list[str] = field(default_factory=list)   # its last lines, for error messages
    idle: bool = False             # stopped because it printed nothing for ``idle_s`` seconds

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


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP back while a few steps that belong together run (a shard renamed into place and
    recorded in the manifest); a signal that arrives meanwhile is handled right after, not in between.

    A signal mask alone is not enough in Python: the kernel hands a process-wide signal to any thread that does
    not block it (a queue's feeder thread, a hashing thread), and CPython then runs the Python handler in the
    main thread at its next bytecode, inside the block. So in the main thread the handlers themselves are
    swapped for one that only notes the signal; elsewhere (no handlers can be set there) the thread's mask is used.
    """
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    pending: list[signal.Signals] = []

    def note(signum: int, frame: Optional[FrameType]) -> None:
        pending.append(signal.Signals(signum))

    try:
        old = {sig: signal.signal(sig, note) for sig in sigs}
    except ValueError:   # not the main thread
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(sigs))
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        if pending:
            signum = pending[0]
            handler = old[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


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


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren...), read from /proc; [] where there is no /proc.

    Needed because a launcher may move its children out of its process group (Open MPI's mpirun puts each
    rank in a process group of its own), so signalling the group alone can leave a rank running."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def pid_max() -> int:
    """The system's largest pid (Linux /proc/sys/kernel/pid_max; 2**22, the kernel's ceiling, when unreadable)."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 1 << 22


def start_ticks(pid: int, proc: Path = Path("/proc")) -> Optional[int]:
    """When process ``pid`` started, in clock ticks after boot (field 22 of /proc/PID/stat), or None when it
    cannot be read. A pid is reused by later processes; (pid, start) names one process for the life of the boot."""
    if not isinstance(pid, int) or not 1 < pid <= pid_max():
        return None
    try:
        fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid: int, start: Optional[int] = None) -> bool:
    """Is process ``pid`` running (a zombie counts as gone; another user's process as running)?

    A pid <= 1 (0 and -1 are "my process group" and "every process" to kill(2), 1 is init) or beyond the system's
    pid range is never a run's process: not alive. ``start``: the start time recorded with the pid
    (:func:`start_ticks`); a process whose start differs is another one that reused the pid: not alive."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not 1 < pid <= pid_max():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except (OverflowError, OSError):
        return False
    try:   # a zombie has exited; only its parent's wait is missing
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return start is None
    if state == "Z":
        return False
    return start is None or start_ticks(pid) == start


def stop(proc: subprocess.Popen[str], grace_s: float = DEFAULT_GRACE_S) -> int:
    """SIGTERM the process group, SIGKILL what is left after ``grace_s`` (or at once on another Ctrl-C);
    descendants that left the group get the same treatment. Returns the exit code (130 when none was reported)."""
    below = descendants(proc.pid)
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
    _stop_strays(below, grace_s)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return proc.returncode if proc.returncode is not None else 130


def _stop_strays(pids: list[int], grace_s: float) -> None:
    """Wait (up to ``grace_s``) for processes that were below the leader to finish exiting; SIGKILL the rest."""
    deadline = time.monotonic() + grace_s
    live = [p for p in pids if pid_alive(p)]
    _kill_each(live, signal.SIGTERM)
    while live and time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except KeyboardInterrupt:   # impatient: kill now
            break
        live = [p for p in live if pid_alive(p)]
    _kill_each(live, signal.SIGKILL)


def _kill_each(pids: list[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):   # gone already, or not ours
            pass


def stream(argv: Sequence[str], on_line: Callable[[str], None] = print, *, env: Optional[Mapping[str, str]] = None,
           cwd: Optional[Path] = None, grace_s: float = DEFAULT_GRACE_S, tail_lines: int = 40,
           idle_s: Optional[float] = None) -> Finished:
    """Run ``argv`` to the end, calling ``on_line`` for each line of its stdout+stderr.

    Ctrl-C (or SIGTERM/SIGHUP to kitctl) stops the whole group and returns ``interrupted=True``. ``idle_s``: a
    command that prints nothing for that long is stopped the same way (``idle=True``): a peer that stopped
    answering (a registry in the middle of a push) never hangs the command.
    """
    tail: list[str] = []
    with TerminationAsInterrupt():
        proc = start(argv, env=env, cwd=cwd)
        assert proc.stdout is not None
        watch = _IdleWatch(proc, idle_s, grace_s) if idle_s else None
        try:
            for raw in proc.stdout:
                if watch:
                    watch.seen()
                line = raw.rstrip("\n")
                tail.append(line)
                if len(tail) > tail_lines:
                    del tail[0]
                on_line(line)
            rc = proc.wait()
            if watch and watch.fired.is_set():
                watch.done.wait(grace_s + 15)
                return Finished(rc, False, tail, idle=True)
            return Finished(rc, False, tail)
        except KeyboardInterrupt:
            return Finished(stop(proc, grace_s), True, tail)
        except BaseException:
            stop(proc, grace_s)
            raise
        finally:
            if watch:
                watch.close()


class _IdleWatch:
    """A thread that stops ``proc`` (its group, as :func:`stop` does) once it has printed nothing for ``idle_s``."""

    def __init__(self, proc: subprocess.Popen[str], idle_s: float, grace_s: float):
        self.proc, self.idle_s, self.grace_s = proc, idle_s, grace_s
        self.last = time.monotonic()
        self.fired, self.done, self.closed = threading.Event(), threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def seen(self) -> None:
        self.last = time.monotonic()

    def _run(self) -> None:
        while not self.closed.wait(min(1.0, self.idle_s / 4)):
            if self.proc.poll() is not None:
                return
            if time.monotonic() - self.last > self.idle_s:
                self.fired.set()
                stop(self.proc, self.grace_s)
                self.done.set()
                return

    def close(self) -> None:
        self.closed.set()


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
