"""The Corefile reader as tables: real Corefiles give the exact Config; every plugin option
maps onto its field; bad input names its ``file:line``; lenient mode turns the unknown into
warnings. Also the Config helpers the CLI merges flags with."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from dnsserver.config import corefile
from dnsserver.config.corefile import (
    BadValue,
    Conflict,
    CorefileError,
    CorefileSyntaxError,
    UnknownPlugin,
    Unsupported,
)
from dnsserver.config.directives import UnknownOption
from dnsserver.config.settings import (
    COMBINED_LOG_FORMAT,
    CacheConfig,
    CacheLimits,
    Config,
    ConfigError,
    ForwardConfig,
    ForwardPolicy,
    HealthConfig,
    KubeTLS,
    LogConfig,
    ReloadConfig,
    StubDomain,
    parse_duration,
    split_host_port,
)
from dnsserver.plugins.errors import Consolidate, ErrorsOptions
from dnsserver.plugins.loop import LoopOptions
from zones.model import PodsMode

DATA = Path(__file__).parent / "data" / "corefiles"


def block(*lines: str, key: str = ".:53") -> str:
    """A server block of ``lines`` (line 1 is the key, the first line given is line 2)."""
    return key + " {\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


def kube(*options: str) -> str:
    """A main block whose ``kubernetes cluster.local`` block holds ``options`` (from line 3)."""
    return block("kubernetes cluster.local {", *options, "}")


def with_kube(*lines: str) -> str:
    """A main block: ``kubernetes cluster.local`` on line 2, then ``lines`` from line 3."""
    return block("kubernetes cluster.local", *lines)


def parse(text: str, *, lenient: bool = False) -> Config:
    return corefile.parse(text, lenient=lenient, env={})


def warnings_of(text: str, *, lenient: bool = False,
                env: dict[str, str] | None = None) -> list[str]:
    parsed = corefile.parse_with_warnings(text, lenient=lenient, env=env or {})
    return [str(w) for w in parsed.warnings]


# -- whole Corefiles -----------------------------------------------------------------------

KUBEADM = Config(
    listen=(("0.0.0.0", 53),),
    zones=("cluster.local",),
    ttl=30,
    pods=PodsMode.INSECURE,
    reverse_zones=("in-addr.arpa", "ip6.arpa"),
    fallthrough=True,
    fallthrough_zones=("in-addr.arpa", "ip6.arpa"),
    startup_timeout=5.0,  # CoreDNS's default wait for the API before listening
    server_zones=(".",),
    forward=ForwardConfig(to=("/etc/resolv.conf",), max_concurrent=1000),
    cache=CacheConfig(
        zones=(".",),
        success=CacheLimits(capacity=10000, max_ttl=30, min_ttl=5),
        denial=CacheLimits(capacity=10000, max_ttl=30, min_ttl=5),
        disable_success=("cluster.local",),
        disable_denial=("cluster.local",),
    ),
    health=HealthConfig(address=":8080", lameduck=5.0),
    ready_address=":8181",
    prometheus_address=":9153",
    errors=ErrorsOptions(),
    chain=(LoopOptions("."),),
    reload=ReloadConfig(interval=30.0, jitter=15.0),
    loadbalance=True,
)
assert KUBEADM.cache is not None
KUBEADM_LEGACY = replace(KUBEADM, cache=replace(KUBEADM.cache, disable_success=(),
                                                disable_denial=()))
DEPLOYMENT = replace(KUBEADM_LEGACY, pods=PodsMode.DISABLED, ttl=5)
DEPLOY_SH_STUB = """
    acme.local:53 {
      errors
      cache 30
      loop
      forward . 1.2.3.4
    }"""  # deploy.sh's STUBDOMAIN_TEMPLATE for {"acme.local": ["1.2.3.4"]}


def render_deployment(stubdomains: str) -> str:
    """coredns/deployment's ``coredns.yaml.sed`` Corefile as ``deploy.sh`` renders it."""
    text = (DATA / "deployment.Corefile.sed").read_text()
    for placeholder, value in (("CLUSTER_DOMAIN", "cluster.local"),
                               ("REVERSE_CIDRS", "in-addr.arpa ip6.arpa"),
                               ("UPSTREAMNAMESERVER", "/etc/resolv.conf"),
                               ("STUBDOMAINS", stubdomains)):
        text = text.replace(placeholder, value)
    return text


def test_kubeadm_corefile_gives_the_exact_config() -> None:
    path = DATA / "kubeadm.Corefile"
    parsed = corefile.load_with_warnings(path, env={})
    assert parsed.config == replace(KUBEADM, corefile=path)
    assert parsed.warnings == ()


def test_kubeadm_template_renders_any_cluster_domain() -> None:
    template = (DATA / "kubeadm.Corefile.tmpl").read_text()
    assert template.replace("{{ .DNSDomain }}", "cluster.local") == \
        (DATA / "kubeadm.Corefile").read_text()
    config = parse(template.replace("{{ .DNSDomain }}", "k8s.example"))
    assert KUBEADM.cache is not None
    assert config == replace(KUBEADM, zones=("k8s.example",), cache=replace(
        KUBEADM.cache, disable_success=("k8s.example",), disable_denial=("k8s.example",)))


def test_kubeadm_corefile_with_crlf_line_endings_and_a_bom() -> None:
    text = (DATA / "kubeadm.Corefile").read_text()
    assert parse("\ufeff" + text.replace("\n", "\r\n")) == KUBEADM


def test_older_kubeadm_corefile_caches_the_cluster_zone() -> None:
    assert parse((DATA / "kubeadm-legacy.Corefile").read_text()) == KUBEADM_LEGACY


@pytest.mark.parametrize(("stubdomains", "expected"), [
    ("", DEPLOYMENT),
    (DEPLOY_SH_STUB, replace(DEPLOYMENT, stub_domains=(StubDomain(
        "acme.local", ForwardConfig(to=("1.2.3.4:53",)),
        CacheConfig(zones=("acme.local",), success=CacheLimits(10000, 30),
                    denial=CacheLimits(10000, 30)), own_block=True),),
        chain=(LoopOptions("."), LoopOptions("acme.local")))),  # the stub block loops too
], ids=["plain", "with a deploy.sh stub domain"])
def test_coredns_deployment_corefile(stubdomains: str, expected: Config) -> None:
    assert parse(render_deployment(stubdomains)) == expected


def test_stub_domains_and_upstream_as_extra_server_blocks() -> None:
    config = parse((DATA / "stubdomains.Corefile").read_text())
    assert config == Config(
        listen=(("0.0.0.0", 53),),
        zones=("cluster.local",),
        pods=PodsMode.DISABLED,
        reverse_zones=(),
        startup_timeout=5.0,
        server_zones=("cluster.local",),
        stub_domains=(
            StubDomain("example.local", ForwardConfig(to=("10.100.0.10:53",)), own_block=True),
            StubDomain(".", ForwardConfig(to=("8.8.8.8:53",)), own_block=True),
        ),
    )


def test_imports_of_a_snippet_a_file_glob_in_order() -> None:
    config = corefile.load(DATA / "imports" / "Corefile")
    assert (config.errors, config.chain, config.health, config.ready_address,
            config.prometheus_address) == (
        ErrorsOptions(), (LoopOptions("."),), HealthConfig(), ":8181", ":9153")


# -- every plugin option -------------------------------------------------------------------

Getter = Callable[[Config], object]
OPTIONS: list[tuple[str, str, Getter, object]] = [
    # kubernetes
    ("kubernetes defaults", kube(),
     lambda c: (c.zones, c.reverse_zones, c.pods, c.ttl, c.fallthrough, c.namespaces),
     (("cluster.local",), (), PodsMode.DISABLED, 5, False, ())),
    ("pods verified", kube("pods verified"), lambda c: c.pods, PodsMode.VERIFIED),
    ("pods insecure", kube("pods insecure"), lambda c: c.pods, PodsMode.INSECURE),
    ("ttl 0", kube("ttl 0"), lambda c: c.ttl, 0),
    ("ttl 3600", kube("ttl 3600"), lambda c: c.ttl, 3600),
    ("fallthrough everywhere", kube("fallthrough"),
     lambda c: (c.fallthrough, c.fallthrough_zones), (True, ())),
    ("fallthrough zones", kube("fallthrough In-Addr.Arpa. ip6.arpa"),
     lambda c: (c.fallthrough, c.fallthrough_zones), (True, ("in-addr.arpa", "ip6.arpa"))),
    ("namespaces", kube("namespaces default kube-system default"),
     lambda c: c.namespaces, ("default", "kube-system")),
    ("endpoint", kube("endpoint https://10.0.0.1:6443"),
     lambda c: c.kube_endpoint, "https://10.0.0.1:6443"),
    ("tls", kube("tls cert.pem key.pem ca.pem"),
     lambda c: c.kube_tls, KubeTLS(Path("cert.pem"), Path("key.pem"), Path("ca.pem"))),
    ("kubeconfig", kube("kubeconfig /etc/k.yaml"),
     lambda c: (c.kubeconfig, c.context), (Path("/etc/k.yaml"), None)),
    ("kubeconfig with context", kube("kubeconfig /etc/k.yaml kind-kind"),
     lambda c: (c.kubeconfig, c.context), (Path("/etc/k.yaml"), "kind-kind")),
    ("startup_timeout", kube("startup_timeout 1m"), lambda c: c.startup_timeout, 60.0),
    ("zones from the server block", block("kubernetes", key="Cluster.Local.:1053"),
     lambda c: (c.zones, c.server_zones, c.listen),
     (("cluster.local",), ("cluster.local",), (("0.0.0.0", 1053),))),
    ("reverse zones from CIDRs", block("kubernetes cluster.local 10.0.0.0/8 fd00::/16"),
     lambda c: c.reverse_zones, ("10.in-addr.arpa", "0.0.d.f.ip6.arpa")),
    ("a CIDR between octets", block("kubernetes cluster.local 10.0.0.0/23"),
     lambda c: c.reverse_zones, ("0.0.10.in-addr.arpa", "1.0.10.in-addr.arpa")),
    ("several cluster zones", block("kubernetes cluster.local example.cluster in-addr.arpa"),
     lambda c: (c.zones, c.reverse_zones),
     (("cluster.local", "example.cluster"), ("in-addr.arpa",))),
    ("autopath", block("autopath @kubernetes", "kubernetes cluster.local {", "pods verified", "}"),
     lambda c: c.autopath, True),
    ("no autopath", kube(), lambda c: c.autopath, False),
    # the server block: listen
    ("dns:// key and port", block("kubernetes cluster.local", key="dns://.:5353"),
     lambda c: c.listen, (("0.0.0.0", 5353),)),
    ("bind", with_kube("bind 127.0.0.1 ::1"), lambda c: c.listen,
     (("127.0.0.1", 53), ("::1", 53))),
    ("comma separated keys", block("kubernetes cluster.local", key="cluster.local, example.org"),
     lambda c: c.server_zones, ("cluster.local", "example.org")),
    # forward
    ("forward upstreams", with_kube(
        "forward . 8.8.8.8 1.1.1.1:5353 [2001:db8::1]:53 2001:DB8::2 dns://9.9.9.9"),
     lambda c: c.forward, ForwardConfig(to=(
         "8.8.8.8:53", "1.1.1.1:5353", "[2001:db8::1]:53", "[2001:db8::2]:53", "9.9.9.9:53"))),
    ("forward files", with_kube("forward . /etc/resolv.conf 10.0.0.1 /run/resolv.conf"),
     lambda c: None if c.forward is None else (c.forward.files, c.forward.addresses),
     (("/etc/resolv.conf", "/run/resolv.conf"), (("10.0.0.1", 53),))),
    ("forward options", with_kube(
        "forward . 10.0.0.1 {", "except corp.example. Lab.Example", "force_tcp", "prefer_udp",
        "expire 30s", "max_fails 0", "max_concurrent 500", "policy sequential",
        "health_check 5s no_rec domain example.org", "next NXDOMAIN",
        "failover SERVFAIL refused", "failfast_all_unhealthy_upstreams", "}"),
     lambda c: c.forward, ForwardConfig(
         to=("10.0.0.1:53",), except_zones=("corp.example", "lab.example"),
         policy=ForwardPolicy.SEQUENTIAL, max_concurrent=500, force_tcp=True, prefer_udp=True,
         max_fails=0, health_check=5.0, health_check_recursion=False,
         health_check_domain="example.org", expire=30.0, next_rcodes=("NXDOMAIN",),
         failover_rcodes=("SERVFAIL", "REFUSED"), failfast_all_unhealthy=True)),
    ("forward max_concurrent 0 is no limit",
     with_kube("forward . 10.0.0.1 {", "max_concurrent 0", "}"),
     lambda c: None if c.forward is None else c.forward.max_concurrent, None),
    ("forward policy round_robin", with_kube("forward . 10.0.0.1 {", "policy round_robin", "}"),
     lambda c: None if c.forward is None else c.forward.policy, ForwardPolicy.ROUND_ROBIN),
    ("no forward", kube(), lambda c: (c.forward, c.stub_domains), (None, ())),
    ("forward ZONE in the main block is a stub domain",
     with_kube("forward corp.example 10.0.0.2", "forward . 8.8.8.8", "cache 30"),
     lambda c: (c.stub_domains, c.forward),
     ((StubDomain("corp.example", ForwardConfig(
         to=("10.0.0.2:53",), from_zone="corp.example",
         after=(ForwardConfig(to=("8.8.8.8:53",)),)),
         CacheConfig(success=CacheLimits(10000, 30), denial=CacheLimits(10000, 30))),),
      ForwardConfig(to=("8.8.8.8:53",), before=(
          ForwardConfig(to=("10.0.0.2:53",), from_zone="corp.example"),)))),
    ("a stub block with two zones",
     with_kube() + block("forward . 10.0.0.3", key="a.example b.example:53"),
     lambda c: tuple(s.zone for s in c.stub_domains), ("a.example", "b.example")),
    ("a stub block forwarding a sub-zone",
     with_kube() + block("forward lab.corp.example 10.0.0.4", key="corp.example"),
     lambda c: tuple(s.zone for s in c.stub_domains), ("lab.corp.example",)),
    # cache
    ("cache defaults", with_kube("cache"), lambda c: c.cache, CacheConfig()),
    ("cache TTL and zones", with_kube("cache 30 cluster.local"),
     lambda c: c.cache, CacheConfig(zones=("cluster.local",), success=CacheLimits(10000, 30),
                                    denial=CacheLimits(10000, 30))),
    ("cache success and denial",
     with_kube("cache {", "success 5000 60 10", "denial 2500", "}"),
     lambda c: None if c.cache is None else (c.cache.success, c.cache.denial),
     (CacheLimits(5000, 60, 10), CacheLimits(2500, 1800, 5))),
    ("cache TTL kept by a bare capacity", with_kube("cache 30 {", "success 5000", "}"),
     lambda c: None if c.cache is None else c.cache.success, CacheLimits(5000, 30, 5)),
    ("serve_stale", with_kube("cache {", "serve_stale", "}"),
     lambda c: None if c.cache is None else (c.cache.serve_stale, c.cache.serve_stale_verify),
     (3600.0, False)),
    ("serve_stale verify", with_kube("cache {", "serve_stale 10m verify", "}"),
     lambda c: None if c.cache is None else (c.cache.serve_stale, c.cache.serve_stale_verify),
     (600.0, True)),
    ("servfail 0", with_kube("cache {", "servfail 0", "}"),
     lambda c: None if c.cache is None else c.cache.servfail_ttl, 0.0),
    ("servfail 5m", with_kube("cache {", "servfail 5m", "}"),
     lambda c: None if c.cache is None else c.cache.servfail_ttl, 300.0),
    ("disable without zones", with_kube("cache {", "disable success", "disable denial a.b", "}"),
     lambda c: None if c.cache is None else (c.cache.disable_success, c.cache.disable_denial),
     ((".",), ("a.b",))),
    ("keepttl", with_kube("cache {", "keepttl", "}"),
     lambda c: None if c.cache is None else c.cache.keep_ttl, True),
    # health, ready, prometheus
    ("health", with_kube("health"), lambda c: c.health, HealthConfig(":8080", 0.0)),
    ("health address and lameduck", with_kube("health localhost:8091 {", "lameduck 500ms", "}"),
     lambda c: c.health, HealthConfig("localhost:8091", 0.5)),
    ("health on one line", with_kube("health { lameduck 5s }"),
     lambda c: c.health, HealthConfig(":8080", 5.0)),
    ("ready", with_kube("ready"), lambda c: c.ready_address, ":8181"),
    ("ready address", with_kube("ready 127.0.0.1:8181"),
     lambda c: c.ready_address, "127.0.0.1:8181"),
    ("prometheus default is localhost", with_kube("prometheus"),
     lambda c: c.prometheus_address, "localhost:9153"),
    ("prometheus v6", with_kube("prometheus [::]:9253"),
     lambda c: c.prometheus_address, "[::]:9253"),
    ("same health in two blocks",
     with_kube("health :8080") + block("health :8080", "forward . 1.1.1.1", key="x.example"),
     lambda c: c.health, HealthConfig()),
    ("no HTTP endpoints", kube(),
     lambda c: (c.health, c.ready_address, c.prometheus_address), (None, None, None)),
    # log, errors, loop, reload, loadbalance
    ("log", with_kube("log"), lambda c: (c.log, c.log_queries), (LogConfig(), True)),
    ("no log", kube(), lambda c: (c.log, c.log_queries), (None, False)),
    ("log combined", with_kube("log . {combined}"),
     lambda c: c.log, LogConfig(format=COMBINED_LOG_FORMAT)),
    ("log names and format", with_kube('log cluster.local Example.org "{name} {rcode}"'),
     lambda c: c.log, LogConfig(("cluster.local", "example.org"), "{name} {rcode}")),
    ("log classes", with_kube("log {", "class denial error", "}"),
     lambda c: None if c.log is None else c.log.classes, ("denial", "error")),
    ("log class all wins", with_kube("log {", "class denial all", "}"),
     lambda c: None if c.log is None else c.log.classes, ("all",)),
    ("log in a stub block only", with_kube() + block("log", "forward . 1.1.1.1", key="x.example"),
     lambda c: c.log, LogConfig(zones=("x.example",))),
    ("errors", with_kube("errors"), lambda c: c.errors, ErrorsOptions()),
    ("errors consolidate", with_kube("errors stdout {", "consolidate 5m \".* i/o timeout$\" warning",
                                     "consolidate 30s ^Failed", "stacktrace", "}"),
     lambda c: c.errors, ErrorsOptions((Consolidate(300.0, ".* i/o timeout$", "warning"),
                                        Consolidate(30.0, "^Failed")), stacktrace=True)),
    ("no errors", kube(), lambda c: (c.errors, c.chain, c.loadbalance), (None, (), False)),
    ("loop", with_kube("loop"), lambda c: c.chain, (LoopOptions("."),)),
    ("loop probes each block's first zone", with_kube("loop") + block(
        "loop", "forward . 1.1.1.1", key="x.example y.example"),
     lambda c: c.chain, (LoopOptions("."), LoopOptions("x.example"))),
    ("reload", with_kube("reload"), lambda c: c.reload, ReloadConfig(30.0, 15.0)),
    ("reload interval", with_kube("reload 1m"), lambda c: c.reload, ReloadConfig(60.0, 15.0)),
    ("reload interval and jitter", with_kube("reload 10s 2s"),
     lambda c: c.reload, ReloadConfig(10.0, 2.0)),
    ("loadbalance", with_kube("loadbalance"), lambda c: c.loadbalance, True),
    ("loadbalance round_robin", with_kube("loadbalance round_robin"),
     lambda c: c.loadbalance, True),
    # lexical details
    ("import on the line of a brace", "(s) {\n  errors\n}\n.:53 { import s\n"
     "  kubernetes cluster.local\n}\n", lambda c: c.errors, ErrorsOptions()),
    ("forward of a cluster zone from the kubernetes block",
     with_kube("forward cluster.local 10.0.0.9"),
     lambda c: tuple(s.zone for s in c.stub_domains), ("cluster.local",)),
    ("comments", with_kube("errors # the errors plugin", "# loop", "log#no space needed"),
     lambda c: (c.errors, c.chain, c.log), (ErrorsOptions(), (), LogConfig())),
    ("quotes and escaped quotes", with_kube('log . "{name} \\"{type}\\" {rcode}"'),
     lambda c: None if c.log is None else c.log.format, '{name} "{type}" {rcode}'),
    ("a braceless single block", ".:53\nkubernetes cluster.local\nerrors\n",
     lambda c: c.errors, ErrorsOptions()),
]


@pytest.mark.parametrize(("text", "get", "expected"), [case[1:] for case in OPTIONS],
                         ids=[case[0] for case in OPTIONS])
def test_option_maps_onto_the_config(text: str, get: Getter, expected: object) -> None:
    assert get(parse(text)) == expected


def test_environment_placeholders() -> None:
    env = {"UPSTREAM": "10.0.0.53", "DOMAIN": "k8s.example"}
    text = block("kubernetes {$DOMAIN}", "forward . {%UPSTREAM%}:5353 {$UPSTREAM}")
    config = corefile.parse(text, env=env)
    assert config.zones == ("k8s.example",)
    assert config.forward == ForwardConfig(to=("10.0.0.53:5353", "10.0.0.53:53"))


# -- durations and addresses ---------------------------------------------------------------

DURATIONS = [("0", 0.0), ("500ms", 0.5), ("5s", 5.0), ("1m", 60.0), ("1h", 3600.0),
             ("1m30s", 90.0), ("1.5s", 1.5), ("100us", 0.0001), ("2h45m", 9900.0),
             (".5s", 0.5), ("1µs", 0.000001), ("10ns", 1e-8)]
BAD_DURATIONS = ["", "5", "5x", "-5s", "s", "1d", "5 s", "1.2.3s", "0s0"]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS, ids=[t for t, _ in DURATIONS])
def test_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", BAD_DURATIONS)
def test_bad_duration(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a duration"):
        parse_duration(text)


ADDRESSES = [(":8080", ("", 8080)), ("localhost:9153", ("localhost", 9153)),
             ("0.0.0.0:53", ("0.0.0.0", 53)), ("[::]:9253", ("::", 9253)),
             ("[fd00::1]:53", ("fd00::1", 53))]
BAD_ADDRESSES = ["8080", "localhost", ":99999", "[::1]", "::1:53", "host name:1", "a_b:1", ":"]


@pytest.mark.parametrize(("text", "expected"), ADDRESSES, ids=[t for t, _ in ADDRESSES])
def test_host_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize("text", BAD_ADDRESSES)
def test_bad_host_port(text: str) -> None:
    with pytest.raises(ConfigError, match="is not an address"):
        split_host_port(text)


# -- bad input: the error class and its file:line ------------------------------------------

BAD: list[tuple[str, str, type[CorefileError], int, str]] = [
    ("unknown plugin", with_kube("dns64 prefix 64:ff9b::/96"), UnknownPlugin, 3,
     "unknown plugin 'dns64'"),
    ("unknown option", kube("podz verified"), UnknownOption, 3,
     "kubernetes: unknown option 'podz'"),
    ("unknown forward option", with_kube("forward . 1.1.1.1 {", "max_concurent 10", "}"),
     UnknownOption, 4, "forward: unknown option 'max_concurent'"),
    ("autopath outside the cluster zone", with_kube("autopath example.org @kubernetes"),
     Unsupported, 3, "autopath: zone 'example.org' does not hold the kubernetes zone; only "
     "such zones are supported"),
    ("loadbalance prefer", with_kube("loadbalance {", "prefer 10.0.0.0/8", "}"), Unsupported, 4,
     "loadbalance: option 'prefer' is not supported"),
    ("endpoint_pod_names", kube("endpoint_pod_names"), Unsupported, 3,
     "kubernetes: option 'endpoint_pod_names' is not supported"),
    ("client rate limits", kube("apiserver_qps 50"), Unsupported, 3,
     "kubernetes: option 'apiserver_qps' is not supported"),
    ("removed before 1.13", kube("resyncperiod 10m"), UnknownOption, 3,
     "kubernetes: unknown option 'resyncperiod'"),
    ("startup_timeout 0", kube("startup_timeout 0s"), BadValue, 3,
     "kubernetes startup_timeout: must be more than 0"),
    ("unsupported option", kube("noendpoints"), Unsupported, 3,
     "kubernetes: option 'noendpoints' is not supported"),
    ("missing }", ".:53 {\n    kubernetes cluster.local\n", CorefileSyntaxError, 1,
     "'{' is never closed"),
    ("missing } after a nested block", ".:53 {\n  kubernetes cluster.local {\n    pods insecure\n"
     "  }\n  errors\n", CorefileSyntaxError, 1, "'{' is never closed"),
    ("a snippet never closed", "(s) {\n  errors\n" + with_kube(), CorefileSyntaxError, 1,
     "'{' is never closed"),
    ("extra }", with_kube() + "}\n", CorefileSyntaxError, 4, "unexpected '}'"),
    ("{ on its own line", ".:53\n{\n    kubernetes cluster.local\n}\n", CorefileSyntaxError, 2,
     "unexpected '{'"),
    ("a second block without braces", with_kube() + "example.org\n", CorefileSyntaxError, 4,
     "expected '{'"),
    ("unclosed quote", with_kube('log "{name}', "errors"), CorefileSyntaxError, 3,
     "a quoted string is never closed"),
    ("bad number", kube("ttl thirty"), BadValue, 3,
     "kubernetes ttl: 'thirty' is not a whole number"),
    ("number out of range", kube("ttl 3601"), BadValue, 3,
     "kubernetes ttl: 3601 is out of range (from 0 to 3600)"),
    ("cache TTL 0", with_kube("cache 0"), BadValue, 3, "cache TTL: 0 is out of range"),
    ("bad capacity", with_kube("cache {", "success many", "}"), BadValue, 4,
     "cache success capacity: 'many' is not a whole number"),
    ("bad duration", with_kube("health {", "lameduck 5x", "}"), BadValue, 4,
     "health lameduck: '5x' is not a duration"),
    ("bare seconds are no duration", with_kube("reload 30"), BadValue, 3,
     "reload interval: '30' is not a duration"),
    ("servfail over 5m", with_kube("cache {", "servfail 6m", "}"), BadValue, 4,
     "cache servfail: at most 5m"),
    ("reload under 2s", with_kube("reload 1s"), BadValue, 3,
     "reload: the interval must be at least 2s"),
    ("bad upstream address", with_kube("forward . 10.0.0.300"), BadValue, 3,
     "forward: '10.0.0.300' is not an IP address, IP:PORT or file"),
    ("upstream host name", with_kube("forward . dns.google"), BadValue, 3,
     "forward: 'dns.google' is not an IP address"),
    ("bad http address", with_kube("prometheus 9153"), BadValue, 3,
     "prometheus: '9153' is not an address"),
    ("bind to an interface", with_kube("bind eth0"), BadValue, 3,
     "bind: 'eth0' is not an IP address"),
    ("bad zone", block("kubernetes cluster..local"), BadValue, 2,
     "kubernetes: 'cluster..local' is not a domain name"),
    ("bad CIDR", block("kubernetes cluster.local 10.0.0.1/8"), BadValue, 2,
     "kubernetes: '10.0.0.1/8' is not a CIDR network"),
    ("bad namespace", kube("namespaces Default"), BadValue, 3,
     "kubernetes namespaces: 'Default' is not a namespace name"),
    ("bad pods mode", kube("pods sometimes"), BadValue, 3, "kubernetes pods: 'sometimes'"),
    ("bad policy", with_kube("forward . 1.1.1.1 {", "policy fastest", "}"), BadValue, 4,
     "forward policy: 'fastest'"),
    ("bad rcode", with_kube("forward . 1.1.1.1 {", "failover NOERROR", "}"), BadValue, 4,
     "forward failover: 'NOERROR'"),
    ("bad log class", with_kube("log {", "class loud", "}"), BadValue, 4,
     "log class: 'loud'"),
    ("too few arguments", with_kube("forward ."), BadValue, 3,
     "forward: expected at least 2 arguments, got 1"),
    ("too many arguments", with_kube("health :8080 :8081"), BadValue, 3,
     "health: expected 0 to 1 arguments, got 2"),
    ("arguments where none go", with_kube("loop forever"), BadValue, 3,
     "loop: expected no arguments, got 1"),
    ("too many upstreams", with_kube("forward . " + " ".join(f"10.0.0.{i}" for i in range(16))),
     BadValue, 3, "forward: at most 15 upstreams"),
    ("root as the cluster zone", block("kubernetes"), BadValue, 2,
     "kubernetes: the root zone cannot be the cluster zone"),
    ("only reverse zones", block("kubernetes in-addr.arpa"), BadValue, 2,
     "kubernetes: needs a zone that is not a reverse zone"),
    ("empty Corefile", "# nothing\n", BadValue, 1, "no server block"),
    ("duplicate zone in two blocks",
     with_kube() + block("forward . 1.1.1.1", key="example.org") +
     block("forward . 1.1.1.2", key="example.org:53"),
     Conflict, 7, "duplicate zone 'example.org' on port 53 (also at Corefile:4)"),
    ("duplicate kubernetes zone", block("kubernetes cluster.local Cluster.Local."), Conflict, 2,
     "kubernetes: duplicate zone 'cluster.local'"),
    ("a zone forwarded twice", with_kube("forward corp.example 10.0.0.1") +
     block("forward . 10.0.0.2", key="corp.example"), Conflict, 6,
     "forward: zone 'corp.example' is forwarded twice (first at Corefile:3)"),
    ("cache twice", with_kube("cache", "cache 30"), Conflict, 4,
     "cache is used twice in one server block (first at Corefile:3)"),
    ("kubernetes in two blocks", with_kube() + block("kubernetes k8s.example", key="k8s.example"),
     Conflict, 5, "kubernetes is used in a second server block (first at Corefile:2)"),
    ("different health addresses",
     with_kube("health :8080") + block("health :8081", "forward . 1.1.1.1", key="x.example"),
     Conflict, 6, "health differs from the one at Corefile:3"),
    ("autopath @etcd", block("autopath @etcd", "kubernetes cluster.local"), Unsupported, 2,
     "autopath: only '@kubernetes' is supported, not the plugin '@etcd'"),
    ("autopath from a resolv.conf", block("autopath /etc/resolv.conf", "kubernetes cluster.local"),
     Unsupported, 2,
     "autopath: only '@kubernetes' is supported, not the resolv.conf '/etc/resolv.conf'"),
    ("autopath in a stub block", with_kube() + block("autopath @kubernetes", key="x.example"),
     Unsupported, 5, "autopath works only in the kubernetes server block"),
    ("no kubernetes", block("forward . 8.8.8.8"), Unsupported, 1,
     "no server block uses the kubernetes plugin"),
    ("a stub block on another port", with_kube() + block("forward . 1.1.1.1", key="x.example:5353"),
     Unsupported, 4, "port 5353 differs from the kubernetes block's port 53; one port is served"),
    ("a block that does not forward", with_kube() + block("errors", key="x.example"), Unsupported,
     4, "server block 'x.example' has no forward"),
    ("a stub block taking the cluster's reverse zone",
     block("kubernetes cluster.local in-addr.arpa")
     + block("forward . 1.1.1.1", key="in-addr.arpa"),
     Unsupported, 5, "forward: a server block for 'in-addr.arpa' would take names of the "
     "kubernetes zone 'in-addr.arpa'"),
    ("a stub block below the cluster zone",
     with_kube() + block("forward . 1.1.1.1", key="corp.cluster.local"),
     Unsupported, 5, "forward: a server block for 'corp.cluster.local'"),
    ("a TLS server block", block("kubernetes cluster.local", key="tls://.:853"), Unsupported, 1,
     "server block 'tls://.:853': only plain DNS (dns://) is served"),
    ("a TLS upstream", with_kube("forward . tls://9.9.9.9"), Unsupported, 3,
     "forward: 'tls://9.9.9.9': only plain DNS upstreams are supported"),
    ("import of a missing file", with_kube("import missing.conf"), BadValue, 3,
     "import: no snippet or file named 'missing.conf'"),
    ("a snippet importing itself", "(loop) {\n  import loop\n}\n" + with_kube("import loop"),
     CorefileSyntaxError, 2, "import: more than 100 imports"),
]


@pytest.mark.parametrize(("text", "kind", "line", "message"), [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_corefile_names_file_and_line(text: str, kind: type[CorefileError], line: int,
                                          message: str) -> None:
    with pytest.raises(kind) as caught:
        parse(text)
    assert str(caught.value).startswith(f"Corefile:{line}: {message}"), str(caught.value)
    assert (caught.value.path, caught.value.line) == ("Corefile", line)
    assert isinstance(caught.value, ConfigError)


def test_errors_in_an_imported_file_name_that_file(tmp_path: Path) -> None:
    (tmp_path / "extra.conf").write_text("errors\n\nhealth {\n  lameduck soon\n}\n")
    (tmp_path / "Corefile").write_text(with_kube("import extra.conf"))
    with pytest.raises(BadValue, match=r"extra\.conf:4: health lameduck: 'soon'"):
        corefile.load(tmp_path / "Corefile")


def test_load_of_a_missing_file() -> None:
    with pytest.raises(ConfigError, match="nope/Corefile: cannot read the Corefile"):
        corefile.load("nope/Corefile")


# -- lenient mode and warnings -------------------------------------------------------------

def test_lenient_mode_keeps_unknown_and_unsupported_parts_as_warnings() -> None:
    text = (block("dns64 prefix 64:ff9b::/96", "kubernetes cluster.local {", "pods verified",
                  "noendpoints", "podz 3", "}", "forward . 1.1.1.1 {", "tls_servername x",
                  "}", "loadbalance weighted /w.txt") +
            block("file db.example.org", key="example.org"))
    parsed = corefile.parse_with_warnings(text, lenient=True, env={})
    assert parsed.config.pods is PodsMode.VERIFIED
    assert parsed.config.forward == ForwardConfig(to=("1.1.1.1:53",))
    assert (parsed.config.loadbalance, parsed.config.stub_domains) == (False, ())
    assert [str(w) for w in parsed.warnings] == [
        "Corefile:2: unknown plugin 'dns64'; ignored",
        "Corefile:5: kubernetes: option 'noendpoints' is not supported; ignored",
        "Corefile:6: kubernetes: unknown option 'podz'; ignored",
        "Corefile:9: forward: option 'tls_servername' is not supported; ignored",
        "Corefile:11: loadbalance: weighted is not supported; ignored",
        "Corefile:14: unknown plugin 'file'; ignored",
        "Corefile:13: server block 'example.org' has no forward; besides the kubernetes block "
        "only forwarding blocks are served; ignored",
    ]


LENIENT_STILL_FAILS = ["bad number", "missing }", "duplicate zone in two blocks",
                       "autopath @etcd", "bad duration", "no kubernetes"]


@pytest.mark.parametrize("case", LENIENT_STILL_FAILS)
def test_lenient_mode_still_rejects_malformed_input(case: str) -> None:
    text, kind = next((c[1], c[2]) for c in BAD if c[0] == case)
    with pytest.raises(kind):
        parse(text, lenient=True)


WARNINGS: list[tuple[str, str, list[str]]] = [
    ("forward . twice", with_kube("forward . 1.1.1.1", "forward . 1.1.1.2"),
     ["Corefile:4: forward .: never used: an earlier forward line (.) takes all its names "
      "first; CoreDNS tries forward lines in order, so put sub-zones first"]),
    ("reload jitter over half", with_kube("reload 10s"),
     ["Corefile:3: reload: jitter 15s is over half the interval; using 5s"]),
    ("autopath without pods verified", block("autopath @kubernetes", "kubernetes cluster.local"),
     ["Corefile:2: autopath needs 'pods verified' in kubernetes to know a client's namespace; "
      "without it no search path is expanded"]),
    ("two endpoints", kube("endpoint https://a:6443 https://b:6443"),
     ["Corefile:3: kubernetes endpoint: only the first URL is used"]),
    ("unset variable", block("kubernetes cluster.local", "forward . 1.1.1.1 {$EXTRA}"),
     ["Corefile:3: environment variable EXTRA is not set; using ''"]),
    ("kubeadm has none", (DATA / "kubeadm.Corefile").read_text(), []),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in WARNINGS],
                         ids=[case[0] for case in WARNINGS])
def test_accepted_but_ignored_parts_warn(text: str, expected: list[str]) -> None:
    assert warnings_of(text) == expected


def test_reload_jitter_is_capped_at_half_the_interval() -> None:
    assert parse(with_kube("reload 10s")).reload == ReloadConfig(10.0, 5.0)


def test_parse_logs_its_warnings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dnsserver.corefile"):
        parse(kube("endpoint https://a:6443 https://b:6443"))
    assert caplog.messages == ["Corefile:3: kubernetes endpoint: only the first URL is used"]


def test_an_import_glob_matching_nothing_warns(tmp_path: Path) -> None:
    (tmp_path / "Corefile").write_text(with_kube("import conf.d/*.conf"))
    parsed = corefile.load_with_warnings(tmp_path / "Corefile")
    assert [w.message for w in parsed.warnings] == ["import: no file matches 'conf.d/*.conf'"]


# -- Config: defaults and merging flags over a Corefile ------------------------------------

def test_flag_built_defaults_are_unchanged() -> None:
    config = Config()
    assert (config.listen, config.zones, config.ttl, config.pods, config.reverse_zones) == (
        (("127.0.0.1", 5353),), ("cluster.local",), 5, PodsMode.INSECURE,
        ("in-addr.arpa", "ip6.arpa"))
    assert (config.forward, config.cache, config.health, config.ready_address,
            config.prometheus_address, config.log, config.reload, config.stub_domains) == (
        None, None, None, None, None, None, None, ())
    assert not (config.errors or config.loadbalance or config.autopath
                or config.fallthrough)


def test_flags_merge_over_a_corefile() -> None:
    merged = KUBEADM.merged({"listen": (("127.0.0.1", 5353),), "ttl": 10, "kubeconfig": None,
                             "manifests": Path("cluster.yaml")})
    assert merged == replace(KUBEADM, listen=(("127.0.0.1", 5353),), ttl=10,
                             manifests=Path("cluster.yaml"))
    assert KUBEADM.merged({}) == KUBEADM


def test_merge_rejects_unknown_fields() -> None:
    with pytest.raises(ConfigError, match="unknown configuration field"):
        KUBEADM.merged({"tll": 10})  # type: ignore[typeddict-unknown-key]


FALLTHROUGH = [
    (KUBEADM, "9.9.9.203.in-addr.arpa.", True),
    (KUBEADM, "1.0.0.0.ip6.ARPA", True),
    (KUBEADM, "nosuch.default.svc.cluster.local.", False),
    (replace(KUBEADM, fallthrough_zones=()), "nosuch.default.svc.cluster.local.", True),
    (Config(), "9.9.9.203.in-addr.arpa.", False),
]


@pytest.mark.parametrize(("config", "name", "expected"), FALLTHROUGH,
                         ids=[f"{name} {expected}" for _, name, expected in FALLTHROUGH])
def test_falls_through(config: Config, name: str, expected: bool) -> None:
    assert config.falls_through(name) is expected
