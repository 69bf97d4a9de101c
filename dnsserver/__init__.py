"""Kubernetes cluster DNS server: the I/O around :mod:`zones`."""

__version__ = "0.1.0"
