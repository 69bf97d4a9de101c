"""CoreDNS's ``template`` plugin: the Corefile's options, and the running server's answers.

Expected answers come from CoreDNS 1.13's ``plugin/template`` (setup.go, template.go) and its
README: templates tried in Corefile order; a name outside the zone, class or type goes on; a
name in the zone that no regex matches is SERVFAIL unless ``fallthrough``; a match answers with
AA, the rcode and the records exactly as rendered (no SOA added, TTL 3600 and origin ``.`` when
the text leaves them out); ``rcode SERVFAIL`` is a plain SERVFAIL; an A/AAAA answer's CNAME is
followed; ``ederror`` adds an EDE option to an OPT (UDP 4096, DO, when the query had none).
The server runs the cluster zone and ``forward`` to a real upstream on loopback behind it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from conftest import EXAMPLE, RunningServer, StartServer, rr_lines
from upstream import FakeUpstream

from dnsserver.config import corefile
from dnsserver.config.directives import BadValue, CorefileError, UnknownOption, Unsupported
from dnsserver.plugins import chain, template
from dnsserver.serve import wire

DATA = Path(__file__).resolve().parent / "data" / "corefiles"

UPSTREAM_RECORDS = [
    "google.test. 300 IN A 192.0.2.10",
    "foo.example.test. 300 IN A 192.0.2.20",
    'ip-10-1-2-3.example.test. 300 IN TXT "from upstream"',
    "outside.test. 300 IN A 192.0.2.30",
    "vm1.abc.internal.cloudapp.net. 300 IN A 192.0.2.40",
    "x.left-out.test. 300 IN A 192.0.2.50",
    "x.if.test. 300 IN A 192.0.2.51",
]
UPSTREAM_SOA = "test. 300 IN SOA ns.test. admin.test. 1 2 3 4 5"
BIG = ["x" * 150 + str(n) for n in range(4)]  # four TXT records: more than 512 bytes

# CoreDNS README's examples (the A/PTR pair, .invalid, the CNAME), AKS's two templates, the
# AAAA block of the issue, one template per rule to show, and two that only --lenient lets
# through (left out, whole).
CORE_FILE = r"""
.:53 {
    kubernetes cluster.local in-addr.arpa ip6.arpa
    forward . UPSTREAM
    template IN A example.test {
        match "^ip-(?P<a>[0-9]+)-(?P<b>[0-9]+)-(?P<c>[0-9]+)-(?P<d>[0-9]+)[.]example[.]test[.]$"
        answer "{{ .Name }} 60 IN A {{ .Group.a }}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
        fallthrough
    }
    template IN PTR 192.0.2.0/24 {
        match ^(?P<d>[0-9]+)[.]2[.]0[.]192[.]in-addr[.]arpa[.]$
        answer "{{ .Name }} 60 IN PTR ip-192-0-2-{{ .Group.d }}.example.test."
    }
    template IN A wild.test {
        match "^(?P<a>[0-9]*)\.wild\.test\.$"
        answer "{{ .Name }} 60 IN A 10.0.0.{{ .Group.a }}"
    }
    template IN AAAA v6.test {
        match "^h([0-9]+)\.v6\.test\.$"
        answer "{{ .Name }} 60 IN AAAA 2001:db8::{{ index .Match 1 }}"
    }
    template IN AAAA . {
        rcode NXDOMAIN
    }
    template ANY ANY invalid {
        rcode NXDOMAIN
        authority "invalid. 60 {{ .Class }} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"
        ederror 21 "Blocked according to RFC2606"
    }
    template ANY ANY internal.cloudapp.net {
        match "^(?:[^.]+\.){4,}internal\.cloudapp\.net\.$"
        rcode NXDOMAIN
        fallthrough
    }
    template ANY ANY reddog.microsoft.com {
        rcode NXDOMAIN
    }
    template IN ANY foogle.test {
        match "^foogle\.test\.$"
        answer "foogle.test 60 IN CNAME google.test"
    }
    template IN A alias.test {
        answer "{{ .Name }} 30 IN CNAME kubernetes.default.svc.cluster.local."
    }
    template IN TXT data.test {
        match "^(?P<first>[a-z]+)(-(?P<opt>x))?[.](?P<second>[a-z]+)[.]data[.]test[.]$"
        answer "{{ .Name }} 5 IN TXT \"zone={{ .Zone }}\" \"type={{ .Type }} class={{ .Class }}\" \"asked={{ .Question.Name }} {{ .Question.Qtype }}\" \"first={{ .Group.first }} fourth={{ index .Group \"4\" }} opt={{ .Group.opt }} none={{ .Group.none }}\" \"match={{ .Match }}\" \"remote={{ .Remote }}\" \"hex={{ parseInt \"ff\" 16 8 }} {{- /* a comment */ -}} !\""
    }
    template IN MX mx.test {
        answer "{{ .Name }} 60 IN MX 10 mail.{{ .Zone }}"
        additional "mail.{{ .Zone }} 60 IN A 192.0.2.25"
        authority "{{ .Zone }} 60 IN NS ns.{{ .Zone }}"
    }
    template IN A defaults.test {
        answer "{{ .Name }} IN A 192.0.2.1" "bar A 192.0.2.2"
    }
    template IN A fail.test {
        rcode SERVFAIL
        answer "{{ .Name }} 60 IN A 192.0.2.3"
    }
    template IN A broken.test {
        answer "{{ index .Match 5 }} 60 IN A 192.0.2.4"
    }
    template IN A nodata.test
    template IN A order.test {
        match ^first[.]
        answer "{{ .Name }} 60 IN A 192.0.2.11"
        fallthrough
    }
    template IN A order.test {
        answer "{{ .Name }} 60 IN A 192.0.2.12"
    }
    template IN A refused.test {
        rcode REFUSED
    }
    template IN A left-out.test {
        answer "{{ .Name }} 60 IN A 192.0.2.99"
        var x 1
    }
    template IN A if.test {
        answer "{{ if .Name }}x{{ end }} 60 IN A 192.0.2.1"
    }
    template IN TXT big.test {
        answer "big.test. 60 IN TXT BIG0" "big.test. 60 IN TXT BIG1" "big.test. 60 IN TXT BIG2" "big.test. 60 IN TXT BIG3"
    }
}
"""

Expected = tuple[str, bool, list[str], list[str], list[str]]  # rcode, AA, answer, authority, additional

NOTHING: list[str] = []
UPSTREAM_NXDOMAIN = ("NXDOMAIN", False, NOTHING, ["test. 300 IN SOA ns.test. admin.test. SERIAL 2 3 4 5"], NOTHING)
SERVFAIL = ("SERVFAIL", False, NOTHING, NOTHING, NOTHING)

ANSWERS: list[tuple[str, str, str, Expected]] = [
    ("the README's A template, the name in the client's case",
     "IP-10-1-2-3.Example.test.", "A",
     ("NOERROR", True, ["ip-10-1-2-3.example.test. 60 IN A 10.1.2.3"], NOTHING, NOTHING)),
    ("a query of type ANY matches the A template", "ip-10-1-2-3.example.test.", "ANY",
     ("NOERROR", True, ["ip-10-1-2-3.example.test. 60 IN A 10.1.2.3"], NOTHING, NOTHING)),
    ("another type goes on to forward", "ip-10-1-2-3.example.test.", "TXT",
     ("NOERROR", False, ['ip-10-1-2-3.example.test. 300 IN TXT "from upstream"'], NOTHING, NOTHING)),
    ("no regex match, fallthrough: forward answers", "foo.example.test.", "A",
     ("NOERROR", False, ["foo.example.test. 300 IN A 192.0.2.20"], NOTHING, NOTHING)),
    ("the regex is anchored by its own ^: a subdomain falls through", "sub.ip-10-1-2-3.example.test.", "A",
     UPSTREAM_NXDOMAIN),
    ("the README's PTR template on a CIDR zone", "5.2.0.192.in-addr.arpa.", "PTR",
     ("NOERROR", True, ["5.2.0.192.in-addr.arpa. 60 IN PTR ip-192-0-2-5.example.test."], NOTHING, NOTHING)),
    ("no regex match without fallthrough is SERVFAIL", "x.5.2.0.192.in-addr.arpa.", "PTR", SERVFAIL),
    ("a cluster PTR outside the template's zone", "1.0.96.10.in-addr.arpa.", "PTR",
     ("NOERROR", True, ["1.0.96.10.in-addr.arpa. 5 IN PTR kubernetes.default.svc.cluster.local."], NOTHING, NOTHING)),
    ("the issue's wildcard domain", "7.Wild.test.", "A",
     ("NOERROR", True, ["7.wild.test. 60 IN A 10.0.0.7"], NOTHING, NOTHING)),
    ("a name of its zone that the regex misses", "x.wild.test.", "A", SERVFAIL),
    ("index .Match", "h42.v6.test.", "AAAA",
     ("NOERROR", True, ["h42.v6.test. 60 IN AAAA 2001:db8::42"], NOTHING, NOTHING)),
    ("an earlier template without fallthrough stops the later ones", "other.v6.test.", "AAAA", SERVFAIL),
    ("rcode NXDOMAIN alone: AA, no SOA, for a cluster Service", "frontend.default.svc.cluster.local.", "AAAA",
     ("NXDOMAIN", True, NOTHING, NOTHING, NOTHING)),
    ("its A query is the cluster's answer", "frontend.default.svc.cluster.local.", "A",
     ("NOERROR", True, ["frontend.default.svc.cluster.local. 5 IN A 10.96.100.1"], NOTHING, NOTHING)),
    ("and a forwarded name's AAAA is the template's too", "outside.test.", "AAAA",
     ("NXDOMAIN", True, NOTHING, NOTHING, NOTHING)),
    ("a name no template holds is forwarded", "outside.test.", "A",
     ("NOERROR", False, ["outside.test. 300 IN A 192.0.2.30"], NOTHING, NOTHING)),
    ("the README's .invalid: NXDOMAIN with the templated SOA", "foo.invalid.", "A",
     ("NXDOMAIN", True, NOTHING, ["invalid. 60 IN SOA ns.invalid. hostmaster.invalid. SERIAL 60 60 60 60"], NOTHING)),
    ("Corefile order: the AAAA template comes before .invalid's", "foo.invalid.", "AAAA",
     ("NXDOMAIN", True, NOTHING, NOTHING, NOTHING)),
    ("AKS: four labels or more before internal.cloudapp.net", "x.ns.svc.cluster.local.internal.cloudapp.net.", "A",
     ("NXDOMAIN", True, NOTHING, NOTHING, NOTHING)),
    ("AKS: a VM's name falls through to forward", "vm1.abc.internal.cloudapp.net.", "A",
     ("NOERROR", False, ["vm1.abc.internal.cloudapp.net. 300 IN A 192.0.2.40"], NOTHING, NOTHING)),
    ("AKS: everything under reddog.microsoft.com", "anything.reddog.microsoft.com.", "TXT",
     ("NXDOMAIN", True, NOTHING, NOTHING, NOTHING)),
    ("the README's CNAME, followed through forward", "foogle.test.", "A",
     ("NOERROR", True, ["foogle.test. 60 IN CNAME google.test.", "google.test. 300 IN A 192.0.2.10"], NOTHING, NOTHING)),
    ("a CNAME is followed for A and AAAA only", "foogle.test.", "MX",
     ("NOERROR", True, ["foogle.test. 60 IN CNAME google.test."], NOTHING, NOTHING)),
    ("a CNAME followed into the cluster zone", "alias.test.", "A",
     ("NOERROR", True, ["alias.test. 30 IN CNAME kubernetes.default.svc.cluster.local.",
                        "kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"], NOTHING, NOTHING)),
    ("what a template sees", "ABC-x.Def.data.test.", "TXT",
     ("NOERROR", True, ['abc-x.def.data.test. 5 IN TXT "zone=data.test." "type=TXT class=IN" '
                        '"asked=ABC-x.Def.data.test. 16" "first=abc fourth=def opt=x none=<no value>" '
                        '"match=[abc-x.def.data.test. abc -x x def]" "remote=127.0.0.1" "hex=255!"'],
      NOTHING, NOTHING)),
    ("an unmatched optional group is empty", "abc.def.data.test.", "TXT",
     ("NOERROR", True, ['abc.def.data.test. 5 IN TXT "zone=data.test." "type=TXT class=IN" '
                        '"asked=abc.def.data.test. 16" "first=abc fourth=def opt= none=<no value>" '
                        '"match=[abc.def.data.test. abc   def]" "remote=127.0.0.1" "hex=255!"'],
      NOTHING, NOTHING)),
    ("answer, authority and additional sections", "mx.test.", "MX",
     ("NOERROR", True, ["mx.test. 60 IN MX 10 mail.mx.test."], ["mx.test. 60 IN NS ns.mx.test."],
      ["mail.mx.test. 60 IN A 192.0.2.25"])),
    ("NewRR's defaults: TTL 3600, origin '.', any owner", "x.defaults.test.", "A",
     ("NOERROR", True, ["bar. 3600 IN A 192.0.2.2", "x.defaults.test. 3600 IN A 192.0.2.1"], NOTHING, NOTHING)),
    ("rcode SERVFAIL is a plain SERVFAIL", "fail.test.", "A", SERVFAIL),
    ("a template failing to run is SERVFAIL", "broken.test.", "A", SERVFAIL),
    ("no answer and no rcode: NODATA, AA, no SOA", "nodata.test.", "A",
     ("NOERROR", True, NOTHING, NOTHING, NOTHING)),
    ("two templates of one zone: the first falls through", "first.order.test.", "A",
     ("NOERROR", True, ["first.order.test. 60 IN A 192.0.2.11"], NOTHING, NOTHING)),
    ("to the second", "second.order.test.", "A",
     ("NOERROR", True, ["second.order.test. 60 IN A 192.0.2.12"], NOTHING, NOTHING)),
    ("another rcode is the template's reply", "refused.test.", "A",
     ("REFUSED", True, NOTHING, NOTHING, NOTHING)),
    ("a cluster name is the cluster's", "kubernetes.default.svc.cluster.local.", "A",
     ("NOERROR", True, ["kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"], NOTHING, NOTHING)),
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(UPSTREAM_RECORDS, soa=UPSTREAM_SOA) as server:
        yield server


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, dns_server: StartServer,
           tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    path = tmp_path_factory.mktemp("template") / "Corefile"
    text = CORE_FILE.replace("UPSTREAM", upstream.address)
    for number, content in enumerate(BIG):
        text = text.replace(f"BIG{number}", content)
    path.write_text(text)
    return dns_server(EXAMPLE, "--corefile", str(path), "--lenient")


def _ask(server: RunningServer, qname: str, qtype: str, **options: object) -> dns.message.Message:
    tcp = bool(options.pop("tcp", False))
    message = dns.message.make_query(qname, qtype, **options)  # type: ignore[arg-type]
    send = dns.query.tcp if tcp else dns.query.udp
    return send(message, server.host, port=server.port, timeout=3)


def _seen(reply: dns.message.Message) -> Expected:
    return (dns.rcode.to_text(reply.rcode()), bool(reply.flags & dns.flags.AA),
            rr_lines(reply.answer), rr_lines(reply.authority), rr_lines(reply.additional))


@pytest.mark.parametrize(("qname", "qtype", "expected"), [case[1:] for case in ANSWERS],
                         ids=[case[0] for case in ANSWERS])
def test_answers(server: RunningServer, qname: str, qtype: str, expected: Expected) -> None:
    rcode, aa, answer, authority, additional = expected
    assert _seen(_ask(server, qname, qtype)) == (rcode, aa, sorted(answer), sorted(authority),
                                                 sorted(additional))


def test_reply_keeps_the_id_flags_and_case_of_the_question(server: RunningServer) -> None:
    query = dns.message.make_query("IP-10-1-2-3.Example.test.", "A")
    query.flags |= dns.flags.CD
    reply = dns.query.udp(query, server.host, port=server.port, timeout=3)
    assert reply.id == query.id
    assert reply.question[0].name.to_text() == "IP-10-1-2-3.Example.test."
    assert reply.answer[0].name.to_text() == "ip-10-1-2-3.example.test."  # .Name is lower case
    assert dns.flags.to_text(reply.flags) == "QR AA RD CD"  # never RA: template sets AA only
    assert reply.edns < 0  # no EDNS asked, none given


def test_cname_comes_before_what_it_was_followed_to(server: RunningServer) -> None:
    reply = _ask(server, "alias.test.", "A")
    assert [dns.rdatatype.to_text(rrset.rdtype) for rrset in reply.answer] == ["CNAME", "A"]


def test_edns_is_echoed_and_ederror_rides_in_the_opt(server: RunningServer) -> None:
    plain = _ask(server, "ip-10-1-2-3.example.test.", "A", use_edns=0, payload=1400,
                 want_dnssec=True)
    assert (plain.edns, plain.payload, plain.ednsflags & dns.flags.DO, list(plain.options)) == (
        0, 1400, dns.flags.DO, [])
    blocked = _ask(server, "foo.invalid.", "A", use_edns=0, payload=1232)
    assert (blocked.payload, blocked.ednsflags & dns.flags.DO) == (1232, 0)
    assert list(blocked.options) == [dns.edns.EDEOption(21, "Blocked according to RFC2606")]
    # CoreDNS adds its own OPT (4096, DO) for the EDE when the query had none
    without = _ask(server, "foo.invalid.", "A")
    assert (without.edns, without.payload, without.ednsflags & dns.flags.DO) == (
        0, 4096, dns.flags.DO)
    assert list(without.options) == [dns.edns.EDEOption(21, "Blocked according to RFC2606")]


def test_servfail_of_a_regex_miss_echoes_edns(server: RunningServer) -> None:
    reply = _ask(server, "x.5.2.0.192.in-addr.arpa.", "PTR", use_edns=0, want_dnssec=True)
    assert dns.rcode.to_text(reply.rcode()) == "SERVFAIL"
    assert (reply.edns, reply.ednsflags & dns.flags.DO) == (0, dns.flags.DO)


def test_a_reply_too_big_for_udp_is_truncated_and_whole_over_tcp(server: RunningServer) -> None:
    udp = _ask(server, "big.test.", "TXT")
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = _ask(server, "big.test.", "TXT", tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert rr_lines(tcp.answer) == sorted(f'big.test. 60 IN TXT "{text}"' for text in BIG)
    bigger = _ask(server, "big.test.", "TXT", use_edns=0, payload=4096)
    assert sum(len(rrset) for rrset in bigger.answer) == 4


# Cluster names, asked of a server without templates and of ours: the same replies.
CLUSTER_QUERIES = [
    ("kubernetes.default.svc.cluster.local.", "A"),
    ("_https._tcp.kubernetes.default.svc.cluster.local.", "SRV"),
    ("web-0.web.default.svc.cluster.local.", "A"),
    ("api.shop.svc.cluster.local.", "A"),
    ("frontend.default.svc.cluster.local.", "A"),
    ("1.0.96.10.in-addr.arpa.", "PTR"),
    ("nope.default.svc.cluster.local.", "A"),
    ("dns-version.cluster.local.", "TXT"),
    ("Kubernetes.Default.svc.cluster.local.", "A"),
]


@pytest.mark.parametrize(("qname", "qtype"), CLUSTER_QUERIES)
def test_cluster_names_are_answered_as_without_templates(
    server: RunningServer, example: RunningServer, qname: str, qtype: str
) -> None:
    ours, plain = _ask(server, qname, qtype), _ask(example, qname, qtype)
    assert _seen(ours) == _seen(plain)
    assert ours.flags == plain.flags
    assert [r.name.to_text() for r in ours.answer] == [r.name.to_text() for r in plain.answer]


# -- lenient mode: a template this server cannot run is left out, whole ---------------------

def test_lenient_mode_leaves_out_templates_it_cannot_run(server: RunningServer) -> None:
    # the server runs with --lenient: the two templates it cannot run are not there at all
    assert _seen(_ask(server, "x.left-out.test.", "A")) == (
        "NOERROR", False, ["x.left-out.test. 300 IN A 192.0.2.50"], NOTHING, NOTHING)
    assert _seen(_ask(server, "x.if.test.", "A")) == (
        "NOERROR", False, ["x.if.test. 300 IN A 192.0.2.51"], NOTHING, NOTHING)
    server.read_output()
    log = "\n".join(server.output)
    corefile_path = server.command[server.command.index("--corefile") + 1]
    line = CORE_FILE.splitlines().index("        var x 1") + 1  # lines count from 1
    assert f"{corefile_path}:{line}: template: unknown option 'var'; ignored" in log
    assert f"{corefile_path}:{line + 3}: template: answer '{{{{ if .Name }}}}x{{{{ end }}}} 60 IN A " \
        "192.0.2.1': '{{if}}' is not supported; ignored" in log


# -- the Corefile ---------------------------------------------------------------------------

def _corefile(*lines: str) -> str:
    """The kubernetes block with ``lines`` from line 3 on."""
    return ".:53 {\n    kubernetes cluster.local\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


BAD: list[tuple[str, str, type[CorefileError], int, str]] = [
    ("no class or type", _corefile("template"), BadValue, 3,
     "template: expected at least 2 arguments, got 0"),
    ("class in lower case", _corefile("template in a"), BadValue, 3,
     "template: invalid query class 'in' (one of IN, CS, CH, HS, NONE, ANY, in upper case)"),
    ("an unknown type", _corefile("template IN FOO"), BadValue, 3,
     "template: invalid query type 'FOO' (a type name such as A, AAAA, PTR or ANY, in upper case)"),
    ("a numeric type", _corefile("template IN TYPE65"), BadValue, 3,
     "template: invalid query type 'TYPE65'"),
    ("a class other than IN or ANY", _corefile("template CH TXT version.bind"), Unsupported, 3,
     "template: class CH is not supported: queries of classes other than IN are refused "
     "before any plugin (use IN or ANY)"),
    ("rcode in lower case", _corefile("template IN A {", "rcode nxdomain", "}"), BadValue, 4,
     "template: unknown rcode 'nxdomain' (a name such as NOERROR, NXDOMAIN or SERVFAIL, in upper case)"),
    ("rcode as a number", _corefile("template IN A {", "rcode 3", "}"), BadValue, 4,
     "template: unknown rcode '3'"),
    ("rcode with two values", _corefile("template IN A {", "rcode NXDOMAIN NOERROR", "}"), BadValue, 4,
     "template rcode: expected 1 argument, got 2"),
    ("an extended rcode", _corefile("template IN A {", "rcode BADCOOKIE", "}"), Unsupported, 4,
     "template: rcode BADCOOKIE is not supported: extended rcodes need an OPT record"),
    ("a regex Go rejects", _corefile("template IN A {", 'match "("', "}"), BadValue, 4,
     "template: could not parse regex '(': missing closing )"),
    ("a nested repetition", _corefile("template IN A {", "match a**", "}"), BadValue, 4,
     "template: could not parse regex 'a**': invalid nested repetition operator: '*'"),
    ("a back-reference", _corefile("template IN A {", r"match (a)\1", "}"), BadValue, 4,
     r"template: could not parse regex '(a)\\1': invalid escape sequence"),
    ("a lookahead", _corefile("template IN A {", "match a(?=b)", "}"), BadValue, 4,
     "template: could not parse regex 'a(?=b)': invalid or unsupported Perl syntax"),
    ("a Unicode class", _corefile("template IN A {", r"match \pL", "}"), Unsupported, 4,
     r"template: regex '\\pL': the Unicode class '\\pL' is not supported"),
    ("flags in the middle", _corefile("template IN A {", "match a(?i)b", "}"), Unsupported, 4,
     "template: regex 'a(?i)b': flags '(?i)' after the start (write (?flags:...) instead) is not supported"),
    ("the ungreedy flag", _corefile("template IN A {", "match (?U)a+", "}"), Unsupported, 4,
     "template: regex '(?U)a+': the U (ungreedy) flag is not supported"),
    ("match without a regex", _corefile("template IN A {", "match", "}"), BadValue, 4,
     "template match: expected at least 1 argument, got 0"),
    ("answer without a record", _corefile("template IN A {", "answer", "}"), BadValue, 4,
     "template answer: expected at least 1 argument, got 0"),
    ("an unclosed action", _corefile("template IN A {", 'answer "{{ .Name "', "}"), BadValue, 4,
     "template: could not compile answer '{{ .Name ': unclosed action"),
    ("a function Go does not have", _corefile("template IN A {", 'answer "{{ nope .Name }} A 1.2.3.4"', "}"),
     BadValue, 4, "template: could not compile answer '{{ nope .Name }} A 1.2.3.4': function \"nope\" not defined"),
    ("a field the data does not have", _corefile("template IN A {", 'answer "{{ .Nme }} A 1.2.3.4"', "}"),
     BadValue, 4, "template: could not compile answer '{{ .Nme }} A 1.2.3.4': can't evaluate field Nme"),
    ("parseInt with two arguments", _corefile("template IN A {", 'additional "{{ parseInt .Name 16 }} A 1.2.3.4"', "}"),
     BadValue, 4, "template: could not compile additional '{{ parseInt .Name 16 }} A 1.2.3.4': "
     "wrong number of args for parseInt: want 3 got 2"),
    ("a record that can never be read", _corefile("template IN A {", 'authority "x. 60 IN A 1.2.3"', "}"),
     BadValue, 4, "template: could not compile authority 'x. 60 IN A 1.2.3': not a resource record: "
     "bad A address '1.2.3'"),
    ("an if", _corefile("template IN A {", 'answer "{{ if .Name }}x{{ end }} A 1.2.3.4"', "}"),
     Unsupported, 4, "template: answer '{{ if .Name }}x{{ end }} A 1.2.3.4': '{{if}}' is not supported"),
    ("printf", _corefile("template IN A {", 'answer "{{ printf \\"%s\\" .Name }} A 1.2.3.4"', "}"),
     Unsupported, 4, "template: answer '{{ printf \"%s\" .Name }} A 1.2.3.4': the function printf is not supported"),
    ("a variable", _corefile("template IN A {", 'answer "{{ $x := .Name }} A 1.2.3.4"', "}"),
     Unsupported, 4, "template: answer '{{ $x := .Name }} A 1.2.3.4': template variables ($) is not supported"),
    (".Meta", _corefile("template IN A {", 'answer "{{ .Meta \\"kubernetes/client-namespace\\" }} A 1.2.3.4"', "}"),
     Unsupported, 4, "template: answer '{{ .Meta \"kubernetes/client-namespace\" }} A 1.2.3.4': .Meta (metadata) is not supported"),
    (".Message", _corefile("template IN A {", 'answer "{{ .Message.Id }} A 1.2.3.4"', "}"),
     Unsupported, 4, "template: answer '{{ .Message.Id }} A 1.2.3.4': .Message is not supported"),
    ("a type read only as RFC 3597", _corefile("template IN CAA {", 'answer "{{ .Name }} 60 IN CAA 0 issue \\"ca.test\\""', "}"),
     Unsupported, 4, "template: answer '{{ .Name }} 60 IN CAA 0 issue \"ca.test\"': CAA records "
     "(write them as \\# LENGTH HEX) is not supported"),
    ("ederror without a code", _corefile("template IN A {", "ederror", "}"), BadValue, 4,
     "template ederror: expected 1 to 2 arguments, got 0"),
    ("ederror with three values", _corefile("template IN A {", "ederror 1 a b", "}"), BadValue, 4,
     "template ederror: expected 1 to 2 arguments, got 3"),
    ("ederror that is not a number", _corefile("template IN A {", "ederror x", "}"), BadValue, 4,
     "template: extended DNS error code 'x' is not a number from 0 to 65535"),
    ("ederror too big", _corefile("template IN A {", "ederror 65536", "}"), BadValue, 4,
     "template: extended DNS error code '65536' is not a number from 0 to 65535"),
    ("an unknown option", _corefile("template IN A {", "foo", "}"), UnknownOption, 4,
     "template: unknown option 'foo'"),
    ("CoreDNS 1.14's var", _corefile("template IN A {", "var x 1", "}"), UnknownOption, 4,
     "template: unknown option 'var'"),
    ("an option with a block", _corefile("template IN A {", "match {", "x", "}", "}"), BadValue, 4,
     "template match: takes no block"),
]


@pytest.mark.parametrize(("text", "kind", "line", "message"), [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_template_names_file_and_line(text: str, kind: type[CorefileError], line: int,
                                          message: str) -> None:
    with pytest.raises(kind) as caught:
        corefile.parse(text, env={})
    assert str(caught.value).startswith(f"Corefile:{line}: {message}"), str(caught.value)


def test_lenient_mode_keeps_refusals_as_warnings_and_still_rejects_bad_values() -> None:
    text = _corefile('template CH TXT {', 'answer "{{ if .Name }}{{ end }}"', "var x", "}",
                     "template IN A")
    parsed = corefile.parse_with_warnings(text, lenient=True, env={})
    assert [str(w) for w in parsed.warnings] == [
        "Corefile:3: template: class CH is not supported: queries of classes other than IN "
        "are refused before any plugin (use IN or ANY); ignored",
        "Corefile:4: template: answer '{{ if .Name }}{{ end }}': '{{if}}' is not supported; ignored",
        "Corefile:5: template: unknown option 'var'; ignored",
    ]
    assert [o.plugin for o in parsed.config.chain if o.plugin == "template"] == ["template"]
    with pytest.raises(BadValue):
        corefile.parse(_corefile("template IN A {", "rcode nope", "}"), lenient=True, env={})


def test_upstream_is_accepted_and_ignored_with_a_warning() -> None:
    parsed = corefile.parse_with_warnings(
        _corefile("template IN A {", "upstream 8.8.8.8", "}"), env={})
    assert [str(w) for w in parsed.warnings] == [
        "Corefile:4: template: option 'upstream' has no effect (CoreDNS ignores it too); ignored"]


def _templates(text: str) -> list[template.TemplateOptions]:
    return [o for o in corefile.parse(text, env={}).chain
            if isinstance(o, template.TemplateOptions)]


def test_options_defaults_and_zones() -> None:
    (options,) = _templates(_corefile("template IN A"))
    assert options == template.TemplateOptions(
        qclass=1, qtype=1, zones=(".",), server_zones=(".",),
        regexes=(template.Regex(".*", ".*"),))
    (scoped,) = _templates(_corefile(
        "template ANY ANY Example.ORG. dns://example.net:53 10.0.0.0/23 {",
        "fallthrough in-addr.arpa", "rcode NXDOMAIN", "rcode NOERROR", "}"))
    assert scoped.zones == ("example.org", "example.net", "0.0.10.in-addr.arpa",
                            "1.0.10.in-addr.arpa")
    assert (scoped.fallthrough, scoped.rcode) == (("in-addr.arpa",), 0)  # the last rcode wins


def test_the_aks_corefile_templates() -> None:
    config = corefile.load_with_warnings(DATA / "aks.Corefile").config
    found = [o for o in config.chain if isinstance(o, template.TemplateOptions)]
    assert [(o.qclass, o.qtype, o.zones, o.rcode, o.fallthrough, [r.go for r in o.regexes])
            for o in found] == [
        (255, 255, ("internal.cloudapp.net",), 3, (".",),
         [r"^(?:[^.]+\.){4,}internal\.cloudapp\.net\.$"]),
        (255, 255, ("reddog.microsoft.com",), 3, None, [".*"]),
    ]


def test_options_compare_equal_when_unchanged_so_a_reload_keeps_the_plugin() -> None:
    text = _corefile("template IN A example.test {", 'answer "{{ .Name }} 60 IN A 192.0.2.1"', "}")
    assert _templates(text) == _templates("\n\n" + text)  # lines moved, meaning the same
    assert _templates(text) != _templates(text.replace("192.0.2.1", "192.0.2.2"))


# -- what leaves the fast path ----------------------------------------------------------------

def _interception(line: str, block: str = ".:53") -> chain.Interception:
    text = f"{block} {{\n kubernetes cluster.local\n {line}\n}}\n"
    (options,) = _templates(text)
    return options.build(chain.BuildContext(cluster_zones=("cluster.local",))).interception()


@pytest.mark.parametrize(("line", "zones", "qtypes"), [
    ("template IN AAAA .", [b"\x07cluster\x05local\x00", b"\x07in-addr\x04arpa\x00",
                            b"\x03ip6\x04arpa\x00"], frozenset({28, 255})),
    ("template ANY ANY svc.cluster.local", [b"\x03svc\x07cluster\x05local\x00"], None),
    ("template IN PTR 192.0.2.0/24", [b"\x012\x010\x03192\x07in-addr\x04arpa\x00"],
     frozenset({12, 255})),
    ("template IN A example.test", [], None),
    ("template ANY ANY invalid internal.cloudapp.net", [], None),
])
def test_a_template_takes_off_the_fast_path_only_what_the_cluster_zone_holds(
    line: str, zones: list[bytes], qtypes: frozenset[int] | None
) -> None:
    interception = _interception(line)
    assert list(interception.zones) == zones
    assert interception.qtypes == qtypes if zones else interception.empty


def test_a_block_narrower_than_the_template_zone_bounds_it() -> None:
    interception = _interception("template IN A .", block="cluster.local:53")
    assert list(interception.zones) == [b"\x07cluster\x05local\x00"]


# -- the plugin called directly: counting and what goes on ------------------------------------

def test_each_reply_is_counted_once_with_the_plugin_that_made_it() -> None:
    (options,) = _templates(_corefile(
        "template IN A example.test {", "match ^a[.]", 'answer "{{ .Name }} 60 IN A 192.0.2.1"',
        "}"))
    plugin = options.build(chain.BuildContext(cluster_zones=("cluster.local",)))
    counted: list[tuple[int, int, str]] = []
    handed_on: list[bytes] = []

    def ask(name: str, qtype: int = 1) -> chain.Reply:
        data = dns.message.make_query(name, qtype).to_wire()
        query = wire.parse_query(data)
        request = chain.Request(data, query, query.name.lower(), False, "127.0.0.1",
                                lambda *args: counted.append(args))
        return plugin.serve(request, lambda r: handed_on.append(r.key))

    assert isinstance(ask("A.example.test."), bytes)
    assert isinstance(ask("b.example.test."), bytes)  # SERVFAIL, written by the server
    ask("a.example.org.")
    ask("a.example.test.", 28)
    assert counted == [(1, 0, "template"), (1, 2, "")]
    assert handed_on == [b"\x01a\x07example\x03org\x00", b"\x01a\x07example\x04test\x00"]
    asyncio.run(plugin.start())
    asyncio.run(plugin.close())


# -- the translations, on what Go documents ---------------------------------------------------

@pytest.mark.parametrize(("go", "name", "found"), [
    ("a{,3}", "a{,3}.", True),  # Go: not a repetition, the text itself
    ("^a{,3}$", "aaa", False),
    (r"\101\x42\x{43}", "abc.", False),  # octal and hex escapes; case matters
    (r"\101\x42\x{43}", "ABC.", True),
    ("(?i)abc", "ABC.", True),
    ("[[:digit:]]+[.]$", "host42.", True),
    (r"\Qa.b\E", "a.b.", True),
    (r"\Qa.b\E", "axb.", False),
    ("^*a", "a.", True),
    ("(?)a", "a", True),
    (r"x\z", "x", True),
])
def test_go_regex_syntax_means_the_same(go: str, name: str, found: bool) -> None:
    pattern = re.compile(template.translate_regex(go), re.ASCII)
    assert (pattern.search(name) is not None) == found


@pytest.mark.parametrize(("text", "expected"), [
    ("{{ parseInt .Group.x 16 8 }}", "255"),
    ("{{ parseInt .Group.x 0 64 }}", "<error>"),  # "ff" in base 0 is not a number
    ("{{ parseInt \"0x1_0\" 0 8 }}", "16"),
    ("{{ parseInt \"256\" 10 8 }}", "<error>"),  # out of range for 8 bits
    ("{{ .Group.x | parseInt 16 8 }}", "<error>"),  # the piped value is the last argument
    ("{{ index .Match 1 }}", "ff"),
    ("{{ index .Match 9 }}", "<error>"),
    ("{{ index .Group \"missing\" }}", ""),
    ("{{ .Group.missing }}", "<no value>"),
    ("{{ index .Match 1 0 }}", "102"),  # a string indexed gives a byte
    ("{{ .Match }} {{ .Group }}", "[ff.x. ff] map[0:ff.x. 1:ff x:ff]"),
    ("a {{- `raw` -}} b", "arawb"),
    ("{{ (index .Match 1) }}", "ff"),
])
def test_go_template_subset_renders_as_go_does(text: str, expected: str) -> None:
    data = {"Match": ["ff.x.", "ff"], "Group": {"0": "ff.x.", "1": "ff", "x": "ff"}}
    try:
        rendered = template.render(template.compile_template(text), data)
    except template.TemplateError:
        rendered = "<error>"
    assert rendered == expected
