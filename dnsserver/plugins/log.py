"""CoreDNS's ``log`` plugin: one line per query, in its Common Log Format::

    10.244.0.5:50759 - 29008 "A IN kubernetes.default.svc.cluster.local. udp 54 false 512"
        NOERROR qr,aa,rd 106 0.000123s       (one line)

Its directive, read by :func:`parse` (server blocks' log zones add up in the Corefile's
builder, which requires them all to log the same format and classes)::

    log [NAMES...] [FORMAT] {     # the block's zones; {common}, {combined} or a format
        class CLASSES...          # success, denial, error, all (the default)
    }

Only built when the query log is on; then each query is parsed again here (the slow path),
so a server without ``log`` does no per-query work for it.
"""

from __future__ import annotations

import logging
import re

from dnsserver.config import directives
from dnsserver.config.directives import BadValue, Directive, ParseContext, arity
from dnsserver.config.settings import (
    COMBINED_LOG_FORMAT,
    COMMON_LOG_FORMAT,
    LOG_CLASSES,
    LogConfig,
    name_in_zone,
)
from dnsserver.serve import wire
from dnsserver.serve.metrics import NAMED_TYPES, RCODES
from zones import names

log = logging.getLogger("dnsserver.query")

_CLASSES = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}
_FLAGS = ((0x8000, "qr"), (0x0400, "aa"), (0x0200, "tc"), (0x0100, "rd"), (0x0080, "ra"),
          (0x0020, "ad"), (0x0010, "cd"))
_PLACEHOLDER = re.compile(r"\{[^{}]+\}")


class QueryLog:
    def __init__(self, config: LogConfig) -> None:
        self.config = config
        classes = set(config.classes)
        self._all = "all" in classes
        self._classes = classes

    def record(self, data: bytes, reply: bytes | None, tcp: bool, client: str, port: int,
               seconds: float) -> None:
        """Log one exchange if it is under the configured zones and of a logged class."""
        try:
            query = wire.parse_query(data)
        except (wire.FormError, IndexError, ValueError):
            return
        name = _text_name(query.name)
        if not any(name_in_zone(name, zone) for zone in self.config.zones):
            return
        rcode = reply[3] & 0x0F if reply is not None and len(reply) >= 12 else -1
        if not self._all and _response_class(rcode, reply) not in self._classes:
            return
        values = {
            "remote": client, "port": str(port), ">id": str(int.from_bytes(data[:2], "big")),
            "type": NAMED_TYPES.get(query.qtype, f"TYPE{query.qtype}"),
            "class": _CLASSES.get(query.qclass, f"CLASS{query.qclass}"),
            "name": name, "proto": "tcp" if tcp else "udp", "size": str(len(data)),
            ">do": "true" if query.edns is not None and query.edns.do else "false",
            ">bufsize": str(query.edns.udp_size if query.edns is not None else 512),
            "rcode": RCODES.get(rcode, "-") if rcode >= 0 else "-",
            ">rflags": _flags(reply), "rsize": str(len(reply) if reply is not None else 0),
            "duration": f"{seconds:.9f}".rstrip("0").rstrip(".") + "s",
            ">opcode": str((data[2] >> 3) & 0x0F),
            "/log/class": _response_class(rcode, reply),
        }
        log.info(_PLACEHOLDER.sub(lambda m: values.get(m.group()[1:-1], m.group()),
                                  self.config.format))


def _text_name(raw: bytes) -> str:
    labels = names.wire_labels(raw)
    return ".".join(label.decode("ascii", "replace") for label in labels) + "."


def _flags(reply: bytes | None) -> str:
    if reply is None or len(reply) < 4:
        return "-"
    bits = int.from_bytes(reply[2:4], "big")
    return ",".join(text for bit, text in _FLAGS if bits & bit) or "-"


def _response_class(rcode: int, reply: bytes | None) -> str:
    """CoreDNS's classes: success (NOERROR with answers), denial (NXDOMAIN, NODATA), error."""
    if rcode == 3:
        return "denial"
    if rcode == 0 and reply is not None:
        return "success" if int.from_bytes(reply[6:8], "big") else "denial"
    return "error"


def parse(directive: Directive, context: ParseContext) -> LogConfig:
    """``log [NAMES...] [FORMAT] { class CLASSES... }``: one server block's query log."""
    args = list(directive.args)
    log_format = COMMON_LOG_FORMAT
    if args and "{" in args[-1].text:
        last = args.pop().text
        log_format = {"{common}": COMMON_LOG_FORMAT,
                      "{combined}": COMBINED_LOG_FORMAT}.get(last, last)
    zones = directives.zone_list(args, "log", refuse_duplicates=True) or context.zones
    classes: tuple[str, ...] = ("all",)

    def set_classes(option: Directive) -> None:
        nonlocal classes
        values = arity(option, "log class", 1, None)
        for token in values:
            if token.text not in LOG_CLASSES:
                raise BadValue.at(token, f"log class: {token.text!r} is not one of "
                                  f"{', '.join(LOG_CLASSES)}")
        named = tuple(dict.fromkeys(t.text for t in values))
        classes = ("all",) if "all" in named else named

    directives.options(directive, context, "log", {"class": set_classes})
    return LogConfig(zones, log_format, classes)
