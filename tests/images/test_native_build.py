"""native/build.sh (the one llm.c recipe) and kitctl.images.native_build, against a fake CUDA/NCCL/MPI tree.

The fake nvcc records its argv, so these tests check the exact compile lines the recipe produces; the real
compile runs in tests/test_images_docker.py (toolchain image) and on the GPU box (docs/validation.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kitctl_proc

from fake_gpus import fake_nvidia_smi
from kitctl.images import native_build
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import sha256_file
from kitctl.core.native_build_record import NativeBuild, record_path

REPO = Path(__file__).resolve().parents[2]
BUILD_SH = REPO / "native" / "build.sh"


@pytest.fixture
def fake(tmp_path):
    """A CUDA home with a recording nvcc, NCCL, Open MPI, cuDNN + frontend dirs, and a fake llm.c tree."""
    cuda = tmp_path / "cuda"
    (cuda / "bin").mkdir(parents=True)
    (cuda / "lib64").mkdir()
    (cuda / "include").mkdir()
    log = tmp_path / "nvcc.log"
    nvcc = cuda / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n"
                    "while [ $# -gt 0 ]; do [ \"$1\" = -o ] && touch \"$2\"; shift; done\n")
    nvcc.chmod(0o755)
    nccl = tmp_path / "nccl"
    (nccl / "include").mkdir(parents=True)
    (nccl / "include" / "nccl.h").write_text("")
    (nccl / "lib").mkdir()
    mpi = tmp_path / "mpi"
    (mpi / "include").mkdir(parents=True)
    (mpi / "lib").mkdir()
    cfe = tmp_path / "cfe" / "include"
    cfe.mkdir(parents=True)
    (cfe / "cudnn_frontend.h").write_text("")
    cudnn = tmp_path / "cudnn" / "include"
    cudnn.mkdir(parents=True)
    (cudnn / "cudnn.h").write_text("")
    src = tmp_path / "llm.c"
    (src / "llmc").mkdir(parents=True)
    (src / "train_gpt2.cu").write_text("")
    (src / "llmc" / "cudnn_att.cpp").write_text("")
    return dict(cuda=cuda, log=log, nccl=nccl, mpi=mpi, cfe=cfe, cudnn=cudnn, src=src, out=tmp_path / "out")


def run_sh(f, *extra, env=None):
    argv = ["bash", str(BUILD_SH), "--src", str(f["src"]), "--out", str(f["out"]), "--cuda-home", str(f["cuda"]),
            "--nccl-include", str(f["nccl"] / "include"), "--nccl-lib", str(f["nccl"] / "lib"),
            "--mpi-dir", str(f["mpi"]), *extra]
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_build_sh_one_generate_code_per_arch_and_compat_shim(fake):
    r = run_sh(fake, "--arch", "75,86", "--precision", "FP32")
    assert r.returncode == 0, r.stderr
    line = fake["log"].read_text().strip().splitlines()[-1]
    assert "--generate-code arch=compute_75,code=[compute_75,sm_75]" in line
    assert "--generate-code arch=compute_86,code=[compute_86,sm_86]" in line
    assert "-DENABLE_FP32" in line and "-DMULTI_GPU" in line and "-DUSE_MPI" in line
    assert f"-include {REPO}/native/patches/cuda13_compat.h" in line
    assert "-lnccl" in line and "-lmpi" in line and "-lcublas -lcublasLt" in line
    assert f"-rpath,{fake['nccl']}/lib" in line
    assert line.endswith(f"-o {fake['out']}/train_gpt2cu_fp32")
    assert (fake["out"] / "train_gpt2cu_fp32").exists()


def test_build_sh_cudnn_compiles_cudnn_att_first(fake):
    r = run_sh(fake, "--arch", "90", "--cudnn", "1", "--cudnn-frontend", str(fake["cfe"]),
               "--cudnn-include", str(fake["cudnn"]))
    assert r.returncode == 0, r.stderr
    first, second = fake["log"].read_text().strip().splitlines()
    assert first.startswith("-c ") and "cudnn_att.cpp" in first and f"-I{fake['cfe']}" in first
    assert "-DENABLE_CUDNN" in second and "cudnn_att.o" in second and "-lcudnn" in second
    assert "-DENABLE_BF16" in second and second.endswith("/train_gpt2cu")


@pytest.mark.parametrize("args,msg", [
    (["--arch", "86", "--precision", "FP32", "--cudnn", "1"], "cuDNN attention needs BF16"),
    (["--arch", "86", "--cudnn", "1"], "cudnn-frontend headers not found"),
    (["--arch", "ampere"], "bad arch"),
    (["--precision", "BF16"], "--arch is required"),
])
def test_build_sh_rejects_bad_input(fake, args, msg):
    r = run_sh(fake, *args, env={"HOME": str(fake["src"].parent)})
    assert r.returncode == 2 and msg in r.stderr


def test_build_sh_needs_mpi_and_nccl(fake, tmp_path):
    r = subprocess.run(["bash", str(BUILD_SH), "--src", str(fake["src"]), "--out", str(fake["out"]), "--arch", "86",
                        "--cuda-home", str(fake["cuda"]), "--nccl-include", str(fake["nccl"] / "include"),
                        "--mpi-dir", str(tmp_path / "nompi")], capture_output=True, text=True)
    assert r.returncode == 2 and "no Open MPI" in r.stderr


def test_discover_and_plan_from_env(fake):
    env = {"CUDA_HOME": str(fake["cuda"]), "NCCL_INCLUDE": str(fake["nccl"] / "include"),
           "NCCL_LIB": str(fake["nccl"] / "lib"), "OPENMPI_DIR": str(fake["mpi"]),
           "CUDNN_INCLUDE": str(fake["cudnn"]), "CUDNN_FRONTEND_PATH": str(fake["cfe"])}
    t = native_build.discover(env)
    assert t.cuda_home == fake["cuda"] and t.mpi_dir == fake["mpi"] and t.cudnn_frontend == fake["cfe"]
    bf16, fp32 = native_build.plan(fake["src"], fake["out"], [75, 86], t)
    assert "--cudnn" in bf16 and bf16[bf16.index("--cudnn") + 1] == "1"      # found -> on by default
    assert fp32[fp32.index("--cudnn") + 1] == "0" and fp32[fp32.index("--name") + 1] == "train_gpt2cu_fp32"
    # the plan really runs
    for argv in (bf16, fp32):
        assert subprocess.run(argv, capture_output=True).returncode == 0
    assert {p.name for p in fake["out"].iterdir()} == {"train_gpt2cu", "train_gpt2cu_fp32"}


def test_plan_names_what_is_missing(tmp_path):
    t = native_build.Toolchain()
    with pytest.raises(KitError) as e:
        native_build.plan(tmp_path, tmp_path, [86], t)
    assert "CUDA" in e.value.message and "NCCL" in e.value.message and "Open MPI" in e.value.message


def test_default_out_is_under_data_root(tmp_path):
    assert native_build.default_out(tmp_path) == tmp_path / "native" / "bin"


@pytest.mark.slow
def test_cli_native_dry_run(fake, tmp_path):
    (tmp_path / "kit.yaml").write_text(f"data_root: {tmp_path / 'data'}\nruntime: native\narch: [75, 86]\n")
    env = {**os.environ, "CUDA_HOME": str(fake["cuda"]), "NCCL_INCLUDE": str(fake["nccl"] / "include"),
           "OPENMPI_DIR": str(fake["mpi"])}
    r = kitctl_proc.run(["--config", tmp_path / "kit.yaml", "build", "--llmc-src", fake["src"], "--no-cudnn",
                         "--dry-run"], env=env)
    assert r.returncode == 0, r.stderr
    assert f"--out {tmp_path / 'data' / 'native' / 'bin'}" in r.stdout and "--arch 75,86" in r.stdout


H100 = "0, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.124.06\n"


@pytest.mark.slow
def test_cli_native_build_records_what_it_built_and_doctor_judges_that(fake, tmp_path):
    """kit.yaml says 75,86, the build is asked for 90: the record says 90 and doctor on an H100 judges the binaries
    (the issue: doctor judged kit.yaml and said "not ready for train"). A failed rebuild leaves no record."""
    (tmp_path / "kit.yaml").write_text(f"data_root: {tmp_path / 'data'}\nruntime: native\narch: [75, 86]\n")
    (fake["cuda"] / "version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "12.8.1"}}')
    git = ["git", "-C", str(fake["src"]), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "llm.c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    env = {**os.environ, "CUDA_HOME": str(fake["cuda"]), "NCCL_INCLUDE": str(fake["nccl"] / "include"),
           "OPENMPI_DIR": str(fake["mpi"])}
    argv = ["--config", tmp_path / "kit.yaml", "build", "--llmc-src", fake["src"], "--no-cudnn", "--arch", "90"]
    r = kitctl_proc.run(argv, env=env)
    assert r.returncode == 0, r.stderr
    bin_dir = tmp_path / "data" / "native" / "bin"
    rec = NativeBuild.read(record_path(bin_dir))
    assert rec.archs == [90] and rec.cudnn is False and rec.cuda == "12.8.1" and rec.llmc_commit == head
    assert rec.binaries == {"bf16": "train_gpt2cu", "fp32": "train_gpt2cu_fp32"}
    assert all((bin_dir / b).is_file() for b in rec.binaries.values())
    assert rec.sha256 == {b: sha256_file(bin_dir / b) for b in rec.binaries.values()}
    env["PATH"] = f"{fake_nvidia_smi(tmp_path / 'gpu-bin', H100)}:{env['PATH']}"
    d = kitctl_proc.run(["--config", tmp_path / "kit.yaml", "doctor", "--json"], env=env)
    assert "Traceback" not in d.stderr
    arch = {f["check"]: f for f in json.loads(d.stdout)["findings"]}["arch list"]
    assert arch["status"] == "ok" and str(record_path(bin_dir)) in arch["detail"], arch
    assert "set arch: [75, 86, 90]" in arch["meaning"]       # the next build without --arch would drop 90
    # a rebuild that fails half way: the old record goes (it no longer says what is in the folder)
    (fake["cuda"] / "bin" / "nvcc").write_text("#!/bin/sh\nexit 1\n")
    r = kitctl_proc.run(argv, env=env)
    assert r.returncode == 1 and "native build failed" in r.stderr
    assert not record_path(bin_dir).exists()
    # a folder where the record goes: refused before anything is compiled, with what to do
    record_path(bin_dir).mkdir()
    r = kitctl_proc.run(argv, env={**env, "COLUMNS": "400"})           # a long tmp path unwrapped
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and f"{record_path(bin_dir)} is a folder: the native build writes its record there" in said
    assert f"rm -r {record_path(bin_dir)}" in said and "native build failed" not in said and "Traceback" not in said


def test_dry_run_plan_lists_what_is_missing_instead_of_refusing(tmp_path):
    t = native_build.Toolchain()
    bf16, fp32 = native_build.plan(tmp_path, tmp_path / "bin", [86], t, cudnn=True, strict=False)
    assert "<NCCL: not found>" in bf16 and "<CUDA: not found>" in fp32 and "<cudnn-frontend: not found>" in bf16
    lacks = native_build.missing(t, cudnn=True)
    assert [x.split()[0] for x in lacks] == ["CUDA", "NCCL", "Open", "--cudnn:"]
    with pytest.raises(KitError, match="missing"):
        native_build.plan(tmp_path, tmp_path / "bin", [86], t, strict=True)


@pytest.mark.slow
def test_cli_native_dry_run_on_this_host_warns_and_a_real_run_refuses(tmp_path):
    lacks = native_build.missing(native_build.discover())
    if not lacks:
        pytest.skip("this host has CUDA, NCCL and Open MPI: nothing is missing")
    (tmp_path / "kit.yaml").write_text(f"data_root: {tmp_path / 'data'}\nruntime: native\narch: [75, 86]\n")
    src = tmp_path / "llm.c"
    src.mkdir()
    argv = [sys.executable, "-m", "kitctl", "--config", str(tmp_path / "kit.yaml"), "build", "--llmc-src", str(src)]
    r = subprocess.run([*argv, "--dry-run"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("native/build.sh") == 2 and "--arch 75,86" in r.stdout
    assert "warning: missing " + lacks[0].split()[0] in " ".join(r.stderr.split())
    real = subprocess.run(argv, capture_output=True, text=True)
    assert real.returncode == 1 and "cannot build llm.c natively" in real.stderr


def test_a_host_toolkit_that_cannot_build_an_arch_is_refused_before_compiling(fake):
    """Issue 29: the arch x CUDA table judges the host's CUDA too (its version.json): CUDA 13 cannot build sm_70."""
    (fake["cuda"] / "version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "13.0.2"}}')
    env = {"CUDA_HOME": str(fake["cuda"]), "NCCL_INCLUDE": str(fake["nccl"] / "include"),
           "NCCL_LIB": str(fake["nccl"] / "lib"), "OPENMPI_DIR": str(fake["mpi"]),
           "CUDNN_INCLUDE": str(fake["cudnn"]), "CUDNN_FRONTEND_PATH": str(fake["cfe"])}
    t = native_build.discover(env)
    with pytest.raises(ConfigError) as e:
        native_build.plan(fake["src"], fake["out"], [70, 86], t)
    assert "CUDA 13.0.2 (the host's toolkit) cannot build" in e.value.message and "sm_70" in e.value.message
    assert "CUDA_HOME" in e.value.hint and not fake["log"].exists()
    assert len(native_build.plan(fake["src"], fake["out"], [75, 86], t)) == 2
