"""The one process runner: lines streamed, exit codes, Ctrl-C stops the whole tree — also a child that left the
process group, as Open MPI's mpirun does with its ranks."""
from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time

import pytest

from kitctl.core import proc
from kitctl.core.errors import KitError

# A launcher that starts a "rank" in a session of its own (out of the launcher's process group), writes its pid,
# and exits on SIGTERM at once without waiting for the rank — the case a killpg alone would miss.
LAUNCHER = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    rank = subprocess.Popen([sys.executable, "-c", "import signal, time\\n"
                             "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
                             "while True: time.sleep(0.1)"], start_new_session=True)
    open(sys.argv[1], "w").write(str(rank.pid))
    signal.signal(signal.SIGTERM, lambda *a: os._exit(143))
    print("started", flush=True)
    while True: time.sleep(0.1)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_stream_lines_and_exit_code():
    lines = []
    res = proc.stream([sys.executable, "-c", "print('a'); print('b'); raise SystemExit(3)"], lines.append)
    assert lines == ["a", "b"] and res.returncode == 3 and not res.interrupted and not res.ok


def test_check_raises_with_the_tail():
    with pytest.raises(KitError) as e:
        proc.check([sys.executable, "-c", "print('boom'); raise SystemExit(2)"], lambda s: None, what="tool")
    assert "tool failed (exit 2)" in e.value.message and "boom" in e.value.message


def test_missing_program_is_a_kit_error():
    with pytest.raises(KitError, match="not found"):
        proc.stream(["/nonexistent/program"])


@pytest.mark.slow
def test_interrupt_stops_a_child_that_left_the_group(tmp_path):
    pidfile = tmp_path / "rank.pid"
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER)

    def interrupt_when_started() -> None:
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text():
                break
            time.sleep(0.05)
        time.sleep(0.2)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=interrupt_when_started, daemon=True).start()
    res = proc.stream([sys.executable, str(script), str(pidfile)], lambda s: None, grace_s=2)
    assert res.interrupted
    rank = int(pidfile.read_text())
    for _ in range(50):      # the rank ignores SIGTERM: stop() must have SIGKILLed it within its grace
        if not _alive(rank):
            break
        time.sleep(0.1)
    assert not _alive(rank), "a rank outside the launcher's process group outlived the stop"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_deferred_holds_a_signal_until_the_block_ends_with_other_threads_running(sig):
    # another thread that does not block the signal (as a multiprocessing queue's feeder thread or the input
    # hashing thread in `kitctl data`): the kernel may hand the signal to it, and a mask in the main thread
    # alone then lets CPython run the handler in the middle of the block
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, daemon=True)
    helper.start()
    steps: list[str] = []
    try:
        with proc.TerminationAsInterrupt(), pytest.raises(KeyboardInterrupt):
            with proc.signals_deferred():
                steps.append("renamed")
                os.kill(os.getpid(), sig)
                for _ in range(50):          # bytecodes run here: a handler would fire now
                    time.sleep(0.002)
                steps.append("recorded")
            steps.append("after")            # never reached: the held signal lands as the block ends
    finally:
        stop.set()
        helper.join()
    assert steps == ["renamed", "recorded"]


def test_signals_deferred_without_a_signal_changes_nothing():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with proc.signals_deferred():
        pass
    assert {s: signal.getsignal(s) for s in before} == before


def test_pid_alive_is_false_outside_the_pid_range_and_for_a_reused_pid():
    assert [proc.pid_alive(p) for p in (0, -1, 1, proc.pid_max() + 1, 2**40, True)] == [False] * 6
    me = os.getpid()
    start = proc.start_ticks(me)
    assert start is not None and proc.pid_alive(me) and proc.pid_alive(me, start)
    assert not proc.pid_alive(me, start + 1)                  # same pid, another start: a reused pid
    child = __import__("subprocess").Popen(["sleep", "0"])
    child.wait()
    assert not proc.pid_alive(child.pid, start)
