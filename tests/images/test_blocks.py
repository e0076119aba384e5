"""Each building block of docker/blocks.j2, rendered on its own (as hpc-container-maker tests its building blocks),
and the rule that the Dockerfile template holds the constants while Python passes data only."""
from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest

from kitctl.core.config import KitConfig
from kitctl.images import render as rendering
from kitctl.images import request

REPO = Path(__file__).resolve().parents[2]
b = rendering.blocks()


def test_apt_install_sorted_deduped_cached_and_ca_secret():
    block = b.apt_install(["python3", "g++", "python3"], "why")
    assert block.startswith("# why\nRUN --mount=type=cache")
    assert block.count("python3") == 1 and block.index("g++") < block.index("python3")
    assert "--mount=type=secret,id=ca" in block and "Acquire::https::CAInfo" in block
    assert block.rstrip().endswith("rm -f /etc/apt/apt.conf.d/99llmc-ca")   # the CA never stays configured
    assert "        g++ \\\n        python3 && \\\n    rm -f" in block                # one package a line, then &&
    assert not b.apt_install(["curl"]).startswith("#")                        # no comment line without a comment
    with pytest.raises(ValueError, match="at least one package"):
        b.apt_install([])


def test_apt_setup_rewrites_debian_and_ubuntu_sources():
    block = b.apt_setup()
    assert block.startswith("ARG APT_MIRROR=\nARG APT_SNAPSHOT=\nRUN ")
    assert "deb|security" in block and "archive|security" in block and "*.sources" in block
    assert "${APT_MIRROR}" in block and "docker-clean" in block


@pytest.mark.parametrize("source, want", [
    ("URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n",
     "URIs: http://snapshot.debian.org/archive/debian/20250601T000000Z\n"),
    ("URIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n",
     "URIs: http://snapshot.debian.org/archive/debian-security/20250601T000000Z\n"),
    ("deb http://security.debian.org/debian-security bullseye-security main\n",
     "deb http://snapshot.debian.org/archive/debian-security/20250601T000000Z bullseye-security main\n"),
    ("URIs: http://archive.ubuntu.com/ubuntu/\nURIs: http://security.ubuntu.com/ubuntu/\n",
     "URIs: http://snapshot.ubuntu.com/ubuntu/20250601T000000Z/\nURIs: http://snapshot.ubuntu.com/ubuntu/20250601T000000Z/\n"),
])
def test_apt_setup_snapshot_rewrites_sources_to_the_dated_archive(tmp_path, source, want):
    """The sed of the APT_SNAPSHOT branch, run for real on Debian (deb822 and one-line) and Ubuntu sources."""
    import re
    import subprocess

    block = b.apt_setup()
    snap = block[block.index('if [ -n "$APT_SNAPSHOT" ]'):block.index("elif")]
    assert 'Acquire::Check-Valid-Until "false"' in snap        # snapshot Release files are past their Valid-Until
    expr = re.search(r'sed -i -E "([^"]+)"', snap).group(1).replace("${APT_SNAPSHOT}", "20250601T000000Z")
    f = tmp_path / "s"
    f.write_text(source)
    subprocess.run(["sed", "-i", "-E", expr, str(f)], check=True)
    first = want.splitlines()[0]
    assert f.read_text().startswith(first)
    assert f.read_text().count("snapshot.") == want.count("snapshot.")


def test_pip_env_and_pip_run_use_cache_and_ca_secret():
    assert "ARG PIP_INDEX_URL=https://pypi.org/simple\nENV PIP_INDEX_URL=${PIP_INDEX_URL}" in b.pip_env()
    block = b.pip_run(["pip install x", "pip install y"], "c")
    assert block.startswith("# c\nRUN --mount=type=cache,id=llmc-pip-cache,target=/root/.cache/pip")
    assert "PIP_CERT=/run/secrets/ca" in block
    assert "pip install x && \\\n    pip install y" in block


def test_cuda_wheels_pins_every_wheel_exactly():
    block = b.cuda_wheels("/v", "13.0.2", ["nvcc", "cudart"], {"nvidia-nccl-cu13": "2.28.3"},
                          {"nvidia-cuda-cuobjdump": "13.2.51"}, "13")
    assert "'cuda-toolkit[nvcc,cudart]==13.0.2'" in block
    assert "nvidia-nccl-cu13==2.28.3" in block
    assert "--no-deps -d /root/.cache/pip/llmc-wheels nvidia-cuda-cuobjdump==13.2.51" in block
    assert block.startswith("# NVIDIA CUDA 13 wheels (PyPI)")
    # downloaded into the cache mount first, installed from there without the index
    assert block.index("pip download -q -d /root/.cache/pip/llmc-wheels") < block.index("--no-index --find-links")
    assert "--no-deps" not in b.cuda_wheels("/v", "13.0.2", ["nvcc"], {}, {}, "13")


def test_cuda_wheels_layout_makes_unversioned_links_and_ldconfig():
    block = b.cuda_wheels_layout("/opt/nvidia/venv", "13")
    assert 'ln -s "$sp"/cu13 /usr/local/cuda' in block
    assert '${f%%.so.*}.so' in block and "ldconfig" in block and "/etc/ld.so.conf.d/" in block


def test_cudnn_frontend_headers_unpack_only_include():
    block = b.cudnn_frontend_headers("1.12.0")
    assert "nvidia-cudnn-frontend==1.12.0" in block and "--no-deps" in block
    assert 'cp -r "$tmp/x/include" /opt/cudnn-frontend/include' in block and 'rm -rf "$tmp"' in block


def test_labels_escape_and_sort():
    block = b.labels({"b": 'say "hi"', "a": "x", "c": "back\\slash"})
    assert block.index("a=") < block.index("b=") < block.index("c=")
    assert 'b="say \\"hi\\""' in block and 'c="back\\\\slash"' in block
    assert block.startswith('LABEL a="x" \\\n      b=')
    assert b.labels({}) == ""


def test_llmc_build_passes_every_arch_and_precision():
    block = b.llmc_build("/src", "/out", [75, 86], "FP32", False, "train_gpt2cu_fp32")
    assert block == ("RUN bash /opt/llmc-kit/native/build.sh --src /src --out /out --arch 75,86 --precision FP32 "
                     "--cudnn 0 --name train_gpt2cu_fp32")


def test_user_renames_existing_uid():
    block = b.user("llmc", 1000)
    assert "usermod -l llmc" in block and "useradd -m -u 1000" in block


def test_nccl_apt_pins_and_allows_held_packages():
    dev = b.nccl_apt("2.25.1-1+cuda12.8")
    assert "libnccl2=2.25.1-1+cuda12.8 libnccl-dev=2.25.1-1+cuda12.8" in dev and "--allow-change-held-packages" in dev
    rt = b.nccl_apt("2.25.1-1+cuda12.8", dev=False)
    assert "libnccl2=2.25.1-1+cuda12.8" in rt and "libnccl-dev" not in rt


def test_mpi_and_nvidia_env():
    assert "OPENMPI_DIR=/opt/mpi" in b.mpi_env("/opt/mpi") and "btl_vader_single_copy_mechanism=none" in b.mpi_env("/x")
    assert 'NVIDIA_REQUIRE_CUDA="cuda>=13.0"' in b.nvidia_container_env("13.0")


def test_runtime_libs_gather_and_copy():
    g = b.gather_runtime_libs(["/a/lib", "/b/lib"])
    assert "for d in /a/lib /b/lib; do" in g and "rm -f /opt/llmc-libs/*.a" in g
    c = b.runtime_libs_copy("build")
    assert c.startswith("COPY --from=build /opt/llmc-libs/ /opt/nvidia/lib/\nRUN echo /opt/nvidia/lib")


def test_every_block_is_one_readable_piece():
    """No block starts or ends with a blank line (the Dockerfile reads as written), and every macro is tested."""
    calls = {
        "from_stage": ("debian:bookworm", "x"), "shell_strict": (), "apt_setup": (), "apt_mounts": (),
        "apt_install": (["curl"],), "nccl_apt": ("2.25.1-1+cuda12.8",), "pip_env": (), "pip_run": (["true"],),
        "venv": ("/v",), "cuda_wheels": ("/v", "13.0.2", ["nvcc"], {}, {}, "13"), "cuda_wheels_layout": ("/v", "13"),
        "cudnn_frontend_headers": ("1.12.0",), "user": (), "mpi_env": ("/m",), "nvidia_container_env": ("13.0",),
        "labels": ({"a": "b"},), "llmc_build": ("/s", "/o", [80], "BF16", True, "t"),
        "gather_runtime_libs": (["/l"],), "runtime_libs_copy": ("build",),
    }
    source = (REPO / "docker" / "blocks.j2").read_text()
    defined = set(re.findall(r"\{% macro (\w+)\(", source))
    assert defined == set(calls), defined ^ set(calls)
    for name, args in calls.items():
        text = getattr(b, name)(*args)
        assert text and text == text.strip("\n") and "\n\n" not in text, name
        assert "{{" not in text and "{%" not in text, name


def test_template_holds_the_constants_python_passes_data_only():
    """The Dockerfile text comes from docker/ only: template_data() holds no Dockerfile instruction."""
    req = request.BuildRequest.from_config(KitConfig(), provider="wheels")
    flat = repr(rendering.template_data(req))
    for word in ("RUN ", "COPY ", "ENV ", "FROM ", "LABEL ", "apt-get", "--mount"):
        assert word not in flat, word
    assert not (REPO / "kitctl" / "images" / "recipes.py").exists()


def test_an_unknown_template_variable_is_an_error():
    env = rendering.environment()
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ b.nope }}{{ missing }}").render(b=b)
