"""compose.yaml (top level of the kit): the env file ``kitctl build`` writes for it, and running its services.

compose.yaml is read the same way by plain ``docker compose`` and by :class:`ComposeRuntime`. Its variables come from
an env file that ``kitctl build`` writes from kit.yaml, at :func:`env_file_path` (``<data_root>/compose.env``:
user-owned, never next to compose.yaml, which in a wheel install sits inside site-packages). Every ``docker compose``
line the kit runs or prints names it explicitly (``-f``, ``--env-file``, ``--project-directory``)::

    docker compose -f <kit>/compose.yaml --env-file <data_root>/compose.env --project-directory <data_root> run --rm data ...
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Optional

from kitctl.core import resources
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import write_atomic
from kitctl.host.runtimes import data_image_ref, gpu_container_flags, runtime_image_ref

COMPOSE_FILE = resources.share("compose.yaml")
_PLAIN = re.compile(r"[A-Za-z0-9_./:@+,=-]*")


def env_file_path(cfg: KitConfig) -> Path:
    """Where ``kitctl build`` writes compose's env file: ``<data_root>/compose.env``."""
    return cfg.layout.compose_env


def env_values(cfg: KitConfig, gpus: int = 0) -> dict[str, str]:
    """What compose.yaml needs from kit.yaml. ``gpus``: how many the train service gets (``count: all``) on this
    box, which sizes its shared memory exactly as :func:`gpu_container_flags` does for ``kitctl train``."""
    vals = {
        "KIT_UID": str(os.getuid()), "KIT_GID": str(os.getgid()), "KIT_DATA_ROOT": str(cfg.data_root),
        "LLMC_IMAGE": runtime_image_ref(cfg), "LLMC_DATA_IMAGE": data_image_ref(cfg),
    }
    if gpus > 0:
        vals["LLMC_SHM_SIZE"] = str(gpu_container_flags(gpus)["shm_size"])
    if cfg.hf_home is not None:   # else compose derives <KIT_DATA_ROOT>/hf, so a later KIT_DATA_ROOT moves it too
        vals["KIT_HF_HOME"] = str(cfg.hf_home)
    if cfg.mirrors.hf_endpoint:
        vals["HF_ENDPOINT"] = cfg.mirrors.hf_endpoint
    return vals


def _env_line(key: str, value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or "'" in value:
        raise ConfigError(f"{key}: {value[:60]!r} cannot go into compose's env file (a newline, control character "
                          "or single quote)", "use a path / URL without them")
    return f"{key}={value}" if _PLAIN.fullmatch(value) else f"{key}='{value}'"   # single quotes: no $ expansion


def write_env(cfg: KitConfig, path: Optional[Path] = None, gpus: int = 0) -> Path:
    """Write compose's env file atomically (default :func:`env_file_path`); returns its path."""
    path = Path(path) if path is not None else env_file_path(cfg)
    lines = ["# written by kitctl from kit.yaml for docker compose (compose.yaml); `kitctl build` refreshes it.",
             f"# docker compose -f {COMPOSE_FILE} --env-file {path} --project-directory {path.parent} ..."]
    lines += [_env_line(k, v) for k, v in env_values(cfg, gpus).items()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, "\n".join(lines) + "\n")
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}",
                          "data_root must be a folder you can write to (kit.yaml data_root)") from None
    return path


def compose_base_argv(env_file: Path, compose_file: Path = COMPOSE_FILE, project: Optional[str] = None) -> list[str]:
    """``docker compose -f FILE --env-file ENV --project-directory DIR [-p NAME]``: every path explicit."""
    a = ["docker", "compose", "-f", str(compose_file), "--env-file", str(env_file),
         "--project-directory", str(Path(env_file).absolute().parent)]
    if project:
        a += ["-p", project]
    return a


class ComposeRuntime:
    """Drives compose.yaml (the same file plain ``docker compose`` users run) through python-on-whales, with the
    env file of :func:`write_env` and its folder as the project directory."""

    def __init__(self, env_file: Path, compose_file: Path = COMPOSE_FILE, project: Optional[str] = None):
        from python_on_whales import DockerClient

        self.env_file, self.compose_file, self.project = env_file, compose_file, project
        self.client = DockerClient(compose_files=[compose_file], compose_env_files=[env_file],
                                   compose_project_name=project,
                                   compose_project_directory=Path(env_file).absolute().parent)

    def run(self, service: str, argv: list[str], on_line: Optional[Callable[[str], None]] = None) -> int:
        """``docker compose run --rm -T SERVICE ARGV...``, output streamed line by line; returns the exit code."""
        from python_on_whales.exceptions import DockerException

        try:
            out: Any = self.client.compose.run(service, argv, remove=True, tty=False, stream=True)
            for _source, chunk in out:
                for line in chunk.decode(errors="replace").splitlines():
                    (on_line or print)(line)
        except DockerException as e:
            if e.return_code is not None and e.return_code != 125:
                return e.return_code
            raise KitError(f"docker compose run {service} failed: {(e.stderr or str(e)).strip()[-800:]}",
                           f"build the images with `kitctl build`; check {self.env_file} and "
                           "`docker compose ... config`") from None
        return 0
