"""The HTTP endpoints' plugins, ``health``, ``ready`` and ``prometheus``: options and parsers.

::

    health [ADDRESS] {            # :8080, GET /health
        lameduck DURATION         # keep answering this long after SIGTERM, /ready at 503
    }
    ready [ADDRESS] {             # :8181, GET /ready once the cluster is synced
        monitor until-ready|continuously
    }
    prometheus [ADDRESS]          # localhost:9153, GET /metrics

Each has one instance per process: the Corefile's builder accepts the same options again from
another server block and refuses different ones. :mod:`dnsserver.serve.http` serves them.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnsserver.config import directives
from dnsserver.config.directives import BadValue, Directive, ParseContext, Token, arity, duration
from dnsserver.config.settings import ConfigError, HealthConfig, split_host_port


@dataclass(frozen=True, slots=True)
class ReadyOptions:
    """``ready``: where ``/ready`` listens."""

    address: str = ":8181"


@dataclass(frozen=True, slots=True)
class PrometheusOptions:
    """``prometheus``: where ``/metrics`` listens."""

    address: str = "localhost:9153"  # CoreDNS's default


def parse_health(directive: Directive, context: ParseContext) -> HealthConfig:
    """``health [ADDRESS] { lameduck DURATION }``."""
    args = arity(directive, "health", 0, 1)
    address = _http_address(args[0], "health") if args else HealthConfig().address
    lameduck = 0.0

    def set_lameduck(option: Directive) -> None:
        nonlocal lameduck
        (value,) = arity(option, "health lameduck", 1, 1)
        lameduck = duration(value, "health lameduck")

    directives.options(directive, context, "health", {"lameduck": set_lameduck})
    return HealthConfig(address, lameduck)


def parse_ready(directive: Directive, context: ParseContext) -> ReadyOptions:
    """``ready [ADDRESS] { monitor until-ready|continuously }``."""
    args = arity(directive, "ready", 0, 1)

    def monitor(option: Directive) -> None:
        (mode,) = arity(option, "ready monitor", 1, 1)
        if mode.text not in ("until-ready", "continuously"):
            raise BadValue.at(mode, f"ready monitor: {mode.text!r} is not until-ready or "
                              "continuously")
        # Either mode gives the same answers here: /ready is worked out on every request,
        # and once synced the cluster stays ready (the last state is served while the API
        # is away), so "until-ready" never has a later state to stop watching.

    directives.options(directive, context, "ready", {"monitor": monitor})
    return ReadyOptions(_http_address(args[0], "ready")) if args else ReadyOptions()


def parse_prometheus(directive: Directive, context: ParseContext) -> PrometheusOptions:
    """``prometheus [ADDRESS]``."""
    args = arity(directive, "prometheus", 0, 1)
    directives.options(directive, context, "prometheus", {})
    return PrometheusOptions(_http_address(args[0], "prometheus")) if args else PrometheusOptions()


def _http_address(token: Token, what: str) -> str:
    try:
        split_host_port(token.text)
    except ConfigError as exc:
        raise BadValue.at(token, f"{what}: {exc}") from None
    return token.text
