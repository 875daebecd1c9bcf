"""The environment `pr-review serve` gives Ray while it starts: Serve's HAProxy mode with this
instance's own files and ports, an operator's own values left as they are, and afterwards the
environment as it was (a process started later must not take this instance's ports)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serve_app import local


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in local.serve_env(tmp_path):
        monkeypatch.setenv(key, "")  # restored after the test
        monkeypatch.delenv(key)


def test_haproxy_files_and_ports_are_this_instances_own(tmp_path: Path) -> None:
    one, other = local.serve_env(tmp_path / "a"), local.serve_env(tmp_path / "b")
    assert one[local.HAPROXY_SWITCH] == "1"
    for key in ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH",
                "RAY_SERVE_HAPROXY_SERVER_STATE_FILE"):
        assert one[key].startswith(str(tmp_path / "a")) and other[key].startswith(str(tmp_path / "b"))
    assert one["RAY_SERVE_HAPROXY_STATS_PORT"] != one["RAY_SERVE_HAPROXY_METRICS_PORT"]
    assert float(one["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) <= 5  # no external balancer here


@pytest.mark.usefixtures("clean_env")
def test_set_only_while_ray_starts(tmp_path: Path) -> None:
    with local.serve_env_while_ray_starts(tmp_path):
        assert os.environ[local.HAPROXY_SWITCH] == "1"
        assert os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] == str(tmp_path / "haproxy.cfg")
    assert not any(key in os.environ for key in local.serve_env(tmp_path))


@pytest.mark.usefixtures("clean_env")
def test_an_operators_own_setting_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "9999")
    with local.serve_env_while_ray_starts(tmp_path):
        assert os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] == "9999"
    assert os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] == "9999"
    monkeypatch.setenv(local.HAPROXY_SWITCH, "0")  # turned off: nothing of it is set
    with local.serve_env_while_ray_starts(tmp_path):
        assert "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC" not in os.environ


def test_free_ports_are_never_ones_the_kernel_hands_to_outgoing_connections(tmp_path: Path) -> None:
    ephemeral_from, ephemeral_to = local._ephemeral_ports()
    highest_replica_port = max(int(local.serve_env(tmp_path / str(n))["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"])
                               for n in range(200))
    picked = [local.free_port() for _ in range(50)]
    assert all(not ephemeral_from <= port <= ephemeral_to for port in picked), picked
    # Above every instance's replica HTTP ports, so an instance never takes another's.
    assert min(picked) > highest_replica_port
    assert len(set(picked)) > 40  # spread out: stacks side by side rarely pick the same one
