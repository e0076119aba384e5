"""Optional packages (torch, transformers, lm-eval, huggingface_hub): imported where used, through one function
that tells "not installed" from "installed, but the versions do not fit together".

A transformers that needs a newer huggingface_hub fails at import with an ImportError (often a
ModuleNotFoundError for a submodule, ``No module named 'huggingface_hub.utils'``) that reads like a missing package
or reaches the user as an internal error. :func:`import_optional` turns it into exit 2 naming both packages, their
versions and the requirement that is not met, read from the installed packages' own metadata.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import re
from types import ModuleType
from typing import Optional

from kitctl.core.errors import ConfigError

# import name -> distribution name, where they differ
_DIST = {"lm_eval": "lm_eval", "huggingface_hub": "huggingface_hub", "torch": "torch",
         "transformers": "transformers", "datasets": "datasets", "tokenizers": "tokenizers"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(dist: str) -> Optional[str]:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def conflicts(dist: str, depth: int = 2) -> list[tuple[str, str, str, str, str]]:
    """Requirements of ``dist`` (and of its requirements, ``depth`` levels) that the installed versions do not
    meet, as (package, its version, required package, required specifier, installed version of it)."""
    try:
        from packaging.requirements import Requirement
        from packaging.version import InvalidVersion
    except ImportError:          # packaging comes with pip and with every one of these packages
        return []
    out: list[tuple[str, str, str, str, str]] = []
    seen: set[str] = set()
    todo = [(dist, 0)]
    while todo:
        name, level = todo.pop(0)
        have = installed(name)
        if _norm(name) in seen or have is None:
            continue
        seen.add(_norm(name))
        for line in md.requires(name) or []:
            try:
                req = Requirement(line)
                if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                    continue
                got = installed(req.name)
                ok = got is None or req.specifier.contains(got, prereleases=True)
            except (InvalidVersion, ValueError, LookupError):   # metadata this packaging cannot read: not ours
                continue
            if got is not None and not ok:
                out.append((name, have, req.name, str(req.specifier), got))
            elif got is not None and level + 1 < depth:
                todo.append((req.name, level + 1))
    return out


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def import_optional(module: str, *, purpose: str, install: str) -> ModuleType:
    """``importlib.import_module(module)``; a KitError (exit 2) saying what is missing, or which installed packages
    do not fit together, instead of an ImportError."""
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        dist = _DIST.get(top, top)
        found = conflicts(dist)
        if found:
            what = "; ".join(f"{p} {v} needs {r}{spec}, installed is {r} {got}" for p, v, r, spec, got in found)
            pins = " ".join(dict.fromkeys(f"'{r}{spec}'" for _, _, r, spec, _ in found[:1]))
            both = " ".join(dict.fromkeys(x for p, _, r, _, _ in found for x in (p, r)))
            raise ConfigError(f"{purpose}: the installed packages do not fit together: {what} "
                              f"(import of {module} failed: {_first_line(e)})",
                              f"install a version that fits: pip install {pins}, or upgrade them together: "
                              f"pip install -U {both}") from None
        name = e.name or "" if isinstance(e, ModuleNotFoundError) else ""
        if installed(dist) is None or name == top:
            raise ConfigError(f"{purpose}: {dist} is not installed", install) from None
        versions = ", ".join(f"{d} {v}" for d in sorted(set(_DIST.values())) if (v := installed(d)))
        raise ConfigError(f"{purpose}: {dist} {installed(dist)} is installed but cannot be imported: {_first_line(e)} "
                          f"(installed: {versions})",
                          f"reinstall it with the packages it needs: pip install --force-reinstall {dist}; or {install}") from None
