"""What to build: :class:`BuildRequest` from kit.yaml + CLI flags, every value checked at this edge.

* ``BuildRequest.from_config(cfg, ...)`` -- provider, CUDA, archs, target, base image, sources, mirrors; bad values
  are ConfigErrors (exit 2) before anything is rendered;
* :func:`resolve_cuda` -- the CUDA version to build for a provider (and, given the driver of the target GPUs, the
  newest known one it runs; the wheels provider refuses a driver too old for its CUDA 13 with the CUDA 12 paths);
* :func:`base_images` -- the FROM image of each stage (registry mirror applied).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from kitctl.core import pins
from kitctl.core.config import KitConfig
from kitctl.core.validate import KNOWN_ARCHS
from kitctl.core.errors import ConfigError
from kitctl.host.gpus import GPU, distinct_archs
from kitctl.images import inputs
from kitctl.images.lock import ImagesLock

TARGETS = ("toolchain", "build", "runtime", "data")
PROVIDERS = ("nvidia", "wheels")

CUDA12_PATHS = pins.WHEELS_CUDA12_PATHS


@dataclass
class BuildRequest:
    """Everything a build depends on, checked. Build with ``from_config``."""

    provider: str = "nvidia"
    cuda: str = ""
    archs: list[int] = field(default_factory=lambda: [75, 86])
    target: str = "runtime"
    base_image: Optional[str] = None
    registry: str = "docker.io"
    image: str = "llmc-kit"
    cudnn: bool = True
    llmc_src: Optional[str] = None
    ca_cert: Optional[Path] = None
    apt_mirror: Optional[str] = None
    pip_index: Optional[str] = None
    apt_snapshot: Optional[str] = None                 # a snapshot.debian.org / snapshot.ubuntu.com timestamp
    lock: Optional[ImagesLock] = None                  # docker/images.lock, when the build uses one
    build_dir: Path = Path(".kit/build")
    notes: list[str] = field(default_factory=list)     # choices made for the user (e.g. CUDA for the driver)

    @classmethod
    def from_config(cls, cfg: KitConfig, *, provider: Optional[str] = None, cuda: Optional[str] = None,
                    archs: Optional[Sequence[int]] = None, target: str = "runtime", base_image: Optional[str] = None,
                    llmc_src: Optional[str] = None, ca_cert: Optional[Path] = None, cudnn: Optional[bool] = None,
                    build_dir: Optional[Path] = None, driver_cuda: Optional[str] = None) -> BuildRequest:
        """``driver_cuda``: the newest CUDA the target GPUs' driver runs (:func:`kitctl.host.gpus.driver_cuda`),
        when known: picks the CUDA for an unset ``cuda`` and refuses a provider the driver cannot run."""
        prov = provider or cfg.provider
        if prov not in PROVIDERS:
            raise ConfigError(f"--provider {prov!r}: allowed are {', '.join(PROVIDERS)}",
                              "nvidia: NVIDIA's nvidia/cuda images; wheels: any Debian/Ubuntu base + CUDA 13 PyPI wheels")
        if target not in TARGETS:
            raise ConfigError(f"--target {target!r}: allowed are {', '.join(TARGETS)}",
                              "runtime (train), data (kitctl data), toolchain/build (compilers, for debugging)")
        if archs is None:
            if cfg.arch == "auto":
                raise ConfigError("arch is 'auto' but no GPU list was resolved",
                                  "call resolve_archs() first, or give --arch 75,86")
            archs = list(cfg.arch)
        archs = _checked_archs(archs)
        base = base_image or cfg.base_image
        if base is not None:
            base = pins.check_image_ref(base, "--base-image" if base_image else "base_image")
        notes: list[str] = []
        want_cuda = resolve_cuda(prov, cuda or cfg.cuda, base, driver_cuda, notes)
        if target != "data":          # the data image compiles nothing for a GPU
            pins.check_buildable(archs, want_cuda, prov)
        return cls(
            provider=prov, cuda=want_cuda, archs=archs, target=target, base_image=base,
            registry=pins.check_registry(cfg.mirrors.registry), image=pins.check_image_repo(cfg.image),
            cudnn=pins.load().cudnn.default if cudnn is None else cudnn,
            llmc_src=llmc_src or cfg.mirrors.llmc_src,
            ca_cert=inputs.check_ca_bundle(ca_cert or cfg.ca_cert, "--ca-cert" if ca_cert else "ca_cert"),
            apt_mirror=inputs.check_apt_mirror(cfg.mirrors.apt), pip_index=inputs.check_pip_index(cfg.mirrors.pip_index),
            apt_snapshot=inputs.check_apt_snapshot(cfg.mirrors.apt_snapshot, cfg.mirrors.apt),
            build_dir=build_dir or Path(".kit/build"), notes=notes,
        )

    @property
    def cuda_mm(self) -> str:
        return ".".join(self.cuda.split(".")[:2])

    @property
    def cuda_major(self) -> str:
        return self.cuda.split(".")[0]

    @property
    def arch_csv(self) -> str:
        return ",".join(str(a) for a in self.archs)

    @property
    def sm_tag(self) -> str:
        return "-".join(f"sm{a}" for a in self.archs)


def _checked_archs(archs: Sequence[object]) -> list[int]:
    if not archs:
        raise ConfigError("the arch list is empty", "give e.g. --arch 75,86")
    ints = [a for a in archs if isinstance(a, int) and not isinstance(a, bool)]
    if len(ints) != len(archs):
        return inputs.parse_archs(",".join(str(a) for a in archs))
    bad = sorted({a for a in ints if a not in KNOWN_ARCHS})
    if bad:
        raise ConfigError(f"unknown compute capability {bad}; allowed: {list(KNOWN_ARCHS)}", "e.g. --arch 75,86")
    return sorted(set(ints))


def resolve_cuda(provider: str, cuda: Optional[str], base_image: Optional[str] = None,
                 driver_cuda: Optional[str] = None, notes: Optional[list[str]] = None) -> str:
    """The full CUDA version to build, or a ConfigError (exit 2).

    nvidia: a version of the ``cuda_images`` table ("12.6" picks "12.6.3"); any other X.Y[.Z] only together with
    ``--base-image`` naming the devel image; unset: the pin, or the newest known image ``driver_cuda`` runs when
    the driver is older than the pin. wheels: only its pinned CUDA 13.0, and only for a driver that runs it.
    """
    p = pins.load().providers
    if provider == "wheels":
        pin = p.wheels.cuda
        want = str(cuda or pin).strip()
        if not pins.CUDA_VERSION.fullmatch(want) or pins.mm(want) != pins.mm(pin):
            want = want if want.isprintable() and len(want) <= 40 else repr(want[:40])
            hint = (CUDA12_PATHS.format(cuda=_newest(want) or "12.8.1") if want.startswith("12.")
                    else f"use cuda {pin} (or leave cuda unset), or --provider nvidia")
            raise ConfigError(f"cuda {want!r}: the wheels provider is pinned to CUDA {pin} only", hint)
        if driver_cuda is not None and pins.mm(driver_cuda) < pins.mm(pin):
            fit = pins.newest_cuda_image(driver_cuda)
            raise ConfigError(
                f"the GPUs' driver runs CUDA <= {driver_cuda}; the wheels provider builds CUDA {pin} "
                f"(driver >= 580 needed)",
                CUDA12_PATHS.format(cuda=fit or "12.8.1")
                + "; building for another machine: pass --inventory FILE with that machine's nvidia-smi CSV")
        return want
    known = pins.cuda_images()
    if cuda is None and driver_cuda is not None and pins.mm(driver_cuda) < pins.mm(p.nvidia.cuda):
        fit = pins.newest_cuda_image(driver_cuda, cap=p.nvidia.cuda)
        if fit is None:
            raise ConfigError(f"the GPUs' driver runs CUDA <= {driver_cuda}, older than every nvidia/cuda image "
                              f"the kit knows ({', '.join(known)})", "update the NVIDIA driver (>= 535 for CUDA 12.2)")
        if notes is not None:
            notes.append(f"CUDA {fit}: the newest nvidia/cuda image the GPUs' driver runs (CUDA <= {driver_cuda}; "
                         f"the pin {p.nvidia.cuda} needs a newer driver); set cuda: in kit.yaml to choose")
        return fit
    want = str(cuda or p.nvidia.cuda).strip()
    valid = bool(pins.CUDA_VERSION.fullmatch(want))
    if not valid:
        want = want if want.isprintable() and len(want) <= 40 else repr(want[:40])
    if valid and driver_cuda is not None and notes is not None and pins.mm(want) > pins.mm(driver_cuda):
        notes.append(f"CUDA {want} needs a newer driver than the GPUs have (it runs CUDA <= {driver_cuda}): the "
                     f"binaries will not start there; `kitctl doctor` names a CUDA it runs")
    if want in known:
        return want
    same_mm = [v for v in known if pins.mm(v) == pins.mm(want)] if valid and want.count(".") == 1 else []
    if len(same_mm) == 1:
        return same_mm[0]
    if base_image and valid:
        return want    # the user names the image; its tag cannot be checked from here
    raise ConfigError(f"cuda {want!r}: no nvidia/cuda cuDNN image of that version is known; known: {', '.join(known)}",
                      "pick one of these (cuda in kit.yaml or --cuda), or name the image yourself with "
                      "--base-image <registry>/nvidia/cuda:<ver>-cudnn-devel-ubuntu<ver> (its -runtime- twin "
                      "is used for the runtime stage)")


def _newest(want: str) -> Optional[str]:
    try:
        return pins.newest_cuda_image(want)
    except ValueError:
        return None


def resolve_archs(spec: object, gpus: list[GPU]) -> list[int]:
    """``auto`` -> every distinct compute capability of ``gpus``; a list is checked and kept."""
    if spec == "auto":
        archs = distinct_archs(gpus)
        if not archs:
            raise ConfigError("--arch auto: nvidia-smi reports no GPU on this machine",
                              "give the list yourself, e.g. --arch 75,86 (2080 Ti + 3090)")
        return _checked_archs(archs)
    return _checked_archs(list(spec))  # type: ignore[call-overload]


DOCKER_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")


def with_registry(ref: str, registry: str) -> str:
    """A Docker Hub reference as ``registry`` (a Docker Hub mirror) serves it; a ref that names another registry
    stays unchanged. Docker Hub's official images live under ``library/``, so ``debian:bookworm`` ->
    ``<mirror>/library/debian:bookworm`` (the form registry mirrors and pull-through caches serve). The first
    path component names a registry only when a ``/`` follows it: the ``:`` of a tag is not a port."""
    if registry in ("", *DOCKER_HUB_NAMES):
        return ref
    first, slash, rest = ref.partition("/")
    if slash and first in DOCKER_HUB_NAMES:
        ref = rest                                     # docker.io/nvidia/cuda:... -> nvidia/cuda:...
    elif slash and ("." in first or ":" in first or first == "localhost"):
        return ref                                     # another registry: not Docker Hub's to mirror
    if "/" not in ref:
        ref = f"library/{ref}"                         # an official image: debian:bookworm
    return f"{registry.rstrip('/')}/{ref}"


def base_images(req: BuildRequest) -> dict[str, str]:
    """The FROM image of each stage, each a checked image reference."""
    p = pins.load()
    mine = req.base_image     # --base-image is used as written (a local image, or a ref naming its registry)
    data = mine or with_registry(p.data_image.base_image, req.registry)
    if req.provider == "wheels":
        base = mine or with_registry(p.providers.wheels.base_image, req.registry)
        out = {"toolchain": base, "runtime": base, "data": data}
    else:
        nv = p.providers.nvidia
        known = pins.cuda_images().get(req.cuda)
        if known is None:   # a CUDA outside the table: --base-image names its devel image (resolve_cuda)
            devel = mine or ""
            out = {"toolchain": devel, "runtime": devel.replace("-devel-", "-runtime-"),
                   "data": with_registry(p.data_image.base_image, req.registry)}
        else:
            tags = dict(cuda=req.cuda, cudnn=known.cudnn, ubuntu=known.ubuntu)
            out = {"toolchain": with_registry(nv.devel_image.format(**tags), req.registry),
                   "runtime": with_registry(nv.runtime_image.format(**tags), req.registry), "data": data}
    return {stage: pins.check_image_ref(ref, f"the {stage} base image") for stage, ref in out.items()}
