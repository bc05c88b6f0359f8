"""Plugin discovery through entry points, as the CLI shows it (no guest needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import Lab

pytestmark = pytest.mark.integration

BUILT_INS = {
    "fedora": "distro",
    "ubuntu": "distro",
    "debian": "distro",
    "libvirt-network": "network",
    "bridge": "network",
    "direct": "network",
    "serial-console": "console",
    "guest-network": "guest",
}


def test_plugins_list_shows_the_built_in_plugins(lab: Lab) -> None:
    result = lab.run("plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    for name, kind in BUILT_INS.items():
        assert plugins[name]["status"] == "ok"
        assert kind in plugins[name]["kinds"]
        assert plugins[name]["distribution"] == "vnode"
        assert plugins[name]["entry_point"].startswith(f"{name} = vnode_plugins.")
    table = lab.run("plugins", "list")
    assert all(name in table.stdout for name in BUILT_INS)


def test_libvirtd_unreachable_is_one_clear_line(lab: Lab) -> None:
    text = lab.config_path.read_text().replace(
        "[defaults]", '[defaults]\nuri = "qemu+unix:///system?socket=/nonexistent/sock"'
    )
    broken = lab.state / "broken-uri.toml"
    broken.write_text(text)
    result = lab.run("list")  # sanity: the lab's own config works
    assert result.returncode == 0
    env = {**os.environ, "VNODE_CONFIG": str(broken)}
    result = subprocess.run(
        [sys.executable, "-m", "vnode.cli", "up", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "libvirtd -d" in result.stderr and "virtqemud" in result.stderr


def test_doctor_passes_the_host_make_setup_prepared(lab: Lab) -> None:
    result = lab.run("doctor", "--json")
    assert result.returncode == 0, result.stderr
    verdicts = {v["check"]: v for v in json.loads(result.stdout)}
    # What install/setup-host.sh is there to guarantee, each of which once cost seconds here.
    for check in ("libvirt", "virtlogd", "/dev/kvm", "reaper", "console log", "plugins"):
        assert verdicts[check]["status"] == "ok", verdicts[check]


def _run_with(lab: Lab, extra: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = lab.state / "with-extra.toml"
    config.write_text(lab.config_path.read_text() + extra)
    return subprocess.run(
        [sys.executable, "-m", "vnode.cli", *args],
        env={**os.environ, "VNODE_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_disabled_plugin_is_listed_as_such_and_its_network_kind_is_gone(lab: Lab) -> None:
    extra = '\n[plugins]\ndisable = ["direct"]\n'
    listed = json.loads(_run_with(lab, extra, "plugins", "list", "--json").stdout)
    assert {p["name"]: p["status"] for p in listed}["direct"] == "disabled"
    result = _run_with(lab, extra, "up", "3", "--direct", "eth0")
    assert result.returncode == 2
    assert "unknown network 'direct:eth0'" in result.stderr
    assert lab.run("list").returncode == 0


def test_disabling_a_plugin_that_does_not_exist_is_bad_input(lab: Lab) -> None:
    result = _run_with(lab, '\n[plugins]\ndisable = ["nosuch"]\n', "list")
    assert result.returncode == 2
    assert result.stderr.strip() == "vnode: config: [plugins] disable names no plugin: nosuch"


def test_a_plugins_command_is_found_through_its_hook(lab: Lab) -> None:
    result = lab.run("bridge", "--help")
    assert result.returncode == 0, result.stderr
    assert "create" in result.stdout
    assert "bridge" in lab.run("--help").stdout
