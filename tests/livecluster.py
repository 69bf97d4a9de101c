"""Helpers for tests that run the real server against the Kubernetes API double."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from zones import convert, model, records
from zones.zone import Zone

Obj = dict[str, Any]


class ServerProcess:
    """``python -m dnsserver serve ...`` on a free loopback port; its log is collected."""

    def __init__(self, args: list[str], *, listen: str = "127.0.0.1:0") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dnsserver", "serve", "--listen", listen, *args],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self.port = self._wait_for_port()
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _wait_for_port(self) -> int:
        assert self.process.stderr is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            self.log.append(line)
            found = re.search(r" on [0-9.]+:(\d+), udp and tcp", line)
            if found:
                return int(found.group(1))
        self.process.kill()
        raise RuntimeError("server did not start:\n" + "".join(self.log))

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def text(self) -> str:
        return "".join(self.log)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self._reader.join(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        assert "Traceback" not in self.text(), self.text()


@contextlib.contextmanager
def server(args: list[str]) -> Iterator[ServerProcess]:
    proc = ServerProcess(args)
    try:
        yield proc
    finally:
        proc.stop()


def query(port: int, name: str, qtype: str = "A", tcp: bool = False) -> dns.message.Message:
    message = dns.message.make_query(name, qtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(message, "127.0.0.1", port=port, timeout=3)


def answer_of(port: int, name: str, qtype: str = "A") -> tuple[str, set[str]]:
    """(rcode text, set of "type rdata" strings in the answer section)."""
    reply = query(port, name, qtype)
    rdata = {
        f"{dns.rdatatype.to_text(rrset.rdtype)} {item.to_text()}"
        for rrset in reply.answer
        for item in rrset
    }
    return dns.rcode.to_text(reply.rcode()), rdata


def eventually(check: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Retry ``check`` until it returns without AssertionError; the last error otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)


def expected_zone(objects: list[Obj], ttl: int = 5) -> Zone:
    """The zone the server should serve for exactly these API objects."""
    zone = Zone(ttl=ttl)
    converted = [convert.to_model(obj) for obj in objects]
    with zone.batch():
        for kind in (model.Namespace, model.Service, model.EndpointSlice, model.Pod):
            zone.reconcile(kind, converted)
    zone.synced = True
    return zone


def expected_answers(zone: Zone) -> dict[tuple[str, str], set[str]]:
    """Every (owner, qtype) with data in ``zone``, and its answer as :func:`answer_of` shows it."""
    wanted: dict[tuple[str, str], set[str]] = {}
    for name, rrsets in zone.records():
        fqdn = name + "."
        if rrsets.a:
            wanted[(fqdn, "A")] = {f"A {ip}" for ip in rrsets.a}
        if rrsets.aaaa:
            wanted[(fqdn, "AAAA")] = {f"AAAA {ip}" for ip in rrsets.aaaa}
        if rrsets.srv:
            wanted[(fqdn, "SRV")] = {f"SRV 0 {s.weight} {s.port} {s.target}." for s in rrsets.srv}
        if rrsets.ptr:
            wanted[(fqdn, "PTR")] = {f"PTR {t}." for t in rrsets.ptr}
        if rrsets.cname:
            wanted[(fqdn, "CNAME")] = {f"CNAME {rrsets.cname}."}
    return wanted


def assert_serves_exactly(port: int, objects: list[Obj], gone: list[str] = ()) -> None:  # type: ignore[assignment]
    """Every record the API's objects imply is served, and every name in ``gone`` is NXDOMAIN."""
    zone = expected_zone(objects)
    for (name, qtype), rdata in expected_answers(zone).items():
        assert answer_of(port, name, qtype) == ("NOERROR", rdata), (name, qtype)
    served = {name for name, _ in zone.records()}
    for name in gone:
        if name.rstrip(".") not in served:
            assert answer_of(port, name)[0] == "NXDOMAIN", name


def kubeconfig(api: Any, tmp: Path) -> Path:
    return Path(api.write_kubeconfig(str(tmp / "kubeconfig")))


__all__ = ["model", "records"]
