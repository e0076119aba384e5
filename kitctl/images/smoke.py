"""``kitctl smoke [IMAGE]``: run ``native/smoke/check.sh`` inside any kit image.

In a toolchain image it compiles ``native/smoke`` for the arch list; in a runtime image it uses the baked
``/opt/llmc/bin/llmc_smoke``. Then ``cuobjdump --list-elf`` must show SASS for every arch (smoke binary and
every ``train_gpt2cu*``), and ``mpirun -np 2`` must have both ranks report, as the image user ``llmc``.
On a host with GPUs and the NVIDIA container runtime the container gets the GPUs and the NCCL allreduce runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from kitctl.core.errors import ConfigError
from kitctl.host import registry
from kitctl.host.runtimes import ContainerSpec, DockerRuntime, Mount
from kitctl.core import resources

NATIVE = resources.share("native")


@dataclass
class SmokeResult:
    rc: int
    lines: list[str] = field(default_factory=list)

    def checks(self) -> dict[str, str]:
        """``{check: OK|FAIL|SKIPPED}`` from the ``CHECK name: STATUS ...`` lines (last one wins per name)."""
        out = {}
        for line in self.lines:
            if line.startswith("CHECK "):
                name, _, rest = line[6:].partition(":")
                out[name.strip()] = rest.split()[0] if rest.split() else ""
        return out


def spec(image: str, arch: str, np: int = 2, gpus: bool = False) -> ContainerSpec:
    """The container that runs the checks (the repo's native/ mounted read-only, image user llmc)."""
    return ContainerSpec(
        image=image,
        argv=["bash", "/opt/llmc-kit-native/smoke/check.sh", "--arch", arch, "--np", str(np)],
        mounts=[Mount(NATIVE, "/opt/llmc-kit-native", read_only=True)],
        user="llmc", gpus="all" if gpus else None, ranks=np,   # with GPUs: gpu_container_flags(np)
    )


def run(image: str, arch: Optional[str] = None, np: int = 2, gpus: bool = False,
        on_line: Optional[Callable[[str], None]] = None, runtime=None) -> SmokeResult:
    """Run the checks; every output line goes to ``on_line`` and into the result."""
    arch = arch or registry.image_archs(image)
    if not arch:
        raise ConfigError(f"image {image} has no {registry.ARCHS_LABEL} label", "give the arch list: --arch 75,86")
    res = SmokeResult(rc=0)

    def sink(line: str) -> None:
        res.lines.append(line)
        if on_line:
            on_line(line)

    res.rc = (runtime or DockerRuntime()).run(spec(image, arch, np, gpus), on_line=sink)
    return res
