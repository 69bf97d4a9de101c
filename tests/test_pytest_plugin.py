"""The ``cluster_dns`` pytest plugin, run the way an application's test suite runs it.

Each test writes a small test file and runs pytest on it in a fresh process (``pytester``)
with ``-p dnsserver.client.pytest_plugin``; entry-point autoloading is switched off so the plugin is
registered once whether or not the package is installed with its ``pytest11`` entry point.
(In-process runs would re-import modules between runs, which libyaml's C loader does not
survive; a real test suite imports them once.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import EXAMPLE, ROOT

pytest_plugins = ["pytester"]


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return pytester


def run_plugin(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "dnsserver.client.pytest_plugin", "-p", "no:cacheprovider", *args
    )


def test_marker_manifests_and_resolution(run: pytest.Pytester) -> None:
    run.makepyfile(f"""
        import pytest

        @pytest.mark.cluster_dns(manifests=[{str(EXAMPLE)!r}], namespace="shop")
        def test_stub(cluster_dns):
            answer = cluster_dns.resolve("api")                # from a pod in shop
            assert answer.ok and answer.addresses == ["10.96.200.5"]
            assert answer.name == "api.shop.svc.cluster.local."
            assert len(answer.queries) == 1

        @pytest.mark.cluster_dns(manifests=[{str(EXAMPLE)!r}])
        def test_default_namespace_and_musl(cluster_dns):
            assert cluster_dns.namespace == "default"
            walk = cluster_dns.resolve("shop", "ADDR", mode="musl")
            assert walk.status == "EAI_NODATA"                  # shop.svc.cluster.local
            assert len(walk.steps) == 2

        def test_empty_cluster(cluster_dns):
            assert not cluster_dns.resolve("kubernetes").ok
    """)
    result = run_plugin(run)
    result.assert_outcomes(passed=3)


def test_dnspython_resolver_behaves_like_a_pod(run: pytest.Pytester) -> None:
    run.makepyfile(f"""
        import dns.resolver
        import pytest

        pytestmark = pytest.mark.cluster_dns({str(EXAMPLE)!r})

        def test_search_list(cluster_dns):
            resolver = cluster_dns.resolver("shop")
            answer = resolver.resolve("api", "A")                # api.shop.svc.cluster.local
            assert answer.qname.to_text() == "api.shop.svc.cluster.local."
            assert [r.address for r in answer] == ["10.96.200.5"]
            other = cluster_dns.resolver()                       # namespace default
            assert other.resolve("api.shop").qname.to_text() == "api.shop.svc.cluster.local."
            srv = other.resolve("_https._tcp.kubernetes", "SRV")
            assert [r.port for r in srv] == [443]

        def test_fqdn_with_five_dots_is_asked_as_is_first(cluster_dns):
            answer = cluster_dns.resolver().resolve("kubernetes.default.svc.cluster.local")
            assert answer.qname.to_text() == "kubernetes.default.svc.cluster.local."

        def test_nxdomain(cluster_dns):
            with pytest.raises(dns.resolver.NXDOMAIN) as raised:
                cluster_dns.resolver().resolve("web-9.web.default.svc.cluster.local", "A")
            tried = [n.to_text() for n in raised.value.qnames()]
            assert tried == ["web-9.web.default.svc.cluster.local.",          # as-is first
                             "web-9.web.default.svc.cluster.local.default.svc.cluster.local.",
                             "web-9.web.default.svc.cluster.local.svc.cluster.local.",
                             "web-9.web.default.svc.cluster.local.cluster.local."]

        def test_short_name_ends_at_the_refused_as_is_name(cluster_dns):
            with pytest.raises(dns.resolver.NoNameservers, match="REFUSED"):
                cluster_dns.resolver().resolve("nope", "A")      # "nope." is outside the zone
    """)
    run_plugin(run).assert_outcomes(passed=4)


def test_apply_and_delete_during_a_test(run: pytest.Pytester) -> None:
    run.makepyfile("""
        import pytest

        SERVICE = '''
        apiVersion: v1
        kind: Service
        metadata: {name: cache, namespace: shop}
        spec:
          ports: [{name: redis, port: 6379}]
        '''

        def test_changes_are_served_at_once(cluster_dns):
            assert not cluster_dns.resolve("cache", namespace="shop").ok
            assert cluster_dns.apply(SERVICE) == 2                 # namespace shop + Service
            first = cluster_dns.resolve("cache", namespace="shop")
            assert first.ok and first.addresses[0].startswith("10.")
            srv = cluster_dns.resolve("_redis._tcp.cache.shop", "SRV")
            assert srv.ok
            # Re-applying without clusterIP keeps the address, as the API server does.
            cluster_dns.apply(SERVICE.replace("6379", "6380"))
            assert cluster_dns.resolve("cache", namespace="shop").addresses == first.addresses
            assert cluster_dns.delete("Service", "shop", "cache") is True
            assert cluster_dns.resolve("cache", namespace="shop").status == "TRY_AGAIN"
            assert cluster_dns.delete("Service", "shop", "cache") is False

        def test_headless_scale_up_and_namespace_delete(cluster_dns):
            cluster_dns.apply(
                {"kind": "Service", "metadata": {"name": "db", "namespace": "data"},
                 "spec": {"clusterIP": "None"}},
                {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                 "metadata": {"name": "db-1", "namespace": "data",
                              "labels": {"kubernetes.io/service-name": "db"}},
                 "addressType": "IPv4",
                 "endpoints": [{"addresses": ["10.1.0.1"]}, {"addresses": ["10.1.0.2"]}]},
            )
            assert sorted(cluster_dns.resolve("db.data").addresses) == ["10.1.0.1", "10.1.0.2"]
            cluster_dns.delete({"kind": "Namespace", "metadata": {"name": "data"}})
            assert cluster_dns.resolve("db.data").status != "OK"
    """)
    run_plugin(run).assert_outcomes(passed=2)


def test_manifests_fixture_and_relative_paths(run: pytest.Pytester) -> None:
    manifests = run.mkdir("deploy")
    (manifests / "app.yaml").write_text("""
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders, namespace: shop}
spec: {}
""")
    run.makeconftest("""
        import pytest

        @pytest.fixture
        def cluster_dns_manifests():
            return ["deploy"]          # relative to the test file's folder
    """)
    run.makepyfile("""
        import pytest

        def test_from_fixture(cluster_dns):
            assert cluster_dns.resolve("orders.shop").ok

        @pytest.mark.cluster_dns({"kind": "Service", "metadata": {"name": "extra"},
                                  "spec": {"clusterIP": "10.96.7.7"}}, namespace="default")
        def test_marker_adds_to_fixture(cluster_dns):
            assert cluster_dns.resolve("extra").addresses == ["10.96.7.7"]
            assert cluster_dns.resolve("orders.shop").ok
    """)
    run_plugin(run).assert_outcomes(passed=2)


def test_marker_is_registered_and_bad_manifests_fail_clearly(run: pytest.Pytester) -> None:
    run.makepyfile("""
        import pytest

        @pytest.mark.cluster_dns("missing-folder")
        def test_missing(cluster_dns):
            pass

        @pytest.mark.cluster_dns("kind: Service\\nmetadata: {name: broken}\\nspec: {ports: [{port: 0}]}\\n")
        def test_invalid(cluster_dns):
            pass

        @pytest.mark.cluster_dns(colour="blue")
        def test_unknown_option(cluster_dns):
            pass
    """)
    result = run_plugin(run, "--strict-markers")
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_missing*",
        "cluster_dns: */missing-folder: no such file or folder (and not YAML text)",
        "*ERROR at setup of test_invalid*",
        "cluster_dns: manifest #1 (YAML text), document 1: Service default/broken: "
        "spec.ports[[]0[]]: port 0 is not a number from 1 to 65535",
        "*ERROR at setup of test_unknown_option*",
        "cluster_dns marker: unknown option(s) [[]'colour'[]]; expected manifests or *",
    ])
    markers = run_plugin(run, "--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.cluster_dns(*manifests*"])


def test_example_app_suite(run: pytest.Pytester) -> None:
    """The example application's own tests (examples/app) pass with the plugin."""
    shutil.copytree(ROOT / "examples" / "app", run.path / "app")
    result = run.runpytest("-p", "no:cacheprovider", str(Path("app")))
    result.assert_outcomes(passed=4)


def test_a_server_bug_fails_the_test(run: pytest.Pytester) -> None:
    run.makepyfile("""
        def test_bug(cluster_dns):
            def broken(wire, qtype):
                raise RuntimeError("boom")
            cluster_dns._server.zone.lookup_missing = broken    # every unknown name now fails
            answer = cluster_dns.resolve("nothing-here")
            assert answer.queries[0].rcode == "SERVFAIL"       # the server's error ladder
    """)
    result = run_plugin(run)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*the DNS server logged errors:*", "*bug while answering*"])
