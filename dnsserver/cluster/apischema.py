"""The parts of Kubernetes API JSON that DNS reads, for decoding lists and watch events.

msgspec decodes straight into plain dicts holding only these fields, skipping the rest of each
object (``managedFields``, other annotations, pod specs, ...) without building it. That is
several times faster than ``json.loads`` on real API objects and keeps the relist of a large
cluster from doubling memory. The field paths mirror what :mod:`zones.convert` reads; a page
the schema cannot decode falls back to plain JSON, and :mod:`zones.convert` judges it.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict, cast

import msgspec

from zones.convert import SERVICE_NAME_LABEL, TRIGGER_TIME_ANNOTATION

# Keys with dots and slashes: the functional TypedDict syntax keeps just these two.
Labels = TypedDict("Labels", {"kubernetes.io/service-name": str}, total=False)
Annotations = TypedDict(
    "Annotations", {"endpoints.kubernetes.io/last-change-trigger-time": str}, total=False
)
assert set(Labels.__annotations__) == {SERVICE_NAME_LABEL}
assert set(Annotations.__annotations__) == {TRIGGER_TIME_ANNOTATION}


class Metadata(TypedDict, total=False):
    name: str
    namespace: str
    resourceVersion: str
    deletionTimestamp: str | None
    labels: Labels | None
    annotations: Annotations | None


# "continue" is a Python keyword: the functional syntax again.
ListMeta = TypedDict("ListMeta", {"resourceVersion": str, "continue": str}, total=False)


class Port(TypedDict, total=False):
    name: str | None
    protocol: str | None
    port: int | None


class ServiceSpec(TypedDict, total=False):
    type: str | None
    clusterIP: str | None
    clusterIPs: list[str] | None
    externalName: str | None
    ports: list[Port] | None


class Conditions(TypedDict, total=False):
    ready: bool | None


class Endpoint(TypedDict, total=False):
    addresses: list[str] | None
    conditions: Conditions | None
    hostname: str | None


class PodIP(TypedDict, total=False):
    ip: str


class PodSpec(TypedDict, total=False):
    hostNetwork: bool | None


class PodStatus(TypedDict, total=False):
    phase: str | None
    podIP: str | None
    podIPs: list[PodIP] | None


class _ServiceObject(TypedDict, total=False):
    metadata: Metadata
    spec: ServiceSpec
    code: int
    message: str


class _SliceObject(TypedDict, total=False):
    metadata: Metadata
    addressType: str
    endpoints: list[Endpoint] | None
    ports: list[Port] | None
    code: int
    message: str


class _PodObject(TypedDict, total=False):
    metadata: Metadata
    spec: PodSpec
    status: PodStatus
    code: int
    message: str


class _NamespaceObject(TypedDict, total=False):
    metadata: Metadata
    code: int
    message: str


_OBJECTS: dict[str, Any] = {
    "Service": _ServiceObject,
    "EndpointSlice": _SliceObject,
    "Pod": _PodObject,
    "Namespace": _NamespaceObject,
}


class Decoders:
    """A list-page and a watch-event decoder for one kind."""

    def __init__(self, kind: str) -> None:
        item = _OBJECTS[kind]
        self._page = _decoder({"metadata": ListMeta, "items": list[item] | None})  # type: ignore[valid-type]
        self._event = _decoder({"type": str, "object": item})

    def page(self, data: bytes) -> dict[str, Any]:
        try:
            return cast(dict[str, Any], self._page.decode(data))
        except msgspec.ValidationError:
            return cast(dict[str, Any], json.loads(data))

    def event(self, line: bytes) -> dict[str, Any]:
        try:
            return cast(dict[str, Any], self._event.decode(line))
        except msgspec.ValidationError:
            return cast(dict[str, Any], json.loads(line))


def _decoder(fields: dict[str, Any]) -> msgspec.json.Decoder[Any]:
    shape = TypedDict("Shape", fields, total=False)  # type: ignore[misc]
    return msgspec.json.Decoder(shape)
