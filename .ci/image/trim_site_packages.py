"""Trim the image's installed packages to what the server loads, then compile them. The
Dockerfile runs this right after ``pip install --no-compile``, in the same step, so nothing
deleted here lands in a layer, and no time goes into compiling what is deleted.

Our direct dependencies ship whole, with one exception: the Kubernetes client. The server
builds one ``ApiClient`` from ``kubernetes.client`` and ``kubernetes.config`` and sends raw GETs
through its REST layer, so of that ~128 MB package it needs the few dozen modules those two
imports load. The generated API classes and models (loaded on attribute access only) and the
asyncio client ``kubernetes.aio`` are never loaded. Distributions that only the unloaded parts
import (aiohttp and its own dependencies) are removed whole, metadata included, so the image's
package list stays true.

Only Python code (and the typing markers of packages that go) is deleted: data files (a CA
bundle, time zones) stay. What is left of our distributions is compiled to bytecode, as pip
would have done (the root filesystem is read-only at run time). The run ends by doing what the
server does with the client in a fresh interpreter, so a trim that went too far fails the
build.
"""

from __future__ import annotations

import compileall
import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

PROJECT = "k8s-cluster-dns"
# The package trimmed to its loaded modules, and the imports the server makes of it.
TRIMMED = "kubernetes"
ENTRY_POINTS = ("kubernetes.client", "kubernetes.config")
# What the server does with them, so that modules loaded on first use are loaded here too.
EXERCISE = """
from kubernetes import client, config
api = client.ApiClient(client.Configuration())
api.param_serialize("GET", "/api/v1/services", query_params=[("limit", 1)],
                    header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
"""
CODE_SUFFIXES = (".py", ".pyc", ".so")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(name: str) -> set[str]:
    """What a distribution requires, without extras (our test tools are not installed)."""
    names = set()
    for requirement in importlib.metadata.requires(name) or []:
        if "extra ==" in requirement.partition(";")[2]:
            continue
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert match, requirement
        names.add(canonical(match.group(0)))
    return names


def installed_closure(name: str) -> set[str]:
    """Our project and everything its installation brought, by canonical name. Only these can be
    removed: what the base image has (pip, for one) is not ours to touch."""
    seen, todo = set(), [canonical(name)]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        try:
            found = requirements(current)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement whose marker excluded it here
        seen.add(current)
        todo.extend(found - seen)
    return seen


def loaded_files(site: Path) -> set[Path]:
    for name in ENTRY_POINTS:
        importlib.import_module(name)
    exec(compile(EXERCISE, "<trim exercise>", "exec"), {})
    files = set()
    for module in list(sys.modules.values()):
        found = getattr(module, "__file__", None)
        if found and Path(found).resolve().is_relative_to(site):
            files.add(Path(found).resolve())
    return files


def module_source(path: Path) -> Path:
    """The source a file belongs to: itself, or for ``__pycache__/x.cpython-311.pyc``, ``x.py``."""
    if path.suffix == ".pyc" and path.parent.name == "__pycache__":
        return path.parent.parent / (path.name.split(".")[0] + ".py")
    return path


def needed(path: Path, loaded: set[Path]) -> bool:
    """Data files stay; modules stay if loaded; typing markers stay if their package was."""
    if path.name.endswith(CODE_SUFFIXES):
        return module_source(path) in loaded
    if path.name == "py.typed" or path.suffix == ".pyi":
        return path.parent / "__init__.py" in loaded
    return True


def size(paths: list[Path]) -> int:
    return sum(path.stat().st_size for path in paths if path.is_file() and not path.is_symlink())


def distribution_files(dist: importlib.metadata.Distribution) -> list[Path]:
    return [Path(str(dist.locate_file(entry))).resolve() for entry in dist.files or []]


def prune_empty_parents(paths: list[Path], site: Path) -> None:
    for directory in sorted({parent for path in paths for parent in path.parents
                             if parent.is_relative_to(site) and parent != site},
                            key=lambda d: len(d.parts), reverse=True):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()


def compile_distributions(site: Path, names: set[str]) -> None:
    """Bytecode for every module of these distributions, top-level folders in parallel."""
    tops = set()
    for dist in importlib.metadata.distributions(path=[str(site)]):
        if canonical(dist.metadata["Name"]) in names:
            for entry in dist.files or []:
                first = Path(str(entry)).parts[0]
                if first != ".." and not first.endswith(".dist-info"):
                    tops.add(site / first)
    for top in sorted(tops):
        if top.is_dir():
            ok = compileall.compile_dir(top, quiet=1, workers=0)
        elif top.suffix == ".py" and top.is_file():
            ok = compileall.compile_file(top, quiet=1)
        else:
            continue
        if not ok:
            raise SystemExit(f"trim: cannot compile {top}")


def main() -> int:
    trimmed_package = importlib.import_module(TRIMMED)
    site = Path(str(trimmed_package.__file__)).resolve().parent.parent
    keep = loaded_files(site)
    ours = installed_closure(PROJECT)
    wanted = requirements(PROJECT) | {canonical(PROJECT)}

    for dist in importlib.metadata.distributions(path=[str(site)]):
        name = canonical(dist.metadata["Name"])
        files = distribution_files(dist)
        if name not in ours or name in wanted or keep.intersection(files):
            continue
        print(f"trim: removing {dist.metadata['Name']} {dist.version} "
              f"({size(files) / 1e6:.1f} MB): nothing the server loads imports it")
        for path in files:  # the RECORD lists the metadata and the bytecode too
            path.unlink(missing_ok=True)
        prune_empty_parents(files, site)

    package_dir = site / TRIMMED
    sources = {path for path in keep if path.is_relative_to(package_dir)}
    every = [path for path in package_dir.rglob("*") if path.is_file()]
    before = size(every)
    unloaded = [path for path in every if not needed(path, sources)]
    for path in unloaded:
        path.unlink()
    prune_empty_parents(unloaded, site)
    after = size([path for path in package_dir.rglob("*") if path.is_file()])
    print(f"trim: {TRIMMED} {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB "
          f"({len(sources)} modules loaded by {', '.join(ENTRY_POINTS)})")

    compile_distributions(site, ours)

    # A fresh interpreter must still do what the server does with the client.
    subprocess.run([sys.executable, "-c", EXERCISE], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
