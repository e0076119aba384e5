"""`kitctl demo` (the README's first command): its dry run and build advice. The demo itself runs end to end once
per test run, from the installed wheel (tests/test_wheel.py::test_wheel_demo_from_an_empty_folder: what it made,
and what it skipped)."""

import pytest

import kitctl_proc


@pytest.mark.slow
def test_demo_dry_run_writes_nothing_and_build_advice_matches_the_provider(tmp_path):
    from kitctl.pipeline.costs import costs
    from kitctl.pipeline.demo import build_advice

    r = kitctl_proc.run(["demo", "--dry-run", "--data-root", tmp_path / "d"], timeout=120,
                        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 0 and "would write under" in r.stdout and not (tmp_path / "d").exists(), r.stderr
    for provider in ("nvidia", "wheels"):
        advice = build_advice(provider)
        assert f"provider {provider}" in advice
        assert f"~{costs().build[provider].download_bytes / 1e9:.1f} GB" in advice
    assert "1.3 GB" not in build_advice("nvidia") and "--provider wheels" in build_advice("nvidia")
