"""Imported by kitctl_proc's forkserver before it forks any command (the one module on its PYTHONPATH).

Python 3.11's forkserver imports its preload modules before it applies the parent's sys.path, and skips one it
cannot import without a word: this folder is put on the server's PYTHONPATH so that this module is found; it
imports what tests/ holds for the server (tests/ on sys.path only while it does) and builds kitctl's click command
once, for every fork to inherit (tests/cli_once.py).
"""
import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, _TESTS)
try:
    import cli_once
    import kitctl_proc  # noqa: F401  (the forks' target, _child, lives there)

    cli_once.build_kitctl()
finally:
    sys.path.remove(_TESTS)
