"""kitctl tensorboard's --port and --interval, value by value (tests/hostile/cases.py keeps one CLI case of each:
tensorboard-port-70000, tensorboard-interval-negative, and the usage errors tensorboard-port-word /
tensorboard-interval-word)."""
from __future__ import annotations

import pytest

from kitctl.core.errors import ConfigError
from kitctl.observe.tensorboard import check_interval, check_port


@pytest.mark.parametrize("port", [0, -1, 65536, 70000, True])
def test_port_outside_1_to_65535_is_refused_naming_it(port):
    with pytest.raises(ConfigError) as e:
        check_port(port)
    assert e.value.exit_code == 2 and f"--port {port!r}" in e.value.message and "1 to 65535" in e.value.hint


@pytest.mark.parametrize("port", [1, 6006, 65535])
def test_ports_in_range_pass(port):
    assert check_port(port) == port


@pytest.mark.parametrize("interval", [0, 0.0, -1, -1.0, float("nan"), float("inf"), "5"])
def test_interval_that_is_not_a_positive_number_is_refused(interval):
    with pytest.raises(ConfigError) as e:
        check_interval(interval)
    assert e.value.exit_code == 2 and e.value.message.startswith(f"--interval {interval!r}") and e.value.hint


def test_a_positive_interval_passes():
    assert check_interval(0.5) == 0.5 and check_interval(3) == 3.0
