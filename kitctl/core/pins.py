"""``docker/versions.yaml``, typed: every pin of the kit in one place, validated when it is read.

:func:`load` reads the file once (through :func:`kitctl.core.records.load_yaml`: size/alias limits,
``extra="forbid"``) into :class:`Pins`. Every value that ends up in a Dockerfile or a shell line (image
references, package names, versions, apt versions) must match a strict pattern here, so a stray newline or quote
in the file is an error naming the key, never a line of Dockerfile.

The same patterns check what users give in place of a pin (``--base-image``, ``mirrors.registry``, ``--cuda``):
see :func:`check_image_ref`, :func:`check_registry`, :func:`check_cuda_version`.

Also here: the nvidia/cuda image table (``providers.nvidia.cuda_images``) and the pick of the newest CUDA of it
that a driver runs (:func:`newest_cuda_image`), used by ``kitctl doctor`` and ``kitctl build``.
"""
from __future__ import annotations

import functools
import hashlib
import re
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, Field

from kitctl.core import resources
from kitctl.core.errors import ConfigError
from kitctl.core.records import UserData, load_yaml

VERSIONS_FILE = resources.share("docker", "versions.yaml")

# --------------------------------------------------------------------------------------------- patterns
# Docker's distribution reference grammar (github.com/distribution/reference), anchored with fullmatch.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+)(?::[0-9]{1,5})?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
IMAGE_REF = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@sha256:[a-f0-9]{{64}})?")
IMAGE_REPO = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*")          # no tag: kit.yaml ``image``
REGISTRY = re.compile(rf"{_DOMAIN}(?:/{_COMPONENT})*")                                 # a prefix for Docker Hub refs
CUDA_VERSION = re.compile(r"[0-9]{1,2}\.[0-9]{1,2}(?:\.[0-9]{1,3})?")
PACKAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")                             # PyPI / Debian names
VERSION = re.compile(r"[0-9][0-9A-Za-z.+~_-]{0,63}")                                   # PEP 440 and apt versions
EXTRA = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
HEX40 = re.compile(r"[0-9a-f]{40}")
HEX64 = re.compile(r"[0-9a-f]{64}")
# an image tag template of versions.yaml: a reference with {cuda} {cudnn} {ubuntu} placeholders
_TEMPLATE_FIELD = re.compile(r"\{(cuda|cudnn|ubuntu)\}")


def _matches(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(v: str) -> str:
        if not pattern.fullmatch(v):
            raise ValueError(f"{v!r} is not a valid {what}")
        return v
    return AfterValidator(check)


def _template(v: str) -> str:
    filled = _TEMPLATE_FIELD.sub("x1", v)
    if not IMAGE_REF.fullmatch(filled):
        raise ValueError(f"{v!r} is not an image reference template ({{cuda}}, {{cudnn}}, {{ubuntu}} allowed)")
    return v


ImageRef = Annotated[str, _matches(IMAGE_REF, "image reference (e.g. debian:bookworm)")]
CudaVersion = Annotated[str, _matches(CUDA_VERSION, "CUDA version (X.Y or X.Y.Z)")]
Package = Annotated[str, _matches(PACKAGE, "package name")]
Version = Annotated[str, _matches(VERSION, "version")]
Extra = Annotated[str, _matches(EXTRA, "extra name")]
Commit = Annotated[str, _matches(HEX40, "git commit (40 hex digits)")]
Sha256 = Annotated[str, _matches(HEX64, "sha256 (64 hex digits)")]
ImageTemplate = Annotated[str, AfterValidator(_template)]
UbuntuVersion = Annotated[str, _matches(re.compile(r"[0-9]{2}\.[0-9]{2}"), "Ubuntu version (e.g. 24.04)")]
AbsPath = Annotated[str, _matches(re.compile(r"/[A-Za-z0-9._/-]*"), "absolute path")]


# What the wheels provider says to a driver older than its CUDA 13 (kitctl build, kitctl doctor, docs/images.md).
# Checked, not assumed: every nvidia-cuda-nvcc-cu12 wheel (12.0.76 ... 12.9.86) holds bin/ptxas, nvvm/lib64/libnvvm.so,
# libdevice and the crt headers, but no nvcc, cicc, cudafe++, fatbinary or nvlink; the 13.x nvidia-cuda-nvcc wheels
# hold them all.
WHEELS_NO_CUDA12 = ("NVIDIA's CUDA 12 PyPI wheels (nvidia-cuda-nvcc-cu12) carry no nvcc driver (only ptxas, libnvvm "
                    "and headers), so the wheels provider builds CUDA 13 only")
WHEELS_CUDA12_PATHS = (
    WHEELS_NO_CUDA12 + ". For a CUDA 12 driver: --provider nvidia --cuda {cuda} "
    "(NVIDIA's nvidia/cuda images; behind a firewall set mirrors.registry to a Docker Hub mirror), or a CUDA 12 "
    "toolkit on the host (NVIDIA's runfile or apt repo; Debian trixie's nvidia-cuda-toolkit is 12.4) with "
    "`kitctl build --runtime native`, or a driver >= 580 (docs/images.md, 'CUDA 12')")


# ---------------------------------------------------------------------------------------------- model
class LlmcPin(UserData):
    repo: Annotated[str, _matches(re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+"), "owner/name")]
    commit: Commit
    tarball_sha256: Sha256
    tarball_url: Annotated[str, _matches(re.compile(r"https://[A-Za-z0-9./_{}-]+"), "https URL template")]


class CudaImage(UserData):
    """One nvidia/cuda cuDNN tag pair the kit knows exists (devel + runtime)."""

    ubuntu: UbuntuVersion
    cudnn: Literal["cudnn", "cudnn8"]
    nccl_apt: Optional[Version] = None      # pin NCCL through the image's CUDA apt repo (else "as shipped")


class NvidiaProvider(UserData):
    cuda: CudaVersion
    devel_image: ImageTemplate
    runtime_image: ImageTemplate
    cuda_images: dict[CudaVersion, CudaImage]


class WheelsProvider(UserData):
    cuda: CudaVersion
    base_image: ImageRef
    toolkit_extras: list[Extra]
    wheels: dict[Package, Version]
    tools: dict[Package, Version] = Field(default_factory=dict)


class Providers(UserData):
    nvidia: NvidiaProvider
    wheels: WheelsProvider


class OpenMpi(UserData):
    apt_build: list[Package]
    apt_runtime: list[Package]
    dir: AbsPath


class CudnnPin(UserData):
    default: bool


class CudnnFrontend(UserData):
    version: Version


class DataImage(UserData):
    base_image: ImageRef


class PythonPins(UserData):
    version: Version
    lock: str
    uv: Version
    not_in_data_image: list[Package]


class DatasetPin(UserData):
    repo: Annotated[str, _matches(re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+"), "owner/name")]
    revision: Annotated[str, _matches(re.compile(r"[0-9a-f]{40}|main"), "40-hex commit (or main)")]


class ToolPins(UserData):
    hadolint: Version


class Pins(UserData):
    llmc: LlmcPin
    providers: Providers
    openmpi: OpenMpi
    cudnn: CudnnPin
    cudnn_frontend: CudnnFrontend
    data_image: DataImage
    python: PythonPins
    datasets: dict[str, DatasetPin]
    tools: ToolPins


# ----------------------------------------------------------------------------------------------- read
@functools.lru_cache(maxsize=1)
def load() -> Pins:
    """All pins, typed and validated (cached). A bad versions.yaml is a ConfigError naming the key."""
    return load_yaml(Pins, VERSIONS_FILE, "versions.yaml")


@functools.lru_cache(maxsize=1)
def _as_dict() -> dict[str, Any]:
    return load().model_dump()


def pins() -> dict[str, Any]:
    """The validated pins as a nested dict (the keys of versions.yaml). Prefer :func:`load` in new code."""
    return _as_dict()


def pins_sha256() -> str:
    """sha256 of versions.yaml itself, recorded in manifests so a run names the exact pin set."""
    return hashlib.sha256(VERSIONS_FILE.read_bytes()).hexdigest()


def llmc_commit() -> str:
    return load().llmc.commit


# ---------------------------------------------------------------------------------- nvidia/cuda images
def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def mm(v: str) -> tuple[int, int]:
    """``"12.8.1"`` -> ``(12, 8)``."""
    parts = _vkey(v) + (0,)
    return parts[0], parts[1]


def cuda_images() -> dict[str, CudaImage]:
    """CUDA version -> its nvidia/cuda cuDNN tags (the versions the kit knows an image of), oldest first."""
    table = load().providers.nvidia.cuda_images
    return {v: table[v] for v in sorted(table, key=_vkey)}


def newest_cuda_image(max_cuda: str, cap: Optional[str] = None) -> Optional[str]:
    """The newest version of :func:`cuda_images` whose major.minor is <= ``max_cuda`` (what a driver runs)
    and, when given, <= ``cap``; None when the driver is older than every known image."""
    fits = [v for v in cuda_images() if mm(v) <= mm(max_cuda) and (cap is None or _vkey(v) <= _vkey(cap))]
    return fits[-1] if fits else None


# ------------------------------------------------------------------------------ user values of pin kinds
def _check(pattern: re.Pattern[str], value: str, what: str, example: str) -> str:
    v = str(value)
    if not pattern.fullmatch(v):
        shown = v if len(v) <= 80 and v.isprintable() else repr(v[:80])
        raise ConfigError(f"{what} {shown!s} is not valid: only letters, digits and . _ - / : @ are allowed "
                          "in the shape of a Docker image reference",
                          f"write it like {example}")
    return v


def check_image_ref(value: str, what: str = "--base-image") -> str:
    """An image reference (``[registry[:port]/]name[:tag][@sha256:...]``), or a ConfigError (exit 2)."""
    return _check(IMAGE_REF, value, what, "debian:bookworm or registry.example.com:5000/nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04")


def check_image_repo(value: str, what: str = "image") -> str:
    """An image repository without a tag (kit.yaml ``image``), or a ConfigError."""
    return _check(IMAGE_REPO, value, what, "llmc-kit or registry.example.com/team/llmc-kit")


def check_registry(value: str, what: str = "mirrors.registry") -> str:
    """A registry host (optionally with a port and a path), or a ConfigError."""
    return _check(REGISTRY, value, what, "docker.m.daocloud.io or registry.example.com:5000/dockerhub")


def check_cuda_version(value: str, what: str = "--cuda") -> str:
    v = str(value).strip()
    if not CUDA_VERSION.fullmatch(v):
        raise ConfigError(f"{what} {v[:40]!r} is not a CUDA version", "write it as X.Y or X.Y.Z, e.g. 12.8.1")
    return v


# ------------------------------------------------------------------------- what each CUDA version builds
# The compute capabilities (sm_XY as XY) each CUDA version's nvcc compiles for, from NVIDIA's CUDA release notes
# and the nvcc docs: rows of (the first major.minor of the row, lowest, highest), each row holding until the next.
# CUDA 12.0-12.7: sm_50..sm_90; 12.8 adds sm_100, sm_101, sm_120; 12.9 adds sm_103, sm_121; 13.0 drops sm_50..sm_72
# (Maxwell, Pascal, Volta: the lowest is sm_75, Turing) and builds up to sm_121 (sm_101 is renamed sm_110).
# tests/images/test_arch_table.py checks every pinned CUDA (both providers) against it.
CUDA_ARCHS: tuple[tuple[tuple[int, int], int, int], ...] = (
    ((12, 0), 50, 90),
    ((12, 8), 50, 120),
    ((12, 9), 50, 121),
    ((13, 0), 75, 121),
)


def arch_range(cuda: str) -> Optional[tuple[int, int]]:
    """(lowest, highest) compute capability ``cuda`` (X.Y[.Z]) builds; None for a CUDA older than the table."""
    rows = [(lo, hi) for first, lo, hi in CUDA_ARCHS if mm(cuda) >= first]
    return rows[-1] if rows else None


def unbuildable(archs: list[int], cuda: str) -> list[int]:
    """The archs of ``archs`` that ``cuda`` cannot build (none when the CUDA is not in the table: not judged)."""
    r = arch_range(cuda)
    return [] if r is None else [a for a in archs if not r[0] <= a <= r[1]]


def pinned_cudas() -> list[tuple[str, str]]:
    """(provider, CUDA) of every CUDA the kit can build with: the nvidia images' versions and the wheels pin."""
    return [("nvidia", v) for v in cuda_images()] + [("wheels", load().providers.wheels.cuda)]


def arch_table() -> list[tuple[str, str, int, int]]:
    """(provider, CUDA, lowest, highest) for every pinned CUDA: what `kitctl build` can make for which GPUs."""
    out = []
    for prov, cuda in pinned_cudas():
        r = arch_range(cuda)
        if r is not None:
            out.append((prov, cuda, r[0], r[1]))
    return out


def builders(arch: int) -> list[tuple[str, str]]:
    """(provider, CUDA) of the pinned CUDAs that build ``arch``."""
    return [(p, c) for p, c, lo, hi in arch_table() if lo <= arch <= hi]


def check_buildable(archs: list[int], cuda: str, provider: str, what: str = "build") -> None:
    """Refuse (exit 2) a CUDA that cannot build every arch of ``archs``, naming a pinned CUDA that builds them."""
    bad = unbuildable(archs, cuda)
    if not bad:
        return
    lo, hi = arch_range(cuda) or (0, 0)
    every = [(p, c) for p, c, a, b in arch_table() if all(a <= x <= b for x in archs)]
    some = {x: builders(x) for x in bad}
    if every:
        pv = load().providers
        pinned = {"nvidia": pv.nvidia.cuda, "wheels": pv.wheels.cuda}
        prefer = [(provider, pinned.get(provider, "")), *((q, v) for q, v in pinned.items() if q != provider)]
        p, c = next((pc for pc in prefer if pc in every), None) or \
            ([pc for pc in every if pc[0] == provider] or every)[0]
        how = f"--provider {p} --cuda {c}" if p == "nvidia" else "--provider wheels"
        hint = f"build with CUDA {c} ({p} provider: {how}, or provider/cuda in kit.yaml), which builds sm_" + \
               ", sm_".join(map(str, archs))
        if provider == "native":
            hint = (f"install a CUDA toolkit on the host that builds them (CUDA {c}: see pins.CUDA_ARCHS) and point "
                    f"CUDA_HOME at it, or build the image instead: kitctl build {how}")
    else:
        names = "; ".join(f"sm_{x}: " + (", ".join(f"CUDA {c} ({p})" for p, c in some[x]) or "no pinned CUDA")
                          for x in bad)
        hint = f"no one pinned CUDA builds all of them ({names}): build separate images (--arch) for each group"
    who = "the host's toolkit" if provider == "native" else f"{provider} provider"
    raise ConfigError(f"CUDA {cuda} ({who}) cannot {what} sm_{', sm_'.join(map(str, bad))}: it builds "
                      f"sm_{lo}..sm_{hi} (nvcc would stop with 'Unsupported gpu architecture' after the download)",
                      hint)
