"""A server listening on 0.0.0.0 answers UDP from the address each query was sent to."""

from __future__ import annotations

import socket
from pathlib import Path

import dns.message
from livecluster import ServerProcess

EXAMPLE = Path(__file__).resolve().parent.parent / "dnsserver" / "example" / "cluster.yaml"


def test_replies_leave_from_the_address_asked() -> None:
    proc = ServerProcess(["--manifests", str(EXAMPLE)], listen="0.0.0.0:0")
    try:
        for address in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(2)
                query = dns.message.make_query("kubernetes.default.svc.cluster.local", "A")
                sock.sendto(query.to_wire(), (address, proc.port))
                data, source = sock.recvfrom(4096)
                assert source == (address, proc.port)
                reply = dns.message.from_wire(data)
                assert reply.id == query.id
                assert [r.to_text() for rrset in reply.answer for r in rrset] == ["10.96.0.1"]
    finally:
        proc.stop()
