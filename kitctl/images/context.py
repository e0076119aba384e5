"""The build context: a folder that plain ``docker buildx build`` can build (``kitctl render --out DIR``, and the
context ``kitctl build`` uses), its content hash, and the rules for the folder it is written to.

* :func:`prepare_context` -- Dockerfile + everything it COPYs (native/, the kit's own files, llm.c's source);
* :func:`recipe_hash` -- hash12 per target: the stage texts it builds on plus the files its stages COPY, so
  unchanged inputs give the same tag and a cache hit;
* the output folder is never a folder kitctl did not make: a missing or empty folder is used, a previous render
  (marked by :data:`STAMP`) is refreshed -- only the entries kitctl writes are replaced --, anything else is
  refused with exit 2. The context is assembled in a temp folder beside it and moved in when complete (the
  Dockerfile last): a refusal, an error or Ctrl-C leaves the folder as it was.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from kitctl.core import resources
from kitctl.core.errors import ConfigError
from kitctl.core.files import existing_parent, write_atomic
from kitctl.core.records import Record
from kitctl.images import llmc_source
from kitctl.images.render import TEMPLATE_NAME, render, stage_texts
from kitctl.images.request import BuildRequest

KIT_FILES = ("pyproject.toml", "README.md", "docker/requirements.lock", "docker/versions.yaml")
KIT_DIRS = ("kitctl", "datasets")
STAMP = ".kitctl-render.json"
# every top-level entry a render writes (and so the only ones a refresh removes)
ENTRIES = ("Dockerfile", ".dockerignore", "native", "kitctl", "datasets", "docker", "llmc", "pyproject.toml",
           "README.md", STAMP)
LEGACY_BANNER = "# llmc-kit multi-stage Dockerfile"


class RenderStamp(Record):
    """Marks a folder as a kitctl render output (so a later render may refresh it)."""

    KIND: ClassVar[str] = "render stamp"
    made_by: str = "kitctl render"
    template: str = TEMPLATE_NAME


@dataclass
class Context:
    """A prepared build context folder."""

    path: Path
    dockerfile: Path
    llmc_label: str = ""
    hashes: dict[str, str] = field(default_factory=dict)   # target -> hash12
    llmc_left_out: tuple[str, ...] = ()


def _kit_source(rel: str) -> Path:
    """Where a path of the kit's own (``kitctl``, ``docker/versions.yaml``, ``native``...) is on this install."""
    return resources.package_dir() if rel == "kitctl" else resources.share(rel)


def _kit_files(rel: str) -> list[tuple[str, Path]]:
    """(name inside the context, file on disk) for one entry of KIT_FILES / KIT_DIRS / native."""
    src = _kit_source(rel)
    if not src.is_dir():
        return [(rel, src)]
    skip = {"__pycache__", "_share"}
    return [(f"{rel}/{f.relative_to(src).as_posix()}", f) for f in sorted(src.rglob("*"))
            if f.is_file() and not skip & set(f.relative_to(src).parts) and f.suffix != ".pyc"]


def _sha_files(h: Any, rels: list[str]) -> None:
    for rel in rels:
        for name, f in _kit_files(rel):
            h.update(name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())


def recipe_hash(req: BuildRequest, dockerfile: str, llmc_digest: str = "") -> dict[str, str]:
    """hash12 per target: the stage texts it builds on, plus the files its stages COPY."""
    st = stage_texts(dockerfile)
    out = {}
    for target, parts in {"toolchain": ["toolchain"], "build": ["toolchain", "build"],
                          "runtime": ["toolchain", "build", "runtime"], "data": ["data"]}.items():
        h = hashlib.sha256()
        for p in parts:
            h.update(st.get(p, "").encode())
        if target in ("build", "runtime"):
            _sha_files(h, ["native"])
            h.update(llmc_digest.encode())
        if target == "data":
            _sha_files(h, [*KIT_FILES, *KIT_DIRS])
        out[target] = h.hexdigest()[:12]
    return out


def _copy_kit(dest: Path) -> None:
    """Copy what the data image COPYs (the kit itself) and native/ into the build context."""
    for rel in (*KIT_DIRS, "native"):
        (dest / rel).mkdir(parents=True, exist_ok=True)
    for rel in (*KIT_FILES, *KIT_DIRS, "native"):
        for name, f in _kit_files(rel):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest / name)


def _is_previous_render(out: Path) -> bool:
    if (out / STAMP).is_file():
        return True
    df = out / "Dockerfile"   # a context of a kitctl from before the stamp: its Dockerfile's banner
    try:
        return df.is_file() and df.read_text(errors="replace").startswith(LEGACY_BANNER)
    except OSError:
        return False


def check_folder(out: Path) -> Path:
    """Whether a render may write ``out`` (nothing is written): a missing folder (under folders, not files), an
    empty one, or an earlier render. Anything else is a ConfigError (exit 2). Returns it absolute."""
    out = Path(out).expanduser().absolute()
    fix = "give a new or empty folder (or one an earlier `kitctl render` wrote), e.g. --out build-ctx"
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"--out {out} exists and is not a folder", fix)
    if out.is_dir():
        try:
            entries = list(out.iterdir())
        except OSError as e:
            raise ConfigError(f"--out {out}: cannot read it ({e.strerror or e})", fix) from None
        if entries and not _is_previous_render(out):
            raise ConfigError(f"--out {out} is a folder with other files in it ({len(entries)} entries, e.g. "
                              f"{sorted(e.name for e in entries)[0]}); kitctl replaces only folders it made", fix)
    else:
        parent = existing_parent(out)
        if not parent.is_dir():
            raise ConfigError(f"--out {out}: {parent} is a file, not a folder", fix)
    if not os.access(existing_parent(out), os.W_OK):
        raise ConfigError(f"--out {out}: {existing_parent(out)} is not writable by you", "pick a folder you can write to")
    return out


def _install(tmp: Path, out: Path) -> None:
    """Move the finished context ``tmp`` into ``out``: a fresh folder by rename, an earlier render by replacing only
    the entries kitctl writes (anything else in it stays)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    for name in ENTRIES:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    for entry in sorted(tmp.iterdir(), key=lambda e: e.name == "Dockerfile"):   # the Dockerfile last
        os.replace(entry, out / entry.name)
    tmp.rmdir()


def prepare_context(req: BuildRequest, out: Optional[Path] = None, fetch_source: Optional[bool] = None) -> Context:
    """Write Dockerfile + everything it COPYs into ``out`` (default ``<build_dir>/context``).

    The context is assembled in a temp folder beside ``out`` and moved into place when complete: a refusal (a bad
    --llmc-src, a tarball with the wrong sha256), an error or Ctrl-C leaves ``out`` and its parents as they were.
    llm.c's source is fetched (and checked) only for targets that compile it, unless ``fetch_source`` says
    otherwise; without it ``llmc/`` holds a README only.
    """
    out = check_folder(Path(out or req.build_dir / "context"))
    made = _missing_parents(out)
    tmp = out.parent / f".tmp-{out.name}.{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        ctx = _fill(req, tmp, fetch_source)
        _install(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in made:                               # the parents this render created, deepest first
            try:
                d.rmdir()
            except OSError:
                break
        if isinstance(e, OSError):
            raise ConfigError(f"--out {out}: cannot write the build context there ({e.strerror or e})",
                              "pick a folder you can write to with free space") from None
        raise
    return Context(out, out / "Dockerfile", ctx.llmc_label, ctx.hashes, ctx.llmc_left_out)


def _missing_parents(out: Path) -> list[Path]:
    """``out``'s ancestors that do not exist yet, deepest first."""
    missing = []
    p = out.parent
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def _fill(req: BuildRequest, dest: Path, fetch_source: Optional[bool]) -> Context:
    _copy_kit(dest)
    need_src = req.target in ("build", "runtime") if fetch_source is None else fetch_source
    llmc_label, digest = "", ""
    left_out: tuple[str, ...] = ()
    if need_src:
        src = llmc_source.fetch(req.llmc_src, dest / "llmc", req.ca_cert)
        llmc_label, digest, left_out = src.label(), src.digest, src.left_out
    else:
        (dest / "llmc").mkdir()
        (dest / "llmc" / "README").write_text("llm.c source goes here (kitctl render --llmc-src, or copy a "
                                             "checkout at the pinned commit) before building build/runtime\n")
    text = render(req, llmc_label)
    (dest / ".dockerignore").write_text(f"**/__pycache__\n**/*.pyc\n{STAMP}\n")
    RenderStamp().write(dest / STAMP)
    write_atomic(dest / "Dockerfile", text)
    return Context(dest, dest / "Dockerfile", llmc_label, recipe_hash(req, text, digest), left_out)
