"""Get llm.c's source at the pinned commit into a build context: a checkout, a tarball, or a tarball URL.

A tarball (given or downloaded) must match the sha256 pinned in ``docker/versions.yaml``. A checkout cannot
be checked that way (no archive): its files are hashed instead and, if it is a git checkout, its HEAD is
compared with the pinned commit. Large files of a checkout (datasets, checkpoints: ``*.bin``, anything over
8 MB) and ``.git`` are never copied into the build context.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kitctl.core.files import sha256_file
from kitctl.core import pins as versions
from kitctl.core.errors import KitError

MAX_FILE = 8 * 1024 * 1024
SKIP_DIRS = {".git", "build", "__pycache__", "log124M", "log_gpt2_124M"}


@dataclass
class LlmcSource:
    kind: str            # "checkout" | "tarball" | "url"
    origin: str          # what the user gave (or the pinned URL)
    digest: str          # sha256: of the tarball (pinned) or of the copied tree
    commit: str          # the pinned commit, or the checkout's HEAD when known
    verified: bool       # True when checked against the pinned tarball sha256 or git HEAD

    def label(self) -> str:
        return f"{self.kind}:{self.digest[:16]}{'' if self.verified else ' (unverified)'}"


def tree_digest(root: Path) -> str:
    """sha256 over (relative path, file sha256) of every file under ``root``, sorted."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            h.update(str(p.relative_to(root)).encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def _copy_checkout(src: Path, dest: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        rel = Path(dirpath).relative_to(src)
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            if p.suffix == ".bin" or p.is_symlink() or p.stat().st_size > MAX_FILE:
                continue
            out = dest / rel / fn
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, out)


def _extract_tarball(tarball: Path, dest: Path) -> None:
    with tarfile.open(tarball) as tf:
        members = []
        for m in tf.getmembers():
            parts = Path(m.name).parts
            if len(parts) < 2 or m.issym() or m.islnk() or ".." in parts:
                continue
            m.name = str(Path(*parts[1:]))   # strip llm.c-<commit>/
            members.append(m)
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.11.4
            tf.extractall(dest, members=members)


def _download(url: str, to: Path, ca_cert: Optional[Path]) -> None:
    ctx = ssl.create_default_context(cafile=str(ca_cert) if ca_cert else None)
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=60) as r, open(to, "wb") as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        raise KitError(f"could not download llm.c from {url}: {e}",
                       "GitHub unreachable? pass --llmc-src PATH (a checkout or the tarball) or set "
                       "mirrors.llmc_src in kit.yaml") from None


def _git_head(path: Path) -> Optional[str]:
    if not (path / ".git").exists():
        return None
    try:
        r = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def fetch(spec: Optional[str], dest: Path, ca_cert: Optional[Path] = None) -> LlmcSource:
    """Put llm.c's source tree into ``dest`` (emptied first) and say where it came from.

    ``spec``: None (download the pinned tarball), a directory (checkout), a ``.tar.gz`` path, or a URL.
    """
    pin = versions.pins()["llmc"]
    want_sha = pin["tarball_sha256"]
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if spec and not spec.startswith(("http://", "https://")):
        path = Path(spec).expanduser()
        if not path.exists():
            raise KitError(f"--llmc-src {spec}: no such file or directory",
                           "give an llm.c checkout or its tarball at the pinned commit", exit_code=2)
        if path.is_dir():
            if not (path / "train_gpt2.cu").exists():
                raise KitError(f"--llmc-src {path} has no train_gpt2.cu: not an llm.c checkout", exit_code=2)
            _copy_checkout(path, dest)
            head = _git_head(path)
            if head and head != pin["commit"]:
                raise KitError(f"llm.c checkout {path} is at {head[:12]}, the kit pins {pin['commit'][:12]}",
                               f"git -C {path} checkout {pin['commit']}", exit_code=2)
            return LlmcSource("checkout", str(path), tree_digest(dest), head or pin["commit"], head is not None)
        got = sha256_file(path)
        if got != want_sha:
            raise KitError(f"llm.c tarball {path} has sha256 {got[:16]}..., the pin is {want_sha[:16]}...",
                           f"use the tarball of commit {pin['commit']} (docker/versions.yaml)", exit_code=2)
        _extract_tarball(path, dest)
        return LlmcSource("tarball", str(path), got, pin["commit"], True)
    url = spec or pin["tarball_url"].format(commit=pin["commit"])
    tmp = dest.parent / (dest.name + ".tar.gz")
    _download(url, tmp, ca_cert)
    got = sha256_file(tmp)
    if got != want_sha:
        tmp.unlink()
        raise KitError(f"llm.c tarball from {url} has sha256 {got[:16]}..., the pin is {want_sha[:16]}...",
                       "the mirror serves another commit; point mirrors.llmc_src at the right tarball")
    _extract_tarball(tmp, dest)
    tmp.unlink()
    return LlmcSource("url", url, got, pin["commit"], True)
