"""``kitctl ARGS`` as its own process, without paying for the imports each time.

A test that runs ``[sys.executable, "-m", "kitctl", ...]`` spends ~0.6 s of CPU importing the CLI (typer, rich,
pydantic, numpy and the command's area) before the command does anything; the suite ran ~300 of them. :func:`run`
forks each command instead from a server process that imported ``kitctl.cli`` and every area's command line once
(multiprocessing's forkserver, one per xdist worker; measured on a subset of 184 tests, 2 cores: 218 s with it,
397 s with a cold start per command). The command still runs in a process of its own: its own environment (exactly ``env``,
or this process's at the call, like ``subprocess.run``), working folder, stdin/stdout/stderr, exit code and
children; a crash or ``os._exit`` in it cannot touch the test. What it does not share with a cold start is the
import itself: tests of start-up (``python -m kitctl`` importing, Ctrl-C while importing), of signals sent to
kitctl (they need its pid from ``Popen``) and of an installed wheel keep ``subprocess``.
"""
from __future__ import annotations

import atexit
import io
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

# kitctl/cli.py imports an area only when one of its commands is looked up: the server imports every area's
# command line (and the heavy libraries they bring) once, so that no forked command pays for its area's imports
PRELOAD = ["kitctl.cli", *(f"kitctl.{area}.cli" for area in ("images", "data", "train", "observe", "cluster", "model",
                                                             "pipeline")), __name__]

_ctx: Optional[multiprocessing.context.ForkServerContext] = None
_server_startup: dict[str, str] = {}


# PYTHON* variables that change neither what is imported nor how the command runs once started: stdout is
# block-buffered by _stream either way, and whether .pyc files get written changes no behaviour.
# (PYTHONDONTWRITEBYTECODE=1 is set on CI's machine: counted, it sent every command with its own ``env`` to a cold
# start.)
NOT_STARTUP = frozenset({"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"})


def _startup(env: Mapping[str, str]) -> dict[str, str]:
    """The variables that change what an interpreter imports or how it runs (PYTHONPATH, PYTHONHOME,
    PYTHONIOENCODING, ...): a command given other values than the server started with needs a fresh interpreter."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON") and k not in NOT_STARTUP}


def _context() -> multiprocessing.context.ForkServerContext:
    global _ctx
    if _ctx is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([*PRELOAD, SERVER_PRELOAD])
        _server_startup.update(_startup(os.environ))   # the server starts with this process's environment
        _start_server()
        _ctx = ctx
    return _ctx


# tests/forkserver_preload/kitctl_forkserver_preload.py: imports what tests/ holds for the server (kitctl_proc,
# which PRELOAD names but the server could not find) and builds kitctl's click command there once, for every
# forked command to inherit (tests/cli_once.py): a forked command does not build it again, as a real run builds it once
SERVER_PRELOAD = "kitctl_forkserver_preload"
PRELOAD_DIR = str(Path(__file__).resolve().parent / "forkserver_preload")


def _start_server() -> None:
    """Start the forkserver now, with PRELOAD_DIR on its PYTHONPATH: Python 3.11's forkserver imports its preload
    before it takes this process's sys.path, and skips a module it cannot find without a word. Only the server's
    start sees the variable: each command gets exactly its own environment (_child)."""
    from multiprocessing import forkserver

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = PRELOAD_DIR + (os.pathsep + old if old else "")
    try:
        forkserver.ensure_running()
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


def _stream(fd: int, mode: str) -> io.TextIOWrapper:
    """A text stream on ``fd`` as a fresh interpreter makes it for a pipe (UTF-8, block-buffered stdout,
    line-buffered stderr, stdin read-only)."""
    raw = io.FileIO(fd, mode, closefd=False)
    if mode == "r":
        return io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8")
    errors = "backslashreplace" if fd == 2 else "strict"
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", errors=errors, line_buffering=fd == 2)


def _child(args: list[str], env: dict[str, str], cwd: str, files: tuple[str, str, str]) -> None:
    """In the forked process: become ``kitctl ARGS`` (environment, folder, standard streams), run it, exit with
    its code. Never returns."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, (path, flags) in enumerate(zip(files, (os.O_RDONLY, os.O_WRONLY, os.O_WRONLY), strict=True)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin, sys.stdout, sys.stderr = _stream(0, "r"), _stream(1, "w"), _stream(2, "w")
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    import kitctl.__main__

    sys.argv = [kitctl.__main__.__file__, *args]  # as `python -m kitctl ARGS` has it (reproduce records its command)

    from kitctl.core import context

    context.console.__init__()                    # re-read COLUMNS, NO_COLOR, TERM ... from this environment
    context.err_console.__init__(stderr=True)
    code: Union[int, str, None] = 0
    try:
        from kitctl.cli import main

        main(list(args))
    except SystemExit as e:
        code = e.code
    except BaseException:                         # what the interpreter would print and exit 1 with
        import traceback

        traceback.print_exc()
        code = 1
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code if isinstance(code, int) else 0)


def run(args: Sequence[Union[str, os.PathLike]], *, env: Optional[Mapping[str, str]] = None,
        cwd: Optional[Union[str, os.PathLike]] = None, timeout: Optional[float] = None,
        input: Optional[str] = None, check: bool = False) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([sys.executable, "-m", "kitctl", *args], capture_output=True, text=True, ...)``, forked
    from the preloaded server. A command past ``timeout`` is killed and :class:`subprocess.TimeoutExpired` raised;
    ``check``: a non-zero exit raises :class:`subprocess.CalledProcessError`."""
    argv = [str(a) for a in args]
    environ = dict(os.environ if env is None else env)
    ctx = _context()
    if _startup(environ) != _server_startup:       # e.g. PYTHONPATH shadowing a package: start cold
        return subprocess.run([sys.executable, "-m", "kitctl", *argv], capture_output=True, text=True, env=environ,
                              cwd=cwd, timeout=timeout, input=input, check=check)
    with tempfile.TemporaryDirectory(prefix="kitctl-proc-") as tmp:
        out, err, stdin = (os.path.join(tmp, n) for n in ("stdout", "stderr", "stdin"))
        Path(stdin).write_text(input or "", encoding="utf-8")
        for f in (out, err):
            Path(f).touch()
        where = os.fspath(os.getcwd() if cwd is None else cwd)
        proc = ctx.Process(target=_child, args=(argv, environ, where, (stdin, out, err)))
        proc.start()
        proc.join(timeout)
        cmd = [sys.executable, "-m", "kitctl", *argv]
        if proc.exitcode is None:
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired(cmd, timeout or 0, _read(out), _read(err))
        done = subprocess.CompletedProcess(cmd, proc.exitcode, _read(out), _read(err))   # -N: killed by signal N
    if check:
        done.check_returncode()
    return done


def run_argv(argv: Sequence[Union[str, os.PathLike]], **kw) -> subprocess.CompletedProcess[str]:
    """:func:`run` for a command line a test also hands to ``Popen``: ``[sys.executable, "-m", "kitctl", *args]``."""
    if [str(a) for a in argv[:3]] != [sys.executable, "-m", "kitctl"]:
        raise ValueError(f"not a `python -m kitctl` command line: {argv[:3]}")
    return run(argv[3:], **kw)


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")
