"""lm-eval's task index, narrowed to the folders that name the asked tasks (kitctl/model/evaluate.py), on the real
harness: the same task YAML as lm-eval's whole index picks, and the whole index whenever narrowing could change
what runs (groups, tags, patterns, names in no file)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from kitctl.model import evaluate as ev

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                reason="lm-eval not installed (.ci/setup installs docker/requirements-eval.lock)")

TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files: {data}
test_split: train
output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_target: 0
doc_to_choice: "{{{{endings}}}}"
metric_list:
  - metric: acc
"""


@pytest.fixture(scope="module")
def task_manager():
    return ev.load_harness()[1]


@pytest.fixture
def tree(tmp_path):
    """a/ defines t_one, c/ defines t_two and t_one_b (t_one's name inside a longer word), b/ groups t_one + t_two."""
    data = tmp_path / "x.jsonl"
    data.write_text('{"ctx": "a", "endings": ["b", "c"]}\n')
    for folder, name in (("a", "t_one"), ("c", "t_two"), ("c", "t_one_b")):
        (tmp_path / "tasks" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "tasks" / folder / f"{name}.yaml").write_text(TASK.format(name=name, data=data))
    (tmp_path / "tasks" / "b").mkdir()
    (tmp_path / "tasks" / "b" / "g.yaml").write_text("group: g_both\ntask:\n  - t_one\n  - t_two\n")
    return tmp_path / "tasks"


def test_folders_name_a_task_as_a_whole_word(tree):
    found = ev.task_folders(tree, ["t_one", "t_two", "nope"])
    assert found == {"t_one": {tree / "a", tree / "b"}, "t_two": {tree / "b", tree / "c"}, "nope": set()}


@pytest.mark.slow       # loads lm-eval's harness and its task index (~1.2 s, once a module)
def test_narrowed_index_holds_the_task_as_the_whole_index_has_it(tree, task_manager):
    tm = ev.narrow_task_manager(task_manager, ["t_one"], None, tasks_dir=tree)
    whole = task_manager(include_defaults=False, include_path=str(tree))
    assert tm is not None and tm.task_index["t_one"] == whole.task_index["t_one"]
    assert "t_two" not in tm.all_tasks and "t_two" in whole.all_tasks        # c/ was not parsed


@pytest.mark.slow       # loads lm-eval's harness and its task index (~1.2 s, once a module)
def test_groups_patterns_and_unknown_names_take_the_whole_index(tree, task_manager):
    assert ev.narrow_task_manager(task_manager, ["g_both"], None, tasks_dir=tree) is None   # t_two is in c/
    assert ev.narrow_task_manager(task_manager, ["t_*"], None, tasks_dir=tree) is None
    assert ev.narrow_task_manager(task_manager, ["t_one", "nope"], None, tasks_dir=tree) is None


@pytest.mark.slow       # loads lm-eval's harness and its task index (~1.2 s, once a module)
def test_a_task_only_in_include_path_is_indexed_from_there(tree, tmp_path, task_manager):
    local = tmp_path / "mine"
    local.mkdir()
    (local / "mine.yaml").write_text((tree / "a" / "t_one.yaml").read_text().replace("t_one", "my_task"))
    tm = ev.narrow_task_manager(task_manager, ["my_task", "t_two"], local, tasks_dir=tree)
    assert tm is not None and tm.task_index["my_task"].yaml_path == local / "mine.yaml"
    assert "t_one" not in tm.all_tasks


@pytest.mark.slow       # loads lm-eval's harness and its task index (~1.2 s, once a module)
def test_hellaswag_from_lm_evals_own_tree(task_manager):
    """The kit's default task: its folder alone is parsed, and the YAML is lm-eval's hellaswag/hellaswag.yaml."""
    tm = ev.narrow_task_manager(task_manager, ["hellaswag"], None)
    assert tm is not None
    assert Path(tm.task_index["hellaswag"].yaml_path).parts[-2:] == ("hellaswag", "hellaswag.yaml")
    assert len(tm.all_tasks) < 100                     # lm-eval's whole index: ~14,700
