"""The contract a network plugin's backend fulfils. The core calls these in order:
``check`` (before anything is created), ``prepare`` (once per ``up``), then per node
``reserve``, ``interface``, ``static_address``; ``discover_address`` while waiting;
``release`` when a node is destroyed.

``release`` and the address methods get a :class:`~vnode.model.NodeIdentity` (a node being
destroyed has no plan); the others get the full :class:`~vnode.model.NodePlan`."""

from __future__ import annotations

from vnode.model import Interface, NodeIdentity, NodePlan, StaticAddress


class NetworkBackend:
    kind = "abstract"

    def describe(self) -> str:
        """The network as ``vnode list`` shows it."""
        return self.kind

    def check(self, nodes: list[NodePlan]) -> None:
        """Raise UsageError or EnvironmentProblem if nodes cannot attach; change nothing."""

    def prepare(self, nodes: list[NodePlan]) -> None:
        """Create what the nodes share (e.g. the libvirt network), idempotently."""

    def reserve(self, node: NodeIdentity) -> None:
        """Record the node's address (e.g. a DHCP host reservation)."""

    def interface(self, node: NodePlan) -> Interface:
        raise NotImplementedError

    def static_address(self, node: NodeIdentity) -> StaticAddress | None:
        """The node's address if it is known before boot, else None (DHCP)."""
        return None

    def discover_address(self, node: NodeIdentity) -> str | None:
        """The node's address once it is up, learned without guessing; None if not yet known."""
        address = self.static_address(node)
        return address.ip if address else None

    def release(self, node: NodeIdentity) -> None:
        """Undo ``reserve``; called when the node is destroyed."""
