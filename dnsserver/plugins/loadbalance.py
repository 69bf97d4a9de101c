"""CoreDNS's ``loadbalance`` plugin: its options and their parser.

::

    loadbalance [round_robin]     # weighted is not supported; nor is the prefer option

Addresses in A and AAAA answers change order from reply to reply (the zone keeps the rotations
pre-encoded, :mod:`zones.records`; forwarded replies rotate in :mod:`dnsserver.serve.handler`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dnsserver.config import directives
from dnsserver.config.directives import BadValue, Directive, ParseContext, Unsupported, arity


@dataclass(frozen=True, slots=True)
class LoadbalanceOptions:
    """``loadbalance``: the policy (the only one served)."""

    policy: str = "round_robin"


def parse(directive: Directive, context: ParseContext) -> LoadbalanceOptions | None:
    """``loadbalance [round_robin]``; None when ``weighted`` is left out (``--lenient``)."""
    args = directive.args
    if args and args[0].text == "weighted":
        context.soft(Unsupported.at(args[0], "loadbalance: weighted is not supported"))
        return None
    arity(directive, "loadbalance", 0, 1)
    if args and args[0].text != "round_robin":
        raise BadValue.at(args[0], f"loadbalance: {args[0].text!r} is not round_robin")
    directives.options(directive, context, "loadbalance", {}, unsupported=("prefer",))
    return LoadbalanceOptions()
