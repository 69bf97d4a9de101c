"""The served zones: the cluster's objects, and a name index of ready-to-send answers.

:attr:`Zone.index` maps a lower-case wire name to a :class:`Node`, a dict from qtype to
:class:`~zones.records.Answer` that encodes an answer the first time it is asked for and keeps
it. The hot path reads only that dict. Everything else here runs when the cluster changes: an
event about one object rebuilds the names of the one Service it touches and swaps them in, so a
query never sees half an update and an event never copies the whole zone (kube-dns ``dns.go``).
Names missing from the index go through :meth:`Zone.lookup`, which knows the grammar's dynamic
forms (pod names) and the NXDOMAIN vs SERVFAIL-before-sync rule (SPEC §2.12).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from zones import build, model, names
from zones.model import PodsMode
from zones.records import (
    AAAA,
    ANY,
    CNAME,
    MX,
    NS,
    PTR,
    SRV,
    TXT,
    A,
    Answer,
    Origin,
    RRSets,
    Srv,
    encode,
    section_records,
    without_records,
)

KUBE_DNS = ("kube-system", "kube-dns")
CACHED_QTYPES = frozenset({A, AAAA, SRV, PTR, TXT, NS, MX, CNAME, ANY, 65})
MAX_CNAME_CHAIN = 10
MAX_CACHED_MISSES = 50_000
MAX_DYNAMIC_NODES = 10_000  # pod names and port-name spellings, ~0.5 KB each when answered

Key = tuple[str, str]


class View(Protocol):
    """Where a node's record sets come from; computed when the name is first asked for."""

    def rrsets(self, selector: Any) -> RRSets: ...


class Node(dict[int, Answer]):
    """One owner name: where its records come from, and its answers encoded on first use."""

    __slots__ = ("name_length", "origin", "selector", "view", "zone")

    def __init__(
        self, view: View, selector: object, origin: Origin, zone: Zone, name_length: int
    ) -> None:
        super().__init__()
        self.view = view
        self.selector = selector
        self.origin = origin
        self.zone = zone
        self.name_length = name_length  # of its wire name: where its answer starts in a reply

    @property
    def rrsets(self) -> RRSets:
        return self.view.rrsets(self.selector)

    def encode_answer(self, qtype: int) -> Answer:
        """Encode the answer for ``qtype``, keep it in this node when ``qtype`` is one of
        :data:`CACHED_QTYPES`, and return it.

        It is also this dict's ``__missing__`` (below): ``node[qtype]``, the hot path's one
        lookup, encodes and stores an answer the first time a type is asked for. A read that
        may write: that is the point (no second lookup, no method call on a hit).
        """
        origin = self.origin
        # Most of the 65,536 types never need the record sets (which a big headless Service
        # rebuilds at some cost): one shared answer of the zone, never kept per type but for
        # the few common ones. Only the apex has this node's name length and an SOA.
        apex = self.name_length == origin.soa.zone_length and self.rrsets.apex
        fixed = without_records(qtype, origin, apex)
        if fixed is not None:
            if qtype in CACHED_QTYPES:
                self[qtype] = fixed
            return fixed
        rrsets = self.rrsets
        if rrsets.cname:
            # CNAME answers embed their target's records, which another Service owns: kept
            # by the zone only until the next change anywhere.
            return self.zone.volatile_answer(self, qtype)
        answer = encode(rrsets, qtype, self.origin, self.zone.chase, self.name_length)
        if qtype in CACHED_QTYPES:
            self[qtype] = answer
        return answer

    __missing__ = encode_answer


class _Fixed:
    """Names whose record sets are known when the node is made (apex, dns-version, ...)."""

    def rrsets(self, selector: RRSets) -> RRSets:
        return selector


FIXED = _Fixed()
PtrSources = tuple[tuple[Key, str], ...]  # (Service, endpoint label or "" for a ClusterIP)


class Zone:
    """Every served zone of one server, fed with :mod:`zones.model` objects."""

    def __init__(
        self,
        origins: Sequence[str] = ("cluster.local",),
        *,
        ttl: int = 5,
        pods: PodsMode = PodsMode.INSECURE,
        dns_ips: Sequence[str] = (),
        reverse_zones: Sequence[str] = names.REVERSE_ZONES,
        loadbalance: bool = False,
        namespaces: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index: dict[bytes, Node] = {}
        self.synced = False
        self.pods = pods
        self._clock = clock
        serial = int(clock())
        self._forward = [
            Origin.create(o.strip(".").lower(), ttl, serial, loadbalance) for o in origins
        ]
        # PTR records are served under these only (``10.96.0.0/16`` is ``96.10.in-addr.arpa``);
        # other reverse names are not ours, and go on to the next plugin.
        self._reverse = [Origin.create(o.strip(".").lower(), ttl, serial) for o in reverse_zones]
        self._origins = {names.to_wire(o.name): o for o in self._forward + self._reverse}
        self._dns_ips = tuple(dns_ips)
        self._services: dict[Key, model.Service] = {}
        self._services_by_ns: dict[str, set[Key]] = {}
        self._slices: dict[Key, model.EndpointSlice] = {}
        self._slices_by_service: dict[Key, set[Key]] = {}
        self._namespaces: set[str] = set()  # every namespace the cluster has
        # CoreDNS ``namespaces``: only these are exposed; others do not exist (NXDOMAIN). The
        # others are still kept, so that a reload which exposes more needs no relist.
        self._exposed = frozenset(ns.lower() for ns in namespaces)
        self._pods: dict[Key, model.Pod] = {}
        # Nearly always one pod per IP: a small tuple, not a set (50,000 pods: ~8 MB less).
        self._pods_by_ip: dict[str, tuple[Key, ...]] = {}
        self._owned: dict[Key, list[bytes]] = {}
        self._ptr_ips: dict[Key, tuple[str, ...]] = {}
        self._dirty: set[Key] | None = None
        # Answers that depend on more than one name (misses, chased CNAMEs), kept until the
        # next change: search-path misses are most of what a cluster DNS server answers.
        self._misses: dict[bytes, Answer] = {}
        self._volatile: dict[tuple[int, int], tuple[Node, Answer]] = {}  # (id(node), qtype)
        # Names that exist but are not indexed (pods, "http.tcp.<svc>..."), as nodes.
        self._dynamic: dict[bytes, Node] = {}
        self._ptr_view = _PtrView(self)
        self._changed = False
        self._rebuild_apex()

    # -- reading ---------------------------------------------------------------------------

    @property
    def serial(self) -> int:
        return self._forward[0].soa.serial if self._forward else self._reverse[0].soa.serial

    @property
    def origins(self) -> list[str]:
        return [o.name for o in self._forward + self._reverse]

    def lookup(self, wire: bytes, qtype: int) -> Answer | None:
        """The answer for a lower-case wire name; None when no served zone holds the name."""
        node = self.index.get(wire)
        if node is not None:
            return node[qtype]
        return self.lookup_missing(wire, qtype)

    def lookup_missing(self, wire: bytes, qtype: int) -> Answer | None:
        """The answer for a name that is not in :attr:`index` (the hot path's miss)."""
        known = self._misses.get(wire)
        if known is not None and qtype not in (251, 252):
            return known
        node = self._dynamic.get(wire)
        if node is not None:
            return node[qtype]
        answer = self._lookup_missing(wire, qtype)
        if (
            answer is not None and answer.rcode == 3 and self.synced
            and len(self._misses) < MAX_CACHED_MISSES
        ):
            self._misses[wire] = answer  # NXDOMAIN holds for every qtype
        return answer

    def volatile_answer(self, node: Node, qtype: int) -> Answer:
        """A node's answer that embeds other names' records (a chased CNAME)."""
        key = (id(node), qtype)  # the value keeps the node alive, so its id stays its own
        kept = self._volatile.get(key)
        if kept is not None:
            return kept[1]
        answer = encode(node.rrsets, qtype, node.origin, self.chase, node.name_length)
        if len(self._volatile) < MAX_CACHED_MISSES:
            self._volatile[key] = (node, answer)
        return answer

    def _lookup_missing(self, wire: bytes, qtype: int) -> Answer | None:
        found = self._find_origin(wire)
        if found is None:
            return None
        origin, labels = found
        if qtype in (251, 252):  # IXFR, AXFR: transfers are not served
            return origin.refused
        if origin in self._reverse:
            return self._nxdomain(origin)
        parsed = names.parse(labels)
        if parsed.kind is names.Kind.POD:
            ip = self._pod_ip(parsed)
            if ip is None:
                return self._nxdomain(origin)
            rrsets = RRSets(aaaa=(ip,)) if ":" in ip else RRSets(a=(ip,))
            return self._dynamic_node(wire, FIXED, rrsets, origin)[qtype]
        if parsed.kind is names.Kind.PORT:  # "http.tcp.svc..." is "_http._tcp.svc..."
            canonical = names.port_name(
                parsed.port, parsed.protocol, parsed.service, parsed.namespace, origin.name
            )
            with contextlib.suppress(ValueError):
                node = self.index.get(names.to_wire(canonical))
                if node is not None and canonical != names.from_wire(wire):
                    # Not node[qtype]: its bytes point into a question of another length.
                    alias = self._dynamic_node(wire, node.view, node.selector, node.origin)
                    return alias[qtype]
        return self._nxdomain(origin)

    def _dynamic_node(self, wire: bytes, view: View, selector: object, origin: Origin) -> Node:
        """A node for an existing name the index does not hold, kept (while there is room)
        until the next change, so that asking it again costs what an indexed name costs."""
        node = Node(view, selector, origin, self, len(wire))
        if len(self._dynamic) < MAX_DYNAMIC_NODES:
            self._dynamic[wire] = node
        return node

    def nodata_for(self, wire: bytes) -> Answer | None:
        """The NODATA answer of the zone holding ``wire`` (None outside the zones)."""
        found = self._find_origin(wire)
        return found[0].nodata if found is not None else None

    def answer(self, name: str, qtype: int) -> Answer | None:
        """:meth:`lookup` for a dotted name (tests and tools)."""
        return self.lookup(names.to_wire(name), qtype)

    def chase(self, target: str, qtype: int, depth: int = 0) -> list[bytes] | None:
        """The A/AAAA records of an in-zone CNAME target, owned by the target's own name;
        None when the target is outside every served zone."""
        try:
            wire = names.to_wire(target)
        except ValueError:
            return None
        if self._find_origin(wire) is None:
            return None
        node = self.index.get(wire)
        if node is None or depth >= MAX_CNAME_CHAIN:
            return []
        rrsets = node.rrsets
        if target == rrsets.cname:
            return []

        def next_hop(name: str, qt: int) -> list[bytes] | None:
            return self.chase(name, qt, depth + 1)

        answer, _ = section_records(rrsets, qtype, node.origin.ttl, wire, next_hop)
        return answer

    def records(self) -> Iterator[tuple[str, RRSets]]:
        """Every owner name with its record sets (zone files, comparisons in tests)."""
        for wire, node in list(self.index.items()):
            yield names.from_wire(wire), node.rrsets

    @property
    def ttl(self) -> int:
        return (self._forward or self._reverse)[0].ttl

    def rrsets_at(self, wire: bytes) -> RRSets | None:
        """The record sets of an existing name (pod names included), None when it does not exist."""
        node = self.index.get(wire)
        if node is not None:
            return node.rrsets
        found = self._find_origin(wire)
        if found is None or found[0] in self._reverse:
            return None
        parsed = names.parse(found[1])
        if parsed.kind is names.Kind.POD:
            ip = self._pod_ip(parsed)
            if ip is not None:
                return RRSets(aaaa=(ip,)) if ":" in ip else RRSets(a=(ip,))
        return None

    def service(self, namespace: str, name: str) -> model.Service | None:
        return self._services.get((namespace, name))

    def pods_at(self, ip: str) -> list[model.Pod]:
        return [self._pods[key] for key in sorted(self._pods_by_ip.get(ip, ()))]

    def objects(self) -> Iterator[model.ClusterObject]:
        yield from (model.Namespace(ns) for ns in sorted(self._namespaces))
        yield from self._services.values()
        yield from self._slices.values()
        yield from self._pods.values()

    # -- changing --------------------------------------------------------------------------

    def apply(self, obj: model.ClusterObject) -> bool:
        """Add or replace one object; True when DNS data changed."""
        with self.batch():
            if isinstance(obj, model.Service):
                return self._apply_service(obj)
            if isinstance(obj, model.EndpointSlice):
                return self._apply_slice(obj)
            if isinstance(obj, model.Namespace):
                return self._apply_namespace(obj.name)
            return self._apply_pod(obj)

    def delete(self, kind: type[model.ClusterObject], namespace: str, name: str) -> bool:
        """Remove one object by kind and key; True when it was there."""
        key = (namespace, name)
        with self.batch():
            if kind is model.Service:
                return self._delete_service(key)
            if kind is model.EndpointSlice:
                return self._delete_slice(key)
            if kind is model.Namespace:
                return self._delete_namespace(name)
            return self._delete_pod(key)

    def reconcile(
        self, kind: type[model.ClusterObject], objects: Iterable[model.ClusterObject]
    ) -> int:
        """Make the objects of one kind exactly ``objects`` (after a relist); returns changes."""
        wanted = {obj.key: obj for obj in objects if isinstance(obj, kind)}
        changes = 0
        with self.batch():
            for namespace, name in [k for k in self._keys(kind) if k not in wanted]:
                changes += self.delete(kind, namespace, name)
            for obj in wanted.values():
                changes += self.apply(obj)
        return changes

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Defer Service rebuilds to the end of the block (initial lists, relists, tests)."""
        if self._dirty is not None:
            yield
            return
        self._dirty = set()
        try:
            yield
        finally:
            dirty, self._dirty = self._dirty, None
            for key in sorted(dirty):
                self._rebuild_service(key)
            if self._changed:
                self._changed = False
                self._bump_serial()

    def _keys(self, kind: type[model.ClusterObject]) -> list[Key]:
        if kind is model.Service:
            return list(self._services)
        if kind is model.EndpointSlice:
            return list(self._slices)
        if kind is model.Namespace:
            return [("", ns) for ns in self._namespaces]
        return list(self._pods)

    def _apply_service(self, svc: model.Service) -> bool:
        if self._services.get(svc.key) == svc:
            return False
        self._services[svc.key] = svc
        self._services_by_ns.setdefault(svc.namespace, set()).add(svc.key)
        self._mark(svc.key)
        return True

    def _delete_service(self, key: Key) -> bool:
        if self._services.pop(key, None) is None:
            return False
        _discard(self._services_by_ns, key[0], key)
        self._mark(key)
        return True

    def _apply_slice(self, eps: model.EndpointSlice) -> bool:
        old = self._slices.get(eps.key)
        if old == eps:
            return False
        if old is not None:
            self._unlink_slice(old)
        self._slices[eps.key] = eps
        if eps.service_name:
            service = (eps.namespace, eps.service_name)
            self._slices_by_service.setdefault(service, set()).add(eps.key)
            self._mark(service)
        return True

    def _delete_slice(self, key: Key) -> bool:
        old = self._slices.pop(key, None)
        if old is None:
            return False
        self._unlink_slice(old)
        return True

    def _unlink_slice(self, eps: model.EndpointSlice) -> None:
        if eps.service_name:
            service = (eps.namespace, eps.service_name)
            _discard(self._slices_by_service, service, eps.key)
            self._mark(service)

    def _apply_namespace(self, namespace: str) -> bool:
        if namespace in self._namespaces:
            return False
        self._namespaces.add(namespace)
        self._namespace_changed(namespace)
        return True

    def _delete_namespace(self, namespace: str) -> bool:
        if namespace not in self._namespaces:
            return False
        self._namespaces.discard(namespace)
        self._namespace_changed(namespace)
        return True

    def _serves_namespace(self, namespace: str) -> bool:
        return namespace in self._namespaces and (
            not self._exposed or namespace in self._exposed)

    def _namespace_changed(self, namespace: str) -> None:
        exists = self._serves_namespace(namespace)
        for origin in self._forward:
            roots = ["svc"] + (["pod"] if self.pods is not PodsMode.DISABLED else [])
            for root in roots:
                wire = names.to_wire(names.namespace_name(namespace, root, origin.name))
                if exists:
                    self.index[wire] = Node(FIXED, RRSets(), origin, self, len(wire))
                else:
                    self.index.pop(wire, None)
        for key in self._services_by_ns.get(namespace, ()):
            self._mark(key)
        self._changed = True

    def _apply_pod(self, pod: model.Pod) -> bool:
        key = pod.key  # one tuple, shared by both indexes (50,000 pods: a few MB)
        old = self._pods.get(key)
        if old == pod:
            return False
        if old is not None:
            for ip in old.ips:
                self._unindex_pod(ip, key)
        self._pods[key] = pod
        for ip in pod.ips:
            held = self._pods_by_ip.get(ip, ())
            if key not in held:
                self._pods_by_ip[ip] = (*held, key)
        if self.pods is PodsMode.VERIFIED and (
            old is None or old.ips != pod.ips or old.running != pod.running
        ):
            self._changed = True  # its name's answer changes (and pod names are kept)
        return True

    def _delete_pod(self, key: Key) -> bool:
        old = self._pods.pop(key, None)
        if old is None:
            return False
        for ip in old.ips:
            self._unindex_pod(ip, key)
        if self.pods is PodsMode.VERIFIED:
            self._changed = True
        return True

    def _unindex_pod(self, ip: str, key: Key) -> None:
        held = tuple(k for k in self._pods_by_ip.get(ip, ()) if k != key)
        if held:
            self._pods_by_ip[ip] = held
        else:
            self._pods_by_ip.pop(ip, None)

    def _mark(self, service: Key) -> None:
        assert self._dirty is not None, "changes happen inside batch()"
        self._dirty.add(service)
        self._changed = True

    # -- rebuilding ------------------------------------------------------------------------

    def _rebuild_service(self, key: Key) -> None:
        """Swap in the names of one Service as its objects now say (none if it is gone)."""
        svc = self._services.get(key)
        fresh: dict[bytes, Node] = {}
        reverse: list[tuple[str, str]] = []
        if svc is not None and self._serves_namespace(svc.namespace):
            slices = [self._slices[k] for k in sorted(self._slices_by_service.get(key, ()))]
            for i, origin in enumerate(self._forward):
                view = build.view(svc, slices, origin.name)
                for name, selector in view.owned_names():
                    wire = names.to_wire(name)
                    fresh[wire] = Node(view, selector, origin, self, len(wire))
                if i == 0:
                    reverse = list(view.reverse_entries())
        index = self.index
        for wire in self._owned.pop(key, ()):
            if wire not in fresh:
                del index[wire]
        index.update(fresh)
        if fresh:
            self._owned[key] = list(fresh)
        self._update_ptrs(key, reverse)
        if key == KUBE_DNS:
            self._rebuild_apex()

    def _set_node(self, wire: bytes, rrsets: RRSets, origin: Origin) -> None:
        node = self.index.get(wire)
        if node is None or node.rrsets != rrsets or node.origin is not origin:
            self.index[wire] = Node(FIXED, rrsets, origin, self, len(wire))

    def _update_ptrs(self, key: Key, entries: list[tuple[str, str]]) -> None:
        """Re-point the reverse names of the IPs this Service had or has."""
        if not self._reverse:
            return
        labels: dict[str, list[str]] = {}
        for ip, label in entries:
            labels.setdefault(ip, []).append(label)
        old_ips = self._ptr_ips.pop(key, ())
        for ip in dict.fromkeys((*old_ips, *labels)):
            wire = names.to_wire(names.reverse_name(ip))
            node = self.index.get(wire)
            old: PtrSources = node.selector if node is not None else ()  # type: ignore[assignment]
            kept = [s for s in old if s[0] != key]
            sources = sorted(kept + [(key, label) for label in dict.fromkeys(labels.get(ip, ()))])
            found = self._find_origin(wire) if sources else None
            if found is not None:
                self.index[wire] = Node(self._ptr_view, tuple(sources), found[0], self, len(wire))
            else:  # no longer pointed at, or outside every served reverse zone
                self.index.pop(wire, None)
        if labels:
            self._ptr_ips[key] = tuple(labels)

    def _rebuild_apex(self) -> None:
        kube_dns = self._services.get(KUBE_DNS)
        dns_ips = kube_dns.cluster_ips if kube_dns and kube_dns.cluster_ips else self._dns_ips
        primary = self._forward[0].name if self._forward else ""
        if kube_dns and kube_dns.cluster_ips and primary:
            server = Srv(0, 0, names.service_name(KUBE_DNS[1], KUBE_DNS[0], primary), dns_ips)
        else:
            server = Srv(0, 0, f"ns.dns.{primary}" if primary else "ns.dns", dns_ips)
        v4 = tuple(ip for ip in dns_ips if ":" not in ip)
        v6 = tuple(ip for ip in dns_ips if ":" in ip)
        for origin in self._forward:
            fixed = {
                origin.name: RRSets(apex=True, ns=(server,)),
                f"ns.dns.{origin.name}": RRSets(a=v4, aaaa=v6),
                f"svc.{origin.name}": RRSets(),
                f"pod.{origin.name}": RRSets(),
                f"dns-version.{origin.name}": RRSets(txt=("1.1.0",)),
            }
            for name, rrsets in fixed.items():
                self._set_node(names.to_wire(name), rrsets, origin)
        for origin in self._reverse:
            self._set_node(names.to_wire(origin.name), RRSets(apex=True, ns=(server,)), origin)

    def _ptr_targets(self, sources: PtrSources) -> RRSets:
        """A ClusterIP names its first Service; an endpoint IP every name it has (CoreDNS)."""
        zone = self._forward[0].name if self._forward else ""
        cluster = [k for k, label in sources if not label]
        if cluster:
            namespace, name = min(cluster)
            return RRSets(ptr=(names.service_name(name, namespace, zone),))
        return RRSets(ptr=tuple(dict.fromkeys(
            names.endpoint_name(label, name, namespace, zone)
            for (namespace, name), label in sources
        )))

    def _bump_serial(self) -> None:
        """A new serial for every zone: the time of the change, and always larger than before.
        Answers that depend on other names are forgotten."""
        self._misses.clear()
        self._volatile.clear()
        self._dynamic.clear()
        serial = max(int(self._clock()), self.serial + 1) & 0xFFFFFFFF
        for origin in self._forward + self._reverse:
            origin.soa.set_serial(serial)

    # -- answering names that are not in the index ----------------------------------------

    def _find_origin(self, wire: bytes) -> tuple[Origin, list[str]] | None:
        """The longest served zone that holds ``wire``, and the labels left of it."""
        i = 0
        while i < len(wire):
            origin = self._origins.get(wire[i:])
            if origin is not None:
                relative = names.wire_labels(wire[:i] + b"\x00")
                labels = [label.decode("ascii", "replace") for label in relative]
                return origin, labels
            if not wire[i]:
                break
            i += 1 + wire[i]
        return None

    def _nxdomain(self, origin: Origin) -> Answer:
        return origin.nxdomain if self.synced else origin.servfail

    def _pod_ip(self, parsed: names.ParsedName) -> str | None:
        """The IP a pod name stands for, if the name exists under the ``pods`` mode."""
        if self.pods is PodsMode.DISABLED or not self._serves_namespace(parsed.namespace):
            return None
        ip = names.ip_from_pod_label(parsed.endpoint)
        if ip is None:
            return None
        if self.pods is PodsMode.VERIFIED and not any(
            pod.namespace == parsed.namespace and pod.running for pod in self.pods_at(ip)
        ):
            return None
        return ip


class _PtrView:
    def __init__(self, zone: Zone) -> None:
        self._zone = zone

    def rrsets(self, selector: PtrSources) -> RRSets:
        return self._zone._ptr_targets(selector)


def _discard(index: dict[str, set[Key]] | dict[Key, set[Key]], key: object, item: Key) -> None:
    members = index.get(key)  # type: ignore[call-overload]
    if members is not None:
        members.discard(item)
        if not members:
            del index[key]  # type: ignore[arg-type]
