"""``kitctl train --image REGISTRY/REPO[:TAG]`` (or kit.yaml ``pull_image``): run an image that ``kitctl build
--push`` put in a registry instead of one built here. It is pulled, checked to be a runtime image of this kit's
pins (its org.llmc-kit.* labels; what differs is said), and tagged as the local ``<image>:latest`` that the plan
runs; the run record keeps its registry digest (the image's RepoDigests, kitctl.train.facts.inspect_image)."""
from __future__ import annotations

from typing import Callable

from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError
from kitctl.core.pins import pins_sha256
from kitctl.host import registry
from kitctl.host.runtimes import runtime_image_ref


def use_pulled(cfg: KitConfig, ref: str, dry_run: bool, say: Callable[[str], None]) -> None:
    repo, tag = registry.split_ref(ref)
    remote = ref if tag is not None else f"{repo}:latest"
    local = runtime_image_ref(cfg)
    if dry_run and registry.labels(remote) is None:
        say(f"image: would pull {remote} and run it as {local} (not pulled yet: a dry run downloads nothing)")
        return
    if not dry_run:
        registry.pull(remote, say)
    have = registry.labels(remote) or {}
    diffs = registry.label_differences(have, {"org.llmc-kit.stage": "runtime",
                                              "org.llmc-kit.versions-sha256": pins_sha256()})
    if diffs:
        raise ConfigError(f"the pulled image {remote} is not a runtime image of this kit's pins:\n  " + "\n  ".join(diffs),
                          "push one built by this kitctl (`kitctl build --push REPO` on the build box), or leave "
                          "--image / pull_image out to run the local image")
    registry.tag(remote, local)
    digests = registry.repo_digests(remote)
    say(f"image: {remote} ({digests[0].split('@', 1)[1] if digests else 'no registry digest'}) runs as {local}")
