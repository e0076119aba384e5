"""Behind the firewall (issue 27), with real sockets on 127.0.0.1: a server that accepts and never answers, a
closed port, a mirror whose name does not resolve, a mirror value that is no registry. ``kitctl doctor`` says
per purpose which host is unreachable and the offline way round it, within its short timeout; bad mirror values
exit 2 before anything is planned."""
from __future__ import annotations

import json
import os
import time

import pytest

import kitctl_proc
from loopback import closed_port, file_server, silent_server

from kitctl.core import net
from kitctl.host import doctor


def test_a_server_that_accepts_and_never_answers_is_unreachable_within_the_timeout():
    with silent_server() as port:
        t0 = time.monotonic()
        why = net.probe_http(f"http://127.0.0.1:{port}/v2/", timeout=0.5)
        took = time.monotonic() - t0
    assert why == f"127.0.0.1:{port} accepts connections but does not answer within 0.5 s"
    assert took < 2.0


def test_a_closed_port_and_an_unresolvable_name_say_which():
    port = closed_port()
    assert f"cannot connect to 127.0.0.1:{port}" in (net.probe_http(f"http://127.0.0.1:{port}/", 1.0) or "")
    assert "does not resolve" in (net.probe_http("https://no-such-mirror.invalid/simple", 1.0) or "")


def test_a_server_that_answers_is_reachable(tmp_path):
    with file_server(tmp_path) as (base, _):
        assert net.probe_http(base + "/anything", 2.0) is None       # a 404 is an answer: the host is there


@pytest.mark.slow       # doctor's probes wait out their timeout on the silent server (~5 s)
def test_doctor_names_each_unreachable_endpoint_per_purpose_with_the_way_round(tmp_path):
    from tests.docker_fixtures import docker_engine_reason

    if why := docker_engine_reason():       # runtime docker: without an engine that is the data purpose's reason
        pytest.skip(f"doctor's verdicts for runtime docker need an engine: {why}")
    (tmp_path / "hs").mkdir()
    (tmp_path / "hs" / "hellaswag_val.jsonl").write_text("{}\n")
    shut = closed_port()
    with silent_server() as silent, file_server(tmp_path / "hs") as (base, _):
        env = {**os.environ, "KIT_DATA_ROOT": str(tmp_path / "root"), "KIT_RUNTIME": "docker",
               "KIT_MIRRORS__HF_ENDPOINT": f"http://127.0.0.1:{silent}",
               "KIT_MIRRORS__REGISTRY": f"127.0.0.1:{shut}",
               "KIT_MIRRORS__PIP_INDEX": "https://no-such-mirror.invalid/simple",
               "KIT_MIRRORS__LLMC_SRC": f"http://127.0.0.1:{silent}/llm.c.tar.gz",
               "KIT_MIRRORS__HELLASWAG_URL": f"{base}/hellaswag_val.jsonl"}
        for k in net.PROXY_VARIABLES:
            env.pop(k, None)
        t0 = time.monotonic()
        r = kitctl_proc.run(["doctor", "--json", "--for", "data"], env=env, cwd=tmp_path, timeout=60)
        took = time.monotonic() - t0
    d = json.loads(r.stdout)
    net_rows = {f["check"][len(doctor.NET_CHECK):]: f for f in d["findings"] if f["check"].startswith(doctor.NET_CHECK)}
    assert set(net_rows) == {"HF endpoint", "HellaSwag", "registry", "PyPI index", "llm.c source"}
    assert net_rows["HellaSwag"]["status"] == "ok"
    hf, reg, pypi, llmc = (net_rows[k] for k in ("HF endpoint", "registry", "PyPI index", "llm.c source"))
    assert hf["status"] == "warn" and "accepts connections but does not answer" in hf["detail"]
    assert "mirrors.hf_endpoint" in hf["meaning"] and "--bundle FILE" in hf["meaning"]
    assert reg["status"] == "warn" and f"http://127.0.0.1:{shut}/v2/" in reg["detail"] and "cannot connect" in reg["detail"]
    assert pypi["status"] == "warn" and "does not resolve" in pypi["detail"] and "mirrors.pip_index" in pypi["meaning"]
    assert llmc["status"] == "warn" and "mirrors.llmc_src" in llmc["meaning"]
    assert "unreachable from here: HF endpoint" in d["purposes"]["data"]["reason"]
    assert "registry" in d["purposes"]["build"]["reason"] and "PyPI index" in d["purposes"]["build"]["reason"]
    assert took < doctor.NET_PROBE_SECONDS + 20       # the probes run at once: one timeout, not five


@pytest.mark.slow       # doctor's own checks (docker info, ...) take ~2 s
def test_doctor_no_network_probes_nothing(tmp_path):
    env = {**os.environ, "KIT_DATA_ROOT": str(tmp_path / "root"), "KIT_MIRRORS__HF_ENDPOINT": "https://x.invalid"}
    r = kitctl_proc.run(["doctor", "--json", "--no-network"], env=env, cwd=tmp_path, timeout=60)
    assert not [f for f in json.loads(r.stdout)["findings"] if f["check"].startswith(doctor.NET_CHECK)]


@pytest.mark.parametrize("key, value", [
    ("KIT_MIRRORS__REGISTRY", "https://m.example"),            # a URL where a registry host goes
    ("KIT_MIRRORS__REGISTRY", "m example"),
    ("KIT_MIRRORS__HELLASWAG_URL", "m.example/hellaswag_val.jsonl"),
    ("KIT_MIRRORS__HF_ENDPOINT", "hf-mirror.com"),
])
def test_a_mirror_with_a_bad_name_exits_2_before_planning(tmp_path, key, value):
    env = {**os.environ, "KIT_DATA_ROOT": str(tmp_path / "root"), key: value}
    r = kitctl_proc.run(["reproduce", "--dry-run"], env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "mirrors." + key.split("__")[1].lower() in r.stderr


def test_hellaswag_source_url_that_is_no_url_exits_2(tmp_path):
    env = {**os.environ, "KIT_DATA_ROOT": str(tmp_path / "root")}
    r = kitctl_proc.run(["reproduce", "--dry-run", "--hellaswag-source", "http://bad host/x.jsonl"], env=env,
                        cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "--hellaswag-source" in r.stderr, r.stderr


@pytest.fixture
def loopback_registry(tmp_path):
    """Debian's docker-registry on a free loopback port (plain http: the engine trusts 127.0.0.0/8)."""
    import shutil
    import subprocess
    import urllib.request

    exe = shutil.which("docker-registry")
    if exe is None:
        pytest.skip("Debian's docker-registry is not installed (.ci/run installs it)")
    port = closed_port()
    (tmp_path / "reg.yml").write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}/reg\n"
                                      f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([exe, "serve", str(tmp_path / "reg.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.docker
def test_behind_a_registry_mirror_the_wheels_provider_pulls_library_debian_from_it(loopback_registry,
                                                                                  docker_base_image):
    """The mirror form the kit writes (`<mirror>/library/debian:bookworm`) is what a registry mirror serves: pushed
    to a real registry on loopback, removed here, pulled back by the exact reference every wheels stage names;
    doctor finds the mirror reachable."""
    import subprocess

    from kitctl.core.config import KitConfig, Mirrors
    from kitctl.images import request
    from kitctl.pipeline.sources import registry_url

    mirror = loopback_registry
    cfg = KitConfig(provider="wheels", mirrors=Mirrors(registry=mirror))
    bases = request.base_images(request.BuildRequest.from_config(cfg, provider="wheels"))
    ref = f"{mirror}/library/debian:bookworm"
    assert set(bases.values()) == {ref}
    subprocess.run(["docker", "tag", docker_base_image, ref], check=True)
    try:
        subprocess.run(["docker", "push", "-q", ref], check=True, capture_output=True, timeout=300)
        subprocess.run(["docker", "rmi", ref], check=True, capture_output=True)
        r = subprocess.run(["docker", "pull", "-q", ref], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    finally:
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)
    assert net.probe_http(registry_url(mirror), 2.0) is None


def test_hellaswag_source_url_with_a_bundle_is_refused(tmp_path):
    env = {**os.environ, "KIT_DATA_ROOT": str(tmp_path / "root")}
    (tmp_path / "b.tar").write_bytes(b"")
    r = kitctl_proc.run(["reproduce", "--dry-run", "--bundle", str(tmp_path / "b.tar"), "--hellaswag-source",
                         "http://127.0.0.1:8/x.jsonl"], env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "a bundle run downloads nothing" in " ".join(r.stderr.split()), r.stderr
