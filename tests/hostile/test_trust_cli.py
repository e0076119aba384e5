"""Trust at the edges of every verb (issue 17): bounded numbers, the GPU floor, "done" only when the stage's own
check says so, environment conditions as exit 1/2 with what/why/fix, options that do nothing refused, hints that
name the flag the user can pass, messages never cut mid-string, duplicate YAML keys refused.

Same harness as tests/hostile/test_hostile.py (exit code, message, file-system snapshot); cases that need a fresh
interpreter (the HF libraries read their environment at import) run ``python -m kitctl`` in a subprocess and are
checked by the same rules. Every case has a timeout: the harness's alarm (30 s) in-process, ``timeout=`` for a
subprocess.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

import kitctl_proc

sys.path.insert(0, str(Path(__file__).parent))

from harness import (  # noqa: E402
    Case, Result, _matches, check_refusal, diff, make_world, play, run_kitctl, snapshot, undo_mounts)
from fake_gpus import fake_nvidia_smi  # noqa: E402  (tests/fake_gpus.py: --inventory only plans)

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "fake_train_gpt2cu.py"
BIG = "99999999999999999999"                    # reached llm.c's argv before (atoi: wraps)
INT32_MAX = "2,147,483,647"
H100 = "0, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.124.06\n"
K80 = "0, Tesla K80, 3.7, 11441 MiB, 470.82.01\n"
K80_3090 = K80 + "1, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 570.86.10\n"
GH200_NA = "0, NVIDIA GH200 480GB, 9.0, [N/A], 570.86.10\n"
SUBPROCESS_SECONDS = 240

TRAIN = ["train", "--inventory", "two.csv", "--mpirun", "/bin/true", "--data", "data/shards", "--dry-run"]
TUNE = ["tune", "--inventory", "two.csv", "--mpirun", "/bin/true", "--data", "data/shards", "--dry-run"]
REPRO = ["reproduce", "--inventory", "two.csv", "--mpirun", "/bin/true", "--dry-run"]
DATA = ["data", "input.txt", "--runtime", "native", "--dry-run"]
RUNS = ("cwd/data/runs/*",)
TOKENIZER_CACHES = ("cwd/data/tiktoken*", "cwd/data/gpt2_tokenizer.bin")
ENDINGS = ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.",
           "starts pulling up roofing on a roof."]


# ------------------------------------------------------------------------------------------ set-ups

def checkpoint(cwd: Path, name: str = "ck", nan: bool = False) -> None:
    """runs/<name>: one llm.c checkpoint (L=2, C=64) as train_gpt2cu writes it; ``nan``: every weight NaN."""
    sys.path.insert(0, str(ROOT / "tests" / "model"))
    import llmc_ref

    run = cwd / "data" / "runs" / name
    run.mkdir(parents=True)
    params, dims = llmc_ref.random_params(T=32, V=50257, L=2, H=4, C=64, Vp=50304, seed=0)
    if nan:
        for v in params.values():
            v[...] = float("nan")
    llmc_ref.write_checkpoint(run / "model_00000010.bin", params, dims, version=3)
    (run / "DONE_00000010").write_text("")


def nan_checkpoint(cwd: Path) -> None:
    checkpoint(cwd, "nan", nan=True)


def fake_trainer(cwd: Path) -> None:
    """cwd/fake: the stand-in train_gpt2cu; cwd/gpu-bin/nvidia-smi: a stand-in that reports one H100 (one rank: no
    mpirun), put first on PATH by FAKE_GPU_PATH / _kitctl_subprocess (--inventory only plans)."""
    b = cwd / "fake"
    b.write_text(f"#!{sys.executable}\n" + FAKE.read_text())
    b.chmod(0o755)
    fake_nvidia_smi(cwd / "gpu-bin", H100)


FAKE_GPU_PATH = {"PATH": "{cwd}/gpu-bin:" + os.environ.get("PATH", "/usr/bin:/bin")}


def reproduce_inputs(cwd: Path) -> None:
    """fake trainer + a small corpus (tinyshakespeare, ~340K tokens) + a 12-example HellaSwag jsonl."""
    fake_trainer(cwd)
    (cwd / "ts.txt").write_text((ROOT / "datasets" / "files" / "tinyshakespeare.txt").read_text())
    with (cwd / "hs.jsonl").open("w") as f:
        for i in range(12):
            f.write(json.dumps({"ctx": f"A man is on a roof {i}. He", "endings": ENDINGS, "label": i % 4}) + "\n")


def inventory(text: str, name: str = "inv.csv"):
    return {name: text}


def kit_yaml(extra: str) -> dict[str, str]:
    return {"kit.yaml": "data_root: ./data\nruntime: native\n" + extra}


def C(id: str, argv: list[str], code: int = 2, says=(), **kw) -> Case:
    return Case(id, argv, code, tuple([says] if isinstance(says, str) else says), **kw)


REPRODUCE_RUN = ["reproduce", "gpt2-124m", "--dataset", "ts.txt", "--hellaswag-source", "hs.jsonl", "--runtime",
                 "native", "--binary", "fake", "--shard-size", "131072", "--steps", "3",
                 "--no-tune"]


def stage_failed_with_log(stage: str):
    def check(r: Result) -> None:
        state = json.loads((r.cwd / "data" / "runs" / "gpt2-124m" / "reproduce.json").read_text())
        st = {s["name"]: s for s in state["stages"]}
        assert st[stage]["status"] == "failed", st[stage]
        assert f"logs/{stage}.log" in r.text
    return check


def run_json_failed(r: Result) -> None:
    rj = json.loads((r.cwd / "data" / "runs" / "early" / "run.json").read_text())
    assert rj["session"]["status"] == "failed" and rj["session"]["exit_status"] == 0, rj["session"]


CASES: list[Case] = [
    # ---------------------------------------------------------------- numbers: llm.c's int, the hardware's limits
    C("train-steps-over-int32", [*TRAIN, "--steps", BIG], says=["--steps", INT32_MAX]),
    C("train-passthrough-x-over-int32", [*TRAIN, "--", "-x", BIG], says=["--steps", INT32_MAX]),
    C("train-passthrough-v-over-int32", [*TRAIN, "--steps", "10", "--", "-v", BIG], says=["-v", "32-bit int"]),
    C("train-micro-batch-over-int32", [*TRAIN, "--steps", "10", "--micro-batch", BIG], says="--micro-batch"),
    C("train-total-batch-over-int32", [*TRAIN, "--steps", "10", "--total-batch", BIG], says="--total-batch"),
    C("tune-steps-over-int32", [*TUNE, "--steps", BIG], says=["--steps", "32-bit int"]),
    C("tune-warmup-over-int32", [*TUNE, "--warmup", BIG], says="--warmup"),
    C("reproduce-steps-over-int32", [*REPRO, "--steps", BIG], says=["--steps", INT32_MAX]),   # was a MemoryError
    C("reproduce-cpus-huge", [*REPRO, "--cpus", BIG], says="--cpus"),
    C("reproduce-net-mbps-huge", [*REPRO, "--net-mbps", "1e300"], says="--net-mbps"),
    C("reproduce-price-huge", [*REPRO, "--price-per-gpu-hour", "1e300"], says="--price-per-gpu-hour"),
    C("demo-steps-over-int32", ["demo", "--steps", BIG], says="--steps"),
    C("sample-seed-over-uint32", ["sample", "r1", "--seed", BIG], says="--seed"),
    C("sample-top-k-over-vocab", ["sample", "r1", "--top-k", "60000"], says=["--top-k", "50257"]),
    C("eval-num-fewshot-huge", ["eval", "r1", "--num-fewshot", BIG], says="--num-fewshot"),
    C("eval-limit-huge", ["eval", "r1", "--limit", "1e300"], says="--limit"),
    C("export-model-step-over-int32", ["export-model", "r1", "--step", BIG], says="--step"),
    C("data-shards-over-six-digits", [*DATA, "--shards", "1000000"], says=["--shards", "999999"]),

    # ---------------------------------------------------------------- GPUs llm.c cannot run on
    C("train-gpu-sm37-refused", [*TRAIN, "--steps", "10", "--inventory", "inv.csv"], files=inventory(K80),
      says=["sm_37", "6.0", "cuda 12"]),
    C("train-gpus-named-sm37-refused", [*TRAIN, "--steps", "10", "--inventory", "inv.csv", "--gpus", "0,1"],
      files=inventory(K80_3090), says=["sm_37", "--gpus 1"]),
    C("train-gpus-all-sm37-sits-out", [*TRAIN, "--steps", "10", "--inventory", "inv.csv"], code=0,
      files=inventory(K80_3090), says=["sm_37", "sits out"]),
    C("reproduce-gpu-sm37-refused", [*REPRO, "--inventory", "inv.csv"], files=inventory(K80), says="sm_37"),
    C("inventory-memory-na-refused", [*TRAIN, "--steps", "10", "--inventory", "inv.csv"], files=inventory(GH200_NA),
      says=["[n/a]", "mib"]),                                                          # never planned as 0 GB

    # ---------------------------------------------------------------- "done" only when the stage's check says so
    C("train-exit-0-short-of-last-step", ["train", "--data", "data/shards", "--runtime",
                                          "native", "--binary", "{cwd}/fake", "--name", "early", "--steps", "5",
                                          "--no-tune", "--", "-t", "64"],
      code=1, env={"FAKE_EXIT_EARLY": "1", **FAKE_GPU_PATH}, setup=fake_trainer, hint=True, may_change=RUNS,
      says=["exited with status 0 but did not reach the last step", "of 5", "stdout.log"], check=run_json_failed),

    # ---------------------------------------------------------------- environment conditions
    C("sample-nan-weights-numpy", ["sample", "nan", "-n", "2", "--backend", "numpy"], setup=nan_checkpoint,
      says=["nan"], may_change=("cwd/data/runs/nan/hf*", *TOKENIZER_CACHES)),
    C("config-hf-endpoint-with-quote", ["render", "--stdout"], files=kit_yaml("mirrors: {hf_endpoint: 'https://h\"f.co'}\n"),
      says=["mirrors.hf_endpoint", "cannot hold"]),
    C("config-llmc-src-url-with-quote", ["render", "--stdout"],
      files=kit_yaml("mirrors: {llmc_src: \"https://x.org/a'b.tar.gz\"}\n"), says=["mirrors.llmc_src", "%27"]),
    C("build-llmc-src-url-with-quote", ["build", "--dry-run", "--runtime", "docker", "--llmc-src",
                                        'https://x.org/a"b.tar.gz'], says=["--llmc-src", "%22"]),
    C("reproduce-llmc-src-url-with-quote", [*REPRO, "--llmc-src", "https://x.org/a`b`.tar.gz"], says="--llmc-src"),
    C("build-native-llmc-src-url-not-a-host", ["build", "--runtime", "native", "--llmc-src", "https://a_b!/x.tar.gz"],
      says=["--llmc-src", "not a host name"]),

    # ---------------------------------------------------------------- options that do nothing: refused
    C("export-model-private-without-push", ["export-model", "r1", "--private"], says=["--private", "--push"]),
    C("sample-greedy-with-temperature", ["sample", "r1", "--greedy", "--temperature", "0.5"],
      says=["--greedy", "--temperature"]),
    C("sample-greedy-with-top-k", ["sample", "r1", "--greedy", "--top-k", "5"], says=["--greedy", "--top-k"]),
    C("sample-top-k-0-with-temperature", ["sample", "r1", "--top-k", "0", "--temperature", "2"],
      says=["--top-k 0", "--temperature"]),
    C("data-stream-local-files", [*DATA, "--stream"], says=["--stream", "local files"]),
    C("data-shards-local-files", [*DATA, "--shards", "2"], says=["--shards", "pre-tokenized"]),
    C("data-force-local-files", [*DATA, "--force"], says=["--force", "hellaswag"]),
    C("data-stream-text-recipe", ["data", "tinyshakespeare", "--stream", "--dry-run", "--runtime", "native"],
      says="--stream"),
    C("data-shard-size-hellaswag", ["data", "hellaswag", "--shard-size", "2000", "--dry-run", "--runtime", "native"],
      says="--shard-size"),
    C("reproduce-stream-local-dataset", [*REPRO, "--dataset", "input.txt", "--stream"], says="--stream"),
    C("render-stdout-with-out", ["render", "--stdout", "--out", "ctx"], says=["--stdout", "--out"]),
    C("init-stdout-with-file", ["init", "--stdout", "other.yaml"], says=["--stdout", "other.yaml"]),
    C("init-stdout-with-force", ["init", "--stdout", "--force"], says=["--stdout", "--force"]),
    C("tensorboard-no-serve-with-port", ["tensorboard", "r1", "--no-serve", "--no-follow", "--port", "7000"],
      says=["--port", "--no-serve"]),
    C("tensorboard-no-serve-with-host", ["tensorboard", "r1", "--no-serve", "--no-follow", "--host", "0.0.0.0"],
      says=["--host", "--no-serve"]),
    C("tensorboard-no-follow-with-interval", ["tensorboard", "r1", "--no-serve", "--no-follow", "--interval", "3"],
      says=["--interval", "--no-follow"]),
    C("build-native-with-docker-options", ["build", "--runtime", "native", "--dry-run", "--provider", "wheels",
                                           "--no-cache"], says=["--provider", "--no-cache", "--runtime native"]),
    C("build-docker-with-native-options", ["build", "--runtime", "docker", "--dry-run", "--out", "bin"],
      says=["--out", "--runtime docker"]),

    # ---------------------------------------------------------------- kit.yaml: a key twice is refused
    C("config-duplicate-top-level-key", ["render", "--stdout"],
      files={"kit.yaml": "data_root: ./data\nruntime: native\ndata_root: /elsewhere\n"},
      says=["data_root", "twice", "line 1", "line 3"]),
    C("config-duplicate-nested-key", ["render", "--stdout"],
      files=kit_yaml("mirrors:\n  registry: a.example.com\n  registry: b.example.com\n"),
      says=["registry", "twice"]),

    # ---------------------------------------------------------------- hints that name a flag build accepts
    C("build-arch-121-names-120", ["build", "--arch", "121", "--dry-run", "--runtime", "docker"],
      says=["sm_121", "use 120"]),
]


def _param(case: Case):
    return pytest.param(case, id=case.id)


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_trust(case, tmp_path, capsys, monkeypatch):
    try:
        play(case, tmp_path, capsys, monkeypatch)
    finally:
        undo_mounts()


# ------------------------------------------------------------------------------------------ subprocess cases

def _kitctl_subprocess(argv: list[str], cwd: Path, env: Optional[dict[str, str]] = None,
                       timeout: int = SUBPROCESS_SECONDS) -> Result:
    """``python -m kitctl ARGV`` in a process of its own (tests/kitctl_proc.py: forked from a server that imported
    only ``kitctl.cli``; the HF libraries, which read their environment at import, are imported in the command's
    own process, with its environment). A PYTHONPATH in ``env`` (the shadowing cases) starts a fresh interpreter."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "HF_")) and k not in ("KITCTL_DEBUG",)}
    e.update({"HOME": str(cwd.parent / "home"), "COLUMNS": "400", **(env or {})})
    if (cwd / "gpu-bin").is_dir():          # fake_trainer's stand-in nvidia-smi: this box "has" its GPU
        e["PATH"] = f"{cwd / 'gpu-bin'}:{e.get('PATH', '/usr/bin:/bin')}"
    p = kitctl_proc.run(argv, cwd=cwd, env=e, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr, cwd.parent, cwd)


def _refused(case: Case, tmp_path: Path, setup=None, env=None) -> Result:
    cwd = make_world(tmp_path)
    if setup:
        setup(cwd)
    before = snapshot(tmp_path)
    r = _kitctl_subprocess(case.argv, cwd, env)
    check_refusal(case, r)
    changes = [c for c in diff(before, snapshot(tmp_path)) if not _matches(c.split(": ", 1)[1], case.may_change)]
    assert not changes, "the file system changed:\n" + "\n".join(changes[:30])
    return r


def _have(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def _shadow_old_hub(folder: Path) -> Path:
    """A huggingface_hub 0.10.0 (metadata and a stub module) that shadows the installed one: the pair that does not
    fit, as a user gets it from `pip install transformers` next to an old pinned huggingface_hub."""
    (folder / "huggingface_hub").mkdir(parents=True)
    (folder / "huggingface_hub" / "__init__.py").write_text('__version__ = "0.10.0"\n')
    info = folder / "huggingface_hub-0.10.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: huggingface_hub\nVersion: 0.10.0\n")
    return folder


@pytest.mark.slow
@pytest.mark.skipif(not _have("torch", "transformers"), reason="torch + transformers not installed")
def test_sample_transformers_with_a_huggingface_hub_that_does_not_fit(tmp_path):
    """Was "internal error": transformers fails to import. Now exit 2 naming both packages and versions."""
    shadow = _shadow_old_hub(tmp_path / "shadow")
    case = C("sample-package-conflict", ["sample", "ck", "-n", "2", "--backend", "transformers"],
             says=["transformers", "huggingface-hub", "0.10.0", "pip install"],
             may_change=("cwd/data/runs/ck/hf*", *TOKENIZER_CACHES))
    _refused(case, tmp_path / "w", setup=checkpoint, env={"PYTHONPATH": f"{shadow}:{ROOT}"})


@pytest.mark.slow
@pytest.mark.skipif(not _have("lm_eval", "torch"), reason="lm-eval not installed")
def test_eval_with_a_huggingface_hub_that_does_not_fit(tmp_path):
    shadow = _shadow_old_hub(tmp_path / "shadow")
    case = C("eval-package-conflict", ["eval", "ck"], says=["huggingface-hub", "0.10.0", "needs"])
    _refused(case, tmp_path / "w", setup=checkpoint, env={"PYTHONPATH": f"{shadow}:{ROOT}"})


@pytest.mark.slow
@pytest.mark.skipif(not _have("lm_eval", "torch"), reason="lm-eval not installed")
def test_eval_device_cuda_without_cuda_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    case = C("eval-device-cuda-without-cuda", ["eval", "ck", "--device", "cuda"],
             says=["--device cuda", "--device cpu"])
    _refused(case, tmp_path, setup=checkpoint)


@pytest.mark.slow
@pytest.mark.skipif(not _have("lm_eval", "torch"), reason="lm-eval not installed")
def test_eval_offline_names_the_endpoint_and_the_local_way(tmp_path):
    """No CUDA (the CPU is used) and no reachable hub (HF_ENDPOINT on a closed port): exit 1, naming HF_ENDPOINT,
    mirrors.hf_endpoint and the local way, within the timeout (before: "internal error", or minutes of retries)."""
    case = C("eval-offline", ["eval", "ck", "--limit", "2"], code=1,
             says=["http://127.0.0.1:9", "hf_endpoint", "mirrors.hf_endpoint", "hf cache", "--include-path"],
             may_change=("cwd/data/runs/ck/hf*", "cwd/data/hf*", *TOKENIZER_CACHES))
    _refused(case, tmp_path, setup=checkpoint, env={"HF_ENDPOINT": "http://127.0.0.1:9"})


@pytest.mark.slow
def test_export_push_refuses_an_hf_endpoint_with_quotes(tmp_path):
    case = C("export-push-hf-endpoint-quote", ["export-model", "ck", "--push", "alice/m"],
             says=["hf_endpoint", "cannot hold"], may_change=("cwd/data/runs/ck/hf*",))
    _refused(case, tmp_path, setup=checkpoint, env={"HF_ENDPOINT": "https://h\"f.co"})


@pytest.mark.slow
@pytest.mark.skipif(not _have("torch", "transformers"), reason="torch + transformers not installed")
def test_sample_nan_weights_transformers(tmp_path):
    case = C("sample-nan-weights-transformers", ["sample", "nan", "-n", "2", "--backend", "transformers"],
             says=["nan", "--step"], may_change=("cwd/data/runs/nan/hf*", *TOKENIZER_CACHES))
    _refused(case, tmp_path, setup=nan_checkpoint)


@pytest.mark.slow
def test_reproduce_train_exit_0_early_is_a_failed_stage_with_its_log(tmp_path):
    """The trainer exits 0 after 1 of 3 steps: the train stage is "failed" (not "done (step None/N)"), the message
    names the stage's log, and `kitctl status` says failed."""
    case = C("reproduce-train-exit-0-early", REPRODUCE_RUN, code=1,
             says=["did not reach the last step", "logs/train.log"], may_change=("cwd/data*",),
             check=stage_failed_with_log("train"))
    r = _refused(case, tmp_path, setup=reproduce_inputs, env={"FAKE_EXIT_EARLY": "1"})
    case.check(r)
    s = _kitctl_subprocess(["status"], r.cwd, timeout=60)
    assert s.code == 0, s.err
    assert "failed" in s.text and "exited with status 0 before the last step" in s.text, s.out


@pytest.mark.slow
def test_reproduce_hellaswag_offline_hint_names_hellaswag_source(tmp_path):
    """The HellaSwag download fails (a proxy on a closed port: offline, whatever the CI's network): the hint
    names reproduce's own flag, --hellaswag-source (it said data's --source)."""
    argv = [a for a in REPRODUCE_RUN if a not in ("--hellaswag-source", "hs.jsonl")]
    case = C("reproduce-hellaswag-offline", argv, code=1, says=["--hellaswag-source", "logs/hellaswag.log"],
             may_change=("cwd/data*",))
    r = _refused(case, tmp_path, setup=reproduce_inputs,
                 env={"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    assert "--source" not in r.text.replace("--hellaswag-source", "")


@pytest.mark.slow
def test_status_after_sigterm_agrees_with_the_stop_message_and_names_reproduce(tmp_path):
    cwd = make_world(tmp_path)
    reproduce_inputs(cwd)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "HF_"))}
    env.update({"HOME": str(tmp_path / "home"), "COLUMNS": "400", "PYTHONPATH": str(ROOT),
                "FAKE_TRAIN_STEP_SLEEP": "0.3", "PATH": f"{cwd / 'gpu-bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"})
    argv = [sys.executable, "-m", "kitctl", *REPRODUCE_RUN[:-3], "--steps", "12", "--no-tune", "--", "-n", "4"]
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = cwd / "data" / "runs" / "gpt2-124m"
    try:
        t0 = time.monotonic()
        while not (run / "DONE_00000004").exists():
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() - t0 < 120, "no checkpoint at step 4"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-3000:]
    said = " ".join(out.split()).lower()
    assert "the next run resumes from the checkpoint at step 4" in said, out[-2000:]
    s = _kitctl_subprocess(["status"], cwd, timeout=60)
    assert s.code == 0, s.err
    assert "the next run resumes from the checkpoint at step 4" in s.text, s.out      # the stop message's words
    assert "kitctl reproduce" in s.text and "kitctl train" not in s.text, s.out


# ------------------------------------------------------------------------------------------ units behind the cases

@pytest.mark.slow
def test_doctor_suggests_only_archs_build_accepts(tmp_path, capsys, monkeypatch):
    cwd = make_world(tmp_path)
    (cwd / "gb10.csv").write_text("0, NVIDIA GB10, 12.1, 122880 MiB, 580.95.05\n")
    r = run_kitctl(["doctor", "--inventory", "gb10.csv", "--json"], cwd, capsys, monkeypatch)
    assert not r.last_resort and "internal error" not in r.text
    arch = {f["check"]: f for f in json.loads(r.out)["findings"]}["arch list"]
    # kit.yaml's [75, 86] (nothing built yet): the GB10 runs compute_86 PTX, and the rebuild names 120, not 121
    assert arch["status"] == "warn" and "sm_120 from compute_86 PTX" in arch["detail"], arch
    assert "`kitctl build --runtime native --arch 75,86,120`, or set arch: auto" in arch["meaning"], arch
    assert "121" not in arch["meaning"], arch
    # and build accepts exactly what doctor suggested
    b = run_kitctl(["build", "--arch", "75,86,120", "--dry-run", "--runtime", "docker"], cwd, capsys, monkeypatch)
    assert b.code == 0, b.err


def test_doctor_fails_a_gpu_below_the_floor(tmp_path, capsys, monkeypatch):
    cwd = make_world(tmp_path)
    (cwd / "k80.csv").write_text(K80)
    r = run_kitctl(["doctor", "--inventory", "k80.csv"], cwd, capsys, monkeypatch)
    assert r.code == 1 and not r.last_resort
    assert "gpu support" in r.text and "sm_37" in r.text


def test_unified_memory_is_the_hosts_memory_on_this_machine(tmp_path):
    from kitctl.host.gpus import host_memory_mib, parse_csv

    (tmp_path / "meminfo").write_text("MemTotal:       125829120 kB\nMemFree: 1 kB\n")
    assert host_memory_mib(tmp_path / "meminfo") == 122880
    g = parse_csv(GH200_NA, unified_mib=122880)[0]
    assert g.memory_mib == 122880 and g.memory_gb > 100


def test_messages_are_never_cut_mid_word():
    from kitctl.core.records import MAX_ERROR_CHARS, error_text, short

    text = " ".join(f"word{i}" for i in range(500))
    s = short(text)
    assert len(s) <= MAX_ERROR_CHARS and s.endswith(f"({len(text):,} chars)")
    kept = s.rsplit(" ... (", 1)[0]
    assert text.startswith(kept) and text[len(kept)] == " "                 # cut between two words
    assert short("x = 'a very long quoted string " + "y" * 400).rsplit(" ... ", 1)[0][-1] not in "'=\"("

    try:
        try:
            raise OSError("[Errno -2] Name or service not known")
        except OSError as inner:
            raise RuntimeError("HTTPSConnectionPool(host='example.org'): Max retries exceeded") from inner
    except RuntimeError as e:
        assert error_text(e) == "RuntimeError: HTTPSConnectionPool(host='example.org'): Max retries exceeded"

    class NameResolutionError(Exception):
        pass

    try:
        try:
            raise NameResolutionError("<urllib3.Conn object at 0x1>: Failed to resolve 'example.org' (no network)")
        except NameResolutionError as inner:
            raise RuntimeError("HTTPSConnectionPool(host='example.org', ...): Max retries exceeded with url: /x "
                               "(Caused by NameResolutionError(\"<urllib3.Conn object at 0x1>: Failed to") from inner
    except RuntimeError as e:
        assert error_text(e) == "NameResolutionError: Failed to resolve 'example.org' (no network)"


def test_package_conflicts_are_read_from_the_installed_metadata(tmp_path):
    """conflicts() reads the installed requirements: in a healthy environment there are none."""
    from kitctl.core.optional import conflicts

    for dist in ("transformers", "lm_eval", "huggingface_hub"):
        assert conflicts(dist) == [], dist
