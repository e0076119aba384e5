"""``kitctl export``: turn the kit's image into what a cluster loads.

* ``tar``  -- ``docker save`` (through python-on-whales), streamed to disk with a progress bar by bytes and the
  sha256 computed on the way. Load it with ``docker load -i``, ``apptainer build x.sif docker-archive://x.tar``,
  or, on a machine with Docker and enroot, ``docker load -i x.tar && enroot import dockerd://IMAGE``.
* ``sqsh`` -- enroot's squashfs for pyxis (``srun --container-image=/shared/x.sqsh``):
  ``enroot import -o OUT dockerd://IMAGE``. (enroot imports from a registry, the Docker daemon or Podman;
  it has no tar-archive source.)
* ``sif``  -- Apptainer's image: ``apptainer build OUT docker-daemon://IMAGE``, or with ``--via-tar`` from a
  ``docker save`` tar (``docker-archive://``), which also works where Apptainer cannot reach the daemon's socket.

Every format ends with the output's size and sha256 (also written next to it as ``OUT.sha256``, in
``sha256sum`` format, so ``sha256sum -c`` checks the copy on the cluster). Command construction is pure
(``export_commands``); the runners are thin.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from kitctl.core.errors import ConfigError, KitError

FORMATS = ("tar", "sqsh", "sif")
CHUNK = 1 << 20

ENROOT_HINT = ("install enroot (https://github.com/NVIDIA/enroot/releases: the enroot and enroot+caps .deb/.rpm "
               "for your distribution) on this machine, or export a tar here with `kitctl export --format tar "
               "IMAGE -o x.tar`, copy it to a machine with Docker and enroot, and run `docker load -i x.tar && "
               "enroot import -o x.sqsh dockerd://IMAGE` there (enroot cannot read a tar directly)")
APPTAINER_HINT = ("install Apptainer (https://apptainer.org/docs/admin/main/installation.html; Debian/Ubuntu: the "
                  "apptainer .deb from its GitHub releases), or export a tar here with `kitctl export --format tar "
                  "IMAGE -o x.tar` and on a machine with Apptainer (often the cluster's login node) run "
                  "`apptainer build x.sif docker-archive://x.tar`")


@dataclass
class ExportPlan:
    """What `kitctl export` will do (--dry-run prints it)."""

    image: str
    fmt: str
    output: Path
    tar: Optional[Path] = None                 # the intermediate (or final) docker save tar
    commands: list[list[str]] = field(default_factory=list)   # external commands, in order (not docker save)
    keep_tar: bool = True

    def describe(self) -> list[str]:
        lines = []
        if self.tar is not None:
            lines.append(f"docker save {self.image} > {self.tar}   (python-on-whales, progress by bytes)")
        lines += [" ".join(_q(a) for a in c) for c in self.commands]
        lines.append(f"sha256 {self.output} -> {self.output}.sha256")
        return lines


def _q(s: str) -> str:
    import shlex

    return shlex.quote(str(s))


def default_output(image: str, fmt: str, out_dir: Path) -> Path:
    """``llmc-kit:latest`` -> ``<out_dir>/llmc-kit_latest.<fmt>``."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in image.split("/")[-1].replace(":", "_"))
    return out_dir / f"{safe}.{fmt}"


def export_commands(image: str, fmt: str, output: Path, *, via_tar: bool = False,
                    apptainer: str = "apptainer", enroot: str = "enroot") -> ExportPlan:
    """The exact steps for one format (pure)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}",
                          "sqsh: enroot/pyxis; sif: Apptainer; tar: docker save")
    if not image or any(c.isspace() for c in image):
        raise ConfigError(f"image {image!r} is not an image reference", "pass e.g. llmc-kit:latest")
    output = Path(output)
    if fmt == "tar":
        return ExportPlan(image, fmt, output, tar=output)
    if fmt == "sqsh":
        if via_tar:
            raise ConfigError("--via-tar does not apply to sqsh: enroot imports from the Docker daemon, not a tar",
                              "drop --via-tar")
        return ExportPlan(image, fmt, output, commands=[[enroot, "import", "-o", str(output), f"dockerd://{image}"]])
    # sif
    if via_tar:
        tar = output.with_suffix(".tar")
        return ExportPlan(image, fmt, output, tar=tar, keep_tar=False,
                          commands=[[apptainer, "build", "--force", str(output), f"docker-archive://{tar}"]])
    return ExportPlan(image, fmt, output,
                      commands=[[apptainer, "build", "--force", str(output), f"docker-daemon://{image}"]])


def find_tool(fmt: str, which: Callable[[str], Optional[str]] = shutil.which) -> Optional[str]:
    """The external tool a format needs: None for tar; raises KitError with install hints when missing."""
    if fmt == "sqsh":
        exe = which("enroot")
        if exe is None:
            raise KitError("enroot is not installed here, and `--format sqsh` needs it", ENROOT_HINT, exit_code=2)
        return exe
    if fmt == "sif":
        exe = which("apptainer") or which("singularity")
        if exe is None:
            raise KitError("apptainer (or singularity) is not installed here, and `--format sif` needs it",
                           APPTAINER_HINT, exit_code=2)
        return exe
    return None


# ---------------------------------------------------------------------------------------------- runtime
class _Progress:
    """A rich progress bar by bytes (total may be unknown)."""

    def __init__(self, description: str, total: Optional[int], console=None):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self.description, self.total = description, total

    def __enter__(self):
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def __exit__(self, *exc):
        if exc[0] is None:
            done = self.progress.tasks[0].completed
            self.progress.update(self.task, total=done, completed=done)
        self.progress.stop()


def image_size(image: str, docker=None) -> Optional[int]:
    """The image's size in bytes (about the size of its `docker save` tar), or None."""
    try:
        if docker is None:
            from python_on_whales import docker
        return int(docker.image.inspect(image).size)
    except Exception:
        return None


def save_tar(image: str, output: Path, *, docker=None, console=None) -> str:
    """``docker save IMAGE`` streamed to ``output`` (via ``output.part``, renamed at the end); returns sha256."""
    from python_on_whales.exceptions import DockerException, NoSuchImage

    if docker is None:
        from python_on_whales import docker
    output.parent.mkdir(parents=True, exist_ok=True)
    part = output.with_name(output.name + ".part")
    h = hashlib.sha256()
    try:
        stream: Iterable[bytes] = docker.image.save(image)
        with open(part, "wb") as f, _Progress(f"docker save {image}", image_size(image, docker), console) as bar:
            for chunk in stream:
                f.write(chunk)
                h.update(chunk)
                bar.advance(len(chunk))
    except NoSuchImage:
        part.unlink(missing_ok=True)
        raise KitError(f"no local image {image}", "build it with `kitctl build`, or name one from `docker images`",
                       exit_code=2) from None
    except DockerException as e:
        part.unlink(missing_ok=True)
        raise KitError(f"docker save {image} failed: {(e.stderr or str(e)).strip()[-600:]}",
                       "check `docker info` and the free space under the output folder") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, output)
    return h.hexdigest()


def sha256_file(path: Path, console=None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, _Progress(f"sha256 {path.name}", path.stat().st_size, console) as bar:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
            bar.advance(len(chunk))
    return h.hexdigest()


def run_tool(argv: Sequence[str], on_line: Callable[[str], None] = print) -> None:
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", bufsize=1)
    except FileNotFoundError:
        raise KitError(f"cannot run {argv[0]}: not found", "install it or put it on PATH") from None
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip("\n")
        on_line(line)
        tail = (tail + [line])[-20:]
    if proc.wait() != 0:
        raise KitError(f"{' '.join(argv[:2])} failed (exit {proc.returncode}):\n" + "\n".join(tail),
                       "read the lines above")


@dataclass
class ExportResult:
    output: Path
    sha256: str
    size: int


def write_sha256(output: Path, digest: str) -> Path:
    side = output.with_name(output.name + ".sha256")
    side.write_text(f"{digest}  {output.name}\n")
    return side


def run_export(plan: ExportPlan, *, docker=None, console=None, on_line: Callable[[str], None] = print,
               which: Callable[[str], Optional[str]] = shutil.which) -> ExportResult:
    """Execute an ExportPlan: docker save (if any), the external tool (if any), then sha256."""
    if plan.commands:   # every external command is the format's tool: use the one found on PATH
        exe = find_tool(plan.fmt, which)
        plan.commands = [[exe, *c[1:]] for c in plan.commands]
    plan.output.parent.mkdir(parents=True, exist_ok=True)
    digest = None
    if plan.tar is not None:
        digest = save_tar(plan.image, plan.tar, docker=docker, console=console)
    try:
        for argv in plan.commands:
            if plan.fmt == "sqsh" and plan.output.exists():
                plan.output.unlink()      # enroot refuses to overwrite
            run_tool(argv, on_line)
    finally:
        if plan.tar is not None and not plan.keep_tar and plan.tar != plan.output:
            plan.tar.unlink(missing_ok=True)
    if plan.commands or digest is None:
        digest = sha256_file(plan.output, console)
    write_sha256(plan.output, digest)
    return ExportResult(plan.output, digest, plan.output.stat().st_size)
