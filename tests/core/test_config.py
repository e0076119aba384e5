from pathlib import Path

import pytest

import kitctl_proc

from kitctl.core.config import load_config, write_template
from kitctl.core.validate import parse_arch_list
from kitctl.core.errors import ConfigError


def test_template_is_valid_and_defaults(tmp_path):
    p = write_template(tmp_path / "kit.yaml", data_root="/mnt/big")
    cfg = load_config(p, environ={})
    assert cfg.arch == [75, 86]
    assert str(cfg.data_root) == "/mnt/big"
    assert cfg.hf_cache == cfg.data_root / "hf"


def test_env_overrides_file(tmp_path):
    p = write_template(tmp_path / "kit.yaml")
    cfg = load_config(p, environ={"KIT_ARCH": "8.0,9.0", "KIT_MIRRORS__PIP_INDEX": "https://m/simple"})
    assert cfg.arch == [80, 90]
    assert cfg.mirrors.pip_index == "https://m/simple"


def test_the_kits_own_test_variables_are_not_config_fields(tmp_path):
    """KIT_TEST_REGISTRY / KIT_TEST_BASE_IMAGE (set by .ci/run) must not make every command exit 2."""
    cfg = load_config(None, environ={"KIT_TEST_REGISTRY": "127.0.0.1:5000", "KIT_TEST_BASE_IMAGE": "local/x"},
                      cwd=tmp_path)
    assert cfg == load_config(None, environ={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="KIT_TESTREGISTRY"):        # a look-alike is still named as unknown
        load_config(None, environ={"KIT_TESTREGISTRY": "x"}, cwd=tmp_path)


def test_relative_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "kit.yaml").write_text("data_root: big\n")
    assert load_config(tmp_path / "kit.yaml", environ={}).data_root == tmp_path / "big"


@pytest.mark.parametrize("text,field", [
    ("provider: cuda\n", "provider"),
    ("arch: [75, 99]\n", "arch"),
    ("mirrors:\n  pip: x\n", "mirrors.pip"),
])
def test_bad_config_names_field_and_allowed(tmp_path, text, field):
    p = tmp_path / "kit.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p, environ={})
    assert str(p) in e.value.message and field in e.value.message
    assert e.value.exit_code == 2


def test_arch_parse():
    assert parse_arch_list("sm_75, 8.6") == [75, 86]
    with pytest.raises(ValueError):
        parse_arch_list("ampere")


@pytest.mark.slow
def test_cli_bad_config_exits_2_without_traceback(tmp_path):
    p = tmp_path / "kit.yaml"
    p.write_text("provider: cuda\n")
    r = kitctl_proc.run(["--config", str(p), "doctor"])
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "provider" in r.stderr and "allowed" in r.stderr


def test_unknown_key_anywhere_is_an_error_naming_it(tmp_path):
    p = tmp_path / "kit.yaml"
    for text, key in (("data_rot: /big\n", "data_rot"), ("mirrors:\n  apt_mirror: x\n", "mirrors.apt_mirror"),
                      ("nccl:\n  ib_disabled: true\n", "nccl.ib_disabled")):
        p.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_config(p, environ={})
        assert key in e.value.message and "unknown field" in e.value.message


def test_env_error_names_the_variable(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(None, environ={"KIT_DATAROOT": "/big"}, cwd=tmp_path)
    assert "KIT_DATAROOT" in e.value.message
    with pytest.raises(ConfigError) as e:
        load_config(None, environ={"KIT_DATA_ROOT": ""}, cwd=tmp_path)
    assert "KIT_DATA_ROOT" in e.value.message and "empty" in e.value.message and "unset" in e.value.hint


def test_relative_data_root_from_the_environment_is_relative_to_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(None, environ={"KIT_DATA_ROOT": "big"}, cwd=tmp_path).data_root == tmp_path / "big"


@pytest.mark.parametrize("text,needle", [
    ("data_root: input.txt\n", "is a file"),
    ("data_root: input.txt/deeper\n", "which is a file"),
    ("data_root: $HOME/big\n", "$VARIABLE"),
    ("data_root: ~nobody/big\n", "~user"),
    ("hf_home: input.txt\n", "hf_home"),
    ("ca_cert: input.txt\n", "not a PEM certificate bundle"),
    ("tokenizer_dir: input.txt\n", "is a file"),
    ("image: Kit\n", "image repository name"),
    ("base_image: 'a b'\n", "Docker image reference"),
    ("mirrors:\n  registry: https://hub.example\n", "registry prefix"),
    ("mirrors:\n  apt: \"http://m\\nRUN id\"\n", "control character"),
    ("mirrors:\n  hf_endpoint: hf-mirror.com\n", "URL"),
    ("nccl:\n  extra_env: {'NCCL X': '1'}\n", "environment variable name"),
    ("arch: '8.65'\n", "8.65"),
    ("data_root: " + "x" * 100_000 + "\n", "too long"),
], ids=lambda v: v[:40] if isinstance(v, str) else None)
def test_values_that_cannot_work_are_refused_at_load(tmp_path, text, needle):
    (tmp_path / "input.txt").write_text("hello\n")
    p = tmp_path / "kit.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p, environ={})
    assert needle in e.value.message and e.value.hint and len(e.value.message) < 1000, e.value.message


def test_kit_yaml_goes_through_the_limited_reader(tmp_path):
    p = tmp_path / "kit.yaml"
    p.write_bytes(b"data_root: /big\n\0")
    with pytest.raises(ConfigError, match="binary"):
        load_config(p, environ={})
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path, environ={})
    p.write_text("a: &a [1, 1]\n" + "".join(f"k{i}: [*a, *a]\n" for i in range(40)))
    with pytest.raises(ConfigError, match="aliases"):
        load_config(p, environ={})


@pytest.mark.parametrize("root", ["a: b", "#x", "[x", "x'y", "/mnt/big disk", "ünïcode"])
def test_template_quotes_odd_data_roots(tmp_path, root):
    p = write_template(tmp_path / "kit.yaml", data_root=root)
    assert load_config(p, environ={}).data_root == (tmp_path / root if not root.startswith("/") else Path(root))


@pytest.mark.parametrize("root", ["", "x\nruntime: native", "$HOME/big"])
def test_template_refuses_data_roots_that_cannot_work(tmp_path, root):
    with pytest.raises(ConfigError):
        write_template(tmp_path / "kit.yaml", data_root=root)
    assert not (tmp_path / "kit.yaml").exists()
