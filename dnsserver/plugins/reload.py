"""CoreDNS's ``reload`` plugin: its options and their parser.

::

    reload [INTERVAL [JITTER]]    # 30s 15s; at least 2s and 1s; a jitter over half is halved

The server polls the Corefile every INTERVAL ± JITTER and reloads it when its contents change
(:mod:`dnsserver.serve.app`); one per process.
"""

from __future__ import annotations

from dnsserver.config import directives
from dnsserver.config.directives import BadValue, Directive, ParseContext, arity, duration
from dnsserver.config.settings import ReloadConfig


def parse(directive: Directive, context: ParseContext) -> ReloadConfig:
    """``reload [INTERVAL [JITTER]]``: 30s and 15s; at least 2s and 1s; jitter ≤ half."""
    args = arity(directive, "reload", 0, 2)
    directives.options(directive, context, "reload", {})
    interval = duration(args[0], "reload interval") if args else 30.0
    jitter = duration(args[1], "reload jitter") if len(args) > 1 else 15.0
    if interval < 2:
        raise BadValue.at(args[0], "reload: the interval must be at least 2s")
    if jitter < 1:
        raise BadValue.at(args[1], "reload: the jitter must be at least 1s")
    if jitter > interval / 2:
        context.warn(directive.name, f"reload: jitter {jitter:g}s is over half the interval; "
                     f"using {interval / 2:g}s")
        jitter = interval / 2
    return ReloadConfig(interval, jitter)
