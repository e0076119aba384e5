"""RunFolder, the one home of a run folder (issue 30): run.json's reads and its two writers, llm.c's checkpoint
files, main.log's tail. The writer lock's tests are in tests/hostile/test_run_trust.py; main.log's parser's in
tests/observe (its line forms) and tests/hostile/test_trust_files.py (bounded blocks)."""
from __future__ import annotations

import json
import os

import pytest

from kitctl.core import llmc_files as lf
from kitctl.core.errors import KitError
from kitctl.core.run_folder import Checkpoints, RunFolder, table_values
from kitctl.core.run_record import (MAX_HISTORY, GpuRecord, PlanRecord, RunRecord, SessionRecord, gpu_label,
                                    launch_flag, session_of, total_steps)


def _touch(folder, *names):
    for n in names:
        (folder / n).write_bytes(b"x")


def test_checkpoints_are_read_from_one_listing_with_core_names(tmp_path):
    run = RunFolder(tmp_path)
    assert run.model_path(200).name == lf.model_filename(200) and run.done_path(200).name == lf.done_filename(200)
    assert run.state_path(200, 1).name == lf.state_filename(200, 1)
    _touch(tmp_path, lf.model_filename(100), lf.done_filename(100), lf.state_filename(100, 0),
           lf.state_filename(100, 1), lf.model_filename(200), lf.state_filename(200, 0),   # 200: no DONE yet
           "main.log", "model_200.bin", "DONE_00000300.tmp")                              # not llm.c's names
    c = run.checkpoints()
    assert c.models == {100: lf.model_filename(100), 200: lf.model_filename(200)}
    assert c.done == (100,) and c.last_done == 100 and c.last_model == 200
    assert c.states == {100: 2, 200: 1} and c.any
    assert not Checkpoints.of_names(["main.log", "run.json"]).any and Checkpoints().last_done is None
    with pytest.raises(FileNotFoundError):        # a missing folder is the caller's to word
        RunFolder(tmp_path / "none").checkpoints()


def test_write_session_keeps_history_evals_and_a_newer_kits_keys(tmp_path):
    run = RunFolder(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({
        "session": {"id": "s0", "last_step": 6}, "history": [{"id": f"h{i}"} for i in range(MAX_HISTORY)],
        "evals": [{"task": "hellaswag"}], "from_a_newer_kit": {"k": 1}}))
    run.write_session(RunRecord(command="train", session=SessionRecord(id="s1")))
    rj = json.loads((tmp_path / "run.json").read_text())
    assert rj["session"]["id"] == "s1" and rj["command"] == "train"
    assert len(rj["history"]) == MAX_HISTORY and rj["history"][-1]["id"] == "s0" and rj["history"][0]["id"] == "h1"
    assert rj["evals"] == [{"task": "hellaswag"}] and rj["from_a_newer_kit"] == {"k": 1}
    run.write_session(RunRecord(session=SessionRecord(id="s1", status="ok")))     # the same session: replaced
    rj = json.loads((tmp_path / "run.json").read_text())
    assert rj["session"]["status"] == "ok" and [h["id"] for h in rj["history"]][-1] == "s0"
    (tmp_path / "run.json").write_text("{not json")                               # damaged: train replaces it
    run.write_session(RunRecord(session=SessionRecord(id="s2")))
    assert run.read().session.id == "s2" and run.read().history == []


def test_update_changes_only_what_it_assigns_and_never_replaces_a_damaged_record(tmp_path):
    run = RunFolder(tmp_path)
    assert run.load() == (None, None) and run.read() is None

    def add(rec: RunRecord) -> None:
        rec.evals = [*rec.evals, {"task": "t"}]

    run.update(add, hint="h")                       # no run.json yet: an empty record with the change
    assert set(json.loads(run.run_json.read_text())) == {"evals", "schema_version"}
    run.run_json.write_text(json.dumps({"command": "c", "evals": [], "unknown": 1}))
    run.update(add, hint="h")
    assert json.loads(run.run_json.read_text()) == {"command": "c", "evals": [{"task": "t"}], "unknown": 1,
                                                    "schema_version": 1}
    run.run_json.write_text("[1, 2]")
    with pytest.raises(KitError) as e:
        run.update(add, hint="move it away")
    assert e.value.hint == "move it away" and run.run_json.read_text() == "[1, 2]"
    rec, why = run.load()
    assert rec is None and "run.json" in why
    with pytest.raises(KitError) as e:
        run.read()
    assert f"mv {run.run_json} {run.run_json}.bad" in e.value.hint


def test_last_train_step_reads_the_tail_of_main_log(tmp_path):
    run = RunFolder(tmp_path)
    assert run.last_train_step() is None
    lines = "".join(f"s:{i} trl:3.0 lr:0.0006 norm:1.0\ns:{i} tel:3.1\n" for i in range(2000))
    run.main_log.write_text(lines + "s:1999 eval:0.25\ns:2000 trl:2.9")        # torn last line: not counted
    assert run.main_log.stat().st_size > 4096 and run.last_train_step() == 1999
    run.main_log.write_text("s:0 tel:3.1\n")
    assert run.last_train_step() is None


def test_archive_moves_the_run_files_only(tmp_path):
    run = RunFolder(tmp_path)
    _touch(tmp_path, lf.model_filename(5), lf.done_filename(5), lf.state_filename(5, 0), "main.log", "stdout.log",
           "run.json", "notes.txt")
    dest = run.archive(tmp_path / "archive-1")
    assert sorted(os.listdir(tmp_path)) == ["archive-1", "notes.txt"] and len(os.listdir(dest)) == 6


def test_what_a_record_says_beyond_its_fields():
    rec = RunRecord(argv=["docker", "run", "--name=c1", "img", "train_gpt2cu", "-x", "abc"],
                    plan=PlanRecord(steps=40, llmc_args=["-x", "30"]))
    assert launch_flag(rec, "--name") == "c1" and launch_flag(rec, "-x") == "abc" and rec.container_name() == "c1"
    assert total_steps(rec) == 40                             # -x is not a number: the plan's steps
    assert total_steps(RunRecord(plan=PlanRecord(llmc_args=["-x", "30"]))) == 30
    assert total_steps(RunRecord(plan=PlanRecord(steps=0))) is None
    assert session_of(None) == SessionRecord() and session_of(RunRecord(session=SessionRecord(id="a"))).id == "a"
    assert gpu_label(GpuRecord(index=0, name="H100")) == "0: H100" and gpu_label(GpuRecord()) == "?"


def test_the_run_records_its_kitctl_start_time(tmp_path):
    from kitctl.core.proc import start_ticks

    rec = SessionRecord(pid=os.getpid(), pid_start=start_ticks(os.getpid()))
    assert json.loads(rec.model_dump_json())["pid_start"] == start_ticks(os.getpid()) > 0


def test_the_start_up_table_gives_each_runs_values_in_order():
    table = ("+-----------------------+--------------------------------------------+\n"
             "| Parameter             | Value                                      |\n"
             "| train data pattern    | /d/fineweb_train_*.bin                     |\n"
             "| micro batch size B    | 16                                         |\n"
             "| sequence length T     | 1024                                       |\n")
    text = table + "step    1/10 | loss 11.0\n" + table.replace("| 16 ", "| 8  ") + "| num_processes | |\n"
    assert table_values(text, "micro batch size B") == ["16", "8"]          # a resumed run prints it again
    assert table_values(text, "train data pattern") == ["/d/fineweb_train_*.bin"] * 2
    assert table_values(text, "num_processes") == [] and table_values(text, "micro batch size") == []
