"""A minimal DNS client: one A-record question over UDP to one named server, stdlib only.

vnode asks the site's DNS server directly (``[site] dns``) because the host's resolver need
not know the site's names: a lab DNS on a bridge, a split-horizon site, a host that resolves
through a VPN. One question, one answer; no recursion of our own, no caching.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
import time

_TYPE_A = 1
_CLASS_IN = 1
_RCODE_NXDOMAIN = 3
_HEADER = struct.Struct(">HHHHHH")
_RR_FIXED = struct.Struct(">HHIH")  # type, class, ttl, rdlength


class DnsError(Exception):
    """The server gave no usable answer (no reply, a malformed reply, a server failure)."""


class DnsTimeout(DnsError):
    """The server did not answer in time."""


def query_a(name: str, server: str, port: int = 53, timeout: float = 1.0) -> list[str]:
    """The IPv4 addresses ``server`` holds for ``name``; [] when it has none (NXDOMAIN/NODATA)."""
    ident = secrets.randbits(16)
    query = build_query(name, ident)
    family = socket.AF_INET6 if ipaddress.ip_address(server).version == 6 else socket.AF_INET
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        # A connected UDP socket only receives datagrams from the server we asked.
        sock.connect((server, port))
        sock.send(query)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DnsTimeout(f"no answer from {server}:{port} within {timeout:g} s")
            sock.settimeout(remaining)
            try:
                reply = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError as exc:  # e.g. ICMP port unreachable: nothing listens there
                raise DnsError(f"{server}:{port}: {exc.strerror or exc}") from None
            # A stray or late reply to an earlier question is skipped, not trusted.
            if len(reply) >= 2 and struct.unpack(">H", reply[:2])[0] == ident:
                return parse_reply(reply, ident)


def build_query(name: str, ident: int) -> bytes:
    """A standard query (recursion desired) for the A records of ``name``."""
    header = _HEADER.pack(ident, 0x0100, 1, 0, 0, 0)
    return header + encode_name(name) + struct.pack(">HH", _TYPE_A, _CLASS_IN)


def encode_name(name: str) -> bytes:
    labels = name.rstrip(".").split(".")
    if not name or len(name.rstrip(".")) > 253:
        raise ValueError(f"not a DNS name: {name!r}")
    out = bytearray()
    for label in labels:
        raw = label.encode("ascii", errors="strict")
        if not 0 < len(raw) < 64:
            raise ValueError(f"not a DNS name: {name!r}")
        out += bytes([len(raw)]) + raw
    return bytes(out) + b"\x00"


def parse_reply(reply: bytes, ident: int) -> list[str]:
    """The A addresses in the answer section of ``reply`` to question ``ident``."""
    try:
        ident_got, flags, qdcount, ancount, _, _ = _HEADER.unpack_from(reply, 0)
    except struct.error:
        raise DnsError("reply shorter than a DNS header") from None
    if ident_got != ident or not flags & 0x8000:
        raise DnsError("not a reply to our question")
    rcode = flags & 0x000F
    if rcode == _RCODE_NXDOMAIN:
        return []
    if rcode != 0:
        raise DnsError(f"server answered with rcode {rcode}")
    try:
        offset = _HEADER.size
        for _ in range(qdcount):
            offset = _skip_name(reply, offset) + 4  # qtype, qclass
        addresses = []
        for _ in range(ancount):
            offset = _skip_name(reply, offset)
            rtype, rclass, _ttl, length = _RR_FIXED.unpack_from(reply, offset)
            offset += _RR_FIXED.size
            rdata = reply[offset : offset + length]
            if len(rdata) != length:
                raise DnsError("malformed reply: record cut short")
            offset += length
            # CNAMEs in the chain come with the A records of their target; those are ours.
            if rtype == _TYPE_A and rclass == _CLASS_IN and len(rdata) == 4:
                addresses.append(socket.inet_ntoa(rdata))
    except (struct.error, IndexError):
        raise DnsError("malformed reply") from None
    return addresses


def _skip_name(data: bytes, offset: int) -> int:
    """The offset just after the (possibly compressed) name at ``offset``."""
    while True:
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # a pointer ends the name in this position
            if offset + 1 >= len(data):
                raise IndexError("truncated pointer")
            return offset + 2
        if length & 0xC0:
            raise DnsError("unknown label type")
        offset += 1 + length
        if offset >= len(data):
            raise IndexError("truncated name")
