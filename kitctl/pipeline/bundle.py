"""``kitctl bundle --out FILE``: pack what a box without network needs for ``kitctl reproduce`` into one file.

The format and its checks live in kitctl/core/bundle.py (the reader is shared with build and data). Here: which
files go in, asked of each area -- the images (``docker save``, kitctl.cluster.export.save_tar), llm.c's source
(kitctl.images.llmc_source: the pinned tarball, checked, or an allow-listed checkout), cudnn-frontend's headers
(native builds), GPT-2's BPE files (kitctl.data.tokenizer), the HellaSwag jsonl (checked against the recipe's pin)
and, when given as local files, the dataset's input. Everything is gathered (downloads included) before the
archive is written; the archive is written beside ``FILE`` and renamed onto it when whole.
"""
from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from rich.console import Console

from kitctl import __version__
from kitctl.cluster.export import save_tar
from kitctl.core import bundle as bf
from kitctl.core import pins
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError
from kitctl.core.progress import progress_bar
from kitctl.data import hellaswag
from kitctl.data import sources as src
from kitctl.data.recipes import load_recipe, recipe_names
from kitctl.data.tokenizer import EMBEDDED_DIR
from kitctl.host import registry
from kitctl.host.runtimes import data_image_ref, runtime_image_ref
from kitctl.images import llmc_source
from kitctl.train import load_presets

Say = Callable[[str], None]


@dataclass(frozen=True)
class PackOptions:
    out: Path
    preset: str = "gpt2-124m"
    dataset: Optional[str] = None
    source: Optional[Path] = None
    hellaswag_source: Optional[Path] = None
    llmc_src: Optional[str] = None
    cudnn_frontend: Optional[Path] = None
    images: bool = True


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
                  and not any(x.startswith(".") for x in p.relative_to(folder).parts))


def _dataset(opts: PackOptions, out_dir: Path, say: Say) -> tuple[list[tuple[str, Path]], dict]:
    spec = opts.dataset or load_presets()[opts.preset].data
    if spec in recipe_names():
        r = load_recipe(spec)
        if opts.source is None:
            if r.kind == "text":
                say(f"dataset {spec}: its input ships with the kit (nothing to pack)")
            else:
                say(f"note: dataset {spec} is not packed (it is read from the HF hub): the offline box needs "
                    f"--source there, or pack it here with --source (its downloaded files)")
            return [], {"dataset": spec, "dataset_kind": "none"}
        s = Path(opts.source).absolute()
        if s.is_dir():
            files = [(f"dataset/{s.name}/{f.relative_to(s).as_posix()}", f) for f in _files_under(s)]
            if not files:
                raise ConfigError(f"--source {s} is an empty folder", "give the folder of the recipe's files")
        else:
            files = [(f"dataset/{s.name}", s)]
        return files, {"dataset": spec, "dataset_kind": "recipe", "dataset_path": f"dataset/{s.name}"}
    if opts.source is not None:
        raise ConfigError("--source is a recipe's input: with local files as --dataset it does nothing",
                          "leave --source out, or give a recipe name as --dataset")
    paths = src.resolve_local(spec, out_dir)
    p = Path(os.path.expanduser(spec))
    if p.is_file():
        return [(f"dataset/{p.name}", p.absolute())], {"dataset": spec, "dataset_kind": "local",
                                                        "dataset_path": f"dataset/{p.name}"}
    base = p if p.is_dir() else Path(os.path.commonpath([str(f.parent.absolute()) for f in paths]))
    return ([(f"dataset/{base.name}/{f.absolute().relative_to(base.absolute()).as_posix()}", f) for f in paths],
            {"dataset": spec, "dataset_kind": "local", "dataset_path": f"dataset/{base.name}"})


def _llmc(cfg: KitConfig, opts: PackOptions, work: Path, say: Say) -> tuple[list[tuple[str, Path]], dict]:
    pin = pins.load().llmc
    spec = opts.llmc_src or cfg.mirrors.llmc_src
    local = Path(spec).expanduser() if spec and not spec.startswith(("http://", "https://")) else None
    if local is not None and local.is_dir():      # a checkout: its allow-listed files, as the build takes them
        tree = work / "llm.c"
        got = llmc_source.fetch(str(local), tree)
        say(f"llm.c: checkout {local} ({got.label()})")
        return ([(f"llmc/llm.c/{f.relative_to(tree).as_posix()}", f) for f in _files_under(tree)],
                {"llmc": "llmc/llm.c", "llmc_commit": got.commit})
    name = f"llmc/llm.c-{pin.commit}.tar.gz"
    if local is not None:
        tarball = local
    else:
        tarball = work / "llmc.tar.gz"
        llmc_source.download_tarball(spec, tarball, cfg.ca_cert)
    llmc_source.check_tarball(tarball)
    say(f"llm.c: tarball {spec or pin.tarball_url.format(commit=pin.commit)} (sha256 matches the pin)")
    return [(name, tarball)], {"llmc": name, "llmc_commit": pin.commit}


def _hellaswag(cfg: KitConfig, opts: PackOptions, work: Path, say: Say) -> tuple[list[tuple[str, Path]], dict]:
    path = opts.hellaswag_source
    if path is None:
        cached = cfg.layout.hellaswag_jsonl
        if cached.is_file():
            path = cached
        else:
            url = cfg.mirrors.hellaswag_url or load_recipe("hellaswag").url
            assert url
            path = hellaswag.download(url, work / "hellaswag_val.jsonl", offline_hint="--hellaswag-source")
    n = hellaswag.check_source(Path(path))
    warn = hellaswag.pin_warning(Path(path), n)
    if warn:
        say(f"warning: {warn}")
    return [(bf.HELLASWAG, Path(path))], {"hellaswag_path": bf.HELLASWAG, "hellaswag_examples": n}


def _images(cfg: KitConfig, work: Path, console: Optional[Console], say: Say) -> tuple[list[tuple[str, Path]], dict]:
    files: list[tuple[str, Path]] = []
    info: dict = {}
    for which, ref, member in (("runtime", runtime_image_ref(cfg), bf.IMAGE_RUNTIME),
                               ("data", data_image_ref(cfg), bf.IMAGE_DATA)):
        lab = registry.labels(ref)
        if lab is None:
            if which == "runtime":
                raise ConfigError(f"no image {ref} to pack", "build it first (`kitctl build`), or leave the images "
                                  "out with --no-images (the offline box then builds or pulls them)")
            say(f"note: no {ref} image: the bundle holds the runtime image only (`kitctl data` then tokenizes "
                "natively, same output)")
            continue
        tar = work / f"{which}.tar"
        save_tar(ref, tar, console=console, say=say)
        files.append((member, tar))
        info[which] = {"ref": ref, "recipe_hash": lab.get(registry.RECIPE_HASH, ""), "labels": lab}
    return files, {"images": info}


def pack(cfg: KitConfig, opts: PackOptions, console: Optional[Console] = None, say: Say = print) -> bf.BundleManifest:
    """Gather every input, then write the bundle at ``opts.out`` (atomically)."""
    out = Path(opts.out).absolute()
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder", "give a file name, e.g. --out llmc-bundle.tar")
    if opts.preset not in load_presets():
        raise ConfigError(f"unknown preset {opts.preset!r}", f"use one of: {', '.join(load_presets())}")
    llmc_local = Path(opts.llmc_src).expanduser() if opts.llmc_src and not opts.llmc_src.startswith(
        ("http://", "https://")) else None
    for flag, p in (("--source", opts.source), ("--hellaswag-source", opts.hellaswag_source),
                    ("--cudnn-frontend", opts.cudnn_frontend), ("--llmc-src", llmc_local)):
        if p is not None and not Path(p).exists():
            raise ConfigError(f"{flag} {p}: no such file or folder", f"check the path given to {flag}")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".kitctl-bundle-", dir=out.parent))
    try:
        files: list[tuple[str, Path]] = []
        contents: dict = {"preset": opts.preset}
        for part in (_dataset(opts, cfg.layout.bundle_work, say), _llmc(cfg, opts, work, say),
                     _hellaswag(cfg, opts, work, say)):
            files += part[0]
            contents.update(part[1])
        tok = cfg.tokenizer_dir or EMBEDDED_DIR
        files += [(f"tokenizer/{n}", Path(tok) / n) for n in bf.TOKENIZER_FILES]
        if opts.cudnn_frontend is not None:
            inc = Path(opts.cudnn_frontend).absolute()
            files += [(f"cudnn-frontend/include/{f.relative_to(inc).as_posix()}", f) for f in _files_under(inc)]
            contents["cudnn_frontend"] = "cudnn-frontend/include"
        if opts.images:
            f, c = _images(cfg, work, console, say)
            files += f
            contents.update(c)
        else:
            say("images left out (--no-images): the offline box builds them, pulls them (--image) or runs native")
        total = 2 * sum(p.stat().st_size for _, p in files)
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with progress_bar(f"packing {out.name}", total, console=console, unit="bytes") as bar:
            m = bf.write_bundle(out, files, contents, __version__, now, bar.advance)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"wrote {out}: {len(m.members)} members, {out.stat().st_size / 1e6:,.1f} MB "
        f"(manifest.json first, with each member's sha256)")
    return m
