"""kitctl export: docker save tar for real on the Docker engine; sqsh/sif command construction and missing tools."""
from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kitctl.cluster import export
from kitctl.core.errors import ConfigError, KitError

IMAGE = "local/debian:bookworm"   # made by ../shared/ci/docker-engine.sh


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ pure: commands
def test_sqsh_command_is_enroot_import_from_the_daemon(tmp_path):
    p = export.export_commands("llmc-kit:latest", "sqsh", tmp_path / "k.sqsh")
    assert p.tar is None
    assert p.commands == [["enroot", "import", "-o", str(tmp_path / "k.sqsh"), "dockerd://llmc-kit:latest"]]


def test_sif_command_from_daemon_and_via_tar(tmp_path):
    p = export.export_commands("llmc-kit:latest", "sif", tmp_path / "k.sif")
    assert p.commands == [["apptainer", "build", "--force", str(tmp_path / "k.sif"), "docker-daemon://llmc-kit:latest"]]
    assert p.tar is None
    p = export.export_commands("llmc-kit:latest", "sif", tmp_path / "k.sif", via_tar=True)
    assert p.tar == tmp_path / "k.tar" and p.keep_tar is False
    assert p.commands == [["apptainer", "build", "--force", str(tmp_path / "k.sif"), f"docker-archive://{tmp_path}/k.tar"]]
    assert p.describe()[0].startswith("docker save llmc-kit:latest > ")


def test_tar_is_docker_save_only(tmp_path):
    p = export.export_commands("llmc-kit:latest", "tar", tmp_path / "k.tar")
    assert p.tar == tmp_path / "k.tar" and p.commands == []


@pytest.mark.parametrize("fmt,kw,msg", [
    ("zip", {}, "is not one of tar, sqsh, sif"),
    ("sqsh", {"via_tar": True}, "enroot imports from the Docker daemon, not a tar"),
])
def test_bad_export_inputs(tmp_path, fmt, kw, msg):
    with pytest.raises(ConfigError) as e:
        export.export_commands("llmc-kit:latest", fmt, tmp_path / "x", **kw)
    assert msg in e.value.message


def test_default_output_name(tmp_path):
    assert export.default_output("registry.example/team/llmc-kit:latest", "sqsh", tmp_path) == \
        tmp_path / "llmc-kit_latest.sqsh"


# ------------------------------------------------------------------------------------ missing tools
class _NoDocker:
    """Fails the test if anything tries to talk to Docker."""

    def __getattr__(self, name):
        raise AssertionError(f"docker.{name} used although the export should stop before")


def test_sqsh_without_enroot_says_how_to_install_or_use_a_tar(tmp_path):
    plan = export.export_commands("llmc-kit:latest", "sqsh", tmp_path / "k.sqsh")
    with pytest.raises(KitError) as e:
        export.run_export(plan, docker=_NoDocker(), which=lambda name: None)
    assert e.value.exit_code == 2
    assert "enroot is not installed" in e.value.message
    assert "github.com/NVIDIA/enroot/releases" in e.value.hint
    assert "--format tar" in e.value.hint and "docker load -i x.tar && enroot import" in e.value.hint
    assert not (tmp_path / "k.sqsh").exists()


def test_sif_without_apptainer_stops_before_docker_save(tmp_path):
    plan = export.export_commands("llmc-kit:latest", "sif", tmp_path / "k.sif", via_tar=True)
    with pytest.raises(KitError) as e:
        export.run_export(plan, docker=_NoDocker(), which=lambda name: None)
    assert "apptainer (or singularity) is not installed" in e.value.message
    assert "apptainer build x.sif docker-archive://x.tar" in e.value.hint
    assert list(tmp_path.iterdir()) == []


def test_singularity_is_accepted_for_sif():
    assert export.find_tool("sif", which=lambda n: "/usr/bin/singularity" if n == "singularity" else None) \
        == "/usr/bin/singularity"


def test_external_tool_runs_and_output_gets_sha256(tmp_path):
    # a stand-in `enroot` that writes the -o file the way enroot import does
    fake = tmp_path / "enroot"
    fake.write_text('#!/bin/sh\n[ "$1" = import ] && [ "$2" = -o ] || exit 9\necho "importing $4"\n'
                    'printf "squashfs of %s" "$4" > "$3"\n')
    fake.chmod(0o755)
    out = tmp_path / "out" / "k.sqsh"
    plan = export.export_commands("llmc-kit:latest", "sqsh", out)
    lines: list[str] = []
    res = export.run_export(plan, docker=_NoDocker(), which=lambda n: str(fake) if n == "enroot" else None,
                            on_line=lines.append)
    assert lines == ["importing dockerd://llmc-kit:latest"]
    assert out.read_text() == "squashfs of dockerd://llmc-kit:latest"
    assert res.sha256 == _sha(out) and res.size == out.stat().st_size
    assert (tmp_path / "out" / "k.sqsh.sha256").read_text() == f"{res.sha256}  k.sqsh\n"


def test_external_tool_failure_is_reported(tmp_path):
    fake = tmp_path / "apptainer"
    fake.write_text("#!/bin/sh\necho 'FATAL: no space left'\nexit 3\n")
    fake.chmod(0o755)
    plan = export.export_commands("llmc-kit:latest", "sif", tmp_path / "k.sif")
    with pytest.raises(KitError) as e:
        export.run_export(plan, docker=_NoDocker(), which=lambda n: str(fake) if n == "apptainer" else None,
                          on_line=lambda s: None)
    assert "failed (exit 3)" in e.value.message and "no space left" in e.value.message


# ------------------------------------------------------------------------------------ real docker save
@pytest.fixture()
def local_image():
    r = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"{IMAGE} not present (made by ../shared/ci/docker-engine.sh)")
    return IMAGE


@pytest.mark.docker
def test_export_tar_for_real(tmp_path, local_image, monkeypatch):
    from kitctl.cli import app
    from kitctl.core.context import state

    monkeypatch.setenv("KIT_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("KIT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    state._config = None
    out = tmp_path / "img.tar"
    r = CliRunner().invoke(app, ["export", "--format", "tar", local_image, "-o", str(out)])
    assert r.exit_code == 0, r.output
    digest = _sha(out)
    assert f"sha256 {digest}" in r.output
    assert "docker save local/debian:bookworm" in r.output          # the progress bar's label
    assert (tmp_path / "img.tar.sha256").read_text() == f"{digest}  img.tar\n"
    assert not (tmp_path / "img.tar.part").exists()
    with tarfile.open(out) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == [local_image]
    # the tar is a real image archive: docker load accepts it and names the same image id
    loaded = subprocess.run(["docker", "load", "-i", str(out)], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    want = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", local_image], capture_output=True,
                          text=True).stdout.strip()
    assert manifest[0]["Config"].split(".")[0].removeprefix("blobs/sha256/") in want


@pytest.mark.docker
def test_export_missing_image_is_a_clear_error(tmp_path):
    plan = export.export_commands("local/no-such-image:never", "tar", tmp_path / "x.tar")
    with pytest.raises(KitError) as e:
        export.run_export(plan)
    assert e.value.message == "no local image local/no-such-image:never"
    assert "kitctl build" in e.value.hint
    assert list(tmp_path.iterdir()) == []
