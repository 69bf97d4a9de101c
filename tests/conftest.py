"""The real server as a subprocess, and real DNS clients for it.

``dns_server`` is a factory: ``dns_server(manifests, *flags)`` starts
``python -m dnsserver serve --manifests <manifests> --listen 127.0.0.1:0 <flags>`` (or the
``--listen`` flags given), waits for its "serving ..." log line, and returns a
:class:`RunningServer` that knows the port it picked. Servers are shared by the whole session:
asking twice for the same manifests and flags returns the same process. Every test fails if a
server printed a traceback while the test ran; at the end every server gets SIGTERM (then
SIGKILL after 5 s) and must exit cleanly.

The helpers that turn replies into comparable text (:func:`section_lines`) live here too, so
every test module compares answers the same way.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "dnsserver" / "example" / "cluster.yaml"
QUERY_TIMEOUT = 2.0
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
SERVING = re.compile(r"serving (?P<zone>\S+) \(.*\) from .* on (?P<where>.+), udp and tcp")
ADDRESS = re.compile(r"^\[?(?P<host>[^\]]+?)\]?:(?P<port>\d+)$")


def server_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dnsserver", *args]


@dataclass
class RunningServer:
    """One ``dnsserver serve`` process and the addresses it listens on."""

    command: list[str]
    process: subprocess.Popen[bytes]
    started_at: float
    output: list[str] = field(default_factory=list)  # stderr lines, as they come
    addresses: list[tuple[str, int]] = field(default_factory=list)
    _checked_lines: int = 0
    _partial: bytes = b""

    @property
    def host(self) -> str:
        return self.addresses[0][0]

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    # -- queries ---------------------------------------------------------------------------

    def query(
        self,
        qname: str,
        rdtype: str | int,
        *,
        tcp: bool = False,
        rdclass: str | int = "IN",
        address: tuple[str, int] | None = None,
        **make_query: object,
    ) -> dns.message.Message:
        """Ask one question with dnspython; ``make_query`` goes to ``dns.message.make_query``."""
        message = dns.message.make_query(qname, rdtype, rdclass, **make_query)  # type: ignore[arg-type]
        return self.exchange(message, tcp=tcp, address=address)

    def exchange(
        self,
        message: dns.message.Message,
        *,
        tcp: bool = False,
        address: tuple[str, int] | None = None,
    ) -> dns.message.Message:
        """Send ``message`` over UDP or TCP; every RR of the reply is its own RRset."""
        host, port = address or self.addresses[0]
        if tcp:
            return dns.query.tcp(message, host, timeout=QUERY_TIMEOUT, port=port,
                                 one_rr_per_rrset=True)
        return dns.query.udp(message, host, timeout=QUERY_TIMEOUT, port=port,
                             one_rr_per_rrset=True)

    def udp_socket(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.settimeout(QUERY_TIMEOUT)
        sock.connect((self.host, self.port))
        return sock

    def tcp_socket(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=QUERY_TIMEOUT)
        sock.settimeout(QUERY_TIMEOUT)
        return sock

    # -- process ---------------------------------------------------------------------------

    def new_tracebacks(self) -> list[str]:
        """Tracebacks printed since the last call (so each test sees only its own).

        The server writes a log line before it sends the reply that a test waits for, so
        reading what the pipe holds right now is enough: no sleeping, no thread.
        """
        self.read_output()
        lines = self.output[self._checked_lines:]
        self._checked_lines += len(lines)
        return [line for line in lines if "Traceback" in line]

    def read_output(self) -> None:
        """Move what stderr holds now into :attr:`output` (the pipe is non-blocking)."""
        stream = self.process.stderr
        if stream is None or stream.closed:
            return
        while True:
            try:
                chunk = os.read(stream.fileno(), 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._partial += chunk
        *lines, self._partial = self._partial.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            self.output.append(line)
            match = SERVING.search(line)
            if match and not self.addresses:
                self.addresses.extend(_parse_addresses(match["where"]))

    def wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self.read_output()
            if self.addresses:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{' '.join(self.command)} did not start serving "
                    f"(exit code {self.process.returncode}):\n" + "\n".join(self.output)
                )
            time.sleep(0.02)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 5 s; the exit code. Collects the last output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.read_output()
        if self._partial:
            self.output.append(self._partial.decode("utf-8", "replace"))
            self._partial = b""
        if self.process.stderr is not None:
            self.process.stderr.close()
        return self.process.returncode


def _parse_addresses(where: str) -> list[tuple[str, int]]:
    addresses = []
    for text in where.split(", "):
        match = ADDRESS.match(text.strip())
        assert match, f"cannot read a listen address from {text!r}"
        addresses.append((match["host"], int(match["port"])))
    return addresses


def start_server(manifests: Path, *flags: str) -> RunningServer:
    """Start a server and wait until it serves; the caller stops it."""
    listen = [] if "--listen" in flags else ["--listen", "127.0.0.1:0"]
    command = server_command("serve", "--manifests", str(manifests), *listen, *flags)
    process = subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    os.set_blocking(process.stderr.fileno(), False)
    server = RunningServer(command, process, time.time())
    server.wait_serving()
    return server


StartServer = Callable[..., RunningServer]


@pytest.fixture(scope="session")
def _servers() -> Iterator[dict[tuple[str, ...], RunningServer]]:
    servers: dict[tuple[str, ...], RunningServer] = {}
    yield servers
    problems = []
    for server in servers.values():
        unreported = server.new_tracebacks()  # those printed during a test failed that test
        code = server.stop()
        unreported += server.new_tracebacks()
        if code != 0 or unreported:
            problems.append(
                f"{' '.join(server.command)} exited with {code}:\n" + "\n".join(server.output)
            )
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def dns_server(_servers: dict[tuple[str, ...], RunningServer]) -> StartServer:
    """``dns_server(manifests=EXAMPLE, *flags)``: a running server, shared by the session."""

    failed: dict[tuple[str, ...], str] = {}

    def start(manifests: Path = EXAMPLE, *flags: str) -> RunningServer:
        key = (str(manifests), *flags)
        if key in failed:  # do not pay the start-up timeout once per test
            pytest.fail(failed[key], pytrace=False)
        if key not in _servers:
            try:
                _servers[key] = start_server(manifests, *flags)
            except RuntimeError as exc:
                failed[key] = str(exc)
                raise
        server = _servers[key]
        assert server.process.poll() is None, "\n".join(server.output)
        return server

    return start


@pytest.fixture(scope="session")
def example(dns_server: StartServer) -> RunningServer:
    """The bundled example cluster with default flags."""
    return dns_server(EXAMPLE)


@pytest.fixture(autouse=True)
def _no_server_tracebacks(
    _servers: dict[tuple[str, ...], RunningServer],
) -> Iterator[None]:
    yield
    for server in _servers.values():
        tracebacks = server.new_tracebacks()
        if tracebacks:
            pytest.fail(
                "the server printed a traceback:\n" + "\n".join(server.output[-40:]),
                pytrace=False,
            )


CliRunner = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="session")
def run_cli() -> CliRunner:
    """Run ``python -m dnsserver ARGS`` to its end; a server that keeps serving is a failure."""

    def run(*args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                server_command(*args), cwd=ROOT, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"dnsserver {' '.join(args)} did not exit (it serves?): {exc.stderr!r}")

    return run


# -- comparing replies ---------------------------------------------------------------------

SERIAL = "SERIAL"


def rr_lines(rrsets: Sequence[dns.rrset.RRset], *, keep_owner_case: bool = False) -> list[str]:
    """One ``owner ttl class type rdata`` line per record, sorted; SOA serials are ``SERIAL``.

    Everything is lower-cased (DNS compares names case-insensitively) except, with
    ``keep_owner_case``, the owner names: the answer must echo the query's spelling.
    """
    lines = []
    for rrset in rrsets:
        owner = rrset.name.to_text()
        for rdata in rrset:
            text = rdata.to_text()
            if rrset.rdtype != dns.rdatatype.TXT:  # TXT strings are data, not names
                text = text.lower()
            if rrset.rdtype == dns.rdatatype.SOA:
                fields = text.split()
                fields[2] = SERIAL
                text = " ".join(fields)
            rdclass = dns.rdataclass.to_text(rrset.rdclass)
            rdtype = dns.rdatatype.to_text(rrset.rdtype)
            owner_text = owner if keep_owner_case else owner.lower()
            lines.append(f"{owner_text} {rrset.ttl} {rdclass} {rdtype} {text}")
    return sorted(lines)


def soa_serials(rrsets: Sequence[dns.rrset.RRset]) -> list[int]:
    return [rdata.serial for rrset in rrsets if rrset.rdtype == dns.rdatatype.SOA
            for rdata in rrset]


def is_set(message: dns.message.Message, flag: dns.flags.Flag) -> bool:
    return bool(message.flags & flag)


def read_exact(sock: socket.socket, count: int) -> bytes:
    """Exactly ``count`` bytes from a TCP socket (ConnectionError if it closes first)."""
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {count} bytes")
        data += chunk
    return data


def read_reply(sock: socket.socket) -> dns.message.Message:
    """One length-prefixed DNS message from a TCP socket."""
    (length,) = struct.unpack(">H", read_exact(sock, 2))
    return dns.message.from_wire(read_exact(sock, length))


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the server closes (or resets) the connection within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
