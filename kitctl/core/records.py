"""Typed records: one pydantic model per file the kit writes and reads back, and per data file it ships.

- :class:`Record` is for files the kit itself writes (run.json, manifest.json, the tune cache, TensorBoard sync
  state...): a ``schema_version``, written through the one atomic writer, read back with a clear error when
  the file is damaged or from a newer kit. Unknown keys are kept out (``extra="ignore"``) so an older kit
  can still read a newer file's known fields.
- :class:`UserData` is for what people write or edit (kit.yaml, recipes, inventories): ``extra="forbid"``, so a
  typo is an error naming the key, not a silently ignored setting.
- :func:`load_yaml` is the one YAML reader: size- and alias-limited (a "billion laughs" file is refused in
  microseconds instead of hanging the CLI), and its errors quote at most a short excerpt.
"""
from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from pathlib import Path
from typing import Any, ClassVar, Optional, Type, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import read_limited, write_atomic

R = TypeVar("R", bound="Record")
M = TypeVar("M", bound=BaseModel)

MAX_YAML_BYTES = 256 << 10      # 256 KiB: every YAML the kit reads is a few KB (PyYAML parses ~150 KB/s)
MAX_YAML_ALIASES = 32          # anchors are fine; thousands of alias expansions are an attack
MAX_ERROR_CHARS = 300          # never echo megabytes back
MAX_RECORD_BYTES = 64 << 20    # a JSON record the kit writes is KBs (run.json with every eval: well under 1 MiB)
MAX_NESTING = 64               # JSON / YAML levels: the kit's own files use < 10; Python's parsers recurse per level

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET_STEP = bytes(1 if b in b"[{" else 255 if b in b"]}" else 0 for b in range(256))   # 255: -1 as signed


def json_depth(raw: bytes) -> int:
    """How deep the arrays/objects of JSON text nest (brackets inside strings do not count), without parsing it:
    json.loads recurses once per level and a document of 100,000 ``[`` is a RecursionError, not a message."""
    steps = _JSON_STRING.sub(b"", raw).translate(_BRACKET_STEP).replace(b"\0", b"")
    return max(accumulate(array("b", steps)), default=0)


class NestingError(ValueError):
    """A file nests lists/mappings deeper than MAX_NESTING."""


def loads_json(raw: bytes, what: str, limit: int = MAX_NESTING) -> Any:
    """``json.loads`` with a nesting limit: a NestingError (a ValueError, as json's own errors are) for a deeper
    document."""
    depth = json_depth(raw)
    if depth > limit:
        raise NestingError(f"{what} nests {depth:,} levels deep, more than the {limit} a kit file ever has")
    return json.loads(raw)


def short(text: object, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` as one printable excerpt of at most ``limit`` characters. A cut is made at a word boundary (never
    in the middle of a word or just after an opening quote or bracket) and says so: ``... (N chars)``."""
    s = str(text)
    if len(s) <= limit:
        return s
    tail = f" ... ({len(s):,} chars)"
    cut = s[: max(0, limit - len(tail))]
    space = cut.rfind(" ")
    if space >= len(cut) // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:=([{<'\"") + tail


def error_text(e: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    """What an exception from a library says, for a message: the innermost cause (the reason, not the wrapper:
    ``Failed to resolve 'host' ...`` rather than ``HTTPSConnectionPool(...): Max retries exceeded ...``), its
    first line, shortened by :func:`short`. Never a string cut mid-word."""
    chain: list[BaseException] = [e]
    for _ in range(10):
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if nxt is None or not str(nxt).strip():
            break
        chain.append(nxt)
    # the deepest library exception (a socket.gaierror below it says less: it does not name the host); a chain of
    # built-in exceptions only: the outermost, which says what was being done
    libs = [x for x in chain if type(x).__module__ not in ("builtins", "socket", "ssl")]
    inner = libs[-1] if libs else chain[0]
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    if text.startswith("<") and ">: " in text:       # urllib3: "<...Connection object at 0x...>: Failed to ..."
        text = text.split(">: ", 1)[1]
    name = type(inner).__name__
    return short(f"{name}: {text}" if text else name, limit)


def validation_message(e: ValidationError) -> str:
    """A pydantic error as ``key.path: what is wrong`` lines (input values shortened)."""
    lines = []
    for err in e.errors()[:8]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(top level)"
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (a typo?)"
        lines.append(f"{loc}: {short(msg, 160)}")
    if len(e.errors()) > 8:
        lines.append(f"... and {len(e.errors()) - 8} more")
    return "; ".join(lines)


class Record(BaseModel):
    """A JSON file the kit writes and reads back. Subclasses set ``SCHEMA`` (bump on an incompatible change)."""

    model_config = ConfigDict(extra="ignore")
    SCHEMA: ClassVar[int] = 1
    KIND: ClassVar[str] = "record"
    MAX_BYTES: ClassVar[int] = MAX_RECORD_BYTES
    schema_version: int = 1

    def model_post_init(self, __context: Any) -> None:
        if "schema_version" not in self.model_fields_set:
            self.schema_version = self.SCHEMA

    @classmethod
    def read(cls: Type[R], path: Path, hint: Optional[str] = None) -> R:
        """Parse and validate ``path``; a :class:`KitError` that names the file when it is missing, damaged,
        or written by a newer kit."""
        path = Path(path)
        fix = hint or f"delete {path} and re-run the command that made it"
        try:         # a device, FIFO or socket in its place: ConfigError (exit 2) naming it, never a hang
            raw = loads_json(read_limited(path, cls.KIND, cls.MAX_BYTES, fix), str(path))
        except NestingError as e:
            raise ConfigError(f"{e}: not a {cls.KIND}", fix) from None
        except FileNotFoundError:
            raise KitError(f"no {cls.KIND} at {path}", fix) from None
        except (OSError, ValueError) as e:      # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise KitError(f"{path} is not a readable {cls.KIND} ({short(e, 160)})", fix) from None
        if not isinstance(raw, dict):
            raise KitError(f"{path} is not a {cls.KIND} (a JSON object was expected)", fix)
        v = raw.get("schema_version", 1)
        if isinstance(v, int) and v > cls.SCHEMA:
            raise KitError(f"{path} was written by a newer kitctl ({cls.KIND} schema {v}, this one reads {cls.SCHEMA})",
                           "upgrade llmc-kit (pip install -U llmc-kit), or use the kitctl that wrote it")
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise KitError(f"{path} is a damaged {cls.KIND}: {validation_message(e)}", fix) from None

    @classmethod
    def read_optional(cls: Type[R], path: Path) -> Optional[R]:
        """Like :meth:`read`, but None when the file does not exist."""
        return cls.read(path) if Path(path).exists() else None

    def to_json(self, exclude_unset: bool = False) -> str:
        return self.model_dump_json(indent=2, exclude_unset=exclude_unset) + "\n"

    def write(self, path: Path, exclude_unset: bool = False) -> Path:
        """Write atomically (temp, fsync, rename): a reader sees the old record or the new one, never half.
        ``exclude_unset``: only the fields read or set (a read-modify-write that leaves the rest as it was)."""
        write_atomic(Path(path), self.to_json(exclude_unset))
        return Path(path)


class UserData(BaseModel):
    """Data a person writes (kit.yaml, recipes, inventories, presets): unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents with too many alias expansions, nesting past MAX_NESTING, and integers
    written with a leading zero (YAML 1.1 reads 075 as octal 61)."""

    aliases_seen = 0
    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (*name): refused as a YAML bomb")
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise TooDeepError(f"lists/mappings nested more than {MAX_NESTING} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_yaml_int(self, node: Any) -> Any:
        text = str(node.value).replace("_", "").lstrip("+-")
        if len(text) > 1 and text[0] == "0" and text[1].isdigit():
            value = super().construct_yaml_int(node)
            raise OctalIntError(str(node.value), value, node.start_mark.line + 1)
        return super().construct_yaml_int(node)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A key written twice in one mapping is refused: YAML keeps the last one, silently (a kit.yaml with two
        ``data_root:`` lines would use the second without a word). Keys merged in with ``<<`` may be overridden."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                try:
                    key = self.construct_object(key_node, deep=True)
                    hash(key)
                except (TypeError, yaml.YAMLError):
                    continue            # the base class reports an unhashable key in its own words
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise DuplicateKeyError(key, seen[key], line)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


_LimitedLoader.add_constructor("tag:yaml.org,2002:int", _LimitedLoader.construct_yaml_int)


class TooDeepError(yaml.YAMLError):
    pass


class OctalIntError(yaml.YAMLError):
    def __init__(self, text: str, value: int, line: int):
        super().__init__(f"line {line}: {text} is read as octal {value} by YAML (a leading zero)")
        self.text, self.value = text, value


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, first: int, again: int):
        super().__init__(f"key {short(repr(key), 80)} appears twice in one mapping (line {first} and line {again})")
        self.key, self.first, self.again = key, first, again


def parse_yaml(text: str, source: str = "<yaml>") -> Any:
    """Parse YAML text with the kit's limits; a :class:`ConfigError` naming ``source`` on any problem."""
    if len(text.encode("utf-8", "replace")) > MAX_YAML_BYTES:
        raise ConfigError(f"{source} is larger than {MAX_YAML_BYTES // 1024} KiB: not a kit YAML file",
                          "point at the right file (kit.yaml, a recipe)")
    loader = _LimitedLoader(text)
    try:
        return loader.get_single_data()
    except DuplicateKeyError as e:
        raise ConfigError(f"{source}: {e}", f"write {short(repr(e.key), 80)} once (YAML would silently keep the "
                          f"value of line {e.again}); delete the line you do not mean") from None
    except TooDeepError as e:
        raise ConfigError(f"{source}: {e}", "a kit YAML file is a few levels deep: point at the right file") from None
    except OctalIntError as e:
        plain = e.text.lstrip("+-0").replace("_", "") or "0"
        raise ConfigError(f"{source}, {e}", f"write {plain} without the leading zero (or quote it, '{e.text}', "
                          "where a text is meant)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source} is not valid YAML: {short(e)}", "fix the syntax (indentation, quotes, colons)") from None
    finally:
        loader.dispose()


def read_yaml_file(path: Path, what: str = "YAML file") -> Any:
    """Read and parse a YAML file with the limits; folders, binary and unreadable files are ConfigErrors."""
    path = Path(path)
    try:         # folders, devices, FIFOs, sockets and files over the limit: ConfigError naming the path
        raw = read_limited(path, what, MAX_YAML_BYTES, f"pass the {what} itself")
    except FileNotFoundError:
        raise ConfigError(f"no {what} at {path}", "check the path") from None
    except PermissionError:
        raise ConfigError(f"cannot read {path}: permission denied", "check who owns it (ls -l)") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}", "check the path") from None
    if b"\0" in raw:
        raise ConfigError(f"{path} is a binary file, not a {what}", f"point at the {what} (a text file)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", f"save the {what} as UTF-8") from None
    return parse_yaml(text, str(path))


def load_model(model: Type[M], data: Any, source: str) -> M:
    """Validate ``data`` (parsed YAML/JSON) as ``model``; a ConfigError with ``key: problem`` lines."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as e:
        raise ConfigError(f"{source}: {validation_message(e)}", f"fix those keys in {source}") from None


def load_yaml(model: Type[M], path: Path, what: str = "YAML file") -> M:
    """Read a YAML file with the limits and validate it as ``model``."""
    return load_model(model, read_yaml_file(path, what), str(path))
