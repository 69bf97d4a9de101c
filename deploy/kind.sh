#!/usr/bin/env bash
# Run the cluster DNS server in a kind cluster in place of CoreDNS, and check what it answers.
#
#   deploy/kind.sh [create]           create (or reuse) the cluster, build and load the image,
#                                     swap CoreDNS for the server, run the DNS checks
#   deploy/kind.sh check              run the DNS checks only
#   deploy/kind.sh --down             delete the cluster
#   deploy/kind.sh --down --restore   keep the cluster, switch back to CoreDNS
#
# Options: --name NAME (cluster name, default cluster-dns-py; also $KIND_CLUSTER_NAME),
#          --autoscaler (also apply deploy/autoscaler), -h/--help.
# Environment: KIND_NODE_IMAGE (a kindest/node image for `kind create cluster --image`).
# Needs docker (with BuildKit), kind and kubectl on PATH. Every kubectl call names the
# kind-NAME context, so no other cluster in your kubeconfig is ever touched.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE="cluster-dns-py:kind"  # deploy/kind/kustomization.yaml names this tag
NS=kube-system
OURS=app.kubernetes.io/part-of=cluster-dns-py
COREDNS_PODS='k8s-app=kube-dns,!app.kubernetes.io/name'
DNSUTILS_IMAGE=registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7
PAUSE_IMAGE=registry.k8s.io/pause:3.10

cluster="${KIND_CLUSTER_NAME:-cluster-dns-py}"
command=create
down=false
restore=false
autoscaler=false

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'kind.sh: %s\n' "$*" >&2; exit 1; }

k() { kubectl --context "kind-${cluster}" "$@"; }

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH"
  done
}

# Poll until no pod matches (kubectl wait --for=delete fails when nothing matches).
wait_for_no_pods() {
  local selector=$1 deadline=$((SECONDS + 120)) pods
  while :; do
    pods=$(k -n "$NS" get pods -l "$selector" -o name)
    [ -n "$pods" ] || return 0
    [ "$SECONDS" -lt "$deadline" ] || die "pods ($selector) still there after 120 s"
    sleep 2
  done
}

create() {
  need docker kind kubectl
  local clusters
  clusters=$(kind get clusters 2>/dev/null || true)  # not piped: grep -q would SIGPIPE kind
  if grep -qx -- "$cluster" <<<"$clusters"; then
    log "reusing kind cluster $cluster"
  else
    log "creating kind cluster $cluster"
    local args=(create cluster --name "$cluster" --wait 120s)
    if [ -n "${KIND_NODE_IMAGE:-}" ]; then args+=(--image "$KIND_NODE_IMAGE"); fi
    kind "${args[@]}"
  fi

  log "building $IMAGE"
  DOCKER_BUILDKIT=1 docker build --tag "$IMAGE" "$ROOT"
  log "loading $IMAGE into the nodes"
  kind load docker-image "$IMAGE" --name "$cluster"

  local existed=false
  if k -n "$NS" get deployment cluster-dns-py >/dev/null 2>&1; then existed=true; fi

  # Ours first, CoreDNS down once ours is ready: the kube-dns Service always has endpoints.
  log "applying deploy/kind"
  k apply -k "$ROOT/deploy/kind"
  if [ "$autoscaler" = true ]; then
    log "applying deploy/autoscaler"
    k apply -k "$ROOT/deploy/autoscaler"
  fi
  if [ "$existed" = true ]; then
    # Same tag, new image: only new pods run what `kind load` just put on the nodes.
    k -n "$NS" rollout restart deployment/cluster-dns-py
  fi
  k -n "$NS" rollout status deployment/cluster-dns-py --timeout=180s

  log "scaling CoreDNS to 0"
  k -n "$NS" scale deployment coredns --replicas=0
  wait_for_no_pods "$COREDNS_PODS"
  k -n "$NS" get pods -l k8s-app=kube-dns -o wide

  check
}

test_objects() {
  cat <<EOF
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  clusterIP: None
  selector:
    app: web
  ports:
    - name: http
      port: 80
      protocol: TCP
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
  namespace: default
spec:
  serviceName: web
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: pause
          image: ${PAUSE_IMAGE}
          ports:
            - name: http
              containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: ext
  namespace: default
spec:
  type: ExternalName
  externalName: example.com
---
apiVersion: v1
kind: Pod
metadata:
  name: dnsutils
  namespace: default
spec:
  containers:
    - name: dnsutils
      image: ${DNSUTILS_IMAGE}
      command: ["sleep", "infinity"]
EOF
}

failures=0

# expect LABEL HOW WANT GOT: some line of GOT is WANT (HOW=line) or matches the extended
# regex WANT (HOW=regex).
expect() {
  local label=$1 how=$2 want=$3 got=$4 verdict=ok flags=-Eq
  if [ "$how" = line ]; then flags=-Fxq; fi
  if ! grep "$flags" -e "$want" <<<"$got"; then
    verdict=FAIL
    failures=$((failures + 1))
  fi
  printf '%-4s %-44s %s %s\n' "$verdict" "$label" "$how" "$want"
  printf '%s\n' "${got:-<empty>}" | sed 's/^/       /'
}

dig_in_pod() { k -n default exec dnsutils -- dig +time=2 +tries=2 "$@" 2>&1 || true; }

check() {
  need kubectl
  log "creating the test objects (headless StatefulSet web, ExternalName ext, dnsutils pod)"
  test_objects | k apply -f -
  k -n default rollout status statefulset/web --timeout=180s
  k -n default wait --for=condition=Ready pod/dnsutils --timeout=180s

  local api_ip web0_ip
  api_ip=$(k -n default get service kubernetes -o jsonpath='{.spec.clusterIP}')
  web0_ip=$(k -n default get pod web-0 -o jsonpath='{.status.podIP}')

  log "DNS checks from pod default/dnsutils (resolv.conf: kube-dns 10.96.0.10)"
  expect "A kubernetes.default (search path)" line "$api_ip" \
    "$(dig_in_pod +search +short kubernetes.default)"
  expect "A web-0.web (search path)" line "$web0_ip" \
    "$(dig_in_pod +search +short web-0.web)"
  local srv
  srv=$(dig_in_pod +short SRV _http._tcp.web.default.svc.cluster.local)
  expect "SRV _http._tcp.web (web-0)" regex " 80 web-0\.web\.default\.svc\.cluster\.local\.$" "$srv"
  expect "SRV _http._tcp.web (web-1)" regex " 80 web-1\.web\.default\.svc\.cluster\.local\.$" "$srv"
  expect "CNAME ext (ExternalName)" line "example.com." \
    "$(dig_in_pod +short ext.default.svc.cluster.local)"
  expect "A example.com (forwarded upstream)" regex "^[0-9]+(\.[0-9]+){3}$" \
    "$(dig_in_pod +short example.com)"
  expect "answered by the kube-dns Service" regex "SERVER: 10\.96\.0\.10#53" \
    "$(dig_in_pod kubernetes.default.svc.cluster.local | grep SERVER || true)"

  # Each of our pods directly, so a stray CoreDNS replica could not have answered for us.
  local ours pod ip
  ours=$(k -n "$NS" get pods -l app.kubernetes.io/name=cluster-dns-py \
    -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.podIP}{"\n"}{end}')
  [ -n "$ours" ] || die "no cluster-dns-py pod in $NS"
  while read -r pod ip; do
    expect "A kubernetes.default.svc @${pod}" line "$api_ip" \
      "$(dig_in_pod "@${ip}" +short kubernetes.default.svc.cluster.local)"
  done <<<"$ours"

  log "server logs (last lines)"
  k -n "$NS" logs -l app.kubernetes.io/name=cluster-dns-py --tail=5 --prefix || true

  if [ "$failures" -gt 0 ]; then
    die "$failures DNS check(s) failed"
  fi
  log "all DNS checks passed"
}

restore_coredns() {
  need kubectl
  log "switching kind cluster $cluster back to CoreDNS"
  k -n "$NS" scale deployment coredns --replicas=2
  k -n "$NS" rollout status deployment/coredns --timeout=180s
  # kubeadm's selector, in case anything changed it; ours is identical, so usually a no-op.
  k -n "$NS" patch service kube-dns --type=json \
    -p '[{"op":"replace","path":"/spec/selector","value":{"k8s-app":"kube-dns"}}]'
  # Everything of ours carries the part-of label; the kube-dns Service does not and stays.
  k -n "$NS" delete deployment,configmap,serviceaccount,poddisruptionbudget,role,rolebinding \
    -l "$OURS" --ignore-not-found
  k delete clusterrole,clusterrolebinding -l "$OURS" --ignore-not-found
  wait_for_no_pods app.kubernetes.io/name=cluster-dns-py
  k -n default delete statefulset/web service/web service/ext pod/dnsutils --ignore-not-found
  k -n "$NS" get pods -l k8s-app=kube-dns -o wide
}

while [ "$#" -gt 0 ]; do
  case $1 in
    create | check) command=$1 ;;
    --down) down=true ;;
    --restore) restore=true ;;
    --autoscaler) autoscaler=true ;;
    --name)
      [ "$#" -ge 2 ] || die "--name needs a value"
      cluster=$2
      shift
      ;;
    --name=*) cluster=${1#--name=} ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

if [ "$restore" = true ] && [ "$down" = false ]; then
  die "--restore goes with --down"
fi

if [ "$down" = true ]; then
  if [ "$restore" = true ]; then
    restore_coredns
  else
    need kind
    log "deleting kind cluster $cluster"
    kind delete cluster --name "$cluster"
  fi
elif [ "$command" = check ]; then
  check
else
  create
fi
