"""An unreachable HuggingFace endpoint is probed once a `kitctl data` run: resolving the branch to a commit says
so at once, with every way around it, and the listing that follows never probes again (each probe can take
``PROBE_SECONDS`` on a network that drops packets). A real closed port on loopback is the endpoint; a spy on
``socket.create_connection`` counts the connections kitctl tries."""
from __future__ import annotations

import socket

import pytest

from kitctl.core import net
from tests.hostile.harness import make_world, run_kitctl


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]          # closed again on leaving: connecting is refused


@pytest.mark.parametrize("dataset", ["fineweb10B", "edu_fineweb10B"])   # a pinned commit; a branch (main)
def test_an_unreachable_hub_is_probed_once_and_named(dataset, tmp_path, capsys, monkeypatch):
    cwd = make_world(tmp_path)
    port = _closed_port()
    tries: list[tuple[str, int]] = []
    real = socket.create_connection

    def counting(address, *a, **kw):
        tries.append(address)
        return real(address, *a, **kw)

    monkeypatch.setattr(net.socket, "create_connection", counting)
    for k in net.PROXY_VARIABLES:
        monkeypatch.delenv(k, raising=False)
    r = run_kitctl(["data", dataset, "--runtime", "native"], cwd, capsys, monkeypatch,
                   env={"HF_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert r.code == 1, r.text
    said = " ".join(r.err.split())
    assert f"cannot connect to 127.0.0.1:{port}" in said and "on the HuggingFace hub" in said, said
    assert f"HF_ENDPOINT is 'http://127.0.0.1:{port}'" in said and "--source" in said and "--bundle FILE" in said
    assert tries == [("127.0.0.1", port)], tries
    assert not r.last_resort
