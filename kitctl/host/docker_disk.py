"""Docker's own storage as a disk of the plan: where the engine keeps images and build cache, and how full it is.

Images and BuildKit's cache do not land on the data root: they land in the engine's root dir (``docker info``'s
``DockerRootDir``, /var/lib/docker by default), which on the first user's box is the small system disk. This module
asks the engine (python-on-whales) and statvfs; :func:`move_hint` is the one text that says how to put that
storage on another disk. Read-only; every failure is a fact (``error``), never an exception.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

DAEMON_JSON = "/etc/docker/daemon.json"


@dataclass(frozen=True)
class DockerStorage:
    root_dir: Optional[Path] = None          # DockerRootDir as the engine reports it
    filesystem: str = ""                     # "<device> (<fstype>) mounted at <mount point>", when on this host
    free_bytes: Optional[int] = None         # free space there (None: not on this host, or not readable)
    build_cache_bytes: Optional[int] = None  # BuildKit's cache (`docker system df`: Build Cache)
    images_bytes: Optional[int] = None       # images (`docker system df`: Images)
    error: str = ""


def mount_of(path: Path, mounts_file: str = "/proc/self/mounts") -> tuple[str, str, str]:
    """(device, fstype, mount point) of the filesystem holding ``path``: the longest mount point that is a prefix."""
    best = ("", "", "")
    try:
        lines = Path(mounts_file).read_text().splitlines()
    except OSError:
        return best
    p = str(Path(path).absolute())
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (p == mnt or p.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[2]):
            best = (parts[0], parts[2], mnt)
    return best


def query() -> DockerStorage:
    """Ask the engine where its storage is and how big its caches are; statvfs that folder when it is here."""
    try:
        from python_on_whales import docker
        from python_on_whales.exceptions import DockerException
    except ImportError as e:     # pragma: no cover - a dependency of the kit
        return DockerStorage(error=str(e))
    if shutil.which("docker") is None:
        return DockerStorage(error="no docker CLI on PATH")
    try:
        info = docker.info()
    except DockerException as e:
        return DockerStorage(error=(str(e).strip().splitlines() or ["the engine does not answer"])[-1][:300])
    root = Path(info.docker_root_dir) if info.docker_root_dir else None
    free = None
    fs = ""
    remote = os.environ.get("DOCKER_HOST", "").startswith(("tcp://", "ssh://"))
    if root is not None and not remote:
        try:
            free = shutil.disk_usage(root).free
        except OSError:
            free = None
        dev, fstype, mnt = mount_of(root)
        fs = f"{dev} ({fstype}) mounted at {mnt}" if mnt else ""
    cache = images = None
    try:
        df = docker.system.disk_free()
        cache = int(df.build_cache.size) if df.build_cache.size is not None else None
        images = int(df.images.size) if df.images.size is not None else None
    except (DockerException, ValueError, KeyError, AttributeError, TypeError):
        pass
    return DockerStorage(root, fs, free, cache, images)


def move_hint(target: str = "/mnt/big/docker") -> str:
    """How to put Docker's storage on another disk (the engine's ``data-root``), as exact lines."""
    return (f"move Docker's storage to the big disk: put {{\"data-root\": \"{target}\"}} into {DAEMON_JSON} "
            "(merge it with what is there), then `sudo systemctl restart docker` (existing images stay in the old "
            "folder: copy them with `sudo rsync -aP /var/lib/docker/ " + target + "/` before the restart, or "
            "rebuild)")


def prune_hint() -> str:
    return ("`docker buildx prune` frees BuildKit's cache (the next build downloads and compiles again); "
            "`docker buildx prune --keep-storage 10gb` keeps the newest 10 GB")


def build_report(st: DockerStorage) -> str:
    """What ``kitctl build`` says after a build: the build cache it left in Docker's storage, and how to prune it."""
    if st.build_cache_bytes is None:
        return f"Docker's build cache: unknown ({st.error or 'docker system df did not say'}); {prune_hint()}"
    where = f" in {st.root_dir}" if st.root_dir else ""
    free = f" ({st.free_bytes / 1e9:.1f} GB free there)" if st.free_bytes is not None else ""
    return (f"Docker's build cache{where}: {st.build_cache_bytes / 1e9:.2f} GB{free}; it speeds up the next build. "
            + prune_hint()[0].upper() + prune_hint()[1:])
