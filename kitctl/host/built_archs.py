"""Which arch list ``kitctl train`` would run with, and whether it covers this box's GPUs (doctor's "arch list").

kit.yaml's ``arch`` says what the next ``kitctl build`` makes; what a run loads is what was built. So the judgement
reads the built thing of the configured runtime:

* native: the record a native build leaves beside its binaries (kitctl.core.native_build_record) in the data
  root's native bin folder, where ``kitctl train --runtime native`` takes them from;
* docker: the ``org.llmc-kit.archs`` label of the runtime image (``<image>:latest``, host.runtimes.runtime_image_ref).

When there is nothing to read (nothing built yet, the engine down, an image without the label, a damaged record)
kit.yaml's list is judged instead and the finding says so. :func:`native` and :func:`image` look; :func:`from_label`
and :func:`judge` are pure.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from kitctl.core import native_build_record as rec
from kitctl.core.config import KitConfig
from kitctl.core.errors import KitError
from kitctl.core.llmc_files import BINARIES
from kitctl.core.records import short
from kitctl.core.validate import arch_list
from kitctl.host import registry


@dataclass(frozen=True)
class Built:
    """What a run would load: ``source`` (the record's path, or ``image REF``) and its arch list; ``archs`` None
    when it cannot be known, ``why`` saying why; ``damaged``: something is there but unreadable. ``cudnn``: the
    BF16 binary's cuDNN as the record says (None: not known)."""

    source: str
    archs: Optional[list[int]] = None
    why: str = ""
    damaged: bool = False
    cudnn: Optional[bool] = None


def native(bin_dir: Path) -> Built:
    """The native binaries in ``bin_dir`` and their build record (read-only; a damaged record is reported)."""
    path = rec.record_path(bin_dir)
    try:
        built = [b for b in BINARIES.values() if (bin_dir / b).is_file()]
        there = path.exists() or path.is_symlink()
    except OSError as e:           # a folder this user may not search
        return Built(str(bin_dir), why=f"cannot look into {bin_dir}: {e.strerror or e}")
    if not built:
        return Built(str(bin_dir), why=f"nothing built yet in {bin_dir}")
    if not there:
        return Built(str(path), why=f"the binaries in {bin_dir} have no build record ({path.name}; built before "
                                    "kitctl recorded it)")
    try:
        record = rec.NativeBuild.read(path)
        changed = rec.changed_binaries(record, bin_dir)
    except KitError as e:
        return Built(str(path), why=short(e.message), damaged=True)
    if changed:
        return Built(str(path), why=f"{', '.join(changed)} in {bin_dir} changed since {path.name} was written (not "
                                    "the binaries it describes)", damaged=True)
    return Built(str(path), archs=record.archs, cudnn=record.cudnn)


def from_label(ref: str, text: Optional[str]) -> Built:
    """The runtime image ``ref`` from its ``org.llmc-kit.archs`` label text (None: the image has no such label)."""
    source = f"image {ref}"
    if text is None:
        return Built(source, why=f"image {ref} has no {registry.ARCHS_LABEL} label", damaged=True)
    try:
        return Built(source, archs=arch_list(text, registry.ARCHS_LABEL))
    except KitError as e:
        return Built(source, why=f"image {ref}: {short(e.message)}", damaged=True)


def label_cudnn(labels: Optional[dict[str, str]]) -> Optional[bool]:
    """The BF16 binary's cuDNN as an image's ``org.llmc-kit.cudnn`` label says ("on" / "off"; else None)."""
    return {"on": True, "off": False}.get((labels or {}).get(registry.CUDNN_LABEL) or "")


def image(ref: str, engine: bool) -> Built:
    """The runtime image ``ref`` as the engine shows it (``engine``: the engine answered)."""
    if not engine:
        return Built(f"image {ref}", why=f"the docker engine does not answer: image {ref} cannot be read")
    try:
        return from_label(ref, registry.image_archs(ref))
    except KitError:
        return Built(f"image {ref}", why=f"no image {ref} yet")
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        return Built(f"image {ref}", why=f"cannot inspect image {ref}: {short(e, 160)}")


def _csv(archs: Iterable[int]) -> str:
    return ",".join(map(str, sorted(archs)))


def _kit_yaml_lags(gpu_archs: list[int], cfg: KitConfig) -> str:
    """What to say when the binaries cover the GPUs but kit.yaml's list (the next build's) does not."""
    if cfg.arch == "auto":
        return ""
    lacks = [a for a in gpu_archs if a not in cfg.arch]
    if not lacks:
        return ""
    keep = sorted(set(cfg.arch) | set(lacks))
    return (f"kit.yaml's arch {cfg.arch} lacks {lacks}: a rebuild without --arch would drop them; set arch: "
            f"[{', '.join(map(str, keep))}] in kit.yaml")


@dataclass(frozen=True)
class Coverage:
    """How binaries built for ``built`` run on GPUs of ``gpu_archs``. Each arch is built as SASS plus its PTX
    (native/build.sh: ``code=[compute_XX,sm_XX]``), and the driver compiles PTX for any newer GPU: a GPU runs its
    own SASS, else the PTX of the newest built arch below it (``jit``: GPU arch -> that arch), else nothing
    (``missing``: every built arch is newer). Measured on an H100 (docs/validation.md, section 12): compute_80 and
    compute_86 PTX trained at 326,261 and 324,725 tok/s against 325,855-326,212 for sm_90 SASS; an sm_100-only
    build exits 1 there."""

    jit: dict[int, int]
    missing: list[int]


def coverage(gpu_archs: Iterable[int], built: Iterable[int]) -> Coverage:
    built = sorted(set(built))
    jit, missing = {}, []
    for g in gpu_archs:
        if g in built:
            continue
        below = [b for b in built if b < g]
        if below:
            jit[g] = below[-1]
        else:
            missing.append(g)
    return Coverage(jit, missing)


def _judge_list(what: str, archs: list[int], gpu_archs: list[int], build: str) -> tuple[str, str, str]:
    """(status, detail, meaning) of ``archs`` (``what``: where the list comes from) against ``gpu_archs``."""
    cov = coverage(gpu_archs, archs)
    rebuild = f"`{build} --arch {_csv(set(archs) | set(gpu_archs))}`"
    if cov.missing:
        return ("fail", f"{what} {archs} has no code for sm_{'/'.join(map(str, cov.missing))} of this box's GPUs "
                        "(every arch in it is newer)",
                f"kitctl train would stop with CUDA's 'no kernel image is available': rebuild with {rebuild}")
    sms = "sm_" + "/".join(map(str, gpu_archs))
    if cov.jit:
        via = ", ".join(f"sm_{g} from compute_{b} PTX" for g, b in sorted(cov.jit.items()))
        return ("warn", f"{what} {archs} lacks {sorted(cov.jit)}: runs {via} (the driver compiles it at start)",
                "it trains (on an H100, compute_80/86 PTX ran within 0.5% of sm_90 code, ~0.4 s more start-up); "
                f"for the GPUs' own code rebuild with {rebuild}")
    return ("ok", f"{what} {archs} covers {sms}", "")


def judge(gpu_archs: list[int], cfg: KitConfig, built: Optional[Built]) -> Optional[tuple[str, str, str]]:
    """(status, detail, meaning) of the arch list a run would use against ``gpu_archs`` (what ``kitctl build --arch``
    takes for this box's GPUs; see :class:`Coverage` for what runs where). ``built`` None: not looked, kit.yaml's
    list is judged without a word about it. None: nothing to judge (kit.yaml's arch is auto and nothing built could
    be read)."""
    build = "kitctl build --runtime native" if cfg.runtime == "native" else "kitctl build"
    sms = "sm_" + "/".join(map(str, gpu_archs))
    if built is not None and built.archs is not None:
        status, detail, meaning = _judge_list(f"{built.source}: built for", built.archs, gpu_archs, build)
        if status == "ok":
            meaning = _kit_yaml_lags(gpu_archs, cfg)
        return status, detail, meaning
    said = f"{built.why}; judged kit.yaml's arch instead: " if built is not None else ""
    fix = f"rebuild (`{build} --arch {{}}`) to replace {built.source}" if built is not None and built.damaged else ""
    if cfg.arch == "auto":
        if built is None:
            return None
        return ("warn" if fix else "ok", f"{said}auto builds for {sms}", fix.format(_csv(gpu_archs)))
    status, detail, meaning = _judge_list(f"{said}arch", list(cfg.arch), gpu_archs, build)
    if status == "ok" and fix:
        return "warn", detail, fix.format(_csv(set(cfg.arch) | set(gpu_archs)))
    return status, detail, meaning + (", or set arch: auto in kit.yaml" if meaning else "")
