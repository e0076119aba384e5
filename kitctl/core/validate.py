"""The one validation layer at the edge: typed checks for what users type (options, kit.yaml values, paths).

Each check takes the value and the name the user knows it by (``--port``, ``data_root``), returns the value
(normalised where that helps) and raises :class:`ConfigError` (exit 2) with what is wrong, why, and how to fix
it. Area CLIs attach them to Typer options with :func:`checked`::

    port: int = typer.Option(6006, "--port", callback=checked(validate.port))

so a bad value is refused before any command runs: nothing is planned, created or half-written.
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Optional
from urllib.parse import urlsplit

from kitctl.core.errors import ConfigError
from kitctl.core.files import check_regular, open_regular, read_limited
from kitctl.core.records import short

RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
# a Docker image reference: [registry[:port]/]path[:tag][@digest], lower-case path components
_DOCKER_REF_RE = re.compile(r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*"
                            r"(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
                            r"(?:@sha256:[0-9a-f]{64})?$")
_REGISTRY_RE = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_URL_UNSAFE = re.compile(r"[\"'<>\\^`{|}]")
MAX_WORKERS_PER_CORE = 2


def _show(value: object) -> str:
    return short(repr(value), 80)


# ------------------------------------------------------------------------------------------ numbers

def int_range(value: int, option: str, lo: Optional[int] = None, hi: Optional[int] = None,
              why: str = "") -> int:
    """``lo <= value <= hi`` (either bound may be None)."""
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = (f"between {lo} and {hi}" if lo is not None and hi is not None
                  else f">= {lo}" if lo is not None else f"<= {hi}")
        raise ConfigError(f"{option} {value}: must be {bounds}" + (f" ({why})" if why else ""),
                          f"pass {option} with a whole number {bounds}")
    return value


def positive_int(value: int, option: str) -> int:
    return int_range(value, option, lo=1)


def non_negative_int(value: int, option: str) -> int:
    return int_range(value, option, lo=0)


def port(value: int, option: str = "--port") -> int:
    return int_range(value, option, 1, 65535, "a TCP port")


def positive_float(value: float, option: str) -> float:
    """A finite number > 0 (seconds, rates)."""
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{option} {value}: must be a number greater than 0",
                          f"pass e.g. {option} 5")
    return value


def workers(value: int, option: str = "--workers", cores: Optional[int] = None) -> int:
    """Process counts: 0 (in this process) up to a small multiple of the cores (more only costs memory)."""
    cores = cores or os.cpu_count() or 1
    non_negative_int(value, option)
    return int_range(value, option, 0, max(4, MAX_WORKERS_PER_CORE * cores),
                     f"this machine has {cores} core(s); more processes than that only cost memory")


# llm.c reads every number of its command line with atoi() into a C int (and writes steps into int32 checkpoint
# headers): a bigger value wraps or saturates there, so the kit refuses it before anything runs.
LLMC_INT_MAX = 2**31 - 1
LLMC_INT_WHY = "llm.c reads it into a 32-bit int"
SEED_MAX = 2**32 - 1         # numpy / torch seeds are unsigned 32-bit
GPT2_VOCAB = 50257           # GPT-2's tokenizer: --top-k beyond it changes nothing
GPT2_CONTEXT = 1024          # GPT-2's positions (llm.c's -t)
MAX_SHARDS = 999_999         # llm.c's shard names hold six digits (_train_%06d.bin)


def llmc_int(value: int, option: str, lo: Optional[int] = 1) -> int:
    """A count that reaches llm.c's command line: ``lo <= value <= 2**31 - 1``."""
    return int_range(value, option, lo, LLMC_INT_MAX, LLMC_INT_WHY)


def steps_or_epoch(value: int, option: str = "--steps") -> int:
    """Optimizer steps: a positive count up to llm.c's int, or -1 for one epoch of the shards."""
    if value == -1 or 1 <= value <= LLMC_INT_MAX:
        return value
    if value > LLMC_INT_MAX:
        raise ConfigError(f"{option} {value}: must be at most {LLMC_INT_MAX:,} ({LLMC_INT_WHY})",
                          f"pass a smaller {option} (GPT-2 124M's reproduction is about 19,000 steps), "
                          "or -1 for one epoch of the shards")
    raise ConfigError(f"{option} {value}: must be at least 1, or -1 for one epoch of the shards",
                      f"pass e.g. {option} 100")


def seed(value: int, option: str = "--seed") -> int:
    return int_range(value, option, 0, SEED_MAX, "a random seed is an unsigned 32-bit number")


def bounded_float(value: float, option: str, lo: float, hi: float, why: str, example: str) -> float:
    """A finite number with ``lo < value <= hi`` (lo exclusive: rates, speeds)."""
    if not math.isfinite(value) or value <= lo or value > hi:
        raise ConfigError(f"{option} {value}: must be a number greater than {lo:g} and at most {hi:g} ({why})",
                          f"pass e.g. {option} {example}")
    return value


def choice(value: str, option: str, choices: Iterable[str]) -> str:
    """One of a fixed set of words."""
    allowed = tuple(choices)
    if value not in allowed:
        raise ConfigError(f"{option} {_show(value)} is not one of {', '.join(allowed)}",
                          f"pass {option} {allowed[0]}" + (f" (or {', '.join(allowed[1:])})" if allowed[1:] else ""))
    return value


# ------------------------------------------------------------------------------------------ names and text

def no_control_chars(value: str, what: str) -> str:
    """Refuse newlines, tabs and other control characters (they break files and command lines they land in)."""
    if _CONTROL_RE.search(value):
        raise ConfigError(f"{what} {_show(value)} contains a control character (a newline, tab or escape)",
                          f"write {what} on one line, without control characters")
    return value


def run_name(value: str, option: str = "--name") -> str:
    """A single folder / file-prefix name: letters, digits, '.', '_', '-'; never a path (no '/', no '..')."""
    if not RUN_NAME_RE.match(value) or value in (".", "..") or ".." in value:
        raise ConfigError(f"{option} {_show(value)} is not a plain name (it must not be a path or contain '..')",
                          f"use letters, digits, '.', '_' and '-' (e.g. {option} gpt2-d12); "
                          "to put the output somewhere else, pass --out DIR")
    return value


def host_address(value: str, option: str = "--host") -> str:
    """An IP address or a host name to bind or connect to."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOSTNAME_RE.match(value):
        raise ConfigError(f"{option} {_show(value)} is not an IP address or a host name",
                          f"pass e.g. {option} 127.0.0.1 (this machine only) or {option} 0.0.0.0 (every interface)")
    return value


def image_name(value: str, what: str = "image") -> str:
    """An image repository name without a tag (``llmc-kit``, ``registry:5000/team/llmc``): the kit adds tags."""
    no_control_chars(value, what)
    if not _DOCKER_REF_RE.match(value) or "@" in value or re.search(r":[^/]*$", value):
        raise ConfigError(f"{what} {_show(value)} is not an image repository name",
                          "write lower-case name components without a tag, e.g. image: llmc-kit "
                          "or image: registry.example.com:5000/team/llmc-kit")
    return value


def env_name(value: str, what: str) -> str:
    """An environment variable name."""
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
        raise ConfigError(f"{what}: {_show(value)} is not an environment variable name",
                          "use letters, digits and '_' (not starting with a digit), e.g. NCCL_P2P_LEVEL")
    return value


def docker_ref(value: str, what: str = "--base-image") -> str:
    """A Docker image reference (``[registry/]repo[:tag][@sha256:...]``); never anything a Dockerfile would
    read as more than one token."""
    no_control_chars(value, what)
    if not _DOCKER_REF_RE.match(value):
        raise ConfigError(f"{what} {_show(value)} is not a Docker image reference",
                          "write it as [registry[:port]/]name[:tag][@sha256:digest], e.g. debian:bookworm")
    return value


def registry(value: str, what: str = "mirrors.registry") -> str:
    """A registry prefix: ``host[:port][/path]`` (no scheme, no spaces)."""
    no_control_chars(value, what)
    if not _REGISTRY_RE.match(value):
        raise ConfigError(f"{what} {_show(value)} is not a registry prefix",
                          "write it as host[:port][/path] without https://, e.g. docker.io or mirror.example.com:5000")
    return value


def url(value: str, what: str, schemes: Iterable[str] = ("http", "https")) -> str:
    """An absolute URL with one of ``schemes`` and no whitespace."""
    no_control_chars(value, what)
    parts = urlsplit(value)
    if parts.scheme not in tuple(schemes) or not parts.netloc or any(c.isspace() for c in value):
        raise ConfigError(f"{what} {_show(value)} is not an {'/'.join(schemes)} URL",
                          f"write it as {next(iter(schemes))}://host/path, e.g. https://mirrors.example.com/pypi/simple")
    bad = sorted(set(_URL_UNSAFE.findall(value)))
    if bad:
        # RFC 3986 has no place for these: a quote ends a shell word or a Dockerfile string the URL lands in, and
        # the HTTP libraries refuse some of them with errors of their own
        raise ConfigError(f"{what} {_show(value)} contains {' '.join(repr(c) for c in bad)}, which a URL cannot hold",
                          "percent-encode them (\" is %22, ' is %27, a space is %20) or give the URL without them")
    if not _HOSTNAME_RE.match(parts.hostname or "") and not _is_ip(parts.hostname or ""):
        raise ConfigError(f"{what} {_show(value)}: {_show(parts.hostname or '')} is not a host name",
                          f"write it as {next(iter(schemes))}://host[:port]/path")
    return value


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def source_spec(value: str, what: str) -> str:
    """A local path or an http(s) URL (``--llmc-src``, ``mirrors.llmc_src``): a URL is checked as one."""
    no_control_chars(value, what)
    if "://" in value:
        return url(value, what)
    return value


KNOWN_ARCHS = (60, 61, 70, 75, 80, 86, 87, 89, 90, 100, 120)


def build_arch(compute_cap: int) -> Optional[int]:
    """The arch to build for a GPU of ``compute_cap``: itself when the kit builds it, else the newest known arch
    of the same major version below it (CUDA runs sm_XY code on any sm_XZ with Z >= Y: sm_120 on a 12.1 GB10);
    None when there is none (the GPU is older than anything the kit builds)."""
    if compute_cap in KNOWN_ARCHS:
        return compute_cap
    same = [a for a in KNOWN_ARCHS if a // 10 == compute_cap // 10 and a <= compute_cap]
    return max(same) if same else None


_ARCH_TOKEN_RE = re.compile(r"^(?:(?P<major>[0-9]{1,2})\.(?P<minor>[0-9])|(?P<whole>[0-9]{2,3}))$")


def parse_arch_list(text: str) -> list[int]:
    """'75,86' / '7.5,8.6' / 'sm_75 sm_86' -> [75, 86]. A ValueError names a token that is not one
    (``8.65``, ``inf``, ``-7.5``: compute capabilities are MAJOR.MINOR with one minor digit)."""
    out = []
    for tok in text.replace(" ", ",").split(","):
        tok = tok.strip().lower().removeprefix("sm_").removeprefix("compute_")
        if not tok:
            continue
        m = _ARCH_TOKEN_RE.match(tok)
        if m is None:
            raise ValueError(f"'{short(tok, 40)}' is not a compute capability (write e.g. 75,86 or 7.5,8.6)")
        out.append(int(m["major"]) * 10 + int(m["minor"]) if m["major"] else int(m["whole"]))
    return out


def check_arch_list(archs: list[int]) -> list[int]:
    """Refuse an empty list or a compute capability the kit does not know (kit.yaml and --arch alike)."""
    if not archs:
        raise ValueError("the arch list is empty")
    bad = [a for a in archs if a not in KNOWN_ARCHS]
    if bad:
        runs = [f"sm_{a} GPUs run sm_{build_arch(a)} code: use {build_arch(a)}" for a in bad if build_arch(a)]
        raise ValueError(f"unknown compute capability {bad}; allowed: {list(KNOWN_ARCHS)} or 'auto'"
                         + (f" ({'; '.join(runs)})" if runs else ""))
    return sorted(set(archs))


def arch_list(text: str, option: str = "--arch") -> list[int]:
    """``75,86`` / ``7.5,8.6`` / ``sm_75`` -> [75, 86] of known compute capabilities."""
    try:
        return check_arch_list(parse_arch_list(text))
    except ValueError as e:
        raise ConfigError(f"{option} {_show(text)}: {e}",
                          f"write compute capabilities like {option} 75,86 or 8.0,9.0 (known: "
                          f"{', '.join(str(a) for a in KNOWN_ARCHS)}), or {option} auto") from None


def arch_spec(text: str, option: str = "--arch") -> str:
    """An ``--arch`` value as text: ``auto`` or a checked list, normalised to ``75,86``."""
    if text.strip() == "auto":
        return "auto"
    return ",".join(str(a) for a in arch_list(text, option))


# ------------------------------------------------------------------------------------------ paths

def _nearest_existing(p: Path) -> Path:
    p = Path(os.path.abspath(p))
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def writable_folder(path: Path, what: str) -> Path:
    """A folder that exists or can be made: not a file, no file in its parents, writable where it will be made.

    Missing parents are fine (they are created); the check is that creating them can work."""
    path = Path(path).expanduser()
    no_control_chars(str(path), what)
    base = _nearest_existing(path)
    shown = f"{what} {path}"
    if base == Path(os.path.abspath(path)):
        if not base.is_dir():
            raise ConfigError(f"{shown} is a file, not a folder", f"pick a folder for {what} (or move the file away)")
    elif not base.is_dir():
        raise ConfigError(f"{shown} cannot be made: {base} is a file, not a folder",
                          f"pick a {what} whose parent folders are folders")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"{shown} is not writable: {base} is read-only for this user",
                          f"pick a {what} you can write to, or fix the permissions of {base} (ls -ld {base})")
    return path


def writable_file(path: Path, what: str, suffixes: Iterable[str] = ()) -> Path:
    """A file to (re)write: not a folder, its folder writable (or makeable), optionally one of ``suffixes``."""
    path = Path(path).expanduser()
    no_control_chars(str(path), what)
    suffixes = tuple(suffixes)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder, not a file",
                          f"pass a file name, e.g. {what} {path / ('out' + (suffixes[0] if suffixes else ''))}")
    if suffixes and path.suffix.lower() not in suffixes:
        raise ConfigError(f"{what} {path}: the file name must end in {' or '.join(suffixes)}",
                          f"pass e.g. {what} report{suffixes[0]}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{what} {path} is read-only", f"pick another {what}, or fix its permissions (ls -l {path})")
    writable_folder(path.absolute().parent, f"the folder of {what}")
    return path


def readable_file(path: Path, what: str, text: bool = False, non_empty: bool = False) -> Path:
    """An existing, readable regular file; with ``text``, UTF-8 text (no NUL bytes)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist", f"check the path given to {what}")
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder, not a file", f"pass the file itself to {what}")
    check_regular(path, what)          # a device, FIFO or socket: refused, naming it (reading one never ends)
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{what} {path} is not readable (permission denied)", f"check who owns it: ls -l {path}")
    if non_empty and path.stat().st_size == 0:
        raise ConfigError(f"{what} {path} is empty", f"pass a file with content to {what}")
    if text:
        limit = 1 << 16
        with open_regular(path, what) as f:
            head = f.read(limit)
        if b"\0" in head:
            raise ConfigError(f"{what} {path} is a binary file, not text", f"pass the text file {what} expects")
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as e:
            cut = len(head) == limit and e.start >= limit - 3 and "unexpected end" in e.reason
            if not cut:                      # not just a multi-byte character cut at the read boundary
                raise ConfigError(f"{what} {path} is not UTF-8 text (byte {e.start})",
                                  f"save it as UTF-8 and pass it to {what} again") from None
    return path


def readable_folder(path: Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist", f"check the path given to {what}")
    if not path.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a folder", f"pass the folder to {what}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(f"{what} {path} is not readable (permission denied)", f"check who owns it: ls -ld {path}")
    return path


MAX_CA_BYTES = 16 * 1024 * 1024
PEM_CERT = b"-----BEGIN CERTIFICATE-----"


def pem_bundle(path: Path, what: str = "--ca-cert") -> Path:
    """A CA bundle (kit.yaml's ``ca_cert``, ``--ca-cert``): a readable file of at most 16 MiB holding at least one
    PEM certificate; returned as an absolute path."""
    p = Path(path).expanduser().absolute()
    fix = ("pass a PEM CA bundle, e.g. /etc/ssl/certs/ca-certificates.crt; convert a DER file with: "
           "openssl x509 -inform der -in ca.der -out ca.pem")
    try:
        if p.is_dir():
            raise ConfigError(f"{what} {p} is a folder, not a CA bundle", fix)
        data = read_limited(p, "CA bundle", MAX_CA_BYTES, fix)
    except FileNotFoundError:
        raise ConfigError(f"{what} {p}: no such file", fix) from None
    except PermissionError:
        raise ConfigError(f"{what} {p}: permission denied", f"make it readable by you (ls -l {p})") from None
    except OSError as e:
        raise ConfigError(f"{what} {p}: cannot read it ({e.strerror or e})", fix) from None
    if PEM_CERT not in data:
        raise ConfigError(f"{what} {p} is not a PEM certificate bundle (no '-----BEGIN CERTIFICATE-----' line)", fix)
    return p


NAME_MAX, PATH_MAX = 255, 4096      # Linux limits, in bytes


def path_text(value: str, what: str) -> str:
    """The text of a path setting: one line, not blank, within the file system's name and path limits."""
    if not value.strip():
        raise ConfigError(f"{what} is empty", f"set {what} to a path, or remove it to use the default")
    no_control_chars(value, what)
    longest = max((len(part.encode()) for part in value.split("/")), default=0)
    if len(value.encode()) > PATH_MAX or longest > NAME_MAX:
        raise ConfigError(f"{what} {_show(value)} is too long for a path ({len(value.encode()):,} bytes; at most "
                          f"{PATH_MAX} in all and {NAME_MAX} per folder name)", f"pick a shorter {what}")
    return value


def not_a_file(path: Path, what: str) -> Path:
    """A folder setting that names an existing file (or a path below one) can never work: refuse it early."""
    path = Path(path)
    base = _nearest_existing(path)
    if base.exists() and not base.is_dir():
        where = "is a file" if base == Path(os.path.abspath(path)) else f"is inside {base}, which is a file"
        raise ConfigError(f"{what} {path} {where}, not a folder",
                          f"point {what.split()[0]} at a folder (kitctl creates it when it is missing)")
    return path


def data_root_text(value: str, what: str = "data_root") -> str:
    """The text of a data root before it becomes a path: not empty, one line, no unexpanded variables."""
    if not value.strip():
        raise ConfigError(f"{what} is empty (an empty KIT_DATA_ROOT or 'data_root:' with no value)",
                          "set it to the big disk, e.g. data_root: /mnt/big/llmc in kit.yaml, or unset KIT_DATA_ROOT "
                          "to use the default ./data")
    path_text(value, what)
    return no_unexpanded(value, what)


def no_unexpanded(value: str, what: str) -> str:
    """A path setting with a $VARIABLE or ~user, which kitctl does not expand (a leading ~/ is expanded): refused,
    not made into a folder literally named "$HOME" (data_root, hf_home, tokenizer_dir alike)."""
    if "$" in value or value.startswith("~") and not value.startswith(("~/",)) and value != "~":
        key = what.split()[0]
        raise ConfigError(f"{what} {_show(value)} has a $VARIABLE or ~user that kitctl does not expand",
                          f"write the full path, e.g. {key}: /home/me/llmc (a leading ~/ is fine)")
    return value


# ------------------------------------------------------------------------------------------ Typer glue

def given(ctx: Any, name: str) -> bool:
    """Whether the user gave option ``name`` (the parameter's Python name) on the command line or through its
    environment variable, as opposed to its default."""
    try:
        source = ctx.get_parameter_source(name)
    except (AttributeError, KeyError):
        return False
    return source is not None and getattr(source, "name", "") in ("COMMANDLINE", "ENVIRONMENT")


def refuse_unused(ctx: Any, options: dict[str, str], why: str, fix: str) -> None:
    """Refuse (exit 2) the options of ``options`` (parameter name -> flag) that the user gave: they do nothing
    here, and ``why`` says so. An option that does nothing in a combination is refused, never ignored."""
    flags = [flag for name, flag in options.items() if given(ctx, name)]
    if flags:
        shown = " ".join(flags)
        raise ConfigError(f"{shown} does nothing {why}", fix.format(flags=shown))


def checked(check: Callable[..., Any], **kw: Any) -> Callable[[Any, Any, Any], Any]:
    """A Typer/click option callback running ``check(value, <option name>, **kw)``; None passes through.

    For repeatable options (lists), each item is checked."""
    def callback(ctx: Any, param: Any, value: Any) -> Any:
        if value is None or getattr(ctx, "resilient_parsing", False):
            return value
        name = (param.opts[0] if getattr(param, "opts", None) else None) or param.human_readable_name
        if isinstance(value, (list, tuple)):
            return type(value)(check(v, name, **kw) for v in value)
        return check(value, name, **kw)

    return callback
