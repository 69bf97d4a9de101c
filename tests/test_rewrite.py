"""CoreDNS's ``rewrite`` plugin, as CoreDNS 1.13 documents and does it.

Two real servers on loopback, each on a Corefile with the cluster zone (the example manifests),
a ``forward`` to a real upstream on loopback, and ``rewrite`` lines written after them (the
order of the chain is CoreDNS's, not the file's): ``CLUSTER`` holds the rules people use with
Kubernetes (a private suffix mapped onto ``svc.cluster.local``, exact names onto Services) and
runs ``--lenient`` with a refused rule in it; ``RULES`` holds the README's examples and the
``continue``/``stop`` walk over several rules. The expected replies are CoreDNS's: the question
comes back as the client wrote it, owner names are mapped back only by ``exact`` rules,
``answer auto`` and ``answer name`` (and are lower case then), TTL and rcode rules act on every
record. Then the parser's errors (``file:line``) and which queries leave the fast path.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from livecluster import ServerProcess
from upstream import FakeUpstream

from dnsserver.config import corefile
from dnsserver.config.directives import CorefileError
from dnsserver.plugins import chain, rewrite
from dnsserver.plugins.rewrite import (
    AnswerRewrite,
    ClassRule,
    NameMatch,
    NameRule,
    RcodeRule,
    RewriteOptions,
    TtlRule,
    TypeRule,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "dnsserver" / "example" / "cluster.yaml"

UPSTREAM_RECORDS = [
    "example.org. 300 IN A 10.0.0.1",
    "www.google.com. 300 IN A 10.0.0.2",
    "cdn.google.com. 300 IN CNAME edge.google.com.",
    "edge.google.com. 300 IN A 10.0.0.3",
    "search.example.com. 300 IN A 192.0.2.10",
    "1.0.0.10.in-addr.arpa. 300 IN PTR gateway.example.",
    "c.example.com. 300 IN A 10.0.0.13",
    "bar.example.com. 300 IN A 10.0.0.5",
    "foobar.example.com. 300 IN A 10.0.0.6",
    "ftp.service.us-west-1.consul. 300 IN A 10.10.10.10",
    "ftp.service.us-west-1.consul. 300 IN A 10.20.20.20",
    "x.example.com. 300 IN TXT \"hello\"",
    "ttl.example.com. 5 IN A 10.0.1.1",
    "ttl.example.com. 600 IN A 10.0.1.2",
    "ttl.example.com. 100 IN A 10.0.1.3",
    "fixed.example.com. 5 IN A 10.0.2.1",
    "fixed.example.com. 600 IN A 10.0.2.2",
    *(f"t.example.com. 300 IN A 10.1.0.{i}" for i in range(1, 31)),
]

CLUSTER = """\
.:53 {{
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . {upstream}
    rewrite name suffix .corp.example .svc.cluster.local answer auto
    rewrite name exact gateway.ptr.example 1.0.0.10.in-addr.arpa
    rewrite name exact db.example.org db.shop.svc.cluster.local
    rewrite name exact frontend.default.svc.cluster.local api.shop.svc.cluster.local
    rewrite name example.net example.org
    rewrite name suffix .schmoogle.com. .google.com.
    rewrite stop {{
        name suffix .mirror.example .google.com
        answer auto
    }}
    rewrite edns0 local set 0xffee abcd
}}
"""

RULES = """\
.:53 {{
    kubernetes cluster.local
    forward . {upstream}
    rewrite continue name exact a.example.com b.example.com
    rewrite name exact b.example.com c.example.com
    rewrite continue type ANY TXT
    rewrite type MX TXT
    rewrite name prefix foo bar
    rewrite name substring service.us-west-1.example.org service.us-west-1.consul
    rewrite stop {{
        name regex (.*)-(us-west-1)\\.coredns\\.rocks {{1}}.service.{{2}}.consul
        answer name (.*)\\.service\\.(us-west-1)\\.consul {{1}}-{{2}}.coredns.rocks
    }}
    rewrite name regex (.*)-(us-west-1)\\.example\\.org {{1}}.service.{{2}}.consul
    rewrite name regex (.*)\\.broken\\.test {{1}}..
    rewrite ttl ttl.example.com. 30-300
    rewrite continue ttl exact fixed.example.com 15
    rewrite rcode exact nx.example.com NXDOMAIN NOERROR
    rewrite name exact truncation-needs-a-long-question-name.example.com t.example.com
}}
"""


# -- servers -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(UPSTREAM_RECORDS) as server:
        yield server


def _serve(tmp: Path, text: str, *flags: str) -> ServerProcess:
    path = tmp / "Corefile"
    path.write_text(text)
    return ServerProcess(["--corefile", str(path), "--manifests", str(EXAMPLE), *flags])


@pytest.fixture(scope="module")
def cluster(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[ServerProcess]:
    server = _serve(tmp_path_factory.mktemp("cluster"), CLUSTER.format(upstream=upstream.address),
                    "--lenient")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rules(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[ServerProcess]:
    server = _serve(tmp_path_factory.mktemp("rules"), RULES.format(upstream=upstream.address))
    yield server
    server.stop()


def exchange(port: int, name: str, qtype: str = "A", *, edns: int | None = None,
             tcp: bool = False) -> dns.message.Message:
    """One query; the reply is read as it is, even when its question differs from ours."""
    query = dns.message.make_query(name, qtype, use_edns=edns is not None,
                                   payload=edns or 1232)
    data = query.to_wire()
    if tcp:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            sock.sendall(len(data).to_bytes(2, "big") + data)
            length = int.from_bytes(_read(sock, 2), "big")
            reply = _read(sock, length)
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            sock.sendto(data, ("127.0.0.1", port))
            reply = sock.recv(65535)
    message = dns.message.from_wire(reply, one_rr_per_rrset=True)  # each record's own TTL
    assert message.id == query.id
    return message


def _read(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def lines(section: list[dns.rrset.RRset]) -> list[str]:
    return sorted(line for rrset in section for line in rrset.to_text().splitlines())


def question(message: dns.message.Message) -> str:
    (asked,) = message.question
    return asked.to_text()  # the owner as the client wrote it (case kept)


def shape(message: dns.message.Message) -> tuple[str, str, list[str]]:
    return dns.rcode.to_text(message.rcode()), question(message), lines(message.answer)


SOA = re.compile(r"cluster\.local\. 5 IN SOA ns\.dns\.cluster\.local\. "
                 r"hostmaster\.cluster\.local\. \d+ 7200 1800 86400 5")


# -- the cluster zone through rewrite ------------------------------------------------------

# (name, type): (rcode, question as echoed, answer section)
CLUSTER_TABLE = {
    # a private suffix onto the cluster's: names map back with answer auto (lower case),
    # the question comes back in the client's case
    ("Kubernetes.Default.CORP.example", "A"): (
        "NOERROR", "Kubernetes.Default.CORP.example. IN A",
        ["kubernetes.default.corp.example. 5 IN A 10.96.0.1"]),
    ("_http._tcp.web.default.corp.example", "SRV"): (
        "NOERROR", "_http._tcp.web.default.corp.example. IN SRV",
        ["_http._tcp.web.default.corp.example. 5 IN SRV 0 50 8080 web-0.web.default.corp.example.",
         "_http._tcp.web.default.corp.example. 5 IN SRV 0 50 8080 web-1.web.default.corp.example."]),
    ("api.shop.corp.example", "AAAA"): ("NOERROR", "api.shop.corp.example. IN AAAA", []),
    # an ExternalName: the CNAME chased upstream (the reply arrives later) is mapped back too
    ("search.shop.corp.example", "A"): (
        "NOERROR", "search.shop.corp.example. IN A",
        ["search.example.com. 300 IN A 192.0.2.10",
         "search.shop.corp.example. 5 IN CNAME search.example.com."]),
    # exact names are always mapped back
    ("db.example.org", "A"): (
        "NOERROR", "db.example.org. IN A",
        ["db.example.org. 5 IN A 10.244.1.30", "db.example.org. 5 IN A 10.244.2.31"]),
    ("DB.Example.Org", "AAAA"): (
        "NOERROR", "DB.Example.Org. IN AAAA", ["db.example.org. 5 IN AAAA fd00:10:244:1::30"]),
    # a cluster name rewritten: it must leave the fast path to be
    ("frontend.default.svc.cluster.local", "A"): (
        "NOERROR", "frontend.default.svc.cluster.local. IN A",
        ["frontend.default.svc.cluster.local. 5 IN A 10.96.200.5"]),
    # a reverse name the cluster does not have falls through to forward (kubeadm's block)
    ("gateway.ptr.example", "PTR"): (
        "NOERROR", "gateway.ptr.example. IN PTR", ["gateway.ptr.example. 300 IN PTR gateway.example."]),
    # through forward: the upstream is asked example.org
    ("Example.NET", "A"): ("NOERROR", "Example.NET. IN A", ["example.net. 300 IN A 10.0.0.1"]),
    # suffix without answer auto: only the question is restored
    ("www.schmoogle.com", "A"): (
        "NOERROR", "www.schmoogle.com. IN A", ["www.google.com. 300 IN A 10.0.0.2"]),
    # suffix with answer auto, in a block: owners and CNAME targets swap the suffix back
    ("cdn.mirror.example", "A"): (
        "NOERROR", "cdn.mirror.example. IN A",
        ["cdn.mirror.example. 300 IN CNAME edge.mirror.example.",
         "edge.mirror.example. 300 IN A 10.0.0.3"]),
    # names no rule matches are answered exactly as before
    ("kubernetes.default.svc.cluster.local", "A"): (
        "NOERROR", "kubernetes.default.svc.cluster.local. IN A",
        ["kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"]),
    ("api.shop.svc.cluster.local", "A"): (
        "NOERROR", "api.shop.svc.cluster.local. IN A",
        ["api.shop.svc.cluster.local. 5 IN A 10.96.200.5"]),
    ("1.0.96.10.in-addr.arpa", "PTR"): (
        "NOERROR", "1.0.96.10.in-addr.arpa. IN PTR",
        ["1.0.96.10.in-addr.arpa. 5 IN PTR kubernetes.default.svc.cluster.local."]),
}


@pytest.mark.parametrize(("name", "qtype"), list(CLUSTER_TABLE))
def test_cluster_zone_through_rewrite(cluster: ServerProcess, name: str, qtype: str) -> None:
    assert shape(exchange(cluster.port, name, qtype)) == CLUSTER_TABLE[(name, qtype)]


def test_additional_records_map_back_and_flags_come_from_the_zone(cluster: ServerProcess,
                                                                   ) -> None:
    reply = exchange(cluster.port, "_http._tcp.web.default.corp.example", "SRV", edns=3000)
    assert lines(reply.additional) == ["web-0.web.default.corp.example. 5 IN A 10.244.1.10",
                                       "web-1.web.default.corp.example. 5 IN A 10.244.2.11"]
    assert reply.flags & dns.flags.AA and reply.flags & dns.flags.RD
    assert reply.edns == 0 and reply.payload == 3000  # the cluster's OPT, as it mirrors it


def test_a_denial_keeps_the_zones_soa(cluster: ServerProcess) -> None:
    reply = exchange(cluster.port, "nope.default.corp.example", "A")
    assert dns.rcode.to_text(reply.rcode()) == "NXDOMAIN"
    assert question(reply) == "nope.default.corp.example. IN A"
    assert reply.answer == []
    (soa,) = lines(reply.authority)
    assert SOA.fullmatch(soa), soa  # not under the rewritten suffix: left alone
    assert reply.edns == -1  # no OPT asked, none given


def test_tcp_and_upstream_sees_the_rewritten_question(cluster: ServerProcess,
                                                      upstream: FakeUpstream) -> None:
    before = len(upstream.log)
    reply = exchange(cluster.port, "Example.NET", "A", tcp=True)
    assert shape(reply) == CLUSTER_TABLE[("Example.NET", "A")]
    assert upstream.log[before:] == [("tcp", "example.org.", "A")]  # as the client came


def test_lenient_leaves_the_refused_rule_out(cluster: ServerProcess) -> None:
    assert re.search(r"Corefile:16: rewrite: edns0 rules are not supported; ignored",
                     cluster.text()), cluster.text()


# -- several rules, continue and stop, the README's examples ------------------------------

RULES_TABLE = {
    # continue then stop: c.example.com is asked; answers map back c -> b -> a
    ("a.example.com", "A"): ("NOERROR", "a.example.com. IN A", ["a.example.com. 300 IN A 10.0.0.13"]),
    ("b.example.com", "A"): ("NOERROR", "b.example.com. IN A", ["b.example.com. 300 IN A 10.0.0.13"]),
    # a stop type rule: the question is restored, the records are the new type's
    ("x.example.com", "MX"): ("NOERROR", "x.example.com. IN MX", ['x.example.com. 300 IN TXT "hello"']),
    # prefix "foo" means the label foo: bar.example.com is asked, its owner stays
    ("foo.example.com", "A"): ("NOERROR", "foo.example.com. IN A", ["bar.example.com. 300 IN A 10.0.0.5"]),
    ("foobar.example.com", "A"): (
        "NOERROR", "foobar.example.com. IN A", ["foobar.example.com. 300 IN A 10.0.0.6"]),
    ("ftp.service.us-west-1.example.org", "A"): (
        "NOERROR", "ftp.service.us-west-1.example.org. IN A",
        ["ftp.service.us-west-1.consul. 300 IN A 10.10.10.10",
         "ftp.service.us-west-1.consul. 300 IN A 10.20.20.20"]),
    # regex with answer name: the README's dig output
    ("ftp-us-west-1.coredns.rocks", "A"): (
        "NOERROR", "ftp-us-west-1.coredns.rocks. IN A",
        ["ftp-us-west-1.coredns.rocks. 300 IN A 10.10.10.10",
         "ftp-us-west-1.coredns.rocks. 300 IN A 10.20.20.20"]),
    # regex without: the owners stay; the expression is not anchored, the whole name replaced
    ("ftp-us-west-1.example.org", "A"): (
        "NOERROR", "ftp-us-west-1.example.org. IN A",
        ["ftp.service.us-west-1.consul. 300 IN A 10.10.10.10",
         "ftp.service.us-west-1.consul. 300 IN A 10.20.20.20"]),
    ("ftp-us-west-1.example.org.evil.com", "A"): (
        "NOERROR", "ftp-us-west-1.example.org.evil.com. IN A",
        ["ftp.service.us-west-1.consul. 300 IN A 10.10.10.10",
         "ftp.service.us-west-1.consul. 300 IN A 10.20.20.20"]),
    # a rewrite to a name that is not one: SERVFAIL for the question asked
    ("a.broken.test", "A"): ("SERVFAIL", "a.broken.test. IN A", []),
    # TTLs clamped into 30-300; set to 15 by a continue rule
    ("ttl.example.com", "A"): (
        "NOERROR", "ttl.example.com. IN A",
        sorted(["ttl.example.com. 30 IN A 10.0.1.1", "ttl.example.com. 300 IN A 10.0.1.2",
                "ttl.example.com. 100 IN A 10.0.1.3"])),
    ("fixed.example.com", "A"): (
        "NOERROR", "fixed.example.com. IN A",
        ["fixed.example.com. 15 IN A 10.0.2.1", "fixed.example.com. 15 IN A 10.0.2.2"]),
    # CoreDNS 1.13 applies an rcode rule once per record: a bare NXDOMAIN keeps its rcode
    ("nx.example.com", "A"): ("NXDOMAIN", "nx.example.com. IN A", []),
    # the cluster zone is untouched (here on the slow path: regex rules take every query)
    ("kubernetes.default.svc.cluster.local", "A"): (
        "NOERROR", "kubernetes.default.svc.cluster.local. IN A",
        ["kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"]),
}


@pytest.mark.parametrize(("name", "qtype"), list(RULES_TABLE))
def test_rules(rules: ServerProcess, name: str, qtype: str) -> None:
    assert shape(exchange(rules.port, name, qtype)) == RULES_TABLE[(name, qtype)]


def test_the_upstream_is_asked_the_rewritten_questions(rules: ServerProcess,
                                                       upstream: FakeUpstream) -> None:
    asked = {
        ("a.example.com", "A"): ("c.example.com.", "A"),
        ("x.example.com", "MX"): ("x.example.com.", "TXT"),
        ("foo.example.com", "A"): ("bar.example.com.", "A"),
        ("foobar.example.com", "A"): ("foobar.example.com.", "A"),
        ("ftp.service.us-west-1.example.org", "A"): ("ftp.service.us-west-1.consul.", "A"),
        ("ftp-us-west-1.coredns.rocks", "A"): ("ftp.service.us-west-1.consul.", "A"),
        ("ftp-us-west-1.example.org.evil.com", "A"): ("ftp.service.us-west-1.consul.", "A"),
    }
    for (name, qtype), expected in asked.items():
        before = len(upstream.log)
        exchange(rules.port, name, qtype)
        assert [entry[1:] for entry in upstream.log[before:]] == [expected], name
    before = len(upstream.log)
    exchange(rules.port, "a.broken.test", "A")
    assert upstream.log[before:] == []  # SERVFAIL before the rest of the chain


def test_only_continue_rules_without_answer_rules_leave_the_question_rewritten(
        rules: ServerProcess) -> None:
    """CoreDNS reverts nothing when only ``continue`` rules applied and none asked for a
    response rule: the client sees the rewritten type in the question."""
    reply = exchange(rules.port, "x.example.com", "ANY")
    assert shape(reply) == ("NOERROR", "x.example.com. IN TXT", ['x.example.com. 300 IN TXT "hello"'])


def test_an_rcode_rule_needs_a_record_and_an_opt_counts(rules: ServerProcess) -> None:
    reply = exchange(rules.port, "nx.example.com", "A", edns=1232)
    assert shape(reply) == ("NOERROR", "nx.example.com. IN A", [])
    assert reply.edns == 0


def test_a_reply_that_grows_is_cut_to_the_udp_size(rules: ServerProcess) -> None:
    name = "truncation-needs-a-long-question-name.example.com"
    udp = exchange(rules.port, name, "A")
    assert udp.flags & dns.flags.TC and udp.answer == []
    assert question(udp) == f"{name}. IN A"
    tcp = exchange(rules.port, name, "A", tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert lines(tcp.answer) == sorted(f"{name}. 300 IN A 10.1.0.{i}" for i in range(1, 31))
    assert len(exchange(rules.port, name, "A", edns=4096).answer) == 30


# -- the Corefile --------------------------------------------------------------------------

def _corefile(line: str) -> str:
    return f".:53 {{\n    kubernetes cluster.local\n    {line}\n}}\n"


def options_of(line: str) -> tuple[RewriteOptions, ...]:
    chained = corefile.parse(_corefile(line), env={}).chain
    assert all(isinstance(options, RewriteOptions) for options in chained)
    return tuple(options for options in chained if isinstance(options, RewriteOptions))


def exact(name: str) -> NameMatch:
    return NameMatch("exact", name)


PARSED = {
    "rewrite name example.net example.org":
        RewriteOptions(NameRule(exact("example.net."), "example.org.", True)),
    "rewrite continue name exact A.Example.NET b.example.org answer value (.*) {1}":
        RewriteOptions(NameRule(exact("a.example.net."), "b.example.org.", True,
                                (AnswerRewrite("value", "(.*)", "{1}."),)), stop=False),
    "rewrite name suffix .schmoogle.com. .google.com.":
        RewriteOptions(NameRule(NameMatch("suffix", ".schmoogle.com."), ".google.com.", False)),
    "rewrite STOP name PREFIX foo bar answer auto":
        RewriteOptions(NameRule(NameMatch("prefix", "foo."), "bar.", True)),
    r"rewrite name regex (.*)-(us-west-1)\.example\.org {1}.service.{2}.consul":
        RewriteOptions(NameRule(NameMatch("regex", r"(.*)-(us-west-1)\.example\.org"),
                                "{1}.service.{2}.consul.", False)),
    # the README's PTR example: "answer name auto" is a name rule from "auto" to "answer."
    r"rewrite stop { name suffix .arpa .arpa \n answer name auto \n "
    r"answer value (.*)\.service\.consul\. {1}.coredns.rocks. }":
        RewriteOptions(NameRule(NameMatch("suffix", ".arpa."), ".arpa.", False, (
            AnswerRewrite("name", "auto", "answer."),
            AnswerRewrite("value", r"(.*)\.service\.consul\.", "{1}.coredns.rocks.")))),
    "rewrite name substring a b answer auto value x y":
        RewriteOptions(NameRule(NameMatch("substring", "a."), "b.", True,
                                (AnswerRewrite("value", "x", "y."),))),
    "rewrite type any hinfo": RewriteOptions(TypeRule(255, 13)),
    "rewrite continue type NSAP-PTR a": RewriteOptions(TypeRule(23, 1), stop=False),
    "rewrite class IN CH": RewriteOptions(ClassRule(1, 3)),
    "rewrite ttl example.com. 30-300": RewriteOptions(TtlRule(exact("example.com."), 30, 300)),
    "rewrite ttl example.com. -30": RewriteOptions(TtlRule(exact("example.com."), 0, 30)),
    "rewrite ttl example.com. 30-": RewriteOptions(TtlRule(exact("example.com."), 30, 2147483647)),
    "rewrite continue { ttl regex (.*)\\.coredns\\.rocks 15 }": RewriteOptions(
        TtlRule(NameMatch("regex", r"(.*)\.coredns\.rocks"), 15, 15), stop=False),
    "rewrite ttl Suffix .Local 4294967295":
        RewriteOptions(TtlRule(NameMatch("suffix", ".local."), 4294967295, 4294967295)),
    "rewrite continue { rcode regex (.*)\\.coredns\\.rocks SERVFAIL NOERROR }": RewriteOptions(
        RcodeRule(NameMatch("regex", r"(.*)\.coredns\.rocks"), 2, 0), stop=False),
    "rewrite rcode a.com notimpl 23": RewriteOptions(RcodeRule(exact("a.com."), 4, 23)),
    r"rewrite name regex ^(?<svc>[a-z]+)\.corp\.example\.\z {1}.default.svc.cluster.local":
        RewriteOptions(NameRule(NameMatch("regex", r"^(?<svc>[a-z]+)\.corp\.example\.\z"),
                                "{1}.default.svc.cluster.local.", False)),
}


@pytest.mark.parametrize("line", list(PARSED))
def test_parse(line: str) -> None:
    assert options_of(line.replace(r" \n ", "\n")) == (PARSED[line],)


def test_options_compare_by_value() -> None:
    assert options_of("rewrite name a b") == options_of("rewrite name exact A. B")
    assert options_of("rewrite name a b") != options_of("rewrite continue name a b")
    rules = "rewrite name a b\n    rewrite continue type A AAAA"
    assert [options.rule for options in options_of(rules)] == [
        NameRule(exact("a."), "b.", True), TypeRule(1, 28)]  # one rule per directive, in order


ERRORS = {
    "rewrite": "rewrite: expected a rule: [continue|stop] name|type|class|ttl|rcode ...",
    "rewrite continue": "rewrite: continue must be followed by a rule",
    "rewrite stop": "rewrite: stop must be followed by a rule",
    "rewrite name": "rewrite name: expected [MATCH] FROM TO",
    "rewrite name a.com": "rewrite name: expected [MATCH] FROM TO",
    "rewrite name a.com b.com answer auto":
        "rewrite name: match 'a.com' is not one of exact, prefix, suffix, substring, regex "
        "(a rule with answer options names it)",
    "rewrite name regex ( x": "rewrite name: '(' is not a valid regular expression",
    "rewrite name regex [bad[ bar answer name bar foo":
        "rewrite name: '[bad[' is not a valid regular expression",
    r"rewrite name regex (?=x)y z": "rewrite name: '(?=x)y' is not a valid regular expression",
    r"rewrite name regex (a)\1 z": "rewrite name: '(a)\\\\1' is not a valid regular expression",
    "rewrite name regex a {1}":
        "rewrite name: '{1}' refers to more groups (1) than 'a' has (0)",
    "rewrite name exact a.com b(.com":
        "rewrite name: 'b(.com.' is not a valid regular expression",
    "rewrite name exact {1}.com b.com":
        "rewrite name: '{1}.com.' refers to more groups (1) than 'b.com.' has (0)",
    "rewrite name suffix a b answer auto answer name x y":
        "rewrite name suffix: answer auto and answer name exclude each other",
    "rewrite name suffix a b answer": "rewrite name suffix: expected answer auto|name FROM TO|value FROM TO",
    "rewrite name suffix a b auto x": "rewrite name suffix: 'auto' is one argument too many "
                                      "(answer options start with 'answer')",
    "rewrite name suffix a b answer auto answer":
        "rewrite name suffix: 'answer' needs auto, name or value",
    "rewrite name suffix a b answer value x": "rewrite name suffix: answer value needs FROM and TO",
    "rewrite name suffix a b answer Auto x":
        "rewrite name suffix: unknown answer option 'Auto' (auto, name or value)",
    "rewrite name regex a b answer name ( x":
        "rewrite name regex answer name: '(' is not a valid regular expression",
    "rewrite type A": "rewrite type: expected FROM TO, got 1 arguments",
    "rewrite type A AAAA MX": "rewrite type: expected FROM TO, got 3 arguments",
    "rewrite type A FOO": "rewrite type: unknown type 'FOO'",
    "rewrite type TYPE65 A": "rewrite type: unknown type 'TYPE65'",
    "rewrite class IN XX": "rewrite class: unknown class 'XX'",
    "rewrite ttl a.com": "rewrite ttl: expected [MATCH] NAME TTL, got 1 arguments",
    "rewrite ttl exact a.com 5 6": "rewrite ttl: expected [MATCH] NAME TTL, got 4 arguments",
    "rewrite ttl a.com -": "rewrite ttl: '-' is not a TTL (N, MIN-MAX, MIN- or -MAX seconds)",
    "rewrite ttl a.com 10-5": "rewrite ttl: '10-5' is not a TTL (N, MIN-MAX, MIN- or -MAX seconds)",
    "rewrite ttl a.com 4294967296":
        "rewrite ttl: '4294967296' is not a TTL (N, MIN-MAX, MIN- or -MAX seconds)",
    "rewrite ttl a.com +5": "rewrite ttl: '+5' is not a TTL (N, MIN-MAX, MIN- or -MAX seconds)",
    "rewrite ttl foo a.com 5":
        "rewrite ttl: match 'foo' is not one of exact, prefix, suffix, substring, regex",
    "rewrite ttl regex ( 5": "rewrite ttl: '(' is not a valid regular expression",
    "rewrite rcode a.com 24 0": "rewrite rcode: '24' is not an rcode (0 to 23, or a name such as NXDOMAIN)",
    "rewrite rcode a.com 0 BADVERS": "rewrite rcode: 'BADVERS' is not an rcode (0 to 23, or a name such as NXDOMAIN)",
    "rewrite rcode a.com 0": "rewrite rcode: expected [MATCH] NAME FROM TO, got 2 arguments",
    "rewrite answer name a b": "rewrite: an answer rule must follow a name rule",
    "rewrite bogus a b": "rewrite: unknown rule type 'bogus' (expected name, type, class, ttl or rcode)",
}


@pytest.mark.parametrize("line", list(ERRORS))
def test_errors_name_the_line(line: str) -> None:
    with pytest.raises(CorefileError) as caught:
        corefile.parse(_corefile(line), env={})
    assert str(caught.value) == f"Corefile:3: {ERRORS[line]}"


def test_a_rule_on_its_line_takes_no_block() -> None:
    text = ".:53 {\n    kubernetes cluster.local\n    rewrite name a b {\n        name c d\n    }\n}\n"
    with pytest.raises(CorefileError) as caught:
        corefile.parse(text, env={})
    assert str(caught.value) == "Corefile:3: rewrite: a rule written on its line takes no block"


def test_a_block_holds_one_rule() -> None:
    text = (".:53 {\n    kubernetes cluster.local\n    rewrite stop {\n"
            "        name regex foo bar\n        answer name bar foo\n        name baz\n"
            "    }\n}\n")
    with pytest.raises(CorefileError) as caught:
        corefile.parse(text, env={})
    assert str(caught.value) == "Corefile:6: rewrite name regex: answer name needs FROM and TO"


REFUSED = {
    "rewrite edns0 local set 0xffee abcd": "rewrite: edns0 rules are not supported",
    "rewrite continue edns0 subnet set 24 56": "rewrite: edns0 rules are not supported",
    "rewrite cname exact a.example.net. b.example.net.": "rewrite: cname rules are not supported",
    "rewrite class CH IN": "rewrite class: only class IN queries reach the plugins here (other "
                           "classes are refused before them)",
    "rewrite name regex [[:alpha:]]+ x": "rewrite name: '[[:alpha:]]+' uses RE2 syntax "
                                        "([:class:]) this server does not translate",
    r"rewrite name regex \pL x": "rewrite name: '\\\\pL' uses RE2 syntax (\\p) this server "
                                 "does not translate",
    "rewrite name regex a(?i)b x": "rewrite name: 'a(?i)b' uses RE2 syntax (flags in the "
                                   "middle of the expression) this server does not translate",
}


@pytest.mark.parametrize("line", list(REFUSED))
def test_refused_and_left_out_when_lenient(line: str) -> None:
    with pytest.raises(CorefileError) as caught:
        corefile.parse(_corefile(line), env={})
    assert str(caught.value) == f"Corefile:3: {REFUSED[line]}"
    parsed = corefile.parse_with_warnings(_corefile(line), lenient=True, env={})
    assert parsed.config.chain == ()
    assert [str(warning) for warning in parsed.warnings] == [f"Corefile:3: {REFUSED[line]}; ignored"]


# -- the fast path -------------------------------------------------------------------------

def wire(name: str) -> bytes:
    return b"".join(bytes((len(label),)) + label.encode() for label in name.split(".")) + b"\x00"


EVERYTHING = chain.Interception(zones=(b"\x00",))
INTERCEPTIONS = {
    # outside the cluster zones: nothing leaves the fast path
    "rewrite name suffix .corp.example .svc.cluster.local answer auto": chain.NOTHING,
    "rewrite name exact db.example.org db.shop.svc.cluster.local": chain.NOTHING,
    "rewrite name suffix xcluster.local y": chain.NOTHING,
    "rewrite ttl example.com. 30-300": chain.NOTHING,
    "rewrite rcode suffix .example.com NXDOMAIN NOERROR": chain.NOTHING,
    # an exact name inside them: that name
    "rewrite name exact Frontend.Default.svc.cluster.local api.shop.svc.cluster.local":
        chain.Interception(names=frozenset((wire("frontend.default.svc.cluster.local"),))),
    "rewrite ttl 1.0.96.10.in-addr.arpa 60":
        chain.Interception(names=frozenset((wire("1.0.96.10.in-addr.arpa"),))),
    # a suffix: the zone it is the end of, as far as it is inside them
    "rewrite name suffix .svc.cluster.local .svc.example.com":
        chain.Interception(zones=(wire("svc.cluster.local"),)),
    "rewrite name suffix cluster.local example.com":
        chain.Interception(zones=(wire("cluster.local"),)),
    "rewrite name suffix local example": chain.Interception(zones=(wire("cluster.local"),)),
    "rewrite ttl suffix .arpa 30":
        chain.Interception(zones=(wire("in-addr.arpa"), wire("ip6.arpa"))),
    "rewrite name suffix . .example.": EVERYTHING,
    # anything else may match any name
    "rewrite name prefix foo bar": EVERYTHING,
    "rewrite name substring service.us-west-1.example.org service.us-west-1.consul": EVERYTHING,
    r"rewrite name regex (.*)-(us-west-1)\.example\.org {1}.service.{2}.consul": EVERYTHING,
    r"rewrite ttl regex (.*)\.coredns\.rocks 15": EVERYTHING,
    # types: those queries, wherever they are; class IN: every query the fast path answers
    "rewrite type ANY HINFO": chain.Interception(zones=(b"\x00",), qtypes=frozenset((255,))),
    "rewrite class IN CH": EVERYTHING,
}


@pytest.mark.parametrize("line", list(INTERCEPTIONS))
def test_interception(line: str) -> None:
    (options,) = options_of(line)
    plugin = options.build(chain.BuildContext(cluster_zones=("cluster.local",)))
    assert plugin.name == "rewrite"
    assert plugin.interception() == INTERCEPTIONS[line]


def test_root_cluster_zone_puts_every_suffix_on_the_slow_path() -> None:
    (options,) = options_of("rewrite name suffix .corp.example .svc.cluster.local")
    plugin = options.build(chain.BuildContext(cluster_zones=(".",)))
    assert plugin.interception() == chain.Interception(zones=(wire("corp.example"),))
    assert rewrite.PLUGIN == "rewrite"


# -- in process: the question the rest of the chain sees, and every value type -------------

def _plugins(*lines: str) -> chain.Next:
    """The chain of ``rewrite`` lines ending in a function that records what it is asked and
    answers from ``ANSWERS`` (a dnspython reply to the question it got)."""
    text = "\n    ".join(lines)
    plugins = [options.build(chain.BuildContext(("cluster.local",)))
               for options in options_of(text)]
    return chain.compose(plugins, _answering)


SEEN: list[dns.message.Message] = []
ANSWERS: dict[str, list[str]] = {}


def _answering(request: chain.Request) -> chain.Reply:
    query = dns.message.from_wire(request.data)
    SEEN.append(query)
    reply = dns.message.make_response(query)
    for text in ANSWERS.get(request.key.hex(), []):
        reply.answer.append(dns.rrset.from_text(*text.split(maxsplit=4)))
    return reply.to_wire()


def _ask(next_plugin: chain.Next, name: str, qtype: str = "A") -> dns.message.Message:
    data = dns.message.make_query(name, qtype).to_wire()
    query = rewrite.wire.parse_query(data)
    request = chain.Request(data, query, query.name.lower(), False, "127.0.0.1",
                            lambda *_: None)
    reply = next_plugin(request)
    assert isinstance(reply, bytes)
    return dns.message.from_wire(reply, one_rr_per_rrset=True)


# CoreDNS's name_test.go: (rule, question) -> the question the next plugin gets
ASKED = {
    ("rewrite name prefix foo bar", "foo.example.com."): "bar.example.com.",
    ("rewrite name prefix foo. bar.", "foo.example.com."): "bar.example.com.",
    ("rewrite name suffix com org", "foo.example.com."): "foo.example.org.",
    ("rewrite name suffix .com .org", "foo.example.com."): "foo.example.org.",
    ("rewrite name suffix .ingress.coredns.rocks nginx.coredns.rocks",
     "coredns.ingress.coredns.rocks."): "corednsnginx.coredns.rocks.",
    ("rewrite name prefix foo bar", "coredns.foo."): "coredns.foo.",
    ("rewrite name suffix com org", "com.coredns."): "com.coredns.",
    ("rewrite name substring service svc", "com.coredns."): "com.coredns.",
    ("rewrite name substring a. x.", "a.a.b.a."): "x.x.b.x.",
    ("rewrite name exact Example.NET example.org", "EXAMPLE.net."): "example.org.",
    (r"rewrite name regex ^(a)(b)?\. {2}{1}x.", "a.com."): "ax.",
}


@pytest.mark.parametrize(("rule", "name"), list(ASKED))
def test_the_next_plugin_gets_the_rewritten_question(rule: str, name: str) -> None:
    SEEN.clear()
    reply = _ask(_plugins(rule), name)
    assert [query.question[0].name.to_text() for query in SEEN] == [ASKED[(rule, name)]]
    assert reply.question[0].name.to_text() == name  # restored, case and all


def test_exact_maps_the_name_back_in_every_value_coredns_rewrites() -> None:
    """Owners and the values of SRV, MX, CNAME, NS, DNAME, NAPTR, SOA (its primary server
    only) and PTR; other names (the SOA's mailbox, RP) are left as they are."""
    new = "new.example.org."
    ANSWERS.clear()
    ANSWERS[wire("new.example.org").hex()] = [
        f"{new} 60 IN CNAME {new}", f"{new} 60 IN MX 10 {new}", f"{new} 60 IN NS {new}",
        f"{new} 60 IN PTR {new}", f"{new} 60 IN DNAME {new}",
        f"{new} 60 IN SRV 0 0 80 {new}", f'{new} 60 IN NAPTR 1 1 "s" "SIP+D2U" "" {new}',
        f"{new} 60 IN SOA {new} {new} 1 2 3 4 5", f"{new} 60 IN RP {new} {new}",
        f"a.{new} 60 IN TXT \"{new}\"", f"x.org. 60 IN CNAME a.{new}",
    ]
    reply = _ask(_plugins("rewrite name exact Old.Example.COM new.example.org"),
                 "old.example.COM", "ANY")
    old = "old.example.com."
    assert question(reply) == "old.example.COM. IN ANY"
    assert lines(reply.answer) == sorted([
        f"{old} 60 IN CNAME {old}", f"{old} 60 IN MX 10 {old}", f"{old} 60 IN NS {old}",
        f"{old} 60 IN PTR {old}", f"{old} 60 IN DNAME {old}", f"{old} 60 IN SRV 0 0 80 {old}",
        f'{old} 60 IN NAPTR 1 1 "s" "SIP+D2U" "" {old}',
        f"{old} 60 IN SOA {old} {new} 1 2 3 4 5", f"{old} 60 IN RP {new} {new}",
        f'a.{old} 60 IN TXT "{new}"', f"x.org. 60 IN CNAME a.{old}",
    ])


def test_response_rules_run_last_collected_first() -> None:
    """Two continue rules and a stop rule: answers map back through each, in reverse."""
    ANSWERS.clear()
    ANSWERS[wire("d.example").hex()] = ["d.example. 60 IN A 192.0.2.1",
                                        "d.example. 60 IN CNAME sub.d.example."]
    reply = _ask(_plugins("rewrite continue name exact a.example b.example",
                          "rewrite continue name suffix b.example c.example answer auto",
                          "rewrite name exact c.example d.example",
                          "rewrite name exact d.example never.example"), "A.example")
    assert question(reply) == "A.example. IN A"
    assert lines(reply.answer) == ["a.example. 60 IN A 192.0.2.1",
                                   "a.example. 60 IN CNAME sub.a.example."]


def test_the_cluster_files_rules_take_one_name_off_the_fast_path() -> None:
    parsed = corefile.parse_with_warnings(CLUSTER.format(upstream="127.0.0.1:53"),
                                          lenient=True, env={})
    context = chain.BuildContext(cluster_zones=parsed.config.zones)
    guard = chain.FastPathGuard(options.build(context).interception()
                                for options in parsed.config.chain)
    assert not guard.empty
    assert guard(wire("frontend.default.svc.cluster.local"), 1)
    for name in ("kubernetes.default.svc.cluster.local", "api.shop.svc.cluster.local",
                 "1.0.96.10.in-addr.arpa", "db.shop.svc.cluster.local"):
        assert not guard(wire(name), 1), name
