"""Where the kit's own files are: the design card's top-level folders, read the same way from a wheel or a checkout.

The wheel maps ``docker/``, ``native/``, ``datasets/``, ``compose.yaml`` (and the demo's real run log) into
``kitctl/_share/`` (hatchling force-include, see pyproject.toml); an editable install from a checkout and the
data image (``/opt/llmc-kit``) keep them beside the package instead. Code asks this module, never a path of its
own, so both shapes work and nothing reads "the checkout".
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path


@functools.lru_cache(maxsize=1)
def package_dir() -> Path:
    """The installed ``kitctl`` package folder."""
    return Path(str(resources.files("kitctl")))


@functools.lru_cache(maxsize=1)
def share_dir() -> Path:
    """The folder holding docker/, native/, datasets/ and compose.yaml."""
    wheel = package_dir() / "_share"
    if wheel.is_dir():
        return wheel
    return package_dir().parent


def share(*parts: str) -> Path:
    """A path inside the kit's shared files, e.g. ``share("docker", "versions.yaml")``."""
    return share_dir().joinpath(*parts)


def demo_run_dir() -> Path:
    """The real 150-step H100 run whose logs ``kitctl demo`` turns into TensorBoard files and a report."""
    wheel = share("demo-run")
    return wheel if wheel.is_dir() else share("docs", "validation", "2026-11-28-h100-kit")
