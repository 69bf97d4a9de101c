"""``loadbalance`` on forwarded and cached replies: their A/AAAA records take turns, a CNAME
chain stays first, as CoreDNS's loadbalance does for every NOERROR reply it writes."""

from __future__ import annotations

from pathlib import Path

import dns.rdatatype
from livecluster import ServerProcess, query
from upstream import FakeUpstream

from dnsserver.serve import wire

EXAMPLE = Path(__file__).resolve().parent.parent / "dnsserver" / "example" / "cluster.yaml"
SOA = "example.org. 60 IN SOA ns.example.org. admin.example.org. 1 7200 1800 86400 30"
RECORDS = ["www.example.org. 60 IN CNAME web.example.org.",
           "web.example.org. 60 IN A 192.0.2.1", "web.example.org. 60 IN A 192.0.2.2",
           "web.example.org. 60 IN A 192.0.2.3"]


def _answers(port: int) -> list[list[str]]:
    rows = []
    for _ in range(6):
        reply = query(port, "www.example.org", "A")
        rows.append([f"{dns.rdatatype.to_text(rrset.rdtype)} {item}"
                     for rrset in reply.answer for item in rrset])
    return rows


def test_forwarded_and_cached_addresses_take_turns_behind_the_cname() -> None:
    with FakeUpstream(RECORDS, soa=SOA) as upstream:
        for flags in ([], ["--cache", "30"]):
            proc = ServerProcess(["--manifests", str(EXAMPLE), "--upstream", upstream.address,
                                  "--loadbalance", *flags])
            try:
                rows = _answers(proc.port)
            finally:
                proc.stop()
            for row in rows:
                assert row[0] == "CNAME web.example.org.", row
                assert sorted(row[1:]) == ["A 192.0.2.1", "A 192.0.2.2", "A 192.0.2.3"], row
            assert len({row[1] for row in rows}) == 3, (flags, rows)


def test_without_loadbalance_the_upstream_order_stays() -> None:
    with FakeUpstream(RECORDS, soa=SOA) as upstream:
        proc = ServerProcess(["--manifests", str(EXAMPLE), "--upstream", upstream.address])
        try:
            rows = _answers(proc.port)
        finally:
            proc.stop()
        assert {tuple(row) for row in rows} == {(
            "CNAME web.example.org.", "A 192.0.2.1", "A 192.0.2.2", "A 192.0.2.3")}


def test_rotation_leaves_other_replies_alone() -> None:
    nxdomain = bytes.fromhex("abcd81830001000000000000") + b"\x03www\x00\x00\x01\x00\x01"
    assert wire.rotate_addresses(nxdomain, 1) == nxdomain
    assert wire.rotate_addresses(b"\x00\x01", 1) == b"\x00\x01"
    broken = bytes.fromhex("abcd81800001000300000000") + b"\x03www\x00\x00\x01\x00\x01\xc0"
    assert wire.rotate_addresses(broken, 1) == broken
