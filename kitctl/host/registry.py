"""Images across machines: ``docker load`` (a bundle's image), ``docker push`` / ``docker pull`` (a registry), and
the check that a pulled or loaded image carries the recipe labels a plan expects.

Labels cannot hold their own image's digest: the digest a push got is read back from the engine
(``RepoDigests``) and written into a record beside the build (``<data_root>/images/pushed.json``); run records
carry it through the image's repo digests (kitctl.train.inspect_image).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Callable, Optional

from kitctl.core import proc, validate
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.records import Record, short

LineFn = Callable[[str], None]
RECIPE_HASH = "org.llmc-kit.recipe-hash"
ARCHS_LABEL = "org.llmc-kit.archs"          # the arch list the image's binaries were built for: "75,86"
CUDNN_LABEL = "org.llmc-kit.cudnn"          # "on" / "off": the BF16 binary's cuDNN attention
# labels whose difference makes an image another recipe (every pin that goes into the build)
CHECKED_LABELS = ("org.llmc-kit.stage", "org.llmc-kit.provider", "org.llmc-kit.cuda", ARCHS_LABEL,
                  CUDNN_LABEL, "org.llmc-kit.llmc.commit", "org.llmc-kit.versions-sha256")


ANSWER_S = 15.0          # a registry that accepted the connection answers GET /v2/ within this (ms when healthy)
IDLE_S = 1800.0          # docker push/pull stopped after this long without a line (a layer of GBs prints ~2 lines)
INSPECT_S = 60.0


def _seconds(env: str, default: float) -> float:
    """A timeout, overridable by the environment (tests, slow links); a value that is not a positive number is
    ignored."""
    try:
        v = float(os.environ.get(env, ""))
    except ValueError:
        return default
    return v if 0 < v < 1e6 else default


def _docker() -> str:
    exe = shutil.which("docker")
    if exe is None:
        raise ConfigError("docker is not installed here", "install Docker (kitctl doctor says how)")
    return exe


def registry_host(ref: str) -> Optional[str]:
    """The registry part of an image reference (``127.0.0.1:5000/x/y:t`` -> ``127.0.0.1:5000``), None for a
    Docker Hub or local name."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def split_ref(ref: str) -> tuple[str, Optional[str]]:
    """``repo[:tag|@digest]`` -> (repo, tag-or-digest or None)."""
    if "@" in ref:
        repo, dig = ref.split("@", 1)
        return repo, "@" + dig
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, None


def _inspect(ref: str, fmt: str) -> subprocess.CompletedProcess[str]:
    validate.no_control_chars(ref, "image")
    if ref.startswith("-"):                     # never an option-looking name on docker's command line
        raise ConfigError(f"image {short(repr(ref), 80)} is not an image reference (it starts with '-')",
                          "write it as [registry[:port]/]name[:tag]")
    try:
        return subprocess.run([_docker(), "image", "inspect", "--format", fmt, "--", ref], capture_output=True,
                              text=True,
                              timeout=_seconds("KIT_DOCKER_INSPECT_S", INSPECT_S))
    except subprocess.TimeoutExpired:
        raise KitError(f"docker image inspect {ref} did not answer within {INSPECT_S:g} s",
                       "check the Docker engine (`docker info`)") from None


def image_present(ref: str) -> Optional[bool]:
    """True/False: whether the local Docker engine has image ``ref``; None when Docker cannot be asked (no CLI, no
    engine running, no answer in time). One ``docker image inspect``: python-on-whales asked the same, after 0.4 s of
    CPU importing itself, more than the rest of `kitctl data`'s start-up."""
    try:
        r = _inspect(ref, "{{.Id}}")
    except KitError:                # no docker CLI (a ConfigError), no answer in time, not an image reference
        return None
    if r.returncode == 0:
        return True
    return False if "no such image" in r.stderr.lower() else None


def labels(ref: str) -> Optional[dict[str, str]]:
    """The image's labels, or None when there is no such local image."""
    r = _inspect(ref, "{{json .Config.Labels}}")
    if r.returncode != 0:
        return None
    return json.loads(r.stdout or "null") or {}


def image_archs(ref: str) -> Optional[str]:
    """The arch list a local image was built for, as its ``org.llmc-kit.archs`` label says (``"75,86"``); None when
    it has no such label. A KitError when there is no such local image (or no docker)."""
    have = labels(ref)
    if have is None:
        raise KitError(f"image {ref} not found", "build it with `kitctl build`, or name an existing image")
    return have.get(ARCHS_LABEL)


def repo_digests(ref: str) -> list[str]:
    r = _inspect(ref, "{{json .RepoDigests}}")
    return list(json.loads(r.stdout or "null") or []) if r.returncode == 0 else []


def label_differences(have: dict[str, str], want: dict[str, str]) -> list[str]:
    """What differs between an image's labels and the ones the plan expects (the checked ones only)."""
    out = []
    for k in CHECKED_LABELS:
        if k in want and have.get(k) != want[k]:
            out.append(f"{k}: the image has {have.get(k)!r}, this plan needs {want[k]!r}")
    return out


def tag(src: str, dest: str) -> None:
    proc.check([_docker(), "tag", src, dest], lambda _l: None, what=f"docker tag {src} {dest}")


def load(tar: Path, on_line: LineFn = print) -> list[str]:
    """``docker load -i TAR``; returns the refs it loaded."""
    loaded: list[str] = []

    def line(s: str) -> None:
        if s.startswith("Loaded image: "):
            loaded.append(s.split(": ", 1)[1].strip())
        on_line(s)

    proc.check([_docker(), "load", "-i", str(tar)], line, what=f"docker load of {tar}",
               hint="the bundle member is checked by sha256 before this; check `docker info` and the free space of "
                    "Docker's storage")
    return loaded


def _normal(ref: str) -> str:
    for prefix in ("docker.io/library/", "docker.io/"):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


def load_expected(tar: Path, want: object, what: str, on_line: LineFn = print) -> str:
    """``docker load`` a bundle's image tar and return the reference it loaded, which must be the one the bundle's
    manifest names (``want``): the image adopted is the image loaded, never a name the manifest merely claims
    (which could be any other local image). Every reference docker reported is checked against Docker's grammar
    first (a name that looks like an option never reaches another docker command)."""
    if not isinstance(want, str):
        raise ConfigError(f"{what}: the bundle's manifest names no image reference", "make a new bundle")
    validate.docker_ref(want, f"{what}: the manifest's image reference")
    loaded = load(tar, on_line)
    for ref in loaded:
        validate.docker_ref(ref, f"{what}: the image reference docker load reported")
    if _normal(want) not in {_normal(r) for r in loaded}:
        raise ConfigError(f"{what}: docker load reported {', '.join(loaded) or 'no tagged image'}, but the bundle's "
                          f"manifest names {want}: the image is not adopted (an altered bundle)",
                          "make a new bundle with `kitctl bundle` on the box that built the images")
    return want


def _host_port(host: str) -> tuple[str, list[int]]:
    if host.startswith("["):                              # [v6]:port
        name, _, rest = host[1:].partition("]")
        return name, [int(rest[1:])] if rest.startswith(":") and rest[1:].isdigit() else [443, 80]
    name, _, port = host.partition(":")
    return name, [int(port)] if port.isdigit() else [443, 80]


def probe(host: str, timeout: Optional[float] = None) -> None:
    """Ask the registry ``host`` for ``/v2/`` (raw HTTP, which a TLS port answers too, with an alert) and wait at most
    ``timeout`` seconds for its first byte: a registry that accepted the connection and never answers is a
    KitError naming it now, not a push that hangs. A connection that cannot be opened from here is left to docker
    (the engine may reach the registry through its own proxy) and its own error."""
    t = timeout if timeout is not None else _seconds("KIT_REGISTRY_ANSWER_S", ANSWER_S)
    name, ports = _host_port(host)
    for port in ports:
        try:
            sock = socket.create_connection((name, port), timeout=t)
        except OSError:
            continue
        with sock:
            try:
                sock.sendall(f"GET /v2/ HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                sock.recv(1)
            except TimeoutError:
                raise KitError(f"the registry {host} accepted a connection (port {port}) but did not answer GET /v2/ "
                               f"within {t:g} s: a push or pull there would hang",
                               f"check the registry at {host} (is it stuck or overloaded?); or use another one") from None
            except OSError:
                pass                                      # reset or closed: it answered, in its way
        return


def _with_registry(verb: str, ref: str, on_line: LineFn, stopped: str, again: str) -> proc.Finished:
    """``docker VERB REF`` against its registry: probed first (:func:`probe`), stopped when it prints nothing for
    ``IDLE_S`` (a KitError naming the registry: ``stopped`` says what did not finish, ``again`` how to go on);
    Ctrl-C is a KeyboardInterrupt. The result for the caller to judge its exit code."""
    host = registry_host(ref)
    if host:
        probe(host)
    idle = _seconds("KIT_REGISTRY_IDLE_S", IDLE_S)
    res = proc.stream([_docker(), verb, ref], on_line, tail_lines=15, idle_s=idle)
    if res.idle:
        raise KitError(f"docker {verb} {ref}: nothing happened for {idle:g} s: the registry {host or 'docker.io'} "
                       f"stopped answering{stopped}", f"check the registry {host or 'docker.io'}; {again}")
    if res.interrupted:
        raise KeyboardInterrupt
    return res


def pull(ref: str, on_line: LineFn = print) -> None:
    res = _with_registry("pull", ref, on_line, "", "re-run to continue")
    if res.returncode != 0:
        tail = "\n".join(res.tail)
        host = registry_host(ref)
        if "not found" in tail or "manifest unknown" in tail:
            raise ConfigError(f"docker pull {ref}: no such image in {host or 'the registry'}:\n{tail}",
                              "push it first from the box that built it: `kitctl build --push "
                              f"{split_ref(ref)[0]}`; or build here without --image")
        raise KitError(f"docker pull {ref} failed (exit {res.returncode}):\n{tail}",
                       f"is the registry {host or 'docker.io'} reachable from here (`docker pull {ref}`)? A registry "
                       "on plain http must be listed in the engine's insecure-registries (127.0.0.0/8 is by "
                       "default); offline: `kitctl reproduce --bundle FILE`")


def push(ref: str, on_line: LineFn = print) -> str:
    """``docker push REF``; returns the digest the registry gave (sha256:...). The registry is probed first
    (:func:`probe`), and a push that prints nothing for ``IDLE_S`` is stopped, naming the registry."""
    res = _with_registry("push", ref, on_line, " (the upload did not finish)",
                         "re-run the build with --push to push again")
    if res.returncode != 0:
        raise KitError(f"docker push {ref} failed (exit {res.returncode}):\n" + "\n".join(res.tail),
                       f"is the registry {registry_host(ref) or 'docker.io'} reachable and are you logged in "
                       "(`docker login HOST`)? A plain-http registry must be in the engine's insecure-registries "
                       "(127.0.0.0/8 is by default)")
    digest = next((ln.split("digest: ", 1)[1].split()[0] for ln in reversed(res.tail) if "digest: " in ln), "")
    if not digest:
        repo = split_ref(ref)[0]
        digest = next((d.split("@", 1)[1] for d in repo_digests(ref) if d.startswith(repo + "@")), "")
    return digest


class Pushed(Record):
    """``<data_root>/images/pushed.json``: every image ``kitctl build --push`` pushed, newest last."""

    KIND = "pushed-images record"
    images: list[dict] = []      # {"ref", "digest", "target", "recipe_hash", "labels", "pushed_at"}


def check_push_repo(repo: object, what: str = "--push") -> str:
    """A repository to push to: ``[registry[:port]/]name`` in Docker's reference grammar, without a tag (the kit
    pushes its own recipe tags); a ConfigError (exit 2) naming the rule before anything is built."""
    if not isinstance(repo, str) or not repo.strip():
        raise ConfigError(f"{what} '': an empty repository", "give REGISTRY/REPO, e.g. --push 127.0.0.1:5000/llmc-kit "
                          "(or leave the option out)")
    validate.docker_ref(repo, what)
    if split_ref(repo)[1] is not None:
        raise ConfigError(f"{what} {short(repo, 120)}: give a repository without a tag or digest",
                          "e.g. --push 127.0.0.1:5000/llmc-kit (the kit pushes its own recipe tags)")
    return repo


def read_pushed(path: Path) -> Pushed:
    """The pushed-images record, read and checked (before the first push: a damaged one is found before any
    tag goes, never between two)."""
    try:
        return Pushed.read_optional(path) or Pushed()
    except KitError as e:
        raise ConfigError(e.message, f"move it aside (mv {path} {path}.bad): a new one is written by the next push; "
                          "the registry keeps what was pushed") from None


def record_push(path: Path, entry: dict) -> Pushed:
    rec = read_pushed(path)
    rec.images = [e for e in rec.images if e.get("ref") != entry.get("ref")] + [entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    rec.write(path)
    return rec
