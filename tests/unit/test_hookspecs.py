"""The hook table: every hook declared once, with its kind and the answers it accepts, and the
plugin host driven from it."""

from __future__ import annotations

import inspect

import pytest

from vnode import hookspecs
from vnode.model import Distro, Verdict

SPECS = {
    name: function
    for name, function in vars(hookspecs).items()
    if name.startswith("vnode_") and callable(function)
}


def test_every_hook_is_in_the_table_and_documented() -> None:
    assert set(hookspecs.HOOKS) == set(SPECS)
    for name, function in SPECS.items():
        assert getattr(function, "vnode_spec", None) is not None, name  # a pluggy hookspec
        doc = inspect.getdoc(function) or ""
        assert ("First result" in doc) == function.vnode_spec["firstresult"], name


@pytest.mark.parametrize(
    ("hook", "right", "wrong"),
    [
        ("vnode_distro_resolve", Distro("d", "f", "1", "t", "o"), "d12"),
        ("vnode_distro_names", ["d12"], [12]),
        ("vnode_doctor_checks", [Verdict("c", "ok", "m")], [("c", "ok")]),
        ("vnode_network_bare_name", "libvirt:lab", "lab"),
        ("vnode_config_sections", {}, {"x": dict}),
    ],
)
def test_a_hook_accepts_its_type_only(hook: str, right: object, wrong: object) -> None:
    accepts = hookspecs.HOOKS[hook].accepts
    assert accepts(right) and not accepts(wrong)
