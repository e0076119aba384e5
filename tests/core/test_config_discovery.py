"""kit.yaml is found like git's config: --config, KIT_CONFIG, this folder or any parent, the user's config dir.
Real files in tmp folders; HOME and XDG_CONFIG_HOME pointed at tmp; the CLI run as a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kitctl_proc

from kitctl.core.config import load_config_source, locate_config, user_config_path

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, **kw: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_") and k != "XDG_CONFIG_HOME"}
    env.update(HOME=str(tmp_path / "home"), COLUMNS="200", **kw)
    return env


def test_found_in_a_parent_folder_with_paths_relative_to_that_file(tmp_path):
    proj = tmp_path / "proj"
    deep = proj / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (proj / "kit.yaml").write_text("hf_home: cache/hf\n")          # no data_root: data/ beside the file
    env = {"HOME": str(tmp_path / "home")}
    cfg, src = load_config_source(environ=env, cwd=deep)
    assert src.path == proj / "kit.yaml" and src.how == "a parent folder" and src.data_root_set
    assert cfg.data_root == proj.resolve() / "data" and cfg.hf_home == proj.resolve() / "cache" / "hf"
    # the nearest one wins, as in git
    (proj / "a" / "kit.yaml").write_text("data_root: ../big\n")
    cfg, src = load_config_source(environ=env, cwd=deep)
    assert src.path == proj / "a" / "kit.yaml" and cfg.data_root.resolve() == proj.resolve() / "big"
    cfg, src = load_config_source(environ=env, cwd=proj / "a")
    assert src.how == "this folder"


def test_order_config_flag_then_env_then_folders_then_user(tmp_path):
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    user = xdg / "llmc-kit" / "kit.yaml"
    user.parent.mkdir(parents=True)
    user.write_text(f"data_root: {tmp_path / 'user-root'}\n")
    work = tmp_path / "work"
    work.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)}
    assert user_config_path(env) == user
    cfg, src = load_config_source(environ=env, cwd=work)
    assert src.how == "user config" and cfg.data_root == tmp_path / "user-root"
    (work / "kit.yaml").write_text(f"data_root: {tmp_path / 'here'}\n")
    assert locate_config(cwd=work, environ=env).how == "this folder"
    named = tmp_path / "named.yaml"
    named.write_text(f"data_root: {tmp_path / 'named'}\n")
    assert locate_config(cwd=work, environ={**env, "KIT_CONFIG": str(named)}).path == named
    assert locate_config(Path("/x/flag.yaml"), work, {**env, "KIT_CONFIG": str(named)}).how == "--config"
    # without XDG_CONFIG_HOME (or a relative one, which the XDG spec says to ignore): ~/.config
    assert user_config_path({"HOME": str(home)}) == home / ".config" / "llmc-kit" / "kit.yaml"
    assert user_config_path({"HOME": str(home), "XDG_CONFIG_HOME": "rel"}) == home / ".config" / "llmc-kit" / "kit.yaml"
    # nothing anywhere: defaults, and the data root counts as not configured
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg, src = load_config_source(environ={"HOME": str(tmp_path / "nohome")}, cwd=empty)
    assert src.path is None and not src.data_root_set and cfg.data_root == empty / "data"
    _, src = load_config_source(environ={"HOME": str(tmp_path / "nohome"), "KIT_DATA_ROOT": "/big"}, cwd=empty)
    assert src.path is None and src.data_root_set


@pytest.mark.slow
def test_cli_from_a_nested_folder_uses_the_projects_kit_yaml_and_says_so(tmp_path):
    proj = tmp_path / "proj"
    sub = proj / "notebooks" / "deep"
    sub.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "kitctl", "init", "--data-root", str(tmp_path / "big")], cwd=proj,
                   env=_env(tmp_path), check=True, capture_output=True)
    r = kitctl_proc.run(["doctor", "--json"], cwd=sub, env=_env(tmp_path))
    assert str(tmp_path / "big") in {f["check"]: f for f in json.loads(r.stdout)["findings"]}["data root space"]["detail"]
    r = kitctl_proc.run(["data", "tinyshakespeare", "--runtime", "native"], cwd=sub, env=_env(tmp_path), timeout=300)
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stderr.split())
    assert f"kit.yaml: {proj / 'kit.yaml'} (a parent folder); data root: {tmp_path / 'big'}" in said
    assert said.count("kit.yaml:") == 1                        # once
    assert (tmp_path / "big" / "tinyshakespeare").is_dir() and not (sub / "data").exists()


@pytest.mark.slow
def test_cli_user_config_written_by_init_user_and_used_from_any_folder(tmp_path):
    xdg = tmp_path / "xdg"
    env = _env(tmp_path, XDG_CONFIG_HOME=str(xdg))
    anywhere = tmp_path / "anywhere"
    anywhere.mkdir()
    r = kitctl_proc.run(["init", "--user"], cwd=anywhere, env=env)
    assert r.returncode == 2 and "--data-root" in r.stderr           # the user's file needs a real data root
    r = kitctl_proc.run(["init", "--user", "--data-root", "rel"], cwd=anywhere, env=env)
    assert r.returncode == 2 and "absolute" in r.stderr
    r = kitctl_proc.run(["init", "--user", "x.yaml", "--data-root", "/b"], cwd=anywhere, env=env)
    assert r.returncode == 2
    big = tmp_path / "big"
    r = kitctl_proc.run(["init", "--user", "--data-root", str(big)], cwd=anywhere, env=env)
    assert r.returncode == 0 and (xdg / "llmc-kit" / "kit.yaml").is_file() and not (anywhere / "kit.yaml").exists()
    r = kitctl_proc.run(["data", "tinyshakespeare", "--runtime", "native"], cwd=anywhere, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"(user config); data root: {big}" in " ".join(r.stderr.split())
    assert (big / "tinyshakespeare").is_dir()


@pytest.mark.slow
def test_cli_with_no_config_says_the_fallback_and_reproduce_refuses(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    env = _env(tmp_path)
    r = kitctl_proc.run(["data", "tinyshakespeare", "--runtime", "native"], cwd=bare, env=env, timeout=300)
    said = " ".join(r.stderr.split())
    assert r.returncode == 0 and f"data root falls back to {bare / 'data'}" in said and "kitctl init" in said
    r = kitctl_proc.run(["reproduce", "--runtime", "native"], cwd=bare, env=env, timeout=120)
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and "none is configured" in said and "kitctl init --data-root" in said
    assert not (bare / "data" / "runs").exists()
    # doctor judges a fallback data root: it says so (stderr; stdout stays JSON)
    r = kitctl_proc.run(["doctor", "--json"], cwd=bare, env=env, timeout=120)
    assert json.loads(r.stdout)["findings"] and f"falls back to {bare / 'data'}" in " ".join(r.stderr.split())
    # its dry run still plans (for a described box), and says nothing on stdout but the plan
    r = kitctl_proc.run(["reproduce", "--dry-run", "--json", "--runtime", "native",
                         "--inventory", REPO / "docs" / "inventories" / "2080ti-3090.csv"],
                        cwd=bare, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"]["disk_bytes"] > 0
