"""The example's fixtures: the cluster is this application's own manifests folder."""

from __future__ import annotations

from pathlib import Path

import pytest

import dnsserver.client.pytest_plugin

MANIFESTS = Path(__file__).parent / "manifests"


def pytest_configure(config: pytest.Config) -> None:
    # Installed, the package registers the plugin itself (entry point "cluster_dns"); from a
    # source checkout it may not be, so register it here once.
    manager = config.pluginmanager
    plugin = dnsserver.client.pytest_plugin
    if not manager.has_plugin("cluster_dns") and not manager.is_registered(plugin):
        manager.register(plugin, "cluster_dns")


@pytest.fixture
def cluster_dns_manifests() -> list[Path]:
    return [MANIFESTS]
