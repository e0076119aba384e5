"""The Slurm launcher's pure rendering: pyxis / Apptainer / native scripts, llm.c rank flags, bad inputs."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from kitctl.cluster import slurm, slurm_checks, slurm_run
from kitctl.core.config import Nccl, nccl_env
from kitctl.core.errors import ConfigError, KitError
from kitctl.host.runtimes import Mount

BIN = "/opt/llmc/bin/train_gpt2cu"
ARGV = [BIN, "-i", "/workspace/data/fineweb_train_*.bin", "-j", "/workspace/data/fineweb_val_*.bin",
        "-o", "/workspace/out", "-e", "d12", "-b", "64", "-t", "1024", "-d", "524288", "-r", "1", "-z", "1",
        "-c", "0.1", "-l", "0.0006", "-q", "0.0", "-u", "700", "-n", "5000", "-v", "250", "-s", "20000", "-h", "1"]
MOUNTS = [Mount(Path("/lustre/data/fineweb10B"), "/workspace/data", read_only=True),
          Mount(Path("/lustre/data/runs/gpt2"), "/workspace/out")]



JOB_FIELDS = {f.name for f in dataclasses.fields(slurm.SlurmJob)}


def render(shared, **kw):
    """render_sbatch of a 2 x 4 pyxis job; ``kw`` sets the job's fields (argv, run_dir, mounts, ...) or the Slurm
    options (nodes, container, image, ...); ``nccl_env`` is kit.yaml's nccl section, in the job's env."""
    args = dict(nodes=2, gpus_per_node=4, shared_dir=shared, argv=ARGV, run_dir="/lustre/data/runs/gpt2",
                container="pyxis", image="/lustre/images/llmc-kit_latest.sqsh", mounts=MOUNTS, workdir="/workspace",
                nccl_env=Nccl(socket_ifname="ib0", ib_disable=False, debug="WARN", extra_env={"NCCL_P2P_LEVEL": "PXB"}),
                partition="gpu", time="2-00:00:00", name="llmc-gpt2")
    args.update(kw)
    check_paths = args.pop("check_paths", True)
    env = nccl_env(args.pop("nccl_env"))
    job = slurm.SlurmJob(env=env, **{k: v for k, v in args.items() if k in JOB_FIELDS})
    opts = slurm.SlurmOptions(**{k: v for k, v in args.items() if k not in JOB_FIELDS})
    return slurm.render_sbatch(job, opts, check_paths=check_paths)


def _directives(text: str) -> list[str]:
    return [ln.removeprefix("#SBATCH ") for ln in text.splitlines() if ln.startswith("#SBATCH ")]


def _srun_block(text: str) -> str:
    return text[text.index("\nsrun "):]


def bash_syntax_ok(text: str, tmp_path: Path) -> None:
    f = tmp_path / "s.sh"
    f.write_text(text)
    r = subprocess.run(["bash", "-n", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------------------------ pyxis
def test_pyxis_script(shared, tmp_path):
    s = render(shared)
    t = s.text
    assert s.ranks == 8 and s.grad_accum == 1
    assert _directives(t) == ["--job-name=llmc-gpt2", "--nodes=2", "--ntasks-per-node=4", "--gres=gpu:4",
                              "--partition=gpu", "--time=2-00:00:00", "--output=/lustre/data/runs/gpt2/slurm-%j.out"]
    assert "IMAGE=/lustre/images/llmc-kit_latest.sqsh\n" in t
    srun = _srun_block(t)
    assert '--container-image="$IMAGE"' in srun
    assert (f"--container-mounts=/lustre/data/fineweb10B:/workspace/data:ro,/lustre/data/runs/gpt2:/workspace/out,"
            f"{shared}:{shared}") in srun                       # the shared folder at the same path inside
    assert "--container-workdir=/workspace" in srun and "--no-container-mount-home" in srun
    assert "--ntasks=8" in srun and "--ntasks-per-node=4" in srun and "--distribution=block" in srun
    assert "apptainer" not in srun
    assert "PROGRAM=/opt/llmc/bin/train_gpt2cu\n" in t
    assert "  -i '/workspace/data/fineweb_train_*.bin'\n" in t  # globs quoted for the shell, llm.c expands them
    assert "  -b 64\n" in t and "  -d 524288\n" in t
    assert 'RANK_FLAGS=(-pg "$GPUS_PER_NODE" -pi fs -pf "$SYNC_DIR")' in t
    assert 'exec "$@" -pn "$SLURM_NTASKS" -pr "$SLURM_PROCID"' in t
    assert 'SYNC_DIR="$SHARED_DIR/nccl-sync/${SLURM_JOB_ID:-none}"' in t and f"SHARED_DIR={shared}\n" in t
    for line in ("export NCCL_SOCKET_IFNAME=ib0", "export NCCL_IB_DISABLE=0", "export NCCL_DEBUG=WARN",
                 "export NCCL_P2P_LEVEL=PXB"):
        assert line + "\n" in t
    bash_syntax_ok(t, tmp_path)


def test_pyxis_registry_image_and_tcp_init(shared, tmp_path):
    t = render(shared, image="nvcr.io#myteam/llmc-kit:cu128", init="tcp").text
    assert "IMAGE='nvcr.io#myteam/llmc-kit:cu128'\n" in t
    assert 'RANK_FLAGS=(-pg "$GPUS_PER_NODE" -pi tcp -ps "$SERVER_IP")' in t
    assert "-pi fs" not in t
    assert "scontrol show node" in t and "getent ahostsv4" in t
    bash_syntax_ok(t, tmp_path)


def test_pyxis_default_mount_is_the_data_root(shared):
    t = render(shared, mounts=(), data_root="/lustre/data").text
    assert f"--container-mounts=/lustre/data:/data,{shared}:{shared}" in t


def test_shared_folder_inside_a_plan_mount_is_not_mounted_twice(tmp_path):
    d = tmp_path / "big"
    (d / "shared").mkdir(parents=True)
    t = render(d / "shared", mounts=[Mount(d, str(d))]).text
    assert f"--container-mounts={d}:{d} " in t


# ------------------------------------------------------------------------------------------ apptainer
def test_apptainer_script(shared, tmp_path):
    sif = tmp_path / "llmc-kit.sif"
    sif.write_bytes(b"sif")
    t = render(shared, container="apptainer", image=None, sif=sif).text
    assert f"SIF={sif}\n" in t and "IMAGE=" not in t
    srun = _srun_block(t)
    assert "--container-image" not in srun and "--container-mounts" not in srun
    assert (f"apptainer exec --nv --bind /lustre/data/fineweb10B:/workspace/data:ro "
            f"--bind /lustre/data/runs/gpt2:/workspace/out --bind {shared}:{shared} --pwd /workspace \"$SIF\"") in srun
    assert srun.index("apptainer exec") < srun.index('bash -c "$RANK_CMD"') < srun.index('"$PROGRAM"')
    assert "export NCCL_SOCKET_IFNAME=ib0\n" in t
    bash_syntax_ok(t, tmp_path)


def test_apptainer_tcp(shared, tmp_path):
    sif = tmp_path / "k.sif"
    sif.write_bytes(b"x")
    t = render(shared, container="apptainer", image=None, sif=sif, init="tcp").text
    assert "-pi tcp -ps" in t and "apptainer exec --nv" in t


def test_native_script_runs_the_host_binary(shared, tmp_path):
    t = render(shared, container="none", image=None, mounts=(), workdir="/lustre/data/runs/gpt2/.llmc-cwd",
               argv=["/lustre/kit/native/bin/train_gpt2cu", *ARGV[1:]]).text
    srun = _srun_block(t)
    assert "--chdir=/lustre/data/runs/gpt2/.llmc-cwd" in srun
    assert "container" not in srun and "apptainer" not in srun
    assert "PROGRAM=/lustre/kit/native/bin/train_gpt2cu\n" in t
    bash_syntax_ok(t, tmp_path)


def test_scripts_differ_only_in_what_they_must(shared, tmp_path):
    """pyxis vs apptainer: same directives, same program and flags, same rank command."""
    sif = tmp_path / "k.sif"
    sif.write_bytes(b"x")
    a = render(shared).text
    b = render(shared, container="apptainer", image=None, sif=sif).text
    assert _directives(a) == _directives(b)
    assert a[:a.index("IMAGE=")] == b[:b.index("SIF=")]


# ------------------------------------------------------------------------------------------ bad inputs
def test_nodes_that_do_not_divide_the_batch(shared):
    with pytest.raises(ConfigError) as e:
        render(shared, nodes=3)
    msg, hint = e.value.message, e.value.hint
    assert e.value.exit_code == 2
    assert ("total batch -d 524288 tokens is not a multiple of B x T x ranks = 64 x 1024 x 12 (3 node(s) x 4 GPUs) "
            "= 786432") in msg
    assert "--nodes 1 or 2 (with 4 GPUs per node)" in hint
    assert "--micro-batch" not in hint        # 524288 = 2^19 has no factor 3: no B helps
    assert "a total batch (-d) that is a multiple of 786432, e.g. 786432" in hint


def test_divisibility_suggests_a_smaller_micro_batch(shared):
    with pytest.raises(ConfigError) as e:
        render(shared, total_batch=262144 * 3)    # 786432 = 3 x 2^18 on 2 x 4 ranks
    assert "--micro-batch 32" in e.value.hint        # 786432 / (32 x 1024 x 8) = 3
    assert "--nodes 1 or 3 (with 4 GPUs per node)" in e.value.hint


def test_divisibility_holds_with_grad_accumulation(shared):
    s = render(shared, nodes=1, gpus_per_node=2)
    assert s.grad_accum == 4 and "4 grad-accumulation step(s)" in s.text


@pytest.mark.parametrize("value,msg", [
    (None, "multi-node training needs a shared folder and none was given"),
    ("", "multi-node training needs a shared folder and none was given"),
    ("relative/dir", "shared folder relative/dir is not an absolute path"),
])
def test_missing_shared_folder(value, msg):
    with pytest.raises(ConfigError) as e:
        render(value)
    assert msg in e.value.message
    assert "--shared-dir" in e.value.hint


def test_shared_folder_that_does_not_exist(tmp_path):
    with pytest.raises(ConfigError) as e:
        render(tmp_path / "nope")
    assert "does not exist" in e.value.message and "mkdir -p" in e.value.hint
    # rendering for another machine: the check can be turned off
    assert render(tmp_path / "nope", check_paths=False).ranks == 8


def test_shared_folder_too_long_for_llmc(tmp_path):
    long = tmp_path / ("x" * 240)
    with pytest.raises(ConfigError) as e:
        render(long, check_paths=False)
    assert "256-byte buffer" in e.value.message


@pytest.mark.parametrize("kw,msg", [
    ({"image": None}, "--container pyxis needs an image"),
    ({"container": "apptainer", "image": None}, "--container apptainer needs a .sif image"),
    ({"container": "apptainer", "image": None, "sif": "/no/such.sif"}, ".sif image /no/such.sif does not exist"),
    ({"container": "docker"}, "--container 'docker' is not one of pyxis, apptainer, none"),
    ({"init": "mpi"}, "--init 'mpi' is not one of fs, tcp"),
    ({"nodes": 0}, "--nodes must be a whole number >= 1"),
    ({"gpus_per_node": 0}, "--gpus-per-node must be a whole number >= 1"),
    ({"time": "two days"}, "--time 'two days' is not a Slurm time limit"),
    ({"partition": "gpu a100"}, "--partition 'gpu a100' is not a valid Slurm name"),
    ({"run_dir": "runs/x"}, "run folder runs/x is not an absolute path"),
    ({"argv": [*ARGV, "-pn", "4"]}, "the plan's argv already sets -pn"),
    ({"argv": [BIN, "-b", "x"]}, "llm.c flag -b 'x' in the plan is not an integer"),
    ({"sbatch_extra": ["qos=high"]}, "extra sbatch option 'qos=high' is not an option"),
    ({"nccl_env": {"BAD-NAME": "1"}}, "environment variable name(s) ['BAD-NAME'] are not valid"),
])
def test_bad_inputs(shared, kw, msg):
    with pytest.raises(ConfigError) as e:
        render(shared, **kw)
    assert msg in e.value.message, e.value.message
    assert e.value.hint


@pytest.mark.parametrize("t", ["30", "30:00", "12:00:00", "2-00", "2-12:00", "7-00:00:00", "infinite"])
def test_time_formats(t):
    assert slurm_checks.check_time(t) == t


def test_nccl_env_from_config():
    assert nccl_env(Nccl()) == {}
    assert nccl_env(Nccl(socket_ifname="eth0", ib_disable=True, debug="INFO", extra_env={"X": "1"})) == {
        "NCCL_SOCKET_IFNAME": "eth0", "NCCL_IB_DISABLE": "1", "NCCL_DEBUG": "INFO", "X": "1"}


def test_batch_flags_defaults_and_last_wins():
    assert slurm_checks.batch_flags([BIN]) == (4, 1024, -1)
    assert slurm_checks.batch_flags([BIN, "-b", "8", "-b", "16", "-t", "512"]) == (16, 512, -1)


# ------------------------------------------------------------------------------------------ runtime
def test_write_script_creates_the_run_folder(tmp_path):
    p = slurm_run.write_script("#!/bin/bash\n", tmp_path / "runs" / "a")
    assert p == tmp_path / "runs" / "a" / "sbatch.sh" and p.stat().st_mode & 0o111


def test_parse_job_id():
    assert slurm_run.parse_job_id("12345\n") == "12345"
    assert slurm_run.parse_job_id("678;cluster-a\n") == "678"
    with pytest.raises(KitError):
        slurm_run.parse_job_id("sbatch: error: Batch job submission failed")


def test_submit_without_sbatch(tmp_path):
    with pytest.raises(KitError) as e:
        slurm_run.submit_script(tmp_path / "s.sh", sbatch="no-such-sbatch-here")
    assert "not a Slurm login node" in e.value.message


def test_submit_reports_sbatch_refusal(tmp_path):
    fake = tmp_path / "sbatch"
    fake.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(KitError) as e:
        slurm_run.submit_script(tmp_path / "s.sh", sbatch=str(fake))
    assert "invalid partition specified: gpu" in e.value.message


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_script_refuses_to_run_outside_slurm(shared, tmp_path):
    s = render(shared, container="none", image=None, mounts=())
    f = slurm_run.write_script(s.text, tmp_path / "run")
    r = subprocess.run(["bash", str(f)], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "not inside a Slurm job" in r.stderr


@pytest.mark.parametrize("image", ["kit.sqsh", "./images/kit.sqsh", "../kit.squashfs"])
def test_pyxis_relative_sqsh_refused_like_a_relative_sif(shared, image):
    with pytest.raises(ConfigError) as e:
        render(shared, image=image)
    assert f".sqsh image {image} is not an absolute path" in e.value.message and "--image" in e.value.hint
    with pytest.raises(ConfigError) as e:
        render(shared, container="apptainer", image=None, sif="kit.sif")
    assert ".sif image kit.sif is not an absolute path" in e.value.message


def test_pyxis_relative_path_that_exists_refused_registry_image_kept(shared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "kit").write_bytes(b"")
    with pytest.raises(ConfigError):
        render(shared, image="img/kit")
    assert "IMAGE=nvcr.io/nvidia/llmc:1\n" in render(shared, image="nvcr.io/nvidia/llmc:1").text
