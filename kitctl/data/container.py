"""`kitctl data` in the kit's CPU-only data image: the plan as a container (``docker run`` of the same command
with ``--runtime native`` inside, the data root at ``/data``, inputs read-only, as the calling user), and the
choice of where to run when the image is missing."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError
from kitctl.data.plan import DataPlan
from kitctl.data.tokenize import DEFAULT_SHARD_SIZE
from kitctl.host import registry
from kitctl.host.runtimes import ContainerSpec, Mount, data_image_ref, host_user

CONTAINER_DATA = "/data"
PATH_MAP_ENV = "LLMC_KIT_HOST_PATHS"     # {container path: host path}, set on the container: its kitctl says host paths
_expected_data_hash: Optional[Callable[[KitConfig], Optional[str]]] = None


def use_data_recipe_hash(recipe_hash: Callable[[KitConfig], Optional[str]]) -> None:
    """The hook: how to compute the recipe hash this kit's data image has (kitctl/cli.py hands in
    kitctl.images.build.data_recipe_hash: images is data's sibling). Without it a present data image is used."""
    global _expected_data_hash
    _expected_data_hash = recipe_hash


def to_host(text: str, raw: Optional[str] = None) -> str:
    """``text`` with the container's mount points replaced by the host paths they show (``raw``: the JSON map,
    default the environment's -- set inside the data image only): messages and manifests name paths the user
    can open."""
    raw = raw if raw is not None else os.environ.get(PATH_MAP_ENV)
    if not raw:
        return text
    try:
        mapping = json.loads(raw)
    except ValueError:
        return text
    for inside in sorted(mapping, key=len, reverse=True):
        text = text.replace(inside, mapping[inside])
    return text


def image_difference(cfg: KitConfig, ref: str, labels_of=registry.labels) -> Optional[str]:
    """Why the present data image ``ref`` is not this kit's (its recipe hash differs), or None."""
    if _expected_data_hash is None:
        return None
    want = _expected_data_hash(cfg)
    labels = labels_of(ref)
    if labels is None:          # gone since it was seen, or Docker cannot say: the image check said what it found
        return None
    have = labels.get(registry.RECIPE_HASH)
    if want is None or have == want:
        return None
    return (f"the {ref} image was built from another recipe (recipe hash {have or 'none'}, this kit's is {want}: "
            "the kit's code, its pins or base_image changed since)")


def _under(path: Path, root: Path) -> Optional[str]:
    try:
        return str(Path(path).absolute().relative_to(Path(root).absolute()))
    except ValueError:
        return None


def choose_runtime(cfg: KitConfig, asked: Optional[str], dry_run: bool = False,
                   present=registry.image_present) -> tuple[str, Optional[str]]:
    """(runtime, note). The *default* docker runtime (kit.yaml, or no setting) falls back to this kitctl's own
    Python when the data image is not built or Docker is not usable, and says so in one line: the output is the
    same either way. ``--runtime docker`` given on the command line insists on the image (exit 2 with the command
    that builds it). A dry run prints the docker plan as asked, without asking Docker."""
    rt = asked or cfg.runtime
    if rt not in ("docker", "native"):
        raise ConfigError(f"--runtime {rt}: use docker or native", "docker runs in the kit's data image")
    if rt != "docker" or (dry_run and asked == "docker"):
        return rt, None
    ref = data_image_ref(cfg)
    have = present(ref)
    differs = image_difference(cfg, ref) if have else None
    if have and not differs:
        return "docker", None
    why = differs or (f"no {ref} image" if have is False else
                      "Docker is not usable here (no docker CLI or no engine running)")
    if asked == "docker":
        raise ConfigError(f"--runtime docker: {why}",
                          "build it with `kitctl build --target data` (CPU only, a few minutes), pull a pushed one "
                          "(`kitctl build --target data --image REGISTRY/REPO`), or run without the image: "
                          "--runtime native")
    return "native", (f"note: {why}; tokenizing natively with this kitctl instead (same output; "
                      "`kitctl build --target data` makes the image, --runtime native skips this check)")


def docker_spec(plan: DataPlan, cfg: KitConfig, extra_args: Optional[list[str]] = None) -> ContainerSpec:
    """The container that runs this plan natively inside the kit's data image, as the calling user."""
    mounts = [Mount(plan.data_root, CONTAINER_DATA)]

    def inside(p: Path, target: str, ro: bool = False) -> str:
        rel = _under(p, plan.data_root)
        if rel is not None:
            return f"{CONTAINER_DATA}/{rel}" if rel != "." else CONTAINER_DATA
        mounts.append(Mount(Path(p), target, read_only=ro))
        return target

    env = {"KIT_DATA_ROOT": CONTAINER_DATA, "KIT_RUNTIME": "native", "HOME": "/tmp", "HF_HUB_OFFLINE":
           os.environ.get("HF_HUB_OFFLINE", "")}
    env["HF_HOME"] = env["KIT_HF_HOME"] = inside(plan.hf_home, "/hf")
    if plan.hf_endpoint:
        env["HF_ENDPOINT"] = env["KIT_MIRRORS__HF_ENDPOINT"] = plan.hf_endpoint
    if plan.kind == "hellaswag" and plan.url:     # mirrors.hellaswag_url or --source URL: the same URL inside
        env["KIT_MIRRORS__HELLASWAG_URL"] = plan.url
    argv = ["kitctl", "data"]
    if plan.recipe is not None:
        argv.append(plan.spec)
    else:   # local input files: mount their folder read-only
        p = Path(plan.spec)
        if any(c in plan.spec for c in "*?["):
            base = Path(plan.spec.split("*")[0].split("?")[0].split("[")[0])
            base = base if base.is_dir() else base.parent
            argv.append(inside(base.absolute(), "/input", ro=True) + "/" +
                        str(Path(plan.spec).absolute().relative_to(base.absolute())))
        elif p.is_dir():
            argv.append(inside(p.absolute(), "/input", ro=True))
        else:
            argv.append(inside(p.absolute().parent, "/input", ro=True) + "/" + p.name)
    argv += ["--out", inside(plan.out_dir, "/out"), "--name", plan.name]
    if plan.kind == "tokenize":
        argv += _tokenize_args(plan)
    if plan.stream:
        argv.append("--stream")
    if plan.source:
        s = Path(plan.source)
        argv += ["--source", inside(s.parent, "/source", ro=True) + "/" + s.name]
    if plan.tokenizer_dir:
        argv += ["--tokenizer-dir", inside(plan.tokenizer_dir, "/tokenizer", ro=True)]
    if plan.train_shards is not None:
        argv += ["--shards", str(plan.train_shards)]
    if plan.force:
        argv.append("--force")
    argv += ["--runtime", "native", *(extra_args or [])]
    env = {k: v for k, v in env.items() if v}
    env[PATH_MAP_ENV] = json.dumps({m.target: str(Path(m.source).absolute()) for m in mounts})
    return ContainerSpec(image=data_image_ref(cfg), argv=argv, mounts=mounts, env=env, workdir=CONTAINER_DATA,
                         user=host_user(), name=None)


def _tokenize_args(plan: DataPlan) -> list[str]:
    """The tokenizing options of ``plan`` that the command inside the image must be given again."""
    args = []
    if plan.shard_size != (plan.recipe.shard_size if plan.recipe and plan.recipe.shard_size else DEFAULT_SHARD_SIZE):
        args += ["--shard-size", str(plan.shard_size)]
    args += ["--workers", str(plan.workers)]
    if plan.encoder:
        args += ["--encoder", plan.encoder]
    return args


def adopt_image(cfg: KitConfig, ref: str, how: str, say: Callable[[str], None]) -> None:
    """Make ``ref`` (pulled, or loaded from a bundle) the data image ``<image>:data``, if it is this kit's recipe."""
    labels = registry.labels(ref) or {}
    if labels.get("org.llmc-kit.stage") != "data":
        raise ConfigError(f"{ref} is not a data image (org.llmc-kit.stage: {labels.get('org.llmc-kit.stage')!r})",
                          "push the data image (`kitctl build --target data --push REPO`), or leave --image out")
    differs = image_difference(cfg, ref)
    if differs:
        raise ConfigError(f"{how}: {differs}", "build and push the data image again with this kitctl "
                          "(`kitctl build --target data --push REPO`), or run with --runtime native")
    registry.tag(ref, data_image_ref(cfg))
    say(f"data image: {ref} ({how}) is this kit's recipe; tagged {data_image_ref(cfg)}")


def data_pull_ref(ref: str) -> str:
    """What ``--image REF`` pulls for the data image: ``REPO@sha256:...`` exactly that image (a digest names one
    image; its labels must then say it is a data image); ``REPO`` or ``REPO:TAG`` the pushed ``REPO:data``."""
    repo, tag = registry.split_ref(ref)
    return ref if tag is not None and tag.startswith("@") else f"{repo}:data"


def pull_image(cfg: KitConfig, ref: str, say: Callable[[str], None]) -> None:
    remote = data_pull_ref(ref)
    registry.pull(remote, say)
    adopt_image(cfg, remote, "pulled", say)
