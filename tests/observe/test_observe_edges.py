"""Hostile input to `kitctl tensorboard` / `status` / `report`: each case exits 2 with what is wrong and how to fix
it (never "internal error" or a traceback), and leaves the file system as it was (no partial file, nothing
written outside the run folder, old data intact). Also: TensorBoard binds 127.0.0.1 unless --host is given."""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from test_observe import free_port, get_json, kitctl, make_run, read_events, wait_for

from kitctl.core.errors import KitError
from kitctl.observe import tbsync
from kitctl.observe.report import write_report
from kitctl.observe.runs import is_run_name, resolve_runs
from kitctl.observe.status import collect, render


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root -> its bytes (None for folders): the file system 'after', to compare."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def squash(text: str) -> str:
    """Text without whitespace: rich wraps long messages (inside paths, too) at the terminal width."""
    return "".join(text.split())


def assert_refused(r: subprocess.CompletedProcess, *needles: str) -> None:
    err = " ".join(r.stderr.split())
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "internal error" not in err and "Traceback" not in err, err
    assert "error:" in err and "hint:" in err, err          # what is wrong, and how to fix it
    for n in needles:
        assert squash(n) in squash(err), (n, err)


# ------------------------------------------------------------------------------------------ table: bad options
# (argv after `kitctl`, words the message must hold); every case runs against a data root with one good run
BAD_OPTIONS = [
    (["tensorboard", "--port", "70000"], ["--port 70000", "1 to 65535"]),
    (["tensorboard", "--port", "0"], ["--port 0", "1 to 65535"]),
    (["tensorboard", "--port", "-1"], ["--port -1"]),
    (["tensorboard", "--interval", "-1"], ["--interval -1", "more than 0"]),
    (["tensorboard", "--interval", "0"], ["--interval 0", "more than 0"]),
    (["tensorboard", "--interval", "nan"], ["--interval nan"]),
    (["tensorboard", "--interval", "inf", "--no-serve"], ["--interval inf"]),
    (["tensorboard", "--host", "no such host.invalid", "--no-follow"], ["--host", "not an address"]),
    (["tensorboard", "--host", "", "--no-follow"], ["--host"]),
    (["tensorboard", "--host", "203.0.113.9", "--no-follow"], ["203.0.113.9", "not an address of this machine"]),
    (["tensorboard", "../../outside"], ["'../../outside' not found", "without /"]),
    (["tensorboard", "a/../../outside"], ["not found"]),
    (["status", "../../outside"], ["not found"]),
    (["status", ".."], ["is not a run folder"]),
    (["status", "."], ["is not a run folder"]),
    (["status", "notes.txt"], ["notes.txt is a file, not a run folder"]),
    (["status", "nope"], ["'nope' not found", "good"]),
    (["report", "../../outside", "-o", "r.png"], ["not found"]),
    (["report", "good", "-o", "r.pdf"], ["written as .png or .html"]),
    (["report", "good", "-o", "afolder.png"], ["is a folder"]),
    (["report", "good", "-o", "notes.txt/r.png"], ["cannot write the report"]),
    (["report", "good", "-l", "a", "-l", "b"], ["2 --label for 1 run(s)"]),
]


@pytest.fixture()
def root(tmp_path):
    """<tmp>/root/data (the data root, also the cwd), with runs/good; <tmp>/root/outside: a folder that
    `../../outside` names relative to runs/ (it must never get a tb/ folder)."""
    data = tmp_path / "root" / "data"
    make_run(data / "runs", "good", steps=range(0, 6))
    (tmp_path / "root" / "outside").mkdir()
    (data / "notes.txt").write_text("not a run\n")
    (data / "afolder.png").mkdir()
    return data


@pytest.mark.slow
@pytest.mark.parametrize("argv,needles", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_exits_2_and_changes_nothing(root, argv, needles):
    before = tree(root.parent)
    r = kitctl(*argv, data_root=root)
    assert_refused(r, *needles)
    assert tree(root.parent) == before          # nothing converted, no report, no tb/ anywhere


@pytest.mark.slow
def test_port_in_use_is_refused_before_converting(root):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        before = tree(root.parent)
        r = kitctl("tensorboard", "--port", str(port), "--no-follow", data_root=root)
        assert_refused(r, f"port {port} is already in use", "--port")
        assert tree(root.parent) == before


def test_run_names_cannot_leave_runs_dir(tmp_path):
    runs = tmp_path / "data" / "runs"
    make_run(runs, "a", steps=range(2))
    make_run(tmp_path, "x", steps=range(2))         # <tmp>/x: what runs/../../x points at
    for bad in ("../../x", "..", ".", "", "a/../../../x", "/", "a\\b"):
        assert not is_run_name(bad)
    assert is_run_name("gpt2-124m") and is_run_name("run.2026-11-28")
    cwd = os.getcwd()
    os.chdir(runs.parent)                           # ../../x is not a folder from here
    try:
        with pytest.raises(KitError) as e:
            resolve_runs(["../../x"], runs)
        assert e.value.exit_code == 2
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "x" / "tb").exists()


# ------------------------------------------------------------------------------------------ damaged run folders
@pytest.mark.slow
def test_log_that_is_a_folder(root):
    (root / "runs" / "good" / "main.log").unlink()
    (root / "runs" / "good" / "main.log").mkdir()
    for argv in (["status", "good"], ["report", "good", "-o", "r.png"], ["tensorboard", "good", "--no-serve",
                                                                         "--no-follow"]):
        r = kitctl(*argv, data_root=root)
        assert_refused(r, "main.log is a folder, not a log file")
    assert not (root / "r.png").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: permissions cannot be tested as root")
def test_unreadable_log(root):
    log = root / "runs" / "good" / "main.log"
    log.chmod(0)
    try:
        assert_refused(kitctl("status", "good", data_root=root), "permission denied")
    finally:
        log.chmod(0o644)


@pytest.mark.slow
def test_runs_dir_that_is_a_file(tmp_path):
    (tmp_path / "runs").write_text("oops")
    for argv in (["status"], ["report"], ["tensorboard", "--no-serve", "--no-follow"]):
        assert_refused(kitctl(*argv, data_root=tmp_path), "it is a file, not a folder", "data_root")


@pytest.mark.slow
def test_tb_that_is_a_file(root):
    (root / "runs" / "good" / "tb").write_text("not a folder")
    r = kitctl("tensorboard", "good", "--no-serve", "--no-follow", data_root=root)
    assert_refused(r, "tb is a file", "move")


@pytest.mark.slow
@pytest.mark.parametrize("state,needle", [
    ("{not json", "is not a readable TensorBoard sync state"),
    ("[1, 2]", "a JSON object was expected"),
    (json.dumps({"max_step": {"loss/train": "many"}}), "is a damaged TensorBoard sync state"),
    (json.dumps({"schema_version": 99}), "newer kitctl"),
    # a state naming a file outside tb/ (the restart truncates that file): refused, the file untouched
    (json.dumps({"event_file": "../main.log", "event_size": 0}), "not an event file name"),
])
def test_damaged_tensorboard_state(root, state, needle):
    run = root / "runs" / "good"
    (run / "tb").mkdir()
    (run / "tb" / tbsync.STATE_FILE).write_text(state)
    before = tree(root)
    r = kitctl("tensorboard", "good", "--no-serve", "--no-follow", data_root=root)
    assert_refused(r, needle, "upgrade llmc-kit" if "newer" in needle else f"delete {run / 'tb'}")
    assert tree(root) == before                     # main.log not truncated, nothing written


@pytest.mark.slow
@pytest.mark.parametrize("text,needle", [
    ("{not json", "is not a readable run record"),
    ("[]", "a JSON object was expected"),
    (json.dumps({"session": "yesterday"}), "session"),
    (json.dumps({"gpus": 3}), "gpus"),
    (json.dumps({"schema_version": 7}), "newer kitctl"),
    (b"\xff\xfe\x00binary", "is not a readable run record"),
])
def test_damaged_run_json_is_a_note_and_the_logs_still_show(root, text, needle):
    rj = root / "runs" / "good" / "run.json"
    rj.write_bytes(text if isinstance(text, bytes) else text.encode())
    r = kitctl("status", "good", data_root=root)
    out = squash(r.stdout.replace("│", ""))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "6/40" in out and "run.jsonisunreadable" in out and squash(needle) in out, out
    # how to fix it: move the damaged file away (or, written by a newer kit, upgrade)
    assert ("mv" + str(rj)) in out or "upgradellmc-kit" in out
    assert rj.read_bytes() == (text if isinstance(text, bytes) else text.encode())


def test_status_shows_run_names_as_text_not_markup(tmp_path):
    rd, _ = make_run(tmp_path, "x[/]y[bold]", steps=range(3))
    (rd / "run.json").write_text(json.dumps({"gpus": [{"name": "GPU [/red]"}]}))
    from rich.console import Console

    con = Console(record=True, width=140)
    con.print(render(collect(rd, gpus_query=list)))
    text = con.export_text()
    assert "x[/]y[bold]" in text and "GPU [/red]" in text


@pytest.mark.slow
def test_report_with_dollar_signs_in_names(tmp_path):
    a, _ = make_run(tmp_path / "runs", "cost$5", steps=range(3))
    out = tmp_path / "r.png"
    plotted, _ = write_report([a], out, [r"$\foo$ run"])       # mathtext would refuse this label
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plotted[0].name == r"$\foo$ run"


# ------------------------------------------------------------------------------------------ atomic report
@pytest.mark.slow
@pytest.mark.parametrize("name", ["report.png", "report.html"])
def test_report_never_left_partial_on_a_full_disk(tmp_path, monkeypatch, name):
    a, _ = make_run(tmp_path / "runs", "a", steps=range(3))
    out = tmp_path / "out" / name
    out.parent.mkdir()
    out.write_bytes(b"the previous report")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)       # the bytes are written, then the disk is full
    with pytest.raises(OSError) as e:     # a full disk reaches the CLI's one disk-full message (exit 1)
        write_report([a], out)
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC
    assert out.read_bytes() == b"the previous report"
    assert [p.name for p in out.parent.iterdir()] == [name]     # no temp file left beside it
    write_report([a], out)                                       # and the next try writes the whole report
    assert out.read_bytes() != b"the previous report"


# ------------------------------------------------------------------------------------------ follow
def test_follow_does_not_recreate_a_deleted_run(tmp_path):
    import shutil

    runs = tmp_path / "runs"
    a, _ = make_run(runs, "a", steps=range(2))
    rounds = iter(range(3))

    def tick():
        n = next(rounds)
        if n == 0:
            shutil.rmtree(a)
        return n == 1

    tbsync.follow(None, [a], interval=0, should_stop=tick)
    assert not a.exists()


# ------------------------------------------------------------------------------------------ the bind address
def listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} lists them) with a socket listening on ``port``."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.rsplit(":", 1)
            if state == "0A" and int(p, 16) == port:      # 0A: LISTEN
                out.append(addr)
    return out


@pytest.mark.slow
def test_tensorboard_binds_loopback_by_default_and_stops_on_ctrl_c(tmp_path):
    runs = tmp_path / "runs"
    rd, exp = make_run(runs, "gpt2-124m", steps=range(0, 20))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["KIT_DATA_ROOT"] = str(tmp_path)
    p = subprocess.Popen([sys.executable, "-m", "kitctl", "tensorboard", "--port", str(port), "--interval", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        wait_for(lambda: "gpt2-124m" in get_json(f"http://127.0.0.1:{port}/data/runs"), "the run in /data/runs")
        addrs = listening(port)
        assert addrs == ["0100007F"], addrs         # 127.0.0.1 only: not 0.0.0.0, not ::
        tags = get_json(f"http://127.0.0.1:{port}/data/plugin/scalars/tags")
        assert set(tags["gpt2-124m"]) == set(exp)
    finally:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and "Traceback" not in err, err
    assert f"TensorBoard: http://127.0.0.1:{port}/#scalars" in out and "ssh -L" in out and "stopped TensorBoard" in out
    assert listening(port) == []                     # the whole process group is gone
    assert read_events(rd / "tb")["loss/train"]


@pytest.mark.slow
def test_tensorboard_host_all_interfaces_when_asked(tmp_path):
    make_run(tmp_path / "runs", "r", steps=range(0, 3))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["KIT_DATA_ROOT"] = str(tmp_path)
    p = subprocess.Popen([sys.executable, "-m", "kitctl", "tensorboard", "--port", str(port), "--host", "0.0.0.0",
                          "--no-follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=tmp_path)
    try:
        wait_for(lambda: listening(port), "TensorBoard to listen")
        assert listening(port) == ["00000000"]
    finally:
        p.send_signal(signal.SIGTERM)                # `docker stop` / kill: the same clean stop as Ctrl-C
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and "Traceback" not in err, err
    assert "stopped TensorBoard" in out and listening(port) == []


@pytest.mark.slow
def test_report_draws_each_reference_over_its_dataset_whole_curve_legend_outside(tmp_path):
    """Issue 29: the GPT-2 val-loss line (FineWeb) only over a FineWeb run; the loss axis spans the whole curve
    (no cut at 4); the legends sit below the plots (they cover no curve)."""
    from kitctl.observe.logs import read_run
    from kitctl.observe.report import FINEWEB_PREFIX, GPT2_124M_VAL_LOSS, data_prefix, figure

    def run(name: str, data: str) -> Path:
        rd = tmp_path / name
        rd.mkdir()
        (rd / "main.log").write_text("".join(f"s:{s} trl:{11.0 - s * 0.05:.4f}\n" for s in range(150)))
        (rd / "stdout.log").write_text(f"| train data pattern    | /workspace/data/{data}_train_*.bin |\n")
        return rd

    fw, ts = read_run(run("fw", "fineweb")), read_run(run("ts", "tinyshakespeare"))
    assert (data_prefix(fw), data_prefix(ts)) == (FINEWEB_PREFIX, "tinyshakespeare")

    def ref_lines(runs) -> list:
        ax = figure(runs).axes[0]
        return [ln for ln in ax.get_lines() if list(ln.get_ydata()) == [GPT2_124M_VAL_LOSS.value] * 2]

    assert ref_lines([fw]) and not ref_lines([ts])
    fig = figure([ts])
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert lo <= 3.6 and hi >= 11.0                         # step 0's 11.0 and the last 3.55 both in view
    fig.canvas.draw()
    box = ax.get_window_extent()
    legend = ax.get_legend().get_window_extent()
    assert legend.y1 <= box.y0                                # below the axes: covers nothing inside them


def test_non_finite_values_are_kept_and_out_of_range_steps_are_unreadable():
    from kitctl.core.run_folder import MAX_STEP, parse_main_log
    from kitctl.observe.logs import parse_stdout

    streams, bad = parse_main_log(f"s:0 trl:nan\ns:1 trl:inf norm:-inf\ns:{MAX_STEP + 1} trl:1.0\ns:-2 trl:1.0\n"
                                  "s:2 trl:1e999\n")
    assert bad == 2 and list(streams["loss/train"]) == [0, 1, 2]
    assert streams["train/grad_norm"][1] == float("-inf") and streams["loss/train"][2] == float("inf")
    line = "step {}/10 | loss 3.0 (+0.00z)| norm 1.0 (+0.00z)| lr 1.00e-04 | 10.00 ms | 1.0% bf16 MFU | 1000 tok/s\n"
    info = parse_stdout(line.format(1) + line.format(2**64))
    assert list(info.streams["perf/ms_per_step"]) == [0]


def test_status_of_a_diverged_run_has_no_eta(tmp_path):
    rd = tmp_path / "r"
    rd.mkdir()
    (rd / "main.log").write_text("s:0 trl:4.0\ns:1 trl:3.9\ns:2 trl:nan\n")
    st = collect(rd, gpus_query=lambda: [])
    assert st.diverged is not None and st.diverged.describe() == "loss is NaN since step 2" and st.eta_s is None
    assert st.as_json()["diverged"]["since_step"] == 2
