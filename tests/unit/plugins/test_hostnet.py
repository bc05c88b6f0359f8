"""What bridge and direct share: the guest's console report, [site], the site's DNS."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rrset
import pytest

from vnode.config import build_config
from vnode.errors import UsageError
from vnode_plugins._hostnet import SiteDnsError, SiteSettings, guest_reported_address, query_a

MAC = "52:54:00:ab:cd:01"
SECTIONS = {"site": SiteSettings}


# --- the guest's own report on the console ---------------------------------------------------

CONSOLE = """\
[    2.1] cloud-init[180]: Cloud-init v. 22.4.2 running 'init-local'
ci-info: ++++++++++++++++++++++++++++++++++++Net device info++++++++++++++++++++++++++++++++++++
ci-info: +--------+-------+---------------------------+---------------+--------+-------------------+
ci-info: | Device |   Up  |          Address          |      Mask     | Scope  |     Hw-Address    |
ci-info: +--------+-------+---------------------------+---------------+--------+-------------------+
ci-info: | vnode0 |  True |        10.232.7.51        | 255.255.255.0 | global | 52:54:00:ab:cd:01 |
ci-info: | vnode0 |  True |  fe80::5054:ff:fe00:1/64  |       .       |  link  | 52:54:00:ab:cd:01 |
ci-info: |   lo   |  True |         127.0.0.1         |   255.0.0.0   |  host  |         .         |
ci-info: | other0 |  True |        10.232.7.99        | 255.255.255.0 | global | 52:54:00:ab:cd:02 |
ci-info: +--------+-------+---------------------------+---------------+--------+-------------------+
ci-info: ++++++++++++++++++++++++++++Route IPv4 info++++++++++++++++++++++++++++
ci-info: | Route | Destination |  Gateway  |    Genmask    | Interface | Flags |
ci-info: |   0   |  10.232.7.0 |  0.0.0.0  | 255.255.255.0 |   vnode0  |   U   |
"""


def test_the_guest_report_gives_the_address_of_its_mac(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text(CONSOLE)
    assert guest_reported_address(console, MAC) == "10.232.7.51"
    assert guest_reported_address(console, MAC.upper()) == "10.232.7.51"
    assert guest_reported_address(console, "52:54:00:ab:cd:02") == "10.232.7.99"
    assert guest_reported_address(console, "52:54:00:ab:cd:03") is None


def test_the_latest_report_wins_and_no_address_is_no_answer(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    early = CONSOLE.replace("|        10.232.7.51        |", "|             .             |")
    console.write_text(early)
    assert guest_reported_address(console, MAC) is None
    console.write_text(early + CONSOLE.replace("10.232.7.51", "10.232.7.61"))
    assert guest_reported_address(console, MAC) == "10.232.7.61"


def test_a_missing_console_is_no_answer(tmp_path: Path) -> None:
    assert guest_reported_address(tmp_path / "absent.log", MAC) is None


# --- the site's DNS, asked through dnspython against a server of the test's own -------------


class _Zone:
    """A DNS server on 127.0.0.1 (UDP and TCP) answering from a dict; ``truncate`` makes every
    UDP answer truncated, so a client must ask again over TCP."""

    def __init__(self, records: dict[str, list[str]], truncate: bool = False) -> None:
        self.records = records
        self.truncate = truncate
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen()
        self.tcp_answers = 0
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def answer(self, wire: bytes) -> dns.message.Message:
        query = dns.message.from_wire(wire)
        reply = dns.message.make_response(query)
        name = query.question[0].name.to_text(omit_final_dot=True)
        if name not in self.records:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        elif self.records[name]:
            reply.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "A", *self.records[name]))
        return reply

    def _serve_udp(self) -> None:
        self.udp.settimeout(0.2)
        while not self.stop.is_set():
            try:
                wire, peer = self.udp.recvfrom(512)
            except TimeoutError:
                continue
            reply = self.answer(wire)
            if self.truncate:
                reply.answer = []
                reply.flags |= dns.flags.TC
            self.udp.sendto(reply.to_wire(), peer)

    def _serve_tcp(self) -> None:
        self.tcp.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            with conn:
                length = int.from_bytes(conn.recv(2), "big")
                reply = self.answer(conn.recv(length)).to_wire()
                # Counted before sending: the client may check the count as soon as it reads.
                self.tcp_answers += 1
                conn.sendall(len(reply).to_bytes(2, "big") + reply)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def zone() -> Iterator[_Zone]:
    server = _Zone({"vb01.site.test": ["10.1.2.3", "10.1.2.4"], "nodata.site.test": []})
    yield server
    server.close()


def test_the_site_dns_gives_the_names_addresses(zone: _Zone) -> None:
    assert sorted(query_a("vb01.site.test", "127.0.0.1", zone.port)) == ["10.1.2.3", "10.1.2.4"]


def test_nxdomain_and_nodata_mean_no_address(zone: _Zone) -> None:
    assert query_a("absent.site.test", "127.0.0.1", zone.port) == []
    assert query_a("nodata.site.test", "127.0.0.1", zone.port) == []


def test_a_truncated_answer_is_asked_again_over_tcp() -> None:
    server = _Zone({"big.site.test": ["10.9.9.9"]}, truncate=True)
    try:
        assert query_a("big.site.test", "127.0.0.1", server.port) == ["10.9.9.9"]
        assert server.tcp_answers == 1
    finally:
        server.close()


def test_a_server_that_does_not_answer_is_an_error() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(SiteDnsError, match="Timeout"):
            query_a("vb01.site.test", "127.0.0.1", silent.getsockname()[1], timeout=0.3)
    finally:
        silent.close()


# --- [site] in the config ------------------------------------------------------------------


def test_site_settings_are_read() -> None:
    config = build_config(
        {"site": {"dns": "10.0.0.1", "dns_port": 5353, "domain": "lab.test"}}, SECTIONS
    )
    site = config.sections["site"]
    assert (site.dns, site.dns_port, site.domain) == (
        "10.0.0.1",
        5353,
        "lab.test",
    )
    assert build_config({}, SECTIONS).sections["site"].dns == ""


@pytest.mark.parametrize(
    "site",
    [
        {"dns": "ns.example"},
        {"dns": 10},
        {"dns_port": 0},
        {"dns_port": "53"},
        {"domain": "Lab_Test"},
        {"domain": ".lab"},
        {"server": "10.0.0.1"},
    ],
)
def test_bad_site_settings_are_usage_errors(site: dict) -> None:
    with pytest.raises(UsageError):
        build_config({"site": site}, SECTIONS)
