"""Where plans run: DockerRuntime (python-on-whales) or NativeRuntime (subprocess on this host).

A plan describes a container as a ``ContainerSpec``; ``docker_run_argv`` renders the exact ``docker run``
line that ``--dry-run`` prints, and ``DockerRuntime.run`` executes the same spec through python-on-whales.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from kitctl.core.errors import KitError
from kitctl.core import resources
from kitctl.core.config import KitConfig


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False

    def volume(self) -> tuple[str, str, str]:
        return (str(self.source), self.target, "ro" if self.read_only else "rw")


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
            from python_on_whales import docker as client
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
    """Runs an argv on this host with subprocess, streaming stdout+stderr line by line."""

    def run(self, argv: list[str], env: Optional[dict[str, str]] = None, cwd: Optional[Path] = None,
            on_line: Optional[Callable[[str], None]] = None) -> int:
        full_env = {**os.environ, **(env or {})}
        try:
            proc = subprocess.Popen(argv, env=full_env, cwd=cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1, errors="replace")
        except FileNotFoundError:
            raise KitError(f"cannot run {argv[0]}: not found", "install it or put it on PATH") from None
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                (on_line or print)(line.rstrip("\n"))
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise


COMPOSE_FILE = resources.share("compose.yaml")


def compose_run_argv(service: str, argv: list[str], env_file: Path, compose_file: Path = COMPOSE_FILE,
                     project: Optional[str] = None) -> list[str]:
    """The exact ``docker compose run`` line for one service of compose.yaml (what --dry-run prints)."""
    a = ["docker", "compose", "-f", str(compose_file), "--env-file", str(env_file)]
    if project:
        a += ["-p", project]
    return [*a, "run", "--rm", "-T", service, *argv]


class ComposeRuntime:
    """Drives compose.yaml (the same file plain ``docker compose`` users run) through python-on-whales.

    ``env_file`` is the ``.env`` that ``kitctl.images.render.write_env`` writes from kit.yaml.
    """

    def __init__(self, env_file: Path, compose_file: Path = COMPOSE_FILE, project: Optional[str] = None):
        from python_on_whales import DockerClient

        self.env_file, self.compose_file, self.project = env_file, compose_file, project
        self.client = DockerClient(compose_files=[compose_file], compose_env_files=[env_file],
                                   compose_project_name=project)

    def run(self, service: str, argv: list[str], on_line: Optional[Callable[[str], None]] = None) -> int:
        """``docker compose run --rm -T SERVICE ARGV...``, output streamed line by line; returns the exit code."""
        from python_on_whales.exceptions import DockerException

        try:
            out = self.client.compose.run(service, argv, remove=True, tty=False, stream=True)
            for _source, chunk in out:
                for line in chunk.decode(errors="replace").splitlines():
                    (on_line or print)(line)
        except DockerException as e:
            if e.return_code is not None and e.return_code != 125:
                return e.return_code
            raise KitError(f"docker compose run {service} failed: {(e.stderr or str(e)).strip()[-800:]}",
                           "build the images with `kitctl build`; check .env and `docker compose config`") from None
        return 0


def data_image_ref(cfg: KitConfig) -> str:
    """The image ``kitctl data`` runs in with the docker runtime: ``<image>:data`` (``kitctl build --target data``
    makes it). Here, below images and data, so both use one definition."""
    return f"{cfg.image}:data"


def image_present(ref: str, client=None) -> Optional[bool]:
    """True/False: whether the local Docker engine has image ``ref``; None when Docker cannot be asked (no CLI,
    no engine running)."""
    try:
        if client is None:
            from python_on_whales import docker as client
        return bool(client.image.exists(ref))
    except Exception:   # python-on-whales: ClientNotFoundError, DockerException (engine down), ...
        return None
