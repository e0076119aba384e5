"""The rendered sbatch script on a REAL Slurm cluster (2 nodes x 2 fake GPUs on loopback, see slurm_cluster.py).

A stand-in rank program takes the place of train_gpt2cu: it records the llm.c flags and the environment it
got, and does llm.c's ``-pi fs`` rendezvous (rank 0 writes ``<-pf>/ncclUniqueId.sync``, the others wait for it
and read it). The script submitted is the GPU script with only the program line changed (asserted by diff).
"""
from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path

import pytest

from kitctl.cluster import slurm, slurm_run
from slurm_cluster import CPUS, GPUS, NODES, LocalSlurm, slurm_missing

pytestmark = pytest.mark.slurm

STANDIN = r'''#!{python}
"""Stand-in for train_gpt2cu: record the llm.c flags and environment of this rank; llm.c's -pi fs rendezvous."""
import json, os, socket, sys, time
args = sys.argv[1:]
flags = {{}}
for i in range(0, len(args) - 1, 2):
    flags[args[i]] = args[i + 1]
rank = int(flags["-pr"])
rec = {{"argv": sys.argv, "cwd": os.getcwd(),
       "env": {{k: v for k, v in os.environ.items() if k.startswith(("SLURM", "NCCL_", "CUDA_VISIBLE", "KIT_"))}}}}
if flags.get("-pi") == "fs":
    sync = os.path.join(flags["-pf"], "ncclUniqueId.sync")
    rec["pf_existed"] = os.path.isdir(flags["-pf"])
    if rank == 0:
        with open(sync + ".tmp", "w") as f:
            f.write("id-" + os.environ["SLURM_JOB_ID"])
        os.rename(sync + ".tmp", sync)
    deadline = time.monotonic() + 60
    while not os.path.exists(sync) and time.monotonic() < deadline:
        time.sleep(0.1)
    rec["nccl_id"] = open(sync).read()
out = flags["-o"]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "rank-%d.json" % rank), "w") as f:
    json.dump(rec, f)
print("standin rank", rank, "of", flags["-pn"], "on", os.environ.get("SLURMD_NODENAME"), flush=True)
'''

GPU_PROGRAM = "/opt/llmc-kit/bin/train_gpt2cu"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_missing()
    if reason:
        pytest.skip(reason)
    c = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        c.start(timeout=60)
        yield c
    finally:
        c.stop()


@pytest.fixture()
def layout(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    data = tmp_path / "data"
    (data / "tiny").mkdir(parents=True)
    run = data / "runs" / "slurm-test"
    standin = tmp_path / "standin.py"
    standin.write_text(STANDIN.format(python=sys.executable))
    standin.chmod(0o755)
    return shared, data, run, standin


def plan_argv(program: str, data: Path, run: Path) -> list[str]:
    # a gpt2-124m-like argv, small numbers: B=4, T=64, 4 ranks -> 1024 tokens a micro-step, -d 2048 -> accum 2
    return [program, "-i", f"{data}/tiny/tiny_train_*.bin", "-j", f"{data}/tiny/tiny_val_*.bin", "-o", str(run),
            "-e", "d12", "-b", "4", "-t", "64", "-d", "2048", "-r", "1", "-z", "1", "-c", "0.1", "-l", "0.0006",
            "-q", "0.0", "-u", "700", "-n", "5000", "-v", "250", "-s", "20000", "-h", "1"]


def render(argv, shared, run, data, init="fs"):
    job = slurm.SlurmJob(argv=argv, run_dir=run, data_root=data, workdir=str(data), name="kit-test",
                         env={"NCCL_SOCKET_IFNAME": "lo", "NCCL_IB_DISABLE": "1"})
    return slurm.render_sbatch(job, slurm.SlurmOptions(nodes=len(NODES), gpus_per_node=GPUS, shared_dir=shared,
                                                       container="none", time="5", init=init))


def _records(run: Path) -> dict[int, dict]:
    return {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in run.glob("rank-*.json")}


def _submit_and_wait(cluster: LocalSlurm, script: str, run: Path, *sbatch_args: str) -> tuple[str, dict, str]:
    path = slurm_run.write_script(script, run)
    job = slurm_run.submit_script(path, extra_args=sbatch_args, env={"SLURM_CONF": str(cluster.conf)})
    info = cluster.wait_job(job, timeout=120)
    out = run / f"slurm-{job}.out"
    log = out.read_text() if out.exists() else "(no job output)"
    return job, info, log


def test_cluster_is_up_with_two_gpu_nodes(cluster):
    r = cluster.run("sinfo", "-h", "-N", "-o", "%N %T %G %c")
    assert sorted(r.stdout.split("\n")[:-1]) == [f"{n} idle gpu:{GPUS} {CPUS}" for n in NODES]


def test_fs_rendezvous_on_two_nodes(cluster, layout):
    shared, data, run, standin = layout
    gpu = render(plan_argv(GPU_PROGRAM, data, run), shared, run, data)
    test = render(plan_argv(str(standin), data, run), shared, run, data)
    # the script submitted differs from the GPU one only in the program it runs
    diff = [ln for ln in difflib.unified_diff(gpu.text.splitlines(), test.text.splitlines(), lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert diff == [f"-PROGRAM={GPU_PROGRAM}", f"+PROGRAM={standin}"]
    assert test.ranks == 4 and test.grad_accum == 2

    job, info, log = _submit_and_wait(cluster, test.text, run)
    assert info["JobState"] == "COMPLETED", f"{info}\n{log}\n{cluster.logs()}"
    assert info["ExitCode"] == "0:0"
    assert f"llmc-kit: job {job}: 4 ranks on 2 node(s)" in log

    recs = _records(run)
    assert sorted(recs) == [0, 1, 2, 3], log
    sync_dir = f"{shared}/nccl-sync/{job}"
    want_args = plan_argv(str(standin), data, run)[1:]
    for rank, rec in recs.items():
        argv, env = rec["argv"], rec["env"]
        assert argv[1:len(want_args) + 1] == want_args            # the plan's flags, in order, untouched
        tail = argv[len(want_args) + 1:]
        assert dict(zip(tail[::2], tail[1::2], strict=False)) == {
            "-pg": str(GPUS), "-pi": "fs", "-pf": sync_dir, "-pn": "4", "-pr": str(rank)}, tail
        assert env["SLURM_PROCID"] == str(rank)
        assert env["SLURMD_NODENAME"] == NODES[rank // GPUS]      # block: ranks 0,1 on n1; 2,3 on n2
        assert int(env["SLURM_LOCALID"]) == rank % GPUS           # llm.c's GPU = rank % gpus_per_node
        assert len(env["CUDA_VISIBLE_DEVICES"].split(",")) == GPUS   # every rank sees all GPUs of its node
        assert env["NCCL_SOCKET_IFNAME"] == "lo" and env["NCCL_IB_DISABLE"] == "1"
        assert rec["cwd"] == str(data)
        assert rec["pf_existed"] is True
        assert rec["nccl_id"] == f"id-{job}"                       # the rendezvous went through the shared dir
    assert not Path(sync_dir).exists()                              # per-job sync dir cleaned up


def test_tcp_rendezvous_flags(cluster, layout):
    shared, data, run, standin = layout
    test = render(plan_argv(str(standin), data, run), shared, run, data, init="tcp")
    job, info, log = _submit_and_wait(cluster, test.text, run)
    assert info["JobState"] == "COMPLETED", f"{info}\n{log}\n{cluster.logs()}"
    recs = _records(run)
    assert sorted(recs) == [0, 1, 2, 3], log
    for rank, rec in recs.items():
        tail = rec["argv"][len(plan_argv("x", data, run)):]
        assert dict(zip(tail[::2], tail[1::2], strict=False)) == {
            "-pg": str(GPUS), "-pi": "tcp", "-ps": "127.0.0.1", "-pn": "4", "-pr": str(rank)}, tail


def test_job_refuses_a_rank_count_it_was_not_planned_for(cluster, layout):
    shared, data, run, standin = layout
    test = render(plan_argv(str(standin), data, run), shared, run, data)
    # overriding the task layout at submit time would silently change the batch arithmetic: the script stops
    job, info, log = _submit_and_wait(cluster, test.text, run, "--ntasks-per-node=1")
    assert info["JobState"] == "FAILED", f"{info}\n{log}"
    assert info["ExitCode"] == "2:0"
    assert "this job has 2 tasks but the plan needs 4" in log
    assert _records(run) == {}


def test_kitctl_train_launcher_slurm_submit(cluster, layout, monkeypatch):
    """End to end: `kitctl train --launcher slurm --submit` (train planner over 2 nodes x 2 GPUs, native
    binary on the shared filesystem) on the real cluster; the stand-in gets the planner's argv + rank flags."""
    import numpy as np
    from typer.testing import CliRunner

    from kitctl.cli import app
    from kitctl.core.context import state
    from kitctl.core.config import KitConfig
    from data_ref import write_shard
    from kitctl.cluster.slurm import SlurmOptions
    from kitctl.cluster.slurm_run import plan_slurm
    from kitctl.train import TrainRequest

    shared, data, run, standin = layout
    tiny = data / "tiny"
    rng = np.random.default_rng(0)
    for name in ("tiny_val_000000.bin", "tiny_train_000001.bin"):
        write_shard(tiny / name, rng.integers(0, 50257, 20_000, dtype=np.uint16))
    inv = data.parent / "node.csv"
    inv.write_text("".join(f"{i}, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.124.06\n" for i in range(GPUS)))
    common = ["--data", str(tiny), "--name", "e2e", "--total-batch", "16384", "--steps", "10", "--inventory", str(inv),
              "--launcher", "slurm", "--nodes", str(len(NODES)), "--container", "none", "--shared-dir", str(shared),
              "--time", "5", "--", "-t", "64"]

    # the GPU script and the submitted one differ only in the program
    cfg = KitConfig(data_root=data)
    req = dict(data=tiny, name="e2e", total_batch=16384, steps=10, passthrough=["-t", "64"])
    opts = SlurmOptions(nodes=len(NODES), shared_dir=shared, container="none", time="5")
    gpu = plan_slurm(cfg, TrainRequest(binary=Path(GPU_PROGRAM), **req), opts, inv).script.text
    test = plan_slurm(cfg, TrainRequest(binary=standin, **req), opts, inv).script.text
    diff = [ln for ln in difflib.unified_diff(gpu.splitlines(), test.splitlines(), lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert diff == [f"-PROGRAM={GPU_PROGRAM}", f"+PROGRAM={standin}"]

    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    monkeypatch.setenv("KIT_DATA_ROOT", str(data))
    monkeypatch.delenv("KIT_CONFIG", raising=False)
    monkeypatch.chdir(data.parent)
    state._config = None
    r = CliRunner().invoke(app, ["train", "--binary", str(standin), "--submit", *common])
    assert r.exit_code == 0, r.output
    job = next(w for w in r.output.split() if w.isdigit() and f"slurm-{w}.out" in r.output)
    out_dir = data / "runs" / "e2e"
    assert (out_dir / "sbatch.sh").read_text() == test
    info = cluster.wait_job(job, timeout=120)
    log = (out_dir / f"slurm-{job}.out").read_text() if (out_dir / f"slurm-{job}.out").exists() else ""
    assert info["JobState"] == "COMPLETED", f"{info}\n{log}\n{cluster.logs()}"
    recs = _records(out_dir)
    assert sorted(recs) == [0, 1, 2, 3], log
    for rank, rec in recs.items():
        argv = rec["argv"]
        flags = dict(zip(argv[1::2], argv[2::2], strict=False))
        assert flags["-t"] == "64" and flags["-d"] == "16384" and flags["-x"] == "10" and flags["-o"] == str(out_dir)
        assert 16384 % (int(flags["-b"]) * 64 * 4) == 0              # the divisibility rule over 4 ranks
        assert (flags["-pn"], flags["-pr"], flags["-pg"], flags["-pi"]) == ("4", str(rank), str(GPUS), "fs")
        assert flags["-pf"] == f"{shared}/nccl-sync/{job}" and rec["nccl_id"] == f"id-{job}"
        assert rec["cwd"] == str(out_dir / ".llmc-cwd")
    rec = json.loads((out_dir / "run.json").read_text())
    assert rec["session"]["job_id"] == job and rec["plan"]["ranks"] == 4


FAKE_APPTAINER = r'''#!/bin/sh
# Stand-in for `apptainer exec`: records its options per rank, then runs the command as apptainer would
# (here without a container: the test's "container paths" are the host paths).
[ "$1" = exec ] || { echo "fake apptainer: want exec, got $1" >&2; exit 90; }
shift
opts=""
while [ $# -gt 0 ]; do
  case "$1" in
    --nv) opts="$opts --nv"; shift ;;
    --bind) opts="$opts --bind $2"; shift 2 ;;
    --pwd) opts="$opts --pwd $2"; cd "$2" || exit 91; shift 2 ;;
    -*) echo "fake apptainer: unknown option $1" >&2; exit 92 ;;
    *) break ;;
  esac
done
sif=$1; shift
echo "$SLURM_PROCID$opts $sif" >> "{log}"
exec "$@"
'''


def test_apptainer_launch_line_runs_under_srun(cluster, layout, tmp_path):
    """The Apptainer script's srun line, run for real with a stand-in `apptainer` on PATH."""
    import os

    from kitctl.host.runtimes import Mount

    shared, data, run, standin = layout
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "apptainer.log"
    fake = bindir / "apptainer"
    fake.write_text(FAKE_APPTAINER.replace("{log}", str(log)))
    fake.chmod(0o755)
    sif = shared / "llmc-kit.sif"
    sif.write_bytes(b"not really a sif")
    job = slurm.SlurmJob(argv=plan_argv(str(standin), data, run), run_dir=run, workdir=str(data),
                         mounts=[Mount(data, str(data), read_only=True), Mount(run, str(run))], name="kit-apptainer")
    s = slurm.render_sbatch(job, slurm.SlurmOptions(nodes=len(NODES), gpus_per_node=GPUS, shared_dir=shared,
                                                    container="apptainer", sif=sif, time="5"))
    path = slurm_run.write_script(s.text, run)
    job = slurm_run.submit_script(path, env={"SLURM_CONF": str(cluster.conf), "PATH": f"{bindir}:{os.environ['PATH']}"})
    info = cluster.wait_job(job, timeout=120)
    out = run / f"slurm-{job}.out"
    assert info["JobState"] == "COMPLETED", f"{info}\n{out.read_text() if out.exists() else ''}\n{cluster.logs()}"
    lines = sorted(log.read_text().splitlines())
    assert lines == [f"{r} --nv --bind {data}:{data}:ro --bind {run}:{run} --bind {shared}:{shared} --pwd {data} {sif}"
                     for r in range(4)]
    recs = _records(run)
    assert sorted(recs) == [0, 1, 2, 3]
    for rank, rec in recs.items():
        tail = rec["argv"][len(plan_argv("x", data, run)):]
        assert dict(zip(tail[::2], tail[1::2], strict=False)) == {
            "-pg": str(GPUS), "-pi": "fs", "-pf": f"{shared}/nccl-sync/{job}", "-pn": "4", "-pr": str(rank)}
        assert rec["nccl_id"] == f"id-{job}" and rec["cwd"] == str(data)
