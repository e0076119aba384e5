"""Serve TensorBoard natively, from this Python environment (tensorboard is a dependency; no TensorFlow).

TensorBoard reads a *view* folder: a temporary directory with one symlink per run, ``<name> -> <run>/tb``, so
the run list shows ``gpt2-124m`` rather than ``gpt2-124m/tb``. New runs get a link as ``kitctl tensorboard``
finds them (TensorBoard rescans its logdir every few seconds). The view folder is removed on exit.

TensorBoard binds ``127.0.0.1`` (this machine only) unless ``--host`` names another address (``0.0.0.0``: all
interfaces). It runs through the kit's one process runner (``kitctl.core.proc``): its own process group, stopped
on Ctrl-C, SIGTERM or SIGHUP.
"""
from __future__ import annotations

import errno
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Callable, Iterable, Optional

from kitctl.core import proc
from kitctl.core.errors import ConfigError, KitError
from kitctl.observe.liveness import is_live
from kitctl.observe.runs import list_runs
from kitctl.observe.tbsync import TB_DIR, SyncResult, describe_sync, follow as follow_logs, sync_runs

DEFAULT_HOST = "127.0.0.1"
ALL_INTERFACES = ("0.0.0.0", "::")
LOG_NAME = "tensorboard.log"


# ------------------------------------------------------------------------------------------ the edge: options
def check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"--port {port!r} is not a TCP port", "pass a port from 1 to 65535, e.g. --port 6006")
    return port


def check_interval(interval: float) -> float:
    if not isinstance(interval, (int, float)) or not math.isfinite(interval) or interval <= 0:
        raise ConfigError(f"--interval {interval!r}: seconds between looks at the logs must be more than 0",
                          "pass e.g. --interval 5 (or --no-follow to convert once)")
    return float(interval)


def _addr(host: str, port: int) -> tuple[int, tuple]:
    """(address family, sockaddr) of ``host`` for a server socket; a ConfigError when it is no address."""
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"--host {host!r} is not an address", "pass an IP address or host name of this machine, "
                          "e.g. --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (all interfaces)")
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"--host {host!r} is not an address this machine can bind ({e})",
                          "pass an IP address or host name of this machine, e.g. --host 127.0.0.1") from None
    return family, sockaddr


def check_bind(host: str, port: int) -> None:
    """Can TensorBoard listen on host:port? A ConfigError that says why not (in use, not ours, privileged)."""
    family, sockaddr = _addr(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} is already in use on {host}",
                                  f"pick another with --port, e.g. --port {port + 1 if port < 65535 else 6007}") from None
            if e.errno == errno.EACCES:
                raise ConfigError(f"cannot listen on port {port}: permission denied (ports below 1024 need root)",
                                  "pick a port from 1024 up, e.g. --port 6006") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(f"--host {host} is not an address of this machine",
                                  "pass one of its addresses (ip -brief addr), 127.0.0.1 or 0.0.0.0") from None
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                              "pick another --host / --port") from None


# ------------------------------------------------------------------------------------------ view + server
class RunView:
    """A temporary folder of symlinks ``<run name> -> <run>/tb``."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="kitctl-tensorboard-"))
        self._links: dict[Path, str] = {}

    def add(self, run_dirs: Iterable[Path]) -> None:
        for rd in run_dirs:
            rd = Path(rd).absolute()
            if rd in self._links:
                continue
            base = rd.name or "run"
            name, n = base, 2
            while name in self._links.values() or name == LOG_NAME:
                name, n = f"{base}-{n}", n + 1
            (self.path / name).symlink_to(rd / TB_DIR, target_is_directory=True)
            self._links[rd] = name

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def tensorboard_argv(logdir: Path, port: int, host: str) -> list[str]:
    """``python -m tensorboard.main --logdir VIEW --port P --host H`` (H 0.0.0.0 or ::: all interfaces)."""
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
            "--reload_interval", "5", "--host", host]


class TensorBoardServer:
    """A TensorBoard child process in its own process group; ``stop()`` ends the group."""

    def __init__(self, logdir: Path, port: int = 6006, host: str = DEFAULT_HOST, log_path: Optional[Path] = None):
        check_port(port)
        check_bind(host, port)
        self.argv = tensorboard_argv(logdir, port, host)
        self.port, self.host = port, host
        self.log_path = log_path
        self._log: Optional[IO] = open(log_path or os.devnull, "a")  # noqa: SIM115 (open while it runs; stop() closes)
        self.proc: subprocess.Popen = proc.start(self.argv, stdout=self._log)

    @property
    def url(self) -> str:
        host = socket.gethostname() if self.host in ALL_INTERFACES else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/#scalars"

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def log_tail(self, n: int = 1500) -> str:
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            proc.stop(self.proc, grace_s=10)
        if self._log is not None:
            self._log.close()
            self._log = None


# ------------------------------------------------------------------------------------------ the command
def _none_alive(run_dirs: list[Path], runs_dir: Optional[Path]) -> bool:
    """No training on this machine still writes any of these runs (``--no-serve`` follows only a live one)."""
    dirs = set(run_dirs) | (set(list_runs(runs_dir)) if runs_dir is not None else set())
    return not any(is_live(d) for d in dirs if d.is_dir())


def _stop_following(server: Optional[TensorBoardServer], run_dirs: list[Path], runs_dir: Optional[Path],
                    say: Callable[[str], None]) -> bool:
    """Whether to stop following: a TensorBoard that exited is an error; without one, no live run left."""
    if server is not None and server.poll() is not None:
        raise KitError(f"TensorBoard exited with status {server.poll()}:\n{server.log_tail()}",
                       "check the message above; `kitctl tensorboard --no-serve` only converts")
    if server is None and _none_alive(run_dirs, runs_dir):
        say("the training stopped writing: converted its last lines, not following any more")
        return True
    return False


def _serve(view: RunView, run_dirs: list[Path], port: int, host: str, say: Callable[[str], None]) -> TensorBoardServer:
    """Show ``run_dirs`` in ``view`` and start TensorBoard on it; say where it listens and who can open it."""
    view.add(run_dirs)
    server = TensorBoardServer(view.path, port, host, log_path=view.path / LOG_NAME)
    say(f"TensorBoard: {server.url}  (Ctrl-C to stop)")
    if host not in ALL_INTERFACES and host.startswith("127."):
        say(f"  only this machine can open it; from another: ssh -L {port}:127.0.0.1:{port} "
            f"{socket.gethostname()}, or serve on every interface with --host 0.0.0.0")
    return server


def run_tensorboard(run_dirs: list[Path], runs_dir: Optional[Path], *, port: int = 6006, host: str = DEFAULT_HOST,
                    follow: bool = True, serve: bool = True, interval: float = 5.0,
                    say: Callable[[str], None] = print) -> None:
    """``kitctl tensorboard``: convert, then (optionally) serve and follow until Ctrl-C / SIGTERM.

    ``runs_dir`` set means "all runs": run folders that appear later are converted and shown too.
    """
    check_port(port)
    interval = check_interval(interval)
    if serve:
        check_bind(host, port)            # before converting anything: a bad --host/--port is said at once
    view: Optional[RunView] = None
    server: Optional[TensorBoardServer] = None
    with proc.TerminationAsInterrupt():   # `kill` / `docker stop`: stop as on Ctrl-C
        try:
            for r in sync_runs(run_dirs):
                say(describe_sync(r))
            if not serve and not follow:
                return

            if not serve and _none_alive(run_dirs, runs_dir):    # --no-serve follows only a live run
                say("no training is writing " + ("these runs" if len(run_dirs) != 1 else run_dirs[0].name)
                    + " on this machine: converted once, not following")
                return
            if serve:
                view = RunView()
                server = _serve(view, run_dirs, port, host, say)

            def on_result(r: SyncResult) -> None:
                say(describe_sync(r))

            def check() -> bool:
                return _stop_following(server, run_dirs, runs_dir, say)

            if follow:
                say(f"following the logs every {interval:g}s")
                follow_logs(runs_dir, run_dirs, interval, on_result=on_result, should_stop=check,
                            on_new_run=(view.add if view else None))
            else:
                while not check():
                    time.sleep(0.5)
        except KeyboardInterrupt:
            say("stopped" + (" TensorBoard" if server else ""))
        finally:
            if server is not None:
                server.stop()
            if view is not None:
                view.remove()
