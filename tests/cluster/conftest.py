"""Fixtures shared by the cluster tests."""
import pytest


@pytest.fixture()
def shared(tmp_path):
    """A folder that stands for the cluster's shared file system (what every node mounts)."""
    d = tmp_path / "shared"
    d.mkdir()
    return d
