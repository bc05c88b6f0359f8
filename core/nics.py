"""Several NICs per node: each NIC as its network's backend sees it, and a host's backends
as the one backend the executor calls.

A node's first NIC is the node's own (its name, its pool's MAC, ``NodePlan.network``); its
further NICs (``NodePlan.nics``) have MACs of their own (:func:`vnode.pools.nic_mac`). The
backend of each NIC's network gets that NIC's *view* of the node: the node's plan with the
NIC's MAC, network, interface and address, and ``nic`` set to its index, so a backend that
knows nothing of several NICs reserves and releases each one as it does a node's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from vnode.model import Interface, NodeIdentity, NodePlan, Verdict
from vnode.network import NetworkBackend


def nic_views(node: NodePlan) -> list[NodePlan]:
    """The node as each of its NICs' backends sees it, the node's own NIC first."""
    return [
        node,
        *(
            attrs.evolve(
                node,
                mac=nic.mac,
                network=nic.network,
                interface=nic.interface,
                address=nic.address,
                nic=index,
            )
            for index, nic in enumerate(node.nics, start=1)
        ),
    ]


def recorded_views(
    node: NodeIdentity, networks: Sequence[str], macs: Sequence[str]
) -> list[tuple[str, NodeIdentity]]:
    """A made node's further NICs as its shape record names them: (network as asked for,
    the NIC's identity), for ``destroy`` to release each one's reservation."""
    return [
        (network, attrs.evolve(node, mac=mac, nic=index))
        for index, (network, mac) in enumerate(zip(networks, macs, strict=False))
        if index > 0
    ]


class HostNetworks(NetworkBackend):
    """Every network one host's nodes attach to, as one backend: each call goes to the backend
    of each NIC's network, with that NIC's view of the node.

    ``backends`` maps a network as its backend describes it to the backend; ``primary`` is
    the backend a bare identity (no plan: ``destroy``) belongs to, and ``further`` the
    further NICs of such identities by node name (network described, NIC identity).
    Each plan's first NIC decides how the node is reached, whatever the further NICs are.
    """

    def __init__(
        self,
        backends: Mapping[str, NetworkBackend],
        primary: NetworkBackend,
        further: Mapping[str, Sequence[tuple[str, NodeIdentity]]] | None = None,
        *,
        first_nics: Sequence[str] = (),
    ) -> None:
        self.backends = dict(backends)
        self.primary = primary
        self.further = dict(further or {})
        self.kind = primary.kind
        # Nodes are reached at their first NIC's address: through their host when a network
        # the nodes' first NICs are on says so (``first_nics``: those networks, described).
        firsts = [self.of(network) for network in first_nics] or [primary]
        self.reached_through_host = any(b.reached_through_host for b in firsts)

    def of(self, network: str) -> NetworkBackend:
        return self.backends.get(network, self.primary)

    def describe(self) -> str:
        return self.primary.describe()

    def hot_pluggable(self, interface: Interface) -> bool:
        return self.primary.hot_pluggable(interface)

    def _by_network(self, nodes: Sequence[NodeIdentity]) -> dict[str, list[NodeIdentity]]:
        grouped: dict[str, list[NodeIdentity]] = {}
        for node in nodes:
            views = nic_views(node) if isinstance(node, NodePlan) else [node]
            for view in views:
                network = view.network if isinstance(view, NodePlan) else self.describe()
                grouped.setdefault(network, []).append(view)
        return grouped

    def diagnose(self, nodes: Sequence[NodeIdentity]) -> list[Verdict]:
        grouped = self._by_network(nodes) or {self.describe(): []}
        return [v for net, views in grouped.items() for v in self.of(net).diagnose(views)]

    def check(self, nodes: Sequence[NodeIdentity]) -> None:
        for network, views in (self._by_network(nodes) or {self.describe(): []}).items():
            self.of(network).check(views)

    def prepare(self, nodes: Sequence[NodePlan]) -> None:
        for network, views in self._by_network(nodes).items():
            self.of(network).prepare(views)  # type: ignore[arg-type]

    def reserve(self, node: NodePlan) -> None:
        for view in nic_views(node):
            self.of(view.network).reserve(view)

    def release(self, node: NodeIdentity) -> None:
        if isinstance(node, NodePlan):
            for view in nic_views(node):
                self.of(view.network).release(view)
            return
        self.primary.release(node)
        for network, view in self.further.get(node.name, ()):
            self.of(network).release(view)

    def discover_address(self, node: NodeIdentity, console: Path | None) -> str | None:
        network = node.network if isinstance(node, NodePlan) else self.describe()
        return self.of(network).discover_address(node, console)
