"""What every command shares: the consoles and the kit.yaml chosen by ``kitctl --config``.

The top-level app (kitctl/cli.py) sets :data:`state` from its global options; area CLIs (``kitctl/<area>/cli.py``)
read it through :func:`config`, so they never import the app above them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console

from kitctl.core.config import ConfigSource, KitConfig, load_config_source, user_config_path

# emoji=False: rich turns ":b:" into an emoji even with markup=False; paths and printed commands (docker -v a:b:c)
# must come out as they are. Text from the user is printed with markup=False or rich.markup.escape.
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


class State:
    """The global options of one kitctl invocation; the config is loaded once, on first use."""

    def __init__(self) -> None:
        self.config_path: Optional[Path] = None
        self._config: Optional[KitConfig] = None
        self.source: ConfigSource = ConfigSource(None, "none")
        self.announced = False

    def reset(self, config_path: Optional[Path]) -> None:
        self.config_path = config_path
        self._config = None
        self.announced = False

    def config(self) -> KitConfig:
        if self._config is None:
            self._config, self.source = load_config_source(self.config_path)
        return self._config

    def announce(self) -> None:
        """Say once, on stderr, which kit.yaml and data root this command writes with (stdout stays the
        command's own: JSON, a plan)."""
        if self.announced:
            return
        self.announced = True
        cfg = self.config()
        err_console.print(announcement(self.source, cfg.data_root), highlight=False, markup=False, soft_wrap=True)


def announcement(src: ConfigSource, data_root: Path) -> str:
    """The line a writing command starts with: the kit.yaml it uses and the data root, or the fallback and how
    to set one."""
    if src.path is not None:
        return f"kit.yaml: {src.describe()}; data root: {data_root}"
    if src.data_root_set:
        return f"kit.yaml: none found; data root: {data_root} (KIT_DATA_ROOT)"
    return (f"kit.yaml: none found (in this folder, its parents, or {user_config_path()}); data root falls back "
            f"to {data_root}. Set one: `kitctl init --data-root /big/disk` (kit.yaml here) or `kitctl init --user "
            "--data-root /big/disk` (every folder), or KIT_DATA_ROOT")


state = State()


def config(writes: bool = False) -> KitConfig:
    """The loaded kit.yaml (loaded on first use, so `--help` never needs a valid config). ``writes``: the command
    is about to write under the data root: say once which kit.yaml and data root it uses."""
    cfg = state.config()
    if writes:
        state.announce()
    return cfg


def config_source() -> ConfigSource:
    state.config()
    return state.source
