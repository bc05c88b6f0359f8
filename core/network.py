"""The contract a network plugin's backend fulfils (plugins subclass :class:`NetworkBackend`).

A backend comes from the ``vnode_network_backend`` hook, once per command. The core calls:

- ``diagnose`` for ``vnode doctor``, and through ``check`` before ``up`` creates anything;
- during planning (main thread): ``describe``, ``interface``, ``static_address``,
  ``dns_domain`` per node; the answers go into each node's plan;
- ``prepare`` once per ``up`` (main thread), after the checks, before any node is made;
- while nodes are made, in worker threads, one per node: ``reserve`` before the domain is
  defined, ``release`` when a node is removed (also by ``destroy``, with no plan: it gets a
  :class:`~vnode.model.NodeIdentity`);
- while waiting for SSH, in worker threads, repeatedly: ``discover_address``, for nodes
  whose address was not known before boot.

Methods that run in worker threads may run for several nodes at once.

A node with several NICs (``NodePlan.nics``) has each NIC's network's backend called for that
NIC alone, with the NIC's view of the node: its MAC in ``mac``, its index in ``nic`` (0: the
node's own NIC; 1, 2, ...: further NICs) and, for a plan, the NIC's network, interface and
address. A backend that keys reservations on the MAC needs nothing more; one that names
entries after the node should name a further NIC's apart (vnode's libvirt network uses
``NAME-NETWORK``). ``discover_address`` is asked for the node's own NIC only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vnode.errors import EnvironmentProblem, UsageError
from vnode.logs import get_logger
from vnode.model import Interface, NodeIdentity, NodePlan, StaticAddress, Verdict

# libvirt's interface types that attachDeviceFlags plugs into a running guest as a plan
# describes them (a user-mode, ethernet or vhost-user NIC needs more than its XML).
HOT_PLUGGABLE_TYPES = ("network", "bridge", "direct")

log = get_logger("vnode.network")


class NetworkBackend:
    kind = "abstract"
    # Whether the core reaches this network's nodes through their hypervisor host (an SSH
    # jump, for a host reached over ``qemu+ssh``): a network private to its host, such as a
    # libvirt network, is not routable from where vnode runs; a site network (a bridge,
    # macvtap) is reached directly.
    reached_through_host: bool = False

    def describe(self) -> str:
        """The network as ``KIND[:ARG]``, as ``vnode list`` shows it."""
        return self.kind

    def hot_pluggable(self, interface: Interface) -> bool:
        """Whether this NIC can be plugged into a restored warm clone (``up --warm``); a node
        whose NIC cannot boots cold, and says so. By default: libvirt networks, bridges and
        macvtap (``direct``) can."""
        return interface.type in HOT_PLUGGABLE_TYPES

    def diagnose(self, nodes: Sequence[NodeIdentity]) -> list[Verdict]:
        """Can nodes attach? One verdict per thing checked; change nothing.

        A ``fail`` verdict whose check name ends in ``input`` means the user named something
        unusable (``up`` exits 2); any other ``fail`` is a host problem (exit 1). ``warn``
        verdicts are logged as warnings by ``up``.
        """
        return []

    def check(self, nodes: Sequence[NodeIdentity]) -> None:
        """Raise UsageError or EnvironmentProblem for the first failing verdict of
        :meth:`diagnose`; log its warnings."""
        for verdict in self.diagnose(nodes):
            if verdict.status == "fail":
                error = UsageError if verdict.check.endswith("input") else EnvironmentProblem
                raise error(verdict.message)
            if verdict.status == "warn":
                log.warning(verdict.message)

    def prepare(self, nodes: Sequence[NodePlan]) -> None:
        """Create what the nodes share (e.g. a libvirt network), idempotently."""

    def interface(self, node: NodeIdentity) -> Interface:
        """How the node's NIC attaches."""
        raise NotImplementedError

    def static_address(self, node: NodeIdentity) -> StaticAddress | None:
        """The node's address if it is known before boot (given to the guest statically),
        else None: the guest takes DHCP and :meth:`discover_address` finds it."""
        return None

    def dns_domain(self) -> str | None:
        """The DNS domain nodes on this network are named in (FQDN = NAME.DOMAIN), if any."""
        return None

    def reserve(self, node: NodePlan) -> None:
        """Record the node's address where the network needs it (e.g. a DHCP reservation)."""

    def discover_address(self, node: NodeIdentity, console: Path | None) -> str | None:
        """The node's address once it is up, learned without guessing; None if not known yet.

        ``console`` is the file the node's serial console is captured to (a guest may report
        its address there), or None.
        """
        address = self.static_address(node)
        return address.ip if address else None

    def release(self, node: NodeIdentity) -> None:
        """Undo :meth:`reserve`; called when the node is removed."""
