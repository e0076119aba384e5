"""The training runner end to end with a fake train_gpt2cu (tests/fake_train_gpt2cu.py): native launch
(directly for 1 rank, through a real mpirun when installed), stdout.log, run.json, progress parsing, resume,
out-of-memory retry, Ctrl-C, tune + cache; the docker runner through a fake python-on-whales client."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import sys

import pytest

import kitctl_proc
from rich.console import Console

from kitctl.core.config import KitConfig
from kitctl.core.errors import KitError
from kitctl.core.run_folder import parse_step
from kitctl.train.steplog import throughput
from kitctl.train import TrainRequest
from kitctl.train.facts import inspect_out
from kitctl.core.run_record import RuntimeRecord
from kitctl.train.session import plan_for, run_training
from kitctl.model.record import add_eval, read_evals

from fake_gpus import fake_nvidia_smi
from fake_kit import ONE, fake_kit_root

TWO = ONE + "1, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.124.06\n"
NO_MPIRUN = "/nonexistent/mpirun"


@pytest.fixture()
def kit(tmp_path):
    root = fake_kit_root(tmp_path / "data")
    (tmp_path / "one.csv").write_text(ONE)
    (tmp_path / "two.csv").write_text(TWO)
    cfg = KitConfig(data_root=root, runtime="native")
    return cfg, tmp_path


def _req(**kw) -> TrainRequest:
    base = dict(runtime="native", data=None, name="t", micro_batch=8, steps=12, passthrough=["-n", "5"])
    base.update(kw)
    return TrainRequest(**base)


def _plan(cfg, tmp, req, inv="one.csv", mpirun=NO_MPIRUN):
    req = dataclasses.replace(req, data=req.data or cfg.data_root / "tinyshakespeare")
    return plan_for(cfg, req, tmp / inv, mpirun)


def _console():
    return Console(file=io.StringIO(), width=200, force_terminal=False)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except FileNotFoundError:
        return False


def test_native_single_rank_run_then_resume(kit):
    cfg, tmp = kit
    plan, facts, replan = _plan(cfg, tmp, _req(steps=6))
    assert plan.launch.argv[0].endswith("native/bin/train_gpt2cu")         # no mpirun: the one rank runs directly
    con = _console()
    session = run_training(plan, facts, con, replan)
    out = cfg.data_root / "runs" / "t"
    assert session.status == "ok" and session.last_step == 6
    log = (out / "stdout.log").read_text()
    assert log.count("step ") >= 6 and "| run hellaswag         | yes" in log   # cwd links worked
    assert "| tokenizer             | yes" in log
    assert (out / ".llmc-cwd" / "dev" / "data" / "hellaswag" / "hellaswag_val.bin").is_symlink()
    rj = json.loads((out / "run.json").read_text())
    assert rj["plan"]["micro_batch"] == 8 and rj["plan"]["ranks"] == 1 and rj["schema_version"] == 1
    assert rj["runtime"]["kind"] == "native" and len(rj["runtime"]["sha256"]) == 64
    assert rj["session"]["exit_status"] == 0 and rj["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert rj["session"]["pid"] == os.getpid() and rj["session"]["host"]
    assert rj["argv"] == plan.launch.argv and rj["data"]["fingerprint"].startswith("shards:")
    assert inspect_out(out).done_steps == (5, 6)
    assert "done: step 6/6" in con.file.getvalue()

    # an eval result recorded between sessions (kitctl eval) survives the next training session
    add_eval(out, {"task": "hellaswag", "metrics": {"acc_norm": 0.25}, "step": 6})
    # ...and so does a key this kit does not know (a newer kit's), through both writers
    rj = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**rj, "from_a_newer_kit": {"x": 1}}))

    # a longer run in the same folder resumes from step 6 with the checkpoint's B (no --micro-batch given)
    plan2, facts2, replan2 = _plan(cfg, tmp, _req(steps=12, micro_batch=None))
    assert plan2.decisions.resumption.resume and plan2.decisions.resumption.resume_step == 6 and plan2.decisions.batch.micro_batch == 8
    assert plan2.launch.llmc_args[plan2.launch.llmc_args.index("-y") + 1] == "1"
    s2 = run_training(plan2, facts2, _console(), replan2)
    assert s2.first_step == 7 and s2.last_step == 12
    rj = json.loads((out / "run.json").read_text())
    assert rj["session"]["resumed_from"] == 6 and rj["history"][-1]["last_step"] == 6
    assert [e["task"] for e in read_evals(out)] == ["hellaswag"]
    assert rj["from_a_newer_kit"] == {"x": 1}
    assert (out / "main.log").read_text().count("trl:") == 12             # appended, not rewritten

    # the same run again: complete, nothing to do
    plan3, facts3, _ = _plan(cfg, tmp, _req(steps=12, micro_batch=None))
    assert plan3.decisions.resumption.complete
    assert run_training(plan3, facts3, _console()).last_step == 12

    # another B cannot resume: refused with what to do
    with pytest.raises(KitError) as e:
        _plan(cfg, tmp, _req(steps=20, micro_batch=4))
    assert "micro_batch: checkpoint 8, this plan 4" in e.value.message and "--fresh" in e.value.hint

    # --fresh archives the old checkpoints and starts over
    plan4, facts4, r4 = _plan(cfg, tmp, _req(steps=3, micro_batch=4, fresh=True))
    run_training(plan4, facts4, _console(), r4)
    archives = list(out.glob("archive-*"))
    assert len(archives) == 1 and (archives[0] / "DONE_00000012").exists()
    assert inspect_out(out).done_steps == (3,)


@pytest.mark.parametrize("archs,runs", [([100], False), ([86], True), ([90], True)])
def test_binaries_with_no_code_for_the_gpu_are_refused_before_llmc_starts(kit, archs, runs):
    """The build record beside the binaries says what they hold. On the H100 (sm_90): an sm_100-only build has no
    code at all (measured there: llm.c stops with CUDA's 'no kernel image is available'), so it is refused with
    exit 2 before anything starts; an sm_86 build runs its compute_86 PTX (measured at sm_90's speed) and runs."""
    from kitctl.core.native_build_record import NativeBuild, record_path

    cfg, tmp = kit
    bindir = cfg.data_root / "native" / "bin"
    NativeBuild(archs=archs, binaries={"bf16": "train_gpt2cu", "fp32": "train_gpt2cu_fp32"}, cudnn=False).write(
        record_path(bindir))
    plan, facts, replan = _plan(cfg, tmp, _req(steps=2))
    out = cfg.data_root / "runs" / "t"
    if not runs:        # a record whose checksums are not those of the binaries there says nothing of them
        sums = {n: "0" * 64 for n in ("train_gpt2cu", "train_gpt2cu_fp32")}
        NativeBuild(archs=archs, binaries={"bf16": "train_gpt2cu"}, cudnn=False, sha256=sums).write(record_path(bindir))
        p2, f2, r2 = _plan(cfg, tmp, _req(steps=2, name="stale"))
        assert run_training(p2, f2, _console(), r2).last_step == 2
        NativeBuild(archs=archs, binaries={"bf16": "train_gpt2cu"}, cudnn=False).write(record_path(bindir))
    if runs:
        assert run_training(plan, facts, _console(), replan).last_step == 2
        return
    with pytest.raises(KitError) as e:
        run_training(plan, facts, _console(), replan)
    assert e.value.exit_code == 2
    assert f"{record_path(bindir)}: built for [100], which has no code for GPU 0:NVIDIA H100" in e.value.message
    assert "no kernel image" in e.value.message and "kitctl build --runtime native --arch 90,100" in e.value.hint
    assert not (out / "stdout.log").exists() and not list(out.glob("model_*"))        # llm.c never started


@pytest.mark.slow
@pytest.mark.docker
def test_runtime_image_with_no_code_for_the_gpu_is_refused_before_docker_run(kit, docker_base_image):
    """runtime docker: the runtime image's org.llmc-kit.archs label says what its binaries hold (a label-only
    image on the real engine); an sm_100-only image on the H100 is refused with exit 2, no container started."""
    import subprocess
    import uuid

    cfg, tmp = kit
    name = f"llmc-kit-archs-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-q", "-t", f"{name}:latest", "-"], check=True, capture_output=True, text=True,
                   input=f"FROM {docker_base_image}\nLABEL org.llmc-kit.archs=\"100\"\n")
    try:
        cfg = cfg.model_copy(update={"runtime": "docker", "image": name})
        plan, facts, replan = _plan(cfg, tmp, _req(runtime="docker", steps=2))
        with pytest.raises(KitError) as e:
            run_training(plan, facts, _console(), replan)
        assert e.value.exit_code == 2 and f"image {name}:latest: built for [100]" in e.value.message
        assert "`kitctl build --arch 90,100`" in e.value.hint
        assert not (cfg.data_root / "runs" / "t" / "stdout.log").exists()
    finally:
        subprocess.run(["docker", "image", "rm", "-f", f"{name}:latest"], capture_output=True)


def test_oom_at_start_retries_with_half_b(kit, monkeypatch):
    cfg, tmp = kit
    monkeypatch.setenv("FAKE_OOM_ABOVE_B", "4")
    plan, facts, replan = _plan(cfg, tmp, _req(steps=3))
    con = _console()
    session = run_training(plan, facts, con, replan)
    assert session.status == "ok" and session.micro_batch == 4
    assert "retrying once with B=4" in con.file.getvalue()
    rj = json.loads((cfg.data_root / "runs" / "t" / "run.json").read_text())
    assert rj["plan"]["micro_batch"] == 4 and "halved from 8" in rj["plan"]["choice"]
    assert rj["session"]["attempts"][0]["micro_batch"] == 8


def test_oom_twice_fails_with_hint(kit, monkeypatch):
    cfg, tmp = kit
    monkeypatch.setenv("FAKE_OOM_ABOVE_B", "2")
    plan, facts, replan = _plan(cfg, tmp, _req(steps=3))
    with pytest.raises(KitError) as e:
        run_training(plan, facts, _console(), replan)
    assert "out of GPU memory" in e.value.hint and "--micro-batch" in e.value.hint


class _InterruptingConsole(Console):
    """Raises KeyboardInterrupt (what Ctrl-C does) once the progress output reaches a given step."""

    def __init__(self, at: str):
        super().__init__(file=io.StringIO(), width=200, force_terminal=False)
        self.at = at

    def print(self, *objects, **kw):
        if objects and str(objects[0]).startswith(self.at):
            raise KeyboardInterrupt
        super().print(*objects, **kw)


def _interrupt_case(kit, monkeypatch, inv, mpirun):
    cfg, tmp = kit
    pidfile = tmp / "pids"
    monkeypatch.setenv("FAKE_STEP_SLEEP", "0.02")
    monkeypatch.setenv("FAKE_PIDFILE", str(pidfile))
    plan, facts, replan = _plan(cfg, tmp, _req(steps=100000, micro_batch=4), inv, mpirun)
    with pytest.raises(KitError) as e:
        run_training(plan, facts, _InterruptingConsole("step 20/"), replan)
    out = cfg.data_root / "runs" / "t"
    last = inspect_out(out).last_done
    assert e.value.exit_code == 130 and last is not None and last >= 15
    assert f"resumes from the checkpoint at step {last}" in e.value.message
    pids = [int(p) for p in pidfile.read_text().split()]
    assert pids and not any(_alive(p) for p in pids)          # every rank is gone
    rj = json.loads((out / "run.json").read_text())
    assert rj["session"]["status"] == "interrupted" and rj["session"]["next_resume_step"] == last
    return plan


def test_ctrl_c_stops_everything_and_says_where_to_resume(kit, monkeypatch):
    _interrupt_case(kit, monkeypatch, "one.csv", NO_MPIRUN)


MPIRUN = shutil.which("mpirun")
needs_mpirun = pytest.mark.skipif(MPIRUN is None, reason="no mpirun on PATH (apt install openmpi-bin)")


@needs_mpirun
def test_two_ranks_through_real_mpirun(kit, monkeypatch):
    cfg, tmp = kit
    monkeypatch.setenv("OMPI_MCA_rmaps_base_oversubscribe", "1")   # CI boxes may have fewer cores than ranks
    plan, facts, replan = _plan(cfg, tmp, _req(steps=6), "two.csv", MPIRUN)
    assert plan.launch.argv[:5] == [MPIRUN, "-np", "2", "--bind-to", "none"]
    session = run_training(plan, facts, _console(), replan)
    out = cfg.data_root / "runs" / "t"
    assert session.status == "ok" and session.last_step == 6
    assert sorted(p.name for p in out.glob("state_00000006_*.bin")) == ["state_00000006_00000.bin",
                                                                         "state_00000006_00001.bin"]
    log = (out / "stdout.log").read_text()
    assert sum(1 for line in log.splitlines() if parse_step(line)) == 6     # rank 0 prints, once per step
    assert inspect_out(out).state_ranks == 2


@pytest.mark.slow
@needs_mpirun
def test_ctrl_c_through_mpirun_stops_all_ranks(kit, monkeypatch):
    monkeypatch.setenv("OMPI_MCA_rmaps_base_oversubscribe", "1")
    plan = _interrupt_case(kit, monkeypatch, "two.csv", MPIRUN)
    assert plan.decisions.ranks == 2


@pytest.mark.slow
def test_tune_measures_caches_and_planner_uses_it(kit, monkeypatch):
    from kitctl.train.tune import run_tune

    cfg, tmp = kit
    # the fake reports these tokens/s; B=32 (either -r) runs out of memory
    monkeypatch.setenv("FAKE_RATES", "16:0:538000,16:1:501000,8:0:504000,8:1:494000")
    monkeypatch.setenv("FAKE_OOM_ABOVE_B", "16")
    smi = tmp / "bin" / "nvidia-smi"        # memory sampling: a stand-in that reports 12345 MiB used
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\nwhile true; do echo '0, 12345'; sleep 0.02; done\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:{os.environ['PATH']}")
    req = TrainRequest(runtime="native", data=cfg.data_root / "tinyshakespeare")
    con = _console()
    cached = run_tune(cfg, req, con, tmp / "one.csv", NO_MPIRUN, steps=8, warmup=3, min_b=8)
    rec = json.loads(cached.path.read_text())          # the file, as the next kitctl reads it
    by = {(r["micro_batch"], r["recompute"]): r for r in rec["results"]}
    # val shard 40,000 tokens: B <= 32 on one rank; B=64 is never tried
    assert set(by) == {(32, 0), (32, 1), (16, 0), (16, 1), (8, 0), (8, 1)}
    assert by[(32, 1)]["status"] == "oom" and by[(16, 0)]["tok_s"] == pytest.approx(538000, rel=1e-3)
    assert rec["best"]["micro_batch"] == 16 and rec["best"]["recompute"] == 0 and rec["schema_version"] == 1
    assert by[(16, 0)]["peak_mib"] == 12345
    series = {s["recompute"]: s for s in rec["memory_series"]}
    assert series[0]["points_mib"] == {"8": 12345, "16": 12345}
    from kitctl.train.memory import MemoryModel
    assert len(MemoryModel.from_dict({"series": rec["memory_series"]}).series) == 2   # pastes into the YAML
    assert series[1]["ranks"] == 1 and " -r 1 " in series[1]["command"] and " -b B " in series[1]["command"]
    assert not list((cfg.data_root / "tune").glob("scratch-*"))            # throw-away output removed

    plan, _, _ = _plan(cfg, tmp, TrainRequest(runtime="native", name="u", steps=10))
    assert (plan.decisions.batch.micro_batch, plan.decisions.batch.recompute) == (16, 0) and "tune cache" in plan.decisions.batch.choice
    assert any("recompute -r 0 instead of the preset's 1" in n for n in plan.notes)
    plan, _, _ = _plan(cfg, tmp, TrainRequest(runtime="native", name="u", steps=10, no_tune=True))
    assert "throughput table" in plan.decisions.batch.choice


def test_gather_facts_is_the_one_reader_and_takes_planned_data(kit):
    """`kitctl train` and `kitctl reproduce` read the machine through gather_facts; the pipeline passes the shards
    it plans (not written yet) and has the eval files made before training (so the plan mounts them)."""
    from kitctl.train import DataInfo, Shard, gather_facts

    cfg, tmp = kit
    req = _req(data=cfg.data_root / "tinyshakespeare")
    facts = gather_facts(cfg, req, tmp / "one.csv", NO_MPIRUN)
    assert facts.data.prefix == "tinyshakespeare" and facts.data.train_tokens == 300_000
    assert facts.hellaswag == cfg.data_root / "hellaswag" / "hellaswag_val.bin" and facts.tokenizer is not None
    assert set(facts.runtime_ids) == {"bf16", "fp32"} and facts.out.dir == (cfg.runs_dir / "t").absolute()
    (cfg.data_root / "gpt2_tokenizer.bin").unlink()
    planned = DataInfo(cfg.data_root / "fineweb10B", "fineweb", (Shard("fineweb_train_000001.bin", 10**8),),
                       (Shard("fineweb_val_000000.bin", 10**8),))
    ahead = gather_facts(cfg, dataclasses.replace(req, data=planned.dir), tmp / "one.csv", NO_MPIRUN, data=planned,
                         eval_files_planned=True)
    assert ahead.data is planned and ahead.tokenizer == cfg.data_root / "gpt2_tokenizer.bin"
    assert gather_facts(cfg, req, tmp / "one.csv", NO_MPIRUN).tokenizer is None


def test_throughput_excludes_warmup():
    lines = [f"step {i:4d}/10 | loss 1.000000 (+0.00z)| norm 1.0000 (+0.00z)| lr 6.00e-04 | {ms:.2f} ms | "
             f"-100.0% bf16 MFU | 1 tok/s" for i, ms in enumerate([5000, 900, 1000, 1000, 1000, 1100], 1)]
    steps = [parse_step(x) for x in lines]
    assert steps[0].mfu is None                                   # -100% -> N/A
    assert throughput(steps, 524288, warmup=2) == pytest.approx(524288 / 1.0)


class _FakeDocker:
    """Just enough of python-on-whales' docker client for DockerRuntime.run."""

    def __init__(self, lines):
        self.lines, self.kwargs = lines, None

    def run(self, **kw):
        self.kwargs = kw
        for line in self.lines:
            yield "stdout", (line + "\n").encode()


def test_docker_runner_without_engine(kit, monkeypatch):
    cfg, tmp = kit
    monkeypatch.setattr("kitctl.train.facts.inspect_image",
                        lambda ref: RuntimeRecord(kind="docker", image=ref, id="sha256:abc", labels={"x": "y"}))
    req = TrainRequest(runtime="docker", data=cfg.data_root / "tinyshakespeare", name="d", steps=2, micro_batch=8)
    plan, facts, replan = plan_for(cfg, req, tmp / "one.csv", NO_MPIRUN)
    steps = [f"step {i:4d}/2 | loss 10.000000 (+0.00z)| norm 1.0000 (+0.00z)| lr 6.00e-04 | 100.00 ms | "
             f"40.0% bf16 MFU | 80000 tok/s" for i in (1, 2)]
    client = _FakeDocker(["| device | H100 |", *steps])
    session = run_training(plan, facts, _console(), replan, docker_client=client)
    kw = client.kwargs
    assert session.status == "ok" and session.last_step == 2
    assert kw["gpus"] == "device=0" and kw["ulimit"] == ["memlock=-1", "stack=67108864"]
    assert kw["shm_size"] == "1g" and kw["user"] == f"{os.getuid()}:{os.getgid()}" and kw["workdir"] == "/workspace"
    assert kw["name"].startswith("kitctl-train-d-") and kw["image"] == "llmc-kit:latest"
    assert (str(cfg.data_root / "runs" / "d"), "/workspace/out", "rw") in kw["volumes"]
    assert kw["command"][:3] == ["mpirun", "-np", "1"]
    rj = json.loads((cfg.data_root / "runs" / "d" / "run.json").read_text())
    assert {k: v for k, v in rj["runtime"].items() if v is not None} == {
        "kind": "docker", "image": "llmc-kit:latest", "id": "sha256:abc", "labels": {"x": "y"}}


def test_throughput_warmup_is_per_launch():
    def mk(i, ms):
        return parse_step(f"step {i:4d}/99 | loss 1.000000 (+0.00z)| norm 1.0000 (+0.00z)| lr 6.00e-04 | "
                          f"{ms:.2f} ms | 40.0% bf16 MFU | 1 tok/s")
    resumed = [mk(41, 9000), mk(42, 500), mk(43, 500), mk(44, 500)]     # a resumed launch warms up again
    assert throughput(resumed, 1000, warmup=1) == pytest.approx(2000)


@pytest.mark.slow
def test_cli_dry_run_and_errors(kit):

    cfg, tmp = kit
    env = {**os.environ, "KIT_DATA_ROOT": str(cfg.data_root), "KIT_RUNTIME": "native", "COLUMNS": "200"}
    base = [sys.executable, "-m", "kitctl", "train", "--inventory", str(tmp / "two.csv"), "--mpirun", "/bin/true"]
    r = kitctl_proc.run_argv([*base, "--data", str(cfg.data_root / "tinyshakespeare"), "--steps", "60", "--dry-run",
                        "--", "-lg", "10"], env=env, cwd=tmp)
    assert r.returncode == 0, r.stderr
    cmd = r.stdout.strip().splitlines()[-1]
    assert cmd.startswith("cd ") and "/bin/true -np 2 --bind-to none" in cmd and cmd.endswith("-y 0 -lg 10")
    assert "grad accumulation" in r.stdout and "Traceback" not in r.stderr
    r = kitctl_proc.run_argv([*base, "--data", str(tmp / "nowhere"), "--dry-run"], env=env, cwd=tmp)
    assert r.returncode == 2 and "no shard folder" in r.stderr and "Traceback" not in r.stderr
    r = kitctl_proc.run_argv([*base, "--preset", "gpt9", "--dry-run"], env=env, cwd=tmp)
    assert r.returncode == 2 and "unknown preset" in r.stderr


@pytest.mark.slow
def test_sigterm_to_kitctl_stops_every_rank(kit):
    """`kill <kitctl>` (or a closed terminal) must not orphan mpirun and its ranks in their own session."""
    import signal
    import subprocess
    import time

    cfg, tmp = kit
    pidfile = tmp / "pids"
    inv, mpirun = ("two.csv", MPIRUN) if MPIRUN else ("one.csv", NO_MPIRUN)
    gpus = fake_nvidia_smi(tmp / "fake-bin", (tmp / inv).read_text())     # --inventory only plans
    env = {**os.environ, "KIT_DATA_ROOT": str(cfg.data_root), "FAKE_STEP_SLEEP": "0.02",
           "FAKE_PIDFILE": str(pidfile), "OMPI_MCA_rmaps_base_oversubscribe": "1",
           "PATH": f"{gpus}:{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "kitctl", "train", "--runtime", "native", "--mpirun", mpirun, "--data", str(cfg.data_root / "tinyshakespeare"),
                             "--name", "s", "--micro-batch", "4", "--steps", "100000", "--", "-n", "5"],
                            env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = cfg.data_root / "runs" / "s" / "stdout.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and "step   12/" in log.read_text()):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    last = inspect_out(log.parent).last_done
    assert last is not None and f"resumes from the checkpoint at step {last}" in " ".join(err.split())
    pids = [int(p) for p in pidfile.read_text().split()]
    assert pids and not any(_alive(p) for p in pids)


class _FakeContainers:
    def __init__(self):
        self.calls = []

    def stop(self, name, time=None):
        self.calls.append(("stop", name, time))

    def exists(self, name):
        self.calls.append(("exists", name))
        return True

    def kill(self, name):
        self.calls.append(("kill", name))


class _InterruptedDocker(_FakeDocker):
    def __init__(self, lines):
        super().__init__(lines)
        self.container = _FakeContainers()

    def run(self, **kw):
        yield from super().run(**kw)
        raise KeyboardInterrupt


def test_docker_ctrl_c_stops_the_named_container(kit, monkeypatch):
    cfg, tmp = kit
    monkeypatch.setattr("kitctl.train.facts.inspect_image", lambda ref: RuntimeRecord(kind="docker", image=ref))
    req = TrainRequest(runtime="docker", data=cfg.data_root / "tinyshakespeare", name="d", steps=50, micro_batch=8)
    plan, facts, replan = plan_for(cfg, req, tmp / "one.csv", NO_MPIRUN)
    client = _InterruptedDocker(["step    1/50 | loss 10.000000 (+0.00z)| norm 1.0000 (+0.00z)| lr 6.00e-04 | "
                                 "100.00 ms | 40.0% bf16 MFU | 80000 tok/s"])
    with pytest.raises(KitError) as e:
        run_training(plan, facts, _console(), replan, docker_client=client)
    name = plan.launch.container.name
    assert e.value.exit_code == 130 and "no checkpoint was written yet" in e.value.message
    assert client.container.calls[0] == ("stop", name, 30) and ("kill", name) in client.container.calls


class _NoGpuRuntimeDocker(_FakeDocker):
    """`docker run --gpus` on an engine without the NVIDIA container runtime: docker itself exits 125."""

    def run(self, **kw):
        from python_on_whales.exceptions import DockerException

        self.kwargs = kw
        msg = ('docker: Error response from daemon: could not select device driver "" with capabilities: '
               '[[gpu]].')
        yield "stderr", (msg + "\n").encode()
        raise DockerException(["docker", "run"], 125, b"", msg.encode())


def test_docker_without_nvidia_runtime_says_the_container_could_not_start(kit, monkeypatch):
    cfg, tmp = kit
    monkeypatch.setattr("kitctl.train.facts.inspect_image", lambda ref: RuntimeRecord(kind="docker", image=ref))
    req = TrainRequest(runtime="docker", data=cfg.data_root / "tinyshakespeare", name="d", steps=2, micro_batch=8)
    plan, facts, replan = plan_for(cfg, req, tmp / "one.csv", NO_MPIRUN)
    with pytest.raises(KitError) as e:
        run_training(plan, facts, _console(), replan, docker_client=_NoGpuRuntimeDocker([]))
    assert "the container could not start" in e.value.message and "last step None" not in e.value.message
    assert "nvidia-container-toolkit" in e.value.hint and "restart Docker" in e.value.hint
    assert "kitctl doctor" in e.value.hint
    rj = json.loads((cfg.data_root / "runs" / "d" / "run.json").read_text())
    assert rj["session"]["status"] == "failed" and rj["session"]["exit_status"] == 125


@pytest.mark.slow
def test_unmeasured_gpu_tunes_first_within_the_bound_then_trains_the_measured_best(kit):
    """`kitctl train` on a GPU the throughput table has no row for (RTX 4090): the plan shows a bounded short
    tune, the CLI runs it (cached), plans again from the measurement and trains that config."""

    cfg, tmp = kit
    (tmp / "4090.csv").write_text("0, NVIDIA GeForce RTX 4090, 8.9, 24564 MiB, 570.86.10\n")
    # the table ranks B=16 -r 0 first; this "GPU" is fastest at B=8 -r 0: the measurement must win
    gpus = fake_nvidia_smi(tmp / "fake-bin", (tmp / "4090.csv").read_text())   # the run: --inventory only plans
    env = {**os.environ, "KIT_DATA_ROOT": str(cfg.data_root), "KIT_RUNTIME": "native", "COLUMNS": "250",
           "FAKE_RATES": "16:0:500000,8:0:600000,16:1:450000,8:1:440000", "PATH": f"{gpus}:{os.environ['PATH']}"}
    here = [sys.executable, "-m", "kitctl", "train", "--mpirun", NO_MPIRUN,
            "--data", str(cfg.data_root / "tinyshakespeare"), "--name", "tf", "--steps", "3000"]
    base = [*here, "--inventory", str(tmp / "4090.csv")]
    r = kitctl_proc.run_argv([*base, "--dry-run"], env=env, cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert "tune first" in r.stdout and "within 2% of the run's" in r.stdout
    assert not (cfg.data_root / "tune").exists()                          # --dry-run only shows it
    r = kitctl_proc.run_argv(here, env=env, cwd=tmp)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = " ".join(r.stdout.split())
    assert "tune first: " in out and re.search(r"B=8 -r 0: 600,00\d tok/s", out)
    assert "planned from the measurement: micro-batch B 8 -r 0 (tune cache: fastest measured" in out
    assert "done: step 3000/3000" in out
    rec = json.loads(next((cfg.data_root / "tune").glob("*.json")).read_text())
    m = re.search(r"tune first: (\d) configs x (\d+) steps", out)
    assert rec["auto"] is True and rec["steps"] == int(m[2]) >= 8 and len(rec["results"]) == int(m[1]) >= 2
    rj = json.loads((cfg.data_root / "runs" / "tf" / "run.json").read_text())
    assert rj["plan"]["micro_batch"] == 8 and rj["plan"]["tune_file"] == rj["session"]["tuned"]
    # --no-tune: no tune, and the table's pick
    r = kitctl_proc.run_argv([*base, "--no-tune", "--name", "nt", "--dry-run"], env=env, cwd=tmp)
    assert r.returncode == 0 and "tune first" not in r.stdout and "throughput table" in r.stdout


def test_run_json_keeps_the_exact_llmc_patterns_and_the_kitctl_start_time(kit):
    from kitctl.core.proc import start_ticks

    cfg, tmp = kit
    plan, facts, replan = _plan(cfg, tmp, _req(steps=2))
    run_training(plan, facts, _console(), replan)
    rj = json.loads((cfg.data_root / "runs" / "t" / "run.json").read_text())
    args = plan.launch.llmc_args
    assert rj["data"]["train_pattern"] == args[args.index("-i") + 1]
    assert rj["data"]["val_pattern"] == args[args.index("-j") + 1]
    assert rj["session"]["pid_start"] == start_ticks(os.getpid())
    assert f"pid={os.getpid()}" in (cfg.data_root / "runs" / "t" / ".kitctl-writer.lock").read_text()   # names its holder
