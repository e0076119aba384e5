"""Images that travel: push what ``kitctl build`` made to a registry, pull it (or load it from a bundle) on the GPU
box instead of building there, checked against the recipe labels this plan expects.

Tags in the registry repository are the local ones' (``<provider>-cu<ver>-<sm...>-<hash12>`` and ``latest`` for
runtime, ``data-<hash12>`` and ``data`` for the data stage). ``--image REPO`` pulls ``REPO:latest`` / ``REPO:data``;
``--image REPO:TAG`` (or ``@sha256:...``) pulls exactly that runtime image. The pulled image is tagged as the local
``<image>:latest`` (``<image>:data``), which is what train (and data) run.
"""
from __future__ import annotations

import datetime
from typing import Callable

from kitctl.core.bundle import Unpacked
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError
from kitctl.host import registry
from kitctl.images import build as builder
from kitctl.images.context import Context
from kitctl.images.request import BuildRequest

LineFn = Callable[[str], None]


def push_refs(req: BuildRequest, ctx: Context, target: str, repo: str) -> list[tuple[str, str]]:
    """(local tag, remote ref) for every tag of ``target``."""
    repo = repo.rstrip("/")
    if registry.split_ref(repo)[1] is not None:
        raise ConfigError(f"--push {repo}: give a repository without a tag", "e.g. --push 127.0.0.1:5000/llmc-kit "
                          "(the kit pushes its own recipe tags)")
    return [(t, f"{repo}:{t.rsplit(':', 1)[1]}") for t in builder.tags(req, ctx, target)]


def push(cfg: KitConfig, req: BuildRequest, ctx: Context, target: str, repo: str,
         on_line: LineFn = print) -> list[tuple[str, str]]:
    """Push ``target``'s tags to ``repo``; each pushed digest goes into ``<data_root>/images/pushed.json``."""
    out = []
    labels = builder.expected_labels(req, ctx, target)
    for local, remote in push_refs(req, ctx, target, repo):
        registry.tag(local, remote)
        digest = registry.push(remote, on_line)
        registry.record_push(cfg.layout.pushed_images, {
            "ref": remote, "digest": digest, "target": target, "recipe_hash": ctx.hashes[target],
            "labels": labels, "pushed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        out.append((remote, digest))
    return out


def remote_ref(ref: str, target: str) -> str:
    repo, tag = registry.split_ref(ref)
    if target == "data":        # a digest names one image: that one (kitctl.data.container.data_pull_ref)
        return ref if tag is not None and tag.startswith("@") else f"{repo}:data"
    return ref if tag is not None else f"{repo}:latest"


def _check(req: BuildRequest, ctx: Context, target: str, ref: str, what: str) -> None:
    have = registry.labels(ref) or {}
    diffs = registry.label_differences(have, builder.expected_labels(req, ctx, target))
    want_hash = ctx.hashes[target] if ctx.llmc_label or target == "data" else None
    if want_hash and have.get(registry.RECIPE_HASH) != want_hash and not diffs:
        diffs.append(f"{registry.RECIPE_HASH}: the image has {have.get(registry.RECIPE_HASH)!r}, this kit's recipe is "
                     f"{want_hash!r} (the Dockerfile or a pin changed)")
    if diffs:
        raise ConfigError(f"{what} is not the {target} image this plan needs:\n  " + "\n  ".join(diffs),
                          "build and push it again with these options (`kitctl build --push REPO` with the same "
                          "--arch/--provider/--cuda), or build here without --image / pull_image")


def _adopt(req: BuildRequest, ctx: Context, target: str, ref: str) -> str:
    """Tag ``ref`` as the local moving tag (what train / data run) and, when it is this recipe, the content tag."""
    local = f"{req.image}:{'latest' if target == 'runtime' else 'data'}"
    registry.tag(ref, local)
    if (registry.labels(ref) or {}).get(registry.RECIPE_HASH) == ctx.hashes[target]:
        registry.tag(ref, builder.tags(req, ctx, target)[0])
    return local


def pull_checked(req: BuildRequest, ctx: Context, target: str, ref: str, dry_run: bool = False,
                 on_line: LineFn = print) -> str:
    """Pull the pushed image of ``target``, check its recipe labels, tag it as the local image; one line said."""
    remote = remote_ref(ref, target)
    if dry_run:
        return f"would pull {remote}, check its org.llmc-kit.* labels and tag it {req.image}:" \
               f"{'latest' if target == 'runtime' else 'data'} (nothing is built)"
    registry.pull(remote, on_line)
    _check(req, ctx, target, remote, f"the pulled image {remote}")
    local = _adopt(req, ctx, target, remote)
    digests = registry.repo_digests(remote)
    return f"pulled {remote} ({digests[0] if digests else 'no digest'}), recipe labels match; tagged {local}"


def load_checked(req: BuildRequest, ctx: Context, target: str, ub: Unpacked, dry_run: bool = False,
                 on_line: LineFn = print) -> str:
    packed = ub.image(target)
    if packed is None:
        raise ConfigError(f"the bundle {ub.source} holds no {target} image",
                          "pack it with the image (`kitctl build --target data` first), or leave --bundle out")
    tar, info = packed
    if dry_run:
        return f"would load {info.get('ref')} from {tar} (docker load) and check its recipe labels"
    ref = registry.load_expected(tar, info.get("ref"), f"the bundle's {target} image", on_line)
    _check(req, ctx, target, ref, f"the bundle's image {ref}")
    local = _adopt(req, ctx, target, ref)
    return f"loaded {ref} from the bundle, recipe labels match; tagged {local}"
