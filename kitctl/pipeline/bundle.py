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
import stat
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
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import SPECIAL_HINT, special_kind
from kitctl.core.progress import progress_bar
from kitctl.data import hellaswag
from kitctl.data import sources as src
from kitctl.data.recipes import load_recipe, recipe_names
from kitctl.data.tokenizer import EMBEDDED_DIR
from kitctl.host import registry
from kitctl.host.runtimes import data_image_ref, runtime_image_ref
from kitctl.images import llmc_source
from kitctl.pipeline import wheelhouse
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
    force: bool = False
    wheels: Optional[wheelhouse.WheelOptions] = wheelhouse.WheelOptions()   # None: --no-wheels


def _inside(f: Path, folder: Path) -> bool:
    """``f`` is no link and, with every link on its way resolved, still inside ``folder``."""
    real = os.path.realpath(folder)
    return not f.is_symlink() and os.path.commonpath([os.path.realpath(f), real]) == real


def _skip_links(files: list[Path], folder: Path, flag: str, say: Optional[Say]) -> list[Path]:
    """``files`` less every symlink (and every file a link leads to out of ``folder``): packing follows no link,
    so a link to a system file never becomes a member. Each one left out is said."""
    kept = [f for f in files if _inside(f, folder)]
    left = [f for f in files if f not in kept]
    if left and say is not None:
        say(f"note: {flag} {folder}: {len(left)} symlink(s) left out (a bundle packs no links): "
            + ", ".join(str(f.relative_to(folder)) for f in left[:5]) + (" ..." if len(left) > 5 else ""))
    return kept


def _files_under(folder: Path, flag: str = "", say: Optional[Say] = None) -> list[Path]:
    found = sorted(p for p in folder.rglob("*") if (p.is_file() or p.is_symlink())
                   and not any(x.startswith(".") for x in p.relative_to(folder).parts))
    return _skip_links(found, folder, flag, say)


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
            files = [(f"dataset/{s.name}/{f.relative_to(s).as_posix()}", f) for f in _files_under(s, "--source", say)]
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
    paths = _skip_links([f.absolute() for f in paths], base.absolute(), "--dataset", say)
    if not paths:
        raise ConfigError(f"--dataset {spec}: every input file is a symlink, and a bundle packs no links",
                          "give the files themselves (copy them into a folder)")
    return ([(f"dataset/{base.name}/{f.absolute().relative_to(base.absolute()).as_posix()}", f) for f in paths],
            {"dataset": spec, "dataset_kind": "local", "dataset_path": f"dataset/{base.name}"})


def _llmc(cfg: KitConfig, opts: PackOptions, work: Path, say: Say) -> tuple[list[tuple[str, Path]], dict]:
    pin = pins.load().llmc
    spec = opts.llmc_src or cfg.mirrors.llmc_src
    local = Path(spec).expanduser() if spec and not spec.startswith(("http://", "https://")) else None
    if local is not None and local.is_dir():      # a checkout: its allow-listed files, as the build takes them
        tree = work / "llm.c"
        got = llmc_source.fetch(str(local), tree)
        say(f"llm.c: checkout {local} ({got.label()})" + ("" if got.verified else
            ": no git HEAD to check against the pin, so the bundle claims no commit for it"))
        return ([(f"llmc/llm.c/{f.relative_to(tree).as_posix()}", f) for f in _files_under(tree)],
                {"llmc": "llmc/llm.c", "llmc_commit": got.commit if got.verified else None,
                 "llmc_verified": got.verified})
    name = f"llmc/llm.c-{pin.commit}.tar.gz"
    if local is not None:
        tarball = local
    else:
        tarball = work / "llmc.tar.gz"
        llmc_source.download_tarball(spec, tarball, cfg.ca_cert)
    llmc_source.check_tarball(tarball, str(local) if local is not None else spec or "the pinned URL")
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
    try:
        n = hellaswag.check_source(Path(path))
    except ConfigError as e:         # a download names its URL, never the temp folder it went to
        if opts.hellaswag_source is not None or Path(path) == cfg.layout.hellaswag_jsonl:
            raise
        raise ConfigError(e.message.replace(str(path), f"the download of {url}"), e.hint) from None
    warn = hellaswag.pin_warning(Path(path), n)
    if warn:
        say(f"warning: {warn}")
    return [(bf.HELLASWAG, Path(path))], {"hellaswag_path": bf.HELLASWAG, "hellaswag_examples": n}


def _naming(say: Say, tmp: Path, name: str) -> Say:
    """``say`` with the temp path ``tmp`` shown as the member ``name``."""
    return lambda line: say(line.replace(str(tmp), name))


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
        try:          # the messages name the member, never the temp folder the tar goes through
            save_tar(ref, tar, console=console, say=_naming(say, tar, member))
        except KitError as e:
            e.message = e.message.replace(str(tar), member).replace(str(work), "the bundle's work folder")
            raise
        files.append((member, tar))
        info[which] = {"ref": ref, "recipe_hash": lab.get(registry.RECIPE_HASH, ""), "labels": lab}
    return files, {"images": info}


def check_out(out: Path, opts: PackOptions) -> None:
    """--out is a new file, a bundle (replaced), or another file only with --force; never a folder, a special file
    or one of the inputs."""
    if out.is_symlink() or out.exists():
        st = os.stat(out) if out.exists() else None
        if st is None or stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"--out {out} is {'a folder' if st else 'a dangling symlink'}",
                              "give a file name, e.g. --out llmc-bundle.tar")
        kind = special_kind(st.st_mode)
        if kind:
            raise ConfigError(f"--out {out} is {kind}, not a file to write", SPECIAL_HINT)
        given = [p for p in (opts.source, opts.hellaswag_source, opts.cudnn_frontend,
                             Path(os.path.expanduser(opts.dataset)) if opts.dataset else None,
                             Path(os.path.expanduser(opts.llmc_src)) if opts.llmc_src else None) if p is not None]
        _not_an_input(out, [("", p) for p in given if p.is_file()])
        if not opts.force and not bf.is_bundle(out):
            raise ConfigError(f"--out {out} exists and is not a kitctl bundle: it would be replaced",
                              "give a new file name, or add --force to replace it")


def _not_an_input(out: Path, files: list[tuple[str, Path]]) -> None:
    if not out.exists():
        return
    for _, p in files:
        if os.path.samefile(out, p):
            raise ConfigError(f"--out {out} is one of the bundle's inputs ({p}): writing it would destroy it",
                              "write the bundle to another file")


def _wheels(cfg: KitConfig, w: wheelhouse.WheelOptions, work: Path, say: Say) -> tuple[list[tuple[str, Path]], dict]:
    wh = wheelhouse.make(cfg, w, work, say)
    size = sum(p.stat().st_size for p in wh.files)
    say(f"wheelhouse: {len(wh.files)} wheels ({wh.kit_wheel.name} + {len(wh.deps)} dependencies), "
        f"{size / 1e6:,.0f} MB, for {w.target()}" + (f", extras {', '.join(w.extras)}" if w.extras else ""))
    return wheelhouse.members(wh, bf.WHEELS), {"wheels": {
        "dir": bf.WHEELS, "kit_wheel": f"{bf.WHEELS}/{wh.kit_wheel.name}", "count": len(wh.files),
        "target": w.target(), "extras": list(w.extras)}}


def _check_inputs(opts: PackOptions) -> Path:
    """Bad options and missing paths: exit 2 before anything is read, downloaded or written; the --out path."""
    out = Path(opts.out).absolute()
    check_out(out, opts)
    if opts.preset not in load_presets():
        raise ConfigError(f"unknown preset {opts.preset!r}", f"use one of: {', '.join(load_presets())}")
    llmc_local = Path(opts.llmc_src).expanduser() if opts.llmc_src and not opts.llmc_src.startswith(
        ("http://", "https://")) else None
    for flag, p in (("--source", opts.source), ("--hellaswag-source", opts.hellaswag_source),
                    ("--cudnn-frontend", opts.cudnn_frontend), ("--llmc-src", llmc_local)):
        if p is not None and not Path(p).exists():
            raise ConfigError(f"{flag} {p}: no such file or folder", f"check the path given to {flag}")
    if opts.wheels is not None:
        wheelhouse.check_options(opts.wheels)
    return out


def pack_plan(cfg: KitConfig, opts: PackOptions) -> list[str]:
    """``kitctl bundle --dry-run``: what would be packed, every download with where it comes from (after
    mirrors), and up front what the real run would refuse (a missing runtime image). Reads, downloads and writes nothing big."""
    out = _check_inputs(opts)
    lines = [f"would write {out}:"]
    spec = opts.dataset or load_presets()[opts.preset].data
    if opts.source is not None:
        lines.append(f"  dataset {spec}: pack {Path(opts.source).absolute()}")
    elif spec in recipe_names():
        r = load_recipe(spec)
        lines.append(f"  dataset {spec}: " + ("ships with the kit (nothing to pack)" if r.kind == "text" else
                     "not packed (the offline box reads it with --source, or pack its files with --source)"))
    else:
        lines.append(f"  dataset: pack the local files {spec}")
    llmc = opts.llmc_src or cfg.mirrors.llmc_src
    pin = pins.load().llmc
    if llmc and not llmc.startswith(("http://", "https://")):
        p = Path(llmc).expanduser()
        lines.append(f"  llm.c: pack the checkout {p} (allow-listed files; its commit is claimed only when git "
                     "HEAD shows the pin)" if p.is_dir() else f"  llm.c: pack the tarball {p} (checked against "
                     "the pin)")
    else:
        lines.append(f"  llm.c: DOWNLOAD {llmc or pin.tarball_url.format(commit=pin.commit)} (checked against the "
                     "pin)")
    if opts.hellaswag_source is not None:
        lines.append(f"  HellaSwag: pack {Path(opts.hellaswag_source).absolute()}")
    elif cfg.layout.hellaswag_jsonl.is_file():
        lines.append(f"  HellaSwag: pack {cfg.layout.hellaswag_jsonl} (downloaded before)")
    else:
        lines.append(f"  HellaSwag: DOWNLOAD {cfg.mirrors.hellaswag_url or load_recipe('hellaswag').url}")
    lines.append(f"  tokenizer: pack {cfg.tokenizer_dir or EMBEDDED_DIR} ({', '.join(bf.TOKENIZER_FILES)})")
    if opts.cudnn_frontend is not None:
        lines.append(f"  cudnn-frontend: pack {Path(opts.cudnn_frontend).absolute()}")
    lines += _images_plan(cfg) if opts.images else ["  images: left out (--no-images)"]
    lines += _wheels_plan(cfg, opts.wheels)
    return lines


def _images_plan(cfg: KitConfig) -> list[str]:
    out = []
    for which, ref in (("runtime", runtime_image_ref(cfg)), ("data", data_image_ref(cfg))):
        if registry.labels(ref) is None:
            if which == "runtime":
                raise ConfigError(f"no image {ref} to pack", "build it first (`kitctl build`), or leave the images "
                                  "out with --no-images (the offline box then builds or pulls them)")
            out.append(f"  images: no {ref} (the bundle holds the runtime image only)")
            continue
        out.append(f"  images: docker save {ref}")
    return out


def _wheels_plan(cfg: KitConfig, w: Optional[wheelhouse.WheelOptions]) -> list[str]:
    if w is None:
        return ["  wheelhouse: left out (--no-wheels)"]
    index = cfg.mirrors.pip_index or "pip's configured index"
    if w.kit_wheel is not None:
        kit = f"pack {w.kit_wheel}"
    elif wheelhouse.checkout() is not None:
        kit = f"build from {wheelhouse.checkout()} (pip wheel; DOWNLOAD its build backend hatchling from {index})"
    else:
        kit = "pack again from this installed kitctl (its installed files)"
    cache = cfg.layout.wheelhouse_cache / wheelhouse.cache_key(w)
    deps = (f"pack {len(list(cache.glob('*.whl')))} wheels from {cache} (made before)"
            if (cache / wheelhouse.COMPLETE).is_file() else f"DOWNLOAD from {index} (pip download, locked "
            f"versions, wheels only; ~60 wheels, ~150 MB without extras) into {cache}")
    return [f"  wheelhouse ({w.target()}{', extras ' + ','.join(w.extras) if w.extras else ''}): kitctl's wheel: "
            f"{kit}; its dependencies: {deps}"]


def pack(cfg: KitConfig, opts: PackOptions, console: Optional[Console] = None, say: Say = print) -> bf.BundleManifest:
    """Gather every input, then write the bundle at ``opts.out`` (atomically)."""
    out = _check_inputs(opts)
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
            files += [(f"cudnn-frontend/include/{f.relative_to(inc).as_posix()}", f)
                      for f in _files_under(inc, "--cudnn-frontend", say)]
            contents["cudnn_frontend"] = "cudnn-frontend/include"
        if opts.images:
            f, c = _images(cfg, work, console, say)
            files += f
            contents.update(c)
        else:
            say("images left out (--no-images): the offline box builds them, pulls them (--image) or runs native")
        if opts.wheels is not None:
            f, c = _wheels(cfg, opts.wheels, work, say)
            files += f
            contents.update(c)
        else:
            say("wheelhouse left out (--no-wheels): the offline box needs kitctl installed another way")
        _not_an_input(out, files)
        total = 2 * sum(p.stat().st_size for _, p in files)
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with progress_bar(f"packing {out.name}", total, console=console, unit="bytes") as bar:
            m = bf.write_bundle(out, files, contents, __version__, now, bar.advance)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"wrote {out}: {len(m.members)} members, {out.stat().st_size / 1e6:,.1f} MB "
        f"(manifest.json first, with each member's sha256)")
    return m
