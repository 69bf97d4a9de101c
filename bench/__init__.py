"""Benchmarks of the DNS server: synthetic clusters, zone files for knotd, and a QPS run.

Not part of the package and not a timed test: run ``python -m bench.qps`` (see README.md).
"""
