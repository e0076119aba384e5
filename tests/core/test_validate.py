"""kitctl/core/validate.py: the edge checks, value by value (the CLI-level cases are in tests/hostile)."""
from __future__ import annotations

import os

import pytest

from kitctl.core import validate
from kitctl.core.errors import ConfigError


def refused(fn, *args, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        fn(*args, **kw)
    assert e.value.exit_code == 2 and e.value.hint, e.value
    return e.value


@pytest.mark.parametrize("value,ok", [(1, True), (6006, True), (65535, True), (0, False), (-1, False),
                                      (65536, False), (70000, False)])
def test_port(value, ok):
    if ok:
        assert validate.port(value) == value
    else:
        assert f"--port {value}" in refused(validate.port, value).message


@pytest.mark.parametrize("text,want", [("75,86", [75, 86]), ("7.5, 8.6", [75, 86]), ("sm_90", [90]),
                                       ("compute_80 86 86", [80, 86]), ("12.0", [120]), ("100", [100])])
def test_arch_list_accepts(text, want):
    assert validate.arch_list(text) == want
    assert validate.arch_spec(text) == ",".join(map(str, want))


@pytest.mark.parametrize("text", ["8.65", "inf", "nan", "-7.5", "1e2", "8.", ".5", "ampere", "", ",", "99",
                                  "7.5;rm -rf /"])
def test_arch_list_refuses(text):
    e = refused(validate.arch_list, text)
    assert "--arch" in e.message and "75,86" in e.hint


# what tests/hostile/cases.py's build-arch-* cases asserted, one CLI run each (build-arch-8.65 keeps the wiring)
@pytest.mark.parametrize("text,says", [("8.65", "8.65"), ("inf", "inf"), ("nan", "nan"), ("-7.5", "-7.5"),
                                       ("99", "unknown compute capability"), (",", "empty")])
def test_arch_list_names_what_is_wrong(text, says):
    assert says in refused(validate.arch_list, text, "--arch").message


def test_arch_8_65_is_not_rounded_to_86():
    """round(86.5) == 86 in Python: the old parser accepted 8.65 as sm_86."""
    with pytest.raises(ValueError, match="8.65"):
        validate.parse_arch_list("8.65")


@pytest.mark.parametrize("name", ["gpt2", "d12-run.2", "A_b", "x" * 128])
def test_run_name_accepts(name):
    assert validate.run_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../../x", "a/b", "/tmp/x", "a b", "a\nb", "-x", "x" * 129,
                                  "a..b", "~root"])
def test_run_name_refuses(name):
    e = refused(validate.run_name, name)
    assert "--out" in e.hint and "--name" in e.message


def test_numbers():
    assert validate.positive_int(1, "--n") == 1
    assert "--n 0: must be >= 1" in refused(validate.positive_int, 0, "--n").message
    assert validate.non_negative_int(0, "--w") == 0
    refused(validate.non_negative_int, -1, "--w")
    assert "between 0 and 2" in refused(validate.int_range, 3, "--recompute", lo=0, hi=2).message
    assert validate.steps_or_epoch(-1) == -1 and validate.steps_or_epoch(5) == 5
    for bad in (0, -2):
        refused(validate.steps_or_epoch, bad)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        refused(validate.positive_float, bad, "--interval")
    assert validate.positive_float(0.5, "--interval") == 0.5


@pytest.mark.parametrize("value,option,lo", [(0, "--micro-batch", 1), (-4, "--micro-batch", 1), (-8, "--min-b", 1),
                                             (-5, "--steps", 1), (2**31, "--micro-batch", 1), (-1, "--warmup", 0),
                                             (2**31, "--total-batch", None), (10**20, "--micro-batch", 1),
                                             (0, "--steps", 1), (-1, "--step", 0)])
def test_llmc_int_refuses(value, option, lo):
    """llm.c's counts (train --micro-batch, tune --min-b / --steps / --warmup, demo --steps, export-model --step):
    each option keeps one CLI case in tests/hostile (cases.py: tune-min-b-zero; test_trust_cli.py: *-over-int32);
    the values are here."""
    e = refused(validate.llmc_int, value, option, lo=lo)
    assert e.message.startswith(f"{option} {value}: must be") and "32-bit int" in e.message
    assert validate.llmc_int(lo if lo is not None else -3, option, lo=lo) == (lo if lo is not None else -3)
    assert validate.llmc_int(2**31 - 1, option, lo=lo) == 2**31 - 1


@pytest.mark.parametrize("value,says", [(0, "--steps 0: must be at least 1"), (-2, "--steps -2: must be at least 1"),
                                        (2**31, "at most 2,147,483,647")])
def test_steps_or_epoch_names_the_value(value, says):
    assert says in refused(validate.steps_or_epoch, value, "--steps").message


@pytest.mark.parametrize("check,value,option,kw,says", [
    (validate.int_range, -1, "--top-k", dict(lo=0, hi=validate.GPT2_VOCAB), "between 0 and 50257"),
    (validate.int_range, 60000, "--top-k", dict(lo=0, hi=validate.GPT2_VOCAB), "between 0 and 50257"),
    (validate.int_range, -1, "--num-fewshot", dict(lo=0, hi=validate.GPT2_CONTEXT), "between 0 and 1024"),
    (validate.int_range, 10**20, "--num-fewshot", dict(lo=0, hi=validate.GPT2_CONTEXT), "between 0 and 1024"),
    (validate.seed, -1, "--seed", {}, "between 0 and 4294967295"),
    (validate.seed, 2**32, "--seed", {}, "between 0 and 4294967295"),
    (validate.seed, 10**20, "--seed", {}, "unsigned 32-bit"),
    (validate.bounded_float, -1.0, "--limit", dict(lo=0, hi=validate.LLMC_INT_MAX, why="examples", example="0.1"),
     "greater than 0"),
    (validate.bounded_float, 1e300, "--limit", dict(lo=0, hi=validate.LLMC_INT_MAX, why="examples", example="0.1"),
     "at most 2.14748e+09"),
    (validate.bounded_float, float("nan"), "--limit", dict(lo=0, hi=validate.LLMC_INT_MAX, why="x", example="0.1"),
     "--limit nan"),
])
def test_bounded_numbers_name_the_option_and_the_bounds(check, value, option, kw, says):
    """sample --top-k / --seed, eval --num-fewshot / --limit: each option keeps one CLI case in tests/hostile
    (test_trust_cli.py: sample-top-k-over-vocab, sample-seed-over-uint32, eval-num-fewshot-huge, eval-limit-huge);
    both ends of each range are here."""
    e = refused(check, value, option, **kw)
    assert e.message.startswith(f"{option} {value}") and says in e.message


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_positive_float_names_the_option(value):
    """sample --temperature (cases.py keeps sample-temperature-negative) and the other rates."""
    assert refused(validate.positive_float, value, "--temperature").message.startswith(f"--temperature {value}")


def test_workers_bounded_by_cores():
    assert validate.workers(0, cores=2) == 0 and validate.workers(4, cores=2) == 4
    e = refused(validate.workers, 1000, cores=2)
    assert "2 core(s)" in e.message and "between 0 and 4" in e.message
    assert "--workers -1: must be >= 0" in refused(validate.workers, -1).message


def test_choice_and_text():
    assert validate.choice("docker", "--runtime", ("docker", "native")) == "docker"
    e = refused(validate.choice, "podman", "--runtime", ("docker", "native"))
    assert "docker, native" in e.message
    for bad in ("a\nb", "a\rb", "a\x1b[31m", "a\tb", "a\0b"):
        refused(validate.no_control_chars, bad, "--partition")
    assert validate.env_name("NCCL_P2P_LEVEL", "nccl.extra_env") == "NCCL_P2P_LEVEL"
    for bad in ("1X", "A B", "A=B", ""):
        refused(validate.env_name, bad, "nccl.extra_env")


@pytest.mark.parametrize("ref", ["debian:bookworm", "nvidia/cuda:12.8.1-devel-ubuntu22.04", "localhost:5000/a/b:1",
                                 "nvcr.io/nvidia/cuda:12.5.1-cudnn-devel-ubuntu22.04", "llmc-kit",
                                 "x@sha256:" + "a" * 64])
def test_docker_ref_accepts(ref):
    assert validate.docker_ref(ref) == ref


@pytest.mark.parametrize("ref", ["debian\nRUN id", "debian bookworm", "Debian:bookworm", "x;rm -rf /", "",
                                 "x:", "a//b", "-x"])
def test_docker_ref_refuses(ref):
    refused(validate.docker_ref, ref)


def test_image_registry_and_url():
    assert validate.image_name("registry.example.com:5000/team/llmc-kit") == "registry.example.com:5000/team/llmc-kit"
    for bad in ("LLMC", "llmc:tag", "llmc@sha256:" + "a" * 64):
        refused(validate.image_name, bad)
    assert validate.registry("mirror.example.com:5000/hub") == "mirror.example.com:5000/hub"
    for bad in ("https://m", "docker.io\nRUN id", "a b"):
        refused(validate.registry, bad)
    assert validate.url("https://m.example/simple", "mirrors.pip_index")
    for bad in ("ftp://m", "m.example/simple", "http://m x", "http://m\nRUN id", "https://"):
        refused(validate.url, bad, "mirrors.pip_index")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::1", "localhost", "gpu-01.cluster.local"])
def test_host_address_accepts(host):
    assert validate.host_address(host) == host


@pytest.mark.parametrize("host", ["not a host", "a_b", "-x", "x" * 300, "1.2.3.4:80"])
def test_host_address_refuses(host):
    refused(validate.host_address, host)


def test_writable_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    assert validate.writable_folder(tmp_path / "new" / "deep", "--out") == tmp_path / "new" / "deep"
    assert not (tmp_path / "new").exists()                       # a check creates nothing
    assert "is a file" in refused(validate.writable_folder, tmp_path / "f", "--out").message
    assert "which is a file" not in refused(validate.writable_folder, tmp_path / "f" / "x", "--out").message
    assert str(tmp_path / "f") in refused(validate.writable_folder, tmp_path / "f" / "x", "--out").message


def test_writable_file(tmp_path):
    assert validate.writable_file(tmp_path / "a" / "r.png", "--out", (".png", ".html"))
    assert ".png or .html" in refused(validate.writable_file, tmp_path / "r.txt", "--out", (".png", ".html")).message
    assert "is a folder" in refused(validate.writable_file, tmp_path, "--out", (".png",)).message


def test_readable_file_text(tmp_path):
    (tmp_path / "ok.csv").write_text("0, RTX, 8.6, 1 MiB, 1\n")
    (tmp_path / "bin").write_bytes(b"\x7fELF\0\0")
    (tmp_path / "l1").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "e").write_bytes(b"")
    (tmp_path / "cut").write_bytes(("x" * ((1 << 16) - 1) + "\u00e9").encode())   # a character cut by the read
    assert validate.readable_file(tmp_path / "ok.csv", "--inventory", text=True)
    assert validate.readable_file(tmp_path / "cut", "--inventory", text=True)
    assert "binary" in refused(validate.readable_file, tmp_path / "bin", "--inventory", text=True).message
    assert "UTF-8" in refused(validate.readable_file, tmp_path / "l1", "--inventory", text=True).message
    assert "empty" in refused(validate.readable_file, tmp_path / "e", "--x", non_empty=True).message
    assert "does not exist" in refused(validate.readable_file, tmp_path / "nope", "--x").message
    assert "is a folder" in refused(validate.readable_file, tmp_path, "--x").message
    assert "is a file" in refused(validate.readable_folder, tmp_path / "e", "--x").message


def test_pem_bundle(tmp_path):
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert validate.pem_bundle(pem) == pem
    der = tmp_path / "ca.der"
    der.write_bytes(b"0\x82\x03\x0e0\x82\x01\xf6")
    refused(validate.pem_bundle, der)
    txt = tmp_path / "notes.txt"
    txt.write_text("not a certificate\n")
    assert "openssl" in refused(validate.pem_bundle, txt).hint


def test_data_root_text():
    assert validate.data_root_text("/mnt/big") == "/mnt/big"
    assert validate.data_root_text("~/big") == "~/big"
    for bad, what in (("", "empty"), ("  ", "empty"), ("$HOME/big", "$VARIABLE"), ("~root/x", "~user"),
                      ("/big\n", "control")):
        assert what in refused(validate.data_root_text, bad).message


def test_checked_is_a_click_callback():
    class Param:
        opts = ["--port"]
        human_readable_name = "port"

    class Ctx:
        resilient_parsing = False

    cb = validate.checked(validate.port)
    assert cb(Ctx(), Param(), 80) == 80 and cb(Ctx(), Param(), None) is None
    assert "--port 0" in refused(cb, Ctx(), Param(), 0).message
    Param.opts = ["--sbatch-opt"]
    assert validate.checked(validate.no_control_chars)(Ctx(), Param(), ["a", "b"]) == ["a", "b"]
    refused(validate.checked(validate.no_control_chars), Ctx(), Param(), ["a", "b\nc"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into mode-0555 folders (tests/hostile uses a ro mount)")
def test_read_only_folder_by_mode(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    assert "read-only" in refused(validate.writable_folder, ro / "x", "--out").message
