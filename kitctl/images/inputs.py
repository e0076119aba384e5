"""The edge of the images area: every value a user gives for a build is checked here, before it can reach a
Dockerfile, a build arg, a shell line or a secret.

* image references and the registry prefix: Docker's reference grammar (:mod:`kitctl.core.pins` patterns);
* the apt mirror and the pip index: plain http(s) URLs without credentials, quotes, spaces or ``#``/``&``
  (the apt mirror is substituted into a ``sed`` expression; a pip index URL would be kept in the image's ENV);
* ``--arch``: ``75,86`` / ``7.5,8.6`` / ``sm_75``, each a compute capability the kit knows -- ``8.65`` or ``inf``
  are refused, never rounded;
* the CA bundle: a readable PEM file with at least one certificate;
* :func:`no_control_chars`: the last guard over all template data -- a newline or other control character in
  any value stops the render (a value can never start a new Dockerfile instruction).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from kitctl.core.validate import KNOWN_ARCHS
from kitctl.core.errors import ConfigError

URL = re.compile(r"https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%+-]*)*")
CAP = re.compile(r"(?:sm_|compute_)?(?:([0-9]{1,2})\.([0-9])|([0-9]{2,3}))")
MAX_CA_BYTES = 16 * 1024 * 1024
PEM_CERT = b"-----BEGIN CERTIFICATE-----"


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


def check_pip_index(value: Optional[str]) -> Optional[str]:
    return None if value in (None, "") else check_url(str(value), "mirrors.pip_index",
                                                      "https://pypi.tuna.tsinghua.edu.cn/simple")


def _show(v: str) -> str:
    return repr(v[:80]) if (len(v) > 80 or not v.isprintable()) else v


def parse_archs(text: str, what: str = "--arch") -> list[int]:
    """``"75,86"`` / ``"7.5 8.6"`` / ``"sm_75,sm_86"`` -> ``[75, 86]`` (sorted, each once); anything else,
    an unknown capability, or an empty list is a ConfigError (exit 2)."""
    out: list[int] = []
    for tok in str(text).replace(" ", ",").split(","):
        tok = tok.strip().lower()
        if not tok:
            continue
        m = CAP.fullmatch(tok)
        if not m:
            raise ConfigError(f"{what} {_show(str(text))}: '{_show(tok)}' is not a compute capability",
                              "write e.g. --arch 75,86 or --arch 7.5,8.6 (one digit after the dot)")
        out.append(int(m.group(1)) * 10 + int(m.group(2)) if m.group(1) else int(m.group(3)))
    if not out:
        raise ConfigError(f"{what}: the arch list is empty", "give e.g. --arch 75,86")
    bad = sorted({a for a in out if a not in KNOWN_ARCHS})
    if bad:
        raise ConfigError(f"{what} {_show(str(text))}: unknown compute capability {bad}; "
                          f"allowed: {list(KNOWN_ARCHS)} or 'auto'", "2080 Ti = 75, 3090 = 86, A100 = 80, H100 = 90")
    return sorted(set(out))


def check_ca_bundle(path: Optional[Path], what: str = "--ca-cert") -> Optional[Path]:
    """A readable PEM bundle with at least one certificate (absolute path), or a ConfigError (exit 2)."""
    if path is None:
        return None
    p = Path(path).expanduser().absolute()
    fix = "give a PEM bundle, e.g. /etc/ssl/certs/ca-certificates.crt (openssl x509 -inform der -in X.der -out X.pem)"
    try:
        if p.is_dir():
            raise ConfigError(f"{what} {p} is a folder, not a CA bundle", fix)
        size = p.stat().st_size
        if size > MAX_CA_BYTES:
            raise ConfigError(f"{what} {p} is {size:,} bytes: too large for a CA bundle", fix)
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {p}: no such file", fix) from None
    except PermissionError:
        raise ConfigError(f"{what} {p}: permission denied", "make it readable by you (ls -l)") from None
    except OSError as e:
        raise ConfigError(f"{what} {p}: cannot read it ({e.strerror or e})", fix) from None
    if PEM_CERT not in data:
        raise ConfigError(f"{what} {p} is not a PEM certificate bundle (no '-----BEGIN CERTIFICATE-----')", fix)
    return p


def no_control_chars(data: Any, where: str = "template data") -> None:
    """Raise a ConfigError if any string in ``data`` (nested dicts/lists) holds a newline or control character."""
    if isinstance(data, str):
        if any(ord(c) < 32 or ord(c) == 127 for c in data):
            raise ConfigError(f"{where}: {data[:60]!r} holds a newline or control character",
                              "image references, mirrors and pins are single-line values")
    elif isinstance(data, dict):
        for k, v in data.items():
            no_control_chars(k, where)
            no_control_chars(v, f"{where}.{k}")
    elif isinstance(data, (list, tuple)):
        for v in data:
            no_control_chars(v, where)
