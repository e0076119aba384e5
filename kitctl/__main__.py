"""Entry point of ``kitctl`` and ``python -m kitctl``.

The CLI is imported inside :func:`run` so that a Ctrl-C while Python is still importing it (a second or so on a
cold disk) exits 130 with one line, like a Ctrl-C anywhere else, instead of a traceback.
"""
from __future__ import annotations

import sys


def run() -> None:
    try:
        from kitctl.cli import main   # noqa: PLC0415 (see the module docstring)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted while starting: nothing was done\n")
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
