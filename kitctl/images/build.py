"""Tag and build a prepared context with BuildKit.

* :func:`tags` -- ``<image>:<provider>-cu<ver>-sm75-sm86-<hash12>`` (+ ``<image>:latest``) for the runtime target,
  ``<image>:data-<hash12>`` (+ ``<image>:data``) for the data stage, ``<image>:<target>-<provider>-cu<ver>-...``
  for toolchain and build;
* :func:`build_argv` -- the exact ``docker buildx build`` line; ``--dry-run`` prints it and :func:`build` runs
  that same line through :mod:`kitctl.core.proc` (its own process group: Ctrl-C stops the build, progress is
  streamed line by line, a failure shows the last lines).
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Callable, Optional

from kitctl.core import proc
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError, KitError
from kitctl.images.context import Context, recipe_hash
from kitctl.images.inputs import check_ca_bundle
from kitctl.images.render import image_labels, render
from kitctl.images.request import BuildRequest


OFFLINE_BUILD = ("Docker Hub unreachable: set mirrors.registry in kit.yaml to a Docker Hub mirror, or use "
                 "`provider: wheels` with a base_image you can pull, or pull a pushed image instead of building "
                 "(--image REGISTRY/REPO, kit.yaml pull_image), or load one from a bundle (--bundle FILE); apt or "
                 "PyPI unreachable: mirrors.apt / mirrors.pip_index; GitHub (llm.c) unreachable: mirrors.llmc_src "
                 "or --llmc-src (docs/images.md, 'Across a firewall')")


def tags(req: BuildRequest, ctx: Context, target: Optional[str] = None) -> list[str]:
    """The tags a build of ``target`` gets: a content tag and, for runtime and data, the moving one."""
    t = target or req.target
    h = ctx.hashes[t]
    if t == "runtime":
        return [f"{req.image}:{req.provider}-cu{req.cuda_mm}-{req.sm_tag}-{h}", f"{req.image}:latest"]
    if t == "data":
        return [f"{req.image}:data-{h}", f"{req.image}:data"]
    return [f"{req.image}:{t}-{req.provider}-cu{req.cuda_mm}-{req.sm_tag}-{h}"]


def build_args(req: BuildRequest) -> dict[str, str]:
    """The mirrors as build args (checked URLs; the rendered Dockerfile is the same on every network)."""
    out = {}
    if req.apt_mirror:
        out["APT_MIRROR"] = req.apt_mirror
    if req.apt_snapshot:
        out["APT_SNAPSHOT"] = req.apt_snapshot
    if req.pip_index:
        out["PIP_INDEX_URL"] = req.pip_index
    return out


def secrets(req: BuildRequest) -> list[str]:
    """The CA bundle as the BuildKit secret ``ca`` (checked again: it may have moved since the request)."""
    if req.ca_cert is None:
        return []
    ca = check_ca_bundle(Path(req.ca_cert))
    if ca is None or "," in str(ca):
        raise ConfigError(f"--ca-cert {req.ca_cert}: a path with a comma cannot be a BuildKit secret source",
                          "copy the bundle to a path without commas")
    return [f"id=ca,src={ca}"]


def source_date_epoch(env: Optional[dict[str, str]] = None) -> Optional[str]:
    """``SOURCE_DATE_EPOCH`` from the environment (reproducible-builds.org), checked: seconds since 1970, or a
    ConfigError (exit 2); None when unset."""
    v = (os.environ if env is None else env).get("SOURCE_DATE_EPOCH", "").strip()
    if not v:
        return None
    if not re.fullmatch(r"[0-9]{1,12}", v):
        raise ConfigError(f"SOURCE_DATE_EPOCH={v[:40]!r} is not a number of seconds since 1970",
                          "e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%ct), or unset it")
    return v


def buildkit_version() -> Optional[tuple[int, int]]:
    """The BuildKit version of the current buildx builder (``docker buildx inspect``), or None if unknown."""
    try:
        out = subprocess.run(["docker", "buildx", "inspect"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"BuildKit(?: version)?:\s*v?([0-9]+)\.([0-9]+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


REWRITE_TIMESTAMP_SINCE = (0, 13)


def build_argv(req: BuildRequest, ctx: Context, target: Optional[str] = None, cache: bool = True,
               epoch: Optional[str] = None, rewrite: bool = False) -> list[str]:
    """The exact ``docker buildx build`` line (what ``--dry-run`` prints and what :func:`build` runs).

    ``epoch``: SOURCE_DATE_EPOCH, passed as the build arg BuildKit reads (>= 0.11: the image config's dates);
    ``rewrite``: also rewrite every layer's file times to it (BuildKit >= 0.13, ``rewrite-timestamp``), the output
    then ``type=docker`` (what --load is) with that option."""
    t = target or req.target
    out = ["--output", "type=docker,rewrite-timestamp=true"] if (epoch and rewrite) else ["--load"]
    a = ["docker", "buildx", "build", "--progress", "plain", *out, "--target", t,
         "--file", str(ctx.dockerfile)]
    if not cache:
        a.append("--no-cache")
    for s in secrets(req):
        a += ["--secret", s]
    for k, v in sorted({**build_args(req), **({"SOURCE_DATE_EPOCH": epoch} if epoch else {})}.items()):
        a += ["--build-arg", f"{k}={v}"]
    a += ["--label", f"org.llmc-kit.recipe-hash={ctx.hashes[t]}"]
    for tag in tags(req, ctx, t):
        a += ["--tag", tag]
    return [*a, str(ctx.path)]


def build(req: BuildRequest, ctx: Context, target: Optional[str] = None,
          on_line: Optional[Callable[[str], None]] = None, cache: bool = True, epoch: Optional[str] = None,
          rewrite: bool = False) -> list[str]:
    """Build ``target`` (BuildKit), streaming its progress lines to ``on_line``; returns the tags.

    ``cache=False`` is ``--no-cache`` (no layer cache; the apt/pip cache mounts still serve downloads).
    Ctrl-C stops the build and re-raises KeyboardInterrupt."""
    t = target or req.target
    res = proc.stream(build_argv(req, ctx, t, cache=cache, epoch=epoch, rewrite=rewrite), on_line or print,
                      tail_lines=25, grace_s=10)
    if res.interrupted:
        raise KeyboardInterrupt
    if res.returncode != 0:
        raise KitError(f"docker build of target {t} failed (exit {res.returncode}):\n" + "\n".join(res.tail),
                       "read the last step above; behind a TLS proxy pass --ca-cert; " + OFFLINE_BUILD)
    return tags(req, ctx, t)


def expected_labels(req: BuildRequest, ctx: Optional[Context], target: str) -> dict[str, str]:
    """The recipe labels an image of ``target`` for this request carries (the recipe hash only when ``ctx`` was
    prepared with llm.c's source: without it the hash is another one)."""
    lab = image_labels(req, target)
    if ctx is not None and ctx.llmc_label:
        lab["org.llmc-kit.recipe-hash"] = ctx.hashes[target]
    return lab


def data_recipe_hash(cfg: KitConfig) -> Optional[str]:
    """The recipe hash a data image built by this kit with ``cfg`` carries (None when it cannot be rendered).
    Registered as kitctl.data.container's hook by kitctl/cli.py: data cannot import images."""
    try:
        from kitctl.images import lock

        req = BuildRequest.from_config(cfg, target="data", archs=[75])
        req.lock = lock.load()             # docker/images.lock, as `kitctl build` uses it
        return recipe_hash(req, render(req))["data"]
    except Exception:      # an unusable config: `kitctl build` says why; the data image is then judged by presence
        return None
