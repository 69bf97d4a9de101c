"""kube-dns's ConfigMap (``--kube-dns-config``): stubDomains and upstreamNameservers.

Tables of what kube-dns accepts and refuses (kubernetes/dns ``pkg/dns/config``), read from its
three spellings (the data, a manifest, the mounted folder); how it lands on the Config, alone
and next to a Corefile; and a real server forwarding a stub domain and everything else to two
upstreams on loopback.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dns.rcode
import pytest
from conftest import EXAMPLE, CliRunner, RunningServer, rr_lines, start_server
from upstream import FakeUpstream

from dnsserver import cli
from dnsserver.config import kubedns
from dnsserver.config.kubedns import KubeDNSConfig, KubeDNSConfigError, KubeStubDomain, Value
from dnsserver.config.settings import Config, StubDomain
from dnsserver.plugins.cache import CacheConfig, CacheLimits
from dnsserver.plugins.forward import ForwardConfig

CORE_FILES = Path(__file__).parent / "data" / "corefiles"


def parse(**data: str) -> kubedns.Parsed:
    return kubedns.parse_data({key: Value(text, f"cm {key}") for key, text in data.items()})


# -- the data ------------------------------------------------------------------------------

GOOD = {
    "the documentation's example": (
        {"stubDomains": '{"acme.local": ["1.2.3.4"]}',
         "upstreamNameservers": '["8.8.8.8", "8.8.4.4"]'},
        KubeDNSConfig((KubeStubDomain("acme.local", ("1.2.3.4:53",)),),
                      ("8.8.8.8:53", "8.8.4.4:53"))),
    "ports, IPv6, order kept": (
        {"stubDomains": '{"widget.local": ["[2001:db8:2:2:2::2]:10053", "2001:DB8:3::3"],\n'
                        ' "acme.local": ["1.2.3.4:5353", "1.2.3.4:5353", "1.2.3.5"]}'},
        KubeDNSConfig((KubeStubDomain("widget.local", ("[2001:db8:2:2:2::2]:10053",
                                                       "[2001:db8:3::3]:53")),
                       KubeStubDomain("acme.local", ("1.2.3.4:5353", "1.2.3.5:53"))))),
    "three upstreams with ports": (
        {"upstreamNameservers": '["1.2.3.4:53", "[2001:db8::1]:5353", "::ffff:10.0.0.1"]'},
        KubeDNSConfig(upstream_nameservers=("1.2.3.4:53", "[2001:db8::1]:5353",
                                            "[::ffff:a00:1]:53"))),
    "null and empty values": (
        {"stubDomains": "null", "upstreamNameservers": " [ ]\n"}, KubeDNSConfig()),
    "blank federations": ({"federations": "  \n"}, KubeDNSConfig()),
    "a deep domain, digits and dashes": (
        {"stubDomains": '{"10.in-addr.arpa": ["10.0.0.2"], "a-1.b2.corp": ["10.0.0.3"]}'},
        KubeDNSConfig((KubeStubDomain("10.in-addr.arpa", ("10.0.0.2:53",)),
                       KubeStubDomain("a-1.b2.corp", ("10.0.0.3:53",))))),
    "nothing": ({}, KubeDNSConfig()),
}


@pytest.mark.parametrize("case", list(GOOD), ids=list(GOOD))
def test_good_data(case: str) -> None:
    data, expected = GOOD[case]
    parsed = parse(**data)
    assert parsed.config == expected
    assert parsed.warnings == ()


BAD = {
    "stubDomains not JSON": (
        {"stubDomains": '{"acme.local": ["1.2.3.4"]'},
        "cm stubDomains: not valid JSON: Expecting ',' delimiter (line 1, column 27)"),
    "stubDomains a list": (
        {"stubDomains": '["1.2.3.4"]'},
        'cm stubDomains: expected a JSON object of domain to nameservers, e.g. '
        '{"acme.local": ["1.2.3.4"]}, not a list'),
    "upper-case domain": (
        {"stubDomains": '{"Acme.local": ["1.2.3.4"]}'},
        "cm stubDomains: 'Acme.local' is not a valid domain name (lower-case letters, digits, "
        "'-' and '.', no trailing dot)"),
    "trailing dot": (
        {"stubDomains": '{"acme.local.": ["1.2.3.4"]}'},
        "cm stubDomains: 'acme.local.' is not a valid domain name (lower-case letters, digits, "
        "'-' and '.', no trailing dot)"),
    "empty domain": (
        {"stubDomains": '{"": ["1.2.3.4"]}'},
        "cm stubDomains: '' is not a valid domain name (lower-case letters, digits, '-' and "
        "'.', no trailing dot)"),
    "label of 64": (
        {"stubDomains": '{"' + "a" * 64 + '.local": ["1.2.3.4"]}'},
        f"cm stubDomains: '{'a' * 64}.local' is not a valid domain name (lower-case letters, "
        "digits, '-' and '.', no trailing dot)"),
    "nameservers a string": (
        {"stubDomains": '{"acme.local": "1.2.3.4"}'},
        "cm stubDomains: 'acme.local': expected a list of nameservers, e.g. [\"1.2.3.4\"], "
        "not a string"),
    "nameserver a number": (
        {"stubDomains": '{"acme.local": [53]}'},
        "cm stubDomains: 'acme.local': nameserver 53 is not a string"),
    "nameserver a host name": (
        {"stubDomains": '{"acme.local": ["ns.acme.local"]}'},
        "cm stubDomains: 'acme.local': nameserver 'ns.acme.local' is a host name: kube-dns "
        "looked it up once at start-up, here (as in CoreDNS's forward) it must be an IP address"),
    "nameserver garbage": (
        {"stubDomains": '{"acme.local": ["$$$$"]}'},
        "cm stubDomains: 'acme.local': nameserver '$$$$' is not IP, IP:PORT or [IPv6]:PORT"),
    "port out of range": (
        {"stubDomains": '{"acme.local": ["1.2.3.4:65564"]}'},
        "cm stubDomains: 'acme.local': nameserver '1.2.3.4:65564': bad port number '65564'"),
    "empty port": (
        {"stubDomains": '{"acme.local": ["1.2.3.4:"]}'},
        "cm stubDomains: 'acme.local': nameserver '1.2.3.4:': bad port number ''"),
    "IPv6 with a port, no brackets": (
        {"stubDomains": '{"acme.local": ["2001:db8::1:53x"]}'},
        "cm stubDomains: 'acme.local': nameserver '2001:db8::1:53x' is not IP, IP:PORT or "
        "[IPv6]:PORT"),
    "IPv6 in brackets without a port": (
        {"upstreamNameservers": '["[2001:db8::1]"]'},
        "cm upstreamNameservers: nameserver '[2001:db8::1]' is not IP, IP:PORT or [IPv6]:PORT"),
    "IPv6 scope": (
        {"upstreamNameservers": '["fe80::1%eth0"]'},
        "cm upstreamNameservers: nameserver 'fe80::1%eth0' is not IP, IP:PORT or [IPv6]:PORT"),
    "sixteen nameservers": (
        {"stubDomains": '{"acme.local": [' + ", ".join(f'"10.0.0.{n}"' for n in range(16))
                        + "]}"},
        "cm stubDomains: 'acme.local': at most 15 nameservers (CoreDNS's forward limit), not 16"),
    "four upstreams": (
        {"upstreamNameservers": '["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]'},
        "cm upstreamNameservers: at most 3 nameservers, not 4"),
    "upstream port not a number": (
        {"upstreamNameservers": '["1.1.1.1:abc"]'},
        "cm upstreamNameservers: nameserver '1.1.1.1:abc': bad port number 'abc'"),
    "upstream port 0": (
        {"upstreamNameservers": '["1.1.1.1:0"]'},
        "cm upstreamNameservers: nameserver '1.1.1.1:0': bad port number '0'"),
    "upstreams an object": (
        {"upstreamNameservers": '{"dns": "8.8.8.8"}'},
        'cm upstreamNameservers: expected a JSON list of nameservers, e.g. ["8.8.8.8"], '
        "not an object"),
    "upstreams not JSON": (
        {"upstreamNameservers": "8.8.8.8"},
        "cm upstreamNameservers: not valid JSON: Extra data (line 1, column 4)"),
    "federations": (
        {"federations": "foo=foo.feddomain.com"},
        "cm federations: federation is not implemented by this server; remove the key to "
        "switch"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_data(case: str) -> None:
    data, message = BAD[case]
    with pytest.raises(KubeDNSConfigError) as caught:
        parse(**data)
    assert str(caught.value) == message


def test_what_kube_dns_ignores_is_a_warning() -> None:
    parsed = parse(stubdomains='{"x.local": ["1.1.1.1"]}', upstreamNameServers='["1.1.1.1"]',
                   resolvConf="x", stubDomains='{"a.local": [], "b.local": null, '
                   '"c.local": ["1.1.1.1"], "c.local": ["2.2.2.2"]}')
    assert parsed.config == KubeDNSConfig((KubeStubDomain("c.local", ("2.2.2.2:53",)),))
    reads = "ignored as kube-dns ignores it (it reads federations, stubDomains, upstreamNameservers)"
    assert parsed.warnings == (
        f"cm stubdomains: unknown key, {reads}; did you mean stubDomains?",
        f"cm upstreamNameServers: unknown key, {reads}; did you mean upstreamNameservers?",
        f"cm resolvConf: unknown key, {reads}",
        "cm stubDomains: 'c.local' is given twice; the last list is used, as in kube-dns",
        "cm stubDomains: 'a.local' has no nameservers; ignored, as in kube-dns",
        "cm stubDomains: 'b.local' has no nameservers; ignored, as in kube-dns",
    )


# -- the manifest and the mounted folder ---------------------------------------------------

MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: kube-dns
  namespace: kube-system
data:
  stubDomains: |
    {"acme.local": ["1.2.3.4"]}
  upstreamNameservers: |
    ["8.8.8.8", "8.8.4.4"]
"""
DOCS_EXAMPLE = KubeDNSConfig((KubeStubDomain("acme.local", ("1.2.3.4:53",)),),
                             ("8.8.8.8:53", "8.8.4.4:53"))


def test_yaml_manifest() -> None:
    parsed = kubedns.parse_manifest(MANIFEST, path="cm.yaml")
    assert parsed == kubedns.Parsed(DOCS_EXAMPLE, ())
    assert parsed.config.locations == {"stubDomains": "cm.yaml:7: stubDomains",
                                       "upstreamNameservers": "cm.yaml:9: upstreamNameservers"}


def test_json_manifest_with_tabs() -> None:
    text = ('{"apiVersion": "v1", "kind": "ConfigMap",\n\t"data": {\n'
            '\t\t"stubDomains": "{\\"acme.local\\": [\\"1.2.3.4\\"]}",\n'
            '\t\t"upstreamNameservers": "[\\"8.8.8.8\\", \\"8.8.4.4\\"]"}}\n')
    assert kubedns.parse_manifest(text, path="cm.json") == kubedns.Parsed(DOCS_EXAMPLE, ())


BAD_MANIFESTS = {
    "the line of the key": (
        MANIFEST.replace('"1.2.3.4"', '"1.2.3.4:99999"'),
        "cm.yaml:7: stubDomains: 'acme.local': nameserver '1.2.3.4:99999': bad port number "
        "'99999'"),
    "the line of federations, after an unknown key": (
        MANIFEST + "  upstreamNameservers4: x\n" + "  federations: a=b.c\n",
        "cm.yaml:12: federations: federation is not implemented by this server; remove the key "
        "to switch"),
    "not a ConfigMap": (
        MANIFEST.replace("ConfigMap", "Secret"),
        "cm.yaml: expected a ConfigMap (kind: ConfigMap), or the folder where it is mounted; "
        "found kind 'Secret'"),
    "no kind": (
        "stubDomains: x\n",
        "cm.yaml: expected a ConfigMap (kind: ConfigMap), or the folder where it is mounted; "
        "found no kind"),
    "two documents": (
        MANIFEST + "---\n" + MANIFEST,
        "cm.yaml: expected one ConfigMap, found 2 documents"),
    "broken YAML": (
        MANIFEST + "  - oops\n",
        "cm.yaml:11: not valid YAML: expected <block end>, but found '-'"),
    "broken JSON": (
        '{"kind": "ConfigMap",\n "data": {]}',
        "cm.yaml:2: not valid JSON: Expecting property name enclosed in double quotes"),
    "a value that is not text": (
        "kind: ConfigMap\ndata:\n  upstreamNameservers:\n    - 8.8.8.8\n",
        "cm.yaml:3: upstreamNameservers: a ConfigMap's values are text; write the JSON as a "
        "string (e.g. after '|')"),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS), ids=list(BAD_MANIFESTS))
def test_bad_manifest(case: str) -> None:
    text, message = BAD_MANIFESTS[case]
    with pytest.raises(KubeDNSConfigError) as caught:
        kubedns.parse_manifest(text, path="cm.yaml")
    assert str(caught.value) == message


def test_a_configmap_without_data_sets_nothing() -> None:
    parsed = kubedns.parse_manifest("kind: ConfigMap\nmetadata: {name: kube-dns}\n", path="c")
    assert parsed == kubedns.Parsed(KubeDNSConfig(), ())


def mount(folder: Path, data: dict[str, bytes]) -> Path:
    """A ConfigMap volume as the kubelet lays it out: the keys are links into ``..data``."""
    stamp = folder / "..2024_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    for key, value in data.items():
        (stamp / key).write_bytes(value)
        (folder / key).symlink_to(Path("..data") / key)
    (folder / "..data").symlink_to(stamp.name)
    return folder


def test_mounted_folder(tmp_path: Path) -> None:
    folder = mount(tmp_path / "kube-dns-config", {
        "stubDomains": b'{"acme.local": ["1.2.3.4"]}\n',
        "upstreamNameservers": b'["8.8.8.8", "8.8.4.4"]\n',
    })
    (folder / "subfolder").mkdir()  # kube-dns does not look inside
    (folder / "subfolder" / "federations").write_text("a=b.c")
    parsed = kubedns.load_with_warnings(folder)
    assert parsed == kubedns.Parsed(DOCS_EXAMPLE, ())
    assert parsed.config.locations["stubDomains"] == f"{folder}/stubDomains"


def test_mounted_folder_errors_name_the_file(tmp_path: Path) -> None:
    folder = mount(tmp_path / "cfg", {"upstreamNameservers": b'["1.1.1.1", "ns.corp"]'})
    with pytest.raises(KubeDNSConfigError) as caught:
        kubedns.load(folder)
    assert str(caught.value) == (
        f"{folder}/upstreamNameservers: nameserver 'ns.corp' is a host name: kube-dns looked "
        "it up once at start-up, here (as in CoreDNS's forward) it must be an IP address")
    (folder / "stubDomains").write_bytes(b'{"a.b": ["\xff"]}')
    with pytest.raises(KubeDNSConfigError, match=r"/cfg/stubDomains: not UTF-8 text$"):
        kubedns.load(folder)


def test_missing_path() -> None:
    with pytest.raises(KubeDNSConfigError) as caught:
        kubedns.load(Path("/nonexistent/kube-dns.yaml"))
    assert str(caught.value) == ("/nonexistent/kube-dns.yaml: cannot read the kube-dns "
                                 "configuration: No such file or directory")


def test_load_logs_the_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text(MANIFEST + "  stubDomain: x\n")
    assert kubedns.load(path) == DOCS_EXAMPLE
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}:11: stubDomain: unknown key, ignored as kube-dns ignores it (it reads "
        "federations, stubDomains, upstreamNameservers); did you mean stubDomains?"]


# -- onto the Config, through the command line ---------------------------------------------

def config_of(*flags: str) -> Config:
    return cli.config_from(cli.build_parser().parse_args(["serve", *flags]))


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "kube-dns.yaml"
    path.write_text(MANIFEST)
    return path


@pytest.fixture(autouse=True)
def _not_in_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


ACME = StubDomain("acme.local", ForwardConfig(to=("1.2.3.4:53",)))
GOOGLE = ForwardConfig(to=("8.8.8.8:53", "8.8.4.4:53"))


def test_flags_alone(manifest: Path) -> None:
    config = config_of("--manifests", str(EXAMPLE), "--kube-dns-config", str(manifest))
    assert config == Config(manifests=EXAMPLE, stub_domains=(ACME,), forward=GOOGLE)


def test_in_a_pod_the_default_upstream_is_replaced_and_stub_domains_cached(
        manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")  # and no --manifests
    cache = CacheConfig(success=CacheLimits(10000, 30), denial=CacheLimits(10000, 30))
    config = config_of("--kube-dns-config", str(manifest))
    assert config.forward == ForwardConfig(to=GOOGLE.to, max_concurrent=1000)
    assert config.stub_domains == (replace(ACME, cache=cache),)
    assert config.cache == cache


def test_typed_flags_win(manifest: Path) -> None:
    config = config_of("--manifests", str(EXAMPLE), "--kube-dns-config", str(manifest),
                       "--upstream", "9.9.9.9", "--stub-domain", "corp=10.0.0.1")
    assert config.forward == ForwardConfig(to=("9.9.9.9:53",))
    assert config.stub_domains == (ACME, StubDomain("corp", ForwardConfig(to=("10.0.0.1:53",))))


def test_with_a_corefile_the_stub_domains_are_added(tmp_path: Path) -> None:
    corefile = tmp_path / "Corefile"
    corefile.write_text("cluster.local:53 {\n    kubernetes cluster.local\n}\n")
    path = tmp_path / "cm.yaml"
    path.write_text(MANIFEST)
    config = config_of("--corefile", str(corefile), "--kube-dns-config", str(path))
    # The main block serves cluster.local only: the upstream gets '.' as a block of its own.
    assert config.stub_domains == (ACME, StubDomain(".", GOOGLE))
    assert config.forward is None

    corefile.write_text(".:53 {\n    kubernetes cluster.local\n    cache 30\n}\n")
    config = config_of("--corefile", str(corefile), "--kube-dns-config", str(path))
    assert config.stub_domains == (replace(ACME, cache=config.cache),)
    assert config.forward == GOOGLE


CONFLICTS = {
    "a stub domain the Corefile forwards": (
        CORE_FILES / "stubdomains.Corefile",
        'stubDomains: |\n    {"example.local": ["10.0.0.1"]}\n',
        "{cm}:7: stubDomains: 'example.local' is forwarded by the Corefile {corefile} already"),
    "an upstream where the Corefile has a '.' block": (
        CORE_FILES / "stubdomains.Corefile",
        'upstreamNameservers: |\n    ["10.0.0.1"]\n',
        "{cm}:7: upstreamNameservers: '.' is forwarded by the Corefile {corefile} already"),
    "an upstream where the Corefile has forward .": (
        CORE_FILES / "kubeadm.Corefile",
        'upstreamNameservers: |\n    ["10.0.0.1"]\n',
        "{cm}:7: upstreamNameservers: '.' is forwarded by the Corefile {corefile} already"),
    "a stub domain inside the cluster zone": (
        CORE_FILES / "kubeadm.Corefile",
        'stubDomains: |\n    {"my.cluster.local": ["10.0.0.1"]}\n',
        "{cm}:7: stubDomains: 'my.cluster.local' is inside the cluster zone 'cluster.local', "
        "whose answers are final without the kubernetes plugin's fallthrough: the stub domain "
        "would never be asked"),
}


@pytest.mark.parametrize("case", list(CONFLICTS), ids=list(CONFLICTS))
def test_conflicts_with_a_corefile(tmp_path: Path, case: str) -> None:
    corefile, data, message = CONFLICTS[case]
    path = tmp_path / "cm.yaml"
    path.write_text(MANIFEST.partition("\ndata:")[0] + "\ndata:\n  " + data)
    with pytest.raises(KubeDNSConfigError) as caught:
        config_of("--corefile", str(corefile), "--kube-dns-config", str(path))
    assert str(caught.value) == message.format(cm=path, corefile=corefile)


def test_a_reverse_stub_domain_needs_fallthrough(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text('kind: ConfigMap\ndata:\n  stubDomains: \'{"10.in-addr.arpa": ["10.0.0.1"]}\'\n')
    with pytest.raises(KubeDNSConfigError, match=r"inside the cluster zone 'in-addr\.arpa'"):
        config_of("--manifests", str(EXAMPLE), "--kube-dns-config", str(path))
    # kubeadm's Corefile falls through in in-addr.arpa: the cluster answers first, then the stub
    config = config_of("--corefile", str(CORE_FILES / "kubeadm.Corefile"),
                       "--kube-dns-config", str(path))
    assert config.stub_domains == (
        StubDomain("10.in-addr.arpa", ForwardConfig(to=("10.0.0.1:53",)), config.cache),)


def test_a_bad_configmap_exits_2_with_the_message(run_cli: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text(MANIFEST.replace('"8.8.4.4"', '"8.8.4.4", "1.1.1.1", "9.9.9.9"'))
    result = run_cli("serve", "--manifests", str(EXAMPLE), "--listen", "127.0.0.1:0",
                     "--kube-dns-config", str(path))
    assert result.returncode == 2, result.stderr
    assert f"error: {path}:9: upstreamNameservers: at most 3 nameservers, not 4" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_the_flag(run_cli: CliRunner) -> None:
    assert "--kube-dns-config" in run_cli("serve", "--help").stdout


# -- a real server -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def acme() -> Iterator[FakeUpstream]:
    with FakeUpstream(["intranet.acme.local. 300 IN A 10.1.1.1"]) as server:
        yield server


@pytest.fixture(scope="module")
def internet() -> Iterator[FakeUpstream]:
    with FakeUpstream(["www.example.com. 300 IN A 192.0.2.1"]) as server:
        yield server


@pytest.fixture(scope="module", params=["manifest", "mounted folder"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           acme: FakeUpstream, internet: FakeUpstream) -> Iterator[RunningServer]:
    stub_domains = f'{{"acme.local": ["{acme.address}"]}}'
    upstreams = f'["{internet.address}"]'
    folder = tmp_path_factory.mktemp("kube-dns")
    if request.param == "manifest":
        path = folder / "kube-dns.yaml"
        path.write_text(textwrap.dedent(f"""\
            apiVersion: v1
            kind: ConfigMap
            metadata: {{name: kube-dns, namespace: kube-system}}
            data:
              stubDomains: '{stub_domains}'
              upstreamNameservers: '{upstreams}'
            """))
    else:
        path = mount(folder / "config", {"stubDomains": stub_domains.encode(),
                                         "upstreamNameservers": upstreams.encode()})
    running = start_server(EXAMPLE, "--kube-dns-config", str(path))
    yield running
    assert running.stop() == 0, "\n".join(running.output)


def test_a_real_server_routes_cluster_stub_and_other_names(
        server: RunningServer, acme: FakeUpstream, internet: FakeUpstream) -> None:
    asked = (len(acme.log), len(internet.log))
    name = "kubernetes.default.svc.cluster.local."
    reply = server.query(name, "A")
    assert rr_lines(reply.answer) == [f"{name} 5 IN A 10.96.0.1"]
    assert (len(acme.log), len(internet.log)) == asked  # the cluster's own

    reply = server.query("intranet.acme.local", "A", tcp=True)
    assert rr_lines(reply.answer) == ["intranet.acme.local. 300 IN A 10.1.1.1"]
    assert acme.log[asked[0]:] == [("tcp", "intranet.acme.local.", "A")]
    assert len(internet.log) == asked[1]

    reply = server.query("www.example.com", "A")
    assert rr_lines(reply.answer) == ["www.example.com. 300 IN A 192.0.2.1"]
    assert internet.log[asked[1]:] == [("udp", "www.example.com.", "A")]

    reply = server.query("nope.acme.local", "A")  # the stub's NXDOMAIN, not the upstream's
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert len(acme.log) == asked[0] + 2 and len(internet.log) == asked[1] + 1
