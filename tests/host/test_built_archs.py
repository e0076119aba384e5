"""Doctor's "arch list": judged on what a run would load (the native build record, the runtime image's label), kit.yaml's
list only as a fallback that says so. Real record files, real doctor.evaluate / verdicts; no mocks."""
from __future__ import annotations

import os

import pytest

from kitctl.core.config import KitConfig
from kitctl.core.native_build_record import NativeBuild, record_path
from kitctl.host import built_archs, doctor
from kitctl.host.gpus import parse_csv

H100 = parse_csv("0, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.124.06\n")
NATIVE = KitConfig(runtime="native", arch=[75, 86])
DOCKER = KitConfig(runtime="docker", arch=[75, 86])


def arch_row(built, cfg=NATIVE, gpus=H100):
    findings = doctor.evaluate(doctor.Facts(gpus=gpus, built=built, free_bytes=500 * 10**9), cfg)
    train = {v.purpose: v for v in doctor.verdicts(findings, doctor.Facts(gpus=gpus), cfg)}["train"]
    return {f.check: f for f in findings}["arch list"], train


def built_dir(tmp_path, archs=None):
    """A native bin folder with both binaries and (``archs`` given) the record a native build writes."""
    d = tmp_path / "native" / "bin"
    d.mkdir(parents=True)
    for name in ("train_gpt2cu", "train_gpt2cu_fp32"):
        (d / name).write_bytes(b"\x7fELF")
    if archs is not None:
        NativeBuild(archs=archs, binaries={"bf16": "train_gpt2cu", "fp32": "train_gpt2cu_fp32"}, cudnn=True).write(
            record_path(d))
    return d


def test_record_for_90_on_an_h100_is_ok_though_kit_yaml_says_75_86(tmp_path):
    d = built_dir(tmp_path, [90])
    row, train = arch_row(built_archs.native(d))
    assert row.status == "ok" and str(record_path(d)) in row.detail and "[90]" in row.detail
    assert "set arch: [75, 86, 90]" in row.meaning                # the next plain `kitctl build` would drop 90
    assert "arch list" not in train.reason


def test_coverage_is_sass_then_the_newest_older_ptx_else_nothing():
    assert built_archs.coverage([90], [90]) == built_archs.Coverage({}, [])
    assert built_archs.coverage([90], [75, 80, 86]) == built_archs.Coverage({90: 86}, [])
    assert built_archs.coverage([75, 86], [86]) == built_archs.Coverage({}, [75])          # a 2080 Ti, 3090 build
    assert built_archs.coverage([75, 86], [75]) == built_archs.Coverage({86: 75}, [])
    assert built_archs.coverage([90], [100]) == built_archs.Coverage({}, [90])


def test_record_for_75_86_on_an_h100_warns_it_runs_compute_86_ptx(tmp_path):
    """Measured on an H100: a compute_86 build trains (through the driver's JIT) at sm_90 code's speed."""
    d = built_dir(tmp_path, [75, 86])
    row, train = arch_row(built_archs.native(d), KitConfig(runtime="native", arch=[90]))   # kit.yaml is right, the build is not
    assert row.status == "warn" and str(record_path(d)) in row.detail and "sm_90 from compute_86 PTX" in row.detail
    assert "`kitctl build --runtime native --arch 75,86,90`" in row.meaning
    assert train.ready and "arch list" not in train.reason


def test_record_for_100_only_on_an_h100_fails_naming_the_record_and_the_rebuild(tmp_path):
    """Every arch built is newer than the GPU: no kernel image (measured: an sm_100-only build exits 1 on an H100)."""
    d = built_dir(tmp_path, [100])
    row, train = arch_row(built_archs.native(d), KitConfig(runtime="native", arch=[90]))
    assert row.status == "fail" and str(record_path(d)) in row.detail and "no code for sm_90" in row.detail
    assert "`kitctl build --runtime native --arch 90,100`" in row.meaning and "no kernel image" in row.meaning
    assert not train.ready and "arch list" in train.reason


def test_nothing_built_judges_kit_yaml_and_says_so(tmp_path):
    row, _ = arch_row(built_archs.native(tmp_path / "native" / "bin"))
    assert row.status == "warn" and "nothing built yet" in row.detail and "judged kit.yaml's arch" in row.detail
    assert "kitctl build --runtime native --arch 75,86,90" in row.meaning
    row, _ = arch_row(built_archs.native(tmp_path / "native" / "bin"), KitConfig(runtime="native", arch=[100]))
    assert row.status == "fail" and "nothing built yet" in row.detail and "no code for sm_90" in row.detail
    assert "kitctl build --runtime native --arch 90,100" in row.meaning
    row, _ = arch_row(built_archs.native(tmp_path / "native" / "bin"), KitConfig(runtime="native", arch=[90]))
    assert row.status == "ok" and "nothing built yet" in row.detail
    row, _ = arch_row(built_archs.native(tmp_path / "native" / "bin"), KitConfig(runtime="native", arch="auto"))
    assert row.status == "ok" and "auto" in row.detail


def test_binaries_without_a_record_judge_kit_yaml_and_say_why(tmp_path):
    row, _ = arch_row(built_archs.native(built_dir(tmp_path)), KitConfig(runtime="native", arch=[100]))
    assert row.status == "fail" and "no build record" in row.detail and "judged kit.yaml's arch" in row.detail


@pytest.mark.parametrize("damage", ["not json", "fifo", "unknown arch", "newer kit", "folder"])
def test_a_damaged_record_is_a_finding_not_a_traceback(tmp_path, damage):
    d = built_dir(tmp_path)
    path = record_path(d)
    if damage == "not json":
        path.write_text("{ half a record")
    elif damage == "fifo":
        os.mkfifo(path)                     # reading it would never end: refused, never opened for reading
    elif damage == "unknown arch":
        path.write_text('{"archs": [91], "binaries": {}, "cudnn": false}')
    elif damage == "newer kit":
        path.write_text('{"schema_version": 99, "archs": [90], "binaries": {}, "cudnn": false}')
    else:
        path.mkdir()
    built = built_archs.native(d)
    assert built.damaged and built.archs is None and str(path) in built.why
    row, _ = arch_row(built, KitConfig(runtime="native", arch=[90]))
    assert row.status == "warn" and str(path) in row.detail and "judged kit.yaml's arch" in row.detail
    assert f"rebuild (`kitctl build --runtime native --arch 90`) to replace {path}" == row.meaning
    row, _ = arch_row(built, KitConfig(runtime="native", arch=[100]))   # kit.yaml's list cannot run here: fail
    assert row.status == "fail"


def test_runtime_image_label_is_judged_for_docker():
    ok, _ = arch_row(built_archs.from_label("llmc-kit:latest", "90"), DOCKER)
    assert ok.status == "ok" and "image llmc-kit:latest" in ok.detail
    jit, train = arch_row(built_archs.from_label("llmc-kit:latest", "75,86"), KitConfig(runtime="docker", arch=[90]))
    assert jit.status == "warn" and "image llmc-kit:latest" in jit.detail and "arch list" not in train.reason
    bad, train = arch_row(built_archs.from_label("llmc-kit:latest", "100"), KitConfig(runtime="docker", arch=[90]))
    assert bad.status == "fail" and "image llmc-kit:latest" in bad.detail
    assert "`kitctl build --arch 90,100`" in bad.meaning and "--runtime native" not in bad.meaning
    assert not train.ready and "arch list" in train.reason


@pytest.mark.parametrize("label,why", [(None, "no org.llmc-kit.archs label"), ("ampere", "not a compute capability")])
def test_image_without_a_readable_label_judges_kit_yaml(label, why):
    built = built_archs.from_label("llmc-kit:latest", label)
    assert built.damaged and why in built.why
    row, _ = arch_row(built, KitConfig(runtime="docker", arch=[90]))
    assert row.status == "warn" and "judged kit.yaml's arch" in row.detail and "kitctl build --arch 90" in row.meaning


def test_engine_down_judges_kit_yaml_and_says_so():
    built = built_archs.image("llmc-kit:latest", engine=False)
    assert not built.damaged and "does not answer" in built.why
    row, _ = arch_row(built, DOCKER)
    assert row.status == "warn" and "does not answer" in row.detail and "judged kit.yaml's arch" in row.detail
    assert "`kitctl build --arch 75,86,90`" in row.meaning
    row, _ = arch_row(built, KitConfig(runtime="docker", arch=[100]))
    assert row.status == "fail" and "does not answer" in row.detail and "`kitctl build --arch 90,100`" in row.meaning


def test_a_record_vouches_only_for_the_binaries_it_was_written_for(tmp_path):
    """The record carries each binary's sha256: a binary replaced or rebuilt by hand afterwards is not judged by
    it (a warn that says which changed); a record from before checksums vouches for what is there."""
    from kitctl.core.files import sha256_file

    d = built_dir(tmp_path)
    sums = {n: sha256_file(d / n) for n in ("train_gpt2cu", "train_gpt2cu_fp32")}
    NativeBuild(archs=[90], binaries={"bf16": "train_gpt2cu"}, cudnn=True, sha256=sums).write(record_path(d))
    assert built_archs.native(d).archs == [90]
    (d / "train_gpt2cu").write_bytes(b"\x7fELF another build")
    built = built_archs.native(d)
    assert built.archs is None and built.damaged and "train_gpt2cu in" in built.why and "changed since" in built.why
    assert "train_gpt2cu_fp32" not in built.why
    row, _ = arch_row(built, KitConfig(runtime="native", arch=[90]))
    assert row.status == "warn" and "changed since llmc_build.json" in row.detail
    (d / "train_gpt2cu").unlink()                                     # gone: changed as well
    assert "train_gpt2cu in" in built_archs.native(d).why
    NativeBuild(archs=[90], binaries={"bf16": "train_gpt2cu"}, cudnn=True).write(record_path(d))   # no checksums
    assert built_archs.native(d).archs == [90]
