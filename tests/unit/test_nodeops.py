"""What is done to existing nodes: bad input refused before anything is done, and the answers
for nodes that are not there, against libvirt's own test driver (test:///default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vnode import nodeops
from vnode.config import build_config
from vnode.errors import UsageError
from vnode.session import Session


def _lab(tmp_path: Path) -> Session:
    config = {"defaults": {"uri": "test:///default"}, "paths": {"state": str(tmp_path)}}
    return Session.for_config(build_config(config))


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda s: nodeops.destroy(s, ["3"], all_nodes=True), "names or --all, not both"),
        (lambda s: nodeops.power(s, "pause", ["3"]), "unknown power action 'pause'"),
        (lambda s: nodeops.power(s, "stop", ["3"], stop_timeout=0), "--timeout must be positive"),
        (lambda s: nodeops.power(s, "start", []), "name nodes to start"),
        (lambda s: nodeops.power(s, "start", ["3"]), "no node made by vnode: vnode03"),
        (lambda s: nodeops.ssh_argv(s, "3", []), "no node made by vnode: vnode03"),
    ],
)
def test_bad_input_is_refused_before_anything_is_done(tmp_path: Path, call, words: str) -> None:
    with _lab(tmp_path) as session, pytest.raises(UsageError, match=words):
        call(session)


def test_destroying_a_node_that_is_not_there_says_absent(tmp_path: Path) -> None:
    with _lab(tmp_path) as session:
        assert nodeops.destroy(session, ["3", "4"]) == {"vnode03": "absent", "vnode04": "absent"}
        assert nodeops.destroy(session, [], all_nodes=True) == {}


def test_a_domain_vnode_did_not_make_is_never_destroyed(tmp_path: Path) -> None:
    foreign = (
        "<domain type='test'><name>vnode07</name><memory>1024</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    with _lab(tmp_path) as session:
        domain = session.conn.defineXML(foreign)  # someone else's domain of a node's name
        try:
            with pytest.raises(UsageError, match="domain vnode07 exists on local and vnode did"):
                nodeops.destroy(session, ["6", "7"])
            assert session.conn.lookupByName("vnode07").name() == "vnode07"
        finally:
            domain.undefine()


def test_list_of_an_empty_lab(tmp_path: Path) -> None:
    with _lab(tmp_path) as session:
        assert nodeops.list_lab(session) == ([], {})
