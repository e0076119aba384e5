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
(``export_commands``); the runners are thin: every tool (``docker save``, enroot, apptainer) runs through the
kit's process runner (``kitctl.core.proc``: its own process group, stopped on Ctrl-C/SIGTERM) and writes a temp
file beside the output (``.tmp-<pid>-<name>``), renamed onto the output only when complete (``replace_atomic``):
a failed, interrupted or out-of-space export leaves the previous output (or none), never a partial one.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from kitctl.core import proc
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import replace_atomic, write_atomic
from kitctl.core.progress import progress_bar

FORMATS = ("tar", "sqsh", "sif")
CHUNK = 1 << 20
# a Docker image reference: [registry[:port]/]path[:tag][@sha256:digest]; never an option (-x) or a shell word
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,511}$")

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
        lines.append("(each file is written to a temp file beside it and renamed when complete)")
        return lines


def _q(s: str) -> str:
    return shlex.quote(str(s))


def check_output(output: Path) -> Path:
    """``--output``: a file path whose folder exists or can be made; not a folder, not inside a file."""
    if output.is_dir():
        raise ConfigError(f"--output {output} is a folder", f"name the file, e.g. --output {output / 'llmc-kit.sqsh'}")
    parent = output.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--output {output}: {parent} is a file, not a folder", "pick an output path in a folder")
    return output


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
    if not image or not IMAGE_RE.match(image):
        raise ConfigError(f"image {image!r} is not an image reference",
                          "pass a local image name such as llmc-kit:latest (see `docker images`)")
    output = check_output(Path(output))
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
            raise ConfigError("enroot is not installed here, and `--format sqsh` needs it", ENROOT_HINT)
        return exe
    if fmt == "sif":
        exe = which("apptainer") or which("singularity")
        if exe is None:
            raise ConfigError("apptainer (or singularity) is not installed here, and `--format sif` needs it",
                              APPTAINER_HINT)
        return exe
    return None


# ---------------------------------------------------------------------------------------------- runtime
def work_path(output: Path) -> Path:
    """The temp file a tool writes before it is renamed onto ``output`` (same folder, same suffix: enroot and
    apptainer see a ``.sqsh`` / ``.sif`` name)."""
    return output.with_name(f".tmp-{os.getpid()}-{output.name}")


def local_image_size(image: str, docker=None) -> Optional[int]:
    """The local image's size in bytes (about the size of its ``docker save`` tar); a KitError (exit 2) when
    there is no such image, None when Docker cannot tell."""
    # python-on-whales is imported here, not at the top: it costs 0.2 s on every kitctl start
    from python_on_whales.exceptions import DockerException, NoSuchImage

    if docker is None:
        from python_on_whales import docker
    try:
        return int(docker.image.inspect(image).size)
    except NoSuchImage:
        raise ConfigError(f"no local image {image}", "build it with `kitctl build`, or name one from `docker images`") from None
    except (DockerException, AttributeError, TypeError, ValueError):
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def save_tar(image: str, output: Path, *, docker=None, console=None, docker_cmd: str = "docker",
             say: Callable[[str], None] = print) -> None:
    """``docker save -o TEMP IMAGE`` with a progress bar by bytes, then TEMP renamed onto ``output``."""
    exe = shutil.which(docker_cmd)
    if exe is None:
        raise ConfigError(f"{docker_cmd} is not installed here, and `docker save` needs it",
                          "install Docker (kitctl doctor says how), or export on the machine that built the image")
    total = local_image_size(image, docker)
    tmp = work_path(output)
    say(f"docker save {image} > {output}")
    lines: list[str] = []
    with proc.TerminationAsInterrupt():
        try:
            with progress_bar(f"docker save {image}", total, console, unit="bytes") as bar:
                p = proc.start([exe, "save", "-o", str(tmp), image])
                try:
                    while p.poll() is None:
                        bar.update(completed=_size(tmp))
                        time.sleep(0.2)
                except BaseException:
                    proc.stop(p, grace_s=10)
                    raise
                done = _size(tmp)
                bar.update(completed=done, total=done)
            assert p.stdout is not None
            lines = p.stdout.read().splitlines()
            if p.returncode != 0:
                tail = "\n".join(lines[-20:]).strip()
                if "reference does not exist" in tail or "No such image" in tail:
                    raise ConfigError(f"no local image {image}", "build it with `kitctl build`, or name one from "
                                      "`docker images`")
                raise KitError(f"docker save {image} failed (exit {p.returncode}): {tail[-600:]}",
                               "check `docker info` and the free space under the output folder")
            replace_atomic(tmp, output)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def hash_file(path: Path, console=None) -> str:
    """sha256 of a file, with a progress bar by bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f, progress_bar(f"sha256 {path.name}", path.stat().st_size, console,
                                             unit="bytes") as bar:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
            bar.advance(len(chunk))
    return h.hexdigest()


def run_tool(argv: Sequence[str], on_line: Callable[[str], None] = print) -> None:
    """An external tool (enroot, apptainer) through the process runner; a KitError with its last lines when it
    fails, KeyboardInterrupt (after the whole group is stopped) on Ctrl-C."""
    proc.check(argv, on_line, what=" ".join(list(argv)[:2]), hint="read the lines above")


@dataclass
class ExportResult:
    output: Path
    sha256: str
    size: int


def write_sha256(output: Path, digest: str) -> Path:
    """``OUT.sha256`` in ``sha256sum`` format (atomically: a check file is never half there)."""
    side = output.with_name(output.name + ".sha256")
    write_atomic(side, f"{digest}  {output.name}\n")
    return side


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {folder}: {e.strerror or e}", "pick an --output in a folder you can write") from None


def run_export(plan: ExportPlan, *, docker=None, console=None, on_line: Callable[[str], None] = print,
               which: Callable[[str], Optional[str]] = shutil.which) -> ExportResult:
    """Execute an ExportPlan: docker save (if any), the external tool (if any), then sha256.

    Each tool writes a temp file beside its output, renamed when complete; on any failure the temp files
    (and the intermediate tar of ``--via-tar``) are removed and the previous output is left as it was."""
    if plan.commands:   # every external command is the format's tool: use the one found on PATH
        exe = find_tool(plan.fmt, which)
        assert exe is not None      # formats with commands always need a tool
        plan.commands = [[exe, *c[1:]] for c in plan.commands]
    check_output(plan.output)
    _make_folder(plan.output.parent)
    if plan.tar is not None:
        save_tar(plan.image, plan.tar, docker=docker, console=console, say=on_line)
    try:
        for argv in plan.commands:
            tmp = work_path(plan.output)
            try:
                run_tool([str(tmp) if a == str(plan.output) else a for a in argv], on_line)
                if not tmp.is_file():
                    raise KitError(f"{argv[0]} exited 0 but wrote no {plan.output.name}", "read the lines above")
                replace_atomic(tmp, plan.output)
            finally:
                tmp.unlink(missing_ok=True)
    finally:
        if plan.tar is not None and not plan.keep_tar and plan.tar != plan.output:
            plan.tar.unlink(missing_ok=True)
    digest = hash_file(plan.output, console)
    write_sha256(plan.output, digest)
    return ExportResult(plan.output, digest, plan.output.stat().st_size)
