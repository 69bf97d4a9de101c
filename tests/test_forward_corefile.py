"""forward and cache options through the running server: a Corefile with a chain of forward
lines (next, except, force_tcp) and a cache with zones and disable, against real upstreams on
loopback. tests/test_forward_options.py and tests/test_cache_options.py go option by option.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from livecluster import ServerProcess
from test_forward_options import Recording

EXAMPLE = Path(__file__).resolve().parent.parent / "dnsserver" / "example" / "cluster.yaml"
CORP = ["intranet.corp.example. 300 IN A 10.1.1.1"]
CORP_SOA = "corp.example. 60 IN SOA ns.corp.example. admin.corp.example. 1 7200 1800 86400 60"
MAIN = ["missing.corp.example. 300 IN A 10.2.2.2", "www.example.com. 300 IN A 192.0.2.1"]
MAIN_SOA = "example.com. 60 IN SOA ns.example.com. admin.example.com. 1 7200 1800 86400 60"
LAST = ["www.blocked.example. 300 IN A 10.3.3.3"]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Recording, Recording, Recording]]:
    with Recording(CORP, soa=CORP_SOA) as corp, Recording(MAIN, soa=MAIN_SOA) as main, \
            Recording(LAST) as last:
        yield corp, main, last


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           upstreams: tuple[Recording, Recording, Recording]) -> Iterator[ServerProcess]:
    corp, main, last = upstreams
    corefile = tmp_path_factory.mktemp("corefile") / "Corefile"
    corefile.write_text(
        ".:53 {\n"
        "  kubernetes cluster.local\n"
        f"  forward corp.example {corp.address} {{\n    next NXDOMAIN\n  }}\n"
        f"  forward . {main.address} {{\n    except blocked.example\n    force_tcp\n  }}\n"
        f"  forward . {last.address}\n"
        "  cache 30 example.com {\n    disable denial example.com\n  }\n"
        "}\n")
    proc = ServerProcess(["--corefile", str(corefile), "--manifests", str(EXAMPLE)])
    yield proc
    proc.stop()


def ask(port: int, name: str) -> tuple[str, list[str]]:
    reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=5)
    return (dns.rcode.to_text(reply.rcode()),
            sorted(f"{rrset.name} {rrset.ttl} {rdata}" for rrset in reply.answer for rdata in rrset))


def test_the_first_line_that_takes_a_name_answers(
    server: ServerProcess, upstreams: tuple[Recording, Recording, Recording],
) -> None:
    corp, _, _ = upstreams
    assert ask(server.port, "intranet.corp.example") == (
        "NOERROR", ["intranet.corp.example. 300 10.1.1.1"])
    assert ("udp", "intranet.corp.example.", "A") in corp.asked()


def test_next_hands_an_nxdomain_on_to_the_following_line(
    server: ServerProcess, upstreams: tuple[Recording, Recording, Recording],
) -> None:
    corp, main, _ = upstreams
    assert ask(server.port, "missing.corp.example") == (
        "NOERROR", ["missing.corp.example. 300 10.2.2.2"])
    assert ("udp", "missing.corp.example.", "A") in corp.asked()
    assert ("tcp", "missing.corp.example.", "A") in main.asked()  # force_tcp


def test_an_excepted_name_goes_to_the_line_after(
    server: ServerProcess, upstreams: tuple[Recording, Recording, Recording],
) -> None:
    _, main, last = upstreams
    assert ask(server.port, "www.blocked.example") == (
        "NOERROR", ["www.blocked.example. 300 10.3.3.3"])
    assert ("udp", "www.blocked.example.", "A") in last.asked()
    assert all(name != "www.blocked.example." for _, name, _ in main.asked())


def test_the_cache_takes_its_zones_and_leaves_out_disabled_denials(
    server: ServerProcess, upstreams: tuple[Recording, Recording, Recording],
) -> None:
    _, main, _ = upstreams

    def count(name: str) -> int:
        return sum(1 for _, asked, _ in main.asked() if asked == name)

    for _ in range(2):
        rcode, answer = ask(server.port, "www.example.com")
        assert rcode == "NOERROR" and len(answer) == 1
        assert answer[0].startswith("www.example.com. ") and answer[0].endswith(" 192.0.2.1")
        assert int(answer[0].split()[1]) <= 30  # cache 30
        assert ask(server.port, "missing.example.com") == ("NXDOMAIN", [])
    assert count("www.example.com.") == 1
    assert count("missing.example.com.") == 2  # disable denial example.com
