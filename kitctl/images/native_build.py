"""``kitctl build --runtime native``: run ``native/build.sh`` on this host (no Docker).

Finds CUDA, NCCL, Open MPI, cuDNN and the cudnn-frontend headers the way a person would (environment
variables first, then the usual system places, then NVIDIA's PyPI wheels in the current Python), and builds
the same two binaries the runtime image has, by default into ``<data_root>/native/bin/``:
``train_gpt2cu`` (BF16, cuDNN if found) and ``train_gpt2cu_fp32`` (FP32, runs on sm_75 too), and beside them
the record of what was built (kitctl.core.native_build_record: the arch list ``kitctl doctor`` judges).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from kitctl.core import pins
from kitctl.core.layout import DataLayout
from kitctl.core.llmc_files import BINARIES as LLMC_BINARIES
from kitctl.core.native_build_record import NativeBuild
from kitctl.core.errors import KitError
from kitctl.core.files import sha256_file
from kitctl.core import resources

BUILD_SH = resources.share("native", "build.sh")
BINARIES = (LLMC_BINARIES["bf16"], LLMC_BINARIES["fp32"])


def default_out(data_root: Path) -> Path:
    """Where the train planner looks for native binaries."""
    return DataLayout(data_root).native_bin


@dataclass
class Toolchain:
    cuda_home: Optional[Path] = None
    nccl_include: Optional[Path] = None
    nccl_lib: Optional[Path] = None
    mpi_dir: Optional[Path] = None
    cudnn_include: Optional[Path] = None
    cudnn_lib: Optional[Path] = None
    cudnn_frontend: Optional[Path] = None
    notes: list[str] = field(default_factory=list)


def _first(paths: list[Path], marker: str) -> Optional[Path]:
    for p in paths:
        if p and (p / marker).exists():
            return p
    return None


def _site_packages() -> list[Path]:
    out = []
    for key in ("purelib", "platlib"):
        p = Path(sysconfig.get_paths()[key])
        if p not in out:
            out.append(p)
    return out


def discover(environ: Optional[dict[str, str]] = None, cudnn_frontend: Optional[Path] = None,
             src: Optional[Path] = None) -> Toolchain:
    """Locate every input of native/build.sh on this host."""
    env = dict(os.environ) if environ is None else environ
    t = Toolchain()
    nvcc = shutil.which("nvcc")
    cands = [Path(env["CUDA_HOME"])] if env.get("CUDA_HOME") else []
    if nvcc:
        cands.append(Path(nvcc).resolve().parent.parent)
    cands.append(Path("/usr/local/cuda"))
    t.cuda_home = _first(cands, "bin/nvcc")
    sp = _site_packages()
    inc_dirs = [Path(env["NCCL_INCLUDE"])] if env.get("NCCL_INCLUDE") else []
    inc_dirs += [Path("/usr/include"), *([t.cuda_home / "include"] if t.cuda_home else []),
                 *[s / "nvidia" / "nccl" / "include" for s in sp]]
    t.nccl_include = _first(inc_dirs, "nccl.h")
    if env.get("NCCL_LIB"):
        t.nccl_lib = Path(env["NCCL_LIB"])
    elif t.nccl_include and "site-packages" in str(t.nccl_include):
        t.nccl_lib = t.nccl_include.parent / "lib"
        t.notes.append("NCCL from the nvidia-nccl wheel: make sure lib/libnccl.so exists (ln -s libnccl.so.2 libnccl.so)")
    mpi = [Path(env["OPENMPI_DIR"])] if env.get("OPENMPI_DIR") else []
    mpi += [Path("/usr/lib/x86_64-linux-gnu/openmpi"), Path("/usr/lib64/openmpi"), Path("/opt/openmpi")]
    t.mpi_dir = next((p for p in mpi if (p / "include").is_dir() and (p / "lib").is_dir()), None)
    cudnn = [Path(env["CUDNN_INCLUDE"])] if env.get("CUDNN_INCLUDE") else []
    cudnn += [Path("/usr/include"), Path("/usr/include/x86_64-linux-gnu"),
              *([t.cuda_home / "include"] if t.cuda_home else []), *[s / "nvidia" / "cudnn" / "include" for s in sp]]
    t.cudnn_include = _first(cudnn, "cudnn.h")
    if env.get("CUDNN_LIB"):
        t.cudnn_lib = Path(env["CUDNN_LIB"])
    elif t.cudnn_include and "site-packages" in str(t.cudnn_include):
        t.cudnn_lib = t.cudnn_include.parent / "lib"
    cfe = [p for p in (cudnn_frontend, Path(env["CUDNN_FRONTEND_PATH"]) if env.get("CUDNN_FRONTEND_PATH") else None,
                       (src / "cudnn-frontend" / "include") if src else None,
                       Path.home() / "cudnn-frontend" / "include") if p is not None]
    cfe += [s / "include" for s in sp]     # pip install nvidia-cudnn-frontend==<pin>
    t.cudnn_frontend = _first(cfe, "cudnn_frontend.h")
    return t


def missing(t: Toolchain, cudnn: Optional[bool] = None) -> list[str]:
    """What this host lacks for native/build.sh (empty: ready); ``cudnn=True`` also needs cuDNN."""
    out = []
    if t.cuda_home is None:
        out.append("CUDA (nvcc): set CUDA_HOME or put nvcc on PATH")
    if t.nccl_include is None:
        out.append("NCCL (nccl.h): apt install libnccl-dev, or pip install nvidia-nccl-cu13 and set NCCL_INCLUDE/NCCL_LIB")
    if t.mpi_dir is None:
        out.append("Open MPI: apt install libopenmpi-dev, or set OPENMPI_DIR (with include/ and lib/)")
    if cudnn and (t.cudnn_include is None or t.cudnn_frontend is None):
        what = "cudnn.h" if t.cudnn_include is None else "cudnn-frontend headers"
        out.append(f"--cudnn: {what} not found: pip install "
                   f"nvidia-cudnn-frontend=={pins.load().cudnn_frontend.version} (headers) or pass "
                   "--cudnn-frontend DIR; or build --no-cudnn")
    return out


def _p(path: Optional[Path], what: str) -> str:
    return str(path) if path is not None else f"<{what}: not found>"


def uses_cudnn(t: Toolchain, cudnn: Optional[bool] = None) -> bool:
    """Whether the BF16 binary gets cuDNN: as asked, else when cudnn.h and the frontend headers were found."""
    return cudnn if cudnn is not None else (t.cudnn_include is not None and t.cudnn_frontend is not None)


def plan(src: Path, out: Path, archs: list[int], t: Toolchain, cudnn: Optional[bool] = None,
         strict: bool = True) -> list[list[str]]:
    """The native/build.sh command lines for both binaries.

    ``strict`` (a real build): raise KitError naming what is missing. Not strict (``--dry-run``): plan anyway,
    with ``<...: not found>`` in place of what is missing (``missing()`` lists it).
    """
    cudnn = uses_cudnn(t, cudnn)
    if strict:
        lacks = missing(t)
        if lacks:
            raise KitError("cannot build llm.c natively; missing:\n  - " + "\n  - ".join(lacks),
                           "or build the image instead: kitctl build (runtime: docker)")
        lacks = missing(t, cudnn)
        if lacks:
            msg, _, hint = lacks[0].partition(" not found: ")
            raise KitError(f"{msg} not found", hint)
        version = cuda_version(t.cuda_home)
        if version and pins.CUDA_VERSION.fullmatch(version):     # the host toolkit must build every arch asked
            pins.check_buildable(list(archs), version, "native", f"build (CUDA home {t.cuda_home})")
    arch = ",".join(str(a) for a in archs)
    common = ["--src", str(src), "--out", str(out), "--arch", arch, "--cuda-home", _p(t.cuda_home, "CUDA"),
              "--nccl-include", _p(t.nccl_include, "NCCL"), "--mpi-dir", _p(t.mpi_dir, "Open MPI")]
    if t.nccl_lib:
        common += ["--nccl-lib", str(t.nccl_lib)]
    bf16 = ["bash", str(BUILD_SH), *common, "--precision", "BF16", "--cudnn", "1" if cudnn else "0",
            "--name", BINARIES[0]]
    if cudnn:
        bf16 += ["--cudnn-frontend", _p(t.cudnn_frontend, "cudnn-frontend")]
        if t.cudnn_include:
            bf16 += ["--cudnn-include", str(t.cudnn_include)]
        if t.cudnn_lib:
            bf16 += ["--cudnn-lib", str(t.cudnn_lib)]
    fp32 = ["bash", str(BUILD_SH), *common, "--precision", "FP32", "--cudnn", "0", "--name", BINARIES[1]]
    return [bf16, fp32]


def cuda_version(cuda_home: Optional[Path]) -> Optional[str]:
    """The toolkit's version: its ``version.json`` (CUDA >= 11.1), else ``nvcc --version``'s release; None if
    neither says."""
    if cuda_home is None:
        return None
    try:
        v = json.loads((cuda_home / "version.json").read_text())["cuda"]["version"]
        if isinstance(v, str) and v:
            return v
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        r = subprocess.run([str(cuda_home / "bin" / "nvcc"), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"release (\d+\.\d+)", r.stdout)
    return m.group(1) if m else None


def build_record(archs: list[int], t: Toolchain, cudnn: Optional[bool], llmc_commit: Optional[str],
                 out: Path) -> NativeBuild:
    """The record of a build that succeeded with these inputs (written beside the binaries in ``out``, with
    their checksums: a binary replaced later is not vouched for)."""
    return NativeBuild(archs=archs, binaries={"bf16": BINARIES[0], "fp32": BINARIES[1]}, cudnn=uses_cudnn(t, cudnn),
                       cuda=cuda_version(t.cuda_home), llmc_commit=llmc_commit,
                       sha256={b: sha256_file(out / b) for b in BINARIES})
