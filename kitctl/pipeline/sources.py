"""Where each stage of the reproduce plan downloads from, after every mirror (kit.yaml ``mirrors:``, the command's
flags, the bundle): base images, apt and pip indexes, llm.c's source, the HuggingFace endpoint, HellaSwag's URL.
Read-only: asked of the areas' own planners (kitctl.images.render.download_sources, DataPlan.downloads), so the
dry run names every host before anything is fetched; ``kitctl doctor`` probes the same list.
"""
from __future__ import annotations

from typing import Optional

from kitctl.core import pins
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError
from kitctl.images import lock as images_lock
from kitctl.images.render import download_sources
from kitctl.images.request import BuildRequest
from kitctl.pipeline import forecast as fc
from kitctl.pipeline.inputs import Gathered, ReproduceOptions

Sources = list[tuple[str, str]]
ANY_ARCHS = [90]      # the arch list does not change where a build downloads from


def build_request(cfg: KitConfig, opts: ReproduceOptions, archs: list[int], target: str = "runtime") -> BuildRequest:
    """The build the plan's build stage would run (the lock applied, as `kitctl build` and the stage use it)."""
    req = BuildRequest.from_config(cfg, archs=archs or (None if cfg.arch != "auto" else ANY_ARCHS), target=target,
                                   llmc_src=opts.llmc_src)
    req.lock = images_lock.load()
    return req


def llmc_source(cfg: KitConfig, opts: ReproduceOptions) -> str:
    spec = opts.llmc_src or cfg.mirrors.llmc_src
    if spec:
        return str(spec)
    p = pins.load().llmc
    return p.tarball_url.format(commit=p.commit)


def build_sources(cfg: KitConfig, opts: ReproduceOptions, b: fc.BuildInput, archs: list[int]) -> Sources:
    if b.exists:
        return []
    if b.bundled:
        assert opts.bundle is not None
        return [("image", f"the bundle {opts.bundle.source}")]
    if b.pulled:
        return [("image", str(cfg.pull_image))]
    if b.kind == "native":
        return [("llm.c", llmc_source(cfg, opts))]
    try:
        return download_sources(build_request(cfg, opts, archs))
    except ConfigError as e:        # the build stage says this itself when it runs
        return [("build", f"not planned: {e.message}")]


def stage_sources(cfg: KitConfig, opts: ReproduceOptions, g: Gathered, f: fc.Forecast) -> dict[str, Sources]:
    """stage -> (what, where) for each stage still to run that downloads; nothing for a finished stage."""
    out: dict[str, Sources] = {}
    for s in f.stages:
        src: Optional[Sources] = None
        if s.status in ("done", "skipped"):
            src = []
        elif s.name == "build":
            src = build_sources(cfg, opts, g.inputs.build, g.archs)
        elif s.name == "data":
            src = [("dataset", w) for w in g.data_plan.downloads()]
        elif s.name == "hellaswag":
            src = [("HellaSwag", w) for w in g.hellaswag_plan.downloads()]
        out[s.name] = src or []
    return out


def attach(cfg: KitConfig, opts: ReproduceOptions, g: Gathered, f: fc.Forecast) -> None:
    """Set each stage's ``sources`` (the dry run's table and ``--json`` show them)."""
    got = stage_sources(cfg, opts, g, f)
    for s in f.stages:
        s.sources = got.get(s.name, [])
