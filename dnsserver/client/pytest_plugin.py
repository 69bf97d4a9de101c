"""pytest plugin: a real cluster DNS server per test, as the ``cluster_dns`` fixture.

Installed with the package, pytest loads it by itself (entry point ``pytest11``, name
``cluster_dns``; with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set, ``-p cluster_dns``). From a
source tree that is not installed, ``-p dnsserver.client.pytest_plugin``; not both, or pluggy
refuses the second registration. Manifests come from, in this order:

- the ``cluster_dns_manifests`` fixture, which a ``conftest.py`` overrides for a folder of
  tests (default: none);
- ``@pytest.mark.cluster_dns(manifests=[...])`` on the test, its class or module (positional
  arguments work too). Relative paths are taken from the test file's folder.

The marker's other keywords go to :class:`dnsserver.client.testing.ClusterDNS`: ``namespace`` (the
pod namespace ``.resolver()`` and ``.resolve()`` use by default), ``zone``, ``host_search``,
``mode`` ("glibc" or "musl"), ``timeout``, ``ttl``. A test fails if the server logged an
error while it ran (the server answers SERVFAIL to a query it could not handle).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import pytest

from dnsserver.client.testing import ClusterDNS, ClusterDNSError, Manifest, is_yaml_text

MARKER = (
    "cluster_dns(*manifests, manifests=[...], namespace='default', zone='cluster.local', "
    "host_search=(), mode='glibc', timeout=2.0): manifests (paths relative to the test file, "
    "YAML text or dicts) and options of the cluster_dns fixture's server"
)
_OPTIONS = ("namespace", "zone", "host_search", "mode", "timeout", "ttl", "pods")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


@pytest.fixture
def cluster_dns_manifests() -> Sequence[Manifest]:
    """Manifests every ``cluster_dns`` server of this scope serves; override in a conftest."""
    return ()


@pytest.fixture
def cluster_dns(
    request: pytest.FixtureRequest, cluster_dns_manifests: Sequence[Manifest]
) -> Iterator[ClusterDNS]:
    """A running :class:`~dnsserver.client.testing.ClusterDNS` on a free loopback port."""
    base = Path(request.path).parent
    sources: list[Manifest] = [_relative(m, base) for m in cluster_dns_manifests]
    options: dict[str, Any] = {}
    # Closest last, so a test's own marker adds to, and overrides, its module's and class's.
    for marker in reversed(list(request.node.iter_markers("cluster_dns"))):
        listed = marker.kwargs.get("manifests", ())
        if isinstance(listed, (str, PathLike, Mapping)):
            listed = [listed]
        sources += [_relative(m, base) for m in (*marker.args, *listed)]
        unknown = set(marker.kwargs) - {"manifests", *_OPTIONS}
        if unknown:
            pytest.fail(f"cluster_dns marker: unknown option(s) {sorted(unknown)}; "
                        f"expected manifests or {', '.join(_OPTIONS)}", pytrace=False)
        options.update({k: v for k, v in marker.kwargs.items() if k in _OPTIONS})
    cluster = ClusterDNS(*sources, **options)
    try:
        cluster.start()
    except ClusterDNSError as exc:  # a manifest problem: say it, no traceback
        pytest.fail(f"cluster_dns: {exc}", pytrace=False)
    try:
        yield cluster
        errors = cluster.server_errors
    finally:
        cluster.close()
    if errors:
        pytest.fail("the DNS server logged errors:\n" + "\n".join(errors), pytrace=False)


def _relative(source: Manifest, base: Path) -> Manifest:
    """A path made absolute against the test file's folder; text and dicts unchanged."""
    if isinstance(source, Mapping):
        return source
    if isinstance(source, str) and is_yaml_text(source):
        return source
    path = Path(source)
    return path if path.is_absolute() else base / path
