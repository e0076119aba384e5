"""Where each stage of the reproduce plan downloads from, after every mirror (kit.yaml ``mirrors:``, the command's
flags, the bundle): base images, apt and pip indexes, llm.c's source, the HuggingFace endpoint, HellaSwag's URL.
Read-only: asked of the areas' own planners (kitctl.images.render.download_sources, DataPlan.downloads), so the
dry run names every host before anything is fetched; ``kitctl doctor`` probes the same list.
"""
from __future__ import annotations

from typing import Optional

from kitctl.core import net, pins
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError
from kitctl.data.plan import make_plan
from kitctl.host import doctor
from kitctl.images import lock as images_lock
from kitctl.images.render import PYPI_INDEX, download_sources
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
        src = llmc_source(cfg, opts)
        return [("llm.c", src)] if src.startswith(("http://", "https://")) else []
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


HUB_REGISTRY = "registry-1.docker.io"


def registry_url(registry: str) -> str:
    """The URL a registry (or Docker Hub mirror) answers on: ``/v2/`` of its host; plain http for a loopback
    registry (Docker's own default for localhost / 127.0.0.0/8), https otherwise."""
    host = registry.split("/", 1)[0]
    if host in ("", "docker.io", "index.docker.io"):
        host = HUB_REGISTRY
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    scheme = "http" if name == "localhost" or name.startswith("127.") else "https"
    return f"{scheme}://{host}/v2/"


def endpoints(cfg: KitConfig) -> list[doctor.Endpoint]:
    """Every host the reproduce plan downloads from on this config, after mirrors, each with the offline way round
    it (``kitctl doctor`` probes them). A local llm.c source, a cached HellaSwag jsonl: nothing to reach."""
    bundle = "`kitctl bundle --out FILE` on a connected box, then `--bundle FILE` here"
    hf = (cfg.mirrors.hf_endpoint or net.hf_endpoint()).rstrip("/")
    out = [doctor.Endpoint("data", "HF endpoint", hf, "set mirrors.hf_endpoint to a HuggingFace mirror you reach, "
                           f"or pass the dataset's files with --source, or {bundle}")]
    try:
        hs = make_plan(cfg, "hellaswag").downloads()
    except ConfigError:
        hs = []
    out += [doctor.Endpoint("data", "HellaSwag", u, "set mirrors.hellaswag_url (or --hellaswag-source URL) to a "
                            f"copy you reach, or --hellaswag-source FILE, or {bundle}") for u in hs]
    if cfg.runtime == "docker":
        out.append(doctor.Endpoint("build", "registry", registry_url(cfg.mirrors.registry),
                                   "set mirrors.registry to a Docker Hub mirror you reach, or pull a built image "
                                   f"(--image REGISTRY/REPO), or {bundle} (it packs the images)"))
        out.append(doctor.Endpoint("build", "PyPI index", cfg.mirrors.pip_index or PYPI_INDEX,
                                   f"set mirrors.pip_index to a PyPI mirror you reach, or {bundle}"))
    spec = cfg.mirrors.llmc_src
    if not spec or str(spec).startswith(("http://", "https://")):
        p = pins.load().llmc
        out.append(doctor.Endpoint("build", "llm.c source", str(spec or p.tarball_url.format(commit=p.commit)),
                                   "set mirrors.llmc_src to a local checkout or the pinned tarball (or a URL you "
                                   f"reach), or {bundle}"))
    return out
