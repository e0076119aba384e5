"""The edge of the images area: every value a user gives for a build is checked here, before it can reach a
Dockerfile, a build arg, a shell line or a secret.

* image references and the registry prefix: Docker's reference grammar (:mod:`kitctl.core.pins` patterns);
* the apt mirror and the pip index: plain http(s) URLs without credentials, quotes, spaces or ``#``/``&``
  (the apt mirror is substituted into a ``sed`` expression; a pip index URL would be kept in the image's ENV);
* ``--arch``: ``75,86`` / ``7.5,8.6`` / ``sm_75``, each a compute capability the kit knows -- ``8.65`` or ``inf``
  are refused, never rounded;
* the CA bundle: a readable PEM file with at least one certificate;
* :func:`single_line_values`: the last guard over all template data -- a newline or other control character in
  any value stops the render (a value can never start a new Dockerfile instruction).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from kitctl.core import validate
from kitctl.core.errors import ConfigError

URL = re.compile(r"https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%+-]*)*")


def check_url(value: str, what: str, example: str) -> str:
    """A plain ``http(s)://host[:port]/path`` URL, or a ConfigError (exit 2) saying why not."""
    v = str(value)
    netloc = v.split("://", 1)[1].split("/", 1)[0] if "://" in v else ""
    if "@" in netloc:
        raise ConfigError(f"{what}: {_show(v)} carries credentials (user:password@)",
                          f"{what} ends up in build args and the image's environment; give a URL without them "
                          "(authenticate with a netrc / pip.conf outside the image)")
    if not URL.fullmatch(v):
        raise ConfigError(f"{what}: {_show(v)} is not a plain http(s) URL",
                          f"write it like {example} (letters, digits and . _ ~ % + - / only; no spaces, quotes, "
                          "#, &, ? or newlines)")
    return v


def check_apt_mirror(value: Optional[str]) -> Optional[str]:
    return None if value in (None, "") else check_url(str(value), "mirrors.apt", "https://mirrors.tuna.tsinghua.edu.cn")


SNAPSHOT = re.compile(r"(20[0-9]{2})(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])(?:T([01][0-9]|2[0-3])([0-5][0-9])([0-5][0-9])Z)?")


def check_apt_snapshot(value: Optional[str], apt_mirror: Optional[str] = None) -> Optional[str]:
    """``mirrors.apt_snapshot``: a dated archive, ``YYYYMMDD`` or ``YYYYMMDDTHHMMSSZ`` (snapshot.debian.org and
    snapshot.ubuntu.com take this form) -> the full form; a ConfigError (exit 2) for anything else, and together
    with ``mirrors.apt`` (one would do nothing)."""
    if value in (None, ""):
        return None
    v = str(value).strip()
    if not SNAPSHOT.fullmatch(v):
        raise ConfigError(f"mirrors.apt_snapshot: {_show(v)} is not a snapshot date",
                          "write YYYYMMDD or YYYYMMDDTHHMMSSZ (UTC), e.g. 20250601T000000Z: the apt archive as "
                          "snapshot.debian.org / snapshot.ubuntu.com served it then")
    if apt_mirror not in (None, ""):
        raise ConfigError("mirrors.apt and mirrors.apt_snapshot are both set; a build uses one apt source",
                          "keep mirrors.apt_snapshot to install locked (old) versions, or mirrors.apt for a "
                          "nearby mirror of today's archive")
    return v if "T" in v else v + "T000000Z"


def check_pip_index(value: Optional[str]) -> Optional[str]:
    return None if value in (None, "") else check_url(str(value), "mirrors.pip_index",
                                                      "https://pypi.tuna.tsinghua.edu.cn/simple")


def _show(v: str) -> str:
    return repr(v[:80]) if (len(v) > 80 or not v.isprintable()) else v


def parse_archs(text: str, what: str = "--arch") -> list[int]:
    """``"75,86"`` / ``"7.5 8.6"`` / ``"sm_75,sm_86"`` -> ``[75, 86]`` (sorted, each once); anything else,
    an unknown capability, or an empty list is a ConfigError (exit 2). The one parser: core.validate.arch_list."""
    return validate.arch_list(str(text), what)


def check_ca_bundle(path: Optional[Path], what: str = "--ca-cert") -> Optional[Path]:
    """A readable PEM bundle with at least one certificate (absolute path), or a ConfigError (exit 2);
    core.validate.pem_bundle, which kit.yaml's ca_cert goes through too."""
    return None if path is None else validate.pem_bundle(Path(path), what)


def single_line_values(data: Any, where: str = "template data") -> None:
    """Raise a ConfigError if any string in ``data`` (nested dicts/lists) holds a newline or control character
    (each string through core.validate.no_control_chars)."""
    if isinstance(data, str):
        validate.no_control_chars(data, where)
    elif isinstance(data, dict):
        for k, v in data.items():
            single_line_values(k, where)
            single_line_values(v, f"{where}.{k}")
    elif isinstance(data, (list, tuple)):
        for v in data:
            single_line_values(v, where)
