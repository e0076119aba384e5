"""Load ``docker/versions.yaml``: every pin of the kit in one place."""
from __future__ import annotations

import functools
import hashlib
from typing import Any

import yaml

from kitctl.core import resources

VERSIONS_FILE = resources.share("docker", "versions.yaml")


@functools.lru_cache(maxsize=1)
def pins() -> dict[str, Any]:
    """All pins as a nested dict (cached)."""
    return yaml.safe_load(VERSIONS_FILE.read_text())


def pins_sha256() -> str:
    """sha256 of versions.yaml itself, recorded in manifests so a run names the exact pin set."""
    return hashlib.sha256(VERSIONS_FILE.read_bytes()).hexdigest()


def llmc_commit() -> str:
    return pins()["llmc"]["commit"]
