"""Session fixtures that build kit images once per test run (shared by the images and data tests).

Loaded from conftest.py (``pytest_plugins``). Images are tagged under ``llmc-kit-test`` so a test run never
moves the user's own ``llmc-kit:latest`` / ``llmc-kit:data``. Builds use the base image
``local/debian:bookworm`` (made by ../shared/ci/docker-engine.sh; override with KIT_TEST_BASE_IMAGE), the
configured pip index, and the system CA bundle as a BuildKit secret (TLS-intercepting proxies).
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

TEST_IMAGE = "llmc-kit-test"
BASE_IMAGE = os.environ.get("KIT_TEST_BASE_IMAGE", "local/debian:bookworm")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@functools.lru_cache(maxsize=1)
def docker_engine_reason() -> str | None:
    """None when a Docker engine answers, else why not."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH (CI installs one with ../shared/ci/docker-engine.sh)"
    try:
        r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                           text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"docker info failed: {e}"
    if r.returncode != 0:
        return "no Docker engine is running (start one with ../shared/ci/docker-engine.sh)"
    return None


def _log(line: str) -> None:
    print(line, flush=True)


@pytest.fixture(scope="session")
def docker_base_image() -> str:
    r = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"base image {BASE_IMAGE} not present (../shared/ci/docker-engine.sh makes it)")
    return BASE_IMAGE


@pytest.fixture(scope="session")
def build_ca() -> Path | None:
    return CA_BUNDLE if CA_BUNDLE.is_file() else None


@pytest.fixture(scope="session")
def test_kit_config(tmp_path_factory):
    """A KitConfig for test builds: image name llmc-kit-test, a temporary data root, pip index from env."""
    from kitctl.core.config import KitConfig, Mirrors

    pip = os.environ.get("PIP_INDEX_URL")
    return KitConfig(image=TEST_IMAGE, data_root=tmp_path_factory.mktemp("kitdata"),
                     mirrors=Mirrors(pip_index=pip) if pip else Mirrors())


@pytest.fixture(scope="session")
def data_image(test_kit_config, docker_base_image, build_ca, tmp_path_factory) -> str:
    """The CPU-only data image (``llmc-kit-test:data``), built once per session; returns its moving tag."""
    from kitctl.core import pins
    from kitctl.images import build as builder, context, request

    req = request.BuildRequest.from_config(test_kit_config, provider="wheels", target="data",
                                          base_image=docker_base_image,
                                          cuda=pins.load().providers.wheels.cuda,   # CPU-only: no CUDA
                                          ca_cert=build_ca, build_dir=tmp_path_factory.mktemp("build-data"),
                                          archs=[75])
    return builder.build(req, context.prepare_context(req), on_line=_log)[-1]


@pytest.fixture(scope="session")
def wheels_toolchain(test_kit_config, docker_base_image, build_ca, tmp_path_factory):
    """The wheels-provider toolchain image (CUDA 13 PyPI wheels on Debian), built once per session.

    Returns (request, context, tag)."""
    from kitctl.images import build as builder, context, request

    req = request.BuildRequest.from_config(test_kit_config, provider="wheels", target="toolchain",
                                          base_image=docker_base_image, ca_cert=build_ca, archs=[75, 86],
                                          build_dir=tmp_path_factory.mktemp("build-toolchain"))
    ctx = context.prepare_context(req)
    tag = builder.build(req, ctx, on_line=_log)[0]
    return req, ctx, tag
