"""What every command shares: the consoles and the kit.yaml chosen by ``kitctl --config``.

The top-level app (kitctl/cli.py) sets :data:`state` from its global options; area CLIs (``kitctl/<area>/cli.py``)
read it through :func:`config`, so they never import the app above them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console

from kitctl.core.config import KitConfig, load_config

console = Console()
err_console = Console(stderr=True)


class State:
    """The global options of one kitctl invocation; the config is loaded once, on first use."""

    def __init__(self) -> None:
        self.config_path: Optional[Path] = None
        self._config: Optional[KitConfig] = None

    def reset(self, config_path: Optional[Path]) -> None:
        self.config_path = config_path
        self._config = None

    def config(self) -> KitConfig:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


state = State()


def config() -> KitConfig:
    """The loaded kit.yaml (loaded on first use, so `--help` never needs a valid config)."""
    return state.config()
