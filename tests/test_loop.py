"""``loop``: the start-up probe finds a forwarding loop and stops the server (CoreDNS's
plugin/loop), and passes quietly when the upstream answers."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from livecluster import ServerProcess, answer_of, eventually
from upstream import FakeUpstream

from dnsserver.config import corefile
from dnsserver.plugins.loop import LoopOptions, probe_name

EXAMPLE = Path(__file__).resolve().parent.parent / "dnsserver" / "example" / "cluster.yaml"
SOA = "example. 60 IN SOA ns.example. admin.example. 1 7200 1800 86400 30"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port: int = udp.getsockname()[1]
    return port


def _corefile(path: Path, port: int, upstream: str) -> Path:
    path.write_text(f".:{port} {{\n  bind 127.0.0.1\n  kubernetes cluster.local\n  loop\n"
                    f"  forward . {upstream}\n}}\n")
    return path


def test_probe_names_are_two_random_numbers_in_the_zone() -> None:
    assert re.fullmatch(r"\d+\.\d+", probe_name("."))
    assert re.fullmatch(r"\d+\.\d+\.cluster\.local", probe_name("cluster.local"))
    assert probe_name(".") != probe_name(".")


@pytest.mark.parametrize(("text", "message"), [
    ("loop now", "Corefile:3: loop: expected no arguments, got 1"),
    ("loop {\n    probe 3\n  }", "Corefile:4: loop: unknown option 'probe'"),
])
def test_loop_takes_nothing(text: str, message: str) -> None:
    with pytest.raises(corefile.CorefileError) as caught:
        corefile.parse(f".:53 {{\n  kubernetes cluster.local\n  {text}\n}}\n")
    assert str(caught.value) == message


def test_loop_is_once_per_block() -> None:
    with pytest.raises(corefile.Conflict):
        corefile.parse(".:53 {\n  kubernetes cluster.local\n  loop\n  loop\n}\n")
    assert corefile.parse(".:53 {\n  kubernetes cluster.local\n  loop\n}\n").chain == (
        LoopOptions("."),)


def test_an_answering_upstream_sees_one_probe_and_serving_goes_on(tmp_path: Path) -> None:
    with FakeUpstream(["www.example. 60 IN A 192.0.2.1"], soa=SOA) as upstream:
        port = _free_port()
        corefile_path = _corefile(tmp_path / "Corefile", port, upstream.address)
        proc = ServerProcess(["--corefile", str(corefile_path), "--manifests", str(EXAMPLE)],
                             listen=f"127.0.0.1:{port}")
        try:
            eventually(lambda: _one_probe(upstream.log))
            assert answer_of(proc.port, "www.example") == ("NOERROR", {"A 192.0.2.1"})
            assert proc.process.poll() is None
        finally:
            proc.stop()


def _one_probe(log: list[tuple[str, str, str]]) -> None:
    probes = [(transport, name) for transport, name, qtype in log if qtype == "HINFO"]
    assert len(probes) == 1 and probes[0][0] == "udp", log
    assert re.fullmatch(r"\d+\.\d+\.", probes[0][1]), probes


def test_two_servers_forwarding_to_each_other_stop_with_status_1(tmp_path: Path) -> None:
    """B forwards to A's port and A to B. While A is not there yet, a stand-in on A's port
    answers B's probe (so B's loop stands down); then A starts, and its probe goes A → B → A
    → B → A: the third sighting stops A with status 1, as CoreDNS's log.Fatal does."""
    port_a, port_b = _free_port(), _free_port()
    with FakeUpstream(soa=SOA, port=port_a) as stand_in:
        b = ServerProcess(["--corefile", str(_corefile(tmp_path / "B", port_b,
                                                       f"127.0.0.1:{port_a}")),
                           "--manifests", str(EXAMPLE)], listen=f"127.0.0.1:{port_b}")
        eventually(lambda: _one_probe(stand_in.log))
    try:
        a = subprocess.run(
            [sys.executable, "-m", "dnsserver", "serve", "--listen", f"127.0.0.1:{port_a}",
             "--corefile", str(_corefile(tmp_path / "A", port_a, f"127.0.0.1:{port_b}")),
             "--manifests", str(EXAMPLE)],
            capture_output=True, text=True, timeout=60, check=False)
        assert a.returncode == 1, a.stderr
        expected = (rf"Loop \(127\.0\.0\.1 -> 127\.0\.0\.1:{port_a}\) detected for zone '\.': "
                    r"query 'HINFO \d+\.\d+\.' came back to this server 2 times")
        assert re.search(expected, a.stderr), a.stderr
        assert b.process.poll() is None  # B's probe was answered: it goes on serving
    finally:
        b.stop()
