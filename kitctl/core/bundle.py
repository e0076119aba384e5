"""The offline bundle's format: one uncompressed tar whose first member is ``manifest.json``.

``kitctl bundle`` (kitctl/pipeline/bundle.py) packs what a box without network needs; ``kitctl reproduce
--bundle``, ``kitctl build --bundle`` and ``kitctl data --bundle`` read it through this module. It is in core
because those three areas read it and none may import another.

Layout (member names; every member's size and sha256 are in the manifest)::

    manifest.json                      first member: BundleManifest (format, kit version, members, what was packed)
    images/runtime.tar, images/data.tar   `docker save` of the runtime / data image (left out with --no-images)
    llmc/llm.c-<commit>.tar.gz         llm.c's pinned source tarball (or llmc/llm.c/... : an allow-listed checkout)
    cudnn-frontend/include/...         cudnn-frontend headers (native builds, when packed with --cudnn-frontend)
    tokenizer/vocab.bpe, tokenizer/encoder.json   GPT-2's BPE files
    hellaswag/hellaswag_val.jsonl      the HellaSwag validation set
    dataset/...                        optional: the dataset's local input (parquet / jsonl / txt, or ready shards)
    wheels/*.whl                       the kit's wheelhouse: kitctl's own wheel and every dependency at the locked
                                       version (kitctl/pipeline/wheelhouse.py); `tar -xf FILE wheels` then
                                       `pip install --no-index --find-links wheels llmc-kit` installs the kit

Checks, as git checks objects on read: :func:`open_bundle` reads the manifest and the tar's member list (cheap,
an uncompressed tar is walked by seeking) and refuses a member that is missing, extra, or of another size (a
partial copy); :func:`unpack` hashes every member while it extracts it and refuses one whose sha256 differs
(damage). Both refuse with exit 2 naming the member. The unpacked folder appears whole (a temp folder renamed)
under ``<data_root>/bundles/<manifest sha256[:12]>`` and is reused by later commands.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Optional

from pydantic import BaseModel

from kitctl.core.errors import ConfigError
from kitctl.core.files import atomic_output
from kitctl.core.layout import DataLayout
from kitctl.core.progress import progress_bar
from kitctl.core.records import Record

FORMAT = "llmc-kit-bundle"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
CHUNK = 1 << 20

# member kinds (the first path part names it)
IMAGE_RUNTIME = "images/runtime.tar"
IMAGE_DATA = "images/data.tar"
TOKENIZER_FILES = ("vocab.bpe", "encoder.json")
HELLASWAG = "hellaswag/hellaswag_val.jsonl"
WHEELS = "wheels"          # the wheelhouse's folder at the tar's top level

ProgressFn = Callable[[int], None]      # bytes done since the last call


class Member(BaseModel):
    name: str
    bytes: int
    sha256: str


class BundleManifest(Record):
    """What a bundle holds (its first member)."""

    KIND = "bundle manifest"
    format: str = FORMAT
    created: str = ""
    kit_version: str = ""
    members: list[Member] = []
    # what was packed, as the reader needs it: {"dataset": spec or recipe, "dataset_kind": recipe|local|none,
    # "dataset_path": member path of the input under dataset/, "llmc": member path, "llmc_commit",
    # "images": {"runtime": {"ref", "id", "recipe_hash"}, "data": {...}}, "hellaswag": {"sha256", "examples"}}
    contents: dict[str, Any] = {}

    def member(self, name: str) -> Optional[Member]:
        return next((m for m in self.members if m.name == name), None)


def _refuse(path: Path, what: str, fix: str = "") -> ConfigError:
    return ConfigError(f"bundle {path}: {what}", fix or "copy the bundle again (compare its size with the "
                       "original's), or make a new one with `kitctl bundle --out FILE` on the box that has network")


def _safe_name(name: str) -> bool:
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name


@dataclass
class Bundle:
    path: Path
    manifest: BundleManifest
    key: str                       # sha256 of the manifest's bytes, first 12 hex: names the unpacked folder

    def has(self, name: str) -> bool:
        return self.manifest.member(name) is not None

    def names(self, prefix: str) -> list[str]:
        return [m.name for m in self.manifest.members if m.name.startswith(prefix)]


def _read_manifest(path: Path, tf: tarfile.TarFile) -> tuple[BundleManifest, bytes]:
    """The first member, manifest.json, parsed and checked (format, schema); its raw bytes (the bundle's key)."""
    try:
        first = tf.next()
        if first is None or first.name != MANIFEST or not first.isfile() or first.size > MAX_MANIFEST_BYTES:
            raise _refuse(path, f"its first member is {first.name if first else 'nothing'!r}, not {MANIFEST}",
                          "a kitctl bundle starts with manifest.json; make one with `kitctl bundle --out FILE`")
        f = tf.extractfile(first)
        assert f is not None
        raw = f.read()
    except tarfile.TarError as e:
        raise _refuse(path, f"cannot read its manifest ({e})") from None
    try:
        manifest = BundleManifest.model_validate(json.loads(raw))
    except ValueError as e:
        raise _refuse(path, f"member {MANIFEST} is damaged ({str(e).splitlines()[0][:200]})") from None
    if manifest.format != FORMAT:
        raise _refuse(path, f"{MANIFEST} says format {manifest.format!r}, not {FORMAT}")
    if manifest.schema_version > BundleManifest.SCHEMA:
        raise _refuse(path, f"written by a newer kitctl (bundle schema {manifest.schema_version})",
                      "upgrade llmc-kit on this box, or pack the bundle with this box's kitctl version")
    return manifest, raw


def _check_members(path: Path, tf: tarfile.TarFile, manifest: BundleManifest) -> set[str]:
    """Every member after the manifest is listed in it, a regular file of the listed size, and whole in the file;
    the names seen."""
    want = {m.name: m for m in manifest.members}
    seen: set[str] = set()
    last = MANIFEST
    try:
        while (ti := tf.next()) is not None:
            if ti.name not in want:
                raise _refuse(path, f"member {ti.name} is not in its manifest (an altered bundle)")
            m = want[ti.name]
            if not ti.isfile() or ti.size != m.bytes:
                raise _refuse(path, f"member {ti.name} is {ti.size:,} bytes, the manifest says {m.bytes:,} "
                              "(a partial or damaged copy)")
            if ti.offset_data + ti.size > path.stat().st_size:
                raise _refuse(path, f"member {ti.name} is cut short: the file ends inside it (a partial copy)")
            seen.add(ti.name)
            last = ti.name
    except tarfile.TarError as e:
        raise _refuse(path, f"unreadable after member {last} ({e}): a partial or damaged copy") from None
    return seen


def open_bundle(path: Path) -> Bundle:
    """Read the manifest and check the tar's members against it (names and sizes; no content read)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--bundle {path}: no such file", "give the file `kitctl bundle --out FILE` wrote")
    try:
        tf = tarfile.open(path, "r:")  # noqa: SIM115 (closed by the with below; uncompressed only: members are found by seeking)
    except (tarfile.TarError, OSError) as e:
        raise _refuse(path, f"not a kitctl bundle (not an uncompressed tar: {e})") from None
    with tf:
        manifest, raw = _read_manifest(path, tf)
        seen = _check_members(path, tf, manifest)
    missing = [m.name for m in manifest.members if m.name not in seen]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise _refuse(path, f"member {missing[0]} is missing{more}: a partial copy")
    for m in manifest.members:
        if not _safe_name(m.name):
            raise _refuse(path, f"member name {m.name!r} is not a plain relative path")
    return Bundle(path, manifest, hashlib.sha256(raw).hexdigest()[:12])


def unpacked_dir(root: Path, b: Bundle) -> Path:
    return Path(root) / b.key


def unpack(b: Bundle, root: Path, progress: Optional[ProgressFn] = None) -> Path:
    """Extract every member into ``root/<key>`` (reused when there already), checking each member's sha256 as
    it is written; a member that differs is refused naming it and nothing is left under the final name."""
    dest = unpacked_dir(root, b)
    if (dest / MANIFEST).is_file():
        if progress:
            progress(sum(m.bytes for m in b.manifest.members))
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{b.key}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    want = {m.name: m for m in b.manifest.members}
    try:
        with tarfile.open(b.path, "r:") as tf:
            for ti in tf:
                if ti.name == MANIFEST:
                    continue
                m = want[ti.name]
                out = tmp / ti.name
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(ti)
                assert src is not None
                h = hashlib.sha256()
                with open(out, "wb") as f:
                    while chunk := src.read(CHUNK):
                        h.update(chunk)
                        f.write(chunk)
                        if progress:
                            progress(len(chunk))
                if h.hexdigest() != m.sha256:
                    raise _refuse(b.path, f"member {ti.name} is damaged: sha256 {h.hexdigest()[:16]}..., the "
                                  f"manifest says {m.sha256[:16]}...")
        (tmp / MANIFEST).write_text(b.manifest.to_json())
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def total_bytes(b: Bundle) -> int:
    return sum(m.bytes for m in b.manifest.members)


# ------------------------------------------------------------------------------------------------ writing
def write_bundle(out: Path, files: list[tuple[str, Path]], contents: dict[str, Any], kit_version: str, created: str,
                 progress: Optional[ProgressFn] = None) -> BundleManifest:
    """Write ``files`` ((member name, source path)) as a bundle at ``out``, atomically: hashes first (the
    manifest leads the tar), then the tar beside ``out``, renamed onto it when whole. ``progress`` hears bytes
    read (every file is read twice: hash, then copy)."""
    members = []
    for name, src in files:
        if not _safe_name(name):
            raise ValueError(f"bad member name {name!r}")
        h = hashlib.sha256()
        with open(src, "rb") as inp:
            while chunk := inp.read(CHUNK):
                h.update(chunk)
                if progress:
                    progress(len(chunk))
        members.append(Member(name=name, bytes=Path(src).stat().st_size, sha256=h.hexdigest()))
    manifest = BundleManifest(created=created, kit_version=kit_version, members=members, contents=contents)
    raw = manifest.to_json().encode()
    with atomic_output(Path(out)) as f, tarfile.open(fileobj=f, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo(MANIFEST)
        ti.size, ti.mode = len(raw), 0o644
        tf.addfile(ti, io.BytesIO(raw))
        for (name, src), m in zip(files, members, strict=True):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = m.bytes, 0o644, int(Path(src).stat().st_mtime)
            with open(src, "rb") as fh:
                tf.addfile(ti, _Counting(fh, progress))
    return manifest


class _Counting:
    """A file wrapper reporting bytes read (tarfile.addfile copies through read())."""

    def __init__(self, f: IO[bytes], progress: Optional[ProgressFn]):
        self.f, self.progress = f, progress

    def read(self, n: int = -1) -> bytes:
        b: bytes = self.f.read(n)
        if self.progress and b:
            self.progress(len(b))
        return b


# ------------------------------------------------------------------------------------------------ reading
@dataclass
class Unpacked:
    """An unpacked, verified bundle, as the inputs it replaces."""

    root: Path
    manifest: BundleManifest
    source: Path                   # the bundle file

    @property
    def contents(self) -> dict[str, Any]:
        return self.manifest.contents

    def _path(self, key: str) -> Optional[Path]:
        rel = self.contents.get(key)
        return self.root / rel if rel else None

    @property
    def llmc_src(self) -> Optional[str]:
        p = self._path("llmc")
        return str(p) if p else None

    @property
    def cudnn_frontend(self) -> Optional[Path]:
        return self._path("cudnn_frontend")

    @property
    def tokenizer_dir(self) -> Optional[Path]:
        p = self.root / "tokenizer"
        return p if all((p / f).is_file() for f in TOKENIZER_FILES) else None

    @property
    def hellaswag(self) -> Optional[Path]:
        return self._path("hellaswag_path")

    @property
    def dataset(self) -> tuple[Optional[str], Optional[Path]]:
        """(DATASET, --source): a recipe and its packed input, local files as DATASET, or (None, None)."""
        kind, p = self.contents.get("dataset_kind"), self._path("dataset_path")
        if kind == "recipe" and p is not None:
            return str(self.contents.get("dataset")), p
        if kind == "local" and p is not None:
            return str(p), None
        return None, None

    def image(self, which: str) -> Optional[tuple[Path, dict[str, Any]]]:
        """(tar, {"ref", "id", "recipe_hash", ...}) of the packed runtime / data image, or None."""
        info = (self.contents.get("images") or {}).get(which)
        name = IMAGE_RUNTIME if which == "runtime" else IMAGE_DATA
        if not info or not (self.root / name).is_file():
            return None
        return self.root / name, info


def use_bundle(path: Path, data_root: Path, console: Any = None) -> Unpacked:
    """Open, check and unpack a bundle under ``<data_root>/bundles`` (a progress bar while unpacking)."""
    b = open_bundle(path)
    root = DataLayout(Path(data_root)).bundles
    if (unpacked_dir(root, b) / MANIFEST).is_file():
        return Unpacked(unpacked_dir(root, b), b.manifest, Path(path))
    with progress_bar(f"unpacking {Path(path).name}", total_bytes(b), console=console, unit="bytes") as bar:
        dest = unpack(b, root, bar.advance)
    return Unpacked(dest, b.manifest, Path(path))
