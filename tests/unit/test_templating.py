"""vnode.templating: the escaping environments, and a plugin's own templates."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vnode.plugin import render_xml


def test_a_plugin_renders_the_templates_it_ships(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "vnode_sitenet"
    (package / "templates").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "templates" / "site.xml.j2").write_text('<site name="{{ name }}"/>\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    rendered = render_xml("site.xml.j2", package="vnode_sitenet", name='a"b<c')
    assert ET.fromstring(rendered).get("name") == 'a"b<c'  # escaped, read back as it was


def test_the_libvirt_network_plugins_templates_are_its_own() -> None:
    import vnode.templates
    import vnode_plugins

    core = Path(vnode.templates.__file__).parent
    own = Path(vnode_plugins.__file__).parent / "templates"
    for name in ("libvirt-network.xml.j2", "dhcp-host.xml.j2", "dns-host.xml.j2"):
        assert (own / name).is_file() and not (core / name).exists()
    values = {"mac": "52:54:00:00:00:01", "name": "vnode01", "ip": "10.0.0.1"}
    host = ET.fromstring(render_xml("dhcp-host.xml.j2", package="vnode_plugins", **values))
    assert host.attrib == values
