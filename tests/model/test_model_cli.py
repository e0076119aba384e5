"""The commands as a user runs them: kitctl export-model / sample / eval in a subprocess, on run folders under
KIT_DATA_ROOT; bad inputs exit 2 with what/why/fix; --push to a loopback Hub; eval results in run.json and the
report."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil

import pytest

from conftest import kitctl, needs_transformers
from hub_server import Hub


@pytest.fixture
def root(tmp_path, ckpt_dir):
    """<root>/runs/r1 with model_00000010.bin (fp32) + DONE_00000010 and model_00000020.bin (bf16, no DONE)."""
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    shutil.copy(ckpt_dir / "model_00000010.bin", run)
    shutil.copy(ckpt_dir / "model_00000020.bin", run)
    (run / "DONE_00000010").touch()
    (run / "run.json").write_text(json.dumps({"plan": {"seq_len": 32}, "session": {"id": "s1"}}))
    (run / "main.log").write_text("s:0 tel:10.9876\ns:0 trl:10.9000 lr:0.000600 norm:1.00\n"
                                  "s:10 tel:9.5000\ns:10 trl:9.4000 lr:0.000600 norm:1.00\n")
    return tmp_path


def _clean(r):
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr


@pytest.mark.slow
def test_export_run_name_picks_newest_complete_checkpoint(root):
    r = kitctl("export-model", "r1", data_root=root)
    assert r.returncode == 0, r.stderr
    out = root / "runs" / "r1" / "hf" / "model_00000010"
    assert (out / "model.safetensors").is_file() and "step 10" in r.stdout
    assert "without a DONE file passed over" in r.stderr and "20" in r.stderr
    assert json.loads((out / "llmc_export.json").read_text())["step"] == 10
    r = kitctl("export-model", "r1", data_root=root)                        # again: refused, not overwritten
    assert r.returncode == 2 and "--force" in r.stderr
    _clean(r)
    r = kitctl("export-model", "r1", "--force", "--step", "20", "--out", root / "x", data_root=root)
    assert r.returncode == 0, r.stderr
    assert "no DONE_00000020" in r.stderr
    assert json.loads((root / "x" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    r = kitctl("export-model", root / "runs" / "r1" / "model_00000010.bin", "--out", root / "y", "--dtype",
               "bfloat16", data_root=root)                                   # a file path works too
    assert r.returncode == 0, r.stderr
    assert json.loads((root / "y" / "llmc_export.json").read_text())["dtype"] == "bfloat16"


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    (["nope"], ["'nope' is neither", "runs under", "r1"]),
    (["r1", "--step", "7"], ["no checkpoint for step 7", "10, 20"]),
    (["empty"], ["holds no llm.c checkpoint", "checkpoint_every"]),
    (["r1", "--format", "onnx"], ["--format onnx", "hf"]),
    (["r1", "--dtype", "int8"], ["--dtype int8"]),
    (["RUNFILE", "--step", "10"], ["--step 10 was given with a checkpoint file"]),
    (["BADMAGIC"], ["magic 1819043176", "model_NNNNNNNN.bin"]),
    (["TRUNCATED"], ["truncated"]),
    (["BADVERSION"], ["version 4"]),
    (["r1", "--push", "no-slash"], ["a Hub repo is <user or org>/<name>"]),
])
def test_bad_inputs_exit_2(root, args, words):
    (root / "runs" / "empty").mkdir()
    run = root / "runs" / "r1"
    good = (run / "model_00000010.bin").read_bytes()
    (root / "bad.bin").write_text("hello" * 300)
    (root / "trunc.bin").write_bytes(good[: len(good) // 2])
    (root / "v4.bin").write_bytes(good[:4] + (4).to_bytes(4, "little") + good[8:])
    subst = {"RUNFILE": run / "model_00000010.bin", "BADMAGIC": root / "bad.bin", "TRUNCATED": root / "trunc.bin",
             "BADVERSION": root / "v4.bin"}
    r = kitctl("export-model", *[subst.get(a, a) for a in args], "--out", root / "o", data_root=root)
    assert r.returncode == 2, (r.stdout, r.stderr)
    _clean(r)
    assert "hint:" in r.stderr
    for w in words:
        assert w in " ".join(r.stderr.split()), r.stderr
    assert not (root / "o").exists()


@pytest.mark.slow
def test_sample_exports_on_first_use_and_reuses(root):
    r = kitctl("sample", "r1", "-p", "Hello", "-n", "6", "--greedy", "--backend", "numpy", data_root=root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Hello") and len(r.stdout.strip()) > len("Hello")
    assert "exporting" in r.stderr and "[numpy, greedy, 6 tokens" in r.stderr
    again = kitctl("sample", "r1", "-p", "Hello", "-n", "6", "--greedy", "--backend", "numpy", data_root=root)
    assert again.stdout == r.stdout and "exporting" not in again.stderr
    os.utime(root / "runs" / "r1" / "model_00000010.bin")                  # the checkpoint changed: re-export
    third = kitctl("sample", "r1", "-p", "Hello", "-n", "6", "--greedy", "--backend", "numpy", data_root=root)
    assert "exporting" in third.stderr and third.stdout == r.stdout
    export = root / "runs" / "r1" / "hf" / "model_00000010"
    direct = kitctl("sample", export, "-n", "4", "--backend", "numpy", "--seed", "1", data_root=root)
    assert direct.returncode == 0 and "exporting" not in direct.stderr and direct.stdout.strip()
    r = kitctl("sample", "r1", "-n", "0", data_root=root)
    assert r.returncode == 2 and "-n 0: must be >= 1" in r.stderr


@pytest.mark.slow
@needs_transformers
def test_sample_transformers_backend_prints_text(root):
    r = kitctl("sample", "r1", "--prompt", "Once upon a time", "-n", "8", "--greedy", data_root=root)
    assert r.returncode == 0, r.stderr
    assert "[transformers, greedy, 8 tokens" in r.stderr and r.stdout.startswith("Once upon a time")
    assert "Loading weights" not in r.stderr
    n = kitctl("sample", "r1", "--prompt", "Once upon a time", "-n", "8", "--greedy", "--backend", "numpy",
               data_root=root)
    assert n.stdout == r.stdout


HIDE_LM_EVAL = """
import sys

class _NoLmEval:   # this interpreter behaves as if the [eval] extra were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "lm_eval" or name.startswith("lm_eval."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoLmEval())
"""


@pytest.mark.slow
def test_eval_without_harness_says_how_to_install(root, tmp_path_factory):
    hide = tmp_path_factory.mktemp("hide")
    (hide / "sitecustomize.py").write_text(HIDE_LM_EVAL)
    r = kitctl("eval", "r1", "--tasks", "hellaswag", data_root=root, env_extra={"PYTHONPATH": str(hide)})
    assert r.returncode == 2 and "pip install 'llmc-kit[eval]'" in r.stderr
    _clean(r)
    assert not (root / "runs" / "r1" / "hf").exists()        # refused before any export work


FAKE_LM_EVAL = '''
import json, os
from pathlib import Path

Path(os.environ["FAKE_LM_EVAL_CALL"] + ".imported").touch()

def simple_evaluate(model, model_args, tasks, **kw):
    export = Path(model_args["pretrained"])
    assert (export / "config.json").is_file() and (export / "model.safetensors").is_file()
    Path(os.environ["FAKE_LM_EVAL_CALL"]).write_text(json.dumps({"model": model, "model_args": model_args,
        "tasks": tasks, "limit": kw.get("limit"), "device": kw.get("device"), "batch_size": kw.get("batch_size"),
        "task_manager": kw.get("task_manager") is not None}))
    return {"results": {t: {"alias": t, "acc,none": 0.25, "acc_stderr,none": 0.004, "acc_norm,none": 0.2945,
                            "acc_norm_stderr,none": 0.0045} for t in tasks},
            "versions": {t: 1.0 for t in tasks}, "n-shot": {t: 0 for t in tasks},
            "n-samples": {t: {"original": 10042, "effective": 10042} for t in tasks}}
'''


@pytest.fixture
def fake_harness(root, tmp_path_factory):
    """(env for kitctl, the file the stand-in lm_eval writes its call to)."""
    fake = tmp_path_factory.mktemp("fake")
    (fake / "lm_eval").mkdir()
    (fake / "lm_eval" / "__init__.py").write_text(FAKE_LM_EVAL)
    (fake / "lm_eval" / "tasks").mkdir()
    (fake / "lm_eval" / "tasks" / "__init__.py").write_text("class TaskManager:\n"
                                                           "    def __init__(self, include_path=None):\n"
                                                           "        self.include_path = include_path\n")
    call = root / "call.json"
    return {"PYTHONPATH": str(fake), "FAKE_LM_EVAL_CALL": str(call)}, call


@pytest.mark.slow
def test_eval_records_in_run_json_and_report_shows_it(root, fake_harness):
    env, call = fake_harness
    r = kitctl("eval", "r1", "--tasks", "hellaswag", "--limit", "100", "--device", "cpu", "--batch-size", "8",
               data_root=root, env_extra=env)
    assert r.returncode == 0, r.stderr
    assert "hellaswag: acc_norm 0.2945" in r.stdout and "recorded in" in r.stdout
    c = json.loads(call.read_text())
    assert c["model"] == "hf" and c["model_args"]["dtype"] == "float32" and c["tasks"] == ["hellaswag"]
    assert (c["limit"], c["device"], c["batch_size"]) == (100, "cpu", 8)
    rec = json.loads((root / "runs" / "r1" / "run.json").read_text())
    assert rec["plan"] == {"seq_len": 32} and rec["session"] == {"id": "s1"}      # the rest is kept
    (e,) = rec["evals"]
    assert e["task"] == "hellaswag" and e["step"] == 10 and e["metrics"]["acc_norm"] == 0.2945
    assert e["metrics"]["acc_norm_stderr"] == 0.0045 and e["samples"] == 10042 and e["limit"] == 100
    assert e["checkpoint"].endswith("model_00000010.bin") and e["harness"].startswith("lm-eval")
    # an export folder given directly records into the run its checkpoint came from
    export = root / "runs" / "r1" / "hf" / "model_00000010"
    r = kitctl("eval", export, data_root=root, env_extra=env)
    assert r.returncode == 0, r.stderr
    assert len(json.loads((root / "runs" / "r1" / "run.json").read_text())["evals"]) == 2
    r = kitctl("eval", "r1", "--tasks", " , ", data_root=root, env_extra=env)
    assert r.returncode == 2 and "--tasks is empty" in r.stderr
    rep = kitctl("report", "r1", "--out", root / "report.html", data_root=root)
    assert rep.returncode == 0, rep.stderr
    assert "hellaswag acc_norm 0.2945 (step 10)" in (root / "report.html").read_text()


@pytest.mark.slow
def test_eval_refuses_a_damaged_run_json_before_running_the_harness(root, fake_harness):
    env, call = fake_harness
    rj = root / "runs" / "r1" / "run.json"
    rj.write_text('{"session": {"status": "half')          # cut mid-write by hand
    r = kitctl("eval", "r1", "--tasks", "hellaswag", data_root=root, env_extra=env)
    assert r.returncode == 2 and "could not be recorded" in r.stderr and "--no-record" in r.stderr, r.stderr
    assert not call.exists()                               # the harness never ran ...
    assert not call.with_name(call.name + ".imported").exists()   # ... nor imported: the inputs are checked first
    assert rj.read_text() == '{"session": {"status": "half'    # and the file is left as it was
    r = kitctl("eval", "r1", "--tasks", "hellaswag", "--no-record", data_root=root, env_extra=env)
    assert r.returncode == 0, r.stderr
    assert call.exists() and "hellaswag: acc_norm" in r.stdout


@pytest.mark.slow
def test_eval_include_path_special_files_are_refused_before_the_harness(root, fake_harness, tmp_path):
    """--include-path is read by kitctl (which tasks it names) and by lm-eval: a FIFO or a device named *.yaml
    would block both forever; a missing folder is a typo. Each is exit 2 naming it, before the harness is imported."""
    env, call = fake_harness
    env = {**env, "COLUMNS": "400"}                        # long paths on one line, never wrapped mid-name
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "ok.yaml").write_text("task: mine\n")
    os.mkfifo(tasks / "pipe.yaml")
    for folder, says in ((tasks, "pipe.yaml is a FIFO (named pipe)"), (tmp_path / "nope", "does not exist")):
        r = kitctl("eval", "r1", "--include-path", folder, data_root=root, env_extra=env, timeout=60)
        assert r.returncode == 2 and "--include-path" in r.stderr and says in " ".join(r.stderr.split()), r.stderr
        assert "hint:" in r.stderr
    (tasks / "pipe.yaml").unlink()
    (tasks / "zero.yaml").symlink_to("/dev/zero")
    r = kitctl("eval", "r1", "--include-path", tasks, data_root=root, env_extra=env, timeout=60)
    assert r.returncode == 2 and "zero.yaml is a character device" in " ".join(r.stderr.split()), r.stderr
    assert not call.with_name(call.name + ".imported").exists()


@pytest.mark.slow
@pytest.mark.parametrize("private", [False, True])
def test_push_uploads_every_file_to_hf_endpoint(root, private):
    with Hub(token="hf_test") as hub:
        args = ["export-model", "r1", "--push", "alice/gpt2-llmc"] + (["--private"] if private else [])
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test", "HF_HOME": str(root / "hfhome"),
               "HF_HUB_DISABLE_XET": "1"}
        r = kitctl(*args, data_root=root, env_extra=env)
        assert r.returncode == 0, r.stderr
        assert f"pushed: {hub.url}/alice/gpt2-llmc/commit/abc123" in r.stdout
        out = root / "runs" / "r1" / "hf" / "model_00000010"
        got = hub.files["alice/gpt2-llmc"]
        assert sorted(got) == sorted(p.name for p in out.iterdir())
        for name, data in got.items():
            assert data == (out / name).read_bytes(), name
        assert hub.repos["alice/gpt2-llmc"]["visibility"] == ("private" if private else "public")
        assert hub.cards and "llm.c" in hub.cards[0]
        shutil.rmtree(out)
        env["HF_TOKEN"] = "hf_wrong"
        r = kitctl(*args, data_root=root, env_extra=env)
        assert r.returncode == 1 and "the token was refused" in r.stderr
        _clean(r)


@pytest.mark.slow
def test_push_unreachable_endpoint_is_a_clear_error(root):
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_x", "HF_HOME": str(root / "hfhome"),
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    r = kitctl("export-model", "r1", "--push", "alice/x", data_root=root, env_extra=env)
    assert r.returncode == 1 and "cannot reach http://127.0.0.1:9" in r.stderr and "HF_ENDPOINT" in r.stderr
    _clean(r)
    assert (root / "runs" / "r1" / "hf" / "model_00000010" / "model.safetensors").is_file()   # the export is kept


TINY_TASK = """task: kit_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
output_type: multiple_choice
validation_split: validation
doc_to_text: "{{{{ctx}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "{{{{endings}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                    reason="lm-eval not installed (pip install 'llmc-kit[eval]'; .ci/setup installs it from "
                           "docker/requirements-eval.lock)")
def test_eval_with_the_real_harness_on_a_local_task(root, tmp_path_factory):
    """The real lm-eval, offline: a 3-question multiple-choice task from a local JSONL via --include-path."""
    d = tmp_path_factory.mktemp("task")
    rows = [{"ctx": "The cat sat on the", "endings": [" mat.", " moon of Jupiter.", " idea."], "label": 0},
            {"ctx": "She opened the door and", "endings": [" walked in.", " purple.", " seven."], "label": 0},
            {"ctx": "Water boils at", "endings": [" 100 degrees.", " blue.", " Tuesday."], "label": 0}]
    (d / "tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "kit_tiny_mc.yaml").write_text(TINY_TASK.format(data=d / "tiny.jsonl"))
    env = {"HF_HOME": str(root / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    r = kitctl("eval", "r1", "--tasks", "kit_tiny_mc", "--include-path", d, "--device", "cpu", "--batch-size", "4",
               data_root=root, env_extra=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (e,) = json.loads((root / "runs" / "r1" / "run.json").read_text())["evals"]
    assert e["task"] == "kit_tiny_mc" and e["samples"] == 3 and e["harness"].startswith("lm-eval 0.")
    assert 0.0 <= e["metrics"]["acc_norm"] <= 1.0 and "acc" in e["metrics"]
    assert f"kit_tiny_mc: acc_norm {e['metrics']['acc_norm']:.4f}" in r.stdout


@pytest.mark.slow
def test_dry_runs_write_nothing_and_sample_says_what_it_is_doing(root):
    hf = root / "runs" / "r1" / "hf"
    r = kitctl("export-model", "r1", "--dry-run", data_root=root)
    assert r.returncode == 0 and "would export" in r.stdout and "model_00000010" in r.stdout, r.stderr
    r = kitctl("sample", "r1", "--dry-run", "--backend", "numpy", data_root=root)
    assert r.returncode == 0 and "would be exported first" in r.stdout, r.stderr
    assert not hf.exists()                                  # a dry run exported nothing
    r = kitctl("sample", "r1", "-n", "4", "--greedy", "--backend", "numpy", data_root=root)
    assert r.returncode == 0 and "sampling 4 tokens with the numpy GPT-2" in r.stderr, r.stderr
    r = kitctl("sample", "r1", "--dry-run", data_root=root)
    assert r.returncode == 0 and "exported earlier" in r.stdout
    if importlib.util.find_spec("lm_eval") is not None:
        r = kitctl("eval", "r1", "--dry-run", "--tasks", "hellaswag", data_root=root)
        assert r.returncode == 0 and "would run lm-eval hellaswag" in r.stdout, r.stderr


@pytest.mark.slow
@needs_transformers
def test_sample_says_it_loads_torch_before_the_silence(root):
    r = kitctl("sample", "r1", "-n", "2", "--greedy", "--backend", "transformers", data_root=root)
    assert r.returncode == 0 and "loading torch + transformers" in r.stderr, r.stderr
