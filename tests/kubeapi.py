"""A real HTTP test double of the Kubernetes API server (list/watch only).

``KubeAPIServer`` listens on 127.0.0.1 and speaks enough of the Kubernetes JSON
list/watch protocol for the official ``kubernetes`` Python client (configured
from a kubeconfig written by :meth:`KubeAPIServer.write_kubeconfig`) to list,
paginate and watch Services, Namespaces, Pods, EndpointSlices and Endpoints.
Tests change the cluster with :meth:`~KubeAPIServer.apply` and
:meth:`~KubeAPIServer.delete` and inject faults (dropped watches, compaction,
outages, HTTP errors) while a server under test watches.

Storage mimics etcd: one global, monotonically increasing revision; a history
of every change since the last :meth:`~KubeAPIServer.compact`, from which any
snapshot at or after the compaction revision can be rebuilt (paginated lists
are served from the snapshot named in the continue token, watches replay the
history after their ``resourceVersion``).

With ``tls=True`` it serves HTTPS with a certificate for 127.0.0.1 signed by a CA made for
the instance (:attr:`KubeAPIServer.ca_file`), as a pod's ``ca.crt`` would verify it; with
``require_token=True`` every request needs ``Authorization: Bearer`` and a token the double
accepts (401 otherwise), and :meth:`KubeAPIServer.rotate_token` swaps in a new token and
revokes the old one after a delay, as a projected service-account token expires.

Behaviour that the real API server has and this double does not emulate is
listed in the docstring of :class:`KubeAPIServer`.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import copy
import errno
import json
import logging
import os
import re
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NamedTuple, Self, cast
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "ENDPOINTS",
    "ENDPOINT_SLICE",
    "NAMESPACE",
    "POD",
    "RESOURCE_TYPES",
    "SERVICE",
    "ApiError",
    "KubeAPIServer",
    "RecordedRequest",
    "ResourceType",
    "Selector",
    "decode_continue",
    "encode_continue",
    "resource_type",
    "status_object",
]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Query = dict[str, str]

#: How often an idle watch wakes up to check for client disconnects.
_WATCH_POLL_SECONDS: Final = 0.05
#: The first resourceVersion handed out (real clusters never start at 1).
_INITIAL_RV: Final = 1000
_CONTINUE_VERSION: Final = "meta.k8s.io/v1"
_INITIAL_EVENTS_END: Final = "k8s.io/initial-events-end"


# --------------------------------------------------------------------------
# Resource types
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceType:
    """One served resource: its kind, URL plural and API group/version."""

    kind: str
    plural: str
    singular: str
    group: str
    version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def discovery_entry(self) -> Obj:
        entry: Obj = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["get", "list", "watch"],
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        return entry


SERVICE: Final = ResourceType("Service", "services", "service", "", "v1", True, ("svc",))
NAMESPACE: Final = ResourceType("Namespace", "namespaces", "namespace", "", "v1", False, ("ns",))
POD: Final = ResourceType("Pod", "pods", "pod", "", "v1", True, ("po",))
ENDPOINTS: Final = ResourceType("Endpoints", "endpoints", "endpoints", "", "v1", True, ("ep",))
ENDPOINT_SLICE: Final = ResourceType(
    "EndpointSlice", "endpointslices", "endpointslice", "discovery.k8s.io", "v1", True
)
RESOURCE_TYPES: Final[tuple[ResourceType, ...]] = (
    SERVICE,
    NAMESPACE,
    POD,
    ENDPOINTS,
    ENDPOINT_SLICE,
)


def resource_type(kind: str | ResourceType) -> ResourceType:
    """Look up a resource by kind, plural, singular or short name (any case)."""
    if isinstance(kind, ResourceType):
        return kind
    wanted = kind.lower()
    for rtype in RESOURCE_TYPES:
        if wanted in (rtype.kind.lower(), rtype.plural, rtype.singular, *rtype.short_names):
            return rtype
    raise ValueError(f"unsupported kind {kind!r}")


def _find_resource(group: str, version: str, plural: str) -> ResourceType | None:
    for rtype in RESOURCE_TYPES:
        if (rtype.group, rtype.version, rtype.plural) == (group, version, plural):
            return rtype
    return None


def _group_versions() -> dict[str, list[ResourceType]]:
    """Resources by API group version, core ("v1") included."""
    groups: dict[str, list[ResourceType]] = {}
    for rtype in RESOURCE_TYPES:
        groups.setdefault(rtype.api_version, []).append(rtype)
    return groups


# --------------------------------------------------------------------------
# Status objects and errors
# --------------------------------------------------------------------------

_REASONS: Final[dict[int, str]] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_object(
    code: int,
    message: str,
    reason: str | None = None,
    *,
    details: Obj | None = None,
    list_continue: str | None = None,
) -> Obj:
    """A ``metav1.Status`` failure object as the API server serializes it."""
    metadata: Obj = {} if list_continue is None else {"continue": list_continue}
    status: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": metadata,
        "status": "Failure",
        "message": message,
        "reason": reason if reason is not None else _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details:
        status["details"] = details
    return status


class ApiError(Exception):
    """An API failure answered as an HTTP error with a Status body."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        *,
        details: Obj | None = None,
        list_continue: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status_object(
            code, message, reason, details=details, list_continue=list_continue
        )
        self.headers = headers or {}


def _bad_request(message: str) -> ApiError:
    return ApiError(400, message)


_EXPIRED_CONTINUE_MESSAGE: Final = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue token "
    "in this response to retrieve the remainder of the results. Continuing with the "
    "provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may "
    "show up in the list."
)


def _too_large_rv(requested: int, current: int) -> ApiError:
    return ApiError(
        504,
        f"Too large resource version: {requested}, current: {current}",
        "Timeout",
        details={
            "causes": [
                {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
            ],
            "retryAfterSeconds": 1,
        },
    )


# --------------------------------------------------------------------------
# Query parsing helpers
# --------------------------------------------------------------------------

_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _parse_bool(query: Query, name: str) -> bool:
    """Parse like Go's strconv.ParseBool (the client sends ``watch=True``)."""
    value = query.get(name, "")
    if value == "" or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise _bad_request(f"invalid boolean value {value!r} for {name}")


def _parse_int(query: Query, name: str) -> int:
    value = query.get(name, "")
    if value == "":
        return 0
    try:
        number = int(value)
    except ValueError:
        raise _bad_request(f"invalid value {value!r} for {name}") from None
    if number < 0:
        raise _bad_request(f"{name} must not be negative")
    return number


def _parse_rv(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _bad_request(f"invalid resource version: {value!r}") from None


def _parse_query(raw: str) -> Query:
    """The last value of each query parameter (the API server uses the first;
    clients never repeat them)."""
    return {name: values[-1] for name, values in parse_qs(raw, keep_blank_values=True).items()}


# --------------------------------------------------------------------------
# Continue tokens
# --------------------------------------------------------------------------


def encode_continue(rv: int, start: str) -> str:
    """Encode a continue token the way the etcd3 storage does.

    ``start`` is the storage key (``namespace/name``, or ``name`` for
    cluster-scoped kinds) at which the next page starts; ``rv`` is the snapshot
    revision, or -1 for an "inconsistent" continuation of the current state.
    """
    raw = json.dumps({"v": _CONTINUE_VERSION, "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def decode_continue(token: str) -> tuple[int, str]:
    """Return ``(rv, start)`` of a continue token; ``ApiError`` 400 if invalid."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _bad_request("continue key is not valid: not a valid token") from None
    if not isinstance(data, dict) or data.get("v") != _CONTINUE_VERSION:
        raise _bad_request("continue key is not valid: incorrect encoded start resourceVersion")
    rv, start = data.get("rv"), data.get("start")
    if not isinstance(rv, int) or not isinstance(start, str) or not start:
        raise _bad_request("continue key is not valid: malformed token")
    return rv, start


# --------------------------------------------------------------------------
# Field and label selectors
# --------------------------------------------------------------------------

Predicate = Callable[[Obj], bool]

_FIELD_TERM: Final = re.compile(r"\s*([A-Za-z0-9_.\[\]/-]+)\s*(!=|==|=)\s*(.*?)\s*")
_LABEL_KEY: Final = r"[A-Za-z0-9_./-]+"
_LABEL_EXISTS: Final = re.compile(rf"\s*(!?)\s*({_LABEL_KEY})\s*")
_LABEL_SET: Final = re.compile(rf"\s*({_LABEL_KEY})\s+(in|notin)\s*\((.*)\)\s*")
_LABEL_EQ: Final = re.compile(rf"\s*({_LABEL_KEY})\s*(!=|==|=)\s*([A-Za-z0-9_.-]*)\s*")


def _field_value(obj: Obj, path: str) -> str:
    """The string form of a dotted field path; missing fields read as ""."""
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _labels(obj: Obj) -> dict[str, str]:
    labels = obj.get("metadata", {}).get("labels") or {}
    return cast(dict[str, str], labels)


def _field_predicate(term: str) -> Predicate:
    match = _FIELD_TERM.fullmatch(term)
    if match is None:
        raise ValueError(f"invalid field selector term {term!r}")
    path, operator, wanted = match.groups()
    if operator == "!=":
        return lambda obj: _field_value(obj, path) != wanted
    return lambda obj: _field_value(obj, path) == wanted


def _label_predicate(term: str) -> Predicate:
    if match := _LABEL_SET.fullmatch(term):
        key, operator, raw_values = match.groups()
        values = {value.strip() for value in raw_values.split(",")}
        if operator == "in":
            return lambda obj: _labels(obj).get(key) in values
        return lambda obj: _labels(obj).get(key) not in values
    if match := _LABEL_EQ.fullmatch(term):
        key, operator, wanted = match.groups()
        if operator == "!=":
            return lambda obj: _labels(obj).get(key) != wanted
        return lambda obj: _labels(obj).get(key) == wanted
    if match := _LABEL_EXISTS.fullmatch(term):
        negate, key = match.groups()
        if negate:
            return lambda obj: key not in _labels(obj)
        return lambda obj: key in _labels(obj)
    raise ValueError(f"invalid label selector term {term!r}")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside ``in (a,b)`` value sets."""
    terms: list[str] = []
    depth = 0
    current = ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [term for term in terms if term.strip()]


@dataclass(frozen=True)
class Selector:
    """A conjunction of field and label requirements (empty matches all)."""

    predicates: tuple[Predicate, ...] = ()

    @classmethod
    def parse(cls, field_selector: str = "", label_selector: str = "") -> Selector:
        """Parse ``fieldSelector``/``labelSelector`` values; ``ApiError`` 400 if bad.

        Field selectors: ``path=v``, ``path==v``, ``path!=v`` joined by commas,
        where path is any dotted path (the real server only accepts a
        per-kind list of fields). Label selectors: ``k=v``, ``k==v``, ``k!=v``,
        ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``.
        """
        try:
            fields = [_field_predicate(term) for term in _split_terms(field_selector)]
            labels = [_label_predicate(term) for term in _split_terms(label_selector)]
        except ValueError as err:
            raise _bad_request(str(err)) from None
        return cls(tuple(fields + labels))

    @property
    def empty(self) -> bool:
        return not self.predicates

    def matches(self, obj: Obj) -> bool:
        return all(predicate(obj) for predicate in self.predicates)


# --------------------------------------------------------------------------
# Objects and changes
# --------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _object_key(rtype: ResourceType, namespace: str, name: str) -> str:
    """The etcd-like key: sorting keys as strings gives the real list order."""
    return f"{namespace}/{name}" if rtype.namespaced else name


def _key_of(rtype: ResourceType, obj: Obj) -> str:
    meta = obj["metadata"]
    return _object_key(rtype, meta.get("namespace", ""), meta["name"])


def _with_rv(obj: Obj, rv: int) -> Obj:
    """A copy of ``obj`` (sharing everything but metadata) at revision ``rv``."""
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}


def _list_item(obj: Obj) -> Obj:
    """Items inside a List carry no kind/apiVersion, as in the real API."""
    return {key: value for key, value in obj.items() if key not in ("kind", "apiVersion")}


def _json_line(payload: Obj) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True)
class _Change:
    """One committed mutation. ``obj`` is the new state (for DELETED the last
    state, at the deletion revision); ``prev`` the state before, if any."""

    rv: int
    type: str
    rtype: ResourceType
    key: str
    obj: Obj
    prev: Obj | None


# --------------------------------------------------------------------------
# Watches
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """One line of a watch stream; ``final`` ends the stream after it."""

    data: bytes
    final: bool = False


def _bookmark_frame(rtype: ResourceType, rv: int, *, initial_events_end: bool = False) -> _Frame:
    metadata: Obj = {"resourceVersion": str(rv)}
    if initial_events_end:
        metadata["annotations"] = {_INITIAL_EVENTS_END: "true"}
    bookmark = {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": metadata}
    return _Frame(_json_line({"type": "BOOKMARK", "object": bookmark}))


def _error_frame(code: int, message: str, reason: str | None = None) -> _Frame:
    event = {"type": "ERROR", "object": status_object(code, message, reason)}
    return _Frame(_json_line(event), final=True)


class _Watcher:
    """One open watch: what it selects, and the frames waiting to be sent.

    The store pushes frames under its lock, so a watcher's queue is always in
    revision order and never misses a change between registration and its
    first read, whatever compaction happens meanwhile.
    """

    def __init__(
        self,
        rtype: ResourceType,
        namespace: str | None,
        selector: Selector,
        bookmarks: bool,
        sock: socket.socket | None,
    ) -> None:
        self.rtype = rtype
        self.namespace = namespace
        self.selector = selector
        self.bookmarks = bookmarks
        self._sock = sock
        self._cond = threading.Condition()
        self._queue: deque[_Frame] = deque()
        self.dropped = False

    def accepts(self, obj: Obj) -> bool:
        in_namespace = self.namespace is None or obj["metadata"].get("namespace") == self.namespace
        return in_namespace and self.selector.matches(obj)

    def event_for(self, change: _Change) -> Obj | None:
        """Translate a change for this watch, like the API server's cacher: an
        object entering the selection is ADDED, one leaving it DELETED (with
        its previous state at the change's revision)."""
        if change.rtype is not self.rtype:
            return None
        now = self.accepts(change.obj)
        if change.type == "DELETED":
            return {"type": "DELETED", "object": change.obj} if now else None
        before = change.prev if change.prev is not None and self.accepts(change.prev) else None
        if before is not None and not now:
            return {"type": "DELETED", "object": _with_rv(before, change.rv)}
        if not now:
            return None
        return {"type": "ADDED" if before is None else "MODIFIED", "object": change.obj}

    def deliver(self, change: _Change) -> None:
        event = self.event_for(change)
        if event is not None:
            self.push(_Frame(_json_line(event)))

    def push(self, frame: _Frame) -> None:
        with self._cond:
            self._queue.append(frame)
            self._cond.notify_all()

    def take(self, timeout: float) -> list[_Frame]:
        """Wait up to ``timeout`` for frames; return (and dequeue) all of them."""
        with self._cond:
            if not self._queue and not self.dropped:
                self._cond.wait(timeout)
            frames = list(self._queue)
            self._queue.clear()
            return frames

    def drop(self) -> None:
        """Cut the connection without the terminating chunk."""
        with self._cond:
            self.dropped = True
            self._cond.notify_all()
        if self._sock is not None:
            _shutdown(self._sock)


def _shutdown(sock: socket.socket) -> None:
    """Shut a socket down from another thread (close() would race the reader). A TLS socket is
    shut at the TCP level: ``SSLSocket.shutdown`` would also drop the TLS state under the
    reader's feet."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the client hung up, checked without consuming its data."""
    if isinstance(sock, ssl.SSLSocket):
        return _tls_peer_closed(sock)
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b""


def _tls_peer_closed(sock: ssl.SSLSocket) -> bool:
    """The same for a TLS watch connection, where peeking is not possible. A watching client
    sends nothing after its request, so what arrives is its close_notify or end of stream; the
    read consumes at most one byte of anything else."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return False
    except OSError:
        return True
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)


# --------------------------------------------------------------------------
# TLS: a CA and a serving certificate made per instance
# --------------------------------------------------------------------------

_SERVING_EXTENSIONS: Final = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost, DNS:kubernetes.default.svc
"""


def _make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """``(ca.crt, server.crt, server.key)``: a throwaway CA (the pod's ``ca.crt``) and a
    certificate for 127.0.0.1 it signed, as a cluster's API server has. openssl's CLI makes
    them (P-256 keys: fast, and accepted at OpenSSL's default security level)."""
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    extensions = directory / "server.ext"
    extensions.write_text(_SERVING_EXTENSIONS)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    commands = [
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "2",
         "-subj", "/CN=kubeapi-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=kube-apiserver"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
         "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", extensions],
    ]
    for command in commands:
        subprocess.run([str(part) for part in command], check=True, capture_output=True,
                       timeout=30)
    return ca_crt, crt, key


# --------------------------------------------------------------------------
# The store: objects, history, snapshots and watch registry
# --------------------------------------------------------------------------


class _Store:
    """Thread-safe etcd-like storage plus the registry of open watches."""

    def __init__(self, initial_rv: int = _INITIAL_RV) -> None:
        self._lock = threading.Lock()
        self._watch_cond = threading.Condition(self._lock)
        self._rv = initial_rv
        self._compacted_rv = initial_rv
        self._objects: dict[ResourceType, dict[str, Obj]] = {rt: {} for rt in RESOURCE_TYPES}
        self._base: dict[ResourceType, dict[str, Obj]] = {rt: {} for rt in RESOURCE_TYPES}
        self._history: list[_Change] = []
        self._watchers: list[_Watcher] = []
        self._keys_cache: dict[str, tuple[int, list[str]]] = {}
        self._json_cache: dict[tuple[str, str, str], bytes] = {}

    # ---- reads -----------------------------------------------------------

    @property
    def rv(self) -> int:
        with self._lock:
            return self._rv

    def get(self, rtype: ResourceType, namespace: str, name: str) -> Obj | None:
        with self._lock:
            obj = self._objects[rtype].get(_object_key(rtype, namespace, name))
        return copy.deepcopy(obj)

    def get_all(self, rtype: ResourceType) -> list[Obj]:
        with self._lock:
            objects = self._objects[rtype]
            return [copy.deepcopy(objects[key]) for key in sorted(objects)]

    def _snapshot(self, rtype: ResourceType, rv: int) -> dict[str, Obj]:
        """The objects of a kind at revision ``rv`` (>= the compaction RV)."""
        if rv >= self._rv:
            return dict(self._objects[rtype])
        state = dict(self._base[rtype])
        for change in self._history:
            if change.rv > rv:
                break
            if change.rtype is not rtype:
                continue
            if change.type == "DELETED":
                state.pop(change.key, None)
            else:
                state[change.key] = change.obj
        return state

    # ---- writes ----------------------------------------------------------

    def apply(self, obj: Obj) -> Obj:
        rtype = resource_type(str(obj.get("kind", "")))
        new = _normalized(rtype, obj)
        key = _key_of(rtype, new)
        with self._lock:
            existing = self._objects[rtype].get(key)
            if existing is not None:
                meta = new["metadata"]
                meta["uid"] = existing["metadata"]["uid"]
                meta["creationTimestamp"] = existing["metadata"]["creationTimestamp"]
                meta["resourceVersion"] = existing["metadata"]["resourceVersion"]
                if new == existing:
                    return copy.deepcopy(existing)  # a no-op update: no new revision
            self._rv += 1
            new["metadata"]["resourceVersion"] = str(self._rv)
            self._objects[rtype][key] = new
            change_type = "ADDED" if existing is None else "MODIFIED"
            self._commit(_Change(self._rv, change_type, rtype, key, new, existing))
            return copy.deepcopy(new)

    def delete(self, rtype: ResourceType, namespace: str, name: str) -> Obj:
        key = _object_key(rtype, namespace, name)
        with self._lock:
            existing = self._objects[rtype].pop(key, None)
            if existing is None:
                raise KeyError(f"{rtype.plural} {key!r} not found")
            self._rv += 1
            last = _with_rv(existing, self._rv)
            self._commit(_Change(self._rv, "DELETED", rtype, key, last, existing))
            return copy.deepcopy(last)

    def _commit(self, change: _Change) -> None:
        self._history.append(change)
        for watcher in self._watchers:
            watcher.deliver(change)

    def compact(self) -> int:
        with self._lock:
            self._base = {rtype: dict(objects) for rtype, objects in self._objects.items()}
            self._history.clear()
            self._compacted_rv = self._rv
            return self._rv

    # ---- list ------------------------------------------------------------

    def list_objects(self, rtype: ResourceType, namespace: str | None, query: Query) -> Obj:
        return json.loads(self.list_json(rtype, namespace, query))  # type: ignore[no-any-return]

    def list_json(self, rtype: ResourceType, namespace: str | None, query: Query) -> bytes:
        """One page of a list as JSON; items are encoded once per object version and reused,
        and the page is cut from a sorted key list kept per snapshot, so listing a large
        cluster in pages costs about what the bytes cost (benchmarks load 60,000 objects)."""
        selector = Selector.parse(query.get("fieldSelector", ""), query.get("labelSelector", ""))
        limit = _parse_int(query, "limit")
        with self._lock:
            snapshot_rv, start, limit = self._list_position(query, limit)
            objects = self._snapshot(rtype, snapshot_rv)
            keys = self._sorted_keys(rtype, snapshot_rv, objects)
        keys = keys[bisect.bisect_left(keys, start):]
        selected: list[str] = []
        for key in keys:
            obj = objects[key]
            if (namespace is None or obj["metadata"].get("namespace") == namespace) and (
                selector.empty or selector.matches(obj)
            ):
                selected.append(key)
                if limit and len(selected) > limit:
                    break  # enough to know there is more (remainingItemCount: see below)
        page_keys = selected[:limit] if limit else selected
        metadata: Obj = {"resourceVersion": str(snapshot_rv)}
        if limit and len(selected) > limit:
            metadata["continue"] = encode_continue(snapshot_rv, page_keys[-1] + "\x00")
            if selector.empty and namespace is None:  # omitted when a selector filters
                metadata["remainingItemCount"] = len(keys) - limit
        head = json.dumps(
            {"kind": rtype.list_kind, "apiVersion": rtype.api_version, "metadata": metadata},
            separators=(",", ":"),
        )
        items = b",".join(self._item_json(rtype, objects[key]) for key in page_keys)
        return head[:-1].encode() + b',"items":[' + items + b"]}"

    def _sorted_keys(self, rtype: ResourceType, rv: int, objects: dict[str, Obj]) -> list[str]:
        cached = self._keys_cache.get(rtype.plural)
        if cached is None or cached[0] != rv or len(cached[1]) != len(objects):
            cached = (rv, sorted(objects))
            self._keys_cache[rtype.plural] = cached
        return cached[1]

    def _item_json(self, rtype: ResourceType, obj: Obj) -> bytes:
        version = (rtype.plural, _key_of(rtype, obj), obj["metadata"].get("resourceVersion", ""))
        encoded = self._json_cache.get(version)
        if encoded is None:
            encoded = json.dumps(_list_item(obj), separators=(",", ":")).encode()
            self._json_cache[version] = encoded
        return encoded

    def _list_position(self, query: Query, limit: int) -> tuple[int, str, int]:
        """Which snapshot a list reads, the key it starts at, and its limit."""
        token = query.get("continue", "")
        rv_text = query.get("resourceVersion", "")
        match = query.get("resourceVersionMatch", "")
        if match not in ("", "Exact", "NotOlderThan"):
            raise _bad_request(f"unsupported resourceVersionMatch {match!r}")
        if token:
            if rv_text:
                raise _bad_request("specifying resource version is not allowed when using continue")
            return self._continue_position(token, limit)
        if match and not rv_text:
            raise _bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided"
            )
        if rv_text == "":
            return self._rv, "", limit
        requested = _parse_rv(rv_text)
        if requested == 0:
            if match == "Exact":
                raise _bad_request(
                    'resourceVersionMatch "Exact" is forbidden for resourceVersion "0"'
                )
            return self._rv, "", 0  # served from the watch cache, which ignores limit
        if requested > self._rv:
            raise _too_large_rv(requested, self._rv)
        exact = match == "Exact" or (match == "" and limit > 0)
        if not exact:
            return self._rv, "", limit
        if requested < self._compacted_rv:
            raise ApiError(410, "The resourceVersion for the provided list is too old.", "Expired")
        return requested, "", limit

    def _continue_position(self, token: str, limit: int) -> tuple[int, str, int]:
        rv, start = decode_continue(token)
        if rv == -1:
            return self._rv, start, limit  # the "inconsistent" token of a 410
        if rv < self._compacted_rv:
            raise ApiError(
                410, _EXPIRED_CONTINUE_MESSAGE, "Expired", list_continue=encode_continue(-1, start)
            )
        return rv, start, limit

    # ---- watch -----------------------------------------------------------

    def open_watch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        query: Query,
        sock: socket.socket | None,
    ) -> _Watcher:
        """Register a watch with its backlog already queued.

        A watch whose ``resourceVersion`` was compacted away gets one final
        410 ERROR frame and is not registered.
        """
        selector = Selector.parse(query.get("fieldSelector", ""), query.get("labelSelector", ""))
        bookmarks = _parse_bool(query, "allowWatchBookmarks")
        rv_text = query.get("resourceVersion", "")
        if "sendInitialEvents" in query:
            initial = _parse_bool(query, "sendInitialEvents")
        else:
            initial = rv_text in ("", "0")
        requested = _parse_rv(rv_text) if rv_text not in ("", "0") else None
        watcher = _Watcher(rtype, namespace, selector, bookmarks, sock)
        with self._lock:
            if initial:
                end_marker = bookmarks and "sendInitialEvents" in query
                self._queue_initial_events(watcher, end_marker)
            elif requested is not None and requested < self._compacted_rv:
                message = f"too old resource version: {requested} ({self._compacted_rv})"
                watcher.push(_error_frame(410, message, "Expired"))
                return watcher
            elif requested is not None:
                for change in self._history:
                    if change.rv > requested:
                        watcher.deliver(change)
            self._watchers.append(watcher)
            self._watch_cond.notify_all()
        return watcher

    def _queue_initial_events(self, watcher: _Watcher, end_marker: bool) -> None:
        """Synthetic ADDED events for the current state, in key order."""
        objects = self._objects[watcher.rtype]
        for key in sorted(objects):
            if watcher.accepts(objects[key]):
                watcher.push(_Frame(_json_line({"type": "ADDED", "object": objects[key]})))
        if end_marker:
            watcher.push(_bookmark_frame(watcher.rtype, self._rv, initial_events_end=True))

    def close_watch(self, watcher: _Watcher) -> None:
        with self._lock:
            if watcher in self._watchers:
                self._watchers.remove(watcher)
                self._watch_cond.notify_all()

    def _take_watchers(self, rtype: ResourceType | None) -> list[_Watcher]:
        """Unregister and return the open watches of a kind (all if None)."""
        taken = [w for w in self._watchers if rtype is None or w.rtype is rtype]
        self._watchers = [w for w in self._watchers if w not in taken]
        self._watch_cond.notify_all()
        return taken

    def drop_watches(self, rtype: ResourceType | None) -> int:
        with self._lock:
            taken = self._take_watchers(rtype)
        for watcher in taken:
            watcher.drop()
        return len(taken)

    def end_watches(self, rtype: ResourceType | None, code: int, message: str) -> int:
        with self._lock:
            taken = self._take_watchers(rtype)
            for watcher in taken:
                watcher.push(_error_frame(code, message))
        return len(taken)

    def bookmark(self, rtype: ResourceType | None = None, only: _Watcher | None = None) -> int:
        """Queue a BOOKMARK at the current revision for watches that asked for
        them; queued under the lock, so it follows every earlier event."""
        with self._lock:
            targets = [
                w
                for w in self._watchers
                if w.bookmarks
                and (rtype is None or w.rtype is rtype)
                and (only is None or w is only)
            ]
            for watcher in targets:
                watcher.push(_bookmark_frame(watcher.rtype, self._rv))
        return len(targets)

    def count_watches(self, rtype: ResourceType | None) -> int:
        with self._lock:
            return self._count_watches(rtype)

    def _count_watches(self, rtype: ResourceType | None) -> int:
        return sum(1 for w in self._watchers if rtype is None or w.rtype is rtype)

    def wait_for_watches(self, rtype: ResourceType | None, count: int, timeout: float) -> bool:
        with self._watch_cond:
            return self._watch_cond.wait_for(lambda: self._count_watches(rtype) >= count, timeout)


def _normalized(rtype: ResourceType, obj: Obj) -> Obj:
    """A private copy with kind/apiVersion and the metadata the server owns."""
    new = copy.deepcopy(obj)
    new["kind"], new["apiVersion"] = rtype.kind, rtype.api_version
    meta = new.setdefault("metadata", {})
    if not meta.get("name"):
        raise ValueError(f"{rtype.kind} needs metadata.name")
    if rtype.namespaced:
        meta["namespace"] = meta.get("namespace") or "default"
    else:
        meta.pop("namespace", None)
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault("creationTimestamp", _now())
    if rtype is NAMESPACE:
        meta.setdefault("labels", {}).setdefault("kubernetes.io/metadata.name", meta["name"])
        new.setdefault("status", {}).setdefault("phase", "Active")
    return new


# --------------------------------------------------------------------------
# Discovery documents
# --------------------------------------------------------------------------

_VERSION_INFO: Final[Obj] = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0",
    "gitCommit": "9edcffcde5595e8a5b1a35f88c421764e575afce",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T07:28:49Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _group_entry(group_version: str) -> Obj:
    group, version = group_version.split("/")
    gv = {"groupVersion": group_version, "version": version}
    return {"name": group, "versions": [gv], "preferredVersion": gv}


def _discovery_document(segments: Sequence[str], server_address: str) -> Obj | None:
    """The discovery document at a path, or None if the path is not one."""
    groups = _group_versions()
    named = {gv.split("/")[0]: gv for gv in sorted(groups) if "/" in gv}
    path = list(segments)
    if path == ["version"]:
        return dict(_VERSION_INFO)
    if path == ["api"]:
        cidr = {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [cidr]}
    if path == ["apis"]:
        entries = [_group_entry(gv) for gv in named.values()]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": entries}
    if len(path) == 2 and path[0] == "apis" and path[1] in named:
        return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(named[path[1]])}
    if path == ["api", "v1"]:
        group_version = "v1"
    elif len(path) == 3 and path[0] == "apis":
        group_version = f"{path[1]}/{path[2]}"
    else:
        return None
    if group_version not in groups:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [rtype.discovery_entry() for rtype in groups[group_version]],
    }


@dataclass(frozen=True)
class _Target:
    """A resource URL: the collection (``name`` None) or one object."""

    rtype: ResourceType
    namespace: str | None
    name: str | None


def _resolve(segments: Sequence[str]) -> _Target | None:
    """Map ``/api/v1/...`` and ``/apis/G/V/...`` paths to a resource target."""
    if list(segments[:2]) == ["api", "v1"]:
        group, version, rest = "", "v1", list(segments[2:])
    elif len(segments) >= 3 and segments[0] == "apis":
        group, version, rest = segments[1], segments[2], list(segments[3:])
    else:
        return None
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if len(rest) not in (1, 2):
        return None
    rtype = _find_resource(group, version, rest[0])
    if rtype is None or (namespace is not None and not rtype.namespaced):
        return None
    if len(rest) == 2 and rtype.namespaced and namespace is None:
        return None
    return _Target(rtype, namespace, rest[1] if len(rest) == 2 else None)


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------


class RecordedRequest(NamedTuple):
    """One request received: method, URL path (as sent) and query."""

    method: str
    path: str
    query: Query

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch", "") in _TRUE


@dataclass
class _Failure:
    status: int
    retry_after: int | None
    remaining: int | None


class _HTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer whose connections the API object can track and cut."""

    daemon_threads = True
    request_queue_size = 128  # a client opening many connections at once

    def __init__(self, address: tuple[str, int], api: KubeAPIServer) -> None:
        self.api = api
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call socket.getfqdn(), a DNS lookup.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        sock = cast(socket.socket, request)
        thread = threading.Thread(
            target=self._serve_connection,
            args=(sock, client_address),
            name=f"kubeapi-conn-{client_address[1]}",
            daemon=True,
        )
        self.api._track(sock, thread)
        thread.start()

    def _serve_connection(self, sock: socket.socket, client_address: Any) -> None:
        context = self.api._ssl_context
        if context is not None:
            # The handshake runs here, in the connection's thread, so a slow or silent client
            # never holds up accepting the next one.
            raw = sock
            try:
                raw.settimeout(10.0)
                sock = context.wrap_socket(raw, server_side=True)
                sock.settimeout(None)
            except OSError:
                self.api._untrack(raw)
                raw.close()
                return
            self.api._retrack(raw, sock)
        try:
            self.process_request_thread(sock, client_address)
        finally:
            self.api._untrack(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):  # disconnects are routine here
            log.exception("kubeapi: error serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kubeapi-test-double"

    @property
    def _api(self) -> KubeAPIServer:
        return cast(_HTTPServer, self.server).api

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("kubeapi: " + format, *args)

    # ---- entry points ----------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = _parse_query(url.query)
        self._api._record(RecordedRequest("GET", url.path, query), self._header_dict())
        try:
            self._api._authenticate(self.headers.get("Authorization"))
            self._api._check_failing()
            self._dispatch(url.path, query)
        except ApiError as err:
            self._send_json(err.code, err.status, err.headers)

    def _not_allowed(self) -> None:
        url = urlsplit(self.path)
        headers = self._header_dict()
        self._api._record(RecordedRequest(self.command, url.path, _parse_query(url.query)), headers)
        self.rfile.read(int(headers.get("content-length", "0") or 0))
        message = "the server does not allow this method on the requested resource"
        self._send_json(405, status_object(405, message))

    def do_POST(self) -> None:
        self._not_allowed()

    def do_PUT(self) -> None:
        self._not_allowed()

    def do_PATCH(self) -> None:
        self._not_allowed()

    def do_DELETE(self) -> None:
        self._not_allowed()

    def _header_dict(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    # ---- routing ---------------------------------------------------------

    def _dispatch(self, path: str, query: Query) -> None:
        segments = [segment for segment in path.split("/") if segment]
        if segments in (["healthz"], ["readyz"], ["livez"]):
            self._send_body(200, b"ok", "text/plain; charset=utf-8")
            return
        document = _discovery_document(segments, self._api.address)
        if document is not None:
            self._send_json(200, document)
            return
        target = _resolve(segments)
        if target is None:
            raise ApiError(404, "the server could not find the requested resource")
        if target.name is not None:
            self._send_json(200, self._get_one(target))
        elif _parse_bool(query, "watch"):
            self._serve_watch(target, query)
        else:
            body = self._api._store.list_json(target.rtype, target.namespace, query)
            self._send_body(200, body, "application/json")

    def _get_one(self, target: _Target) -> Obj:
        rtype, name = target.rtype, target.name or ""
        obj = self._api._store.get(rtype, target.namespace or "", name)
        if obj is None:
            details = {"name": name, "kind": rtype.plural}
            if rtype.group:
                details["group"] = rtype.group
            raise ApiError(404, f'{rtype.plural} "{name}" not found', details=details)
        return obj

    # ---- responses -------------------------------------------------------

    def _send_json(self, code: int, payload: Obj, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self._send_body(code, body, "application/json", headers)

    def _send_body(
        self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    # ---- watch -----------------------------------------------------------

    def _serve_watch(self, target: _Target, query: Query) -> None:
        timeout = _parse_int(query, "timeoutSeconds")
        store = self._api._store
        watcher = store.open_watch(target.rtype, target.namespace, query, self.connection)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache, private")
            self.end_headers()
            clean = self._pump(watcher, timeout)
            if clean:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            clean = False
        finally:
            store.close_watch(watcher)
        if not clean:
            self.close_connection = True

    def _pump(self, watcher: _Watcher, timeout_seconds: int) -> bool:
        """Stream frames until the stream should end; True for a clean end
        (timeout or final ERROR event), False if dropped or the client left."""
        start = time.monotonic()
        deadline = start + timeout_seconds if timeout_seconds else None
        interval = self._api.bookmark_interval if watcher.bookmarks else None
        next_bookmark = start + interval if interval else None
        while True:
            wake_at = [t for t in (deadline, next_bookmark) if t is not None]
            wait = min([_WATCH_POLL_SECONDS, *(t - time.monotonic() for t in wake_at)])
            frames = watcher.take(max(wait, 0.0))
            if watcher.dropped:
                return False
            for frame in frames:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(frame.data), frame.data))
                if frame.final:
                    return True
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return True
            if next_bookmark is not None and interval and now >= next_bookmark:
                self._api._store.bookmark(only=watcher)
                next_bookmark = now + interval
            if _peer_closed(self.connection):
                return False


# --------------------------------------------------------------------------
# The public test double
# --------------------------------------------------------------------------


class KubeAPIServer:
    """A Kubernetes API server double on 127.0.0.1 for list/watch clients.

    Use as a context manager (or ``start()``/``stop()``), point the client at
    ``write_kubeconfig(path)``, change the cluster with ``apply``/``delete``
    and inject faults. All methods are thread-safe.

    Protocol notes:

    * Watch without ``resourceVersion`` or with ``"0"`` first sends a
      synthetic ADDED per current object (key order), as the real server does;
      ``sendInitialEvents=true`` forces this, adding the
      ``k8s.io/initial-events-end`` BOOKMARK when bookmarks are allowed, and
      ``sendInitialEvents=false`` with no RV starts at "now".
    * Watch from RV N replays history after N, then streams live changes; N
      older than the last ``compact()`` yields one ``ERROR`` 410 event
      ("too old resource version: N (compactedRV)") and a clean end of stream.
      As with etcd, the compaction revision itself stays readable: make a
      change before ``compact()`` to expire the RVs and tokens of earlier
      lists.
    * With a field or label selector, objects entering the selection are
      ADDED and leaving it DELETED (like the watch cache).
    * ``timeoutSeconds`` ends the stream cleanly (terminating chunk); without
      it a watch lasts until the client leaves or a fault ends it.
    * BOOKMARKs are sent only to watches with ``allowWatchBookmarks=true``:
      on ``send_bookmark()`` and every ``bookmark_interval`` seconds if set.
    * A list with ``resourceVersion=0`` ignores ``limit`` (watch cache); a
      list with RV N and a limit (or ``resourceVersionMatch=Exact``) reads the
      snapshot at N, else it reads the current state.
    * ``apply()`` of an unchanged object is a no-op: no revision, no event.

    * With ``require_token=True`` a request without ``Authorization: Bearer
      <token>`` (scheme in any case) naming an accepted token gets 401
      ``Unauthorized``; :meth:`rotate_token` accepts a new token at once and
      can revoke the old one later. An open watch is not cut when its token
      is revoked (authentication happens per request, as on the real server).

    Not emulated: writes over HTTP (405), authorization (an accepted token
    may read everything; without ``require_token`` the bearer token is
    recorded, never checked), token expiry by time, protobuf/table/aggregated
    discovery content types, ``watch`` on single objects and the legacy
    ``/watch/`` paths, waiting on too-large RVs (answered 504 at once; a
    future watch RV just waits for events), the per-kind whitelist of field
    selector paths (any dotted path is accepted), server-side defaulting
    (only metadata and namespace status/labels are filled in), cascading
    namespace deletion, generation/managedFields, the random default watch
    timeout, a bookmark just before a timeout, the rule that
    ``sendInitialEvents`` needs ``resourceVersionMatch=NotOlderThan``, and
    slow-watcher termination (a watch's queue is unbounded).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "test-token",
        bookmark_interval: float | None = None,
        tls: bool = False,
        require_token: bool = False,
    ) -> None:
        self.host = host
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.tls = tls
        self.require_token = require_token
        self._accepted = {token}
        self._unauthorized: list[str] = []
        self._revocations: list[threading.Timer] = []
        self._certificates: tempfile.TemporaryDirectory[str] | None = None
        self._ca_file: Path | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._port = port
        self._store = _Store()
        self._ctl_lock = threading.RLock()
        self._lock = threading.Lock()
        self._server: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._running = False
        self._down = False
        self._failure: _Failure | None = None
        self._requests: list[RecordedRequest] = []
        self._request_headers: list[dict[str, str]] = []
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -------------------------------------------------------

    def start(self) -> Self:
        """Start listening (on ``port``, or a free one) in a background thread."""
        with self._ctl_lock:
            if not self._running:
                if self.tls and self._ssl_context is None:
                    self._make_tls()
                self._listen()
                self._running = True
                self._down = False
        return self

    def _make_tls(self) -> None:
        self._certificates = tempfile.TemporaryDirectory(prefix="kubeapi-tls-")
        ca_file, cert, key = _make_certificates(Path(self._certificates.name))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._ca_file, self._ssl_context = ca_file, context

    def stop(self) -> None:
        """Stop listening, cut every connection and join every server thread."""
        with self._ctl_lock:
            if not self._running:
                return
            self._running = False
            self._unlisten()
            self._cut_connections()
            with self._lock:
                revocations, self._revocations = self._revocations, []
            for timer in revocations:
                timer.cancel()
        self._join_connection_threads(timeout=5.0)
        if self._certificates is not None:
            self._certificates.cleanup()
            self._certificates = self._ca_file = self._ssl_context = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("KubeAPIServer is not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port``, as in ``serverAddressByClientCIDRs``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    @property
    def ca_file(self) -> Path:
        """With ``tls``: the CA certificate that verifies this server (a pod's ``ca.crt``)."""
        if self._ca_file is None:
            raise RuntimeError("KubeAPIServer serves TLS only with tls=True, once started")
        return self._ca_file

    def write_kubeconfig(
        self, path: str | os.PathLike[str], context: str = "test", namespace: str = "default"
    ) -> str:
        """Write (or merge into) a kubeconfig with a cluster, token user and
        context for this server, make the context current, return the path.

        An existing file is merged into only if it is JSON (as written here),
        so one file can hold contexts for several servers.
        """
        config = _read_json_kubeconfig(path)
        cluster, user = f"{context}-cluster", f"{context}-user"
        cluster_body: Obj = {"server": self.url}
        if self.tls:
            cluster_body["certificate-authority"] = str(self.ca_file)
        _upsert(config["clusters"], cluster, "cluster", cluster_body)
        _upsert(config["users"], user, "user", {"token": self.token})
        context_body = {"cluster": cluster, "user": user, "namespace": namespace}
        _upsert(config["contexts"], context, "context", context_body)
        config["current-context"] = context
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2)
        return os.fspath(path)

    # ---- cluster state ---------------------------------------------------

    def apply(self, obj: Obj) -> Obj:
        """Create or update an object (kind from ``obj["kind"]``; namespaced
        kinds default to namespace "default"); emits ADDED or MODIFIED and
        returns the stored object. uid and creationTimestamp are kept across
        updates; ``metadata.resourceVersion`` in ``obj`` is ignored."""
        return self._store.apply(obj)

    def delete(self, kind: str, namespace: str, name: str) -> Obj:
        """Delete an object (namespace "" for cluster-scoped kinds); emits
        DELETED with the last state at the deletion RV, which is returned.
        Raises KeyError if there is no such object."""
        return self._store.delete(resource_type(kind), namespace, name)

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """The stored object (with kind/apiVersion), or None."""
        return self._store.get(resource_type(kind), namespace, name)

    def get_all(self, kind: str) -> list[Obj]:
        """Every stored object of a kind, in list order, with kind/apiVersion."""
        return self._store.get_all(resource_type(kind))

    @property
    def resource_version(self) -> str:
        """The current (latest) resourceVersion."""
        return str(self._store.rv)

    def compact(self) -> str:
        """Forget history before the current RV (returned): older watch RVs
        get a 410 ERROR event, older continue tokens HTTP 410."""
        return str(self._store.compact())

    # ---- faults ----------------------------------------------------------

    def drop_watches(self, kind: str | None = None) -> int:
        """Abruptly cut open watch connections (no terminating chunk); returns
        how many."""
        return self._store.drop_watches(_optional_type(kind))

    def send_bookmark(self, kind: str | None = None) -> int:
        """Send a BOOKMARK at the current RV to watches that allow bookmarks;
        returns how many got one."""
        return self._store.bookmark(_optional_type(kind))

    def send_error_event(
        self, code: int = 500, *, kind: str | None = None, message: str | None = None
    ) -> int:
        """Send an ERROR event with a Status of ``code`` to open watches, then
        end their streams cleanly (as the API server does); returns how many."""
        text = message or f"injected watch error (code {code})"
        return self._store.end_watches(_optional_type(kind), code, text)

    def set_down(self, down: bool) -> None:
        """Go down: close the listening socket (connections are refused) and
        cut every open connection, watches included. Back up: listen again on
        the same port. The cluster state is kept (and may change meanwhile)."""
        with self._ctl_lock:
            if not self._running:
                raise RuntimeError("KubeAPIServer is not started")
            if down == self._down:
                return
            self._down = down
            if down:
                self._unlisten()
                self._cut_connections()
            else:
                self._listen()

    @property
    def is_down(self) -> bool:
        return self._down

    def set_failing(
        self, status: int | None, *, retry_after: int | None = None, count: int | None = None
    ) -> None:
        """Answer requests with HTTP ``status`` and a Status body until cleared
        with None (or for the next ``count`` requests only). ``retry_after``
        adds a Retry-After header; note that urllib3 (hence the official
        client) then retries 429/503 by itself, sleeping that long."""
        with self._lock:
            self._failure = None if status is None else _Failure(status, retry_after, count)

    # ---- credentials -----------------------------------------------------

    def rotate_token(self, new: str, *, revoke_after: float | None = None) -> str:
        """Accept ``new`` from now on (and write it into kubeconfigs from now on); revoke the
        current token ``revoke_after`` seconds from now (None: never), as a rotated projected
        token stops working when it expires. Returns the token replaced."""
        with self._lock:
            old, self.token = self.token, new
            self._accepted.add(new)
            if revoke_after is not None:
                timer = threading.Timer(revoke_after, self.revoke_token, args=(old,))
                timer.daemon = True
                self._revocations.append(timer)
                timer.start()
        return old

    def revoke_token(self, token: str) -> None:
        """Refuse ``token`` from now on (with ``require_token``)."""
        with self._lock:
            self._accepted.discard(token)

    @property
    def unauthorized(self) -> list[str]:
        """The bearer token of every request refused with 401, oldest first ("" for none)."""
        with self._lock:
            return list(self._unauthorized)

    # ---- observation -----------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """The (lower-cased) headers of each request, parallel to ``requests``."""
        with self._lock:
            return [dict(headers) for headers in self._request_headers]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self._request_headers.clear()

    def open_watches(self, kind: str | None = None) -> int:
        """How many watches (of a kind, or all) are registered. A registered
        watch receives every change applied after it was counted."""
        return self._store.count_watches(_optional_type(kind))

    def wait_for_watches(self, kind: str | None, n: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` watches of ``kind`` (None: any) are open;
        raise TimeoutError otherwise."""
        rtype = _optional_type(kind)
        if not self._store.wait_for_watches(rtype, n, timeout):
            count = self._store.count_watches(rtype)
            raise TimeoutError(f"{count} {kind or 'any'} watches open after {timeout}s, wanted {n}")

    # ---- internals used by the HTTP layer --------------------------------

    def _record(self, request: RecordedRequest, headers: dict[str, str]) -> None:
        with self._lock:
            self._requests.append(request)
            self._request_headers.append(headers)

    def _authenticate(self, authorization: str | None) -> None:
        if not self.require_token:
            return
        scheme, _, token = (authorization or "").partition(" ")
        with self._lock:
            if scheme.lower() == "bearer" and token in self._accepted:
                return
            self._unauthorized.append(token)
        raise ApiError(401, "Unauthorized")

    def _check_failing(self) -> None:
        with self._lock:
            failure = self._failure
            if failure is None:
                return
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failure = None
        headers: dict[str, str] = {}
        details: Obj | None = None
        if failure.retry_after is not None:
            headers["Retry-After"] = str(failure.retry_after)
            details = {"retryAfterSeconds": failure.retry_after}
        message = f"injected failure (HTTP {failure.status})"
        raise ApiError(failure.status, message, details=details, headers=headers)

    def _track(self, sock: socket.socket, thread: threading.Thread) -> None:
        with self._lock:
            self._connections.add(sock)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.discard(sock)

    def _retrack(self, raw: socket.socket, tls: socket.socket) -> None:
        """The connection's socket is now the TLS one wrapped around ``raw``."""
        with self._lock:
            self._connections.discard(raw)
            self._connections.add(tls)

    def _listen(self) -> None:
        """Bind (retrying briefly: a port is reused after ``set_down``) and serve."""
        deadline = time.monotonic() + 5.0
        while True:
            try:
                server = _HTTPServer((self.host, self._port), self)
                break
            except OSError as err:
                if err.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._server = server
        self._port = int(server.server_address[1])
        self._serve_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="kubeapi-accept"
        )
        self._serve_thread.daemon = True
        self._serve_thread.start()

    def _unlisten(self) -> None:
        server, thread = self._server, self._serve_thread
        self._server = self._serve_thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    def _cut_connections(self) -> None:
        self._store.drop_watches(None)
        with self._lock:
            sockets = list(self._connections)
        for sock in sockets:
            _shutdown(sock)

    def _join_connection_threads(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _optional_type(kind: str | None) -> ResourceType | None:
    return None if kind is None else resource_type(kind)


def _read_json_kubeconfig(path: str | os.PathLike[str]) -> Obj:
    empty: Obj = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [],
        "users": [],
        "contexts": [],
    }
    try:
        with open(path, encoding="utf-8") as handle:
            existing = json.load(handle)
    except (OSError, ValueError):
        return empty
    if not isinstance(existing, dict):
        return empty
    for section in ("clusters", "users", "contexts"):
        if not isinstance(existing.get(section), list):
            existing[section] = []
    return cast(Obj, existing)


def _upsert(entries: list[Obj], name: str, field: str, body: Obj) -> None:
    """Replace or append the named entry of a kubeconfig section."""
    entries[:] = [entry for entry in entries if entry.get("name") != name]
    entries.append({"name": name, field: body})
