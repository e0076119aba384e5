"""``docker/images.lock``: what the kit's images are built from, locked -- each stage's base image by digest and every
apt package the stage installs at its exact version. Pure: parse, write, compare; the Docker side (resolving a
digest, reading dpkg from a build) is in :mod:`kitctl.images.lock_resolve`.

The file is plain text, sorted and diff-friendly, like the pip lock (docker/requirements.lock)::

    # header comments: how it was made (kitctl version, date, the command)
    [data]
    base = local/debian:bookworm
    digest = sha256:68201aad...
    source = local
    ca-certificates=20230311
    python3=3.11.2-1+b1
    ...

One section per *stage id*: ``data`` (the CPU-only data image), ``<provider>-toolchain`` and ``<provider>-runtime``
(the ``build`` stage installs nothing of its own). ``source`` says what the digest is: ``registry`` (a manifest
digest: the Dockerfile says ``FROM base@digest``) or ``local`` (an image only in this engine: its image ID, which
BuildKit cannot use in FROM, so the Dockerfile keeps the name and ``kitctl build`` checks the ID before building).
Every value is checked against strict patterns when read: nothing in the file can start a Dockerfile instruction.

:func:`body_sha256` hashes the sections only (not the header comments), so re-locking to the same content keeps
the hash that image labels, tags and run.json carry.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from kitctl.core import pins, resources
from kitctl.core.context import config_source
from kitctl.core.errors import ConfigError
from kitctl.core.files import read_limited, write_atomic

LOCK_NAME = "images.lock"
MAX_LOCK_BYTES = 1 << 20        # a lock of every stage is ~20 KB (a few hundred apt lines)
SOURCES = ("registry", "local")
STAGE_ID = re.compile(r"data|(?:nvidia|wheels)-(?:toolchain|runtime)")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
APT_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]{0,99}")              # Debian policy 5.6.1 (with :arch dropped)
APT_VERSION = re.compile(r"(?:[0-9]+:)?[0-9A-Za-z][0-9A-Za-z.+~-]{0,99}")   # policy 5.6.12
KEY_LINE = re.compile(r"(base|digest|source) = (\S+)")
PKG_LINE = re.compile(r"([^=\s]+)=(\S+)")
HEADER_HELP = (
    "Edit with `kitctl lock` or `kitctl build --update-lock`, not by hand. One section per stage: base = its FROM\n"
    "reference; digest = the registry digest it resolved to (source = registry: built FROM base@digest) or, for an\n"
    "image only in this engine, its image ID (source = local: checked before every build); then every apt package\n"
    "the stage installs, name=version, sorted (installed as apt-get install name=version). docs/images.md.")


def shipped_path() -> Path:
    """``docker/images.lock`` beside versions.yaml: the lock the kit itself ships, if any. Read-only: kitctl never
    writes there (for a wheel or pipx install it is site-packages, for an editable one someone's checkout)."""
    return resources.share("docker", LOCK_NAME)


def user_path() -> Optional[Path]:
    """``images.lock`` beside the kit.yaml in use (the user's project): where `kitctl lock` writes and builds read;
    None when no kit.yaml is in use."""
    src = config_source()
    return Path(src.path).absolute().parent / LOCK_NAME if src.path is not None else None


def default_path() -> Path:
    """The lock builds read when no --lock is given: beside the kit.yaml in use when one is there, else the one the
    kit ships (read-only). Where it would be written: :func:`write_path`."""
    mine = user_path()
    if mine is not None and (mine.exists() or mine.is_symlink()):
        return mine
    return shipped_path()


def write_path(path: Optional[Path]) -> Path:
    """Where `kitctl lock` / `build --update-lock` write: ``--lock FILE``, else beside the kit.yaml in use; never the
    kit's own docker/ folder."""
    if path is not None:
        return Path(path)
    mine = user_path()
    if mine is None:
        raise ConfigError("no kit.yaml in use: the image lock is written beside it (your project's, not the kit's "
                          "own docker/ folder)", "`kitctl init --data-root DIR` writes a kit.yaml here; or name "
                          "the file: --lock FILE")
    return mine


def stage_id(provider: str, stage: str) -> str:
    """``data`` for the data stage, ``<provider>-<stage>`` for toolchain and runtime."""
    return "data" if stage == "data" else f"{provider}-{stage}"


@dataclass
class StageLock:
    base: str
    digest: str
    source: str = "registry"
    apt: dict[str, str] = field(default_factory=dict)

    def pinned_base(self) -> str:
        """What FROM names: ``base@digest`` for a registry digest; the name itself for a local image ID."""
        if self.source != "registry":
            return self.base
        return f"{self.base.split('@', 1)[0]}@{self.digest}"


@dataclass
class ImagesLock:
    stages: dict[str, StageLock] = field(default_factory=dict)
    path: Optional[Path] = None

    def section(self, sid: str) -> str:
        s = self.stages[sid]
        lines = [f"[{sid}]", f"base = {s.base}", f"digest = {s.digest}", f"source = {s.source}"]
        return "\n".join(lines + [f"{k}={v}" for k, v in sorted(s.apt.items())]) + "\n"

    def body(self) -> str:
        """The sections, sorted (stage ids, then packages): what is hashed and diffed."""
        return "\n".join(self.section(sid) for sid in sorted(self.stages))

    def sha256(self) -> str:
        return hashlib.sha256(self.body().encode()).hexdigest()

    def sections_sha256(self, sids: Iterable[str]) -> str:
        """sha256 of the sections an image is built from (its label ``org.llmc-kit.images-lock``): [data] for the
        data image, [<provider>-toolchain] + [<provider>-runtime] for the runtime image. Re-locking another stage
        leaves it -- and the image's tag -- unchanged."""
        return hashlib.sha256("".join(self.section(s) for s in sorted(sids)).encode()).hexdigest()

    def short(self) -> str:
        return self.sha256()[:12]


def body_sha256(lock: Optional[ImagesLock]) -> str:
    return lock.sha256() if lock else ""


def dump(lock: ImagesLock, made_by: str, when: str, version: str) -> str:
    """The whole file: a header saying how it was made, then :meth:`ImagesLock.body`."""
    head = [f"# docker/{LOCK_NAME} -- what the kit's images are built from, locked (like requirements.lock).",
            f"# Made by kitctl {version} at {when}: {made_by}",
            *("# " + line for line in HEADER_HELP.splitlines()), ""]
    return "\n".join(head) + "\n" + lock.body()


def write(lock: ImagesLock, path: Path, made_by: str, when: str, version: str) -> None:
    write_atomic(path, dump(lock, made_by, when, version))


def _bad(path: object, n: int, what: str, fix: str = "") -> ConfigError:
    return ConfigError(f"{path}: line {n}: {what}",
                       fix or "re-make it with `kitctl lock` (or `kitctl build --update-lock`); docs/images.md")


def parse(text: str, path: object = LOCK_NAME) -> ImagesLock:
    """The lock in ``text``; any line that is not a comment, a section, a key or a checked ``name=version`` is a
    ConfigError (exit 2) naming the line."""
    lock = ImagesLock()
    cur: Optional[str] = None
    keys: dict[str, dict[str, str]] = {}
    where: dict[tuple[str, str], int] = {}         # (stage, key or package) -> the line it was set on
    twice: Optional[ConfigError] = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = line[1:-1]
            if not STAGE_ID.fullmatch(cur):
                raise _bad(path, n, f"unknown stage [{cur[:40]}]", "stages are [data], [nvidia-toolchain], "
                           "[nvidia-runtime], [wheels-toolchain], [wheels-runtime]; re-make it with `kitctl lock`")
            if cur in keys:
                raise _bad(path, n, f"stage [{cur}] twice")
            keys[cur] = {}
            lock.stages[cur] = StageLock(base="", digest="")
            continue
        if cur is None:
            raise _bad(path, n, "an entry before the first [stage] line")
        if m := KEY_LINE.fullmatch(line):
            if m.group(1) in keys[cur] and twice is None:     # said after the lines (a bad line names itself first)
                twice = _bad(path, n, f"{m.group(1)} twice in [{cur}] (line {where[(cur, m.group(1))]} and line "
                             f"{n})", "keep one of the two lines (a parser that kept the last would silently use "
                             "it); or re-make it with `kitctl lock`")
            keys[cur][m.group(1)] = m.group(2)
            where[(cur, m.group(1))] = n
            continue
        m = PKG_LINE.fullmatch(line)
        if not m or not APT_NAME.fullmatch(m.group(1)) or not APT_VERSION.fullmatch(m.group(2)):
            raise _bad(path, n, f"not an apt name=version: {line[:80]!r}")
        if m.group(1) in lock.stages[cur].apt:
            raise _bad(path, n, f"{m.group(1)} twice in [{cur}] (line {where[(cur, '=' + m.group(1))]} and line "
                       f"{n})")
        lock.stages[cur].apt[m.group(1)] = m.group(2)
        where[(cur, "=" + m.group(1))] = n
    if twice is not None:
        raise twice
    for sid, k in keys.items():
        s = lock.stages[sid]
        missing = [x for x in ("base", "digest", "source") if x not in k]
        if missing:
            raise ConfigError(f"{path}: stage [{sid}] lacks {', '.join(missing)}",
                              "re-make it with `kitctl lock`; docs/images.md")
        if k["source"] not in SOURCES or not DIGEST.fullmatch(k["digest"]):
            raise ConfigError(f"{path}: stage [{sid}]: digest must be sha256:<64 hex> and source registry|local",
                              "re-make it with `kitctl lock`")
        s.base = pins.check_image_ref(k["base"], f"{path} [{sid}] base")
        s.digest, s.source = k["digest"], k["source"]
    return lock


def load(path: Optional[Path] = None) -> Optional[ImagesLock]:
    """The lock at ``path`` (default :func:`default_path`: beside kit.yaml, else the kit's own); None when there is
    none. Read through the kit's bounded regular-file reader (at most 1 MiB; a FIFO is refused, never waited on)."""
    p = Path(path) if path else default_path()
    fix = "check the file; re-make it with `kitctl lock`"
    try:         # a FIFO, device, socket or folder: exit 2 naming it; never read past the size limit
        text = read_limited(p, "image lock", MAX_LOCK_BYTES, fix).decode("utf-8")
    except FileNotFoundError:
        if path:   # named on the command line: it must exist
            raise ConfigError(f"--lock {p}: no such file", "make it with `kitctl lock --lock FILE`, or leave "
                              "--lock out to use the lock beside kit.yaml") from None
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read it ({str(e)[:160]})", fix) from None
    lock = parse(text, p)
    lock.path = p
    return lock


def merged(old: Optional[ImagesLock], new: dict[str, StageLock]) -> ImagesLock:
    """``old`` with the stages of ``new`` replaced (other providers' stages are kept)."""
    stages = dict(old.stages) if old else {}
    stages.update(new)
    return ImagesLock(stages=stages)


def parse_dpkg(text: str) -> dict[str, str]:
    """``dpkg-query -W -f '${Package}=${Version}\\n'`` output -> {name: version} (``:arch`` suffixes dropped)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if "=" in line:
            name, ver = line.split("=", 1)
            out[name.split(":", 1)[0]] = ver
    return out


def installed_by(before: dict[str, str], after: dict[str, str], skip: Iterable[str] = ()) -> dict[str, str]:
    """The packages a stage installed or changed: in ``after`` and not at the same version in ``before``."""
    drop = set(skip)
    return {k: v for k, v in after.items() if before.get(k) != v and k not in drop}


def pin_list(packages: list[str], locked: dict[str, str]) -> list[str]:
    """An apt_install list under the lock: every locked package as ``name=version`` (the named ones and all their
    dependencies), plus any named package the lock lacks, unpinned (the build's check then names it)."""
    if not locked:
        return list(packages)
    return [f"{k}={v}" for k, v in sorted(locked.items())] + [p for p in packages if p.split("=")[0] not in locked]


def differences(stage: str, want: dict[str, str], got: dict[str, str]) -> list[str]:
    """Readable lines for what differs between the lock (``want``) and a resolution (``got``) of one stage."""
    out = []
    for k in sorted(set(want) | set(got)):
        if k not in got:
            out.append(f"[{stage}] {k}={want[k]}: locked, not installed now")
        elif k not in want:
            out.append(f"[{stage}] {k}={got[k]}: installed now, not in the lock")
        elif want[k] != got[k]:
            out.append(f"[{stage}] {k}: locked {want[k]}, resolves to {got[k]} now")
    return out


LABEL = "org.llmc-kit.images-lock"
IMAGE_SECTIONS = {"toolchain": ("toolchain",), "build": ("toolchain",), "runtime": ("toolchain", "runtime"),
                  "data": ("data",)}


def image_sids(provider: str, stage: str) -> list[str]:
    """The lock sections an image of ``stage`` is built from."""
    return [stage_id(provider, s) for s in IMAGE_SECTIONS.get(stage, ())]


def expected_label(lock: ImagesLock, labels: dict[str, str]) -> Optional[str]:
    """The images-lock label an image with these labels has when built from ``lock``; None if the lock lacks it."""
    sids = image_sids(labels.get("org.llmc-kit.provider", ""), labels.get("org.llmc-kit.stage", ""))
    if not sids or any(s not in lock.stages for s in sids):
        return None
    return lock.sections_sha256(sids)


def judge_images(lock: ImagesLock, seen: list[tuple[str, dict[str, str]]]) -> tuple[str, str, str]:
    """(status, finding, meaning) for local images ``seen`` as (reference, their labels)."""
    if not seen:
        return ("info", f"docker/images.lock {lock.short()}; no kit image built here yet",
                "`kitctl build` builds from the lock")
    off = []
    for ref, labels in seen:
        got, want = labels.get(LABEL, ""), expected_label(lock, labels)
        if want is None:
            off.append(f"{ref}: its stage is not in the lock")
        elif got != want:
            off.append(f"{ref}: " + (f"built from another lock ({got[:12]})" if got else "built without a lock"))
    if not off:
        return ("ok", f"{', '.join(r for r, _ in seen)} built from docker/images.lock {lock.short()}",
                "the images hold the locked base digests and apt versions")
    return ("warn", "; ".join(off) + f" (the lock now: {lock.short()})",
            "these images do not hold what docker/images.lock says: `kitctl build` rebuilds them from it "
            "(`kitctl lock` first for a stage it lacks)")
