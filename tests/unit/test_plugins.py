"""The plugin host: one isolated call path for every hook, wrappers as pluggy defines them,
disabled plugins, plugin-declared config sections. Plugins are registered in-process into a
fresh host (as pluggy's own tests do); tests/integration/test_third_party_plugins.py installs
real distributions."""

from __future__ import annotations

import types
from pathlib import Path

import attrs
import pytest

from vnode.config import RawConfig, build_config, build_config_from
from vnode.errors import UsageError
from vnode.model import Distro, PluginContext
from vnode.plugin import hookimpl
from vnode.plugins import PluginHost, PluginSource

D12 = Distro(name="d12", family="debian", release="12", title="Debian 12", osinfo="x")
OTHER = Distro(name="d12", family="debian", release="12", title="the site's own", osinfo="x")
CONTEXT = PluginContext(sections={}, pools=(), state_dir=Path("/nonexistent"), uri="")


def _plugin(**hooks: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(**hooks)


def _source(name: str, plugin: object) -> PluginSource:
    return PluginSource(name=name, load=lambda: plugin)


@hookimpl(trylast=True)
def _builtin_resolve(name: str) -> Distro | None:
    return D12 if name == "d12" else None


@hookimpl(trylast=True)
def _builtin_names() -> list[str]:
    return ["d12"]


BUILTIN = _plugin(vnode_distro_resolve=_builtin_resolve, vnode_distro_names=_builtin_names)


def _host(*others: PluginSource, disabled: tuple[str, ...] = ()) -> PluginHost:
    return PluginHost([_source("builtin", BUILTIN), *others], disabled)


def _info(host: PluginHost, name: str):
    return next(info for info in host.infos if info.name == name)


def test_a_plugin_that_raises_is_skipped_named_and_the_next_answers() -> None:
    @hookimpl
    def vnode_distro_resolve(name: str) -> Distro | None:
        raise RuntimeError("the plugin's own bug")

    host = _host(_source("buggy", _plugin(vnode_distro_resolve=vnode_distro_resolve)))
    assert host.resolve_distro("d12") == D12
    notes = _info(host, "buggy").notes
    assert any("vnode_distro_resolve failed" in n and "the plugin's own bug" in n for n in notes)


def test_a_wrong_type_answer_is_skipped_and_named() -> None:
    @hookimpl
    def vnode_distro_resolve(name: str) -> object:
        return {"name": name}

    @hookimpl
    def vnode_doctor_checks(context: PluginContext) -> object:
        return ["not a verdict"]

    plugin = _plugin(
        vnode_distro_resolve=vnode_distro_resolve, vnode_doctor_checks=vnode_doctor_checks
    )
    host = _host(_source("sloppy", plugin))
    assert host.resolve_distro("d12") == D12
    assert host.doctor_checks(CONTEXT) == []
    notes = " ".join(_info(host, "sloppy").notes)
    assert "vnode_distro_resolve failed, skipped: answered {'name': 'd12'}, the wrong type" in notes
    assert "vnode_doctor_checks failed" in notes


def test_vnode_errors_from_a_plugin_reach_the_user() -> None:
    @hookimpl
    def vnode_distro_resolve(name: str) -> Distro | None:
        raise UsageError("d12 is retired at this site")

    host = _host(_source("strict", _plugin(vnode_distro_resolve=vnode_distro_resolve)))
    with pytest.raises(UsageError, match="retired at this site"):
        host.resolve_distro("d12")


def test_a_later_plugin_overrides_a_built_in_and_the_override_is_noted() -> None:
    @hookimpl
    def vnode_distro_resolve(name: str) -> Distro | None:
        return OTHER if name == "d12" else None

    @hookimpl
    def vnode_distro_names() -> list[str]:
        return ["d12"]

    plugin = _plugin(
        vnode_distro_resolve=vnode_distro_resolve, vnode_distro_names=vnode_distro_names
    )
    host = _host(_source("site", plugin))
    assert host.resolve_distro("d12") is OTHER
    assert "overrides builtin for d12" in _info(host, "site").notes
    assert "d12 overridden by site" in _info(host, "builtin").notes


@pytest.mark.parametrize("style", ["wrapper", "hookwrapper"])
def test_wrappers_run_around_the_call_as_pluggy_defines(style: str) -> None:
    if style == "wrapper":

        @hookimpl(wrapper=True)
        def vnode_distro_resolve(name: str):
            distro = yield
            return attrs.evolve(distro, title=f"{distro.title} (wrapped)") if distro else None

    else:

        @hookimpl(hookwrapper=True)
        def vnode_distro_resolve(name: str):
            outcome = yield
            distro = outcome.get_result()
            if distro:
                outcome.force_result(attrs.evolve(distro, title=f"{distro.title} (wrapped)"))

    host = _host(_source("wrapping", _plugin(vnode_distro_resolve=vnode_distro_resolve)))
    assert host.resolve_distro("d12").title == "Debian 12 (wrapped)"
    assert _info(host, "wrapping").notes == ()


def test_a_wrapper_that_raises_is_left_out_and_the_call_made_again() -> None:
    @hookimpl(wrapper=True)
    def vnode_distro_resolve(name: str):
        yield
        raise RuntimeError("wrapper bug")

    host = _host(_source("badwrap", _plugin(vnode_distro_resolve=vnode_distro_resolve)))
    assert host.resolve_distro("d12") == D12
    assert any("wrapper bug" in note for note in _info(host, "badwrap").notes)


def test_plugins_that_fail_to_load_are_broken_and_left_out() -> None:
    def fails() -> object:
        raise ImportError("No module named 'vnode_no_such_dependency'")

    @hookimpl
    def vnode_distro_names() -> object:
        return "d12"

    @hookimpl
    def vnode_distro_resolve(name: str, flavour: str) -> Distro | None:
        return None

    host = _host(
        PluginSource("missing-dep", fails),
        _source("bad-listing", _plugin(vnode_distro_names=vnode_distro_names)),
        _source("bad-signature", _plugin(vnode_distro_resolve=vnode_distro_resolve)),
    )
    reasons = {info.name: info.reason for info in host.infos if info.status == "broken"}
    assert "vnode_no_such_dependency" in reasons["missing-dep"]
    assert "expected list[str]" in reasons["bad-listing"]
    assert "flavour" in reasons["bad-signature"]
    assert host.distro_names() == ["d12"]


def test_a_disabled_plugin_is_listed_as_disabled_and_never_called() -> None:
    calls = []

    @hookimpl
    def vnode_distro_resolve(name: str) -> Distro | None:
        calls.append(name)
        return OTHER

    host = _host(
        _source("site", _plugin(vnode_distro_resolve=vnode_distro_resolve)), disabled=("site",)
    )
    assert host.resolve_distro("d12") == D12
    assert calls == []
    assert _info(host, "site").status == "disabled"


def test_disabling_a_plugin_that_is_not_installed_is_bad_input() -> None:
    with pytest.raises(UsageError, match="disable names no plugin: nosuch"):
        _host(disabled=("nosuch",))


@attrs.frozen
class LabNetSettings:
    bridge: str = "br0"
    max_nodes: int = 8


@hookimpl
def _labnet_sections() -> dict[str, type]:
    return {"labnet": LabNetSettings}


def _raw(data: dict, origin: Path = Path("/etc/vnode/config.toml")) -> RawConfig:
    origins = {f"{s}.{k}": origin for s, table in data.items() for k in table}
    return RawConfig(data=data, origins={**origins, **dict.fromkeys(data, origin)}, sources=())


def test_a_plugins_config_section_is_structured_into_its_class() -> None:
    host = _host(_source("labnet", _plugin(vnode_config_sections=_labnet_sections)))
    config = build_config_from(_raw({"labnet": {"bridge": "br7"}}), host.config_sections())
    assert config.sections["labnet"] == LabNetSettings(bridge="br7", max_nodes=8)


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"bridg": "br7"}, "config: unknown key(s) in [labnet]: bridg (in /etc/vnode/config.toml)"),
        (
            {"max_nodes": "8"},
            "config: [labnet] max_nodes = '8' has the wrong type: invalid value for type, "
            "expected int (in /etc/vnode/config.toml)",
        ),
    ],
)
def test_a_plugins_section_is_checked_naming_file_section_and_key(table: dict, words: str) -> None:
    host = _host(_source("labnet", _plugin(vnode_config_sections=_labnet_sections)))
    with pytest.raises(UsageError) as caught:
        build_config_from(_raw({"labnet": table}), host.config_sections())
    assert str(caught.value) == words


def test_a_section_no_plugin_declares_is_bad_input() -> None:
    with pytest.raises(UsageError, match=r"unknown config section\(s\): labnet"):
        build_config_from(_raw({"labnet": {}}), _host().config_sections())


def test_two_plugins_may_share_a_section_only_with_the_same_class() -> None:
    @attrs.frozen
    class Impostor:
        bridge: str = "x"

    @hookimpl
    def impostor_sections() -> dict[str, type]:
        return {"labnet": Impostor}

    host = _host(
        _source("labnet", _plugin(vnode_config_sections=_labnet_sections)),
        _source("twin", _plugin(vnode_config_sections=_labnet_sections)),
        _source("impostor", _plugin(vnode_config_sections=impostor_sections)),
    )
    assert host.config_sections()["labnet"] is LabNetSettings
    assert any("already" in note for note in _info(host, "impostor").notes)
    assert _info(host, "twin").notes == ()


def test_a_cli_contribution_that_is_not_a_cyclopts_app_is_skipped() -> None:
    import cyclopts

    good = cyclopts.App(name="labnet")

    @hookimpl
    def vnode_cli_commands() -> list[object]:
        return [good]

    @hookimpl
    def bad_commands() -> list[object]:
        return ["labnet create"]

    host = _host(
        _source("good", _plugin(vnode_cli_commands=vnode_cli_commands)),
        _source("bad", _plugin(vnode_cli_commands=bad_commands)),
    )
    assert host.cli_commands() == [good]
    assert any("vnode_cli_commands failed" in n for n in _info(host, "bad").notes)


def test_a_command_whose_name_is_taken_is_skipped_and_named() -> None:
    import cyclopts

    first, second, impostor = (cyclopts.App(name=n) for n in ("lab", "lab", "up"))

    @hookimpl
    def first_commands() -> list[object]:
        return [first]

    @hookimpl
    def later_commands() -> list[object]:
        return [second, impostor]

    host = _host(
        _source("early", _plugin(vnode_cli_commands=first_commands)),
        _source("late", _plugin(vnode_cli_commands=later_commands)),
    )
    # pluggy calls the plugin registered last first: "late" has "lab"; "up" is the core's.
    assert host.cli_commands(taken={"up", "list"}) == [second]
    assert "command 'up' is the core's already; skipped" in _info(host, "late").notes
    assert "command 'lab' is late's already; skipped" in _info(host, "early").notes
    assert host.skipped_commands == [
        "plugin late: command 'up' is the core's already; skipped",
        "plugin early: command 'lab' is late's already; skipped",
    ]


# -- the built-in distro plugins through the host ----------------------------------------


def test_only_debian_releases_the_builder_bootstraps_offer_a_builder() -> None:
    host = PluginHost.discover()
    sections = build_config({}, host.config_sections()).sections
    context = PluginContext(sections=sections, pools=(), state_dir=Path("/nonexistent"), uri="")
    buildable = {
        name
        for name in ("d11", "d12", "d13", "f43", "u24.04")
        if host.image_builder(host.resolve_distro(name), context) is not None
    }
    assert buildable == {"d12", "d13"}


def test_unknown_distro_error_lists_what_the_plugins_know() -> None:
    with pytest.raises(UsageError) as caught:
        PluginHost.discover().resolve_distro("u23.10")
    message = str(caught.value)
    assert "unknown distro 'u23.10'" in message
    for name in ("f44", "u26.04", "d13", "fedora", "ubuntu", "debian"):
        assert name in message
    assert "\n" not in message


def test_a_bare_network_name_means_what_its_plugin_says() -> None:
    from vnode.plugins import entry_point_sources

    host = PluginHost(entry_point_sources())
    assert host.network_choice("lab") == "libvirt:lab"  # the libvirt-network plugin's rule
    assert host.network_choice("bridge") == "bridge"  # a kind stays a kind
    assert host.network_choice("direct:eth0") == "direct:eth0"
    without = PluginHost(entry_point_sources(), disabled=("libvirt-network",))
    with pytest.raises(UsageError, match="unknown network 'lab'"):
        without.network_choice("lab")


def test_network_aliases_map_to_a_kind_a_plugin_provides() -> None:
    from vnode.plugins import entry_point_sources

    host = PluginHost(entry_point_sources())
    assert host.network_alias("bridge", "br0") == "bridge:br0"
    without = PluginHost(entry_point_sources(), disabled=("bridge",))
    with pytest.raises(UsageError, match="unknown network 'bridge:br0'; kinds: direct"):
        without.network_alias("bridge", "br0")
