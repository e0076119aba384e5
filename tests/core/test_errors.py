"""One spelling for bad input: ConfigError (exit 2); a KitError that sets exit_code=2 by hand is a second one."""
from __future__ import annotations

import ast
from pathlib import Path

from kitctl.core.errors import ConfigError, KitError

KITCTL = Path(__file__).resolve().parents[2] / "kitctl"


def _exit_2_kit_errors(source: str) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "KitError":
            for kw in node.keywords:
                if kw.arg == "exit_code" and isinstance(kw.value, ast.Constant) and kw.value.value == 2:
                    lines.append(node.lineno)
            if len(node.args) >= 3 and isinstance(node.args[2], ast.Constant) and node.args[2].value == 2:
                lines.append(node.lineno)
    return lines


def test_bad_input_has_one_spelling():
    found = [f"{p.relative_to(KITCTL)}:{n}" for p in sorted(KITCTL.rglob("*.py"))
             for n in _exit_2_kit_errors(p.read_text())]
    assert not found, "raise ConfigError(message, hint) instead of KitError(..., exit_code=2): " + ", ".join(found)


def test_the_guard_finds_the_other_spelling():
    assert _exit_2_kit_errors('raise KitError("x", "fix", exit_code=2)\nraise errors.KitError("y", None, 2)\n') == [1, 2]
    assert _exit_2_kit_errors('raise ConfigError("x", "fix")\nraise KitError("y", exit_code=130)\n') == []


def test_config_error_is_a_kit_error_that_exits_2():
    e = ConfigError("what", "how")
    assert isinstance(e, KitError) and e.exit_code == 2 and e.hint == "how"
