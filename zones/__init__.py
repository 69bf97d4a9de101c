"""Pure cluster-zone logic: Kubernetes objects in, pre-encoded DNS answers out.

Nothing here does I/O: no sockets, no asyncio, no HTTP, and nothing imports ``dnsserver``.
"""
