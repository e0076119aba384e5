"""The one error type the CLI renders: what is wrong, and how to fix it (never a bare traceback)."""
from __future__ import annotations


class KitError(Exception):
    """A failure the user can act on.

    ``message`` says what is wrong, ``hint`` what to do about it; ``exit_code`` is what ``kitctl`` exits with
    (2 for bad input or config, 1 for a failed step, 130 for an interrupt).
    """

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(KitError):
    """Bad input, exit code 2: a kit.yaml field, an option, a file or folder the user named. The one spelling of
    bad input in the kit (``KitError(..., exit_code=2)`` is not used; tests/core/test_errors.py keeps it so)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint, exit_code=2)
