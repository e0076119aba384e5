"""Fixtures of the model tests: small random checkpoints in llm.c's format, and kitctl in a subprocess."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

import kitctl_proc

import llmc_ref

DIMS = dict(L=2, C=64, H=4, T=32, V=50257, Vp=50304)


def have_torch_transformers() -> bool:
    # find_spec, not import: importing torch + transformers costs ~6 s at collection, in every pytest process
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


needs_transformers = pytest.mark.skipif(
    not have_torch_transformers(),
    reason="torch + transformers not installed (pip install torch==2.13.0 transformers==5.24.0; "
           "they are in docker/requirements.lock for CI)")


@pytest.fixture(scope="session")
def params():
    """Random llm.c weights and dims (L=2, C=64, 4 heads, T=32, V=50257, Vp=50304)."""
    return llmc_ref.random_params(**DIMS, seed=0)


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory, params):
    """model_00000010.bin (fp32, version 3) and model_00000020.bin (bf16, version 5) of the same weights."""
    d = tmp_path_factory.mktemp("ckpt")
    p, dims = params
    llmc_ref.write_checkpoint(d / "model_00000010.bin", p, dims, version=3)
    llmc_ref.write_checkpoint(d / "model_00000020.bin", p, dims, version=5)
    return d


def kitctl(*args, data_root: Path, env_extra: dict | None = None, timeout: int = 300):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "HF_"))}
    env["KIT_DATA_ROOT"] = str(data_root)
    env["TIKTOKEN_CACHE_DIR"] = str(data_root / "tiktoken")
    env.update(env_extra or {})
    return kitctl_proc.run(args, env=env, cwd=data_root, timeout=timeout)
