"""Podman on a Debian machine with no registry, and a stand-in for the Dockerfile's base image.

The base image the Dockerfile names (``python:3.11-slim-bookworm``) cannot be pulled here, so
:func:`standin_base` makes one from Debian packages with mmdebstrap: a minimal bookworm with
``python3.11``, pip and venv, the interpreter copied to ``/usr/local/bin/python3.11`` with the
``python3``/``python`` links, ``pip`` scripts on it and the ``ENV`` the official image has
(``PATH``, ``LANG``, ``PYTHON_VERSION``). It is imported under the official name, so the
Dockerfile builds unchanged with ``--pull=never``. What it cannot make identical is in
``docs/image.md``.

The root filesystem is cached as a tarball under ``/var/cache/k8s-cluster-dns/bases/``, keyed
by a hash of the recipe, so a second run imports it in seconds (or finds it imported) and a
changed recipe makes a new one. Podman keeps its images in its own store under
``/var/cache/k8s-cluster-dns/containers/``, so the stand-in never takes the official name in the
machine's own store, and layers cached there make rebuilds of an unchanged tree quick.

What this machine needed (rootful podman 4.3, buildah 1.28, Debian 12, hybrid cgroups, no
systemd as PID 1), all in the ``containers.conf`` :class:`Podman` writes and selects with
``CONTAINERS_CONF``: runc (crun refuses hybrid cgroups), the cgroupfs manager and file events
(no systemd), and ulimits no higher than the host's hard limits (runc cannot raise them).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CLUSTER_DNS_IMAGE_CACHE", "/var/cache/k8s-cluster-dns"))
STANDIN_LABEL = "io.github.k8s-cluster-dns.standin"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# debian:bookworm-slim's own trimming: no manuals, docs (but copyrights) or translations.
_SLIM_DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/groff/*",
    "path-exclude=/usr/share/lintian/*",
)

# Run by mmdebstrap on the finished tree ("$1"): the interpreter where the official image has
# it (a copy, so a file capability set on it does not touch Debian's), its links, pip on it,
# and no EXTERNALLY-MANAGED marker (the official image has none: pip installs as root).
_CUSTOMIZE = """\
set -eu
root="$1"
cp -p "$root/usr/bin/python{minor}" "$root/usr/local/bin/python{minor}"
ln -s "python{minor}" "$root/usr/local/bin/python3"
ln -s python3 "$root/usr/local/bin/python"
for name in pip pip3 "pip{minor}"; do
  printf '#!/usr/local/bin/python{minor}\\nimport sys\\nfrom pip._internal.cli.main import main\\nsys.exit(main())\\n' >"$root/usr/local/bin/$name"
  chmod 755 "$root/usr/local/bin/$name"
done
rm -f "$root/usr/lib/python{minor}/EXTERNALLY-MANAGED"
chroot "$root" "/usr/local/bin/python{minor}" -c 'import platform; print(platform.python_version())' >"$STANDIN_PYTHON_VERSION_FILE"
"""


def _pid_max() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text())


def unusable_reason() -> str | None:
    """Why podman cannot build and run the image here, or None."""
    if os.geteuid() != 0:
        return ("podman builds and runs the image as root (rootless podman needs subordinate "
                "ids and a user namespace); run as root, as CI does")
    missing = [tool for tool in ("podman", "mmdebstrap", "runc") if shutil.which(tool) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install podman buildah runc mmdebstrap)"
    return None


@dataclass(frozen=True)
class Podman:
    """Rootful podman with its own store and a containers.conf for this machine."""

    conf: Path
    store: Path = CACHE / "containers"
    runroot: Path = Path("/run/k8s-cluster-dns/containers")
    tmpdir: Path = Path("/run/k8s-cluster-dns/libpod")

    @classmethod
    def for_this_machine(cls, workdir: Path) -> Podman:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        # runc sets the limits on the container's first process from outside (prlimit), which
        # needs them within what podman's own child has: the hard limits, and for processes
        # no more than pid_max (podman lowers its children's limit to that).
        nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], _pid_max())
        nofile = nofile if nofile != resource.RLIM_INFINITY else 1048576
        conf = workdir / "containers.conf"
        conf.write_text(
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            "[engine]\n"
            'runtime = "runc"\n'  # crun refuses hybrid (v1 + v2) cgroup hierarchies
            'cgroup_manager = "cgroupfs"\n'  # no systemd to ask
            'events_logger = "file"\n'
        )
        return cls(conf)

    def command(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.store), "--runroot", str(self.runroot),
                "--tmpdir", str(self.tmpdir), "--storage-driver", "overlay", *args]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def run(self, *args: str, timeout: float = 120, check: bool = True,
            ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.command(*args), capture_output=True, text=True,
                              env=self.env, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args[:3])}... failed ({done.returncode}):\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def inspect(self, image: str) -> dict[str, Any]:
        found = json.loads(self.run("image", "inspect", image).stdout)
        assert isinstance(found, list) and len(found) == 1
        return dict(found[0])


# ---- the stand-in base ------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    name: str
    key: str
    python_version: str
    seconds: float  # spent making it in this run (0 when it was ready)
    made_from: str  # "store", "cache" or "debian"


SUITE, VARIANT = "bookworm", "minbase"


def _packages(minor: str) -> list[str]:
    # The interpreter, pip and venv; and what the official image adds to debian:bookworm-slim.
    return [f"python{minor}", "python3-pip", f"python{minor}-venv",
            "ca-certificates", "netbase", "tzdata"]


def _recipe(minor: str) -> dict[str, object]:
    return {
        "suite": SUITE,
        "variant": VARIANT,
        "packages": _packages(minor),
        "dpkg": list(_SLIM_DPKG_OPTIONS),
        "customize": _CUSTOMIZE.format(minor=minor),
        "revision": 1,
    }


def standin_key(minor: str) -> str:
    text = json.dumps(_recipe(minor), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _make_rootfs(minor: str, tarball: Path) -> str:
    """mmdebstrap the recipe into ``tarball``; return the interpreter's version."""
    with tempfile.TemporaryDirectory(dir=tarball.parent) as scratch:
        version_file = Path(scratch) / "python-version"
        partial = Path(scratch) / "rootfs.tar"
        command = ["mmdebstrap", "--quiet", f"--variant={VARIANT}",
                   "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
                   "--aptopt=APT::Install-Recommends \"false\"",
                   f"--include={','.join(_packages(minor))}",
                   *(f"--dpkgopt={option}" for option in _SLIM_DPKG_OPTIONS),
                   f"--customize-hook={_CUSTOMIZE.format(minor=minor)}",
                   SUITE, str(partial)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False,
                              env={**os.environ, "STANDIN_PYTHON_VERSION_FILE": str(version_file)})
        if done.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        version = version_file.read_text().strip()
        tarball.with_suffix(".json").write_text(json.dumps({"python_version": version}))
        partial.rename(tarball)
    return version


def standin_base(podman: Podman, minor: str) -> Base:
    """The stand-in for ``python:{minor}-slim-bookworm`` in podman's store, made if needed."""
    name = f"docker.io/library/python:{minor}-slim-bookworm"
    key = standin_key(minor)
    started = time.monotonic()
    with _locked(CACHE / "bases" / ".lock"):
        exists = podman.run("image", "exists", name, check=False).returncode == 0
        if exists:
            found = podman.inspect(name)
            labels = found.get("Labels") or {}
            if labels.get(STANDIN_LABEL) == key:
                version = str(labels.get(f"{STANDIN_LABEL}.python", ""))
                return Base(name, key, version, 0.0, "store")
        tarball = CACHE / "bases" / f"python-{minor}-slim-bookworm-{key}.tar"
        made_from = "cache"
        if tarball.exists() and tarball.with_suffix(".json").exists():
            version = json.loads(tarball.with_suffix(".json").read_text())["python_version"]
        else:
            made_from = "debian"
            version = _make_rootfs(minor, tarball)
        podman.run(
            "import", "--quiet",
            "--change", "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change", "ENV LANG=C.UTF-8",
            "--change", f"ENV PYTHON_VERSION={version}",
            "--change", f"LABEL {STANDIN_LABEL}={key}",
            "--change", f"LABEL {STANDIN_LABEL}.python={version}",
            "--change", 'CMD ["python3"]',
            str(tarball), name, timeout=300,
        )
    return Base(name, key, version, time.monotonic() - started, made_from)


# ---- the image --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    id: str
    size: int  # bytes, as podman counts them (all layers, uncompressed)
    base_size: int
    seconds: float
    log: str


def build(podman: Podman, base: Base, *, tag: str = "localhost/cluster-dns-py:test") -> Image:
    """``podman build`` of the Dockerfile as it is, on the stand-in base, nothing pulled.

    RUN steps get the host's network (apt-get and pip need it) and the host's CA bundle (pip
    as Debian packages it trusts the system bundle, and this machine's egress is verified by a
    CA only the host's bundle has)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        iidfile = Path(scratch) / "iid"
        volumes = []
        if HOST_CA_BUNDLE.exists():
            volumes = ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
        done = podman.run("build", "--pull=never", "--network", "host", "--layers",
                          *volumes, "--iidfile", str(iidfile), "--tag", tag,
                          "--file", str(ROOT / "Dockerfile"), str(ROOT),
                          timeout=900, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"podman build failed:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}")
        image_id = iidfile.read_text().strip().removeprefix("sha256:")
    size = int(podman.inspect(image_id)["Size"])
    base_size = int(podman.inspect(base.name)["Size"])
    # Earlier builds' images lose their tag to this one, and each build leaves its builder
    # stage untagged: drop those after a day, so the store stays bounded and recent layers
    # stay cached.
    podman.run("image", "prune", "--force", "--filter", "until=24h", check=False)
    return Image(image_id, size, base_size, time.monotonic() - started,
                 done.stdout + done.stderr)
