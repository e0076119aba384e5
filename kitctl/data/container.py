"""`kitctl data` in the kit's CPU-only data image: the plan as a container (``docker run`` of the same command
with ``--runtime native`` inside, the data root at ``/data``, inputs read-only, as the calling user), and the
choice of where to run when the image is missing."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError
from kitctl.data.plan import DataPlan
from kitctl.data.tokenize import DEFAULT_SHARD_SIZE
from kitctl.host.runtimes import ContainerSpec, Mount, data_image_ref, host_user, image_present

CONTAINER_DATA = "/data"


def _under(path: Path, root: Path) -> Optional[str]:
    try:
        return str(Path(path).absolute().relative_to(Path(root).absolute()))
    except ValueError:
        return None


def choose_runtime(cfg: KitConfig, asked: Optional[str], dry_run: bool = False,
                   present=image_present) -> tuple[str, Optional[str]]:
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
    if have:
        return "docker", None
    why = f"no {ref} image" if have is False else "Docker is not usable here (no docker CLI or no engine running)"
    if asked == "docker":
        raise ConfigError(f"--runtime docker: {why}",
                          "build it with `kitctl build --target data` (CPU only, a few minutes), or run without "
                          "the image: --runtime native")
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

    env = {"KIT_DATA_ROOT": CONTAINER_DATA, "KIT_RUNTIME": "native", "HOME": "/tmp"}
    env["HF_HOME"] = env["KIT_HF_HOME"] = inside(plan.hf_home, "/hf")
    if plan.hf_endpoint:
        env["HF_ENDPOINT"] = env["KIT_MIRRORS__HF_ENDPOINT"] = plan.hf_endpoint
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
        if plan.shard_size != (plan.recipe.shard_size if plan.recipe and plan.recipe.shard_size else DEFAULT_SHARD_SIZE):
            argv += ["--shard-size", str(plan.shard_size)]
        argv += ["--workers", str(plan.workers)]
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
    return ContainerSpec(image=data_image_ref(cfg), argv=argv, mounts=mounts, env=env, workdir=CONTAINER_DATA,
                         user=host_user(), name=None)
