import subprocess
import sys

import pytest

from kitctl.core.config import KitConfig, load_config, parse_arch_list, write_template
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


def test_cli_bad_config_exits_2_without_traceback(tmp_path):
    p = tmp_path / "kit.yaml"
    p.write_text("provider: cuda\n")
    r = subprocess.run([sys.executable, "-m", "kitctl", "--config", str(p), "doctor"],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "provider" in r.stderr and "allowed" in r.stderr
