"""Docker's storage as a disk: the root dir read from the real engine, and what doctor / preflight say about it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import kitctl_proc

from kitctl.core.config import KitConfig
from kitctl.host import docker_disk, doctor

GB = 10**9


@pytest.mark.docker
def test_root_dir_free_space_and_build_cache_come_from_the_real_engine():
    st = docker_disk.query()
    # the docker CLI's own answer, asked independently of python-on-whales
    root = subprocess.run(["docker", "info", "--format", "{{.DockerRootDir}}"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert st.error == "" and st.root_dir == Path(root)
    if Path(root).exists():       # a local engine: statvfs of that folder, and the filesystem holding it
        assert abs(st.free_bytes - shutil.disk_usage(root).free) < 2 * 10**8
        assert st.filesystem and st.filesystem.endswith(docker_disk.mount_of(Path(root))[2])
    df = subprocess.run(["docker", "system", "df", "--format", "{{json .}}"], capture_output=True, text=True,
                        check=True).stdout
    kinds = {json.loads(line)["Type"] for line in df.splitlines() if line.strip()}
    assert "Build Cache" in kinds and st.build_cache_bytes is not None and st.build_cache_bytes >= 0


@pytest.mark.docker
def test_doctor_json_reports_dockers_storage(tmp_path):
    (tmp_path / "kit.yaml").write_text(f"data_root: {tmp_path}\nruntime: docker\n")
    r = kitctl_proc.run(["--config", str(tmp_path / "kit.yaml"), "doctor", "--json"])
    out = json.loads(r.stdout)
    row = {f["check"]: f for f in out["findings"]}["docker storage"]
    root = subprocess.run(["docker", "info", "--format", "{{.DockerRootDir}}"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert root in row["detail"] and "build cache" in row["detail"] and "GB" in row["detail"]


def test_mount_of_picks_the_longest_mount_point(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda1 / ext4 rw 0 0\n/dev/sdb1 /mnt/big xfs rw 0 0\n/dev/sdc1 /mnt/bigger ext4 rw 0 0\n")
    assert docker_disk.mount_of(Path("/mnt/big/docker"), str(mounts)) == ("/dev/sdb1", "xfs", "/mnt/big")
    assert docker_disk.mount_of(Path("/mnt/bigger"), str(mounts))[0] == "/dev/sdc1"
    assert docker_disk.mount_of(Path("/var/lib/docker"), str(mounts))[2] == "/"


def test_too_small_dockers_storage_says_how_to_move_it_or_build_smaller():
    st = docker_disk.DockerStorage(Path("/var/lib/docker"), "/dev/vda1 (ext4) mounted at /", 8 * GB, 3 * GB, GB)
    f = doctor.docker_space(st, 14 * GB, KitConfig(provider="nvidia"), wheels_bytes=4_400_000_000)
    assert f.status == "fail" and "/var/lib/docker" in f.detail and "14.0 GB" in f.detail
    # the engine's data-root setting, exactly, and the restart
    assert '{"data-root": "/mnt/big/docker"}' in f.meaning and "/etc/docker/daemon.json" in f.meaning
    assert "sudo systemctl restart docker" in f.meaning
    assert "wheels provider (~4.4 GB" in f.meaning          # the smaller provider
    assert "docker pull" in f.meaning and "docker load" in f.meaning      # a prebuilt image
    assert "docker buildx prune" in f.meaning              # the build cache it holds
    ok = doctor.docker_space(st, 4 * GB, KitConfig(provider="wheels"))
    assert ok.status == "ok" and "8 GB free" in ok.detail
    remote = doctor.docker_space(docker_disk.DockerStorage(Path("/var/lib/docker")), 14 * GB, KitConfig())
    assert remote.status == "info" and "not on this host" in remote.detail


def _facts(**kw):
    base = dict(docker_cli=True, engine="28.0", buildx="0.20", compose="2.30", runtimes=["nvidia", "runc"],
                free_bytes=500 * GB, shm_bytes=8 * GB, data_root=Path("/big"),
                docker=docker_disk.DockerStorage(Path("/var/lib/docker"), "", 300 * GB, 0, 0))
    base.update(kw)
    return doctor.Facts(**base)


def test_doctor_checks_dockers_storage_against_the_reference_plan():
    need = doctor.DiskNeed(56 * GB, 14 * GB, "FineWeb10B + GPT-2 124M needs ~56 GB", 4_400_000_000)
    small = _facts(docker=docker_disk.DockerStorage(Path("/var/lib/docker"), "", 10 * GB, 2 * GB, 0))
    rows = {f.check: f for f in doctor.evaluate(small, KitConfig(), need)}
    assert rows["docker storage"].status == "fail" and "data-root" in rows["docker storage"].meaning
    v = {x.purpose: x for x in doctor.verdicts(list(rows.values()), small, KitConfig())}
    assert not v["build"].ready and "docker storage" in v["build"].reason and v["data"].ready
    # native runtime: Docker's storage is not this run's concern
    assert "docker storage" not in {f.check for f in doctor.evaluate(small, KitConfig(runtime="native"), need)}
    low = {f.check: f for f in doctor.evaluate(_facts(free_bytes=30 * GB), KitConfig(), need)}
    assert low["data root space"].status == "warn" and "~56 GB" in low["data root space"].meaning


def test_verdicts_per_purpose_without_gpus_train_is_not_ready():
    f = _facts(gpus=[])
    v = {x.purpose: x for x in doctor.verdicts(doctor.evaluate(f, KitConfig()), f, KitConfig())}
    assert v["data"].ready and v["build"].ready
    assert not v["train"].ready and "no GPU" in v["train"].reason and "--inventory" in v["train"].reason
    assert "multi-node" not in v                      # no Slurm here
    slurm = _facts(gpus=[], slurm=True)
    v = {x.purpose: x for x in doctor.verdicts(doctor.evaluate(slurm, KitConfig()), slurm, KitConfig())}
    assert not v["multi-node"].ready
    native = _facts()
    v = {x.purpose: x for x in doctor.verdicts(doctor.evaluate(native, KitConfig(runtime="native")), native,
                                               KitConfig(runtime="native"))}
    assert not v["build"].ready and "nvcc" in v["build"].reason


MIXED = ("0, NVIDIA GeForce RTX 2080 Ti, 7.5, 11264 MiB, 570.86.10\n"
         "1, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 570.86.10\n")


def _doctor(tmp_path, *args, gpu_box: bool):
    (tmp_path / "kit.yaml").write_text(f"data_root: {tmp_path}\narch: [75, 86]\nruntime: native\n")
    extra = []
    if gpu_box:
        (tmp_path / "gpus.csv").write_text(MIXED)
        extra = ["--inventory", str(tmp_path / "gpus.csv")]
    env = {**os.environ, "PATH": "/usr/bin:/bin"}      # no nvidia-smi: this box has no GPU of its own
    return kitctl_proc.run(["--config", str(tmp_path / "kit.yaml"), "doctor", *extra, *args], env=env)


@pytest.mark.slow
def test_doctor_for_train_exits_by_that_purpose(roomy_tmp_path):
    tmp_path = roomy_tmp_path            # the data root's disk has room: only the GPUs decide "train"
    r = _doctor(tmp_path, "--for", "train", "--json", gpu_box=False)
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["ready"] is False and out["purposes"]["train"]["ready"] is False
    assert "no GPU" in out["purposes"]["train"]["reason"]
    r = _doctor(tmp_path, "--for", "train", gpu_box=False)
    assert r.returncode == 1 and "train" in r.stdout and "not ready" in r.stdout
    r = _doctor(tmp_path, "--for", "train", "--json", gpu_box=True)
    out = json.loads(r.stdout)
    assert out["purposes"]["train"]["ready"] is True and r.returncode == 0, out
    r = _doctor(tmp_path, "--for", "nothing", gpu_box=False)
    assert r.returncode == 2 and "data, build, train, multi-node" in " ".join(r.stderr.split())


@pytest.mark.docker
def test_build_report_names_the_real_build_cache_and_how_to_prune_it():
    st = docker_disk.query()
    text = docker_disk.build_report(st)
    assert f"{st.build_cache_bytes / 1e9:.2f} GB" in text and str(st.root_dir) in text
    assert "docker buildx prune" in text


@pytest.mark.docker
def test_preflight_checks_dockers_storage_apart_from_the_data_root(tmp_path, monkeypatch):
    """The real plan (docker runtime, seed box) through the real preflight; Docker's storage as the engine reports
    it, then as a small system disk would (the engine cannot be made small here)."""
    import io

    from rich.console import Console

    from kitctl.core.errors import KitError
    from kitctl.pipeline import stages
    from kitctl.pipeline.inputs import ReproduceOptions
    from kitctl.pipeline.reproduce import make_forecast

    repo = Path(__file__).resolve().parents[2]
    cfg = KitConfig.model_validate({"data_root": tmp_path / "d", "runtime": "docker", "image": "kit-preflight-test"})
    opts = ReproduceOptions(runtime="docker", tune="off", inventory=repo / "docs" / "inventories" / "2080ti-3090.csv")
    g, f = make_forecast(cfg, opts)
    assert f.docker_bytes == f.stage("build").docker_bytes > 0 and f.stage("build").disk_bytes == 0
    out = io.StringIO()
    console = Console(file=out, width=300)

    def ctx() -> stages.StageContext:
        return stages.StageContext(cfg, opts, g, f, console, stages.StageLog(tmp_path / "pre.log", console),
                                   lambda *a: None)

    def run() -> str:
        out.truncate(0)
        out.seek(0)
        try:
            stages.preflight(ctx(), 0)
        except KitError as e:       # other checks may fail on this box (no NVIDIA runtime for the seed box's GPUs)
            return " ".join((out.getvalue() + " " + e.message).split())
        return " ".join(out.getvalue().split())

    real = docker_disk.query()
    said = run()
    assert f"docker storage: {real.free_bytes / 1e9:.0f} GB free at {real.root_dir}" in said
    assert said.count("docker storage:") == 1                 # the plan's check replaces doctor's
    ok = real.free_bytes >= f.docker_bytes
    assert (f"ok docker storage: {real.free_bytes / 1e9:.0f}" in said) == ok
    small = docker_disk.DockerStorage(real.root_dir, "", 5 * GB, 1 * GB, 0)
    monkeypatch.setattr(docker_disk, "query", lambda: small)
    said = run()
    assert "fail docker storage: 5 GB free" in said
    assert "preflight:" in said and "docker storage" in said.split("preflight:")[1]
    assert "/etc/docker/daemon.json" in said and "sudo systemctl restart docker" in said and "wheels" in said
