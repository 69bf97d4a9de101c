"""The in-cluster token as the server sends it (``dnsserver.cluster.watch.ServiceAccountToken``).

The token file goes through the kubelet's own update steps (``serviceaccount.ProjectedVolume``)
and the token is read back the way a request reads it: through the client configuration's
``auth_settings()``, which calls the refresh hook. The whole path (HTTPS, the API refusing a
revoked token, the server in its image) is ``test_image.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from kubernetes import client
from serviceaccount import ProjectedVolume

from dnsserver.cluster.watch import ServiceAccountToken


def _volume(path: Path, token: bytes) -> ProjectedVolume:
    return ProjectedVolume(path, {"token": token, "ca.crt": b"CA\n", "namespace": b"kube-system"})


def _configuration(token_file: Path) -> client.Configuration:
    """Set up as ``api_client`` does after the client's in-cluster loader."""
    configuration = client.Configuration()
    token = ServiceAccountToken(token_file)
    token(configuration)
    configuration.refresh_api_key_hook = token
    return configuration


def _sent(configuration: client.Configuration) -> str:
    return str(configuration.auth_settings()["BearerToken"]["value"])


def test_a_token_file_ending_in_a_newline_is_sent_without_it(tmp_path: Path) -> None:
    volume = _volume(tmp_path / "sa", b"first.token\n")
    assert _sent(_configuration(volume.path / "token")) == "Bearer first.token"


def test_a_rotated_token_is_sent_from_the_next_request_on(tmp_path: Path) -> None:
    volume = _volume(tmp_path / "sa", b"first\n")
    configuration = _configuration(volume.path / "token")
    assert _sent(configuration) == "Bearer first"
    volume.update({"token": b"second", "ca.crt": b"CA\n", "namespace": b"kube-system"})
    assert _sent(configuration) == "Bearer second"
    # Rewritten in place (same inode): the size or the modification time tells.
    real = (volume.path / "token").resolve()
    real.write_bytes(b"third-token\r\n")
    assert _sent(configuration) == "Bearer third-token"


def test_an_unreadable_token_file_keeps_the_last_token_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    volume = _volume(tmp_path / "sa", b"kept\n")
    configuration = _configuration(volume.path / "token")
    assert _sent(configuration) == "Bearer kept"
    (volume.path / "..data").unlink()  # the symlink gone: the name no longer resolves
    with caplog.at_level(logging.WARNING, logger="dnsserver.kube"):
        assert _sent(configuration) == "Bearer kept"
        assert _sent(configuration) == "Bearer kept"
    warnings = [r for r in caplog.records if "service-account token" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
