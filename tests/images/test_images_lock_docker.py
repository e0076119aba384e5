"""docker/images.lock on the real engine (CI: ../shared/ci/docker-engine.sh).

* the lock read from the session's data image build (the probe shares its layers) names that image's packages;
  a --no-cache build from the lock gives the same package set (dpkg -l identical), labelled with the lock;
* a lock that no longer resolves (an apt version the archive does not serve) stops `kitctl build` with exit 1
  naming the package and the ways on; a locked local base whose ID moved stops it before building;
* nvcc output from the wheels toolchain is the same file twice (sha256), compiled in two fresh containers.

Only one extra image build (the locked data image, --no-cache); the failing build stops at its apt step.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import kitctl_proc

from kitctl.core import pins
from kitctl.core.errors import KitError
from kitctl.images import lock as lk
from kitctl.images import lock_resolve
from kitctl.images.context import prepare_context
from kitctl.images.request import BuildRequest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.docker
LOCK_IMAGE = "llmc-kit-locktest"     # never moves the session's llmc-kit-test:data


def sh(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True)


def dpkg_l(ref: str) -> str:
    r = sh("docker", "run", "--rm", "--entrypoint", "dpkg", ref, "-l")
    assert r.returncode == 0, r.stderr
    return r.stdout


def kit_env() -> dict[str, str]:
    """The environment for kitctl: KIT_TEST_* (the tests' own settings, e.g. KIT_TEST_REGISTRY) are not kit.yaml
    fields, which kitctl would refuse."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("KIT_TEST_")}, "COLUMNS": "200"}


def kit(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """`kitctl` in a subprocess with a kit.yaml naming the test image (and the pip index of the session)."""
    pip = os.environ.get("PIP_INDEX_URL")
    (folder / "kit.yaml").write_text(f"image: {LOCK_IMAGE}\ndata_root: ./data\n"
                                     + (f"mirrors:\n  pip_index: {pip}\n" if pip else ""))
    r = kitctl_proc.run(["--config", str(folder / "kit.yaml"), *args], cwd=folder, env=kit_env())
    r.stderr = " ".join(r.stderr.split())
    return r


@pytest.fixture(scope="module")
def data_lock(data_image, test_kit_config, docker_base_image, build_ca, tmp_path_factory):
    """`kitctl lock` of the data stage (its probe's layers are cached from the data_image build), in a tmp file."""
    folder = tmp_path_factory.mktemp("lock")
    path = folder / "images.lock"
    args = ["lock", "--provider", "wheels", "--target", "data", "--base-image", docker_base_image, "--lock", str(path),
            "--build-dir", str(folder / "b"), *(["--ca-cert", str(build_ca)] if build_ca else [])]
    dry = kit(folder, *args, "--dry-run")
    assert dry.returncode == 0 and not path.exists(), dry.stdout + dry.stderr          # a dry run writes nothing
    assert f"[data] base {docker_base_image} -> sha256:" in dry.stdout and "--output type=local" in dry.stdout
    r = kit(folder, *args)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert f"wrote {path}" in " ".join(r.stdout.split())
    lock = lk.load(path)
    assert lock is not None
    cfg = test_kit_config.model_copy(update={"image": LOCK_IMAGE})
    req = BuildRequest.from_config(cfg, provider="wheels", target="data", base_image=docker_base_image,
                                   cuda=pins.load().providers.wheels.cuda, ca_cert=build_ca, archs=[75],
                                   build_dir=tmp_path_factory.mktemp("lock-build"))
    req.lock = lock
    return req, lock, path


def test_lock_names_the_base_id_and_the_data_images_packages(data_lock, data_image, docker_base_image):
    _req, lock, path = data_lock
    entry = lock.stages["data"]
    base_id = sh("docker", "image", "inspect", "--format", "{{.Id}}", docker_base_image).stdout.strip()
    assert (entry.base, entry.digest, entry.source) == (docker_base_image, base_id, "local")
    assert {"python3", "python3-venv", "ca-certificates"} <= set(entry.apt)     # named ones, even if the base had one
    assert any(k.startswith("libpython3") for k in entry.apt)                  # and what they pulled in
    assert lk.load(path).stages == lock.stages                                 # type: ignore[union-attr]
    # the session's data image (built without a lock) holds exactly these versions: the lock is what it resolved
    assert lock_resolve.verify_image(data_image, "data", entry) == []


def test_no_cache_build_from_the_lock_gives_the_same_package_set(data_lock, data_image):
    req, lock, _path = data_lock
    lock_resolve.check_bases(req, ("data",))
    ctx = prepare_context(req)
    assert "python3=" in ctx.dockerfile.read_text()
    tags = lock_resolve.build_locked(req, ctx, "data", on_line=print, cache=False)
    assert tags[0].startswith(f"{LOCK_IMAGE}:data-")
    assert dpkg_l(tags[0]) == dpkg_l(data_image)                  # the whole dpkg -l, line for line
    r = sh("docker", "image", "inspect", "--format", '{{index .Config.Labels "org.llmc-kit.images-lock"}}', tags[0])
    assert r.stdout.strip() == lock.sections_sha256(["data"])
    assert lock_resolve.lock_finding(lock, [tags[0]])[0] == "ok"
    from kitctl.train import inspect_image          # what run.json records of the image, and status shows
    assert inspect_image(tags[0]).images_lock == lock.sections_sha256(["data"])
    assert lock_resolve.lock_finding(lock, [data_image])[0] == "warn"     # built without the lock: doctor says so


def test_a_lock_that_no_longer_resolves_stops_the_build_naming_the_package(data_lock, tmp_path, build_ca):
    req, lock, path = data_lock
    gone = path.read_text().replace(f"python3={lock.stages['data'].apt['python3']}\n", "python3=3.11.2-1+b99\n")
    (tmp_path / "images.lock").write_text(gone)
    r = kit(tmp_path, "build", "--target", "data", "--provider", "wheels", "--arch", "75", "--base-image",
            req.base_image or "", "--lock", str(tmp_path / "images.lock"), "--build-dir", str(tmp_path / "b"),
            *(["--ca-cert", str(build_ca)] if build_ca else []))
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    assert "pins python3=3.11.2-1+b99, which the apt archive no longer serves" in r.stderr
    assert "mirrors.apt_snapshot" in r.stderr and "--update-lock" in r.stderr


def test_a_locked_local_base_whose_id_moved_stops_before_building(data_lock):
    req, lock, _path = data_lock
    moved = lk.parse(lock.body().replace(lock.stages["data"].digest, "sha256:" + "0" * 64))
    req2 = BuildRequest(**{**req.__dict__, "lock": moved})
    with pytest.raises(KitError, match="the lock has local image ID sha256:0000") as e:
        lock_resolve.check_bases(req2, ("data",))
    assert e.value.exit_code == 1 and "--update-lock" in (e.value.hint or "")


def test_nvcc_output_is_the_same_file_from_two_compiles(wheels_toolchain):
    """The binary side: one source, one toolchain image, two fresh containers (native/smoke's CUDA + MPI program,
    built like train_gpt2cu by native/build.sh). nvcc leaves its temp-file name in the binary's symbol table
    (``tmpxft_<its PID>_...cudafe1.cpp``, an STT_FILE symbol) and PIDs race even in a fresh container; the build
    scripts blank that PID, so the two files are one sha256 -- and the name is still there, blanked."""
    _req, _ctx, tag = wheels_toolchain
    sums = []
    for _ in range(2):
        r = sh("docker", "run", "--rm", "--user", "llmc", "-v", f"{REPO / 'native'}:/n:ro", tag, "bash", "-c",
               "bash /n/smoke/build.sh --arch 75 --out /tmp/s >/dev/null 2>&1 && sha256sum /tmp/s && "
               "readelf -Ws /tmp/s | grep -o 'tmpxft_[0-9a-f]*_[0-9a-f]*' | sort -u")
        assert r.returncode == 0, r.stdout + r.stderr
        sums.append(r.stdout.split())
    assert sums[0] == sums[1], sums
    assert len(sums[0][0]) == 64 and sums[0][2:] == ["tmpxft_00000000_00000000"], sums[0]


REGISTRY = os.environ.get("KIT_TEST_REGISTRY", "127.0.0.1:5000")


def test_a_registry_base_is_locked_by_its_digest_and_a_gone_digest_stops_the_build(docker_base_image, tmp_path,
                                                                                    build_ca):
    """Through the loopback registry (.ci/run starts it): the lock holds the registry's manifest digest -- from
    the pulled image's RepoDigest, and from the registry itself once the tag is gone here --, render says
    FROM ref@digest, and a digest the registry does not have stops the build naming it (exit 1)."""
    import urllib.request

    try:
        urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=2).close()
    except OSError:
        pytest.skip(f"no registry at {REGISTRY} (.ci/run starts Debian's docker-registry there)")
    ref = f"{REGISTRY}/llmc-kit-lockbase:bookworm"
    assert sh("docker", "tag", docker_base_image, ref).returncode == 0
    push = sh("docker", "push", ref)
    assert push.returncode == 0, push.stderr
    pushed = push.stdout.split("digest: ")[1].split()[0]
    ca = ["--ca-cert", str(build_ca)] if build_ca else []
    path = tmp_path / "images.lock"
    r = kit(tmp_path, "lock", "--provider", "wheels", "--target", "data", "--base-image", ref, "--lock", str(path),
            "--build-dir", str(tmp_path / "b"), *ca)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    entry = lk.load(path).stages["data"]                                        # type: ignore[union-attr]
    assert (entry.digest, entry.source) == (pushed, "registry")
    r = kit(tmp_path, "render", "--stdout", "--provider", "wheels", "--arch", "75", "--base-image", ref,
            "--lock", str(path))
    assert f"FROM {ref}@{pushed} AS data" in r.stdout and "python3=" in r.stdout
    assert sh("docker", "rmi", ref).returncode == 0                             # only the tag: the base stays
    assert lock_resolve.resolve_base(ref) == (pushed, "registry")              # asked of the registry now
    path.write_text(path.read_text().replace(pushed, "sha256:" + "0" * 64))
    r = kit(tmp_path, "build", "--target", "data", "--provider", "wheels", "--arch", "75", "--base-image", ref,
            "--lock", str(path), "--build-dir", str(tmp_path / "b"), *ca)
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    assert f"pins the base image {ref}@sha256:{'0' * 64}, which the registry no longer has" in r.stderr
    assert "--update-lock" in r.stderr
