"""A service-account volume laid out and updated the way the kubelet does it.

The kubelet writes a projected volume (``token``, ``ca.crt``, ``namespace``) with its atomic
writer: the files live in a hidden timestamped directory, ``..data`` is a symlink to it, and
each visible name is a symlink through ``..data``. An update writes a new timestamped
directory, points a temporary symlink at it and renames that over ``..data`` (one atomic
step), then removes the old directory. So a reader that opens ``token`` by name sees the old
file or the new one, never half of one, and the new one is a different inode.

With ``owner`` (the pod's ``runAsUser``), the token is owned by that user with mode 0600 and the
other files are 0644, as the kubelet sets them when ``runAsUser`` is set and ``fsGroup`` is not.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from pathlib import Path

_PRIVATE = {"token"}


class ProjectedVolume:
    def __init__(self, path: Path, files: dict[str, bytes], *, owner: int | None = None) -> None:
        self.path = path
        self.owner = owner
        self._serial = itertools.count()
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
        self._write(files)
        for name in files:
            (path / name).symlink_to(Path("..data") / name)

    def update(self, files: dict[str, bytes]) -> None:
        """Replace every file in one atomic step (the names must stay the same)."""
        self._write(files)

    def _write(self, files: dict[str, bytes]) -> None:
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
        version = self.path / f"..{stamp}.{time.time_ns() % 10**9:09d}{next(self._serial)}"
        version.mkdir(mode=0o755)
        version.chmod(0o755)
        for name, content in files.items():
            target = version / name
            target.write_bytes(content)
            target.chmod(0o600 if name in _PRIVATE and self.owner is not None else 0o644)
            if self.owner is not None and name in _PRIVATE:
                os.chown(target, self.owner, self.owner)
        data, staged = self.path / "..data", self.path / "..data_tmp"
        previous = data.resolve() if data.is_symlink() else None
        staged.symlink_to(version.name)
        staged.rename(data)
        if previous is not None:
            shutil.rmtree(previous)
