"""Small composable Dockerfile pieces (in the spirit of NVIDIA's hpc-container-maker).

Each function returns one readable block of Dockerfile text; ``docker/Dockerfile.j2`` arranges the blocks
into stages and ``kitctl.images.render`` picks the blocks for a provider. Logic lives here, in Python, so the
template stays a plain-looking Dockerfile and every piece is unit-tested on its own.

Conventions of every piece:
* apt and pip downloads go through BuildKit cache mounts (``/var/cache/apt``, ``/root/.cache/pip``), so a
  rebuild with unchanged inputs never downloads again and nothing of the caches lands in a layer;
* an extra CA bundle (TLS-intercepting proxies) is a BuildKit secret with id ``ca``, mounted only while a RUN
  needs the network -- never copied into an image;
* mirrors come in as build args (``APT_MIRROR``, ``PIP_INDEX_URL``) so the rendered file stays the same
  for every network.
"""
from __future__ import annotations

import shlex
from typing import Iterable, Optional

CA_SECRET = "/run/secrets/ca"
APT_CACHE = ("--mount=type=cache,id=llmc-apt-cache,target=/var/cache/apt,sharing=locked \\\n"
             "    --mount=type=cache,id=llmc-apt-lists,target=/var/lib/apt/lists,sharing=locked \\\n"
             "    --mount=type=secret,id=ca")
PIP_CACHE = ("--mount=type=cache,id=llmc-pip-cache,target=/root/.cache/pip \\\n"
             "    --mount=type=secret,id=ca")


_APT_CA = (f"if [ -s {CA_SECRET} ]; then echo 'Acquire::https::CAInfo \"{CA_SECRET}\";' "
           "> /etc/apt/apt.conf.d/99llmc-ca; fi &&")
_APT_CA_END = " && \\\n    rm -f /etc/apt/apt.conf.d/99llmc-ca"


def _join(lines: Iterable[str]) -> str:
    return " && \\\n    ".join(lines)


def from_stage(image: str, stage: str, comment: str = "") -> str:
    """``FROM image AS stage`` with an optional comment line above it."""
    head = f"# {comment}\n" if comment else ""
    return f"{head}FROM {image} AS {stage}"


def shell_strict() -> str:
    """Run every RUN with bash -o pipefail (hadolint DL4006) once bash exists; Debian/Ubuntu always have it."""
    return 'SHELL ["/bin/bash", "-o", "pipefail", "-c"]'


def apt_setup() -> str:
    """Point apt at ``$APT_MIRROR`` (if set), keep downloaded .debs for the cache mount, trust the CA secret.

    Rewrites deb.debian.org / security.debian.org / archive.ubuntu.com / security.ubuntu.com in both the
    one-line and the deb822 source formats.
    """
    return (
        "ARG APT_MIRROR=\n"
        "RUN rm -f /etc/apt/apt.conf.d/docker-clean && \\\n"
        "    echo 'Binary::apt::APT::Keep-Downloaded-Packages \"true\";' > /etc/apt/apt.conf.d/90keep-cache && \\\n"
        "    echo 'Acquire::Retries \"5\";' > /etc/apt/apt.conf.d/90retries && \\\n"
        "    if [ -n \"$APT_MIRROR\" ]; then \\\n"
        "      for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do \\\n"
        "        [ -f \"$f\" ] && sed -i -E \"s#https?://(deb|security)\\.debian\\.org#${APT_MIRROR}#g; "
        "s#https?://(archive|security)\\.ubuntu\\.com#${APT_MIRROR}#g\" \"$f\"; \\\n"
        "      done; \\\n"
        "    fi"
    )


def apt_install(packages: Iterable[str], comment: str = "") -> str:
    """``apt-get install --no-install-recommends`` with cache mounts and the CA secret for https mirrors."""
    pkgs = sorted(set(packages))
    if not pkgs:
        raise ValueError("apt_install needs at least one package")
    head = f"# {comment}\n" if comment else ""
    pkg_lines = " \\\n        ".join(pkgs)
    return (
        f"{head}RUN {APT_CACHE} \\\n"
        f"    {_APT_CA} \\\n"
        "    apt-get update -qq && \\\n"
        "    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\\n"
        f"        {pkg_lines}{_APT_CA_END}"
    )


def pip_env() -> str:
    """Build args and env for pip: the index (a mirror) and, when given, the CA secret as PIP_CERT."""
    return ("ARG PIP_INDEX_URL=https://pypi.org/simple\n"
            "ENV PIP_INDEX_URL=${PIP_INDEX_URL} \\\n"
            "    PIP_DISABLE_PIP_VERSION_CHECK=1 \\\n"
            "    PIP_ROOT_USER_ACTION=ignore")


def pip_run(commands: Iterable[str], comment: str = "") -> str:
    """A RUN whose commands use pip: pip cache mount, and the CA secret exported as PIP_CERT if present."""
    head = f"# {comment}\n" if comment else ""
    cmds = list(commands)
    return (f"{head}RUN {PIP_CACHE} \\\n"
            f"    if [ -s {CA_SECRET} ]; then export PIP_CERT={CA_SECRET} SSL_CERT_FILE={CA_SECRET}; fi && \\\n"
            f"    {_join(cmds)}")


def venv(path: str, python: str = "python3") -> str:
    """Create a virtualenv (pip inside it, nothing from the system site-packages)."""
    return f"RUN {python} -m venv {path}"


def cuda_wheels(venv_path: str, toolkit: str, extras: Iterable[str], wheels: dict[str, str],
                tools: Optional[dict[str, str]] = None, wheel_dir: str = "/root/.cache/pip/llmc-wheels") -> str:
    """Install NVIDIA's CUDA 13 PyPI wheels into ``venv_path`` (nvcc, cudart, cuBLAS, NCCL, cuDNN, ...).

    ``cuda-toolkit[extras]==toolkit`` pins every part; ``wheels`` are further exact pins; ``tools`` are
    installed with ``--no-deps`` (cuobjdump, which has no 13.0 wheel). The ~2.4 GB of wheels are first
    ``pip download``-ed into ``wheel_dir`` inside the pip cache mount (pip skips files already there), then
    installed from there with ``--no-index``: a rebuild never downloads them again, even through proxies
    that mark responses uncacheable (which defeats pip's own HTTP cache).
    """
    spec = [f"cuda-toolkit[{','.join(extras)}]=={toolkit}"]
    spec += [f"{name}=={ver}" for name, ver in sorted(wheels.items())]
    specs = " ".join(shlex.quote(s) for s in spec)
    pip = f"{venv_path}/bin/pip"
    cmds = [f"mkdir -p {wheel_dir}",
            f"{pip} download -q -d {wheel_dir} {specs}",
            f"{pip} install -q --no-compile --no-index --find-links {wheel_dir} {specs}"]
    if tools:
        tspecs = " ".join(f"{n}=={v}" for n, v in sorted(tools.items()))
        cmds += [f"{pip} download -q --no-deps -d {wheel_dir} {tspecs}",
                 f"{pip} install -q --no-compile --no-deps --no-index --find-links {wheel_dir} {tspecs}"]
    return pip_run(cmds, comment="NVIDIA CUDA 13 wheels (PyPI): the compiler, headers and libraries")


def cuda_wheels_layout(venv_path: str, cuda_home: str = "/usr/local/cuda") -> str:
    """Give the wheels a toolkit layout: ``/usr/local/cuda/{bin,include,lib,lib64}``, unversioned .so links.

    Wheels ship only versioned sonames (libcudart.so.13); a link step needs libcudart.so etc. NCCL and
    cuDNN keep their own wheel dirs (``/opt/nvidia/nccl``, ``/opt/nvidia/cudnn``); all library dirs go into
    ``/etc/ld.so.conf.d`` so binaries and mpirun'd ranks find them without LD_LIBRARY_PATH.
    """
    sp = "\"$sp\""
    return (
        "# A toolkit layout over the wheels, and unversioned .so links for the linker\n"
        f"RUN sp=$({venv_path}/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')/nvidia && \\\n"
        f"    ln -s {sp}/cu13 {cuda_home} && \\\n"
        f"    ln -s lib {cuda_home}/lib64 && \\\n"
        "    mkdir -p /opt/nvidia && \\\n"
        f"    ln -s {sp}/nccl /opt/nvidia/nccl && \\\n"
        f"    if [ -d {sp}/cudnn ]; then ln -s {sp}/cudnn /opt/nvidia/cudnn; fi && \\\n"
        f"    for d in {cuda_home}/lib /opt/nvidia/nccl/lib /opt/nvidia/cudnn/lib; do \\\n"
        "      [ -d \"$d\" ] || continue; \\\n"
        "      for f in \"$d\"/lib*.so.[0-9]*; do \\\n"
        "        [ -e \"$f\" ] || continue; \\\n"
        "        base=\"${f%%.so.*}.so\"; [ -e \"$base\" ] || ln -s \"$(basename \"$f\")\" \"$base\"; \\\n"
        "      done; \\\n"
        "      readlink -f \"$d\" >> /etc/ld.so.conf.d/llmc-cuda.conf; \\\n"
        "    done && \\\n"
        "    ldconfig && \\\n"
        f"    {cuda_home}/bin/nvcc --version | tail -n 2"
    )


def cudnn_frontend_headers(version: str, dest: str = "/opt/cudnn-frontend", python: str = "python3") -> str:
    """cudnn-frontend C++ headers (header-only) from the ``nvidia-cudnn-frontend`` PyPI wheel.

    Downloads the wheel for the image's own Python with a throw-away venv and unpacks only ``include/``
    into ``dest/include`` (where ``native/build.sh --cudnn-frontend`` points).
    """
    return pip_run([
        "tmp=$(mktemp -d)",
        f"{python} -m venv \"$tmp/v\"",
        f"\"$tmp/v/bin/pip\" download -q --no-deps -d \"$tmp/w\" nvidia-cudnn-frontend=={version}",
        f"\"$tmp/v/bin/python\" -m zipfile -e \"$tmp\"/w/*.whl \"$tmp/x\"",
        f"mkdir -p {dest}",
        f"cp -r \"$tmp/x/include\" {dest}/include",
        f"test -f {dest}/include/cudnn_frontend.h",
        "rm -rf \"$tmp\"",
    ], comment=f"cudnn-frontend {version} headers (header-only C++), from its PyPI wheel")


def nccl_apt(version: str, dev: bool = True) -> str:
    """NCCL from the CUDA apt repo of the nvidia/cuda images, pinned (the images hold these packages, hence
    ``--allow-change-held-packages``). ``dev=False``: the runtime library only."""
    pkgs = f"libnccl2={version} libnccl-dev={version}" if dev else f"libnccl2={version}"
    return (
        f"# NCCL {version} from the image's CUDA apt repo\n"
        f"RUN {APT_CACHE} \\\n"
        f"    {_APT_CA} \\\n"
        "    apt-get update -qq && \\\n"
        "    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        "--allow-change-held-packages \\\n"
        f"        {pkgs}{_APT_CA_END}"
    )


def user(name: str = "llmc", uid: int = 1000) -> str:
    """A non-root user (uid ``uid``). Images are also run with ``--user <host uid:gid>``; HOME is /tmp-safe.

    Ubuntu 24.04 images already have user ``ubuntu`` with uid 1000: it is renamed rather than duplicated.
    """
    return (
        f"RUN if getent passwd {uid} >/dev/null; then \\\n"
        f"      old=$(getent passwd {uid} | cut -d: -f1); \\\n"
        f"      usermod -l {name} -d /home/{name} -m \"$old\"; groupmod -n {name} \"$(id -gn {name})\"; \\\n"
        "    else \\\n"
        f"      groupadd -g {uid} {name} && useradd -m -u {uid} -g {uid} -s /bin/bash {name}; \\\n"
        "    fi"
    )


def mpi_env() -> str:
    """Open MPI settings for containers: no CMA single-copy (blocked by Docker's seccomp), quiet plugins."""
    return ("ENV OMPI_MCA_btl_vader_single_copy_mechanism=none \\\n"
            "    OMPI_MCA_pml=ob1 \\\n"
            "    OMPI_MCA_btl=self,vader,tcp \\\n"
            "    OMPI_MCA_rmaps_base_oversubscribe=1 \\\n"
            "    OPENMPI_DIR=/usr/lib/x86_64-linux-gnu/openmpi")


def nvidia_container_env(cuda_major_minor: Optional[str]) -> str:
    """Tell the NVIDIA container runtime what to inject, and which driver the CUDA runtime needs."""
    req = f" \\\n    NVIDIA_REQUIRE_CUDA=\"cuda>={cuda_major_minor}\"" if cuda_major_minor else ""
    return ("ENV NVIDIA_VISIBLE_DEVICES=all \\\n"
            f"    NVIDIA_DRIVER_CAPABILITIES=compute,utility{req}")


def labels(items: dict[str, str]) -> str:
    """OCI labels (``org.opencontainers.image.*`` and ``org.llmc-kit.*``), one per line, sorted."""
    if not items:
        return ""
    body = " \\\n      ".join(f"{k}={_q(v)}" for k, v in sorted(items.items()))
    return f"LABEL {body}"


def _q(v: str) -> str:
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def llmc_build(src: str, out: str, archs: list[int], precision: str, cudnn: bool, name: str,
               extra: str = "") -> str:
    """One ``native/build.sh`` invocation: llm.c at ``src`` -> ``out/name`` for every arch in ``archs``."""
    arch = ",".join(str(a) for a in archs)
    return (f"RUN bash /opt/llmc-kit/native/build.sh --src {src} --out {out} --arch {arch} "
            f"--precision {precision} --cudnn {1 if cudnn else 0} --name {name}{extra}")


def runtime_libs_copy(from_stage_name: str, src: str = "/opt/llmc-libs", dest: str = "/opt/nvidia/lib") -> str:
    """COPY the runtime shared libraries gathered in the build stage (``gather_runtime_libs``) and register
    them with ldconfig, so every process (mpirun'd ranks, any ``--user``) finds them."""
    return (f"COPY --from={from_stage_name} {src}/ {dest}/\n"
            f"RUN echo {dest} > /etc/ld.so.conf.d/llmc-cuda.conf && ldconfig")


def gather_runtime_libs(dirs: Iterable[str], dest: str = "/opt/llmc-libs") -> str:
    """In the build stage: copy every ``lib*.so*`` (symlinks kept) of ``dirs`` into one folder for COPY."""
    ds = " ".join(dirs)
    return (f"RUN mkdir -p {dest} && \\\n"
            f"    for d in {ds}; do cp -a \"$(readlink -f \"$d\")\"/lib*.so* {dest}/; done && \\\n"
            f"    rm -f {dest}/*.a {dest}/libnvvm* && du -sh {dest}")
