"""Tests of the Kubernetes API double in ``kubeapi`` through the official client.

Every test talks HTTP to a real ``KubeAPIServer`` on 127.0.0.1 with a
``kubernetes.client.ApiClient`` configured from a kubeconfig the double wrote.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubeapi import KubeAPIServer, decode_continue
from kubernetes import client, config, watch

pytestmark = pytest.mark.timeout(30)

# The client's config loader and Watch are unannotated; call them as Any.
load_kube_config: Any = config.load_kube_config
Watch: Any = watch.Watch

Event = dict[str, Any]


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        yield server


@pytest.fixture
def kubeconfig(api: KubeAPIServer, tmp_path: Path) -> str:
    return api.write_kubeconfig(tmp_path / "kubeconfig", context="fake")


def make_client(kubeconfig: str, context: str = "fake", retries: int | None = None) -> Any:
    configuration = client.Configuration()
    load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    if retries is not None:
        configuration.retries = retries
    return client.ApiClient(configuration)


@pytest.fixture
def api_client(kubeconfig: str) -> Iterator[Any]:
    api_client = make_client(kubeconfig)
    yield api_client
    api_client.close()


@pytest.fixture
def core(api_client: Any) -> Any:
    return client.CoreV1Api(api_client)


@pytest.fixture
def discovery(api_client: Any) -> Any:
    return client.DiscoveryV1Api(api_client)


def service(name: str, namespace: str = "default", ip: str = "10.0.0.1", **labels: str) -> Any:
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }


def pod(name: str, phase: str, namespace: str = "default", **labels: str) -> Any:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": phase, "podIP": "10.1.0.1"},
    }


def endpoint_slice(name: str, service_name: str, namespace: str = "default") -> Any:
    return {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


@contextlib.contextmanager
def watching(func: Callable[..., Any], **kwargs: Any) -> Iterator[Iterator[Event]]:
    """A ``Watch().stream`` that is stopped and closed however the test ends."""
    watcher = Watch()
    stream = watcher.stream(func, **kwargs)
    try:
        yield stream
    finally:
        watcher.stop()
        stream.close()


def raw_json(response: Any) -> Any:
    """Read and release a ``_preload_content=False`` response."""
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def raw_lines(response: Any) -> list[Any]:
    """All JSON lines of a raw watch response, up to its end."""
    try:
        return [json.loads(line) for line in response.data.decode().splitlines() if line]
    finally:
        response.release_conn()


def status_body(error: client.ApiException) -> Any:
    """The Status object an ApiException carries as its body."""
    assert error.body is not None
    return json.loads(error.body)


def names(items: list[Any]) -> list[str]:
    return [item.metadata.name for item in items]


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --------------------------------------------------------------------------
# Kubeconfig, discovery and bookkeeping
# --------------------------------------------------------------------------


def test_discovery_endpoints_through_client(api: KubeAPIServer, api_client: Any) -> None:
    assert api_client.configuration.host == api.url
    assert client.VersionApi(api_client).get_code().git_version.startswith("v1.")
    assert client.CoreApi(api_client).get_api_versions().versions == ["v1"]
    groups = client.ApisApi(api_client).get_api_versions().groups
    assert [group.name for group in groups] == ["discovery.k8s.io"]
    core_resources = client.CoreV1Api(api_client).get_api_resources().resources
    assert {"services", "pods", "namespaces"} <= {r.name for r in core_resources}
    slices = client.DiscoveryV1Api(api_client).get_api_resources()
    assert slices.group_version == "discovery.k8s.io/v1"
    assert [r.kind for r in slices.resources] == ["EndpointSlice"]
    paths = [path.rstrip("/") for _, path, _ in api.requests]
    assert "/version" in paths and "/apis/discovery.k8s.io/v1" in paths
    assert {h["authorization"] for h in api.request_headers} == {"Bearer test-token"}


def test_write_kubeconfig_merges_contexts_of_several_servers(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    with KubeAPIServer() as first, KubeAPIServer() as second:
        first.apply(service("on-first"))
        second.apply(service("on-second"))
        first.write_kubeconfig(path, context="first")
        written = second.write_kubeconfig(path, context="second")
        assert json.loads(Path(written).read_text())["current-context"] == "second"
        for context, expected in (("first", ["on-first"]), ("second", ["on-second"])):
            with make_client(written, context=context) as api_client:
                items = client.CoreV1Api(api_client).list_service_for_all_namespaces().items
                assert names(items) == expected


def test_apply_and_delete_bookkeeping(api: KubeAPIServer) -> None:
    start = int(api.resource_version)
    created = api.apply({"kind": "Service", "metadata": {"name": "web"}})
    assert created["metadata"]["namespace"] == "default"
    assert created["metadata"]["resourceVersion"] == str(start + 1)
    assert created["apiVersion"] == "v1"
    assert created["metadata"]["uid"] and created["metadata"]["creationTimestamp"]

    updated = api.apply({"kind": "Service", "metadata": {"name": "web"}, "spec": {"a": 1}})
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert updated["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]
    assert updated["metadata"]["resourceVersion"] == str(start + 2)
    # An unchanged object is a no-op, as for the real API server.
    assert api.apply(updated)["metadata"]["resourceVersion"] == str(start + 2)
    assert api.resource_version == str(start + 2)

    namespace = api.apply({"kind": "Namespace", "metadata": {"name": "team"}})
    assert "namespace" not in namespace["metadata"]
    assert namespace["metadata"]["labels"]["kubernetes.io/metadata.name"] == "team"
    assert namespace["status"]["phase"] == "Active"

    deleted = api.delete("Service", "default", "web")
    assert deleted["metadata"]["resourceVersion"] == str(start + 4)
    assert api.get("Service", "default", "web") is None
    assert [ns["metadata"]["name"] for ns in api.get_all("namespaces")] == ["team"]
    with pytest.raises(KeyError):
        api.delete("Service", "default", "web")
    with pytest.raises(ValueError, match="unsupported kind"):
        api.apply({"kind": "ConfigMap", "metadata": {"name": "x"}})


# --------------------------------------------------------------------------
# LIST
# --------------------------------------------------------------------------


def test_paginated_list_is_a_consistent_snapshot(api: KubeAPIServer, core: Any) -> None:
    for namespace in ("a", "b"):
        for index in range(3):
            api.apply(service(f"svc{index}", namespace, ip=f"10.0.{index}.1"))

    first = core.list_service_for_all_namespaces(limit=2)
    assert [(s.metadata.namespace, s.metadata.name) for s in first.items] == [
        ("a", "svc0"),
        ("a", "svc1"),
    ]
    assert first.metadata.remaining_item_count == 4
    token = first.metadata._continue
    assert token

    # Change the cluster between pages: later pages must not see it.
    api.apply(service("svc9", "a"))
    api.delete("Service", "b", "svc2")
    api.apply(service("svc0", "b", ip="10.9.9.9"))

    pages = [first]
    while token:
        page = core.list_service_for_all_namespaces(limit=2, _continue=token)
        pages.append(page)
        token = page.metadata._continue
    listed = [(s.metadata.namespace, s.metadata.name) for p in pages for s in p.items]
    assert listed == [("a", f"svc{i}") for i in range(3)] + [("b", f"svc{i}") for i in range(3)]
    assert {p.metadata.resource_version for p in pages} == {first.metadata.resource_version}
    b_svc0 = next(s for s in pages[1].items + pages[2].items if s.metadata.namespace == "b")
    assert b_svc0.spec.cluster_ip == "10.0.0.1"  # the snapshot's version of the object

    fresh = core.list_service_for_all_namespaces()
    assert len(fresh.items) == 6
    assert fresh.metadata.resource_version == api.resource_version
    paged = [r.query for r in api.requests if r.query.get("limit") == "2"]
    assert len(paged) == 3 and "continue" not in paged[0] and "continue" in paged[1]


def test_list_responses_have_the_real_shape(api: KubeAPIServer, core: Any, discovery: Any) -> None:
    api.apply(service("web", "prod"))
    api.apply(endpoint_slice("web-abc", "web", "prod"))
    api.apply({"kind": "Namespace", "metadata": {"name": "prod"}})

    services = raw_json(core.list_service_for_all_namespaces(_preload_content=False))
    assert services["kind"] == "ServiceList" and services["apiVersion"] == "v1"
    assert services["metadata"] == {"resourceVersion": api.resource_version}
    assert "kind" not in services["items"][0] and "apiVersion" not in services["items"][0]

    raw_slices = discovery.list_endpoint_slice_for_all_namespaces(_preload_content=False)
    slices = raw_json(raw_slices)
    assert slices["kind"] == "EndpointSliceList"
    assert slices["apiVersion"] == "discovery.k8s.io/v1"
    typed = discovery.list_endpoint_slice_for_all_namespaces()
    assert typed.items[0].endpoints[0].addresses == ["10.1.0.1"]
    assert typed.items[0].metadata.labels["kubernetes.io/service-name"] == "web"

    assert names(core.list_namespace().items) == ["prod"]
    assert names(core.list_namespaced_service("prod").items) == ["web"]
    assert core.list_namespaced_service("other").items == []
    assert core.read_namespaced_service("web", "prod").spec.cluster_ip == "10.0.0.1"
    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_service("nope", "prod")
    assert missing.value.status == 404
    assert status_body(missing.value)["reason"] == "NotFound"


def test_expired_continue_token_gets_410_with_inconsistent_token(
    api: KubeAPIServer, core: Any
) -> None:
    for index in range(3):
        api.apply(service(f"svc{index}"))
    first = core.list_service_for_all_namespaces(limit=1)
    api.apply(service("svc9"))
    api.compact()

    with pytest.raises(client.ApiException) as expired:
        core.list_service_for_all_namespaces(limit=1, _continue=first.metadata._continue)
    assert expired.value.status == 410
    status = status_body(expired.value)
    assert status["kind"] == "Status" and status["reason"] == "Expired" and status["code"] == 410
    assert status["message"].startswith("The provided continue parameter is too old")

    # The token in the Status continues from the current state (inconsistently).
    assert decode_continue(status["metadata"]["continue"])[0] == -1
    rest = core.list_service_for_all_namespaces(_continue=status["metadata"]["continue"])
    assert names(rest.items) == ["svc1", "svc2", "svc9"]
    assert rest.metadata.resource_version == api.resource_version


def test_list_resource_version_semantics(api: KubeAPIServer, core: Any) -> None:
    api.apply(service("old"))
    old_rv = api.resource_version
    api.apply(service("new"))

    exact = core.list_service_for_all_namespaces(resource_version=old_rv, limit=10)
    assert names(exact.items) == ["old"] and exact.metadata.resource_version == old_rv
    not_older = core.list_service_for_all_namespaces(resource_version=old_rv)
    assert names(not_older.items) == ["new", "old"]
    any_rv = core.list_service_for_all_namespaces(resource_version="0", limit=1)
    assert len(any_rv.items) == 2 and not any_rv.metadata._continue  # watch cache ignores limit

    with pytest.raises(client.ApiException) as too_large:
        core.list_service_for_all_namespaces(resource_version="999999")
    assert too_large.value.status == 504
    api.apply(service("newer"))
    api.compact()
    with pytest.raises(client.ApiException) as too_old:
        core.list_service_for_all_namespaces(
            resource_version=old_rv, resource_version_match="Exact"
        )
    assert too_old.value.status == 410


def test_field_and_label_selectors(api: KubeAPIServer, core: Any) -> None:
    api.apply(pod("running", "Running", app="web", tier="front"))
    api.apply(pod("pending", "Pending", app="db"))
    api.apply(pod("done", "Succeeded", app="web"))
    api.apply(pod("broken", "Failed", "other"))
    live = "status.phase!=Succeeded,status.phase!=Failed"

    assert names(core.list_pod_for_all_namespaces(field_selector=live).items) == [
        "pending",
        "running",
    ]
    by_name = core.list_pod_for_all_namespaces(field_selector="metadata.name=done")
    assert names(by_name.items) == ["done"]
    assert names(core.list_pod_for_all_namespaces(label_selector="app=web").items) == [
        "done",
        "running",
    ]
    assert names(core.list_pod_for_all_namespaces(label_selector="app in (db),!tier").items) == [
        "pending"
    ]
    page = core.list_pod_for_all_namespaces(field_selector=live, limit=1)
    assert names(page.items) == ["pending"] and page.metadata._continue
    assert page.metadata.remaining_item_count is None  # omitted when a selector filters
    with pytest.raises(client.ApiException) as bad:
        core.list_pod_for_all_namespaces(field_selector="status.phase~Running")
    assert bad.value.status == 400


# --------------------------------------------------------------------------
# WATCH
# --------------------------------------------------------------------------


def test_watch_from_resource_version_replays_then_streams_live(
    api: KubeAPIServer, core: Any
) -> None:
    api.apply(service("keep"))
    api.apply(service("gone"))
    rv = core.list_service_for_all_namespaces().metadata.resource_version
    api.apply(service("added"))
    api.apply(service("keep", ip="10.0.0.2"))
    api.delete("Service", "default", "gone")

    events: list[Event] = []
    with watching(
        core.list_service_for_all_namespaces, resource_version=rv, timeout_seconds=10
    ) as stream:
        for event in stream:
            events.append(event)
            if len(events) == 3:
                assert api.open_watches("Service") == 1
                api.apply(service("live"))
            if len(events) == 4:
                break

    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "added"),
        ("MODIFIED", "keep"),
        ("DELETED", "gone"),
        ("ADDED", "live"),
    ]
    versions = [int(e["object"].metadata.resource_version) for e in events]
    assert versions == sorted(versions) and versions[-1] == int(api.resource_version)
    assert events[1]["object"].spec.cluster_ip == "10.0.0.2"
    assert events[0]["raw_object"]["kind"] == "Service"
    watch_request = next(r for r in api.requests if r.is_watch)
    assert watch_request.query["resourceVersion"] == rv
    assert watch_request.query["timeoutSeconds"] == "10"


def test_watch_without_resource_version_starts_with_synthetic_added(
    api: KubeAPIServer, core: Any
) -> None:
    api.apply(service("b"))
    api.apply(service("a"))
    api.apply(service("other-ns", "kube-system"))
    with watching(core.list_namespaced_service, namespace="default", timeout_seconds=10) as stream:
        initial = [next(stream), next(stream)]
        api.apply(service("c", "kube-system"))
        api.apply(service("c"))
        live = next(stream)
    assert [(e["type"], e["object"].metadata.name) for e in initial] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]
    assert (live["type"], live["object"].metadata.namespace) == ("ADDED", "default")


def test_watch_send_initial_events_ends_with_annotated_bookmark(
    api: KubeAPIServer, core: Any
) -> None:
    api.apply(service("a"))
    response = core.list_service_for_all_namespaces(
        watch=True,
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True,
        timeout_seconds=1,
        _preload_content=False,
    )
    events = raw_lines(response)
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    bookmark = events[1]["object"]
    assert bookmark["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert bookmark["metadata"]["resourceVersion"] == api.resource_version


def test_watch_with_field_selector_sees_objects_enter_and_leave(
    api: KubeAPIServer, core: Any
) -> None:
    api.apply(pod("a", "Running"))
    api.apply(pod("b", "Pending"))
    api.apply(pod("c", "Succeeded"))
    rv = api.resource_version
    api.apply(pod("a", "Succeeded"))  # leaves the selection -> DELETED
    api.apply(pod("c", "Running"))  # enters it -> ADDED
    api.apply(pod("b", "Running"))  # stays in it -> MODIFIED
    api.apply(pod("d", "Failed"))  # never in it -> nothing
    api.delete("Pod", "default", "d")  # nothing either
    api.apply(pod("e", "Pending"))

    with watching(
        core.list_pod_for_all_namespaces,
        resource_version=rv,
        field_selector="status.phase!=Succeeded,status.phase!=Failed",
        timeout_seconds=10,
    ) as stream:
        events = [next(stream) for _ in range(4)]
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("DELETED", "a"),
        ("ADDED", "c"),
        ("MODIFIED", "b"),
        ("ADDED", "e"),
    ]
    # The DELETED carries the last matching state at the revision it left.
    assert events[0]["object"].status.phase == "Running"
    assert int(events[0]["object"].metadata.resource_version) == int(rv) + 1


def test_watch_after_compaction_gets_a_410_error_event(api: KubeAPIServer, core: Any) -> None:
    api.apply(service("a"))
    old_rv = api.resource_version
    api.apply(service("b"))
    compacted = api.compact()

    raw = core.list_service_for_all_namespaces(
        watch=True, resource_version=old_rv, _preload_content=False
    )
    assert raw.status == 200
    events = raw_lines(raw)  # the stream ends after the single event
    assert events == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {old_rv} ({compacted})",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]

    with (
        pytest.raises(client.ApiException) as gone,
        watching(
            core.list_service_for_all_namespaces, resource_version=old_rv, timeout_seconds=5
        ) as stream,
    ):
        next(stream)
    assert gone.value.status == 410
    # The compaction revision itself is still readable.
    with watching(
        core.list_service_for_all_namespaces, resource_version=compacted, timeout_seconds=5
    ) as stream:
        api.apply(service("c"))
        assert next(stream)["object"].metadata.name == "c"


def test_send_error_event_fails_the_client_watch(api: KubeAPIServer, core: Any) -> None:
    api.apply(service("a"))
    with (
        pytest.raises(client.ApiException) as failed,
        watching(core.list_service_for_all_namespaces, timeout_seconds=10) as stream,
    ):
        next(stream)
        assert api.send_error_event(500, message="etcd is sad") == 1
        next(stream)
    assert failed.value.status == 500
    assert "etcd is sad" in str(failed.value.reason)
    assert api.open_watches() == 0


def test_drop_watches_ends_the_client_stream(api: KubeAPIServer, core: Any) -> None:
    api.apply(service("a"))
    with watching(core.list_service_for_all_namespaces, timeout_seconds=30) as stream:
        assert next(stream)["type"] == "ADDED"
        api.wait_for_watches("Service", 1, timeout=2)
        assert api.drop_watches() == 1
        assert api.open_watches() == 0
        started = time.monotonic()
        with pytest.raises(urllib3.exceptions.ProtocolError):
            next(stream)
        assert time.monotonic() - started < 2
    # The client reconnects fine afterwards.
    with watching(core.list_service_for_all_namespaces, timeout_seconds=5) as stream:
        assert next(stream)["object"].metadata.name == "a"


@pytest.fixture
def bookmarking_api() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(bookmark_interval=0.2) as server:
        yield server


def test_bookmarks_on_demand_and_periodic(bookmarking_api: KubeAPIServer, tmp_path: Path) -> None:
    api = bookmarking_api
    with make_client(api.write_kubeconfig(tmp_path / "kc", context="fake")) as api_client:
        core = client.CoreV1Api(api_client)
        api.apply(service("a"))
        rv = api.resource_version
        watcher = Watch()
        stream = watcher.stream(
            core.list_service_for_all_namespaces,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=10,
        )
        try:
            periodic = next(stream)
            assert periodic["type"] == "BOOKMARK"
            assert periodic["raw_object"] == {
                "kind": "Service",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": rv},
            }
            api.apply(service("b"))
            assert next(stream)["type"] == "ADDED"
            api.send_bookmark()
            on_demand = next(stream)
            assert on_demand["type"] == "BOOKMARK"
            current = api.resource_version
            assert on_demand["raw_object"]["metadata"]["resourceVersion"] == current
            assert watcher.resource_version == current
        finally:
            watcher.stop()
            stream.close()
        watch_query = next(r.query for r in api.requests if r.is_watch)
        assert watch_query["allowWatchBookmarks"].lower() == "true"
        assert wait_until(lambda: api.open_watches() == 0)

        # Watches that did not ask for bookmarks never get any.
        plain = core.list_service_for_all_namespaces(
            watch=True, resource_version=rv, timeout_seconds=1, _preload_content=False
        )
        assert api.send_bookmark() == 0
        assert [e["type"] for e in raw_lines(plain)] == ["ADDED"]


def test_timeout_seconds_ends_the_stream_cleanly(api: KubeAPIServer, core: Any) -> None:
    started = time.monotonic()
    with watching(
        core.list_service_for_all_namespaces,
        resource_version=api.resource_version,
        timeout_seconds=1,
    ) as stream:
        assert list(stream) == []
    assert 0.9 < time.monotonic() - started < 3
    assert wait_until(lambda: api.open_watches() == 0)


def test_watch_counting_and_client_disconnect(api: KubeAPIServer, core: Any) -> None:
    with pytest.raises(TimeoutError):
        api.wait_for_watches("Service", 1, timeout=0.05)
    raw = core.list_service_for_all_namespaces(
        watch=True, resource_version=api.resource_version, _preload_content=False
    )
    api.wait_for_watches("Service", 1, timeout=2)
    assert (api.open_watches("Service"), api.open_watches("Pod"), api.open_watches()) == (1, 0, 1)
    raw.close()  # the client hangs up: the server notices without any event to send
    assert wait_until(lambda: api.open_watches() == 0)


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------


def test_set_down_refuses_connections_and_recovers(api: KubeAPIServer, core: Any) -> None:
    api.apply(service("a"))
    assert names(core.list_service_for_all_namespaces().items) == ["a"]
    with watching(core.list_service_for_all_namespaces, timeout_seconds=30) as stream:
        next(stream)
        api.set_down(True)
        with pytest.raises(urllib3.exceptions.ProtocolError):
            next(stream)
    assert api.is_down and api.open_watches() == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", api.port), timeout=1).close()
    seen = len(api.requests)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_service_for_all_namespaces()
    assert len(api.requests) == seen

    api.apply(service("b"))  # the cluster changes while its API is unreachable
    api.set_down(False)
    assert names(core.list_service_for_all_namespaces().items) == ["a", "b"]


def test_set_failing_answers_with_status_errors(api: KubeAPIServer, kubeconfig: str) -> None:
    api.apply(service("a"))
    with make_client(kubeconfig, retries=0) as api_client:
        core = client.CoreV1Api(api_client)
        api.set_failing(500)
        with pytest.raises(client.ApiException) as failed:
            core.list_service_for_all_namespaces()
        assert failed.value.status == 500
        assert status_body(failed.value)["reason"] == "InternalError"
        with (
            pytest.raises(client.ApiException) as watch_failed,
            watching(core.list_service_for_all_namespaces, timeout_seconds=5) as stream,
        ):
            next(stream)
        assert watch_failed.value.status == 500

        api.set_failing(429, retry_after=1)
        with pytest.raises(client.ApiException) as throttled:
            core.list_service_for_all_namespaces()
        assert throttled.value.status == 429
        assert throttled.value.headers is not None
        assert throttled.value.headers["Retry-After"] == "1"
        assert status_body(throttled.value)["details"] == {"retryAfterSeconds": 1}

        api.set_failing(503, count=1)
        with pytest.raises(client.ApiException) as unavailable:
            core.list_service_for_all_namespaces()
        assert unavailable.value.status == 503
        assert names(core.list_service_for_all_namespaces().items) == ["a"]

    # With its default retries, urllib3 honours Retry-After on 429 by itself.
    with make_client(kubeconfig) as api_client:
        api.clear_requests()
        api.set_failing(429, retry_after=0, count=2)
        assert names(client.CoreV1Api(api_client).list_service_for_all_namespaces().items) == ["a"]
        assert len(api.requests) == 3


def test_stop_cuts_connections_and_leaves_no_threads(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    api = KubeAPIServer().start()
    with make_client(api.write_kubeconfig(tmp_path / "kc", context="fake")) as api_client:
        core = client.CoreV1Api(api_client)
        api.apply(service("a"))
        core.list_service_for_all_namespaces()  # leaves an idle keep-alive connection
        with watching(core.list_service_for_all_namespaces, timeout_seconds=30) as stream:
            next(stream)
            api.stop()
            with pytest.raises(urllib3.exceptions.ProtocolError):
                next(stream)
    assert wait_until(lambda: set(threading.enumerate()) <= before, timeout=2)
