"""The glibc and musl stubs (SPEC §3.2, §3.3, §3.5) against the real server, as tables.

Each case is the exact list of queries a pod's libc sends (``name qtype rcode answers``),
then the libc's verdict. The example cluster (dnsserver/example/cluster.yaml) is served by
:class:`dnsserver.client.testing.ClusterDNS`; names outside the zone get REFUSED from our server
(no forwarding yet), which glibc sets aside (next server, next attempt, then TRY_AGAIN) and
musl ignores (it waits the timeout out, then EAI_AGAIN).

Mixed A/AAAA rcodes, SERVFAIL and dead servers cannot come from our server, by design
(SPEC §2.12: the NXDOMAIN decision is independent of qtype), so :class:`ScriptedServer`, a
tiny UDP server answering from a table, plays the misbehaving server for those rules.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from conftest import EXAMPLE

from dnsserver.client.resolver import Resolution, ResolvConfError, ResolverConfig, resolve
from dnsserver.client.testing import ClusterDNS

TIMEOUT = 0.2  # musl waits this out on REFUSED; 2 attempts → re-sent once after 0.1 s


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterDNS]:
    with ClusterDNS(EXAMPLE, timeout=TIMEOUT) as running:
        yield running


def pair(name: str, a: str, aaaa: str | None = None, *, note: str = "") -> list[str]:
    """The A and AAAA queries of one getaddrinfo step; ``a``/``aaaa`` are "RCODE N"."""
    extra = f" {note}" if note else ""
    return [f"{name} A {a}{extra}", f"{name} AAAA {aaaa or a}{extra}"]


def nx(name: str) -> list[str]:
    return pair(name, "NXDOMAIN 0")


def refused(name: str, attempts: int = 2) -> list[str]:
    """Both stubs send the pair once per attempt; glibc sets REFUSED aside, musl ignores it."""
    return pair(name, "REFUSED 0", note="ignored") * attempts


def queries(result: Resolution) -> list[str]:
    return [str(query) for query in result.queries]


# -- the default pod resolv.conf: search <ns>.svc.cluster.local svc.cluster.local cluster.local

CASES = [
    # (id, name, namespace, glibc: (queries, status), musl: (queries, status))
    pytest.param(
        "web", "default",
        pair("web.default.svc.cluster.local.", "NOERROR 2", "NOERROR 0"), "OK",
        pair("web.default.svc.cluster.local.", "NOERROR 2", "NOERROR 0"), "OK",
        id="short name in own namespace: 1 step",
    ),
    pytest.param(
        "api.shop", "default",
        [*nx("api.shop.default.svc.cluster.local."),
         *pair("api.shop.svc.cluster.local.", "NOERROR 1", "NOERROR 0")], "OK",
        [*nx("api.shop.default.svc.cluster.local."),
         *pair("api.shop.svc.cluster.local.", "NOERROR 1", "NOERROR 0")], "OK",
        id="name.namespace: 2 steps",
    ),
    pytest.param(
        "api.shop.svc", "default",
        [*nx("api.shop.svc.default.svc.cluster.local."), *nx("api.shop.svc.svc.cluster.local."),
         *pair("api.shop.svc.cluster.local.", "NOERROR 1", "NOERROR 0")], "OK",
        [*nx("api.shop.svc.default.svc.cluster.local."), *nx("api.shop.svc.svc.cluster.local."),
         *pair("api.shop.svc.cluster.local.", "NOERROR 1", "NOERROR 0")], "OK",
        id="name.namespace.svc: 3 steps",
    ),
    pytest.param(
        "www.example.com", "default",
        [*nx("www.example.com.default.svc.cluster.local."),
         *nx("www.example.com.svc.cluster.local."), *nx("www.example.com.cluster.local."),
         *refused("www.example.com.")], "TRY_AGAIN",
        [*nx("www.example.com.default.svc.cluster.local."),
         *nx("www.example.com.svc.cluster.local."), *nx("www.example.com.cluster.local."),
         *refused("www.example.com.")], "EAI_AGAIN",
        id="external name: every search step NXDOMAIN, then REFUSED as-is",
    ),
    pytest.param(
        "www.example.com.", "default",
        refused("www.example.com."), "TRY_AGAIN",
        refused("www.example.com."), "EAI_AGAIN",
        id="trailing dot: as-is only",
    ),
    pytest.param(
        "web-0.web.default.svc.cluster.local", "shop",
        pair("web-0.web.default.svc.cluster.local.", "NOERROR 1", "NOERROR 0"), "OK",
        pair("web-0.web.default.svc.cluster.local.", "NOERROR 1", "NOERROR 0"), "OK",
        id="5 dots >= ndots 5: as-is first, found",
    ),
    pytest.param(
        "web-9.web.default.svc.cluster.local", "shop",
        [*nx("web-9.web.default.svc.cluster.local."),
         *nx("web-9.web.default.svc.cluster.local.shop.svc.cluster.local."),
         *nx("web-9.web.default.svc.cluster.local.svc.cluster.local."),
         *nx("web-9.web.default.svc.cluster.local.cluster.local.")], "HOST_NOT_FOUND",
        nx("web-9.web.default.svc.cluster.local."), "EAI_NONAME",
        id="dots >= ndots, not found: glibc searches after, musl never",
    ),
    pytest.param(
        "shop", "default",
        [*nx("shop.default.svc.cluster.local."),
         *pair("shop.svc.cluster.local.", "NOERROR 0"),  # namespace shop exists: NODATA
         *nx("shop.cluster.local."), *refused("shop.")], "NO_DATA",
        [*nx("shop.default.svc.cluster.local."),
         *pair("shop.svc.cluster.local.", "NOERROR 0")], "EAI_NODATA",
        id="NODATA stops musl, glibc walks on and reports NO_DATA",
    ),
    pytest.param(
        "kube-system", "shop",
        [*nx("kube-system.shop.svc.cluster.local."),
         *pair("kube-system.svc.cluster.local.", "NOERROR 0"),
         *nx("kube-system.cluster.local."), *refused("kube-system.")], "NO_DATA",
        [*nx("kube-system.shop.svc.cluster.local."),
         *pair("kube-system.svc.cluster.local.", "NOERROR 0")], "EAI_NODATA",
        id="a namespace's name: NODATA at svc.<zone>",
    ),
    pytest.param(
        "search", "shop",
        pair("search.shop.svc.cluster.local.", "NOERROR 1"), "HOST_NOT_FOUND",
        pair("search.shop.svc.cluster.local.", "NOERROR 1"), "EAI_NODATA",
        id="ExternalName to an outside name: a bare CNAME ends both walks, no address",
    ),
]


@pytest.mark.parametrize(
    ("name", "namespace", "glibc", "glibc_status", "musl", "musl_status"), CASES
)
def test_default_pod_sequences(
    cluster: ClusterDNS, name: str, namespace: str, glibc: list[str], glibc_status: str,
    musl: list[str], musl_status: str,
) -> None:
    for mode, expected, status in (("glibc", glibc, glibc_status), ("musl", musl, musl_status)):
        result = cluster.resolve(name, "ADDR", namespace, mode=mode)  # type: ignore[arg-type]
        assert (mode, queries(result)) == (mode, expected)
        assert (mode, result.status) == (mode, status)


def test_answer_is_the_name_that_answered(cluster: ClusterDNS) -> None:
    result = cluster.resolve("api.shop", "ADDR")
    assert result.ok and result.rcode == "NOERROR"
    assert result.name == "api.shop.svc.cluster.local."
    assert result.addresses == ["10.96.200.5"]
    assert result.tried() == ["api.shop.default.svc.cluster.local.",
                              "api.shop.svc.cluster.local."]


def test_final_error_of_each_stub(cluster: ClusterDNS) -> None:
    glibc = cluster.resolve("www.example.com", "ADDR")
    assert (glibc.status, glibc.rcode, glibc.name, glibc.records) == (
        "TRY_AGAIN", "REFUSED", None, ())  # getaddrinfo: EAI_AGAIN, "temporary failure"
    nodata = cluster.resolve("shop", "ADDR")
    assert (nodata.status, nodata.rcode) == ("NO_DATA", "NOERROR")  # got_nodata wins
    started = time.monotonic()
    musl = cluster.resolve("www.example.com", "ADDR", mode="musl")
    assert (musl.status, musl.rcode) == ("EAI_AGAIN", None)  # no reply musl would accept
    assert time.monotonic() - started >= TIMEOUT  # REFUSED costs musl the whole timeout


def test_ndots_1_glibc_as_is_first_then_search_musl_as_is_only(cluster: ClusterDNS) -> None:
    glibc = cluster.resolve("api.shop", "ADDR", ndots=1)
    assert queries(glibc) == [*refused("api.shop."), *nx("api.shop.default.svc.cluster.local."),
                              *pair("api.shop.svc.cluster.local.", "NOERROR 1", "NOERROR 0")]
    assert glibc.ok
    musl = cluster.resolve("api.shop", "ADDR", ndots=1, mode="musl")
    assert queries(musl) == refused("api.shop.")
    assert musl.status == "EAI_AGAIN"


@pytest.mark.parametrize("mode", ["glibc", "musl"])
def test_single_qtypes(cluster: ClusterDNS, mode: str) -> None:
    v6 = cluster.resolve("v6only", "AAAA", "shop", mode=mode)  # type: ignore[arg-type]
    assert queries(v6) == ["v6only.shop.svc.cluster.local. AAAA NOERROR 1"]
    assert v6.addresses == ["fd00:10:96::b2"]
    v4 = cluster.resolve("v6only", "A", "shop", mode=mode)  # type: ignore[arg-type]
    assert v4.queries[0].rcode == "NOERROR" and v4.queries[0].answers == 0
    assert v4.status == ("NO_DATA" if mode == "glibc" else "EAI_NODATA")


def test_srv_glibc_searches_musl_does_not(cluster: ClusterDNS) -> None:
    glibc = cluster.resolve("_http._tcp.api", "SRV", "shop")
    assert queries(glibc) == ["_http._tcp.api.shop.svc.cluster.local. SRV NOERROR 1"]
    musl = cluster.resolve("_http._tcp.api.shop.svc.cluster.local", "SRV", mode="musl")
    assert queries(musl) == ["_http._tcp.api.shop.svc.cluster.local. SRV NOERROR 1"]
    short = cluster.resolve("_http._tcp.api", "SRV", "shop", mode="musl")
    assert queries(short) == ["_http._tcp.api. SRV REFUSED 0 ignored"] * 2  # res_query: as given
    assert short.status == "TRY_AGAIN"


def test_tcp(cluster: ClusterDNS) -> None:
    config = cluster.config(use_tcp=True)
    result = resolve("web", "ADDR", config)
    assert queries(result) == pair("web.default.svc.cluster.local.", "NOERROR 2", "NOERROR 0",
                                   note="tcp")


def test_host_search_domain_glibc_five_steps_musl_stops() -> None:
    with ClusterDNS(EXAMPLE, host_search=["us-west-2.compute.internal"], timeout=TIMEOUT) as c:
        glibc = c.resolve("www.example.com", "ADDR")
        assert [s.result for s in glibc.steps] == [
            "HOST_NOT_FOUND", "HOST_NOT_FOUND", "HOST_NOT_FOUND", "TRY_AGAIN", "TRY_AGAIN"]
        assert glibc.tried()[3:] == ["www.example.com.us-west-2.compute.internal.",
                                     "www.example.com."]
        assert len(glibc.queries) == 6 + 4 + 4
        musl = c.resolve("www.example.com", "ADDR", mode="musl")
        assert [s.result for s in musl.steps] == [
            "NOT_FOUND", "NOT_FOUND", "NOT_FOUND", "EAI_AGAIN"]  # never gets to the as-is name


def test_nodata_then_answer_glibc_finds_it_musl_stops() -> None:
    """SPEC §3.5: with a namespace named ``api``, ``api.svc.<zone>`` is NODATA."""
    with ClusterDNS(EXAMPLE, timeout=TIMEOUT) as c:
        c.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "api"}})
        search = ("svc.cluster.local", "shop.svc.cluster.local")
        for mode, status, steps in (("glibc", "OK", 2), ("musl", "EAI_NODATA", 1)):
            config = ResolverConfig(nameservers=((c.host, c.port),), search=search, ndots=5,
                                    mode=mode, timeout=TIMEOUT)  # type: ignore[arg-type]
            result = resolve("api", "ADDR", config)
            assert (mode, result.status, len(result.steps)) == (mode, status, steps)
            assert queries(result)[:2] == pair("api.svc.cluster.local.", "NOERROR 0")


# -- rules only a misbehaving server shows --------------------------------------------------


Table = dict[tuple[str, str], tuple[str, list[str]]]


class ScriptedServer:
    """A UDP server on loopback answering from ``table[(name, qtype)] = (rcode, rdatas)``;
    anything else is REFUSED."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.received: list[str] = []
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            try:
                data, client = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            question = query.question[0]
            key = (question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
            self.received.append(" ".join(key))
            rcode, rdatas = self.table.get(key, ("REFUSED", []))
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.AA  # else glibc takes a NODATA for a referral: next server
            reply.set_rcode(dns.rcode.from_text(rcode))
            if rdatas:
                reply.answer.append(dns.rrset.from_text_list(key[0], 5, "IN", key[1], rdatas))
            self.sock.sendto(reply.to_wire(), client)

    def config(self, mode: str, search: tuple[str, ...] = ("a.test", "b.test")) -> ResolverConfig:
        return ResolverConfig(nameservers=(("127.0.0.1", self.port),), search=search, ndots=1,
                              mode=mode, timeout=TIMEOUT)  # type: ignore[arg-type]

    def close(self) -> None:
        self._running = False
        self._thread.join()
        self.sock.close()


@pytest.fixture
def scripted() -> Iterator[type[ScriptedServer]]:
    servers: list[ScriptedServer] = []

    class Started(ScriptedServer):
        def __init__(self, table: Table) -> None:
            super().__init__(table)
            servers.append(self)

    yield Started
    for server in servers:
        server.close()


def test_nxdomain_on_either_member_makes_the_musl_step_not_found(
    scripted: type[ScriptedServer],
) -> None:
    """SPEC §3.3 point 2 (lookup_name.c:174-178) against glibc's "either has answers"."""
    server = scripted({
        ("x.a.test.", "A"): ("NOERROR", ["192.0.2.1"]),  # A positive...
        ("x.a.test.", "AAAA"): ("NXDOMAIN", []),  # ...AAAA NXDOMAIN: replicas disagree
        ("y.a.test.", "A"): ("NXDOMAIN", []),
        ("y.a.test.", "AAAA"): ("NOERROR", ["2001:db8::1"]),
        ("x.b.test.", "A"): ("NOERROR", ["192.0.2.2"]),
        ("x.b.test.", "AAAA"): ("NOERROR", []),
        ("y.b.test.", "A"): ("NOERROR", ["192.0.2.3"]),
        ("y.b.test.", "AAAA"): ("NOERROR", []),
    })
    for name, glibc_address in (("x", "192.0.2.1"), ("y", "2001:db8::1")):
        glibc = resolve(name, "ADDR", server.config("glibc"))
        assert (glibc.name, glibc.addresses) == (f"{name}.a.test.", [glibc_address])
        musl = resolve(name, "ADDR", server.config("musl"))
        assert [s.result for s in musl.steps] == ["NOT_FOUND", "OK"]
        assert musl.name == f"{name}.b.test."  # the a.test answer was dropped


def test_servfail_glibc_tries_next_domain_musl_retries_then_gives_up(
    scripted: type[ScriptedServer],
) -> None:
    server = scripted({
        ("x.a.test.", "A"): ("SERVFAIL", []),
        ("x.a.test.", "AAAA"): ("SERVFAIL", []),
        ("x.b.test.", "A"): ("NOERROR", ["192.0.2.9"]),
        ("x.b.test.", "AAAA"): ("NOERROR", []),
    })
    glibc = resolve("x", "ADDR", server.config("glibc"))
    assert [s.result for s in glibc.steps] == ["TRY_AGAIN", "OK"]  # hp->rcode == SERVFAIL
    assert queries(glibc)[:4] == pair("x.a.test.", "SERVFAIL 0", note="ignored") * 2
    musl = resolve("x", "ADDR", server.config("musl"))
    assert [s.result for s in musl.steps] == ["EAI_AGAIN"]
    # Per round: the pair, then each SERVFAIL re-sent at once while 2 x 2 retries last.
    assert len(musl.queries) == 2 * (2 + 4)


def test_refused_ends_glibc_search_but_not_the_as_is_try(scripted: type[ScriptedServer]) -> None:
    server = scripted({
        ("x.", "A"): ("NOERROR", ["192.0.2.7"]),
        ("x.", "AAAA"): ("NOERROR", []),
        ("x.b.test.", "A"): ("NOERROR", ["192.0.2.8"]),
    })  # x.a.test. is REFUSED
    glibc = resolve("x", "ADDR", server.config("glibc"))
    assert glibc.tried() == ["x.a.test.", "x."]  # b.test skipped: "anything else ... done"
    assert glibc.addresses == ["192.0.2.7"]
    musl = resolve("x", "ADDR", server.config("musl"))
    assert (musl.tried(), musl.status) == (["x.a.test."], "EAI_AGAIN")


def test_connection_refused() -> None:
    """glibc's connected socket sees ECONNREFUSED and gives up at once (TRY_AGAIN); musl's
    unconnected socket does not, and waits the timeout out."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    for mode, status in (("glibc", "TRY_AGAIN"), ("musl", "EAI_AGAIN")):
        config = ResolverConfig(nameservers=(("127.0.0.1", port),), search=("a.test", "b.test"),
                                mode=mode, timeout=TIMEOUT)  # type: ignore[arg-type]
        result = resolve("x", "ADDR", config)
        assert (mode, result.status, result.tried()) == (mode, status, ["x.a.test."])
    assert {q.error for q in resolve("x", "A", ResolverConfig(
        nameservers=(("127.0.0.1", port),), timeout=TIMEOUT)).queries} == {"connection refused"}


# -- configuration --------------------------------------------------------------------------


def test_pod_config_is_what_kubelet_writes() -> None:
    config = ResolverConfig.for_pod("shop", "cluster.local.", host_search=["corp", "cluster.local"])
    assert config.search == ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local",
                             "corp")
    assert config.ndots == 5


def test_resolv_conf() -> None:
    text = """# written by kubelet
nameserver 10.96.0.10
nameserver 127.0.0.1:5353
nameserver not-an-address
search default.svc.cluster.local svc.cluster.local cluster.local
options ndots:20 timeout:45 attempts:8
"""
    glibc = ResolverConfig.from_resolv_conf(text)
    assert glibc.nameservers == (("10.96.0.10", 53), ("127.0.0.1", 5353))
    assert glibc.search == ("default.svc.cluster.local", "svc.cluster.local", "cluster.local")
    assert (glibc.ndots, glibc.timeout, glibc.attempts) == (15, 30.0, 5)  # glibc's caps
    musl = ResolverConfig.from_resolv_conf(text, mode="musl", port=5300)
    assert musl.nameservers[0] == ("10.96.0.10", 5300)
    assert (musl.ndots, musl.timeout, musl.attempts) == (15, 45.0, 8)  # musl's caps are higher
    empty = ResolverConfig.from_resolv_conf("domain corp.example.\nsearch a b\n")
    assert (empty.nameservers, empty.search, empty.ndots) == ((("127.0.0.1", 53),), ("a", "b"), 1)
    assert ResolverConfig.from_resolv_conf("search a\ndomain b\noptions use-vc\n").search == ("b",)


def test_bad_input() -> None:
    with pytest.raises(ResolvConfError):
        ResolverConfig(mode="bsd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pair"):
        resolve("x", ("A", "MX"))
    with pytest.raises(ValueError, match="not a domain name"):
        resolve("a..b")


# -- the real libcs -------------------------------------------------------------------------

GAI_SOURCE = r"""
/* getaddrinfo(argv[1], AF_UNSPEC). glibc: argv[2] is the port of a nameserver on 127.0.0.1,
   set in _res (honoured because the configuration was changed after res_init). */
#include <arpa/inet.h>
#include <netdb.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
#ifdef __GLIBC__
    res_init();
    _res.nscount = 1;
    _res.nsaddr_list[0].sin_family = AF_INET;
    _res.nsaddr_list[0].sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, "127.0.0.1", &_res.nsaddr_list[0].sin_addr);
#endif
    struct addrinfo hints, *res;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(argv[1], NULL, &hints, &res);
    printf("%d\n", rc);
    return 0;
}
"""
MUSL_NAMESERVER = ("127.83.0.1", 53)  # musl has no port syntax; an otherwise unused address


class RecordingProxy:
    """Relays UDP queries to the real server and records ``name qtype rcode`` of each."""

    def __init__(self, upstream: tuple[str, int], address: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(address)
        except OSError:
            self.sock.close()
            raise
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.seen: list[str] = []
        self._running = True
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
            upstream.settimeout(2)
            while self._running:
                try:
                    data, client = self.sock.recvfrom(65535)
                except TimeoutError:
                    continue
                upstream.sendto(data, self.upstream)
                reply, _ = upstream.recvfrom(65535)
                question = dns.message.from_wire(data).question[0]
                rcode = dns.rcode.to_text(dns.message.from_wire(reply).rcode())
                self.seen.append(f"{question.name} {dns.rdatatype.to_text(question.rdtype)} "
                                 f"{rcode}")
                self.sock.sendto(reply, client)

    def close(self) -> None:
        self._running = False
        self._thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def libc_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("libc")
    source = folder / "gai.c"
    source.write_text(GAI_SOURCE)
    programs = {}
    for mode, compiler, flags in (("glibc", "gcc", []), ("musl", "musl-gcc", ["-static"])):
        if shutil.which(compiler) is None:
            continue
        binary = folder / f"gai-{mode}"
        done = subprocess.run([compiler, *flags, "-o", str(binary), str(source)],
                              capture_output=True, check=False)
        if done.returncode == 0:
            programs[mode] = binary
    return programs


def run_real(mode: str, program: Path, name: str, namespace: str, port: int,
             folder: Path) -> int:
    search = f"{namespace}.svc.cluster.local svc.cluster.local cluster.local"
    if mode == "glibc":  # LOCALDOMAIN and RES_OPTIONS are glibc's environment overrides
        env = {"LOCALDOMAIN": search, "RES_OPTIONS": "ndots:5 timeout:1 attempts:2"}
        command = [str(program), name, str(port)]
    else:  # musl reads only /etc/resolv.conf: bind-mount ours in a private mount namespace
        conf = folder / "resolv.conf"
        conf.write_text(f"nameserver {MUSL_NAMESERVER[0]}\nsearch {search}\n"
                        "options ndots:5 timeout:1 attempts:2\n")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        command = ["unshare", "-m", "sh", "-c",
                   f"mount --bind {conf} /etc/resolv.conf && exec {program} {name}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=20,
                          check=False)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[0])


@pytest.mark.parametrize("mode", ["glibc", "musl"])
def test_real_libc_sends_the_same_queries(
    libc_programs: dict[str, Path], tmp_path: Path, mode: str
) -> None:
    """glibc's and musl's getaddrinfo, compiled here, against the real server through a
    recording proxy: the emulation sends exactly the queries they send, in order."""
    if mode not in libc_programs:
        pytest.skip(f"no {mode} compiler")
    if mode == "musl" and (os.geteuid() != 0 or shutil.which("unshare") is None):
        pytest.skip("musl's resolv.conf is fixed: needs root for a private mount namespace")
    cases = [("web", "default", True), ("api.shop", "default", True),
             ("shop", "default", False), ("www.example.com", "default", False),
             ("web-9.web.default.svc.cluster.local", "shop", False),
             ("search", "shop", False)]  # a bare CNAME: the walk ends, with no address
    with ClusterDNS(EXAMPLE) as cluster:
        address = ("127.0.0.1", 0) if mode == "glibc" else MUSL_NAMESERVER
        try:
            proxy = RecordingProxy((cluster.host, cluster.port), address)
        except OSError as exc:
            pytest.skip(f"cannot listen on {address}: {exc}")
        try:
            for name, namespace, found in cases:
                proxy.seen.clear()
                code = run_real(mode, libc_programs[mode], name, namespace, proxy.port,
                                tmp_path)
                config = ResolverConfig.for_pod(
                    namespace, nameservers=((cluster.host, cluster.port),), mode=mode,  # type: ignore[arg-type]
                    timeout=1, attempts=2)
                emulated = resolve(name, "ADDR", config)
                sent = [f"{q.name} {q.qtype} {q.rcode}" for q in emulated.queries]
                assert (name, sent) == (name, proxy.seen)
                assert (name, code == 0, emulated.ok) == (name, found, found)
        finally:
            proxy.close()
