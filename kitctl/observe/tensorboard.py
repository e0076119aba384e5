"""Serve TensorBoard natively, from this Python environment (tensorboard is a dependency; no TensorFlow).

TensorBoard reads a *view* folder: a temporary directory with one symlink per run, ``<name> -> <run>/tb``, so
the run list shows ``gpt2-124m`` rather than ``gpt2-124m/tb``. New runs get a link as ``kitctl tensorboard``
finds them (TensorBoard rescans its logdir every few seconds). The view folder is removed on exit.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Optional

from kitctl.core.errors import KitError
from kitctl.observe.logs import TB_DIR


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
            name, n = rd.name, 2
            while name in self._links.values():
                name, n = f"{rd.name}-{n}", n + 1
            (rd / TB_DIR).mkdir(parents=True, exist_ok=True)
            os.symlink(rd / TB_DIR, self.path / name, target_is_directory=True)
            self._links[rd] = name

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0" if host in ("", "0.0.0.0", None) else host, port))
        except OSError:
            return False
    return True


def tensorboard_argv(logdir: Path, port: int, host: Optional[str]) -> list[str]:
    """``python -m tensorboard.main --logdir VIEW --port P`` plus ``--bind_all`` (host None) or ``--host H``."""
    argv = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
            "--reload_interval", "5"]
    return argv + (["--bind_all"] if host is None else ["--host", host])


class TensorBoardServer:
    """A TensorBoard child process; ``stop()`` ends it (SIGINT, then SIGTERM, then SIGKILL)."""

    def __init__(self, logdir: Path, port: int = 6006, host: Optional[str] = None, log_path: Optional[Path] = None):
        if not port_free(host or "0.0.0.0", port):
            raise KitError(f"port {port} is already in use", "pick another with --port, e.g. --port 6007",
                           exit_code=2)
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise KitError("the tensorboard package is not installed in this Python",
                           "run `bash .ci/setup` (it installs docker/requirements.lock)") from None
        self.argv = tensorboard_argv(logdir, port, host)
        self.port, self.host = port, host
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        # own process group: the terminal's Ctrl-C reaches only us, and we stop TensorBoard cleanly
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    @property
    def url(self) -> str:
        host = self.host if self.host not in (None, "0.0.0.0", "") else socket.gethostname()
        return f"http://{host}:{self.port}/#scalars"

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def stop(self) -> None:
        for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        if self._log is not subprocess.DEVNULL:
            self._log.close()


def run_tensorboard(run_dirs: list[Path], runs_dir: Optional[Path], *, port: int = 6006, host: Optional[str] = None,
                    follow: bool = True, serve: bool = True, interval: float = 5.0, say=print) -> None:
    """``kitctl tensorboard``: convert, then (optionally) serve and follow until Ctrl-C.

    ``runs_dir`` set means "all runs": run folders that appear later are converted and shown too.
    """
    import time

    from kitctl.observe.logs import SyncResult, follow as follow_logs, sync_runs

    view = server = None
    old_term = None
    if threading.current_thread() is threading.main_thread():   # `kill` / `docker stop`: stop as on Ctrl-C
        def _term(signum, frame):
            raise KeyboardInterrupt
        old_term = signal.signal(signal.SIGTERM, _term)
    try:
        for r in sync_runs(run_dirs):
            say(describe_sync(r))
        if not serve and not follow:
            return
        if serve:
            view = RunView()
            view.add(run_dirs)
            server = TensorBoardServer(view.path, port, host, log_path=view.path / "tensorboard.log")
            say(f"TensorBoard: {server.url}  (Ctrl-C to stop)")

        def on_result(r: SyncResult) -> None:
            say(describe_sync(r))

        def check() -> bool:
            if server is not None and server.poll() is not None:
                tail = (view.path / "tensorboard.log").read_text(errors="replace")[-1500:]
                raise KitError(f"TensorBoard exited with status {server.poll()}:\n{tail.strip()}",
                               "check the message above; `kitctl tensorboard --no-serve` only converts")
            return False

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
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def describe_sync(r) -> str:
    from kitctl.observe.logs import MAIN_LOG, STDOUT_LOG

    name = r.run_dir.name
    if r.written:
        how = f" (rewrote from step {r.purged_from}: the run was resumed or restarted)" if r.purged_from is not None else ""
        return f"{name}: wrote {r.written} points of {len(r.tags)} tag(s) to {r.run_dir / TB_DIR}{how}"
    if not (r.run_dir / MAIN_LOG).exists() and not (r.run_dir / STDOUT_LOG).exists():
        return f"{name}: no {MAIN_LOG} yet (llm.c writes it from the first step); will show up once it has lines"
    if (r.run_dir / MAIN_LOG).exists() and (r.run_dir / MAIN_LOG).stat().st_size == 0:
        return f"{name}: {MAIN_LOG} is empty so far (llm.c writes a line per step)"
    return f"{name}: up to date"
