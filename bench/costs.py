"""What each kind of query costs, and what the listen address costs: QPS side by side, one run.

    python -m bench.costs                      # ~2.5 min: every row 5 s, one round
    python -m bench.costs --rounds 3 --forms loopback,all,kubeadm,kubeadm-all

Issue #12's two targets, measured as :mod:`bench.qps` measures (our server pinned to CPU 0,
dnsperf pinned to CPU 1, loopback only):

1. **Per query type.** The generated cluster (:mod:`bench.gencluster`, 1,000 Services) plus a
   headless Service ``wide.bench`` with ``--endpoints`` (1,000) ready endpoints. Each row is
   dnsperf asking one query over and over: ClusterIP A first (the yardstick), then every
   type at the headless name (A and SRV are truncated over UDP), then the other kinds of names
   (an endpoint, a named port in both spellings, a pod, a search-path miss, a PTR). The target:
   every row answers at least a third of the ClusterIP A rate.
2. **Per listen address.** The A query of every Service (``bench.qps``'s query file), against
   our server bound to 127.0.0.1 and the same bound to 0.0.0.0 (``--forms``: also kubeadm's
   Corefile, bound to 127.0.0.1 or to every address as deployed). The target: 0.0.0.0 answers
   at least 0.9 of what 127.0.0.1 answers.

Rounds alternate the rows and the forms, and the median round of each counts. Prints two
tables and writes JSON to ``bench/results/costs-<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query

from bench import gencluster, qps

TARGET_PER_TYPE = 1 / 3  # every query at most 3x the cost of a ClusterIP A query
WIDE = "wide.bench.svc.cluster.local"
CLUSTER_IP_A = "kubernetes.default.svc.cluster.local A"


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    query: str  # one dnsperf line: ``name type``
    flags: tuple[str, ...] = ()  # more dnsperf flags (-e: EDNS0)


def rows(endpoints: int) -> list[Row]:
    first_ip = wide_ips(endpoints)[0]
    reverse = ".".join(reversed(first_ip.split("."))) + ".in-addr.arpa"
    return [
        Row("ClusterIP A (kubernetes.default)", CLUSTER_IP_A),
        Row(f"headless A, {endpoints} endpoints, UDP 512 (TC)", f"{WIDE} A"),
        Row("headless A, EDNS0 (TC)", f"{WIDE} A", ("-e",)),
        Row("headless AAAA (NODATA)", f"{WIDE} AAAA"),
        Row("headless SRV (TC)", f"{WIDE} SRV"),
        Row("headless SOA (NODATA)", f"{WIDE} SOA"),
        Row("headless HINFO (NODATA)", f"{WIDE} HINFO"),
        Row("headless CAA (NODATA)", f"{WIDE} CAA"),
        Row("headless ANY (NODATA)", f"{WIDE} ANY"),
        Row("headless TXT (NODATA)", f"{WIDE} TXT"),
        Row("headless MX (NODATA)", f"{WIDE} MX"),
        Row("endpoint A (wide-7.wide...)", f"wide-7.{WIDE} A"),
        Row("port SRV _http._tcp.wide... (TC)", f"_http._tcp.{WIDE} SRV"),
        Row("port SRV http.tcp.wide... (TC)", f"http.tcp.{WIDE} SRV"),
        Row("pod A (a-b-c-d.bench.pod...)", "10-250-0-9.bench.pod.cluster.local A"),
        Row("search-path miss (NXDOMAIN)", "www.example.com.bench.svc.cluster.local A"),
        Row("PTR of an endpoint", f"{reverse} PTR"),
        Row("apex SOA", "cluster.local SOA"),
    ]


def wide_ips(endpoints: int) -> list[str]:
    return [f"10.250.{i // 250}.{i % 250 + 1}" for i in range(endpoints)]


def wide_service(endpoints: int) -> list[dict[str, Any]]:
    """Namespace ``bench`` and headless Service ``wide`` with ``endpoints`` ready endpoints
    (StatefulSet-style hostnames), in slices of 100."""
    ips = wide_ips(endpoints)
    port = {"name": "http", "port": 80, "protocol": "TCP"}
    documents: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "wide", "namespace": "bench"},
         "spec": {"clusterIP": "None", "ports": [port]}},
    ]
    for start in range(0, endpoints, gencluster.SLICE_CAPACITY):
        documents.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"wide-{start // gencluster.SLICE_CAPACITY}",
                         "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": "wide"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": [ip], "hostname": f"wide-{i}", "conditions": {"ready": True}}
                for i, ip in enumerate(ips[start:start + gencluster.SLICE_CAPACITY], start)
            ],
            "ports": [port],
        })
    return documents


@dataclass(slots=True)
class Measured:
    label: str
    rounds: list[qps.RunResult] = field(default_factory=list)

    @property
    def median(self) -> qps.RunResult:
        return sorted(self.rounds, key=lambda r: r.qps)[(len(self.rounds) - 1) // 2]


def run(args: argparse.Namespace) -> dict[str, Any]:
    forms = qps.parse_forms(args.forms)
    if args.rounds < 1 or args.duration <= 0 or args.endpoints < 1:
        raise qps.BenchError("--rounds, --duration and --endpoints must be positive")
    for tool in ("taskset", "dnsperf"):
        if shutil.which(tool) is None:
            raise qps.BenchError(f"{tool} is not installed (Debian packages util-linux, dnsperf)")
    load = qps.Load(args.duration, args.clients, args.outstanding, 1, args.timeout, 0)
    shape = gencluster.Shape(args.services, 0, 0, 0, args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-costs-"))
    try:
        cluster = gencluster.generate(shape)
        gencluster.write(cluster, work / "manifests", style="flow")
        (work / "manifests" / "wide.yaml").write_text(
            "\n---\n".join(json.dumps(d) for d in wide_service(args.endpoints)) + "\n",
            encoding="utf-8")
        table_rows = rows(args.endpoints)
        files = {}
        for i, row in enumerate(table_rows):
            files[row.label] = work / f"row-{i}.txt"
            files[row.label].write_text(row.query + "\n", encoding="ascii")
        all_a = work / "services-a.txt"
        lines = qps.queries(cluster.catalog, {"A": 1.0}, seed=args.seed)
        all_a.write_text("\n".join(lines) + "\n", encoding="ascii")
        _say(f"cluster: {cluster.summary()} + {WIDE} ({args.endpoints} endpoints)")

        per_type = {row.label: Measured(row.label) for row in table_rows}
        per_form = {qps.FORMS[form]: Measured(qps.FORMS[form]) for form in forms}
        with contextlib.ExitStack() as stack:
            servers = qps.start_forms(stack, work, forms, args.server_cpu)
            qps.wait_answering(servers, args.startup_timeout)
            ours = servers[0]
            _check_rows(ours.port, table_rows)
            for server in servers:  # answers are encoded on first use
                qps.dnsperf(server.port, all_a, load, args.client_cpu, passes=1)
            for number in range(1, args.rounds + 1):
                _say(f"round {number}/{args.rounds}: {len(table_rows)} query types, "
                     f"{len(servers)} listen forms, {args.duration:.0f} s each")
                for row in _turn(table_rows, number):
                    per_type[row.label].rounds.append(qps.measure(
                        row.label, ours.process.pid, ours.port, files[row.label], load,
                        args.client_cpu, flags=row.flags))
                    _settle(ours.port, args.settle_timeout)
                for server in _turn(servers, number):
                    per_form[server.name].rounds.append(qps.measure(
                        server.name, server.process.pid, server.port, all_a, load,
                        args.client_cpu))
        return _report(args, load, cluster, table_rows, per_type, per_form)
    finally:
        if args.keep:
            _say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _turn(items: Sequence[Any], number: int) -> list[Any]:
    """Every other round backwards: a slow drift of the machine spreads over all items."""
    return list(items) if number % 2 else list(reversed(items))


def _settle(port: int, timeout: float) -> None:
    """Wait until the server answers at once again: a row it answers slowly leaves queries
    queued in its socket, which the next row would otherwise pay for."""
    deadline = time.monotonic() + timeout
    query = dns.message.make_query(CLUSTER_IP_A.split(maxsplit=1)[0], "A")
    while time.monotonic() < deadline:
        try:
            dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
            return
        except (dns.exception.Timeout, OSError):
            continue
    _say(f"warning: the server still had a backlog {timeout:.0f} s after a row")


def _check_rows(port: int, table_rows: Sequence[Row]) -> None:
    """Each row's query is answered (no SERVFAIL or REFUSED): the rows measure answers."""
    for row in table_rows:
        name, qtype = row.query.split()
        reply = dns.query.udp(dns.message.make_query(name, qtype), "127.0.0.1", port=port,
                              timeout=2)
        if reply.rcode() not in (0, 3):
            raise qps.BenchError(f"{row.query}: rcode {reply.rcode()}")


def _report(args: argparse.Namespace, load: qps.Load, cluster: gencluster.Cluster,
            table_rows: Sequence[Row], per_type: dict[str, Measured],
            per_form: dict[str, Measured]) -> dict[str, Any]:
    base = per_type[table_rows[0].label].median
    types = []
    for row in table_rows:
        result = per_type[row.label].median
        types.append({
            "label": row.label, "query": row.query, "flags": list(row.flags),
            "ratio": result.qps / base.qps if base.qps else 0.0,
            "rounds_qps": [round(r.qps) for r in per_type[row.label].rounds],
            **{k: v for k, v in asdict(result).items() if k != "dnsperf_output"},
        })
    runs = {name: asdict(m.median) for name, m in per_form.items()}
    for run_ in runs.values():
        run_.pop("dnsperf_output")
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": qps._machine(),
        "cluster": cluster.summary(), "endpoints": args.endpoints,
        "dnsperf": {**asdict(load), "server_cpu": args.server_cpu,
                    "client_cpu": args.client_cpu, "rounds": args.rounds},
        "per_type": types,
        "target_per_type": TARGET_PER_TYPE,
        "forms": runs,
        "forms_rounds_qps": {n: [round(r.qps) for r in m.rounds] for n, m in per_form.items()},
        "form_ratios": qps.form_ratios(runs),
        "target_all_addresses": qps.TARGET_ALL_ADDRESSES,
    }


def table(report: dict[str, Any]) -> str:
    # "QPS ratio": the row's rate over ClusterIP A's; "cost ratio": ClusterIP A's server CPU
    # per query over the row's, the same ratio as if the server had its core to itself.
    lines = [f"{'query':46}{'QPS':>10}{'us/query':>10}{'CPU %':>7}{'lost':>9}"
             f"{'QPS ratio':>11}{'cost ratio':>12}"]
    types = report["per_type"]
    base = types[0]["server_cpu_us_per_query"]
    for t in types:
        cost = t["server_cpu_us_per_query"]
        t["cost_ratio"] = base / cost if cost else 0.0
        lines.append(
            f"{t['label']:46}{t['qps']:>10,.0f}{cost:>10.2f}"
            f"{t['server_cpu_percent']:>7.0f}{t['lost']:>9,}{t['ratio']:>11.2f}"
            f"{t['cost_ratio']:>12.2f}"
        )
    for key, what in (("ratio", "QPS"), ("cost_ratio", "cost")):
        worst = min(types, key=lambda t: float(t[key]))
        verdict = "met" if worst[key] >= TARGET_PER_TYPE else "NOT met"
        lines.append(f"lowest {what} ratio: {worst['label']} at {worst[key]:.2f} of ClusterIP A "
                     f"(target >= 1/3: {verdict})")
    lines.append("")
    lines.append(f"{'listen form (A of every Service)':46}{'QPS':>10}{'us/query':>10}"
                 f"{'CPU %':>7}{'lost':>9}")
    for name, r in report["forms"].items():
        lines.append(f"{name:46}{r['qps']:>10,.0f}{r['server_cpu_us_per_query']:>10.2f}"
                     f"{r['server_cpu_percent']:>7.0f}{r['lost']:>9,}")
    for name, ratio in report["form_ratios"].items():
        line = (f"ratio {name}/ours: {ratio['qps']:.3f} (CPU per query, ours/{name}: "
                f"{ratio['cpu_per_query']:.3f})")
        if name == qps.FORMS["all"]:
            met = ratio["qps"] >= qps.TARGET_ALL_ADDRESSES
            line += f"; target >= {qps.TARGET_ALL_ADDRESSES}: {'met' if met else 'NOT met'}"
        lines.append(line)
    load = report["dnsperf"]
    lines.append(f"dnsperf -c {load['clients']} -q {load['outstanding']} -l {load['duration']}"
                 f", median of {load['rounds']} round(s); server on CPU {load['server_cpu']}, "
                 f"dnsperf on CPU {load['client_cpu']}")
    busy = [t["label"] for t in report["per_type"] if t["other_cpu_percent"] > qps.BUSY_PERCENT]
    busy += [n for n, r in report["forms"].items() if r["other_cpu_percent"] > qps.BUSY_PERCENT]
    if busy:
        lines.append(f"warning: other processes took over {qps.BUSY_PERCENT:.0f}% of a core "
                     f"during: {', '.join(busy)}")
    return "\n".join(lines)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def render(path: Path) -> str:
    """The tables of a saved run (``python -m bench.costs --show PATH``)."""
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return table(report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.costs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=1000,
                        help="ready endpoints of the headless Service (1000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--forms", default="loopback,all",
                        help=f"listen forms side by side, of {', '.join(qps.FORMS)} "
                             "(loopback,all)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per row (5)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c (4)")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q (100)")
    parser.add_argument("--timeout", type=float, default=1.0, help="dnsperf -t, seconds (1)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--settle-timeout", type=float, default=60.0,
                        help="seconds to wait after a row for the server's backlog (60)")
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--show", type=Path, metavar="PATH", help="print a saved run's tables")
    args = parser.parse_args(argv)
    if args.show:
        print(render(args.show))
        return 0
    try:
        report = run(args)
    except (qps.BenchError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(table(report))
    path = args.json or qps.RESULTS / f"costs-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    _say(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
