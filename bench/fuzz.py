"""Packet fuzzing of :meth:`dnsserver.serve.handler.Handler.handle`, in-process.

    python -m bench.fuzz                       # atheris (coverage-guided) if installed, 10 min
    python -m bench.fuzz --cases 2000000       # stop after this many cases
    python -m bench.fuzz --plain --seconds 60  # the seeded generators in a loop, no atheris

The handler is built as :class:`dnsserver.serve.app.DnsServer` builds it, from the bundled example
cluster plus one big headless Service (:func:`big_headless`), so that truncation is reached too.
Every case is checked by :class:`Checker` against properties that hold for any input:

* nothing escapes, and no bug is swallowed: the handler's "bug ... SERVFAIL" path counts as a
  failure here;
* a message of at least 12 bytes with QR=0 gets a reply; a shorter one, or a response, gets none;
* a reply has the query's ID, QR=1 and its opcode, and parses with ``dns.message.from_wire``;
* a reply with a question echoes the query's question byte for byte (the client's case kept),
  and carries an OPT exactly when the query did (RFC 6891 §7), with the DO bit mirrored;
* a UDP reply is at most max(512, the query's advertised EDNS size) bytes; a TCP one 65535.

The generators (:func:`random_case`) make valid dnspython-built queries (names from the zone and
random labels in random case, every qtype, EDNS on/off with random versions, sizes, options and
DO bit), cut them at a random length, mutate their bytes, and build hostile shapes by hand
(:func:`hostile`): compression loops and forward pointers in the question, labels over 63,
names over 255 octets, count lies, several OPT records. The hostile shapes know the rcode they
must get. ``tests/test_fuzz.py`` runs these generators and hypothesis strategies in CI; this
script runs them (or atheris's mutations of them) for a long time.

With atheris, ``dnsserver`` and ``zones`` are imported under ``atheris.instrument_imports()``
and a seed corpus of generated cases is written to a temporary folder. Crashes (a property
broken) are written under ``--artifacts`` (default: a temporary folder), never into the tree.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

if TYPE_CHECKING:
    from dnsserver.serve.handler import Handler

CLIENT = "10.0.0.1"
HEADER = struct.Struct(">HHHHHH")
FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, BADVERS = 1, 2, 3, 4, 5, 16
BIG_NAMESPACE = "fuzz"
BIG_SERVICE = "big"
BIG_ENDPOINTS = 200
EXTRA_NAMES = (
    "cluster.local", "svc.cluster.local", "pod.cluster.local", "default.svc.cluster.local",
    "missing.default.svc.cluster.local", "10-244-1-10.default.pod.cluster.local",
    "1-2-3-4.shop.pod.cluster.local", "_http._tcp.web.default.svc.cluster.local",
    "_x._udp.web.default.svc.cluster.local", "10.0.96.10.in-addr.arpa", "in-addr.arpa",
    "ip6.arpa", "www.example.com", ".", "dns.cluster.local", "ns.dns.cluster.local",
    "web-0.web.default.svc.cluster.local", "h-7.big.fuzz.svc.cluster.local",
    "big.fuzz.svc.cluster.local", "a.b.c.d.e.f.svc.cluster.local",
)
QTYPES_OF_NOTE = (0, 1, 2, 5, 6, 12, 16, 28, 33, 41, 64, 65, 250, 251, 252, 253, 254, 255, 256,
                  32768, 65535)
LABEL_ALPHABET = "abcxyzABCXYZ0189-_*\\.\x00 \xff"


class PropertyFailed(AssertionError):
    """A reply broke one of the properties in the module docstring."""


# -- the handler under test --------------------------------------------------------------------


def big_headless(count: int = BIG_ENDPOINTS, namespace: str = BIG_NAMESPACE,
                 name: str = BIG_SERVICE) -> list[dict[str, Any]]:
    """API objects of one headless Service with ``count`` ready endpoints with hostnames
    ``h-0``..., IPv4 in 10.250.x.y, in slices of 100 (its A/SRV answers need truncating)."""
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
         "spec": {"clusterIP": "None", "clusterIPs": ["None"], "selector": {"app": name},
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
    ]
    for first in range(0, count, 100):
        objects.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-{first // 100}", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": [f"10.250.{i // 250}.{i % 250 + 1}"], "hostname": f"h-{i}",
                 "conditions": {"ready": True}}
                for i in range(first, min(first + 100, count))
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        })
    return objects


def write_manifests(folder: Path, count: int = BIG_ENDPOINTS) -> Path:
    """``folder`` with the example cluster and :func:`big_headless` as manifests (for a server
    process that serves what :func:`build_handler` serves)."""
    from dnsserver.serve import app  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cluster.yaml").write_text(app.example_manifests().read_text())
    listing = {"apiVersion": "v1", "kind": "List", "items": big_headless(count)}
    (folder / "big.json").write_text(json.dumps(listing))
    return folder


def build_handler() -> Handler:
    """A handler as ``DnsServer`` makes it: the example cluster plus :func:`big_headless`."""
    from dnsserver.cluster import manifests  # noqa: PLC0415  (imported late: atheris instruments)
    from dnsserver.config.settings import Config  # noqa: PLC0415
    from dnsserver.serve import app  # noqa: PLC0415
    from zones import convert  # noqa: PLC0415

    objects = manifests.load(app.example_manifests())
    objects += [convert.to_model(obj) for obj in big_headless()]
    return app.DnsServer(Config(), objects).handler


def zone_names(handler: Handler) -> list[str]:
    """Every owner name the zone has, and a few that it has not."""
    return sorted({name for name, _ in handler.zone.records()} | set(EXTRA_NAMES))


# -- an independent reading of the query, for the oracle ---------------------------------------


def question_of(data: bytes) -> bytes | None:
    """The query's question (uncompressed name, QTYPE, QCLASS) as sent, or None."""
    offset = 12
    while offset < len(data):
        length = data[offset]
        if length == 0:
            end = offset + 5
            return data[12:end] if end <= len(data) else None
        if length > 63:
            return None
        offset += length + 1
    return None


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        length = data[offset]  # IndexError past the end: the caller gives up
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length > 63:
            raise ValueError("bad label")
        offset += length + 1
        if length == 0:
            return offset


@dataclass(frozen=True, slots=True)
class ClientOpt:
    udp_size: int
    version: int
    do: bool


def opt_of(data: bytes) -> ClientOpt | None:
    """The query's OPT (the first in the additional section), or None when it has none or the
    message cannot be read that far."""
    try:
        qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHH", data, 4)
        offset = 12
        for _ in range(qdcount):
            offset = _skip_name(data, offset) + 4
        for index in range(ancount + nscount + arcount):
            owner = offset
            offset = _skip_name(data, offset)
            rtype, rclass, _ttl, rdlength = struct.unpack_from(">HHIH", data, offset)
            offset += 10 + rdlength
            if offset > len(data):
                return None
            if index >= ancount + nscount and rtype == 41 and data[owner] == 0:
                return ClientOpt(rclass, data[owner + 6], bool(data[owner + 7] & 0x80))
    except (IndexError, ValueError, struct.error):
        return None
    return None


# -- the properties ----------------------------------------------------------------------------


@dataclass
class Checker:
    """Runs cases through one handler and checks every reply."""

    handler: Handler
    cases: int = 0
    _bugs: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        collector = _BugCollector(self._bugs)
        logging.getLogger("dnsserver").addHandler(collector)

    def check(self, data: bytes, tcp: bool = False, expect_rcode: int | None = None,
              valid: bool = False) -> dns.message.Message | None:
        """Handle ``data`` and check the reply; raises :class:`PropertyFailed`.

        ``expect_rcode``: the (extended) rcode the reply must have. ``valid``: a well-formed
        query, which must not get FORMERR or SERVFAIL.
        """
        self.cases += 1
        _forget_logged_bugs(self.handler)
        self._bugs.clear()  # records logged by anything else in this process meanwhile
        try:
            reply = self.handler.handle(data, tcp, CLIENT)
        except Exception as exc:
            raise PropertyFailed(f"handle raised {exc!r} for {data!r}") from exc
        if reply is not None and not isinstance(reply, bytes):  # waits on an upstream
            close = getattr(reply, "close", None)
            if close is not None:
                close()
            raise PropertyFailed(f"a reply waiting on an upstream, with none configured, "
                                 f"for {data!r}")
        if self._bugs:
            bug = self._bugs.pop()
            self._bugs.clear()
            raise PropertyFailed(f"handler bug {bug!r} (answered SERVFAIL) for {data!r}")
        return check_reply(data, reply, tcp, expect_rcode=expect_rcode, valid=valid)


def check_reply(data: bytes, reply: bytes | None, tcp: bool, *, expect_rcode: int | None = None,
                valid: bool = False) -> dns.message.Message | None:
    """The properties of one reply to ``data`` (see the module docstring)."""
    answerable = len(data) >= 12 and not data[2] & 0x80
    if reply is None:
        if answerable:
            _fail("no reply to a query with a header", data, reply)
        return None
    if not answerable:
        _fail("a reply to a message without a header, or to a response", data, reply)
    if len(reply) < 12 or reply[:2] != data[:2]:
        _fail("the reply's ID is not the query's", data, reply)
    if not reply[2] & 0x80 or (reply[2] ^ data[2]) & 0x78:
        _fail("the reply has QR=0 or another opcode", data, reply)
    limit = 65535 if tcp else 512
    client_opt = opt_of(data)
    if not tcp and client_opt is not None:
        limit = max(512, client_opt.udp_size)
    if len(reply) > limit:
        _fail(f"a reply of {len(reply)} bytes over {'TCP' if tcp else 'UDP'} (limit {limit})",
              data, reply)
    try:
        message = dns.message.from_wire(reply)
    except dns.exception.DNSException as exc:
        _fail(f"the reply does not parse: {type(exc).__name__}: {exc}", data, reply)
    if struct.unpack_from(">H", reply, 4)[0] == 1:
        question = question_of(data)
        if question is None or reply[12 : 12 + len(question)] != question:
            _fail("the reply's question is not the query's", data, reply)
        if (client_opt is None) != (message.edns < 0):
            _fail("the reply has an OPT iff the query had one: broken", data, reply)
        if client_opt is not None and bool(message.ednsflags & dns.flags.DO) != client_opt.do:
            _fail("the DO bit is not mirrored", data, reply)
    rcode = message.rcode()
    if expect_rcode is not None and rcode != expect_rcode:
        wanted = dns.rcode.to_text(dns.rcode.Rcode.make(expect_rcode))
        _fail(f"rcode {dns.rcode.to_text(rcode)}, wanted {wanted}",
              data, reply)
    if valid and rcode in (FORMERR, SERVFAIL):
        _fail(f"a well-formed query got {dns.rcode.to_text(rcode)}", data, reply)
    return message


def _fail(what: str, data: bytes, reply: bytes | None) -> Any:
    raise PropertyFailed(f"{what}\n  query: {data!r}\n  reply: {reply!r}")


class _BugCollector(logging.Handler):
    """Collects the handler's "bug while answering" records (each swallowed exception)."""

    def __init__(self, sink: list[BaseException]) -> None:
        super().__init__(logging.ERROR)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self._sink.append(exc if exc is not None else RuntimeError(record.getMessage()))


def _forget_logged_bugs(handler: Handler) -> None:
    """The handler logs each kind of bug once; here every occurrence must be seen."""
    logged = getattr(handler, "_logged_bugs", None)
    if logged:
        logged.clear()


# -- generators --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    data: bytes
    tcp: bool = False
    expect_rcode: int | None = None
    valid: bool = False


def random_name(rng: random.Random, names: list[str]) -> str:
    """A name from the zone (or near it), or random labels; in random case."""
    roll = rng.random()
    if roll < 0.6:
        name = rng.choice(names)
    elif roll < 0.8:
        labels = [_random_label(rng) for _ in range(rng.randint(1, 3))]
        name = ".".join([*labels, rng.choice(names)])
    else:
        name = ".".join(_random_label(rng) for _ in range(rng.randint(1, 6)))
    return "".join(c.upper() if rng.random() < 0.3 else c for c in name)


def _random_label(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return "".join(rng.choice("abcdefghij0123456789-") for _ in range(rng.randint(1, 12)))
    return "".join(rng.choice(LABEL_ALPHABET) for _ in range(rng.randint(1, 20)))


def random_qtype(rng: random.Random) -> int:
    return rng.choice(QTYPES_OF_NOTE) if rng.random() < 0.5 else rng.randint(0, 65535)


def valid_query(rng: random.Random, names: list[str]) -> Case:
    """A dnspython-built query: random name, qtype, flags, EDNS (version, size, options, DO)."""
    while True:
        try:
            qname = dns.name.from_text(random_name(rng, names))
            break
        except dns.exception.DNSException:  # a random label made an illegal name
            continue
    qclass = 1 if rng.random() < 0.9 else rng.choice((3, 4, 254, 255, rng.randint(0, 65535)))
    version = rng.choice((None, None, 0, 0, 0, 1, 255)) if rng.random() < 0.9 else None
    options: list[dns.edns.Option] = []
    if version is not None:
        for _ in range(rng.choice((0, 0, 1, 2, 4))):
            payload = rng.randbytes(rng.choice((0, 2, 4, 8, 16, 40)))
            code = dns.edns.OptionType.make(rng.randint(0, 65535))
            options.append(dns.edns.GenericOption(code, payload))
    message = dns.message.make_query(
        qname, dns.rdatatype.RdataType.make(random_qtype(rng)),
        dns.rdataclass.RdataClass.make(qclass),
        use_edns=-1 if version is None else version,
        payload=rng.choice((0, 1, 511, 512, 513, 1232, 4096, 65535, rng.randint(0, 65535))),
        want_dnssec=rng.random() < 0.3, options=options,
    )
    message.id = rng.randint(0, 65535)
    message.flags = dns.flags.Flag(
        (message.flags & ~0x0130) | rng.choice((0, 0x0100, 0x0120, 0x0110, 0x0030))
    )
    data = message.to_wire()
    if version is not None and version != 0:
        expect: int | None = BADVERS
    elif qclass != 1:
        expect = REFUSED
    else:
        expect = None
    return Case(data, tcp=rng.random() < 0.2, expect_rcode=expect, valid=True)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few byte flips, insertions, deletions or count rewrites."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.5 and buffer:
            buffer[rng.randrange(len(buffer))] = rng.randrange(256)
        elif roll < 0.65 and buffer:
            position = rng.randrange(len(buffer))
            buffer[position] ^= 1 << rng.randrange(8)
        elif roll < 0.75:
            buffer.insert(rng.randint(0, len(buffer)), rng.randrange(256))
        elif roll < 0.85 and buffer:
            del buffer[rng.randrange(len(buffer))]
        elif len(buffer) >= 12:
            offset = rng.choice((4, 6, 8, 10))
            value = rng.choice((0, 1, 2, 3, 255, 65535))
            buffer[offset : offset + 2] = value.to_bytes(2, "big")
    return bytes(buffer)


def hostile(rng: random.Random) -> Case:
    """A hand-made malformed (or borderline) query that knows the rcode it must get."""
    ident = rng.randint(0, 65535)
    flags = rng.choice((0x0000, 0x0100, 0x0120))
    question_tail = struct.pack(">HH", random_qtype(rng), 1)
    kind = rng.randrange(11)
    if kind == 0:  # a pointer to itself, or a loop through two pointers
        name = b"\xc0\x0c" if rng.random() < 0.5 else b"\x01a\xc0\x0e\xc0\x0c"
        return Case(HEADER.pack(ident, flags, 1, 0, 0, 0) + name + question_tail,
                    expect_rcode=FORMERR)
    if kind == 1:  # a forward pointer (to a name after the question)
        body = b"\x03web\xc0\x16" + question_tail + b"\x07cluster\x05local\x00"
        return Case(HEADER.pack(ident, flags, 1, 0, 0, 0) + body, expect_rcode=FORMERR)
    if kind == 2:  # a label length over 63 (0x40 and 0x80 are the reserved label types)
        length = rng.randint(64, 191)
        name = bytes([length]) + b"a" * rng.choice((0, length, 63)) + b"\x00"
        return Case(HEADER.pack(ident, flags, 1, 0, 0, 0) + name + question_tail,
                    expect_rcode=FORMERR)
    if kind == 3:  # a name over 255 octets (256 exactly, or more), label lengths all legal
        return Case(HEADER.pack(ident, flags, 1, 0, 0, 0)
                    + long_name(rng, rng.choice((256, 257, rng.randint(258, 400))))
                    + question_tail, expect_rcode=FORMERR)
    if kind == 4:  # a name of exactly 255 octets is legal
        name = long_name(rng, 255, suffix=rng.choice((b"", b"\x03svc\x07cluster\x05local\x00")))
        return Case(HEADER.pack(ident, flags, 1, 0, 0, 0) + name + question_tail, valid=True)
    if kind == 5:  # QDCOUNT is not 1
        count = rng.choice((0, 2, 3, 65535))
        body = (b"\x03web\x07default\x03svc\x07cluster\x05local\x00" + question_tail)
        body *= rng.choice((0, 1, 2)) if count else 1
        return Case(HEADER.pack(ident, flags, count, 0, 0, 0) + body, expect_rcode=FORMERR)
    if kind == 6:  # AN/NS/AR counts claim records that are not there
        counts = [0, 0, 0]
        counts[rng.randrange(3)] = rng.choice((1, 2, 255, 65535))
        return Case(HEADER.pack(ident, flags, 1, *counts) + _question(rng) + question_tail,
                    expect_rcode=FORMERR)
    if kind == 7:  # two or more OPT records
        opts = [_opt(rng) for _ in range(rng.randint(2, 4))]
        return Case(HEADER.pack(ident, flags, 1, 0, 0, len(opts)) + _question(rng)
                    + question_tail + b"".join(opts), expect_rcode=FORMERR)
    if kind == 8:  # OPT whose RDLENGTH runs past the end
        opt = _opt(rng)
        opt = opt[:9] + (len(opt) - 11 + rng.randint(1, 300)).to_bytes(2, "big") + opt[11:]
        return Case(HEADER.pack(ident, flags, 1, 0, 0, 1) + _question(rng) + question_tail
                    + opt, expect_rcode=FORMERR)
    if kind == 9:  # OPT with an owner other than the root
        opt = b"\x01x" + _opt(rng)[1:]
        return Case(HEADER.pack(ident, flags, 1, 0, 0, 1) + _question(rng) + question_tail
                    + opt, expect_rcode=FORMERR)
    # a valid query with records in every section, OPT last, pointers in the owners
    record = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04\x0a\x00\x00\x01"
    return Case(HEADER.pack(ident, flags, 1, 1, 1, 2) + _question(rng) + question_tail
                + record * 3 + _opt(rng, version=0), valid=True)


def long_name(rng: random.Random, octets: int, suffix: bytes = b"") -> bytes:
    """A wire name of exactly ``octets`` octets (root included) that ends in ``suffix`` (a wire
    name), in labels of 1 to 63 octets. The suffix is left out where it cannot fit."""
    if octets < 1 or octets == 2:
        raise ValueError(f"no wire name is {octets} octets long")
    suffix = suffix or b"\x00"
    remaining = octets - len(suffix)
    if remaining < 0 or remaining == 1:  # no label is 0 octets long: do without the suffix
        suffix, remaining = b"\x00", octets - 1
    body = b""
    while remaining > 0:
        # leave 0 or at least 2 octets (one label of one octet) behind
        length = remaining - 1 if remaining <= 64 else rng.randint(1, min(63, remaining - 3))
        body += bytes([length]) + b"a" * length
        remaining -= length + 1
    return body + suffix


def _question(rng: random.Random) -> bytes:
    return rng.choice((b"\x03web\x07default\x03svc\x07cluster\x05local\x00",
                       b"\x03BIG\x04fuzz\x03svc\x07cluster\x05local\x00", b"\x00"))


def _opt(rng: random.Random, version: int | None = None) -> bytes:
    options = b"".join(
        struct.pack(">HH", rng.randint(0, 65535), length) + rng.randbytes(length)
        for length in (rng.choice((0, 4, 8)) for _ in range(rng.choice((0, 0, 1, 2))))
    )
    return (b"\x00\x00\x29" + struct.pack(">H", rng.choice((0, 512, 1232, 4096, 65535)))
            + bytes((0, rng.choice((0, 0, 1)) if version is None else version,
                     rng.choice((0, 0x80)), 0))
            + struct.pack(">H", len(options)) + options)


def random_case(rng: random.Random, names: list[str]) -> Case:
    """One case of any kind: valid, cut, mutated, hostile, or random bytes."""
    roll = rng.random()
    if roll < 0.3:
        return valid_query(rng, names)
    if roll < 0.5:
        case = valid_query(rng, names)
        return Case(case.data[: rng.randint(0, len(case.data))], tcp=case.tcp)
    if roll < 0.75:
        base = valid_query(rng, names) if rng.random() < 0.7 else hostile(rng)
        return Case(mutate(rng, base.data), tcp=rng.random() < 0.2)
    if roll < 0.92:
        return hostile(rng)
    return Case(rng.randbytes(rng.choice((0, 1, 11, 12, 13, 17, 30, 100, 512))),
                tcp=rng.random() < 0.2)


def cases(seed: int, names: list[str]) -> Iterator[Case]:
    rng = random.Random(seed)
    while True:
        yield random_case(rng, names)


# -- the long run ------------------------------------------------------------------------------


class Failures:
    """Distinct property failures (by message, digits ignored) with their first query."""

    def __init__(self) -> None:
        self.first: dict[str, PropertyFailed] = {}
        self.count = 0

    def add(self, failure: PropertyFailed) -> None:
        self.count += 1
        what = str(failure).split("\n")[0]
        signature = "".join("#" if c.isdigit() else c for c in what)
        if signature not in self.first:
            self.first[signature] = failure
            print(f"FAILURE {len(self.first)}: {failure}", flush=True)


def run_plain(checker: Checker, names: list[str], *, seed: int, limit: int, seconds: float,
              failures: Failures | None = None) -> tuple[int, float]:
    """The generators in a loop until ``limit`` cases or ``seconds``; (cases, elapsed).

    With ``failures``, a broken property is recorded there and the run goes on; without, it
    raises :class:`PropertyFailed`.
    """
    started = time.monotonic()
    deadline = started + seconds
    for count, case in enumerate(cases(seed, names), 1):
        try:
            checker.check(case.data, case.tcp, case.expect_rcode, case.valid)
        except PropertyFailed as failure:
            if failures is None:
                raise
            failures.add(failure)
        if count >= limit or (count % 1000 == 0 and time.monotonic() > deadline):
            return count, time.monotonic() - started
        if count % 100_000 == 0:
            _progress(count, time.monotonic() - started)
    raise AssertionError("unreachable")


def run_atheris(args: argparse.Namespace) -> None:
    """libFuzzer over the raw bytes (first byte: UDP or TCP), seeded with generated cases."""
    import atheris  # noqa: PLC0415

    with atheris.instrument_imports(include=["dnsserver", "zones"]):
        import dnsserver.serve.handler  # noqa: PLC0415
        import dnsserver.serve.wire  # noqa: F401, PLC0415
        import zones.records  # noqa: PLC0415
        import zones.zone  # noqa: F401, PLC0415
    handler = build_handler()
    checker = Checker(handler)
    names = zone_names(handler)
    corpus = Path(tempfile.mkdtemp(prefix="fuzz-corpus-"))
    artifacts = Path(args.artifacts or tempfile.mkdtemp(prefix="fuzz-crashes-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    generated = cases(args.seed, names)
    for index in range(args.corpus):
        case = next(generated)
        (corpus / f"seed-{index}").write_bytes(bytes((case.tcp,)) + case.data)
    started = time.monotonic()

    failures = Failures()

    def report() -> None:
        elapsed = time.monotonic() - started
        print(f"atheris: {checker.cases:,} cases in {elapsed:.0f} s "
              f"({checker.cases / max(elapsed, 1e-9):,.0f} cases/s), {failures.count:,} broke a "
              f"property ({len(failures.first)} distinct); crash files go to {artifacts}",
              flush=True)

    deadline = started + args.seconds

    def one_input(data: bytes) -> None:
        if not data:
            return
        try:
            checker.check(data[1:], tcp=bool(data[0] & 1))
        except PropertyFailed as failure:
            if args.stop_on_failure:
                raise
            failures.add(failure)
        if checker.cases % 100_000 == 0:
            _progress(checker.cases, time.monotonic() - started)
        if checker.cases >= args.cases or (checker.cases % 1000 == 0
                                           and time.monotonic() > deadline):
            report()  # libFuzzer's own limits would end the process without telling us
            sys.stdout.flush()
            os._exit(1 if failures.count else 0)

    argv = [sys.argv[0], str(corpus), f"-artifact_prefix={artifacts}/", "-max_len=1024",
            f"-seed={args.seed}"]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def _progress(count: int, elapsed: float) -> None:
    print(f"  {count:,} cases, {elapsed:.0f} s, {count / max(elapsed, 1e-9):,.0f}/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plain", action="store_true", help="no atheris: generators in a loop")
    parser.add_argument("--corpus", type=int, default=500, help="seed corpus size (atheris)")
    parser.add_argument("--artifacts", help="folder for atheris crash files")
    parser.add_argument("--stop-on-failure", action="store_true",
                        help="stop at the first broken property (default: report distinct ones)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    has_atheris = False
    if not args.plain:
        with contextlib.suppress(ImportError):
            import atheris  # noqa: F401, PLC0415

            has_atheris = True
    if has_atheris:
        run_atheris(args)  # never returns: libFuzzer exits the process
    handler = build_handler()
    checker = Checker(handler)
    failures = None if args.stop_on_failure else Failures()
    count, elapsed = run_plain(checker, zone_names(handler), seed=args.seed, limit=args.cases,
                               seconds=args.seconds, failures=failures)
    broken = failures.count if failures else 0
    distinct = len(failures.first) if failures else 0
    print(f"plain: {count:,} cases in {elapsed:.1f} s ({count / elapsed:,.0f} cases/s), "
          f"{broken:,} broke a property ({distinct} distinct)")
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
