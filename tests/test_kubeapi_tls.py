"""The API double over HTTPS and with bearer tokens, as a pod's client meets the real one.

The official client, set up from the double's kubeconfig (its CA included), lists over HTTPS;
a client that does not trust that CA is refused at the handshake; with ``require_token`` only
accepted tokens get through (401 ``Unauthorized`` otherwise), and a rotated token's old value
keeps working until its revocation. Watches over TLS end when the client leaves and when the
double cuts them, as plain ones do.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubeapi import KubeAPIServer
from kubernetes import client, config


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _get(api: KubeAPIServer, path: str, token: str | None) -> tuple[int, Any]:
    context = ssl.create_default_context(cafile=str(api.ca_file))
    connection = http.client.HTTPSConnection(api.host, api.port, context=context, timeout=5)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_the_official_client_lists_over_https_with_the_kubeconfig_ca(tmp_path: Path) -> None:
    with KubeAPIServer(tls=True, require_token=True) as api:
        api.apply({"kind": "Namespace", "metadata": {"name": "default"}})
        assert api.url.startswith("https://127.0.0.1:")
        configuration = client.Configuration()
        config.load_kube_config(config_file=api.write_kubeconfig(tmp_path / "kubeconfig"),
                                client_configuration=configuration)
        assert configuration.ssl_ca_cert == str(api.ca_file)
        with client.ApiClient(configuration) as api_client:
            names = [ns.metadata.name for ns in client.CoreV1Api(api_client).list_namespace().items]
        assert names == ["default"]
        assert api.unauthorized == []


def test_a_client_without_the_ca_is_refused_at_the_handshake() -> None:
    with KubeAPIServer(tls=True) as api:
        connection = http.client.HTTPSConnection(api.host, api.port,
                                                 context=ssl.create_default_context(), timeout=5)
        with pytest.raises(ssl.SSLCertVerificationError):
            connection.request("GET", "/api/v1/namespaces")
        connection.close()
        assert _get(api, "/version", None)[0] == 200  # the server is still fine


def test_only_accepted_tokens_pass_and_a_rotated_one_is_revoked_later() -> None:
    with KubeAPIServer(tls=True, require_token=True, token="old") as api:
        assert _get(api, "/api/v1/services", "old")[0] == 200
        status, body = _get(api, "/api/v1/services", None)
        assert (status, body["reason"], body["code"]) == (401, "Unauthorized", 401)
        assert _get(api, "/api/v1/services", "guess")[0] == 401
        assert api.rotate_token("new", revoke_after=0.5) == "old"
        assert api.token == "new"
        assert _get(api, "/api/v1/services", "new")[0] == 200
        assert _get(api, "/api/v1/services", "old")[0] == 200  # still valid for now
        _wait_for(lambda: _get(api, "/api/v1/services", "old")[0] == 401)
        assert _get(api, "/api/v1/services", "new")[0] == 200
        assert api.unauthorized[:2] == ["", "guess"] and set(api.unauthorized[2:]) == {"old"}


def test_without_require_token_any_token_passes_as_before() -> None:
    with KubeAPIServer(tls=True) as api:
        assert _get(api, "/api/v1/services", "anything")[0] == 200
        assert _get(api, "/api/v1/services", None)[0] == 200


def test_tls_watches_end_when_the_client_leaves_and_when_cut() -> None:
    with KubeAPIServer(tls=True, require_token=True) as api:
        context = ssl.create_default_context(cafile=str(api.ca_file))
        path = "/api/v1/services?watch=true&resourceVersion=0"
        for ending in ("client leaves", "server cuts"):
            connection = http.client.HTTPSConnection(api.host, api.port, context=context,
                                                     timeout=5)
            connection.request("GET", path, headers={"Authorization": f"Bearer {api.token}"})
            response = connection.getresponse()
            assert response.status == 200
            api.wait_for_watches("services", 1)
            if ending == "client leaves":
                connection.close()
            else:
                assert api.drop_watches() == 1
                with pytest.raises((http.client.IncompleteRead, OSError)):
                    response.read()
                connection.close()
            _wait_for(lambda: api.open_watches() == 0)
