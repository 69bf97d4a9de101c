"""``ClusterDNS``: the real server, in-process, for an application's tests.

::

    with ClusterDNS("deploy/", namespace="shop") as cluster:
        resolver = cluster.resolver()              # a dnspython Resolver set up like a pod
        resolver.resolve("orders", "A")            # orders.shop.svc.cluster.local
        cluster.apply({"kind": "Service", "metadata": {"name": "cache", "namespace": "shop"}})
        cluster.resolve("cache").addresses         # our glibc/musl stub, with its query list

The server is :class:`dnsserver.serve.app.DnsServer`, serving UDP and TCP on a free loopback port
from a background thread that runs its own asyncio loop. Manifests are paths (files or
folders), YAML text, or dicts, mixed freely; they go through :mod:`dnsserver.cluster.manifests`, so
kinds DNS does not use are skipped, namespaces are created, and Services without a
``clusterIP`` get the address the loader would give them. :meth:`ClusterDNS.apply` and
:meth:`ClusterDNS.delete` change the cluster on the server's own loop and return once the
change is served: the next query sees it.

**dnspython's Resolver is not glibc.** :meth:`ClusterDNS.resolver` sets ``search``,
``ndots=5`` and ``use_search_by_default`` (off by default in dnspython), and then the order
of names tried is glibc's: as-is first when ``dots >= ndots``, else the search list then the
name as-is. But dnspython asks one qtype at a time, and it stops the walk on NODATA
(``NoAnswer``), as musl does, where glibc goes on; on SERVFAIL it raises
``NoNameservers`` where glibc tries the next search domain. Use :meth:`ClusterDNS.resolve`
(our stub, :mod:`dnsserver.client.resolver`) when the exact libc walk matters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import dns.name
import dns.resolver
import yaml

from dnsserver.client import resolver as stub
from dnsserver.cluster import manifests
from dnsserver.config.settings import Config
from dnsserver.serve import app
from zones import convert, model
from zones.zone import Zone

Manifest = str | PathLike[str] | Mapping[str, Any]
"""A path (file or folder), YAML/JSON text (a ``str`` with a newline or ``": "``), or a dict."""

START_TIMEOUT = 10.0
CHANGE_TIMEOUT = 5.0
_T = TypeVar("_T")
_KINDS: dict[str, type[model.ClusterObject]] = {
    "service": model.Service, "endpointslice": model.EndpointSlice, "pod": model.Pod,
    "namespace": model.Namespace,
}


class ClusterDNSError(Exception):
    """The test cluster cannot start or cannot take a change."""


class ClusterDNS:
    """A cluster DNS server on 127.0.0.1:<free port>, serving the given manifests.

    ``namespace`` is the default for :meth:`resolver` and :meth:`resolve`; ``zone`` the
    cluster domain; ``host_search`` the node's search domains kubelet appends to a pod's.
    """

    def __init__(
        self,
        *manifests: Manifest,
        namespace: str = "default",
        zone: str = "cluster.local",
        host_search: Sequence[str] = (),
        ttl: int = 5,
        pods: model.PodsMode | str = model.PodsMode.INSECURE,
        mode: stub.Mode = "glibc",
        timeout: float = 2.0,
    ) -> None:
        self.namespace = namespace
        self.zone = zone.strip(".").lower()
        self.host_search = tuple(host_search)
        self.mode: stub.Mode = mode
        self.timeout = timeout
        self._manifests = manifests
        self._config = Config(listen=(("127.0.0.1", 0),), zones=(self.zone,), ttl=ttl,
                              pods=model.PodsMode(pods))
        self._server: app.DnsServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._errors = _ErrorLog()
        self.host = "127.0.0.1"
        self.port = 0

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> ClusterDNS:
        """Load the manifests and serve them; returns once the server answers."""
        if self._thread is not None:
            raise ClusterDNSError("already started")
        objects = load(self._manifests)
        started: concurrent.futures.Future[tuple[str, int]] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(objects, started), name="cluster-dns", daemon=True
        )
        self._thread.start()
        try:
            self.host, self.port = started.result(START_TIMEOUT)
        except Exception:
            self.close()
            raise
        self._errors.attach(self._thread)
        return self

    def close(self) -> None:
        """Stop listening and end the server's thread (idempotent)."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(START_TIMEOUT)
        self._errors.detach()
        self._thread = None

    def __enter__(self) -> ClusterDNS:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def server_errors(self) -> list[str]:
        """Errors the server logged (a bug answering a query is logged and answered SERVFAIL)."""
        return list(self._errors.messages)

    def _run(
        self, objects: list[model.ClusterObject],
        started: concurrent.futures.Future[tuple[str, int]],
    ) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(objects, started))
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(
        self, objects: list[model.ClusterObject],
        started: concurrent.futures.Future[tuple[str, int]],
    ) -> None:
        self._stop = asyncio.Event()
        server = app.DnsServer(self._config, objects)
        await server.start()
        self._server = server
        try:
            started.set_result(server.addresses[0])
            await self._stop.wait()
        finally:
            await server.stop()

    # -- changing the cluster --------------------------------------------------------------

    def apply(self, *objects: Manifest) -> int:
        """Add or replace objects (dicts, YAML text or paths) as ``kubectl apply`` would.

        A Service without ``clusterIP`` keeps the address it has, or gets a free one; the
        namespace of every object is created if missing. Returns how many objects changed
        DNS data. Once it returns, queries see the change.
        """
        documents = [doc for item in objects for doc in _documents(item)]

        def change() -> int:
            zone = self._zone()
            changed = 0
            with zone.batch():
                for obj in _convert(documents, zone):
                    if not isinstance(obj, model.Namespace):
                        changed += zone.apply(model.Namespace(obj.namespace))
                    changed += zone.apply(obj)
            return changed

        return self._call(change)

    def delete(
        self, obj: Mapping[str, Any] | str, namespace: str | None = None,
        name: str | None = None,
    ) -> bool:
        """Remove an object: ``delete(manifest_dict)``, ``delete(yaml_text)``, or
        ``delete("Service", "shop", "api")`` (``delete("Namespace", "", "shop")``).

        Returns True when it was there. Deleting a Namespace stops serving its names (the
        objects in it are kept, as they would be until the API server's cascade)."""
        if isinstance(obj, str) and name is not None:
            kind_name = obj.lower().removesuffix("s")
            if kind_name not in _KINDS:
                raise ClusterDNSError(f"unknown kind {obj!r}: use one of {sorted(_KINDS)}")
            kind = _KINDS[kind_name]
            key = ("" if kind is model.Namespace else (namespace or "default"), name.lower())
        else:
            documents = [d for d in _documents(obj) if d.get("kind") in convert.KINDS]
            if len(documents) != 1:
                raise ClusterDNSError("delete() takes exactly one Service, EndpointSlice, "
                                      "Pod or Namespace")
            target = _to_model(documents[0])
            kind, key = type(target), target.key
        return self._call(lambda: self._zone().delete(kind, key[0], key[1]))

    def _zone(self) -> Zone:
        assert self._server is not None
        return self._server.zone

    def _call(self, function: Callable[[], _T]) -> _T:
        """Run ``function`` on the server's loop (zone changes are not thread-safe) and wait."""
        loop = self._loop
        if loop is None or self._server is None or loop.is_closed():
            raise ClusterDNSError("the cluster is not running: use start() or a with block")
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(CHANGE_TIMEOUT)

    # -- asking ----------------------------------------------------------------------------

    def config(
        self, namespace: str | None = None, *, mode: stub.Mode | None = None,
        ndots: int = 5, use_tcp: bool = False,
    ) -> stub.ResolverConfig:
        """The resolv.conf of a pod in ``namespace`` pointing at this server."""
        return stub.ResolverConfig.for_pod(
            namespace or self.namespace, self.zone, nameservers=((self.host, self.port),),
            host_search=self.host_search, ndots=ndots, mode=mode or self.mode,
            timeout=self.timeout, attempts=2, use_tcp=use_tcp,
        )

    def resolver(self, namespace: str | None = None) -> dns.resolver.Resolver:
        """A dnspython Resolver configured like a pod in ``namespace`` (see the module
        docstring for where dnspython's walk differs from glibc's)."""
        pod = self.config(namespace)
        result = dns.resolver.Resolver(configure=False)
        result.nameservers = [self.host]
        result.port = self.port
        result.search = [dns.name.from_text(domain) for domain in pod.search]
        result.ndots = pod.ndots
        result.use_search_by_default = True
        result.timeout = self.timeout
        result.lifetime = self.timeout * 2
        result.cache = None
        return result

    def resolve(
        self, name: str, qtype: str | Sequence[str] = "A", namespace: str | None = None, *,
        mode: stub.Mode | None = None, ndots: int = 5,
    ) -> stub.Resolution:
        """Look ``name`` up from a pod in ``namespace`` with our glibc (default) or musl stub.

        The result has the answer (``.ok``, ``.addresses``, ``.records``, ``.name``) and
        every query the libc would have sent (``.queries``, ``.steps``)."""
        return stub.resolve(name, qtype, self.config(namespace, mode=mode, ndots=ndots))


# -- manifests -----------------------------------------------------------------------------


def load(sources: Iterable[Manifest]) -> list[model.ClusterObject]:
    """Every DNS-relevant object of ``sources``, through :func:`dnsserver.cluster.manifests.load`.

    The sources are copied in order into one folder, so the loader sees them all at once
    (one ClusterIP allocation, later objects replacing earlier ones with the same key).
    """
    sources = list(sources)
    if not sources:
        return []
    with tempfile.TemporaryDirectory(prefix="cluster-dns-") as folder:
        names: dict[str, str] = {}
        for number, source in enumerate(sources):
            for path, label in _materialise(source, Path(folder), number):
                names[str(path)] = label
        try:
            return manifests.load(Path(folder))
        except manifests.ManifestError as exc:
            message = str(exc)
            for written, label in names.items():
                message = message.replace(written, label)
            raise ClusterDNSError(message) from None


def is_yaml_text(source: str) -> bool:
    """Whether a ``str`` manifest is YAML text (a newline or \": \" in it) rather than a path."""
    return "\n" in source or ": " in source


def _materialise(source: Manifest, folder: Path, number: int) -> list[tuple[Path, str]]:
    """Write ``source`` under ``folder`` as YAML files; returns (file, what to call it)."""
    prefix = f"{number:04d}"
    if isinstance(source, Mapping):
        path = folder / f"{prefix}-object.yaml"
        path.write_text(yaml.safe_dump(dict(source)), encoding="utf-8")
        return [(path, f"manifest #{number + 1} (a dict)")]
    if isinstance(source, str) and is_yaml_text(source):
        path = folder / f"{prefix}-text.yaml"
        path.write_text(source, encoding="utf-8")
        return [(path, f"manifest #{number + 1} (YAML text)")]
    original = Path(source)
    if original.is_file():
        path = folder / f"{prefix}-{original.name}"
        if path.suffix not in manifests.SUFFIXES:
            path = path.with_name(path.name + ".yaml")
        shutil.copyfile(original, path)
        return [(path, str(original))]
    if original.is_dir():
        copied = []
        for index, file in enumerate(sorted(p for p in original.rglob("*")
                                            if p.suffix in manifests.SUFFIXES and p.is_file())):
            path = folder / f"{prefix}-{index:04d}-{file.name}"
            shutil.copyfile(file, path)
            copied.append((path, str(file)))
        if not copied:
            raise ClusterDNSError(f"{original}: no .yaml, .yml or .json files in this folder")
        return copied
    raise ClusterDNSError(f"{original}: no such file or folder (and not YAML text)")


def _documents(source: Manifest) -> list[dict[str, Any]]:
    """The API objects in one source, ``kind: List`` expanded."""
    if isinstance(source, Mapping):
        raw: list[Any] = [dict(source)]
    elif isinstance(source, str) and is_yaml_text(source):
        raw = list(yaml.safe_load_all(source))
    else:
        path = Path(source)
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.suffix in manifests.SUFFIXES and p.is_file())
        if not files:
            raise ClusterDNSError(f"{path}: no such file, or no manifests in this folder")
        raw = [doc for file in files
               for doc in yaml.safe_load_all(file.read_text(encoding="utf-8"))]
    documents: list[dict[str, Any]] = []
    for doc in raw:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ClusterDNSError(f"not a Kubernetes object: {doc!r:.80}")
        kind = str(doc.get("kind", ""))
        if kind.endswith("List") and isinstance(doc.get("items"), list):
            item_kind = kind.removesuffix("List")
            documents += [{"kind": item_kind, **item} if item_kind else item
                          for item in doc["items"] if isinstance(item, dict)]
        else:
            documents.append(doc)
    return documents


def _to_model(doc: Mapping[str, Any]) -> model.ClusterObject:
    try:
        return convert.to_model(doc)
    except convert.ConversionError as exc:
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
        name = meta.get("name", "?") if isinstance(meta, Mapping) else "?"
        raise ClusterDNSError(f"{doc.get('kind')} {name}: {exc}") from None


def _convert(documents: list[dict[str, Any]], zone: Zone) -> list[model.ClusterObject]:
    """Model objects for ``documents``, Services given a ClusterIP as the API server would."""
    documents = [d for d in documents if d.get("kind") in convert.KINDS]
    taken = set(manifests.RESERVED_IPS) | {
        ip for obj in zone.objects() if isinstance(obj, model.Service) for ip in obj.cluster_ips
    }
    objects = []
    for doc in documents:
        stored = _with_cluster_ip(doc, zone, taken) if doc.get("kind") == "Service" else doc
        objects.append(_to_model(stored))
    return objects


def _with_cluster_ip(doc: dict[str, Any], zone: Zone, taken: set[str]) -> dict[str, Any]:
    """The Service as the API server would store it: a ClusterIP kept or allocated.

    Same stable choice as the manifest loader (a hash of "Service ns/name" into
    10.96.0.0/12, skipping taken addresses), so a Service gets the same address whether it
    came from a file or from :meth:`ClusterDNS.apply`.
    """
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    if spec.get("type") == "ExternalName" or spec.get("clusterIPs") or spec.get("clusterIP"):
        return doc
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    namespace = str(meta.get("namespace") or "default").lower()
    name = str(meta.get("name", "")).lower()
    existing = zone.service(namespace, name)
    if existing is not None and existing.cluster_ips:
        ips = list(existing.cluster_ips)
    else:
        try:
            ips = [manifests.free_service_ip(f"Service {namespace}/{name}", taken)]
        except manifests.ManifestError as exc:
            raise ClusterDNSError(str(exc)) from None
    taken.update(ips)
    return {**doc, "spec": {**spec, "clusterIP": ips[0], "clusterIPs": ips}}


class _ErrorLog(logging.Handler):
    """ERROR records the server thread logs while a ClusterDNS runs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []
        self._thread: int | None = None

    def attach(self, thread: threading.Thread) -> None:
        self._thread = thread.ident
        logging.getLogger("dnsserver").addHandler(self)

    def detach(self) -> None:
        logging.getLogger("dnsserver").removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread:
            self.messages.append(self.format(record))
