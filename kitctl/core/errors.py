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
    """A bad kit.yaml or bad option value: exit code 2."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint, exit_code=2)
