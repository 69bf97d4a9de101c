# syntax=docker/dockerfile:1
#
# The cluster DNS server image, a drop-in for the CoreDNS image behind the kube-dns Service.
#
# Like the CoreDNS image it runs as uid/gid 65532 and binds :53 through a file capability,
# so it works with kubeadm's securityContext (drop ALL, add NET_BIND_SERVICE,
# allowPrivilegeEscalation false, readOnlyRootFilesystem true). Build it with BuildKit:
#
#   docker build -t cluster-dns-py:dev .

# The interpreter's X.Y. Not PYTHON_VERSION: the python image sets ENV PYTHON_VERSION=3.11.N, and
# a base image's ENV wins over an ARG of the same name inside a stage (BuildKit and buildah
# alike), so /usr/local/bin/python${PYTHON_VERSION} would name a file that does not exist.
ARG PYTHON_MINOR=3.11

# Both stages start from this one image, so the interpreter copied from the builder (the only
# file that changes: it gains the capability) matches the runtime's libpython byte for byte.
FROM python:${PYTHON_MINOR}-slim-bookworm AS base


FROM base AS builder
ARG PYTHON_MINOR

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcap2-bin \
    && rm -rf /var/lib/apt/lists/*

# Kubernetes does not give a non-root process ambient capabilities: capabilities.add only
# puts NET_BIND_SERVICE in the bounding and permitted sets, and a non-root execve keeps it
# only if the executed file carries it. The console script `dnsserver` is a text file run by
# /usr/local/bin/python -> python3 -> python3.X; the kernel takes the capability from the
# interpreter that is finally executed, so it goes on that real binary, never on a symlink.
RUN setcap cap_net_bind_service=+ep "/usr/local/bin/python${PYTHON_MINOR}"

# Wheels for the project and every dependency; the runtime stage installs only these, and trims
# them with the script. pip's download cache is a cache mount, never a layer: a rebuild after a
# source change downloads nothing it downloaded before. SHA256SUMS names every input of the
# runtime stage's install step (see there).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY zones ./zones
COPY dnsserver ./dnsserver
COPY .ci/image/trim_site_packages.py /tools/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels . \
    && sha256sum /wheels/*.whl /tools/* >/wheels/SHA256SUMS


FROM base AS runtime
ARG PYTHON_MINOR

LABEL org.opencontainers.image.title="cluster-dns-py" \
      org.opencontainers.image.description="Kubernetes cluster DNS server: a drop-in for CoreDNS's kubernetes plugin" \
      org.opencontainers.image.licenses="Apache-2.0"

# No .pyc writes at run time (the root filesystem is read-only; the bytecode is compiled at
# install time) and logs go straight to the container runtime.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# buildah (podman build) reuses its cached result of a RUN --mount=...,from=<stage> step even
# when that stage's files changed; BuildKit does not. Copying the list of what the step mounts
# first makes the step's cache key follow the wheels and the script with either builder.
COPY --from=builder /wheels/SHA256SUMS /usr/local/share/cluster-dns-py/SHA256SUMS

# The wheels are bind-mounted from the builder, so they never land in a layer; --no-index
# means nothing is fetched here, and no compiler is needed or present. In the same step, the
# Kubernetes client is trimmed to the modules the server loads (~120 MB of generated API
# classes, models and an asyncio client it never imports), the distributions only those need
# are removed, and then what is left is compiled to bytecode: see the script.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,from=builder,source=/tools,target=/tools \
    pip install --no-cache-dir --no-index --no-compile --root-user-action=ignore \
        --find-links=/wheels /wheels/k8s_cluster_dns-*.whl \
    && python3 /tools/trim_site_packages.py \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-create-home --no-log-init \
        --home-dir /nonexistent --shell /usr/sbin/nologin nonroot

COPY --from=builder /usr/local/bin/python${PYTHON_MINOR} /usr/local/bin/python${PYTHON_MINOR}

# Fail the build, not the pod, if the capability did not survive the copy.
RUN python3 -c "import os, sys; os.getxattr(os.path.realpath(sys.executable), 'security.capability')" \
    && dnsserver --help >/dev/null

USER 65532:65532
WORKDIR /

# dns (udp, tcp), health (/health), ready (/ready), metrics (/metrics)
EXPOSE 53/udp 53/tcp 8080 8181 9153

ENTRYPOINT ["dnsserver"]
CMD ["serve", "--corefile", "/etc/coredns/Corefile"]
