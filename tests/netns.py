"""Network namespaces for tests that need real clients at real addresses (root only).

A :class:`Lab` is a context manager that owns everything it makes and removes it on the way
out, whatever happened inside (an assertion, an exception, Ctrl-C):

- namespaces (``ip netns add dnst<pid>-<label>``, ``lo`` up), with ``/etc/netns/<name>/``
  files such as ``resolv.conf`` and ``nsswitch.conf`` (``ip netns exec`` bind-mounts each
  one over ``/etc/<file>`` inside, for every command started afterwards);
- veth pairs from a "server" namespace to a "pod" namespace, where the pod side is ``eth0``
  with the pod's address and the server side a point-to-point link with a host route (the
  server's own addresses sit on its ``lo``), so no bridge module is needed;
- processes started inside (our server, see :meth:`Lab.start_server`): SIGTERM, then SIGKILL;
- :class:`QueryLog` packet sockets that record every DNS query a namespace receives.

Nothing is created in the initial namespace: veth pairs are made inside the server namespace
and their peers moved straight into the pod's; no namespace has a default route. Names carry
the test process's pid so that concurrent runs never collide, and :func:`remove_stale` (called
by every new :class:`Lab`) removes what a killed run (SIGKILL, no ``finally``) left behind.

:func:`netns_available` tries all of that once and says why it cannot work (not root, no
``ip``, a sandbox that forbids namespaces...), for ``pytest.skip``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.message
import dns.rdatatype
from conftest import ROOT, RunningServer, server_command

PREFIX = "dnst"
RUN_NETNS = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
ETH_P_IP = 0x0800
PACKET_HOST = 0  # AF_PACKET pkttype: addressed to this host (not our own outgoing copy)
COMMAND_TIMEOUT = 20.0

_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: a forked child only calls into it
_available: str | bool | None = False  # False: not probed yet


class NetnsError(RuntimeError):
    """A command that sets up or tears down a namespace failed."""


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = COMMAND_TIMEOUT,
         input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False,
        input=input_text, stdin=None if input_text is not None else subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    if check and result.returncode != 0:
        raise NetnsError(
            f"{' '.join(argv)} exited with {result.returncode}: {result.stderr.strip()}"
        )
    return result


def netns_available() -> str | None:
    """None when this process can build namespaces and veth pairs; else the reason why not.

    Probed once per process with the real thing: a namespace pair, a veth between them, an
    address, ``ip netns exec`` and a packet socket inside.
    """
    global _available  # noqa: PLW0603
    if _available is False:
        _available = _probe()
    assert _available is None or isinstance(_available, str)
    return _available


def _probe() -> str | None:
    if not hasattr(os, "geteuid") or not Path("/proc/self/ns/net").exists():
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return f"network namespaces need root (ip netns add), this is uid {os.geteuid()}"
    if shutil.which("ip") is None:
        return "no `ip` command (Debian package iproute2)"
    try:
        with Lab() as lab:
            a, b = lab.namespace("pa"), lab.namespace("pb")
            lab.connect(a, b, "10.123.255.2/24", server_addresses=["10.123.255.1"])
            b.run("true", check=True)
            QueryLog(lab, a).close()
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot build network namespaces here: {exc}"
    return None


# -- namespaces ----------------------------------------------------------------------------


@dataclass
class Namespace:
    """One named network namespace (``ip netns``)."""

    name: str

    @property
    def etc(self) -> Path:
        return ETC_NETNS / self.name

    def exec_argv(self, *argv: str) -> list[str]:
        """``argv`` run inside this namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = False, timeout: float = COMMAND_TIMEOUT,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside to its end; stdout and stderr as text."""
        return _run(self.exec_argv(*argv), check=check, timeout=timeout, input_text=input_text)

    def ip(self, *args: str) -> None:
        """``ip -n <name> ARGS``, which must succeed."""
        _run(["ip", "-n", self.name, *args])

    def write_etc(self, filename: str, text: str) -> Path:
        """``/etc/netns/<name>/<filename>``: ``/etc/<filename>`` for commands started after."""
        self.etc.mkdir(parents=True, exist_ok=True)
        path = self.etc / filename
        path.write_text(text, encoding="utf-8")
        return path

    def resolv_conf(self, nameservers: Sequence[str], search: Sequence[str] = (),
                    options: Sequence[str] = ()) -> str:
        """Write this namespace's ``/etc/resolv.conf``; return the text."""
        lines = [f"nameserver {ns}" for ns in nameservers]
        if search:
            lines.append("search " + " ".join(search))
        if options:
            lines.append("options " + " ".join(options))
        text = "\n".join(lines) + "\n"
        self.write_etc("resolv.conf", text)
        return text

    def pod_resolv_conf(self, nameserver: str, namespace: str, zone: str = "cluster.local",
                        options: Sequence[str] = ("ndots:5",)) -> str:
        """What kubelet writes for ``dnsPolicy: ClusterFirst`` on a node without search
        domains (SPEC §3.1)."""
        search = [f"{namespace}.svc.{zone}", f"svc.{zone}", zone]
        return self.resolv_conf([nameserver], search, options)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(name: str) -> int | None:
    """The pid in ``dnst<pid>-...``, or None for a name that is not ours."""
    if not name.startswith(PREFIX):
        return None
    digits = name[len(PREFIX):].split("-", 1)[0]
    return int(digits) if digits.isdigit() else None


def remove_stale() -> list[str]:
    """Remove namespaces and ``/etc/netns`` folders left by test processes that are gone."""
    removed = []
    for folder in (RUN_NETNS, ETC_NETNS):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            pid = _owner_pid(entry.name)
            if pid is None or _alive(pid):
                continue
            if folder == RUN_NETNS:
                _delete_namespace(Namespace(entry.name), check=False)
            else:
                shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


# -- capturing queries ---------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One DNS query seen on the wire (UDP, IPv4)."""

    source: str
    destination: str
    qname: str  # lower case, with the trailing dot
    qtype: str

    def __str__(self) -> str:
        return f"{self.source} -> {self.destination} {self.qname} {self.qtype}"


def _socket_in(namespace: Namespace, family: int, kind: int, proto: int) -> socket.socket:
    """A socket that lives in ``namespace`` (setns there and back on this thread)."""
    with open("/proc/thread-self/ns/net", "rb") as home, \
            open(RUN_NETNS / namespace.name, "rb") as target:
        if _LIBC.setns(target.fileno(), CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns({namespace.name}): {os.strerror(code)}")
        try:
            return socket.socket(family, kind, proto)
        finally:
            if _LIBC.setns(home.fileno(), CLONE_NEWNET) != 0:  # never stay in the namespace
                code = ctypes.get_errno()
                os.write(2, f"setns back failed: {os.strerror(code)}\n".encode())
                os._exit(70)


class QueryLog:
    """Every UDP/IPv4 DNS query that reaches ``namespace`` (any interface), as it came in.

    A packet socket sees packets before the IP stack does, so once a client has its answers
    (or has given up), every query it sent is already queued here: :meth:`take` needs no
    sleeping beyond a short grace for the last packets.
    """

    def __init__(self, lab: Lab, namespace: Namespace, port: int = 53) -> None:
        self.port = port
        self.sock = _socket_in(namespace, socket.AF_PACKET, socket.SOCK_DGRAM,
                               socket.htons(ETH_P_IP))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setblocking(False)
        lab.on_close(self.close)

    def take(self, grace: float = 0.05) -> list[Query]:
        """The queries received since the last call, in arrival order."""
        queries: list[Query] = []
        while True:
            ready, _, _ = select.select([self.sock], [], [], grace)
            if not ready:
                return queries
            try:
                packet, address = self.sock.recvfrom(65535)
            except BlockingIOError:
                continue
            if address[2] != PACKET_HOST:
                continue
            query = _parse_query(packet, self.port)
            if query is not None:
                queries.append(query)

    def close(self) -> None:
        self.sock.close()


def _parse_query(packet: bytes, port: int) -> Query | None:
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return None
    header = (packet[0] & 15) * 4
    _, destination_port = struct.unpack("!HH", packet[header:header + 4])
    if destination_port != port:
        return None
    try:
        message = dns.message.from_wire(packet[header + 8:])
    except dns.exception.DNSException:
        return None
    if not message.question:
        return None
    question = message.question[0]
    return Query(
        source=socket.inet_ntoa(packet[12:16]), destination=socket.inet_ntoa(packet[16:20]),
        qname=question.name.to_text().lower(), qtype=dns.rdatatype.to_text(question.rdtype),
    )


# -- the lab -------------------------------------------------------------------------------


@dataclass
class Lab:
    """Namespaces, links and processes for one test (or module); all removed on exit."""

    namespaces: list[Namespace] = field(default_factory=list)
    servers: list[RunningServer] = field(default_factory=list)
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _links: int = 0

    def __enter__(self) -> Lab:
        remove_stale()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def on_close(self, action: Callable[[], None]) -> None:
        """Call ``action()`` on :meth:`close`, before the namespaces go (last in, first out)."""
        self._closers.append(action)

    def namespace(self, label: str) -> Namespace:
        """A new namespace ``dnst<pid>-<label>`` with ``lo`` up and nothing else."""
        ns = Namespace(f"{PREFIX}{os.getpid()}-{label}")
        _run(["ip", "netns", "add", ns.name])
        self.namespaces.append(ns)  # from here on close() removes it
        ns.ip("link", "set", "lo", "up")
        return ns

    def connect(self, server: Namespace, pod: Namespace, pod_address: str,
                server_addresses: Sequence[str] = ()) -> str:
        """A veth from ``server`` to ``pod``: the pod gets ``eth0`` with ``pod_address``
        (``10.123.0.2/24``: the prefix is on-link, so every server address in it is reached
        directly); the server gets ``server_addresses`` on its ``lo`` (once each) and a host
        route to the pod. Returns the server side's interface name."""
        self._links += 1
        outer = f"veth{self._links}"
        server.ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", pod.name)
        pod.ip("addr", "add", pod_address, "dev", "eth0")
        pod.ip("link", "set", "eth0", "up")
        server.ip("link", "set", outer, "up")
        for address in server_addresses:
            existing = _run(["ip", "-n", server.name, "-4", "-o", "addr", "show", "dev", "lo"])
            if f" {address}/" not in existing.stdout:
                server.ip("addr", "add", f"{address}/32", "dev", "lo")
        host = str(ipaddress.ip_interface(pod_address).ip)
        server.ip("route", "add", f"{host}/32", "dev", outer)
        return outer

    def start_server(self, namespace: Namespace, manifests: Path, *flags: str,
                     listen: Sequence[str] = ("0.0.0.0:53",)) -> RunningServer:
        """``python -m dnsserver serve --manifests M --listen L... FLAGS`` inside
        ``namespace``, once it logs that it serves; stopped by :meth:`close`."""
        listens = [arg for address in listen for arg in ("--listen", address)]
        command = namespace.exec_argv(
            *server_command("serve", "--manifests", str(manifests), *listens, *flags)
        )
        process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - one prctl call, no lock taken
        )
        assert process.stderr is not None
        os.set_blocking(process.stderr.fileno(), False)
        server = RunningServer(command, process, time.time())
        self.servers.append(server)  # stopped on close() even if it never serves
        server.wait_serving()
        return server

    def close(self) -> None:
        """Stop servers, run the closers, delete namespaces and their ``/etc/netns`` folders.

        Every step runs even when an earlier one fails; the first failure is raised last.
        """
        errors: list[BaseException] = []
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception as exc:
                errors.append(exc)
        self.servers.clear()
        while self._closers:
            action = self._closers.pop()
            try:
                action()
            except Exception as exc:
                errors.append(exc)
        for ns in reversed(self.namespaces):
            try:
                _delete_namespace(ns)
            except Exception as exc:
                errors.append(exc)
        self.namespaces.clear()
        with contextlib.suppress(OSError):  # /etc/netns itself, when no one else uses it
            ETC_NETNS.rmdir()
        if errors:
            raise errors[0]


def _delete_namespace(ns: Namespace, check: bool = True) -> None:
    """Kill what still runs inside (only what a test started there), then delete the
    namespace and its ``/etc/netns`` folder."""
    pids = _run(["ip", "netns", "pids", ns.name], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    shutil.rmtree(ns.etc, ignore_errors=True)
    result = _run(["ip", "netns", "del", ns.name], check=False)
    if check and result.returncode != 0 and (RUN_NETNS / ns.name).exists():
        raise NetnsError(f"ip netns del {ns.name}: {result.stderr.strip()}")


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, even by SIGKILL (the
    setting survives ``ip netns exec``'s exec of the server)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

