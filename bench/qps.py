"""Queries per second: our server against knotd on the same zone, the same queries, one core each.

    python -m bench.qps                        # 1,000 Services, A queries, 10 s per server
    python -m bench.qps --qtypes mix           # A 60%, AAAA 10%, SRV 20%, NXDOMAIN names 10%
    python -m bench.qps --services 10000 --endpoints 50000 --pods 50000

One run: generate a cluster (:mod:`bench.gencluster`), write its manifests to a temporary
folder, start ``python -m dnsserver serve --manifests DIR`` pinned to CPU 0, wait until it
answers, warm it up with one pass over the query file, and run dnsperf pinned to CPU 1 for
``--duration`` seconds. Then the same for knotd serving the same zone as zone files
(:mod:`bench.zonefile`) with one UDP worker, pinned to CPU 0 too. A sample of the queries is asked
of both servers and the answers compared, so the two really serve the same data. Prints a table
and writes JSON to ``bench/results/``.

The figure of merit is the ratio of our QPS to knotd's (a compiled server with recvmmsg batching
on the same machine, the same core budget, the same load generator); the target is 0.45.
``--forms`` runs our server in more forms side by side: bound to 0.0.0.0 (``all``), and with
kubeadm's Corefile bound to 127.0.0.1 (``kubeadm``) or, as it is deployed, to every address
(``kubeadm-all``, ``.:PORT``); each form's QPS is compared with the bare 127.0.0.1 one.
Both servers' CPU use is read from /proc during the run: a server near 100% of its core is
saturated, so its QPS is its capacity, not the load generator's. When dnsperf's own core is
near 100%, the QPS is the client's limit and the ratio understates the faster server's lead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from bench import gencluster, zonefile
from zones import convert, model

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
ZONE = "cluster.local"
TARGET_RATIO = 0.45
TARGET_ALL_ADDRESSES = 0.9  # bound to every address, against bound to 127.0.0.1
KUBEADM_COREFILE = REPO / "tests" / "data" / "corefiles" / "kubeadm.Corefile"
# --forms: how our server is started -> its name in the tables. ``ours`` (127.0.0.1, flags only)
# is what the other forms are compared with.
FORMS = {
    "loopback": "ours",
    "all": "ours 0.0.0.0",
    "kubeadm": "kubeadm 127.0.0.1",
    "kubeadm-all": "kubeadm .:PORT",
}
PRESETS = {"a": "A", "mix": "A:60,AAAA:10,SRV:20,NX:10"}
QTYPES = ("A", "AAAA", "SRV", "NX")
SAMPLE_QUERIES = 200
BUSY_PERCENT = 20.0  # other processes' CPU during a run beyond which its QPS is not trusted
SATURATED_PERCENT = 85.0  # a server's CPU below which it was not the bottleneck
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Load:
    """The dnsperf settings, the same for both servers."""

    duration: float
    clients: int
    outstanding: int
    threads: int
    timeout: float
    max_qps: int  # 0: as fast as the server answers


@dataclass(slots=True)
class RunResult:
    server: str
    qps: float = 0.0
    sent: int = 0
    completed: int = 0
    lost: int = 0
    lost_percent: float = 0.0
    avg_latency_ms: float = 0.0
    max_latency_ms: float = 0.0
    latency_stddev_ms: float = 0.0
    response_codes: dict[str, int] = field(default_factory=dict)
    server_cpu_percent: float = 0.0
    server_cpu_us_per_query: float = 0.0  # what the server's core spent on each answer
    client_cpu_percent: float = 0.0
    other_cpu_percent: float = 0.0  # everything else on the machine: noise when not ~0
    startup_seconds: float = 0.0
    dnsperf_output: str = ""


class BenchError(Exception):
    """The benchmark cannot go on."""


# -- queries -------------------------------------------------------------------------------


def parse_qtypes(spec: str) -> dict[str, float]:
    """``A`` or ``A:60,AAAA:10,SRV:20,NX:10`` (or a preset: ``a``, ``mix``) -> weights."""
    spec = PRESETS.get(spec.lower(), spec)
    weights: dict[str, float] = {}
    for item in spec.split(","):
        name, _, weight = item.strip().partition(":")
        qtype = name.strip().upper()
        if qtype not in QTYPES:
            raise ValueError(f"--qtypes: {name!r} is not one of {', '.join(QTYPES)}")
        try:
            weights[qtype] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"--qtypes: weight {weight!r} is not a number") from None
    if not weights or sum(weights.values()) <= 0:
        raise ValueError("--qtypes: give at least one query type with a positive weight")
    return weights


def queries(catalog: Sequence[gencluster.ServiceInfo], weights: dict[str, float], *,
            seed: int, mixed_case: bool = False) -> list[str]:
    """dnsperf lines (``name type``), shuffled: every Service once per A-only pass.

    ``SRV`` asks a named port of a Service that has ports (``_<port>._<proto>.<svc>...``).
    ``NX`` names are what a pod's search path makes of an outside or misspelt name
    (``www.example.com.<ns>.svc.<zone>``, ``<typo>.<ns>.svc.<zone>``): NXDOMAIN, asked as A.
    """
    rng = random.Random(seed)
    services = list(catalog)
    if set(weights) == {"A"}:
        lines = [f"{_fqdn(s)} A" for s in services]
    else:
        kinds = list(weights)
        count = max(2000, 2 * len(services))
        draws = rng.choices(kinds, weights=[weights[k] for k in kinds], k=count)
        with_ports = [s for s in services if s.ports] or services  # SRV: Services with ports
        lines = [
            _query(kind, rng.choice(with_ports if kind == "SRV" else services), rng)
            for kind in draws
        ]
    rng.shuffle(lines)
    if mixed_case:
        lines = [_mixed_case(line, rng) for line in lines]
    return lines


def _query(kind: str, svc: gencluster.ServiceInfo, rng: random.Random) -> str:
    if kind == "SRV":
        if svc.ports:
            port, protocol = rng.choice(svc.ports)
            return f"_{port}._{protocol.lower()}.{_fqdn(svc)} SRV"
        return f"{_fqdn(svc)} SRV"
    if kind == "NX":
        if rng.random() < 0.5:
            return f"www.example.com.{svc.namespace}.svc.{ZONE} A"
        return f"{svc.name}x.{svc.namespace}.svc.{ZONE} A"
    return f"{_fqdn(svc)} {kind}"


def _fqdn(svc: gencluster.ServiceInfo) -> str:
    return f"{svc.name}.{svc.namespace}.svc.{ZONE}"


def _mixed_case(line: str, rng: random.Random) -> str:
    name, qtype = line.split(" ")
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name) + " " + qtype


# -- servers -------------------------------------------------------------------------------


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise BenchError("no free port on 127.0.0.1")


def answering(process: subprocess.Popen[bytes], port: int) -> bool:
    """True when the server on ``port`` answers the zone's SOA; raises if it has exited."""
    if process.poll() is not None:
        raise BenchError(f"{process.args!r} exited with {process.returncode} before answering")
    query = dns.message.make_query(ZONE, "SOA")
    try:
        reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
    except (dns.exception.DNSException, OSError):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


@contextlib.contextmanager
def running(argv: list[str], log: Path, *, cwd: Path | None = None
            ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` (stdout/stderr to ``log``); SIGTERM at the end, SIGKILL after 10 s."""
    with log.open("wb") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


def our_server(manifests: Path, port: int, cpu: int, form: str = "loopback",
               work: Path | None = None, upstream: str = "") -> list[str]:
    """The command line of our server in one of :data:`FORMS`; the kubeadm forms write their
    Corefile into ``work`` and forward to ``upstream``."""
    argv = ["taskset", "-c", str(cpu), sys.executable, "-m", "dnsserver", "serve",
            "--manifests", str(manifests), "--log-level", "warning"]
    if form == "loopback":
        return [*argv, "--listen", f"127.0.0.1:{port}"]
    if form == "all":
        return [*argv, "--listen", f"0.0.0.0:{port}"]
    if form not in ("kubeadm", "kubeadm-all") or work is None:
        raise ValueError(f"--forms: {form!r} is not one of {', '.join(FORMS)}")
    corefile = work / f"{form}.Corefile"
    bind = "127.0.0.1" if form == "kubeadm" else None
    corefile.write_text(kubeadm_corefile(port, bind=bind, upstream=upstream), encoding="utf-8")
    return [*argv, "--corefile", str(corefile)]


def kubeadm_corefile(port: int, *, bind: str | None = None, upstream: str = "") -> str:
    """kubeadm's Corefile on ``port`` (every address unless ``bind``), as deployed but for what
    must stay on this machine: health, ready and metrics on free loopback ports, and ``forward``
    to ``upstream`` (the bare server of the run: it refuses names outside the cluster at once,
    as ExternalName targets outside it are chased upstream) instead of /etc/resolv.conf."""
    text = KUBEADM_COREFILE.read_text(encoding="utf-8")
    replacements = {
        ".:53 {\n": f".:{port} {{\n" + (f"    bind {bind}\n" if bind else ""),
        "    health {": f"    health 127.0.0.1:{free_port()} {{",
        "    ready\n": f"    ready 127.0.0.1:{free_port()}\n",
        "prometheus :9153": f"prometheus 127.0.0.1:{free_port()}",
        "forward . /etc/resolv.conf": f"forward . {upstream or f'127.0.0.1:{free_port()}'}",
    }
    for old, new in replacements.items():
        if text.count(old) != 1:
            raise BenchError(f"{KUBEADM_COREFILE}: expected one {old!r}")
        text = text.replace(old, new)
    return text


def knot_config(directory: Path, port: int, zone_files: Sequence[zonefile.ZoneFile]) -> Path:
    """A knotd configuration for ``zone_files``: one UDP worker, loopback, nothing written."""
    directory.mkdir(parents=True, exist_ok=True)
    zones = "\n".join(
        f"  - domain: {z.origin}\n    file: {z.path}" for z in zone_files
    )
    config = directory / "knot.conf"
    config.write_text(f"""\
server:
    rundir: {directory}
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
control:
    listen: {directory}/knot.sock
log:
  - target: stderr
    any: warning
database:
    storage: {directory}
template:
  - id: default
    storage: {directory}
    semantic-checks: off
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
{zones}
""", encoding="ascii")
    return config


# -- measuring -----------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU time spent by all cores on anything but idling, since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / _TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def dnsperf(port: int, query_file: Path, load: Load, cpu: int, *, passes: int = 0,
            flags: Sequence[str] = ()) -> str:
    """Run dnsperf for ``load.duration`` seconds (or ``passes`` times over the file); its output.
    ``flags`` are more dnsperf options (``-e``: EDNS0)."""
    argv = ["taskset", "-c", str(cpu), "dnsperf", "-s", "127.0.0.1", "-p", str(port),
            "-d", str(query_file), "-c", str(load.clients), "-q", str(load.outstanding),
            "-T", str(load.threads), "-t", str(load.timeout), *flags]
    argv += ["-n", str(passes)] if passes else ["-l", str(load.duration)]
    if load.max_qps:
        argv += ["-Q", str(load.max_qps)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = load.duration + load.timeout + 30
    try:
        output, _ = process.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise BenchError(f"dnsperf did not finish within {deadline:.0f} s") from None
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise BenchError(f"dnsperf failed ({process.returncode}):\n{text}")
    return text


def _children_cpu() -> float:
    """CPU time of the children waited for so far (dnsperf: taskset execs it, same process)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_dnsperf(text: str, result: RunResult) -> None:
    def number(pattern: str) -> float:
        found = re.search(pattern, text)
        if found is None:
            raise BenchError(f"unexpected dnsperf output (no {pattern!r}):\n{text}")
        return float(found.group(1))

    result.sent = int(number(r"Queries sent:\s+(\d+)"))
    result.completed = int(number(r"Queries completed:\s+(\d+)"))
    result.lost = int(number(r"Queries lost:\s+(\d+)"))
    result.lost_percent = 100.0 * result.lost / result.sent if result.sent else 0.0
    result.qps = number(r"Queries per second:\s+([\d.]+)")
    if not result.completed:  # no answer at all: dnsperf prints no latencies
        return
    result.avg_latency_ms = 1000 * number(r"Average Latency \(s\):\s+([\d.]+)")
    result.max_latency_ms = 1000 * number(r"Average Latency \(s\):.*max ([\d.]+)")
    result.latency_stddev_ms = 1000 * number(r"Latency StdDev \(s\):\s+([\d.]+)")
    codes = re.search(r"Response codes:\s+(.*)", text)
    if codes:
        for code, count in re.findall(r"([A-Z]+) (\d+)", codes.group(1)):
            result.response_codes[code] = int(count)


def measure(name: str, pid: int, port: int, query_file: Path, load: Load, client_cpu: int,
            *, flags: Sequence[str] = ()) -> RunResult:
    """One timed dnsperf run, with the CPU time of the server, dnsperf and everything else."""
    result = RunResult(name)
    cpu_before, client_before = cpu_seconds(pid), _children_cpu()
    busy_before = machine_busy_seconds()
    started = time.monotonic()
    output = dnsperf(port, query_file, load, client_cpu, flags=flags)
    elapsed = time.monotonic() - started
    server = cpu_seconds(pid) - cpu_before
    client = _children_cpu() - client_before
    busy = machine_busy_seconds() - busy_before
    result.server_cpu_percent = 100 * server / elapsed
    result.client_cpu_percent = 100 * client / elapsed
    result.other_cpu_percent = max(0.0, 100 * (busy - server - client) / elapsed)
    result.dnsperf_output = output
    parse_dnsperf(output, result)
    if result.completed:
        result.server_cpu_us_per_query = 1e6 * server / result.completed
    return result


def sample_answers(port: int, lines: Sequence[str]) -> dict[str, str]:
    """``name type`` -> :func:`describe` of the reply of the server on ``port``."""
    answers = {}
    for line in lines:
        name, qtype = line.split()
        query = dns.message.make_query(name, qtype)
        try:
            reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
        except (dns.exception.DNSException, OSError) as exc:
            answers[line] = f"error: {exc}"
            continue
        answers[line] = describe(reply)
    return answers


def describe(reply: dns.message.Message) -> str:
    """The rcode and the answer records (TTLs included) of a reply, in a comparable form."""
    records = sorted(
        f"{rrset.name} {rrset.ttl} {dns.rdatatype.to_text(rrset.rdtype)} {rdata}".lower()
        for rrset in reply.answer for rdata in rrset
    )
    return f"{dns.rcode.to_text(reply.rcode())} {' | '.join(records)}"


# -- the run -------------------------------------------------------------------------------


@dataclass(slots=True)
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    started: float = field(default_factory=time.monotonic)
    startup: float = 0.0
    rounds: list[RunResult] = field(default_factory=list)


def run(args: argparse.Namespace) -> dict[str, Any]:
    shape = gencluster.Shape(args.services, args.namespaces, args.endpoints, args.pods, args.seed)
    weights = parse_qtypes(args.qtypes)
    forms = parse_forms(args.forms)
    if args.rounds < 1 or args.duration <= 0 or args.clients < 1 or args.outstanding < 1:
        raise BenchError("--rounds, --duration, --clients and --outstanding must be positive")
    load = Load(args.duration, args.clients, args.outstanding, args.threads, args.timeout,
                args.max_qps)
    for tool in ("taskset", "dnsperf") + (() if args.skip_knot else ("knotd",)):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (Debian packages util-linux, dnsperf, knot)")
    if (os.cpu_count() or 1) < 2 or args.server_cpu == args.client_cpu:
        _say("warning: the servers and dnsperf share a core; the figures are not comparable")

    work = Path(tempfile.mkdtemp(prefix="bench-qps-"))
    try:
        started = time.monotonic()
        cluster = gencluster.generate(shape)
        gencluster.write(cluster, work / "manifests", style="flow")
        lines = queries(cluster.catalog, weights, seed=args.seed, mixed_case=args.mixed_case)
        query_file = work / "queries.txt"
        query_file.write_text("\n".join(lines) + "\n", encoding="ascii")
        sample = random.Random(args.seed).sample(lines, min(SAMPLE_QUERIES, len(lines)))
        _say(f"cluster: {cluster.summary()} ({time.monotonic() - started:.1f} s); "
             f"{len(lines)} queries ({args.qtypes})")
        with contextlib.ExitStack() as stack:
            servers = _start_servers(args, stack, cluster, work, forms)
            answers = {}
            for server in servers:
                # One pass over the queries first: our answers are encoded on first use.
                dnsperf(server.port, query_file, load, args.client_cpu, passes=1)
                if server.name in ("ours", "knotd"):
                    answers[server.name] = sample_answers(server.port, sample)
            # Both servers are up (the idle one costs nothing); alternating rounds spread
            # whatever else the machine does over both.
            for round_number in range(1, args.rounds + 1):
                for server in servers:
                    _say(f"round {round_number}/{args.rounds}: {server.name}, "
                         f"{args.duration:.0f} s of dnsperf")
                    result = measure(server.name, server.process.pid, server.port, query_file,
                                     load, args.client_cpu)
                    result.startup_seconds = server.startup
                    server.rounds.append(result)
        report: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": _machine(),
            "cluster": {**asdict(shape.resolved()), "summary": cluster.summary()},
            "queries": {"qtypes": weights, "lines": len(lines), "mixed_case": args.mixed_case},
            "dnsperf": {**asdict(load), "server_cpu": args.server_cpu,
                        "client_cpu": args.client_cpu, "rounds": args.rounds},
            "runs": {s.name: asdict(_median(s.rounds)) for s in servers},
            "rounds_qps": {s.name: [round(r.qps) for r in s.rounds] for s in servers},
            "target_ratio": TARGET_RATIO,
        }
        report["forms"] = form_ratios(report["runs"])
        if len(answers) == 2:
            report["answers"] = _compare(answers["ours"], answers["knotd"])
        runs = report["runs"]
        if "ours" in runs and "knotd" in runs and runs["knotd"]["qps"]:
            report["ratio"] = runs["ours"]["qps"] / runs["knotd"]["qps"]
            if runs["ours"]["server_cpu_us_per_query"]:
                report["ratio_per_cpu"] = (
                    runs["knotd"]["server_cpu_us_per_query"]
                    / runs["ours"]["server_cpu_us_per_query"]
                )
        return report
    finally:
        if args.keep:
            _say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def parse_forms(spec: str) -> list[str]:
    """``loopback,all,kubeadm-all`` -> the forms, ``loopback`` first (the others' yardstick)."""
    forms = [f.strip().lower() for f in spec.split(",") if f.strip()]
    unknown = [f for f in forms if f not in FORMS]
    if unknown or not forms:
        raise ValueError(f"--forms: give some of {', '.join(FORMS)} (not {', '.join(unknown)})")
    return ["loopback", *[f for f in dict.fromkeys(forms) if f != "loopback"]]


def form_ratios(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each of our other forms against the bare 127.0.0.1 one: QPS and CPU-per-query ratios."""
    base = runs.get(FORMS["loopback"])
    ratios = {}
    for name, run in runs.items():
        if name in (FORMS["loopback"], "knotd") or not base or not base["qps"]:
            continue
        per_query = run["server_cpu_us_per_query"]
        ratios[name] = {
            "qps": run["qps"] / base["qps"],
            "cpu_per_query": base["server_cpu_us_per_query"] / per_query if per_query else 0.0,
        }
    return ratios


def start_ours(stack: contextlib.ExitStack, work: Path, form: str, cpu: int,
               upstream: str = "") -> Server:
    """Our server in ``form`` on a free port, pinned to ``cpu``; not yet answering."""
    port = free_port()
    argv = our_server(work / "manifests", port, cpu, form, work, upstream)
    log = work / f"{form}.log"
    return Server(FORMS[form], stack.enter_context(running(argv, log, cwd=REPO)), port)


def start_forms(stack: contextlib.ExitStack, work: Path, forms: Sequence[str], cpu: int
                ) -> list[Server]:
    """Our server in each of ``forms`` (``loopback`` first): the kubeadm forms forward to it."""
    servers = [start_ours(stack, work, forms[0], cpu)]
    upstream = f"127.0.0.1:{servers[0].port}"
    return servers + [start_ours(stack, work, form, cpu, upstream) for form in forms[1:]]


def wait_answering(servers: Sequence[Server], timeout: float) -> None:
    waiting = list(servers)
    while waiting:
        for server in list(waiting):
            if answering(server.process, server.port):
                server.startup = time.monotonic() - server.started
                waiting.remove(server)
                _say(f"{server.name}: answering {server.startup:.1f} s after start")
            elif time.monotonic() - server.started > timeout:
                raise BenchError(f"{server.name}: no answer within {timeout:.0f} s")
        time.sleep(0.05)


def _start_servers(args: argparse.Namespace, stack: contextlib.ExitStack,
                   cluster: gencluster.Cluster, work: Path, forms: Sequence[str]) -> list[Server]:
    """Start ours (in each form) and knotd, all pinned to ``--server-cpu``; return once all
    answer."""
    servers = []
    if not args.skip_ours:
        servers += start_forms(stack, work, forms, args.server_cpu)
    zone_files = _zone_files(cluster, work, reverse=not args.no_reverse)  # while ours loads
    if not args.skip_knot:
        port = free_port()
        config = knot_config(work / "knot", port, zone_files)
        argv = ["taskset", "-c", str(args.server_cpu), "knotd", "-c", str(config)]
        servers.append(Server("knotd", stack.enter_context(
            running(argv, work / "knot.log")), port))
    wait_answering(servers, args.startup_timeout)
    return servers


def _median(rounds: list[RunResult]) -> RunResult:
    """The round with the median QPS (the lower middle one of an even count)."""
    return sorted(rounds, key=lambda r: r.qps)[(len(rounds) - 1) // 2]


def _zone_files(cluster: gencluster.Cluster, work: Path, *, reverse: bool
                ) -> list[zonefile.ZoneFile]:
    # The converter the loader uses, on the generated dicts: the same objects as
    # manifests.load(DIR) (every Service has its clusterIP, every namespace is listed),
    # without parsing the YAML again.
    objects: list[model.ClusterObject] = [convert.to_model(d) for d in cluster.documents()]
    zone = zonefile.build_zone(objects)
    return zonefile.write(zone, work / "zones", reverse=reverse)


def _compare(ours: dict[str, str], knot: dict[str, str]) -> dict[str, Any]:
    differ = [
        {"query": q, "ours": ours[q], "knotd": knot.get(q, "")}
        for q in ours if ours[q] != knot.get(q)
    ]
    return {"compared": len(ours), "different": len(differ), "examples": differ[:5]}


def _machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
        "knotd": _version(["knotd", "--version"]), "dnsperf": _version(["dnsperf", "-h"]),
    }


def _version(argv: list[str]) -> str:
    try:
        output = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    found = re.search(r"[Vv]ersion\s+(\S+)", output.stdout + output.stderr)
    return found.group(1).rstrip(")") if found else ""


def table(report: dict[str, Any]) -> str:
    runs = report["runs"]
    rows = [
        ("QPS", "{qps:,.0f}"),
        ("avg latency (ms)", "{avg_latency_ms:.3f}"),
        ("max latency (ms)", "{max_latency_ms:.1f}"),
        ("queries sent", "{sent:,}"),
        ("lost", "{lost:,} ({lost_percent:.2f}%)"),
        ("server CPU (% of core)", "{server_cpu_percent:.0f}"),
        ("server CPU per query (us)", "{server_cpu_us_per_query:.2f}"),
        ("dnsperf CPU (% of core)", "{client_cpu_percent:.0f}"),
        ("other CPU (% of a core)", "{other_cpu_percent:.0f}"),
        ("start-up (s)", "{startup_seconds:.1f}"),
    ]
    names = list(runs)
    lines = [f"{'':26}" + "".join(f"{n:>16}" for n in names)]
    for label, template in rows:
        lines.append(f"{label:26}" + "".join(f"{template.format(**runs[n]):>16}" for n in names))
    for n in names:
        codes = ", ".join(f"{k} {v:,}" for k, v in runs[n]["response_codes"].items())
        lines.append(f"{n + ' rcodes':26}{codes:>16}")
    load = report["dnsperf"]
    lines.append(
        f"dnsperf -c {load['clients']} -q {load['outstanding']} -T {load['threads']} "
        f"-t {load['timeout']} -l {load['duration']}"
        + (f" -Q {load['max_qps']}" if load["max_qps"] else "")
        + f"; server on CPU {load['server_cpu']}, dnsperf on CPU {load['client_cpu']}"
    )
    if "answers" in report:
        a = report["answers"]
        lines.append(f"answers compared: {a['compared']}, different: {a['different']}")
        lines.extend(f"  {e['query']}: ours {e['ours']!r} knotd {e['knotd']!r}"
                     for e in a["examples"])
    for n in names:
        run = runs[n]
        if run["other_cpu_percent"] > BUSY_PERCENT:
            lines.append(f"warning: other processes used {run['other_cpu_percent']:.0f}% of a "
                         f"core during the {n} run: its QPS is disturbed (CPU per query less so)")
        elif run["server_cpu_percent"] < SATURATED_PERCENT:
            lines.append(f"note: {n} used {run['server_cpu_percent']:.0f}% of its core: not "
                         "saturated, its QPS is the load generator's limit, not the server's")
    if "ratio" in report:
        ratio = report["ratio"]
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        lines.append(f"ratio ours/knotd: {ratio:.3f} (target >= {TARGET_RATIO}: {verdict})")
    if "ratio_per_cpu" in report:
        lines.append(f"ratio of CPU per query, knotd/ours: {report['ratio_per_cpu']:.3f} "
                     "(the ratio if both servers had a full core to themselves)")
    for name, ratio in report.get("forms", {}).items():
        line = (f"ratio {name}/ours: {ratio['qps']:.3f} (CPU per query, ours/{name}: "
                f"{ratio['cpu_per_query']:.3f})")
        if name == FORMS["all"]:
            verdict = "met" if ratio["qps"] >= TARGET_ALL_ADDRESSES else "NOT met"
            line += f"; target >= {TARGET_ALL_ADDRESSES}: {verdict}"
        lines.append(line)
    return "\n".join(lines)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.qps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cluster = parser.add_argument_group("cluster (bench.gencluster)")
    cluster.add_argument("--services", type=int, default=1000)
    cluster.add_argument("--namespaces", type=int, default=0, help="default: Services / 25")
    cluster.add_argument("--endpoints", type=int, default=0, help="default: 5 per Service")
    cluster.add_argument("--pods", type=int, default=0)
    cluster.add_argument("--seed", type=int, default=1)
    queries_group = parser.add_argument_group("queries")
    queries_group.add_argument("--qtypes", default="A",
                               help="A (default), mix, or weights like A:60,AAAA:10,SRV:20,NX:10")
    queries_group.add_argument("--mixed-case", action="store_true",
                               help="randomise the case of query names (0x20)")
    perf = parser.add_argument_group("load (dnsperf)")
    perf.add_argument("--duration", type=float, default=10.0, help="seconds per server (10)")
    perf.add_argument("--clients", type=int, default=4, help="dnsperf -c (4)")
    perf.add_argument("--outstanding", type=int, default=100, help="dnsperf -q (100)")
    perf.add_argument("--threads", type=int, default=1, help="dnsperf -T (1)")
    perf.add_argument("--timeout", type=float, default=1.0, help="dnsperf -t, seconds (1)")
    perf.add_argument("--max-qps", type=int, default=0, help="dnsperf -Q (0: unlimited)")
    perf.add_argument("--server-cpu", type=int, default=0)
    perf.add_argument("--client-cpu", type=int, default=1)
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--rounds", type=int, default=1,
                           help="alternate ours/knotd this many times; the median counts (1)")
    run_group.add_argument("--skip-ours", action="store_true")
    run_group.add_argument("--forms", default="loopback",
                           help="our server's forms, side by side: loopback (127.0.0.1, always), "
                                "all (0.0.0.0), kubeadm (its Corefile, bind 127.0.0.1), "
                                "kubeadm-all (its Corefile as deployed, every address)")
    run_group.add_argument("--skip-knot", action="store_true")
    run_group.add_argument("--no-reverse", action="store_true",
                           help="knotd without the in-addr.arpa and ip6.arpa zones")
    run_group.add_argument("--startup-timeout", type=float, default=600.0,
                           help="seconds to wait for a server to answer (600)")
    run_group.add_argument("--json", type=Path, metavar="PATH",
                           help="write the results here (default bench/results/qps-<time>.json)")
    run_group.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    try:
        report = run(args)
    except (BenchError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(table(report))
    path = args.json or RESULTS / f"qps-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    _say(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
