"""kitctl.core.llmc_files: llm.c's headers and file names round-trip, and bad headers are refused with the reason."""
from __future__ import annotations

import ast
import re
import struct

import numpy as np
import pytest

from kitctl.core import llmc_files as lf

UPSTREAM_SHARD = np.zeros(256, dtype="<i4")          # llm.c dev/data/data_common.py write_datafile, by hand
UPSTREAM_SHARD[:3] = (20240520, 1, 12345)


def test_shard_header_is_llmcs_bytes_and_round_trips():
    raw = lf.pack_shard_header(12345)
    assert raw == UPSTREAM_SHARD.tobytes() and len(raw) == lf.HEADER_BYTES == 1024
    assert lf.unpack_shard_header(raw) == 12345
    assert lf.unpack_shard_header(raw + b"tokens follow") == 12345
    assert lf.shard_size(12345) == 1024 + 2 * 12345


@pytest.mark.parametrize("raw, why", [
    (b"", "0 bytes, shorter"),
    (lf.pack_shard_header(5)[:1000], "1000 bytes, shorter"),
    (struct.pack("<3i", 20240522, 1, 5) + bytes(1012), "20240522/1"),
    (struct.pack("<3i", 20240520, 2, 5) + bytes(1012), "20240520/2"),
    (struct.pack("<3i", 20240520, 1, -5) + bytes(1012), "-5 tokens"),
])
def test_bad_shard_headers_are_refused_with_the_reason(raw, why):
    with pytest.raises(lf.HeaderError, match=why):
        lf.unpack_shard_header(raw)


def test_shard_header_refuses_counts_outside_int32():
    for n in (-1, 2**31):
        with pytest.raises(ValueError):
            lf.pack_shard_header(n)


def test_shard_names_round_trip():
    assert lf.shard_filename("fineweb", 0) == "fineweb_val_000000.bin"
    assert lf.shard_filename("fineweb", 7) == "fineweb_train_000007.bin"
    for i in (0, 1, 999_999):
        sn = lf.parse_shard_filename(lf.shard_filename("my_data.v2", i))
        assert sn is not None and (sn.prefix, sn.index, sn.split) == ("my_data.v2", i, "val" if i == 0 else "train")
    for bad in ("fineweb_train_1.bin", "fineweb_train_000001.bin.tmp", "gpt2_tokenizer.bin", "_train_000001.bin",
                "fineweb_test_000001.bin"):
        assert lf.parse_shard_filename(bad) is None, bad
    with pytest.raises(ValueError):
        lf.shard_filename("x", 1_000_000)
    assert lf.shard_patterns("fw") == ("fw_val_*.bin", "fw_train_*.bin")


def test_hellaswag_header_round_trips_and_refuses_a_shard():
    raw = lf.pack_hellaswag_header(10042, 1234)
    assert struct.unpack("<4i", raw[:16]) == (20240522, 1, 10042, 1234) and len(raw) == 1024
    assert lf.unpack_hellaswag_header(raw) == lf.HellaswagHeader(10042, 1234)
    with pytest.raises(lf.HeaderError, match="20240520"):
        lf.unpack_hellaswag_header(lf.pack_shard_header(3))
    with pytest.raises(ValueError):
        lf.pack_hellaswag_header(2**16, 10)


def test_checkpoint_header_round_trips_both_precisions():
    for version, dtype, size in ((3, "float32", 4), (5, "bfloat16", 2)):
        h = lf.CheckpointHeader(version, 1024, 50257, 12, 12, 768, 50304)
        raw = lf.pack_checkpoint_header(h)
        assert struct.unpack("<8i", raw[:32]) == (20240326, version, 1024, 50257, 12, 12, 768, 50304)
        back = lf.unpack_checkpoint_header(raw)
        assert back == h and back.dtype == dtype and back.itemsize == size


@pytest.mark.parametrize("magic, says", [(20240520, "token shard"), (20240527, "optimizer state"),
                                         (20240522, "HellaSwag"), (20240328, "tokenizer"), (7, "expected 20240326")])
def test_checkpoint_header_names_what_the_file_is_instead(magic, says):
    with pytest.raises(lf.HeaderError, match=says):
        lf.unpack_checkpoint_header(struct.pack("<2i", magic, 3) + bytes(1016))


def test_checkpoint_versions_other_than_3_and_5_are_refused():
    for v in (1, 2, 4, 6):
        with pytest.raises(lf.HeaderError, match=f"version {v}"):
            lf.unpack_checkpoint_header(struct.pack("<2i", 20240326, v) + bytes(1016))
        with pytest.raises(ValueError):
            lf.pack_checkpoint_header(lf.CheckpointHeader(v, 1, 1, 1, 1, 1, 1))


def test_tokenizer_header_round_trips_and_refuses_others():
    raw = lf.pack_tokenizer_header(50257, 50256)
    assert struct.unpack("<4i", raw[:16]) == (20240328, 2, 50257, 50256)
    assert lf.unpack_tokenizer_header(raw) == lf.TokenizerHeader(2, 50257, 50256)
    with pytest.raises(lf.HeaderError, match="bad magic 20240520"):
        lf.unpack_tokenizer_header(lf.pack_shard_header(1))
    with pytest.raises(lf.HeaderError, match="vocab size 0"):
        lf.unpack_tokenizer_header(struct.pack("<4i", 20240328, 2, 0, 0) + bytes(1008))


def test_run_folder_names_round_trip():
    assert (lf.model_filename(200), lf.state_filename(200, 3), lf.done_filename(200)) == \
        ("model_00000200.bin", "state_00000200_00003.bin", "DONE_00000200")
    assert lf.parse_model_filename(lf.model_filename(19560)) == 19560
    assert lf.parse_state_filename(lf.state_filename(19560, 7)) == (19560, 7)
    assert lf.parse_done_filename(lf.done_filename(0)) == 0
    for bad in ("model_200.bin", "model_00000200.bin.tmp", "DONE_00000200.txt", "state_00000200.bin", "main.log"):
        assert lf.parse_model_filename(bad) is None and lf.parse_done_filename(bad) is None
        assert lf.parse_state_filename(bad) is None
    assert {"main.log", "stdout.log", "run.json"} <= set(lf.RUN_FILE_GLOBS)


# a run-folder or shard file name with its number, as a literal or as an f-string renders it (each {...} -> "0")
NUMBERED_NAME = re.compile(r"\bmodel_0*\d+\.bin|\bstate_0*\d+_0*\d+\.bin|\bDONE_0*\d+\b|_(?:train|val)_\d+\.bin")
NUMBERED_FILE = re.compile(r"[\w.-]*(?:" + NUMBERED_NAME.pattern + ")")      # a whole string that is such a name


def _literals_outside_core(tree: ast.AST) -> list[tuple[int, str]]:
    """What the guard below refuses in one module's syntax tree: (line, what)."""
    magics = {20240520, 20240522, 20240326, 20240328, 20240527}
    names = {"main.log", "stdout.log", "run.json", "gpt2_tokenizer.bin", "manifest.json", "hellaswag_val.bin"}
    found: list[tuple[int, str]] = []
    header_uses: set[int] = set()        # ids of 1024 literals used as the header's size: offsets, slices, *HEADER*
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            header_uses |= {id(x) for x in (node.left, node.right)}
        elif isinstance(node, ast.Slice):
            header_uses |= {id(x) for x in (node.lower, node.upper) if x is not None}
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("read", "seek"):
            header_uses |= {id(x) for x in node.args}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and "HEADER" in t.id.upper() for t in targets):
                header_uses.add(id(node.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "0" for v in node.values)
            if NUMBERED_NAME.search(text):
                found.append((node.lineno, f"f-string {text!r}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in names or NUMBERED_FILE.fullmatch(node.value.rsplit("/", 1)[-1]):
                found.append((node.lineno, repr(node.value)))
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            if node.value in magics or node.value == 50256:
                found.append((node.lineno, repr(node.value)))
            elif node.value == 1024 and id(node) in header_uses:
                found.append((node.lineno, "1024 as llm.c's header size"))
    return found


def test_no_magic_number_or_run_file_name_is_spelled_outside_core():
    """One home for llm.c's contracts: outside kitctl/core no int literal of a magic or of EOT (50256), no 1024 used
    as the header's size (an offset, a slice bound, a read or seek, a *HEADER* constant), no string literal of a
    run-folder / data-root file name, and no literal or f-string that spells a numbered one (model_%08d.bin,
    state_..., DONE_..., <name>_train_%06d.bin): core's helpers say them. Prose that mentions a name without
    building it (a glob like DONE_*, an example in a docstring or a hint) is not refused."""
    from pathlib import Path

    import kitctl

    pkg = Path(kitctl.__file__).parent
    found = []
    for p in pkg.rglob("*.py"):
        if p.parent.name == "core":
            continue
        found += [f"{p.relative_to(pkg)}:{line}: {what}" for line, what in _literals_outside_core(ast.parse(p.read_text()))]
    assert not found, found


@pytest.mark.parametrize("code", [
    'p = out / f"model_{step:08d}.bin"', 'd = f"DONE_{n:08d}"', 'x = f"state_{s:08d}_{r:05d}.bin"',
    'v = f"{name}_val_000000.bin"', 't = f"{name}_train_{i:06d}.bin"', 'n = "fw_train_000001.bin"',
    'c = "/runs/x/model_00000200.bin"', 'msg = f"no checkpoint for step {s} (model_{s:08d}.bin)"',
    "eot = 50256", "m = 20240520", "need = 2 * n + 1024", "head = raw[:1024]", "f.seek(1024)", "HEADER = 1024",
    'log = "main.log"'])
def test_the_guard_refuses_each_kind_of_literal(code):
    assert _literals_outside_core(ast.parse(code)), code


@pytest.mark.parametrize("code", ["T = 1024", "mib = x * 1024 * 1024", "if T > 1024: pass", "b = f(argv, '-t', 1024)",
                                  'msg = f"{run} has no checkpoint (DONE_*)"', "vocab = 50257",
                                  'p = f"{d}/{model_filename(step)}"',
                                  'hint = "point --data at a folder holding <name>_val_000000.bin"'])
def test_the_guard_leaves_sequence_lengths_sizes_and_prose(code):
    assert not _literals_outside_core(ast.parse(code)), code


def test_grad_accum_steps_is_llmc_batch_rule():
    # -d a whole number of B x T x ranks: the micro-batches per step; else None; -d <= 0 (llm.c's default): 1
    assert lf.grad_accum_steps(524288, 16, 1024, 1) == 32
    assert lf.grad_accum_steps(524288, 64, 1024, 8) == 1
    assert lf.grad_accum_steps(524288, 48, 1024, 1) is None
    assert lf.grad_accum_steps(524288, 16, 1024, 3) is None
    assert lf.grad_accum_steps(-1, 16, 1024, 3) == 1 and lf.grad_accum_steps(0, 4, 64, 2) == 1
