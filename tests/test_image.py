"""The image, built by podman from the Dockerfile and run the way a kubelet runs our pod.

It is built with ``podman build --pull=never`` on a stand-in for its base image made from
Debian packages (``image_build.py``; what the stand-in cannot make identical is in
``docs/image.md``), then run as ``deploy/base/deployment.yaml``'s pod runs:

- the pod's securityContext: ``--user 65532:65532 --read-only --cap-drop ALL --cap-add
  NET_BIND_SERVICE --security-opt no-new-privileges``, without the tmpfs mounts podman adds to
  a read-only container and a kubelet does not;
- the ambient capability set cleared before the image's entrypoint runs. Podman gives a
  non-root user its added capabilities as ambient ones; containerd does not. Cleared, only the
  file capability on the image's interpreter can let the server bind a port below 1024, as in
  a cluster;
- the ConfigMap's Corefile at /etc/coredns/Corefile, unchanged but for its ports: DNS on a
  free port below 1024 (so binding it needs the capability), the others on free high ports;
- the service-account volume at /var/run/secrets/kubernetes.io/serviceaccount, laid out and
  updated as the kubelet does (``serviceaccount.py``), its token ending in a newline, and
  KUBERNETES_SERVICE_HOST/PORT naming the API double, which serves HTTPS with that ``ca.crt``
  and refuses requests without that token;
- ``dnsPolicy: Default``: the node's resolv.conf, which here names an upstream server this test
  runs on a loopback address, port 53. Host networking lets the container reach loopback.

Then: a cluster name and a forwarded name through ``dig``, the probes, a watch change, a token
rotation with the old token revoked, SIGTERM with the lame-duck period, and a control run
without NET_BIND_SERVICE that must fail to bind.

As root (CI) all this must run: ``REQUIRE_PODMAN=1`` turns a skip into a failure.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
import yaml
from image_build import ROOT, Image, Podman, build, standin_base, unusable_reason
from kubeapi import KubeAPIServer
from serviceaccount import ProjectedVolume
from upstream import FakeUpstream

# The first test to use the image builds it, from nothing on a new machine (docs/image.md).
pytestmark = pytest.mark.timeout(900)

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
UID, GID = 65532, 65532
UID_GID = f"{UID}:{GID}"
NET_BIND_SERVICE = 1 << 10
LAMEDUCK_SECONDS = 5.0  # the Corefile's `health { lameduck 5s }`
# How long the API double keeps accepting the token the kubelet just replaced. See
# test_a_rotated_token_is_used_before_the_old_one_is_revoked for why it is not 70 s here.
REVOKE_AFTER_SECONDS = 2.0

# Executed as the container's first process in place of the image's entrypoint, which it then
# executes: PR_CAP_AMBIENT (47), PR_CAP_AMBIENT_CLEAR_ALL (4).
CLEAR_AMBIENT = """\
import ctypes, os, shutil, sys
if ctypes.CDLL(None, use_errno=True).prctl(47, 4, 0, 0, 0) != 0:
    sys.exit("cannot clear the ambient capabilities: " + os.strerror(ctypes.get_errno()))
"""
CLEAR_AMBIENT_THEN_EXEC = CLEAR_AMBIENT + "os.execvp(sys.argv[1], sys.argv[1:])\n"
# The control: the same, but the entrypoint script is run by a copy of the interpreter, which
# has no file capability (a copy has no extended attributes), from a tmpfs.
CLEAR_AMBIENT_THEN_EXEC_WITHOUT_FILE_CAPABILITY = CLEAR_AMBIENT + """\
copy = "/scratch/python"
shutil.copyfile(os.path.realpath(sys.executable), copy)
os.chmod(copy, 0o755)
os.environ["PYTHONHOME"] = sys.prefix  # found from /usr/local/bin before, not from /scratch
os.execv(copy, [copy, shutil.which(sys.argv[1]), *sys.argv[2:]])
"""


def _require(reason: str) -> None:
    if os.environ.get("REQUIRE_PODMAN") == "1":
        pytest.fail(f"REQUIRE_PODMAN=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _wait_for(condition: Callable[[], bool], timeout: float, what: str,
              interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}", pytrace=False)
        time.sleep(interval)


def _report(config: pytest.Config, line: str) -> None:
    """One line on the terminal, even with -q and output captured: the measurements."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


# ---- the image --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    reason = unusable_reason()
    if reason is not None:
        _require(reason)
    podman = Podman.for_this_machine(tmp_path_factory.mktemp("podman"))
    info = podman.run("info", check=False)
    if info.returncode != 0:
        _require(f"podman cannot run here: {info.stderr.strip()[-500:]}")
    return podman


def _python_minor() -> str:
    found = re.search(r"^ARG PYTHON_MINOR=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert found, "the Dockerfile's ARG PYTHON_MINOR"
    return found.group(1)


@pytest.fixture(scope="module")
def image(podman: Podman, request: pytest.FixtureRequest) -> Image:
    base = standin_base(podman, _python_minor())
    built = build(podman, base)
    mb = 1e6
    _report(request.config,
            f"\nimage: stand-in base {base.made_from} ({base.seconds:.1f} s, Python "
            f"{base.python_version}), built in {built.seconds:.1f} s, {built.size / mb:.0f} MB "
            f"= base {built.base_size / mb:.0f} MB + {(built.size - built.base_size) / mb:.0f} MB")
    return built


def test_the_image_is_configured_as_the_pod_expects(podman: Podman, image: Image) -> None:
    config = podman.inspect(image.id)["Config"]
    assert config["User"] == UID_GID
    assert config["Entrypoint"] == ["dnsserver"]
    assert config["Cmd"] == ["serve", "--corefile", "/etc/coredns/Corefile"]
    assert set(config["ExposedPorts"]) == {"53/udp", "53/tcp", "8080/tcp", "8181/tcp", "9153/tcp"}
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"} <= set(config["Env"])


def test_the_image_stays_small(image: Image) -> None:
    """What we add to the base: our packages, with the Kubernetes client trimmed to what the
    server loads (the whole client is ~128 MB installed). The base is the stand-in here; on the
    official one, which is smaller (docs/image.md), the image is that much smaller."""
    added = image.size - image.base_size
    assert added < 80e6, f"the layers on the base are {added / 1e6:.0f} MB"


def test_only_the_interpreter_carries_the_capability(podman: Podman, image: Image) -> None:
    """``cap_net_bind_service=+ep`` on python3.X itself: version 2 or 3 of the vfs capability
    xattr, effective bit set, NET_BIND_SERVICE alone in the permitted set."""
    script = ("import os, sys, struct\n"
              "path = os.path.realpath(sys.executable)\n"
              "raw = os.getxattr(path, 'security.capability')\n"
              "print(path, *struct.unpack_from('<III', raw))\n")
    done = podman.run("run", "--rm", "--network", "none", "--entrypoint", "python3",
                      image.id, "-c", script)
    path, magic, permitted, inheritable = done.stdout.split()
    assert path.startswith("/usr/local/bin/python3.")
    assert int(magic) & 0xFF000000 in (0x02000000, 0x03000000) and int(magic) & 1  # +e
    assert (int(permitted), int(inheritable)) == (NET_BIND_SERVICE, 0)


# ---- a cluster for the pod --------------------------------------------------------------------


def _port_is_free(port: int) -> bool:
    """Free for UDP and TCP on every address (the Corefile's `.:PORT` binds them all)."""
    with contextlib.ExitStack() as stack:
        try:
            for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    sock = stack.enter_context(socket.socket(family, kind))
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind((host, port))
        except OSError:
            return False
    return True


class Ports:
    """Free ports, never the same one twice in a run."""

    def __init__(self) -> None:
        self.taken: set[int] = set()

    def low(self) -> int:
        """A free port in 600-999: binding it needs NET_BIND_SERVICE, and it is not 53."""
        for port in random.sample(range(600, 1000), 400):
            if port not in self.taken and _port_is_free(port):
                self.taken.add(port)
                return port
        raise RuntimeError("no free port in 600-999")

    def high(self) -> int:
        while True:
            with socket.socket() as sock:
                sock.bind(("0.0.0.0", 0))
                port = int(sock.getsockname()[1])
            if port not in self.taken and _port_is_free(port):
                self.taken.add(port)
                return port


def _start_upstream() -> FakeUpstream:
    """An upstream on port 53 of a loopback address of its own (resolv.conf has no ports)."""
    records = ["outside.example.org. 300 IN A 192.0.2.80"]
    for _ in range(20):
        host = f"127.{random.randint(1, 254)}.{random.randint(0, 254)}.{random.randint(1, 254)}"
        upstream = FakeUpstream(records, host=host, port=53)
        try:
            return upstream.start()
        except OSError:
            upstream.stop()
    raise RuntimeError("no loopback address with port 53 free (a resolver on 0.0.0.0:53?)")


@dataclass
class Cluster:
    api: KubeAPIServer
    upstream: FakeUpstream
    volume: ProjectedVolume
    resolv_conf: Path
    workdir: Path
    ports: Ports

    def token_volume_files(self, token: str) -> dict[str, bytes]:
        return service_account_files(self.api, token)


def service_account_files(api: KubeAPIServer, token: str) -> dict[str, bytes]:
    return {"token": f"{token}\n".encode(),  # a newline at the end, as `echo` leaves it
            "ca.crt": api.ca_file.read_bytes(),
            "namespace": b"kube-system\n"}


def _service(namespace: str, name: str, cluster_ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}}


@pytest.fixture(scope="module")
def cluster(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("pod")
    with KubeAPIServer(tls=True, require_token=True, token=secrets.token_hex(16)) as api:
        for name in ("default", "kube-system"):
            api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        api.apply(_service("default", "kubernetes", "10.96.0.1"))
        api.apply(_service("kube-system", "kube-dns", "10.96.0.10"))
        upstream = _start_upstream()
        try:
            resolv_conf = workdir / "resolv.conf"
            resolv_conf.write_text(f"nameserver {upstream.host}\n")
            resolv_conf.chmod(0o644)
            volume = ProjectedVolume(workdir / "serviceaccount",
                                     service_account_files(api, api.token),
                                     owner=UID)
            yield Cluster(api, upstream, volume, resolv_conf, workdir, Ports())
        finally:
            upstream.stop()


def kubeadm_corefile(dns: int, health: int, ready: int, metrics: int) -> str:
    """The ConfigMap's Corefile with free ports in place of 53, 8080, 8181 and 9153."""
    manifest = yaml.safe_load((ROOT / "deploy/base/configmap.yaml").read_text())
    text = str(manifest["data"]["Corefile"])
    for pattern, replacement in ((r"^\.:53 \{$", f".:{dns} {{"),
                                 (r"^(\s*)health \{$", rf"\1health :{health} {{"),
                                 (r"^(\s*)ready$", rf"\1ready :{ready}"),
                                 (r"^(\s*)prometheus :9153$", rf"\1prometheus :{metrics}")):
        text, count = re.subn(pattern, replacement, text, flags=re.M)
        assert count == 1, f"the ConfigMap's Corefile has no single line {pattern!r}:\n{text}"
    return text


# ---- the pod ----------------------------------------------------------------------------------


class Container:
    """``podman run`` in the foreground, as the kubelet's runtime would start the container."""

    def __init__(self, podman: Podman, name: str, arguments: list[str]) -> None:
        self.podman, self.name = podman, name
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            podman.command("run", "--rm", "--name", name, *arguments),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=podman.env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self, signal_name: str) -> None:
        self.podman.run("kill", "--signal", signal_name, self.name, timeout=30)

    def exec(self, *command: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.podman.run("exec", *(["--user", user] if user else []), self.name,
                               *command, check=False, timeout=30)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        if not self._reader.is_alive() and self.process.stdout is not None:
            self.process.stdout.close()
        return code

    def remove(self) -> None:
        if self.running:
            self.podman.run("rm", "--force", "--time", "0", self.name, check=False, timeout=60)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(timeout=30)


@dataclass
class Pod:
    container: Container
    dns_port: int
    health_port: int
    ready_port: int
    metrics_port: int


def run_pod(podman: Podman, image: Image, cluster: Cluster, *, net_bind_service: bool = True,
            file_capability: bool = True) -> Pod:
    ports = cluster.ports
    dns_port, health, ready, metrics = ports.low(), ports.high(), ports.high(), ports.high()
    config_dir = cluster.workdir / f"config-{dns_port}"
    config_dir.mkdir()
    (config_dir / "Corefile").write_text(kubeadm_corefile(dns_port, health, ready, metrics))
    for path in (config_dir, config_dir / "Corefile"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    config = podman.inspect(image.id)["Config"]
    command = [*config["Entrypoint"], *config["Cmd"]]
    arguments = [
        "--network", "host",
        "--user", UID_GID,
        "--read-only", "--read-only-tmpfs=false",
        "--cap-drop", "ALL",
        *(["--cap-add", "NET_BIND_SERVICE"] if net_bind_service else []),
        "--security-opt", "no-new-privileges",
        "--volume", f"{config_dir}:/etc/coredns:ro",
        "--volume", f"{cluster.volume.path}:{SERVICE_ACCOUNT}:ro",
        "--volume", f"{cluster.resolv_conf}:/etc/resolv.conf:ro",
        "--env", "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "--env", f"KUBERNETES_SERVICE_PORT={cluster.api.port}",
        *([] if file_capability else ["--tmpfs", "/scratch:rw,exec,mode=1777"]),
        "--entrypoint", json.dumps(["/usr/local/bin/python3", "-c", CLEAR_AMBIENT_THEN_EXEC
                                    if file_capability else
                                    CLEAR_AMBIENT_THEN_EXEC_WITHOUT_FILE_CAPABILITY]),
        image.id, *command,
    ]
    container = Container(podman, f"cluster-dns-test-{os.getpid()}-{dns_port}", arguments)
    return Pod(container, dns_port, health, ready, metrics)


def _http(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    except OSError:
        return 0, ""
    finally:
        connection.close()


@pytest.fixture(scope="module")
def pod(podman: Podman, image: Image, cluster: Cluster) -> Iterator[Pod]:
    pod = run_pod(podman, image, cluster)
    try:
        def ready() -> bool:
            if not pod.container.running:
                pytest.fail(f"the container exited:\n{pod.container.log}", pytrace=False)
            return _http(pod.ready_port, "/ready")[0] == 200

        _wait_for(ready, 60, "/ready answers 200")
        yield pod
    finally:
        pod.container.remove()
    assert "Traceback" not in pod.container.log, pod.container.log


def dig(port: int, name: str, *options: str) -> list[str]:
    if shutil.which("dig") is None:
        pytest.fail("dig is not installed (apt-get install dnsutils)", pytrace=False)
    done = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), name, "A", "+short",
                           "+time=2", "+tries=1", *options],
                          capture_output=True, text=True, timeout=10, check=False)
    return done.stdout.split() if done.returncode == 0 else [f"dig failed: {done.stdout}"]


def test_dig_a_cluster_name_and_a_forwarded_name(pod: Pod, cluster: Cluster) -> None:
    assert dig(pod.dns_port, "kubernetes.default.svc.cluster.local") == ["10.96.0.1"]
    assert dig(pod.dns_port, "kube-dns.kube-system.svc.cluster.local", "+tcp") == ["10.96.0.10"]
    assert dig(pod.dns_port, "outside.example.org") == ["192.0.2.80"]
    assert ("udp", "outside.example.org.", "A") in {
        (transport, qname.lower(), qtype) for transport, qname, qtype in cluster.upstream.log}


def test_the_probes_and_metrics(pod: Pod) -> None:
    assert _http(pod.health_port, "/health") == (200, "OK")
    assert _http(pod.ready_port, "/ready") == (200, "OK")
    status, metrics = _http(pod.metrics_port, "/metrics")
    assert status == 200 and "coredns_dns_requests_total" in metrics


def _status(container: Container, pid: int = 1) -> dict[str, str]:
    done = container.exec("cat", f"/proc/{pid}/status")
    assert done.returncode == 0, done.stderr
    return {key: value.strip() for key, _, value in
            (line.partition(":") for line in done.stdout.splitlines())}


def test_the_server_runs_as_65532_with_only_the_file_capability(pod: Pod) -> None:
    """PID 1 is the server, its ambient set is empty, so NET_BIND_SERVICE came from the file
    capability; nothing else is permitted; no_new_privs is set; the root is read-only (even
    for uid 0, and /tmp too: no tmpfs)."""
    status = _status(pod.container)
    cmdline = pod.container.exec("cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[0].startswith("/usr/local/bin/python3.") and cmdline[1].endswith("/dnsserver")
    assert status["Uid"].split() == ["65532"] * 4 and status["Gid"].split() == ["65532"] * 4
    assert int(status["CapAmb"], 16) == 0
    assert int(status["CapPrm"], 16) == int(status["CapEff"], 16) == NET_BIND_SERVICE
    assert int(status["CapBnd"], 16) == NET_BIND_SERVICE
    assert status["NoNewPrivs"] == "1"
    for path in ("/probe", "/tmp/probe"):
        done = pod.container.exec("sh", "-c", f": > {path}", user="0")
        assert done.returncode != 0 and "Read-only file system" in done.stderr, done.stderr


def _answers(pod: Pod, name: str, expected: list[str]) -> Callable[[], bool]:
    return lambda: dig(pod.dns_port, name) == expected


def test_a_watch_change_propagates(pod: Pod, cluster: Cluster) -> None:
    cluster.api.apply(_service("default", "late", "10.96.5.5"))
    _wait_for(_answers(pod, "late.default.svc.cluster.local", ["10.96.5.5"]), 10,
              "the new Service is answered")
    cluster.api.delete("Service", "default", "late")
    _wait_for(_answers(pod, "late.default.svc.cluster.local", []), 10,
              "the deleted Service is gone")


def _refused(api: KubeAPIServer, token: str) -> bool:
    """Whether the double refuses ``token`` now (asked on /readyz, which the server never asks)."""
    context = ssl.create_default_context(cafile=str(api.ca_file))
    connection = http.client.HTTPSConnection(api.host, api.port, context=context, timeout=5)
    try:
        connection.request("GET", "/readyz", headers={"Authorization": f"Bearer {token}"})
        return connection.getresponse().status == 401
    finally:
        connection.close()


def test_a_rotated_token_is_used_before_the_old_one_is_revoked(pod: Pod, cluster: Cluster) -> None:
    """The kubelet rewrites a projected token at 80 % of its lifetime, and the old token keeps
    working until it expires. client-go reads the file again every minute, so a revocation 70 s
    after the rewrite is one it survives; a client that never read the file again would not.

    Waiting 70 s for that is not needed: the server reads the file again as soon as it changes,
    so the double revokes the old token ``REVOKE_AFTER_SECONDS`` after the rewrite, well before
    any once-a-minute re-read, and the server must already be on the new one. Open watches
    keep streaming after the revocation (authentication is per request), so the test then ends
    them, as the API server's watch timeout or a restart would: the server has to
    authenticate again, with the new token, and changes must keep arriving."""
    api = cluster.api
    for kind in ("services", "endpointslices", "namespaces"):
        api.wait_for_watches(kind, 1, timeout=10)
    old, new = api.token, secrets.token_hex(16)
    api.rotate_token(new, revoke_after=REVOKE_AFTER_SECONDS)
    cluster.volume.update(cluster.token_volume_files(new))

    api.apply(_service("default", "before-revocation", "10.96.6.1"))
    _wait_for(_answers(pod, "before-revocation.default.svc.cluster.local", ["10.96.6.1"]), 10,
              "a change on the open watches")
    _wait_for(lambda: _refused(api, old), REVOKE_AFTER_SECONDS + 5, "the old token revoked",
              interval=0.2)
    mark = len(api.requests)
    api.drop_watches()
    api.apply(_service("default", "after-revocation", "10.96.6.2"))
    _wait_for(_answers(pod, "after-revocation.default.svc.cluster.local", ["10.96.6.2"]), 15,
              "a change after the old token was revoked")
    for kind in ("services", "endpointslices", "namespaces"):
        api.wait_for_watches(kind, 1, timeout=10)

    sent = [headers.get("authorization") for request, headers in
            zip(api.requests[mark:], api.request_headers[mark:], strict=True)
            if request.path != "/readyz"]
    assert sent and set(sent) == {f"Bearer {new}"}, sent
    assert api.unauthorized == [old], "the server was refused (only the test's probe may be)"


def _exit_of(pod: Pod) -> tuple[int, str]:
    try:
        code = pod.container.wait(timeout=60)
    finally:
        pod.container.remove()
    return code, pod.container.log


def test_without_the_file_capability_the_server_cannot_bind_its_port(
    podman: Podman, image: Image, cluster: Cluster,
) -> None:
    """The control: the same pod, but the server is run by a copy of the interpreter without
    the file capability. It cannot bind its port (below 1024): the pod above bound it
    through the file capability, not through anything podman gave it."""
    code, log = _exit_of(run_pod(podman, image, cluster, file_capability=False))
    assert code == 1, log
    assert re.search(r"error: cannot listen: \[Errno 13\].*permission denied", log, re.I), log


def test_without_net_bind_service_in_the_pod_the_image_cannot_start(
    podman: Podman, image: Image, cluster: Cluster,
) -> None:
    """Without NET_BIND_SERVICE in the pod's capabilities the kernel refuses to execute the
    interpreter at all: its capability is set effective (+ep) and cannot be granted, and such a
    file fails with EPERM rather than running without it. The CoreDNS image's binary behaves
    the same. The runtime reports it; nothing of ours runs."""
    code, log = _exit_of(run_pod(podman, image, cluster, net_bind_service=False))
    assert code != 0, log
    assert "operation not permitted" in log.lower(), log


def test_sigterm_keeps_answering_for_the_lame_duck_period_then_exits(pod: Pod) -> None:
    """As on a pod's deletion: /ready is 503 at once, DNS answers for the lame-duck period
    (kubeadm's 5 s), then the server exits cleanly."""
    query = dns.message.make_query("kubernetes.default.svc.cluster.local", "A")
    signalled = time.monotonic()
    pod.container.kill("TERM")
    _wait_for(lambda: _http(pod.ready_port, "/ready")[0] == 503, 2, "/ready turns 503",
              interval=0.05)
    last_answer = 0.0
    while pod.container.running and time.monotonic() - signalled < LAMEDUCK_SECONDS + 10:
        with contextlib.suppress(OSError, dns.exception.Timeout):
            reply = dns.query.udp(query, "127.0.0.1", port=pod.dns_port, timeout=0.5)
            if reply.rcode() == dns.rcode.NOERROR and reply.answer:
                last_answer = time.monotonic() - signalled
        time.sleep(0.1)
    code = pod.container.wait(timeout=LAMEDUCK_SECONDS + 10)
    stopped = time.monotonic() - signalled
    assert code == 0, pod.container.log
    assert last_answer >= LAMEDUCK_SECONDS - 1.0, f"last answer {last_answer:.1f} s after SIGTERM"
    assert stopped <= LAMEDUCK_SECONDS + 5.0, f"stopped {stopped:.1f} s after SIGTERM"

