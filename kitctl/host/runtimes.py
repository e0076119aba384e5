"""Where plans run: DockerRuntime (python-on-whales) or NativeRuntime (subprocess on this host).

A plan describes a container as a ``ContainerSpec``; ``docker_run_argv`` renders the exact ``docker run``
line that ``--dry-run`` prints, and ``DockerRuntime.run`` executes the same spec through python-on-whales.

Also the two facts every area shares about containers:
* :func:`runtime_image_ref` / :func:`data_image_ref` -- the moving tags ``kitctl build`` sets
  (``<image>:latest``, ``<image>:data``) that train, data, smoke and export run by default;
* :func:`gpu_container_flags` -- what a GPU container needs for NCCL between its ranks (shared memory sized for the
  rank count, unlimited locked memory, a 64 MiB stack). ``ContainerSpec`` fills them in for any spec with GPUs
  that does not set them, ``kitctl doctor`` prints them and compose.yaml's train service reads them from the
  .env; there is no second copy.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from kitctl.core import proc
from kitctl.core.errors import ConfigError, KitError

# NVIDIA's and llm.c's guidance for NCCL in containers: enough /dev/shm (NCCL's shared-memory transport between
# ranks of one host; Docker's default is 64 MB), pinned memory without a limit, and a 64 MiB stack.
SHM_GB_PER_RANK = 1
GPU_ULIMITS = ("memlock=-1", "stack=67108864")


def gpu_container_flags(ranks: int = 1) -> dict[str, object]:
    """``ContainerSpec`` fields of a GPU container running ``ranks`` ranks:
    ``{"shm_size": "<ranks>g", "ipc": None, "ulimits": ["memlock=-1", "stack=67108864"]}``.

    Shared memory is sized for the rank count (1 GB each, at least 1 GB) instead of ``--ipc=host``, so the
    container does not share the host's IPC namespace."""
    return {"shm_size": f"{max(1, int(ranks)) * SHM_GB_PER_RANK}g", "ipc": None, "ulimits": list(GPU_ULIMITS)}


def gpu_container_argv(ranks: int = 1) -> list[str]:
    """The same flags as ``docker run`` words (what doctor and the docs print)."""
    f = gpu_container_flags(ranks)
    out = ["--shm-size", str(f["shm_size"])]
    for u in f["ulimits"]:  # type: ignore[attr-defined]
        out += ["--ulimit", u]
    return out


def runtime_image_ref(cfg) -> str:
    """The image every GPU command runs by default: ``<image>:latest`` (moved by ``kitctl build``)."""
    return f"{cfg.image}:latest"


def data_image_ref(cfg) -> str:
    """The image ``kitctl data`` (and compose's data/tensorboard services) run by default: ``<image>:data``."""
    return f"{cfg.image}:data"


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False

    def __post_init__(self) -> None:
        # docker -v SRC:DST:MODE, pyxis --container-mounts=SRC:DST,... and apptainer --bind SRC:DST split on ':'
        # and ','; neither has an escape, so such a path would mount something else (or fail): refused up front
        for c in MOUNT_SEPARATORS:
            if c in str(self.source):
                raise ConfigError(f"{self.source} has a {c!r}: container mounts (docker -v, pyxis --container-mounts, "
                                  f"apptainer --bind) split their paths at {' and '.join(map(repr, MOUNT_SEPARATORS))}, "
                                  "so the container would not see this folder",
                                  "move the data root (kit.yaml data_root) or the folder to a path without ':' or ',' "
                                  "(a symlink does not help: the mount names the path), or use --runtime native")

    def volume(self) -> tuple[str, str, str]:
        return (str(self.source), self.target, "ro" if self.read_only else "rw")


MOUNT_SEPARATORS = (":", ",")


@dataclass
class ContainerSpec:
    image: str
    argv: list[str]
    mounts: list[Mount] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: Optional[str] = None
    user: Optional[str] = None                 # "uid:gid"
    gpus: Union[None, str, list[int]] = None   # None | "all" | [0, 2]
    shm_size: Optional[str] = None
    ipc: Optional[str] = None
    ulimits: list[str] = field(default_factory=list)   # ["memlock=-1", "stack=67108864"]
    name: Optional[str] = None
    publish: list[tuple[int, int]] = field(default_factory=list)
    remove: bool = True
    ranks: Optional[int] = None                # with gpus: ranks sharing /dev/shm (default: one per GPU)

    def __post_init__(self) -> None:
        """A spec with GPUs gets :func:`gpu_container_flags` for whatever of them it leaves unset."""
        if self.gpus is None:
            return
        n = self.ranks or (len(self.gpus) if isinstance(self.gpus, list) else 1)
        flags = gpu_container_flags(n)
        if self.shm_size is None and self.ipc is None:
            self.shm_size = flags["shm_size"]  # type: ignore[assignment]
        if not self.ulimits:
            self.ulimits = list(flags["ulimits"])  # type: ignore[call-overload]


def host_user() -> str:
    return f"{os.getuid()}:{os.getgid()}"


def _gpus_flag(gpus: Union[str, list[int]]) -> str:
    return "all" if gpus == "all" else '"device=' + ",".join(str(g) for g in gpus) + '"'


def docker_run_argv(spec: ContainerSpec) -> list[str]:
    """The exact ``docker run`` command line of a spec (what --dry-run prints)."""
    a = ["docker", "run"]
    if spec.remove:
        a.append("--rm")
    if spec.name:
        a += ["--name", spec.name]
    if spec.gpus is not None:
        a += ["--gpus", _gpus_flag(spec.gpus)]
    if spec.ipc:
        a += [f"--ipc={spec.ipc}"]
    if spec.shm_size:
        a += ["--shm-size", spec.shm_size]
    for u in spec.ulimits:
        a += ["--ulimit", u]
    if spec.user:
        a += ["--user", spec.user]
    for m in spec.mounts:
        a += ["-v", ":".join(m.volume())]
    for k, v in sorted(spec.env.items()):
        a += ["-e", f"{k}={v}"]
    for host, cont in spec.publish:
        a += ["-p", f"{host}:{cont}"]
    if spec.workdir:
        a += ["-w", spec.workdir]
    return [*a, spec.image, *spec.argv]


def shell_line(argv: Iterable[str]) -> str:
    return " ".join(shlex.quote(str(x)) for x in argv)


class DockerRuntime:
    """Runs a ContainerSpec through python-on-whales, streaming its output line by line."""

    def __init__(self, client=None):
        if client is None:
            from python_on_whales import docker as client     # ~0.3 s: only a docker run pays it
        self.docker = client

    def run(self, spec: ContainerSpec, on_line: Optional[Callable[[str], None]] = None) -> int:
        from python_on_whales.exceptions import DockerException

        kwargs = dict(
            image=spec.image, command=spec.argv, remove=spec.remove, name=spec.name,
            volumes=[m.volume() for m in spec.mounts], envs=spec.env, workdir=spec.workdir,
            user=spec.user, shm_size=spec.shm_size, ipc=spec.ipc, ulimit=spec.ulimits or [],
            publish=spec.publish or [], stream=True,
        )
        if spec.gpus is not None:
            kwargs["gpus"] = _gpus_flag(spec.gpus).strip('"')
        try:
            for _source, chunk in self.docker.run(**kwargs):
                for line in chunk.decode(errors="replace").splitlines():
                    (on_line or print)(line)
        except DockerException as e:
            if e.return_code is not None and "Unable to find image" not in (e.stderr or ""):
                return e.return_code
            raise KitError(f"docker run of {spec.image} failed: {(e.stderr or str(e)).strip()[-800:]}",
                           "build the image first with `kitctl build`, or check `kitctl doctor`") from None
        return 0


class NativeRuntime:
    """Runs an argv on this host through :mod:`kitctl.core.proc`, streaming stdout+stderr line by line
    (its own process group: Ctrl-C stops everything it started, then re-raises KeyboardInterrupt)."""

    def run(self, argv: list[str], env: Optional[dict[str, str]] = None, cwd: Optional[Path] = None,
            on_line: Optional[Callable[[str], None]] = None) -> int:
        res = proc.stream(argv, on_line or print, env=env, cwd=cwd)
        if res.interrupted:
            raise KeyboardInterrupt
        return res.returncode
