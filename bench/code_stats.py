"""Code-size figures for a closing note: lines per area, functions over 5 parameters, functions over complexity 10.

    .venv/bin/python bench/code_stats.py            # the table
    .venv/bin/python bench/code_stats.py --list     # and the functions named

Parameters are counted as a caller sees them: every positional, keyword-only, *args and **kwargs parameter, less
``self`` / ``cls`` of a method. Complexity is ruff's C901 (McCabe) at 10, counted from its JSON output, so the
figure is the one `ruff check --select C901` would report with that threshold.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "kitctl"


def _lines(paths: list[Path]) -> int:
    return sum(len(p.read_text(encoding="utf-8").splitlines()) for p in paths)


def areas() -> dict[str, int]:
    """Lines per area (every .py under kitctl/<area>, and kitctl's own top-level modules as 'kitctl/')."""
    out = {"kitctl/": _lines(sorted(PKG.glob("*.py")))}
    for d in sorted(p for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        out[d.name] = _lines(sorted(d.rglob("*.py")))
    out["total kitctl"] = sum(out.values())
    out["tests"] = _lines(sorted((ROOT / "tests").rglob("*.py")))
    return out


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> int:
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args)]
    n = len(names) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
    if method and names and names[0] in ("self", "cls"):
        n -= 1
    return n


def many_params(limit: int = 5) -> list[tuple[str, int]]:
    found = []
    for path in sorted(PKG.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = _params(child, isinstance(node, ast.ClassDef))
                    if n > limit:
                        found.append((f"{path.relative_to(ROOT)}:{child.lineno} {child.name}", n))
    return found


def complex_functions(limit: int = 10) -> list[str]:
    cmd = [str(ROOT / ".venv/bin/ruff"), "check", "--select", "C901", "--config",
           f"lint.mccabe.max-complexity={limit}", "--output-format", "json", "--exit-zero", "kitctl"]
    rows = json.loads(subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    return [f"{Path(r['filename']).relative_to(ROOT)}:{r['location']['row']} {r['message']}" for r in rows]


def main() -> None:
    for area, n in areas().items():
        print(f"{area:14} {n:6}")
    params, cx = many_params(), complex_functions()
    print(f"functions over 5 parameters: {len(params)}")
    print(f"functions over complexity 10: {len(cx)}")
    if "--list" in sys.argv:
        for name, n in sorted(params, key=lambda x: -x[1]):
            print(f"  {n:3} {name}")
        for row in cx:
            print(f"  {row}")


if __name__ == "__main__":
    main()
