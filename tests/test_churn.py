"""Churn and faults against the Kubernetes API double; the server must converge exactly.

The server follows :class:`kubeapi.KubeAPIServer` through a kubeconfig with a short back-off.
:class:`bench.soak.Churn` makes seeded random changes to Services and EndpointSlices while
cutting the server's watches (``drop_watches``) and expiring its resourceVersion (a change,
then ``compact``, with the watches cut: 410 Gone on the next watch). At the end every name the
API's objects imply is compared with what the server answers, and every name that existed and
was deleted must be NXDOMAIN. Then an API outage: the last known state keeps being served while
changes pile up, and the server converges when the API is back. ``python -m bench.soak`` is the
long version.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubeapi import KubeAPIServer
from livecluster import ServerProcess, assert_serves_exactly, kubeconfig, server

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `bench` is not installed; plain `pytest` does not add the root
    sys.path.insert(0, str(REPO))

from bench import soak  # noqa: E402

pytestmark = pytest.mark.timeout(150)

SEED = 20261128
CHANGES = 2_400
DROP_EVERY = 20  # -> about 120 drops
GONE_EVERY = 120  # -> 6 compactions (410s), all in the middle phase
OUTAGE = 10.0  # seconds the API is down
RSS_BOUND_MB = 60.0


@pytest.fixture
def api() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as fake:
        yield fake


@pytest.fixture
def churn(api: KubeAPIServer) -> soak.Churn:
    churn = soak.Churn(api, SEED)
    churn.populate(100)
    return churn


@pytest.fixture
def dns(api: KubeAPIServer, churn: soak.Churn, tmp_path: Path) -> Iterator[ServerProcess]:
    with server(soak.server_args(kubeconfig(api, tmp_path))) as proc:
        soak.wait_synced(proc.port, churn)
        api.wait_for_watches(None, 3)
        yield proc


def test_churn_with_dropped_watches_and_410s_converges(
    api: KubeAPIServer, churn: soak.Churn, dns: ServerProcess,
) -> None:
    """Three phases, each checked for convergence: watch drops only (the server must follow
    every event: no relist would hide a missed one), drops and 410s, drops only again."""
    rss_start = soak.rss_mb(dns.process.pid)
    converged = []
    for gone_every in (0, GONE_EVERY, 0):
        stats = churn.run(CHANGES // 3, drop_every=DROP_EVERY, gone_every=gone_every,
                          seconds=30.0)
        converged.append(soak.converge(dns.port, churn, timeout=30.0))
    rss_end = soak.rss_mb(dns.process.pid)
    log = dns.text()
    print(f"\nchurn: {stats.applied:,} changes in {stats.elapsed:.1f} s, {stats.drops} watch "
          f"drops ({stats.watches_cut} streams cut), {stats.gones} compactions, "
          f"{soak.relists(log)} relists after 410; converged after each phase in "
          f"{', '.join(f'{t:.1f}' for t in converged)} s; {len(churn.services)} services, "
          f"{len(churn.slices)} slices at the end, {len(churn.gone):,} names checked; "
          f"RSS {rss_start:.1f} -> {rss_end:.1f} MB")
    assert stats.applied >= 2_000
    assert stats.drops >= 100
    assert stats.gones >= 5
    assert soak.relists(log) >= 3, "the compactions should have sent the server back to list"
    assert rss_end - rss_start < RSS_BOUND_MB
    assert "Traceback" not in log


def test_api_outage_serves_the_last_state_then_converges(
    api: KubeAPIServer, churn: soak.Churn, dns: ServerProcess,
) -> None:
    churn.run(200, drop_every=50, gone_every=10_000, seconds=20.0)
    soak.wait_synced(dns.port, churn)
    before = churn.objects()
    lines_before = len(dns.log)

    api.set_down(True)
    started = time.monotonic()
    answered = 0
    changes = 0
    while time.monotonic() - started < OUTAGE:
        for _ in range(25):
            churn.step()
            changes += 1
        if changes == 100:
            api.compact()  # and the history the server would resume from is gone too
        assert_serves_exactly(dns.port, before)  # the last known state, exactly
        answered += 1
        time.sleep(0.5)
    outage_log = "".join(dns.log[lines_before:])
    api.set_down(False)
    took = soak.converge(dns.port, churn, timeout=30.0)
    log = "".join(dns.log[lines_before:])
    print(f"\noutage: {OUTAGE:.0f} s, {changes} changes meanwhile, the whole last state "
          f"answered {answered} times during it; converged {took:.1f} s after the API came back")
    assert answered >= 5
    assert 1 <= outage_log.count("lost the Kubernetes API") <= 3, outage_log  # not per retry
    assert "the Kubernetes API is back" in log
    assert "Traceback" not in log
