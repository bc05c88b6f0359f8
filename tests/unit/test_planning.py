"""The lab's cloud-config in the plan: config files, pools, the command line, conflicts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vnode import planning
from vnode.cloudinit import render_seed
from vnode.config import build_config
from vnode.errors import UsageError
from vnode.keys import generate_keypair
from vnode.session import Session
from vnode.spec import parse_specs


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _plans(tmp_path: Path, options: planning.UpOptions, specs: list[str]) -> list:
    common = _write(tmp_path / "common.yaml", "#cloud-config\npackages: [jq]\n")
    pooled = _write(
        tmp_path / "lab.yaml", "#cloud-config\nruncmd: ['echo {{ name }} {{ address }}']\n"
    )
    config = build_config(
        {
            "paths": {"state": str(tmp_path / "state")},
            "defaults": {"cloud_config": [common]},
            "pools": [
                {"stem": "vnode"},
                {"stem": "lab", "mac_prefix": "52:54:00:00:01", "cloud_config": [pooled]},
            ],
        }
    )
    session = Session.for_config(config)
    backend = session.plugins.network_backend("libvirt", session.plugin_context(connect=False))
    refs = parse_specs(specs, config.pools)
    defaults = planning.effective_defaults(config.defaults, options)
    sources = planning.cloud_config_sources(session, defaults, options, refs)
    return [
        planning.plan_node(session, ref, defaults, backend, "qemu", sources, options.override_keys)
        for ref in refs
    ]


def test_each_node_gets_defaults_then_pool_then_command_line(tmp_path: Path) -> None:
    extra = _write(tmp_path / "cli.yaml", "#cloud-config\npackages: [curl]\n")
    options = planning.UpOptions(distro="d12", cloud_config=(extra,))
    plain, pooled = _plans(tmp_path, options, ["3", "lab4"])
    assert yaml.safe_load(plain.user_cloud_config) == {"packages": ["jq", "curl"]}
    assert yaml.safe_load(pooled.user_cloud_config) == {
        "packages": ["jq", "curl"],
        "runcmd": [f"echo lab04 {pooled.address.ip}"],
    }
    seed = render_seed(pooled, authorized_key="ssh-ed25519 AAAA k", host_key=generate_keypair("t"))
    user_data = yaml.safe_load(seed.user_data)
    assert user_data["hostname"] == "lab04"
    assert user_data["packages"] == ["jq", "curl"]


def test_a_vnode_key_stops_the_plan_unless_overridden(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.yaml", "#cloud-config\nmanage_etc_hosts: false\n")
    with pytest.raises(UsageError, match="'manage_etc_hosts' is set by vnode"):
        _plans(tmp_path, planning.UpOptions(distro="d12", cloud_config=(bad,)), ["3"])
    options = planning.UpOptions(
        distro="d12", cloud_config=(bad,), override_keys=("manage_etc_hosts",)
    )
    (plan,) = _plans(tmp_path, options, ["3"])
    assert plan.cloud_config_overrides == ("manage_etc_hosts",)
    seed = render_seed(plan, authorized_key="ssh-ed25519 AAAA k", host_key=generate_keypair("t"))
    assert yaml.safe_load(seed.user_data)["manage_etc_hosts"] is False


def test_an_unknown_override_key_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--override-key packages"):
        _plans(tmp_path, planning.UpOptions(distro="d12", override_keys=("packages",)), ["3"])


def test_run_steps_are_in_the_plan_order() -> None:
    steps = planning.run_steps(("a", "b"), ())
    assert [step.label for step in steps] == ["a", "b"]
