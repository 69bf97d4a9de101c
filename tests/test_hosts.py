"""CoreDNS's ``hosts`` plugin: the Corefile's options, and the running server's answers.

Expected answers come from CoreDNS 1.13's ``plugin/hosts`` (setup.go, hostsfile.go, hosts.go)
and its README: file entries then inline entries, AA, the plugin's TTL, NODATA without SOA for
a known name's other types, SERVFAIL for an unknown name unless ``fallthrough``, PTR answered
for its addresses whatever the zones, everything else handed on (here: the cluster zone, then
``forward`` to a real upstream on loopback).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import yaml
from livecluster import ServerProcess, assert_serves_exactly, eventually, expected_zone
from upstream import FakeUpstream

from dnsserver.config import corefile
from dnsserver.config.directives import CorefileError
from dnsserver.plugins import chain, hosts
from dnsserver.serve.handler import Handler

EXAMPLE = Path(__file__).resolve().parent.parent / "dnsserver" / "example" / "cluster.yaml"
DATA = Path(__file__).resolve().parent / "data" / "corefiles"

UPSTREAM_RECORDS = [
    "sub.example.org. 300 IN A 192.0.2.10",
    "www.example.com. 300 IN A 192.0.2.1",
    "shared. 300 IN A 192.0.2.55",
    "agent-1. 300 IN A 192.0.2.12",
    "7.7.7.7.in-addr.arpa. 300 IN PTR seven.example.net.",
    "5.0.0.10.in-addr.arpa. 300 IN PTR upstream-five.example.net.",
]
UPSTREAM_SOA = ". 300 IN SOA a.root. nstld. 1 1800 900 604800 86400"

# The spec's example file, plus a cluster name, an IPv4-mapped and a zoned IPv6 address, and
# a name with more A records than a 512-byte reply holds.
HOSTS_FILE = """\
10.0.0.1 example.org www.example.org   # two names
fdfc::1  example.org
10.0.0.5 shared
10.0.0.5 other
::FFFF:10.0.0.2 mapped.example
fe80::1%eth0 Zoned.Example
bogus line
10.0.0.3
10.1.2.3 api.shop.svc.cluster.local
""" + "".join(f"10.2.0.{n} big.example\n" for n in range(1, 41))

NODE_HOSTS = "10.0.0.11 server-1\n10.0.0.12 agent-1\n"
FDFC_1_PTR = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.c.f.d.f.ip6.arpa."
MAPPED_PTR = ipaddress.ip_address("::ffff:10.0.0.2").reverse_pointer + "."


def ask(port: int, name: str, qtype: str = "A", *, tcp: bool = False, edns: int | None = None,
        dnssec: bool = False, cd: bool = False) -> dns.message.Message:
    if edns is None:
        query = dns.message.make_query(name, qtype)
    else:
        query = dns.message.make_query(name, qtype, use_edns=0, payload=edns, want_dnssec=dnssec)
    if cd:
        query.flags |= dns.flags.CD
    if tcp:
        return dns.query.tcp(query, "127.0.0.1", port=port, timeout=3, one_rr_per_rrset=True)
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=3, one_rr_per_rrset=True)


def records(section: list[dns.rrset.RRset]) -> list[str]:
    """``owner ttl TYPE rdata`` per record, in the order sent (duplicates kept)."""
    return [f"{rrset.name} {rrset.ttl} {dns.rdatatype.to_text(rrset.rdtype)} {rdata}"
            for rrset in section for rdata in rrset]


def outcome(reply: dns.message.Message) -> tuple[str, bool, list[str]]:
    """(rcode, AA, answer records)."""
    return (dns.rcode.to_text(reply.rcode()), bool(reply.flags & dns.flags.AA),
            records(reply.answer))


def _expect(actual: object, expected: object) -> None:
    assert actual == expected


def _start(directory: Path, text: str, *flags: str) -> ServerProcess:
    directory.mkdir(exist_ok=True)
    path = directory / "Corefile"
    path.write_text(text)
    return ServerProcess(["--corefile", str(path), "--manifests", str(EXAMPLE), *flags])


# -- the Corefile ------------------------------------------------------------------------------

def _parse(block: str, *, lenient: bool = False) -> corefile.Parsed:
    """A Corefile whose ``hosts`` directive starts on line 3."""
    text = ".:53 {\n  kubernetes cluster.local in-addr.arpa ip6.arpa\n" + block + "}\n"
    return corefile.parse_with_warnings(text, path="Corefile", lenient=lenient)


def _hosts_of(parsed: corefile.Parsed) -> list[hosts.HostsOptions]:
    return [options for options in parsed.config.chain if isinstance(options, hosts.HostsOptions)]


def _options(block: str) -> hosts.HostsOptions:
    (options,) = _hosts_of(_parse(block))
    return options


def _entry(ip: str, *labels: str) -> hosts.Entry:
    name = b"".join(bytes((len(label),)) + label.encode() for label in labels) + b"\x00"
    return ipaddress.ip_address(ip), name


ACCEPTED = [
    ("hosts\n", hosts.HostsOptions()),
    ("hosts {\n    192.168.49.1 host.minikube.internal\n    fallthrough\n  }\n",
     hosts.HostsOptions(inline=(_entry("192.168.49.1", "host", "minikube", "internal"),),
                        fallthrough=(".",))),
    ("hosts /etc/hosts example.org 10.0.0.0/23 dns://Example.COM:53 10.0.0.1/24\n",
     hosts.HostsOptions(origins=("example.org", "0.0.10.in-addr.arpa", "1.0.10.in-addr.arpa",
                                 "example.com", "0.0.10.in-addr.arpa"))),
    # ttl before an entry; no_reverse after it still applies; the last fallthrough counts
    ("hosts /etc/hosts {\n    ttl 60\n    10.0.0.1 Foo foo. bar\n"
     "    no_reverse\n    reload 0\n    fallthrough x.example\n"
     "    fallthrough a.example 10.0.0.0/8\n  }\n",
     hosts.HostsOptions(inline=(_entry("10.0.0.1", "foo"), _entry("10.0.0.1", "foo"),
                                _entry("10.0.0.1", "bar")),
                        ttl=60, reverse=False, reload=0.0,
                        fallthrough=("a.example", "10.in-addr.arpa"))),
    ("hosts {\n    reload 1m30s\n    ttl 65535\n    fe80::1%eth0 v6.example\n  }\n",
     hosts.HostsOptions(reload=90.0, ttl=65535, inline=(_entry("fe80::1", "v6", "example"),))),
    # entries outside the zones are dropped, as CoreDNS drops them
    ("hosts /etc/hosts example.org {\n    10.0.0.1 a.example.org b.example.com\n  }\n",
     hosts.HostsOptions(origins=("example.org",),
                        inline=(_entry("10.0.0.1", "a", "example", "org"),))),
]


@pytest.mark.parametrize(("block", "expected"), ACCEPTED)
def test_options(block: str, expected: hosts.HostsOptions) -> None:
    assert _options(block) == expected


REFUSED = [
    ("hosts {\n    ttl 0\n  }\n", "Corefile:4: hosts ttl: 0 is out of range (from 1 to 65535)"),
    ("hosts {\n    ttl 65536\n  }\n",
     "Corefile:4: hosts ttl: 65536 is out of range (from 1 to 65535)"),
    ("hosts {\n    ttl abc\n  }\n", "Corefile:4: hosts ttl: 'abc' is not a whole number"),
    ("hosts {\n    ttl\n  }\n", "Corefile:4: hosts ttl: expected a number of seconds"),
    ("hosts {\n    reload\n  }\n", "Corefile:4: hosts reload: expected 1 argument, got 0"),
    ("hosts {\n    reload 1s 2s\n  }\n", "Corefile:4: hosts reload: expected 1 argument, got 2"),
    ("hosts {\n    reload -1s\n  }\n",
     "Corefile:4: hosts reload: '-1s' is negative (0 turns reloading off)"),
    ("hosts {\n    reload 5\n  }\n",
     "Corefile:4: hosts reload: '5' is not a duration (e.g. 500ms, 5s, 1m30s)"),
    ("hosts {\n    no_reverse please\n  }\n",
     "Corefile:4: hosts no_reverse: expected no arguments, got 1"),
    ("hosts {\n    fallthrough\n    10.0.0.1 foo\n  }\n",
     "Corefile:5: hosts: unknown option '10.0.0.1' (inline entries go before fallthrough)"),
    ("hosts {\n    fallthrough\n    fallthrough_unsupported\n  }\n",
     "Corefile:5: hosts: fallthrough_unsupported (CoreDNS 1.14) is not supported: other types "
     "of a known name are NODATA"),
    ("hosts {\n    ttl 60 {\n    }\n  }\n", "Corefile:4: hosts ttl: takes no block"),
    ("hosts\n  hosts\n", "Corefile:4: hosts is used twice in one server block "
     "(first at Corefile:3)"),
    ("hosts /etc/hosts/x\n",
     "Corefile:3: hosts: unable to access hosts file '/etc/hosts/x': Not a directory"),
]


@pytest.mark.parametrize(("block", "message"), REFUSED)
def test_refused(block: str, message: str) -> None:
    with pytest.raises(CorefileError) as caught:
        _parse(block)
    assert str(caught.value) == message


def test_lenient_leaves_refused_parts_out() -> None:
    parsed = _parse("hosts {\n    10.0.0.1 foo\n    fallthrough\n    fallthrough_unsupported\n"
                    "    nonsense 1\n  }\n", lenient=True)
    assert _hosts_of(parsed) == [hosts.HostsOptions(inline=(_entry("10.0.0.1", "foo"),),
                                                    fallthrough=(".",))]
    assert [str(w) for w in parsed.warnings] == [
        "Corefile:6: hosts: fallthrough_unsupported (CoreDNS 1.14) is not supported: other "
        "types of a known name are NODATA; ignored",
        "Corefile:7: hosts: unknown option 'nonsense' (inline entries go before fallthrough); "
        "ignored",
    ]


def test_warnings(tmp_path: Path) -> None:
    missing = tmp_path / "NodeHosts"
    parsed = _parse(f"hosts {missing} example.org bad..zone {{\n    relaod 5s\n"
                    "    10.0.0.1 in.example.org out.example.com\n  }\n")
    assert [str(w) for w in parsed.warnings] == [
        f"Corefile:3: hosts: file {missing} does not exist; its entries are served once it does",
        "Corefile:3: hosts: 'bad..zone' is not a zone; ignored",
        "Corefile:4: hosts: 'relaod 5s' is neither an option nor an entry (IP NAME...); ignored",
        "Corefile:5: hosts: 'out.example.com' is not a name in the zones example.org; ignored",
    ]
    directory = _parse(f"hosts {tmp_path}\n")
    assert [str(w) for w in directory.warnings] == [f"Corefile:3: hosts: {tmp_path} is a directory"]


def test_distribution_corefiles() -> None:
    k3s = corefile.load_with_warnings(DATA / "k3s.Corefile")
    assert _hosts_of(k3s) == [hosts.HostsOptions(path="/etc/coredns/NodeHosts", ttl=60,
                                                 reload=15.0, fallthrough=(".",))]
    minikube = corefile.load_with_warnings(DATA / "minikube.Corefile")
    assert _hosts_of(minikube) == [hosts.HostsOptions(
        inline=(_entry("192.168.49.1", "host", "minikube", "internal"),), fallthrough=(".",))]


# -- in process: the fast path's guard, and the counts ------------------------------------------

def _built(block: str, tmp_path: Path, text: str = "") -> hosts.Hosts:
    (tmp_path / "h").write_text(text)
    options = _options(block.replace("FILE", str(tmp_path / "h")))
    return options.build(chain.BuildContext(cluster_zones=("cluster.local",)))


def _wire(name: str) -> bytes:
    return b"".join(bytes((len(label),)) + label.encode() for label in name.split(".")) + b"\x00"


def test_interception_is_exact(tmp_path: Path) -> None:
    node_hosts = "10.0.0.11 server-1\n10.0.0.12 agent-1\n"
    k3s = _built("hosts FILE {\n    fallthrough\n  }\n", tmp_path, node_hosts)
    # node names are not the cluster's; their reverse names may be (hosts answers them first)
    assert k3s.interception() == chain.Interception(names=frozenset({
        _wire("11.0.0.10.in-addr.arpa"), _wire("12.0.0.10.in-addr.arpa"),
        _wire(ipaddress.ip_address("::ffff:10.0.0.11").reverse_pointer),
        _wire(ipaddress.ip_address("::ffff:10.0.0.12").reverse_pointer)}))
    unreversed = _built("hosts FILE {\n    no_reverse\n    fallthrough\n  }\n", tmp_path,
                        node_hosts)
    assert unreversed.interception().empty
    # a cluster name in the file is taken off the fast path, exactly that name
    override = _built("hosts FILE {\n    no_reverse\n    fallthrough\n  }\n", tmp_path,
                      "10.1.2.3 api.shop.svc.cluster.local\n")
    assert override.interception() == chain.Interception(
        names=frozenset({_wire("api.shop.svc.cluster.local")}))
    # without fallthrough every unknown name of the zones is SERVFAIL here: whole zones
    strict = _built("hosts FILE {\n    no_reverse\n  }\n", tmp_path, node_hosts)
    assert strict.interception() == chain.Interception(zones=(
        _wire("cluster.local"), _wire("in-addr.arpa"), _wire("ip6.arpa")))
    partly = _built("hosts FILE {\n    no_reverse\n    fallthrough in-addr.arpa\n  }\n",
                    tmp_path, node_hosts)
    assert partly.interception() == chain.Interception(zones=(
        _wire("cluster.local"), _wire("ip6.arpa")))
    elsewhere = _built("hosts FILE example.org\n", tmp_path, "10.0.0.1 example.org\n")
    assert elsewhere.interception() == chain.Interception(names=frozenset({
        _wire("1.0.0.10.in-addr.arpa"),
        _wire(ipaddress.ip_address("::ffff:10.0.0.1").reverse_pointer)}))


def test_replies_are_counted_as_coredns_labels_them(tmp_path: Path) -> None:
    objects = [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc]
    plugin = _built("hosts FILE example.org\n", tmp_path, "10.0.0.1 example.org\n")
    handler = Handler(expected_zone(objects), plugins=[plugin])
    def handle(name: str, qtype: str) -> dns.message.Message:
        reply = handler.handle(dns.message.make_query(name, qtype).to_wire(), client="127.0.0.1")
        assert isinstance(reply, bytes)
        return dns.message.from_wire(reply)

    assert outcome(handle("example.org", "A")) == ("NOERROR", True, ["example.org. 3600 A 10.0.0.1"])
    assert outcome(handle("nope.example.org", "AAAA")) == ("SERVFAIL", False, [])
    # CoreDNS labels a reply its server wrote for a plugin's SERVFAIL with no plugin
    assert dict(handler.stats.replies) == {(False, False, 1, 0, "hosts"): 1,
                                           (False, False, 28, 2, ""): 1}


# -- the running server ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(UPSTREAM_RECORDS, soa=UPSTREAM_SOA) as server:
        yield server


def _corefiles(upstream: str, directory: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each server's Corefile and flags; its files live in ``directory / name``."""
    hosts_file = directory / "hosts"
    return {
        # the spec's Corefile A: file and inline entries, fallthrough, the cluster and forward
        # (forward written first: the Corefile's order does not matter)
        "with_fallthrough": (
            ".:53 {\n"
            f"  forward . {upstream}\n"
            f"  hosts {hosts_file} {{\n"
            "    10.9.9.9 inline.example\n"
            "    10.0.0.1 example.org\n"
            "    fallthrough\n"
            "  }\n"
            "  kubernetes cluster.local in-addr.arpa ip6.arpa\n"
            "}\n", ()),
        # the spec's Corefile B (zones restrict), no fallthrough, a ttl; lenient, with an
        # option this server refuses
        "without_fallthrough": (
            ".:53 {\n"
            "  kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
            "    fallthrough in-addr.arpa ip6.arpa\n"
            "  }\n"
            f"  hosts {hosts_file} example.org {{\n"
            "    ttl 60\n"
            "    fallthrough_unsupported\n"
            "  }\n"
            f"  forward . {upstream}\n"
            "}\n", ("--lenient",)),
        # k3s's Corefile (health, ready and prometheus left out: they would need fixed ports;
        # forward to the loopback upstream), NodeHosts reloaded every 100ms instead of 15s
        "k3s": (
            ".:53 {\n"
            "    errors\n"
            "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
            "      pods insecure\n"
            "      fallthrough in-addr.arpa ip6.arpa\n"
            "    }\n"
            f"    hosts {directory / 'k3s' / 'NodeHosts'} {{\n"
            "      ttl 60\n"
            "      reload 100ms\n"
            "      fallthrough\n"
            "    }\n"
            f"    forward . {upstream}\n"
            "    cache 30\n"
            "    loop\n"
            "    reload\n"
            "    loadbalance\n"
            "}\n", ()),
        # minikube's Corefile (the same changes): no FILE, so /etc/hosts is served too
        "minikube": (
            ".:53 {\n"
            "    log\n"
            "    errors\n"
            "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
            "       pods insecure\n"
            "       fallthrough in-addr.arpa ip6.arpa\n"
            "       ttl 30\n"
            "    }\n"
            "    hosts {\n"
            "       192.168.49.1 host.minikube.internal\n"
            "       fallthrough\n"
            "    }\n"
            f"    forward . {upstream} {{\n"
            "       max_concurrent 1000\n"
            "    }\n"
            "    cache 30 {\n"
            "       disable success cluster.local\n"
            "       disable denial cluster.local\n"
            "    }\n"
            "    loop\n"
            "    reload\n"
            "    loadbalance\n"
            "}\n", ()),
        # a file that does not exist yet
        "missing": (
            ".:53 {\n  kubernetes cluster.local\n"
            f"  hosts {directory / 'missing' / 'later'} {{\n"
            "    10.9.9.9 inline.example\n    reload 100ms\n    fallthrough\n  }\n"
            f"  forward . {upstream}\n}}\n", ()),
    }


@dataclass
class Servers:
    directory: Path  # each server's files are in directory / its name
    running: dict[str, ServerProcess]

    def port(self, name: str) -> int:
        return self.running[name].port


@pytest.fixture(scope="module")
def servers(upstream: FakeUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Every server this module asks for, started side by side (each takes a while)."""
    directory = tmp_path_factory.mktemp("hosts")
    (directory / "hosts").write_text(HOSTS_FILE)
    (directory / "k3s").mkdir()
    (directory / "k3s" / "NodeHosts").write_text(NODE_HOSTS)
    corefiles = _corefiles(upstream.address, directory)
    with ThreadPoolExecutor(len(corefiles)) as pool:
        futures = {name: pool.submit(_start, directory / name, text, *flags)
                   for name, (text, flags) in corefiles.items()}
    running = {name: future.result() for name, future in futures.items()
               if future.exception() is None}
    try:
        for future in futures.values():
            future.result()  # a server that did not start fails the tests that need it
        yield Servers(directory, running)
    finally:
        for proc in running.values():
            proc.stop()


A = "A"
WITH_FALLTHROUGH = [
    # file entries first, then inline ones, duplicates kept; the owner in lower case
    ("example.org.", A, ("NOERROR", True, ["example.org. 3600 A 10.0.0.1"] * 2)),
    ("Example.ORG.", A, ("NOERROR", True, ["example.org. 3600 A 10.0.0.1"] * 2)),
    ("example.org.", "AAAA", ("NOERROR", True, ["example.org. 3600 AAAA fdfc::1"])),
    ("www.example.org.", A, ("NOERROR", True, ["www.example.org. 3600 A 10.0.0.1"])),
    # a known name's other types: NODATA (no SOA), not handed on
    ("www.example.org.", "AAAA", ("NOERROR", True, [])),
    ("example.org.", "MX", ("NOERROR", True, [])),
    ("example.org.", "TXT", ("NOERROR", True, [])),
    ("inline.example.", A, ("NOERROR", True, ["inline.example. 3600 A 10.9.9.9"])),
    ("mapped.example.", A, ("NOERROR", True, ["mapped.example. 3600 A 10.0.0.2"])),
    ("mapped.example.", "AAAA", ("NOERROR", True, [])),
    ("zoned.example.", "AAAA", ("NOERROR", True, ["zoned.example. 3600 AAAA fe80::1"])),
    # an unknown name falls through to forward
    ("sub.example.org.", A, ("NOERROR", False, ["sub.example.org. 300 A 192.0.2.10"])),
    ("www.example.com.", A, ("NOERROR", False, ["www.example.com. 300 A 192.0.2.1"])),
    ("bogus.", A, ("NXDOMAIN", False, [])),
    # PTR: every name of the address, file then inline
    ("1.0.0.10.in-addr.arpa.", "PTR", ("NOERROR", True, [
        "1.0.0.10.in-addr.arpa. 3600 PTR example.org.",
        "1.0.0.10.in-addr.arpa. 3600 PTR www.example.org.",
        "1.0.0.10.in-addr.arpa. 3600 PTR example.org."])),
    ("5.0.0.10.in-addr.arpa.", "PTR", ("NOERROR", True, [
        "5.0.0.10.in-addr.arpa. 3600 PTR shared.", "5.0.0.10.in-addr.arpa. 3600 PTR other."])),
    (FDFC_1_PTR, "PTR", ("NOERROR", True, [f"{FDFC_1_PTR} 3600 PTR example.org."])),
    ("2.0.0.10.in-addr.arpa.", "PTR", ("NOERROR", True, [
        "2.0.0.10.in-addr.arpa. 3600 PTR mapped.example."])),
    # Go prints ::ffff:10.0.0.2 as 10.0.0.2, so its ip6.arpa name finds the IPv4 entry
    (MAPPED_PTR, "PTR", ("NOERROR", True, [f"{MAPPED_PTR} 3600 PTR mapped.example."])),
    # an address without entries goes on whatever fallthrough says: to kubernetes, which
    # owns in-addr.arpa here (no fallthrough of its own)
    ("7.7.7.7.in-addr.arpa.", "PTR", ("NXDOMAIN", True, [])),
    # a name's PTR is not a reverse name: on (the upstream has names below it: NODATA)
    ("example.org.", "PTR", ("NOERROR", False, [])),
    # hosts runs before kubernetes: the file's cluster name wins, for every type
    ("api.shop.svc.cluster.local.", A, ("NOERROR", True, [
        "api.shop.svc.cluster.local. 3600 A 10.1.2.3"])),
    ("api.shop.svc.cluster.local.", "SRV", ("NOERROR", True, [])),
    # other cluster names are the cluster's, exactly as before
    ("kubernetes.default.svc.cluster.local.", A, ("NOERROR", True, [
        "kubernetes.default.svc.cluster.local. 5 A 10.96.0.1"])),
    ("1.0.96.10.in-addr.arpa.", "PTR", ("NOERROR", True, [
        "1.0.96.10.in-addr.arpa. 5 PTR kubernetes.default.svc.cluster.local."])),
    ("nope.default.svc.cluster.local.", A, ("NXDOMAIN", True, [])),
]


@pytest.mark.parametrize(("name", "qtype", "expected"), WITH_FALLTHROUGH)
def test_answers_with_fallthrough(servers: Servers, name: str, qtype: str,
                                  expected: tuple[str, bool, list[str]]) -> None:
    port = servers.port("with_fallthrough")
    assert outcome(ask(port, name, qtype)) == expected
    assert outcome(ask(port, name, qtype, tcp=True)) == expected


def test_reply_shape(servers: Servers) -> None:
    port = servers.port("with_fallthrough")
    reply = ask(port, "Example.ORG.", edns=4096, dnssec=True, cd=True)
    assert reply.question[0].name.to_text() == "Example.ORG."  # the client's case
    assert reply.answer[0].name.to_text() == "example.org."  # CoreDNS's lower-case owner
    assert reply.flags & (dns.flags.QR | dns.flags.AA | dns.flags.RD | dns.flags.CD | dns.flags.RA
                          | dns.flags.TC) == dns.flags.QR | dns.flags.AA | dns.flags.RD | dns.flags.CD
    assert (reply.edns, reply.payload, bool(reply.ednsflags & dns.flags.DO)) == (0, 4096, True)
    assert not reply.authority and not reply.additional
    plain = ask(port, "www.example.org.", "AAAA")
    assert (plain.edns, plain.authority) == (-1, [])  # NODATA without an SOA, no OPT


def test_large_answers_are_truncated_over_udp(servers: Servers) -> None:
    port = servers.port("with_fallthrough")
    expected = [f"big.example. 3600 A 10.2.0.{n}" for n in range(1, 41)]
    small = ask(port, "big.example.")
    assert (bool(small.flags & dns.flags.TC), small.answer) == (True, [])
    assert records(ask(port, "big.example.", edns=1232).answer) == expected
    assert records(ask(port, "big.example.", tcp=True).answer) == expected


WITHOUT_FALLTHROUGH = [
    ("example.org.", A, ("NOERROR", True, ["example.org. 60 A 10.0.0.1"])),
    ("www.example.org.", "AAAA", ("NOERROR", True, [])),
    # unknown inside the zones: SERVFAIL (no SOA for an NXDOMAIN), not forwarded
    ("sub.example.org.", A, ("SERVFAIL", False, [])),
    ("sub.example.org.", "MX", ("SERVFAIL", False, [])),
    # outside the zones: on, and the entries of those names were dropped
    ("shared.", A, ("NOERROR", False, ["shared. 300 A 192.0.2.55"])),
    ("5.0.0.10.in-addr.arpa.", "PTR", ("NOERROR", False, [
        "5.0.0.10.in-addr.arpa. 300 PTR upstream-five.example.net."])),
    ("7.7.7.7.in-addr.arpa.", "PTR", ("NOERROR", False, [
        "7.7.7.7.in-addr.arpa. 300 PTR seven.example.net."])),
    ("1.0.0.10.in-addr.arpa.", "PTR", ("NOERROR", True, [
        "1.0.0.10.in-addr.arpa. 60 PTR example.org.",
        "1.0.0.10.in-addr.arpa. 60 PTR www.example.org."])),
    ("api.shop.svc.cluster.local.", A, ("NOERROR", True, [
        "api.shop.svc.cluster.local. 5 A 10.96.200.5"])),
    ("kubernetes.default.svc.cluster.local.", A, ("NOERROR", True, [
        "kubernetes.default.svc.cluster.local. 5 A 10.96.0.1"])),
]


@pytest.mark.parametrize(("name", "qtype", "expected"), WITHOUT_FALLTHROUGH)
def test_answers_without_fallthrough(servers: Servers, name: str, qtype: str,
                                     expected: tuple[str, bool, list[str]]) -> None:
    assert outcome(ask(servers.port("without_fallthrough"), name, qtype)) == expected


def test_servfail_shape_and_lenient_warning(servers: Servers) -> None:
    without_fallthrough = servers.running["without_fallthrough"]
    reply = ask(without_fallthrough.port, "Sub.Example.ORG.", edns=1400, dnssec=True)
    assert reply.question[0].name.to_text() == "Sub.Example.ORG."
    assert (reply.edns, reply.payload, bool(reply.ednsflags & dns.flags.DO)) == (0, 1400, True)
    assert "fallthrough_unsupported (CoreDNS 1.14) is not supported" in without_fallthrough.text()


def test_k3s_node_hosts(servers: Servers) -> None:
    node_hosts = servers.directory / "k3s" / "NodeHosts"
    port = servers.port("k3s")
    assert outcome(ask(port, "server-1.")) == ("NOERROR", True, ["server-1. 60 A 10.0.0.11"])
    assert outcome(ask(port, "agent-1.")) == ("NOERROR", True, ["agent-1. 60 A 10.0.0.12"])
    assert outcome(ask(port, "11.0.0.10.in-addr.arpa.", "PTR")) == (
        "NOERROR", True, ["11.0.0.10.in-addr.arpa. 60 PTR server-1."])
    objects = [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc]
    assert_serves_exactly(port, objects)  # the cluster, exactly as without hosts

    # a node leaves, another joins: the rewritten file is served within a reload
    node_hosts.write_text("10.0.0.11 server-1\n10.0.0.13 agent-2\n")
    eventually(lambda: _expect(outcome(ask(port, "agent-2.")),
                               ("NOERROR", True, ["agent-2. 60 A 10.0.0.13"])))
    # gone from the file: forwarded (cache 30 caps the upstream's TTL, as in CoreDNS)
    assert outcome(ask(port, "agent-1.")) == ("NOERROR", False, ["agent-1. 30 A 192.0.2.12"])
    assert outcome(ask(port, "12.0.0.10.in-addr.arpa.", "PTR"))[0] == "NXDOMAIN"

    # the file goes away: what was read last keeps being served
    node_hosts.unlink()
    time.sleep(0.5)  # five reload ticks: nothing can be waited on when nothing changes
    assert outcome(ask(port, "agent-2.")) == ("NOERROR", True, ["agent-2. 60 A 10.0.0.13"])
    # and it comes back
    node_hosts.write_text("10.0.0.14 agent-3\n")
    eventually(lambda: _expect(outcome(ask(port, "agent-3.")),
                               ("NOERROR", True, ["agent-3. 60 A 10.0.0.14"])))
    assert outcome(ask(port, "agent-2."))[0] == "NXDOMAIN"


def test_a_cluster_name_added_to_the_file_is_answered_by_hosts(tmp_path: Path) -> None:
    node_hosts = tmp_path / "NodeHosts"
    node_hosts.write_text("10.0.0.11 server-1\n")
    proc = _start(tmp_path, (
        ".:53 {\n  kubernetes cluster.local in-addr.arpa ip6.arpa\n"
        f"  hosts {node_hosts} {{\n    reload 100ms\n    fallthrough\n  }}\n}}\n"))
    try:
        name = "kubernetes.default.svc.cluster.local."
        assert records(ask(proc.port, name).answer) == [f"{name} 5 A 10.96.0.1"]
        node_hosts.write_text(f"10.0.0.11 server-1\n10.0.0.99 {name}\n")
        eventually(lambda: _expect(records(ask(proc.port, name).answer),
                                   [f"{name} 3600 A 10.0.0.99"]))
    finally:
        proc.stop()


def test_minikube_inline_entry_and_etc_hosts(servers: Servers) -> None:
    port = servers.port("minikube")
    assert outcome(ask(port, "host.minikube.internal.")) == (
        "NOERROR", True, ["host.minikube.internal. 3600 A 192.168.49.1"])
    assert records(ask(port, "1.49.168.192.in-addr.arpa.", "PTR").answer) == [
        "1.49.168.192.in-addr.arpa. 3600 PTR host.minikube.internal."]
    assert outcome(ask(port, "www.example.com.")) == (
        "NOERROR", False, ["www.example.com. 30 A 192.0.2.1"])  # cache 30 caps the TTL
    assert records(ask(port, "kubernetes.default.svc.cluster.local.").answer) == [
        "kubernetes.default.svc.cluster.local. 30 A 10.96.0.1"]
    etc_hosts = [line.split("#")[0].split() for line in
                 Path("/etc/hosts").read_text().splitlines()]
    if ["127.0.0.1", "localhost"] in [fields[:2] for fields in etc_hosts]:
        assert "localhost. 3600 A 127.0.0.1" in records(ask(port, "localhost.").answer)


def test_missing_file_is_read_once_it_appears(servers: Servers) -> None:
    path = servers.directory / "missing" / "later"
    proc = servers.running["missing"]
    assert f"hosts: file {path} does not exist" in proc.text()
    port = proc.port
    assert outcome(ask(port, "inline.example.")) == (
        "NOERROR", True, ["inline.example. 3600 A 10.9.9.9"])
    assert outcome(ask(port, "shared.")) == ("NOERROR", False, ["shared. 300 A 192.0.2.55"])
    path.write_text("10.0.0.5 shared\n")
    eventually(lambda: _expect(outcome(ask(port, "shared.")),
                               ("NOERROR", True, ["shared. 3600 A 10.0.0.5"])))


def test_a_changed_interception_is_announced(tmp_path: Path) -> None:
    """What the server hears when a reload changes which names the fast path must leave."""
    heard: list[chain.Interception] = []
    path = tmp_path / "h"
    path.write_text("10.0.0.11 server-1\n")
    options = _options(f"hosts {path} {{\n    no_reverse\n    fallthrough\n  }}\n")
    context = SimpleNamespace(cluster_zones=("cluster.local",),
                              interception_changed=lambda: heard.append(plugin.interception()))
    plugin = options.build(context)  # type: ignore[arg-type]
    assert plugin.interception().empty

    def rewrite(text: str, mtime_ns: int) -> list[chain.Interception]:
        path.write_text(text)
        os.utime(path, ns=(mtime_ns, mtime_ns))
        asyncio.run(plugin.refresh())
        return heard

    assert rewrite("10.0.0.12 server-2\n", 1) == []  # names outside the cluster: no news
    name = _wire("kubernetes.default.svc.cluster.local")
    assert rewrite("10.0.0.99 kubernetes.default.svc.cluster.local\n", 2) == [
        chain.Interception(names=frozenset({name}))]
    assert rewrite("10.0.0.99 kubernetes.default.svc.cluster.local\n", 2) == [
        chain.Interception(names=frozenset({name}))]  # unchanged file: not even read


def test_reload_zero_starts_no_reader(tmp_path: Path) -> None:
    async def tasks_once_started(plugin: hosts.Hosts) -> int:
        await plugin.start()
        try:
            return len(asyncio.all_tasks()) - 1  # this coroutine's own task aside
        finally:
            await plugin.close()

    never = _built("hosts FILE {\n    reload 0\n  }\n", tmp_path)
    assert asyncio.run(tasks_once_started(never)) == 0
    default = _built("hosts FILE\n", tmp_path)
    assert asyncio.run(tasks_once_started(default)) == 1
