"""Images: render ``docker/Dockerfile.j2`` for a provider + arch list, prepare the build context, tag, build.

* ``BuildRequest.from_config(cfg, ...)`` -- what to build (provider, CUDA, archs, target, sources, mirrors).
* ``render(req)`` -- the Dockerfile text (pure; no Docker, no network).
* ``prepare_context(req)`` -- a folder that plain ``docker buildx build`` can build (``kitctl render``).
* ``tags(req, ctx)`` / ``build_argv(req, ctx)`` -- the exact tags and command line (``--dry-run``).
* ``build(req, ctx)`` -- build through python-on-whales, progress streamed.
* ``runtime_ref(cfg)`` / ``data_ref(cfg)`` -- the moving tags every other command runs by default.
* ``write_env(cfg, path)`` -- the ``.env`` that compose.yaml reads.

Tags: ``<image>:<provider>-cu<ver>-sm75-sm86-<hash12>`` (+ ``<image>:latest``) for the runtime target,
``<image>:data-<hash12>`` (+ ``<image>:data``) for the data stage, ``<image>:<target>-<provider>-cu<ver>-...``
for toolchain/build. The hash covers the rendered stage text and every file those stages COPY (native/
recipe, llm.c source digest; for data: the lock and the kit's own files), so unchanged inputs give the
same tag and BuildKit rebuilds from cache.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import jinja2

from kitctl.images import recipes as r
from kitctl.core import pins as versions
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError, KitError
from kitctl.core import resources
from kitctl.host.runtimes import data_image, runtime_image

TEMPLATE = resources.share("docker", "Dockerfile.j2")
TARGETS = ("toolchain", "build", "runtime", "data")
PROVIDERS = ("nvidia", "wheels")
STAGE_MARK = "# {name}: "
WHEELS_VENV = "/opt/nvidia/venv"
KIT_FILES = ("pyproject.toml", "README.md", "docker/requirements.lock", "docker/versions.yaml")
KIT_DIRS = ("kitctl", "datasets")


@dataclass
class BuildRequest:
    """Everything a build depends on. Build with ``from_config``; every field can be overridden by the CLI."""

    provider: str = "nvidia"
    cuda: str = ""
    archs: list[int] = field(default_factory=lambda: [75, 86])
    target: str = "runtime"
    base_image: Optional[str] = None
    registry: str = "docker.io"
    image: str = "llmc-kit"
    cudnn: bool = True
    llmc_src: Optional[str] = None
    ca_cert: Optional[Path] = None
    apt_mirror: Optional[str] = None
    pip_index: Optional[str] = None
    build_dir: Path = Path(".kit/build")

    @classmethod
    def from_config(cls, cfg: KitConfig, *, provider: Optional[str] = None, cuda: Optional[str] = None,
                    archs: Optional[list[int]] = None, target: str = "runtime", base_image: Optional[str] = None,
                    llmc_src: Optional[str] = None, ca_cert: Optional[Path] = None, cudnn: Optional[bool] = None,
                    build_dir: Optional[Path] = None) -> "BuildRequest":
        prov = provider or cfg.provider
        if prov not in PROVIDERS:
            raise ConfigError(f"--provider {prov!r}: allowed are {', '.join(PROVIDERS)}")
        if target not in TARGETS:
            raise ConfigError(f"--target {target!r}: allowed are {', '.join(TARGETS)}")
        if archs is None:
            if cfg.arch == "auto":
                raise ConfigError("arch is 'auto' but no GPU list was resolved",
                                  "call resolve_archs() first, or give --arch 75,86")
            archs = list(cfg.arch)
        if not archs:
            raise ConfigError("the arch list is empty", "give e.g. --arch 75,86")
        want_cuda = resolve_cuda(prov, cuda or cfg.cuda, base_image or cfg.base_image)
        return cls(
            provider=prov, cuda=want_cuda, archs=sorted(set(archs)), target=target,
            base_image=base_image or cfg.base_image, registry=cfg.mirrors.registry, image=cfg.image,
            cudnn=versions.pins()["cudnn"]["default"] if cudnn is None else cudnn,
            llmc_src=llmc_src or cfg.mirrors.llmc_src, ca_cert=ca_cert or cfg.ca_cert,
            apt_mirror=cfg.mirrors.apt, pip_index=cfg.mirrors.pip_index,
            build_dir=build_dir or Path(".kit/build"),
        )

    @property
    def cuda_mm(self) -> str:
        return ".".join(self.cuda.split(".")[:2])

    @property
    def arch_csv(self) -> str:
        return ",".join(str(a) for a in self.archs)

    @property
    def sm_tag(self) -> str:
        return "-".join(f"sm{a}" for a in self.archs)


def cuda_images() -> dict[str, dict[str, str]]:
    """CUDA version -> {ubuntu, cudnn tag part, nccl_apt?}: the nvidia/cuda cuDNN tags the kit knows exist."""
    return versions.pins()["providers"]["nvidia"]["cuda_images"]


def resolve_cuda(provider: str, cuda: Optional[str], base_image: Optional[str] = None) -> str:
    """The full CUDA version to build, or a ConfigError (exit 2) when no image of it is known to exist.

    nvidia: a version of the ``cuda_images`` table ("12.6" picks "12.6.3"); any other X.Y[.Z] only together
    with ``--base-image`` naming the devel image. wheels: only the pinned 13.0.
    """
    pin = versions.pins()["providers"][provider]["cuda"]
    want = str(cuda or pin).strip()
    if provider == "wheels":
        if want.split(".")[:2] != pin.split(".")[:2]:
            hint = ("NVIDIA's CUDA 12 wheels ship no nvcc; for CUDA 12.x use --provider nvidia"
                    if want.startswith("12.") else f"use cuda {pin} (or leave cuda unset), or --provider nvidia")
            raise ConfigError(f"cuda {want!r}: the wheels provider is pinned to CUDA {pin} only", hint)
        return want
    known = cuda_images()
    if want in known:
        return want
    same_mm = [v for v in known if v.split(".")[:2] == want.split(".")] if want.count(".") == 1 else []
    if len(same_mm) == 1:
        return same_mm[0]
    if base_image and re.fullmatch(r"\d+\.\d+(\.\d+)?", want):
        return want    # the user names the image; we cannot check its tag from here
    raise ConfigError(f"cuda {want!r}: no nvidia/cuda cuDNN image of that version is known; "
                      f"known: {', '.join(known)}",
                      "pick one of these (cuda in kit.yaml or --cuda), or name the image yourself with "
                      "--base-image <registry>/nvidia/cuda:<ver>-cudnn-devel-ubuntu<ver> (its -runtime- twin "
                      "is used for the runtime stage)")


def resolve_archs(spec: object, gpus: list) -> list[int]:
    """``auto`` -> every distinct compute capability of ``gpus``; a list stays as it is."""
    from kitctl.host.gpus import distinct_archs

    if spec == "auto":
        archs = distinct_archs(gpus)
        if not archs:
            raise KitError("--arch auto: nvidia-smi reports no GPU on this machine",
                           "give the list yourself, e.g. --arch 75,86 (2080 Ti + 3090)", exit_code=2)
        return archs
    return list(spec)  # type: ignore[arg-type]


def with_registry(ref: str, registry: str) -> str:
    """Prefix a Docker Hub reference with a registry mirror; refs that name a registry stay unchanged."""
    first = ref.split("/")[0]
    if registry in ("", "docker.io") or ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"{registry.rstrip('/')}/{ref}"


def base_images(req: BuildRequest) -> dict[str, str]:
    """The FROM image of each stage."""
    pins = versions.pins()
    data = req.base_image or with_registry(pins["data_image"]["base_image"], req.registry)
    if req.provider == "wheels":
        base = req.base_image or with_registry(pins["providers"]["wheels"]["base_image"], req.registry)
        return {"toolchain": base, "runtime": base, "data": data}
    p = pins["providers"]["nvidia"]
    known = cuda_images().get(req.cuda)
    if known is None:   # a CUDA version outside the table: --base-image names its devel image (resolve_cuda)
        devel = req.base_image or ""
        return {"toolchain": devel, "runtime": devel.replace("-devel-", "-runtime-"),
                "data": with_registry(pins["data_image"]["base_image"], req.registry)}
    return {
        "toolchain": with_registry(p["devel_image"].format(cuda=req.cuda, **known), req.registry),
        "runtime": with_registry(p["runtime_image"].format(cuda=req.cuda, **known), req.registry),
        "data": data,
    }


def image_labels(req: BuildRequest, stage: str, llmc_label: str = "") -> dict[str, str]:
    """OCI labels recording every pin that went into a stage, plus the arch list."""
    pins = versions.pins()
    lab = {
        "org.opencontainers.image.title": f"llmc-kit {stage}",
        "org.opencontainers.image.source": "llmc-kit",
        "org.llmc-kit.stage": stage,
        "org.llmc-kit.provider": req.provider,
        "org.llmc-kit.cuda": req.cuda,
        "org.llmc-kit.archs": req.arch_csv,
        "org.llmc-kit.cudnn": "on" if req.cudnn else "off",
        "org.llmc-kit.cudnn-frontend": pins["cudnn_frontend"]["version"],
        "org.llmc-kit.openmpi": "distro " + " ".join(pins["openmpi"]["apt_build"]),
        "org.llmc-kit.llmc.commit": pins["llmc"]["commit"],
        "org.llmc-kit.llmc.tarball-sha256": pins["llmc"]["tarball_sha256"],
        "org.llmc-kit.versions-sha256": versions.pins_sha256(),
    }
    if req.provider == "wheels":
        w = pins["providers"]["wheels"]
        used = {**w["wheels"], **w["tools"]}
        if not req.cudnn:
            used.pop("nvidia-cudnn-cu13", None)
        lab["org.llmc-kit.wheels"] = " ".join(f"{k}=={v}" for k, v in sorted(used.items()))
    else:
        nccl = cuda_images().get(req.cuda, {}).get("nccl_apt")
        lab["org.llmc-kit.nccl"] = nccl or "as shipped in the base image"
    if stage == "data":   # CPU-only: nothing of the CUDA side, so the data tag does not move with it
        lab = {k: v for k, v in lab.items() if k.startswith("org.opencontainers") or k in (
            "org.llmc-kit.stage", "org.llmc-kit.versions-sha256")}
        lab["org.llmc-kit.requirements-lock-sha256"] = hashlib.sha256(
            resources.share("docker", "requirements.lock").read_bytes()).hexdigest()
    if llmc_label and stage in ("build", "runtime"):
        lab["org.llmc-kit.llmc.source"] = llmc_label
    return lab


def _blocks(req: BuildRequest) -> dict[str, object]:
    """Pick the recipe pieces for the request's provider (the only provider-specific logic)."""
    pins = versions.pins()
    mpi = pins["openmpi"]
    cfe = pins["cudnn_frontend"]["version"]
    common_tool_apt = ["python3", "python3-venv", "ca-certificates", "make", *mpi["apt_build"]]
    ctx: dict[str, object] = {}
    if req.provider == "wheels":
        w = pins["providers"]["wheels"]
        wheels = {k: v for k, v in w["wheels"].items() if k not in ("cuda-toolkit", "nvidia-cudnn-frontend")}
        if not req.cudnn:
            wheels.pop("nvidia-cudnn-cu13", None)
        ctx["toolchain_apt"] = r.apt_install([*common_tool_apt, "g++"], "compilers, Python for the wheels, Open MPI")
        ctx["toolchain_blocks"] = [
            r.venv(WHEELS_VENV),
            r.cuda_wheels(WHEELS_VENV, w["wheels"]["cuda-toolkit"], w["toolkit_extras"], wheels, w["tools"]),
            r.cuda_wheels_layout(WHEELS_VENV),
            r.cudnn_frontend_headers(cfe),
        ]
        ctx["toolchain_env"] = [("NCCL_INCLUDE", "/opt/nvidia/nccl/include"), ("NCCL_LIB", "/opt/nvidia/nccl/lib"),
                                ("CUDNN_INCLUDE", "/opt/nvidia/cudnn/include"), ("CUDNN_LIB", "/opt/nvidia/cudnn/lib")]
        lib_dirs = ["/usr/local/cuda/lib", "/opt/nvidia/nccl/lib"] + (["/opt/nvidia/cudnn/lib"] if req.cudnn else [])
        ctx["gather_libs"] = r.gather_runtime_libs(lib_dirs)
        ctx["runtime_apt"] = r.apt_install(["ca-certificates", "libgomp1", *mpi["apt_runtime"]],
                                           "Open MPI runtime; CUDA libraries come from the build stage")
        ctx["runtime_blocks"] = [r.runtime_libs_copy("build")]
        ctx["nvidia_env"] = r.nvidia_container_env(req.cuda_mm)
    else:
        nccl = cuda_images().get(req.cuda, {}).get("nccl_apt")
        tool_blocks = []
        run_blocks = []
        if nccl:
            tool_blocks.append(r.nccl_apt(nccl))
            run_blocks.append(r.nccl_apt(nccl, dev=False))
        tool_blocks.append(r.cudnn_frontend_headers(cfe))
        ctx["toolchain_apt"] = r.apt_install(common_tool_apt, "Python (for cudnn-frontend headers), Open MPI")
        ctx["toolchain_blocks"] = tool_blocks
        ctx["toolchain_env"] = []
        ctx["gather_libs"] = ""
        ctx["runtime_apt"] = r.apt_install(["ca-certificates", "libgomp1", *mpi["apt_runtime"]], "Open MPI runtime")
        ctx["runtime_blocks"] = run_blocks
        ctx["nvidia_env"] = ""   # the nvidia/cuda runtime image sets NVIDIA_* itself
    build = [r.llmc_build("/src/llm.c", "/opt/llmc/bin", req.archs, "BF16", req.cudnn, "train_gpt2cu"),
             r.llmc_build("/src/llm.c", "/opt/llmc/bin", req.archs, "FP32", False, "train_gpt2cu_fp32")]
    ctx["build_blocks"] = build
    return ctx


def render(req: BuildRequest, llmc_label: str = "") -> str:
    """The whole multi-stage Dockerfile for ``req`` (pure)."""
    bases = base_images(req)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    tpl = env.from_string(TEMPLATE.read_text())
    ctx = _blocks(req)
    text = tpl.render(
        provider=req.provider, cuda=req.cuda, arch_list=" ".join(f"sm_{a}" for a in req.archs),
        arch_csv=req.arch_csv, cudnn=req.cudnn, llmc_commit=versions.llmc_commit(), image=req.image,
        from_toolchain=r.from_stage(bases["toolchain"], "toolchain"),
        from_runtime=r.from_stage(bases["runtime"], "runtime"),
        from_data=r.from_stage(bases["data"], "data"),
        shell=r.shell_strict(), apt_setup=r.apt_setup(), pip_env=r.pip_env(), mpi_env=r.mpi_env(),
        user=r.user(), data_apt=r.apt_install(["python3", "python3-venv", "ca-certificates"], "Python for the kit"),
        data_venv=r.venv("/opt/kit"),
        data_pip=r.pip_run([
            f"grep -v -E '^({'|'.join(versions.pins()['python']['test_only'])})==' "
            "/opt/llmc-kit/docker/requirements.lock > /tmp/requirements-data.txt",
            "/opt/kit/bin/pip install -q --no-compile -r /tmp/requirements-data.txt",
            "rm /tmp/requirements-data.txt",
            "chmod -R a+rX /opt/kit",   # here, not in a later RUN: a later chmod copies every file into a new layer
        ], "the kit's pinned Python packages (tiktoken, datasets, numpy, ...) less the test-only ones: CPU only"),
        data_env=[("PATH", "/opt/kit/bin:${PATH}")],
        toolchain_labels=r.labels(image_labels(req, "toolchain")),
        runtime_labels=r.labels(image_labels(req, "runtime", llmc_label)),
        data_labels=r.labels(image_labels(req, "data")),
        **ctx,
    )
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


def stage_texts(dockerfile: str) -> dict[str, str]:
    """Split a rendered Dockerfile into its stages (by the ``# <stage>: ...`` banners)."""
    out: dict[str, str] = {}
    current = "_header"
    for line in dockerfile.splitlines(keepends=True):
        for name in TARGETS:
            if line.startswith(STAGE_MARK.format(name=name)):
                current = name
        out[current] = out.get(current, "") + line
    return out


def _kit_source(rel: str) -> Path:
    """Where a path of the kit's own (``kitctl``, ``docker/versions.yaml``, ``native``...) is on this install."""
    return resources.package_dir() if rel == "kitctl" else resources.share(rel)


def _kit_files(rel: str) -> list[tuple[str, Path]]:
    """(name inside the context, file on disk) for one entry of KIT_FILES / KIT_DIRS / native."""
    src = _kit_source(rel)
    if not src.is_dir():
        return [(rel, src)]
    skip = {"__pycache__", "_share"}
    return [(f"{rel}/{f.relative_to(src).as_posix()}", f) for f in sorted(src.rglob("*"))
            if f.is_file() and not skip & set(f.relative_to(src).parts) and f.suffix != ".pyc"]


def _sha_files(h: "hashlib._Hash", rels: list[str]) -> None:
    for rel in rels:
        for name, f in _kit_files(rel):
            h.update(name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())


@dataclass
class Context:
    """A prepared build context folder."""

    path: Path
    dockerfile: Path
    llmc_label: str = ""
    hashes: dict[str, str] = field(default_factory=dict)   # target -> hash12


def recipe_hash(req: BuildRequest, dockerfile: str, llmc_digest: str = "") -> dict[str, str]:
    """hash12 per target: the stage texts it builds on, plus the files its stages COPY."""
    st = stage_texts(dockerfile)
    out = {}
    for target, parts in {"toolchain": ["toolchain"], "build": ["toolchain", "build"],
                          "runtime": ["toolchain", "build", "runtime"], "data": ["data"]}.items():
        h = hashlib.sha256()
        for p in parts:
            h.update(st.get(p, "").encode())
        if target in ("build", "runtime"):
            _sha_files(h, ["native"])
            h.update(llmc_digest.encode())
        if target == "data":
            _sha_files(h, [*KIT_FILES, *KIT_DIRS])
        out[target] = h.hexdigest()[:12]
    return out


def _copy_kit(dest: Path) -> None:
    """Copy what the data image COPYs (the kit itself) and native/ into the build context."""
    for rel in (*KIT_DIRS, "native"):
        (dest / rel).mkdir(parents=True, exist_ok=True)
    for rel in (*KIT_FILES, *KIT_DIRS, "native"):
        for name, f in _kit_files(rel):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest / name)


def prepare_context(req: BuildRequest, out: Optional[Path] = None, fetch_source: Optional[bool] = None) -> Context:
    """Write Dockerfile + everything it COPYs into ``out`` (default ``<build_dir>/context``).

    llm.c's source is fetched (and checked) only for targets that compile it, unless ``fetch_source``
    says otherwise; without it ``llmc/`` is left empty.
    """
    from kitctl.images import llmc_source

    out = Path(out or req.build_dir / "context").absolute()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _copy_kit(out)
    need_src = req.target in ("build", "runtime") if fetch_source is None else fetch_source
    llmc_label, digest = "", ""
    if need_src:
        src = llmc_source.fetch(req.llmc_src, out / "llmc", req.ca_cert)
        llmc_label, digest = src.label(), src.digest
    else:
        (out / "llmc").mkdir()
        (out / "llmc" / "README").write_text("llm.c source goes here (kitctl render --with-source, or copy a "
                                            "checkout at the pinned commit) before building build/runtime\n")
    text = render(req, llmc_label)
    dockerfile = out / "Dockerfile"
    dockerfile.write_text(text)
    (out / ".dockerignore").write_text("**/__pycache__\n**/*.pyc\n")
    return Context(out, dockerfile, llmc_label, recipe_hash(req, text, digest))


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
    out = {}
    if req.apt_mirror:
        out["APT_MIRROR"] = req.apt_mirror
    if req.pip_index:
        out["PIP_INDEX_URL"] = req.pip_index
    return out


def secrets(req: BuildRequest) -> list[str]:
    if req.ca_cert is None:
        return []
    if not Path(req.ca_cert).is_file():
        raise ConfigError(f"--ca-cert {req.ca_cert}: no such file", "give a PEM bundle, e.g. /etc/ssl/certs/ca-certificates.crt")
    return [f"id=ca,src={Path(req.ca_cert).absolute()}"]


def build_argv(req: BuildRequest, ctx: Context, target: Optional[str] = None, cache: bool = True) -> list[str]:
    """The exact ``docker buildx build`` line (what ``--dry-run`` prints and what python-on-whales runs)."""
    t = target or req.target
    a = ["docker", "buildx", "build", "--progress", "plain", "--load", "--target", t,
         "--file", str(ctx.dockerfile)]
    if not cache:
        a.append("--no-cache")
    for s in secrets(req):
        a += ["--secret", s]
    for k, v in sorted(build_args(req).items()):
        a += ["--build-arg", f"{k}={v}"]
    a += ["--label", f"org.llmc-kit.recipe-hash={ctx.hashes[t]}"]
    for tag in tags(req, ctx, t):
        a += ["--tag", tag]
    return [*a, str(ctx.path)]


def build(req: BuildRequest, ctx: Context, target: Optional[str] = None,
          on_line: Optional[Callable[[str], None]] = None, client=None, cache: bool = True) -> list[str]:
    """Build ``target`` with python-on-whales (BuildKit), streaming progress lines; returns the tags.

    ``cache=False`` is ``--no-cache`` (no layer cache; the apt/pip cache mounts still serve downloads)."""
    if client is None:
        from python_on_whales import docker as client
    from python_on_whales.exceptions import DockerException

    t = target or req.target
    tg = tags(req, ctx, t)
    logs: list[str] = []
    try:
        stream: Iterator[str] = client.buildx.build(
            ctx.path, file=ctx.dockerfile, target=t, tags=tg, build_args=build_args(req), secrets=secrets(req),
            labels={"org.llmc-kit.recipe-hash": ctx.hashes[t]}, load=True, progress="plain", stream_logs=True,
            cache=cache)
        for line in stream:
            line = line.rstrip("\n")
            logs.append(line)
            (on_line or print)(line)
    except DockerException as e:
        tail = "\n".join(logs[-25:]) or (e.stderr or str(e))
        raise KitError(f"docker build of target {t} failed:\n{tail}",
                       "read the last step above; behind a TLS proxy pass --ca-cert, behind a firewall set "
                       "mirrors.* in kit.yaml (docs/images.md)") from None
    return tg


# the tags themselves are named in kitctl.host.runtimes (train and data use them without importing images)
runtime_ref = runtime_image
data_ref = data_image


def env_values(cfg: KitConfig) -> dict[str, str]:
    """What compose.yaml needs from kit.yaml (see ``write_env``)."""
    vals = {
        "KIT_UID": str(os.getuid()), "KIT_GID": str(os.getgid()), "KIT_DATA_ROOT": str(cfg.data_root),
        "LLMC_IMAGE": runtime_ref(cfg), "LLMC_DATA_IMAGE": data_ref(cfg),
    }
    if cfg.hf_home is not None:   # else compose derives <KIT_DATA_ROOT>/hf, so a later KIT_DATA_ROOT moves it too
        vals["KIT_HF_HOME"] = str(cfg.hf_home)
    if cfg.mirrors.hf_endpoint:
        vals["HF_ENDPOINT"] = cfg.mirrors.hf_endpoint
    return vals


def write_env(cfg: KitConfig, path: Path = Path(".env")) -> Path:
    """Write the ``.env`` that ``docker compose`` reads next to compose.yaml (user, data root, images)."""
    lines = ["# written by kitctl from kit.yaml; docker compose reads it. Re-run any kitctl build to refresh."]
    lines += [f"{k}={v}" for k, v in env_values(cfg).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def build_data_image(cfg: KitConfig, *, base_image: Optional[str] = None, ca_cert: Optional[Path] = None,
                     build_dir: Optional[Path] = None, on_line: Optional[Callable[[str], None]] = None) -> str:
    """Build the CPU-only data stage and return its moving tag (``<image>:data``). Used by tests too."""
    req = BuildRequest.from_config(cfg, provider="wheels", target="data", base_image=base_image,
                                   cuda=versions.pins()["providers"]["wheels"]["cuda"],   # CPU-only: no CUDA
                                   ca_cert=ca_cert, build_dir=build_dir, archs=[75])
    ctx = prepare_context(req)
    return build(req, ctx, on_line=on_line or (lambda _l: None))[-1]
