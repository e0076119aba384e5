"""Observe: main.log / stdout.log parsing, TensorBoard conversion (read back with TensorBoard's own reader),
status, report, and the CLI's messages on empty or missing logs."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kitctl_proc

from kitctl.observe import runs as runs_mod, tbsync
from kitctl.core.errors import KitError
from kitctl.core import run_folder
from kitctl.core.run_folder import parse_main_log
from kitctl.observe.logs import parse_stdout
from kitctl.observe.tbsync import TensorBoardSync

# llm.c f1e2ace, train_gpt2.cu: the step line of stdout (checked against the checkout below when present)
STEP_FMT = ("step %4d/%d | loss %7.6f (%+.2fz)| norm %6.4f (%+.2fz)| lr %.2e | %.2f ms | %.1f%% bf16 MFU "
            "| %.0f tok/s\n")


def train_line(step, loss, lr, norm):
    return "s:%d trl:%.4f lr:%.6f norm:%.2f\n" % (step, loss, lr, norm)  # noqa: UP031 (llmc/logger.h's C formats)


def step_line(step, total, loss, norm, lr, ms, tok):
    return STEP_FMT % (step + 1, total, loss, 0.12, norm, -0.5, lr, ms, 41.3, tok)


def make_run(root: Path, name="r1", steps=range(0, 8), total=40, seed=0, data=None) -> tuple[Path, dict]:
    """A run folder with main.log + stdout.log as llm.c writes them; returns (folder, expected last-wins values).
    ``data``: a shard prefix for llm.c's "train data pattern" header line at the top of stdout.log."""
    rng = np.random.default_rng(seed)
    rd = root / name
    rd.mkdir(parents=True, exist_ok=True)
    exp: dict[str, dict[int, float]] = {}
    ml, so = [], []
    if data:
        so.append(f"| train data pattern    | /workspace/data/{data}_train_*.bin |\n")
    for s in steps:
        if s % 4 == 0:
            tel = round(float(3.3 + 7.7 * np.exp(-s / 25) + rng.uniform(0, 0.01)), 4)
            ml.append("s:%d tel:%.4f\n" % (s, tel))  # noqa: UP031
            exp.setdefault("loss/val", {})[s] = tel
            if s:
                acc = round(float(0.25 + 0.04 * (1 - np.exp(-s / 60)) + rng.uniform(0, 0.004)), 4)
                ml.append("s:%d eval:%.4f\n" % (s, acc))  # noqa: UP031
                exp.setdefault("eval/hellaswag_acc", {})[s] = acc
        trl, lr, norm = (round(float(3.3 + 7.7 * np.exp(-s / 25) + rng.uniform(0, .1)), 4), round(6e-4 * min(1, (s + 1) / 40), 6),
                         round(float(0.3 + 5 * np.exp(-s / 10) + rng.uniform(0, .2)), 2))
        ms, tok = round(float(300 + rng.uniform(0, 10)), 2), float(int(1_700_000 + rng.integers(0, 1000)))
        ml.append(train_line(s, trl, lr, norm))
        so.append(step_line(s, total, trl, norm, lr, ms, tok))
        for tag, v in (("loss/train", trl), ("train/learning_rate", lr), ("train/grad_norm", norm),
                       ("perf/ms_per_step", ms), ("perf/tokens_per_sec", tok)):
            exp.setdefault(tag, {})[s] = v
    with open(rd / "main.log", "a") as f:
        f.write("".join(ml))
    with open(rd / "stdout.log", "a") as f:
        f.write("".join(so))
    return rd, exp


def merge(a: dict, b: dict) -> dict:
    out = {t: dict(v) for t, v in a.items()}
    for t, v in b.items():
        out.setdefault(t, {}).update(v)
    return out


def read_events(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard's own reader (EventAccumulator) shows for every scalar tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def count_points(event_file: Path) -> int:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return sum(len(ev.summary.value) for ev in EventFileLoader(str(event_file)).Load() if ev.HasField("summary"))


def assert_matches(got: dict, exp: dict) -> None:
    assert sorted(got) == sorted(exp)
    for tag, pts in got.items():
        steps = [s for s, _ in pts]
        assert steps == sorted(set(steps)), f"{tag}: duplicate or unordered steps {steps}"
        want = [(s, float(np.float32(v))) for s, v in sorted(exp[tag].items())]
        assert pts == want, tag


# ---------------------------------------------------------------- parser


def test_parse_main_log_all_line_forms_resume_and_torn_line():
    text = ("s:0 tel:10.9876\n"
            "s:0 trl:10.9500 lr:0.000006 norm:15.32\n"
            "s:1 trl:10.5000\n"                      # older llm.c train line: no lr / norm
            "s:2 trl:10.1000 lr:0.000018 norm:9.50\n"
            "s:2 eval:0.2512\n"
            "s:1 trl:10.4000 lr:0.000012 norm:12.00\n"   # resumed from step 1: re-logged, last wins
            "garbage line\n"
            "s:3 trl:9.8")                           # torn: not counted until its newline arrives
    streams, bad = parse_main_log(text)
    assert streams == {
        "loss/val": {0: 10.9876},
        "loss/train": {0: 10.95, 1: 10.4, 2: 10.1},
        "train/learning_rate": {0: 0.000006, 2: 0.000018, 1: 0.000012},
        "train/grad_norm": {0: 15.32, 2: 9.5, 1: 12.0},
        "eval/hellaswag_acc": {2: 0.2512},
    }
    assert bad == 1
    streams, _ = parse_main_log(text + "000 lr:0.000024 norm:7.25\n")
    assert streams["loss/train"][3] == 9.8
    assert streams["train/grad_norm"][3] == 7.25


def test_parse_stdout_step_line():
    out = ("| Parameter | Value |\nval loss 11.0\nevaluating HellaSwag: 0/40\r"
           + step_line(0, 18865, 11.01, 15.3, 6e-6, 5123.45, 102345)
           + (STEP_FMT % (2, 18865, 10.9, 0.1, 12.0, 0.1, 1.2e-5, 333.33, -100.0, 1572864))  # H200: MFU unknown
           + "step    3/18865 | loss 10.8")   # torn
    info = parse_stdout(out)
    assert info.streams == {"perf/ms_per_step": {0: 5123.45, 1: 333.33}, "perf/tokens_per_sec": {0: 102345.0, 1: 1572864.0}}
    assert info.total_steps == 18865 and info.last_step == 1


def test_step_line_format_is_llmc_s(llmc_src):
    """The format the parser expects is the one in the pinned llm.c source."""
    src = (llmc_src / "train_gpt2.cu").read_text()
    m = re.search(r'printf0\("(step %4d/%d \| loss[^"]*)"', src)
    assert m, "the step printf is gone from train_gpt2.cu"
    fmt = m.group(1).replace("\\n", "\n")
    assert fmt == STEP_FMT
    info = parse_stdout(fmt % (10, 100, 3.5, 0.1, 0.9, 0.1, 6e-4, 321.5, 40.0, 1600000))
    assert info.streams == {"perf/ms_per_step": {9: 321.5}, "perf/tokens_per_sec": {9: 1600000.0}}


def test_main_log_format_is_llmc_s(llmc_src):
    src = (llmc_src / "llmc" / "logger.h").read_text()
    for fmt in ("s:%d trl:%.4f lr:%.6f norm:%.2f\\n", "s:%d tel:%.4f\\n", "s:%d eval:%.4f\\n"):
        assert fmt in src


# ---------------------------------------------------------------- TensorBoard conversion


def test_convert_resume_torn_line_and_incremental(tmp_path):
    rd, exp = make_run(tmp_path, steps=range(0, 9))
    # llm.c resumed from the checkpoint at step 4: it appends and re-logs steps 4.. with new values
    rd2, exp2 = make_run(tmp_path, steps=range(4, 11), seed=1)
    assert rd2 == rd
    exp = merge(exp, exp2)
    with open(rd / "main.log", "a") as f:
        f.write("s:11 trl:4.9")                       # torn last line
    r = tbsync.sync_runs([rd])[0]
    assert r.written == sum(len(v) for v in exp.values())
    assert_matches(read_events(rd / "tb"), exp)
    first_files = set((rd / "tb").glob("events.out.tfevents.*"))

    # nothing new: nothing written, no new event file
    assert tbsync.sync_runs([rd])[0].written == 0
    assert set((rd / "tb").glob("events.out.tfevents.*")) == first_files

    # the torn line completes and new steps arrive: only those points are added
    with open(rd / "main.log", "a") as f:
        f.write("000 lr:0.000300 norm:0.50\n")
    exp["loss/train"][11], exp["train/learning_rate"][11], exp["train/grad_norm"][11] = 4.9, 0.0003, 0.5
    _, exp3 = make_run(tmp_path, steps=range(12, 14), seed=2)
    exp = merge(exp, exp3)
    r = tbsync.sync_runs([rd])[0]
    assert r.purged_from is None
    new_files = set((rd / "tb").glob("events.out.tfevents.*")) - first_files
    assert len(new_files) == 1
    assert count_points(new_files.pop()) == r.written == 3 + sum(len(v) for v in exp3.values())
    assert_matches(read_events(rd / "tb"), exp)


def test_resume_after_conversion_rewrites_from_the_resumed_step(tmp_path):
    rd, exp = make_run(tmp_path, steps=range(0, 12))
    tbsync.sync_runs([rd])
    _, exp2 = make_run(tmp_path, steps=range(8, 10), seed=5)    # resumed from step 8, two steps so far
    r = tbsync.sync_runs([rd])[0]
    assert r.purged_from == 8
    exp = merge(exp, exp2)                 # steps 10, 11 keep their old values until re-logged (last wins)
    assert_matches(read_events(rd / "tb"), exp)
    _, exp3 = make_run(tmp_path, steps=range(10, 15), seed=6)
    tbsync.sync_runs([rd])
    assert_matches(read_events(rd / "tb"), merge(exp, exp3))


def test_fresh_run_in_the_same_folder_replaces_the_old_curve(tmp_path):
    rd, _ = make_run(tmp_path, steps=range(0, 10))
    tbsync.sync_runs([rd])
    for f in ("main.log", "stdout.log"):            # llm.c without -y 1 truncates main.log
        (rd / f).write_text("")
    _, exp = make_run(tmp_path, steps=range(0, 5), seed=9)
    r = tbsync.sync_runs([rd])[0]
    assert r.purged_from == 0
    assert_matches(read_events(rd / "tb"), exp)


def test_killed_between_write_and_state_save_writes_nothing_twice(tmp_path, monkeypatch):
    rd, exp = make_run(tmp_path, steps=range(0, 5))
    tbsync.sync_runs([rd])
    _, exp2 = make_run(tmp_path, steps=range(5, 8), seed=3)

    def die(self):
        raise KeyboardInterrupt

    s = TensorBoardSync(rd)
    monkeypatch.setattr(TensorBoardSync, "_save_state", die)
    with pytest.raises(KeyboardInterrupt):
        s.sync()
    s.close()
    monkeypatch.undo()
    tbsync.sync_runs([rd])
    assert_matches(read_events(rd / "tb"), merge(exp, exp2))


def test_follow_converts_new_runs_and_lines(tmp_path):
    runs = tmp_path / "runs"
    a, exp_a = make_run(runs, "a", steps=range(0, 3))
    seen, rounds = [], iter(range(3))
    added = []

    def tick():
        n = next(rounds)
        if n == 0:                    # after the first poll: new lines in a, and a new run b
            make_run(runs, "a", steps=range(3, 5), seed=4)
            make_run(runs, "b", steps=range(0, 2))
        return n == 1

    tbsync.follow(runs, [], interval=0, on_result=seen.append, should_stop=tick, on_new_run=added.extend)
    assert sorted(p.name for p in added) == ["a", "b"]
    assert [(r.run_dir.name, r.written) for r in seen][:1] == [("a", sum(len(v) for v in exp_a.values()))]
    assert {r.run_dir.name for r in seen} == {"a", "b"}
    got = read_events(a / "tb")
    assert [s for s, _ in got["loss/train"]] == [0, 1, 2, 3, 4]


def test_missing_and_empty_logs(tmp_path):
    rd = tmp_path / "empty"
    rd.mkdir()
    r = tbsync.sync_runs([rd])[0]
    assert r.written == 0
    from kitctl.observe.tbsync import describe_sync

    assert "no main.log yet" in describe_sync(r)
    (rd / "main.log").write_text("")
    assert "empty" in describe_sync(tbsync.sync_runs([rd])[0])
    (rd / "main.log").write_text("s:0 trl:11.0")     # one torn line
    assert tbsync.sync_runs([rd])[0].written == 0
    assert read_events(rd / "tb") == {}


def test_resolve_runs(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(KitError, match="no runs under"):
        runs_mod.resolve_runs([], runs)
    assert runs_mod.resolve_runs([], runs, allow_empty=True) == []
    a, _ = make_run(runs, "a", steps=range(2))
    (runs / "not-a-run").mkdir()
    assert runs_mod.resolve_runs([], runs) == [a]
    assert runs_mod.resolve_runs(["a"], runs) == [a]
    assert runs_mod.resolve_runs([str(a / "main.log")], runs) == [a]
    with pytest.raises(KitError, match="'zzz' not found") as e:
        runs_mod.resolve_runs(["zzz"], runs)
    assert "a" in e.value.hint


# ---------------------------------------------------------------- status


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_status_running_finished_stopped(tmp_path):
    from kitctl.host.gpus import GPU
    from kitctl.observe.status import collect, render

    rd, exp = make_run(tmp_path, steps=range(0, 30), total=40)
    # run.json as kitctl writes it (kitctl.core.run_record.RunRecord, which kitctl status reads too): the launch in "session"
    (rd / "run.json").write_text(json.dumps({"session": {"pid": os.getpid(), "host": socket.gethostname()},
                                             "gpus": [{"name": "NVIDIA GeForce RTX 3090"}, {"name": "NVIDIA GeForce RTX 2080 Ti"}]}))
    (rd / "model_00000020.bin").write_bytes(b"")
    st = collect(rd)
    assert st.live.state == "running"
    assert (st.steps_done, st.total_steps) == (30, 40)
    ms = sorted(exp["perf/ms_per_step"].items())[-20:]
    assert st.ms_per_step == pytest.approx(float(np.median([v for _, v in ms])))
    assert st.eta_s == pytest.approx(10 * st.ms_per_step / 1000)
    assert st.tokens_per_s == exp["perf/tokens_per_sec"][29]
    assert st.last_checkpoint == 20
    assert st.gpus == ["NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 2080 Ti"]

    from rich.console import Console

    con = Console(record=True, width=120)
    con.print(render(st))
    text = con.export_text()
    assert "running" in text and "30 / 40" in text and "75.0%" in text
    assert f"{exp['loss/train'][29]:.4f} at step 29" in text
    assert f"{exp['loss/val'][28]:.4f} at step 28" in text
    assert "HellaSwag" in text and f"{100 * exp['eval/hellaswag_acc'][28]:.2f}%" in text

    (rd / "run.json").write_text(json.dumps({"session": {"pid": dead_pid()}}))
    st = collect(rd, gpus_query=lambda: [GPU(0, "NVIDIA GeForce RTX 3090", 86, 24576, "570.86")])
    assert st.live.state == "stopped" and st.eta_s is None
    assert st.gpus == ["0: NVIDIA GeForce RTX 3090 (sm_86, 24576 MiB)"]   # as nvidia-smi prints it and st.gpus_source == "this machine"

    (rd / "run.json").write_text(json.dumps({"session": {"pid": 1, "exit_status": 3}}))
    assert collect(rd, gpus_query=list).live.state == "failed"
    (rd / "run.json").write_text("{not json")
    st = collect(rd, gpus_query=list)
    assert st.live.state == "unknown" and any("unreadable" in n for n in st.notes)


def test_status_of_a_run_that_has_not_logged(tmp_path):
    from kitctl.observe.status import collect

    rd = tmp_path / "new"
    rd.mkdir()
    (rd / "run.json").write_text("{}")
    st = collect(rd, gpus_query=list)
    assert st.steps_done is None and any("no main.log" in n for n in st.notes)


# ---------------------------------------------------------------- report


@pytest.mark.slow
def test_report_png_and_html(tmp_path):
    import base64

    from matplotlib.image import imread

    from kitctl.observe.report import GPT2_124M_VAL_LOSS, write_report

    a, _ = make_run(tmp_path, "gpt2-a", steps=range(0, 30), data="fineweb")
    b, exp_b = make_run(tmp_path, "gpt2-b", steps=range(0, 20), seed=3, data="fineweb")
    empty = tmp_path / "empty"
    empty.mkdir()
    plotted, skipped = write_report([a, b, empty], tmp_path / "r.png")
    assert [r.run_dir for r in plotted] == [a, b] and skipped == [empty]
    img = imread(tmp_path / "r.png")
    assert img.shape[:2] == (600, 1600) and img.std() > 0.05
    write_report([a, b], tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    m = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert m and base64.b64decode(m.group(1)).startswith(b"\x89PNG")
    assert "gpt2-a" in page and "gpt2-b" in page and "src=\"http" not in page
    assert f"{exp_b['loss/val'][16]:.4f} (step 16)" in page
    assert "<td>gpt2-b</td><td>20 / 40</td>" in page
    assert "vislog.ipynb" in page and str(GPT2_124M_VAL_LOSS.value) in page and "0.337" in page
    # a main.log under any file name, with a label
    log = tmp_path / "h200_main.log"
    log.write_bytes((a / "main.log").read_bytes())
    plotted, _ = write_report([log, b], tmp_path / "l.html", labels=["tinyshakespeare 2x H200", "b"])
    assert [r.name for r in plotted] == ["tinyshakespeare 2x H200", "b"]
    assert "<td>tinyshakespeare 2x H200</td><td>30</td>" in (tmp_path / "l.html").read_text()
    assert write_report([log], tmp_path / "n.png")[0][0].name == "h200_main"
    with pytest.raises(KitError, match="one --label per run"):
        write_report([log, b], tmp_path / "x.png", labels=["only one"])
    with pytest.raises(KitError, match="nothing to plot"):
        write_report([empty], tmp_path / "e.png")
    # issue 29: FineWeb's GPT-2 val loss is drawn only over a run trained on FineWeb; the HellaSwag lines always
    ts, _ = make_run(tmp_path, "ts", steps=range(0, 20), data="tinyshakespeare")
    write_report([ts], tmp_path / "ts.html")
    page = (tmp_path / "ts.html").read_text()
    assert str(GPT2_124M_VAL_LOSS.value) not in page and "0.337" in page and "0.294463" in page
    with pytest.raises(KitError, match=".png or .html"):
        write_report([a], tmp_path / "r.pdf")


def test_reference_values_are_vislogs(llmc_src):
    from kitctl.observe.report import GPT2_124M_HELLASWAG, GPT2_124M_VAL_LOSS, GPT3_124M_HELLASWAG

    nb = json.loads((llmc_src / "dev" / "vislog.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    for name, ref in (("loss_baseline", GPT2_124M_VAL_LOSS), ("hella2_baseline", GPT2_124M_HELLASWAG),
                      ("hella3_baseline", GPT3_124M_HELLASWAG)):
        m = re.search(name + r' = \{[^}]*"124M": ([0-9.]+)', code)
        assert m and float(m.group(1)) == ref.value, name


# ---------------------------------------------------------------- CLI messages


def kitctl(*args, data_root: Path, **kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["KIT_DATA_ROOT"] = str(data_root)
    return kitctl_proc.run(args, env=env, cwd=data_root, timeout=120, **kw)


@pytest.mark.slow
def test_cli_empty_and_missing(tmp_path):
    r = kitctl("status", data_root=tmp_path)
    # no runs yet is a state, as `report` with nothing to plot: said on stdout, exit 0 for both (issue 29)
    assert r.returncode == 0 and "nothing to show yet: no runs under" in r.stdout and "Traceback" not in r.stderr
    r = kitctl("report", data_root=tmp_path)
    assert r.returncode == 0 and "nothing to plot yet: no runs under" in r.stdout, r.stderr
    r = kitctl("report", "nope", data_root=tmp_path)
    assert r.returncode == 2 and "'nope' not found" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "runs" / "fresh").mkdir(parents=True)
    (tmp_path / "runs" / "fresh" / "main.log").write_text("")
    r = kitctl("report", "fresh", "--out", "x.png", data_root=tmp_path)
    # nothing to plot yet is a state, not a failure: said, nothing written, exit 0 (docs/observe.md)
    assert r.returncode == 0 and "nothing to plot yet" in r.stdout and "no report written" in r.stdout, r.stderr
    assert not (tmp_path / "x.png").exists() and "Traceback" not in r.stderr
    r = kitctl("tensorboard", "--no-serve", "--no-follow", data_root=tmp_path)
    assert r.returncode == 0 and "main.log is empty" in r.stdout, r.stderr
    r = kitctl("status", "fresh", data_root=tmp_path)
    assert r.returncode == 0 and "no step logged yet" in r.stdout, r.stderr


@pytest.mark.slow
def test_cli_convert_status_report(tmp_path):
    rd, exp = make_run(tmp_path / "runs", "gpt2-124m", steps=range(0, 12))
    r = kitctl("tensorboard", "--no-serve", "--no-follow", data_root=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"gpt2-124m: wrote {sum(len(v) for v in exp.values())} points of 7 tag(s)" in r.stdout
    assert_matches(read_events(rd / "tb"), exp)
    r = kitctl("status", data_root=tmp_path)
    assert r.returncode == 0 and "12 / 40" in r.stdout, r.stderr
    r = kitctl("report", "--out", "rep.html", data_root=tmp_path)
    assert r.returncode == 0 and (tmp_path / "rep.html").exists(), r.stderr


# ---------------------------------------------------------------- serving, in a real browser

CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def wait_for(fn, what: str, deadline_s: float = 120):
    """Poll fn() until it returns something truthy (bounded; not a timing assertion)."""
    import time

    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        try:
            last = fn()
        except OSError as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"gave up waiting for {what}; last: {last!r}")


@pytest.mark.slow
@pytest.mark.chromium
def test_tensorboard_serves_follows_and_renders(tmp_path):
    import signal
    from urllib.parse import quote

    runs = tmp_path / "runs"
    rd, exp = make_run(runs, "gpt2-124m", steps=range(0, 150), total=300)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["KIT_DATA_ROOT"] = str(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "kitctl", "tensorboard", "--port", str(port), "--host", "127.0.0.1",
                             "--interval", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path)

    def series(tag):
        pts = get_json(f"{base}/data/plugin/scalars/scalars?run=gpt2-124m&tag={quote(tag, safe='')}")
        return [(step, value) for _wall, step, value in pts]

    def want(e, tag):
        return [(s, float(np.float32(v))) for s, v in sorted(e[tag].items())]

    try:
        wait_for(lambda: "gpt2-124m" in get_json(f"{base}/data/runs"), "the run in /data/runs")
        tags = get_json(f"{base}/data/plugin/scalars/tags")
        assert set(tags) == {"gpt2-124m"} and set(tags["gpt2-124m"]) == set(exp)
        wait_for(lambda: all(series(t) == want(exp, t) for t in exp), "every scalar through the HTTP API")

        # live: llm.c resumes from step 120 and goes on to 160; TensorBoard ends up with the last-wins curve
        _, exp2 = make_run(runs, "gpt2-124m", steps=range(120, 160), total=300, seed=11)
        exp = merge(exp, exp2)
        wait_for(lambda: all(series(t) == want(exp, t) for t in exp), "the resumed steps through the HTTP API")

        # the page, in a real browser (one start: the DOM and a screenshot of the same load): the Time Series
        # dashboard lists the run and its cards
        shot = tmp_path / "tensorboard.png"
        chrome = [*CHROMIUM, f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,1150"]
        dom = subprocess.run([*chrome, "--dump-dom", f"--screenshot={shot}", "--virtual-time-budget=20000",
                              f"{base}/#timeseries"], capture_output=True, text=True, timeout=180).stdout
        assert "gpt2-124m" in dom and 'title="eval/hellaswag_acc"' in dom
        from matplotlib.image import imread

        img = imread(shot)
        assert img.shape[:2] == (1150, 1400) and img.std() > 0.05
        if os.environ.get("KITCTL_SCREENSHOT"):       # how docs/tensorboard.png is made
            import shutil

            shutil.copy(shot, os.environ["KITCTL_SCREENSHOT"])
    finally:
        proc.send_signal(signal.SIGINT)               # what Ctrl-C does
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped TensorBoard" in out
    with socket.socket() as s:                        # TensorBoard is gone with it
        assert s.connect_ex(("127.0.0.1", port)) != 0
    import tempfile

    views = Path(tempfile.gettempdir()).glob("kitctl-tensorboard-*/*")
    assert not [v for v in views if v.is_symlink() and v.resolve() == (rd / "tb").resolve()], "view not removed"


@pytest.mark.slow
def test_follow_without_serving_stops_cleanly_on_sigterm(tmp_path):
    import signal

    import socket

    rd, exp = make_run(tmp_path / "runs", "a", steps=range(0, 5))
    trainer = subprocess.Popen(["sleep", "300"])      # a live training: --no-serve follows only a live run
    (rd / "run.json").write_text(json.dumps({"session": {"start": "x", "pid": trainer.pid,
                                                          "host": socket.gethostname()}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["KIT_DATA_ROOT"] = str(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "kitctl", "tensorboard", "--no-serve", "--interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        wait_for(lambda: (rd / "tb" / tbsync.STATE_FILE).exists(), "the first conversion")
        _, exp2 = make_run(tmp_path / "runs", "a", steps=range(5, 7), seed=2)
        exp = merge(exp, exp2)
        wait_for(lambda: json.loads((rd / "tb" / tbsync.STATE_FILE).read_text())["max_step"].get("loss/train") == 6,
                 "the new lines to be converted")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        trainer.kill()
        trainer.wait()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "stopped" in out
    assert_matches(read_events(rd / "tb"), exp)


def test_status_reads_kitctl_train_run_json_and_finds_native_llmc(tmp_path):
    from kitctl.observe.liveness import find_llmc_process
    from kitctl.observe.status import collect

    rd, _ = make_run(tmp_path, "gpt2", steps=range(0, 10), total=40)
    rj = {"plan": {"steps": 40, "preset": "gpt2-124m"},
          "argv": ["docker", "run", "--rm", "--name", "kitctl-train-gpt2-0", "llmc-kit:latest", "mpirun"],
          "gpus": [{"index": 0, "name": "NVIDIA GeForce RTX 3090"}, {"index": 1, "name": "NVIDIA GeForce RTX 2080 Ti"}],
          "session": {"start": "2026-11-28T08:00:00Z", "status": "ok", "exit_status": 0}}
    (rd / "run.json").write_text(json.dumps(rj))
    st = collect(rd)
    assert st.live.state == "finished" and st.gpus == ["0: NVIDIA GeForce RTX 3090", "1: NVIDIA GeForce RTX 2080 Ti"]
    rj["session"] = {"start": "x", "status": "interrupted", "exit_status": 130, "next_resume_step": 8}
    (rd / "run.json").write_text(json.dumps(rj))
    st = collect(rd)
    assert st.live.state == "stopped" and "resumes from the checkpoint at step 8" in st.live.detail  # the stop message's words
    assert "`kitctl train`" in st.live.detail                    # a train run (no reproduce.json): train resumes it

    # a native llm.c, started by hand in another folder, writing to this run folder
    rj["session"] = {"start": "x"}
    rj["argv"] = ["mpirun", "-np", "2", "train_gpt2cu"]
    (rd / "run.json").write_text(json.dumps(rj))
    fake = tmp_path / "bin" / "train_gpt2cu"
    fake.parent.mkdir()
    fake.write_text("import time\ntime.sleep(300)\n")
    fake.chmod(0o755)
    assert find_llmc_process(rd) is None
    p = subprocess.Popen([sys.executable, str(fake), "-o", os.path.relpath(rd, tmp_path / "bin"), "-x", "40"],
                         cwd=tmp_path / "bin")
    try:
        wait_for(lambda: find_llmc_process(rd) is not None, "the fake train_gpt2cu in /proc", 30)
        st = collect(rd)
        assert st.live.state == "running" and st.eta_s == pytest.approx(30 * st.ms_per_step / 1000)
    finally:
        p.kill()
        p.wait()
    assert collect(rd).live.state == "unknown"


def test_status_after_a_resume_shows_the_resumed_runs_latest_step(tmp_path):
    from kitctl.observe.status import collect

    rd, _ = make_run(tmp_path, "r", steps=range(0, 20), total=40)
    _, exp2 = make_run(tmp_path, "r", steps=range(12, 15), total=40, seed=4)   # resumed at 12, now at 14
    st = collect(rd, gpus_query=list)
    assert st.steps_done == 15
    assert st.logs.last("loss/train") == (14, exp2["loss/train"][14])
    assert st.tokens_per_s == exp2["perf/tokens_per_sec"][14]
    assert st.eta_s == pytest.approx(25 * st.ms_per_step / 1000)


REAL_LOG = Path(__file__).resolve().parents[2] / "docs" / "validation" / "2026-11-28-h200x2-kit" / "ts_main.log"


@pytest.mark.slow
def test_real_llmc_log_with_a_resume_converts_like_vislog(tmp_path):
    """main.log of a real run (2x H200, Ctrl-C at step 45, resumed from the step-40 checkpoint)."""
    if not REAL_LOG.exists():
        pytest.skip(f"{REAL_LOG} not in this checkout")
    text = REAL_LOG.read_text()
    # the oracle: dev/vislog.ipynb's parse_logfile (a dict per stream, later lines overwrite)
    streams: dict[str, dict[int, float]] = {}
    for line in text.splitlines():
        parts = line.split()
        step = int(parts[0].split(":")[1])
        for kv in parts[1:]:
            k, v = kv.split(":")
            streams.setdefault(run_folder.MAIN_TAGS[k], {})[step] = float(v)
    train_lines = [ln for ln in text.splitlines() if " trl:" in ln]
    assert len(train_lines) > len(streams["loss/train"]), "expected re-logged steps (a resume) in the real log"
    rd = tmp_path / "ts"
    rd.mkdir()
    lines = text.splitlines(keepends=True)
    purged = []
    for line in lines:                            # as if followed live, a sync after every line
        with open(rd / "main.log", "a") as f:
            f.write(line)
        purged.append(tbsync.sync_runs([rd])[0].purged_from)
    # the resumed run re-logged steps 40..46: each rewrites from its step
    assert [p for p in purged if p is not None] == list(range(40, 47))
    assert_matches(read_events(rd / "tb"), streams)


def test_real_llmc_stdout(tmp_path):
    """stdout.log of a real 40-step kitctl train run on 2x H200 (MFU -100%, z-scores nan)."""
    real = REAL_LOG.parent / "kit1_stdout.log"
    if not real.exists():
        pytest.skip(f"{real} not in this checkout")
    text = real.read_text()
    step_lines = [ln for ln in text.splitlines() if ln.startswith("step ")]
    assert len(step_lines) == 40
    info = parse_stdout(text)
    assert info.total_steps == 40 and info.last_step == 39
    for ln in step_lines:       # oracle: split on '|' the way a reader of the line would
        fields = [f.strip() for f in ln.split("|")]
        step = int(fields[0].split()[1].split("/")[0]) - 1
        assert info.streams["perf/ms_per_step"][step] == float(fields[4].split()[0])
        assert info.streams["perf/tokens_per_sec"][step] == float(fields[6].split()[0])


@pytest.mark.slow
def test_no_runs_hint_names_the_command(tmp_path):
    with pytest.raises(KitError) as e:
        runs_mod.resolve_runs([], tmp_path / "runs", command="tensorboard")
    assert "`kitctl tensorboard path/to/log124M`" in e.value.hint and "kitctl report" not in e.value.hint
    r = kitctl("tensorboard", "--no-follow", "--no-serve", data_root=tmp_path)
    err = " ".join(r.stderr.split())
    assert r.returncode == 1 and "kitctl tensorboard path/to" in err and "kitctl report" not in err


@pytest.mark.slow
@pytest.mark.parametrize("out", ["/proc/x.png", "/proc/nope/x.html"])
def test_report_to_an_unwritable_path_says_so(tmp_path, out):
    from kitctl.observe.report import write_report

    a, _ = make_run(tmp_path / "runs", "a", steps=range(3))
    with pytest.raises(KitError) as e:
        write_report([a], Path(out))
    assert f"cannot write the report to {out}" in e.value.message and e.value.exit_code == 2
    assert "--out" in e.value.hint
