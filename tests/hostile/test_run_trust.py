"""Issue 28, trust in a run: one trainer per run folder, the data llm.c reads is the data the kit checked,
divergence is seen, liveness is exact, the user's environment and config mean what they say.

Real parts: real kitctl processes and a real stand-in train_gpt2cu (tests/fake_train_gpt2cu.py) for the writer
lock, Python's glob.glob as the stand-in for llm.c's glob(3), real /proc for pids."""
from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_gpus import fake_nvidia_smi
from fake_kit import ONE, fake_kit_root, fake_shard



@pytest.fixture()
def kit(tmp_path):
    """A data root with tiny shards and the fake train_gpt2cu as the native build; a fake nvidia-smi on PATH."""
    root = fake_kit_root(tmp_path / "data")
    gpus = fake_nvidia_smi(tmp_path / "fake-bin", ONE)
    (tmp_path / "one.csv").write_text(ONE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env.update({"KIT_DATA_ROOT": str(root), "PATH": f"{gpus}:{os.environ['PATH']}", "COLUMNS": "300"})
    return root, tmp_path, env


def _train_argv(root: Path, name: str, steps: int = 100000) -> list[str]:
    return [sys.executable, "-m", "kitctl", "train", "--runtime", "native", "--mpirun", "/nonexistent/mpirun",
            "--data", str(root / "tinyshakespeare"), "--name", name, "--micro-batch", "4", "--no-tune",
            "--steps", str(steps), "--", "-n", "5"]


def _wait(cond, what: str, proc=None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------------------------------------ one writer per run folder
@pytest.mark.slow
def test_second_kitctl_train_on_a_live_run_folder_is_refused_and_the_first_goes_on(kit):
    root, tmp, env = kit
    env = {**env, "FAKE_STEP_SLEEP": "0.02"}
    first = subprocess.Popen(_train_argv(root, "x"), env=env, cwd=tmp, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    run = root / "runs" / "x"
    try:
        _wait(lambda: (run / "stdout.log").exists() and "step    6/" in (run / "stdout.log").read_text(),
              "the first trainer's step 6", first)
        before = sorted(p.name for p in run.iterdir())
        second = subprocess.run(_train_argv(root, "x", steps=30), env=env, cwd=tmp, capture_output=True,
                                text=True, timeout=120)
        err = " ".join(second.stderr.split())
        assert second.returncode == 1, second.stderr
        assert f"pid {first.pid}" in err and f"kill -INT {first.pid}" in err and "kitctl train" in err, err
        # nothing of the second one's: the run record is still the first's session, the log has one header
        rj = json.loads((run / "run.json").read_text())
        assert rj["session"]["pid"] == first.pid and "history" not in rj or not rj["history"]
        assert (run / "stdout.log").read_text().count("# kitctl ") == 1
        assert first.poll() is None, "the refusal must not touch the running trainer"
        assert set(before) <= {p.name for p in run.iterdir()}
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130


@pytest.mark.slow
def test_train_refuses_while_a_hand_started_train_gpt2cu_writes_the_folder(kit):
    """llm.c started by hand (no kitctl, no lock) with -o the run folder: kitctl train sees it in /proc."""
    root, tmp, env = kit
    run = root / "runs" / "h"
    run.mkdir(parents=True)
    binary = root / "native" / "bin" / "train_gpt2cu"
    hand = subprocess.Popen([str(binary), "-i", str(root / "tinyshakespeare" / "tinyshakespeare_train_*.bin"),
                             "-j", str(root / "tinyshakespeare" / "tinyshakespeare_val_*.bin"), "-o", str(run),
                             "-b", "4", "-t", "1024", "-d", "4096", "-x", "100000", "-n", "5"],
                            env={**env, "FAKE_STEP_SLEEP": "0.05"}, cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: (run / "main.log").exists(), "the hand-started trainer's main.log", hand)
        r = subprocess.run(_train_argv(root, "h", steps=30), env=env, cwd=tmp, capture_output=True, text=True,
                           timeout=120)
        err = " ".join(r.stderr.split())
        assert r.returncode == 1 and f"train_gpt2cu (pid {hand.pid})" in err and f"kill -INT {hand.pid}" in err, err
        assert not (run / "run.json").exists()
    finally:
        hand.kill()
        hand.wait()


def holds_writer(path: Path) -> bool:
    """Does this process hold ``path``'s writer lock now? (the set of locks run_folder keeps for re-entry)"""
    from kitctl.core import run_folder

    return str(Path(path).resolve()) in run_folder._HELD


def test_writer_lock_is_held_per_process_reentrant_and_named(tmp_path):
    """In-process: the lock is re-entrant (reproduce holds it, its train stage takes it again); a second
    process is refused naming the holder; after the holder ends (the kernel drops flock) the next one gets it."""
    from kitctl.core.errors import KitError
    from kitctl.core.run_folder import LOCK_FILE, RunFolder

    run = tmp_path / "run"
    code = ("import sys; from pathlib import Path; from kitctl.core.run_folder import RunFolder\n"
            "with RunFolder(Path(sys.argv[1])).writer('kitctl train --name run'):\n"
            "    print('held', flush=True); sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(KitError) as e, RunFolder(run).writer("kitctl train"):
            pass
        assert f"pid {holder.pid}" in e.value.message and "kitctl train --name run" in e.value.message
        assert f"kill -INT {holder.pid}" in (e.value.hint or "")
        assert not holds_writer(run)
    finally:
        holder.communicate("", timeout=30)
    with RunFolder(run).writer("a"):
        with RunFolder(run).writer("b"):      # re-entrant
            assert holds_writer(run)
        assert holds_writer(run)
        assert f"pid={os.getpid()}" in (run / LOCK_FILE).read_text()
    assert not holds_writer(run)


def test_writer_lock_refuses_what_the_caller_knows_is_writing(tmp_path):
    from kitctl.core.errors import KitError
    from kitctl.core.run_folder import RunFolder

    busy = RunFolder(tmp_path / "r").writer("x", others=lambda: ("the container c1", "docker stop c1"))
    with pytest.raises(KitError) as e, busy:
        pass
    assert "the container c1 is writing" in e.value.message and "docker stop c1" in (e.value.hint or "")
    assert not holds_writer(tmp_path / "r")


# ------------------------------------------------------------------------------------------- liveness
@pytest.mark.parametrize("pid", [0, -1, 1, 2**40, 2**22 + 1, -(2**63)])
def test_pid_outside_the_range_is_never_alive(pid, tmp_path):
    from kitctl.core.proc import pid_alive, start_ticks
    from kitctl.observe.liveness import liveness
    from kitctl.core.run_record import RunRecord

    assert pid_alive(pid) is False and start_ticks(pid) is None
    rec = RunRecord.model_validate({"session": {"pid": pid, "host": socket.gethostname()}})
    assert liveness(rec, tmp_path, None, True).state == "finished"


def test_a_reused_pid_is_not_the_run(tmp_path):
    """The recorded (pid, start) names one process: this test's own pid with another start time is not it."""
    from kitctl.core.proc import pid_alive, start_ticks
    from kitctl.observe.liveness import liveness
    from kitctl.core.run_record import RunRecord

    me, start = os.getpid(), start_ticks(os.getpid())
    assert start is not None and pid_alive(me, start) and not pid_alive(me, start + 1)
    host = socket.gethostname()
    same = RunRecord.model_validate({"session": {"pid": me, "pid_start": start, "host": host}})
    other = RunRecord.model_validate({"session": {"pid": me, "pid_start": start - 1, "host": host}})
    assert liveness(same, tmp_path, None, False).state == "running"
    lv = liveness(other, tmp_path, None, False)
    assert lv.state == "stopped" and f"pid {me} is gone" in lv.detail


# ------------------------------------------------------------------ what llm.c globs is what the kit checked
def _shards_in(folder: Path, ntok: int) -> list[str]:
    folder.mkdir(parents=True)
    fake_shard(folder / "tinyshakespeare_val_000000.bin", 40_000)
    fake_shard(folder / "tinyshakespeare_train_000001.bin", ntok)
    return sorted(str(p) for p in folder.iterdir())


@pytest.mark.slow        # a kitctl command in process or a plan: the full tier
@pytest.mark.parametrize("checked, decoy", [("g[1]", "g1"), ("g*", "gX"), ("g?", "gY"), ("g[[]x", "g[x")])
def test_llmc_patterns_never_match_a_decoy_folder(kit, checked, decoy, monkeypatch):
    """The checked folder's name holds glob characters and a decoy folder matches it unescaped: -i / -j
    (glob.glob standing in for llm.c's glob(3)) expand to the checked shards only, and run.json keeps them."""
    from rich.console import Console
    import io

    from kitctl.core.config import KitConfig
    from kitctl.train import TrainRequest
    from kitctl.train.session import plan_for, run_training

    root, tmp, _ = kit
    want = _shards_in(root / checked, 300_000)
    decoy_files = _shards_in(root / decoy, 200_000)
    assert set(glob.glob(f"{root / checked}/tinyshakespeare_train_*.bin")) & set(decoy_files), "not a decoy"
    cfg = KitConfig(data_root=root, runtime="native")
    req = TrainRequest(runtime="native", data=root / checked, name="g", micro_batch=8, steps=3,
                       passthrough=("-n", "5"))
    plan, facts, replan = plan_for(cfg, req, tmp / "one.csv", "/nonexistent/mpirun")
    args = plan.launch.llmc_args
    i, j = args[args.index("-i") + 1], args[args.index("-j") + 1]
    assert (glob.glob(i), glob.glob(j)) == ([want[0]], [want[1]]), (i, j)    # sorted: train, then val
    reads = tmp / "reads"
    monkeypatch.setenv("FAKE_READS", str(reads))
    session = run_training(plan, facts, Console(file=io.StringIO()), replan)
    assert session.status == "ok"
    assert sorted(reads.read_text().split("\n")[:-1]) == want          # what the (fake) llm.c opened
    rj = json.loads((root / "runs" / "g" / "run.json").read_text())
    assert (rj["data"]["train_pattern"], rj["data"]["val_pattern"]) == (i, j)


@pytest.mark.slow        # a kitctl command in process or a plan: the full tier
def test_a_backslash_in_the_shard_folder_is_refused_up_front(kit):
    """glob(3) reads a backslash as an escape, Python's glob does not: the kit refuses it (exit 2) by name."""
    from kitctl.core.config import KitConfig
    from kitctl.core.errors import ConfigError
    from kitctl.train import TrainRequest
    from kitctl.train.session import plan_for

    root, tmp, _ = kit
    _shards_in(root / "a\\b", 300_000)
    cfg = KitConfig(data_root=root, runtime="native")
    with pytest.raises(ConfigError) as e:
        plan_for(cfg, TrainRequest(runtime="native", data=root / "a\\b", name="b", micro_batch=8, steps=3), tmp / "one.csv",
                 "/nonexistent/mpirun")
    assert e.value.exit_code == 2 and "backslash" in e.value.message


def test_glob_escape_matches_only_the_literal(tmp_path):
    from kitctl.core.llmc_files import glob_escape, shard_globs

    assert glob_escape("a[b]*c?") == "a[[]b][*]c[?]"
    for name in ("x[1]", "x*", "x?y", "[", "]", "x[!a]"):
        (tmp_path / name).mkdir()
    for name in ("x[1]", "x*", "x?y", "[", "]", "x[!a]"):
        assert glob.glob(glob_escape(str(tmp_path / name))) == [str(tmp_path / name)]
    assert shard_globs("/d[1]", "f*") == ("/d[[]1]/f[*]_val_*.bin", "/d[[]1]/f[*]_train_*.bin")


# ------------------------------------------------------------------------------------- divergence is a state
DIVERGED = "".join(f"s:{s} trl:{4 - s / 10:.4f} lr:0.0006 norm:1.00\n" for s in range(5)) + \
    "s:5 trl:nan lr:0.0006 norm:nan\ns:5 tel:nan\ns:6 trl:-nan lr:0.0006 norm:inf\ns:7 trl:inf\n"


def _world_with_log(tmp_path: Path, text: str) -> Path:
    from harness import make_world

    cwd = make_world(tmp_path)
    (cwd / "data" / "runs" / "r1" / "main.log").write_text(text)
    return cwd


def test_logs_keep_nan_and_inf_and_say_since_when():
    from kitctl.core.run_folder import parse_main_log
    from kitctl.observe.logs import divergence

    streams, bad = parse_main_log(DIVERGED)
    trl = streams["loss/train"]
    assert bad == 0 and list(trl)[-3:] == [5, 6, 7] and trl[7] == float("inf")
    d = divergence(trl)
    assert d is not None and (d.step, d.describe()) == (5, "loss is inf since step 5")
    nan_only, _ = parse_main_log("s:0 trl:nan\ns:1 trl:nan\n")
    assert divergence(nan_only["loss/train"]).describe() == "loss is NaN since step 0"
    recovered, _ = parse_main_log("s:0 trl:nan\ns:1 trl:3.0\n")
    assert divergence(recovered["loss/train"]) is None


@pytest.mark.slow        # a kitctl command in process or a plan: the full tier
def test_status_says_the_loss_is_nan_since_step_n_with_exit_3_and_json(tmp_path, capsys, monkeypatch):
    from harness import run_kitctl

    cwd = _world_with_log(tmp_path, DIVERGED.replace("s:7 trl:inf\n", ""))
    r = run_kitctl(["status", "r1"], cwd, capsys, monkeypatch)
    assert r.code == 3 and "loss is NaN since step 5" in r.out and "ETA" not in r.out, r.out + r.err
    r = run_kitctl(["status", "r1", "--json"], cwd, capsys, monkeypatch)
    got = json.loads(r.out)
    assert r.code == 3 and got["diverged"] == {"tag": "loss/train", "since_step": 5, "value": "NaN",
                                               "message": "loss is NaN since step 5"}
    assert got["steps_done"] == 7        # the NaN steps count: status does not stop at the last finite one
    (cwd / "data" / "runs" / "r1" / "main.log").write_text("s:0 trl:nan\n")
    r = run_kitctl(["status", "r1", "--json"], cwd, capsys, monkeypatch)
    assert r.code == 3 and json.loads(r.out)["diverged"]["since_step"] == 0   # an all-NaN log is not "no line yet"
    (cwd / "data" / "runs" / "r1" / "main.log").write_text("s:0 trl:4.0\n")
    r = run_kitctl(["status", "r1", "--json"], cwd, capsys, monkeypatch)
    assert r.code == 0 and json.loads(r.out)["diverged"] is None


@pytest.mark.slow       # three reports (matplotlib) and conversions: ~5 s
@pytest.mark.parametrize("log", [
    "s:0 trl:1e308\ns:1 trl:-1.7976931348623157e308\ns:1 tel:1e308\ns:2 trl:3.0\n",   # near float's limits
    "s:0 trl:1e999\ns:1 trl:nan\n",                                                     # overflows to inf
    f"s:0 trl:4.0\ns:{2**63} trl:3.0\ns:{2**70} tel:3.0\ns:-1 trl:2\n",                # steps past int64
])
def test_report_and_tensorboard_read_extreme_values_without_crashing(tmp_path, capsys, monkeypatch, log):
    from harness import run_kitctl

    cwd = _world_with_log(tmp_path, log)
    r = run_kitctl(["report", "r1", "--out", "rep.html"], cwd, capsys, monkeypatch)
    assert r.code == 0 and (cwd / "rep.html").stat().st_size > 0, r.out + r.err
    r = run_kitctl(["tensorboard", "--no-serve", "r1"], cwd, capsys, monkeypatch)
    assert r.code == 0 and "Traceback" not in r.err, r.out + r.err
    r = run_kitctl(["status", "r1"], cwd, capsys, monkeypatch)
    assert r.code in (0, 3) and "internal error" not in r.err, r.out + r.err


def test_report_marks_the_divergence(tmp_path):
    from kitctl.observe.logs import read_run
    from kitctl.observe.report import figure, summary_rows

    rd = tmp_path / "r"
    rd.mkdir()
    (rd / "main.log").write_text(DIVERGED)
    run = read_run(rd)
    assert summary_rows([run])[0]["diverged"] == "loss is inf since step 5"
    fig = figure([run])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("loss is inf since step 5" in t for t in labels), labels


_PEAK = """
import resource, sys
from pathlib import Path
from kitctl.observe.tbsync import sync_runs
n = sync_runs([Path(sys.argv[1])])[0].written
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _tb_peak_kb(run: Path, lines: int) -> tuple[int, int]:
    run.mkdir()
    with open(run / "main.log", "w") as f:
        f.writelines(f"s:{i} trl:{3 + i % 7 / 10:.4f}\n" for i in range(lines))
    out = subprocess.run([sys.executable, "-c", _PEAK, str(run)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    n, kb = map(int, out.stdout.split())
    return n, kb


@pytest.mark.slow
def test_tensorboard_converts_a_long_main_log_in_bounded_memory(tmp_path):
    """150,000 steps convert within 40 MB of what 5,000 take (before: the whole log's points and events were held
    at once, +180 MB here and 8.6 GB for a 10M-step log); logs.TB_CHUNK / tbsync.WRITE_BATCH bound it."""
    small = _tb_peak_kb(tmp_path / "small", 5_000)
    big = _tb_peak_kb(tmp_path / "big", 150_000)
    assert (small[0], big[0]) == (5_000, 150_000)
    assert big[1] - small[1] < 40_000, (small, big)


# ------------------------------------------------------------------- the user's environment: honoured or refused
TWO = ONE + "1, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.124.06\n"


@pytest.mark.slow        # a kitctl command in process or a plan: the full tier
@pytest.mark.parametrize("cvd, gpus, says", [
    ("1", "1", None), ("1,0", "1,0", None), (None, "0,1", None),
    ("GPU-8d3c0f0e-1111-2222-3333-444455556666", None, "CUDA_VISIBLE_DEVICES=GPU-"),
    ("MIG-1", None, "CUDA_VISIBLE_DEVICES=MIG-1"), ("", None, "CUDA_VISIBLE_DEVICES is set but empty"),
    ("3", None, "names GPU(s) 3"),
])
def test_cuda_visible_devices_restricts_the_inventory_or_is_refused(kit, cvd, gpus, says):
    from kitctl.core.config import KitConfig
    from kitctl.core.errors import ConfigError
    from kitctl.train import TrainRequest
    from kitctl.train.facts import gather_facts
    from kitctl.train.planner import build_plan

    root, tmp, env = kit
    fake_nvidia_smi(tmp / "fake-bin", TWO)
    env = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update({"CUDA_VISIBLE_DEVICES": cvd} if cvd is not None else {})
    os_env = dict(os.environ)
    try:
        os.environ["PATH"] = env["PATH"]
        cfg = KitConfig(data_root=root, runtime="native")
        req = TrainRequest(runtime="native", data=root / "tinyshakespeare", name="v", micro_batch=4, steps=3,
                           total_batch=4096 * (2 if gpus and "," in gpus else 1))
        if says is None:
            plan = build_plan(req, gather_facts(cfg, req, None, "/nonexistent/mpirun", environ=env))
            assert plan.launch.env["CUDA_VISIBLE_DEVICES"] == gpus
        else:
            with pytest.raises(ConfigError) as e:
                gather_facts(cfg, req, None, "/nonexistent/mpirun", environ=env)
            assert says in e.value.message and e.value.exit_code == 2
    finally:
        os.environ.clear()
        os.environ.update(os_env)


@pytest.mark.slow        # a kitctl command in process or a plan: the full tier
@pytest.mark.parametrize("nccl, says", [
    ("ib_disable: true\n  extra_env: {NCCL_IB_DISABLE: '0'}", "nccl.extra_env.NCCL_IB_DISABLE"),
    ("socket_ifname: eth0\n  extra_env: {NCCL_SOCKET_IFNAME: ib0}", "collides with nccl.socket_ifname"),
    ("extra_env: {CUDA_VISIBLE_DEVICES: '0'}", "the kit's own CUDA_VISIBLE_DEVICES"),
    ("extra_env: {CUDA_DEVICE_ORDER: FASTEST_FIRST}", "the kit's own CUDA_DEVICE_ORDER"),
    ("extra_env: {HOME: /root}", "the kit's own HOME"),
])
def test_nccl_extra_env_colliding_with_the_kits_settings_is_exit_2_naming_both(tmp_path, capsys, monkeypatch,
                                                                                nccl, says):
    from harness import make_world, run_kitctl

    cwd = make_world(tmp_path)
    (cwd / "kit.yaml").write_text(f"data_root: ./data\nruntime: native\nnccl:\n  {nccl}\n")
    r = run_kitctl(["render", "--stdout"], cwd, capsys, monkeypatch)
    assert r.code == 2 and says in r.err, r.err
    (cwd / "kit.yaml").write_text("data_root: ./data\nruntime: native\nnccl:\n  extra_env: {NCCL_P2P_LEVEL: NVL}\n")
    assert run_kitctl(["render", "--stdout"], cwd, capsys, monkeypatch).code == 0


# --------------------------------------------------------------------------------- config means what it says
PLAN = ["train", "--inventory", "two.csv", "--mpirun", "/bin/true", "--steps", "10", "--dry-run"]


def _config_case(tmp_path, capsys, monkeypatch, kit_yaml: str, argv=("render", "--stdout"), setup=None):
    from harness import make_world, run_kitctl

    cwd = make_world(tmp_path)
    (cwd / "kit.yaml").write_text(kit_yaml)
    if setup:
        setup(cwd)
    return run_kitctl(list(argv), cwd, capsys, monkeypatch), cwd


@pytest.mark.slow        # a kitctl command in process or a plan: the full tier
@pytest.mark.parametrize("arch, says", [("[075]", "075 is read as octal 61 by YAML"),
                                        ("[86, +075]", "+075 is read as octal 61"), ("[007]", "write 7 without the leading zero")])
def test_leading_zero_arch_is_refused(tmp_path, capsys, monkeypatch, arch, says):
    r, _ = _config_case(tmp_path, capsys, monkeypatch, f"data_root: ./data\nruntime: native\narch: {arch}\n")
    assert r.code == 2 and says in r.err, r.err


@pytest.mark.slow        # a kitctl command in process or a plan: the full tier
@pytest.mark.parametrize("key, value", [("hf_home", "$HOME/hf"), ("tokenizer_dir", "${TOK}/x"),
                                        ("hf_home", "~nobody-here/hf")])
def test_unexpanded_variables_in_hf_home_and_tokenizer_dir_are_refused_like_data_root(tmp_path, capsys,
                                                                                       monkeypatch, key, value):
    r, cwd = _config_case(tmp_path, capsys, monkeypatch, f"data_root: ./data\nruntime: native\n{key}: '{value}'\n")
    assert r.code == 2 and "$VARIABLE or ~user" in r.err and key in r.err, r.err
    assert not any("$" in p.name for p in cwd.rglob("*"))


def test_home_tilde_in_hf_home_is_expanded(tmp_path, monkeypatch):
    from kitctl.core.config import load_config_source

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "kit.yaml").write_text("data_root: ./data\nruntime: native\nhf_home: ~/hf\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg, _ = load_config_source(cwd / "kit.yaml")
    assert cfg.hf_home == tmp_path / "home" / "hf"


@pytest.mark.slow        # a kitctl command in process or a plan: the full tier
@pytest.mark.parametrize("folder, char", [("sh:ards", "':'"), ("sh,ards", "','")])
def test_a_colon_or_comma_in_a_mounted_folder_is_refused_for_containers(tmp_path, capsys, monkeypatch, folder, char):
    def move(cwd: Path) -> None:
        (cwd / "data" / "shards").rename(cwd / "data" / folder)

    argv = [*PLAN, "--runtime", "docker", "--data", f"data/{folder}"]
    r, _ = _config_case(tmp_path, capsys, monkeypatch, "data_root: ./data\nruntime: native\n", argv, move)
    assert r.code == 2 and f"has a {char}" in r.err and "container mounts" in r.err, r.err
    r2, _ = _config_case(tmp_path / "n", capsys, monkeypatch, "data_root: ./data\nruntime: native\n",
                         [*PLAN, "--runtime", "native", "--data", f"data/{folder}"], move)
    assert r2.code == 0, r2.err           # native: no mount, the path is fine


@pytest.mark.slow        # a kitctl command in process or a plan: the full tier
def test_printed_paths_are_never_markup_or_emoji(tmp_path, capsys, monkeypatch):
    def move(cwd: Path) -> None:
        (cwd / "data" / "shards").rename(cwd / "data" / "x:b:[bold]y")

    r, _ = _config_case(tmp_path, capsys, monkeypatch, "data_root: ./data\nruntime: native\n",
                        [*PLAN, "--runtime", "native", "--data", "data/x:b:[bold]y"], move)
    assert r.code == 0 and "x:b:[bold]y" in r.out and "\U0001f171" not in r.out, r.out


DEEP_YAML = "a: " + "[" * 200 + "]" * 200 + "\n"
DEEP_JSON = "[" * 100_000 + "]" * 100_000


@pytest.mark.slow        # a kitctl command in process or a plan: the full tier
@pytest.mark.parametrize("where", ["kit.yaml", "run.json", "manifest.json"])
def test_deeply_nested_files_are_exit_2(tmp_path, capsys, monkeypatch, where):
    def deep(cwd: Path) -> None:
        if where == "run.json":
            (cwd / "data" / "runs" / "r1" / "run.json").write_text('{"session": ' + DEEP_JSON + "}")
        elif where == "manifest.json":
            (cwd / "data" / "shards" / "manifest.json").write_text('{"shards": ' + DEEP_JSON + "}")

    yaml_text = "data_root: ./data\nruntime: native\n" + (DEEP_YAML if where == "kit.yaml" else "")
    argv = {"kit.yaml": ["render", "--stdout"], "run.json": ["status", "r1"],
            "manifest.json": [*PLAN, "--data", "data/shards"]}[where]
    r, _ = _config_case(tmp_path, capsys, monkeypatch, yaml_text, argv, deep)
    assert r.code == 2 and "levels deep" in r.err and "internal error" not in r.err, r.err


@pytest.mark.slow        # a kitctl command in process or a plan: the full tier
def test_a_driver_too_old_for_the_image_is_a_plan_error_naming_its_cuda(tmp_path, capsys, monkeypatch):
    def old_driver(cwd: Path) -> None:
        (cwd / "two.csv").write_text("0, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 470.82.01\n")

    r, _ = _config_case(tmp_path, capsys, monkeypatch, "data_root: ./data\nruntime: docker\ncuda: 12.4.1\n",
                        [*PLAN, "--data", "data/shards"], old_driver)
    assert r.code == 2 and "driver 470.82.01 runs CUDA up to 11.0" in r.err and "CUDA 12.4.1" in r.err, r.err


# ------------------------------------------------------------------------------ shards: inode and ctime count
def _data_world(tmp_path, capsys, monkeypatch):
    """A world whose shard folder was written by a real `kitctl data` (manifest with size/mtime/ino/ctime)."""
    from harness import make_world, run_kitctl

    cwd = make_world(tmp_path)
    r = run_kitctl(["data", "input.txt", "--runtime", "native", "--out", "data/made", "--name", "made"], cwd, capsys,
                   monkeypatch)
    assert r.code == 0, r.err
    return cwd, cwd / "data" / "made"


@pytest.mark.slow
def test_a_same_size_edit_with_its_mtime_put_back_goes_to_data_verify(tmp_path, capsys, monkeypatch):
    from harness import run_kitctl

    cwd, made = _data_world(tmp_path, capsys, monkeypatch)
    shard = made / "made_train_000001.bin"
    st = shard.stat()
    data = bytearray(shard.read_bytes())
    data[-2:] = b"\x07\x00" if data[-2:] != b"\x07\x00" else b"\x08\x00"     # one token, same size
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))                     # mtime put back
    assert shard.stat().st_mtime_ns == st.st_mtime_ns and shard.stat().st_size == st.st_size
    plan = [*PLAN, "--data", "data/made"]
    r = run_kitctl(plan, cwd, capsys, monkeypatch)
    assert r.code == 2 and "ctime differs" in r.err and "kitctl data verify" in r.err, r.err
    r = run_kitctl(["data", "verify", "data/made"], cwd, capsys, monkeypatch)
    assert r.code == 1 and "sha256 differs" in r.out + r.err          # verify does not bless changed bytes


@pytest.mark.slow
def test_verify_on_a_read_only_folder_is_not_a_dead_end(tmp_path, capsys, monkeypatch):
    """Copied without -p (new mtimes and inodes) into a read-only place: verify checks every sha256, keeps the
    stamps aside (the manifest cannot be rewritten) and train then trusts the folder; a later edit is refused again."""
    from harness import make_readonly, run_kitctl, undo_mounts

    cwd, made = _data_world(tmp_path, capsys, monkeypatch)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for p in made.iterdir():
        if p.name.endswith(".bin"):
            data = p.read_bytes()
            p.unlink()
            p.write_bytes(data)              # another inode, a new mtime: what `cp` without -p gives
    plan = [*PLAN, "--gpus", "1", "--data", "data/made", "--", "-t", "64"]
    try:
        make_readonly(made)
        r = run_kitctl(plan, cwd, capsys, monkeypatch, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
        assert r.code == 2 and "mtime differs" in r.err, r.err
        r = run_kitctl(["data", "verify", "data/made"], cwd, capsys, monkeypatch,
                       env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
        assert r.code == 0 and "train trusts them" in r.out, r.out + r.err
        r = run_kitctl(plan, cwd, capsys, monkeypatch, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
        assert r.code == 0, r.err
    finally:
        undo_mounts()
    (made / "made_val_000000.bin").touch()
    r = run_kitctl(plan, cwd, capsys, monkeypatch, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert r.code == 2 and "made_val_000000.bin: modified after" in r.err, r.err


# ------------------------------------------------------------------------------- messages fixed at their root
@pytest.mark.slow        # a kitctl command in process or a plan: the full tier
def test_an_empty_inventory_is_named_not_answered_with_pass_inventory(tmp_path, capsys, monkeypatch):
    from harness import make_world, run_kitctl

    cwd = make_world(tmp_path)
    (cwd / "empty.csv").write_text("# nothing\n")
    r = run_kitctl(["train", "--inventory", "empty.csv", "--mpirun", "/bin/true", "--data", "data/shards",
                    "--dry-run"], cwd, capsys, monkeypatch)
    assert r.code == 2 and "empty.csv lists no GPU" in r.err and "pass --inventory" not in r.err, r.err


def test_the_verify_hint_quotes_a_path_with_spaces(tmp_path):
    from kitctl.core.data_folder import Problem, fix_for

    hint = fix_for(tmp_path / "my data", (Problem("x.bin", "mtime", "changed"),))
    assert f"kitctl data verify '{tmp_path / 'my data'}'" in hint


@pytest.mark.slow        # a kitctl command in process or a plan: the full tier
@pytest.mark.parametrize("words, n, hint", [(20, 1, "shorten the prompt to at most 7 tokens"),
                                            (3, 10, "pass -n 5 or less")])
def test_sample_hint_for_a_long_prompt_names_only_accepted_values(tmp_path, words, n, hint):
    from kitctl.core.errors import ConfigError
    from kitctl.model.sample import sample

    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text('{"n_positions": 8}')
    with pytest.raises(ConfigError) as e:
        sample(export, " hello" * words, n, cache_dir=tmp_path / "tok", backend="numpy")
    assert hint in (e.value.hint or ""), e.value.hint
