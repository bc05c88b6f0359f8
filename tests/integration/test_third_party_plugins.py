"""A third party's distro plugin, published as its own distribution, used for real.

The example plugins live in tests/fixtures as tiny distributions with their own
pyproject.toml and entry points; they are pip-installed into an environment of this module's
own (tests/harness/pluginenv.py: the other workers' vnode never sees them) and uninstalled.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import attrs
import pytest

from tests.conftest import REPO, Lab
from tests.harness.pluginenv import make_plugin_env, pip

pytestmark = pytest.mark.integration

FIXTURES = REPO / "tests" / "fixtures"
DISTRIBUTIONS = {
    "vnode-labdebian": FIXTURES / "labdebian",
    "vnode-badplugins": FIXTURES / "badplugins",
}


def _uninstall(lab: Lab) -> None:
    pip(lab.python, "uninstall", "-y", *DISTRIBUTIONS)


@pytest.fixture(scope="module")
def plugin_lab(lab: Lab) -> Iterator[Lab]:
    """The lab, its vnode run by an environment where the plugins are installed."""
    with_plugins = attrs.evolve(lab, python=make_plugin_env(lab.state / "python"))
    result = pip(with_plugins.python, "install", "--no-deps", *map(str, DISTRIBUTIONS.values()))
    assert result.returncode == 0, result.stderr
    try:
        yield with_plugins
    finally:
        _uninstall(with_plugins)


def _plugins(lab: Lab) -> dict[str, dict]:
    result = lab.run("plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


def test_the_installed_plugin_is_listed_with_its_distribution(plugin_lab: Lab) -> None:
    plugin = _plugins(plugin_lab)["labdebian"]
    assert plugin["status"] == "ok"
    assert plugin["kinds"] == ["distro"]
    assert plugin["distribution"] == "vnode-labdebian"
    assert plugin["version"] == "1.2.0"
    assert plugin["entry_point"] == "labdebian = vnode_labdebian"
    assert set(plugin["provides"]) == {"labdebian", "d11"}
    table = plugin_lab.run("plugins", "list").stdout
    assert "vnode-labdebian" in table


def test_broken_plugins_are_listed_with_the_reason_and_break_nothing(plugin_lab: Lab) -> None:
    plugins = _plugins(plugin_lab)
    reasons = {
        "bad-import": "No module named 'vnode_no_such_dependency'",
        "bad-signature": "flavour",
        "bad-answer": "expected list[str]",
    }
    for name, reason in reasons.items():
        assert plugins[name]["status"] == "broken"
        assert reason in plugins[name]["reason"]
    assert all(plugins[name]["status"] == "ok" for name in ("fedora", "debian", "ubuntu"))
    assert plugin_lab.run("list").returncode == 0
    # bad-resolve raises on every lookup; it is skipped, and resolving still works.
    assert _resolve(plugin_lab, "d12")["name"] == "d12"


def test_a_third_party_overrides_a_built_in_and_the_conflict_is_reported(plugin_lab: Lab) -> None:
    plugins = _plugins(plugin_lab)
    assert "overrides debian for d11" in plugins["labdebian"]["notes"]
    assert "d11 overridden by labdebian" in plugins["debian"]["notes"]
    assert _resolve(plugin_lab, "d11")["title"] == "Debian 11 from the lab mirror"


def test_a_node_of_the_third_party_distro_boots_to_ssh(plugin_lab: Lab) -> None:
    code, nodes = plugin_lab.run_json("up", "5:labdebian")
    assert code == 0, nodes
    assert nodes[0]["state"] == "ready"
    assert nodes[0]["distro"] == "labdebian"
    result = plugin_lab.ssh("5", "hostname")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == plugin_lab.name(5)
    listed = {n["name"]: n for n in plugin_lab.run_json("list")[1]}
    assert listed[plugin_lab.name(5)]["distro"] == "labdebian"
    assert plugin_lab.run("destroy", "5").returncode == 0


def test_uninstalling_removes_it_from_the_list(plugin_lab: Lab) -> None:
    _uninstall(plugin_lab)
    plugins = _plugins(plugin_lab)
    assert "labdebian" not in plugins and "bad-import" not in plugins
    assert "d11" not in plugins["debian"]["notes"]
    result = plugin_lab.run("up", "6:labdebian")
    assert result.returncode == 2
    assert "unknown distro 'labdebian'" in result.stderr


def _resolve(lab: Lab, name: str) -> dict:
    code = (
        "import json, sys, attrs; from vnode.plugins import PluginHost; "
        f"print(json.dumps(attrs.asdict(PluginHost.discover().resolve_distro({name!r}))))"
    )
    result = subprocess.run(
        [lab.python, "-c", code],
        env=lab.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])
