"""Churn against the Kubernetes API double while its watches break, then check convergence.

    python -m bench.soak                                   # 10,000 changes, 1,000 faults
    python -m bench.soak --changes 50000 --seconds 1800 --seed 3

The server (``python -m dnsserver serve --kubeconfig ... --watch-backoff 0.05``) follows a
:class:`kubeapi.KubeAPIServer` on loopback. :class:`Churn` creates, modifies and deletes
Services (ClusterIP, headless, ExternalName) and EndpointSlices at random (seeded), flaps a
namespace now and then, and breaks the server's watches: every ``drop_every`` changes it cuts
them mid-stream (``drop_watches``), every ``gone_every`` it cuts them and compacts the history
right after a change, so the server's next watch gets 410 Gone and must list again. At the end
every name the API's objects imply must be served exactly, and every name that existed and
was deleted must be NXDOMAIN (:func:`livecluster.assert_serves_exactly`). The server's RSS is
read after its first sync and at the end.

``tests/test_churn.py`` runs a short version of this in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
for _path in (REPO, TESTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import livecluster  # noqa: E402
from kubeapi import KubeAPIServer  # noqa: E402

Obj = dict[str, Any]
ZONE = "cluster.local"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def namespace(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


@dataclass
class Stats:
    applied: int = 0  # creates, modifications and deletions made through the API
    drops: int = 0  # drop_watches() calls that cut at least one watch
    watches_cut: int = 0
    gones: int = 0  # compactions right after a change, with the watches cut
    failures: int = 0  # requests answered HTTP 500
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Churn:
    """Random (seeded) changes to Services and EndpointSlices through the API double."""

    def __init__(self, api: KubeAPIServer, seed: int, *, namespaces: int = 4,
                 max_services: int = 160) -> None:
        self.api = api
        self.rng = random.Random(seed)
        self.namespaces = [f"churn-{i}" for i in range(namespaces)]
        self.max_services = max_services
        self.services: dict[tuple[str, str], Obj] = {}
        self.slices: dict[tuple[str, str], Obj] = {}
        self.gone: set[str] = set()  # names that were served at some point and may be gone
        self.stats = Stats()
        self._next_ip = 0
        self._next_pod = 0
        self._serial = 0

    # -- set-up ----------------------------------------------------------------------------

    def populate(self, services: int) -> None:
        """Namespaces, then ``services`` Services with their slices (not counted as churn)."""
        for name in ["default", *self.namespaces]:
            self.api.apply(namespace(name))
        for _ in range(services):
            self._create_service()
        self.stats = Stats()

    # -- one change ----------------------------------------------------------------------------

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.01:
            self._flap_namespace()
        elif roll < 0.18 or not self.services:
            if len(self.services) < self.max_services:
                self._create_service()
            else:
                self._delete_service()
        elif roll < 0.38:
            self._modify_service()
        elif roll < 0.50:
            self._delete_service()
        elif roll < 0.90:
            self._put_slice()
        else:
            self._delete_slice()

    def _create_service(self) -> None:
        ns = self.rng.choice(self.namespaces)
        self._serial += 1
        name = f"s{self._serial}"
        kind = self.rng.choices(("cluster", "headless", "external"), (6, 3, 1))[0]
        self._apply_service(ns, name, kind)
        for index in range(self.rng.choice((0, 1, 1, 2))):
            self._put_slice(ns, name, f"{name}-{index}")

    def _modify_service(self) -> None:
        ns, name = self.rng.choice(sorted(self.services))
        kind = self.rng.choices(("same", "cluster", "headless", "external"), (6, 2, 2, 1))[0]
        if kind == "same":
            kind = _kind_of(self.services[(ns, name)])
        self._apply_service(ns, name, kind)

    def _apply_service(self, ns: str, name: str, kind: str) -> None:
        ports = [{"name": p, "port": 80 + i, "protocol": "TCP"}
                 for i, p in enumerate(self.rng.sample(("http", "grpc", "metrics"),
                                                       self.rng.randint(1, 2)))]
        spec: Obj
        if kind == "external":
            spec = {"type": "ExternalName",
                    "externalName": f"x{self.rng.randint(0, 9)}.example.com"}
        elif kind == "headless":
            spec = {"clusterIP": "None", "clusterIPs": ["None"], "ports": ports,
                    "selector": {"app": name}}
        else:
            ip = self._ip("10.100")
            spec = {"clusterIP": ip, "clusterIPs": [ip], "ports": ports, "selector": {"app": name}}
        obj = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": ns}, "spec": spec}
        self.api.apply(obj)
        self.services[(ns, name)] = obj
        self.gone.add(f"{name}.{ns}.svc.{ZONE}")
        self.stats.applied += 1

    def _delete_service(self) -> None:
        if not self.services:
            return
        ns, name = self.rng.choice(sorted(self.services))
        self.api.delete("Service", ns, name)
        del self.services[(ns, name)]
        self.stats.applied += 1
        if self.rng.random() < 0.7:  # usually its slices go too (garbage collection)
            for key in [k for k, s in self.slices.items()
                        if k[0] == ns and s["metadata"]["labels"][SERVICE_NAME_LABEL] == name]:
                self.api.delete("EndpointSlice", *key)
                del self.slices[key]
                self.stats.applied += 1

    def _put_slice(self, ns: str | None = None, service: str | None = None,
                   name: str | None = None) -> None:
        if ns is None or service is None or name is None:
            if self.slices and self.rng.random() < 0.6:
                ns, name = self.rng.choice(sorted(self.slices))
                service = self.slices[(ns, name)]["metadata"]["labels"][SERVICE_NAME_LABEL]
            elif self.services:
                ns, service = self.rng.choice(sorted(self.services))
                name = f"{service}-{self.rng.randint(0, 1)}"
            else:
                return
        endpoints = []
        # At most 2 slices of 3 endpoints a Service: its SRV answer fits in 512 bytes, so the
        # UDP checks of assert_serves_exactly see every record.
        for _ in range(self.rng.choice((0, 1, 2, 3))):
            endpoint: Obj = {"addresses": [self._ip("10.244")],
                             "conditions": {"ready": self.rng.random() < 0.85}}
            if self.rng.random() < 0.5:
                self._next_pod += 1
                endpoint["hostname"] = f"p{self._next_pod}"
                self.gone.add(f"p{self._next_pod}.{service}.{ns}.svc.{ZONE}")
            endpoints.append(endpoint)
        obj = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": name, "namespace": ns,
                            "labels": {SERVICE_NAME_LABEL: service}},
               "addressType": "IPv4", "endpoints": endpoints,
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
        self.api.apply(obj)
        self.slices[(ns, name)] = obj
        self.stats.applied += 1

    def _delete_slice(self) -> None:
        if not self.slices:
            return
        key = self.rng.choice(sorted(self.slices))
        self.api.delete("EndpointSlice", *key)
        del self.slices[key]
        self.stats.applied += 1

    def _flap_namespace(self) -> None:
        """A namespace disappears (its objects stay in the API, as without cascading) or
        comes back."""
        ns = self.rng.choice(self.namespaces)
        if self.api.get("Namespace", "", ns) is None:
            self.api.apply(namespace(ns))
        else:
            self.api.delete("Namespace", "", ns)
        self.stats.applied += 1

    def _ip(self, prefix: str) -> str:
        self._next_ip += 1
        return f"{prefix}.{self._next_ip // 250 % 250}.{self._next_ip % 250 + 1}"

    # -- faults ------------------------------------------------------------------------------

    def drop(self) -> None:
        cut = self.api.drop_watches()
        self.stats.watches_cut += cut
        if cut:
            self.stats.drops += 1

    def gone_410(self) -> None:
        """Expire the server's resourceVersion, one of three ways in turn: cut the watches,
        change something and compact at once (the next watch gets 410 Gone); compact and send
        a 410 ERROR event down the open watches; or compact and cut the watches while the API
        answers the next requests with HTTP 500 (back-off, then 410, then a list)."""
        way = self.stats.gones % 3
        if way == 0:
            self.drop()
            self.step()
            self.api.compact()
        elif way == 1:
            self.step()
            self.api.compact()
            self.api.send_error_event(410, message="too old resource version")
        else:
            self.api.set_failing(500, count=4)
            self.drop()
            self.step()
            self.api.compact()
            self.stats.failures += 4
        self.stats.gones += 1

    # -- a run ---------------------------------------------------------------------------------

    def run(self, changes: int, *, drop_every: int, gone_every: int, seconds: float,
            pace: float = 0.0, between: Callable[[], None] | None = None) -> Stats:
        """``changes`` more changes (or until ``seconds``) with a watch drop every
        ``drop_every`` and a 410 every ``gone_every`` (0: none). After each fault, wait
        (briefly) for the Service and EndpointSlice watches to be back, so that the next fault
        cuts live streams."""
        deadline = time.monotonic() + seconds
        start = self.stats.applied
        if not start:
            self.stats.started = time.monotonic()
        next_drop = start + drop_every
        next_gone = start + gone_every if gone_every else sys.maxsize
        while self.stats.applied < start + changes and time.monotonic() < deadline:
            self.step()
            count = self.stats.applied
            if count >= next_gone:
                next_gone += gone_every
                next_drop = count + drop_every
                self.gone_410()
                self._wait_for_watches()
            elif count >= next_drop:
                next_drop += drop_every
                self.drop()
                self._wait_for_watches()
            if between is not None:
                between()
            if pace:
                time.sleep(pace)
        return self.stats

    def _wait_for_watches(self) -> None:
        for kind in ("Service", "EndpointSlice"):
            # backing off: the next fault may cut fewer streams; the count says so
            with contextlib.suppress(TimeoutError):
                self.api.wait_for_watches(kind, 1, timeout=2.0)

    def objects(self) -> list[Obj]:
        return [obj for kind in ("Namespace", "Service", "EndpointSlice")
                for obj in self.api.get_all(kind)]


def _kind_of(service: Obj) -> str:
    spec = service["spec"]
    if spec.get("type") == "ExternalName":
        return "external"
    return "headless" if spec.get("clusterIP") == "None" else "cluster"


# -- the server ------------------------------------------------------------------------------


def server_args(kubeconfig: Path) -> list[str]:
    """Follow the API double with a short back-off; no HTTP endpoints (they would take fixed
    ports on every address) and no lame duck (stopping takes no 5 s)."""
    return ["--kubeconfig", str(kubeconfig), "--watch-backoff", "0.05", "--health", "none",
            "--ready", "none", "--metrics", "none", "--lameduck", "0"]


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(found.group(1)) / 1024 if found else float("nan")


def wait_synced(port: int, churn: Churn, timeout: float = 30.0) -> None:
    """Until the server serves what the API holds now."""
    livecluster.eventually(
        lambda: livecluster.assert_serves_exactly(port, churn.objects()), timeout=timeout
    )


def converge(port: int, churn: Churn, timeout: float) -> float:
    """Seconds until every name is served exactly as the API's objects imply (raises
    AssertionError with the first difference after ``timeout``)."""
    started = time.monotonic()
    objects = churn.objects()
    gone = sorted(churn.gone)
    livecluster.eventually(
        lambda: livecluster.assert_serves_exactly(port, objects, gone), timeout=timeout,
        interval=0.2,
    )
    return time.monotonic() - started


def relists(log: str) -> int:
    return log.count("expired; listing again")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--drop-every", type=int, default=10)
    parser.add_argument("--gone-every", type=int, default=100)
    parser.add_argument("--services", type=int, default=120, help="Services before the churn")
    parser.add_argument("--seconds", type=float, default=900.0, help="time limit of the churn")
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between changes")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    with KubeAPIServer() as api, tempfile.TemporaryDirectory() as tmp:
        churn = Churn(api, args.seed)
        churn.populate(args.services)
        command = server_args(livecluster.kubeconfig(api, Path(tmp)))
        with livecluster.server(command) as proc:
            wait_synced(proc.port, churn)
            pid = proc.process.pid
            rss_start = rss_mb(pid)
            print(f"synced: {len(churn.services)} services, {len(churn.slices)} slices; "
                  f"RSS {rss_start:.1f} MB", flush=True)
            last = [time.monotonic()]

            def progress() -> None:
                if time.monotonic() - last[0] > 10:
                    last[0] = time.monotonic()
                    s = churn.stats
                    print(f"  {s.applied:,} changes, {s.drops:,} drops, {s.gones:,} 410s, "
                          f"{s.elapsed:.0f} s, RSS {rss_mb(pid):.1f} MB", flush=True)

            stats = churn.run(args.changes, drop_every=args.drop_every,
                              gone_every=args.gone_every, seconds=args.seconds, pace=args.pace,
                              between=progress)
            churned = stats.elapsed
            try:
                took = converge(proc.port, churn, timeout=60.0)
                result = f"converged {took:.1f} s after the last change"
                ok = True
            except AssertionError as exc:
                result = f"DID NOT CONVERGE within 60 s: {exc}"
                ok = False
            rss_end = rss_mb(pid)
            log = proc.text()
        print(f"{stats.applied:,} changes applied in {churned:.1f} s "
              f"({stats.applied / churned:,.0f}/s); {stats.drops:,} watch drops "
              f"({stats.watches_cut:,} streams cut), {stats.gones:,} compactions "
              f"({relists(log)} relists after 410); final zone: {len(churn.services)} services, "
              f"{len(churn.slices)} slices, {len(churn.gone):,} names checked gone or served")
        print(f"RSS after the first sync {rss_start:.1f} MB, at the end {rss_end:.1f} MB "
              f"({rss_end - rss_start:+.1f} MB)")
        print(result)
        print(f"server log: {len(log.splitlines())} lines, "
              f"{log.count('Traceback')} tracebacks, "
              f"{log.count('lost the Kubernetes API')} 'lost the Kubernetes API'")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
