"""CoreDNS's ``errors``: log the errors of answering, one line each or consolidated.

An error is what a plugin could not do for a query: here, forwarding (every upstream failed,
``max_concurrent`` reached, every upstream down with ``failfast_all_unhealthy_upstreams``, a
name no ``forward`` line takes). Without ``errors`` nothing is logged for them, as in CoreDNS;
with it each one is a line ``RCODE NAME TYPE: TEXT`` (the rcode as a number, the name lower
case and fully qualified), unless a ``consolidate`` pattern matches the text: then the
pattern counts its matches and, DURATION after the first, logs once how many there were.

``stacktrace`` asks CoreDNS to log the stack of a recovered panic. A bug while answering is
always logged here with its traceback (once per place), so the option changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from dnsserver.config.directives import (
    BadValue,
    Directive,
    ParseContext,
    arity,
    duration,
    options,
)

log = logging.getLogger("dnsserver.errors")

LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO,
          "debug": logging.DEBUG}


@dataclass(frozen=True, slots=True)
class Consolidate:
    """``consolidate DURATION REGEXP [LEVEL]``."""

    period: float
    pattern: str
    level: str = "error"


@dataclass(frozen=True, slots=True)
class ErrorsOptions:
    consolidate: tuple[Consolidate, ...] = ()
    stacktrace: bool = False


def parse(directive: Directive, context: ParseContext) -> ErrorsOptions:
    """``errors [stdout] { stacktrace; consolidate DURATION REGEXP [LEVEL] }``."""
    args = arity(directive, "errors", 0, 1)
    if args and args[0].text != "stdout":
        raise BadValue.at(args[0], f"errors: invalid log file {args[0].text!r} (only stdout)")
    rules: list[Consolidate] = []
    stacktrace = False

    def consolidate(option: Directive) -> None:
        values = arity(option, "errors consolidate", 2, 3)
        period = duration(values[0], "errors consolidate")
        try:
            re.compile(values[1].text)
        except re.error as exc:
            raise BadValue.at(values[1], f"errors consolidate: {values[1].text!r} is not a "
                              f"regular expression: {exc}") from None
        level = values[2].text if len(values) > 2 else "error"
        if level not in LEVELS:
            raise BadValue.at(values[2], f"errors consolidate: unknown log level {level!r} "
                              f"(one of {', '.join(LEVELS)})")
        rules.append(Consolidate(period, values[1].text, level))

    def set_stacktrace(option: Directive) -> None:
        nonlocal stacktrace
        stacktrace = True

    options(directive, context, "errors", {"consolidate": consolidate,
                                            "stacktrace": set_stacktrace})
    return ErrorsOptions(tuple(rules), stacktrace)


def go_duration(seconds: float) -> str:
    """``seconds`` as Go prints a duration: ``30s``, ``5m0s``, ``1h0m0s``, ``1.5s``."""
    whole = int(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"


class ErrorLog:
    """Where errors are reported; logs them as :class:`ErrorsOptions` say."""

    def __init__(self, options: ErrorsOptions,
                 later: Callable[[float, Callable[[], None]], object] | None = None) -> None:
        self._rules = [(rule, re.compile(rule.pattern)) for rule in options.consolidate]
        self._counts = [0] * len(self._rules)
        self._later = later

    def report(self, rcode: int, name: str, qtype: str, text: str) -> None:
        for index, (_, pattern) in enumerate(self._rules):
            if pattern.search(text):
                self._count(index)
                return
        log.error("%d %s %s: %s", rcode, name, qtype, text)

    def _count(self, index: int) -> None:
        self._counts[index] += 1
        if self._counts[index] == 1:
            later = self._later or asyncio.get_running_loop().call_later
            later(self._rules[index][0].period, lambda: self.flush(index))

    def flush(self, index: int | None = None) -> None:
        """Log the pending count of one pattern (or of every pattern, at shutdown)."""
        for i in range(len(self._rules)) if index is None else (index,):
            count, self._counts[i] = self._counts[i], 0
            if count:
                rule = self._rules[i][0]
                log.log(LEVELS[rule.level], "%d errors like '%s' occurred in last %s", count,
                        rule.pattern, go_duration(rule.period))
