"""kit.yaml: schema, defaults, environment overrides, and errors that name the file and the field.

Lookup order, like git's: ``--config FILE``, else ``$KIT_CONFIG``, else ``kit.yaml`` in the current folder or the
nearest parent that has one, else the user's (``$XDG_CONFIG_HOME/llmc-kit/kit.yaml``, default
``~/.config/llmc-kit/kit.yaml``; ``kitctl init --user`` writes it), else built-in defaults. Relative paths in a
found kit.yaml, and the default data root (``data`` beside it), are relative to that file, so a command gives the
same data root from any subfolder. Every field can also be set from the environment as ``KIT_<FIELD>`` (nested
with ``__``, e.g. ``KIT_MIRRORS__PIP_INDEX``); the environment wins over the file. A bad value exits 2 with the
file, the field path and what is allowed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kitctl.core import validate
from kitctl.core.errors import ConfigError
from kitctl.core.files import write_atomic
from kitctl.core.layout import DataLayout
from kitctl.core.records import parse_yaml, read_yaml_file, short
from kitctl.core.validate import check_arch_list, parse_arch_list

CONFIG_NAME = "kit.yaml"
ENV_PREFIX = "KIT_"
# variables of the compose .env (kitctl.images.render.write_env) that are not kit.yaml fields
COMPOSE_ONLY_ENV = ("KIT_UID", "KIT_GID", "KIT_SHARED")
# variables of the kit's own test and CI set-up (KIT_TEST_REGISTRY, KIT_TEST_BASE_IMAGE): never kit.yaml fields
TEST_ENV_PREFIX = "KIT_TEST_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Mirrors(_Strict):
    """Where to get things on networks where Docker Hub, GitHub or huggingface.co are slow or blocked."""

    registry: str = Field(default="docker.io", description="registry prefix for base images, e.g. a Docker Hub mirror")
    apt: Optional[str] = Field(default=None, description="apt mirror URL replacing deb.debian.org / archive.ubuntu.com")
    apt_snapshot: Optional[str] = Field(default=None, description="apt from a dated archive (snapshot.debian.org / "
                                        "snapshot.ubuntu.com), e.g. 20250601T000000Z: locked versions stay installable")
    pip_index: Optional[str] = Field(default=None, description="pip index URL (a PyPI mirror)")
    hf_endpoint: Optional[str] = Field(default=None, description="HF_ENDPOINT, e.g. https://hf-mirror.com")
    llmc_src: Optional[str] = Field(default=None, description="llm.c source: a checkout, a tarball or a tarball URL")
    hellaswag_url: Optional[str] = Field(default=None, description="URL of hellaswag_val.jsonl on a mirror (default: "
                                         "the recipe's raw.githubusercontent.com URL)")


class Nccl(_Strict):
    """NCCL settings passed through to every rank (clusters: socket interface, InfiniBand on/off)."""

    socket_ifname: Optional[str] = None
    ib_disable: Optional[bool] = None
    debug: Optional[str] = None
    extra_env: dict[str, str] = Field(default_factory=dict)


# variables the kit sets itself on every rank: nccl.extra_env may not set them too (one of the two would be lost)
KIT_ENV = {
    "CUDA_VISIBLE_DEVICES": "the GPUs --gpus chose",
    "CUDA_DEVICE_ORDER": "PCI_BUS_ID, so that CUDA's indices are nvidia-smi's",
    "HOME": "/tmp inside the container",
    "OMPI_ALLOW_RUN_AS_ROOT": "Open MPI's consent to run as root",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "Open MPI's consent to run as root",
}
# nccl.<field> -> the variable it sets
NCCL_FIELDS = {"socket_ifname": "NCCL_SOCKET_IFNAME", "ib_disable": "NCCL_IB_DISABLE", "debug": "NCCL_DEBUG"}


def nccl_env(nccl: object = None) -> dict[str, str]:
    """kit.yaml ``nccl:`` -> environment: socket_ifname -> NCCL_SOCKET_IFNAME, ib_disable -> NCCL_IB_DISABLE
    (1/0), debug -> NCCL_DEBUG, plus extra_env verbatim. Accepts a ``config.Nccl``, a dict of env, or None."""
    if nccl is None:
        return {}
    if isinstance(nccl, Mapping):
        return {str(k): str(v) for k, v in nccl.items()}
    env: dict[str, str] = {}
    socket_ifname, ib_disable, debug = (getattr(nccl, k, None) for k in ("socket_ifname", "ib_disable", "debug"))
    if socket_ifname:
        env["NCCL_SOCKET_IFNAME"] = str(socket_ifname)
    if ib_disable is not None:
        env["NCCL_IB_DISABLE"] = "1" if ib_disable else "0"
    if debug:
        env["NCCL_DEBUG"] = str(debug)
    env.update({str(k): str(v) for k, v in (getattr(nccl, "extra_env", None) or {}).items()})
    return env


class KitConfig(_Strict):
    """The whole kit.yaml."""

    data_root: Path = Field(Path("./data"), description="the big disk: datasets, HF cache, runs")
    hf_home: Optional[Path] = Field(None, description="HuggingFace cache; default <data_root>/hf")
    tokenizer_dir: Optional[Path] = Field(None, description="folder with GPT-2 vocab.bpe + encoder.json (offline)")
    image: str = Field("llmc-kit", description="image repository name for kitctl build tags")
    pull_image: Optional[str] = Field(None, description="REGISTRY/REPO[:TAG] pushed by `kitctl build --push`: "
                                      "build, data and train pull it instead of building")
    provider: Literal["nvidia", "wheels"] = Field("nvidia", description="CUDA provider")
    cuda: Optional[str] = Field(None, description="CUDA version; default the provider's pin")
    base_image: Optional[str] = Field(None, description="override the provider's base image")
    arch: Union[Literal["auto"], list[int]] = Field(default_factory=lambda: [75, 86],
                                                    description="compute capabilities, e.g. [75, 86] or auto")
    runtime: Literal["docker", "native"] = Field("docker", description="where commands run")
    ca_cert: Optional[Path] = Field(None, description="extra CA bundle, passed to builds as a BuildKit secret")
    mirrors: Mirrors = Field(default_factory=Mirrors)
    nccl: Nccl = Field(default_factory=Nccl)

    @field_validator("arch", mode="before")
    @classmethod
    def _parse_arch(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "auto":
            return parse_arch_list(v)
        if isinstance(v, int):
            return [v]
        return v

    @field_validator("arch")
    @classmethod
    def _check_arch(cls, v: Any) -> Any:
        return check_arch_list(v) if isinstance(v, list) else v

    @property
    def layout(self) -> DataLayout:
        """Where each thing lives under data_root (kitctl.core.layout)."""
        return DataLayout(self.data_root, self.hf_home)

    @property
    def hf_cache(self) -> Path:
        return self.layout.hf_cache

    @property
    def runs_dir(self) -> Path:
        return self.layout.runs


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if (not key.startswith(ENV_PREFIX) or key in ("KIT_CONFIG", *COMPOSE_ONLY_ENV)
                or key.startswith(TEST_ENV_PREFIX)):
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def _allowed(field_path: tuple[Any, ...]) -> str:
    node: Any = KitConfig
    field = None
    for part in field_path:
        fields = getattr(node, "model_fields", None)
        if not fields or part not in fields:
            return ""
        field = fields[part]
        node = field.annotation
    if field is None:
        return ""
    desc = field.description or ""
    ann = str(field.annotation).replace("typing.", "")
    return f"{desc} ({ann})" if desc else ann


def format_validation_error(err: ValidationError, source: str, environ: Optional[Mapping[str, str]] = None) -> str:
    """pydantic's errors as ``field: problem (got ...)`` lines; a field set by a KIT_* variable names it."""
    lines = [f"invalid config in {source}:"]
    env_keys = {k for k in (environ or {}) if k.startswith(ENV_PREFIX)}
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        what = e["msg"]
        if e["type"] == "extra_forbidden":
            what = "unknown field"
        var = ENV_PREFIX + "__".join(str(p) for p in e["loc"] if isinstance(p, str)).upper()
        via = f" from {var}" if var in env_keys else ""
        allowed = _allowed(tuple(p for p in e["loc"] if isinstance(p, str)))
        lines.append(f"  {loc}: {short(what, 200)} (got {short(repr(e.get('input')), 120)}{via})")
        if allowed:
            lines.append(f"    allowed: {allowed}")
    return "\n".join(lines)


USER_CONFIG_DIR = "llmc-kit"


def user_config_path(environ: Optional[Mapping[str, str]] = None) -> Path:
    """The user's kit.yaml: ``$XDG_CONFIG_HOME/llmc-kit/kit.yaml`` (an absolute XDG_CONFIG_HOME only, as the XDG
    spec says), else ``$HOME/.config/llmc-kit/kit.yaml``."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):
        base = Path(xdg)
    else:
        home = env.get("HOME") or os.path.expanduser("~")
        base = Path(home) / ".config"
    return base / USER_CONFIG_DIR / CONFIG_NAME


@dataclass(frozen=True)
class ConfigSource:
    """Which kit.yaml a command uses, how it was found, and whether the data root was set (not a fallback)."""

    path: Optional[Path]
    how: str                   # --config | KIT_CONFIG | this folder | a parent folder | user config | none
    data_root_set: bool = False

    def describe(self) -> str:
        return f"{self.path} ({self.how})" if self.path is not None else "none found"


def _found(p: Path) -> bool:
    """A kit.yaml is there: a file, or a device, FIFO or socket under that name (found, so that reading it refuses
    it by name instead of passing over it silently to another kit.yaml); a folder is not one."""
    return p.exists() and not p.is_dir()


def locate_config(path: Optional[Path] = None, cwd: Optional[Path] = None,
                  environ: Optional[Mapping[str, str]] = None) -> ConfigSource:
    """Find kit.yaml in git's order (see the module docstring). Found means the file exists; --config and
    KIT_CONFIG name a file that must exist (checked when it is read)."""
    env = os.environ if environ is None else environ
    if path is not None:
        return ConfigSource(Path(path), "--config")
    if env.get("KIT_CONFIG"):
        return ConfigSource(Path(env["KIT_CONFIG"]), "KIT_CONFIG")
    here = (cwd or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        cand = folder / CONFIG_NAME
        if _found(cand):
            return ConfigSource(cand, "this folder" if folder == here else "a parent folder")
    user = user_config_path(env)
    if _found(user):
        return ConfigSource(user, "user config")
    return ConfigSource(None, "none")


PATH_FIELDS = ("data_root", "hf_home", "tokenizer_dir", "ca_cert")


def _read_file(cfg_path: Path) -> dict[str, Any]:
    if not cfg_path.exists() and not cfg_path.is_symlink():
        raise ConfigError(f"config file {cfg_path} does not exist",
                          "run `kitctl init` to write a commented one, or drop --config")
    loaded = read_yaml_file(cfg_path, "kit.yaml")   # size/alias limited; folders, binary, non-UTF-8 refused
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{cfg_path} must hold a mapping of settings, got {type(loaded).__name__}",
                          "see `kitctl init --stdout` for the layout")
    data = dict(loaded)
    # relative paths in a config file are relative to that file (the default data root too: data/ beside it)
    base = cfg_path.resolve().parent
    if "data_root" not in data:
        data["data_root"] = "data"
    for key in PATH_FIELDS:
        # (a ~user that does not expand stays as written: the path checks refuse it by its own name)
        if isinstance(data.get(key), str) and data[key].strip() and not data[key].startswith("~") \
                and not os.path.isabs(os.path.expanduser(data[key])):
            data[key] = str(base / data[key])
    return data


def load_config(path: Optional[Path] = None, environ: Optional[dict[str, str]] = None,
                cwd: Optional[Path] = None) -> KitConfig:
    """Read kit.yaml (or defaults), apply ``KIT_*`` env overrides, validate. Raises ConfigError."""
    return load_config_source(path, environ, cwd)[0]


def load_config_source(path: Optional[Path] = None, environ: Optional[dict[str, str]] = None,
                       cwd: Optional[Path] = None) -> tuple[KitConfig, ConfigSource]:
    """:func:`load_config` and where it came from (the file found, and whether the data root was set)."""
    environ = dict(os.environ) if environ is None else environ
    found = locate_config(path, cwd, environ)
    cfg_path = found.path
    data: dict[str, Any] = _read_file(cfg_path) if cfg_path is not None else {}
    source = str(cfg_path) if cfg_path is not None else "built-in defaults"
    env = _env_overrides(environ)
    if env:
        source += " + KIT_* environment"
    merged = _merge(data, env)
    if "data_root" not in merged:      # no kit.yaml, no KIT_DATA_ROOT: ./data of the folder the command runs in
        merged["data_root"] = str((cwd or Path.cwd()).absolute() / "data")
    for key in PATH_FIELDS:        # the text of each path, before pydantic turns "" into "."
        raw = merged.get(key)
        if isinstance(raw, str):
            where = f"KIT_{key.upper()}" if key in env else f"{key} in {cfg_path}"
            (validate.data_root_text if key == "data_root" else validate.path_text)(raw, where)
            if key in ("hf_home", "tokenizer_dir"):      # the same words as data_root's: never a folder named "$HOME"
                validate.no_unexpanded(raw, where)
    try:
        cfg = KitConfig.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, environ),
                          "fix the field(s) above; `kitctl init --stdout` shows every field with a comment") from None
    for key in PATH_FIELDS:
        val = getattr(cfg, key)
        if val is not None:
            setattr(cfg, key, Path(os.path.expanduser(str(val))).absolute())
    _check_values(cfg, source)
    return cfg, ConfigSource(found.path, found.how, cfg_path is not None or "data_root" in env)


def _check_values(cfg: KitConfig, source: str) -> None:
    """What the schema cannot say: paths that exist as the wrong kind, strings that land in Dockerfiles."""
    def named(key: str) -> str:
        return f"{key} ({source})"

    tokenizer_dir = cfg.tokenizer_dir if cfg.tokenizer_dir is not None and cfg.tokenizer_dir.exists() else None
    checks: list[tuple[Any, Callable[[Any, str], Any], str]] = [
        *((getattr(cfg, key), validate.not_a_file, key) for key in ("data_root", "hf_home")),
        (tokenizer_dir, validate.readable_folder, "tokenizer_dir"),
        (cfg.ca_cert, validate.pem_bundle, "ca_cert"),
        (cfg.image, validate.image_name, "image"),
        (cfg.base_image, validate.docker_ref, "base_image"),
        (cfg.pull_image, validate.docker_ref, "pull_image"),
        (cfg.cuda, validate.no_control_chars, "cuda"),
        (cfg.mirrors.registry, validate.registry, "mirrors.registry"),
        *((getattr(cfg.mirrors, key), validate.url, f"mirrors.{key}") for key in ("apt", "pip_index", "hf_endpoint",
                                                                                  "hellaswag_url")),
        (cfg.mirrors.llmc_src, validate.source_spec, "mirrors.llmc_src"),
        # apt_snapshot's date form is checked at build (kitctl/images/inputs.py)
        (cfg.mirrors.apt_snapshot, validate.no_control_chars, "mirrors.apt_snapshot"),
        *((getattr(cfg.nccl, key), validate.no_control_chars, f"nccl.{key}") for key in ("socket_ifname", "debug")),
    ]
    for value, check, key in checks:
        if value is not None:
            check(value, named(key))
    for k, v in cfg.nccl.extra_env.items():
        validate.env_name(k, named("nccl.extra_env"))
        validate.no_control_chars(v, named(f"nccl.extra_env.{k}"))
    _check_extra_env(cfg.nccl, source)


def _check_extra_env(nccl: Nccl, source: str) -> None:
    """nccl.extra_env may not set what another nccl field or the kit itself sets: exit 2 naming both."""
    for k in nccl.extra_env:
        field = next((f for f, var in NCCL_FIELDS.items() if var == k and getattr(nccl, f) is not None), None)
        if field is not None:
            raise ConfigError(f"nccl.extra_env.{k} ({source}) collides with nccl.{field}, which sets {k} too",
                              f"keep one: drop {k} from nccl.extra_env, or leave nccl.{field} out")
        if k in KIT_ENV:
            raise ConfigError(f"nccl.extra_env.{k} ({source}) collides with the kit's own {k} ({KIT_ENV[k]})",
                              f"drop {k} from nccl.extra_env" + ("; choose GPUs with --gpus" if k == "CUDA_VISIBLE_DEVICES"
                                                                 else ""))

TEMPLATE = """\
# kit.yaml: llmc-kit settings. Every field may also come from the environment as KIT_<FIELD>
# (nested with __, e.g. KIT_MIRRORS__PIP_INDEX=https://pypi.tuna.tsinghua.edu.cn/simple).

# The big disk: datasets, the HuggingFace cache, training runs and checkpoints all live here
# (kitctl reproduce gpt2-124m: ~56 GB; `kitctl reproduce --dry-run` prints the exact need).
# Relative paths are relative to this file.
data_root: {data_root}
# HuggingFace cache (FineWeb10B's parquet: 29 GB; deletable after `kitctl data`). Default: <data_root>/hf,
# never ~/.cache.
# hf_home: /mnt/big/hf
# GPT-2 BPE files (vocab.bpe, encoder.json) for offline hosts; checked against their sha256.
# tokenizer_dir: /mnt/big/gpt2-bpe

# Images: name, CUDA provider (nvidia = NVIDIA's CUDA base images; wheels = any Debian/Ubuntu base plus
# NVIDIA's CUDA 13 PyPI wheels, for networks where a PyPI mirror works and Docker Hub does not).
# Images and build cache land in Docker's own storage (`docker info`: DockerRootDir), not on the data root:
# ~14 GB with nvidia, ~4.4 GB with wheels (`kitctl doctor` checks its free space).
image: llmc-kit
# pull_image: 127.0.0.1:5000/llmc-kit   # pushed by `kitctl build --push`: pull it instead of building
provider: nvidia
# cuda: "12.8.1"            # default: the provider's pin in docker/versions.yaml
# base_image: debian:bookworm
# GPU compute capabilities to compile for: a list (2080 Ti = 75, 3090 = 86, A100 = 80, H100 = 90) or auto.
arch: {arch}
# Where commands run: docker (the kit's images) or native (this host's CUDA/MPI).
runtime: {runtime}
# Extra CA bundle for TLS-intercepting proxies (passed to builds as a BuildKit secret, never baked in).
# ca_cert: /etc/ssl/certs/ca-certificates.crt

mirrors:
  registry: docker.io       # base image registry prefix, e.g. a Docker Hub mirror
  # apt: https://mirrors.tuna.tsinghua.edu.cn
  # apt_snapshot: 20250601T000000Z    # or apt as snapshot.debian.org/ubuntu.com served it (docker/images.lock)
  # pip_index: https://pypi.tuna.tsinghua.edu.cn/simple
  # hf_endpoint: https://hf-mirror.com
  # llmc_src: /path/to/llm.c            # a checkout, a tarball, or a tarball URL

# NCCL settings passed to every rank (clusters).
nccl:
  # socket_ifname: eth0
  # ib_disable: true
  extra_env: {{}}
"""


def template_text(data_root: str = "./data", arch: Union[str, list[int]] = "[75, 86]", runtime: str = "docker") -> str:
    """The commented kit.yaml with these values (``arch``: "auto" or a list of compute capabilities)."""
    validate.data_root_text(data_root, "--data-root")
    if runtime not in ("docker", "native"):
        raise ConfigError(f"--runtime {runtime!r}: allowed are docker, native",
                          "docker: the kit's images; native: this host's CUDA toolkit and MPI")
    if isinstance(arch, list):
        arch = "[" + ", ".join(str(a) for a in sorted(set(arch))) + "]"
    return TEMPLATE.format(data_root=yaml_scalar(data_root), arch=arch, runtime=runtime)


def write_template(path: Path, data_root: str = "./data", force: bool = False, arch: Union[str, list[int]] = "[75, 86]",
                   runtime: str = "docker") -> Path:
    """Write the commented kit.yaml to ``path`` (atomically: a reader never sees half a file)."""
    path = Path(path)
    text = template_text(data_root, arch, runtime)
    validate.writable_file(path, "the config file")
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", "pass --force to overwrite it, or edit it")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
    return path


def yaml_scalar(text: str) -> str:
    """``text`` as a YAML scalar that reads back as exactly ``text`` (quoted only when it has to be)."""
    try:
        if parse_yaml(f"k: {text}\n") == {"k": text}:
            return text
    except ConfigError:
        pass
    return json.dumps(text)     # a JSON string is a YAML double-quoted scalar
