"""The kit's wheelhouse for ``kitctl bundle``: kitctl's own wheel and every dependency at its locked version, so a
box with nothing but Python installs the kit from the bundle with no network::

    tar -xf FILE wheels && python3 -m venv kit && kit/bin/pip install --no-index --find-links wheels llmc-kit

* the kit's wheel: built from this checkout (``pip wheel --no-deps``; hatchling, the build backend, comes from the
  pip index), packed again from the installed files when kitctl was installed from a wheel (README's install), or
  given (``--kit-wheel FILE``);
* the dependencies: ``pip download --only-binary=:all:`` of that wheel under docker/requirements.lock as
  constraints (and requirements-eval.lock for ``--extra eval``), for this interpreter and platform, or for
  another (``--python-version``, ``--platform``); from mirrors.pip_index when set, else pip's configured index.
  Wheels only: an sdist would need its build backend on the offline box. They are kept on the data root per
  lock x Python x platform x extras (``DataLayout.wheelhouse_cache``), so the next bundle downloads nothing.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from kitctl.core import resources
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.records import short

Say = Callable[[str], None]
KIT_DIST = "llmc_kit"
EXTRAS = ("eval",)                                   # the extras a wheelhouse can carry (each has its lock)
EXTRA_LOCKS = {"eval": "requirements-eval.lock"}
COMPLETE = ".complete"                               # written last into a cached wheelhouse: it is whole
PIP_TIMEOUT_S = 1800


@dataclass(frozen=True)
class WheelOptions:
    python_version: Optional[str] = None             # e.g. "3.12" (default: this interpreter's)
    platforms: tuple[str, ...] = ()                  # e.g. ("manylinux_2_28_x86_64",) (default: this machine's)
    extras: tuple[str, ...] = ()
    kit_wheel: Optional[Path] = None                 # default: built from this checkout

    def target(self) -> str:
        py = self.python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        return f"Python {py}, " + (" / ".join(self.platforms) if self.platforms else sysconfig.get_platform())


@dataclass
class Wheelhouse:
    kit_wheel: Path
    deps: list[Path] = field(default_factory=list)
    cached: bool = False

    @property
    def files(self) -> list[Path]:
        return [self.kit_wheel, *self.deps]


def check_options(w: WheelOptions) -> None:
    """Bad values: exit 2 before anything is downloaded."""
    bad = sorted(set(w.extras) - set(EXTRAS))
    if bad:
        raise ConfigError(f"--extra {', '.join(bad)}: the wheelhouse knows the extras {', '.join(EXTRAS)}",
                          "e.g. --extra eval (lm-eval with torch, for `kitctl eval`); the test extras are CI's")
    if w.python_version is not None and not _is_version(w.python_version):
        raise ConfigError(f"--python-version {w.python_version!r} is not a Python version",
                          "give major.minor of the offline box's python3, e.g. --python-version 3.12")
    for p in w.platforms:
        if not p or not all(c.isalnum() or c in "_.-" for c in p):
            raise ConfigError(f"--platform {p!r} is not a wheel platform tag",
                              "e.g. --platform manylinux_2_28_x86_64 (the offline box: `python3 -c 'import "
                              "sysconfig; print(sysconfig.get_platform())'`)")
    if w.kit_wheel is not None and not (Path(w.kit_wheel).is_file() and Path(w.kit_wheel).name.startswith(KIT_DIST)
                                        and Path(w.kit_wheel).suffix == ".whl"):
        raise ConfigError(f"--kit-wheel {w.kit_wheel}: not an {KIT_DIST}-*.whl file",
                          "give the llmc-kit wheel (`pip wheel --no-deps .` in a checkout makes one)")


def _is_version(v: str) -> bool:
    parts = v.split(".")
    return 1 <= len(parts) <= 3 and all(p.isdigit() and len(p) <= 3 for p in parts) and parts[0] == "3"


def checkout() -> Optional[Path]:
    """The checkout this kitctl runs from (its pyproject.toml beside the package), None for an installed wheel."""
    root = resources.package_dir().parent
    return root if (root / "pyproject.toml").is_file() and (root / "kitctl" / "__init__.py").is_file() else None


def lock_files(extras: tuple[str, ...]) -> list[Path]:
    return [resources.share("docker", "requirements.lock"),
            *(resources.share("docker", EXTRA_LOCKS[e]) for e in sorted(extras))]


def cache_key(w: WheelOptions) -> str:
    """The lock(s), the kit's declared dependencies, the target and the extras: what the dependency set is of."""
    h = hashlib.sha256()
    for p in [*lock_files(w.extras), resources.share("pyproject.toml")]:
        h.update(p.read_bytes())
    h.update(w.target().encode() + b"|" + ",".join(sorted(w.extras)).encode())
    return h.hexdigest()[:16]


def _pip(args: list[str], cfg: KitConfig, what: str, timeout: int = PIP_TIMEOUT_S) -> None:
    argv = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--quiet"]
    if cfg.mirrors.pip_index:
        argv += ["--index-url", cfg.mirrors.pip_index]
    if cfg.ca_cert:
        argv += ["--cert", str(cfg.ca_cert)]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KitError(f"{what}: {e}", "check the pip index (mirrors.pip_index) and the network") from None
    if r.returncode != 0:
        tail = short(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.stdout, 400)
        hint = ("PyPI unreachable? set mirrors.pip_index in kit.yaml to a PyPI mirror; or leave the wheelhouse "
                "out with --no-wheels")
        if "No module named pip" in r.stderr:
            hint = f"this Python ({sys.executable}) has no pip: install kitctl in a venv with pip"
        raise KitError(f"{what} failed: {tail}", hint)


INSTALLER_FILES = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")   # written by the installer, not the wheel


def repack_installed(work: Path) -> Path:
    """The wheel of this installed kitctl, packed again from its installed files (as ``wheel pack`` does): the
    files its RECORD lists under site-packages, without bytecode, the console script (pip makes it again from
    entry_points.txt) and what the installer added; a fresh RECORD with each file's hash."""
    import base64
    import importlib.metadata as md
    import zipfile

    dist = md.distribution("llmc-kit")
    info = f"{KIT_DIST}-{dist.version}.dist-info"
    rows, out = [], work / "kit-wheel" / f"{KIT_DIST}-{dist.version}-py3-none-any.whl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p in dist.files or []:
            parts = p.parts
            if ".." in parts or "__pycache__" in parts or p.suffix == ".pyc" or (
                    parts[0].endswith(".dist-info") and parts[-1] in INSTALLER_FILES):
                continue
            name = "/".join(parts) if not parts[0].endswith(".dist-info") else "/".join((info, *parts[1:]))
            data = Path(str(dist.locate_file(p))).read_bytes()
            z.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{name},sha256={digest},{len(data)}")
        rows.append(f"{info}/RECORD,,")
        z.writestr(f"{info}/RECORD", "\n".join(rows) + "\n")
    return out


def kit_wheel(cfg: KitConfig, w: WheelOptions, work: Path, say: Say) -> Path:
    if w.kit_wheel is not None:
        return Path(w.kit_wheel).absolute()
    root = checkout()
    if root is None:
        whl = repack_installed(work)
        say(f"wheelhouse: {whl.name} packed again from this installed kitctl")
        return whl
    out = work / "kit-wheel"
    _pip(["wheel", "--no-deps", "-w", str(out), str(root)], cfg, f"building kitctl's wheel from {root}")
    (whl,) = out.glob(f"{KIT_DIST}-*.whl")
    say(f"wheelhouse: built {whl.name} from {root}")
    return whl


def make(cfg: KitConfig, w: WheelOptions, work: Path, say: Say) -> Wheelhouse:
    """The kit's wheel and its dependencies' wheels (from the cache on the data root when made before)."""
    check_options(w)
    kit = kit_wheel(cfg, w, work, say)
    cache = cfg.layout.wheelhouse_cache / cache_key(w)
    if (cache / COMPLETE).is_file():
        deps = sorted(cache.glob("*.whl"))
        say(f"wheelhouse: {len(deps)} dependency wheels for {w.target()} from {cache} (made before)")
        return Wheelhouse(kit, deps, cached=True)
    tmp = cache.with_name(f".tmp-{cache.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        args = ["download", "--only-binary=:all:", "-d", str(tmp)]
        for lock in lock_files(w.extras):
            args += ["-c", str(lock)]
        if w.python_version:
            args += ["--python-version", w.python_version]
        for p in w.platforms:
            args += ["--platform", p]
        extras = f"[{','.join(sorted(w.extras))}]" if w.extras else ""
        say(f"wheelhouse: pip download of kitctl's dependencies for {w.target()} (the locked versions, wheels only)"
            f" from {cfg.mirrors.pip_index or 'pip’s configured index'}")
        # pip names a local wheel with extras as "path[extra]"
        _pip([*args, f"{kit}{extras}"], cfg, "downloading the kit's dependencies")
        for f in tmp.glob(f"{KIT_DIST}-*.whl"):      # the kit's own wheel is this bundle's, not the cache's
            f.unlink()
        (tmp / COMPLETE).write_text(w.target() + "\n")
        shutil.rmtree(cache, ignore_errors=True)
        os.replace(tmp, cache)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    deps = sorted(cache.glob("*.whl"))
    return Wheelhouse(kit, deps)


def members(wh: Wheelhouse, bundle_dir: str) -> list[tuple[str, Path]]:
    return [(f"{bundle_dir}/{p.name}", p) for p in wh.files]


def install_line(bundle_name: str, extras: tuple[str, ...] = ()) -> str:
    """The exact commands that install the kit from a bundle's wheelhouse on a box with nothing on it."""
    what = f"'llmc-kit[{','.join(sorted(extras))}]'" if extras else "llmc-kit"
    return (f"tar -xf {bundle_name} wheels && python3 -m venv kit && kit/bin/pip install --no-index "
            f"--find-links wheels {what}")
