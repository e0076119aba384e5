"""Shared fixtures: paths to the shared offline inputs, and engine / tool checks that skip with a reason."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest_plugins = ["docker_fixtures"]   # session fixtures that build kit images (tests/docker_fixtures.py)

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KIT_SHARED", REPO.parent / "shared"))
GPT2_BPE = SHARED / "data" / "gpt2-bpe"
TINYSHAKESPEARE = SHARED / "data" / "tinyshakespeare" / "input.txt"
LLMC_SRC = Path(os.environ.get("LLMC_SRC", REPO / ".llmc-src" / "llm.c"))


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


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "docker" in item.keywords:
            reason = docker_engine_reason()
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
        if "chromium" in item.keywords and shutil.which("chromium") is None:
            item.add_marker(pytest.mark.skip(reason="Debian's chromium is not installed (CI installs it)"))
        if "slurm" in item.keywords and shutil.which("slurmctld") is None:
            item.add_marker(pytest.mark.skip(reason="slurm-wlm is not installed (CI installs slurm-wlm and munge)"))


@pytest.fixture(scope="session")
def gpt2_bpe_dir() -> Path:
    if not (GPT2_BPE / "vocab.bpe").exists():
        pytest.skip(f"GPT-2 BPE files not found at {GPT2_BPE}")
    return GPT2_BPE


@pytest.fixture(scope="session")
def tinyshakespeare() -> Path:
    if not TINYSHAKESPEARE.exists():
        pytest.skip(f"tinyshakespeare not found at {TINYSHAKESPEARE}")
    return TINYSHAKESPEARE


@pytest.fixture(scope="session")
def llmc_src() -> Path:
    if not (LLMC_SRC / "train_gpt2.cu").exists():
        pytest.skip(f"no llm.c checkout at {LLMC_SRC} (set LLMC_SRC; GitHub is unreachable in CI)")
    return LLMC_SRC


@pytest.fixture(scope="session")
def tiktoken_cache(gpt2_bpe_dir, tmp_path_factory) -> Path:
    """TIKTOKEN_CACHE_DIR seeded from the shared GPT-2 files (kitctl.data.tokenizer): no network."""
    from kitctl.data.tokenizer import setup_tiktoken

    cache = tmp_path_factory.mktemp("tiktoken")
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    setup_tiktoken(gpt2_bpe_dir, cache)
    yield cache
    if old is None:
        os.environ.pop("TIKTOKEN_CACHE_DIR", None)
    else:
        os.environ["TIKTOKEN_CACHE_DIR"] = old


@pytest.fixture
def restore_environ():
    """Undo what a test's code put in os.environ (kitctl data sets HF_HOME, TIKTOKEN_CACHE_DIR, ...)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
