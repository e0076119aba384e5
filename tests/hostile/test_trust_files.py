"""Trust between stages (issue 17): what kitctl reads from a user path, and what export-model may replace.

Same harness as test_hostile.py (exit code, message, file-system snapshot of the world; harness.py):

* special files (a FIFO, a unix socket, a link to /dev/zero) given as kit.yaml, an inventory, a run's main.log /
  stdout.log / run.json, a dataset, a HellaSwag source, a checkpoint: exit 2 naming the path, never a hang;
* files larger than their kind ever is, logs read incrementally;
* export-model: NaN / Inf weights, a vocab that is not GPT-2's, --force on a run folder, the runs root, the data
  root, a folder of other files; exported files readable like the rest;
* an input that changes while `kitctl data` reads it: that run's shards are deleted and the change is named;
* `kitctl tensorboard --no-serve` on a finished run returns; on a live one it follows until the run stops.

Every case runs under the harness's alarm (CASE_SECONDS), and the special-file cases under an address-space limit
too: a read that never ends fails the case (CaseTimeout / MemoryError) instead of stalling or swapping the suite.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Optional

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "model"))

import llmc_ref  # noqa: E402
from harness import (MAIN_LOG, CaseTimeout, Case, Result, make_world,  # noqa: E402
                     play, run_kitctl)

TRAIN = ["train", "--mpirun", "/bin/true", "--data", "data/shards", "--steps", "10", "--dry-run"]
TB1 = ["tensorboard", "r1", "--no-serve", "--no-follow"]
SPECIAL = ("a fifo (named pipe)", "a socket", "a character device")
NOT_REGULAR = "not a regular file"
MEMORY_HEADROOM = 3 << 30        # a special-file case may allocate this much more before it fails with MemoryError

_SOCKETS: list[socket.socket] = []


# ------------------------------------------------------------------------------------------ special files
def fifo(rel: str) -> Callable[[Path], None]:
    def setup(cwd: Path) -> None:
        (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
        (cwd / rel).unlink(missing_ok=True)
        os.mkfifo(cwd / rel)
    return setup


def sock(rel: str) -> Callable[[Path], None]:
    """A listening unix socket at cwd/rel (bound by a relative name: socket paths are limited to 108 bytes)."""
    def setup(cwd: Path) -> None:
        target = cwd / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.getcwd()
        os.chdir(target.parent)
        try:
            s.bind(target.name)
        finally:
            os.chdir(old)
        s.listen(1)
        _SOCKETS.append(s)
    return setup


def zero(rel: str) -> Callable[[Path], None]:
    def setup(cwd: Path) -> None:
        (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
        (cwd / rel).unlink(missing_ok=True)
        os.symlink("/dev/zero", cwd / rel)
    return setup


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(cwd: Path) -> None:
        for s in setups:
            s(cwd)
    return setup


# ------------------------------------------------------------------------------------------ checkpoints
DIMS = dict(L=1, C=16, H=2, T=16, V=50257, Vp=50304)


def write_ckpt(path: Path, *, version: int = 3, poison: Optional[float] = None, **dims: int) -> Path:
    d = {**DIMS, **dims}
    params, dd = llmc_ref.random_params(L=d["L"], C=d["C"], H=d["H"], T=d["T"], V=d["V"], Vp=d["Vp"], seed=1)
    if poison is not None:
        params["fcw"][0, 1, 2] = poison
    path.parent.mkdir(parents=True, exist_ok=True)
    return llmc_ref.write_checkpoint(path, params, dd, version=version)


def run_ck(name: str = "ck", **kw) -> Callable[[Path], None]:
    """data/runs/<name>: a complete llm.c checkpoint (step 10) with its DONE file and a main.log."""
    def setup(cwd: Path) -> None:
        run = cwd / "data" / "runs" / name
        write_ckpt(run / "model_00000010.bin", **kw)
        (run / "DONE_00000010").write_text("")
        (run / "main.log").write_text(MAIN_LOG)
    return setup


def an_export(rel: str) -> Callable[[Path], None]:
    """cwd/rel: an export folder that export-model wrote (of runs/ck)."""
    def setup(cwd: Path) -> None:
        from kitctl.model import export
        from kitctl.model.checkpoint import open_checkpoint

        export.write_export(open_checkpoint(cwd / "data" / "runs" / "ck" / "model_00000010.bin"), cwd / rel)
    return setup


def no_force_hint(r: Result) -> None:
    hint = r.err.lower().split("hint:", 1)[-1]
    assert "--force" not in hint, f"the refusal offers --force, which would be refused too:\n{r.err}"


def modes_alike(folder: str) -> Callable[[Result], None]:
    def check(r: Result) -> None:
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (r.cwd / folder).iterdir()}
        assert len(set(modes.values())) == 1, f"exported files differ in mode: {modes}"
        assert modes["model.safetensors"] & 0o044 == 0o044 & ~_umask(), modes
    return check


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def exported(folder: str) -> Callable[[Result], None]:
    def check(r: Result) -> None:
        rec = json.loads((r.cwd / folder / "llmc_export.json").read_text())
        assert rec["step"] == 10 and (r.cwd / folder / "model.safetensors").stat().st_size > 0
    return check


def C(id: str, argv: list[str], code: int = 2, says=(), **kw) -> Case:
    return Case(id, argv, code, tuple([says] if isinstance(says, str) else says), **kw)


EXPORT_OK = ("cwd/data/runs/ck/hf*", "cwd/data/runs/ck/hf/*")

CASES: list[Case] = [
    # ---------------------------------------------------------------- kit.yaml (KIT_CONFIG, --config, ./kit.yaml)
    C("kit-yaml-env-fifo", ["render", "--stdout"], env={"KIT_CONFIG": "k.fifo"}, setup=fifo("k.fifo"),
      says=["k.fifo", "fifo (named pipe)", NOT_REGULAR]),
    C("kit-yaml-env-dev-zero", ["render", "--stdout"], env={"KIT_CONFIG": "z.yaml"}, setup=zero("z.yaml"),
      says=["z.yaml", "character device"]),
    C("kit-yaml-env-socket", ["render", "--stdout"], env={"KIT_CONFIG": "k.sock"}, setup=sock("k.sock"),
      says=["k.sock", "socket"]),
    C("kit-yaml-option-fifo", ["--config", "k.fifo", "render", "--stdout"], setup=fifo("k.fifo"),
      says=["k.fifo", "fifo"]),
    C("kit-yaml-in-cwd-is-fifo", ["render", "--stdout"], setup=fifo("kit.yaml"), says=["kit.yaml", "fifo"]),
    C("kit-yaml-in-cwd-is-dev-zero", ["status", "r1"], setup=zero("kit.yaml"), says=["kit.yaml", "character device"]),
    C("kit-yaml-user-config-fifo", ["render", "--stdout"], says=["llmc-kit/kit.yaml", "fifo"],
      setup=both(lambda cwd: (cwd / "kit.yaml").unlink(), fifo("../home/.config/llmc-kit/kit.yaml"))),
    C("kit-yaml-in-a-parent-is-fifo", ["render", "--stdout"], says=["kit.yaml", "fifo"],
      setup=both(lambda cwd: (cwd / "kit.yaml").unlink(), fifo("../kit.yaml"))),
    C("kit-yaml-ca-cert-fifo", ["render", "--stdout"], setup=fifo("ca.pem"),
      files={"kit.yaml": "data_root: ./data\nruntime: native\nca_cert: ca.pem\n"}, says=["ca.pem", "fifo"]),
    # ---------------------------------------------------------------- --inventory
    C("inventory-fifo", ["train", "--inventory", "inv.csv", *TRAIN[1:]], setup=fifo("inv.csv"),
      says=["inv.csv", "fifo"]),
    C("inventory-dev-zero", ["train", "--inventory", "inv.csv", *TRAIN[1:]], setup=zero("inv.csv"),
      says=["inv.csv", "character device"]),
    C("inventory-socket", ["train", "--inventory", "inv.csv", *TRAIN[1:]], setup=sock("inv.csv"),
      says=["inv.csv", "socket"]),
    C("inventory-fifo-tune", ["tune", "--inventory", "inv.csv", "--mpirun", "/bin/true", "--data", "data/shards",
                              "--dry-run"], setup=fifo("inv.csv"), says=["inv.csv", "fifo"]),
    C("inventory-dev-zero-reproduce", ["reproduce", "--inventory", "inv.csv", "--mpirun", "/bin/true", "--dry-run"],
      setup=zero("inv.csv"), says=["inv.csv", "character device"]),
    C("inventory-too-large", ["train", "--inventory", "big.csv", *TRAIN[1:]],
      files={"big.csv": "0, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 570.86.10\n" * 40000},
      says=["big.csv", "too large"]),
    C("train-binary-fifo", [*TRAIN, "--binary", "b.fifo"], setup=fifo("b.fifo"), says=["b.fifo", "fifo"]),
    # ---------------------------------------------------------------- a run's files
    C("status-main-log-dev-zero", ["status", "r1"], setup=zero("data/runs/r1/main.log"),
      says=["main.log", "character device"]),
    C("status-main-log-fifo", ["status", "r1"], setup=fifo("data/runs/r1/main.log"), says=["main.log", "fifo"]),
    C("status-stdout-log-socket", ["status", "r1"], setup=sock("data/runs/r1/stdout.log"),
      says=["stdout.log", "socket"]),
    C("status-run-json-fifo", ["status", "r1"], setup=fifo("data/runs/r1/run.json"), says=["run.json", "fifo"]),
    C("status-run-json-dev-zero", ["status", "r1"], setup=zero("data/runs/r1/run.json"),
      says=["run.json", "character device"]),
    C("status-main-log-endless-line", ["status", "r1"], files={"data/runs/r1/main.log": b"s" * (3 << 20)},
      says=["main.log", "longer than 1 mib"]),
    C("tensorboard-main-log-dev-zero", TB1, setup=zero("data/runs/r1/main.log"),
      says=["main.log", "character device"]),
    C("tensorboard-main-log-fifo", TB1, setup=fifo("data/runs/r1/main.log"), says=["main.log", "fifo"]),
    C("tensorboard-stdout-log-fifo", TB1, setup=fifo("data/runs/r1/stdout.log"), says=["stdout.log", "fifo"]),
    C("tensorboard-follow-run-json-fifo", ["tensorboard", "r1", "--no-serve"], setup=fifo("data/runs/r1/run.json"),
      says=["run.json", "fifo"], may_change=("cwd/data/runs/r1/tb*",)),
    C("report-main-log-dev-zero", ["report", "r1", "--out", "r.html"], setup=zero("data/runs/r1/main.log"),
      says=["main.log", "character device"]),
    C("report-log-file-fifo", ["report", "pipe.log", "--out", "r.html"], setup=fifo("pipe.log"),
      says=["pipe.log", "fifo"]),
    # ---------------------------------------------------------------- datasets and HellaSwag sources
    C("data-input-dev-zero", ["data", "z.txt", "--runtime", "native", "--dry-run"], setup=zero("z.txt"),
      says=["z.txt", "character device"]),
    C("data-input-fifo", ["data", "f.jsonl", "--runtime", "native", "--dry-run"], setup=fifo("f.jsonl"),
      says=["f.jsonl", "fifo"]),
    C("data-input-socket", ["data", "s.jsonl", "--runtime", "native", "--dry-run"], setup=sock("s.jsonl"),
      says=["s.jsonl", "socket"]),
    C("data-folder-holding-a-fifo", ["data", "in", "--runtime", "native", "--dry-run"], setup=fifo("in/b.jsonl"),
      files={"in/a.jsonl": '{"text": "hello"}\n'}, says=["b.jsonl", "fifo"]),
    C("data-glob-matching-dev-zero", ["data", "in/*.txt", "--runtime", "native", "--dry-run"],
      setup=zero("in/b.txt"), files={"in/a.txt": "hello\n"}, says=["b.txt", "character device"]),
    C("data-hellaswag-source-fifo", ["data", "hellaswag", "--source", "h.jsonl", "--runtime", "native"],
      setup=fifo("h.jsonl"), says=["h.jsonl", "fifo"]),
    C("data-hellaswag-source-dev-zero", ["data", "hellaswag", "--source", "h.jsonl", "--runtime", "native"],
      setup=zero("h.jsonl"), says=["h.jsonl", "character device"]),
    C("data-hellaswag-source-socket", ["data", "hellaswag", "--source", "h.jsonl", "--runtime", "native"],
      setup=sock("h.jsonl"), says=["h.jsonl", "socket"]),
    C("reproduce-hellaswag-source-fifo", ["reproduce", "--inventory", "two.csv", "--mpirun", "/bin/true",
                                          "--hellaswag-source", "h.jsonl", "--dry-run"], setup=fifo("h.jsonl"),
      says=["h.jsonl", "fifo"]),
    C("reproduce-source-dev-zero", ["reproduce", "--inventory", "two.csv", "--mpirun", "/bin/true",
                                    "--source", "z.txt", "--dry-run"], setup=zero("z.txt"),
      says=["z.txt", "character device"]),
    C("status-both-logs-fifo", ["status", "r1"], setup=both(fifo("data/runs/r1/main.log"),
                                                             fifo("data/runs/r1/stdout.log")),
      says=["main.log", "fifo"]),
    # ---------------------------------------------------------------- checkpoints named to the model commands
    C("export-model-checkpoint-dev-zero", ["export-model", "model_00000001.bin"], setup=zero("model_00000001.bin"),
      says=["model_00000001.bin", "character device"]),
    C("export-model-checkpoint-fifo", ["export-model", "m.bin"], setup=fifo("m.bin"), says=["m.bin", "fifo"]),
    C("sample-checkpoint-fifo", ["sample", "m.bin", "--backend", "numpy"], setup=fifo("m.bin"),
      says=["m.bin", "fifo"]),
    # ---------------------------------------------------------------- export-model checks the checkpoint
    C("export-model-nan-weights", ["export-model", "ck"], setup=run_ck(poison=float("nan")),
      says=["nan or inf", "fcw: 1", "--step"]),
    C("export-model-inf-weights-bf16", ["export-model", "ck"], setup=run_ck(poison=float("inf"), version=5),
      says=["nan or inf", "fcw: 1"]),
    C("export-model-vocab-not-gpt2", ["export-model", "ck"], setup=run_ck(V=1000, Vp=1024),
      says=["vocab is 1,000", "50,257"]),
    C("export-model-truncated", ["export-model", "data/runs/ck/model_00000010.bin"],
      setup=both(run_ck(), lambda cwd: os.truncate(cwd / "data/runs/ck/model_00000010.bin", 4096)),
      says=["truncated"]),
    C("sample-nan-weights", ["sample", "ck", "--backend", "numpy", "-n", "2"], setup=run_ck(poison=float("nan")),
      says=["nan or inf"]),
    # ---------------------------------------------------------------- what --out / --force may replace
    C("export-model-force-run-folder", ["export-model", "ck", "--out", "data/runs/r1", "--force"],
      setup=run_ck(), says=["run folder", "main.log"], check=no_force_hint),
    C("export-model-force-own-run-folder", ["export-model", "ck", "--out", "data/runs/ck", "--force"],
      setup=run_ck(), says=["holds the checkpoint being exported"], check=no_force_hint),
    C("export-model-force-runs-root", ["export-model", "ck", "--out", "data/runs", "--force"], setup=run_ck(),
      says=["data/runs", "never replaces"], check=no_force_hint),
    C("export-model-force-data-root", ["export-model", "ck", "--out", "data", "--force"], setup=run_ck(),
      says=["never replaces"], check=no_force_hint),
    C("export-model-force-planted-record", ["export-model", "ck", "--out", "data/runs/r1", "--force"],
      setup=run_ck(), files={"data/runs/r1/llmc_export.json": "{}"}, says=["run folder"], check=no_force_hint),
    C("export-model-force-checkpoint-folder", ["export-model", "ck", "--out", "old", "--force"], setup=run_ck(),
      files={"old/model_00000005.bin": "x", "old/llmc_export.json": "{}"}, says=["holding checkpoints"],
      check=no_force_hint),
    C("export-model-other-files", ["export-model", "ck", "--out", "mine"], setup=run_ck(),
      files={"mine/thesis.tex": "years of work\n"}, says=["thesis.tex", "did not write"], check=no_force_hint),
    C("export-model-other-files-force", ["export-model", "ck", "--out", "mine", "--force"], setup=run_ck(),
      files={"mine/thesis.tex": "years of work\n"}, says=["thesis.tex"], check=no_force_hint),
    C("export-model-export-plus-notes-force", ["export-model", "ck", "--out", "ex", "--force"],
      setup=both(run_ck(), an_export("ex"), lambda cwd: (cwd / "ex" / "notes.md").write_text("mine\n")),
      says=["notes.md", "other files added"], check=no_force_hint),
    C("export-model-export-without-force", ["export-model", "ck", "--out", "ex"], setup=both(run_ck(), an_export("ex")),
      says=["already holds an export", "--force"]),
    C("export-model-export-with-force", ["export-model", "ck", "--out", "ex", "--force"], code=0,
      setup=both(run_ck(), an_export("ex")), may_change=("cwd/ex", "cwd/ex/*"), check=exported("ex")),
    C("export-model-modes-like-the-rest", ["export-model", "ck"], code=0, setup=run_ck(),
      may_change=EXPORT_OK, check=modes_alike("data/runs/ck/hf/model_00000010")),
    C("export-model-modes-bf16", ["export-model", "ck", "--dtype", "bfloat16", "--out", "b"], code=0,
      setup=run_ck(), may_change=("cwd/b", "cwd/b/*"), check=modes_alike("b")),
]


@contextlib.contextmanager
def _memory_guard():
    """Limit this process's address space to what it uses now plus MEMORY_HEADROOM while a case runs: a read
    that never ends (/dev/zero) ends in MemoryError (the case fails) instead of the OOM killer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = used + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_trust(case, tmp_path, capsys, monkeypatch):
    try:
        r = play(case, tmp_path, capsys, monkeypatch, guard=_memory_guard)
        if case.code == 2 and any(w in case.says for w in ("fifo", "socket", "character device")):
            assert any(k in r.text for k in SPECIAL)
    finally:
        while _SOCKETS:
            _SOCKETS.pop().close()


# ------------------------------------------------------------------------------------------ helpers, directly
def test_open_regular_never_blocks_on_a_fifo_without_writer(tmp_path):
    """The open itself is what hangs on a FIFO: open_regular opens non-blocking and checks the descriptor."""
    from kitctl.core.errors import ConfigError
    from kitctl.core.files import open_regular, read_limited

    os.mkfifo(tmp_path / "p")
    with pytest.raises(ConfigError, match="FIFO"):
        _with_alarm(lambda: open_regular(tmp_path / "p", "x"))
    (tmp_path / "f").write_bytes(b"12345")
    assert read_limited(tmp_path / "f", "x", 5) == b"12345"
    with pytest.raises(ConfigError, match="too large"):
        read_limited(tmp_path / "f", "x", 4)


def _with_alarm(fn, seconds: int = 10):
    import signal

    def ring(signum, frame):
        raise CaseTimeout(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_tensorboard_sync_reads_only_new_lines(tmp_path, monkeypatch):
    """A follow reads each log from where the last sync stopped (plus its first 4 KiB to notice a fresh run), in
    bounded blocks: memory does not grow with the log."""
    from kitctl.core import run_folder as logs
    from kitctl.observe import tbsync

    rd = tmp_path / "run"
    rd.mkdir()
    (rd / "main.log").write_text(MAIN_LOG)
    starts: list[tuple[str, int]] = []
    real = logs.read_chunks

    def spy(path, what, start=0, chunk=logs.LOG_CHUNK, hint=None):
        starts.append((Path(path).name, start))
        assert chunk <= logs.LOG_CHUNK
        return real(path, what, start, chunk, hint)

    monkeypatch.setattr(logs, "read_chunks", spy)
    s = tbsync.TensorBoardSync(rd)
    try:
        assert _with_alarm(s.sync).written > 0
        size = (rd / "main.log").stat().st_size
        with open(rd / "main.log", "a") as f:
            f.write("s:10 trl:8.0000 lr:0.000600 norm:1.00\n")
        starts.clear()
        r = _with_alarm(s.sync)
    finally:
        s.close()
    assert r.written == 3 and ("main.log", size) in starts and ("main.log", 0) not in starts


def test_log_blocks_are_bounded(tmp_path, monkeypatch):
    from kitctl.core import run_folder as logs

    monkeypatch.setattr(logs, "LOG_CHUNK", 1024)
    (tmp_path / "main.log").write_text("s:1 trl:2.0\n" * 5000)
    blocks = list(logs.iter_lines(tmp_path / "main.log", chunk=1024))
    assert max(len(b) for b in blocks) <= 1024 + 12 and sum(len(b) for b in blocks) == 5000 * 12
    streams, bad, used = logs.read_main_log(tmp_path / "main.log")
    assert streams["loss/train"] == {1: 2.0} and used == 5000 * 12 and bad == 0


# ------------------------------------------------------------------------------------------ input changed
def _change_after_first_batch(monkeypatch, change: Callable[[], None]) -> None:
    """A hook in the real tokenizing pass: once its first batch of tokens came out, ``change()`` edits the input,
    once a run. (Not in ``FilesSource.iter_batches``: the token estimate reads the input first, so a hook there
    fired twice, and a second replace could get the first file's freed inode number back and read as a size
    change, not a replacement.)"""
    from kitctl.data import tokenize

    real = tokenize.iter_tokens

    def iter_tokens(batches, *args):
        for i, t in enumerate(real(batches, *args)):
            yield t
            if i == 0:
                change()
    monkeypatch.setattr(tokenize, "iter_tokens", iter_tokens)


@pytest.mark.parametrize("how", ["append", "same-size", "replace"])
def test_input_changed_while_reading_discards_the_shards(how, tmp_path, capsys, monkeypatch):
    cwd = make_world(tmp_path)
    src = cwd / "input.txt"

    def change() -> None:
        if how == "append":
            with open(src, "a") as f:
                f.write("and more\n")
        elif how == "same-size":
            data = src.read_bytes()
            src.write_bytes(data.upper())
        else:
            tmp = cwd / "new.txt"
            tmp.write_text("Another text, long enough for a val and a training shard.\n" * 400)
            os.replace(tmp, src)

    _change_after_first_batch(monkeypatch, change)
    r = run_kitctl(["data", "input.txt", "--runtime", "native", "--out", "out", "--workers", "0"], cwd, capsys,
                   monkeypatch)
    assert r.code == 1, r.err
    assert "changed while kitctl data read it" in r.text and "input.txt" in r.text and "re-run" in r.text
    assert {"append": "size", "same-size": "modified", "replace": "replaced"}[how] in r.text
    assert not list((cwd / "out").glob("*.bin")), "shards of a changed input were kept"
    if (cwd / "out" / "manifest.json").exists():     # a first run that fails leaves no folder at all (tidy_on_failure)
        man = json.loads((cwd / "out" / "manifest.json").read_text())
        assert man["complete"] is False and man["shards"] == [] and "changed" in man["run"]["failed"]
    assert not r.last_resort
    # the same command again (nothing changes now) tokenizes the input as it is
    monkeypatch.undo()
    r2 = run_kitctl(["data", "input.txt", "--runtime", "native", "--out", "out", "--workers", "0"], cwd, capsys,
                    monkeypatch)
    assert r2.code == 0, r2.err
    assert json.loads((cwd / "out" / "manifest.json").read_text())["complete"] is True


def test_input_unchanged_completes(tmp_path, capsys, monkeypatch):
    """The control: the same hook with no change, and the run completes with its shards."""
    cwd = make_world(tmp_path)
    _change_after_first_batch(monkeypatch, lambda: None)
    r = run_kitctl(["data", "input.txt", "--runtime", "native", "--out", "out", "--workers", "0"], cwd, capsys,
                   monkeypatch)
    assert r.code == 0, r.err
    assert list((cwd / "out").glob("*.bin")) and json.loads((cwd / "out" / "manifest.json").read_text())["complete"]


@pytest.mark.slow
def test_input_changed_by_another_process_during_a_slow_read(tmp_path, capsys, monkeypatch):
    """A writer in another process edits a jsonl input while the (slowed) reader is between batches."""
    cwd = make_world(tmp_path)
    src = cwd / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(400)))
    started = threading.Event()
    from kitctl.data import sources

    real = sources.FilesSource.iter_batches

    def slow(self, start_doc=0, batch_rows=sources.BATCH_ROWS):
        for b in real(self, start_doc, 50):
            started.set()
            yield b
            threading.Event().wait(0.05)
    monkeypatch.setattr(sources.FilesSource, "iter_batches", slow)
    writer = threading.Thread(target=lambda: started.wait(20) and subprocess.run(
        [sys.executable, "-c", f"open({str(src)!r}, 'a').write('{{\"text\": \"late\"}}\\n')"], check=True, timeout=60))
    writer.start()
    try:
        r = run_kitctl(["data", "docs.jsonl", "--runtime", "native", "--out", "out", "--workers", "0"], cwd, capsys,
                       monkeypatch)
    finally:
        writer.join(60)
    assert r.code == 1 and "docs.jsonl" in r.text and "size" in r.text, r.err
    assert not list((cwd / "out").glob("*.bin"))


# ------------------------------------------------------------------------------------------ tensorboard --no-serve
def _finished(cwd: Path) -> None:
    (cwd / "data" / "runs" / "r1" / "run.json").write_text(json.dumps(
        {"session": {"start": "2026-01-01T00:00:00Z", "status": "ok", "exit_status": 0}}))


def test_tensorboard_no_serve_on_a_finished_run_returns(tmp_path, capsys, monkeypatch):
    cwd = make_world(tmp_path)
    _finished(cwd)
    r = run_kitctl(["tensorboard", "r1", "--no-serve", "--interval", "0.1"], cwd, capsys, monkeypatch)
    assert r.code == 0 and "not following" in r.text, r.err
    assert list((cwd / "data" / "runs" / "r1" / "tb").glob("events.out.tfevents.*"))


def test_tensorboard_no_serve_all_runs_none_alive_returns(tmp_path, capsys, monkeypatch):
    cwd = make_world(tmp_path)
    r = run_kitctl(["tensorboard", "--no-serve", "--interval", "0.1"], cwd, capsys, monkeypatch)
    assert r.code == 0 and "not following" in r.text, r.err


@pytest.mark.slow
def test_tensorboard_no_serve_follows_a_live_run_until_it_stops(tmp_path, capsys, monkeypatch):
    cwd = make_world(tmp_path)
    trainer = subprocess.Popen(["sleep", "120"])
    (cwd / "data" / "runs" / "r1" / "run.json").write_text(json.dumps(
        {"session": {"start": "x", "pid": trainer.pid, "host": socket.gethostname()}}))

    def later() -> None:
        threading.Event().wait(1.0)
        with open(cwd / "data" / "runs" / "r1" / "main.log", "a") as f:
            f.write("s:10 tel:8.5000\n")
        threading.Event().wait(1.0)
        trainer.kill()
        trainer.wait()

    t = threading.Thread(target=later)
    t.start()
    try:
        r = run_kitctl(["tensorboard", "r1", "--no-serve", "--interval", "0.2"], cwd, capsys, monkeypatch)
    finally:
        t.join(30)
        if trainer.poll() is None:
            trainer.kill()
    assert r.code == 0 and "following the logs" in r.text and "stopped writing" in r.text, r.err
    state = json.loads((cwd / "data" / "runs" / "r1" / "tb" / "kitctl-state.json").read_text())
    assert state["max_step"]["loss/val"] == 10        # the line written while it followed was converted
