"""A few real ``dig`` runs against the example cluster: what people type when they debug."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import RunningServer

DIG = shutil.which("dig")
pytestmark = pytest.mark.skipif(DIG is None, reason="dig is not installed")


def dig(server: RunningServer, *args: str) -> str:
    assert DIG is not None
    result = subprocess.run(
        [DIG, f"@{server.host}", "-p", str(server.port), "+time=2", "+tries=1", *args],
        capture_output=True, text=True, timeout=10, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def short(server: RunningServer, *args: str) -> list[str]:
    return sorted(line for line in dig(server, "+short", *args).splitlines() if line)


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_headless_a(example: RunningServer, transport: str) -> None:
    assert short(example, transport, "web.default.svc.cluster.local") == [
        "10.244.1.10", "10.244.2.11"]


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_srv(example: RunningServer, transport: str) -> None:
    assert short(example, transport, "_http._tcp.web.default.svc.cluster.local", "SRV") == [
        "0 50 8080 web-0.web.default.svc.cluster.local.",
        "0 50 8080 web-1.web.default.svc.cluster.local.",
    ]


@pytest.mark.parametrize(("ip", "name"), [
    ("10.96.0.1", "kubernetes.default.svc.cluster.local."),
    ("10.244.1.10", "web-0.web.default.svc.cluster.local."),
    ("fd00:10:96::a1", "frontend.default.svc.cluster.local."),
])
def test_reverse(example: RunningServer, ip: str, name: str) -> None:
    assert short(example, "-x", ip) == [name]
    assert short(example, "+tcp", "-x", ip) == [name]


def test_external_name_cname(example: RunningServer) -> None:
    assert short(example, "search.shop.svc.cluster.local", "CNAME") == ["search.example.com."]


def test_nxdomain_status_and_flags(example: RunningServer) -> None:
    out = dig(example, "nope.default.svc.cluster.local", "A")
    assert "status: NXDOMAIN" in out
    flags = re.search(r";; flags: ([a-z ]+);", out)
    assert flags is not None
    assert flags[1].split() == ["qr", "aa", "rd"]
    assert re.search(r"^cluster\.local\.\s+5\s+IN\s+SOA\s+ns\.dns\.cluster\.local\. "
                     r"hostmaster\.cluster\.local\. \d+ 7200 1800 86400 5$", out, re.MULTILINE)


def test_dual_stack(example: RunningServer) -> None:
    assert short(example, "frontend.default.svc.cluster.local", "A") == ["10.96.100.1"]
    assert short(example, "frontend.default.svc.cluster.local", "AAAA") == ["fd00:10:96::a1"]
