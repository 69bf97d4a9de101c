"""``dnsserver resolve``: the printed walk of a pod's libc, exit codes, and usage errors."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EXAMPLE, ROOT

from dnsserver.client import resolve_cli
from dnsserver.client.testing import ClusterDNS

STEP = re.compile(r"^step (?P<number>\d+): (?P<name>\S+)$")
QUERY = re.compile(r"^  #(?P<number>\d+) +(?P<qtype>\S+) +(?P<rcode>\S+) +(?P<answers>\d+) answ")
NODE_DOMAIN = "us-west-2.compute.internal"  # SPEC §3.5's host search domain


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterDNS]:
    with ClusterDNS(EXAMPLE) as running:
        yield running


def resolve(
    capsys: pytest.CaptureFixture[str], cluster: ClusterDNS, *args: str
) -> tuple[int, list[str]]:
    code = resolve_cli.main([*args, "--server", f"{cluster.host}:{cluster.port}"])
    return code, capsys.readouterr().out.splitlines()


def walk(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(step name, ["QTYPE RCODE ANSWERS", ...]) for each printed step."""
    steps: list[tuple[str, list[str]]] = []
    for line in lines:
        if match := STEP.match(line):
            steps.append((match["name"], []))
        elif match := QUERY.match(line):
            steps[-1][1].append(f"{match['qtype']} {match['rcode']} {match['answers']}")
    return steps


def test_external_name_glibc_five_steps(
    capsys: pytest.CaptureFixture[str], cluster: ClusterDNS
) -> None:
    code, lines = resolve(capsys, cluster, "www.example.com", "--search", NODE_DOMAIN)
    refused = ["A REFUSED 0", "AAAA REFUSED 0"] * 2  # set aside, then the second attempt
    assert walk(lines) == [
        ("www.example.com.default.svc.cluster.local.", ["A NXDOMAIN 0", "AAAA NXDOMAIN 0"]),
        ("www.example.com.svc.cluster.local.", ["A NXDOMAIN 0", "AAAA NXDOMAIN 0"]),
        ("www.example.com.cluster.local.", ["A NXDOMAIN 0", "AAAA NXDOMAIN 0"]),
        (f"www.example.com.{NODE_DOMAIN}.", refused),
        ("www.example.com.", refused),
    ]
    assert code == 1
    assert lines[0].startswith(";; glibc stub, search [default.svc.cluster.local "
                               f"svc.cluster.local cluster.local {NODE_DOMAIN}], ndots 5")
    assert ";; www.example.com A+AAAA: 2 dots < ndots 5: the search list first, then the " \
           "name as-is" in lines
    assert ";; 14 queries in 5 steps" in lines
    assert ";; no answer: TRY_AGAIN, last rcode REFUSED" in lines
    assert any(line.startswith(";; hint: 14 queries") for line in lines)


def test_external_name_musl_stops_at_the_refused_node_domain(
    capsys: pytest.CaptureFixture[str], cluster: ClusterDNS
) -> None:
    code, lines = resolve(capsys, cluster, "www.example.com", "--search", NODE_DOMAIN,
                          "--musl", "--timeout", "0.2")
    steps = walk(lines)
    assert [name for name, _ in steps] == [
        "www.example.com.default.svc.cluster.local.", "www.example.com.svc.cluster.local.",
        "www.example.com.cluster.local.", f"www.example.com.{NODE_DOMAIN}."]
    assert steps[3][1] == ["A REFUSED 0", "AAAA REFUSED 0"] * 2  # ignored, re-sent, timed out
    assert "  -> EAI_AGAIN" in lines
    assert ";; no answer: EAI_AGAIN" in lines
    assert code == 1


def test_answer_and_its_records(capsys: pytest.CaptureFixture[str], cluster: ClusterDNS) -> None:
    code, lines = resolve(capsys, cluster, "api.shop")
    assert code == 0
    assert walk(lines) == [
        ("api.shop.default.svc.cluster.local.", ["A NXDOMAIN 0", "AAAA NXDOMAIN 0"]),
        ("api.shop.svc.cluster.local.", ["A NOERROR 1", "AAAA NOERROR 0"]),
    ]
    assert lines[-2:] == [";; answer from api.shop.svc.cluster.local.",
                          "api.shop.svc.cluster.local. 5 IN A 10.96.200.5"]


def test_options(capsys: pytest.CaptureFixture[str], cluster: ClusterDNS) -> None:
    code, lines = resolve(capsys, cluster, "_http._tcp.api", "--namespace", "shop",
                          "--type", "srv", "--tcp")
    assert code == 0
    assert walk(lines) == [("_http._tcp.api.shop.svc.cluster.local.", ["SRV NOERROR 1"])]
    assert "  #1   SRV   NOERROR   1 answer  (tcp)" in lines
    code, lines = resolve(capsys, cluster, "web-0.web", "--ndots", "1", "--type", "A")
    assert [name for name, _ in walk(lines)] == [
        "web-0.web.", "web-0.web.default.svc.cluster.local."]  # 1 dot >= ndots 1: as-is first
    assert code == 0


def test_resolv_conf(
    capsys: pytest.CaptureFixture[str], cluster: ClusterDNS, tmp_path: Path
) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {cluster.host}:{cluster.port}\nsearch shop.svc.cluster.local\n"
                    "options ndots:2\n")
    code = resolve_cli.main(["db", "--resolv-conf", str(conf), "--search", "svc.cluster.local"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].startswith(";; glibc stub, search [shop.svc.cluster.local "
                               "svc.cluster.local], ndots 2")
    assert walk(lines) == [("db.shop.svc.cluster.local.", ["A NOERROR 2", "AAAA NOERROR 1"])]


@pytest.mark.parametrize(("args", "message"), [
    (["x", "--server", "localhost:dns"], "--server 'localhost:dns'"),
    (["x", "--type", "BOGUS"], "--type 'BOGUS'"),
    (["x", "--resolv-conf", "/nonexistent/resolv.conf"], "cannot read /nonexistent"),
    (["x", "--resolv-conf", "/dev/null", "--namespace", "shop"], "drop --namespace"),
    (["a..b"], "not a domain name"),
    (["x", "--attempts", "0"], "attempts must be positive"),
])
def test_usage_errors(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert resolve_cli.main(args) == 2
    assert message in capsys.readouterr().err


def test_module_entry_point(cluster: ClusterDNS) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dnsserver.client.resolve_cli", "web", "--server",
         f"{cluster.host}:{cluster.port}"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "step 1: web.default.svc.cluster.local." in done.stdout
    bad = subprocess.run([sys.executable, "-m", "dnsserver.client.resolve_cli"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode == 2  # argparse: NAME is required
