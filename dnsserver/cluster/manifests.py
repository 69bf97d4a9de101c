"""Kubernetes manifests on disk: the cluster of the offline mode.

Reads a file or a folder of multi-document YAML or JSON (what ``kubectl get ... -o yaml``
prints, ``kind: List`` included). Kinds DNS does not use (Deployments, ConfigMaps, ...) are
skipped, so an application's own manifest folder works as it is. Anything that would break an
answer is an error naming the file and the document: nothing is served half-understood.

Two things a real API server would have filled in are filled in here, so that hand-written
manifests resolve: a Service without ``clusterIP`` gets a stable address from the default
Service range, and every namespace an object uses exists.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

try:  # libyaml's loader: ~10x faster on a 10,000-Service folder; same safe subset
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader  # type: ignore[assignment]

from zones import convert, model

SUFFIXES = (".yaml", ".yml", ".json")
SERVICE_RANGE = ipaddress.ip_network("10.96.0.0/12")
RESERVED_IPS = frozenset({"10.96.0.1", "10.96.0.10"})  # kubernetes.default and kube-dns


class ManifestError(Exception):
    """A manifest cannot be served."""


@dataclass(frozen=True, slots=True)
class Document:
    source: str  # "path, document N" (and "item M" inside a List)
    obj: dict[str, Any]


def load(path: Path) -> list[model.ClusterObject]:
    """Every DNS-relevant object under ``path``, namespaces included; raises ManifestError."""
    documents = [doc for file in _files(path) for doc in _documents(file)]
    documents = [doc for doc in documents if doc.obj.get("kind") in convert.KINDS]
    _allocate_cluster_ips(documents)
    objects: dict[tuple[str, str, str], model.ClusterObject] = {}
    for doc in documents:
        try:
            obj = convert.to_model(doc.obj)
        except convert.ConversionError as exc:
            raise ManifestError(f"{doc.source}: {_describe(doc.obj)}: {exc}") from None
        objects[(type(obj).__name__, *obj.key)] = obj
    namespaces = {obj.namespace for obj in objects.values() if not isinstance(obj, model.Namespace)}
    for namespace in namespaces:
        objects.setdefault(("Namespace", "", namespace), model.Namespace(namespace))
    return list(objects.values())


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        if not files:
            raise ManifestError(f"{path}: no .yaml, .yml or .json files in this folder")
        return files
    raise ManifestError(f"{path}: no such file or folder")


def _documents(file: Path) -> Iterator[Document]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{file}: cannot read: {exc}") from None
    number = 0
    try:
        for number, doc in enumerate(yaml.load_all(text, Loader=SafeLoader), start=1):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ManifestError(f"{file}, document {number}: not a Kubernetes object")
            yield from _expand(doc, f"{file}, document {number}")
    except yaml.YAMLError as exc:
        raise ManifestError(f"{file}, document {number + 1}: invalid YAML: {exc}") from None


def _expand(doc: dict[str, Any], source: str) -> Iterator[Document]:
    kind = doc.get("kind")
    if not isinstance(kind, str):
        raise ManifestError(f"{source}: no kind")
    if kind != "List" and not kind.endswith("List"):
        yield Document(source, doc)
        return
    items = doc.get("items")
    if not isinstance(items, list):
        raise ManifestError(f"{source}: {kind} without an items list")
    item_kind = kind.removesuffix("List")
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise ManifestError(f"{source}, item {number}: not a Kubernetes object")
        typed = {"kind": item_kind, **item} if item_kind else item  # typed lists omit kind
        yield from _expand(typed, f"{source}, item {number}")


def _describe(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    name = meta.get("name", "?")
    namespace = meta.get("namespace", "default")
    if obj.get("kind") == "Namespace":
        return f"Namespace {name}"
    return f"{obj.get('kind')} {namespace}/{name}"


def _allocate_cluster_ips(documents: list[Document]) -> None:
    """Give Services without a clusterIP a stable address, as the API server would."""
    services = [d.obj for d in documents if d.obj.get("kind") == "Service"]
    taken = set(RESERVED_IPS)
    waiting = []
    for svc in services:
        spec = svc.get("spec")
        if not isinstance(spec, dict):
            continue
        ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
        if spec.get("type") == "ExternalName" or any(ips):
            taken.update(str(ip) for ip in ips if ip)
        else:
            waiting.append(svc)
    for svc in sorted(waiting, key=_describe):
        ip = free_service_ip(_describe(svc), taken)
        taken.add(ip)
        svc["spec"] = {**svc["spec"], "clusterIP": ip, "clusterIPs": [ip]}


def free_service_ip(seed: str, taken: set[str]) -> str:
    """A Service IP in :data:`SERVICE_RANGE` not in ``taken``, the same one for the same
    ``seed`` (a Service's name) while the range has room."""
    size = SERVICE_RANGE.num_addresses
    start = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % size
    for step in range(size):
        offset = (start + step) % size
        candidate = str(SERVICE_RANGE.network_address + offset)
        if 0 < offset < size - 1 and candidate not in taken:
            return candidate
    raise ManifestError("the Service range 10.96.0.0/12 is full")
