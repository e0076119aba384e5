"""Disks by filesystem: every place a run writes (the data root, the HF cache, Docker's storage, a bundle's unpack
folder), grouped by the filesystem that holds it, and judged as one sum against that filesystem's free space.

Judging each place alone against the same free space counts one disk twice: on the first user's box the data root
(56 GB of need) and Docker's storage (14 GB) were both "ok" on 56.5 GB free. Here each place is located once
(:func:`locate`: ``st_dev`` of the folder, or of its nearest existing parent, and the mount point holding it) and
:func:`group` (pure) sums the needs of the places that share a filesystem. :func:`ways_out` is the one text that
says how to spread the purposes over disks.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from kitctl.core.files import existing_parent
from kitctl.host import docker_disk

DATA_ROOT = "data root"
HF_CACHE = "HF cache"
DOCKER = "Docker's storage"
BUNDLE = "bundle unpack folder"


@dataclass(frozen=True)
class Place:
    """Where one purpose writes, and the filesystem that holds it (``fs``: its st_dev; "" when not on this host)."""

    purpose: str
    path: str
    fs: str = ""
    mount: str = ""
    free_bytes: Optional[int] = None


@dataclass
class Filesystem:
    """One filesystem, every purpose that writes to it, and the sum they need."""

    mount: str
    free_bytes: Optional[int]
    need_bytes: int = 0
    needs: dict[str, int] = field(default_factory=dict)    # purpose -> bytes
    paths: dict[str, str] = field(default_factory=dict)    # purpose -> folder

    @property
    def purposes(self) -> list[str]:
        return list(self.needs)

    @property
    def ok(self) -> Optional[bool]:
        return None if self.free_bytes is None else self.free_bytes >= self.need_bytes

    @property
    def shared(self) -> bool:
        return len(self.needs) > 1

    def parts(self) -> str:
        """``data root 56.0 GB + Docker's storage 14.0 GB``."""
        return " + ".join(f"{p} {gb(n)}" for p, n in self.needs.items())

    def as_json(self) -> dict:
        return {"mount": self.mount, "free_bytes": self.free_bytes, "need_bytes": int(self.need_bytes),
                "purposes": self.purposes, "needs": {p: int(n) for p, n in self.needs.items()},
                "paths": dict(self.paths), "ok": self.ok}


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def locate(purpose: str, path: Path) -> Place:
    """Where ``path`` (or the nearest existing folder above it) is: its filesystem and that filesystem's free
    space. Read-only; a folder that cannot be read is a place with no filesystem (never judged as shared)."""
    p = Path(path).absolute()
    try:
        probe = existing_parent(p)
        dev = os.stat(probe).st_dev
        free: Optional[int] = shutil.disk_usage(probe).free
    except OSError:
        return Place(purpose, str(p))
    return Place(purpose, str(p), f"dev:{dev}", docker_disk.mount_of(probe)[2] or str(probe), free)


def docker_place(st: docker_disk.DockerStorage) -> Optional[Place]:
    """Docker's storage as a place, when the engine's root dir is on this host (not a remote DOCKER_HOST)."""
    if st.root_dir is None or st.free_bytes is None:
        return None
    return locate(DOCKER, st.root_dir)


def group(places: Sequence[Place], needs: Mapping[str, int]) -> list[Filesystem]:
    """The places that share a filesystem, with the sum of their ``needs`` (pure). A purpose with no place here,
    or a place not on this host, is left out; a place with no need is listed with 0 (it shares the disk)."""
    out: dict[str, Filesystem] = {}
    for pl in places:
        if not pl.fs or pl.purpose not in needs:
            continue
        fs = out.setdefault(pl.fs, Filesystem(pl.mount, pl.free_bytes))
        n = max(0, int(needs[pl.purpose]))
        fs.needs[pl.purpose] = fs.needs.get(pl.purpose, 0) + n
        fs.paths[pl.purpose] = pl.path
        fs.need_bytes += n
    return list(out.values())


def ways_out(purposes: Sequence[str], provider: str = "nvidia") -> str:
    """How to spread these purposes over other disks (or need less), one clause per purpose."""
    ways = []
    if DATA_ROOT in purposes:
        ways.append("point the data root at a bigger disk (`kitctl init --data-root /big/disk`)")
    if HF_CACHE in purposes:
        ways.append("put the HF cache on another disk (hf_home: /other/disk/hf in kit.yaml), or --stream "
                    "(no HF cache at all)")
    if DOCKER in purposes:
        ways.append(docker_disk.move_hint())
        if provider != "wheels":
            ways.append("or the smaller wheels provider (provider: wheels in kit.yaml, or --provider wheels)")
    if BUNDLE in purposes:
        ways.append("unpack the bundle on another disk (a data root there)")
    return "; ".join(ways)


def verdict(fs: Filesystem, provider: str = "nvidia") -> tuple[str, str, str]:
    """(status, detail, meaning) of one filesystem against the sum it must hold (pure)."""
    where = f"the filesystem at {fs.mount}"
    holds = " and ".join(fs.purposes) if len(fs.purposes) <= 2 else \
        ", ".join(fs.purposes[:-1]) + " and " + fs.purposes[-1]
    if fs.free_bytes is None:
        return "info", f"{where} holds {holds}: free space unknown; they need {gb(fs.need_bytes)}", ""
    detail = (f"{where} holds {holds}: {fs.parts()} = {gb(fs.need_bytes)} needed, {gb(fs.free_bytes)} free"
              if fs.shared else f"{where} holds the {holds}: {gb(fs.need_bytes)} needed, {gb(fs.free_bytes)} free")
    if fs.ok:
        return "ok", detail, ""
    one = " (one disk: their sum counts, not each alone)" if fs.shared else ""
    return "fail", detail + one, "too small for this plan: " + ways_out(fs.purposes, provider)
