"""Following the Kubernetes API: list, then watch, per resource (kopf ``watching.py`` shape).

Each resource (Services, EndpointSlices, Namespaces, and Pods when needed) has a
:class:`Reflector` thread, because the official client is blocking. The thread does the
network and JSON work and converts objects to :mod:`zones.model`; the zone itself is changed
only on the event loop (``call_soon_threadsafe``), the same thread that answers queries, so a
query never sees half an update and the zone needs no lock.

The loop of one reflector, top-down:

1. LIST in pages (``limit``/``continue``), all pages from one snapshot; a page answered 410
   (continue token expired) restarts the list.
2. Reconcile the zone with the full list: what the API no longer has is deleted, so nothing
   deleted while we were away survives a reconnection.
3. WATCH from the list's resourceVersion with bookmarks and a server-side timeout. Every event
   and bookmark advances our resourceVersion and resets the client's inactivity timeout.
4. The stream ends normally (server timeout) → watch again from our resourceVersion.
   410 Gone (ERROR event or HTTP status) → back to 1. Any other failure → back off
   (1, 1, 2, 3, 5, 8, ... seconds, with jitter) and watch again, or list again if the list
   itself failed. Meanwhile the zone keeps serving the last state it knew.

State changes (lost the API, got it back) are logged once, never per retry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Histogram
from urllib3.exceptions import HTTPError

from dnsserver.cluster import apischema
from zones import convert, model
from zones.zone import Zone

log = logging.getLogger("dnsserver.kube")

POD_FIELD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown"


class KubeError(Exception):
    """The Kubernetes API cannot be used with this configuration."""


class Gone(Exception):
    """410: the resourceVersion we hold is too old; list again."""


@dataclass(frozen=True, slots=True)
class Options:
    page_size: int = 500
    watch_timeout: int = 300  # seconds, asked of the server (it ends the stream cleanly)
    inactivity_timeout: float = 90.0  # seconds without an event or bookmark: the stream is dead
    connect_timeout: float = 5.0
    backoff_unit: float = 1.0  # seconds; tests make it small
    backoff_cap: float = 30.0


@dataclass(frozen=True, slots=True)
class Resource:
    name: str  # plural, as in the URL and in logs
    kind: type[model.ClusterObject]
    path: str
    field_selector: str = ""


SERVICES = Resource("services", model.Service, "/api/v1/services")
ENDPOINT_SLICES = Resource(
    "endpointslices", model.EndpointSlice, "/apis/discovery.k8s.io/v1/endpointslices"
)
NAMESPACES = Resource("namespaces", model.Namespace, "/api/v1/namespaces")
PODS = Resource("pods", model.Pod, "/api/v1/pods", POD_FIELD_SELECTOR)


@dataclass(slots=True)
class WatchState:
    """What one reflector is doing, for readiness, metrics and tests."""

    listed: bool = False  # the first full list has reached the zone
    healthy: bool = True
    last_error: str = ""
    events: int = 0
    lists: int = 0
    drops: int = 0
    resource_version: str = ""


def backoff_delays(unit: float, cap: float) -> Iterator[float]:
    """1, 1, 2, 3, 5, 8, ... times ``unit``, capped, each with ±20 % jitter."""
    a, b = 1.0, 1.0
    while True:
        yield min(a * unit, cap) * random.uniform(0.8, 1.2)
        a, b = b, a + b


def api_client(
    kubeconfig: Path | None, context: str | None, endpoint: str | None = None,
    tls: tuple[Path, Path, Path] | None = None,
) -> Any:
    """An ``ApiClient`` from a kubeconfig, or from the pod's service account; ``endpoint``
    (the Corefile's ``kubernetes { endpoint URL }``) replaces the server address, and alone
    (no kubeconfig, not in a pod) means an API server that needs no credentials."""
    from kubernetes import client, config  # noqa: PLC0415  (slow import, only when live)

    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig), context=context, client_configuration=configuration
            )
        elif endpoint is None or os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
            token = ServiceAccountToken(Path(config.incluster_config.SERVICE_TOKEN_FILENAME))
            token(configuration)
            configuration.refresh_api_key_hook = token  # type: ignore[assignment]
    except (config.ConfigException, OSError, ValueError, TypeError) as exc:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster service account"
        raise KubeError(f"cannot use the {where}: {exc}") from None
    if endpoint is not None:
        configuration.host = endpoint.rstrip("/")
    if tls is not None:  # the Corefile's tls CERT KEY CACERT
        configuration.cert_file, configuration.key_file, configuration.ssl_ca_cert = map(str, tls)
    configuration.retries = False  # our own loop retries, with back-off
    return client.ApiClient(configuration)


class ServiceAccountToken:
    """The pod's service-account token as client-go reads it: trimmed of whitespace (a token
    file ending in a newline works), and read again when the file changes, which is checked
    before every request, so a token the kubelet rotated is sent from the next request on; and
    at least once a minute, as client-go does, in case a change left the file's size and times
    as they were. (The client's own hook sends the file's content as it is, newline included,
    and reads it again only once a minute.) If the file cannot be read, the last token read is
    kept, as client-go does, and that is logged once."""

    REREAD_SECONDS = 60.0

    def __init__(self, path: Path) -> None:
        self._path = path
        self._version: tuple[int, int, int] | None = None
        self._token = ""
        self._read_at = 0.0
        self._unreadable = False

    def __call__(self, configuration: Any) -> None:
        try:
            found = self._path.stat()  # through the kubelet's ..data symlink
            version = (found.st_ino, found.st_mtime_ns, found.st_size)
            now = time.monotonic()
            if version != self._version or now - self._read_at >= self.REREAD_SECONDS:
                token = self._path.read_text(encoding="utf-8").strip()
                if token:
                    self._token, self._version, self._read_at = token, version, now
            self._unreadable = False
        except OSError as exc:
            if not self._unreadable:
                log.warning("cannot read the service-account token again: %s", exc)
            self._unreadable = True
        if self._token:
            configuration.api_key["BearerToken"] = f"Bearer {self._token}"


class Reflector:
    """List-then-watch of one resource into the zone, on its own thread."""

    def __init__(
        self,
        resource: Resource,
        api: Any,
        post: Callable[[Callable[[], None]], None],
        zone_ops: ZoneOps,
        options: Options,
    ) -> None:
        self.resource = resource
        self.state = WatchState()
        self._api = api
        self._post = post
        self._zone_ops = zone_ops
        self._options = options
        self._stop = threading.Event()
        self._response: Any = None
        self._decoders = apischema.Decoders(resource.kind.__name__)
        self._thread = threading.Thread(
            target=self._run, name=f"watch-{resource.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            _close(response)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    # -- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        delays = backoff_delays(self._options.backoff_unit, self._options.backoff_cap)
        need_list = True
        version = ""
        while not self._stop.is_set():
            try:
                if need_list:
                    version = self._list()
                    need_list = False
                    delays = backoff_delays(self._options.backoff_unit, self._options.backoff_cap)
                version, progressed = self._watch(version)
                # The API answered: whatever happened to the stream, back-off starts afresh.
                delays = backoff_delays(self._options.backoff_unit, self._options.backoff_cap)
                if not progressed:  # connected but cut at once: pause briefly, do not spin
                    self._stop.wait(self._options.backoff_unit * random.uniform(0.2, 0.5))
            except Gone:
                log.info("%s: resourceVersion %s expired; listing again",
                         self.resource.name, version or "?")
                need_list = True
            except Exception as exc:
                if self._stop.is_set():
                    break
                self._failed(exc)
                self._stop.wait(next(delays))

    def _list(self) -> str:
        """All objects in pages from one snapshot; posts a reconcile; returns its version."""
        objects: list[model.ClusterObject] = []
        token = ""
        while True:
            query: dict[str, Any] = {"limit": self._options.page_size}
            if token:
                query["continue"] = token
            try:
                page = self._decoders.page(self._get(query).data)
            except Gone:
                objects, token = [], ""  # the snapshot expired mid-list: start over
                continue
            objects.extend(self._convert_items(page.get("items") or []))
            metadata = page.get("metadata") or {}
            token = metadata.get("continue") or ""
            if not token:
                version = str(metadata.get("resourceVersion") or "")
                break
        self._post(lambda: self._zone_ops.reconcile(self, objects, version))
        self._recovered()
        return version

    def _watch(self, version: str) -> tuple[str, bool]:
        """Stream events from ``version`` until the server ends the stream; (version, any event)."""
        query: dict[str, Any] = {
            "watch": "true", "allowWatchBookmarks": "true",
            "timeoutSeconds": self._options.watch_timeout + random.randint(0, 30),
        }
        if version:
            query["resourceVersion"] = version
        response = self._get(query)
        self._recovered()
        self._response = response
        progressed = False
        try:
            for line in _lines(response):
                if self._stop.is_set():
                    break
                version = self._event(self._decoders.event(line), version)
                progressed = True
        except (HTTPError, OSError) as exc:
            # A stream the API opened and that then broke (cut, or silent past the inactivity
            # timeout) is routine: watch again from our version. Not being able to open one
            # is what counts as losing the API (it raises from _get above).
            if self._stop.is_set():
                raise
            self.state.drops += 1
            log.debug("%s: watch stream broke (%s); watching again from %s",
                      self.resource.name, _describe(exc), version)
        finally:
            self._response = None
            _close(response)
        return version, progressed

    def _event(self, event: dict[str, Any], version: str) -> str:
        kind = event.get("type")
        obj = event.get("object") or {}
        new_version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise Gone()
            raise RuntimeError(f"watch error {code}: {obj.get('message', '')}")
        if kind in ("ADDED", "MODIFIED"):
            converted = self._convert(obj)
            if converted is not None:
                self._post(lambda: self._zone_ops.apply(self, converted))
        elif kind == "DELETED":
            meta = obj.get("metadata") or {}
            namespace = "" if self.resource.kind is model.Namespace else meta.get("namespace", "")
            name = str(meta.get("name", "")).lower()
            self._post(lambda: self._zone_ops.delete(self, str(namespace).lower(), name))
        elif kind != "BOOKMARK":
            raise RuntimeError(f"unknown watch event type {kind!r}")
        self.state.resource_version = new_version
        self.state.events += 1
        return new_version

    # -- helpers -------------------------------------------------------------------------

    def _get(self, query: dict[str, Any]) -> Any:
        """One raw GET through the client's REST layer (its auth, TLS and token refresh); the
        JSON is decoded by us. The generated API methods are not used: their argument
        validation alone costs ~20 MB of memory on first use, for nothing we need."""
        if self.resource.field_selector:
            query["fieldSelector"] = self.resource.field_selector
        method, url, headers, _, _ = self._api.param_serialize(
            "GET", self.resource.path, query_params=list(query.items()),
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
        )
        response = self._api.call_api(
            method, url, header_params=headers,
            _request_timeout=(self._options.connect_timeout, self._options.inactivity_timeout),
        )
        if response.status == 410:
            _close(response.response)
            raise Gone()
        if not 200 <= response.status <= 299:
            _close(response.response)
            raise RuntimeError(f"HTTP {response.status} {response.reason}")
        return response.response

    def _convert_items(self, items: list[dict[str, Any]]) -> Iterator[model.ClusterObject]:
        for item in items:
            converted = self._convert(item)
            if converted is not None:
                yield converted

    def _convert(self, obj: dict[str, Any]) -> model.ClusterObject | None:
        try:
            return convert.to_model(obj, self.resource.kind.__name__)
        except convert.ConversionError as exc:
            meta = obj.get("metadata") or {}
            log.warning("%s: ignoring %s/%s: %s", self.resource.name,
                        meta.get("namespace", ""), meta.get("name", "?"), exc)
            return None

    def _failed(self, exc: Exception) -> None:
        message = _describe(exc)
        if self.state.healthy:
            log.warning("%s: lost the Kubernetes API (%s); serving the last known state and "
                        "retrying", self.resource.name, message)
        else:
            log.debug("%s: still failing: %s", self.resource.name, message)
        self.state.healthy = False
        self.state.last_error = message

    def _recovered(self) -> None:
        if not self.state.healthy:
            log.info("%s: the Kubernetes API is back", self.resource.name)
        self.state.healthy = True
        self.state.last_error = ""


class ZoneOps:
    """Zone changes made on the event loop thread, with the bookkeeping around them."""

    def __init__(
        self, zone: Zone, reflectors: list[Reflector], on_synced: Callable[[], None],
        programming: Histogram | None = None,
    ) -> None:
        self.zone = zone
        self.reflectors = reflectors
        self._on_synced = on_synced
        self._programming = programming

    def reconcile(
        self, reflector: Reflector, objects: list[model.ClusterObject], version: str
    ) -> None:
        changes = self.zone.reconcile(reflector.resource.kind, objects)
        reflector.state.lists += 1
        reflector.state.resource_version = version
        if reflector.state.listed:
            log.info("%s: relisted %d objects, %d changes", reflector.resource.name,
                     len(objects), changes)
        reflector.state.listed = True
        if not self.zone.synced and all(r.state.listed for r in self.reflectors):
            self.zone.synced = True
            self._on_synced()

    def apply(self, reflector: Reflector, obj: model.ClusterObject) -> None:
        changed = self.zone.apply(obj)
        if (
            changed and self.zone.synced and self._programming is not None
            and isinstance(obj, model.EndpointSlice) and obj.trigger_time is not None
        ):
            self._programming.labels(service_kind=self._service_kind(obj)).observe(
                max(0.0, time.time() - obj.trigger_time)
            )

    def delete(self, reflector: Reflector, namespace: str, name: str) -> None:
        self.zone.delete(reflector.resource.kind, namespace, name)

    def _service_kind(self, eps: model.EndpointSlice) -> str:
        svc = self.zone.service(eps.namespace, eps.service_name)
        if svc is None or not svc.headless:
            return "cluster_ip"
        return "headless_with_selector"


class KubeSource:
    """All reflectors of one server; the zone is synced once each has listed."""

    def __init__(
        self, zone: Zone, api: Any, loop: asyncio.AbstractEventLoop, *, pods: bool,
        options: Options | None = None, programming: Histogram | None = None,
    ) -> None:
        self.zone = zone
        self.synced = asyncio.Event()
        resources = [NAMESPACES, SERVICES, ENDPOINT_SLICES] + ([PODS] if pods else [])
        self.reflectors: list[Reflector] = []
        ops = ZoneOps(zone, self.reflectors, self._synced, programming)
        self._ops = ops
        def post(callback: Callable[[], None]) -> None:
            loop.call_soon_threadsafe(callback)

        self.reflectors.extend(
            Reflector(r, api, post, ops, options or Options()) for r in resources
        )
        self._started = 0.0

    def retarget(self, zone: Zone) -> None:
        """Apply events to ``zone`` from now on (a reload built a new one from the old)."""
        self.zone = zone
        self._ops.zone = zone

    def start(self) -> None:
        self._started = time.monotonic()
        for reflector in self.reflectors:
            reflector.start()

    def stop(self) -> None:
        for reflector in self.reflectors:
            reflector.stop()
        for reflector in self.reflectors:
            reflector.join(2.0)

    def _synced(self) -> None:
        log.info("synced with the Kubernetes API in %.2fs", time.monotonic() - self._started)
        self.synced.set()


def _lines(response: Any) -> Iterator[bytes]:
    """Newline-separated JSON events of a watch stream, as they arrive."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line.strip())
    if pending.strip():
        yield pending


def _close(response: Any) -> None:
    """Close a response, unblocking a thread that is reading it (urllib3 ≥ 2.3 ``shutdown``)."""
    try:
        if hasattr(response, "shutdown"):
            response.shutdown()
        response.close()
        response.release_conn()
    except Exception:  # closing a broken connection may fail in many ways; nothing to do
        log.debug("closing a watch response failed", exc_info=True)


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."
