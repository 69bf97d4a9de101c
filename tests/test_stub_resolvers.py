"""Real stub resolvers against the real server: glibc (``getent ahosts`` and ``getaddrinfo``)
and musl (``getaddrinfo`` in a static binary), each in a "pod" network namespace whose
``/etc/resolv.conf`` is the one kubelet writes (SPEC §3.1), the server in its own namespace.

Topology (tests/netns.py; all of it removed at the end, whatever happens)::

    pod-default  eth0 10.123.0.2 ─┐            ┌ lo 10.123.0.1:53   dnsserver
    pod-shop     eth0 10.123.0.3 ─┼─ veth ─ srv ┤
    stranger     eth0 10.123.0.4 ─┘            └ lo 10.123.0.10:53  dnsserver --autopath

The manifests are the example cluster plus Pods at 10.123.0.2 (namespace ``default``) and
10.123.0.3 (``shop``) and a Service ``api`` in ``default`` (``api.shop`` exists already), so
the short name ``api`` means a different Service in each pod. ``stranger`` has a ``default``
pod's resolv.conf but no Pod with its address: the server cannot know its namespace.

A packet socket in the server namespace records every query as it arrives (source address,
name, type), so each test asserts the exact sequence a resolver sent: glibc's and musl's search
order (SPEC §3.2, §3.3) and what ``--autopath`` saves (§3.6). Every step of a search is an
A+AAAA pair: ``tests/resolvers/getaddrinfo.c`` asks without ``AI_ADDRCONFIG``; ``getent``
asks with it, so only its sequence of names is compared.

The server has no forwarder: names outside ``cluster.local`` get REFUSED. glibc sends a
REFUSED step twice (``attempts:2``) and fails at once; musl ignores REFUSED replies and waits
out its whole timeout (5 s, resending at 2.5 s), so only two musl cases meet it, one of them
with ``timeout:1``.

Last, a server as it runs in a pod, on ``0.0.0.0:53``, in a namespace with two addresses:
asked at its second address it must answer from that address.

Needs root and ``ip`` (iproute2); ``cc`` and ``musl-gcc`` (musl-tools) for the C resolvers.
Without them the tests skip and say why (``pytest -rs``); ``REQUIRE_NETNS=1`` makes that a
failure instead, for CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import EXAMPLE, RunningServer
from netns import Lab, Namespace, Query, QueryLog, netns_available

SOURCE = Path(__file__).parent / "resolvers" / "getaddrinfo.c"
PLAIN, AUTOPATH, LOADBALANCED = "10.123.0.1", "10.123.0.10", "10.123.0.11"
# pod label -> (address, Kubernetes namespace its resolv.conf searches first)
PODS = {
    "pod-default": ("10.123.0.2", "default"),
    "pod-shop": ("10.123.0.3", "shop"),
    "stranger": ("10.123.0.4", "default"),
}
KUBELET = ("ndots:5",)
EXTRA_MANIFESTS = """\
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: {name: api, namespace: default}
    spec: {clusterIP: 10.96.8.8, clusterIPs: [10.96.8.8], ports: [{name: http, port: 80}]}
  - apiVersion: v1
    kind: Service
    metadata: {name: web-alias, namespace: default}
    spec: {type: ExternalName, externalName: web.default.svc.cluster.local}
  - apiVersion: v1
    kind: Pod
    metadata: {name: client-default, namespace: default}
    status: {phase: Running, podIP: 10.123.0.2, podIPs: [{ip: 10.123.0.2}]}
  - apiVersion: v1
    kind: Pod
    metadata: {name: client-shop, namespace: shop}
    status: {phase: Running, podIP: 10.123.0.3, podIPs: [{ip: 10.123.0.3}]}
"""
# musl before 1.2.4 (Debian 12 has 1.2.3) says EAI_NONAME where later ones say EAI_NODATA
MUSL_NODATA = ("EAI_NONAME", "EAI_NODATA")


def pairs(*names: str) -> list[tuple[str, str]]:
    """The queries of a search that tries ``names`` in order: an A and an AAAA for each."""
    return [(name, qtype) for name in names for qtype in ("A", "AAAA")]


def steps(sent: list[tuple[str, str]]) -> list[str]:
    """The names tried, in order, one per step (a step sent again counts once)."""
    names: list[str] = []
    for qname, _ in sent:
        if not names or names[-1] != qname:
            names.append(qname)
    return names


# -- running resolvers ---------------------------------------------------------------------


@dataclass(repr=False)
class Lookup:
    """One resolver run inside a pod: its output and the queries the server received."""

    program: str
    name: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    queries: list[Query]

    @property
    def sent(self) -> list[tuple[str, str]]:
        return [(q.qname, q.qtype) for q in self.queries]

    @property
    def steps(self) -> list[str]:
        return steps(self.sent)

    @property
    def addresses(self) -> list[str]:
        """The addresses printed, sorted (their order is the library's RFC 6724 sorting)."""
        if self.program == "getent":
            found = {line.split()[0] for line in self.stdout.splitlines() if line.strip()}
        else:
            found = {line for line in self.stdout.splitlines()
                     if line and not line.startswith(("canon ", "error "))}
        return sorted(found)

    @property
    def canonical(self) -> str | None:
        lines = self.stdout.splitlines()
        if self.program == "getent":
            fields = lines[0].split() if lines else []
            return fields[2] if len(fields) > 2 else None
        return next((line[6:] for line in lines if line.startswith("canon ")), None)

    @property
    def error(self) -> str | None:
        """``EAI_...`` from getaddrinfo.c (getent prints nothing on failure)."""
        return next((line.split()[1] for line in self.stdout.splitlines()
                     if line.startswith("error ")), None)

    def __repr__(self) -> str:  # what a failed assertion shows
        queries = "\n".join(f"    {q}" for q in self.queries) or "    (none)"
        return (f"{self.program} {self.name}: exit {self.returncode} in {self.seconds:.2f}s\n"
                f"  stdout: {self.stdout.strip()!r}\n  stderr: {self.stderr.strip()!r}\n"
                f"  queries received:\n{queries}")


@dataclass
class Cluster:
    lab: Lab
    server_ns: Namespace
    pods: dict[str, Namespace]
    servers: dict[str, RunningServer]
    log: QueryLog
    programs: dict[str, list[str]]
    missing: dict[str, str]

    def resolve(self, program: str, pod: str, name: str, server: str = PLAIN,
                options: Sequence[str] = KUBELET) -> Lookup:
        """Run ``program NAME`` in ``pod`` with a kubelet resolv.conf naming ``server``."""
        if program in self.missing:
            pytest.skip(self.missing[program])
        address, namespace = PODS[pod]
        ns = self.pods[pod]
        ns.pod_resolv_conf(server, namespace, options=options)
        self.log.take(grace=0)  # nothing stray counts for this run
        started = time.monotonic()
        try:
            result = ns.run(*self.programs[program], name, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{program} {name} in {pod} did not finish in 30 s")
        seconds = time.monotonic() - started
        queries = [q for q in self.log.take() if q.source == address]
        return Lookup(program, name, result.returncode, result.stdout, result.stderr,
                      seconds, queries)


def _build(tmp: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """getaddrinfo.c built with musl (static) and with glibc; getent as it is."""
    programs: dict[str, list[str]] = {}
    missing: dict[str, str] = {}
    getent = shutil.which("getent")
    if getent is None:
        missing["getent"] = "no getent (glibc's libc-bin)"
    else:
        programs["getent"] = [getent, "ahosts"]
    compilers = {"glibc": ["cc", "-O2", "-Wall", "-Werror"],
                 "musl": ["musl-gcc", "-static", "-O2", "-Wall", "-Werror"]}
    for libc, command in compilers.items():
        if shutil.which(command[0]) is None:
            package = "musl-tools" if libc == "musl" else "gcc"
            missing[libc] = f"no {command[0]} to build {libc}'s getaddrinfo (Debian {package})"
            continue
        binary = tmp / f"getaddrinfo-{libc}"
        built = subprocess.run([*command, "-o", str(binary), str(SOURCE)], capture_output=True,
                               text=True, timeout=60, check=False)
        assert built.returncode == 0, f"{' '.join(command)} failed:\n{built.stderr}"
        programs[libc] = [str(binary)]
    return programs, missing


@dataclass
class Tools:
    programs: dict[str, list[str]]  # getent, glibc, musl -> argv before the name
    missing: dict[str, str]  # program -> why it is not here
    manifests: Path


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    """Namespaces work here (else skip, or fail with ``REQUIRE_NETNS=1``), the resolvers are
    built, the manifests written."""
    reason = netns_available()
    if reason is not None:
        if os.environ.get("REQUIRE_NETNS") == "1":
            pytest.fail(f"REQUIRE_NETNS=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("stub-resolvers")
    programs, missing = _build(tmp)
    manifests = tmp / "manifests"
    manifests.mkdir()
    shutil.copy(EXAMPLE, manifests / "cluster.yaml")
    (manifests / "pods.yaml").write_text(EXTRA_MANIFESTS, encoding="utf-8")
    return Tools(programs, missing, manifests)


def _pod(lab: Lab, server_ns: Namespace, label: str, address: str) -> Namespace:
    """A pod namespace linked to ``server_ns``, its glibc looking at files then DNS only."""
    pod = lab.namespace(label)
    lab.connect(server_ns, pod, f"{address}/24", server_addresses=[PLAIN, AUTOPATH, LOADBALANCED])
    pod.write_etc("nsswitch.conf", "hosts: files dns\n")
    pod.write_etc("hosts", "127.0.0.1 localhost\n::1 localhost\n")
    return pod


@pytest.fixture(scope="module")
def cluster(tools: Tools) -> Iterator[Cluster]:
    with Lab() as lab:
        server_ns = lab.namespace("srv")
        server_ns.write_etc("resolv.conf", "# no search domains: autopath walks the cluster's\n")
        pods = {label: _pod(lab, server_ns, label, address)
                for label, (address, _) in PODS.items()}
        log = QueryLog(lab, server_ns)
        servers = {
            PLAIN: lab.start_server(server_ns, tools.manifests, listen=[f"{PLAIN}:53"]),
            AUTOPATH: lab.start_server(server_ns, tools.manifests, "--autopath",
                                       listen=[f"{AUTOPATH}:53"]),
            LOADBALANCED: lab.start_server(server_ns, tools.manifests, "--loadbalance",
                                           listen=[f"{LOADBALANCED}:53"]),
        }
        yield Cluster(lab, server_ns, pods, servers, log, tools.programs, tools.missing)
        problems = _stop_cleanly(servers.values())
    if problems:
        pytest.fail(problems, pytrace=False)


def _stop_cleanly(servers: Iterable[RunningServer]) -> str:
    """Stop ``servers``; what went wrong (exit code, traceback), or ""."""
    problems = []
    for server in servers:
        code = server.stop()
        if code != 0 or any("Traceback" in line for line in server.output):
            problems.append(f"{' '.join(server.command)} exited with {code}:\n"
                            + "\n".join(server.output))
    return "\n\n".join(problems)


@pytest.fixture(autouse=True)
def _no_tracebacks(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("cluster", "wildcard"):
        if name not in request.fixturenames:
            continue
        fixture: Cluster = request.getfixturevalue(name)
        for server in fixture.servers.values():
            if server.new_tracebacks():
                pytest.fail("the server printed a traceback:\n"
                            + "\n".join(server.output[-40:]), pytrace=False)


# -- glibc ---------------------------------------------------------------------------------

# name -> addresses (empty: exit code 2), canonical name, queries glibc sends (from default)
GLIBC = [
    ("kubernetes.default", ["10.96.0.1"], "kubernetes.default.svc.cluster.local",
     pairs("kubernetes.default.default.svc.cluster.local.", "kubernetes.default.svc.cluster.local.")),
    ("web-0.web", ["10.244.1.10"], "web-0.web.default.svc.cluster.local",
     pairs("web-0.web.default.svc.cluster.local.")),
    ("api.shop", ["10.96.200.5"], "api.shop.svc.cluster.local",
     pairs("api.shop.default.svc.cluster.local.", "api.shop.svc.cluster.local.")),
    ("api", ["10.96.8.8"], "api.default.svc.cluster.local",
     pairs("api.default.svc.cluster.local.")),
    # absolute: as-is only; web-2 is not ready
    ("web.default.svc.cluster.local.", ["10.244.1.10", "10.244.2.11"],
     "web.default.svc.cluster.local", pairs("web.default.svc.cluster.local.")),
    # 5 dots = ndots: as-is first, and it exists
    ("web-0.web.default.svc.cluster.local", ["10.244.1.10"], "web-0.web.default.svc.cluster.local",
     pairs("web-0.web.default.svc.cluster.local.")),
    # not ours and no forwarder: 3 NXDOMAIN steps, then the name as is, REFUSED, sent twice
    ("www.example.com", [], None,
     pairs("www.example.com.default.svc.cluster.local.", "www.example.com.svc.cluster.local.",
           "www.example.com.cluster.local.", "www.example.com.", "www.example.com.")),
]


@pytest.mark.parametrize(("name", "addresses", "canonical", "sent"), GLIBC,
                         ids=[case[0] for case in GLIBC])
@pytest.mark.parametrize("program", ["getent", "glibc"])
def test_glibc(cluster: Cluster, program: str, name: str, addresses: list[str],
               canonical: str | None, sent: list[tuple[str, str]]) -> None:
    lookup = cluster.resolve(program, "pod-default", name)
    assert lookup.returncode == (0 if addresses else 2), lookup
    assert lookup.addresses == addresses, lookup
    if addresses:
        assert lookup.canonical == canonical, lookup
    if program == "getent":  # AI_ADDRCONFIG: AAAA only when the pod has IPv6 (link-local)
        assert lookup.steps == steps(sent), lookup
        assert [q for q in lookup.sent if q[1] == "A"] == sent[::2], lookup
        assert {qtype for _, qtype in lookup.sent} <= {"A", "AAAA"}, lookup
    else:
        assert lookup.sent == sent, lookup
        assert lookup.error == (None if addresses else "EAI_AGAIN"), lookup


# -- musl ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "addresses", "canonical", "sent"),
                         [case for case in GLIBC if case[1]],
                         ids=[case[0] for case in GLIBC if case[1]])
def test_musl_resolves_what_glibc_resolves(cluster: Cluster, name: str, addresses: list[str],
                                           canonical: str, sent: list[tuple[str, str]]) -> None:
    """Same addresses, same queries: the first search domain that answers ends both walks."""
    lookup = cluster.resolve("musl", "pod-default", name)
    assert lookup.returncode == 0, lookup
    assert lookup.addresses == addresses, lookup
    assert lookup.canonical == canonical, lookup
    assert lookup.sent == sent, lookup


# name, resolv.conf options -> (addresses, EAI codes, queries) for glibc, then for musl
Outcome = tuple[list[str], tuple[str, ...], list[tuple[str, str]]]  # addresses, EAI_*, sent
DIFFERENT: list[tuple[str, tuple[str, ...], Outcome, Outcome]] = [
    # a namespace is a name that exists: its NODATA ends musl's walk, glibc walks on
    ("shop", KUBELET,
     ([], ("EAI_NODATA",),
      pairs("shop.default.svc.cluster.local.", "shop.svc.cluster.local.",
            "shop.cluster.local.", "shop.", "shop.")),
     ([], MUSL_NODATA, pairs("shop.default.svc.cluster.local.", "shop.svc.cluster.local."))),
    # dots >= ndots: glibc tries it as is, then the search list; musl as is only
    ("nothing.web.default.svc.cluster.local", KUBELET,
     ([], ("EAI_NONAME",),
      pairs("nothing.web.default.svc.cluster.local.",
            "nothing.web.default.svc.cluster.local.default.svc.cluster.local.",
            "nothing.web.default.svc.cluster.local.svc.cluster.local.",
            "nothing.web.default.svc.cluster.local.cluster.local.")),
     ([], ("EAI_NONAME",), pairs("nothing.web.default.svc.cluster.local."))),
    # a pod with dnsConfig ndots:2 (a common fix for the ndots:5 amplification): glibc finds
    # the service after the as-is name is REFUSED; musl never searches, and waits out REFUSED
    ("api.shop.svc", ("ndots:2", "timeout:1"),
     (["10.96.200.5"], (),
      pairs("api.shop.svc.", "api.shop.svc.", "api.shop.svc.default.svc.cluster.local.",
            "api.shop.svc.svc.cluster.local.", "api.shop.svc.cluster.local.")),
     ([], ("EAI_AGAIN",), pairs("api.shop.svc.", "api.shop.svc."))),
    # outside the cluster, no forwarder: both fail; musl only after its 5 s timeout
    ("www.example.com", KUBELET,
     ([], ("EAI_AGAIN",),
      pairs("www.example.com.default.svc.cluster.local.", "www.example.com.svc.cluster.local.",
            "www.example.com.cluster.local.", "www.example.com.", "www.example.com.")),
     ([], ("EAI_AGAIN",),
      pairs("www.example.com.default.svc.cluster.local.", "www.example.com.svc.cluster.local.",
            "www.example.com.cluster.local.", "www.example.com.", "www.example.com."))),
]


@pytest.mark.parametrize(("name", "options", "glibc", "musl"), DIFFERENT,
                         ids=[case[0] for case in DIFFERENT])
def test_glibc_and_musl_search_differently(
    cluster: Cluster, name: str, options: tuple[str, ...], glibc: Outcome, musl: Outcome,
) -> None:
    for program, (addresses, errors, sent) in (("glibc", glibc), ("musl", musl)):
        lookup = cluster.resolve(program, "pod-default", name, options=options)
        assert lookup.addresses == addresses, lookup
        assert lookup.returncode == (0 if addresses else 2), lookup
        if errors:
            assert lookup.error in errors, lookup
        assert lookup.sent == sent, lookup
        if program == "musl" and errors == ("EAI_AGAIN",):
            assert lookup.seconds > 0.5, lookup  # it waited: REFUSED is no answer to musl


# -- autopath ------------------------------------------------------------------------------

RESOLVERS = ["glibc", "musl"]


@pytest.mark.parametrize("program", RESOLVERS)
def test_autopath_each_pod_gets_its_own_namespace(cluster: Cluster, program: str) -> None:
    """``api`` is a Service in both namespaces: each pod gets its own, in one step."""
    for pod, address, canonical in (
        ("pod-default", "10.96.8.8", "api.default.svc.cluster.local"),
        ("pod-shop", "10.96.200.5", "api.shop.svc.cluster.local"),
    ):
        lookup = cluster.resolve(program, pod, "api", server=AUTOPATH)
        assert lookup.addresses == [address], lookup
        assert lookup.canonical == canonical, lookup
        assert lookup.sent == pairs(f"{canonical}."), lookup


# pod, name -> addresses, canonical name, queries without autopath (the pod walks its list)
WALKS = [
    ("pod-shop", "kubernetes.default", ["10.96.0.1"], "kubernetes.default.svc.cluster.local",
     pairs("kubernetes.default.shop.svc.cluster.local.", "kubernetes.default.svc.cluster.local.")),
    ("pod-default", "kubernetes.default", ["10.96.0.1"], "kubernetes.default.svc.cluster.local",
     pairs("kubernetes.default.default.svc.cluster.local.", "kubernetes.default.svc.cluster.local.")),
    ("pod-default", "api.shop", ["10.96.200.5"], "api.shop.svc.cluster.local",
     pairs("api.shop.default.svc.cluster.local.", "api.shop.svc.cluster.local.")),
    ("pod-shop", "web-0.web.default", ["10.244.1.10"], "web-0.web.default.svc.cluster.local",
     pairs("web-0.web.default.shop.svc.cluster.local.", "web-0.web.default.svc.cluster.local.")),
    # IPv6 only: the A step is NODATA, the AAAA step has the address; A and AAAA must agree
    # on the rcode or musl drops the step (SPEC §3.3)
    ("pod-default", "v6only.shop", ["fd00:10:96::b2"], "v6only.shop.svc.cluster.local",
     pairs("v6only.shop.default.svc.cluster.local.", "v6only.shop.svc.cluster.local.")),
    # dual-stack, in the pod's own namespace: one step either way
    ("pod-default", "frontend", ["10.96.100.1", "fd00:10:96::a1"],
     "frontend.default.svc.cluster.local", pairs("frontend.default.svc.cluster.local.")),
]


@pytest.mark.parametrize(("pod", "name", "addresses", "canonical", "walked"), WALKS,
                         ids=[f"{case[1]} from {case[0]}" for case in WALKS])
@pytest.mark.parametrize("program", RESOLVERS)
def test_autopath_saves_the_search_walk(cluster: Cluster, program: str, pod: str, name: str,
                                        addresses: list[str], canonical: str,
                                        walked: list[tuple[str, str]]) -> None:
    """The same answer with and without ``--autopath``; with it, only the first step is sent
    (the server answers ``CNAME`` to the name it found)."""
    plain = cluster.resolve(program, pod, name, server=PLAIN)
    auto = cluster.resolve(program, pod, name, server=AUTOPATH)
    for lookup in (plain, auto):
        assert lookup.returncode == 0, lookup
        assert lookup.addresses == addresses, lookup
        assert lookup.canonical == canonical, lookup
    assert plain.sent == walked, plain
    assert auto.sent == walked[:2], auto


@pytest.mark.parametrize("program", RESOLVERS)
def test_autopath_needs_to_know_the_client(cluster: Cluster, program: str) -> None:
    """``stranger`` searches like a pod in ``default``, but no Pod has its address: no
    autopath for it, while the known pod with the same resolv.conf gets it."""
    walked = pairs("kubernetes.default.default.svc.cluster.local.",
                   "kubernetes.default.svc.cluster.local.")
    known = cluster.resolve(program, "pod-default", "kubernetes.default", server=AUTOPATH)
    unknown = cluster.resolve(program, "stranger", "kubernetes.default", server=AUTOPATH)
    for lookup in (known, unknown):
        assert lookup.addresses == ["10.96.0.1"], lookup
    assert known.sent == walked[:2], known
    assert unknown.sent == walked, unknown


def test_autopath_getent(cluster: Cluster) -> None:
    """glibc's getent (with AI_ADDRCONFIG) from the shop pod: one step instead of two."""
    plain = cluster.resolve("getent", "pod-shop", "kubernetes.default", server=PLAIN)
    auto = cluster.resolve("getent", "pod-shop", "kubernetes.default", server=AUTOPATH)
    for lookup in (plain, auto):
        assert lookup.returncode == 0, lookup
        assert lookup.addresses == ["10.96.0.1"], lookup
        assert lookup.canonical == "kubernetes.default.svc.cluster.local", lookup
    assert plain.steps == ["kubernetes.default.shop.svc.cluster.local.",
                           "kubernetes.default.svc.cluster.local."], plain
    assert auto.steps == ["kubernetes.default.shop.svc.cluster.local."], auto
    assert len(auto.queries) * 2 == len(plain.queries), (plain, auto)


def test_autopath_outside_names_cost_the_same(cluster: Cluster) -> None:
    """Every step NXDOMAIN or REFUSED: autopath gives up and glibc walks its list itself, no
    more queries than without it."""
    plain = cluster.resolve("glibc", "pod-shop", "www.example.com", server=PLAIN)
    auto = cluster.resolve("glibc", "pod-shop", "www.example.com", server=AUTOPATH)
    assert plain.returncode == auto.returncode == 2, (plain, auto)
    assert auto.sent == plain.sent == pairs(
        "www.example.com.shop.svc.cluster.local.", "www.example.com.svc.cluster.local.",
        "www.example.com.cluster.local.", "www.example.com.", "www.example.com.",
    ), (plain, auto)


@pytest.mark.parametrize("program", RESOLVERS)
def test_autopath_leaves_a_name_without_addresses_to_the_client(
    cluster: Cluster, program: str
) -> None:
    """``shop`` from default: the walk finds ``shop.svc.cluster.local`` (the namespace), which
    has no address. The server answers NODATA for the asked name, as CoreDNS does (SPEC §3.6),
    so each libc goes on exactly as without autopath: glibc walks its whole list, musl stops
    at the NODATA (SPEC §3.3)."""
    plain = cluster.resolve(program, "pod-default", "shop", server=PLAIN)
    auto = cluster.resolve(program, "pod-default", "shop", server=AUTOPATH)
    for lookup in (plain, auto):
        assert lookup.returncode == 2, lookup
        assert lookup.addresses == [], lookup
    if program == "glibc":
        assert len(plain.sent) == 10, plain
        assert steps(auto.sent) == steps(plain.sent), auto
        assert plain.error == auto.error == "EAI_NODATA", (plain, auto)
    else:
        assert len(plain.sent) == 4, plain
        assert auto.sent == pairs("shop.default.svc.cluster.local."), auto
        assert plain.error in MUSL_NODATA, plain
        assert auto.error in MUSL_NODATA, auto


# -- a server on 0.0.0.0:53 ----------------------------------------------------------------

SECOND = AUTOPATH  # in the wildcard namespace: the server's second address, no autopath


@pytest.fixture(scope="module")
def wildcard(tools: Tools) -> Iterator[Cluster]:
    """The way the server runs in a pod: ``--listen 0.0.0.0:53``, here in a namespace with two
    addresses (10.123.0.1 and 10.123.0.10 on its ``lo``) and one pod (10.123.0.2, default)."""
    with Lab() as lab:
        server_ns = lab.namespace("wsrv")
        server_ns.write_etc("resolv.conf", "# no search domains\n")
        pod = _pod(lab, server_ns, "wpod", PODS["pod-default"][0])
        log = QueryLog(lab, server_ns)
        server = lab.start_server(server_ns, tools.manifests)  # --listen 0.0.0.0:53
        assert server.addresses == [("0.0.0.0", 53)], server.output
        yield Cluster(lab, server_ns, {"pod-default": pod}, {"0.0.0.0": server}, log,
                      tools.programs, tools.missing)
        problems = _stop_cleanly([server])
    if problems:
        pytest.fail(problems, pytrace=False)


@pytest.mark.parametrize("program", ["getent", "glibc", "musl"])
def test_server_listening_on_all_addresses(wildcard: Cluster, program: str) -> None:
    lookup = wildcard.resolve(program, "pod-default", "kubernetes.default", server=PLAIN)
    assert lookup.returncode == 0, lookup
    assert lookup.addresses == ["10.96.0.1"], lookup
    assert lookup.steps == ["kubernetes.default.default.svc.cluster.local.",
                            "kubernetes.default.svc.cluster.local."], lookup


@pytest.mark.parametrize("program", ["glibc", "musl"])
def test_server_on_all_addresses_answers_from_the_address_asked(wildcard: Cluster,
                                                                program: str) -> None:
    """Asked at a second address of its host (multi-homed nodes, node-local caches), the
    server must answer from that address, or the client never sees the reply."""
    lookup = wildcard.resolve(program, "pod-default", "kubernetes.default", server=SECOND,
                              options=("ndots:5", "timeout:1", "attempts:1"))
    if not lookup.queries:  # not the failure expected above: fail for real
        pytest.fail(f"no query reached the server namespace:\n{lookup!r}")
    assert lookup.returncode == 0, lookup
    assert lookup.addresses == ["10.96.0.1"], lookup


def test_loadbalance_keeps_the_cname_first_for_glibc(cluster: Cluster) -> None:
    """``--loadbalance`` on an ExternalName chased inside the zone (web-alias → the headless
    web, two endpoints): glibc resolves it every time, and every reply starts with the CNAME
    while the addresses take turns (CoreDNS rotates the address records only)."""
    name = "web-alias.default.svc.cluster.local."
    for _ in range(20):
        lookup = cluster.resolve("getent", "pod-default", name, server=LOADBALANCED)
        assert lookup.returncode == 0, lookup
        assert lookup.addresses == ["10.244.1.10", "10.244.2.11"], lookup
    firsts = set()
    for _ in range(20):
        answer = cluster.pods["pod-default"].run(
            "dig", f"@{LOADBALANCED}", name, "A", "+noall", "+answer", check=True).stdout
        records = [line.split() for line in answer.splitlines() if line.strip()]
        assert [r[3] for r in records] == ["CNAME", "A", "A"], answer
        assert records[0][4] == "web.default.svc.cluster.local.", answer
        firsts.add(records[1][4])
    assert firsts == {"10.244.1.10", "10.244.2.11"}  # the addresses do rotate
