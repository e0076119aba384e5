"""kitctl doctor: judgement on fake facts (pure), and the CLI on an inventory CSV and on this machine."""
from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

import kitctl_proc

from fake_gpus import fake_nvidia_smi
from kitctl.host import doctor
from kitctl.core.config import KitConfig
from kitctl.core.native_build_record import NativeBuild, record_path
from kitctl.host.gpus import parse_csv

MIXED = ("0, NVIDIA GeForce RTX 2080 Ti, 7.5, 11264 MiB, 570.86.10\n"
         "1, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 570.86.10\n")
GOOD_DOCKER = dict(docker_cli=True, engine="28.0", buildx="0.20", compose="2.30", runtimes=["nvidia", "runc"],
                   free_bytes=500 * 10**9, shm_bytes=8 * 10**9)


def by_check(findings):
    return {f.check: f for f in findings}


def test_mixed_2080ti_3090_explains_fp32_and_bf16():
    cfg = KitConfig(provider="nvidia", arch=[75, 86])
    f = doctor.evaluate(doctor.Facts(gpus=parse_csv(MIXED), **GOOD_DOCKER), cfg)
    c = by_check(f)
    assert c["mixed GPUs"].status == "warn" and "FP32" in c["mixed GPUs"].meaning
    assert "leave" in c["mixed GPUs"].meaning
    assert "BF16" in c["GPU 0"].meaning and c["GPU 1"].meaning == ""
    assert c["driver"].status == "ok" and c["arch list"].status == "ok"
    assert doctor.ready(f)


def test_old_driver_with_wheels_provider_fails_and_points_to_nvidia_cuda12():
    gpus = parse_csv("0, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 535.104.05\n")
    cfg = KitConfig(provider="wheels", arch=[86])
    c = by_check(doctor.evaluate(doctor.Facts(gpus=gpus, **GOOD_DOCKER), cfg))
    assert c["driver"].status == "fail"
    assert "12.2" in c["driver"].detail and "nvidia provider" in c["driver"].meaning
    assert not doctor.ready(list(c.values()))


def test_arch_list_missing_a_gpu_fails():
    cfg = KitConfig(arch=[86])
    c = by_check(doctor.evaluate(doctor.Facts(gpus=parse_csv(MIXED), **GOOD_DOCKER), cfg))
    assert c["arch list"].status == "fail" and "75,86" in c["arch list"].meaning


def test_no_engine_fails_for_docker_runtime_but_not_native():
    facts = doctor.Facts(docker_cli=True, engine=None, engine_error="Cannot connect", free_bytes=500 * 10**9)
    assert by_check(doctor.evaluate(facts, KitConfig(runtime="docker")))["docker engine"].status == "fail"
    assert by_check(doctor.evaluate(facts, KitConfig(runtime="native")))["docker engine"].status == "warn"


def test_gpus_without_container_runtime_fail():
    facts = doctor.Facts(gpus=parse_csv(MIXED), **{**GOOD_DOCKER, "runtimes": ["runc"]})
    c = by_check(doctor.evaluate(facts, KitConfig()))
    assert c["nvidia container runtime"].status == "fail" and "nvidia-ctk" in c["nvidia container runtime"].meaning


def test_small_disk_and_small_shm():
    facts = doctor.Facts(**{**GOOD_DOCKER, "free_bytes": 5 * 10**9, "shm_bytes": 64 * 2**20})
    c = by_check(doctor.evaluate(facts, KitConfig(runtime="native")))
    assert c["data root space"].status == "fail" and c["shared memory"].status == "warn"


def _cli(tmp_path, *args):
    (tmp_path / "kit.yaml").write_text(f"data_root: {tmp_path}\narch: [75, 86]\nruntime: native\n")
    return kitctl_proc.run(["--config", str(tmp_path / "kit.yaml"), "doctor", *args])


@pytest.mark.slow
def test_cli_doctor_inventory_json(tmp_path):
    inv = tmp_path / "gpus.csv"
    inv.write_text(MIXED)
    r = _cli(tmp_path, "--inventory", str(inv), "--json")
    out = json.loads(r.stdout)
    checks = {f["check"]: f for f in out["findings"]}
    assert "GPU 1" in checks and "RTX 3090" in checks["GPU 1"]["detail"] and "sm_86" in checks["GPU 1"]["detail"]
    # memory as nvidia-smi prints it (MiB), not a rounded "26 GB"
    assert "24576 MiB" in checks["GPU 1"]["detail"] and " GB" not in checks["GPU 1"]["detail"]
    assert checks["mixed GPUs"]["status"] == "warn"
    assert r.returncode == (0 if out["ready"] else 1)


@pytest.mark.slow
def test_cli_doctor_exit_code_1_when_not_ready(tmp_path):
    inv = tmp_path / "gpus.csv"
    inv.write_text("0, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 450.80.02\n")   # CUDA 11.0 driver
    r = _cli(tmp_path, "--inventory", str(inv))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not ready" in r.stdout and "driver" in r.stdout


@pytest.mark.slow
def test_cli_doctor_on_this_machine_runs(tmp_path):
    r = _cli(tmp_path)
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr
    assert "docker engine" in r.stdout and "shared memory" in r.stdout


def test_doctor_says_the_container_flags_train_uses():
    from kitctl.host.runtimes import gpu_container_argv

    c = by_check(doctor.evaluate(doctor.Facts(gpus=parse_csv(MIXED), **GOOD_DOCKER), KitConfig(runtime="docker")))
    detail = c["shared memory"].detail
    assert " ".join(gpu_container_argv(2)) in detail                     # --shm-size 2g --ulimit memlock=-1 ...
    assert "--ipc" not in detail and "16g" not in detail


def test_driver_row_names_the_newest_cuda_image_the_driver_runs():
    for driver, want in (("550.54.14", "12.4.1"), ("560.35.03", "12.6.3"), ("535.104.05", "12.2.2")):
        gpus = parse_csv(f"0, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, {driver}\n")
        c = by_check(doctor.evaluate(doctor.Facts(gpus=gpus, **GOOD_DOCKER), KitConfig(arch=[86])))
        assert c["driver"].status == "fail" and f'cuda: "{want}"' in c["driver"].meaning, c["driver"].meaning
        w = by_check(doctor.evaluate(doctor.Facts(gpus=gpus, **GOOD_DOCKER), KitConfig(provider="wheels", arch=[86])))
        assert "nvidia-cuda-nvcc-cu12" in w["driver"].meaning and "no nvcc" in w["driver"].meaning
    gpus = parse_csv("0, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 580.65.06\n")
    c = by_check(doctor.evaluate(doctor.Facts(gpus=gpus, **GOOD_DOCKER), KitConfig(provider="wheels", arch=[86])))
    assert c["driver"].status == "ok"


H100 = "0, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.124.06\n"


def _doctor_on_h100(tmp_path, kit_yaml):
    """`kitctl doctor --json` on this box as an H100 (a stand-in nvidia-smi): (arch list finding, train verdict)."""
    (tmp_path / "kit.yaml").write_text(f"data_root: {tmp_path / 'data'}\n{kit_yaml}")
    env = {**os.environ, "PATH": f"{fake_nvidia_smi(tmp_path / 'gpu-bin', H100)}:{os.environ['PATH']}"}
    r = kitctl_proc.run(["--config", str(tmp_path / "kit.yaml"), "doctor", "--json"], env=env)
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    out = json.loads(r.stdout)
    return {f["check"]: f for f in out["findings"]}["arch list"], out["purposes"]["train"]


@pytest.mark.slow
@pytest.mark.parametrize("built", ["90", "75,86", "100", "nothing", "binaries only", "not json", "fifo"])
def test_cli_doctor_judges_the_native_build_record(roomy_tmp_path, built):
    """kit.yaml says 75,86; what `kitctl train --runtime native` would load decides (the record beside the binaries).
    The data root's disk has room, so only the build decides whether it trains."""
    tmp_path = roomy_tmp_path
    bin_dir = tmp_path / "data" / "native" / "bin"
    rec = record_path(bin_dir)
    if built != "nothing":
        bin_dir.mkdir(parents=True)
        for name in ("train_gpt2cu", "train_gpt2cu_fp32"):
            (bin_dir / name).write_bytes(b"\x7fELF")
    if built in ("90", "75,86", "100"):
        NativeBuild(archs=[int(a) for a in built.split(",")], binaries={"bf16": "train_gpt2cu"}, cudnn=True).write(rec)
    elif built == "not json":
        rec.write_text("not json at all")
    elif built == "fifo":
        os.mkfifo(rec)
    arch, train = _doctor_on_h100(tmp_path, "runtime: native\narch: [75, 86]\n")
    if built == "90":
        assert arch["status"] == "ok" and str(rec) in arch["detail"] and "arch list" not in train["reason"]
    elif built == "75,86":                 # the H100 runs compute_86 PTX (measured: sm_90's speed)
        assert arch["status"] == "warn" and str(rec) in arch["detail"] and "sm_90 from compute_86 PTX" in arch["detail"]
        assert "`kitctl build --runtime native --arch 75,86,90`" in arch["meaning"] and train["ready"]
    elif built == "100":                   # every arch newer than the GPU: no kernel image
        assert arch["status"] == "fail" and str(rec) in arch["detail"] and "no code for sm_90" in arch["detail"]
        assert "`kitctl build --runtime native --arch 90,100`" in arch["meaning"]
        assert not train["ready"] and "arch list" in train["reason"]
    else:
        assert arch["status"] == "warn" and "judged kit.yaml's arch" in arch["detail"] and "lacks [90]" in arch["detail"]
        want = {"nothing": f"nothing built yet in {bin_dir}", "binaries only": "no build record",
                "not json": f"{rec} is not a readable native build record", "fifo": "FIFO"}[built]
        assert want in arch["detail"], arch


@pytest.mark.slow
@pytest.mark.docker
def test_cli_doctor_judges_the_runtime_image_label(tmp_path, docker_base_image):
    """runtime docker: the runtime image's org.llmc-kit.archs label decides; no such image: kit.yaml, said so."""
    name = f"llmc-kit-doctor-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-q", "-t", f"{name}:latest", "-"], check=True, capture_output=True, text=True,
                   input=f"FROM {docker_base_image}\nLABEL org.llmc-kit.archs=\"100\"\n")
    try:
        arch, train = _doctor_on_h100(tmp_path, f"runtime: docker\nimage: {name}\narch: [90]\n")
        assert arch["status"] == "fail" and f"image {name}:latest" in arch["detail"] and "[100]" in arch["detail"]
        assert "`kitctl build --arch 90,100`" in arch["meaning"] and "arch list" in train["reason"]
    finally:
        subprocess.run(["docker", "image", "rm", "-f", f"{name}:latest"], capture_output=True)
    arch, _ = _doctor_on_h100(tmp_path, f"runtime: docker\nimage: {name}\narch: [90]\n")
    assert arch["status"] == "ok" and f"no image {name}:latest yet" in arch["detail"]
    assert "judged kit.yaml's arch" in arch["detail"]


def test_hints_fit_the_runtime_in_use():
    """Issue 29: with runtime native set, doctor never suggests setting it, nor the container toolkit for training."""
    from kitctl.host.gpus import parse_csv

    gpus = parse_csv("0, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.86.10\n", "t")
    none = doctor.Facts(docker_cli=False, gpus=gpus, free_bytes=500 * 10**9, shm_bytes=8 * 10**9)
    native = {f.check: f for f in doctor.evaluate(none, KitConfig(runtime="native"))}
    assert native["docker engine"].status == "warn" and "set runtime: native" not in native["docker engine"].meaning
    docker = {f.check: f for f in doctor.evaluate(none, KitConfig(runtime="docker"))}
    assert docker["docker engine"].status == "fail" and "set runtime: native" in docker["docker engine"].meaning
    no_rt = doctor.Facts(docker_cli=True, engine="28", buildx="0.2", gpus=gpus, free_bytes=500 * 10**9)
    rt = {f.check: f for f in doctor.evaluate(no_rt, KitConfig(runtime="native"))}["nvidia container runtime"]
    assert rt.status == "warn" and "nvidia-ctk" not in rt.meaning and "native" in rt.meaning
