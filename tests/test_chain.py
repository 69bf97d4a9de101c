"""The plugin chain's contract: CoreDNS's order, composition, and what leaves the fast path."""

from __future__ import annotations

import pytest

from dnsserver.plugins import chain
from zones.names import to_wire


@pytest.mark.parametrize(("name", "zone", "inside"), [
    ("a.cluster.local", "cluster.local", True),
    ("cluster.local", "cluster.local", True),
    ("xcluster.local", "cluster.local", False),  # a suffix, not a label boundary
    ("a.b.example", ".", True),
    ("local", "cluster.local", False),
])
def test_in_zone(name: str, zone: str, inside: bool) -> None:
    assert chain.in_zone(to_wire(name), to_wire(zone)) is inside


GUARD = chain.FastPathGuard([
    chain.Interception(names=frozenset({to_wire("db.shop.svc.cluster.local")})),
    chain.Interception(zones=(to_wire("cluster.local"),), qtypes=frozenset({28})),
    chain.NOTHING,
])


@pytest.mark.parametrize(("name", "qtype", "leaves"), [
    ("db.shop.svc.cluster.local", 1, True),     # an exact name, every type
    ("api.shop.svc.cluster.local", 28, True),   # AAAA in the zone
    ("api.shop.svc.cluster.local", 1, False),   # A stays on the fast path
    ("www.example.org", 28, False),             # outside the zone
])
def test_fast_path_guard(name: str, qtype: int, leaves: bool) -> None:
    assert GUARD(to_wire(name), qtype) is leaves


def test_nothing_intercepted_is_no_guard() -> None:
    assert chain.FastPathGuard([chain.NOTHING, chain.NOTHING]).empty
    assert not GUARD.empty


class _Named:
    def __init__(self, name: str, log: list[str], answer: bytes | None = None) -> None:
        self.name, self.log, self.answer = name, log, answer

    def serve(self, request: chain.Request, next_plugin: chain.Next) -> chain.Reply:
        self.log.append(self.name)
        return self.answer if self.answer is not None else next_plugin(request)

    def interception(self) -> chain.Interception:
        return chain.NOTHING

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def test_plugins_run_in_coredns_order_and_stop_at_an_answer() -> None:
    log: list[str] = []
    plugins = chain.ordered([_Named("hosts", log), _Named("loop", log),
                             _Named("rewrite", log), _Named("template", log, b"answer")])
    assert [p.name for p in plugins] == ["rewrite", "template", "hosts", "loop"]
    run = chain.compose(plugins, lambda request: b"end")
    assert run(None) == b"answer"  # type: ignore[arg-type]
    assert log == ["rewrite", "template"]
