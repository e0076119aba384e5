"""The Docker side of ``docker/images.lock`` (:mod:`kitctl.images.lock`): resolve base images to digests, read each
stage's apt resolution from a build, check a build against the lock.

* :func:`resolve_base` -- a reference -> (digest, source): an image in this engine that came from a registry: its
  RepoDigest; one that exists only here (built or loaded locally): its image ID; otherwise the registry's manifest
  digest (``docker buildx imagetools inspect``);
* :func:`probe_argv` / :func:`make_lock` -- build docker/lock-probe.j2 (each stage's FROM + apt install, the layer
  cache shared with ``kitctl build``) and read dpkg's lists before and after, into :class:`lock.StageLock` entries;
* :func:`check_bases` -- before a locked build: a locked local image ID must still be what the name points at;
* :func:`verify_image` -- after it: every locked package is installed at its locked version;
* :func:`explain_failure` -- a locked build that failed because apt no longer serves a version or the registry no
  longer has a digest: the exit-1 message naming it, with the ways on.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Optional

from kitctl import __version__
from kitctl.core import proc
from kitctl.core.errors import KitError
from kitctl.core.files import write_atomic
from kitctl.images import build as builder
from kitctl.images import lock as lk
from kitctl.images.context import Context
from kitctl.images.render import APT_STAGES, apt_requests, environment, lock_gaps, stage_locks
from kitctl.images.request import BuildRequest, base_images

PROBE_TEMPLATE = "lock-probe.j2"
WAYS_ON = ("ways on: set mirrors.apt_snapshot in kit.yaml to a date when the locked versions were current (e.g. the "
           "lock's date: snapshot.debian.org / snapshot.ubuntu.com keep every version), or take today's versions "
           "with `kitctl build --update-lock` (or `kitctl lock`) and commit docker/images.lock")
APT_GONE = re.compile(r"Version '([^']+)' for '([^']+)' was not found")
DIGEST_GONE = re.compile(r"([\w./:-]+@sha256:[0-9a-f]{64})[^\n]*(?:not found|manifest unknown|no such)", re.I)


REGISTRY_S = 120          # a manifest request to a registry (buildx imagetools inspect)


def _docker(*argv: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KitError(f"docker {argv[0]} could not run ({e})", "is Docker installed and running? kitctl doctor") \
            from None


def local_id(ref: str) -> Optional[str]:
    """The image ID ``ref`` names in this engine, or None."""
    r = _docker("image", "inspect", "--format", "{{.Id}}", ref)
    return r.stdout.strip() if r.returncode == 0 else None


def resolve_base(ref: str) -> tuple[str, str]:
    """``(digest, source)`` of a base image reference (see the module doc); a KitError (exit 1) when it resolves
    nowhere."""
    r = _docker("image", "inspect", "--format", "{{json .RepoDigests}} {{.Id}}", ref)
    if r.returncode == 0:
        digests_json, image_id = r.stdout.strip().rsplit(" ", 1)
        repo = ref.split("@", 1)[0].rsplit(":", 1)[0] if ":" in ref.split("/")[-1] else ref.split("@", 1)[0]
        for d in json.loads(digests_json) or []:
            name, _, digest = d.partition("@")
            if name in (repo, f"docker.io/{repo}", f"docker.io/library/{repo}") and lk.DIGEST.fullmatch(digest):
                return digest, "registry"
        return image_id, "local"
    try:
        r = subprocess.run(["docker", "buildx", "imagetools", "inspect", "--format", "{{json .Manifest}}", ref],
                           capture_output=True, text=True, timeout=REGISTRY_S)
    except subprocess.TimeoutExpired:
        host = ref.split("/", 1)[0] if "/" in ref and any(c in ref.split("/", 1)[0] for c in ".:") else "docker.io"
        raise KitError(f"base image {ref}: the registry {host} did not answer a manifest request within "
                       f"{REGISTRY_S} s", "check the registry (or mirrors.registry in kit.yaml); or pull the image "
                       "first (docker pull / docker load): a local image is locked by its ID") from None
    except OSError as e:
        raise KitError(f"docker buildx could not run ({e})", "is Docker installed and running? kitctl doctor") from None
    if r.returncode == 0:
        try:
            digest = json.loads(r.stdout).get("digest", "")
        except ValueError:
            digest = ""
        if lk.DIGEST.fullmatch(digest):
            return digest, "registry"
    said = ((r.stderr or r.stdout).strip().splitlines() or ["no output"])[-1]
    raise KitError(f"base image {ref}: not in this engine, and its registry did not give a digest: {said}",
                   "pull or load it first (docker pull / docker load), or set mirrors.registry in kit.yaml")


def probe_text(stages: list[dict[str, object]]) -> str:
    return environment().get_template(PROBE_TEMPLATE).render(stages=stages)


def plan(req: BuildRequest, stages: tuple[str, ...] = APT_STAGES) -> list[dict[str, object]]:
    """What to lock: for each apt stage, {name (stage id), stage, ref (the base as named), digest, source, base (the
    FROM reference: pinned for a registry digest), note, packages}. Resolves the digests (reads the engine)."""
    bases, named = base_images(req), apt_requests(req)
    out: list[dict[str, object]] = []
    for stage in stages:
        digest, source = resolve_base(bases[stage])
        entry = lk.StageLock(base=bases[stage], digest=digest, source=source)
        out.append({"name": lk.stage_id(req.provider, stage), "stage": stage, "ref": bases[stage], "digest": digest,
                    "source": source, "base": entry.pinned_base(), "packages": named[stage],
                    "note": f"locked: local image ID {digest}" if source == "local" else ""})
    return out


def probe_dir(req: BuildRequest) -> Path:
    return Path(req.build_dir) / "lock-probe"


def probe_argv(req: BuildRequest, folder: Path, cache: bool = True) -> list[str]:
    """The ``docker buildx build`` line of the lock probe (its Dockerfile and an empty context in ``folder``)."""
    build_args, secrets = builder.build_args, builder.secrets
    a = ["docker", "buildx", "build", "--progress", "plain", "--target", "lists",
         "--output", f"type=local,dest={folder / 'out'}", "--file", str(folder / "Dockerfile")]
    if not cache:
        a.append("--no-cache")
    for s in secrets(req):
        a += ["--secret", s]
    for k, v in sorted(build_args(req).items()):
        a += ["--build-arg", f"{k}={v}"]
    return [*a, str(folder / "context")]


def write_probe(req: BuildRequest, stages: list[dict[str, object]]) -> Path:
    folder = probe_dir(req)
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "context").mkdir(parents=True)
    write_atomic(folder / "Dockerfile", probe_text(stages))
    return folder


def make_lock(req: BuildRequest, stages: list[dict[str, object]], on_line: Callable[[str], None],
              cache: bool = True) -> dict[str, lk.StageLock]:
    """Build the probe for ``stages`` (:func:`plan`) and read each stage's packages: what it installed or changed,
    plus every package it names (at the version it has then, even when the base already had it)."""
    folder = write_probe(req, stages)
    res = proc.stream(probe_argv(req, folder, cache), on_line, tail_lines=25, grace_s=10)
    if res.interrupted:
        raise KeyboardInterrupt
    if res.returncode != 0:
        raise KitError("the lock probe build failed (exit {}):\n{}".format(res.returncode, "\n".join(res.tail)),
                       "read the last step above (apt's network: mirrors.apt / mirrors.apt_snapshot, --ca-cert)")
    out = {}
    for s in stages:
        name = str(s["name"])
        before = lk.parse_dpkg((folder / "out" / f"{name}.before").read_text())
        after = lk.parse_dpkg((folder / "out" / f"{name}.after").read_text())
        apt = lk.installed_by(before, after)
        for p in s["packages"]:  # type: ignore[attr-defined]
            if p in after:
                apt[p] = after[p]
        out[name] = lk.StageLock(base=str(s["ref"]), digest=str(s["digest"]), source=str(s["source"]), apt=apt)
    return out


def check_bases(req: BuildRequest, stages: tuple[str, ...]) -> None:
    """Before a locked build: every stage it builds is covered by the lock, and a locked local image ID is still
    what its name points at; otherwise a KitError (exit 1) naming the difference and the ways on."""
    if req.lock is None:
        return
    gaps = [g for g in lock_gaps(req) if any(f"-{s}]" in g or g.startswith(f"[{s}]") for s in stages)]
    if gaps:
        raise KitError("this build differs from docker/images.lock:\n  " + "\n  ".join(gaps),
                       f"lock it with `kitctl lock --provider {req.provider}`"
                       + (f" --base-image {req.base_image}" if req.base_image else "")
                       + ", or build with --update-lock")
    named = apt_requests(req)
    for stage, entry in stage_locks(req).items():
        if stage not in stages:
            continue
        sid = lk.stage_id(req.provider, stage)
        if entry.source == "local":
            now = local_id(entry.base)
            if now != entry.digest:
                raise KitError(f"base image {entry.base} [{sid}]: the lock has local image ID {entry.digest}, the "
                               f"engine has {now or 'no such image'}",
                               "load the locked image again (docker load / docker tag ID NAME), or take this one "
                               "with `kitctl build --update-lock` and commit docker/images.lock")
        lacking = [p for p in named.get(stage, []) if p not in entry.apt]
        if lacking:
            raise KitError(f"[{sid}]: the recipe installs {', '.join(lacking)}, which docker/images.lock does not "
                           "name", "lock again: `kitctl lock` (or `kitctl build --update-lock`)")


def image_packages(tag: str) -> dict[str, str]:
    r = _docker("run", "--rm", "--entrypoint", "dpkg-query", tag, "-W", "-f", "${Package}=${Version}\n")
    if r.returncode != 0:
        raise KitError(f"could not list the packages of {tag}: {r.stderr.strip()[-300:]}", "kitctl doctor")
    return lk.parse_dpkg(r.stdout)


def verify_image(tag: str, sid: str, entry: lk.StageLock) -> list[str]:
    """What differs between the lock's packages for ``sid`` and the image ``tag`` (lines; [] when it matches)."""
    got = image_packages(tag)
    return lk.differences(sid, entry.apt, {k: got[k] for k in entry.apt if k in got})


def explain_failure(tail: list[str], req: BuildRequest) -> Optional[KitError]:
    """A locked build's failure that the lock explains (an apt version or a base digest gone), or None."""
    text = "\n".join(tail)
    if m := APT_GONE.search(text):
        return KitError(f"docker/images.lock pins {m.group(2)}={m.group(1)}, which the apt archive no longer "
                        "serves (apt: version not found)", WAYS_ON)
    if m := DIGEST_GONE.search(text):
        return KitError(f"docker/images.lock pins the base image {m.group(1)}, which the registry no longer has",
                        "push or load that image again, or take the tag's current digest with "
                        "`kitctl build --update-lock` and commit docker/images.lock")
    return None


STAGES_OF = {"toolchain": ("toolchain",), "build": ("toolchain",), "runtime": ("toolchain", "runtime"),
             "data": ("data",)}


def stages_of(targets: list[str]) -> tuple[str, ...]:
    """The apt stages that building ``targets`` goes through, in template order."""
    want = {s for t in targets for s in STAGES_OF[t]}
    return tuple(s for s in APT_STAGES if s in want)


def update_lock(req: BuildRequest, stages: tuple[str, ...], path: Path, made_by: str,
                on_line: Callable[[str], None], cache: bool = True) -> lk.ImagesLock:
    """Resolve ``stages`` anew (:func:`plan` + :func:`make_lock`), merge them into the lock at ``path`` (other
    stages kept) and write it; returns the new lock (also set on ``req``)."""
    import datetime

    new = make_lock(req, plan(req, stages), on_line, cache)
    lock = lk.merged(lk.load(path) if Path(path).exists() else None, new)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lk.write(lock, Path(path), made_by, when, __version__)
    lock.path = Path(path)
    req.lock = lock
    return lock


def build_locked(req: BuildRequest, ctx: Context, target: str, on_line: Callable[[str], None],
                 cache: bool = True, epoch: Optional[str] = None, rewrite: bool = False) -> list[str]:
    """:func:`builder.build` under ``req.lock``: a failure the lock explains (a version or digest gone) becomes
    the exit-1 message with the ways on; after the build, the image's packages are checked against the lock.
    Without a lock it is :func:`builder.build`."""
    check_bases(req, stages_of([target]))
    try:
        tags = builder.build(req, ctx, target, on_line=on_line, cache=cache, epoch=epoch, rewrite=rewrite)
    except KitError as e:
        why = explain_failure(str(e).splitlines(), req) if req.lock is not None else None
        if why is not None:
            raise why from None
        raise
    stage = {"runtime": "runtime", "data": "data", "toolchain": "toolchain"}.get(target)
    locks = stage_locks(req)
    if stage in locks:
        diff = verify_image(tags[0], lk.stage_id(req.provider, stage), locks[stage])
        if diff:
            raise KitError(f"the image {tags[0]} differs from docker/images.lock:\n  " + "\n  ".join(diff[:20]),
                           WAYS_ON)
    return tags


def lock_finding(lock: Optional[lk.ImagesLock], refs: list[str]) -> tuple[str, str, str]:
    """doctor's row about the lock: (status, finding, what it means) for the local images ``refs``."""
    if lock is None:
        return ("info", "no docker/images.lock",
                "base images and apt versions float: two builds a month apart may differ; `kitctl lock` pins them")
    seen = []
    for ref in refs:
        r = _docker("image", "inspect", "--format", "{{json .Config.Labels}}", ref, timeout=30)
        if r.returncode != 0:
            continue
        seen.append((ref, json.loads(r.stdout or "null") or {}))
    return lk.judge_images(lock, seen)
