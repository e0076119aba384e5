"""Get llm.c's source at the pinned commit into a build context: a checkout, a tarball, or a tarball URL.

A tarball (given or downloaded) must match the sha256 pinned in ``docker/versions.yaml``. A checkout cannot
be checked that way (no archive): its files are hashed instead and, if it is a git checkout, its HEAD is
compared with the pinned commit.

From a checkout only an allow-list enters the build context (and so an image layer): llm.c's sources and scripts
(:data:`TOP_DIRS`, :data:`SUFFIXES`, :data:`NAMES`), never a dot-file or dot-folder (``.env``, ``.git``, ``.ssh``),
keys or certificates, datasets or checkpoints (``*.bin``), symlinks or anything over 8 MB.
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

from kitctl.core.files import sha256_file, tidy_on_failure
from kitctl.core import pins
from kitctl.core import validate
from kitctl.core.errors import ConfigError, KitError

MAX_FILE = 8 * 1024 * 1024
SKIP_DIRS = {"build", "__pycache__", "log124M", "log_gpt2_124M"}      # besides every dot-folder
TOP_DIRS = {"llmc", "dev", "scripts", "doc"}                          # folders of llm.c that may be copied
SUFFIXES = {".cu", ".cuh", ".c", ".h", ".hpp", ".cpp", ".py", ".sh", ".sbatch", ".md", ".txt"}
NAMES = {"Makefile", "LICENSE"}                                       # extension-less files that may be copied


def allowed(rel: Path) -> bool:
    """Whether a file of a checkout (``rel`` relative to its root) may enter the build context."""
    parts = rel.parts
    if any(p.startswith(".") for p in parts) or any(p in SKIP_DIRS for p in parts[:-1]):
        return False
    if len(parts) > 1 and parts[0] not in TOP_DIRS:
        return False
    return rel.name in NAMES or rel.suffix in SUFFIXES


@dataclass
class LlmcSource:
    kind: str            # "checkout" | "tarball" | "url"
    origin: str          # what the user gave (or the pinned URL)
    digest: str          # sha256: of the tarball (pinned) or of the copied tree
    commit: str          # the pinned commit, or the checkout's HEAD when known
    verified: bool       # True when checked against the pinned tarball sha256 or git HEAD
    left_out: tuple[str, ...] = ()   # files and folders of a checkout that the allow-list kept out

    def label(self) -> str:
        return f"{self.kind}:{self.digest[:16]}{'' if self.verified else ' (unverified)'}"


def tree_digest(root: Path) -> str:
    """sha256 over (relative path, file sha256) of every file under ``root``, sorted."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            h.update(str(p.relative_to(root)).encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def _copy_checkout(src: Path, dest: Path) -> list[str]:
    """Copy the allowed files of ``src`` into ``dest``; returns what was left out (relative paths)."""
    left_out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        keep = []
        for d in sorted(dirnames):
            if d.startswith(".") or d in SKIP_DIRS or (rel == Path(".") and d not in TOP_DIRS):
                left_out.append(str(rel / d) + "/")
            elif not (Path(dirpath) / d).is_symlink():
                keep.append(d)
        dirnames[:] = keep
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            r = rel / fn
            if not allowed(r) or p.is_symlink() or not p.is_file() or p.stat().st_size > MAX_FILE:
                left_out.append(str(r))
                continue
            out = dest / r
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, out)
    return left_out


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
    try:
        ctx = ssl.create_default_context(cafile=str(ca_cert) if ca_cert else None)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"CA bundle {ca_cert} cannot be loaded: {e}",
                          "give a PEM bundle, e.g. /etc/ssl/certs/ca-certificates.crt") from None
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=60) as r, open(to, "wb") as f:
            shutil.copyfileobj(r, f)
    except BaseException as e:
        to.unlink(missing_ok=True)
        if isinstance(e, ValueError):            # urllib's InvalidURL / unknown url type
            raise ConfigError(f"cannot download llm.c from {url}: {e}",
                              "give an http(s) URL of the tarball, a local tarball or a checkout") from None
        if not isinstance(e, OSError):
            raise
        raise KitError(f"could not download llm.c from {url}: {e}",
                       "GitHub unreachable? pass --llmc-src PATH (a checkout or the tarball) or set "
                       "mirrors.llmc_src in kit.yaml") from None


def download_tarball(spec: Optional[str], to: Path, ca_cert: Optional[Path] = None) -> Path:
    """Download llm.c's tarball (``spec`` a URL, default the pinned one) to ``to`` and check it against the pin."""
    pin = pins.pins()["llmc"]
    url = spec or pin["tarball_url"].format(commit=pin["commit"])
    _download(url, to, ca_cert)
    check_tarball(to, url)
    return to


def tarball_hint() -> str:
    """How to get a tarball the pin accepts: the pin is of GitHub's own gzip bytes, so a tarball made by hand at
    the right commit (git archive, tar czf) differs; an unpacked checkout is checked by its git HEAD instead."""
    pin = pins.pins()["llmc"]
    url = pin["tarball_url"].format(commit=pin["commit"])
    return (f"the pin is the sha256 of GitHub's tarball of commit {pin['commit']}: download {url} on a connected box "
            "(a tarball made by hand at that commit -- git archive, tar czf -- has other gzip bytes and is refused); "
            f"or give the unpacked checkout folder instead (--llmc-src DIR / mirrors.llmc_src: `git -C DIR checkout "
            f"{pin['commit']}`; its git HEAD is checked against the pin)")


def check_tarball(path: Path, origin: Optional[str] = None) -> str:
    """The tarball's sha256, refused (exit 2) unless it is the pinned one."""
    pin = pins.pins()["llmc"]
    got = sha256_file(path)
    if got != pin["tarball_sha256"]:
        raise ConfigError(f"llm.c tarball {origin or path} has sha256 {got[:16]}..., the pin is "
                          f"{pin['tarball_sha256'][:16]}...",
                          tarball_hint())
    return got


def git_head(path: Path) -> Optional[str]:
    if not (path / ".git").exists():
        return None
    try:
        r = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def fetch(spec: Optional[str], dest: Path, ca_cert: Optional[Path] = None) -> LlmcSource:
    """Put llm.c's source tree into ``dest`` (emptied first) and say where it came from.

    ``spec``: None (download the pinned tarball), a directory (checkout), a ``.tar.gz`` path, or a URL. On a
    failure (no network, a wrong tarball) ``dest`` is removed, and so are the empty folders made for it."""
    with tidy_on_failure(dest):
        try:
            return _fetch(spec, dest, ca_cert)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)     # emptied at the start: a partial tree is of no use
            raise


def _fetch(spec: Optional[str], dest: Path, ca_cert: Optional[Path] = None) -> LlmcSource:
    pin = pins.pins()["llmc"]
    want_sha = pin["tarball_sha256"]
    if spec is not None and not str(spec).strip():
        raise ConfigError("--llmc-src is empty", "give an llm.c checkout, its tarball, or a tarball URL")
    if spec and "://" in spec:
        validate.url(spec, "--llmc-src")          # before anything is removed or fetched
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if spec and not spec.startswith(("http://", "https://")):
        path = Path(spec).expanduser()
        if not path.exists():
            raise ConfigError(f"--llmc-src {spec}: no such file or directory",
                              "give an llm.c checkout or its tarball at the pinned commit")
        if path.is_dir():
            if not (path / "train_gpt2.cu").exists():
                raise ConfigError(f"--llmc-src {path} has no train_gpt2.cu: not an llm.c checkout")
            left_out = _copy_checkout(path, dest)
            head = git_head(path)
            if head and head != pin["commit"]:
                raise ConfigError(f"llm.c checkout {path} is at {head[:12]}, the kit pins {pin['commit'][:12]}",
                                  f"git -C {path} checkout {pin['commit']}")
            return LlmcSource("checkout", str(path), tree_digest(dest), head or pin["commit"], head is not None,
                              tuple(left_out))
        got = sha256_file(path)
        if got != want_sha:
            raise ConfigError(f"llm.c tarball {path} has sha256 {got[:16]}..., the pin is {want_sha[:16]}...",
                              tarball_hint())
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
